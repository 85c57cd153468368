"""Echo RPC throughput over NATS: cara's ``nats://`` transport beside raw nats-py request/reply.

Both run on one ``nats-server`` started on loopback for the run, with the server side and the
client side on NATS connections of their own (in this process, as ``bench_rpc`` does for TCP):

* ``cara (runtime)`` -- ``cara.Server``/``cara.Client`` on ``nats://``, a runtime interface class;
* ``nats-py request/reply`` -- ``nc.request`` against a subscription answering with
  ``msg.respond``, the text packed and unpacked with msgpack: the floor cara builds on.

Sequential = awaited one by one; concurrent = all in one ``asyncio.gather``. Rounds alternate so
that machine noise hits both alike; the median is reported with the ratio (goal: cara >= 0.8x).

``--scaling`` measures instead what more worker processes give: a CPU-bound method
(``burn(rounds)``, a few milliseconds of pure Python) served by 1, then 2 worker processes (this
script with ``--worker``) behind one service, called by clients in this process. Besides calls/s
it reports the CPU seconds each party used (workers, clients, nats-server: from /proc), so that
the figures mean something on a shared machine: calls per worker CPU-second, and what one call
costs beside the method itself (``burn(0)``: cara's own work per call, in the worker and in the
client).

    python benchmarks/bench_nats.py [--rounds 3] [--calls 5000]
    python benchmarks/bench_nats.py --scaling [--seconds 6] [--burn 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rpc import echo_class  # noqa: E402

BURN_SCHEMA = """
@0xe6a7c1d2b3f4a5c6;
interface Burn {
  burn @0 (rounds :UInt32) -> (pid :UInt32);
}
"""


_nats_pids: list[int] = []


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """A ``nats-server`` on a free loopback port for the duration: yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _nats_pids.append(proc.pid)
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


# ------------------------------------------------------------------------------ scaling

def burn_class() -> Any:
    import cara

    path = Path(tempfile.gettempdir()) / "cara_bench_nats_burn.capnp"
    if not path.is_file() or path.read_text() != BURN_SCHEMA:
        path.write_text(BURN_SCHEMA)
    return cara.load(str(path)).Burn


def burn(rounds: int) -> int:
    """CPU only: ``rounds`` steps of integer arithmetic, then this process's id."""
    x = 0
    for i in range(rounds):
        x = (x * 31 + i) % 1_000_003
    return os.getpid() if x >= 0 else 0


async def serve_burn(url: str) -> None:
    """A worker: serves ``Burn`` on ``url``, says READY, serves until stdin closes."""
    from cara.rpc import register_interface
    from cara.transports import Server

    server = Server(lease=30)
    server.bind(url)
    register_interface(server, burn_class(), burn)
    await server.start()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def burn_workers(url: str, n: int) -> Iterator[list[subprocess.Popen[str]]]:
    procs = []
    try:
        for _ in range(n):
            proc = subprocess.Popen([sys.executable, __file__, "--worker", url],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("a worker did not start")
        yield procs
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


async def drive(url: str, seconds: float, rounds: int, lanes: int,
                want: set[int]) -> tuple[int, float]:
    """``lanes`` clients, two calls in flight each, as many on each worker in ``want`` (the
    queue group picks at random: clients are opened until each worker has its share, and the
    surplus is stopped): (calls done, seconds)."""
    from cara.transports import Client

    iface = burn_class()
    share = -(-lanes // len(want))
    by_pid: dict[int, list[Any]] = {pid: [] for pid in want}
    surplus: list[Any] = []
    try:
        while any(len(c) < share for c in by_pid.values()):
            if len(surplus) > 40:
                raise RuntimeError(f"the queue group used only {set(by_pid)}")
            client = Client(lease=30)
            client.connect(url)
            await client.start()
            pid = await iface(client).burn(0)
            (by_pid[pid] if len(by_pid[pid]) < share else surplus).append(client)
        for client in surplus:
            await client.stop()
        surplus = []
        clients = [c for group in by_pid.values() for c in group]
        done = 0
        deadline = time.monotonic() + seconds

        async def lane(client: Any) -> None:
            nonlocal done
            proxy = iface(client)
            while time.monotonic() < deadline:
                await proxy.burn(rounds)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*[lane(c) for c in clients for _ in range(2)])
        return done, time.monotonic() - start
    finally:
        for client in [*surplus, *(c for group in by_pid.values() for c in group)]:
            await client.stop()


def measure(url: str, nats_pid: int, n: int, seconds: float,
            rounds: int) -> dict[str, float]:
    with burn_workers(url, n) as procs:
        pids = [p.pid for p in procs]
        before = [cpu_seconds(p) for p in pids]
        nats_before = cpu_seconds(nats_pid)
        mine = time.process_time()
        calls, took = asyncio.run(drive(url, seconds, rounds, lanes=4, want=set(pids)))
        client_cpu = time.process_time() - mine
        workers = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
        nats_cpu = cpu_seconds(nats_pid) - nats_before
    return {"rate": calls / took, "calls": calls, "seconds": took, "worker": sum(workers),
            "busiest": max(workers), "idlest": min(workers), "client": client_cpu,
            "nats": nats_cpu}


def scaling_section(args: argparse.Namespace) -> str:
    title = "## nats: scaling with worker processes"
    problem = missing()
    if problem:
        return f"{title}\n\nnot run: {problem}\n"
    burn_class()
    rows: dict[str, list[dict[str, float]]] = {}
    with nats_server() as url, contextlib.suppress(KeyboardInterrupt):
        nats_pid = _nats_pids[-1]
        service = f"{url}/burn"
        for r in range(args.rounds):
            for n, rounds in ((1, 0), (1, args.burn), (2, args.burn)):
                rows.setdefault(f"{n}/{rounds}", []).append(
                    measure(service, nats_pid, n, args.seconds, rounds))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load = os.getloadavg()[0]
    lines = [title, "", f"burn({args.burn}) served by 1, then 2 worker processes, 4+ clients "
             f"with 2 calls in flight each, {args.seconds:g} s per measurement, median of "
             f"{args.rounds} rounds; {os.cpu_count()} CPUs, load average {load:.1f} at the end. "
             "CPU seconds per 1,000 calls, from /proc.", "",
             "| workers | method | calls/s | worker CPU-s / 1k calls | client CPU-s / 1k | "
             "nats-server CPU-s / 1k | calls per worker CPU-s | cores the workers got |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    med: dict[str, dict[str, float]] = {}
    for key, runs in rows.items():
        n, rounds = key.split("/")
        m = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        per_k = {k: statistics.median(1000 * run[k] / run["calls"] for run in runs)
                 for k in ("worker", "client", "nats")}
        per_cpu = statistics.median(run["calls"] / run["worker"] for run in runs)
        share = statistics.median(run["worker"] / run["seconds"] for run in runs)
        med[key] = {**m, **{f"{k}_k": v for k, v in per_k.items()}, "per_cpu": per_cpu,
                    "cores": share}
        lines.append(f"| {n} | burn({rounds}) | {m['rate']:,.0f} | {per_k['worker']:.3f} | "
                     f"{per_k['client']:.3f} | {per_k['nats']:.3f} | {per_cpu:,.0f} | "
                     f"{share:.2f} |")
    one, two, idle = med[f"1/{args.burn}"], med[f"2/{args.burn}"], med["1/0"]
    overhead = idle["worker_k"] + idle["client_k"] + idle["nats_k"]
    method = max(one["worker_k"] - idle["worker_k"], 1e-9)
    ceiling = 2 * one["worker_k"] / (one["worker_k"] + one["client_k"] + one["nats_k"])
    summary = {"runs": med, "ratio": two["rate"] / one["rate"],
               "per_cpu_ratio": two["per_cpu"] / one["per_cpu"], "ceiling": ceiling,
               "overhead_share": overhead / (overhead + method), "load": load}
    if args.json:
        return json.dumps(summary)
    lines += ["",
              f"- 2 workers / 1 worker: {two['rate'] / one['rate']:.2f}x calls/s; calls per "
              f"worker CPU-second {two['per_cpu'] / one['per_cpu']:.2f}x",
              f"- cara's own work per call (burn(0): worker + client + nats-server): "
              f"{overhead:.3f} CPU-s per 1k calls, against {method:.3f} for the method: "
              f"{overhead / (overhead + method):.1%} of the CPU a call takes",
              f"- with everything of a call on {os.cpu_count()} cores (workers, clients and "
              f"nats-server sharing them, nothing else running), 2 workers can give at most "
              f"{ceiling:.2f}x one worker"]
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--scaling", action="store_true",
                        help="1 then 2 worker processes serving a CPU-bound method")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement (--scaling)")
    parser.add_argument("--burn", type=int, default=60_000, help="rounds per call (--scaling)")
    parser.add_argument("--json", action="store_true", help="--scaling's figures as JSON")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    title = "## nats: echo over NATS (one nats-server on loopback)"
    problem = missing()
    if problem:
        return f"{title}\n\nnot run: {problem}\n"
    if args.worker:
        asyncio.run(serve_burn(args.worker))
        return ""
    if args.scaling:
        return scaling_section(args)
    iface = echo_class()
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
    section = main(sys.argv[1:])
    if section:
        print(section)
