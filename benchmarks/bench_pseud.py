"""Echo RPC throughput over pseud 1.0.1 (ZeroMQ): cara on pseud beside bare pseud, one process.

Measures calls/s for sequential awaits and for 5,000 concurrent calls (``asyncio.gather``):

* ``bare pseud`` -- /work/shared/anchors/rpc_pseud.py's shape: ``server.register_rpc(echo)``,
  ``await client.echo(text)``. pseud's own packer needs ``msgpack<1``; here each instance gets
  cara's replacement packer (``rpc.packer = Packer()``, msgpack 1.x), nothing else changes, so
  the two contestants run on the same msgpack and the same ZeroMQ;
* ``cara on pseud`` -- ``cara_pseud.setup_server/setup_client``, SimpleEcho (a runtime interface
  class from the reference compiler's nodes) registered as a function, called through
  ``SimpleEcho``'s proxy: typed params and results, capability tables, one task per incoming
  message (so handlers may call back).

Both use loopback TCP on a free port. Rounds alternate between contestants so machine noise hits
both alike; medians and the ratio cara / bare (goal >= 0.9x) are reported.

    python benchmarks/bench_pseud.py [--rounds 3] [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ECHO_SCHEMA = """
@0xd3a8a8f4c2b1e003;
interface SimpleEcho {
    echo @0 (text :Text) -> (text :Text);
}
"""


def simple_echo() -> Any:
    """SimpleEcho as a runtime class built from the reference compiler's nodes."""
    from cara.runtime import build_module
    from tests.support.reference import reference_request

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "echo.capnp").write_text(ECHO_SCHEMA)
        request = reference_request(["echo.capnp"], cwd=tmp)
    return build_module(request, register=False).SimpleEcho


def _endpoint(rpc: Any) -> str:
    import zmq

    raw = rpc.socket.getsockopt(zmq.LAST_ENDPOINT)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _time(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    assert await call() == "hello"
    t0 = time.perf_counter()
    for _ in range(calls):
        await call()
    sequential = calls / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[call() for _ in range(calls)])
    concurrent = calls / (time.perf_counter() - t0)
    assert results == ["hello"] * calls
    return sequential, concurrent


async def bare_pseud(calls: int) -> tuple[float, float]:
    import pseud

    from cara.transports.pseud_transport import Packer

    server = pseud.Server(b"bench-bare")
    server.packer = Packer()
    server.bind("tcp://127.0.0.1:*")

    @server.register_rpc
    def echo(text: str) -> str:
        return text

    await server.start()
    client = pseud.Client(b"bench-bare", timeout=60)
    client.packer = Packer()
    client.connect(_endpoint(server))
    await client.start()
    try:
        return await _time(lambda: client.echo("hello"), calls)
    finally:
        await client.stop()
        await server.stop()


async def cara_pseud_echo(iface: Any, calls: int) -> tuple[float, float]:
    import pseud

    from cara import cara_pseud

    server = pseud.Server(b"bench-cara")
    server.bind("tcp://127.0.0.1:*")
    cara_pseud.setup_server(server)
    await server.start()
    cara_pseud.register_interface(server, iface, lambda text: text)
    client = pseud.Client(b"bench-cara", timeout=60)
    client.connect(_endpoint(server))
    cara_pseud.setup_client(client)
    await client.start()
    echo = cara_pseud.bootstrap(client, iface)
    try:
        return await _time(lambda: echo.echo("hello"), calls)
    finally:
        await client.stop()
        await server.stop()


def measure(rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    iface = simple_echo()
    out: dict[str, list[tuple[float, float]]] = {"bare pseud": [], "cara on pseud": []}
    for _ in range(rounds):
        out["bare pseud"].append(asyncio.run(bare_pseud(calls)))
        out["cara on pseud"].append(asyncio.run(cara_pseud_echo(iface, calls)))
    return out


def report(results: dict[str, list[tuple[float, float]]], calls: int) -> str:
    med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for name, rs in results.items()}
    bare, cara = med["bare pseud"], med["cara on pseud"]
    lines = [
        "## Echo RPC over pseud 1.0.1 (ZeroMQ, loopback TCP)",
        "",
        f"calls/s, median of {len(results['bare pseud'])} alternating rounds; concurrent = "
        f"{calls:,} calls in one `asyncio.gather`. Bare pseud runs with cara's msgpack-1 packer "
        "assigned per instance (its own needs msgpack<1).",
        "",
        "| | sequential | concurrent |",
        "|---|---:|---:|",
        f"| bare pseud | {bare[0]:,.0f} | {bare[1]:,.0f} |",
        f"| cara on pseud | {cara[0]:,.0f} | {cara[1]:,.0f} |",
        f"| cara / bare (goal >= 0.9x) | {cara[0] / bare[0]:.2f}x | {cara[1] / bare[1]:.2f}x |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv if argv is not None else [])
    try:
        import pseud  # noqa: F401
        import zmq  # noqa: F401
    except ImportError as e:
        return f"## Echo RPC over pseud\n\nskipped: {e} (pip install 'cara[pseud]')\n"
    return report(measure(args.rounds, args.calls), args.calls)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
