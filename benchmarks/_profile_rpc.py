"""Where an echo call's time goes in cara: cProfile over both ends of a connection in one process.

Usage::

    python benchmarks/_profile_rpc.py [--wire tcp|capnp] [--mode sequential|concurrent]
                                      [--calls 5000] [--top 30] [--callers FUNCTION]

A cara server and a cara client on one event loop (loopback TCP, ``tcp://`` for cara frames or
``capnp://`` for rpc.capnp) run ``SimpleEcho.echo('hello')`` (tests/peers/echo.capnp): awaited
one by one, or all at once in one ``asyncio.gather``; or (``--mode chain``) bench_rpc.py's
pipelined calculator chain, per chain. First the wall time per call without the
profiler, then the profile: the functions with the largest own time, as microseconds *per echo
call* (client and server sides together; the profiler itself inflates small functions, so read
the ranking and the ratios rather than the absolute figures). Not a benchmark (``run.py`` runs
only ``bench_*.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ECHO_CAPNP = REPO / "tests" / "peers" / "echo.capnp"


async def run(wire: str, mode: str, calls: int, profiler: cProfile.Profile | None) -> float:
    """Seconds per call; ``profiler`` (if given) is on only while the calls run."""
    if mode == "chain":
        return await run_chain(wire, calls, profiler)
    import cara
    from cara.rpc import register_interface
    from cara.transports import Client, Server

    iface = cara.load(str(ECHO_CAPNP)).SimpleEcho

    class Echo(iface):  # type: ignore[misc,valid-type]
        def echo(self, text: str) -> str:
            return text

    server = Server()
    server.bind(f"{wire}://127.0.0.1:0")
    register_interface(server)(Echo)
    await server.start()
    client = Client()
    client.connect(server.endpoints[0])
    await client.start()
    echo = iface(client)
    for _ in range(200):
        await echo.echo("hello")

    async def body() -> None:
        if mode == "sequential":
            for _ in range(calls):
                await echo.echo("hello")
        else:
            await asyncio.gather(*[echo.echo("hello") for _ in range(calls)])

    seconds = await timed(profiler, body)
    await client.stop()
    await server.stop()
    return seconds / calls


async def timed(profiler: cProfile.Profile | None,
                body: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """Seconds ``body()`` takes, profiled when ``profiler`` is given."""
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    await body()
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    return seconds


async def run_chain(wire: str, chains: int, profiler: cProfile.Profile | None) -> float:
    """Seconds per pipelined getOperator -> evaluate -> read chain (bench_rpc.py's) against
    _rpc_peer.py's calculator server, both in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _rpc_peer
    import bench_rpc

    from cara.rpc import register_interface
    from cara.transports import Client, Server

    server = Server()
    server.bind(f"{wire}://127.0.0.1:0")
    register_interface(server)(_rpc_peer.calculator_impl(str(bench_rpc.CALC_CAPNP)))
    await server.start()
    client = Client()
    client.connect(server.endpoints[0])
    await client.start()
    calc = bench_rpc.calculator_class()(client)

    async def chain() -> None:
        add = calc.getOperator("add")
        assert await calc.evaluate(bench_rpc._chain_expression(add)).value.read() == 5

    for _ in range(100):
        await chain()

    async def body() -> None:
        for _ in range(chains):
            await chain()

    seconds = await timed(profiler, body)
    await client.stop()
    await server.stop()
    return seconds / chains


def report(profiler: cProfile.Profile, calls: int, top: int, callers: str | None) -> str:
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    rows = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    lines = [f"total profiled own time {total / calls * 1e6:.1f} us per call", "",
             f"{'own us/call':>11} {'cum us/call':>11} {'n/call':>7}  function"]
    for (path, line, name), (_, ncalls, tt, ct, _) in rows:
        where = f"{Path(path).name}:{line}({name})" if line else name
        short = path.replace(str(REPO) + "/", "")
        if short != path:
            where = f"{short}:{line}({name})"
        lines.append(f"{tt / calls * 1e6:11.2f} {ct / calls * 1e6:11.2f} "
                     f"{ncalls / calls:7.2f}  {where}")
    if callers:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_callers(callers)
        lines += ["", out.getvalue()]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--wire", choices=("tcp", "capnp"), default="tcp")
    parser.add_argument("--mode", choices=("sequential", "concurrent", "chain"),
                        default="sequential")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--callers", default=None)
    args = parser.parse_args(argv)
    wall = min(asyncio.run(run(args.wire, args.mode, args.calls, None)) for _ in range(3))
    profiler = cProfile.Profile()
    asyncio.run(run(args.wire, args.mode, args.calls, profiler))
    print(f"{args.wire} {args.mode}: {wall * 1e6:.1f} us per call without the profiler "
          f"(best of 3, both ends in this process)")
    print(report(profiler, args.calls, args.top, args.callers))


if __name__ == "__main__":
    main(sys.argv[1:])
