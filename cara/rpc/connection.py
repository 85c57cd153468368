"""The RPC protocol of one connection, as a state machine with no I/O inside.

A :class:`Connection` is fed whole frames (:meth:`Connection.receive`) and hands the frames it
wants sent to the ``send`` callable it was given; who moves the bytes (asyncio streams, ZeroMQ,
a test's list) is the transport's business, so one core serves every transport.

It keeps Cap'n Proto's four tables:

* **questions** -- calls we sent and whose answer we await (an asyncio future each);
* **answers** -- calls we received whose handler is still running (cancelled on ``FINISH``);
* **exports** -- local objects the peer holds references to, with a reference count that the
  peer's ``RELEASE`` brings back down (the object is dropped at zero);
* **imports** -- the peer's objects we hold, one :class:`RemoteCap` each, held *weakly*: when the
  last proxy goes away (garbage or :meth:`Proxy.close`), a ``RELEASE`` with the count is sent.

Handlers that return a plain value are answered inline (no task per call); those returning an
awaitable run as a task so that a later ``FINISH`` can cancel them. The only asyncio use is for
those futures and tasks: pass the loop, or construct the connection inside a running loop.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import msgpack

from cara.rpc import messages as M
from cara.rpc.description import (
    INTERFACE,
    PLAIN,
    FieldInfo,
    InterfaceInfo,
    MethodInfo,
    describe,
    known_interface,
)
from cara.rpc.errors import (
    Disconnected,
    Overloaded,
    ProtocolError,
    Unimplemented,
    exception_from_wire,
    exception_to_wire,
)
from cara.runtime.interface import Interface as RuntimeInterface
from cara.runtime.interface import implementation as runtime_implementation
from cara.runtime.interface import positional_capacity

__all__ = [
    "Connection",
    "LocalCap",
    "Proxy",
    "RemoteCap",
    "Results",
    "Services",
    "proxy_class",
    "release",
    "runtime_proxy_class",
]

_Target = Any  # int export id, or [interface_id] for a bootstrap call


class Results(dict[str, Any]):
    """Several results of a call, by name; also readable as attributes (``r.text``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class LocalCap:
    """Marks a local object to be sent as a capability implementing ``info`` (how an argument in
    an interface-typed field, or a plain object nested in a struct, is exported)."""

    __slots__ = ("info", "obj")

    def __init__(self, obj: object, info: InterfaceInfo | None = None) -> None:
        self.obj = obj
        self.info = info


# --------------------------------------------------------------------- implementations, lookup

#: A handler takes the params as they arrived (a field-number-keyed dict or None) and whether the
#: frame carried capabilities, and returns the results to send, or an awaitable of them;
#: ``encode`` (when not None) turns the value returned by the implementation into the payload.
_Handler = tuple[Callable[[Any, bool], Any], Any, "Callable[[Any], Any] | None"]


def _remote_of(obj: object) -> RemoteCap | None:
    """The reference behind a proxy (ours or a runtime interface instance made by us)."""
    if isinstance(obj, RemoteCap):
        return obj
    if isinstance(obj, Proxy):
        return obj._cap
    cap = getattr(obj, "_cara_rpc_cap_", None)
    return cap if isinstance(cap, RemoteCap) else None


class _Impl:
    """A local object callable over RPC: finds the handler for ``(iface id, index)``."""

    __slots__ = ("cache", "info", "obj", "refs")

    def __init__(self, obj: object, info: InterfaceInfo | None) -> None:
        self.obj = obj
        self.info = info
        self.refs = 0
        self.cache: dict[tuple[int, int], _Handler] = {}

    def method(self, interface_id: int, index: int) -> _Handler:
        key = (interface_id, index)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self._find(interface_id, index)
        return found

    def _find(self, interface_id: int, index: int) -> _Handler:
        key = (interface_id, index)
        obj = self.obj
        remote = _remote_of(obj)
        if isinstance(obj, RuntimeInterface) and remote is None:
            spec = type(obj).cara_schema.all_methods.get(key)
            if spec is None:
                raise Unimplemented(f"{type(obj).__name__} has no method @{index} of interface "
                                    f"0x{interface_id:016x}")
            return _runtime_handler(obj, spec), spec, spec.box_results
        m = self.info.methods.get(key) if self.info is not None else None
        if m is None:
            other = known_interface(interface_id)
            m = other.methods.get(key) if other is not None else None
        if m is None:
            raise Unimplemented(
                f"method @{index} of interface 0x{interface_id:016x} is not known here")
        if remote is not None:  # a capability of another connection: forward as it is
            return partial(_forward, remote, m), m, None
        if m.spec is not None and isinstance(self.info, InterfaceInfo) \
                and self.info.pyclass is not None:
            wrapped = self.info.pyclass(obj)  # a plain implementation of a runtime interface
            return _runtime_handler(wrapped, m.spec), m.spec, m.spec.box_results
        fn: Any = None
        if isinstance(obj, Mapping):  # by (interface id, index) first: names can clash
            fn = obj.get(key) or obj.get(m.name)
        else:
            fn = getattr(obj, m.name, None)
            if fn is None and callable(obj) and not isinstance(obj, type):
                fn = obj  # a function or lambda implementing a one-method interface
        if fn is None or not callable(fn):
            raise Unimplemented(f"{type(obj).__name__} does not implement {m.name}")
        return _plain_handler(fn, m), m, partial(_encode_results, m)


def _runtime_handler(target: Any, spec: Any) -> Callable[[Any, bool], Any]:
    """Calls a runtime interface instance: the runtime converts the params (its ``$Params``
    struct, then ``call_args``); the results are boxed by ``spec.box_results`` (the encoder).
    The implementation is looked up once, here, not per call."""
    fn = runtime_implementation(target, spec)
    call_args = spec.call_args
    capacity = positional_capacity(fn)

    def handle(payload: Any, caps: bool) -> Any:
        if payload is None:
            payload = {}
        elif type(payload) is not dict:
            raise TypeError(f"params of {spec.name}() must be a map")
        cls = spec.param_class
        if caps:
            _type_capabilities(cls, payload)
        args, kwargs = call_args(cls(payload), capacity)
        return fn(*args, **kwargs)

    return handle


_MAX_CAP_DEPTH = 64


def _type_capabilities(struct_cls: Any, payload: dict[Any, Any], depth: int = 0) -> None:
    """Give each received capability in ``payload`` the interface type its field declares
    (in place), so the runtime's conversion finds typed proxies rather than bare references.
    Follows the runtime struct schema through nested structs and lists."""
    if depth > _MAX_CAP_DEPTH:
        return
    schema = getattr(struct_cls, "cara_schema", None)
    for f in getattr(schema, "fields", ()):
        if f.number in payload:
            payload[f.number] = _type_capability(f.type, payload[f.number], depth + 1)


def _type_capability(t: Any, value: Any, depth: int) -> Any:
    kind = getattr(t, "kind", None)
    if kind == "interface":
        if isinstance(value, RemoteCap):
            return value.cast(t.cls)
    elif kind == "struct":
        if type(value) is dict:
            _type_capabilities(t.cls, value, depth)
    elif kind == "list" and type(value) is list and depth <= _MAX_CAP_DEPTH:
        elem = getattr(t.cls, "_cara_elem_", None)
        if getattr(elem, "kind", None) in ("interface", "struct", "list"):
            for i, item in enumerate(value):
                value[i] = _type_capability(elem, item, depth + 1)
    return value


def _plain_handler(fn: Callable[..., Any], m: MethodInfo) -> Callable[[Any, bool], Any]:
    """Calls a plain implementation with the params the caller gave, by description."""
    if m.params_named:
        def handle_struct(payload: Any, caps: bool) -> Any:
            if payload is None:
                payload = {}
            elif type(payload) is not dict:
                raise TypeError(f"params of {m.name}() must be a map")
            return fn(m.param_type(payload) if m.param_type is not None else payload)

        return handle_struct

    def handle(payload: Any, caps: bool) -> Any:
        if payload is None:
            return fn()
        if type(payload) is not dict:
            raise TypeError(f"params of {m.name}() must be a map")
        args, kwargs = _call_args(m, payload)
        return fn(*args, **kwargs)

    return handle


def _forward(remote: RemoteCap, m: MethodInfo, payload: Any, caps: bool) -> Any:
    return remote.forward(m, payload)


def _call_args(m: MethodInfo, params: dict[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional values for the leading fields that were given, keywords after a gap."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for f in m.params:
        if f.number in params:
            v = params[f.number]
            if f.kind != PLAIN:
                v = _incoming(f, v)
            if positional:
                args.append(v)
            else:
                kwargs[f.name] = v
        else:
            positional = False
    return args, kwargs


def _incoming(f: FieldInfo, value: Any) -> Any:
    if f.kind == INTERFACE:
        if not isinstance(value, RemoteCap):
            return value  # None, or one of our own objects coming home
        if f.convert is None:
            info = known_interface(f.interface_id)
            return value.cast(info) if info is not None else value
    convert = f.convert
    return convert(value) if convert is not None and value is not None else value


class Services:
    """The implementations a server offers, by interface id (Cap'n Proto's bootstrap).

    One ``Services`` is shared by every connection of a server; registering later makes the
    implementation reachable from connections that already exist."""

    def __init__(self) -> None:
        self._by_id: dict[int, _Impl] = {}

    def register(self, iface: Any, impl: object) -> None:
        info = describe(iface)
        if info is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        if info.pyclass is not None and not isinstance(impl, info.pyclass):
            impl = info.pyclass(impl)  # the runtime wraps dicts, objects and functions
        self._by_id[info.id] = _Impl(impl, info)

    def lookup(self, interface_id: int) -> _Impl | None:
        return self._by_id.get(interface_id)

    def __len__(self) -> int:
        return len(self._by_id)


# ---------------------------------------------------------------------------------- proxies


class RemoteCap:
    """An untyped reference to a capability on the other side of ``connection``.

    ``target`` is the import id, or ``[interface_id]`` for a server's registered implementation.
    Typed views (``cap.cast(Iface)``) share this reference: a :class:`Proxy` for a bare
    description, an instance of the runtime class for a runtime interface."""

    __slots__ = ("__weakref__", "_import_entry", "connection", "target")

    def __init__(self, connection: Connection, target: _Target) -> None:
        self.connection = connection
        self.target = target
        self._import_entry: _Import | None = None

    def _check_open(self, name: str) -> None:
        if self._import_entry is None and type(self.target) is int and not self.connection.closed:
            raise Disconnected(f"{name}(): this capability was released")

    def call(self, method: MethodInfo, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Send a call of ``method`` at once; the returned future resolves to its result."""
        timeout = kwargs.pop("_timeout", None) if kwargs else None
        self._check_open(method.name)
        params = _encode_params(method, args, kwargs)
        return self.connection.send_call(self.target, method, params, timeout,
                                         decode=partial(_decode_results, method))

    def call_spec(self, spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a runtime method: the runtime boxes the params and unboxes the results."""
        timeout = kwargs.pop("_timeout", None) if kwargs and "_timeout" in kwargs else None
        self._check_open(spec.name)
        params = spec.box_params(args, kwargs)
        return self.connection.send_call(self.target, spec, params, timeout,
                                         decode=_runtime_decoder(spec))

    def forward(self, method: Any, payload: Any) -> asyncio.Future[Any]:
        """Pass a call that arrived on another connection on to this capability unchanged."""
        self._check_open(method.name)
        return self.connection.send_call(self.target, method, payload)

    def cast(self, iface: Any) -> Any:
        """This capability as ``iface``: a proxy (an instance of a subclass of the runtime
        class for a runtime interface, so ``isinstance(proxy, Iface)`` holds)."""
        info = describe(iface)
        if info is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        if info.pyclass is not None:
            return runtime_proxy_class(info.pyclass)(self)
        return proxy_class(info)(self)

    __cara_cast__ = cast

    def close(self) -> None:
        """Give the reference back now instead of when the last proxy is collected."""
        entry = self._import_entry
        if entry is not None:
            self._import_entry = None
            self.connection._release_import(entry)

    @property
    def closed(self) -> bool:
        return self.connection.closed or (
            not isinstance(self.target, list) and self._import_entry is None)

    def __repr__(self) -> str:
        return f"<RemoteCap {self.target!r} on {self.connection!r}>"


class Proxy:
    """A capability on the other side, typed by an interface: one Python method per RPC method.

    Calling a method sends the call at once and returns an awaitable future (awaiting it is
    optional); ``_timeout=seconds`` bounds one call. A proxy of a one-method interface is callable.
    ``close()`` (or ``async with``) releases the reference early."""

    __slots__ = ("__weakref__", "_cap")
    _info: InterfaceInfo

    def __init__(self, cap: RemoteCap) -> None:
        self._cap = cap

    def __getitem__(self, key: str | tuple[int, int]) -> Callable[..., asyncio.Future[Any]]:
        m = self._info.by_name.get(key) if isinstance(key, str) else self._info.methods.get(key)
        if m is None:
            raise KeyError(key)
        return partial(self._cap.call, m)

    def __cara_cast__(self, iface: Any) -> Proxy:
        return self._cap.cast(iface)

    def __repr__(self) -> str:
        return f"<{self._info.name} proxy {self._cap.target!r}>"

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cap.close()


_proxy_classes: dict[int, type[Proxy]] = {}


def _proxy_method(m: MethodInfo) -> Callable[..., asyncio.Future[Any]]:
    def method(self: Proxy, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return self._cap.call(m, *args, **kwargs)

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
    ns: dict[str, Any] = {"__slots__": (), "_info": info}
    ns["close"] = _close
    for name, m in info.by_name.items():
        ns[name] = _proxy_method(m)  # a method named like `close` wins over the helper
    if len(info.by_name) == 1:
        (only,) = info.by_name.values()
        ns["__call__"] = _proxy_method(only)
    cls = type(f"{info.name}Proxy", (Proxy,), ns)
    _proxy_classes[id(info)] = cls
    return cls


def release(cap: Any) -> None:
    """Release a capability now (works even when its interface has a method named ``close``)."""
    remote = _remote_of(cap)
    if remote is None:
        raise TypeError(f"{cap!r} is not a remote capability")
    remote.close()


# ------------------------------------------------------------- params and results conversion


def _outgoing(f: FieldInfo, value: Any) -> Any:
    if f.kind == INTERFACE and value is not None and not isinstance(value, (Proxy, RemoteCap)):
        if getattr(value, "__cara_impl__", None) is None:
            return LocalCap(value, known_interface(f.interface_id))
    return value


def _by_number(numbers: Mapping[str, int], fields: tuple[FieldInfo, ...], d: Mapping[Any, Any],
               what: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    by_number = {f.number: f for f in fields}
    for k, v in d.items():
        num = k if isinstance(k, int) else numbers.get(k)
        if num is None:
            raise TypeError(f"{what} has no field {k!r}")
        f = by_number.get(num)
        out[num] = _outgoing(f, v) if f is not None else v
    return out


def _encode_params(m: MethodInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if m.params_named:
        if len(args) == 1 and not kwargs:
            value = args[0]
        elif not args:
            value = kwargs
        else:
            raise TypeError(f"{m.name}() takes one struct or keyword arguments")
        if value is None:
            return None
        if m.param_type is not None and not isinstance(value, m.param_type):  # type: ignore[arg-type]
            return m.param_type(value)
        return _by_number(m.param_numbers, m.params, value, f"{m.name}() params")
    fields = m.params
    if len(args) > len(fields):
        raise TypeError(f"{m.name}() takes {len(fields)} arguments but {len(args)} were given")
    if not kwargs:
        if not args:
            return None
        return {f.number: (v if f.kind == PLAIN else _outgoing(f, v))
                for f, v in zip(fields, args, strict=False)}
    params = {f.number: _outgoing(f, v) for f, v in zip(fields, args, strict=False)}
    for name, v in kwargs.items():
        num = m.param_numbers.get(name)
        if num is None:
            raise TypeError(f"{m.name}() got an unexpected keyword argument {name!r}")
        if num in params:
            raise TypeError(f"{m.name}() got multiple values for argument {name!r}")
        params[num] = _outgoing(fields[[f.number for f in fields].index(num)], v)
    return params


def _encode_results(m: MethodInfo, result: Any) -> Any:
    fields = m.results
    if m.results_named:
        if result is None:
            return None
        if m.result_type is not None and not isinstance(result, m.result_type):  # type: ignore[arg-type]
            return m.result_type(result)
        if not isinstance(result, Mapping):
            raise TypeError(
                f"{m.name}() must return a struct (a mapping), got {type(result).__name__}")
        return _by_number(m.result_numbers, fields, result, f"{m.name}() results")
    if not fields:
        return None
    if len(fields) == 1:
        f = fields[0]
        if type(result) is dict and len(result) == 1 and f.name in result:
            result = result[f.name]  # ``return {'text': t}`` for a single result ``text``
        if result is None:
            return None
        return {f.number: _outgoing(f, result)}
    if isinstance(result, Mapping):
        return _by_number(m.result_numbers, fields, result, f"{m.name}() results")
    if isinstance(result, (tuple, list)):
        if len(result) > len(fields):
            raise TypeError(f"{m.name}() returned {len(result)} results, expected {len(fields)}")
        return {f.number: _outgoing(f, v) for f, v in zip(fields, result, strict=False)}
    if result is None:
        return None
    raise TypeError(f"{m.name}() must return a mapping or a tuple of {len(fields)} results")


def _decode_results(m: MethodInfo, results: Any, caps: bool = False) -> Any:
    """What the caller of a plain proxy gets: None, the one result, a :class:`Results`, or the
    struct of a ``-> Struct`` method."""
    if m.results_named:
        value = results if results is not None else {}
        return m.result_type(value) if m.result_type is not None else value
    fields = m.results
    if not fields:
        return None
    if results is None:
        results = {}
    elif type(results) is not dict:
        raise ProtocolError(f"results of {m.name}() must be a map")
    if len(fields) == 1:
        f = fields[0]
        v = results.get(f.number)
        return v if f.kind == PLAIN else _incoming(f, v)
    return Results({
        f.name: (results.get(f.number) if f.kind == PLAIN else _incoming(f, results.get(f.number)))
        for f in fields
    })


_runtime_decoders: dict[int, tuple[Any, Callable[[Any, bool], Any]]] = {}


def _runtime_decoder(spec: Any) -> Callable[[Any, bool], Any]:
    """What the caller of a runtime proxy gets (made once per method)."""
    known = _runtime_decoders.get(id(spec))
    if known is not None and known[0] is spec:
        return known[1]

    def decode(results: Any, caps: bool) -> Any:
        cls = spec.result_class
        if results is None:
            results = {}
        elif caps and type(results) is dict:
            _type_capabilities(cls, results)
        return spec.unbox_results(cls(results))

    _runtime_decoders[id(spec)] = (spec, decode)
    return decode


_runtime_proxy_classes: dict[type, type] = {}


def _runtime_proxy_call(self: Any, method: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
    return self._cara_rpc_cap_.call_spec(method, args, kwargs)


def _runtime_proxy_method(spec: Any) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._cara_rpc_cap_.call_spec(spec, args, kwargs)

    method.__name__ = method.__qualname__ = spec.attr
    return method


def runtime_proxy_class(iface_cls: type) -> type:
    """A subclass of runtime interface class ``iface_cls`` whose methods send calls.

    Its instances pass ``isinstance(proxy, Iface)`` and every runtime conversion, and each call
    returns a future at once (no coroutine), so an unawaited call is still sent and
    ``asyncio.gather`` needs no task per call."""
    cls = _runtime_proxy_classes.get(iface_cls)
    if cls is not None:
        return cls
    schema: Any = iface_cls.cara_schema  # type: ignore[attr-defined]
    ns: dict[str, Any] = {"__slots__": (), "_cara_call_": _runtime_proxy_call,
                          "__module__": iface_cls.__module__}
    for spec in schema.all_methods.values():
        ns.setdefault(spec.attr, _runtime_proxy_method(spec))

    def __init__(self: Any, cap: Any) -> None:
        # `Iface(client)` returns a proxy made by `client.__cara_cast__`; Python then calls
        # __init__ again with the client, which must not replace the capability.
        if isinstance(cap, RemoteCap):
            object.__setattr__(self, "_cara_rpc_cap_", cap)

    def __repr__(self: Any) -> str:
        return f"<{iface_cls.__name__} proxy {self._cara_rpc_cap_.target!r}>"

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


# ---------------------------------------------------------------------------------- the tables


class _Import:
    __slots__ = ("count", "id", "ref")

    def __init__(self, import_id: int) -> None:
        self.id = import_id
        self.count = 1
        self.ref: weakref.ref[RemoteCap] | None = None


class _Question(asyncio.Future[Any]):
    """A call awaiting its answer; cancelling it (e.g. the awaiting task is cancelled, or the
    per-call timeout fires) tells the callee to cancel its handler."""

    def __init__(self, conn: Connection, qid: int, method: Any,
                 decode: Callable[[Any, bool], Any] | None) -> None:
        super().__init__(loop=conn.loop)
        self.conn = conn
        self.qid = qid
        self.method = method  # a MethodInfo, or a runtime MethodSpec (same address attributes)
        self.decode = decode  # results payload (and "it carried capabilities") -> value
        self.timer: asyncio.TimerHandle | None = None

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self.conn._forget_question(self, send_finish=True)
        return super().cancel(msg)

    def _time_out(self) -> None:
        if not self.done():
            self.conn._forget_question(self, send_finish=True)
            self.set_exception(asyncio.TimeoutError(f"{self.method.name}() timed out"))


class Connection:
    """One side of an RPC connection (see the module docstring).

    ``send(frame)`` is called with each frame to send (one msgpack message; the transport adds
    its own framing). ``services`` answers bootstrap calls (a server's registered interfaces);
    ``send_tracebacks`` controls whether handler tracebacks travel to callers; ``timeout`` is the
    default per-call timeout in seconds (``None``: wait forever); ``max_imports`` bounds the
    capabilities the peer may hand us at once."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        *,
        services: Services | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        send_tracebacks: bool = True,
        timeout: float | None = None,
        name: str = "",
        max_imports: int = 100_000,
        max_answers: int = 10_000,
        max_queued_calls: int | None = None,
    ) -> None:
        self._send = send
        self.services = services
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.name = name
        #: A peer handing us more capabilities than this at once is aborted (memory bound).
        self.max_imports = max_imports
        #: At most this many handlers run at once; later calls wait in arrival order (the
        #: connection keeps reading, so answers to our own calls still arrive), and beyond
        #: ``max_queued_calls`` waiting ones (default: as many) a call is refused as Overloaded.
        self.max_answers = max_answers
        self.max_queued_calls = max_answers if max_queued_calls is None else max_queued_calls
        self.closed = False
        self.close_reason: BaseException | None = None
        self._questions: dict[int, _Question] = {}
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._queued: dict[int, tuple[Any, Any, Any, Any, bool]] = {}  # qid -> call, FIFO
        self._exports: dict[int, _Impl] = {}
        self._export_ids: dict[int, int] = {}  # id(object) -> export id
        self._imports: dict[int, _Import] = {}
        self._next_question = 0
        self._next_export = 0
        self._releases: list[int] = []
        self._release_scheduled = False
        self._frame_caps = False  # whether the frame being decoded carried capabilities
        self._packer = msgpack.Packer(default=self._pack_capability)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {self.name or hex(id(self))} {state}>"

    # ------------------------------------------------------------------------------ public

    def stats(self) -> dict[str, int]:
        """Live table sizes: what we export, import, await (questions) and run (answers)."""
        return {
            "exports": len(self._exports), "imports": len(self._imports),
            "questions": len(self._questions),
            "answers": len(self._answers) + len(self._queued),
        }

    def bootstrap(self, iface: Any) -> Any:
        """A proxy for the peer's registered implementation of ``iface`` (no round trip)."""
        info = describe(iface)
        if info is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        return RemoteCap(self, [info.id]).cast(info)

    @property
    def answers_in_flight(self) -> int:
        """Calls received and not yet answered (running or waiting for a free slot)."""
        return len(self._answers) + len(self._queued)

    def send_call(self, target: _Target, method: Any, params: Any,
                  timeout: float | None = None, *,
                  decode: Callable[[Any, bool], Any] | None = None) -> asyncio.Future[Any]:
        """Send a call now and return the future of its result: ``decode(payload, has_caps)``,
        or the results payload as it arrived when ``decode`` is None (forwarding)."""
        q = _Question(self, self._next_question, method, decode)
        if self.closed:
            q.set_exception(Disconnected(f"connection closed: {self.close_reason or 'by us'}"))
            return q
        qid = self._next_question
        self._next_question = qid + 1
        self._send(self._packer.pack(
            [M.CALL, qid, target, method.interface_id, method.index, params]))
        self._questions[qid] = q
        timeout = timeout if timeout is not None else self.timeout
        if timeout is not None:
            q.timer = self.loop.call_later(timeout, q._time_out)
        return q

    def receive(self, frame: bytes | bytearray | memoryview) -> None:
        """Process one frame from the peer. Raises :class:`ProtocolError` (after queueing an
        ``ABORT``) when the frame is not a valid message; the transport should then close."""
        if self.closed:
            return
        self._frame_caps = False
        try:
            msg = msgpack.unpackb(frame, ext_hook=self._unpack_capability, strict_map_key=False)
            kind = msg[0]
            if kind == M.CALL:
                _, qid, target, iid, index, params = msg
                self._on_call(qid, target, iid, index, params)
            elif kind == M.RETURN:
                _, qid, results = msg
                self._on_return(qid, results)
            elif kind == M.ERROR:
                _, qid, ekind, name, message, text = msg
                q = self._questions.pop(qid, None)
                if q is not None and not q.done():
                    if q.timer is not None:
                        q.timer.cancel()
                    q.set_exception(exception_from_wire(ekind, name, message, text))
            elif kind == M.FINISH:
                _, qid = msg
                answer = self._answers.pop(qid, None)
                if answer is not None:
                    answer.cancel()
                else:
                    self._queued.pop(qid, None)
            elif kind == M.RELEASE:
                _, pairs = msg
                self._on_release(pairs)
            elif kind == M.ABORT:
                self.connection_lost(Disconnected(f"peer aborted: {msg[1]!r}"))
            else:
                raise ProtocolError(f"unknown message type {kind!r}")
        except ProtocolError as exc:
            self.abort(str(exc))
            raise
        except Exception as exc:
            # A malformed frame: bad msgpack, wrong shape, wrong types. Never an IndexError etc.
            err = ProtocolError(f"malformed message: {type(exc).__name__}: {exc}")
            self.abort(str(err))
            raise err from None

    def abort(self, reason: str) -> None:
        """Tell the peer why we give up (an ``ABORT``), then drop everything."""
        if not self.closed:
            try:
                self._send(self._packer.pack([M.ABORT, reason]))
            except Exception:  # the transport may already be gone
                pass
            self.connection_lost(Disconnected(reason))

    def connection_lost(self, exc: BaseException | None = None) -> None:
        """The transport is gone: fail every question, cancel every answer, drop every export
        and forget every import. Idempotent."""
        if self.closed:
            return
        self.closed = True
        reason = exc if exc is not None else Disconnected("connection closed")
        self.close_reason = reason
        questions, self._questions = self._questions, {}
        for q in questions.values():
            if q.timer is not None:
                q.timer.cancel()
            if not q.done():  # a fresh exception each: tracebacks must not pile up on one
                q.set_exception(Disconnected(f"{q.method.name}(): {reason}"))
        answers, self._answers = self._answers, {}
        self._queued.clear()
        for a in answers.values():
            a.cancel()
        self._exports.clear()
        self._export_ids.clear()
        imports, self._imports = self._imports, {}
        for entry in imports.values():
            cap = entry.ref() if entry.ref is not None else None
            if cap is not None:
                cap._import_entry = None
        self._releases.clear()

    # ------------------------------------------------------------------ capabilities in values

    def _pack_capability(self, obj: Any) -> msgpack.ExtType:
        """msgpack's ``default`` hook: a capability becomes a reference."""
        info = None
        if isinstance(obj, LocalCap):
            obj, info = obj.obj, obj.info
        remote = _remote_of(obj)
        if remote is not None:
            if remote.connection is self and remote._import_entry is not None:
                return msgpack.ExtType(M.EXT_RECEIVER_HOSTED,
                                       self._packer_int(remote._import_entry.id))
            info = info or describe(obj) or (obj._info if isinstance(obj, Proxy) else None)
            obj = remote  # forwarded: one export per reference, whatever the view
        elif info is None:
            info = describe(obj)
            if info is None and not callable(obj):
                raise TypeError(f"cannot send a {type(obj).__name__} over RPC (not a capability)")
        return msgpack.ExtType(M.EXT_SENDER_HOSTED, self._packer_int(self._export(obj, info)))

    @staticmethod
    def _packer_int(value: int) -> bytes:
        packed: bytes = msgpack.packb(value)
        return packed

    def _export(self, obj: object, info: InterfaceInfo | None) -> int:
        eid = self._export_ids.get(id(obj))
        if eid is not None:
            impl = self._exports[eid]
            if impl.info is None and info is not None:
                impl.info = info
                impl.cache.clear()
        else:
            eid = self._next_export
            self._next_export = eid + 1
            impl = self._exports[eid] = _Impl(obj, info)
            self._export_ids[id(obj)] = eid
        impl.refs += 1
        return eid

    def _unpack_capability(self, code: int, data: bytes) -> Any:
        """msgpack's ``ext_hook``: a reference becomes a :class:`RemoteCap` or our own object."""
        self._frame_caps = True
        if code == M.EXT_SENDER_HOSTED:
            iid = msgpack.unpackb(data)
            if type(iid) is not int or iid < 0:
                raise ProtocolError("bad capability reference")
            return self._import(iid)
        if code == M.EXT_RECEIVER_HOSTED:
            eid = msgpack.unpackb(data)
            impl = self._exports.get(eid) if type(eid) is int else None
            if impl is None:
                raise ProtocolError(
                    f"the peer sent back capability {eid!r}, which we do not export")
            return impl.obj
        return msgpack.ExtType(code, data)

    def _import(self, import_id: int) -> RemoteCap:
        entry = self._imports.get(import_id)
        if entry is not None and entry.ref is not None:
            cap = entry.ref()
            if cap is not None:
                entry.count += 1
                return cap
        if len(self._imports) >= self.max_imports:
            raise ProtocolError(f"the peer handed us more than {self.max_imports} capabilities")
        entry = _Import(import_id)
        cap = RemoteCap(self, import_id)
        cap._import_entry = entry
        entry.ref = weakref.ref(cap, partial(self._import_died, entry))
        self._imports[import_id] = entry
        return cap

    def _import_died(self, entry: _Import, _ref: object) -> None:
        # Called by the garbage collector, possibly in another thread or in the middle of our own
        # code: only queue the release; sending happens from the loop.
        self._release_import(entry)

    def _release_import(self, entry: _Import) -> None:
        if self.closed or self._imports.get(entry.id) is not entry:
            return
        del self._imports[entry.id]
        self._releases += (entry.id, entry.count)
        if not self._release_scheduled:
            self._release_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._flush_releases)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                self._release_scheduled = False

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        if self._releases and not self.closed:
            pairs, self._releases = self._releases, []
            self._send(self._packer.pack([M.RELEASE, pairs]))

    def _on_release(self, pairs: list[int]) -> None:
        exports = self._exports
        for i in range(0, len(pairs) - 1, 2):
            eid, count = pairs[i], pairs[i + 1]
            impl = exports.get(eid)
            if impl is None or type(count) is not int:
                continue  # unknown or already gone: harmless
            impl.refs -= count
            if impl.refs <= 0:
                del exports[eid]
                self._export_ids.pop(id(impl.obj), None)

    # -------------------------------------------------------------------------------- calls

    def _target(self, target: _Target) -> _Impl:
        if type(target) is int:
            impl = self._exports.get(target)
            if impl is None:
                raise Unimplemented(f"no capability {target} is exported on this connection")
            return impl
        if type(target) is list and len(target) == 1 and type(target[0]) is int:
            impl = self.services.lookup(target[0]) if self.services is not None else None
            if impl is None:
                raise Unimplemented(f"no implementation of interface 0x{target[0]:016x} is offered")
            return impl
        raise Unimplemented(f"bad call target {target!r}")

    def _on_call(self, qid: Any, target: Any, iid: Any, index: Any, params: Any) -> None:
        if type(qid) is not int or qid in self._answers or qid in self._queued:
            raise ProtocolError(f"bad or duplicate question id {qid!r}")
        if not (type(target) is int or (type(target) is list and len(target) == 1
                                        and type(target[0]) is int)):
            raise Unimplemented(f"bad call target {target!r}")
        if len(self._answers) >= self.max_answers or self._queued:
            if len(self._queued) >= self.max_queued_calls:
                self._send_error(qid, Overloaded(
                    f"{len(self._answers)} calls running and {len(self._queued)} waiting"))
            else:
                self._queued[qid] = (target, iid, index, params, self._frame_caps)
            return
        self._dispatch(qid, target, iid, index, params, self._frame_caps)

    def _dispatch(self, qid: int, target: Any, iid: Any, index: Any, params: Any,
                  caps: bool) -> None:
        try:
            if type(iid) is not int or type(index) is not int:
                raise Unimplemented(f"bad method address {iid!r}/{index!r}")
            handle, _m, encode = self._target(target).method(iid, index)
            result = handle(params, caps)
        except Exception as exc:
            self._send_error(qid, exc)
            return
        if inspect.isawaitable(result):
            answer = asyncio.ensure_future(result, loop=self.loop)
            self._answers[qid] = answer
            answer.add_done_callback(partial(self._answer_done, qid, encode))
        else:
            self._send_return(qid, encode, result)

    def _run_queued(self) -> None:
        """Start waiting calls, in arrival order, while handler slots are free."""
        queued = self._queued
        while queued and len(self._answers) < self.max_answers and not self.closed:
            qid = next(iter(queued))
            self._dispatch(qid, *queued.pop(qid))

    def _answer_done(self, qid: int, encode: Callable[[Any], Any] | None,
                     answer: asyncio.Future[Any]) -> None:
        popped = self._answers.pop(qid, None)
        if self._queued and not self.closed:
            self._run_queued()  # a slot is free (also after a FINISH cancelled this one)
        if popped is None or self.closed:
            return  # finished (cancelled) by the caller, or the connection is gone
        if answer.cancelled():
            self._send_error(qid, asyncio.CancelledError("the handler was cancelled"))
            return
        exc = answer.exception()
        if exc is not None:
            self._send_error(qid, exc)
        else:
            self._send_return(qid, encode, answer.result())

    def _send_return(self, qid: int, encode: Callable[[Any], Any] | None, result: Any) -> None:
        try:
            payload = encode(result) if encode is not None else result
            self._send(self._packer.pack([M.RETURN, qid, payload]))
        except Exception as exc:  # unencodable results, or too big for the transport
            self._send_error(qid, exc)

    def _send_error(self, qid: int, exc: BaseException) -> None:
        wire = exception_to_wire(exc, with_traceback=self.send_tracebacks)
        self._send(self._packer.pack([M.ERROR, qid, *wire]))

    def _on_return(self, qid: Any, results: Any) -> None:
        q = self._questions.pop(qid, None)
        if q is None or q.done():
            return  # cancelled or timed out: the answer is no longer wanted
        if q.timer is not None:
            q.timer.cancel()
        decode = q.decode
        if decode is None:
            q.set_result(results)
            return
        try:
            value = decode(results, self._frame_caps)
        except Exception as exc:
            q.set_exception(exc)
            return
        q.set_result(value)

    def _forget_question(self, q: _Question, *, send_finish: bool) -> None:
        if self._questions.pop(q.qid, None) is None:
            return
        if q.timer is not None:
            q.timer.cancel()
        if send_finish and not self.closed:
            self._send(self._packer.pack([M.FINISH, q.qid]))
