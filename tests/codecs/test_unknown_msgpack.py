"""Unknown binary data through msgpack (issue 16): a binary message from a newer schema, decoded
by an older one, written as msgpack (``msgpack.packb(s)``, ``s.to_msgpack()``), read back
(``S(msgpack.unpackb(b, strict_map_key=False))``, ``S.from_msgpack(b)``), changed and written
as binary again keeps everything the older schema does not know, as libcapnp's own copy does.

The reference is the one ``tests/codecs/test_unknown_data.py`` uses: pycapnp reads the newer
schema's bytes with the old schema, copies them into a builder, makes the same change and
writes them; both results are read with the *new* schema and must agree field for field.
The pure-Python build runs this file too (``tests/runtime/test_speedups.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.errors import DecodeError, EncodeError, ValueTypeError
from tests.codecs.test_unknown_data import _CHANGES, NEWER, SUB, Schemas, _items, _set_id
from tests.conftest import LONG


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Schemas:
    return Schemas(tmp_path_factory.mktemp("unknown_msgpack"))


#: The ways a struct goes to msgpack and back.
TRIPS: dict[str, Callable[[Any, Any], Any]] = {
    "msgpack.packb/S(unpackb)": lambda cls, v: cls(msgpack.unpackb(msgpack.packb(v),
                                                                   strict_map_key=False)),
    "to_msgpack/from_msgpack": lambda cls, v: cls.from_msgpack(v.to_msgpack()),
    "to_dict/S(d)": lambda cls, v: cls(v.to_dict()),
    "deepcopy": lambda cls, v: copy.deepcopy(v),
}


def _via_msgpack(schemas: Schemas, data: bytes, change: Callable[[Any], None],
                 trip: Callable[[Any, Any], Any], name: str = "Item") -> bytes:
    """cara: binary (newer) -> old schema -> msgpack -> old schema, changed -> binary."""
    cls = getattr(schemas.old, name)
    value = trip(cls, cls.from_bytes(data))
    change(value)
    return value.to_bytes()  # type: ignore[no-any-return]


@pytest.mark.parametrize("trip", ["msgpack.packb/S(unpackb)", "to_msgpack/from_msgpack"])
def test_everything_survives_msgpack(schemas: Schemas, trip: str) -> None:
    data = schemas.newer(NEWER)
    ours = schemas.read_new(_via_msgpack(schemas, data, _set_id, TRIPS[trip]))
    assert ours == schemas.read_new(schemas.libcapnp_copy(data, _set_id))
    assert ours["more"][0]["subs"][1]["subs"][0]["t"] == "b"
    assert ours["kind"]["sized"]["height"] == 4
    # unchanged, the bytes are the ones a binary round trip writes
    old = schemas.old.Item
    assert TRIPS[trip](old, old.from_bytes(data)).to_bytes() == old.from_bytes(data).to_bytes()


@pytest.mark.parametrize("trip", list(TRIPS))
def test_unknown_union_members_survive(schemas: Schemas, trip: str) -> None:
    """A discriminant the old schema does not have (unnamed union: in the struct's data; a
    named union's, a group's: its own integer) stays unknown, ``which()`` None, until set."""
    value = {"id": 1, "sub": SUB, "kind": {"other": "o"}}
    data = schemas.newer(value)
    back = TRIPS[trip](schemas.old.Item, schemas.old.Item.from_bytes(data))
    assert back.which() is None and back.kind.which() is None
    assert schemas.read_new(back.to_bytes()) == schemas.read_new(data)
    back.count = 3
    back.kind.big = 5
    seen = schemas.read_new(back.to_bytes())
    assert (seen["count"], seen["kind"]) == (3, {"big": 5}) and "sub" not in seen


def test_lists_and_nested_structs(schemas: Schemas) -> None:
    value = {"item": NEWER, "items": [NEWER, {"id": 2, "note": "second"}, {"id": 3}]}
    data = schemas.newer(value, "Holder")

    def change(v: Any) -> None:
        v.item.id = 1
        (v.items_ if hasattr(v, "items_") else v.items)[1].name = "b"

    ours = _via_msgpack(schemas, data, change, TRIPS["to_msgpack/from_msgpack"], "Holder")
    assert schemas.read_new(ours, "Holder") == \
        schemas.read_new(schemas.libcapnp_copy(data, change, "Holder"), "Holder")


def test_what_msgpack_carries(schemas: Schemas) -> None:
    """Nothing for a struct without unknown data (the bytes are as before); for one with, key
    -1: ext 0x43 holding the struct without the pointers its known fields own (those travel
    as fields), or a group's discriminant."""
    Item = schemas.old.Item
    plain = Item.from_bytes(schemas.pyc_old.Item.new_message(id=3, name="n").to_bytes())
    assert msgpack.packb(plain) == msgpack.packb({0: 3, 2: "n"})
    big_name = "n" * 1000
    data = schemas.newer({"name": big_name, "note": "kept", "kind": {"other": "o"}})
    raw = msgpack.unpackb(msgpack.packb(Item.from_bytes(data)), strict_map_key=False)
    kept = raw[-1]
    assert kept.code == 0x43 and big_name.encode() not in kept.data and b"kept" in kept.data
    assert raw[2] == big_name and raw[6] == {-1: 3}  # (kind: the group, member number 3)
    assert len(msgpack.packb(raw)) < len(data) + 64


def test_equality_copies_and_deletion(schemas: Schemas) -> None:
    """Unknown data is part of the value: equal after a msgpack round trip, unequal to the
    same known fields without it; deleting key -1 (or ``clear()``) drops it."""
    Item = schemas.old.Item
    data = schemas.newer({"id": 4, "note": "kept", "ratio": 1.5})
    value = Item.from_bytes(data)
    assert Item.from_msgpack(value.to_msgpack()) == value
    assert value != Item(id=4) and value.which() is None
    known = schemas.read_new(schemas.pyc_old.Item.new_message(id=4).to_bytes())
    del value[-1]
    assert value.which() == "none" and schemas.read_new(value.to_bytes()) == known
    again = Item.from_msgpack(Item.from_bytes(data).to_msgpack())
    again.clear()
    assert again._cara_unknown_ is None and again.to_bytes() == Item().to_bytes()


def test_json_still_writes_only_fields(schemas: Schemas) -> None:
    Item = schemas.old.Item
    value = Item.from_msgpack(Item.from_bytes(schemas.newer({"id": 1, "note": "x"})).to_msgpack())
    known = Item.from_bytes(schemas.pyc_old.Item.new_message(id=1).to_bytes())
    assert value.to_json() == known.to_json() and "note" not in value.to_json()
    unknown = Item.from_msgpack(Item.from_bytes(schemas.newer({"sub": SUB})).to_msgpack())
    with pytest.raises(EncodeError, match="member number 4"):
        unknown.to_json()


BAD: list[tuple[Any, str]] = [
    (5, "must be a Cap'n Proto message .* not an integer"),
    ("x", "not str"),
    (msgpack.ExtType(0x43, b"\0" * 7), "not a multiple of 8"),
    (msgpack.ExtType(0x43, b""), "empty"),
    (msgpack.ExtType(0x42, bytes(8)), "not ExtType"),
    # a root pointer to a list, not a struct
    (msgpack.ExtType(0x43, bytes.fromhex("0100000001000000") + bytes(8)), "expected a struct"),
    # a struct whose pointer points outside the message
    (msgpack.ExtType(0x43, bytes.fromhex("0000000000000100") + bytes.fromhex("fc0000000100ff00")),
     "outside"),
    # a struct whose pointer points back at the struct itself, forever
    (msgpack.ExtType(0x43, bytes.fromhex("0000000000000100") + bytes.fromhex("fcffffff00000100")),
     "nest|traversal"),
]


@pytest.mark.parametrize(("kept", "error"), BAD)
def test_bad_unknown_data_is_refused_when_read(schemas: Schemas, kept: Any, error: str) -> None:
    """Unknown data from msgpack is checked whole when the struct is built, with the path."""
    Item = schemas.old.Item
    raw = {0: 1, 7: {0: 2, -1: kept}}  # (7: child)
    with pytest.raises(ValueTypeError, match=r"^Item\.child: unknown data \(key -1\)"
                                             rf".*({error})"):
        Item(raw)
    # (from_msgpack reads ext 0x43 while decoding msgpack: a broken frame is a DecodeError)
    with pytest.raises((ValueTypeError, DecodeError), match=r"^Item\.child: unknown data|msgpack"):
        Item.from_msgpack(msgpack.packb(raw))
    item = Item()
    with pytest.raises(ValueTypeError, match=r"^Item: unknown data"):
        item[-1] = kept
    assert -1 not in dict.keys(item) and item._cara_unknown_ is None


def test_bad_group_discriminants(schemas: Schemas) -> None:
    Item = schemas.old.Item
    with pytest.raises(ValueTypeError, match=r"Item\.kind: .*discriminant 1 is member 'big'"):
        Item({6: {-1: 1}})
    with pytest.raises(ValueTypeError, match=r"Item\.kind: .*out of range"):
        Item({6: {-1: 1 << 16}})
    with pytest.raises(ValueTypeError, match=r"Item\.kind: .*of a group is its union's"):
        Item({6: {-1: msgpack.ExtType(0x43, bytes(8))}})
    assert Item({6: {-1: 7}}).kind.which() is None


@settings(max_examples=300 if LONG else 40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=_items(), change=st.sampled_from(_CHANGES),
       trip=st.sampled_from(["msgpack.packb/S(unpackb)", "to_msgpack/from_msgpack"]))
def test_any_newer_value_through_msgpack(schemas: Schemas, value: dict[str, Any],
                                         change: Callable[[Any], None], trip: str) -> None:
    """Whatever the newer schema wrote and whichever known field changes after the trip
    through msgpack, cara's binary reads as libcapnp's copy."""
    data = schemas.newer(value)
    ours = schemas.read_new(_via_msgpack(schemas, data, change, TRIPS[trip]))
    assert ours == schemas.read_new(schemas.libcapnp_copy(data, change))


def test_capnp_convert_reads_what_msgpack_kept(schemas: Schemas) -> None:
    """``capnp convert`` (libcapnp's own reader, with the newer schema) reads the message cara
    writes after the msgpack trip as the original."""
    import shutil
    import subprocess

    if shutil.which("capnp") is None:
        pytest.skip("the capnp tool is not installed (apt-get install capnproto)")
    data = schemas.newer(NEWER)
    ours = _via_msgpack(schemas, data, lambda v: None, TRIPS["msgpack.packb/S(unpackb)"])

    def text(message: bytes) -> bytes:
        return subprocess.run(["capnp", "convert", "binary:text", "new_items.capnp", "Item"],
                              input=message, capture_output=True, cwd=schemas.dir,
                              check=True).stdout
    assert text(ours) == text(data)



def test_kept_data_counts_in_the_nesting_limit(schemas: Schemas) -> None:
    """Unknown data nests below the struct that keeps it: a msgpack message that puts a deep
    one deep down is refused by ``from_msgpack`` (the limit of every codec), rather than
    accepted and then written as a binary message that ``from_bytes`` refuses."""
    sub: dict[str, Any] = {"t": "leaf"}
    for _ in range(20):
        sub = {"subs": [sub]}  # 21 levels (a struct list and its elements are one level)
    data = schemas.newer({"id": 1, "more": [sub]})
    raw = msgpack.unpackb(schemas.old.Item.from_bytes(data).to_msgpack(), strict_map_key=False)
    shallow = schemas.old.Item.from_msgpack(msgpack.packb({7: raw}))
    assert schemas.old.Item.from_bytes(shallow.to_bytes()).child.id == 1
    deep = raw
    for _ in range(43):  # over 64 levels as binary (the newer schema's reader refuses it below)
        deep = {7: deep}
    packed = msgpack.packb(deep)
    with pytest.raises(DecodeError, match="nests deeper than the nesting limit"):
        schemas.old.Item.from_msgpack(packed)
    # (what was refused: a binary message the newer schema's reader refuses, as libcapnp's)
    written = schemas.old.Item(msgpack.unpackb(packed, strict_map_key=False)).to_bytes()
    with pytest.raises(DecodeError, match="nest"):
        schemas.new.Item.from_bytes(written)
    capnp_reader = schemas.pyc_new.Item.from_bytes(written)
    with pytest.raises(Exception, match=r"(?i)nest"):
        with capnp_reader as r:
            r.to_dict()
    assert schemas.old.Item.from_msgpack(msgpack.packb(deep[7][7][7]))  # 3 levels less: fine
