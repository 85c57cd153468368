"""Capabilities as the core sees them, and the promises of local calls.

Every capability a program can hold is one of these objects behind a typed proxy
(:mod:`cara.rpc.proxies`); they all answer ``call(method, params) -> CallPromise``:

* :class:`LocalCap` -- an object of this process (an implementation): the call runs here, and a
  handler returning a plain value is answered at once, with no task;
* :class:`QueuedCap` -- a promise of a capability not known yet (a field of a local call's
  results, a promise resolving after an embargo): calls wait in order and are passed on, in that
  order, when it resolves -- E-order;
* :class:`BrokenCap` -- every call fails with the exception it holds;
* the imports and pipelined answers of a connection (:mod:`cara.rpc.connection`).

:func:`to_cap` turns whatever a program put where a capability goes (a proxy, a promise, a
pipelined field, an implementation, a function) into one of them.
"""

from __future__ import annotations

import asyncio
from types import CoroutineType
from typing import Any

from cara.rpc.accel import get_running_loop
from cara.rpc.description import InterfaceInfo, describe
from cara.rpc.dispatch import Implementation
from cara.rpc.eager import is_awaitable, start
from cara.rpc.plain import Exported
from cara.rpc.proxies import (
    NO_RUNNING_LOOP,
    CallPromise,
    Method,
    cast,
    core_cap_of,
    current_loop,
)
from cara.rpc.wire_cara import field_steps, follow_steps

__all__ = [
    "BrokenCap",
    "Cap",
    "LocalCall",
    "LocalCap",
    "QueuedCap",
    "follow_names",
    "name_steps",
    "running_loop",
    "to_cap",
]


def running_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio loop, or under trio the run's loop (see ``current_loop``)."""
    loop = get_running_loop()
    if loop is None:
        loop = current_loop()
        if loop is None:
            raise RuntimeError(NO_RUNNING_LOOP)
    return loop


class Cap:
    """Base of the core capabilities (see the module docstring)."""

    __slots__ = ("__weakref__",)
    _cara_core_cap_ = True

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        """Call ``method``; the promise gives ``method.unbox(results)`` (or, with
        ``unbox=False``, the results struct itself: how answers are forwarded)."""
        raise NotImplementedError

    def resolved(self) -> Cap:
        """The capability this one stands for now (itself unless it is a resolved promise)."""
        return self

    @property
    def is_promise(self) -> bool:
        return False

    def cast(self, iface: Any) -> Any:
        """This capability typed as ``iface`` (a proxy)."""
        return cast(self, iface)

    __cara_cast__ = cast

    def __cara_capability__(self, iface_cls: Any) -> Any:
        return cast(self, iface_cls)

    def close(self) -> None:
        """Give the reference back now (imports); nothing to do for local capabilities."""

    @property
    def closed(self) -> bool:
        return False


class LocalCall(CallPromise):
    """The promise of a call run in this process (a handler, or a call passed on)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, method: Method, unbox: bool) -> None:
        super().__init__(loop=loop)
        self._method = method
        self._unbox = unbox
        self._results: Any = None
        self._settled = False
        self._error: BaseException | None = None
        self._task: asyncio.Future[Any] | None = None
        self._pipes: dict[tuple[str, ...], QueuedCap] = {}

    def _settle(self, results: Any) -> None:
        if self._settled:
            return
        self._settled = True
        self._results = results
        pipes, self._pipes = self._pipes, {}
        for path, queued in pipes.items():
            queued.resolve(self._at(path))
        if self.done():
            return
        if self._unbox:
            try:
                value = self._method.unbox(results) if self._method.unbox else results
            except Exception as exc:
                self.set_exception(exc)
                return
            self.set_result(value)
        else:
            self.set_result(results)

    def _fail(self, exc: BaseException) -> None:
        if self._settled:
            return
        self._settled = True
        self._error = exc
        pipes, self._pipes = self._pipes, {}
        for queued in pipes.values():
            queued.resolve(BrokenCap(exc))
        if not self.done():
            if isinstance(exc, asyncio.CancelledError):
                super().cancel()
            else:
                self.set_exception(exc)

    def _at(self, path: tuple[str, ...]) -> Cap:
        try:
            value = follow_names(self._method, self._results, path)
        except Exception as exc:  # a bad path: the pipelined calls fail, not the program
            return BrokenCap(exc)
        cap = to_cap(value)
        return cap if cap is not None else BrokenCap(
            TypeError(f"{self._method.name}().{'.'.join(path)} is null"))

    def _pipeline(self, path: tuple[str, ...]) -> Cap:
        if self._settled:
            return self._at(path) if self._error is None else BrokenCap(self._error)
        queued = self._pipes.get(path)
        if queued is None:
            queued = self._pipes[path] = QueuedCap()
        return queued

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            self._fail(asyncio.CancelledError())
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)
        else:
            self._settle(task.result())

    def cancel(self, msg: Any = None) -> bool:
        task = self._task
        if task is not None and not task.done():
            task.cancel(msg)
        return super().cancel(msg)


class LocalCap(Cap):
    """An object of this process, callable as a capability (``LocalCap(obj, info)`` also marks
    an object to be sent as a capability implementing ``info``)."""

    __slots__ = ("impl",)

    def __init__(self, obj: object, info: InterfaceInfo | None = None) -> None:
        self.impl = Implementation(obj, info if info is not None else describe(obj))

    @property
    def obj(self) -> object:
        return self.impl.obj

    @property
    def info(self) -> InterfaceInfo | None:
        return self.impl.info

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        promise = LocalCall(running_loop(), method, unbox)
        try:
            handler = self.impl.handler(method.interface_id, method.index)
            result = handler.run(params)
        except Exception as exc:
            promise._fail(exc)
            return promise
        if type(result) is CoroutineType:  # its first step runs now (cara.rpc.eager)
            started = start(result, promise.get_loop())
            if started.done:
                if started.error is None:
                    promise._settle(started.value)
                else:
                    promise._fail(started.error)
                return promise
            assert started.task is not None
            promise._task = started.task
            started.task.add_done_callback(promise._task_done)
        elif is_awaitable(result):
            task = asyncio.ensure_future(result, loop=promise.get_loop())
            promise._task = task
            task.add_done_callback(promise._task_done)
        else:
            promise._settle(result)
        return promise

    def __repr__(self) -> str:
        return f"<LocalCap {self.impl.obj!r}>"


class BrokenCap(Cap):
    """A capability whose every call fails with ``exc``."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        promise = LocalCall(running_loop(), method, unbox)
        exc = self.exc
        promise._fail(type(exc)(*exc.args) if isinstance(exc, Exception) else exc)
        return promise

    def __repr__(self) -> str:
        return f"<BrokenCap {self.exc!r}>"


class DeferredCall(LocalCall):
    """A call made on a :class:`QueuedCap` before it resolved; passed on when it does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, method: Method, unbox: bool,
                 params: Any, timeout: float | None) -> None:
        super().__init__(loop, method, unbox)
        self._params = params
        self._timeout = timeout
        self._inner: CallPromise | None = None

    def _forward(self, cap: Cap) -> None:
        params, self._params = self._params, None
        inner = self._inner = cap.call(self._method, params, self._timeout, unbox=self._unbox)
        pipes, self._pipes = self._pipes, {}
        for path, queued in pipes.items():
            queued.resolve(inner._pipeline(path))
        inner.add_done_callback(self._inner_done)

    def _inner_done(self, inner: asyncio.Future[Any]) -> None:
        if self.done():
            return
        if inner.cancelled():
            super().cancel()
            return
        exc = inner.exception()
        if exc is not None:
            self.set_exception(exc)
        else:
            self._settled = True
            self._results = getattr(inner, "_results", None)
            self.set_result(inner.result())

    def _pipeline(self, path: tuple[str, ...]) -> Cap:
        if self._inner is not None:
            return self._inner._pipeline(path)
        return super()._pipeline(path)

    def cancel(self, msg: Any = None) -> bool:
        if self._inner is not None:
            self._inner.cancel(msg)
        return super().cancel(msg)


class QueuedCap(Cap):
    """A capability not known yet: calls wait, in order, until :meth:`resolve`."""

    __slots__ = ("queue", "target", "waiters")

    def __init__(self) -> None:
        self.target: Cap | None = None
        self.queue: list[DeferredCall] = []
        self.waiters: list[Any] = []

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        if self.target is not None:
            return self.target.call(method, params, timeout, unbox=unbox)
        deferred = DeferredCall(running_loop(), method, unbox, params, timeout)
        self.queue.append(deferred)
        return deferred

    def resolve(self, cap: Cap | None) -> None:
        """Pass every waiting call on to ``cap``, in the order they were made."""
        if self.target is not None:
            return
        if cap is None:
            cap = BrokenCap(TypeError("the capability is null"))
        self.target = cap
        queue, self.queue = self.queue, []
        for deferred in queue:
            if not deferred.done():
                deferred._forward(cap)
        waiters, self.waiters = self.waiters, []
        for callback in waiters:
            callback(cap)

    def when_resolved(self, callback: Any) -> None:
        if self.target is not None:
            callback(self.target)
        else:
            self.waiters.append(callback)

    def resolved(self) -> Cap:
        return self.target.resolved() if self.target is not None else self

    @property
    def is_promise(self) -> bool:
        return self.target is None

    def __repr__(self) -> str:
        return f"<QueuedCap -> {self.target!r}>" if self.target else "<QueuedCap pending>"


def to_cap(value: Any, info: InterfaceInfo | None = None) -> Cap | None:
    """The core capability for what a program put where a capability goes (``None`` stays
    ``None``): a proxy's, a promise's single capability result, a pipelined field's, or a new
    :class:`LocalCap` for an implementation, object or function."""
    if value is None:
        return None
    core = core_cap_of(value)
    if core is not None:
        return core
    if isinstance(value, Exported):
        return LocalCap(value.obj, value.info)
    if isinstance(value, CallPromise):
        raise TypeError(f"the result of {value._method.name}() is not a capability")
    return LocalCap(value, info)


def name_steps(method: Method, path: tuple[str, ...]) -> tuple[str, ...]:
    """``path`` as the encodings take it: names with runtime classes, field numbers (as text)
    for a method described without them."""
    if method.result_cls is not None or method.info is None:
        return path
    numbers = method.info.result_numbers
    if path[0] not in numbers:
        raise AttributeError(f"{method.name}() has no result {path[0]!r}")
    return (str(numbers[path[0]]), *path[1:])


def follow_names(method: Method, results: Any, path: tuple[str, ...]) -> Any:
    """The value at result field ``path`` of a local call's results."""
    return follow_steps(results, field_steps(method.result_cls, name_steps(method, path)))

