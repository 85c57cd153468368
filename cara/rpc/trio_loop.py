"""The RPC core on trio: the few asyncio loop services the core uses, provided by trio.

The core (:class:`~cara.rpc.connection.Connection`, :mod:`cara.rpc.caps`) needs from its loop
only what :class:`asyncio.Future` and its own bookkeeping call: ``call_soon`` (a future's done
callbacks, a batched ``Finish``), ``call_soon_threadsafe`` (a ``Release`` queued by the garbage
collector), ``call_later`` (call timeouts), ``create_task`` (a handler returning an awaitable)
and ``call_exception_handler``. :class:`TrioLoop` implements exactly these on trio, one per
``trio.run`` (:func:`running_loop`), so the same core -- its promises are still
``asyncio.Future`` objects, used as callback containers -- runs natively under trio:

* callbacks run in order in one trio system task (the *pump*), woken without a system call;
* a handler's coroutine runs as a trio task (it may ``await trio.sleep``, open nurseries...)
  inside a cancel scope: a ``Finish`` from the caller cancels the scope;
* ``await promise`` under trio parks the awaiting task until the promise's done callback
  reschedules it; cancelling the awaiting task (``trio.move_on_after``, a cancelled nursery)
  cancels the call, which sends ``Finish`` -- as cancelling an asyncio task does.

:func:`cara.rpc.proxies.current_loop` imports this module the first time it finds trio
running, and only then gives :class:`~cara.rpc.proxies.CallPromise` :func:`await_any` as its
``__await__`` (waiting on either framework: the promise's loop says which); programs that never
use trio keep ``asyncio.Future``'s own C iterator, so asyncio's path is unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine, Generator, Iterator
from typing import Any

import trio

__all__ = ["TrioFuture", "TrioLoop", "TrioTask", "await_any", "running_loop", "wait_future"]

_log = logging.getLogger("cara.rpc")
_LOOP: trio.lowlevel.RunVar[TrioLoop] = trio.lowlevel.RunVar("cara_trio_loop")


def running_loop() -> TrioLoop | None:
    """The :class:`TrioLoop` of the ``trio.run`` in this thread (made on first use), or
    ``None`` when this thread runs no trio."""
    try:
        return _LOOP.get()
    except LookupError:
        loop = TrioLoop()
        _LOOP.set(loop)
        return loop
    except RuntimeError:  # not inside trio.run
        return None


class _Timer:
    """What ``call_later`` returns: ``cancel()`` stops the sleeping task."""

    __slots__ = ("handle", "scope")

    def __init__(self, handle: asyncio.Handle) -> None:
        self.handle = handle
        self.scope = trio.CancelScope()

    def cancel(self) -> None:
        self.handle.cancel()
        self.scope.cancel()

    def cancelled(self) -> bool:
        return self.handle.cancelled()

    async def run(self, delay: float) -> None:
        with self.scope:
            await trio.sleep(max(delay, 0))
            if not self.handle.cancelled():
                self.handle._run()


class TrioLoop:
    """asyncio's loop interface, as far as futures and the RPC core use it, on trio (see the
    module docstring). Made by :func:`running_loop`; used only from the trio thread, except
    :meth:`call_soon_threadsafe`."""

    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._parked: trio.lowlevel.Task | None = None
        self._token = trio.lowlevel.current_trio_token()
        self._running = True
        self._held = False  # a task runs the callbacks at the end of its turn (see turn())
        #: The task made last: the next one starts after it (see TrioTask).
        self._last_task: TrioTask | None = None
        #: The thread this trio run is in, while it runs (as asyncio's loops say theirs: the C
        #: fast path of cara frames sends a call only from its connection's loop thread).
        self._thread_id: int | None = threading.get_ident()
        trio.lowlevel.spawn_system_task(self._pump, name="cara callbacks")

    def __repr__(self) -> str:
        return f"<TrioLoop {len(self._ready)} ready>"

    # ------------------------------------------------------------------ the pump

    def run_ready(self) -> None:
        """Run the callbacks scheduled so far, and those they schedule, in order."""
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if not handle.cancelled():
                handle._run()  # (logs what a callback raises, as asyncio does)

    async def _pump(self) -> None:
        try:
            while True:
                self.run_ready()
                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._unpark)
        finally:
            self._running = False
            self._parked = None
            self._thread_id = None

    def _unpark(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _schedule(self, handle: asyncio.Handle) -> None:
        self._ready.append(handle)
        parked = self._parked
        if parked is not None and not self._held:
            self._parked = None
            trio.lowlevel.reschedule(parked)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Run the body, then the callbacks it scheduled, in the calling task (a transport's
        reader around the frames of one read): what the body schedules does not wake the pump,
        so a burst costs no extra round of trio's scheduler."""
        if self._held:  # (nested: the outer turn runs them)
            yield
            return
        self._held = True
        try:
            yield
            self.run_ready()
        finally:
            self._held = False
            if self._ready and self._parked is not None:  # (the body raised)
                parked, self._parked = self._parked, None
                trio.lowlevel.reschedule(parked)

    # ------------------------------------------------------------------ asyncio's interface

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle | None:
        if callback.__class__ is _Waker:  # a trio task awaits the future: wake it now
            callback(*args)
            return None
        handle = asyncio.Handle(callback, args, self, context)  # type: ignore[arg-type]
        self._schedule(handle)
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any,
                             context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)  # type: ignore[arg-type]
        try:
            self._token.run_sync_soon(self._schedule, handle)
        except trio.RunFinishedError:
            raise RuntimeError("the trio run has finished") from None
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any,
                   context: contextvars.Context | None = None) -> _Timer:
        timer = _Timer(asyncio.Handle(callback, args, self, context))  # type: ignore[arg-type]
        trio.lowlevel.spawn_system_task(timer.run, delay, name="cara timer")
        return timer

    def create_task(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None,
                    context: contextvars.Context | None = None) -> TrioTask:
        task = TrioTask(self, self._last_task)
        self._last_task = task
        trio.lowlevel.spawn_system_task(task._run, coro, name=name or coro,
                                        context=context or contextvars.copy_context())
        return task

    def create_future(self) -> asyncio.Future[Any]:
        return TrioFuture(loop=self)  # type: ignore[arg-type]

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        _log.error("%s", context.get("message", "unhandled exception in a callback"),
                   exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)

    def get_debug(self) -> bool:
        return False

    def time(self) -> float:
        return trio.current_time()

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return not self._running


class TrioFuture(asyncio.Future[Any]):
    """What ``create_future()`` makes: a future a trio task can ``await``."""

    def __await__(self) -> Generator[Any, None, Any]:
        return wait_future(self).__await__()


class TrioTask(asyncio.Future[Any]):
    """A handler's coroutine running as a trio task: a future of its value whose ``cancel()``
    cancels the task's scope (the handler sees ``trio.Cancelled``). A task cancelled before it
    started never runs its coroutine.

    Tasks start in the order they were made, as asyncio's do (trio runs the tasks that became
    runnable together in any order): so the handlers of calls that arrived in order run their
    first steps -- up to their first ``await`` -- in that order, and calls they make on one
    capability go out in that order too. A task that finds the one made before it not started
    yet waits for it (one extra scheduling round, only then)."""

    def __init__(self, loop: TrioLoop, after: TrioTask | None = None) -> None:
        super().__init__(loop=loop)  # type: ignore[arg-type]
        self._scope = trio.CancelScope()
        self._cancel_requested = False
        self._after = after  # the task made before this one (until this one starts)
        self._started = False
        self._successor: trio.lowlevel.Task | None = None  # waiting for us to start

    def cancel(self, msg: Any = None) -> bool:
        if self.done() or self._cancel_requested:
            return False
        self._cancel_requested = True
        self._scope.cancel()
        return True

    async def _wait_turn(self) -> None:
        before, self._after = self._after, None
        if before is not None and not before._started:
            before._successor = trio.lowlevel.current_task()

            def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
                before._successor = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        self._started = True
        successor, self._successor = self._successor, None
        if successor is not None:
            trio.lowlevel.reschedule(successor)

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await self._wait_turn()
            if self._cancel_requested:
                coro.close()
                return
            with self._scope:
                try:
                    value = await coro
                except trio.Cancelled:
                    raise
                except BaseException as exc:  # the handler's error is the call's
                    if not self.done():
                        self.set_exception(exc)
                    return
                if not self.done():
                    self.set_result(value)
        finally:
            if not self._started:  # cancelled while waiting its turn: let the next go
                self._started = True
                if self._successor is not None:
                    trio.lowlevel.reschedule(self._successor)
                    self._successor = None
            if not self.done():
                asyncio.Future.cancel(self)


# ------------------------------------------------------------------ awaiting under trio


class _Waker:
    """The done callback of a promise a trio task awaits: reschedules that task. The loop runs
    it at once instead of queueing it (it only makes the task runnable)."""

    __slots__ = ("task", "waiting")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.waiting = True

    def __call__(self, _fut: object) -> None:
        if self.waiting:
            self.waiting = False
            trio.lowlevel.reschedule(self.task)


async def wait_future(fut: asyncio.Future[Any]) -> Any:
    """Wait under trio for ``fut`` (a future of a :class:`TrioLoop`); being cancelled cancels
    it. Before parking, the task runs the loop's pending callbacks (so the frame of a call just
    made leaves now, not one scheduling round later)."""
    if not fut.done():
        loop = fut.get_loop()
        if type(loop) is TrioLoop and not loop._held:
            loop.run_ready()
    if not fut.done():
        waker = _Waker(trio.lowlevel.current_task())

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            waker.waiting = False
            fut.remove_done_callback(waker)
            fut.cancel()  # the awaiting task is cancelled: so is the call (a Finish)
            return trio.lowlevel.Abort.SUCCEEDED

        fut.add_done_callback(waker)
        await trio.lowlevel.wait_task_rescheduled(abort)
    return fut.result()


_future_await = asyncio.Future.__await__


def await_any(self: asyncio.Future[Any]) -> Generator[Any, None, Any]:
    """``await promise``: on a :class:`TrioLoop`, park the trio task; else asyncio's own."""
    if type(self.get_loop()) is TrioLoop:
        return wait_future(self).__await__()
    return _future_await(self)

