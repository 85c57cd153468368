"""Unknown data in structs that can hold ``AnyPointer`` or capability fields (issue 16).

Such structs (and generic instantiations) take another path through ``to_bytes()`` than the
structs of ``tests/codecs/test_unknown_data.py``: their values are encoded from ``to_dict()``
by the name-keyed codec, never by the C accelerator. A binary message written with a newer
schema, decoded by the older one, changed and written again must keep what the older schema
does not know there too, as libcapnp's own copy does.

The reference is the same: pycapnp reads the newer schema's bytes with the old schema, copies
the reader into a builder (``as_builder``), makes the same change and writes it; both results
are read with the *new* schema by pycapnp and must agree. The pure-Python build runs this file
too (``tests/runtime/test_speedups.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.reference import require_pycapnp

OLD = """@0xc0ffee00d00d0201;
interface Echo { echo @0 (x :Text) -> (x :Text); }
struct Box {
  id @0 :UInt32;
  any @1 :AnyPointer;
  cap @2 :Echo;
  union {
    a @3 :Void;
    b @4 :Int32;
  }
  inner @5 :Box;
  boxes @6 :List(Box);
}
struct Holder {
  box @0 :Box;
  boxes @1 :List(Box);
  tag @2 :Text;
}
struct Gen(T) {
  value @0 :T;
  id @1 :UInt32;
}
"""

NEW = """@0xc0ffee00d00d0202;
interface Echo { echo @0 (x :Text) -> (x :Text); }
struct Box {
  id @0 :UInt32;
  any @1 :AnyPointer;
  cap @2 :Echo;
  union {
    a @3 :Void;
    b @4 :Int32;
    c @7 :Text;
    d @12 :Sub;
  }
  inner @5 :Box;
  boxes @6 :List(Box);
  extra @8 :Int64;
  note @9 :Text;
  more @10 :AnyPointer;
  cap2 @11 :Echo;
  flag @13 :Bool;
}
struct Sub {
  x @0 :Int64;
  t @1 :Text;
}
struct Holder {
  box @0 :Box;
  boxes @1 :List(Box);
  tag @2 :Text;
  later @3 :Sub;
}
struct Gen(T) {
  value @0 :T;
  id @1 :UInt32;
  note @2 :Text;
  count @3 :Int32;
}
struct UseGen {
  gen @0 :Gen(Text);
}
"""


class Schemas:
    def __init__(self, tmp: Path) -> None:
        import cara

        self.capnp = require_pycapnp()
        (tmp / "old_boxes.capnp").write_text(OLD)
        (tmp / "new_boxes.capnp").write_text(NEW)
        self.old = cara.load(tmp / "old_boxes.capnp")
        self.pyc_old = self.capnp.load(str(tmp / "old_boxes.capnp"))
        self.pyc_new = self.capnp.load(str(tmp / "new_boxes.capnp"))

    def newer(self, build: Callable[[Any], None], name: str = "Box") -> bytes:
        """A message written by libcapnp with the newer schema (``build`` fills the root)."""
        message = getattr(self.pyc_new, name).new_message()
        build(message)
        return message.to_bytes()  # type: ignore[no-any-return]

    def newest(self, m: Any) -> None:
        _newest(m, self.pyc_new.Sub)

    def read_new(self, data: bytes, name: str = "Box") -> dict[str, Any]:
        """What libcapnp with the newer schema reads in ``data`` (AnyPointer fields as the
        struct or text they hold)."""
        with getattr(self.pyc_new, name).from_bytes(data) as r:
            return _plain(r, self.pyc_new)

    def libcapnp_copy(self, data: bytes, change: Callable[[Any], None],
                      name: str = "Box") -> bytes:
        with getattr(self.pyc_old, name).from_bytes(data) as r:
            b = r.as_builder()
        change(b)
        return b.to_bytes()  # type: ignore[no-any-return]

    def cara_copy(self, data: bytes, change: Callable[[Any], None], name: str = "Box",
                  **encode: Any) -> bytes:
        value = getattr(self.old, name).from_bytes(data)
        change(value)
        return value.to_bytes(**encode)  # type: ignore[no-any-return]

    def check(self, data: bytes, change: Callable[[Any], None],
              name: str = "Box") -> dict[str, Any]:
        ours = self.read_new(self.cara_copy(data, change, name), name)
        assert ours == self.read_new(self.libcapnp_copy(data, change, name), name)
        return ours


def _plain(r: Any, schema: Any) -> dict[str, Any]:
    """A pycapnp reader as plain values; a Box's AnyPointer fields are read as what the
    tests put there (``any``: Text, ``more``: a Sub)."""
    out: dict[str, Any] = {}
    fields = r.schema.fields
    which = r.which() if r.schema.union_fields else None
    for name in fields:
        if name in r.schema.union_fields and name != which:
            continue
        if name in ("cap", "cap2"):
            out[name] = r._has(name)  # (set or not: reading it needs a cap table)
            continue
        if name == "any":
            out[name] = r.any.as_text() if r._has("any") else None
            continue
        if name == "more":
            out[name] = r.more.as_struct(schema.Sub).to_dict() if r._has("more") else None
            continue
        value = getattr(r, name)
        if hasattr(value, "schema"):
            out[name] = _plain(value, schema) if r._has(name) else None
        elif isinstance(value, (str, bytes, int, float, bool)) or value is None:
            out[name] = value
        else:  # a list of structs
            out[name] = [_plain(v, schema) for v in value]
    return out


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Schemas:
    return Schemas(tmp_path_factory.mktemp("unknown_pointers"))


def _newest(m: Any, sub: Any) -> None:
    """Every kind of addition at once: a member of the union (a pointer), data words, a bit,
    Text, an AnyPointer field holding a struct; inside a nested Box and a list of them."""
    m.id = 5
    m.any.set_as_text("known any")
    m.c = "unknown member"
    m.extra = -(1 << 40)
    m.note = "a note"
    m.flag = True
    more = m.more.as_struct(sub)
    more.x = 9
    more.t = "in more"
    inner = m.init("inner")
    inner.id = 6
    d = inner.init("d")
    d.x = 3
    d.t = "sub member"
    inner.note = "inner note"
    boxes = m.init("boxes", 2)
    boxes[0].id = 1
    boxes[0].extra = 11
    boxes[1].b = 7
    boxes[1].note = "second"


def _set_id(v: Any) -> None:
    v.id = 42


def test_anypointer_struct_keeps_unknown_data(schemas: Schemas) -> None:
    data = schemas.newer(schemas.newest)
    seen = schemas.check(data, _set_id)
    expected = schemas.read_new(data)
    expected["id"] = 42
    assert seen == expected
    assert (seen["c"], seen["note"], seen["extra"], seen["flag"]) == \
        ("unknown member", "a note", -(1 << 40), True)
    assert seen["more"] == {"x": 9, "t": "in more"} and seen["any"] == "known any"
    assert seen["inner"]["d"] == {"x": 3, "t": "sub member"}
    assert seen["boxes"][1]["note"] == "second"
    box = schemas.old.Box.from_bytes(data)
    assert box.which() is None and box.inner.which() is None and box.boxes[1].which() == "b"


def test_changes_inside_and_known_members(schemas: Schemas) -> None:
    """Changed nested values, a known member replacing the unknown one, a deleted known
    AnyPointer: as libcapnp's copy after the same changes."""
    data = schemas.newer(schemas.newest)

    def change(v: Any) -> None:
        v.inner.id = 60
        v.boxes[0].id = 10
        v.b = 5  # the known member replaces `c`

    seen = schemas.check(data, change)
    assert (seen["b"], seen["note"], seen["inner"]["d"]["t"]) == (5, "a note", "sub member")
    assert "c" not in seen
    box = schemas.old.Box.from_bytes(data)
    del box.any
    again = schemas.read_new(box.to_bytes())
    assert again["any"] is None and again["more"] == {"x": 9, "t": "in more"}


def test_a_struct_holding_one(schemas: Schemas) -> None:
    """``Holder`` has no AnyPointer of its own, but reaches one through ``Box``."""
    def build(m: Any) -> None:
        schemas.newest(m.init("box"))
        boxes = m.init("boxes", 1)
        schemas.newest(boxes[0])
        m.tag = "t"
        later = m.init("later")
        later.x = -1
        later.t = "later"

    data = schemas.newer(build, "Holder")
    seen = schemas.check(data, lambda v: setattr(v, "tag", "changed"), "Holder")
    assert seen["later"] == {"x": -1, "t": "later"} and seen["box"]["c"] == "unknown member"
    assert seen["boxes"][0]["more"] == {"x": 9, "t": "in more"}


def test_packed(schemas: Schemas) -> None:
    data = schemas.newer(schemas.newest)
    packed = schemas.cara_copy(data, _set_id, packed=True)
    ours = _plain(schemas.pyc_new.Box.from_bytes_packed(packed), schemas.pyc_new)
    assert ours == schemas.read_new(schemas.libcapnp_copy(data, _set_id))


def test_an_unknown_capability_field(schemas: Schemas) -> None:
    """A capability pointer in a field the old schema does not have is kept as it is (what it
    points to lives in the RPC message's cap table). libcapnp's copy cannot be the reference
    here: it refuses a capability pointer outside RPC."""
    capnp = schemas.capnp

    class Echo(schemas.pyc_new.Echo.Server):  # type: ignore[name-defined, misc]
        async def echo(self, x: str, **_: Any) -> str:
            return x

    async def build() -> bytes:
        m = schemas.pyc_new.Box.new_message(id=1, note="n")
        m.cap2 = Echo()
        return m.to_bytes()  # type: ignore[no-any-return]

    data = asyncio.run(capnp.run(build()))
    out = schemas.cara_copy(data, _set_id)
    with schemas.pyc_new.Box.from_bytes(out) as r:
        assert (r.id, r.note, r._has("cap2"), r._has("cap")) == (42, "n", True, False)
    # the pointer itself, word for word: Box's pointer section starts after its data words
    with schemas.pyc_new.Box.from_bytes(data) as r:
        assert r._has("cap2")
    assert _pointer_words(out)[3] == _pointer_words(data)[3]  # cap2 is pointer 3


def _pointer_words(message: bytes) -> list[bytes]:
    """The root struct's pointer words (a single-segment message)."""
    root = int.from_bytes(message[8:16], "little")
    offset = (root & 0xFFFFFFFF) >> 2
    data_words, pointers = root >> 32 & 0xFFFF, root >> 48
    start = 16 + 8 * offset + 8 * data_words
    return [message[start + 8 * i:start + 8 * i + 8] for i in range(pointers)]


def test_a_generic_instantiation(schemas: Schemas) -> None:
    """A generic struct bound to Text, as the root (its class is ``Gen[Text]``) and as a
    field of a struct the newer schema has but the old one does not need to know."""
    from cara.runtime import Text

    def build(m: Any) -> None:
        m.value = "v"
        m.id = 3
        m.note = "generic note"
        m.count = -4

    data = schemas.newer(build, "Gen")
    value = schemas.old.Gen[Text].from_bytes(data)
    assert value.value == "v"
    value.id = 30
    with schemas.pyc_new.Gen.from_bytes(value.to_bytes()) as r:
        assert (r.value.as_text(), r.id, r.note, r.count) == ("v", 30, "generic note", -4)
