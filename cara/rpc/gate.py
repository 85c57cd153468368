"""The server side of streaming: the calls to one object that has streaming methods are
delivered in order, and a streaming call blocks the object until it has returned.

As libcapnp's ``LocalClient`` does: while a ``-> stream`` call runs (its handler is awaiting),
every later call to the same object -- streaming or not -- waits in a queue, in arrival order,
and starts when it ends. So the handlers see the stream one call at a time, in order; a call
made after the stream (``sink.done()``) runs after every call of it; and a consumer that takes
its time holds the producer back (through the caller's flow-control window) instead of letting
calls pile up. When a streaming call fails, the object is broken: every later call to it fails
with that error, as the caller expects (it raises the error on its next call).

Objects without streaming methods do not go through a gate at all. The gate runs on the loop
of the calls, asyncio's or trio's (:class:`~cara.rpc.trio_loop.TrioLoop`): its futures and its
drainer task are that loop's, and under trio a running streaming call is cancelled through a
cancel scope of its own (trio's cancellation is not a one-off exception a task may go on from).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

from cara.rpc.description import InterfaceInfo
from cara.rpc.proxies import NO_RUNNING_LOOP, current_loop, fresh_error, is_stream_method
from cara.runtime.interface import Interface as RuntimeInterface

__all__ = ["StreamGate", "stream_gate"]


def stream_gate(obj: object, info: InterfaceInfo | None) -> StreamGate | None:
    """A gate for implementation ``obj`` when its interface has streaming methods."""
    if isinstance(obj, RuntimeInterface):
        streams = _streams(type(obj).cara_schema, None)
    elif info is not None:
        streams = _streams(None, info)
    else:
        return None
    return StreamGate() if streams else None


#: Whether an interface (by its runtime schema or description) has streaming methods: asked for
#: every new object that is called, answered once per interface.
_has_streams: dict[int, tuple[Any, bool]] = {}


def _streams(schema: Any, info: InterfaceInfo | None) -> bool:
    key = schema if schema is not None else info
    cached = _has_streams.get(id(key))
    if cached is not None and cached[0] is key:
        return cached[1]
    if schema is not None:
        methods: Any = schema.all_methods.values()
    else:
        assert info is not None
        methods = [m.spec if m.spec is not None else m for m in info.methods.values()]
    found = any(is_stream_method(m) for m in methods)
    if len(_has_streams) >= 4096:
        _has_streams.clear()
    _has_streams[id(key)] = (key, found)
    return found


class StreamGate:
    """The calls to one object: ``wrap(run, stream)`` gives the ``run`` that goes through it.

    While the object streams, one task (the *drainer*) runs its waiting calls in order: a
    streaming call is awaited inline, so calls that do not suspend run one after the other in
    a single turn of the loop, with no task of their own; an ordinary call is started (as a
    task of its own when it is a coroutine) and the next goes on. Each call's caller awaits the
    future it was handed (its *turn*); cancelling that future cancels the call."""

    __slots__ = ("broken", "current", "drainer", "scope", "waiting")

    def __init__(self) -> None:
        #: Calls waiting, in arrival order: (run, params, stream, turn); ``run`` is None for a
        #: streaming call already made (``params`` is then its awaitable).
        self.waiting: deque[tuple[Callable[[Any], Any] | None, Any, bool,
                                  asyncio.Future[Any]]] = deque()
        #: The task running the waiting calls, and the turn of the streaming call it awaits.
        self.drainer: asyncio.Task[None] | None = None
        self.current: asyncio.Future[Any] | None = None
        #: Under trio, the cancel scope of the streaming call the drainer awaits.
        self.scope: Any = None
        #: The error of the streaming call that failed: every later call raises it.
        self.broken: BaseException | None = None

    def __repr__(self) -> str:
        state = "broken" if self.broken else "streaming" if self.drainer else "idle"
        return f"<StreamGate {state}, {len(self.waiting)} waiting>"

    def wrap(self, run: Callable[[Any], Any], stream: bool) -> Callable[[Any], Any]:
        def gated(params: Any) -> Any:
            if self.broken is not None:
                raise fresh_error(self.broken)
            if self.drainer is None and not self.waiting:  # idle
                if not stream:
                    return run(params)
                try:
                    result = run(params)
                except Exception as exc:
                    self.broken = exc
                    raise
                if not inspect.isawaitable(result):
                    return result
                return self._wait(None, result, True)
            return self._wait(run, params, stream)

        return gated

    def _wait(self, run: Callable[[Any], Any] | None, params: Any,
              stream: bool) -> asyncio.Future[Any]:
        loop = current_loop()
        if loop is None:
            raise RuntimeError(NO_RUNNING_LOOP)
        turn: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((run, params, stream, turn))
        if self.drainer is None:
            self.drainer = loop.create_task(self._drain(loop))
        return turn

    def _cancel_current(self, turn: asyncio.Future[Any]) -> None:
        if turn.cancelled() and turn is self.current:
            if self.scope is not None:  # trio: cancel the call, not the drainer
                self.scope.cancel()
            elif self.drainer is not None:
                self.drainer.cancel()

    async def _scoped(self, result: Any) -> Any:
        """``await result`` in a trio cancel scope of its own (see :meth:`_cancel_current`);
        a cancelled call raises ``asyncio.CancelledError`` here, as under asyncio."""
        import trio

        with trio.CancelScope() as scope:
            self.scope = scope
            try:
                return await result
            finally:
                self.scope = None
        raise asyncio.CancelledError("the streaming call was cancelled")

    async def _drain(self, loop: Any) -> None:
        waiting = self.waiting
        on_trio = not isinstance(loop, asyncio.AbstractEventLoop)
        try:
            while waiting:
                run, params, stream, turn = waiting.popleft()
                if turn.done() or self.broken is not None:
                    if run is None and inspect.iscoroutine(params):
                        params.close()  # never to run: no "never awaited" warning
                    if not turn.done():
                        turn.set_exception(fresh_error(self.broken))  # type: ignore[arg-type]
                    continue
                try:
                    result = params if run is None else run(params)
                    if not inspect.isawaitable(result):
                        value = result
                    elif not stream:  # an ordinary call does not hold the others up
                        _chain(asyncio.ensure_future(result, loop=loop), turn)
                        continue
                    else:
                        self.current = turn
                        turn.add_done_callback(self._cancel_current)
                        try:
                            value = await (self._scoped(result) if on_trio else result)
                        finally:
                            self.current = None
                            if not turn.done():  # (no callback left to schedule)
                                turn.remove_done_callback(self._cancel_current)
                except asyncio.CancelledError:
                    if not turn.cancelled():  # the drainer itself was cancelled
                        turn.cancel()
                        raise
                    if not on_trio:
                        _uncancel()  # only this call was: go on with the next
                    continue
                except Exception as exc:
                    if stream and self.broken is None:
                        self.broken = exc
                    if not turn.done():
                        turn.set_exception(exc)
                    continue
                except BaseException:  # trio.Cancelled: the drainer is (the run is ending)
                    if not turn.done():
                        turn.cancel()
                    raise
                if not turn.done():
                    turn.set_result(value)
        finally:
            self.drainer = None
            if waiting:  # cancelled from outside (the loop is closing): nobody will run them
                for run, params, _stream, turn in waiting:
                    if run is None and inspect.iscoroutine(params):
                        params.close()
                    turn.cancel()
                waiting.clear()


def _uncancel() -> None:
    """Forget one cancellation request of the current task (Python 3.11+ counts them)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def _chain(task: asyncio.Future[Any], turn: asyncio.Future[Any]) -> None:
    """Settle ``turn`` as ``task`` settles; cancelling ``turn`` cancels ``task``."""

    def done(task: asyncio.Future[Any]) -> None:
        if turn.done():
            return
        if task.cancelled():
            turn.cancel()
        elif task.exception() is not None:
            turn.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            turn.set_result(task.result())

    def canceled(turn: asyncio.Future[Any]) -> None:
        if turn.cancelled() and not task.done():
            task.cancel()

    task.add_done_callback(done)
    turn.add_done_callback(canceled)

