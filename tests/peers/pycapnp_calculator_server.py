"""Cap'n Proto's calculator sample server on pycapnp, an independent peer for cara's RPC tests.

Usage::

    python tests/peers/pycapnp_calculator_server.py CALCULATOR_CAPNP HOST PORT

CALCULATOR_CAPNP is the sample's schema (``capnproto-0.9.2/c++/samples/calculator.capnp`` in the
corpus). PORT may be 0 (the system picks one). The server speaks Cap'n Proto's two-party RPC
(rpc.capnp, libcapnp 1.x through pycapnp) and serves each connection a fresh ``Calculator`` as
its bootstrap capability. It behaves like the C++ sample's calculator-server: ``evaluate``
returns a ``Value`` capability, ``getOperator`` a ``Function`` for add / subtract / multiply /
divide, ``defFunction`` a ``Function`` whose body is an expression over its parameters; an
expression's ``call`` evaluates all parameters concurrently and then calls the function, which
may live anywhere (another server object, a pipelined promise, a callback in the client).

Output on stdout, one line each, flushed:

- ``READY <port>`` once listening (the real port when PORT was 0);
- ``live <n>`` in answer to the command ``stats`` on stdin: the number of capability objects
  this process handed out (Value, operator and defined Function instances) that are still alive
  after a garbage collection. It falls when the peer releases them or the connection ends.
  Releases travel asynchronously, so a test polls ``stats`` until it reads the count it expects.

Commands on stdin (when stdin is a pipe or a terminal; see tests/peers/peerlib.py): ``stats``,
``quit``; end of file on stdin ends the server. Errors in a call reach the caller as Cap'n Proto
exceptions (``failed``) with the message.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import capnp
from peerlib import Counted, parse_endpoint, serve_bootstrap

USAGE = "pycapnp_calculator_server.py CALCULATOR_CAPNP HOST PORT"

OPERATORS = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
}


def implementations(calc: Any) -> Any:
    """Server classes for the loaded calculator module ``calc``; returns the Calculator class."""

    async def evaluate(expression: Any, args: list[float]) -> float:
        """The value of ``expression``; ``args``: the parameters inside a defined function."""
        kind = expression.which()
        if kind == "literal":
            return float(expression.literal)
        if kind == "previousResult":
            reply = await expression.previousResult.read()
            return float(reply.value)
        if kind == "parameter":
            index = expression.parameter
            if index >= len(args):
                raise ValueError(f"parameter {index} out of range: the function has {len(args)}")
            return args[index]
        if kind == "call":
            function = expression.call.function
            values = await asyncio.gather(*(evaluate(p, args) for p in expression.call.params))
            reply = await function.call(list(values))
            return float(reply.value)
        raise ValueError(f"unknown expression kind {kind!r}")

    class ValueImpl(Counted, calc.Calculator.Value.Server):
        """A number already computed, read back through ``read``."""

        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        async def read(self, **kwargs: Any) -> float:
            return self.value

    class OperatorImpl(Counted, calc.Calculator.Function.Server):
        """One of the four arithmetic operators, as a two-parameter Function."""

        def __init__(self, op: str) -> None:
            super().__init__()
            if op not in OPERATORS:
                raise ValueError(f"unknown operator {op!r}")
            self.op = op

        async def call(self, params: Any, **kwargs: Any) -> float:
            if len(params) != 2:
                raise ValueError(f"{self.op} takes 2 parameters, got {len(params)}")
            return float(OPERATORS[self.op](params[0], params[1]))

    class FunctionImpl(Counted, calc.Calculator.Function.Server):
        """A function defined by the client: an expression over ``paramCount`` parameters."""

        def __init__(self, param_count: int, body: Any) -> None:
            super().__init__()
            self.param_count = param_count
            # The request's params go away once defFunction returns: keep a copy of the body
            # (with its capabilities) in a message of our own.
            self.body = body.as_builder()

        async def call(self, params: Any, **kwargs: Any) -> float:
            if len(params) != self.param_count:
                raise ValueError(
                    f"the function takes {self.param_count} parameters, got {len(params)}")
            return await evaluate(self.body, list(params))

    class CalculatorImpl(calc.Calculator.Server):
        """The bootstrap capability of one connection."""

        async def evaluate(self, expression: Any, **kwargs: Any) -> Any:
            return ValueImpl(await evaluate(expression, []))

        async def defFunction(self, paramCount: int, body: Any, **kwargs: Any) -> Any:
            if paramCount < 0:
                raise ValueError(f"paramCount must not be negative, got {paramCount}")
            return FunctionImpl(paramCount, body)

        async def getOperator(self, op: str, **kwargs: Any) -> Any:
            return OperatorImpl(op)

    return CalculatorImpl


async def serve(schema: str, host: str, port: int) -> None:
    calc = capnp.load(schema)
    calculator = implementations(calc)

    await serve_bootstrap(calculator, host, port)


def main(argv: list[str]) -> None:
    schema, host, port, _ = parse_endpoint(argv, USAGE)
    asyncio.run(capnp.run(serve(schema, host, port)))


if __name__ == "__main__":
    main(sys.argv[1:])
