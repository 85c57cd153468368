"""One nesting limit (64 structs and lists, as libcapnp's reader) for every codec, and nothing a
codec accepts makes another one crash (issue 16: msgpack nested up to ~490 levels, and
``to_json``/``to_dict``/``deepcopy`` of the result raised RecursionError)."""

from __future__ import annotations

import copy
import time
from typing import Any

import msgpack
import pytest

import cara
from cara.errors import DecodeError, ValueTypeError
from cara.runtime.nesting import DEFAULT_NESTING_LIMIT, static_depth

SCHEMA = """@0xd3a8a8f4c2b1e0a2;
struct Node {
  child @0 :Node;
  kids @1 :List(Node);
  value @2 :UInt32;
  g :group { inner @3 :Node; }
}
struct Flat { a @0 :UInt32; b @1 :Flat2; }
struct Flat2 { l @0 :List(List(UInt8)); }
"""


@pytest.fixture(scope="module")
def m() -> Any:
    return cara.loads(SCHEMA, name="nesting.capnp")


def _chain(levels: int, key: int = 0, group: bool = False) -> dict[int, Any]:
    """A Node nested ``levels`` structs deep through field ``key`` (or the group's field)."""
    d: dict[int, Any] = {2: 1}
    for _ in range(levels - 1):
        d = {3: {0: d}} if group else {key: d}
    return d


def _kids(levels: int) -> dict[int, Any]:
    """``levels`` levels of structs and lists: Node.kids[0].kids[0]..."""
    d: dict[int, Any] = {2: 1}
    for _ in range((levels - 1) // 2):
        d = {1: [d]}
    return d


def _every_codec(m: Any, value: Any) -> None:
    copy.deepcopy(value)
    value.to_dict()
    text = value.to_json()
    try:
        assert m.Node.from_json(text).to_json() == text
    except DecodeError as e:  # JSON counts a group as a level (it is an object): refused,
        assert "nests deeper" in str(e)  # not crashed
    assert m.Node.from_bytes(value.to_bytes()) == value
    assert m.Node.from_msgpack(value.to_msgpack()) == value


@pytest.mark.parametrize("shape", ["child", "group", "kids"])
def test_msgpack_accepts_the_limit_and_the_others_agree(m: Any, shape: str) -> None:
    build = {"child": _chain, "group": lambda n: _chain(n, group=True), "kids": _kids}[shape]
    value = m.Node.from_msgpack(msgpack.packb(build(DEFAULT_NESTING_LIMIT)))
    _every_codec(m, value)


@pytest.mark.parametrize("levels", [DEFAULT_NESTING_LIMIT + 1, 200, 480])
@pytest.mark.parametrize("shape", ["child", "group", "kids"])
def test_msgpack_refuses_deeper(m: Any, shape: str, levels: int) -> None:
    build = {"child": _chain, "group": lambda n: _chain(n, group=True), "kids": _kids}[shape]
    if shape == "kids":
        levels += 1
    with pytest.raises((DecodeError, ValueTypeError)):
        m.Node.from_msgpack(msgpack.packb(build(levels)))


def test_binary_refuses_what_msgpack_refuses(m: Any) -> None:
    deep = m.Node(_chain(DEFAULT_NESTING_LIMIT + 1))  # built directly: no codec involved
    with pytest.raises(DecodeError, match="nesting"):
        m.Node.from_bytes(deep.to_bytes())


def test_unknown_fields_are_held_to_the_limit(m: Any) -> None:
    """A field from a newer schema is kept as decoded, but not nested without bound (its
    deepcopy or to_dict would crash)."""
    raw: Any = 1
    for _ in range(DEFAULT_NESTING_LIMIT + 1):
        raw = [raw]
    with pytest.raises(ValueTypeError, match="nests deeper"):
        m.Node.from_msgpack(msgpack.packb({9: raw}))
    ok = m.Node.from_msgpack(msgpack.packb({9: raw[0]}))
    assert copy.deepcopy(ok) == ok and ok.to_dict()[9] == raw[0]


def test_non_recursive_types_are_not_walked(m: Any) -> None:
    assert static_depth(m.Flat) == 4  # Flat, Flat2, List, List
    assert static_depth(m.Node) > DEFAULT_NESTING_LIMIT


def test_a_bad_value_deep_inside_fails_fast(m: Any) -> None:
    """The fuzz's finding: a wrong key 16 structs down made every level retry its fast path
    after the failure (twice the work per level: minutes)."""
    d: dict[Any, Any] = {2: 1, -2: 0}  # (-1 is the key of unknown binary data)
    for _ in range(16):
        d = {0: d, 1: [{2: 3}], 3: {0: {2: 4}}}
    start = time.perf_counter()
    with pytest.raises(ValueTypeError, match=r"Node(\.child){16}: Node has no field -2"):
        m.Node.from_msgpack(msgpack.packb(d))
    with pytest.raises(ValueTypeError, match=r"Node(\.child){16}: Node has no field -2"):
        m.Node(d)
    assert time.perf_counter() - start < 1.0
