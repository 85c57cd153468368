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
from cara.errors import ValueTypeError
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
