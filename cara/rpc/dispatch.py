"""Calling local implementations: how a call addressed ``(interface id, method index)`` finds
the Python callable, converts the params it gets and boxes what it returns.

An implementation is anything the runtime accepts (an instance of a runtime interface class or
of a subclass, a dict of callables, an object with the methods, a function for a one-method
interface) or, for interfaces described without runtime classes
(:func:`~cara.rpc.description.interfaces_from_nodes`), a dict or object used by method name with
field-number-keyed dicts as params and results. :class:`Implementation` looks each method up
once and caches a :class:`Handler`: its :class:`~cara.rpc.proxies.Method` (which says how the
params are decoded) and ``run(params)``, which returns the results struct or an awaitable of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import FunctionType
from typing import Any

from cara.rpc.description import PLAIN, InterfaceInfo, MethodInfo, describe, known_interface
from cara.rpc.eager import is_awaitable
from cara.rpc.errors import Unimplemented
from cara.rpc.gate import StreamGate, stream_gate
from cara.rpc.plain import encode_plain_results, incoming
from cara.rpc.proxies import Method, method_of
from cara.runtime.interface import Interface as RuntimeInterface
from cara.runtime.interface import implementation as runtime_implementation
from cara.runtime.interface import positional_capacity

__all__ = ["Handler", "Implementation", "Services"]

#: Types a handler commonly returns that cannot be awaitable (checked before is_awaitable).
_PLAIN_VALUES = frozenset({str, bytes, int, float, bool, type(None), list, tuple, dict})


class Handler:
    """One method of one implementation: ``run(params)`` -> results struct (or awaitable).

    ``direct``, when set, is ``run`` taken apart for a caller that does its steps itself (the
    C fast path of cara frames): ``(fn, number, finish, convert, single)`` says that ``run``
    calls ``fn(params[number])`` and returns ``finish(value)``, which for a ``value`` of a
    builtin scalar type is ``convert({single: value})`` unless that raises."""

    __slots__ = ("direct", "method", "run")

    def __init__(self, method: Method, run: Callable[[Any], Any],
                 direct: tuple[Any, ...] | None = None) -> None:
        self.method = method
        self.run = run
        self.direct = direct


class Implementation:
    """A local object callable over RPC: finds the :class:`Handler` for ``(iface id, index)``."""

    __slots__ = ("cache", "gate", "info", "obj")

    def __init__(self, obj: object, info: InterfaceInfo | None) -> None:
        self.obj = obj
        self.info = info
        self.cache: dict[tuple[int, int], Handler] = {}
        #: Orders the calls of an object with streaming methods (cara.rpc.gate); made on the
        #: first call (False: the object has none).
        self.gate: StreamGate | bool | None = None

    def handler(self, interface_id: int, index: int) -> Handler:
        key = (interface_id, index)
        found = self.cache.get(key)
        if found is None:
            found = self._find(interface_id, index)
            if self.gate is None:
                self.gate = stream_gate(self.obj, self.info) or False
            if isinstance(self.gate, StreamGate):
                found = Handler(found.method, self.gate.wrap(found.run, found.method.stream))
            self.cache[key] = found
        return found

    def _find(self, interface_id: int, index: int) -> Handler:
        key = (interface_id, index)
        obj = self.obj
        if isinstance(obj, RuntimeInterface):
            spec = type(obj).cara_schema.all_methods.get(key)
            if spec is None:
                raise Unimplemented(f"{type(obj).__name__} has no method @{index} of interface "
                                    f"0x{interface_id:016x}")
            return _runtime_handler(obj, spec)
        m = self.info.methods.get(key) if self.info is not None else None
        if m is None:
            other = known_interface(interface_id)
            m = other.methods.get(key) if other is not None else None
        if m is None:
            raise Unimplemented(
                f"method @{index} of interface 0x{interface_id:016x} is not known here")
        if m.spec is not None:  # a plain implementation of a runtime interface
            pyclass = self.info.pyclass if self.info is not None and \
                self.info.pyclass is not None else _runtime_class_of(m)
            if pyclass is not None:
                return _runtime_handler(pyclass(obj), m.spec)
        fn: Any = None
        if isinstance(obj, Mapping):  # by (interface id, index) first: names can clash
            fn = obj.get(key) or obj.get(m.name)
        else:
            fn = getattr(obj, m.name, None)
            if fn is None and callable(obj) and not isinstance(obj, type):
                fn = obj  # a function or lambda implementing a one-method interface
        if fn is None or not callable(fn):
            raise Unimplemented(f"{type(obj).__name__} does not implement {m.name}")
        return Handler(method_of(m), _plain_handler(fn, m))


#: inspect.iscoroutinefunction's answers by code object (a method's code serves every instance
#: of its class, a closure's every closure made from it: each new object called costs a lookup,
#: not an inspection; keyed by code, not function, so no object is kept alive by it).
_async_codes: dict[Any, bool] = {}


def _is_async(fn: Callable[..., Any]) -> bool:
    func = getattr(fn, "__func__", fn)
    if type(func) is not FunctionType or func.__dict__:  # (a marked function: ask inspect)
        return inspect.iscoroutinefunction(fn)
    code = func.__code__
    found = _async_codes.get(code)
    if found is None:
        found = inspect.iscoroutinefunction(fn)
        if len(_async_codes) >= 4096:
            _async_codes.clear()
        _async_codes[code] = found
    return found


def _runtime_class_of(m: MethodInfo) -> Any:
    info = known_interface(m.interface_id)
    return info.pyclass if info is not None else None


def _runtime_handler(target: Any, spec: Any) -> Handler:
    """Calls a runtime interface instance with its ``$Params`` struct (``call_args``); boxes
    what it returns with ``spec.box_results``. The implementation is looked up once, here; what
    depends only on its class and method (a :class:`_RuntimePlan`) once per class."""
    fn = runtime_implementation(target, spec)
    key = (type(target), id(spec))
    found = _plans.get(key)
    func = getattr(fn, "__func__", None)
    if found is not None and found[0] is spec and func is not None and found[1] is func:
        return found[2].bind(fn)
    plan = _RuntimePlan(spec, fn)
    if func is not None and getattr(fn, "__self__", None) is target:  # (a method: per class)
        if len(_plans) >= 4096:
            _plans.clear()
        _plans[key] = (spec, func, plan)
    return plan.bind(fn)


class _RuntimePlan:
    """How one method of a runtime interface class is called, boxed and answered: all but the
    bound method itself, worked out once for every object of the class (a server that hands
    out a new object per call, as the calculator sample does, binds this, no more)."""

    __slots__ = ("box", "call_args", "capacity", "cls", "is_async", "method", "number",
                 "scalar")

    def __init__(self, spec: Any, fn: Callable[..., Any]) -> None:
        self.method = method_of(spec)
        self.call_args = spec.call_args
        self.capacity = positional_capacity(fn)
        self.box = spec.box_results
        self.cls = spec.param_class
        self.is_async = _is_async(fn)
        # The common one-argument method takes its value directly (call_args' first case).
        fields = self.cls.cara_schema.fields
        self.number = fields[0].number if not self.is_async and not spec.params_named and \
            len(fields) == 1 and self.capacity >= 1 else None
        self.scalar = spec.scalar_box() if self.number is not None else None

    def bind(self, fn: Callable[..., Any]) -> Handler:
        call_args, capacity, box, cls = self.call_args, self.capacity, self.box, self.cls
        is_async, number = self.is_async, self.number

        async def boxed(pending: Any) -> Any:
            return box(await pending)

        async def run_async(args: Any, kwargs: Any) -> Any:
            # fn's coroutine is made when the task starts: a call cancelled before then leaves
            # no coroutine unawaited (a RuntimeWarning)
            return box(await fn(*args, **kwargs))

        def finish(result: Any) -> Any:
            if type(result) not in _PLAIN_VALUES and is_awaitable(result):
                return boxed(result)
            return box(result)

        def handle(params: Any) -> Any:
            if type(params) is not cls:
                params = cls({} if params is None else params)
            if number is not None:
                return finish(fn(params[number]))
            args, kwargs = call_args(params, capacity)
            if is_async:
                return run_async(args, kwargs)
            return finish(fn(*args, **kwargs))

        direct = None
        if number is not None:
            scalar = self.scalar
            direct = (fn, number, finish, *scalar) if scalar is not None else \
                (fn, number, finish, None, -1)
        return Handler(self.method, handle, direct)


#: Plans by (implementation class, id of the method spec): (spec, function, plan), the spec
#: and the class's function checked on use (an object whose method is not its class's, or a
#: spec id reused, makes its own).
_plans: dict[tuple[type, int], tuple[Any, Any, _RuntimePlan]] = {}


def _plain_handler(fn: Callable[..., Any], m: MethodInfo) -> Callable[[Any], Any]:
    """Calls a plain implementation with the params the caller gave, by description."""

    is_async = _is_async(fn)

    async def encoded(pending: Any) -> Any:
        return encode_plain_results(m, await pending)

    async def run_async(args: Any, kwargs: Any) -> Any:  # see _runtime_handler
        return encode_plain_results(m, await fn(*args, **kwargs))

    def finish(result: Any) -> Any:
        if is_awaitable(result):
            return encoded(result)
        return encode_plain_results(m, result)

    def invoke(*args: Any, **kwargs: Any) -> Any:
        return run_async(args, kwargs) if is_async else finish(fn(*args, **kwargs))

    if m.params_named:
        def handle_struct(payload: Any) -> Any:
            if payload is None:
                payload = {}
            elif not isinstance(payload, dict):
                raise TypeError(f"params of {m.name}() must be a map")
            return invoke(m.param_type(payload) if m.param_type is not None else payload)

        return handle_struct

    def handle(payload: Any) -> Any:
        if payload is None:
            return invoke()
        if not isinstance(payload, dict):
            raise TypeError(f"params of {m.name}() must be a map")
        args, kwargs = _call_args(m, payload)
        return invoke(*args, **kwargs)

    return handle


def _call_args(m: MethodInfo, params: dict[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional values for the leading fields that were given, keywords after a gap."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = True
    for f in m.params:
        if f.number in params:
            v = params[f.number]
            if f.kind != PLAIN:
                v = incoming(f, v)
            if positional:
                args.append(v)
            else:
                kwargs[f.name] = v
        else:
            positional = False
    return args, kwargs


class Services:
    """The implementations a server offers, by interface id (the targets of ``Bootstrap``).

    One ``Services`` is shared by every connection of a server; registering later makes the
    implementation reachable from connections that already exist. ``bootstrap`` is what a
    Cap'n Proto peer gets (it names no interface): the one registered implementation, or the
    one set explicitly."""

    def __init__(self) -> None:
        self._by_id: dict[int, Implementation] = {}
        self._bootstrap: Implementation | None = None

    def register(self, iface: Any, impl: object) -> None:
        info = describe(iface)
        if info is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        if info.pyclass is not None and not isinstance(impl, info.pyclass):
            impl = info.pyclass(impl)  # the runtime wraps dicts, objects and functions
        self._by_id[info.id] = Implementation(impl, info)

    def set_bootstrap(self, impl: object, iface: Any = None) -> None:
        """Offer ``impl`` to peers that ask for *the* bootstrap capability."""
        info = describe(iface if iface is not None else impl)
        if info is not None and info.pyclass is not None and not isinstance(impl, info.pyclass):
            impl = info.pyclass(impl)
        self._bootstrap = Implementation(impl, info)

    def lookup(self, interface_id: int | None) -> Implementation | None:
        if interface_id is None:
            if self._bootstrap is not None:
                return self._bootstrap
            if len(self._by_id) == 1:
                return next(iter(self._by_id.values()))
            return None
        return self._by_id.get(interface_id)

    def __len__(self) -> int:
        return len(self._by_id)
