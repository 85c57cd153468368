"""The codec's compiled form of a schema struct: :class:`StructPlan` and :class:`FieldPlan`.

Plain data, shared by the code generator (:mod:`.schema_codec`), the lazy views
(:mod:`.views`) and the request codec, so that none of them imports another for these types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cara.schema import model

__all__ = ["FieldPlan", "PlanKey", "StructPlan"]

#: A plan is per struct node, and per brand for generic structs: ``node_id`` for an unbranded
#: struct, ``(node_id, brand)`` (the brand's repr) for a generic one with bound parameters.
PlanKey = int | tuple[int, str]


@dataclass
class FieldPlan:
    """One field as the codec sees it: where it lives and how it is encoded.

    ``offset`` is a byte offset in the data section (a bit offset for Bool), ``pointer`` the
    index in the pointer section; ``default`` is the Python default value (the XOR mask for
    scalars); ``discriminant`` is 0xffff for a field outside any union.
    """

    name: str
    kind: str  # a Type.which, or "group"
    offset: int = 0
    pointer: int = 0
    default: Any = None
    discriminant: int = model.NO_DISCRIMINANT
    type: model.Type | None = None
    group_id: PlanKey = 0
    explicit_default: bool = False
    #: the field's ``@N`` (None for groups and named unions, which have none)
    ordinal: int | None = None
    #: the key of this field in plain values: its name, or its ordinal (see SchemaCodec)
    key: str | int = ""


@dataclass
class StructPlan:
    """A struct (or group) node compiled for the codec."""

    node_id: int
    name: str
    data_words: int
    pointer_count: int
    fields: list[FieldPlan] = field(default_factory=list)
    #: byte offset of the union discriminant, or -1 when the node has no unnamed union
    discriminant_offset: int = -1
    #: a group shares its parent's sections (its code must not write outside its fields)
    is_group: bool = False
    encode: Callable[[bytearray, int, int, Mapping[str, Any]], None] | None = None
    decode: Callable[..., dict[str, Any]] | None = None
    #: the plan's key in SchemaCodec.plans, and the suffix of its generated functions' names
    key: PlanKey = 0
    tag: str = ""
    #: the fields' layout as :mod:`.unknown` analyses it (made on first use)
    regions: Any = None
    #: the fields by key (``cara convert``'s msgpack form looks them up; made on first use)
    by_key: dict[Any, FieldPlan] | None = None
