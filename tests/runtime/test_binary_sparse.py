"""A struct that went through Cap'n Proto binary comes back as it was written: scalars holding
their default and null pointers stay unset (the wire stores both as zeros), so the decoded
struct compares equal and packs to the same msgpack bytes."""

from __future__ import annotations

import msgpack
import pytest

import cara

SCHEMA = """@0xd3a8a8f4c2b1e011;
struct S {
  a @0 :Int32; b @1 :Float64; t @2 :Text; n @3 :S; l @4 :List(S); d @5 :Int32 = 7;
  g :group { x @6 :Bool; }
  u :union { v @7 :Void; w @8 :Int8; }
  union { p @9 :Int8; q @10 :Void; }
  e @11 :E;
  enum E { zero @0; one @1; }
}
"""


@pytest.fixture(scope="module")
def S() -> type:
    return cara.loads(SCHEMA, name="sparse.capnp").S  # type: ignore[no-any-return]


CASES = [
    {}, {"a": 1}, {"b": -0.0}, {"n": {}}, {"l": [{}, {"a": 2}]}, {"u": {"w": 0}}, {"d": 0},
    {"g": {"x": True}}, {"q": None}, {"p": 3}, {"t": ""}, {"e": "one"},
]


@pytest.mark.parametrize("value", CASES, ids=repr)
@pytest.mark.parametrize("packed", [False, True])
def test_round_trip_is_equal_and_packs_the_same(S: type, value: dict, packed: bool) -> None:
    s = S(value)
    back = S.from_bytes(s.to_bytes(packed=packed), packed=packed)  # type: ignore[attr-defined]
    assert back == s
    assert msgpack.packb(back) == msgpack.packb(s)
    assert back.which() == s.which()


def test_explicit_default_comes_back_unset_but_reads_the_same(S: type) -> None:
    s = S({"a": 0, "b": 0.0, "g": {"x": False}})
    back = S.from_bytes(s.to_bytes())  # type: ignore[attr-defined]
    assert dict(back) == {}
    assert (back.a, back.b, back.g.x) == (0, 0.0, False)
