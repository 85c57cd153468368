"""Method tables built from the reference compiler's nodes: addresses, fields, inheritance."""

from __future__ import annotations

from cara.rpc import describe
from tests.rpc.schemas import load, runtime_module


def test_methods_are_addressed_by_interface_id_and_index() -> None:
    calc = load()["Calc"]
    names = ["add", "fail", "sleep", "pair", "info", "takeInfo", "callBack", "makeCallback",
             "callAll"]
    assert [m.name for m in calc.own] == names
    assert [(m.interface_id, m.index) for m in calc.own] == [(calc.id, i) for i in range(9)]
    add = calc.by_name["add"]
    assert [(f.name, f.number) for f in add.params] == [("a", 0), ("b", 1)]
    assert [(f.name, f.number) for f in add.results] == [("sum", 0)]
    assert not add.params_named and not add.results_named
    assert calc.by_name["info"].results_named and not calc.by_name["info"].params_named
    assert calc.by_name["takeInfo"].params_named
    cb = calc.by_name["callBack"].params[0]
    assert cb.kind == "interface" and cb.interface_id == load()["Callback"].id


def test_extends_keeps_each_methods_own_interface_id() -> None:
    I = load()
    both, left, right = I["Both"], I["Left"], I["Right"]
    assert set(both.methods) == {(both.id, 0), (left.id, 0), (right.id, 0)}
    assert both.methods[(left.id, 0)] is left.methods[(left.id, 0)]
    assert both.methods[(right.id, 0)] is right.methods[(right.id, 0)]
    assert both.by_name["name"] is left.by_name["name"]  # nearest (first) superclass wins
    assert set(both.superclass_ids) == {left.id, right.id}


def test_runtime_classes_describe_the_same_addresses() -> None:
    nodes, m = load(), runtime_module()
    for name in ("Calc", "Both", "Holder", "Echo"):
        from_nodes, from_runtime = nodes[name], describe(getattr(m, name))
        assert from_runtime is not None and from_runtime.pyclass is getattr(m, name)
        assert from_runtime.id == from_nodes.id
        assert set(from_runtime.methods) == set(from_nodes.methods)

    class Impl(m.Calc):
        pass

    assert describe(Impl) is describe(m.Calc)
    assert describe(Impl()) is describe(m.Calc)
    assert describe(object()) is None and describe(len) is None
