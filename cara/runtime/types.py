"""Type descriptors: what a schema type accepts, how a value is converted to it, its zero value.

Every write into a struct or list goes through one of these, so they are the single place where
"Int32 means an int in [-2**31, 2**31)" lives. A descriptor offers two speeds:

* :meth:`TypeDesc.convert` checks and converts any accepted value (or raises :class:`Invalid`);
* :meth:`TypeDesc.fast_check` returns a Python expression that is true when a value is *already*
  exactly right, so the per-class code generated in :mod:`cara.runtime.struct` can skip the call
  for the common case (a value just read from msgpack or built by the user with the right type).

Conversion failures raise :class:`Invalid`, a private exception that collects the path
(``.phones``, ``[1]``, ``.type``) while it unwinds through nested structs and lists; the public
entry points turn it into :class:`cara.errors.ValueTypeError` with the full path.
"""

from __future__ import annotations

import math
import struct as _struct
import sys
from collections.abc import Callable
from typing import Any

from cara.errors import ValueTypeError

__all__ = [
    "ANY_POINTER",
    "BOOL",
    "BUILTINS",
    "DATA",
    "FLOAT32",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "TEXT",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "VOID",
    "Invalid",
    "TypeDesc",
    "describe_value",
]

#: Nesting limit for values converted from untrusted input (msgpack/JSON): deeper input is
#: rejected with a clear error instead of exhausting the interpreter stack.
MAX_DEPTH = 64


class Invalid(Exception):
    """A value that does not fit its schema type; ``parts`` is the path, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str] = []

    def at(self, part: str) -> Invalid:
        self.parts.append(part)
        return self

    def error(self, root: str) -> ValueTypeError:
        return ValueTypeError(root + "".join(reversed(self.parts)), self.message)


def describe_value(value: object) -> str:
    """A short rendering of a wrong value for an error message (never huge, never raising)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, (str, bytes, int, float)) or value is None:
        return text
    return f"{type(value).__name__} {text}"


def mismatch(expected: str, value: object) -> Invalid:
    return Invalid(f"expected {expected}, got {describe_value(value)}")


class TypeDesc:
    """A schema type. ``kind`` is the ``Type`` union member name of schema.capnp."""

    kind: str = ""
    name: str = ""
    #: Stored behind a pointer in Cap'n Proto (may be a generic argument).
    is_pointer: bool = False

    def convert(self, value: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def convert_slow(self, value: Any) -> Any:
        """:meth:`convert` without generating code (see :meth:`ClassType.convert_slow`)."""
        return self.convert(value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str | None:
        """A Python expression over ``var`` that is true when no conversion is needed; constants
        it uses are put into ``env``. ``None``: always call :meth:`convert`."""
        return None

    def default(self) -> Any:
        """The value an unset field of this type reads as (when there is no explicit default)."""
        return None

    def __repr__(self) -> str:
        return self.name


class _Void(TypeDesc):
    kind = name = "Void"

    def convert(self, value: Any) -> Any:
        if value is None:
            return None
        raise mismatch("Void (None)", value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"{var} is None"


class _Bool(TypeDesc):
    kind = name = "Bool"

    def convert(self, value: Any) -> Any:
        if value is True or value is False:
            return value
        raise mismatch("Bool", value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"({var} is True or {var} is False)"

    def default(self) -> Any:
        return False


class _Int(TypeDesc):
    def __init__(self, name: str, bits: int, signed: bool) -> None:
        self.kind = self.name = name
        self.lo = -(1 << (bits - 1)) if signed else 0
        self.hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1

    def convert(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if self.lo <= value <= self.hi:
                return int(value)
            raise Invalid(f"{value} is out of range for {self.name} [{self.lo}, {self.hi}]")
        raise mismatch(self.name, value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"(type({var}) is int and {self.lo} <= {var} <= {self.hi})"

    def default(self) -> Any:
        return 0


FLOAT32_MAX = 3.4028234663852886e38

_F32 = _struct.Struct("<f")


def round32(value: float) -> float:
    """``value`` rounded to the nearest Float32 (to nearest even, as C's ``(float)x`` rounds),
    as a Python float: what a Float32 field holds, so it reads back what the wire carries."""
    single: float = _F32.unpack(_F32.pack(value))[0]
    # An exact value (and NaN, which single precision cannot make "nearer") stays the same
    # object, so a value read back compares equal to itself even when it is NaN.
    return value if single == value or single != single else single


class _Float(TypeDesc):
    def __init__(self, name: str, limit: float | None) -> None:
        self.kind = self.name = name
        self.limit = limit
        #: Float32: values are rounded to single precision when stored.
        self.single = limit is not None

    def convert(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                out = float(value)
            except OverflowError:
                raise Invalid(f"{value} is out of range for {self.name}") from None
            if self.limit is not None:
                if math.isfinite(out) and abs(out) > self.limit:
                    raise Invalid(f"{value!r} is out of range for {self.name}")
                return round32(out)
            return out
        raise mismatch(self.name, value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        if self.limit is None:
            return f"type({var}) is float"
        env["_round32"] = round32
        return (f"(type({var}) is float and -{self.limit!r} <= {var} <= {self.limit!r}"
                f" and _round32({var}) == {var})")

    def default(self) -> Any:
        return 0.0


class _Text(TypeDesc):
    kind = name = "Text"
    is_pointer = True

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (bytes, bytearray)):
            raise Invalid(f"expected Text (str), got bytes {describe_value(value)};"
                          " decode it first")
        raise mismatch("Text (str)", value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"type({var}) is str"

    def default(self) -> Any:
        return ""


class _Data(TypeDesc):
    kind = name = "Data"
    is_pointer = True

    def convert(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise mismatch("Data (bytes)", value)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"type({var}) is bytes"

    def default(self) -> Any:
        return b""


#: Classes whose instances an ``AnyPointer`` holds as they are: runtime structs, lists and
#: capabilities, and what codecs read (the binary reader's ``AnyPointerReader``); each layer
#: adds its own with :func:`hold_in_any_pointer`.
_POINTER_CLASSES: list[type] = []
_pointer_classes: tuple[type, ...] = ()


def hold_in_any_pointer(cls: type) -> None:
    """Let ``AnyPointer`` fields hold instances of ``cls`` as they are."""
    global _pointer_classes
    if cls not in _POINTER_CLASSES:
        _POINTER_CLASSES.append(cls)
        _pointer_classes = tuple(_POINTER_CLASSES)


#: Plain values an ``AnyPointer`` holds as they are (msgpack writes them; the binary form
#: refuses them when writing, with the field path).
_PLAIN_SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


class _AnyPointer(TypeDesc):
    """``AnyPointer`` (and ``AnyStruct``/``AnyList``/``Capability`` in their loose form): holds
    a value some codec can write, checked when it is stored: ``None``, a struct, list or
    capability, a Cap'n Proto object read from a message (also as msgpack's ext value 0x43,
    which is read, and checked, now), or plain data msgpack writes (strings, bytes, numbers,
    booleans, and lists and dicts of those and of the former, nested at most
    :data:`MAX_DEPTH` levels). What it means is up to the application."""

    is_pointer = True

    def __init__(self, name: str = "AnyPointer", constraint: str = "anyKind") -> None:
        self.kind = "anyPointer"
        self.name = name
        self.constraint = constraint

    def convert(self, value: Any) -> Any:
        if type(value) in _PLAIN_SCALARS or isinstance(value, _pointer_classes):
            return value
        return _any_value(value, MAX_DEPTH)

    def fast_check(self, var: str, env: dict[str, Any]) -> str:
        return f"{var} is None"


def _any_value(value: Any, left: int) -> Any:
    """``value`` as an ``AnyPointer`` holds it (see :class:`_AnyPointer`), or :class:`Invalid`
    with the path inside it."""
    t = type(value)
    if t in _PLAIN_SCALARS or isinstance(value, _pointer_classes):
        return value
    if left <= 0:
        raise Invalid(f"AnyPointer value nests deeper than {MAX_DEPTH} levels")
    if t is list or t is tuple:
        out = list(value)
        for i, item in enumerate(out):
            if type(item) not in _PLAIN_SCALARS:
                try:
                    out[i] = _any_value(item, left - 1)
                except Invalid as e:
                    raise e.at(f"[{i}]") from None
        return value if t is list and all(map(_same, out, value)) else out
    if t is dict:
        changed = {}
        for k, item in value.items():
            if type(k) not in _PLAIN_SCALARS:
                raise Invalid(f"an AnyPointer value's dict key must be a string, bytes or a "
                              f"number, not {describe_value(k)}")
            if type(item) not in _PLAIN_SCALARS:
                try:
                    new = _any_value(item, left - 1)
                except Invalid as e:
                    raise e.at(f"[{k!r}]") from None
                if new is not item:
                    changed[k] = new
        return {**value, **changed} if changed else value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, bytes, int, float)):  # subclasses: enum members, ...
        return value
    mp = sys.modules.get("msgpack")  # (not imported: no ExtType can exist)
    if mp is not None and isinstance(value, mp.ExtType):
        if value.code == _EXT_CAPNP_MESSAGE:
            from cara.runtime import hooks

            try:  # read, and copied whole once, so that every pointer in it is checked now
                return hooks.checked_pointer(value.data)
            except Exception as e:  # DecodeError, or no codec to read it
                raise Invalid(f"not a valid Cap'n Proto object (ext type 0x43): {e}") \
                    from None
        return value  # msgpack writes it back as it came
    if _is_capability(value):
        return value
    raise Invalid(f"AnyPointer cannot hold {describe_value(value)}: no codec can write it "
                  "(a struct, list, capability, Cap'n Proto object read from a message, "
                  "or plain data: str, bytes, numbers, bool, None, lists and dicts of them)")


def _is_capability(value: Any) -> bool:
    """Whether ``value`` is a capability of the RPC layer (a remote one, a client, a promise
    of one): it can be cast to an interface (looked up as ``cara.runtime.interface`` does)."""
    t = type(value)
    if getattr(t, "__cara_cast__", None) is not None or \
            getattr(t, "__cara_capability__", None) is not None:
        return True
    own = getattr(value, "__dict__", None)
    return isinstance(own, dict) and callable(own.get("__cara_cast__"))


def _same(a: Any, b: Any) -> bool:
    return a is b


#: msgpack's ext code of a Cap'n Proto object (the binary reader's EXT_CAPNP_MESSAGE).
_EXT_CAPNP_MESSAGE = 0x43


VOID = _Void()
BOOL = _Bool()
INT8 = _Int("Int8", 8, True)
INT16 = _Int("Int16", 16, True)
INT32 = _Int("Int32", 32, True)
INT64 = _Int("Int64", 64, True)
UINT8 = _Int("UInt8", 8, False)
UINT16 = _Int("UInt16", 16, False)
UINT32 = _Int("UInt32", 32, False)
UINT64 = _Int("UInt64", 64, False)
FLOAT32 = _Float("Float32", FLOAT32_MAX)
FLOAT64 = _Float("Float64", None)
TEXT = _Text()
DATA = _Data()
ANY_POINTER = _AnyPointer()
ANY_STRUCT = _AnyPointer("AnyStruct", "struct")
ANY_LIST = _AnyPointer("AnyList", "list")
CAPABILITY = _AnyPointer("Capability", "capability")

#: Builtins by the ``Type.which`` name of schema.capnp.
BUILTINS: dict[str, TypeDesc] = {
    "void": VOID, "bool": BOOL, "int8": INT8, "int16": INT16, "int32": INT32, "int64": INT64,
    "uint8": UINT8, "uint16": UINT16, "uint32": UINT32, "uint64": UINT64,
    "float32": FLOAT32, "float64": FLOAT64, "text": TEXT, "data": DATA,
}
for _t in BUILTINS.values():
    _t.kind = next(k for k, v in BUILTINS.items() if v is _t)


class ClassType(TypeDesc):
    """A struct, list, enum or interface type: conversion is done by the runtime class, which is
    resolved on first use (so recursive and generic types can refer to classes still being built).
    """

    is_pointer = True

    def __init__(self, kind: str, resolve: Callable[[], Any], name: str = "",
                 key: Any = None) -> None:
        self.kind = kind
        self.key = key
        self._resolve: Callable[[], Any] | None = resolve
        self._cls: Any = None
        self._name = name
        if kind == "enum":
            self.is_pointer = False

    @property
    def cls(self) -> Any:
        if self._cls is None:
            assert self._resolve is not None
            self._cls = self._resolve()
            self._resolve = None
        return self._cls

    _conv: Callable[[Any], Any] | None = None

    def convert(self, value: Any) -> Any:
        conv = self._conv
        if conv is not None:  # (a converter that took this bound method before the first call)
            return conv(value)
        cls = self.cls
        if not getattr(cls, "_cara_ready_", True):
            cls._cara_prepare_()  # generate the class's fast converters (first use)
        conv = self._conv = cls._cara_convert_
        # From now on conversion goes straight to the class (one call less per value).
        self.convert = conv  # type: ignore[method-assign]
        return conv(value)

    def convert_slow(self, value: Any) -> Any:
        """Convert without generating any code: for values converted while a schema is being
        built (constants, annotation values), so importing a module stays cheap."""
        slow = getattr(self.cls, "_cara_convert_slow_", None)
        if slow is None:
            return self.convert(value)
        return slow(value)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._name or self.cls._cara_name_

    def default(self) -> Any:
        return self.cls._cara_zero_()


def type_key(t: TypeDesc) -> Any:
    """A hashable identity for a type: equal for the same type however it was reached (used to
    cache generic instantiations and to match ``ReplaceTypes`` targets)."""
    key = getattr(t, "key", None)
    if key is not None:
        return key
    if isinstance(t, ClassType):
        return ("cls", id(t.cls))
    return ("builtin", t.name)


def ctx_key(ctx: dict[int, tuple[TypeDesc, ...]]) -> tuple[Any, ...]:
    """A hashable identity for generic bindings ``{scope id: (type, ...)}``."""
    return tuple(sorted((sid, tuple(type_key(t) for t in ts)) for sid, ts in ctx.items()))


def as_type(obj: Any) -> TypeDesc:
    """A type descriptor for a generic argument or a ``ReplaceTypes`` target: a descriptor, a
    runtime class (struct, list, enum, interface), or the Python types ``str``/``bytes``."""
    if isinstance(obj, TypeDesc):
        return obj
    if obj is str:
        return TEXT
    if obj is bytes:
        return DATA
    desc = getattr(obj, "_cara_type_", None)
    if desc is not None:
        return desc() if callable(desc) else desc
    raise TypeError(f"{obj!r} is not a Cap'n Proto type")
