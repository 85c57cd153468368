"""Structs: the seed's examples, the original's conformance list (adapted) and its bugs fixed.

Schemas are compiled by the reference compiler; expected bytes come from the seed description
(cara 0.10.3's README) and from msgpack itself packing the equivalent plain dict.
"""

from __future__ import annotations

import copy
import pickle
import struct

import msgpack
import pytest

from cara.errors import ValueTypeError
from cara.runtime import UnionMemberError

# ------------------------------------------------------------------------- the seed's examples


def test_seed_field_shrinking_bytes(s) -> None:  # type: ignore[no-untyped-def]
    m = s.MyStruct.Create(field="some different text")
    assert msgpack.packb(m) == b"\x81\x00\xb3some different text"
    assert m.to_msgpack() == b"\x81\x00\xb3some different text"
    # The same data as a plain dict keyed by name is much bigger (the seed's comparison).
    assert msgpack.packb({"field": "some different text"}) == \
        b"\x81\xa5field\xb3some different text"


def test_seed_nested_round_trip(s) -> None:  # type: ignore[no-untyped-def]
    original = s.MyStruct.Create(nested={"integer": 2})
    packed = msgpack.packb(original)
    unpacked = msgpack.unpackb(packed, strict_map_key=False)
    assert unpacked == {1: {0: 2}}
    result = s.MyStruct(unpacked)
    assert repr(result) == "MyStruct({nested: NestedStruct({integer: 2})})"
    assert result.nested.integer == 2
    assert type(result.nested) is s.MyStruct.NestedStruct
    assert s.MyStruct.from_msgpack(packed) == original


def test_seed_construct_from_names(s) -> None:  # type: ignore[no-untyped-def]
    m = s.MyStruct({"field": "some text for here"})
    assert dict(m) == {0: "some text for here"}


# ------------------------------------------------------------------- conformance (original §4)


def test_field_exists(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(field=1)
    assert x.field == 1
    assert x["field"] == 1
    assert x[0] == 1
    assert "field" in x and 0 in x and "list" not in x


@pytest.mark.parametrize("key", [0, "0", "field", b"field", b"0"])
def test_struct_creation_keys(b, key) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic({key: 1})
    assert repr(x) == "Basic({field: 1})"
    assert dict(x) == {0: 1}


def test_same_field_twice_is_an_error(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError, match="given twice"):
        b.Basic({"field": 1, 0: 2})
    with pytest.raises(ValueTypeError, match="given twice"):
        b.Basic.Create(1, field=2)


def test_unknown_name_is_an_error(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError, match="no field named 'nope'"):
        b.Basic({"nope": 1})
    with pytest.raises(AttributeError):
        b.Basic().nope = 1
    with pytest.raises(KeyError):
        b.Basic()["nope"]


def test_union_keeps_one_member(b) -> None:  # type: ignore[no-untyped-def]
    u = b.WithUnion.Create(a=1)
    assert u.which() == "a"
    u.b = "x"
    assert u.which() == "b"
    assert "a" not in u
    assert dict(u) == {2: "x"}
    with pytest.raises(UnionMemberError, match=r"WithUnion\.a is not set: the union holds b"):
        u.a  # noqa: B018
    with pytest.raises(UnionMemberError):
        u.c.x = 5  # reading an inactive group member is an error too
    u.c = {"x": 5}
    assert u.which() == "c"
    assert dict(u) == {3: {0: 5}}


def test_union_several_members_at_construction_is_an_error(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError, match="both set"):
        b.WithUnion({1: 1, 2: "x"})


def test_union_default_member(b) -> None:  # type: ignore[no-untyped-def]
    u = b.WithUnion()
    assert u.which() == "a"  # discriminant 0, as Cap'n Proto reads an empty struct
    assert u.a == 0
    with pytest.raises(UnionMemberError):
        u.b  # noqa: B018


def test_named_union_and_group_are_nested(b) -> None:  # type: ignore[no-untyped-def]
    u = b.WithUnion()
    assert u.named.which() == "p"
    u.named.q = b"\x01"
    u.grp.g2 = True
    num_named = b.WithUnion.cara_schema.by_name["named"].number
    num_grp = b.WithUnion.cara_schema.by_name["grp"].number
    assert dict(u) == {num_named: {1: b"\x01"}, num_grp: {1: True}}
    assert msgpack.packb(u) == msgpack.packb({num_named: {1: b"\x01"}, num_grp: {1: True}})


# -------------------------------------------------------------------------- defaults (bug fix)


def test_unset_scalars_read_as_capnp_defaults(b) -> None:  # type: ignore[no-untyped-def]
    x = b.AllScalars()
    assert (x.v, x.b, x.i8, x.i64, x.u64, x.f32, x.f64, x.t, x.d) == \
        (None, False, 0, 0, 0, 0.0, 0.0, "", b"")
    assert x.e == b.Color.red and type(x.e) is b.Color
    assert x.any is None
    assert x.ll == [] and x.el == []
    assert dict(x) == {}


def test_explicit_scalar_defaults(b) -> None:  # type: ignore[no-untyped-def]
    d = b.Defaults()
    assert (d.i, d.f, d.t, d.d, d.e, d.b, d.u64) == (
        -5, 1.5, "hello", b"\x01\x02", b.Color.green, True, 2**64 - 1)
    assert dict(d) == {}


def test_explicit_pointer_defaults(b) -> None:  # type: ignore[no-untyped-def]
    d = b.Defaults()
    if d.l == []:
        pytest.skip("the reference oracle did not provide pointer default values")
    assert d.l == [1, 2, 3]
    assert d.s.field == 7
    assert dict(d) == {}  # reading never stores
    d.l.append(4)  # mutating the default stores a copy
    assert d[7] == [1, 2, 3, 4]
    assert b.Defaults().l == [1, 2, 3]  # the default itself is untouched


def test_reading_never_changes_what_is_serialized(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    before = msgpack.packb(x)
    _ = (x.field, x.list, x.structs, x.nested, x.nested.field, x.nested.text)
    assert repr(x) == "Basic({})"
    assert msgpack.packb(x) == before == b"\x80"
    assert x == {}


def test_nested_write_is_kept(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    x.nested.field = 2
    assert dict(x) == {3: {0: 2}}
    y = b.Basic()
    y.list.append(5)  # the original lost this (list defaults were never stored)
    y.structs.append({"field": 1})
    assert msgpack.unpackb(msgpack.packb(y), strict_map_key=False) == {1: [5], 2: [{0: 1}]}


def test_deep_pending_chain_attaches_all_levels(b) -> None:  # type: ignore[no-untyped-def]
    u = b.UsesGeneric()
    u.g.next.next.value = "deep"
    assert msgpack.unpackb(msgpack.packb(u), strict_map_key=False) == {0: {2: {2: {0: "deep"}}}}


def test_same_pending_child_on_every_read(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    first = x.nested
    assert x.nested is first
    first.field = 1
    x.nested.text = "t"
    assert dict(x) == {3: {0: 1, 1: "t"}}


def test_stale_pending_child_does_not_clobber(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    stale = x.nested
    x.nested = {"field": 9}
    stale.field = 1
    assert x.nested.field == 9


# --------------------------------------------------------------------- type checks with paths


def test_wrong_enum_name_names_the_path(s) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError) as info:
        s.Person.Create(phones=[{"type": "home"}, {"type": "mobil"}])
    assert str(info.value) == \
        "Person.phones[1].type: expected Person.PhoneNumber.Type, got 'mobil'"
    assert info.value.path == "Person.phones[1].type"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("i8", 128, "out of range for Int8"),
    ("i8", -129, "out of range for Int8"),
    ("u8", -1, "out of range for UInt8"),
    ("u64", 2**64, "out of range for UInt64"),
    ("i64", -(2**63) - 1, "out of range for Int64"),
    ("i32", "1", "expected Int32"),
    ("i32", 1.0, "expected Int32"),
    ("i32", True, "expected Int32"),
    ("b", 1, "expected Bool"),
    ("t", b"x", "expected Text"),
    ("d", "x", "expected Data"),
    ("v", 0, "expected Void"),
    ("f32", 1e39, "out of range for Float32"),
    ("f64", "1.0", "expected Float64"),
    ("e", 7.0, "expected Color"),
    ("e", "purple", "expected Color"),
    ("ll", [[1], ["x"]], "expected Int16"),
])
def test_type_checks(b, field, value, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError, match=message) as info:
        b.AllScalars.Create(**{field: value})
    assert info.value.path.startswith(f"AllScalars.{field}")
    x = b.AllScalars()
    with pytest.raises(ValueTypeError, match=message):
        setattr(x, field, value)
    with pytest.raises(ValueTypeError, match=message):
        x[field] = value
    with pytest.raises(ValueTypeError, match=message):
        b.AllScalars({b.AllScalars.cara_schema.by_name[field].number: value})
    assert dict(x) == {}


def test_accepted_conversions(b) -> None:  # type: ignore[no-untyped-def]
    x = b.AllScalars.Create(f32=3, f64=2, d=bytearray(b"ab"), e="blue", i8=-128, u64=2**64 - 1)
    assert x.f32 == 3.0 and type(x.f32) is float
    assert x.f64 == 2.0 and type(x.f64) is float
    assert x.d == b"ab" and type(x.d) is bytes
    assert x.e is b.Color.blue
    x.e = 0
    assert x.e is b.Color.red
    x.e = b"green"
    assert x.e is b.Color.green
    x.f32 = float("inf")
    x.f32 = float("nan")
    x.v = None
    assert x.i8 == -128 and x.u64 == 2**64 - 1


def test_enum_unknown_number_is_kept(b) -> None:  # type: ignore[no-untyped-def]
    x = b.AllScalars({14: 9})
    assert x.e == 9
    assert isinstance(x.e, b.Color)
    assert msgpack.packb(x) == msgpack.packb({14: 9})


def test_struct_of_other_class_is_rejected(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError, match=r"expected Basic\.Inner"):
        b.Basic.Create(nested=b.Defaults())


# ------------------------------------------------------------------------ dict-like behaviour


def test_equality_hash_copy_pickle_do_not_mutate(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(field=1, structs=[{"field": 2}])
    y = b.Basic({0: 1, 2: [{0: 2}]})
    assert x == y
    assert b.Basic() == {}
    with pytest.raises(TypeError):
        hash(x)
    for other in (copy.copy(x), copy.deepcopy(x), pickle.loads(pickle.dumps(x)), x.copy()):
        assert other == x
        assert type(other) is b.Basic
    deep = copy.deepcopy(x)
    deep.structs[0].field = 3
    assert x.structs[0].field == 2
    assert dict(x) == {0: 1, 2: [{0: 2}]}  # nothing vivified by any of the above
    assert dict(y) == {0: 1, 2: [{0: 2}]}


def test_pickle_groups_and_enums(b) -> None:  # type: ignore[no-untyped-def]
    u = b.WithUnion.Create(grp={"g1": 3})
    assert pickle.loads(pickle.dumps(u)) == u
    assert pickle.loads(pickle.dumps(u.grp)) == u.grp
    assert pickle.loads(pickle.dumps(b.Color.blue)) is b.Color.blue


def test_to_dict_and_repr(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(field=1, nested={"text": "t"}, structs=[{"list": [1]}])
    assert x.to_dict() == {"field": 1, "nested": {"text": "t"}, "structs": [{"list": [1]}]}
    assert x.ToDict() == {0: 1, 3: {1: "t"}, 2: [{1: [1]}]}
    assert x.ToDict(with_field_names=True) == x.to_dict()
    assert repr(x) == ("Basic({field: 1, structs: List[Basic]([Basic({list: List[Int32]([1])})]),"
                       " nested: Inner({text: 't'})})")


def test_unknown_field_numbers_survive(b) -> None:  # type: ignore[no-untyped-def]
    data = {0: 1, 9: "from a newer schema", 10: [1, {2: 3}]}
    x = b.Basic(data)
    assert x.field == 1
    assert msgpack.packb(x) == msgpack.packb(data)
    assert x.to_dict() == {"field": 1, 9: "from a newer schema", 10: [1, {2: 3}]}


def test_reserved_names_get_underscore(b) -> None:  # type: ignore[no-untyped-def]
    k = b.Keywords.Create(class_=1, items_="i", keys_=2, which_=True)
    assert k["class"] == 1 and k.class_ == 1
    assert k["items"] == "i" and k.items_ == "i"
    assert list(k.items()) == [(0, 1), (1, "i"), (2, 2), (3, True)]
    assert msgpack.packb(k) == msgpack.packb({0: 1, 1: "i", 2: 2, 3: True})


def test_dict_mutators_convert(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    x.update({"field": 3}, list=[1])
    assert dict(x) == {0: 3, 1: [1]}
    with pytest.raises(ValueTypeError):
        x.update(field="no")
    assert x.setdefault("field", 7) == 3
    assert x.pop("list") == [1]
    del x.field
    assert dict(x) == {}
    x |= {"field": 4}
    assert x.field == 4


def test_get_and_contains(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(field=0)
    assert x.get("field") == 0 and x.get(b"field") == 0 and x.get("list") is None
    assert x.get("list", "d") == "d"
    assert "field" in x and b"field" in x and "0" in x and [] not in x


def test_global_registry(b) -> None:  # type: ignore[no-untyped-def]
    from cara.runtime.registry import GlobalTypeRegistry, lookup

    assert lookup(b.Basic.cara_schema.id) is b.Basic
    assert GlobalTypeRegistry[b.Calc.cara_schema.id] is b.Calc


def test_constants_and_annotations(b) -> None:  # type: ignore[no-untyped-def]
    assert b.answer == 42 and b.greeting == "hi"
    assert b.colors == [b.Color.red, b.Color.blue]
    anns = b.Annotated.cara_schema.annotations
    assert [(a.name, a.value) for a in anns] == [("note", "a struct"), ("level", b.Color.blue)]
    assert b.Annotated.cara_schema.field("x").annotations[0].value == "a field"
    assert b.note("v").value == "v"
    assert "__annotations__" not in vars(b) or isinstance(vars(b)["__annotations__"], dict)


def test_deep_nesting_from_the_wire_is_a_clear_error(b) -> None:  # type: ignore[no-untyped-def]
    data: dict = {}
    for _ in range(100_000):  # beyond any recursion limit, C or Python
        data = {2: [data]}
    with pytest.raises(ValueTypeError, match="nested too deeply"):
        b.Basic(data)


def test_group_class_is_reachable_under_the_stub_name(s) -> None:  # type: ignore[no-untyped-def]
    group = s.Person._employment_Group  # the name the .pyi stubs give it
    p = s.Person.Create(employment={"school": "x"})
    assert type(p.employment) is group
    assert group.Create(employer="y").which() == "employer"
    assert "_employment_Group" not in s.Person.cara_schema.by_key


@pytest.mark.parametrize("value", [0.1, 1 / 3, 1e-40, -2.5, 16777217, 3.4028234663852886e38])
def test_float32_holds_what_the_wire_holds(b, value) -> None:  # type: ignore[no-untyped-def]
    """A Float32 field stores its value rounded to single precision (as the wire carries it),
    so binary and msgpack round trips compare equal, by every way of storing it."""
    single = struct.unpack("<f", struct.pack("<f", value))[0]
    made = [b.AllScalars.Create(f32=value), b.AllScalars({10: value}),
            b.AllScalars({"f32": value}), b.AllScalars()]
    made[-1].f32 = value
    for s in made:
        assert s.f32 == single and type(s.f32) is float
        assert b.AllScalars.from_bytes(s.to_bytes()) == s
        assert b.AllScalars.from_bytes(s.to_bytes(packed=True), packed=True) == s
        assert b.AllScalars.from_msgpack(s.to_msgpack()) == s
    assert b.AllScalars.Create(f64=value).f64 == value  # Float64 keeps every bit
