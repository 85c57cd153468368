"""Local interfaces: wrapping, subclassing, converting calls, addressing, the RPC description."""

from __future__ import annotations

import asyncio
import functools

import pytest

from cara.errors import ValueTypeError
from cara.runtime import Interface, find_capabilities


def test_wrap_dict_and_convert(b) -> None:  # type: ignore[no-untyped-def]
    def add(a: int, b: int) -> int:
        return a + b

    calc = b.Calc({
        "add": add,
        "divmod": lambda a, b_: divmod(a, b_),
        "make": lambda field: {"field": field},
        "take": lambda basic: basic.field * 2,
        "nothing": lambda: "ignored",
    })
    assert calc.add(2, 3) == 5
    assert calc.add(a=2, b=3) == 5
    r = calc.divmod(7, 2)
    assert (r.q, r.r) == (3, 1)
    made = calc.make(4)
    assert type(made) is b.Basic and made.field == 4
    assert calc.take(field=21) == 42  # kwargs boxed into the struct param
    assert calc.take({"field": 1}) == 2
    assert calc.nothing() is None


def test_multi_result_as_dict_or_struct(b) -> None:  # type: ignore[no-untyped-def]
    calc = b.Calc({"divmod": lambda a, b_: {"q": a // b_, "r": a % b_}})
    assert calc.divmod(9, 4).to_dict() == {"q": 2, "r": 1}


def test_argument_checks(b) -> None:  # type: ignore[no-untyped-def]
    calc = b.Calc({"add": lambda a, b_: a + b_})
    with pytest.raises(TypeError, match="takes 2 argument"):
        calc.add(1, 2, 3)  # the original silently dropped extra arguments
    with pytest.raises(TypeError, match="unexpected keyword"):
        calc.add(1, c=2)
    with pytest.raises(TypeError, match="multiple values"):
        calc.add(1, a=2)
    with pytest.raises(ValueTypeError, match=r"Calc.add\$Params.a: expected Int32"):
        calc.add("1", 2)


def test_result_checks(b) -> None:  # type: ignore[no-untyped-def]
    calc = b.Calc({"add": lambda a, b_: "not a number"})
    with pytest.raises(ValueTypeError, match="expected Int32"):
        calc.add(1, 2)


@pytest.mark.parametrize("impl", [
    lambda text: text,
    functools.partial(lambda prefix, text: prefix + text, ""),
    str,
])
def test_any_callable_implements_a_one_method_interface(b, impl) -> None:  # type: ignore[no-untyped-def]
    assert b.Echo(impl).echo("hi") == "hi"


def test_bound_method_and_object(b) -> None:  # type: ignore[no-untyped-def]
    class Thing:
        def shout(self, text: str) -> str:
            return text.upper()

        def echo(self, text: str) -> str:
            return text + "!"

    assert b.Echo(Thing().shout).echo("a") == "A"
    assert b.Echo(Thing()).echo("a") == "a!"


def test_subclass_implementation(b) -> None:  # type: ignore[no-untyped-def]
    class Impl(b.Sub):
        def add(self, a: int, b_: int) -> int:
            return a + b_

        def extra(self) -> int:
            return 7

    impl = Impl()
    assert isinstance(impl, b.Calc) and isinstance(impl, Interface)
    assert b.Sub(impl) is impl and b.Calc(impl) is impl
    assert impl[(b.Calc.cara_schema.id, 0)](1, 2) == 3
    assert impl["extra"]() == 7
    assert impl[0]() == 7  # own method index
    with pytest.raises(NotImplementedError, match="does not implement"):
        impl["divmod"](1, 2)


def test_methods_addressable_by_interface_and_index(b) -> None:  # type: ignore[no-untyped-def]
    schema = b.Sub.cara_schema
    calc_id, sub_id = b.Calc.cara_schema.id, schema.id
    assert set(schema.all_methods) == {(sub_id, 0), *((calc_id, i) for i in range(5))}
    add = schema.method((calc_id, 0))
    assert (add.name, add.index, add.interface_id) == ("add", 0, calc_id)
    assert add.param_class.cara_schema.name == "Calc.add$Params"
    assert [f.name for f in add.result_class.cara_schema.fields] == ["sum"]
    make = schema.method("make")
    assert make.results_named and make.result_class is b.Basic
    assert b.Calc.cara_schema.method("take").params_named


def test_server_side_invoke(b) -> None:  # type: ignore[no-untyped-def]
    calc = b.Calc({"add": lambda a, b_=0: a + b_, "divmod": divmod})
    add = b.Calc.cara_schema.method("add")
    result = add.invoke(calc, add.param_class({0: 4, 1: 5}))
    assert dict(result) == {0: 9}
    assert dict(add.invoke(calc, add.param_class({0: 4}))) == {0: 4}
    dm = b.Calc.cara_schema.method("divmod")
    assert dict(dm.invoke(calc, dm.param_class({0: 7, 1: 2}))) == {0: 3, 1: 1}


def test_async_implementation(b) -> None:  # type: ignore[no-untyped-def]
    async def echo(text: str) -> str:
        await asyncio.sleep(0)
        return text * 2

    e = b.Echo(echo)
    assert asyncio.run(e.echo("ab")) == "abab"
    method = b.Echo.cara_schema.method("echo")
    out = asyncio.run(method.invoke(e, method.param_class({0: "x"})))
    assert dict(out) == {0: "xx"}


def test_remote_proxy(b) -> None:  # type: ignore[no-untyped-def]
    sent = []

    def send(method, params):  # type: ignore[no-untyped-def]
        sent.append((method.key, dict(params)))
        return {0: params.a + params.b}

    proxy = b.Calc.cara_remote(send)
    assert proxy.add(1, 2) == 3
    assert sent == [((b.Calc.cara_schema.id, 0), {0: 1, 1: 2})]


def test_callbacks_and_capability_values(b) -> None:  # type: ignore[no-untyped-def]
    seen = []

    class Server(b.BackAndForth):
        def callMeMaybe(self, callback):  # type: ignore[no-untyped-def]
            seen.append(callback(lambda: "internal callback"))

        def otherFunc(self) -> None:
            pass

    server = b.BackAndForth(Server())
    server.callMeMaybe(lambda callback=None: "from client")
    assert seen == ["from client"]
    holds = b.HoldsCaps.Create(echo=lambda text: text, echoes=[str], inner={"calc": {}})
    assert isinstance(holds.echo, b.Echo)
    caps = find_capabilities(holds)
    assert [path for path, _ in caps] == [(0,), (1, 0), (2, 0)]
    with pytest.raises(ValueTypeError, match="one-method interface"):
        b.HoldsCaps.Create(inner={"calc": lambda: 1})
    with pytest.raises(ValueTypeError, match="expected Echo"):
        b.HoldsCaps.Create(echo=5)


def test_needs_an_implementation(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="needs an implementation"):
        b.Echo()


def test_untyped_capability_reference_becomes_a_typed_proxy(b) -> None:  # type: ignore[no-untyped-def]
    class Ref:
        def __cara_capability__(self, iface):  # type: ignore[no-untyped-def]
            return iface.cara_remote(lambda method, params: {0: "remote " + params.text})

    holds = b.HoldsCaps({0: Ref()})
    assert isinstance(holds.echo, b.Echo)
    assert holds.echo.echo("hi") == "remote hi"


def test_a_single_capability_result_is_boxed_as_before_the_shortcut() -> None:
    """One capability result: an object boxes at once; a mapping naming the result (a dict
    or any other Mapping) still gives the capability it names; None and bad values go the
    long way, which words the error."""
    import collections.abc

    import cara

    m = cara.loads("""@0xd1e2f3a4b5c6d7e9;
interface Thing { get @0 () -> (v :Int32); }
interface Maker { make @0 () -> (thing :Thing); }
""", name="single_cap_result.capnp")
    spec = m.Maker.cara_schema.method("make")

    class Impl(m.Thing):  # type: ignore[name-defined,misc]
        def get(self) -> int:
            return 7

    class Named(collections.abc.Mapping):  # type: ignore[type-arg]
        def __init__(self, **kw: object) -> None:
            self.kw = kw

        def __getitem__(self, k: str) -> object:
            return self.kw[k]

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(self.kw)

        def __len__(self) -> int:
            return len(self.kw)

    obj = Impl()
    for value in (obj, {"thing": obj}, Named(thing=obj), obj):  # (twice: asked, then known)
        boxed = spec.box_results(value)
        assert type(boxed) is spec.result_class and isinstance(boxed.thing, m.Thing)
        assert boxed.thing.get() == 7
    assert spec.box_results(None) == spec.result_class()
    with pytest.raises(ValueTypeError, match=r"Maker.make\(\) result"):
        spec.box_results(5)
