"""Streaming (``-> stream`` calls with flow control) beside a raw asyncio socket copy and
pycapnp: MB/s of 64 KB chunks from a producer to a consumer in another process.

Contestants (the schema is tests/peers/stream.capnp; every consumer only counts the bytes):

* ``cara frames``        -- cara producer -> cara consumer (tests/rpc/stream_consumer.py) on
  ``tcp://``: ``await sink.write(chunk)`` per chunk, then ``await sink.done()``;
* ``cara capnp://``      -- the same on ``capnp://`` (rpc.capnp messages);
* ``cara -> pycapnp``    -- the cara producer -> tests/peers/pycapnp_stream_server.py;
* ``pycapnp``            -- tests/peers/pycapnp_stream_client.py -> the pycapnp consumer;
  pycapnp has no flow control for ``-> stream`` calls, so it keeps up to 256 writes (16 MB, cara's
  largest window) in flight, awaiting the oldest first;
* ``raw socket copy``    -- asyncio streams, ``write(chunk); await drain()`` per chunk, into a
  sink that counts (benchmarks/_stream_peer.py): the floor, no RPC at all.

Each producer but pycapnp's runs in this process, each consumer in its own. Rounds alternate the
contestants; medians of the rounds are reported, with the CPU seconds both sides spent (this
machine is shared: wall-clock rates move with its load, CPU time much less), and the ratios the
goals are stated in (issue 12: cara >= 0.5x the raw copy, >= 2x pycapnp). Then one stream
through tests/peers/proxy.py adding latency each way (the acceptance check's 100 ms round trip):
seconds and the producer's peak traced memory.

    python benchmarks/bench_stream.py [--rounds 5] [--mb 64] [--delay-ms 50] [--latency-mb 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_rpc import (  # noqa: E402
    PEERS,
    Process,
    _med,
    _ratio,
    _rounds,
    pycapnp_problem,
    run_pycapnp_client,
)

STREAM_CAPNP = PEERS / "stream.capnp"
CHUNK = 64 * 1024
MB = 1024 * 1024

#: A measurement: (MB/s, CPU seconds of producer and consumer together).
Figure = tuple[float, float]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def consumer(*argv: str) -> Iterator[tuple[str, int]]:
    """A consumer process: (its READY address, its pid)."""
    p = Process([sys.executable, *argv])
    try:
        yield p.ready(), p.proc.pid
    finally:
        p.stop()


def stream_module() -> Any:
    import cara

    return cara.load(str(STREAM_CAPNP))


async def cara_stream(url: str, pid: int, mb: int) -> Figure:
    import cara

    client = cara.Client()
    client.connect(url)
    await client.start()
    try:
        sink = await stream_module().Source(client).open(0.0, 0, False)
        chunk = b"x" * CHUNK
        n = mb * MB // CHUNK
        cpu, other, start = time.process_time(), process_cpu(pid), time.perf_counter()
        for _ in range(n):
            await sink.write(chunk)
        total = (await sink.done()).total
        seconds = time.perf_counter() - start
        assert total == n * CHUNK, total
        return mb / seconds, time.process_time() - cpu + process_cpu(pid) - other
    finally:
        await client.stop()


async def raw_copy(port: int, pid: int, mb: int) -> Figure:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"x" * CHUNK
    n = mb * MB // CHUNK
    cpu, other, start = time.process_time(), process_cpu(pid), time.perf_counter()
    writer.write((n * CHUNK).to_bytes(8, "little"))
    for _ in range(n):
        writer.write(chunk)
        await writer.drain()
    got = int.from_bytes(await reader.readexactly(8), "little")
    seconds = time.perf_counter() - start
    writer.close()
    assert got == n * CHUNK, got
    return mb / seconds, time.process_time() - cpu + process_cpu(pid) - other


async def pycapnp_stream(port: int, pid: int, mb: int) -> Figure:
    other = process_cpu(pid)
    figures = await run_pycapnp_client("pycapnp_stream_client.py", str(STREAM_CAPNP),
                                       "127.0.0.1", str(port), str(mb))
    got = figures["stream"]
    return got["mb_per_s"], got["cpu"] + process_cpu(pid) - other


async def through_latency(delay: float, mb: int) -> tuple[float, float]:
    """cara frames, both ends in this process, through a proxy adding ``delay`` each way:
    (seconds, the peak traced memory in MB while streaming)."""
    import cara
    from tests.peers.proxy import Proxy
    from tests.rpc.stream_consumer import Source

    s = stream_module()
    server = cara.Server()
    server.bind("tcp://127.0.0.1:0")
    server.services.register(s.Source, Source())
    await server.start()
    port = int(server.endpoints[0].rsplit(":", 1)[1])
    try:
        async with Proxy("127.0.0.1", port, delay=delay) as proxy:
            client = cara.Client()
            client.connect(proxy.url("tcp"))
            await client.start()
            sink = await s.Source(client).open(0.0, 0, False)
            chunk = b"x" * CHUNK
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            for _ in range(mb * MB // CHUNK):
                await sink.write(chunk)
            await sink.done()
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            await client.stop()
    finally:
        await server.stop()
    return seconds, peak / MB


Measure = Callable[[], Awaitable[Any]]


def main(argv: list[str] | None = None) -> str:
    """Run the rounds and return the markdown section (``benchmarks/run.py`` calls this with
    no arguments)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=50.0,
                        help="one-way latency of the proxy (0: skip that table)")
    parser.add_argument("--latency-mb", type=int, default=64)
    args = parser.parse_args(argv if argv is not None else [])
    missing = pycapnp_problem()
    mb = args.mb
    runs: dict[str, list[Figure]] = {}
    module = ["-m", "tests.rpc.stream_consumer"]
    with contextlib.ExitStack() as stack:
        frames, frames_pid = stack.enter_context(consumer(*module, "tcp://127.0.0.1:0"))
        capnp, capnp_pid = stack.enter_context(consumer(*module, "capnp://127.0.0.1:0"))
        raw, raw_pid = stack.enter_context(consumer(str(HERE / "_stream_peer.py")))
        contestants: dict[str, Measure] = {
            "cara frames": lambda: cara_stream(frames, frames_pid, mb),
            "cara capnp://": lambda: cara_stream(capnp, capnp_pid, mb),
            "raw socket copy": lambda: raw_copy(int(raw), raw_pid, mb),
        }
        if missing is None:
            port, py_pid = stack.enter_context(consumer(
                str(PEERS / "pycapnp_stream_server.py"), str(STREAM_CAPNP), "127.0.0.1", "0"))
            contestants.update({
                "pycapnp": lambda: pycapnp_stream(int(port), py_pid, mb),
                "cara -> pycapnp consumer": lambda: cara_stream(
                    f"capnp://127.0.0.1:{port}", py_pid, mb),
            })
        _rounds(contestants, args.rounds, runs, "stream")
    lines = [
        "## stream: `-> stream` calls with flow control (loopback TCP)", "",
        f"{mb} MB in 64 KB chunks per run, median of {args.rounds} alternating rounds (ratios: "
        "the median of the per-round ratios); each consumer in a process of its own and only "
        "counting; the cara and raw producers in the benchmark's process, pycapnp's in its own "
        "(tests/peers/pycapnp_stream_client.py, 256 writes in flight at most). CPU: seconds "
        f"both sides used per {mb} MB.", "",
        "| producer -> consumer | MB/s | CPU s |", "|---|---:|---:|"]
    for name, figures in runs.items():
        lines.append(f"| {name} | {_med(figures, 0):,.0f} | {_med(figures, 1):.2f} |")
    lines.append("")
    raw_runs = runs["raw socket copy"]
    for name in ("cara frames", "cara capnp://"):
        lines.append(f"- {name} / raw socket copy: {_ratio(runs[name], raw_runs, 0):.2f}x "
                     "(goal >= 0.5x)")
    if "pycapnp" in runs:
        for name in ("cara frames", "cara capnp://"):
            lines.append(f"- {name} / pycapnp: {_ratio(runs[name], runs['pycapnp'], 0):.2f}x "
                         "(goal >= 2x)")
    else:
        lines.append(f"- pycapnp: missing ({missing})")
    # CPU time moves much less than wall time with the load of a shared machine
    others = ["raw socket copy", *(["pycapnp"] if "pycapnp" in runs else [])]
    for name in ("cara frames", "cara capnp://"):
        shares = ", ".join(f"{_ratio(runs[o], runs[name], 1):.2f}x {o}'s" for o in others)
        lines.append(f"- MB per CPU second, {name}: {shares}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines.append(f"- load average during the run: {load:.1f}")
    if args.delay_ms > 0:
        delay = args.delay_ms / 1000
        seconds, peak = asyncio.run(through_latency(delay, args.latency_mb))
        per_write = args.latency_mb * MB // CHUNK * 2 * delay
        lines += ["", f"Through tests/peers/proxy.py adding {args.delay_ms:g} ms each way "
                  f"(cara frames, both ends and the proxy in one process): {args.latency_mb} MB "
                  f"in {seconds:.1f} s, peak traced memory {peak:.1f} MB (awaiting each write's "
                  f"return would take {per_write:.0f} s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(sys.argv[1:]))
