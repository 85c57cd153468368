"""Servers for the RPC benchmark, each run in a process of its own by ``bench_rpc.py``.

Usage::

    python benchmarks/_rpc_peer.py echo URL              # cara: SimpleEcho (tests/peers/echo.capnp)
    python benchmarks/_rpc_peer.py calc URL CALC_CAPNP   # cara: the calculator sample's server
    python benchmarks/_rpc_peer.py raw                   # asyncio streams + msgpack, no schema

URL is ``tcp://127.0.0.1:0`` (cara frames) or ``capnp://127.0.0.1:0`` (rpc.capnp). Prints
``READY <url>`` (``READY <port>`` for ``raw``) once listening and serves until end of file on
stdin, like the pycapnp peers of tests/peers/, so none outlives the benchmark that started it.
Not a benchmark itself (``run.py`` runs only ``bench_*.py``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ECHO_CAPNP = REPO / "tests" / "peers" / "echo.capnp"


async def until_stdin_closes() -> None:
    """Return once stdin reaches end of file (read by a thread: stdin may be a pipe or a tty)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read() -> None:
        for _ in sys.stdin:
            pass
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read, daemon=True).start()
    await done.wait()


def echo_impl() -> Any:
    import cara

    echo = cara.load(str(ECHO_CAPNP))

    class Echo(echo.SimpleEcho):  # type: ignore[name-defined]
        def echo(self, text: str) -> str:
            return text

    return Echo


def calculator_impl(schema: str) -> Any:
    """The calculator sample's server: evaluate, defFunction, getOperator; values and functions
    are capabilities it hands out."""
    import cara

    calc = cara.load(schema)
    calculator = calc.Calculator
    ops = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
           "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b}

    async def evaluate(expression: Any, params: Any = ()) -> float:
        which = expression.which()
        which = getattr(which, "name", which)
        if which == "literal":
            return float(expression.literal)
        if which == "previousResult":
            return float(await expression.previousResult.read())
        if which == "parameter":
            return float(params[expression.parameter])
        if which == "call":
            args = [await evaluate(p, params) for p in expression.call.params]
            return float(await expression.call.function.call(args))
        raise ValueError(f"unknown expression {which!r}")

    class Value(calculator.Value):  # type: ignore[name-defined]
        def __init__(self, value: float) -> None:
            self.value = value

        def read(self) -> float:
            return self.value

    class Function(calculator.Function):  # type: ignore[name-defined]
        def __init__(self, count: int, body: Any) -> None:
            self.count, self.body = count, body

        async def call(self, params: list[float]) -> float:
            if len(params) != self.count:
                raise ValueError(f"expected {self.count} parameters, got {len(params)}")
            return await evaluate(self.body, params)

    class Operator(calculator.Function):  # type: ignore[name-defined]
        def __init__(self, op: Any) -> None:
            self.op = ops[getattr(op, "name", op)]

        def call(self, params: list[float]) -> float:
            a, b = params
            return float(self.op(a, b))

    class Calculator(calculator):  # type: ignore[misc,valid-type]
        async def evaluate(self, expression: Any) -> Value:
            return Value(await evaluate(expression))

        def defFunction(self, paramCount: int, body: Any) -> Function:
            return Function(paramCount, body)

        def getOperator(self, op: Any) -> Operator:
            return Operator(op)

    return Calculator


async def serve_cara(url: str, impl: Any) -> None:
    from cara.rpc import register_interface
    from cara.transports import Server

    server = Server()
    server.bind(url)
    register_interface(server)(impl)
    await server.start()
    print(f"READY {server.endpoints[0]}", flush=True)
    try:
        await until_stdin_closes()
    finally:
        await server.stop()


async def raw_echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo ``[id, value]`` msgpack arrays back as they come, on asyncio streams."""
    import msgpack

    unpacker = msgpack.Unpacker()
    pack = msgpack.Packer().pack
    while data := await reader.read(65536):
        unpacker.feed(data)
        for call_id, value in unpacker:
            writer.write(pack([call_id, value]))
    writer.close()


async def serve_raw() -> None:
    server = await asyncio.start_server(raw_echo_handler, "127.0.0.1", 0)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await until_stdin_closes()


def main(argv: list[str]) -> None:
    usage = "usage: _rpc_peer.py echo URL | calc URL CALC_CAPNP | raw"
    if argv[:1] == ["echo"] and len(argv) == 2:
        asyncio.run(serve_cara(argv[1], echo_impl()))
    elif argv[:1] == ["calc"] and len(argv) == 3:
        asyncio.run(serve_cara(argv[1], calculator_impl(argv[2])))
    elif argv == ["raw"]:
        asyncio.run(serve_raw())
    else:
        raise SystemExit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
