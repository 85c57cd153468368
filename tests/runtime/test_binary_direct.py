"""``S.from_bytes`` and ``s.to_bytes()`` take fast paths (a decoder that builds the runtime
objects itself, an encoder that reads the struct's own number-keyed dict); they must give exactly
what the general paths give: ``S(sparse(full decode))`` and ``codec.encode(s.to_dict())``.

The general paths are checked against libcapnp in test_binary_interop.py; here every struct of
test.capnp (capnproto 0.9.2) is decoded from bytes that libcapnp wrote (a copy made by pycapnp
of hypothesis-generated values, and the corpus' reference messages) both ways, and the results
must be equal as dicts, hold the same classes at every depth (structs, typed lists, enum
members), pack to the same msgpack bytes, and re-encode to the same Cap'n Proto bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings

from cara.codecs.capnp import structs
from tests.conftest import LONG
from tests.runtime.test_binary_interop import (
    _SETTINGS,
    STRUCT_NAMES,
    _lookup,
    cara_module,
    peer_module,
    struct_strategy,
)
from tests.support.reference import require_capnp, require_pycapnp
from tests.support.sparse_rule import sparse

__all__ = ["cara_module", "peer_module"]  # (fixtures, imported to be found by pytest)

EXAMPLES = 60 if LONG else 4


def _shape(value: Any) -> Any:
    """The value with every object's class made visible (floats by their bits, so NaN and -0.0
    compare)."""
    if isinstance(value, dict):
        return (type(value), tuple((k, _shape(v)) for k, v in dict.items(value)))
    if isinstance(value, list):
        return (type(value), tuple(_shape(v) for v in value))
    if isinstance(value, float):
        return (float, value.hex() if value == value else "nan")
    return (type(value), repr(value))


def _general_from_bytes(cls: Any, data: bytes, packed: bool = False) -> Any:
    """The general path: the full decode (every field), made sparse, then the constructor."""
    from cara.codecs.capnp import SchemaCodec

    builder = cls.cara_schema.builder
    codec = getattr(builder, "_test_full_codec", None)
    if codec is None:
        codec = SchemaCodec(builder.nodes, pointer_defaults=False, keys="index")
        builder._test_full_codec = codec
    full = codec.decode(cls.cara_schema.id, data, packed=packed)
    return cls(sparse(cls._cara_type_, full))


def _general_to_bytes(value: Any) -> bytes:
    codec, type_id = structs._schema_codec(type(value))
    return codec.encode(type_id, value.to_dict())  # type: ignore[no-any-return]


def _compare(cls: Any, data: bytes, packed: bool = False) -> Any:
    fast = cls.from_bytes(data, packed=packed)
    general = _general_from_bytes(cls, data, packed)
    assert type(fast) is cls
    assert _shape(fast) == _shape(general)  # (not ==: NaN is not equal to itself)
    assert msgpack.packb(fast) == msgpack.packb(general)
    assert fast.to_bytes() == _general_to_bytes(fast) == _general_to_bytes(general)
    return fast


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    require_capnp()
    require_pycapnp()


@pytest.mark.slow
@pytest.mark.parametrize("name", STRUCT_NAMES)
def test_fast_paths_match_general(cara_module: Any, peer_module: Any, name: str) -> None:
    cls, peer = _lookup(cara_module, name), _lookup(peer_module, name)

    @settings(_SETTINGS, max_examples=EXAMPLES)
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        value = cls(data)
        with peer.from_bytes(value.to_bytes()) as reader:
            theirs = reader.as_builder().to_bytes()
        _compare(cls, theirs)
        _compare(cls, value.to_bytes(packed=True), packed=True)

    check()


@pytest.mark.parametrize(("data", "name", "packed"), [
    ("binary", "TestAllTypes", False), ("packed", "TestAllTypes", True),
    ("segmented", "TestAllTypes", False), ("lists.binary", "TestLists", False)])
def test_corpus_messages_match_general(corpus_092: Path, cara_module: Any, data: str,
                                       name: str, packed: bool) -> None:
    cls = _lookup(cara_module, name)
    raw = (corpus_092 / "c++/src/capnp/testdata" / data).read_bytes()
    value = _compare(cls, raw, packed)
    assert len(dict(value)) >= 10


SCHEMA = """@0xd3a8a8f4c2b1e012;
struct T {
  texts @0 :List(Text); lists @1 :List(List(Int32)); f @2 :List(Float32); es @3 :List(E);
  ss @4 :List(List(S)); e @5 :E; x @6 :Float64; g :group { y @7 :Float32 = 1.5; }
  enum E { a @0; b @1; }
  struct S { x @0 :Int32; }
}
"""


@pytest.fixture(scope="module")
def T(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import capnp  # type: ignore[import-untyped]

    import cara

    path = tmp_path_factory.mktemp("direct") / "direct.capnp"
    path.write_text(SCHEMA)
    return cara.load(path).T, capnp.load(str(path)).T


def test_odd_values_match_general(T: Any) -> None:
    """-0.0 and NaN, an enum number the schema does not name, empty and nested lists, a group
    scalar with a non-zero default set to 0.0: all written by libcapnp."""
    cls, peer = T
    m = peer.new_message()
    texts = m.init("texts", 2)
    texts[0], texts[1] = "a", ""
    lists = m.init("lists", 2)
    lists[0] = []
    lists[1] = [1, -2]
    m.f = [float("inf"), float("nan"), -0.0]
    m.init("es", 2)[0] = "b"
    ss = m.init("ss", 2)
    ss.init(0, 0)
    ss[1] = [{"x": 3}, {}]
    m.x = -0.0
    m.g.y = 0.0
    data = m.to_bytes()
    fast = _compare(cls, data)
    assert str(fast.x) == "-0.0" and fast.g.y == 0.0 and fast.es[0] is cls.E.b
    raw = bytearray(data)
    raw[8 + 8:8 + 10] = (7).to_bytes(2, "little")  # field e (offset 0 of the data section)
    assert _compare(cls, bytes(raw)).e == 7


def test_null_list_element_reads_as_its_default(T: Any) -> None:
    """A null Text inside a list reads as "" (as libcapnp reads it), on both paths."""
    cls, peer = T
    m = peer.new_message()
    m.init("texts", 2)[0] = "a"
    data = m.to_bytes()
    general = _general_from_bytes(cls, data)
    fast = cls.from_bytes(data)
    assert general.texts == fast.texts == ["a", ""]
    with peer.from_bytes(data) as read:
        assert list(read.texts) == ["a", ""]
