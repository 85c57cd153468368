"""Echo RPC throughput over pseud 1.0.1 (ZeroMQ): cara on pseud beside bare pseud, one process.

Measures calls/s for sequential awaits and for 5,000 concurrent calls (``asyncio.gather``):

* ``bare pseud`` -- /work/shared/anchors/rpc_pseud.py's shape: ``server.register_rpc(echo)``,
  ``await client.echo(text)``. pseud's own packer needs ``msgpack<1``; here each instance gets
  cara's replacement packer (``rpc.packer = Packer()``, msgpack 1.x), nothing else changes, so
  the two contestants run on the same msgpack and the same ZeroMQ;
* ``cara on pseud`` -- ``cara_pseud.setup_server/setup_client``, SimpleEcho (a runtime interface
  class from the reference compiler's nodes) registered as a function, called through
  ``SimpleEcho(client)``: typed params and results, capability tables, each incoming message
  handled as its own (eagerly started) task so handlers may call back.

Both pairs use loopback TCP on a free port and live on one event loop; each round times both,
back to back, in alternating order, so machine noise hits both alike. Medians and the median of
the per-round ratios cara / bare (goal >= 0.9x) are reported.

    python benchmarks/bench_pseud.py [--rounds 9] [--calls 5000]
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


async def bare_pseud() -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """A bare pseud server and client: (echo call, stop)."""
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

    async def stop() -> None:
        await client.stop()
        await server.stop()

    return (lambda: client.echo("hello")), stop


async def cara_on_pseud(iface: Any) -> tuple[Callable[[], Awaitable[Any]],
                                             Callable[[], Awaitable[None]]]:
    """cara on a pseud server and client: (echo call through SimpleEcho's proxy, stop)."""
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
    echo = iface(client)

    async def stop() -> None:
        await client.stop()
        await server.stop()

    return (lambda: echo.echo("hello")), stop


async def _sequential(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        await call()
    return time.perf_counter() - t0


async def _concurrent(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(*[call() for _ in range(calls)])
    elapsed = time.perf_counter() - t0
    assert results == ["hello"] * calls
    return elapsed


async def _measure(iface: Any, rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    """Both contestants live on one loop; each round times a block of sequential calls and one
    gather of ``calls`` concurrent calls for each, alternating who goes first."""
    contestants = {"bare pseud": await bare_pseud(), "cara on pseud": await cara_on_pseud(iface)}
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in contestants}
    try:
        for call, _ in contestants.values():  # warm up (and let ZeroMQ connect)
            assert await call() == "hello"
            await _concurrent(call, 200)
        order = list(contestants)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                call = contestants[name][0]
                seq = calls / await _sequential(call, calls)
                conc = calls / await _concurrent(call, calls)
                out[name].append((seq, conc))
    finally:
        for _, stop in contestants.values():
            await stop()
    return out


def measure(rounds: int, calls: int) -> dict[str, list[tuple[float, float]]]:
    return asyncio.run(_measure(simple_echo(), rounds, calls))


def report(results: dict[str, list[tuple[float, float]]], calls: int) -> str:
    med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for name, rs in results.items()}
    bare, cara = med["bare pseud"], med["cara on pseud"]
    # Ratios taken round by round (the two ran back to back), then the median of those.
    pairs = list(zip(results["bare pseud"], results["cara on pseud"], strict=True))
    seq_ratio = statistics.median(c[0] / b[0] for b, c in pairs)
    conc_ratio = statistics.median(c[1] / b[1] for b, c in pairs)
    lines = [
        "## Echo RPC over pseud 1.0.1 (ZeroMQ, loopback TCP)",
        "",
        f"calls/s, median of {len(results['bare pseud'])} rounds (both on one event loop, "
        f"taking turns); sequential = {calls:,} awaited calls, concurrent = {calls:,} calls in "
        "one `asyncio.gather`; ratio = median of the per-round ratios. Bare pseud runs with "
        "cara's msgpack-1 packer assigned per instance (its own needs msgpack<1).",
        "",
        "| | sequential | concurrent |",
        "|---|---:|---:|",
        f"| bare pseud | {bare[0]:,.0f} | {bare[1]:,.0f} |",
        f"| cara on pseud | {cara[0]:,.0f} | {cara[1]:,.0f} |",
        f"| cara / bare (goal >= 0.9x) | {seq_ratio:.2f}x | {conc_ratio:.2f}x |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
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
