"""Cap'n Proto's calculator sample on cara, for the interop and pipelining tests: a server
written as /work/shared/acceptance/calc_cara_server.py writes it (runtime classes of the
corpus's ``calculator.capnp``), served in the test's own loop, and the sample client's steps as
/work/shared/acceptance/calc_cara_client.py takes them (promises used before they resolve).

The server's objects count themselves (:data:`LIVE`) so a test can see them released; every
expected value is computed from the expression, never taken from cara.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

import cara
from tests.peers.harness import calculator_schema

#: The sample client's steps, in order (the same names as the pycapnp peer prints).
STEPS = ("literal", "operators", "pipelining", "functions", "callback")
OPERATORS: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b,
}


@functools.cache
def calc_module() -> Any:
    """The calculator sample as cara runtime classes (skips when the corpus is missing)."""
    return cara.load(str(calculator_schema()))


def _name(w: Any) -> str:
    return str(getattr(w, "name", w))


class Live:
    """Counts the server objects alive (made and not yet collected)."""

    def __init__(self) -> None:
        self.count = 0

    def now(self) -> int:
        gc.collect()
        return self.count


def implementations(live: Live | None = None) -> Any:
    """The calculator's server classes (a fresh set, counting into ``live``); returns the
    Calculator implementation class."""
    C = calc_module().Calculator
    counter = live if live is not None else Live()

    class Counted:
        def __init__(self) -> None:
            counter.count += 1

        def __del__(self) -> None:
            counter.count -= 1

    async def ev(expression: Any, params: Any = ()) -> float:
        w = _name(expression.which())
        if w == "literal":
            return float(expression.literal)
        if w == "previousResult":
            return float(await expression.previousResult.read())
        if w == "parameter":
            return float(params[expression.parameter])
        if w == "call":
            args = await asyncio.gather(*(ev(p, params) for p in expression.call.params))
            return float(await expression.call.function.call(list(args)))
        raise ValueError(f"unknown expression {w}")

    class ValueImpl(Counted, C.Value):
        def __init__(self, v: float) -> None:
            super().__init__()
            self.v = v

        def read(self) -> float:
            return self.v

    class FunctionImpl(Counted, C.Function):
        def __init__(self, n: int, body: Any) -> None:
            super().__init__()
            self.n, self.body = n, body

        async def call(self, params: Any) -> float:
            if len(params) != self.n:
                raise ValueError(f"the function takes {self.n} parameters, got {len(params)}")
            return await ev(self.body, params)

    class OperatorImpl(Counted, C.Function):
        def __init__(self, op: Any) -> None:
            super().__init__()
            self.op = _name(op)

        def call(self, params: Any) -> float:
            a, b = params
            return OPERATORS[self.op](a, b)

    class CalculatorImpl(C):
        async def evaluate(self, expression: Any) -> Any:
            return ValueImpl(await ev(expression))

        def defFunction(self, paramCount: int, body: Any) -> Any:
            return FunctionImpl(paramCount, body)

        def getOperator(self, op: Any) -> Any:
            return OperatorImpl(op)

    return CalculatorImpl


@contextlib.asynccontextmanager
async def serve_calculator(url: str = "capnp://127.0.0.1:0", live: Live | None = None,
                           impl: Any = None, **options: Any) -> AsyncIterator[cara.Server]:
    """A cara calculator server on ``url`` in this loop (``impl``: the bootstrap object,
    default a fresh CalculatorImpl)."""
    server = cara.Server(**options)
    server.bind(url)
    if impl is None:
        impl = implementations(live)()
    cara.register_interface(server, calc_module().Calculator, impl)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def calculator_client(url: str, **options: Any) -> AsyncIterator[tuple[cara.Client, Any]]:
    """A started cara client on ``url`` and its Calculator proxy."""
    client = cara.Client(**options)
    client.connect(url)
    await client.start()
    try:
        yield client, calc_module().Calculator(client)
    finally:
        await client.stop()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host.strip("[]"), int(port)


def call(function: Any, *params: dict[str, Any]) -> dict[str, Any]:
    return {"call": {"function": function, "params": list(params)}}


def lit(x: float) -> dict[str, Any]:
    return {"literal": x}


async def run_client_steps(c: Any) -> list[str]:
    """The sample client's five steps on Calculator proxy ``c``, pipelined as the acceptance
    client does; returns ``<step> PASS`` lines (an assertion fails the step)."""
    C = calc_module().Calculator
    calls: list[tuple[float, ...]] = []

    class Pow(C.Function):
        def call(self, params: Any) -> float:
            calls.append(tuple(params))
            return float(params[0] ** params[1])

    done: list[str] = []
    # literal: read() pipelined on evaluate's promised value
    assert await c.evaluate(lit(123)).value.read() == 123
    done.append("literal PASS")
    # operators: unresolved getOperator promises passed as capabilities
    add, sub = c.getOperator("add"), c.getOperator("subtract")
    r = await c.evaluate(call(sub, call(add, lit(123), lit(45)), lit(67.0))).value.read()
    assert r == 123 + 45 - 67, r
    done.append("operators PASS")
    # pipelining: previousResult is a promised Value
    mul = c.getOperator("multiply")
    v1 = c.evaluate(call(mul, lit(4), lit(6))).value
    v2 = c.evaluate(call(add, {"previousResult": v1}, lit(3))).value
    v3 = c.evaluate(call(add, {"previousResult": v1}, lit(5))).value
    assert (await v2.read(), await v3.read()) == (4 * 6 + 3, 4 * 6 + 5)
    done.append("pipelining PASS")
    # functions: defFunction with parameters, one defined in terms of another
    f = c.defFunction(2, call(add, call(mul, {"parameter": 0}, lit(100)),
                              {"parameter": 1})).func
    g = c.defFunction(1, call(mul, call(f, {"parameter": 0},
                                        call(add, {"parameter": 0}, lit(1))), lit(2))).func
    f_read = c.evaluate(call(f, lit(12), lit(34))).value.read()
    g_read = c.evaluate(call(g, lit(21))).value.read()
    assert await f_read == 12 * 100 + 34
    assert await g_read == (21 * 100 + 22) * 2
    done.append("functions PASS")
    # callback: a client-side Function the server calls back
    got = await c.evaluate(call(Pow(), lit(2), call(add, lit(4), lit(5)))).value.read()
    assert got == 2 ** 9 and calls == [(2.0, 9.0)], (got, calls)
    done.append("callback PASS")
    return done
