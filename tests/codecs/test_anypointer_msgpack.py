"""An ``AnyPointer`` value read from a binary message travels through msgpack (issue 16: it was a
plain TypeError) as an ext value holding the object as a flat message, and back into binary
unchanged; pickle and deepcopy keep it too."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import msgpack
import pytest

import cara
from cara.codecs import msgpack_codec
from cara.codecs.capnp.reader import EXT_CAPNP_MESSAGE, AnyPointerReader
from cara.errors import DecodeError, ValueTypeError
from tests.support.reference import require_pycapnp

SCHEMA = """@0xd3a8a8f4c2b1e0c1;
struct Inner { a @0 :UInt32; t @1 :Text; l @2 :List(Inner); }
struct Holder { any @0 :AnyPointer; n @1 :UInt32; }
"""


@pytest.fixture(scope="module")
def schema_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("anyp") / "anyp.capnp"
    path.write_text(SCHEMA)
    return path


@pytest.fixture(scope="module")
def m(schema_path: Path) -> Any:
    return cara.load(schema_path)


@pytest.fixture(scope="module")
def written(schema_path: Path) -> bytes:
    """A Holder whose AnyPointer is an Inner with a list, written by pycapnp."""
    capnp = require_pycapnp()
    ref = capnp.load(str(schema_path))
    inner = ref.Inner.new_message(a=7, t="hi")
    items = inner.init("l", 2)
    items[1].t = "deep"
    h = ref.Holder.new_message(n=5)
    h.any = inner
    data: bytes = h.to_bytes()
    return data


def test_binary_anypointer_goes_through_msgpack(m: Any, written: bytes,
                                                schema_path: Path) -> None:
    v = m.Holder.from_bytes(written)
    assert isinstance(v["any"], AnyPointerReader)
    for packed in (v.to_msgpack(), msgpack_codec.packb(v)):
        raw = msgpack.unpackb(packed, strict_map_key=False)
        assert raw[0].code == EXT_CAPNP_MESSAGE
        back = m.Holder.from_msgpack(packed)
        assert isinstance(back["any"], AnyPointerReader)
        assert back.to_bytes() == written
        # also when the ext value reaches the struct as msgpack left it
        assert m.Holder(raw).to_bytes() == written
    capnp = require_pycapnp()
    ref = capnp.load(str(schema_path))
    with ref.Holder.from_bytes(m.Holder.from_msgpack(v.to_msgpack()).to_bytes()) as r:
        inner = r.any.as_struct(ref.Inner)
        assert (inner.a, inner.t, inner.l[1].t) == (7, "hi", "deep")


def test_copies_keep_the_pointer(m: Any, written: bytes) -> None:
    v = m.Holder.from_bytes(written)
    assert copy.deepcopy(v).to_bytes() == written
    assert pickle.loads(pickle.dumps(v["any"])).to_flat() == v["any"].to_flat()


def test_other_values_get_a_clear_error(m: Any) -> None:
    v = m.Holder.Create(n=1)
    v["any"] = {"a": 1}  # fine for msgpack, which writes any plain value
    assert m.Holder.from_msgpack(v.to_msgpack())["any"] == {"a": 1}
    with pytest.raises(ValueTypeError, match=r"Holder\.any.*AnyPointerReader"):
        v.to_bytes()


# ---------------------------------------------------------------- checked when stored (issue 16)

#: Values no codec can write, and where inside the AnyPointer value the error points.
UNWRITABLE: list[tuple[Any, str]] = [
    (object(), ""), ({1, 2}, ""), (1j, ""), (lambda: 0, ""), (print, ""),
    ([1, "x", object()], r"\[2\]"), ({"k": [b"", {"deep": {3}}]}, r"\['k'\]\[1\]\['deep'\]"),
    ({(1, 2): 1}, ""), ({"a": {1: type}}, r"\['a'\]\[1\]"),
]


@pytest.mark.parametrize(("value", "where"), UNWRITABLE)
def test_unwritable_values_fail_when_stored(m: Any, value: Any, where: str) -> None:
    """Before, these were stored and failed only at ``to_bytes()``/``to_msgpack()``; now every
    way of storing them says which field (both builds: the pure-Python one runs this file in
    tests/runtime/test_speedups.py)."""
    pattern = rf"^Holder\.any{where}: .*(AnyPointer|dict key)"
    v = m.Holder.Create(n=1)
    with pytest.raises(ValueTypeError, match=pattern):
        v["any"] = value
    with pytest.raises(ValueTypeError, match=pattern):
        v.any = value
    assert "any" not in v
    for make in (lambda: m.Holder.Create(any=value), lambda: m.Holder({0: value}),
                 lambda: m.Holder({"any": value}), lambda: m.Holder(any=value, n=2),
                 lambda: m.Holder({0: value, 1: 3})):
        with pytest.raises(ValueTypeError, match=pattern):
            make()


def test_too_deep_a_value(m: Any) -> None:
    deep: Any = "leaf"
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueTypeError, match=r"^Holder\.any(\[0\])+: AnyPointer value nests"):
        m.Holder(any=deep)
    for _ in range(40):
        deep = deep[0]
    assert m.Holder(any=deep).to_msgpack()  # 30 levels: fine


def test_writable_values_are_stored_as_they_are(m: Any, written: bytes) -> None:
    reader = m.Holder.from_bytes(written)["any"]
    inner = m.Inner.Create(a=1)
    other = msgpack.ExtType(5, b"x")
    for value in (None, "t", b"d", 3, -2.5, True, inner, m.Inner.Create(l=[{}])["l"], reader,
                  other, [1, [2, "3"], {"k": None}], {"a": {b"b": [1.5]}, 7: other}):
        stored = m.Holder(any=value)
        assert stored.get("any") is value
        assert m.Holder.from_msgpack(stored.to_msgpack()) == stored or value is reader \
            or isinstance(value, msgpack.ExtType)
    assert m.Holder(any=bytearray(b"ab"))["any"] == b"ab"
    assert m.Holder(any=(1, 2))["any"] == [1, 2]


def test_a_broken_capnp_object_fails_when_stored(m: Any, written: bytes) -> None:
    """ext 0x43 holding a broken message: refused when the struct is built (it was stored
    and failed at ``to_bytes()``); a good one becomes the object it holds."""
    broken = msgpack.ExtType(EXT_CAPNP_MESSAGE,
                             bytes.fromhex("0000000000000100") + bytes.fromhex("fc0000000100ff00"))
    with pytest.raises(ValueTypeError, match=r"^Holder\.any: not a valid Cap'n Proto object"
                                             r".*outside"):
        m.Holder({0: broken})
    with pytest.raises(ValueTypeError, match=r"^Holder\.any: not a valid Cap'n Proto object"):
        m.Holder(any=msgpack.ExtType(EXT_CAPNP_MESSAGE, b"\0" * 3))
    good = msgpack.unpackb(m.Holder.from_bytes(written).to_msgpack(), strict_map_key=False)[0]
    assert isinstance(m.Holder(any=good)["any"], AnyPointerReader)
    assert m.Holder(any=good, n=5).to_bytes() == written


def test_binary_struct_with_anypointer_writes_as_msgpack(m: Any, written: bytes) -> None:
    """The audit's finding (a plain TypeError before): every msgpack writer that takes cara's
    default hook writes it; plain ``msgpack.packb`` needs that hook for the object."""
    v = m.Holder.from_bytes(written)
    expected = v.to_msgpack()
    assert msgpack_codec.packb(v) == expected
    assert msgpack.packb(v, default=cara.runtime.hooks.msgpack_default) == expected
    assert m.Holder.from_msgpack(expected).to_bytes() == written


def test_a_broken_capnp_object_fails_in_from_msgpack(m: Any, written: bytes) -> None:
    """Read from msgpack, ext 0x43 is checked whole while decoding (it was read lazily and
    failed only at ``to_bytes()``)."""
    broken = msgpack.ExtType(EXT_CAPNP_MESSAGE,
                             bytes.fromhex("0000000000000100") + bytes.fromhex("fc0000000100ff00"))
    with pytest.raises(DecodeError, match="outside"):
        m.Holder.from_msgpack(msgpack.packb({0: broken, 1: 2}))
    assert m.Holder.from_msgpack(m.Holder.from_bytes(written).to_msgpack()).to_bytes() == written


def test_anypointer_objects_count_in_the_nesting_limit(m: Any) -> None:
    """A Cap'n Proto object in an AnyPointer nests below its field: from_msgpack refuses a
    value whose binary form would nest deeper than 64 levels (which the binary reader, when
    it follows the pointer, refuses), and takes the same object higher up."""
    nodes = cara.loads("""@0xd3a8a8f4c2b1e0c2;
struct Node { child @0 :Node; any @1 :AnyPointer; }
""", name="anynest.capnp")
    inner = m.Inner.Create(a=1)
    level = inner
    for _ in range(30):  # 31 levels: the Inner, and 30 lists (an element is its list's level)
        child = m.Inner.Create(a=2)
        level.l = [child]
        level = level.l[0]
    flat = m.Holder.from_bytes(m.Holder(any=msgpack.ExtType(
        EXT_CAPNP_MESSAGE, inner.to_bytes()[8:])).to_bytes())["any"].to_flat()

    def chain(n: int) -> bytes:
        raw: Any = {1: msgpack.ExtType(EXT_CAPNP_MESSAGE, flat)}
        for _ in range(n - 1):
            raw = {0: raw}
        return msgpack.packb(raw)

    assert nodes.Node.from_msgpack(chain(30)).to_bytes()  # 30 + 31 levels
    with pytest.raises(DecodeError, match="nests deeper"):
        nodes.Node.from_msgpack(chain(40))  # 40 + 31
    too_deep = nodes.Node(msgpack.unpackb(chain(40), strict_map_key=False)).to_bytes()
    with pytest.raises((DecodeError, ValueTypeError), match="nest"):  # (what it wrote)
        nodes.Node.from_bytes(too_deep).to_bytes()
