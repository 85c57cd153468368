"""The generated fast paths (keyword ``Create``, number-keyed and name-keyed nested input written
into the parent's code, lazy code generation) behave exactly like the general path: same values,
same errors with the same field paths.

Each case is checked two ways: through the fast path, and through the general path (a mapping
that is not a plain ``dict``, which the generated code hands on untouched), so a difference
between them fails. The schemas are compiled by the reference compiler.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import msgpack
import pytest

from cara.errors import ValueTypeError
from cara.runtime import SchemaBuilder
from tests.runtime.schemas import load_text, seed

# Field names that shadow what generated code could use (builtins, short local names).
SHADOW_CAPNP = """@0xc4b2a3d4e5f60719;
struct Shadow {
  type @0 :Int32;
  str @1 :Text;
  int @2 :UInt8;
  d @3 :Text;
  self @4 :Text;
  w0 @5 :Int16;
  x0 @6 :List(Inner);
  c0 @7 :Inner;
  v0 @8 :Kind;
  cls @9 :Bool;
  any @10 :AnyPointer;
  struct Inner {
    type @0 :Kind;
    inner @1 :Inner;
    union {
      a @2 :Text;
      b @3 :Int64;
    }
  }
  enum Kind { one @0; two @1; }
}
struct WithConst {
  value @0 :Shadow.Inner = (type = two, a = "x");
  const dflt :Shadow.Inner = (type = two, b = 5);
}
"""


@pytest.fixture(scope="module")
def m() -> Any:
    return load_text(SHADOW_CAPNP, "shadow.capnp")


def _general(value: Any) -> Any:
    """The same mapping as one the generated code does not take (general path)."""
    if isinstance(value, dict):
        return OrderedDict((k, _general(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_general(v) for v in value]
    return value


def _both(cls: Any, value: Any) -> Any:
    fast = cls(value)
    slow = cls(_general(value))
    assert fast == slow and type(fast) is type(slow)
    assert msgpack.packb(fast) == msgpack.packb(slow)
    return fast


def test_create_with_names_that_shadow_builtins(m: Any) -> None:
    s = m.Shadow.Create(type=-5, str="s", int=200, d="d", self="me", w0=7, cls=True,
                        x0=[{"type": "two", "a": "q"}, {"b": 3}], c0={"inner": {"b": 1}},
                        v0="two")
    assert (s.type, s.str, s.int, s.d, s.self, s.w0, s.cls) == (-5, "s", 200, "d", "me", 7, True)
    assert s.x0[0].type == m.Shadow.Kind.two and s.x0[0].which() == "a" and s.x0[1].b == 3
    assert s.c0.inner.b == 1 and s.v0 is m.Shadow.Kind.two
    assert s == _both(m.Shadow, msgpack.unpackb(msgpack.packb(s), strict_map_key=False))


@pytest.mark.parametrize(("kwargs", "path", "message"), [
    ({"type": 2**31}, "Shadow.type", "out of range for Int32"),
    ({"int": 256}, "Shadow.int", "out of range for UInt8"),
    ({"str": b"x"}, "Shadow.str", "expected Text"),
    ({"x0": [{"a": "ok"}, {"type": "three"}]}, "Shadow.x0[1].type", "expected Shadow.Kind"),
    ({"x0": [{}, {"a": "x", "b": 1}]}, "Shadow.x0[1]", "both set"),
    ({"c0": {"inner": {"inner": {"b": "1"}}}}, "Shadow.c0.inner.inner.b", "expected Int64"),
    ({"c0": {"nope": 1}}, "Shadow.c0", "no field named 'nope'"),
    ({"x0": "abc"}, "Shadow.x0", "expected List"),
])
def test_create_errors_name_the_path(m: Any, kwargs: dict[str, Any], path: str,
                                     message: str) -> None:
    for attempt in (lambda: m.Shadow.Create(**kwargs), lambda: m.Shadow(_general(kwargs))):
        with pytest.raises(ValueTypeError) as info:
            attempt()
        assert info.value.path == path
        assert message in str(info.value)


@pytest.mark.parametrize(("raw", "path", "message"), [
    ({0: 1.5}, "Shadow.type", "expected Int32"),
    ({6: [{0: 0}, {0: 9, 2: "x", 3: 1}]}, "Shadow.x0[1]", "both set"),
    ({6: [{0: 0}, {1: {1: {3: "no"}}}]}, "Shadow.x0[1].inner.inner.b", "expected Int64"),
    ({7: {1: {0: -1}}}, "Shadow.c0.inner.type", "out of range for enum"),
    ({7: None}, "Shadow.c0", "expected Shadow.Inner"),
    ({6: [3]}, "Shadow.x0[0]", "expected Shadow.Inner"),
    ({8: True}, "Shadow.v0", "expected Shadow.Kind"),
])
def test_number_keyed_errors_name_the_path(m: Any, raw: dict[int, Any], path: str,
                                           message: str) -> None:
    for value in (raw, _general(raw)):
        with pytest.raises(ValueTypeError) as info:
            m.Shadow(value)
        assert info.value.path == path
        assert message in str(info.value)
    with pytest.raises(ValueTypeError) as info:
        m.Shadow.from_msgpack(msgpack.packb(raw))
    assert info.value.path == path


def test_null_struct_element_is_an_empty_struct(m: Any) -> None:
    """``None`` in a list of structs is a null pointer, read as an empty struct (both paths)."""
    s = _both(m.Shadow, {6: [None, {3: 1}]})
    assert s.x0 == [{}, {3: 1}] and type(s.x0[0]) is m.Shadow.Inner


def test_number_keyed_nested_values(m: Any) -> None:
    raw = {0: 1, 6: [{0: 1, 2: "a"}, {1: {1: {3: 5}}, 3: 2}, m.Shadow.Inner(b=1)],
           7: {0: 7, 2: "z"}, 8: 1, 99: "from a newer schema"}
    s = _both(m.Shadow, raw)
    assert s.x0[0].type is m.Shadow.Kind.two and s.x0[1].inner.inner.b == 5
    assert int(s.c0.type) == 7 and s.c0.type.name == "<unknown 7>"
    assert s.v0 is m.Shadow.Kind.two and s[99] == "from a newer schema"
    assert msgpack.packb(s) == msgpack.packb(raw)


def test_name_keyed_dict_into_init(m: Any) -> None:
    s = _both(m.Shadow, {"type": 3, "x0": [{"b": 1}], "c0": {"a": "q"}})
    assert s.type == 3 and s.x0[0].b == 1 and s.c0.a == "q"


def test_which_after_generation(m: Any) -> None:
    inner = m.Shadow.Inner
    assert inner().which() == "a"
    assert inner(b=1).which() == "b"
    assert inner({3: 1}).which() == "b"
    assert inner.Create(a="x").which() == "a"


def test_building_a_module_generates_no_code() -> None:
    mod = load_text(SHADOW_CAPNP.replace("0xc4b2a3d4e5f60719", "0xc4b2a3d4e5f6071a"),
                    "shadow2.capnp")
    inner = mod.Shadow.Inner
    assert not inner.__dict__.get("_cara_ready_", False)
    dflt = mod.WithConst.dflt  # a constant, converted while the module was built
    assert type(dflt) is inner and dflt == {0: mod.Shadow.Kind.two, 3: 5}
    assert not inner.__dict__.get("_cara_ready_", False)
    assert mod.WithConst().value == {0: mod.Shadow.Kind.two, 2: "x"}
    mod.Shadow.Create(x0=[{}])
    assert inner.__dict__["_cara_ready_"]


def test_add_nodes() -> None:
    person = seed().Person
    nodes = person.cara_schema.builder.nodes
    file_node = next(n for n in nodes.values() if n.which == "file")
    builder = SchemaBuilder([file_node])
    builder.add_nodes(n for n in nodes.values() if n is not file_node)
    built = builder.struct_class(person.cara_schema.id)
    assert built.cara_schema.name == "Person"
    assert builder.file_id(nodes[person.cara_schema.id]) == file_node.id
    p = built.Create(id=1, phones=[{"type": "work"}], employment={"school": "x"})
    assert msgpack.packb(p) == msgpack.packb(person.Create(id=1, phones=[{"type": "work"}],
                                                           employment={"school": "x"}))


def test_to_msgpack_reuses_a_packer_safely(m: Any) -> None:
    good = m.Shadow.Create(str="x", x0=[{"b": 1}], any=[1, "two"])
    expected = msgpack.packb(good)
    assert good.to_msgpack() == expected
    with pytest.raises(TypeError):
        m.Shadow.Create(str="y", any=object()).to_msgpack()
    assert good.to_msgpack() == expected  # nothing of the failed message left behind
    results: list[bytes] = []

    def pack_many() -> None:
        results.extend(m.Shadow.Create(str="x", x0=[{"b": 1}], any=[1, "two"]).to_msgpack()
                       for _ in range(200))

    threads = [threading.Thread(target=pack_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 800
