"""cara <-> pycapnp in both directions: bytes written by one are read by the other, and every
field compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.codecs.capnp_support import (
    assert_matches_pycapnp,
    corpus_codec,
    pycapnp_test_module,
    struct_id,
)

UNION_VALUES: list[dict[str, Any]] = [
    {"union0": {"u0f1s32": 1234567}, "union1": {"u1f0sp": "foo"},
     "union2": {"u2f0s1": True}, "union3": {"u3f0s64": -12345678901234}, "bit0": True,
     "bit2": True, "bit5": True, "byte0": 17},
    {"union0": {"u0f0sp": "bar"}, "union1": {"u1f1s8": -7}, "union2": {"u2f0s64": 99},
     "union3": {"u3f0s16": 300}},
]
GROUP_VALUES: list[dict[str, Any]] = [
    {"groups": {"foo": {"corge": 12, "grault": 123, "garply": "foobar"}}},
    {"groups": {"bar": {"corge": 23, "grault": "barbaz", "garply": 234}}},
    {"groups": {"baz": {"corge": 34, "grault": "bazqux", "garply": "quxquux"}}},
]


def _roundtrip_both_ways(root: Path, name: str, value: dict[str, Any]) -> None:
    codec = corpus_codec(root)
    sid = struct_id(root, name)
    cls = getattr(pycapnp_test_module(root), name)
    # pycapnp writes, cara reads
    theirs = cls.new_message(**value).to_bytes()
    with cls.from_bytes(theirs) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), codec.decode(sid, theirs), ref)
    # cara writes, pycapnp reads
    ours = codec.encode(sid, value)
    with cls.from_bytes(ours) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), codec.decode(sid, ours), ref)
        for key, sub in value.items():
            if isinstance(sub, dict):
                assert str(getattr(ref, key).which()) == next(iter(sub))


@pytest.mark.parametrize("value", UNION_VALUES)
def test_union(corpus_092: Path, value: dict[str, Any]) -> None:
    _roundtrip_both_ways(corpus_092, "TestUnion", value)


@pytest.mark.parametrize("value", GROUP_VALUES)
def test_groups(corpus_092: Path, value: dict[str, Any]) -> None:
    _roundtrip_both_ways(corpus_092, "TestGroups", value)


@pytest.mark.parametrize(("name", "data"), [("TestAllTypes", "binary"),
                                            ("TestLists", "lists.binary")])
def test_cara_encoding_read_by_pycapnp(corpus_092: Path, name: str, data: str) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, name)
    value = codec.decode(sid, (corpus_092 / "c++/src/capnp/testdata" / data).read_bytes())
    ours = codec.encode(sid, value)
    cls = getattr(pycapnp_test_module(corpus_092), name)
    with cls.from_bytes(ours) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), value, ref)
    packed = codec.encode(sid, value, packed=True)
    ref = cls.from_bytes_packed(packed)  # not a context manager in pycapnp 2.2
    assert_matches_pycapnp(codec, codec.plan(sid), value, ref)


def test_defaults_both_ways(corpus_092: Path) -> None:
    """An empty TestDefaults reads as the schema's defaults, pointer defaults included (these
    come from cara's own decoding of the request's default values)."""
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestDefaults")
    cls = pycapnp_test_module(corpus_092).TestDefaults
    ours = codec.encode(sid, {})
    mine = codec.decode(sid, ours)
    assert mine["textField"] == "foo" and mine["int32List"]  # defaults really applied
    assert mine["structField"]["textField"] == "baz"
    with cls.from_bytes(ours) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), mine, ref)
    theirs = cls.new_message().to_bytes()
    with cls.from_bytes(theirs) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), codec.decode(sid, theirs), ref)
    # non-default values XOR'd against the defaults survive both ways
    value = {"int32Field": 0, "boolField": False, "float32Field": 0.0, "uInt64Field": 7,
             "enumField": 0, "textField": "changed"}
    ours = codec.encode(sid, value)
    with cls.from_bytes(ours) as ref:
        assert ref.int32Field == 0 and ref.boolField is False and ref.float32Field == 0.0
        assert ref.uInt64Field == 7 and ref.textField == "changed"
        assert_matches_pycapnp(codec, codec.plan(sid), codec.decode(sid, ours), ref)
    theirs = cls.new_message(**value).to_bytes()
    back = codec.decode(sid, theirs)
    assert {k: back[k] for k in value} == value


def test_ordinal_keys(corpus_092: Path) -> None:
    """keys="ordinal": plain values keyed by @N (the runtime's form), same bytes as libcapnp."""
    from cara.codecs.capnp import SchemaCodec
    from tests.codecs.capnp_support import corpus_request

    codec = SchemaCodec(corpus_request(corpus_092), keys="ordinal")
    sid = struct_id(corpus_092, "TestAllTypes")
    data = (corpus_092 / "c++/src/capnp/testdata/binary").read_bytes()
    value = codec.decode(sid, data)
    assert value[12] == "foo" and value[13] == b"bar"  # textField @12, dataField @13
    assert value[14][12] == "baz"  # structField.textField
    assert codec.encode(sid, value) == data
    union = struct_id(corpus_092, "TestUnion")
    by_name = corpus_codec(corpus_092)
    encoded = by_name.encode(union, {"union0": {"u0f0s32": 1234567}, "bit2": True})
    value = codec.decode(union, encoded)
    assert value[0] == {8: 1234567}  # union0 @0! holds u0f0s32 @8
    assert codec.encode(union, value) == encoded


def test_union_member_chosen_with_a_null_pointer_keeps_which(tmp_path: Path) -> None:
    """libcapnp may choose a pointer member of a union without writing it (a null pointer with
    a non-zero discriminant): the member is still the one set, read as its empty value."""
    import cara

    schema = tmp_path / "u.capnp"
    schema.write_text("@0xd3a8a8f4c2b1e0a1;\nstruct Inner { x @0 :Int32; }\n"
                      "struct U { union { a @0 :Int32; t @1 :Text; f @2 :Inner;"
                      " l @3 :List(Int32); d @4 :Data; } }\n")
    capnp = pytest.importorskip("capnp")
    parser = capnp.SchemaParser()
    ref = parser.load(str(schema))
    U = cara.load(str(schema)).U
    for member, empty in (("t", ""), ("f", {}), ("l", []), ("d", b"")):
        msg = ref.U.new_message()
        if member == "f":
            msg.init("f")
        else:
            setattr(msg, member, empty)
        raw = bytearray(msg.to_bytes())
        # One segment: its table (8 bytes), the root pointer, U's data word, then U's only
        # pointer, which we null: the member stays chosen by the discriminant alone.
        assert raw[:4] == bytes(4)
        raw[24:32] = bytes(8)
        u = U.from_bytes(bytes(raw))
        assert u.which() == member
        assert u == U(**{member: empty})
