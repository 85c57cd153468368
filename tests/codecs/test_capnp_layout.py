"""Low-level layout cases that the reference messages do not contain, checked against pycapnp
reading the same hand-built bytes: struct lists stored with non-composite element sizes, far and
double-far pointers, zero-size structs, capability pointers."""

from __future__ import annotations

import struct
from pathlib import Path

from cara.codecs.capnp import MessageBuilder, frame_segments, read_message
from cara.schema import model
from tests.codecs.capnp_support import corpus_codec, pycapnp_test_module, struct_id


def _ptr(lo: int, hi: int) -> bytes:
    return struct.pack("<iI", lo, hi)


def _root_with_list(root: Path, size_code: int, count: int, payload: bytes) -> bytes:
    """A TestAllTypes whose structList is stored with element size ``size_code``."""
    codec = corpus_codec(root)
    plan = codec.plan(struct_id(root, "TestAllTypes"))
    index = next(f.pointer for f in plan.fields if f.name == "structList")
    b = MessageBuilder()
    dpos = b.init_struct(0, plan.data_words, plan.pointer_count)
    ptr_pos = dpos + plan.data_words * 8 + 8 * index
    target = b.alloc((len(payload) + 7) & ~7)
    b.buf[target:target + len(payload)] = payload
    b.buf[ptr_pos:ptr_pos + 8] = _ptr((target - ptr_pos - 8) >> 1 | 1, count << 3 | size_code)
    return b.to_bytes()


def test_struct_list_from_byte_list(corpus_092: Path) -> None:
    data = _root_with_list(corpus_092, 2, 3, bytes([1, 0x7B << 1 & 0xFF, 1]))
    codec = corpus_codec(corpus_092)
    mine = codec.decode(struct_id(corpus_092, "TestAllTypes"), data)
    with pycapnp_test_module(corpus_092).TestAllTypes.from_bytes(data) as ref:
        assert [s["boolField"] for s in mine["structList"]] == \
            [s.boolField for s in ref.structList]
        assert [s["int8Field"] for s in mine["structList"]] == [0, 0, 0]  # beyond 1 byte


def test_struct_list_from_eight_byte_list(corpus_092: Path) -> None:
    words = struct.pack("<QQ", 0x0000_0000_7B00 | 1, 0x0000_0000_0500)
    data = _root_with_list(corpus_092, 5, 2, words)
    codec = corpus_codec(corpus_092)
    mine = codec.decode(struct_id(corpus_092, "TestAllTypes"), data)
    with pycapnp_test_module(corpus_092).TestAllTypes.from_bytes(data) as ref:
        got = [(s["boolField"], s["int8Field"], s["int16Field"]) for s in mine["structList"]]
        assert got == [(s.boolField, s.int8Field, s.int16Field) for s in ref.structList]
        assert got[0][1] == 123


def test_far_and_double_far_pointers() -> None:
    """A root struct reached through a far pointer, and one through a double-far pointer."""
    content = struct.pack("<q", 42)
    # single far: seg0 = far ptr to seg1 word 0 (landing pad), seg1 = pad + struct
    seg0 = _ptr(2 | 0 << 3, 1)
    seg1 = _ptr(0, 1) + content
    msg = read_message(frame_segments([seg0, seg1]))
    assert msg.root().get("int64", 0) == 42
    # double far: seg0 -> seg1 pad (far to seg2 word 0, then tag), content in seg2
    seg0 = _ptr(2 | 4 | 0 << 3, 1)
    seg1 = _ptr(2 | 0 << 3, 2) + _ptr(0, 1)
    seg2 = content
    msg = read_message(frame_segments([seg0, seg1, seg2]))
    assert msg.root().get("int64", 0) == 42


def test_capabilities_and_any_pointer(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestTransferCap")
    value = {"list": [{"text": "a", "cap": 2}, {"text": "b", "cap": None}]}
    assert codec.decode(sid, codec.encode(sid, value)) == value
    sid = struct_id(corpus_092, "TestAnyPointer")
    value_any = {"anyPointerField": model.PointerValue(model.Type(which="text"), "hello")}
    data = codec.encode(sid, value_any)
    mine = codec.decode(sid, data)
    assert mine["anyPointerField"].as_text() == "hello"
    with pycapnp_test_module(corpus_092).TestAnyPointer.from_bytes(data) as ref:
        assert ref.anyPointerField.as_text() == "hello"
    # an AnyPointer read from one message is copied verbatim into another
    again = codec.decode(sid, codec.encode(sid, {"anyPointerField": mine["anyPointerField"]}))
    assert again["anyPointerField"].as_text() == "hello"
    # `Capability` fields hold a cap-table index, like interface fields
    others = struct_id(corpus_092, "TestAnyOthers")
    assert codec.decode(others, codec.encode(others, {"capabilityField": 5}))[
        "capabilityField"] == 5


def test_zero_size_struct(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    empty_id = struct_id(corpus_092, "TestEmptyStruct")
    out = codec.encode(empty_id, {})
    assert out[8:16] == _ptr(-4, 0)  # offset -1, as libcapnp writes it
    with pycapnp_test_module(corpus_092).TestEmptyStruct.from_bytes(out) as ref:
        assert ref.to_dict() == {}
