"""Echo RPC throughput: cara's built-in asyncio transport beside pycapnp and the raw floor.

Measures calls/s for sequential awaits and for 5,000 concurrent calls (``asyncio.gather``), for:

* ``cara (runtime)`` -- runtime interface classes (the normal way: typed, checked structs);
* ``cara (nodes)``   -- the RPC core driven by bare schema descriptions (no runtime classes);
* ``pycapnp``        -- /work/shared/anchors/rpc_pycapnp.py (pycapnp's asyncio two-party RPC);
* ``raw``            -- /work/shared/anchors/rpc_raw.py (asyncio streams + msgpack, no schema).

The peers run as subprocesses of this script (their own event loop and process, as a user would
run them); rounds alternate between contestants so machine noise hits everyone alike, and the
median of the rounds is reported with the ratios the goals are stated in (cara >= 2x pycapnp,
>= 0.6x raw).

    python benchmarks/bench_rpc.py [--rounds 3] [--calls 5000] [--anchors DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ANCHORS = Path(os.environ.get("CARA_ANCHORS", REPO.parent / "shared" / "anchors"))

ECHO_SCHEMA = """
@0xd3a8a8f4c2b1e002;
interface SimpleEcho {
    echo @0 (text :Text) -> (text :Text);
}
"""


def _nodes() -> Any:
    from tests.support.reference import reference_request

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "echo.capnp").write_text(ECHO_SCHEMA)
        return reference_request(["echo.capnp"], cwd=tmp)


def echo_interfaces() -> dict[str, Any]:
    """SimpleEcho as a runtime class and as a bare description (from the reference compiler)."""
    from cara.rpc import interfaces_from_nodes
    from cara.runtime import build_module

    request = _nodes()
    (info,) = interfaces_from_nodes(request.nodes, register=False).values()
    return {"runtime": build_module(request, register=False).SimpleEcho, "nodes": info}


async def cara_echo(iface: Any, calls: int) -> tuple[float, float]:
    """(sequential calls/s, concurrent calls/s) over loopback TCP."""
    from cara.rpc import register_interface
    from cara.transports import Client, Server

    server = Server()
    server.bind("tcp://127.0.0.1:0")
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


def run_anchor(script: str, patterns: tuple[str, str]) -> tuple[float, float] | None:
    path = ANCHORS / script
    if not path.exists():
        return None
    proc = subprocess.run([sys.executable, str(path)], cwd=ANCHORS, capture_output=True,
                          text=True, timeout=300, check=False)
    found = []
    for pattern in patterns:
        match = re.search(pattern + r"\D*?([0-9]+) calls/s", proc.stdout)
        if match is None:
            print(f"  ({script} printed no figure for {pattern!r}: {proc.stderr[-300:]!r})")
            return None
        found.append(float(match.group(1)))
    return found[0], found[1]


def main(argv: list[str] | None = None) -> str:
    """Run the rounds and return the markdown section (``benchmarks/run.py`` calls this with
    no arguments; the command line may pass ``--rounds`` and ``--calls``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv if argv is not None else [])
    ifaces = echo_interfaces()
    figures: dict[str, list[tuple[float, float]]] = {}
    contestants = {
        "cara (runtime)": lambda: asyncio.run(cara_echo(ifaces["runtime"], args.calls)),
        "cara (nodes)": lambda: asyncio.run(cara_echo(ifaces["nodes"], args.calls)),
        "pycapnp": lambda: run_anchor("rpc_pycapnp.py", ("pycapnp sequential",
                                                        "pycapnp pipelined/concurrent")),
        "raw": lambda: run_anchor("rpc_raw.py", ("raw asyncio\\+msgpack sequential",
                                                 "raw asyncio\\+msgpack concurrent")),
    }
    for r in range(args.rounds):
        for name, measure in contestants.items():
            result = measure()
            if result is not None:
                figures.setdefault(name, []).append(result)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    median: dict[str, tuple[float, float]] = {
        name: (statistics.median(s for s, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in figures.items()
    }
    lines = ["## rpc: echo over the built-in asyncio transport (loopback TCP)", "",
             f"calls/s, median of {args.rounds} rounds; sequential = awaited one by one, "
             f"concurrent = all in one `asyncio.gather` ({args.calls:,} calls for cara and "
             "pycapnp; the raw anchor's own script uses 20,000). *cara (runtime)* is the user's "
             "path (generated interface classes); *cara (nodes)* is the RPC core on bare "
             "schema descriptions. *raw* is asyncio streams + msgpack with no schema: the floor.",
             "", "| | sequential | concurrent |", "|---|---:|---:|"]
    for name, (seq, conc) in median.items():
        lines.append(f"| {name} | {seq:,.0f} | {conc:,.0f} |")
    lines.append("")
    for cara in ("cara (runtime)", "cara (nodes)"):
        for peer, goal in (("pycapnp", 2.0), ("raw", 0.6)):
            if cara in median and peer in median:
                s = median[cara][0] / median[peer][0]
                c = median[cara][1] / median[peer][1]
                lines.append(f"- {cara} / {peer}: sequential {s:.2f}x, concurrent {c:.2f}x "
                             f"(goal >= {goal}x)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
