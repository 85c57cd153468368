"""Schema nodes survive the trip through the generated module's literal unchanged: every node
the reference compiler emits for the corpus, compared field by field."""

from __future__ import annotations

import math
from pathlib import Path

from cara.codegen.literal import from_literal, render, to_literal
from cara.schema import model
from tests.support.reference import reference_request


def _roundtrip(node: model.Node) -> model.Node:
    text = render(to_literal(node))
    data = eval(compile(text, "<literal>", "eval"), {})  # the generated module does the same
    return from_literal(model.Node, data)


def _canon(data: object) -> object:
    """Plain data where NaN equals NaN and -0.0 differs from 0.0 (as bit patterns would)."""
    if isinstance(data, float):
        if math.isnan(data):
            return ("nan",)
        return ("float", data, math.copysign(1.0, data))
    if isinstance(data, dict):
        return {k: _canon(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_canon(v) for v in data]
    return data


def test_every_node_of_test_capnp_round_trips(corpus_092: Path) -> None:
    request = reference_request(["c++/src/capnp/test.capnp"], cwd=corpus_092,
                                import_path=["c++/src"])
    assert len(request.nodes) > 100
    for node in request.nodes:
        back = _roundtrip(node)
        assert type(back) is model.Node
        assert _canon(to_literal(back)) == _canon(to_literal(node)), node.displayName
        if "nan" not in repr(node):
            assert back == node, node.displayName


def test_rendering_is_independent_of_dict_order_and_keeps_float_edge_cases() -> None:
    values = [float("inf"), float("-inf"), -0.0, 1e-310, 0.1]
    node = model.Node(id=1, displayName="x.capnp:C", which="const", const=model.NodeConst(
        type=model.Type(which="list"),
        value=model.Value(which="list", list=model.PointerValue(
            type=model.Type(which="float64"), value=values))))
    back = _roundtrip(node)
    assert back.const is not None and back.const.value.list is not None
    out = back.const.value.list.value
    assert isinstance(out, list)
    assert out[:2] == values[:2]
    assert math.copysign(1.0, out[2]) == -1.0
    assert out[3:] == values[3:]
    nan = model.Node(id=2, which="const", const=model.NodeConst(
        value=model.Value(which="float32", float32=float("nan"))))
    nan_back = _roundtrip(nan)
    assert nan_back.const is not None and math.isnan(nan_back.const.value.float32)


def test_default_fields_are_left_out() -> None:
    assert to_literal(model.Node(id=5)) == {"id": 5}
    assert render(to_literal(model.Node(id=0x1234567890))) == "{'id': 0x1234567890}"


def test_every_model_field_is_planned_from_its_annotation_string() -> None:
    """Generated modules decode nodes without ``typing.get_type_hints`` (slow at import): each
    annotation in model.py is one of the forms the string reader knows, and it reaches the same
    model class as typing does."""
    import dataclasses
    import typing

    from cara.codegen.literal import _converter_for_annotation, _identity

    classes = [c for c in vars(model).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c)]
    assert len(classes) > 30
    for cls in classes:
        hints = typing.get_type_hints(cls, vars(model), {"Literal": typing.Literal})
        for f in dataclasses.fields(cls):
            assert isinstance(f.type, str)
            convert = _converter_for_annotation(f.type)
            assert convert is not None, (cls.__name__, f.name, f.type)
            hint = hints[f.name]
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            target = inner[0] if typing.get_origin(hint) is not None and inner else hint
            if typing.get_origin(target) is list:
                target = typing.get_args(target)[0]
            is_model = isinstance(target, type) and dataclasses.is_dataclass(target)
            assert (convert is not _identity) == is_model, (cls.__name__, f.name)
