"""The optional C fast path of ``s.to_bytes()`` / ``S.from_bytes(b)`` (``_binary.c``).

For a runtime struct class whose instance decoder :mod:`.structs` could bind (see
``structs._direct_decoder``), :func:`make_plans` turns the instance codec's
:class:`~.plans.StructPlan` of the class, and of every struct and group it reaches, into C
``Plan`` objects: field offsets and kinds, XOR defaults, the bits no field uses (unknown data)
and the runtime classes, enum maps and list classes the decoder makes. ``encode(plan, value)``
then writes a message in one C call and ``decode(plan, data)`` reads one; either returns
``BAIL`` for anything but the plain case (an error, unknown data, far pointers, a value of
another type), and the caller runs the Python codec, the reference, on the same input.
Capability fields take part only where the RPC encoding (``cara.rpc.wire_capnp``) gives the
payload's cap table: the objects to read pointers as, or the function that describes what is
written; elsewhere a capability (not a null one) is BAIL too.

Not built (no C compiler at install time), or ``CARA_PURE_PYTHON=1``: :data:`binary` is None
and everything runs in Python.
"""

from __future__ import annotations

import os
from typing import Any

from cara.schema import model

from .plans import FieldPlan, PlanKey, StructPlan
from .unknown import SEEN, regions

__all__ = ["binary", "make_plans"]


def _load() -> Any:
    if os.environ.get("CARA_PURE_PYTHON"):
        return None
    try:
        from . import _binary  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - depends on the build
        return None
    _binary.set_seen(SEEN)
    return _binary


#: The C module, or None (pure Python).
binary: Any = _load()

# the kinds of _binary.c
_K = {"void": 0, "bool": 1, "float32": 3, "float64": 4, "enum": 5, "text": 6, "data": 7,
      "struct": 8, "list": 9, "group": 10, "interface": 11}
_K_INT = 2
_INTS = {"int8": (1, 1), "int16": (2, 1), "int32": (4, 1), "int64": (8, 1),
         "uint8": (1, 0), "uint16": (2, 0), "uint32": (4, 0), "uint64": (8, 0)}
_SIZES = {"float32": 4, "float64": 8, "enum": 2, "bool": 0, "void": 0}
#: runtime list element kinds whose typed list the C decoder fills itself (the others go
#: through the instance codec's maker: enum lists convert their elements)
_DIRECT_ELEMENTS = frozenset(_INTS) | {"void", "bool", "float32", "float64", "text", "data",
                                       "struct"}
#: scalar kinds the Python decoder reads together in one call (its key order comes first)
_COMBINED = frozenset(_INTS) | {"float32", "float64", "enum"}


class _Unsupported(Exception):
    """A field the C path does not handle (the class stays with the Python codec)."""


def make_plans(codec: Any, root: PlanKey) -> Any:
    """The C plan of ``root`` in ``codec`` (the index-keyed instance codec, its names bound
    for every plan ``root`` reaches), made with those of every plan it reaches and kept in
    ``codec``; None when C cannot take it (a field of a kind it does not handle)."""
    if binary is None:
        return None
    cache: dict[PlanKey, Any] = codec.__dict__.setdefault("_c_plans", {})
    if root in cache:
        return cache[root]
    new: dict[PlanKey, Any] = {}
    pending = [root]
    try:
        while pending:
            key = pending.pop()
            if key in cache and cache[key] is None:
                raise _Unsupported  # (found before: a plan C cannot take)
            if key in new or key in cache:
                continue
            plan = codec.plan(key)
            if plan.data_words > 0xFFFF or plan.pointer_count > 64:
                raise _Unsupported
            cls = codec.ns.get(f"C_{plan.tag}")
            if cls is None:
                raise _Unsupported
            new[key] = binary.Plan(cls, plan.data_words, plan.pointer_count,
                                   int(plan.is_group), plan.discriminant_offset)
            pending += [k for fp in plan.fields for k in _reached(codec, fp)]
        for key, cplan in new.items():
            _setup(codec, codec.plan(key), cplan, {**cache, **new})
    except _Unsupported:
        cache[root] = None
        return None
    cache.update(new)
    return cache[root]


def _reached(codec: Any, fp: FieldPlan) -> list[PlanKey]:
    if fp.kind == "group":
        return [fp.group_id]
    t = fp.type
    if t is not None and t.which == "list" and t.list is not None:
        t = t.list.elementType
    if t is not None and t.which == "struct":
        return [codec._key_of(t)]
    return []


def _words(bits: int, count: int) -> bytes:
    return bits.to_bytes(count * 8, "little")


def _setup(codec: Any, plan: StructPlan, cplan: Any, plans: dict[PlanKey, Any]) -> None:
    ns = codec.ns
    reg = regions(codec, plan)
    pad, pad_ptrs = (0, 0) if plan.is_group else reg.padding()
    specs = []
    for fp in plan.fields:
        specs.append(_field(codec, plan, fp, plans, ns, reg))
    plain = [i for i, fp in enumerate(plan.fields) if fp.discriminant == model.NO_DISCRIMINANT]
    members = tuple(i for i, fp in enumerate(plan.fields)
                    if fp.discriminant != model.NO_DISCRIMINANT)
    # the key order of the Python decoder (schema_codec._sparse_decoder_source): with full
    # sections, the scalars it reads together first (by offset), then the others
    combined = sorted((i for i in plain if _combined(plan.fields[i])),
                      key=lambda i: plan.fields[i].offset)
    full = tuple(combined) + tuple(i for i in plain if i not in combined)
    cplan.setup(_words(pad, plan.data_words), pad_ptrs, tuple(specs), full, tuple(plain),
                members)


def _combined(fp: FieldPlan) -> bool:
    return fp.kind in _COMBINED and not (fp.kind.startswith("float") and fp.default)


def _field(codec: Any, plan: StructPlan, fp: FieldPlan, plans: dict[PlanKey, Any],
           ns: dict[str, Any], reg: Any) -> tuple[Any, ...]:
    kind = fp.kind
    if not isinstance(fp.key, int):
        raise _Unsupported
    size, signed, code = 0, 0, _K.get(kind)
    if kind in _INTS:
        size, signed = _INTS[kind]
        code = _K_INT
    elif code is None:
        raise _Unsupported  # AnyPointer
    else:
        size = _SIZES.get(kind, 0)
    defbits = 0
    if kind in _INTS or kind == "enum":
        defbits = int(fp.default or 0) & ((1 << (8 * (size or 2))) - 1)
    elif kind in ("float32", "float64") and fp.default:
        from .schema_codec import _float_bits

        defbits = _float_bits(kind, fp.default)
    elif kind == "bool":
        defbits = int(bool(fp.default))
    elif kind in ("text", "data", "struct", "list") and fp.default is not None:
        raise _Unsupported  # (pointer defaults: not with the runtime's codec)
    sub: Any = None
    ev = ec = lcls = lmaker = None
    ekind = 0
    tag = plan.tag
    if kind == "group":
        sub = plans[fp.group_id]
    elif kind == "struct":
        sub = plans[_reached(codec, fp)[0]]
    elif kind == "enum":
        ev, ec = ns[f"EV_{tag}_{fp.key}"], ns[f"EC_{tag}_{fp.key}"]
    elif kind == "interface":
        # (what the trusted builder does with a capability: its field's converter; a
        # `Capability` field, AnyPointer to the runtime, stores it as it is)
        rt = ns[f"C_{tag}"].cara_schema.fields[fp.key].type
        if rt.kind == "interface":
            ec = rt.convert
        elif rt.kind != "anyPointer":
            raise _Unsupported
    elif kind == "list":
        assert fp.type is not None and fp.type.list is not None
        et = fp.type.list.elementType
        ew = et.which
        if ew in _INTS:
            ekind = _K_INT
            size, signed = _INTS[ew]
        elif ew in _K and ew not in ("list", "group", "interface"):
            ekind = _K[ew]
            size = _SIZES.get(ew, 0)
        else:
            raise _Unsupported  # lists of lists, of AnyPointer, of capabilities
        if ew == "struct":
            sub = plans[codec._key_of(et)]
        lcls = ns[f"C_{tag}"].cara_schema.fields[fp.key].type.cls
        if lcls._cara_elem_.kind not in _DIRECT_ELEMENTS:
            lcls, lmaker = None, ns[f"LM_{tag}_{fp.key}"]
    offset = fp.offset
    inactive: bytes | None = None
    inactive_ptrs = 0
    if fp.discriminant != model.NO_DISCRIMINANT:
        data, inactive_ptrs = reg.inactive(fp)
        inactive = _words(data, plan.data_words)
    disc = -1 if fp.discriminant == model.NO_DISCRIMINANT else fp.discriminant
    return (fp.key, code, size, signed, offset, fp.pointer, defbits, disc, sub, ev, ec, lcls,
            lmaker, ekind, inactive, inactive_ptrs)
