"""Interfaces: local implementations, converting method wrappers, and the RPC-facing description.

A generated interface class ``Iface`` is used three ways:

* ``Iface(impl)`` wraps an implementation: a ``dict`` of callables by method name, any object
  with the methods as attributes, or (for an interface with exactly one method) any callable:
  a function, lambda, bound method, ``functools.partial``...
* ``class Impl(Iface): def method(self, ...)`` implements it by subclassing; ``Impl()`` is a
  capability and ``Iface(Impl())`` returns it unchanged.
* ``Iface.cara_remote(send)`` makes a proxy whose calls go to ``send(method, params)`` (used by
  the RPC layer).

Calling a method through the class's descriptors (``Iface(impl).echo('hi')``, ``obj[(iid, n)]``)
converts: positional and keyword arguments are checked against the ``$Params`` struct (too many
positional arguments is a ``TypeError``), the implementation receives converted values, and its
return value is checked against the results: no result field gives ``None``, one is unboxed,
several come back as the result struct (the implementation may return a tuple, a mapping or the
struct), a ``-> Struct`` method returns that struct. An implementation may be ``async`` (or
return any awaitable): the call then returns a coroutine that converts after awaiting.

For the RPC layer each class carries :class:`InterfaceSchema` (``Iface.cara_schema``): the id,
every method addressable by ``(interface id, method index)`` including inherited ones, each a
:class:`MethodSpec` with the param and result struct classes and ``invoke`` (server side) /
``box_params``/``unbox_results`` (client side). :func:`find_capabilities` lists the interface
values inside a struct, so they can be exported when the struct is sent; on arrival, an object
with a ``__cara_capability__(iface_cls)`` method stored into an interface-typed field is
replaced by what that method returns (the typed proxy).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cara.runtime.struct import Struct, _compile, attribute_name
from cara.runtime.types import ClassType, Invalid, ctx_key, describe_value, hold_in_any_pointer

__all__ = [
    "Interface",
    "InterfaceSchema",
    "MethodSpec",
    "build_interface_class",
    "find_capabilities",
    "may_hold_interfaces",
    "received_values",
]

_NOTHING: Any = object()
_SCALARS = frozenset({str, bytes, int, float, bool})
#: Types box_results never takes for a capability at once (they have meanings of their own).
_NOT_CAPABILITIES = frozenset({dict, list, tuple, type(None)})
#: Whether a type is a Mapping, by type (box_results asks it of every capability a method
#: returns, and the Mapping ABC takes about a microsecond to say). Bounded.
_MAPPING_TYPES: dict[type, bool] = {}


def _is_mapping_type(t: type) -> bool:
    found = _MAPPING_TYPES.get(t)
    if found is None:
        found = issubclass(t, Mapping)
        if len(_MAPPING_TYPES) < 1024:
            _MAPPING_TYPES[t] = found
    return found

#: Shared by every call: handlers never change the keyword arguments they are given.
_NO_KWARGS: dict[str, Any] = {}
#: Method names that would hide the Interface API get a trailing underscore as attribute.
INTERFACE_RESERVED = frozenset({"cara_schema", "cara_remote", "ReplaceTypes", "mro"}
                               | set(dir(object)))


class MethodSpec:
    """One method: ``(interface_id, index)`` is its address on the wire."""

    def __init__(self, interface_id: int, index: int, name: str, params: ClassType,
                 results: ClassType, *, params_named: bool, results_named: bool,
                 interface_name: str = "", implicit_params: tuple[str, ...] = (),
                 annotations: Any = ()) -> None:
        self.interface_id = interface_id
        self.index = index
        self.name = name
        self.attr = attribute_name(name, INTERFACE_RESERVED)
        self._params = params
        self._results = results
        #: The params (results) are a declared struct (``foo @0 Basic``, ``-> Basic``): the
        #: implementation takes (returns) the struct whole.
        self.params_named = params_named
        self.results_named = results_named
        self.interface_name = interface_name
        self.implicit_params = implicit_params
        self.annotations = annotations
        self._param_numbers: tuple[int, ...] | None = None  # (box_params, on first use)
        self._result_where = f"{interface_name}.{name}() result"
        self._single_result: int | None = None  # its field number, or -1 (box_results)
        self._single_cap = False  # (and whether that result is a capability)

    @property
    def param_class(self) -> Any:
        return self._params.cls

    @property
    def result_class(self) -> Any:
        return self._results.cls

    @property
    def key(self) -> tuple[int, int]:
        return (self.interface_id, self.index)

    def __repr__(self) -> str:
        return f"<method {self.interface_name}.{self.name} @{self.index}>"

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return BoundMethod(obj, self)

    # ------------------------------------------------------------------ params

    def box_params(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The ``$Params`` struct for a call with ``args`` and ``kwargs`` (checked)."""
        cls = self._params.cls
        if not kwargs and not self.params_named:
            # The common call, positional values only: converted from a number-keyed dict
            # (the accelerated constructor); anything it refuses goes the long way below, so
            # errors are worded by one path.
            numbers = self._param_numbers
            if numbers is None:
                numbers = self._param_numbers = tuple(f.number for f in cls.cara_schema.fields)
            if len(args) <= len(numbers):
                try:
                    if len(args) == 1:
                        return cls._cara_convert_({numbers[0]: args[0]})
                    return cls._cara_convert_(dict(zip(numbers, args, strict=False)))
                except Exception:
                    pass
        if self.params_named:
            if len(args) == 1 and not kwargs:
                return _convert(cls, args[0], f"{self.interface_name}.{self.name}()")
            if args:
                raise TypeError(f"{self.interface_name}.{self.name}() takes one {cls._cara_name_}"
                                f" or keyword arguments, got {len(args)} positional")
            return cls.Create(**kwargs)
        fields = cls.cara_schema.fields
        if len(args) > len(fields):
            raise TypeError(f"{self.interface_name}.{self.name}() takes {len(fields)} argument(s)"
                            f", got {len(args)}")
        data: dict[str, Any] = {}
        for f, v in zip(fields, args, strict=False):
            data[f.name] = v
        for k, v in kwargs.items():
            f = cls.cara_schema.by_name.get(k) or _by_attr(cls, k)
            if f is None:
                raise TypeError(f"{self.interface_name}.{self.name}() got an unexpected keyword"
                                f" argument {k!r}")
            if f.name in data:
                raise TypeError(f"{self.interface_name}.{self.name}() got multiple values for"
                                f" argument {k!r}")
            data[f.name] = v
        return cls.Create(**data)

    def positional_box(self) -> tuple[Callable[[dict[int, Any]], Any], int] | None:
        """``(convert, number)`` when a call with one positional argument ``arg`` boxes as
        ``convert({number: arg})`` (what :meth:`box_params` does first; a value ``convert``
        refuses goes through :meth:`box_params`, which words the error); else None."""
        if self.params_named:
            return None
        cls = self._params.cls
        fields = cls.cara_schema.fields
        if not fields:
            return None
        _compile(cls)  # (the generated converter, not the stand-in that generates it)
        return cls._cara_convert_, fields[0].number

    def call_args(self, params: Any, capacity: int = 0) -> tuple[list[Any], dict[str, Any]]:
        """Arguments for an implementation receiving ``params`` from the wire: the struct itself
        for a named-struct method, else positional values up to the last set field (unset ones
        before it read as their defaults), extended with defaults up to ``capacity`` (what the
        implementation accepts; see :func:`positional_capacity`). So ``lambda: 'x'`` still
        works when nothing was given, and ``def add(a, b)`` gets ``0, 0`` as Cap'n Proto would
        pass them when the caller sent no params."""
        if self.params_named:
            return [params], {}
        fields = params.cara_schema.fields
        if len(fields) == 1 and capacity >= 1:  # the common one-argument method
            return [params[fields[0].number]], _NO_KWARGS
        last = -1
        for f in fields:
            if dict.__contains__(params, f.number):
                last = f.number
        count = max(last + 1, min(len(fields), capacity))
        return [params[f.number] for f in fields[:count]], _NO_KWARGS

    # ------------------------------------------------------------------ results

    def box_results(self, value: Any) -> Any:
        """The ``$Results`` struct for what an implementation returned (checked)."""
        cls = self._results.cls
        single = self._single_result
        if single is None:
            single = self._find_single_result()
        if single >= 0:
            t = type(value)
            # the common cases: one plain result, one capability (an object, not a mapping
            # that names the result)
            if t in _SCALARS or (self._single_cap and t not in _NOT_CAPABILITIES
                                 and not _is_mapping_type(t)):
                try:
                    return cls._cara_convert_({single: value})
                except Exception:
                    pass  # worded below
        where = self._result_where
        if self.results_named:
            return _convert(cls, {} if value is None else value, where)
        if isinstance(value, cls):
            return value
        fields = cls.cara_schema.fields
        if not fields:
            return cls()
        if len(fields) == 1:
            f = fields[0]
            if isinstance(value, Mapping) and not isinstance(value, Struct) and \
                    set(value) == {f.name} and f.type.kind not in ("struct", "anyPointer"):
                value = value[f.name]
            if value is None and f.type.kind != "void":
                return cls()
            return _convert(cls, {f.number: value}, where)
        if isinstance(value, (tuple, list)):
            if len(value) > len(fields):
                raise TypeError(f"{where}: {len(value)} values for {len(fields)} results")
            return _convert(cls, {f.number: v for f, v in zip(fields, value, strict=False)}, where)
        if value is None:
            return cls()
        return _convert(cls, value, where)

    def single_result(self) -> int | None:
        """The field number ``n`` when :meth:`unbox_results` gives ``results[n]`` (one unnamed
        result), else None."""
        single = self._single_result
        if single is None:
            single = self._find_single_result()
        return single if single >= 0 else None

    def scalar_box(self) -> tuple[Callable[[dict[int, Any]], Any], int] | None:
        """``(convert, number)`` when :meth:`box_results` boxes a value of a builtin scalar type
        (str, bytes, int, float, bool) as ``convert({number: value})`` first (a value
        ``convert`` refuses goes the long way, which words the error); else None."""
        single = self.single_result()
        if single is None:
            return None
        cls = self._results.cls
        _compile(cls)  # (the generated converter, not the stand-in that generates it)
        return cls._cara_convert_, single

    def unbox_results(self, results: Any) -> Any:
        """What a caller gets back: None, the single value, or the result struct."""
        if self.results_named:
            return results
        single = self._single_result
        if single is None:
            single = self._find_single_result()
        if single >= 0:
            return results[single]
        if not results.cara_schema.fields:
            return None
        return results

    def _find_single_result(self) -> int:
        """The field number of the one result an unnamed result struct has, else -1."""
        fields = self._results.cls.cara_schema.fields
        single = fields[0].number if len(fields) == 1 and not self.results_named else -1
        self._single_cap = single >= 0 and fields[0].type.kind == "interface"
        self._single_result = single
        return single

    # ------------------------------------------------------------------ invocation

    def invoke(self, target: Any, params: Any) -> Any:
        """Server side: call implementation ``target`` (a capability object) with a ``$Params``
        struct; returns the ``$Results`` struct, or an awaitable of it."""
        func = implementation(target, self)
        args, kwargs = self.call_args(params, positional_capacity(func))
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._await_box(result)
        return self.box_results(result)

    async def _await_box(self, pending: Awaitable[Any]) -> Any:
        return self.box_results(await pending)

    def call_local(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A Python call on a local capability: convert, call, convert back."""
        params = self.box_params(args, kwargs)
        func = implementation(target, self)
        if self.params_named:
            result = func(params)
        else:
            fields = params.cara_schema.fields
            cargs = [params[f.number] for f in fields[: len(args)]]
            ckw = {}
            for k in kwargs:
                f = params.cara_schema.by_name.get(k) or _by_attr(type(params), k)
                assert f is not None
                ckw[f.attr] = params[f.number]
            result = func(*cargs, **ckw)
        if inspect.isawaitable(result):
            return self._await_unbox(result)
        return self.unbox_results(self.box_results(result))

    async def _await_unbox(self, pending: Awaitable[Any]) -> Any:
        return self.unbox_results(self.box_results(await pending))


def _by_attr(cls: Any, attr: str) -> Any:
    num = cls.cara_schema.attr_num.get(attr)
    return None if num is None else cls.cara_schema.fields[num]


def _convert(cls: Any, value: Any, where: str) -> Any:
    try:
        return cls._cara_convert_(value)
    except Invalid as e:
        raise e.error(where) from None


class BoundMethod:
    """``capability.method``: calling it converts arguments and results."""

    __slots__ = ("method", "target")

    def __init__(self, target: Any, method: MethodSpec) -> None:
        self.target = target
        self.method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target._cara_call_(self.method, args, kwargs)

    def __repr__(self) -> str:
        return f"<bound {self.method!r} of {self.target!r}>"


class InterfaceSchema:
    """What an interface class knows about its schema (``Iface.cara_schema``)."""

    def __init__(self, type_id: int, name: str, methods: list[MethodSpec], superclasses: list[Any],
                 *, node: Any = None, annotations: Any = (), builder: Any = None,
                 bindings: Any = (), generic_params: tuple[str, ...] = ()) -> None:
        self.id = type_id
        self.name = name
        self.node = node
        self.methods: tuple[MethodSpec, ...] = tuple(methods)
        self.superclasses = tuple(superclasses)
        self.annotations = annotations
        self.builder = builder
        self.bindings = bindings
        self.generic_params = generic_params
        #: Every callable method, own and inherited: (interface id, index) -> spec.
        self.all_methods: dict[tuple[int, int], MethodSpec] = {}
        #: By name, nearest definition first (own methods, then superclasses breadth-first).
        self.by_name: dict[str, MethodSpec] = {}
        queue: list[Any] = [self]
        seen: set[int] = set()
        while queue:
            schema = queue.pop(0)
            if schema.id in seen:
                continue
            seen.add(schema.id)
            for m in schema.methods:
                self.all_methods.setdefault(m.key, m)
                self.by_name.setdefault(m.name, m)
                self.by_name.setdefault(m.attr, m)
            queue.extend(s.cara_schema for s in schema.superclasses)

    def method(self, key: Any) -> MethodSpec:
        """A method by name, own index, or ``(interface id, index)``."""
        if isinstance(key, tuple):
            return self.all_methods[key]
        if isinstance(key, int):
            return self.methods[key]
        return self.by_name[key]

    def __repr__(self) -> str:
        return f"<interface {self.name} @0x{self.id:016x}>"


class _Receiving(threading.local):
    depth = 0


_RECEIVING = _Receiving()


class received_values:
    """While active (in this thread), values converted into interface-typed fields came from a
    peer: only capabilities are accepted there, never a mapping, callable or object that a local
    caller could pass as an implementation (a msgpack map must not become a server-side object
    whose "methods" are the peer's data). The RPC encodings convert received params and results
    inside it."""

    __slots__ = ()

    def __enter__(self) -> None:
        _RECEIVING.depth += 1

    def __exit__(self, *exc: object) -> None:
        _RECEIVING.depth -= 1


_PLAIN_KINDS = frozenset({"void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                          "uint32", "uint64", "float32", "float64", "text", "data", "enum"})
#: may_hold_interfaces' answers by class (read by the RPC encodings on their hot path).
HOLDS_INTERFACES: dict[Any, bool] = {}


def may_hold_interfaces(struct_cls: Any) -> bool:
    """Whether a value of ``struct_cls`` can hold an interface anywhere inside (a field, a
    list element, a nested struct or an AnyPointer): received data of a class that cannot
    needs no :class:`received_values` guard. Conservative: unsure is True. Cached per class."""
    found = HOLDS_INTERFACES.get(struct_cls)
    if found is None:
        found = HOLDS_INTERFACES[struct_cls] = _scan_for_interfaces(struct_cls, set())
    return found


def _scan_for_interfaces(cls: Any, seen: set[int]) -> bool:
    if id(cls) in seen:
        return False  # (already being scanned: its other fields decide)
    seen.add(id(cls))
    schema = getattr(cls, "cara_schema", None)
    fields = getattr(schema, "fields", None)
    if fields is None:
        return True
    for f in fields:
        t = f.type
        while True:
            kind = getattr(t, "kind", None)
            if kind in _PLAIN_KINDS:
                break
            if kind == "list":
                t = getattr(t.cls, "_cara_elem_", None)
                continue
            if kind in ("struct", "group") and _scan_for_interfaces(t.cls, seen) is False:
                break
            return True
    return False


class Interface:
    """Base of every generated interface class (see the module docstring)."""

    cara_schema: InterfaceSchema
    _cara_name_: str = "Interface"
    _cara_impl_: Any = _NOTHING
    _cara_locator_: Any = None

    def __new__(cls, impl: Any = _NOTHING, *args: Any, **kwargs: Any) -> Any:
        if "_cara_generated_" not in cls.__dict__:  # a user's implementation subclass
            return object.__new__(cls)
        if impl is _NOTHING:
            raise TypeError(f"{cls._cara_name_}(impl) needs an implementation: a dict of "
                            "callables, an object with the methods, or a callable for a "
                            "one-method interface; or subclass it")
        if isinstance(impl, cls):
            return impl
        cast = _caster(impl)
        if cast is not None:  # an RPC client or capability: it makes the typed proxy
            return cast(cls)
        obj = object.__new__(cls)
        obj._cara_impl_ = impl
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __class_getitem__(cls, args: Any) -> Any:
        from cara.runtime.generics import bind

        return bind(cls, args)

    @classmethod
    def ReplaceTypes(cls, replacements: Any) -> Any:
        """This interface with types replaced in every param and result struct it reaches:
        ``Iface.ReplaceTypes([(Old, New), ...])``."""
        from cara.runtime.generics import replace_types

        return replace_types(cls, replacements)

    @classmethod
    def cara_remote(cls, send: Callable[[MethodSpec, Any], Any]) -> Any:
        """A proxy whose calls become ``send(method, params_struct)``, which returns the results
        struct or an awaitable of it (the RPC layer's client side)."""
        obj = object.__new__(cls)
        obj._cara_impl_ = _Remote(send)
        return obj

    @classmethod
    def _cara_convert_(cls, value: Any) -> Any:
        if value is None or isinstance(value, cls):
            return value
        cast = _caster(value)
        if cast is not None:
            return cast(cls)
        typed = getattr(value, "__cara_capability__", None)
        if typed is not None:
            # An untyped capability reference (e.g. decoded by the RPC layer before the
            # field's type was known) makes the proxy for this interface itself.
            return typed(cls)
        if isinstance(value, Interface):
            raise Invalid(f"expected {cls._cara_name_}, got a {type(value)._cara_name_}")
        if _RECEIVING.depth:
            raise Invalid(f"expected a capability ({cls._cara_name_}), got "
                          f"{describe_value(value)}: received data cannot implement an interface")
        if isinstance(value, Mapping) or callable(value) or _has_methods(cls, value):
            if not isinstance(value, Mapping) and not _has_methods(cls, value) and \
                    len(cls.cara_schema.all_methods) != 1 and len(cls.cara_schema.methods) != 1:
                raise Invalid(f"a plain callable can only implement a one-method interface;"
                              f" {cls._cara_name_} has {len(cls.cara_schema.all_methods)}")
            return cls(value)
        raise Invalid(f"expected {cls._cara_name_} (an implementation), got "
                      f"{describe_value(value)}")

    @classmethod
    def _cara_zero_(cls) -> Any:
        return None

    def _cara_call_(self, method: MethodSpec, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        impl = self._cara_impl_
        if isinstance(impl, _Remote):
            params = method.box_params(args, kwargs)
            result = impl.send(method, params)
            if inspect.isawaitable(result):
                return _await_remote(method, result)
            return method.unbox_results(_convert(method.result_class, result, method.name))
        return method.call_local(self, args, kwargs)

    def __getitem__(self, key: Any) -> BoundMethod:
        """A method by name, own index or ``(interface id, method index)``."""
        try:
            return BoundMethod(self, self.cara_schema.method(key))
        except (KeyError, IndexError):
            raise KeyError(f"{self._cara_name_} has no method {key!r}") from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A one-method interface can be called directly."""
        methods = self.cara_schema.all_methods
        if len(methods) != 1:
            raise TypeError(f"{self._cara_name_} has {len(methods)} methods; call one by name")
        (method,) = methods.values()
        return self._cara_call_(method, args, kwargs)

    def __repr__(self) -> str:
        impl = self._cara_impl_
        if impl is _NOTHING:
            return f"<{type(self).__qualname__} implementing {self._cara_name_}>"
        return f"{type(self).__name__}({impl!r})"


class _Remote:
    __slots__ = ("send",)

    def __init__(self, send: Callable[[MethodSpec, Any], Any]) -> None:
        self.send = send


async def _await_remote(method: MethodSpec, pending: Awaitable[Any]) -> Any:
    result = await pending
    return method.unbox_results(_convert(method.result_class, result, method.name))


def _has_methods(cls: Any, value: Any) -> bool:
    return any(hasattr(value, m.attr) or hasattr(value, m.name)
               for m in cls.cara_schema.all_methods.values())


_CAPACITY: dict[object, int] = {}
_UNBOUNDED = 1 << 30


def positional_capacity(func: Callable[..., Any]) -> int:
    """How many positional arguments ``func`` accepts (a large number for ``*args`` or when
    its signature cannot be read). Cached per code object, so a lambda made per call costs one
    dict lookup after the first."""
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    key: object = (code, hasattr(func, "__self__")) if code is not None else None
    if key is not None:
        cached = _CAPACITY.get(key)
        if cached is not None:
            return cached
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return _UNBOUNDED
    count = 0
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            count = _UNBOUNDED
            break
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    if key is not None and len(_CAPACITY) < 100_000:
        _CAPACITY[key] = count
    return count


def _caster(value: Any) -> Callable[[type], Any] | None:
    """``value.__cara_cast__`` if it has one, found on its class or in its own ``__dict__``.

    RPC clients (the asyncio transport's ``Client``, a pseud client after ``setup_client``) and
    untyped remote capabilities define it: ``Iface(client)`` then returns a proxy of
    ``Iface`` instead of wrapping the client as a local implementation. The lookup avoids
    plain ``getattr`` because clients such as pseud's answer *every* attribute name with a
    remote-call wrapper.
    """
    cast = getattr(type(value), "__cara_cast__", None)
    if cast is not None:
        return cast.__get__(value)
    own = getattr(value, "__dict__", None)
    if isinstance(own, dict):
        found = own.get("__cara_cast__")
        if callable(found):
            return found
    return None


def implementation(target: Any, method: MethodSpec) -> Callable[..., Any]:
    """The callable implementing ``method`` in capability ``target``."""
    impl = target._cara_impl_
    schema = type(target).cara_schema
    if impl is _NOTHING:  # a subclass implementation
        func = getattr(target, method.attr, None)
        if isinstance(func, BoundMethod) or func is None:
            raise NotImplementedError(f"{type(target).__qualname__} does not implement "
                                      f"{method.interface_name}.{method.name}")
        return func
    if isinstance(impl, Mapping):
        for key in (method.name, method.attr, method.index):
            if key in impl:
                return impl[key]
        raise NotImplementedError(f"the dict implementing {schema.name} has no "
                                  f"{method.name!r}")
    for key in (method.name, method.attr):
        func = getattr(impl, key, None)
        if func is not None and callable(func):
            return func
    if callable(impl) and (len(schema.all_methods) == 1 or
                           (len(schema.methods) == 1 and schema.methods[0] is method)):
        return impl
    raise NotImplementedError(f"{describe_value(impl)} does not implement "
                              f"{method.interface_name}.{method.name}")


def find_capabilities(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every interface value inside ``value`` (structs, lists, AnyPointer contents) with its path
    of keys (field numbers and list indexes)."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    stack: list[tuple[tuple[Any, ...], Any, int]] = [(path, value, 0)]
    while stack:
        where, v, depth = stack.pop()
        if isinstance(v, Interface):
            out.append((where, v))
        elif depth > 256:
            continue
        elif isinstance(v, dict):
            for k, item in dict.items(v):
                if not isinstance(item, (str, bytes, int, float)) and item is not None:
                    stack.append(((*where, k), item, depth + 1))
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                if not isinstance(item, (str, bytes, int, float)) and item is not None:
                    stack.append(((*where, i), item, depth + 1))
    out.reverse()
    return out


def build_interface_class(builder: Any, node: Any, ctx: dict[int, Any], short: str,
                          qual: str) -> Any:
    """The class for interface ``node`` under generic bindings ``ctx``."""
    assert node.interface is not None
    supers = []
    for s in node.interface.superclasses:
        sctx = builder.brand_ctx(s.brand, ctx, s.id)
        try:
            supers.append(builder.interface_class(s.id, sctx))
        except KeyError:
            continue
    methods: list[MethodSpec] = []
    for index, m in enumerate(node.interface.methods):
        pnode = builder.nodes.get(m.paramStructType)
        rnode = builder.nodes.get(m.resultStructType)
        mctx = dict(ctx)
        pctx = {**mctx, **builder.brand_ctx(m.paramBrand, ctx, m.paramStructType)}
        rctx = {**mctx, **builder.brand_ctx(m.resultBrand, ctx, m.resultStructType)}
        methods.append(MethodSpec(
            node.id, index, m.name,
            builder.replaced(builder.class_type("struct", m.paramStructType, pctx)),
            builder.replaced(builder.class_type("struct", m.resultStructType, rctx)),
            params_named=pnode is not None and pnode.scopeId != 0,
            results_named=rnode is not None and rnode.scopeId != 0,
            interface_name=qual, implicit_params=tuple(p.name for p in m.implicitParameters),
            annotations=builder.annotation_values(m.annotations, ctx),
        ))
    schema = InterfaceSchema(node.id, qual, methods, supers, node=node, builder=builder,
                             annotations=builder.annotation_values(node.annotations, ctx),
                             bindings=ctx, generic_params=tuple(p.name for p in node.parameters))
    ns: dict[str, Any] = {
        "cara_schema": schema, "_cara_name_": qual, "_cara_generated_": True,
        "__module__": builder.module_name(node),
        "__qualname__": builder.qualname(node) if node.id not in ctx else qual,
        "__doc__": f"Cap'n Proto interface {qual} (@0x{node.id:016x}).",
    }
    for spec in methods:
        ns[spec.attr] = spec
    bases = tuple(supers) or (Interface,)
    try:
        cls: Any = type(short, bases, ns)
    except TypeError:
        cls = type(short, (Interface,), ns)
    cls._cara_type_ = ClassType("interface", lambda: cls, qual,
                                ("interface", node.id, ctx_key(ctx)))
    return cls


hold_in_any_pointer(Interface)  # (an AnyPointer field holds a capability as it is)
