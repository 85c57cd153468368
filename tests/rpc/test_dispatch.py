"""cara.rpc.dispatch: what a handler works out once per class, and what stays per object."""

from __future__ import annotations

import asyncio
from typing import Any

from cara.rpc.caps import LocalCap
from tests.rpc.schemas import runtime_module


def _add(obj: object) -> Any:
    m = runtime_module()
    info = m.Calc.cara_schema
    key = next(k for k, spec in info.all_methods.items() if spec.name == "add")
    return LocalCap(obj).impl.handler(*key)


def test_objects_of_one_class_share_the_plan_and_keep_their_own_method() -> None:
    m = runtime_module()

    class Adder(m.Calc):
        def __init__(self, offset: int) -> None:
            self.offset = offset

        def add(self, a: int, b: int) -> int:
            return a + b + self.offset

    class Async(m.Calc):
        async def add(self, a: int, b: int) -> int:
            return a - b

    one, two = _add(Adder(1)), _add(Adder(100))
    assert one.run({0: 2, 1: 3})[0] == 6 and two.run({0: 2, 1: 3})[0] == 105
    assert one.method is two.method

    # an object whose attribute stands in for the class's method is called through it
    odd = Adder(0)
    odd.add = lambda a, b: a * b  # type: ignore[method-assign]
    assert _add(odd).run({0: 2, 1: 3})[0] == 6  # (2 * 3, where the class gives 2 + 3)
    assert _add(odd).run({0: 4, 1: 5})[0] == 20
    assert _add(Adder(1)).run({0: 4, 1: 5})[0] == 10  # (the class's plan is unchanged)

    # a class with the same method name but an async implementation has its own plan
    result = _add(Async()).run({0: 9, 1: 4})
    assert asyncio.run(result)[0] == 5


def test_whether_a_result_is_awaitable_agrees_with_inspect() -> None:
    """``is_awaitable`` answers by type once asked, except for generators, which a
    ``types.coroutine`` marks one by one."""
    import collections.abc
    import inspect
    import types

    from cara.rpc.eager import is_awaitable

    class Later:
        def __await__(self) -> Any:
            yield

    class Registered:  # (an Awaitable by registration, not by __await__)
        pass
    collections.abc.Awaitable.register(Registered)

    def plain_generator() -> Any:
        yield 1

    @types.coroutine
    def old_style() -> Any:
        yield

    async def coro() -> None:
        pass

    loop = asyncio.new_event_loop()
    try:
        c = coro()
        values = [1, 2.5, "x", None, {}, [], Later(), Later(), Registered(), plain_generator(),
                  old_style(), plain_generator(), old_style(), c, loop.create_future()]
        for _ in range(2):  # (asked, then known)
            assert [is_awaitable(v) for v in values] == [inspect.isawaitable(v) for v in values]
        assert is_awaitable(old_style()) and not is_awaitable(plain_generator())
        c.close()
    finally:
        loop.close()
