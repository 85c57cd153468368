"""Cap'n Proto's calculator sample client on pycapnp, an independent peer for cara's RPC tests.

Usage::

    python tests/peers/pycapnp_calculator_client.py CALCULATOR_CAPNP HOST PORT
    python tests/peers/pycapnp_calculator_client.py CALCULATOR_CAPNP HOST PORT --bench-chain N

Connects to a Calculator server (two-party Cap'n Proto RPC) at HOST:PORT and runs the steps of
the C++ sample's calculator-client, using promise pipelining wherever the sample does, so a
server without pipelining support fails here:

1. ``literal``: ``evaluate(literal 123).value.read()`` sent before evaluate returns -> 123.
2. ``operators``: ``getOperator(add)`` and ``getOperator(subtract)`` passed, unresolved, into one
   ``evaluate`` of 123 + 45 - 67 -> 101.
3. ``pipelining``: ``evaluate(4 * 6).value`` passed, unresolved, as ``previousResult`` into two
   more evaluations adding 3 and 5 -> 27 and 29.
4. ``functions``: ``defFunction`` with parameters, f(x, y) = x * 100 + y and
   g(x) = f(x, x + 1) * 2, all pipelined -> f(12, 34) = 1234, g(21) = 4244.
5. ``callback``: a client-side Function (pow) passed to the server, which calls it back:
   pow(2, 4 + 5) -> 512.

Output on stdout: ``<step> PASS`` after each step; exit 0 when all five pass. On the first
failure: ``<step> FAIL <reason>`` on stdout, the traceback on stderr, exit 1. Every step has a
timeout (10 s), so a server that never answers fails rather than hangs.

With ``--bench-chain N`` it runs no steps and times N chains of three dependent calls
(``getOperator(add)`` -> ``evaluate`` calling it -> ``read`` on the result), each chain sent
pipelined and awaited once, one chain at a time, after a short warm-up. It prints
``chain n=<N> seconds=<total> us_per_chain=<mean>``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import capnp
from peerlib import connect, fail, parse_endpoint, say

USAGE = "pycapnp_calculator_client.py CALCULATOR_CAPNP HOST PORT [--bench-chain N]"
STEP_TIMEOUT = 10.0


def literal(x: float) -> dict[str, Any]:
    return {"literal": x}


def param(i: int) -> dict[str, Any]:
    return {"parameter": i}


def call(function: Any, *params: dict[str, Any]) -> dict[str, Any]:
    return {"call": {"function": function, "params": list(params)}}


def expect(got: float, want: float) -> None:
    if got != want:
        raise AssertionError(f"expected {want}, got {got}")


def steps(calc: Any, calculator: Any) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """The sample's five steps as (name, coroutine function)."""

    class Pow(calc.Calculator.Function.Server):
        """pow(), implemented here: the server calls back into this process to use it."""

        async def call(self, params: Any, **kwargs: Any) -> float:
            if len(params) != 2:
                raise ValueError(f"pow takes 2 parameters, got {len(params)}")
            return float(params[0] ** params[1])

    async def step_literal() -> None:
        reading = calculator.evaluate(literal(123)).value.read()
        expect((await reading).value, 123)

    async def step_operators() -> None:
        add = calculator.getOperator(op="add").func
        subtract = calculator.getOperator(op="subtract").func
        expr = call(subtract, call(add, literal(123), literal(45)), literal(67.0))
        expect((await calculator.evaluate(expr).value.read()).value, 101)

    async def step_pipelining() -> None:
        add = calculator.getOperator(op="add").func
        multiply = calculator.getOperator(op="multiply").func
        product = calculator.evaluate(call(multiply, literal(4), literal(6))).value
        plus3 = calculator.evaluate(call(add, {"previousResult": product}, literal(3)))
        plus5 = calculator.evaluate(call(add, {"previousResult": product}, literal(5)))
        read3, read5 = plus3.value.read(), plus5.value.read()
        expect((await read3).value, 27)
        expect((await read5).value, 29)

    async def step_functions() -> None:
        add = calculator.getOperator(op="add").func
        multiply = calculator.getOperator(op="multiply").func
        f = calculator.defFunction(
            paramCount=2, body=call(add, call(multiply, param(0), literal(100)), param(1))).func
        g = calculator.defFunction(
            paramCount=1,
            body=call(multiply, call(f, param(0), call(add, param(0), literal(1))), literal(2)),
        ).func
        f_read = calculator.evaluate(call(f, literal(12), literal(34))).value.read()
        g_read = calculator.evaluate(call(g, literal(21))).value.read()
        expect((await f_read).value, 1234)
        expect((await g_read).value, 4244)

    async def step_callback() -> None:
        add = calculator.getOperator(op="add").func
        expr = call(Pow(), literal(2), call(add, literal(4), literal(5)))
        expect((await calculator.evaluate(expr).value.read()).value, 512)

    return [
        ("literal", step_literal),
        ("operators", step_operators),
        ("pipelining", step_pipelining),
        ("functions", step_functions),
        ("callback", step_callback),
    ]


async def bench_chain(calculator: Any, n: int) -> None:
    async def chain() -> None:
        add = calculator.getOperator(op="add").func
        reading = calculator.evaluate(call(add, literal(2), literal(3))).value.read()
        expect((await reading).value, 5)

    for _ in range(min(n, 100)):
        await chain()
    start = time.perf_counter()
    for _ in range(n):
        await chain()
    seconds = time.perf_counter() - start
    say(f"chain n={n} seconds={seconds:.6f} us_per_chain={seconds / n * 1e6:.1f}")


async def run(schema: str, host: str, port: int, bench: int | None) -> int:
    calc = capnp.load(schema)
    client = await connect(host, port)
    calculator = client.bootstrap().cast_as(calc.Calculator)
    if bench is not None:
        await bench_chain(calculator, bench)
        return 0
    for name, step in steps(calc, calculator):
        try:
            await asyncio.wait_for(step(), STEP_TIMEOUT)
        except Exception as exc:  # a failed step is the report, whatever it raised
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else repr(exc)
            say(f"{name} FAIL {reason}")
            traceback.print_exc()
            return 1
        say(f"{name} PASS")
    return 0


def main(argv: list[str]) -> None:
    schema, host, port, rest = parse_endpoint(argv, USAGE, extra=2)
    bench = None
    if rest:
        if rest[0] != "--bench-chain" or len(rest) != 2 or not rest[1].isdigit():
            fail(f"usage: {USAGE}")
        bench = max(1, int(rest[1]))
    raise SystemExit(asyncio.run(capnp.run(run(schema, host, port, bench))))


if __name__ == "__main__":
    main(sys.argv[1:])
