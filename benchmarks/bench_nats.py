"""Echo RPC throughput over NATS: cara's ``nats://`` transport beside raw nats-py request/reply.

Both run on one ``nats-server`` started on loopback for the run, with the server side and the
client side on NATS connections of their own (in this process, as ``bench_rpc`` does for TCP):

* ``cara (runtime)`` -- ``cara.Server``/``cara.Client`` on ``nats://``, a runtime interface class;
* ``nats-py request/reply`` -- ``nc.request`` against a subscription answering with
  ``msg.respond``, the text packed and unpacked with msgpack: the floor cara builds on.

Sequential = awaited one by one; concurrent = all in one ``asyncio.gather``. Rounds alternate so
that machine noise hits both alike; the median is reported with the ratio (goal: cara >= 0.8x).

    python benchmarks/bench_nats.py [--rounds 3] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rpc import echo_interfaces  # noqa: E402


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """A ``nats-server`` on a free loopback port for the duration: yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def cara_echo(iface: Any, url: str, calls: int) -> tuple[float, float]:
    from cara.rpc import register_interface
    from cara.transports import Client, Server

    server = Server()
    server.bind(url + "/echo")
    await server.start()
    register_interface(server, iface, lambda text: text)
    client = Client()
    client.connect(server.endpoints[0])
    await client.start()
    echo = client.bootstrap(iface)
    assert await echo.echo("hi") == "hi"
    t0 = time.perf_counter()
    for _ in range(calls):
        await echo.echo("hello")
    sequential = calls / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[echo.echo("hello") for _ in range(calls)])
    concurrent = calls / (time.perf_counter() - t0)
    assert results == ["hello"] * calls
    await client.stop()
    await server.stop()
    return sequential, concurrent


async def raw_echo(url: str, calls: int) -> tuple[float, float]:
    import msgpack
    import nats

    responder = await nats.connect(url)
    requester = await nats.connect(url)

    async def answer(msg: Any) -> None:
        await msg.respond(msgpack.packb(msgpack.unpackb(msg.data)))

    await responder.subscribe("echo", cb=answer)
    await responder.flush()

    async def call(text: str) -> str:
        reply = await requester.request("echo", msgpack.packb(text), timeout=60)
        result: str = msgpack.unpackb(reply.data)
        return result

    assert await call("hi") == "hi"
    t0 = time.perf_counter()
    for _ in range(calls):
        await call("hello")
    sequential = calls / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[call("hello") for _ in range(calls)])
    concurrent = calls / (time.perf_counter() - t0)
    assert results == ["hello"] * calls
    await requester.close()
    await responder.close()
    return sequential, concurrent


def missing() -> str | None:
    if shutil.which("nats-server") is None:
        return "nats-server is not on PATH (apt-get install nats-server)"
    try:
        import nats  # noqa: F401
    except ImportError:
        return "nats-py is not installed (pip install 'cara[nats]')"
    return None


def main(argv: list[str] | None = None) -> str:
    """Run the rounds and return the markdown section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv if argv is not None else [])
    title = "## nats: echo over NATS (one nats-server on loopback)"
    problem = missing()
    if problem:
        return f"{title}\n\nnot run: {problem}\n"
    iface = echo_interfaces()["runtime"]
    figures: dict[str, list[tuple[float, float]]] = {}
    with nats_server() as url:
        contestants = {
            "cara (runtime)": lambda: asyncio.run(cara_echo(iface, url, args.calls)),
            "nats-py request/reply": lambda: asyncio.run(raw_echo(url, args.calls)),
        }
        for r in range(args.rounds):
            for name, measure in contestants.items():
                figures.setdefault(name, []).append(measure())
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    median = {name: (statistics.median(s for s, _ in runs), statistics.median(c for _, c in runs))
              for name, runs in figures.items()}
    lines = [title, "",
             f"calls/s, median of {args.rounds} rounds, {args.calls:,} calls each; sequential = "
             "awaited one by one, concurrent = all in one `asyncio.gather`. Server and client "
             "sides in one process, each on its own NATS connection.", "",
             "| | sequential | concurrent |", "|---|---:|---:|"]
    for name, (seq, conc) in median.items():
        lines.append(f"| {name} | {seq:,.0f} | {conc:,.0f} |")
    cara, raw = median["cara (runtime)"], median["nats-py request/reply"]
    lines += ["", f"- cara / nats-py: sequential {cara[0] / raw[0]:.2f}x, concurrent "
                  f"{cara[1] / raw[1]:.2f}x (goal >= 0.8x)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
