"""Many capabilities passed each way with a calculator server, then all dropped: a pycapnp peer for
the "N capabilities each way, then both sides' tables back to zero" tests.

Usage::

    python tests/peers/pycapnp_caps_peer.py CALCULATOR_CAPNP HOST PORT N [--hold]

The server side is pycapnp_calculator_server.py (or cara serving the same schema). For each
i < N this client, 100 rounds at a time:

- gets an operator: ``f_op = getOperator(add).func`` (a capability exported by the server);
- creates a callback ``cb`` (a client-side ``Function`` adding its two parameters) and defines
  ``f_def = defFunction(2, call(cb, parameter 0, parameter 1)).func``: the server keeps the body,
  so it holds ``cb`` (a capability exported by the client) for as long as ``f_def`` lives;
- evaluates ``call(f_def, call(f_op, i, 1), 2)`` and reads the result (``i + 3``): the server
  calls ``f_op`` locally and ``cb`` back across the connection; keeps the ``Value`` it returns.

All of that is pipelined; every result is checked. Then the client holds N operators, N defined
functions and N values (3N objects exported by the server) while the server holds the N callbacks
(N exported by the client).

Output on stdout, one line each, flushed:

- ``held <n>``: all rounds done; ``n`` = the client's live callback objects (N expected).
  With ``--hold`` the client then waits for the command ``drop`` on stdin (so a test can read the
  server's tables while everything is held); without it, it goes on at once.
- ``live <n>``: after dropping every reference and collecting garbage, the client's live callback
  objects, once they reach 0 or 10 s have passed (the server's releases travel asynchronously).
  The connection stays open after this line, so the test can check the server's side too.

Then, when stdin is a pipe or a terminal, it answers ``stats`` (``live <n>``) until ``quit`` or
end of file, and exits 0; otherwise it exits 0 at once. Any failure: a message on stderr, exit 1.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import capnp
from peerlib import (
    Commands,
    Counted,
    connect,
    fail,
    live_count,
    parse_endpoint,
    say,
    stdin_is_a_channel,
)

USAGE = "pycapnp_caps_peer.py CALCULATOR_CAPNP HOST PORT N [--hold]"
BATCH = 100
SETTLE_TIMEOUT = 10.0


async def exchange(calc: Any, calculator: Any, n: int) -> list[Any]:
    """Run the N rounds; return what must be held (the server's capabilities)."""

    class Adder(Counted, calc.Calculator.Function.Server):
        async def call(self, params: Any, **kwargs: Any) -> float:
            return float(params[0] + params[1])

    def call(function: Any, *params: dict[str, Any]) -> dict[str, Any]:
        return {"call": {"function": function, "params": list(params)}}

    held: list[Any] = []

    async def one_round(i: int) -> None:
        f_op = calculator.getOperator(op="add").func
        body = call(Adder(), {"parameter": 0}, {"parameter": 1})
        f_def = calculator.defFunction(paramCount=2, body=body).func
        value = calculator.evaluate(
            call(f_def, call(f_op, {"literal": i}, {"literal": 1}), {"literal": 2})).value
        got = (await value.read()).value
        if got != i + 3:
            raise AssertionError(f"round {i}: expected {i + 3}, got {got}")
        held.extend((f_op, f_def, value))

    for start in range(0, n, BATCH):
        await asyncio.gather(*(one_round(i) for i in range(start, min(n, start + BATCH))))
    return held


async def settle() -> int:
    """The client's live callbacks once they reach zero or the timeout passes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (live := live_count()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return live


async def run(schema: str, host: str, port: int, n: int, hold: bool) -> None:
    calc = capnp.load(schema)
    client = await connect(host, port)
    calculator = client.bootstrap().cast_as(calc.Calculator)
    held = await exchange(calc, calculator, n)
    say(f"held {live_count()}")
    commands = Commands()
    if hold and not stdin_is_a_channel():
        fail("--hold needs commands on stdin (a pipe or a terminal)")
    if hold and not await commands.serve(until="drop"):
        fail("stdin closed before the command 'drop'")
    held.clear()
    say(f"live {await settle()}")
    if stdin_is_a_channel():
        await commands.serve()
    del calculator, client


def main(argv: list[str]) -> None:
    hold = "--hold" in argv
    args = [a for a in argv if a != "--hold"]
    schema, host, port, rest = parse_endpoint(args, USAGE, extra=1)
    if len(rest) != 1 or not rest[0].isdigit():
        fail(f"usage: {USAGE}")
    asyncio.run(capnp.run(run(schema, host, port, int(rest[0]), hold)))


if __name__ == "__main__":
    main(sys.argv[1:])
