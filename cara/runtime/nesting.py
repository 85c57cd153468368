"""The nesting limit for decoded values: one rule for every codec.

Cap'n Proto's binary reader refuses a message whose pointers nest deeper than 64 levels (a
struct or a list is a level; a group, sharing its parent's sections, is not). A value decoded
from msgpack must obey the same limit, or it would be accepted there and then refused by
``from_bytes`` after a ``to_bytes``, and crash ``to_json``, ``to_dict`` or ``deepcopy`` with a
RecursionError when deep enough. :func:`check_nesting` applies the limit to a constructed
value; a value kept for a field number the schema does not know (from a newer schema) is held
to the same limit on its own when it is stored (:func:`plain_depth_exceeds`).

The check costs nothing for most schemas: a struct class whose types cannot nest (no struct
reaches itself) has a fixed greatest depth, worked out once; only values of recursive types
are walked, and only through their struct and list fields.
"""

from __future__ import annotations

from typing import Any

from cara.errors import DecodeError

__all__ = ["DEFAULT_NESTING_LIMIT", "check_nesting", "plain_depth_exceeds", "static_depth"]

#: Deepest nesting of structs and lists any codec accepts (as libcapnp's reader).
DEFAULT_NESTING_LIMIT = 64

_UNBOUNDED = 1 << 30


def static_depth(cls: Any) -> int:
    """The greatest nesting any value of struct or list class ``cls`` can have through its
    schema's fields (a huge number for recursive types); cached on the class."""
    found = cls.__dict__.get("_cara_static_depth_")
    if found is None:
        found = _depth_of_class(cls, set())
        type.__setattr__(cls, "_cara_static_depth_", found)
    return int(found)


def _depth_of_class(cls: Any, busy: set[int]) -> int:
    if id(cls) in busy:
        return _UNBOUNDED
    busy.add(id(cls))
    try:
        elem = getattr(cls, "_cara_elem_", None)
        if elem is not None:  # a list class
            return 1 + _depth_of_desc(elem, busy)
        deepest = 0
        for f in cls.cara_schema.fields:
            if f.is_group:
                deepest = max(deepest, _depth_of_class(f.type.cls, busy) - 1)
            else:
                deepest = max(deepest, _depth_of_desc(f.type, busy))
        return 1 + deepest
    finally:
        busy.discard(id(cls))


def _depth_of_desc(desc: Any, busy: set[int]) -> int:
    if desc.kind in ("struct", "list"):
        return _depth_of_class(desc.cls, busy)
    return 0


#: How many times unknown binary data was read from msgpack (cara.codecs.capnp.kept counts):
#: a decode that read some walks its value whatever its type's static depth, since what is
#: kept nests below the struct holding it.
KEPT_READ = [0]
#: The key under which a struct holds unknown binary data (see cara.runtime.struct.KEPT_KEY).
KEPT_KEY = -1


def check_nesting(value: Any, limit: int = DEFAULT_NESTING_LIMIT, *, kept: bool = False,
                  fits: Any = None) -> None:
    """Raise ``DecodeError`` when ``value`` (a struct or typed list instance) nests deeper than
    ``limit`` structs and lists through its schema's fields (``kept``: and the unknown binary
    data its structs hold and the Cap'n Proto objects in its AnyPointer fields, as the binary
    form would nest them; ``fits(obj, levels)`` tells for such an object)."""
    if kept:
        too_deep = _kept_deeper(value, limit, fits)
    else:
        too_deep = static_depth(type(value)) > limit and _deeper(value, limit)
    if too_deep:
        raise DecodeError(f"message nests deeper than the nesting limit ({limit} levels)")


def _kept_deeper(value: Any, left: int, fits: Any) -> bool:
    """:func:`_deeper` through every struct and list, where a struct's kept data (its
    ``fits(levels)``) must fit in the levels the struct itself may use, and the Cap'n Proto
    object in an AnyPointer field in the levels below it."""
    if left <= 0:
        return True
    left -= 1
    cls = type(value)
    if getattr(cls, "_cara_elem_", None) is not None:
        return any(_kept_deeper(v, left, fits) for v in value if isinstance(v, (list, dict)))
    return _kept_struct_deeper(value, left, fits)


def _kept_struct_deeper(value: Any, left: int, fits: Any) -> bool:
    kept_fits = getattr(dict.get(value, KEPT_KEY), "fits", None)
    if kept_fits is not None and not kept_fits(left + 1):
        return True
    cls = type(value)
    if fits is not None:
        anys = cls.__dict__.get("_cara_any_fields_")
        if anys is None:
            anys = tuple(f.number for f in cls.cara_schema.fields
                         if f.type.kind == "anyPointer")
            type.__setattr__(cls, "_cara_any_fields_", anys)
        for num in anys:
            v = dict.get(value, num)
            if v is not None and hasattr(type(v), "to_flat") and not fits(v, left):
                return True
    plan = cls.__dict__.get("_cara_nesting_plan_") or _walk_plan(cls)
    for num, _depth, group in plan:
        v = dict.get(value, num)
        if v is None:
            continue
        if group:
            if _kept_struct_deeper(v, left, fits):
                return True
        elif _kept_deeper(v, left, fits):
            return True
    return False


def plain_depth_exceeds(value: Any, limit: int = DEFAULT_NESTING_LIMIT) -> bool:
    """Whether a plain value (a field unknown to the schema, kept as decoded) nests more than
    ``limit`` dicts and lists."""
    if not isinstance(value, (list, dict)):
        return False
    if limit <= 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(plain_depth_exceeds(v, limit - 1) for v in items
               if isinstance(v, (list, dict)))


def _deeper(value: Any, left: int) -> bool:
    """Whether struct or list ``value`` needs more than ``left`` levels."""
    if left <= 0:
        return True
    left -= 1
    cls = type(value)
    plan = cls.__dict__.get("_cara_nesting_plan_")
    if plan is None:
        plan = _walk_plan(cls)
    if plan is _LIST_PLAN:
        return any(_deeper(v, left) for v in value)
    return _struct_deeper(value, plan, left)


def _struct_deeper(value: Any, plan: tuple[tuple[int, int, bool], ...], left: int) -> bool:
    for num, depth, group in plan:
        if depth <= left:
            continue  # this field's type cannot nest deeper than what is left
        v = dict.get(value, num)
        if v is None:
            continue
        if group:
            sub = type(v).__dict__.get("_cara_nesting_plan_") or _walk_plan(type(v))
            if _struct_deeper(v, sub, left):
                return True
        elif _deeper(v, left):
            return True
    return False


#: The walk plan of a list class whose elements may nest (they are walked one by one).
_LIST_PLAN: tuple[tuple[int, int, bool], ...] = ((-1, -1, False),)


def _walk_plan(cls: Any) -> tuple[tuple[int, int, bool], ...]:
    """For a struct class: ``(field number, greatest depth of its value, is a group)`` of each
    struct, list or group field (cached on the class); for a list class :data:`_LIST_PLAN`
    if its elements are structs or lists, else an empty plan."""
    elem = getattr(cls, "_cara_elem_", None)
    if elem is not None:
        plan = _LIST_PLAN if elem.kind in ("struct", "list") else ()
    else:
        entries = []
        for f in cls.cara_schema.fields:
            if f.is_group:
                entries.append((f.number, static_depth(f.type.cls) - 1, True))
            elif f.type.kind in ("struct", "list"):
                entries.append((f.number, static_depth(f.type.cls), False))
        plan = tuple(entries)
    type.__setattr__(cls, "_cara_nesting_plan_", plan)
    return plan
