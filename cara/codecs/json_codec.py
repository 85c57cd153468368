"""JSON in Cap'n Proto's standard mapping (``capnp/compat/json.capnp``'s ``JsonCodec``).

The mapping, as the reference ``capnp convert`` writes it (testdata ``short.json``):

* a struct is an object keyed by field name, fields in schema order; data fields (Void, Bool,
  numbers, enums) are always written, pointer fields only when set; of a union only the active
  member; groups and named unions are nested objects;
* Int64 and UInt64 are strings (JavaScript numbers cannot hold them), other integers numbers;
* floats are numbers, written in the shortest form (``345``, ``1e306``), except non-finite ones:
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
* Data is an array of byte values; enums are enumerant names; Void is ``null``.

Decoding accepts that output and the obvious variants (numbers for 64-bit integers, strings for
floats, enum numbers), ignores fields it does not know (a newer schema's), and reports a wrong
value with its field path.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cara.errors import DecodeError, EncodeError
from cara.runtime import hooks
from cara.runtime.list import List
from cara.runtime.struct import Struct
from cara.runtime.types import ClassType, Invalid, TypeDesc, describe_value

__all__ = ["decode", "dumps", "encode", "loads"]

_DATA_KINDS = {"void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "float32", "float64", "enum"}
#: Nesting deeper than this is rejected when decoding (the stdlib parser would recurse).
MAX_DEPTH = 100


def _float(x: float) -> Any:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return _Number(x)


class _Number(float):
    """A float that json.dumps writes in Cap'n Proto's form (``345``, ``1e306``)."""

    def __repr__(self) -> str:
        # libkj's rule: 15 significant digits if that reads back exactly, else 17.
        text = format(self, ".15g")
        if float(text) != self:
            text = format(self, ".17g")
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant}e{int(exp)}"
        return text

    __str__ = __repr__


def encode(value: Any, t: TypeDesc | None = None) -> Any:
    """``value`` as plain JSON-ready Python data (dicts, lists, str, numbers, None)."""
    if isinstance(value, Struct):
        return _encode_struct(value)
    if t is None:
        if isinstance(value, List):
            t = value._cara_elem_
            return [encode(v, t) for v in value]
        return _encode_loose(value)
    k = t.kind
    if k in ("int64", "uint64"):
        return str(int(value))
    if k in ("float32", "float64"):
        return _float(float(value))
    if k == "data":
        return list(value)
    if k == "enum":
        name = getattr(value, "_name_", None)
        return name if name and not name.startswith("<") else int(value)
    if k == "list":
        elem = value._cara_elem_ if isinstance(value, List) else None
        return [encode(v, elem) for v in value]
    if k == "interface":
        return None
    if k in ("void", "bool", "text") or k.startswith(("int", "uint")):
        return value
    return _encode_loose(value)


def _encode_loose(value: Any) -> Any:
    """AnyPointer contents and other untyped values."""
    if isinstance(value, Struct):
        return _encode_struct(value)
    if isinstance(value, (list, tuple)):
        return [_encode_loose(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_loose(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return list(bytes(value))
    if isinstance(value, float):
        return _float(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise EncodeError(f"cannot encode {describe_value(value)} as JSON")


def _encode_struct(s: Struct) -> dict[str, Any]:
    schema = s.cara_schema
    out: dict[str, Any] = {}
    active = s.which() if schema.union else None
    for f in schema.fields:
        if f.discriminant is not None and f.name != active:
            continue
        present = dict.__contains__(s, f.number)
        if f.is_group:
            value = s[f.number]
            out[f.name] = _encode_struct(value)
            continue
        if not present and f.type.kind not in _DATA_KINDS:
            continue
        out[f.name] = encode(s[f.number], f.type)
    return out


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text for a struct (or list) in Cap'n Proto's mapping (compact, like ``short.json``,
    or indented)."""
    data = encode(value)
    if indent is not None:
        return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    out: list[str] = []
    _write(data, out)
    return "".join(out)


def _write(v: Any, out: list[str]) -> None:
    """Compact JSON; floats in Cap'n Proto's shortest form (the stdlib ignores float
    subclasses' repr)."""
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif isinstance(v, float):
        out.append(repr(v if isinstance(v, _Number) else _Number(v)))
    elif isinstance(v, int):
        out.append(str(int(v)))
    elif isinstance(v, list):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _write(x, out)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        for i, (k, x) in enumerate(v.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(":")
            _write(x, out)
        out.append("}")
    else:
        raise EncodeError(f"cannot encode {describe_value(v)} as JSON")


# ------------------------------------------------------------------------------------ decoding


def _check_depth(data: Any) -> None:
    stack = [(data, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DecodeError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


def decode(data: Any, t: TypeDesc) -> Any:
    """JSON data (as parsed) to the plain value type ``t`` accepts (raises ``Invalid``)."""
    k = t.kind
    if k == "struct" and isinstance(t, ClassType):
        return _decode_struct(data, t.cls)
    if k == "list" and isinstance(t, ClassType):
        if not isinstance(data, list):
            raise Invalid(f"expected a JSON array for {t.name}, got {describe_value(data)}")
        elem = t.cls._cara_elem_
        out = []
        for i, v in enumerate(data):
            try:
                out.append(decode(v, elem))
            except Invalid as e:
                raise e.at(f"[{i}]") from None
        return out
    if k in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        if isinstance(data, str):
            try:
                return int(data, 10)
            except ValueError:
                raise Invalid(f"expected {t.name}, got {describe_value(data)}") from None
        if isinstance(data, float) and data.is_integer():
            return int(data)
        return data
    if k in ("float32", "float64"):
        if isinstance(data, str):
            special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            if data in special:
                return special[data]
            try:
                return float(data)
            except ValueError:
                raise Invalid(f"expected {t.name}, got {describe_value(data)}") from None
        return data
    if k == "data":
        if isinstance(data, list):
            if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                       for b in data):
                raise Invalid("expected Data as an array of byte values 0..255")
            return bytes(data)
        return data
    return data


def _decode_struct(data: Any, cls: Any) -> Any:
    if not isinstance(data, dict):
        raise Invalid(f"expected a JSON object for {cls._cara_name_}, got {describe_value(data)}")
    schema = cls.cara_schema
    out: dict[int, Any] = {}
    for key, value in data.items():
        f = schema.by_name.get(key)
        if f is None:
            continue  # a field from a newer schema
        try:
            out[f.number] = decode(value, f.type)
        except Invalid as e:
            raise e.at(f.label) from None
    return out


def loads(cls: Any, text: str | bytes) -> Any:
    """Parse JSON text into an instance of struct (or list) class ``cls``."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        pos = getattr(e, "pos", None)
        raise DecodeError(f"invalid JSON: {e}", pos) from None
    _check_depth(data)
    desc = cls._cara_type_
    try:
        plain = decode(data, desc)
    except Invalid as e:
        raise e.error(cls._cara_name_) from None
    return cls(plain)


def _to_json(value: Any, **options: Any) -> str:
    return dumps(value, **options)


hooks.register("to_json", _to_json)
hooks.register("from_json", loads)
