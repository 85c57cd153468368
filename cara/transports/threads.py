"""Capabilities usable from any thread: the machinery under the blocking client
(:mod:`cara.transports.sync_client`). (A client started under trio runs natively there:
:mod:`cara.transports.trio_transport`.)

A :class:`Bridge` runs a client on a private asyncio event loop in a daemon thread
(:class:`_Runner`). Its proxies are the usual typed proxies over a :class:`ThreadCap`, a core
capability that hands each call to the loop thread (``loop.call_soon_threadsafe``) and gives a
:class:`SyncPromise`: ``result()`` waits for it in a plain thread, ``await`` waits for it under
trio or another asyncio loop. A blocking bridge's calls wait for that promise at once and return
the value; a deferring one returns the promise. Params are converted in the calling thread (a
bad argument raises there, before anything is sent); everything that touches the connection
runs on the loop thread, so any number of threads may share one bridge. Capabilities in an
answer come back as capabilities of the bridge too; they are released on the loop thread when
the last one is garbage.

On the loop thread itself (in a callback the connection serves) a :class:`ThreadCap` passes
calls straight on and returns the usual awaitable promise: blocking there would deadlock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

from cara.rpc.caps import BrokenCap, Cap
from cara.rpc.description import describe
from cara.rpc.errors import Disconnected
from cara.rpc.proxies import (
    CallPromise,
    Method,
    PipelinedField,
    Proxy,
    _field_or_method,
    cast,
    core_cap_of,
)

__all__ = ["Bridge", "SyncField", "SyncPromise", "ThreadCap", "await_future", "current_trio",
           "defer", "shutdown"]

T = TypeVar("T")


class _Runner:
    """An event loop running in a daemon thread, and the thread-safe way in."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread_id: int | None = None
        self.closed = False
        self._lock = threading.Lock()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name=name,
                                       daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self.thread_id = threading.get_ident()
        started.set()
        try:
            loop.run_forever()
            # Calls handed over just before closing still run (and fail with Disconnected).
            for _ in range(3):
                loop.run_until_complete(asyncio.sleep(0))
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, soon."""
        with self._lock:
            if self.closed:
                raise Disconnected("the blocking client is closed")
            self.loop.call_soon_threadsafe(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run on the loop thread; waits for its value."""
        if self.on_loop_thread():
            return fn(*args)
        reply: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                reply.set_result(fn(*args))
            except BaseException as exc:
                reply.set_exception(exc)

        self.submit(run)
        return reply.result()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError("SyncClient.run() called from the client's own loop thread "
                               "(it would wait for itself): await the coroutine instead")
        with self._lock:
            if self.closed:
                coro.close()
                raise Disconnected("the blocking client is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (after the tasks it was given ran) and wait for its thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # already closed
                return
        if not self.on_loop_thread():
            self.thread.join(timeout)


def _drop(_obj: object) -> None:
    """A capability handed to the loop thread so that its last reference dies there."""


class ThreadCap(Cap):
    """A core capability usable from any thread: calls made on the loop thread go straight to
    the capability it stands for (and return its awaitable promise); calls from other threads
    are handed to the loop thread and wait for the value, or give a :class:`SyncPromise` when
    the capability is *deferred* (by default when its bridge is; :func:`defer`).

    The capability it stands for is made on the loop thread on first use (``make``): a
    bootstrap or a pipelined field costs nothing until it is called."""

    __slots__ = ("_deferred", "_inner", "_make", "_owner")
    #: Calls on this capability are allowed from threads without a running loop.
    _cara_any_thread_ = True

    def __init__(self, inner: Cap | None, owner: Bridge, *,
                 make: Callable[[], Cap] | None = None, deferred: bool | None = None) -> None:
        self._inner = inner
        self._make = make
        self._owner = owner
        self._deferred = owner.deferred if deferred is None else deferred

    def _core(self) -> Cap:
        """The capability this one stands for (on the loop thread only)."""
        inner = self._inner
        if inner is None:
            make, self._make = self._make, None
            try:
                inner = make() if make is not None else None
            except Exception as exc:
                inner = BrokenCap(exc)
            if inner is None:
                inner = BrokenCap(TypeError("the capability is null"))
            self._inner = inner
        return inner

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> Any:
        runner = self._owner._runner
        if runner.on_loop_thread():
            return self._core().call(method, params, timeout, unbox=unbox)
        return self._owner._call(self, method, params, timeout, unbox)

    def resolved(self) -> Cap:
        return self._core().resolved()

    @property
    def is_promise(self) -> bool:
        return self._core().is_promise

    def close(self) -> None:
        runner = self._owner._runner
        if runner.on_loop_thread():
            self._core().close()
        elif not runner.closed:
            runner.submit(lambda: self._core().close())

    @property
    def closed(self) -> bool:
        inner = self._inner
        return self._owner._runner.closed or (inner is not None and inner.closed)

    def __del__(self) -> None:
        # An import is released when its last reference dies: let that happen on the loop.
        inner = self._inner
        if inner is not None:
            try:
                runner = self._owner._runner
                if not runner.closed and not runner.on_loop_thread():
                    runner.loop.call_soon_threadsafe(_drop, inner)
            except Exception:  # interpreter shutdown, closed loop: nothing left to tell
                pass

    def __repr__(self) -> str:
        inner = self._inner
        what = repr(inner) if inner is not None else "not used yet"
        return f"{'deferred ' if self._deferred else ''}blocking {what}"


# ------------------------------------------------------------------------------ results


def _sync_value(value: Any, owner: Bridge, depth: int = 0) -> Any:
    """``value`` with every proxy in it (at the top, or inside structs and lists, replaced in
    place) made a blocking proxy of ``owner``. Runs on the loop thread."""
    cls = type(value)
    if value is None or cls in (int, float, str, bytes, bool):
        return value
    if getattr(cls, "_cara_rpc_proxy_", False) is True:
        cap = value._cara_rpc_cap_
        return value if isinstance(cap, ThreadCap) else cls(ThreadCap(cap, owner))
    if isinstance(value, Proxy):
        return value if isinstance(value._cap, ThreadCap) else cls(ThreadCap(value._cap, owner))
    if getattr(cls, "_cara_core_cap_", False) is True:
        return value if isinstance(value, ThreadCap) else ThreadCap(value, owner)
    if depth > 64:
        return value
    if isinstance(value, dict):
        for key, item in dict.items(value):
            new = _sync_value(item, owner, depth + 1)
            if new is not item:
                dict.__setitem__(value, key, new)
    elif isinstance(value, list) and value:
        if type(value[0]) in (int, float, str, bytes, bool):
            return value  # lists are typed: a list of scalars holds no capability
        for i, item in enumerate(value):
            new = _sync_value(item, owner, depth + 1)
            if new is not item:
                list.__setitem__(value, i, new)
    return value


def _deliver(reply: concurrent.futures.Future[Any], owner: Bridge,
             promise: asyncio.Future[Any]) -> None:
    """Pass a finished call's outcome to the waiting thread (on the loop thread)."""
    if reply.done():
        return
    if promise.cancelled():
        reply.set_exception(asyncio.CancelledError(f"{_name(promise)}() was cancelled"))
        return
    exc = promise.exception()
    if exc is not None:
        reply.set_exception(exc)
        return
    try:
        results = getattr(promise, "_results", None)
        if results is not None:
            _sync_value(results, owner)
        reply.set_result(_sync_value(promise.result(), owner))
    except BaseException as err:  # pragma: no cover - defensive: never leave a thread waiting
        reply.set_exception(err)


def _name(promise: Any) -> str:
    method = getattr(promise, "_method", None)
    return method.name if method is not None else "the call"


def _start(sp: SyncPromise, cap: ThreadCap, params: Any, timeout: float | None,
           unbox: bool) -> None:
    """On the loop thread: send the call, and arrange for its outcome to reach the caller."""
    try:
        promise = cap._core().call(sp._method, params, timeout, unbox=unbox)
    except BaseException as exc:
        sp._reply.set_exception(exc)
        return
    sp._promise = promise
    promise.add_done_callback(partial(_deliver, sp._reply, sp._owner))


def current_trio() -> Any:
    """The trio module when this thread runs trio (and no asyncio loop), else ``None``."""
    trio = sys.modules.get("trio")
    if trio is None or asyncio._get_running_loop() is not None:
        return None
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return None
    return trio


async def await_future(reply: concurrent.futures.Future[T],
                       cancel: Callable[[], Any] | None = None) -> T:
    """Await a :class:`concurrent.futures.Future` completed by another thread, under trio or
    asyncio; being cancelled calls ``cancel`` (from the waiting thread)."""
    if not reply.done():
        trio = current_trio()
        try:
            if trio is not None:
                token = trio.lowlevel.current_trio_token()
                event = trio.Event()

                def wake(_f: object) -> None:
                    try:
                        token.run_sync_soon(event.set)
                    except trio.RunFinishedError:
                        pass

                reply.add_done_callback(wake)
                await event.wait()
            else:
                await asyncio.wrap_future(reply)
        except BaseException:
            if not reply.done() and cancel is not None:
                cancel()
            raise
    return reply.result()


# ------------------------------------------------------------------------------ promises


class SyncPromise:
    """The promise of a call made through a :class:`ThreadCap`, for threads without a loop (a
    deferred call of the blocking client) or for trio.

    ``result(timeout=None)`` waits for the value (as the blocking call would return it), and
    ``await promise`` waits under trio or asyncio; ``done()``, ``exception()`` and ``cancel()``
    work as on a :class:`concurrent.futures.Future`. As with the asyncio client's promises,
    ``promise.field`` names a result field before the answer: a method called on a capability
    field is sent at once, to the capability the answer will hold (pipelining); where the only
    result is a capability, the promise accepts its methods itself. ``promise["name"]`` reaches
    a field named like one of these methods."""

    __slots__ = ("_method", "_owner", "_promise", "_reply")

    def __init__(self, method: Method, owner: Bridge) -> None:
        self._method = method
        self._owner = owner
        self._promise: CallPromise | None = None  # set on the loop thread when sent
        self._reply: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def result(self, timeout: float | None = None) -> Any:
        reply = self._reply
        if not reply.done() and self._owner._runner.on_loop_thread():
            raise RuntimeError("waiting for a promise on the client's own event-loop thread (in "
                               "a callback) would wait forever: await the call instead")
        try:
            return reply.result(timeout)
        except concurrent.futures.TimeoutError:
            self._cancel_soon()
            raise TimeoutError(f"{self._method.name}() did not finish in time") from None
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C while waiting cancels the call
            self._cancel_soon()
            raise

    def __await__(self) -> Any:
        return await_future(self._reply, self._cancel_soon).__await__()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except TimeoutError:
            raise
        except BaseException as exc:
            return exc
        return None

    def done(self) -> bool:
        return self._reply.done()

    def cancel(self) -> bool:
        """Ask the other side to cancel the call (it then raises ``CancelledError``)."""
        if self._reply.done():
            return False
        self._cancel_soon()
        return True

    def _cancel_soon(self) -> None:
        runner = self._owner._runner
        if not runner.closed:
            runner.submit(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self._promise is not None:
            self._promise.cancel()

    def _pipeline_on_loop(self, path: tuple[str, ...]) -> Cap:
        promise = self._promise
        if promise is None:  # it could not be sent: its pipelined capabilities fail alike
            reply = self._reply
            exc = reply.exception() if reply.done() else None
            return BrokenCap(exc if isinstance(exc, Exception) else Disconnected("not sent"))
        cap = promise._pipeline(path)
        assert isinstance(cap, Cap)
        return cap

    def _pipeline(self, path: tuple[str, ...]) -> ThreadCap:
        return ThreadCap(None, self._owner, make=partial(self._pipeline_on_loop, path))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name.startswith("_cara"):
            raise AttributeError(name)
        found = _field_or_method(self, self._method, (), name)  # type: ignore[arg-type]
        return SyncField(self, found._path) if type(found) is PipelinedField else found

    def __getitem__(self, name: str) -> SyncField:
        if self._method.result_field(name) is None:
            raise KeyError(f"{self._method.name}() has no result {name!r}")
        return SyncField(self, (name,))

    __cara_cast__ = CallPromise.__cara_cast__  # its single capability result, pipelined

    def __repr__(self) -> str:
        state = "done" if self._reply.done() else "pending"
        return f"<SyncPromise {self._method.name}() {state}>"


class SyncField(PipelinedField):
    """A result field of a :class:`SyncPromise`: ``.sub`` goes deeper, a method call on a
    capability field is pipelined, ``result()`` waits for the field's value."""

    __slots__ = ()
    _promise: Any

    def __init__(self, promise: SyncPromise, path: tuple[str, ...]) -> None:
        super().__init__(promise, path)  # type: ignore[arg-type]  # duck-typed promise

    def __getattr__(self, name: str) -> Any:
        found = super().__getattr__(name)
        return SyncField(self._promise, found._path) if type(found) is PipelinedField else found

    def result(self, timeout: float | None = None) -> Any:
        promise: SyncPromise = self._promise
        value = promise.result(timeout)
        method = promise._method
        if method.result_cls is None:  # described without runtime classes
            info = method.info
            if info is not None and not info.results_named and len(info.results) > 1:
                return value[self._path[0]]
            return value
        assert promise._promise is not None
        value = promise._promise._results  # made blocking in place before result() returned
        for name in self._path:
            value = getattr(value, name)
        return value

    def __await__(self) -> Any:
        return self._await().__await__()

    async def _await(self) -> Any:
        await self._promise
        return self.result()


# ------------------------------------------------------------------------------ the bridge


class Bridge:
    """A client (``make_client()``, an asyncio client) connected to ``url`` on a private event
    loop in a daemon thread. Its capabilities are :class:`ThreadCap` objects, *deferred* (calls
    give a :class:`SyncPromise`) or not (calls wait and return the value). :meth:`begin` starts
    the thread and the connection; the caller waits for the future it returns."""

    _runner: _Runner  # made by begin()

    def __init__(self, url: str, make_client: Callable[[], Any], *, deferred: bool) -> None:
        self.url = url
        self.deferred = deferred
        self._make_client = make_client
        self.client: Any = None

    def begin(self) -> concurrent.futures.Future[Any]:
        self._runner = _Runner(f"cara {self.url}")
        return asyncio.run_coroutine_threadsafe(self._connect(), self._runner.loop)

    async def _connect(self) -> Any:
        client = self._make_client()
        client.connect(self.url)
        await client.start()
        self.client = client
        return client

    # ------------------------------------------------------------------ capabilities

    def bootstrap(self, iface: Any = None) -> Any:
        """A proxy of the server's implementation of ``iface`` (no round trip)."""
        if iface is not None and describe(iface) is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        client = self.client
        cap = ThreadCap(None, self, make=lambda: core_cap_of(client.bootstrap(iface)))
        return cap.cast(iface) if iface is not None else cap

    def __cara_cast__(self, iface: Any) -> Any:
        return self.bootstrap(iface)

    def _call(self, cap: ThreadCap, method: Method, params: Any, timeout: float | None,
              unbox: bool) -> Any:
        sp = SyncPromise(method, self)
        self._runner.submit(_start, sp, cap, params, timeout, unbox)
        return sp if cap._deferred else sp.result()

    # ------------------------------------------------------------------ the loop thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._runner.loop

    def call_in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` called on the loop thread; returns its value."""
        return self._runner.call(fn, *args)

    def stats(self) -> dict[str, int]:
        return self._runner.call(self.client.stats)

    @property
    def closed(self) -> bool:
        runner = getattr(self, "_runner", None)
        return runner is None or runner.closed

    def shutdown(self) -> None:
        """Stop the client and the loop thread, waiting for both (from a plain thread)."""
        runner = getattr(self, "_runner", None)
        if runner is not None:
            shutdown(runner, self.client)


async def _stop(client: Any) -> None:
    if client is not None:
        await client.stop()


def shutdown(runner: _Runner, client: Any) -> None:
    """Stop ``client`` on ``runner``'s loop, then the loop and its thread."""
    if runner.closed:
        return
    if not runner.on_loop_thread():
        try:
            runner.run(_stop(client), timeout=10)
        except Exception:  # the client is gone anyway
            pass
    runner.stop()


def defer(proxy: Any) -> Any:
    """``proxy`` (a proxy of a :class:`Bridge`, or a capability field of a
    :class:`SyncPromise`) whose calls return a :class:`SyncPromise` at once."""
    cap = core_cap_of(proxy)
    if isinstance(proxy, PipelinedField):
        iface = proxy._interface()
    elif isinstance(proxy, Proxy):  # an interface described without runtime classes
        iface = proxy._info
    else:
        iface = describe(proxy)
    if not isinstance(cap, ThreadCap) or iface is None:
        raise TypeError(f"defer() takes a proxy of a blocking client (cara.connect_sync), got "
                        f"{proxy!r}")
    return cast(ThreadCap(None, cap._owner, make=cap._core, deferred=True), iface)
