"""RPC echo under trio beside asyncio: cara's native trio transport against the asyncio one.

**Echo** (``SimpleEcho.echo('hello')`` of tests/peers/echo.capnp): calls/s awaited one by one
(*sequential*) and 5,000 sent at once, then awaited (*concurrent*), for

* ``asyncio``             -- a cara client on asyncio -> a cara server on asyncio;
* ``trio``                -- a cara client under trio -> a cara server under trio;
* ``trio -> asyncio``     -- a client under trio -> the asyncio server (the client's share);

on ``tcp://`` (cara frames) and ``capnp://``, each server in a process of its own, the client in
this one; then both ends in this process (one event loop, or one ``trio.run``). The same client
code runs under both frameworks (the concurrent calls are sent by the loop that makes them and
awaited in turn: no task per call under either). Rounds alternate the contestants; medians.

**Stream** (``-> stream`` calls, benchmarks/bench_stream.py's cara producer): MB/s of 64 KB
chunks from a producer under asyncio and one under trio, to the same consumer process
(tests/rpc/stream_consumer.py, asyncio) on ``tcp://`` and ``capnp://``, with the CPU seconds
both sides spent.

    python benchmarks/bench_trio.py [--rounds 5] [--calls 5000] [--concurrent 5000]
                                    [--stream-mb 64]        # (0: no stream rounds)
    python benchmarks/bench_trio.py --serve URL     # (a trio echo server for the rounds)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_rpc import WARM_UP, cara_echo, server  # noqa: E402
from bench_stream import cara_stream, consumer  # noqa: E402

Measure = Callable[[], Coroutine[Any, Any, tuple[float, float]]]


async def in_turn(*promises: Any) -> list[Any]:
    """The values of calls already sent, awaited one after the other (under either framework:
    no task per call)."""
    return [await p for p in promises]


async def echo_rates(url: str, calls: int, concurrent: int) -> tuple[float, float]:
    """(sequential, concurrent) calls/s of a cara client against ``url``, under whichever
    framework runs it."""
    return await cara_echo(url, calls, concurrent, gather=in_turn)


async def in_one_process(scheme: str, calls: int, concurrent: int) -> tuple[float, float]:
    from _rpc_peer import echo_impl

    from cara.rpc import register_interface
    from cara.transports import Server

    srv = Server()
    srv.bind(f"{scheme}://127.0.0.1:0")
    register_interface(srv)(echo_impl())
    await srv.start()
    try:
        return await echo_rates(srv.endpoints[0], calls, concurrent)
    finally:
        await srv.stop()


async def serve_trio(url: str) -> None:
    """A cara echo server under trio, until stdin closes (``--serve``)."""
    import trio
    from _rpc_peer import echo_impl

    from cara.rpc import register_interface
    from cara.transports import Server

    srv = Server()
    srv.bind(url)
    register_interface(srv)(echo_impl())
    await srv.start()
    print(f"READY {srv.endpoints[0]}", flush=True)
    try:
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
    finally:
        await srv.stop()


def _run(backend: str, measure: Measure) -> tuple[float, float]:
    if backend == "asyncio":
        return asyncio.run(measure())
    import trio

    return trio.run(measure)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrent", type=int, default=5000)
    parser.add_argument("--stream-mb", type=int, default=64)
    parser.add_argument("--serve", metavar="URL")
    args = parser.parse_args(argv if argv is not None else [])
    if args.serve:
        import trio

        trio.run(serve_trio, args.serve)
        return ""
    try:
        import trio
    except ImportError:
        return "## rpc under trio\n\ntrio is not installed: not measured.\n"
    n, c = args.calls, args.concurrent
    me = str(Path(__file__).resolve())
    contestants: dict[str, tuple[str, Measure]] = {}
    runs: dict[str, list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        for scheme in ("tcp", "capnp"):
            on_asyncio = stack.enter_context(server("echo", f"{scheme}://127.0.0.1:0"))
            on_trio = stack.enter_context(server(me, "--serve", f"{scheme}://127.0.0.1:0"))
            contestants.update({
                f"{scheme}:// asyncio": (
                    "asyncio", lambda u=on_asyncio: echo_rates(u, n, c)),
                f"{scheme}:// trio": ("trio", lambda u=on_trio: echo_rates(u, n, c)),
                f"{scheme}:// trio client -> asyncio server": (
                    "trio", lambda u=on_asyncio: echo_rates(u, n, c)),
            })
        for scheme in ("tcp", "capnp"):
            for backend in ("asyncio", "trio"):
                contestants[f"{scheme}:// {backend}, both ends in one process"] = (
                    backend, lambda s=scheme: in_one_process(s, n, c))
        mb = args.stream_mb
        streams: list[str] = []
        if mb > 0:
            module = ["-m", "tests.rpc.stream_consumer"]
            for scheme in ("tcp", "capnp"):
                url, pid = stack.enter_context(consumer(*module, f"{scheme}://127.0.0.1:0"))
                for backend in ("asyncio", "trio"):
                    name = f"stream {scheme}:// {backend} producer"
                    streams.append(name)
                    contestants[name] = (
                        backend, lambda u=url, p=pid: cara_stream(u, p, mb))
        for r in range(args.rounds):
            order = list(contestants.items())
            if r % 2:
                order.reverse()
            for name, (backend, measure) in order:
                runs.setdefault(name, []).append(_run(backend, measure))
            print(f"rpc under trio: round {r + 1}/{args.rounds} done", file=sys.stderr)

    def med(name: str, i: int) -> float:
        return statistics.median(v[i] for v in runs[name])

    def ratio(name: str, base: str, i: int) -> float:
        return statistics.median(x[i] / y[i] for x, y in zip(runs[name], runs[base],
                                                              strict=True))

    lines = [
        "## rpc: echo under trio beside asyncio (loopback TCP)", "",
        f"calls/s, median of {args.rounds} alternating rounds (ratios: the median of the "
        f"per-round ratios to the asyncio row of the same layout); *sequential* = {n:,} calls "
        f"awaited one by one, *concurrent* = {c:,} calls sent at once and then awaited, after "
        f"{WARM_UP} warm-up calls. The same client code runs under both frameworks; each "
        "server runs in a process of its own unless both ends are in one process.", "",
        "| echo | sequential | concurrent | vs asyncio (seq, conc) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name in contestants:
        if name in streams:
            continue
        scheme = name.split(" ", 1)[0]
        base = f"{scheme} asyncio, both ends in one process" if "one process" in name else \
            f"{scheme} asyncio"
        vs = "" if name == base else \
            f"{ratio(name, base, 0):.2f}x, {ratio(name, base, 1):.2f}x"
        lines.append(f"| {name} | {med(name, 0):,.0f} | {med(name, 1):,.0f} | {vs} |")
    if streams:
        lines += [
            "", f"Streams: {args.stream_mb} MB in 64 KB chunks per run (same rounds) to one "
            "consumer process per encoding (tests/rpc/stream_consumer.py, asyncio, only "
            "counting); CPU: seconds both sides used.", "",
            "| stream | MB/s | CPU s | vs asyncio (MB/s, MB per CPU s) |",
            "| --- | ---: | ---: | --- |"]
        for name in streams:
            base = name.replace(" trio ", " asyncio ")
            vs = "" if name == base else \
                f"{ratio(name, base, 0):.2f}x, {1 / ratio(name, base, 1):.2f}x"
            lines.append(f"| {name} | {med(name, 0):,.0f} | {med(name, 1):.2f} | {vs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
