"""Typed lists and enums."""

from __future__ import annotations

import copy
import pickle

import msgpack
import pytest

from cara.errors import ValueTypeError
from cara.runtime import Int32, List, Text


def test_list_class_and_repr() -> None:
    L = List[Int32]
    assert L is List[Int32]
    assert repr(L([5])) == "List[Int32]([5])"
    assert L.Create(1, 2) == [1, 2]
    assert List[List[Text]]([["a"], []]) == [["a"], []]


@pytest.mark.parametrize("mutate", [
    lambda lst: lst.append("x"),
    lambda lst: lst.extend([1, "x"]),
    lambda lst: lst.insert(0, "x"),
    lambda lst: lst.__setitem__(0, "x"),
    lambda lst: lst.__setitem__(slice(0, 1), ["x"]),
    lambda lst: lst.__iadd__(["x"]),
    lambda lst: lst + ["x"],  # noqa: RUF005 - testing List.__add__
])
def test_every_mutator_converts(mutate) -> None:  # type: ignore[no-untyped-def]
    lst = List[Int32]([1])
    with pytest.raises(ValueTypeError, match="expected Int32"):
        mutate(lst)
    assert lst == [1]


def test_mutators_keep_the_class() -> None:
    lst = List[Int32]([1, 2])
    lst += [3]
    lst *= 2
    assert type(lst) is List[Int32] and lst == [1, 2, 3, 1, 2, 3]
    assert type(lst + [4]) is List[Int32]  # noqa: RUF005 - testing List.__add__
    assert type(lst * 2) is List[Int32]
    lst[1:3] = [7]
    assert lst == [1, 7, 1, 2, 3]
    with pytest.raises(ValueTypeError, match=r"List\[Int32\]\[0\]: 2147483648 is out of range"):
        lst.insert(0, 2**31)


def test_list_error_path_inside_struct(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError) as info:
        b.Basic.Create(structs=[{}, {"list": [1, "two"]}])
    assert info.value.path == "Basic.structs[1].list[1]"


def test_list_rejects_non_lists(b) -> None:  # type: ignore[no-untyped-def]
    for bad in ("abc", b"abc", {0: 1}, 5):
        with pytest.raises(ValueTypeError):
            b.Basic.Create(list=bad)
    assert b.Basic.Create(list=(1, 2)).list == [1, 2]


def test_get_queries(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(structs=[{"field": 1}, {"field": 2, "nested": {"field": 5}}])
    assert x.structs.Get(field=2).nested.field == 5
    assert x.structs.Get(nested__field=5).field == 2
    assert x.structs.Get(_with_index=True, field=2)[0] == 1
    with pytest.raises(KeyError):
        x.structs.Get(field=3)
    assert dict(x.structs[0]) == {0: 1}  # queries read without storing


def test_get_matches_enum_fields_by_member_number_and_name(s) -> None:  # type: ignore[no-untyped-def]
    p = s.Person.Create(phones=[{"number": "1", "type": "work"}, {"number": "2", "type": "home"}])
    home = s.Person.PhoneNumber.Type.home
    for wanted in (home, 1, "home"):
        assert p.phones.Get(type=wanted).number == "2"
    with pytest.raises(KeyError):
        p.phones.Get(type="mobile")
    with pytest.raises(ValueTypeError, match="'Home' is not one of its enumerants"):
        p.phones.Get(type="Home")  # names no enumerant: can never match, so it is an error


def test_enum_compares_with_its_name(s) -> None:  # type: ignore[no-untyped-def]
    """``phone.type == "home"`` as pycapnp users write it: true for the member's own name,
    false for another enumerant's, an error for a string that names none (never silently
    false); numbers and members compare as before, and hashing stays the number's."""
    t = s.Person.PhoneNumber.Type
    phone = s.Person.PhoneNumber.Create(type="home")
    assert phone.type == "home" and "home" == phone.type
    assert not phone.type != "home" and phone.type != "work" and not phone.type == "work"
    assert phone.type in ("work", "home") and phone.type == 1 and phone.type == t.home
    assert hash(phone.type) == hash(1) and {1: "x"}[phone.type] == "x"
    for typo in ("hme", "Home", ""):
        with pytest.raises(ValueTypeError, match=r"Person\.PhoneNumber\.Type: .* enumerants"):
            phone.type == typo  # noqa: B015
        with pytest.raises(ValueTypeError):
            phone.type != typo  # noqa: B015
    unknown = t(40)  # a number the schema does not name: no name equals it
    assert unknown != "home" and unknown == 40


def test_list_copy_pickle() -> None:
    lst = List[List[Int32]]([[1], [2]])
    for other in (copy.copy(lst), copy.deepcopy(lst), pickle.loads(pickle.dumps(lst))):
        assert other == lst and type(other) is type(lst)
    deep = copy.deepcopy(lst)
    deep[0].append(3)
    assert lst == [[1], [2]]


def test_to_list(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic.Create(structs=[{"field": 1}])
    assert x.structs.ToList() == [{"field": 1}]


def test_enum_is_intenum(b) -> None:  # type: ignore[no-untyped-def]
    import enum

    assert issubclass(b.Color, enum.IntEnum)
    assert b.Color.blue == 2
    assert b.Color("green") is b.Color.green
    assert b.Color(1) is b.Color.green
    assert msgpack.packb(b.Color.blue) == msgpack.packb(2)
    unknown = b.Color(40)
    assert unknown == 40 and isinstance(unknown, b.Color)
    with pytest.raises(ValueError):
        b.Color(70000)
    assert b.AllScalars.Create(el=["red", 2, b.Color.green]).el == [0, 2, 1]


def test_enumerant_annotations(b) -> None:  # type: ignore[no-untyped-def]
    assert b.Color._cara_enumerant_annotations_ == {"red": [], "green": [], "blue": []}


NULLS_CAPNP = """@0xe1f2a3b4c5d6e7f9;
struct Nulls {
  texts @0 :List(Text);
  datas @1 :List(Data);
  lists @2 :List(List(Int32));
  structs @3 :List(Inner);
  struct Inner { x @0 :Int32; }
}
"""


def test_null_list_elements_read_as_their_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """libcapnp leaves the elements of a pointer list null until set; cara reads them as every
    Cap'n Proto reader does (the element type's default), and writes them back readable."""
    from tests.runtime.schemas import load_text
    from tests.support.reference import require_pycapnp

    capnp = require_pycapnp()
    (tmp_path / "nulls.capnp").write_text(NULLS_CAPNP)
    peer = capnp.load(str(tmp_path / "nulls.capnp"))
    msg = peer.Nulls.new_message()
    msg.init("texts", 2)[1] = "b"
    msg.init("datas", 2)
    msg.init("lists", 2)
    mod = load_text(NULLS_CAPNP, "nulls.capnp")
    value = mod.Nulls.from_bytes(msg.to_bytes())
    assert value.texts == ["", "b"] and value.datas == [b"", b""] and value.lists == [[], []]
    with peer.Nulls.from_bytes(value.to_bytes()) as back:
        assert list(back.texts) == ["", "b"] and list(back.datas) == [b"", b""]
    assert mod.Nulls(msgpack.unpackb(msgpack.packb(value), strict_map_key=False)) == value
    built = mod.Nulls.Create(texts=[None, "x"], structs=[None])
    assert built.texts == ["", "x"] and built.structs == [{}]
    built.lists.append(None)
    assert built.lists == [[]]
    with pytest.raises(ValueTypeError, match=r"Nulls\.texts\[0\]"):
        mod.Nulls.Create(texts=[1])


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda lst: lst.extend([{}, {"type": "fax"}]), "Person.phones[4].type"),
    (lambda lst: lst.__iadd__([{"type": "fax"}]), "Person.phones[3].type"),
    (lambda lst: lst.__setitem__(slice(1, 2), [{}, {"type": "fax"}]), "Person.phones[2].type"),
    (lambda lst: lst.__setitem__(slice(None, None, 2), [{}, {"type": "fax"}]),
     "Person.phones[2].type"),
    (lambda lst: lst.__setitem__(slice(-1, None), [{"type": "fax"}]), "Person.phones[2].type"),
    (lambda lst: lst.append({"type": "fax"}), "Person.phones[3].type"),
    (lambda lst: lst.insert(-1, {"type": "fax"}), "Person.phones[2].type"),
    (lambda lst: lst.insert(99, {"type": "fax"}), "Person.phones[3].type"),
    (lambda lst: lst.__setitem__(-1, {"type": "fax"}), "Person.phones[2].type"),
    (lambda lst: lst.extend(iter([{}, 5])), "Person.phones[4]"),
])
def test_list_mutator_errors_name_the_field_and_index(s, mutate, path) -> None:  # type: ignore[no-untyped-def]
    """A list read from a struct names the field and the index the element would take, as
    construction names ``Person.phones[1].type`` (the index in the list, not in the argument);
    the list is unchanged."""
    for read in (lambda p: p.phones, lambda p: p["phones"]):
        p = s.Person.Create(phones=[{"number": "1"}, {"number": "2"}, {"number": "3"}])
        lst = read(p)
        with pytest.raises(ValueTypeError) as info:
            mutate(lst)
        assert info.value.path == path
        assert [x.number for x in p.phones] == ["1", "2", "3"]
    pending = s.Person().phones  # an unset field's list names the field too
    with pytest.raises(ValueTypeError) as info:
        pending.extend([{"type": "fax"}])
    assert info.value.path == "Person.phones[0].type"
    with pytest.raises(ValueTypeError) as info:  # a list of its own names its type
        List[Int32]([1]).extend([2, "x"])
    assert info.value.path == "List[Int32][2]"
