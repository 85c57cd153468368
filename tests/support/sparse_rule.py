"""The rule by which binary decoding leaves fields unset, written out plainly.

cara's generated decoder (``SchemaCodec(..., sparse=True)``, used by ``S.from_bytes``) applies it
inside generated code; tests compare that fast path with "full decode, then :func:`sparse`,
then the constructor". Keyed by field number, as the codec's ``keys="index"`` decodes.
"""

from __future__ import annotations

import math as _math
from typing import Any

_SCALAR_KINDS = frozenset({"void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                           "uint32", "uint64", "float32", "float64", "enum"})
_POINTERISH = frozenset({"struct", "list", "text", "data", "interface", "anyPointer"})


def _same_scalar(value: Any, default: Any) -> bool:
    """``value`` is its field's default, bit for bit (so -0.0 is not the default 0.0)."""
    if type(value) is float or type(default) is float:
        return bool(value == default) and _math.copysign(1.0, value) == _math.copysign(
            1.0, float(default))
    return bool(value == default)


# What _sparse does with a decoded field (see _sparse_plan).
_KEEP, _SCALAR, _POINTER, _NESTED, _GROUP = range(5)
_SPARSE_PLANS: dict[Any, dict[int, tuple[int, int, Any, Any]]] = {}


def _sparse_plan(struct_cls: Any) -> dict[int, tuple[int, int, Any, Any]]:
    """Per struct class, once: field number -> (number, action, default, type)."""
    plan = _SPARSE_PLANS.get(struct_cls)
    if plan is None:
        plan = {}
        for f in struct_cls.cara_schema.fields:
            kind = f.type.kind
            droppable = not f.discriminant  # None (not in a union) or 0
            default = None
            if f.is_group:
                action = _GROUP if droppable else _NESTED
            elif kind in _SCALAR_KINDS:
                action = _SCALAR if droppable else _KEEP
                default = f.scalar_default()
            elif kind in ("struct", "list"):
                action = _NESTED
            elif kind in _POINTERISH:
                action = _POINTER
            else:
                action = _KEEP
            plan[f.number] = (f.number, action, default, f.type)
        _SPARSE_PLANS[struct_cls] = plan
    return plan


def sparse(t: Any, value: Any, depth: int = 0) -> Any:
    """The codec's full decoded value (fresh dicts keyed by field number) made ready for the
    struct class in one pass (the runtime's fast path takes it as it is): without null pointers
    and without the scalars that hold their default. The wire stores both as zeros, so leaving
    them unset makes a decoded struct equal to the one that was written, and as small in
    msgpack. Union members are kept (which one is set matters), except the discriminant-0
    member holding its default: an empty union already reads as that member.

    ``from_bytes`` gets this form straight from the codec (``SchemaCodec(sparse=True)``); this
    function states the rule in one place and is what tests compare that decoder with."""
    if depth > 256:  # the codec's nesting limit is far lower; this only bounds recursion
        return value
    if t.kind == "struct" and isinstance(value, dict):
        plan = _sparse_plan(t.cls)
        out = {}
        for key, v in value.items():
            entry = plan.get(key)
            if entry is None:
                out[key] = v
                continue
            number, action, default, ft = entry
            if action == _SCALAR:
                if v == default and (type(v) is not float or _same_scalar(v, default)):
                    continue
            elif action != _KEEP:
                if v is None:
                    continue
                if action != _POINTER:
                    v = sparse(ft, v, depth + 1)
                    if action == _GROUP and not v:
                        continue
            out[number] = v
        return out
    if t.kind == "list" and isinstance(value, list):
        elem = t.cls._cara_elem_
        if elem.kind in ("struct", "list"):
            return [sparse(elem, v, depth + 1) for v in value]
    return value
