"""What a program holds: typed proxies of capabilities, and the promises that calls return.

A proxy wraps a core capability (:class:`cara.rpc.caps.Cap`: an import, a promise, a local
object...) and is typed by an interface: an instance of a subclass of the runtime interface class
(:func:`runtime_proxy_class`, so ``isinstance(proxy, Iface)`` holds), or a :class:`Proxy` for an
interface described without runtime classes. Every method call returns a :class:`CallPromise` at
once, wherever the object lives -- in another process or in this one.

A :class:`CallPromise` is an :class:`asyncio.Future` of the call's value (``None``, the single
result, or the results struct) that can be used *before* it resolves (promise pipelining):
``promise.field`` names a result field, and a capability field accepts method calls at once,
sent to the capability the answer will hold (``calc.evaluate(e).value.read()`` is one round trip).
Where the single result is a capability, the promise itself accepts its methods, and a promise or
a pipelined field can be passed wherever a capability is expected. ``promise["name"]`` reaches a
field whose name is also a Future method (``result``, ``done``...).

This module knows capabilities only by what they do (``call``, ``cast``); the core objects are in
:mod:`cara.rpc.caps` and :mod:`cara.rpc.connection`.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import weakref
from collections import deque
from collections.abc import AsyncIterable, Callable, Generator, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from cara.rpc.accel import FRAMES, get_running_loop
from cara.rpc.description import (
    INTERFACE,
    FieldInfo,
    InterfaceInfo,
    MethodInfo,
    describe,
    known_interface,
)
from cara.rpc.flow import Sent, Window
from cara.rpc.plain import decode_plain_results, encode_plain_params
from cara.schema.ids import STREAM_RESULT_ID

__all__ = [
    "NO_RUNNING_LOOP",
    "STREAM_RESULT_ID",
    "AfterStreams",
    "CallPromise",
    "Method",
    "PipelinedField",
    "Proxy",
    "StreamCall",
    "StreamState",
    "check_loop",
    "current_loop",
    "feed",
    "fresh_error",
    "is_stream_method",
    "method_of",
    "proxy_class",
    "runtime_proxy_class",
    "stream_window",
]


# ------------------------------------------------------------------------------ methods


class Method:
    """One method as the core moves it: its address, the classes of its params and results
    (runtime struct classes, or ``None`` for field-number dicts), and how the results struct
    becomes what the caller gets (``unbox``)."""

    __slots__ = ("index", "info", "interface_id", "name", "param_cls", "result_cls", "spec",
                 "stream", "unbox", "unbox_field")

    def __init__(self, interface_id: int, index: int, name: str, *, param_cls: Any = None,
                 result_cls: Any = None, spec: Any = None, info: MethodInfo | None = None,
                 unbox: Callable[[Any], Any] | None = None) -> None:
        self.interface_id = interface_id
        self.index = index
        self.name = name
        self.param_cls = param_cls
        self.result_cls = result_cls
        self.spec = spec
        self.info = info
        self.unbox = unbox
        #: The result field ``n`` when ``unbox(results)`` is ``results[n]`` (read so by the C
        #: fast path of cara frames, which then calls no ``unbox``); else None.
        self.unbox_field: int | None = spec.single_result() if spec is not None else None
        #: A streaming method (``-> stream``): its callers go on while the flow-control window
        #: has room instead of waiting for each return (see :class:`StreamCall`).
        self.stream = is_stream_method(spec if spec is not None else info)

    def __repr__(self) -> str:
        return f"<method {self.name} @{self.index} of 0x{self.interface_id:016x}>"

    def result_field(self, name: str) -> tuple[str, Any] | None:
        """``(kind, type info)`` of result field ``name``: the runtime field type, or a
        :class:`~cara.rpc.description.FieldInfo`; ``None`` when there is no such field."""
        if self.result_cls is not None:
            schema = self.result_cls.cara_schema
            f = schema.by_name.get(name)
            if f is None:
                num = schema.attr_num.get(name)
                f = schema.fields[num] if num is not None else None
            return None if f is None else (f.name, f.type)
        if self.info is not None:
            for fi in self.info.results:
                if fi.name == name:
                    return (fi.name, fi)
        return None

    def single_interface_result(self) -> str | None:
        """The name of the only result field when it is a capability (the promise then
        accepts its methods)."""
        if self.spec is not None and not self.spec.results_named:
            fields = self.result_cls.cara_schema.fields
            if len(fields) == 1 and fields[0].type.kind == "interface":
                return str(fields[0].name)
        elif self.info is not None and not self.info.results_named and \
                len(self.info.results) == 1 and self.info.results[0].kind == INTERFACE:
            return self.info.results[0].name
        return None


def is_stream_method(m: Any) -> bool:
    """Whether runtime ``MethodSpec`` or :class:`MethodInfo` ``m`` is declared ``-> stream``."""
    if m is None:
        return False
    if isinstance(m, MethodInfo):
        return m.result_struct_id == STREAM_RESULT_ID
    try:
        return bool(m.result_class.cara_schema.id == STREAM_RESULT_ID)
    except AttributeError:
        return False


def method_of(m: Any) -> Method:
    """The :class:`Method` of a runtime ``MethodSpec`` or a :class:`MethodInfo` (made once)."""
    found = getattr(m, "_cara_rpc_method_", None)
    if found is not None:
        return found
    if isinstance(m, MethodInfo) and m.spec is not None:
        method = method_of(m.spec)
    elif isinstance(m, MethodInfo):
        info: MethodInfo = m
        method = Method(m.interface_id, m.index, m.name, info=m,
                        unbox=lambda results: decode_plain_results(info, results))
    else:  # a runtime MethodSpec
        method = Method(m.interface_id, m.index, m.name, param_cls=m.param_class,
                        result_cls=m.result_class, spec=m, unbox=m.unbox_results)
    try:
        m._cara_rpc_method_ = method
    except AttributeError:  # pragma: no cover - both kinds accept attributes
        pass
    return method


# ------------------------------------------------------------------------------ promises


_T = TypeVar("_T")


class CallPromise(asyncio.Future[_T]):
    """The value of a call, usable before it arrives (see the module docstring).

    Subclasses say where the capabilities of the answer come from (:meth:`_pipeline`) and what
    cancelling does. ``_results`` holds the results struct once it is known. Generic in the
    value for type checkers: a generated stub types each method's promise as a subclass of
    ``CallPromise[value]`` with one property per result field."""

    _method: Method
    _results: Any

    def _pipeline(self, path: tuple[str, ...]) -> Any:
        """The core capability at result field ``path`` (names), usable now."""
        raise NotImplementedError

    if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt result field is flagged
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") or name.startswith("_cara") or name == "_method":
                raise AttributeError(name)
            return _field_or_method(self, self._method, (), name)

    def __getitem__(self, name: str) -> PipelinedField:
        if self._method.result_field(name) is None:
            raise KeyError(f"{self._method.name}() has no result {name!r}")
        return PipelinedField(self, (name,))

    def __cara_cast__(self, iface: Any) -> Any:
        """A promise passed where a capability is expected: its single capability result."""
        single = self._method.single_interface_result()
        if single is None:
            raise TypeError(f"the result of {self._method.name}() is not a capability; name "
                            "the field that holds one (promise.field)")
        return self._pipeline((single,)).cast(iface)

    def __repr__(self) -> str:
        state = "pending" if not self.done() else "done"
        return f"<{type(self).__name__} {self._method.name}() {state}>"


def _field_or_method(promise: CallPromise, method: Method, path: tuple[str, ...],
                     name: str) -> Any:
    if not path and method.result_field(name) is not None:
        return PipelinedField(promise, (name,))
    single = method.single_interface_result() if not path else None
    if single is not None:  # the promise stands for its only result, a capability
        return getattr(PipelinedField(promise, (single,)), name)
    raise AttributeError(f"{method.name}() has no result {name!r}")


class PipelinedField:
    """A field of a result that has not arrived: ``.sub`` goes deeper into a struct; on a
    capability, a method call is sent at once (pipelined); ``await`` gives the field's value."""

    __slots__ = ("_path", "_promise")

    def __init__(self, promise: CallPromise, path: tuple[str, ...]) -> None:
        self._promise = promise
        self._path = path

    def _type(self) -> Any:
        """The runtime type (or FieldInfo) of this field."""
        method = self._promise._method
        found = method.result_field(self._path[0])
        assert found is not None
        t = found[1]
        for name in self._path[1:]:
            cls = getattr(t, "cls", None)
            schema = getattr(cls, "cara_schema", None)
            f = schema.by_name.get(name) if schema is not None else None
            if f is None:
                raise AttributeError(name)
            t = f.type
        return t

    def _capability(self) -> Any:
        return self._promise._pipeline(self._path)

    def _interface(self) -> Any:
        t = self._type()
        if isinstance(t, FieldInfo):  # described without runtime classes
            if t.kind == INTERFACE:
                return known_interface(t.interface_id)
            return None
        if getattr(t, "kind", None) == "interface":
            return t.cls
        if getattr(t, "kind", None) == INTERFACE:
            info = known_interface(t.interface_id)
            if info is not None:
                return info
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        t = self._type()
        kind = getattr(t, "kind", None)
        if kind == "struct":
            schema = t.cls.cara_schema
            if name in schema.by_name or name in schema.attr_num:
                f = schema.by_name.get(name) or schema.fields[schema.attr_num[name]]
                return PipelinedField(self._promise, (*self._path, f.name))
            raise AttributeError(f"{schema.name} has no field {name!r}")
        iface = self._interface()
        if iface is not None:
            return getattr(self._capability().cast(iface), name)
        raise AttributeError(f"result field {'.'.join(self._path)} is not a struct or a "
                             f"capability (it has no {name!r})")

    def __cara_cast__(self, iface: Any) -> Any:
        return self._capability().cast(iface)

    def __await__(self) -> Any:
        return self._value().__await__()

    async def _value(self) -> Any:
        value = await self._promise
        method = self._promise._method
        if method.result_cls is None:  # described without runtime classes: the decoded value
            info = method.info
            if info is not None and not info.results_named and len(info.results) > 1:
                return value[self._path[0]]
            return value
        value = self._promise._results
        for name in self._path:
            value = getattr(value, name)
        return value

    def __repr__(self) -> str:
        return f"<pipelined {self._promise._method.name}().{'.'.join(self._path)}>"


# ------------------------------------------------------------------------------ proxies


class Proxy:
    """A capability typed by an interface described without runtime classes: one Python
    method per RPC method, each returning a :class:`CallPromise`; ``_timeout=seconds`` bounds
    one call. A proxy of a one-method interface is callable. ``close()`` (or ``async with``)
    releases the reference early."""

    __slots__ = ("__weakref__", "_cap")
    _info: InterfaceInfo

    def __init__(self, cap: Any) -> None:
        self._cap = cap

    def __getitem__(self, key: str | tuple[int, int]) -> Callable[..., Any]:
        m = self._info.by_name.get(key) if isinstance(key, str) else self._info.methods.get(key)
        if m is None:
            raise KeyError(key)
        send = sender(m, _info_streams(self._info))
        return lambda *args, **kwargs: call_plain(self._cap, m, args, kwargs, send)

    def __cara_cast__(self, iface: Any) -> Any:
        return self._cap.cast(iface)

    def __repr__(self) -> str:
        return f"<{self._info.name} proxy of {self._cap!r}>"

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cap.close()


#: Why a call cannot be made here: no event loop runs in this thread.
NO_RUNNING_LOOP = (
    "cara RPC calls need the connection's running asyncio event loop in this thread: make them "
    "from async code (asyncio.run(main())), or use the blocking client, whose calls work from "
    "any thread: `with cara.connect_sync(url) as client: Iface(client).method(...)`")


def check_loop(cap: Any) -> None:
    """Raise a clear error when a call on ``cap`` is made from a thread with no running event
    loop (unless ``cap`` works from any thread, as the blocking client's capabilities do)."""
    if get_running_loop() is None and not getattr(type(cap), "_cara_any_thread_", False) \
            and current_loop() is None:
        raise RuntimeError(NO_RUNNING_LOOP)


def current_loop() -> Any:
    """The running asyncio loop; else, when this thread runs trio, that run's
    :class:`~cara.rpc.trio_loop.TrioLoop` (the core then runs on trio); else ``None``."""
    loop: Any = get_running_loop()
    if loop is None and "trio" in sys.modules:
        from cara.rpc import trio_loop

        if "__await__" not in CallPromise.__dict__:  # promises now also wait under trio
            CallPromise.__await__ = trio_loop.await_any  # type: ignore[method-assign]
        loop = trio_loop.running_loop()
    return loop


def call_plain(cap: Any, m: MethodInfo, args: tuple[Any, ...], kwargs: dict[str, Any],
               send: Callable[..., Any] | None = None) -> Any:
    check_loop(cap)
    timeout = kwargs.pop("_timeout", None) if kwargs else None
    method = method_of(m)
    params = encode_plain_params(m, args, kwargs)
    if send is not None:  # a method of an interface that streams (see `sender`)
        return send(cap, method, params, timeout)
    return cap.call(method, params, timeout)


_proxy_classes: dict[int, type[Proxy]] = {}


def _proxy_method(m: MethodInfo, streams: bool) -> Callable[..., Any]:
    send = sender(m, streams)

    def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        return call_plain(self._cap, m, args, kwargs, send)

    method.__name__ = method.__qualname__ = m.name
    method.__doc__ = f"Call {m.name} (@{m.index} of interface 0x{m.interface_id:016x})."
    return method


def _close(self: Proxy) -> None:
    self._cap.close()


def proxy_class(info: InterfaceInfo) -> type[Proxy]:
    """The proxy class for ``info`` (made once per description)."""
    cls = _proxy_classes.get(id(info))
    if cls is not None and cls._info is info:
        return cls
    ns: dict[str, Any] = {"__slots__": (), "_info": info, "close": _close}
    streams = _info_streams(info)
    for name, m in info.by_name.items():
        ns[name] = _proxy_method(m, streams)  # a method named like `close` wins over the helper
    if len(info.by_name) == 1:
        (only,) = info.by_name.values()
        ns["__call__"] = _proxy_method(only, streams)
    cls = type(f"{info.name}Proxy", (Proxy,), ns)
    _proxy_classes[id(info)] = cls
    return cls


_runtime_proxy_classes: dict[type, type] = {}


def call_runtime(cap: Any, spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                 send: Callable[..., Any] | None = None) -> Any:
    """Call runtime method ``spec`` on core capability ``cap``: the runtime boxes the params."""
    check_loop(cap)
    timeout = kwargs.pop("_timeout", None) if kwargs and "_timeout" in kwargs else None
    if send is not None:  # a method of an interface that streams (see `sender`)
        return send(cap, method_of(spec), spec.box_params(args, kwargs), timeout)
    return cap.call(method_of(spec), spec.box_params(args, kwargs), timeout)


def _runtime_proxy_call(self: Any, method: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
    send = sender(method, type(self)._cara_streams_)
    return call_runtime(self._cara_rpc_cap_, method, args, kwargs, send)


def _runtime_proxy_method(spec: Any, streams: bool) -> Callable[..., Any]:
    send = sender(spec, streams)
    if send is not None:  # a method of an interface that streams

        def streaming(self: Any, *args: Any, **kwargs: Any) -> Any:
            return call_runtime(self._cara_rpc_cap_, spec, args, kwargs, send)

        streaming.__name__ = streaming.__qualname__ = spec.attr
        return streaming
    # call_runtime, unrolled: this is every typed call's first step
    box = spec.box_params
    send_plain = FRAMES.send_plain if FRAMES is not None else None
    rpc_method: Method | None = None  # method_of(spec), on the first call

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal rpc_method
        cap = self._cara_rpc_cap_
        if kwargs and "_timeout" in kwargs:
            return call_runtime(cap, spec, args, kwargs)
        if get_running_loop() is None:
            check_loop(cap)
        if rpc_method is None:
            rpc_method = method_of(spec)
        params = box(args, kwargs)
        if send_plain is not None:  # the C fast path (cara/rpc/_frames.c) or None
            q = send_plain(cap, rpc_method, params)
            if q is not None:
                return q
        return cap.call(rpc_method, params, None)

    method.__name__ = method.__qualname__ = spec.attr
    if FRAMES is not None:  # the same method, sending one-argument plain calls in C
        return FRAMES.PlainMethod(method, spec, method_of, type(spec).positional_box)
    return method


def runtime_proxy_class(iface_cls: type) -> type:
    """A subclass of runtime interface class ``iface_cls`` whose methods send calls.

    Its instances pass ``isinstance(proxy, Iface)`` and every runtime conversion, and each call
    returns a :class:`CallPromise` at once (no coroutine), so an unawaited call is still sent and
    ``asyncio.gather`` needs no task per call."""
    cls = _runtime_proxy_classes.get(iface_cls)
    if cls is not None:
        return cls
    schema: Any = iface_cls.cara_schema  # type: ignore[attr-defined]
    streams = _schema_streams(schema)
    ns: dict[str, Any] = {"__slots__": (), "_cara_call_": _runtime_proxy_call,
                          "_cara_rpc_proxy_": True, "_cara_streams_": streams,
                          "__module__": iface_cls.__module__}
    for spec in schema.all_methods.values():
        ns.setdefault(spec.attr, _runtime_proxy_method(spec, streams))

    def __init__(self: Any, cap: Any) -> None:
        # `Iface(client)` returns a proxy made by `client.__cara_cast__`; Python then calls
        # __init__ again with the client, which must not replace the capability.
        if _is_core(cap):
            object.__setattr__(self, "_cara_rpc_cap_", cap)

    def __repr__(self: Any) -> str:
        return f"<{iface_cls.__name__} proxy of {self._cara_rpc_cap_!r}>"

    async def __aenter__(self: Any) -> Any:
        return self

    async def __aexit__(self: Any, *exc: object) -> None:
        self._cara_rpc_cap_.close()

    def close(self: Any) -> None:
        """Release this capability now (``cara.rpc.release(proxy)`` when a method is named
        ``close``)."""
        self._cara_rpc_cap_.close()

    ns.update(__init__=__init__, __repr__=__repr__, __aenter__=__aenter__, __aexit__=__aexit__)
    ns.setdefault("close", close)  # a method of the interface named `close` wins
    cls = type(f"{iface_cls.__name__}Proxy", (iface_cls,), ns)
    _runtime_proxy_classes[iface_cls] = cls
    return cls


def _is_core(obj: Any) -> bool:
    """Whether ``obj`` is a core capability (asked of its class: some objects, such as pseud
    clients, answer every attribute name)."""
    return getattr(type(obj), "_cara_core_cap_", False) is True


def cast(cap: Any, iface: Any) -> Any:
    """Core capability ``cap`` typed as ``iface``."""
    cls = _cast_classes.get(iface)
    if cls is not None:  # (a runtime interface's proxy: made as its __init__ makes it)
        proxy: Any = _object_new(cls)
        _object_setattr(proxy, "_cara_rpc_cap_", cap)
        return proxy
    info = describe(iface)
    if info is None:
        raise TypeError(f"{iface!r} does not describe an interface")
    if info.pyclass is not None:
        cls = runtime_proxy_class(info.pyclass)
        if info.pyclass is iface and len(_cast_classes) < 4096:
            _cast_classes[iface] = cls
        return cls(cap)
    return proxy_class(info)(cap)


#: The runtime proxy class of each interface class ``cast`` was given (bounded).
_cast_classes: dict[Any, type] = {}
_object_new = object.__new__
_object_setattr = object.__setattr__


def core_cap_of(obj: Any) -> Any:
    """The core capability behind a proxy, promise or pipelined field (``None`` if none)."""
    t = type(obj)
    way = _CORE_WAYS.get(t)
    if way is None:
        way = _core_way(t)
    if way == _NO_CORE:
        return None
    if way == _IS_CORE:
        return obj
    if way == _PROXY:
        return obj._cap
    if way == _RUNTIME_PROXY:
        return obj._cara_rpc_cap_
    if way == _PIPELINED:
        return obj._capability()
    single = obj._method.single_interface_result()  # (a CallPromise)
    return obj._pipeline((single,)) if single is not None else None


#: How :func:`core_cap_of` finds the core capability in a value, by the value's type (asked
#: once per type: the values met are of few classes, most of them implementations, which
#: took five checks to find nothing in). Bounded.
_CORE_WAYS: dict[type, int] = {}
_NO_CORE, _IS_CORE, _PROXY, _RUNTIME_PROXY, _PIPELINED, _PROMISE = range(6)


def _core_way(t: type) -> int:
    if getattr(t, "_cara_core_cap_", False) is True:
        way = _IS_CORE
    elif issubclass(t, Proxy):
        way = _PROXY
    elif getattr(t, "_cara_call_", None) is _runtime_proxy_call:
        way = _RUNTIME_PROXY
    elif issubclass(t, PipelinedField):
        way = _PIPELINED
    elif issubclass(t, CallPromise):
        way = _PROMISE
    else:
        way = _NO_CORE
    if len(_CORE_WAYS) < 1024:
        _CORE_WAYS[t] = way
    return way



# ------------------------------------------------------------------------------ streaming


def sender(m: Any, streams: bool) -> Callable[..., Any] | None:
    """How a proxy sends method ``m`` (a runtime ``MethodSpec`` or a :class:`MethodInfo`) of an
    interface that has streaming methods (``streams``): :func:`send_stream` for a ``-> stream``
    method, :func:`send_after_streams` for the others; ``None`` (``cap.call`` as it is) for
    every method of an interface without streaming methods, so those calls pay nothing."""
    if not streams:
        return None
    return send_stream if is_stream_method(m) else send_after_streams


def _info_streams(info: InterfaceInfo) -> bool:
    return any(is_stream_method(m.spec if m.spec is not None else m)
               for m in info.methods.values())


def _schema_streams(schema: Any) -> bool:
    return any(is_stream_method(spec) for spec in schema.all_methods.values())


class StreamState:
    """The streaming calls of one capability: the flow-control :class:`~cara.rpc.flow.Window`,
    the calls in flight in the order they were sent, and the first error any of them returned
    (which every later call on the capability then raises)."""

    __slots__ = ("_idle", "_in_order", "_room", "error", "loop", "returned", "sent", "window")

    def __init__(self, loop: Any, window: Window | None = None) -> None:
        self.loop = loop  # asyncio's, or a TrioLoop: its time() and create_future()
        self.window = window if window is not None else Window()
        self.error: BaseException | None = None
        #: Stream calls sent and returned in all; calls number 0 .. returned-1 have all returned.
        self.sent = 0
        self.returned = 0
        self._in_order: deque[Sent] = deque()
        self._room: list[asyncio.Future[None]] = []
        self._idle: deque[tuple[int, Callable[[], None]]] = deque()

    def __repr__(self) -> str:
        return f"<StreamState {self.window!r}{' failed' if self.error else ''}>"

    def send(self, cap: Any, method: Method, params: Any, timeout: float | None) -> StreamCall:
        if self.error is None:  # after an error nothing more is sent: the call raises it
            promise = cap.call(method, params, timeout)
            ticket = self.window.sent(params_size(params), self.loop.time())
            self.sent += 1
            self._in_order.append(ticket)
            promise.add_done_callback(partial(self._returned, ticket))
        return StreamCall(self)

    def _returned(self, ticket: Sent, promise: asyncio.Future[Any]) -> None:
        self.window.returned(ticket, self.loop.time())
        exc = asyncio.CancelledError("a stream call was canceled") if promise.cancelled() \
            else promise.exception()  # (also marks it retrieved: nobody else awaits it)
        if exc is not None and self.error is None:
            self.error = exc
        in_order = self._in_order
        while in_order and in_order[0].returned:
            in_order.popleft()
            self.returned += 1
        if self._room and (self.error is not None or self.window.resume):
            room, self._room = self._room, []
            for waiter in room:
                if not waiter.done():
                    waiter.set_result(None)
        idle = self._idle
        while idle and idle[0][0] <= self.returned:
            idle.popleft()[1]()

    def when_returned(self, count: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the first ``count`` stream calls have all returned."""
        if count <= self.returned:
            callback()
        else:
            self._idle.append((count, callback))

    def room(self) -> asyncio.Future[None]:
        waiter = self.loop.create_future()
        self._room.append(waiter)
        return waiter

    def raise_error(self) -> None:
        if self.error is not None:
            raise fresh_error(self.error)

    async def flush(self) -> None:
        """Wait until every stream call sent so far has returned; raise the first error."""
        if self.returned < self.sent:
            waiter = self.loop.create_future()
            self.when_returned(self.sent, partial(_wake, waiter))
            await waiter
        self.raise_error()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def fresh_error(exc: BaseException) -> BaseException:
    """A copy of ``exc`` to raise once more (tracebacks must not pile up on one object)."""
    try:
        copied = copy.copy(exc)
    except Exception:  # pragma: no cover - an exception class that cannot be copied
        return exc
    copied.__traceback__ = None
    return copied


class StreamCall:
    """What calling a streaming method returns: the call has been sent; ``await`` returns as
    soon as the stream's flow-control window has room for another call (at once, mostly), and
    raises the error of any earlier call of the stream that failed."""

    __slots__ = ("_state",)

    def __init__(self, state: StreamState) -> None:
        self._state = state

    def __await__(self) -> Generator[Any, None, None]:
        state = self._state
        while state.error is None and not state.window.ready:
            yield from state.room().__await__()
        state.raise_error()

    async def flush(self) -> None:
        """Wait until every call of this stream sent so far has returned (see :func:`feed`)."""
        await self._state.flush()

    def __repr__(self) -> str:
        return f"<StreamCall {self._state!r}>"


class AfterStreams(CallPromise[_T]):
    """The promise of an ordinary call on a capability with streaming calls in flight: it
    settles once the call has returned *and* every stream call sent before it has, with the
    first error of those if one failed (else as the call did). Pipelining goes through."""

    def __init__(self, inner: CallPromise[_T], state: StreamState) -> None:
        super().__init__(loop=inner.get_loop())
        self._method = inner._method
        self._cara_inner = inner
        self._cara_streams = state
        self._cara_after = False
        state.when_returned(state.sent, self._after_streams)
        inner.add_done_callback(self._settle)

    @property
    def _results(self) -> Any:
        return self._cara_inner._results

    def _pipeline(self, path: tuple[str, ...]) -> Any:
        return self._cara_inner._pipeline(path)

    def _after_streams(self) -> None:
        self._cara_after = True
        self._settle(self._cara_inner)

    def _settle(self, inner: asyncio.Future[Any]) -> None:
        if self.done() or not self._cara_after or not inner.done():
            return
        error = self._cara_streams.error
        if inner.cancelled():
            super().cancel()
        elif inner.exception() is not None and error is None:
            self.set_exception(fresh_error(inner.exception()))  # type: ignore[arg-type]
        elif error is not None:
            self.set_exception(fresh_error(error))
        else:
            self.set_result(inner.result())

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self._cara_inner.cancel(msg)
        return super().cancel(msg)


_streams: weakref.WeakKeyDictionary[Any, StreamState] = weakref.WeakKeyDictionary()


def stream_state(cap: Any, create: bool = True, loop: Any = None) -> StreamState | None:
    """The :class:`StreamState` of core capability ``cap`` (made on its first stream call, on
    ``loop`` or the running one: asyncio's, or trio's :class:`~cara.rpc.trio_loop.TrioLoop`)."""
    try:
        state = _streams.get(cap)
        if state is None and create:
            if loop is None:
                loop = current_loop()
                if loop is None:
                    raise RuntimeError(NO_RUNNING_LOOP)
            state = _streams[cap] = StreamState(loop)
    except TypeError:  # a capability that takes no weak reference: no flow control
        return None
    return state


def stream_window(proxy: Any, window: Window | None = None) -> Window:
    """The flow-control :class:`~cara.rpc.flow.Window` of the streaming calls made through
    ``proxy`` (its ``window``, ``in_flight``, ``calls``...); ``window`` replaces it, e.g.
    ``stream_window(sink, Window(maximum=1 << 20))`` before streaming (from async code)."""
    cap = core_cap_of(proxy)
    state = stream_state(cap) if cap is not None else None
    if state is None:
        raise TypeError(f"{proxy!r} is not a capability that can stream")
    if window is not None:
        state.window = window
    return state.window


def send_stream(cap: Any, method: Method, params: Any, timeout: float | None) -> Any:
    """Send a call of streaming ``method`` on core capability ``cap``: a :class:`StreamCall`."""
    loop = get_running_loop()
    if loop is None:  # under trio (a TrioLoop), or a blocking client's call from a thread
        if getattr(type(cap), "_cara_any_thread_", False) or (loop := current_loop()) is None:
            return cap.call(method, params, timeout)  # (the blocking client: a plain call)
    state = stream_state(cap, True, loop)
    if state is None:
        return cap.call(method, params, timeout)
    return state.send(cap, method, params, timeout)


def send_after_streams(cap: Any, method: Method, params: Any, timeout: float | None) -> Any:
    """Send an ordinary call on a capability that may have stream calls in flight."""
    promise = cap.call(method, params, timeout)
    state = stream_state(cap, create=False)
    if state is None or (state.error is None and state.returned == state.sent):
        return promise
    if not isinstance(promise, CallPromise) or promise.get_loop() is not state.loop:
        return promise  # a blocking client's call from another thread (its value, waited for)
    return AfterStreams(promise, state)


def params_size(value: Any, depth: int = 0) -> int:
    """About how many bytes ``value`` (params) takes on the wire: what a stream call counts
    against the window (a bytes or text value counts its length; anything else a word)."""
    kind = type(value)
    if kind is bytes or kind is str or kind is bytearray or kind is memoryview:
        return len(value) + 8
    if depth > 16:
        return 8
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return 8
    size = 16
    for item in items:
        kind = type(item)
        if kind is bytes or kind is str:
            size += len(item) + 8
        elif kind is int or kind is float or kind is bool or item is None:
            size += 8
        else:
            size += params_size(item, depth + 1)
    return size


async def feed(send: Callable[[Any], Any], items: Iterable[Any] | AsyncIterable[Any]) -> int:
    """Send every item of ``items`` (an iterable or an async iterable) through streaming method
    ``send`` (``sink.write``; one argument per call), waiting only for room in the stream's
    flow-control window; then wait until every call has returned. Returns how many calls were
    sent; raises the first error any of them returned::

        n = await cara.feed(sink.write, chunks)
        total = await sink.done()
    """
    count = 0
    last: Any = None
    if isinstance(items, AsyncIterable):
        async for item in items:
            last = send(item)
            await last
            count += 1
    else:
        for item in items:
            last = send(item)
            await last
            count += 1
    if isinstance(last, StreamCall):
        await last.flush()
    return count
