"""Unknown data (see :mod:`.unknown`) as a field of the struct, so that msgpack carries it.

A struct decoded from a newer schema's binary message keeps what its schema does not know as
an :class:`~.unknown.Unknown` record. So that ``msgpack.packb(s)`` (and ``s.to_msgpack()``,
pickle, ``to_dict()``, an RPC payload) carries it without a codec in between, the struct also
holds it under the reserved key :data:`~cara.runtime.struct.KEPT_KEY` (-1: no field number
is negative), as a value msgpack writes by itself:

* a struct's record: a msgpack ext value of code 0x43 (:data:`~.reader.EXT_CAPNP_MESSAGE`,
  an ``AnyPointer`` value's form), whose data is a flat message whose root is the original
  struct: its whole data section (an unknown union member's discriminant is in it) and the
  pointers the decoded fields did not own (those the fields own travel as the fields);
* a group's record (an unknown member of a named union: its parent's record holds the bits):
  the discriminant, an integer.

The ext value is a :class:`KeptData`, a ``msgpack.ExtType`` whose data is worked out when
msgpack first asks for it, so decoding binary costs nothing more. Reading it back (a struct
built from a mapping holding the key, as ``S(msgpack.unpackb(b, strict_map_key=False))``
does) checks it whole now (a flat message, one struct, every pointer inside bounded by the
message's own size and the nesting limit) and gives the struct its record again: encoding it
as binary writes the unknown data back, as if it had never left the binary form.
"""

from __future__ import annotations

from typing import Any

import msgpack

from cara.errors import CaraError
from cara.runtime import hooks, nesting
from cara.runtime.types import Invalid

from .framing import read_flat
from .reader import EXT_CAPNP_MESSAGE, AnyPointerReader, Message, pointer_from_ext, struct_at
from .unknown import Unknown, regions

__all__ = ["KeptData", "flat_of_record", "kept_value", "record_from_kept", "record_of_flat"]


class KeptData(msgpack.ExtType):
    """The ext value of a struct's unknown data: code 0x43, ``data`` (a flat message) made on
    first use from the record (a view into the received message)."""

    record: Unknown
    _owner: Any
    _flat: bytes | None

    def __new__(cls, owner: Any, record: Unknown, flat: bytes | None = None) -> KeptData:
        self = super().__new__(cls, EXT_CAPNP_MESSAGE, b"")
        self.record = record
        self._owner = owner
        self._flat = flat
        return self

    @property
    def data(self) -> bytes:
        flat = self._flat
        if flat is None:
            flat = self._flat = _flat_of(self._owner, self.record)
        return flat

    def __eq__(self, other: object) -> bool:
        if isinstance(other, msgpack.ExtType):
            return other.code == EXT_CAPNP_MESSAGE and other.data == self.data
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    def __hash__(self) -> int:
        return hash((EXT_CAPNP_MESSAGE, self.data))

    def fits(self, levels: int) -> bool:
        """Whether the kept struct and what its pointers reach nest at most ``levels`` structs
        and lists deep (the struct itself is one): what the binary form would then hold at
        the place of the struct that keeps it."""
        try:
            msg = Message(read_flat(self.data), nesting_limit=levels)
            Unknown(None, _root_struct(msg)).to_flat()
        except CaraError:
            return False
        return True

    def __repr__(self) -> str:
        return repr(self.record)

    def __copy__(self) -> KeptData:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> KeptData:
        return self

    def __reduce__(self) -> Any:
        return (msgpack.ExtType, (EXT_CAPNP_MESSAGE, self.data))


def _flat_of(owner: Any, record: Unknown) -> bytes:
    """The original struct as a flat message, without the pointers its decoded fields owned
    (they travel as those fields): owned by the fields of ``owner``'s plan when that is known
    (a runtime struct class), else everything is kept."""
    plan = _plan_of(owner) if owner is not None else None
    if plan is None:
        flat = record.to_flat()
        assert flat is not None
        return flat
    return flat_of_record(*plan, record)


def flat_of_record(codec: Any, plan: Any, record: Unknown) -> bytes:
    """What a struct of ``plan`` (in ``codec``) that carries ``record`` keeps as unknown data:
    its original sections as a flat message, without the pointers its decoded fields owned."""
    assert record.loc is not None
    msg, _seg, dpos, dbytes, _ppos, _nptrs, _nest = record.loc
    original = int.from_bytes(msg.buf[dpos:dpos + dbytes], "little")
    flat = record.to_flat(regions(codec, plan).owned_in(original)[1])
    assert flat is not None
    return flat


def record_of_flat(flat: bytes, union: tuple[int, frozenset[int]] | None = None,
                   levels: int | None = None) -> tuple[Unknown, bytes]:
    """The record of a struct's unknown data given as a flat message (ext 0x43's data),
    checked whole now: one struct, every pointer in it copied once into a message of its own
    (bounded by the input's size and by ``levels`` of nesting, the struct itself one).
    ``union``: the byte offset of the struct's discriminant and the discriminants its schema
    knows, to find an unknown member's. Returns the record and the copied message; raises
    :class:`~cara.errors.CaraError`."""
    source = Message(read_flat(flat)) if levels is None else \
        Message(read_flat(flat), nesting_limit=max(levels, 0))
    copied = Unknown(None, _root_struct(source)).to_flat()
    assert copied is not None
    record = Unknown(None, _root_struct(copied))
    if union is not None:
        assert record.loc is not None
        msg, _seg, dpos, dbytes, _ppos, _nptrs, _nest = record.loc
        off, members = union
        disc = int.from_bytes(msg.buf[dpos + off:dpos + off + 2], "little") \
            if off + 2 <= dbytes else 0
        if disc not in members:
            record.disc = disc
    return record, copied


def _plan_of(cls: Any) -> tuple[Any, Any] | None:
    """The decoding codec and the plan of runtime struct class ``cls`` (None for a class not
    built from schema nodes)."""
    from .structs import _schema_codec

    try:
        codec, key = _schema_codec(cls, decoding=True)
        return codec, codec.plan(key)
    except (NotImplementedError, KeyError):
        return None


def kept_value(owner: Any, record: Unknown) -> Any:
    """What a struct (of class ``owner``) holding ``record`` keeps under the reserved key, or
    None when the record holds nothing to keep (a group's mark for its parent)."""
    if record.loc is not None:
        return KeptData(owner, record)
    return record.disc


def record_from_kept(cls: Any, value: Any) -> tuple[Any, Unknown]:
    """The value to store under the reserved key of struct class ``cls`` and its record, from
    what a mapping gave for that key (raises :class:`Invalid`)."""
    if isinstance(value, KeptData):
        return value, value.record
    schema = cls.cara_schema
    if type(value) is int:  # a group's unknown union member
        if not schema.is_group:
            raise Invalid("unknown data (key -1) of a struct must be a Cap'n Proto message "
                          "(msgpack ext type 0x43), not an integer")
        _check_member(schema, value)
        return value, Unknown(value, None)
    if isinstance(value, msgpack.ExtType) and value.code == EXT_CAPNP_MESSAGE:
        flat = value.data
    elif isinstance(value, AnyPointerReader):  # ext 0x43 as the codecs' ext hooks read it
        try:
            flat = value.to_flat()
        except CaraError as e:
            raise Invalid(f"unknown data (key -1): {e}") from None
    else:
        raise Invalid("unknown data (key -1) must be a Cap'n Proto message (msgpack ext type "
                      f"0x43) or, for a group, a discriminant, not {type(value).__name__}")
    if schema.is_group:
        raise Invalid("unknown data (key -1) of a group is its union's discriminant, an integer")
    nesting.KEPT_READ[0] += 1  # (the decode checks the nesting limit through it)
    union = None
    plan = _plan_of(cls)
    if plan is not None:
        codec, struct_plan = plan
        if struct_plan.discriminant_offset >= 0:
            union = (struct_plan.discriminant_offset,  # (in bytes)
                     frozenset(f.discriminant for f in regions(codec, struct_plan).members))
    try:
        record, copied = record_of_flat(flat, union)
    except CaraError as e:
        raise Invalid(f"unknown data (key -1): {e}") from None
    return KeptData(cls, record, copied), record


def _root_struct(flat: bytes | Message) -> tuple[Message, int, int, int, int, int, int]:
    msg = flat if isinstance(flat, Message) else Message(read_flat(flat))
    loc = struct_at(msg, 0, msg.bounds[0][0], msg.nesting_limit)
    if loc is None:
        return msg, 0, 0, 0, 0, 0, msg.nesting_limit
    seg, dpos, dbytes, ppos, nptrs, nest = loc
    return msg, seg, dpos, dbytes, ppos, nptrs, nest


def checked_pointer(flat: bytes) -> AnyPointerReader:
    """The object msgpack's ext value 0x43 holds, checked whole now (copied once, bounded by
    its own size and the nesting limit): a broken one is a ``DecodeError`` while decoding."""
    copied = pointer_from_ext(flat).to_flat()
    return pointer_from_ext(copied)


def pointer_fits(reader: AnyPointerReader, levels: int) -> bool:
    """Whether the object ``reader`` points to nests at most ``levels`` structs and lists."""
    if levels <= 0:
        return reader.is_null()
    try:
        msg = Message(read_flat(reader.to_flat()), nesting_limit=levels)
        AnyPointerReader(msg, 0, 0, levels).to_flat()
    except CaraError:
        return False
    return True


def _check_member(schema: Any, disc: int) -> None:
    if not schema.union:
        raise Invalid("unknown data (key -1): a discriminant, but this group has no union")
    if not 0 <= disc <= 0xFFFF:
        raise Invalid(f"unknown data (key -1): discriminant {disc} out of range")
    for f in schema.union:
        if f.discriminant == disc:
            raise Invalid(f"unknown data (key -1): discriminant {disc} is member {f.name!r}, "
                          "which this schema has")

hooks.register("kept_data", record_from_kept)
hooks.register("checked_pointer", checked_pointer)
hooks.register("pointer_fits", pointer_fits)
