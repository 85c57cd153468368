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
