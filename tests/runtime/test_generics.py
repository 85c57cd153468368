"""Generics (``S[T]``, brands in field types), ReplaceTypes, AnyPointer."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from cara.errors import ValueTypeError
from cara.runtime import Data, Int32, List, Text


def test_unbound_parameters_hold_anything(b) -> None:  # type: ignore[no-untyped-def]
    g = b.Generic.Create(value={"any": ["thing"]})
    assert g.value == {"any": ["thing"]}
    assert g.defaulted == "defaulteds"
    assert dict(g) == {0: {"any": ["thing"]}}


def test_binding_checks_types(b) -> None:  # type: ignore[no-untyped-def]
    GT = b.Generic[Text]
    assert GT is b.Generic[Text] and GT is b.Generic[str]
    assert GT.__name__ == "Generic[Text]"
    assert GT.Create(value="x").value == "x"
    with pytest.raises(ValueTypeError, match=r"Generic\[Text\].value: expected Text"):
        GT.Create(value=1)
    nested = GT.Create(next={"next": {"value": "deep"}}, inner={"t": "i"})
    assert type(nested.next.next) is GT
    assert nested.inner.t == "i"
    with pytest.raises(ValueTypeError, match="expected Text"):
        GT.Create(inner={"t": 5})


def test_binding_with_struct_and_list(b) -> None:  # type: ignore[no-untyped-def]
    GB = b.Generic[b.Basic]
    g = GB.Create(value={"field": 3})
    assert type(g.value) is b.Basic
    P = b.Pair[Text, List[Int32]]
    assert P.Create(a="x", b=[1]).b == [1]
    with pytest.raises(ValueTypeError):
        P.Create(b=["x"])
    with pytest.raises(TypeError, match="pointer types"):
        b.Generic[Int32]
    with pytest.raises(TypeError, match="takes 2 type argument"):
        b.Pair[Text]


def test_brands_in_field_types(b) -> None:  # type: ignore[no-untyped-def]
    u = b.UsesGeneric.Create(g={"value": "t"}, gb={"value": {"field": 1}},
                             inner={"t": b"d"}, pair={"a": "x", "b": [1, 2]})
    assert type(u.g) is b.Generic[Text]
    assert type(u.gb.value) is b.Basic
    assert type(u.inner) is b.Generic[Data].Inner
    assert u.pair.b == [1, 2]
    with pytest.raises(ValueTypeError, match=r"UsesGeneric.g.value: expected Text"):
        b.UsesGeneric.Create(g={"value": 5})
    assert msgpack.packb(u) == msgpack.packb(
        {0: {0: "t"}, 1: {0: {0: 1}}, 2: {0: b"d"}, 3: {0: "x", 1: [1, 2]}})


def test_generic_pickle(b) -> None:  # type: ignore[no-untyped-def]
    g = b.Generic[Text].Create(value="x", next={"value": "y"})
    again = pickle.loads(pickle.dumps(g))
    assert again == g and type(again) is b.Generic[Text]


def test_generic_interface(b) -> None:  # type: ignore[no-untyped-def]
    GI = b.GenIface[Text]
    impl = GI(lambda x: x + "!")
    assert impl.get("a") == "a!"
    with pytest.raises(ValueTypeError, match="expected Text"):
        impl.get(1)
    loose = b.GenIface(lambda x: x)
    assert loose.get([1]) == [1]


def test_replace_types(b) -> None:  # type: ignore[no-untyped-def]
    Replaced = b.Basic.ReplaceTypes([(b.Basic.Inner, b.Defaults)])
    assert Replaced is not b.Basic
    x = Replaced.Create(nested={"i": 3})
    assert type(x.nested) is not b.Basic.Inner
    assert x.nested.i == 3
    assert x.nested.t == "hello"
    # recursively: the list of Basic is now a list of the replaced class
    y = Replaced.Create(structs=[{"nested": {"i": 1}}])
    assert y.structs[0].nested.i == 1
    CalcR = b.Calc.ReplaceTypes([(b.Basic, b.Basic.Inner)])
    make = CalcR.cara_schema.method("make")
    assert make.result_class.cara_schema.name == "Basic.Inner"
    made = CalcR({"make": lambda field: {"field": field, "text": "t"}}).make(2)
    assert made.text == "t"
    assert b.Calc.cara_schema.method("make").result_class is b.Basic  # original untouched
