"""RPC over the built-in asyncio transport beside pycapnp and the raw floor: echo and a pipelined
chain, every server in a process of its own.

**Echo** (``SimpleEcho.echo(text)`` of tests/peers/echo.capnp, ``'hello'``): calls/s awaited one
by one (*sequential*) and 5,000 sent at once and awaited together (*concurrent*, one
``asyncio.gather``), for

* ``cara frames``      -- cara client -> cara server on ``tcp://`` (cara's msgpack frames);
* ``cara capnp://``    -- cara client -> cara server on ``capnp://`` (rpc.capnp messages);
* ``pycapnp``          -- tests/peers/pycapnp_echo_client.py -> pycapnp_echo_server.py;
* ``cara -> pycapnp``  -- cara client on ``capnp://`` -> the pycapnp server (interop cost);
* ``pycapnp -> cara``  -- the pycapnp client -> the cara ``capnp://`` server;
* ``raw``              -- asyncio streams + msgpack ``[id, value]`` arrays, no schema, no
  framing beyond msgpack's own, a future per call (the shape of
  ../shared/anchors/rpc_raw.py, written here): the floor.

**Chain** (Cap'n Proto's calculator sample): ``getOperator(add)`` -> ``evaluate`` calling it ->
``read`` on the result, sent pipelined and awaited once, one chain at a time: chains/s for cara
frames, cara capnp://, pycapnp (pycapnp_calculator_client.py ``--bench-chain``) and both
interop directions; then the same chains through tests/peers/proxy.py adding a one-way latency,
in round trips (and, for cara, with each call awaited before the next: 3 round trips).

The cara and raw clients run in this process; each server (and each pycapnp client) in its own
process, started once and kept for all rounds. The echo is also timed with both ends on one
event loop in one process (cara frames, cara capnp://, raw; pycapnp by
../shared/anchors/rpc_pycapnp.py), the layout of the anchors and of earlier figures. Rounds
alternate the contestants so machine noise hits everyone alike; medians of the rounds are
reported with the ratios the goals are stated in
(issue 11: cara capnp:// >= 1.5x pycapnp; cara frames >= 1.0x raw sequential, >= 1.2x concurrent;
pipelined chain >= 2x pycapnp).

    python benchmarks/bench_rpc.py [--rounds 7] [--calls 5000] [--concurrent 5000]
                                   [--chains 1000] [--delay-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, HERE):  # cara and tests; _rpc_peer
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PEERS = REPO / "tests" / "peers"
ECHO_CAPNP = PEERS / "echo.capnp"
CORPUS = Path(os.environ.get("CARA_CORPUS", REPO.parent / "shared" / "corpus"))
CALC_CAPNP = CORPUS / "capnproto-0.9.2" / "c++" / "samples" / "calculator.capnp"
ANCHORS = Path(os.environ.get("CARA_ANCHORS", REPO.parent / "shared" / "anchors"))
TEXT = "hello"
WARM_UP = 100
#: The concurrent figure is the median of this many gathers of the concurrent calls, one after
#: another on the same connection: one gather of 5,000 calls lasts 20-40 ms here, short enough
#: for one scheduling hiccup to move it by a third.
GATHERS = 5


class PeerFailed(RuntimeError):
    """A server or client process did not do what it should (the message quotes its stderr)."""


# ------------------------------------------------------------------------------ processes


class Process:
    """A helper process: stdin a pipe (end of file ends every peer), stdout read by line."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1, cwd=REPO)

    def error(self, what: str) -> PeerFailed:
        self._stderr.flush()
        self._stderr.seek(0)
        name = " ".join(Path(a).name for a in self.argv[1:3])
        return PeerFailed(f"{name}: {what}; stderr: {self._stderr.read()[-1500:]!r}")

    def ready(self) -> str:
        """The address in the server's ``READY <address>`` line."""
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if len(words) != 2 or words[0] != "READY":
            raise self.error(f"expected 'READY <address>', got {words!r}")
        return words[1]

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def server(*args: str) -> Iterator[str]:
    """Run a server (``_rpc_peer.py ...`` or a tests/peers script), yield its address."""
    script = args[0] if args[0].endswith(".py") else str(HERE / "_rpc_peer.py")
    rest = args[1:] if args[0].endswith(".py") else args
    p = Process([sys.executable, script, *rest])
    try:
        yield p.ready()
    finally:
        p.stop()


def figures(output: str) -> dict[str, dict[str, float]]:
    """Peer lines ``kind a=1 b=2`` -> ``{kind: {'a': 1.0, 'b': 2.0}}``."""
    out = {}
    for line in output.splitlines():
        kind, *pairs = line.split()
        out[kind] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
    return out


def pycapnp_problem() -> str | None:
    check = subprocess.run([sys.executable, "-c", "import capnp"], capture_output=True,
                           text=True, timeout=60, check=False)
    if check.returncode:
        return f"pycapnp is not importable: {check.stderr.strip().splitlines()[-1:]}"
    return None


async def run_pycapnp_client(*args: str, timeout: float = 300) -> dict[str, dict[str, float]]:
    """Run a tests/peers pycapnp client to the end, without blocking this loop (a server or a
    proxy may live in it); its figures."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEERS / args[0]), *args[1:], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode:
        raise PeerFailed(f"{args[0]} exited {proc.returncode}: {err.decode()[-1500:]!r}")
    return figures(out.decode())


# ------------------------------------------------------------------------------ echo


def echo_class() -> Any:
    import cara

    return cara.load(str(ECHO_CAPNP)).SimpleEcho


async def cara_echo(url: str, calls: int, concurrent: int,
                    gather: Callable[..., Awaitable[list[Any]]] | None = None,
                    ) -> tuple[float, float]:
    """(sequential calls/s, concurrent calls/s) of a cara client against ``url``; ``gather``
    awaits the concurrent calls (``asyncio.gather`` unless given: bench_trio.py's runs under
    trio too)."""
    from cara.transports import Client

    client = Client()
    client.connect(url)
    await client.start()
    try:
        echo = echo_class()(client)
        for _ in range(WARM_UP):
            assert await echo.echo(TEXT) == TEXT
        start = time.perf_counter()
        for _ in range(calls):
            await echo.echo(TEXT)
        sequential = calls / (time.perf_counter() - start)
        rates = []
        for _ in range(GATHERS):
            start = time.perf_counter()
            results = await (gather or asyncio.gather)(*[echo.echo(TEXT)
                                                         for _ in range(concurrent)])
            rates.append(concurrent / (time.perf_counter() - start))
            assert results == [TEXT] * concurrent
    finally:
        await client.stop()
    return sequential, statistics.median(rates)


async def raw_echo(port: int, calls: int, concurrent: int) -> tuple[float, float]:
    """The floor: asyncio streams, msgpack ``[id, value]``, a dict of futures, no schema."""
    import msgpack

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    pending: dict[int, asyncio.Future[Any]] = {}
    pack = msgpack.Packer().pack
    next_id = 0

    async def read_replies() -> None:
        unpacker = msgpack.Unpacker()
        while data := await reader.read(65536):
            unpacker.feed(data)
            for call_id, value in unpacker:
                pending.pop(call_id).set_result(value)

    def call(value: str) -> asyncio.Future[Any]:
        nonlocal next_id
        next_id += 1
        future = loop.create_future()
        pending[next_id] = future
        writer.write(pack([next_id, value]))
        return future

    replies = asyncio.ensure_future(read_replies())
    try:
        for _ in range(WARM_UP):
            assert await call(TEXT) == TEXT
        start = time.perf_counter()
        for _ in range(calls):
            await call(TEXT)
        sequential = calls / (time.perf_counter() - start)
        rates = []
        for _ in range(GATHERS):
            start = time.perf_counter()
            results = await asyncio.gather(*[call(TEXT) for _ in range(concurrent)])
            rates.append(concurrent / (time.perf_counter() - start))
            assert results == [TEXT] * concurrent
        parallel = statistics.median(rates)
    finally:
        writer.close()
        replies.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await replies
    return sequential, parallel


async def in_one_process(kind: str, calls: int, concurrent: int) -> tuple[float, float]:
    """The echo with its server on this process's event loop too (as the anchors run)."""
    from _rpc_peer import echo_impl, raw_echo_handler

    from cara.rpc import register_interface
    from cara.transports import Server

    if kind == "raw":
        raw = await asyncio.start_server(raw_echo_handler, "127.0.0.1", 0)
        async with raw:
            return await raw_echo(raw.sockets[0].getsockname()[1], calls, concurrent)
    server = Server()
    server.bind(f"{kind}://127.0.0.1:0")
    register_interface(server)(echo_impl())
    await server.start()
    try:
        return await cara_echo(server.endpoints[0], calls, concurrent)
    finally:
        await server.stop()


async def pycapnp_in_one_process() -> tuple[float, float]:
    """../shared/anchors/rpc_pycapnp.py: pycapnp's client and server in one process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ANCHORS / "rpc_pycapnp.py"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    rates = re.findall(r"echo: ([0-9]+) calls/s", out.decode())
    if proc.returncode or len(rates) != 2:
        raise PeerFailed(f"rpc_pycapnp.py: {err.decode()[-1500:]!r}")
    return float(rates[0]), float(rates[1])


async def pycapnp_echo(port: int, calls: int, concurrent: int) -> tuple[float, float]:
    found = await run_pycapnp_client("pycapnp_echo_client.py", str(ECHO_CAPNP), "127.0.0.1",
                                     str(port), str(calls), str(concurrent), str(GATHERS))
    return found["sequential"]["calls_per_s"], found["concurrent"]["calls_per_s"]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------ chain


def calculator_class() -> Any:
    import cara

    return cara.load(str(CALC_CAPNP)).Calculator


def _chain_expression(add: Any) -> dict[str, Any]:
    return {"call": {"function": add, "params": [{"literal": 2}, {"literal": 3}]}}


async def cara_chain(url: str, chains: int, pipelined: bool = True) -> float:
    """Seconds per chain (getOperator -> evaluate -> read), sent pipelined and awaited once, or
    with each call awaited before the next."""
    from cara.transports import Client

    client = Client()
    client.connect(url)
    await client.start()
    try:
        calc = calculator_class()(client)

        async def chain() -> None:
            add = calc.getOperator("add")
            if not pipelined:
                add = await add
            value = calc.evaluate(_chain_expression(add)).value
            if not pipelined:
                value = await value
            assert await value.read() == 5

        for _ in range(min(chains, WARM_UP)):
            await chain()
        start = time.perf_counter()
        for _ in range(chains):
            await chain()
        return (time.perf_counter() - start) / chains
    finally:
        await client.stop()


async def pycapnp_chain(port: int, chains: int) -> float:
    found = await run_pycapnp_client("pycapnp_calculator_client.py", str(CALC_CAPNP),
                                     "127.0.0.1", str(port), "--bench-chain", str(chains))
    return found["chain"]["seconds"] / chains


async def through_proxy(port: int, delay: float, measure: Callable[[int], Awaitable[float]]
                        ) -> float:
    """``measure(proxy_port)`` with tests/peers/proxy.py in front of ``port``."""
    from tests.peers.proxy import Proxy

    async with Proxy("127.0.0.1", port, delay=delay) as proxy:
        seconds = await measure(proxy.port)
        # let the closed connections drain through the proxy rather than cancel them
        await asyncio.sleep(3 * delay + 0.1)
        return seconds


# ------------------------------------------------------------------------------ the run


Measure = Callable[[], Coroutine[Any, Any, Any]]
IN_ONE = "in one process:"


def _rounds(contestants: dict[str, Measure], rounds: int,
            figures_: dict[str, list[Any]], label: str) -> None:
    for r in range(rounds):
        order = list(contestants.items())
        if r % 2:
            order.reverse()
        for name, measure in order:
            figures_.setdefault(name, []).append(asyncio.run(measure()))
        print(f"{label}: round {r + 1}/{rounds} done", file=sys.stderr)


def _med(values: list[Any], i: int | None = None) -> float:
    return statistics.median(v if i is None else v[i] for v in values)


def _ratio(a: list[Any], b: list[Any], i: int | None = None) -> float:
    """The median of the per-round ratios a / b (each round times both back to back, so a
    drift in the machine's load cancels out of the ratio)."""
    return statistics.median((x if i is None else x[i]) / (y if i is None else y[i])
                             for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> str:
    """Run the rounds and return the markdown section (``benchmarks/run.py`` calls this with
    no arguments)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrent", type=int, default=5000)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="one-way latency the proxy adds (0: skip the latency table)")
    parser.add_argument("--latency-chains", type=int, default=10)
    parser.add_argument("--only", choices=("echo", "chain"),
                        help="run one of the two sections")
    args = parser.parse_args(argv if argv is not None else [])
    missing = pycapnp_problem()
    sections = []
    if args.only != "chain":
        sections.append(_echo_section(args, missing))
    if args.only != "echo":
        sections.append(_chain_section(args, missing))
    return "\n".join(sections)


def _echo_section(args: argparse.Namespace, missing: str | None) -> str:
    n, c = args.calls, args.concurrent
    runs: dict[str, list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(server("echo", "tcp://127.0.0.1:0"))
        capnp = stack.enter_context(server("echo", "capnp://127.0.0.1:0"))
        raw = int(stack.enter_context(server("raw")))
        contestants: dict[str, Measure] = {
            "cara frames": lambda: cara_echo(frames, n, c),
            "cara capnp://": lambda: cara_echo(capnp, n, c),
            "raw asyncio+msgpack": lambda: raw_echo(raw, n, c),
        }
        if missing is None:
            pyserver = int(stack.enter_context(server(
                str(PEERS / "pycapnp_echo_server.py"), str(ECHO_CAPNP), "127.0.0.1", "0")))
            contestants.update({
                "pycapnp": lambda: pycapnp_echo(pyserver, n, c),
                "cara -> pycapnp server": lambda: cara_echo(f"capnp://127.0.0.1:{pyserver}",
                                                            n, c),
                "pycapnp client -> cara": lambda: pycapnp_echo(_port(capnp), n, c),
            })
        local: dict[str, Measure] = {
            "cara frames": lambda: in_one_process("tcp", n, c),
            "cara capnp://": lambda: in_one_process("capnp", n, c),
            "raw asyncio+msgpack": lambda: in_one_process("raw", n, c),
        }
        if missing is None and n == c == 5000 and (ANCHORS / "rpc_pycapnp.py").is_file():
            local["pycapnp (anchors/rpc_pycapnp.py)"] = pycapnp_in_one_process
        contestants.update({f"{IN_ONE} {name}": m for name, m in local.items()})
        _rounds(contestants, args.rounds, runs, "rpc echo")
    med = {name: (_med(v, 0), _med(v, 1)) for name, v in runs.items()}
    lines = [
        "## rpc: echo, cara beside pycapnp and the raw floor (loopback TCP)", "",
        f"calls/s, median of {args.rounds} alternating rounds (ratios: the median of the "
        f"per-round ratios); *sequential* = {n:,} calls "
        f"awaited one by one, *concurrent* = {c:,} calls in one `asyncio.gather` (the median "
        f"of {GATHERS} such gathers in a row; the anchors' one-process pycapnp script times "
        f"one), after {WARM_UP} warm-up calls. Every server runs in a process of its own; "
        "the cara and raw clients run in the benchmark's process, the pycapnp client in its own "
        "(tests/peers/pycapnp_echo_client.py). *raw* is asyncio streams + msgpack "
        "`[id, text]` arrays with a future per call and no schema: the floor.", "",
        "| client -> server | sequential | concurrent |", "|---|---:|---:|"]
    for name, (seq, conc) in med.items():
        if not name.startswith(IN_ONE):
            lines.append(f"| {name} | {seq:,.0f} | {conc:,.0f} |")
    if missing:
        lines.append(f"| pycapnp | missing: {missing} | |")
    lines += ["", "The same with both ends on one event loop in one process (as "
              "../shared/anchors/ runs them; pycapnp: its rpc_pycapnp.py, 5,000 calls each):", "",
              "| both ends in one process | sequential | concurrent |", "|---|---:|---:|"]
    for name, (seq, conc) in med.items():
        if name.startswith(IN_ONE):
            lines.append(f"| {name[len(IN_ONE) + 1:]} | {seq:,.0f} | {conc:,.0f} |")
    lines.append("")

    def ratio(a: str, b: str, goals: tuple[float | None, float | None]) -> None:
        if a not in med or b not in med:
            return
        parts = []
        for i, kind in enumerate(("sequential", "concurrent")):
            value = _ratio(runs[a], runs[b], i)
            goal = goals[i]
            mark = "" if goal is None else \
                f" (goal >= {goal}x: {'met' if value >= goal else 'not met'})"
            parts.append(f"{kind} {value:.2f}x{mark}")
        lines.append(f"- {a} / {b}: {', '.join(parts)}")

    ratio("cara capnp://", "pycapnp", (1.5, 1.5))
    ratio("cara frames", "raw asyncio+msgpack", (1.0, 1.2))
    ratio(f"{IN_ONE} cara capnp://", f"{IN_ONE} pycapnp (anchors/rpc_pycapnp.py)", (1.5, 1.5))
    ratio(f"{IN_ONE} cara frames", f"{IN_ONE} raw asyncio+msgpack", (1.0, 1.2))
    ratio("cara frames", "pycapnp", (None, None))
    ratio("cara capnp://", "cara frames", (None, None))
    ratio("cara -> pycapnp server", "pycapnp", (None, None))
    ratio("pycapnp client -> cara", "pycapnp", (None, None))
    return "\n".join(lines) + "\n"


def _chain_section(args: argparse.Namespace, missing: str | None) -> str:
    if not CALC_CAPNP.is_file():
        return (f"## rpc: pipelined chain\n\nmissing: the calculator sample is not at "
                f"{CALC_CAPNP} (set CARA_CORPUS)\n")
    n = args.chains
    runs: dict[str, list[float]] = {}
    latency: dict[str, float] = {}
    delay = args.delay_ms / 1000
    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(server("calc", "tcp://127.0.0.1:0", str(CALC_CAPNP)))
        capnp = stack.enter_context(server("calc", "capnp://127.0.0.1:0", str(CALC_CAPNP)))
        contestants: dict[str, Measure] = {
            "cara frames": lambda: cara_chain(frames, n),
            "cara capnp://": lambda: cara_chain(capnp, n),
        }
        if missing is None:
            pyserver = int(stack.enter_context(server(
                str(PEERS / "pycapnp_calculator_server.py"), str(CALC_CAPNP), "127.0.0.1",
                "0")))
            contestants.update({
                "pycapnp": lambda: pycapnp_chain(pyserver, n),
                "cara -> pycapnp server": lambda: cara_chain(f"capnp://127.0.0.1:{pyserver}",
                                                             n),
                "pycapnp client -> cara": lambda: pycapnp_chain(_port(capnp), n),
            })
        _rounds(contestants, args.rounds, runs, "rpc chain")
        if delay > 0:
            latency = asyncio.run(_latency(args.latency_chains, delay, frames, capnp,
                                           pyserver if missing is None else None))
    med = {name: _med(v) for name, v in runs.items()}
    lines = [
        "## rpc: a pipelined chain of three dependent calls (the calculator sample)", "",
        "`getOperator(add)` -> `evaluate(call(that operator, 2, 3))` -> `.value.read()`, sent "
        "pipelined and awaited once (one round trip), one chain at a time: chains/s, median of "
        f"{args.rounds} alternating rounds (ratios: median of the per-round ratios) of "
        f"{n:,} chains after {min(n, WARM_UP)} warm-up "
        "chains, on loopback with no added latency. Servers: benchmarks/_rpc_peer.py (cara) and "
        "tests/peers/pycapnp_calculator_server.py, each in its own process; the pycapnp client "
        "is tests/peers/pycapnp_calculator_client.py `--bench-chain`.", "",
        "| client -> server | chains/s | µs per chain |", "|---|---:|---:|"]
    for name, seconds in med.items():
        lines.append(f"| {name} | {1 / seconds:,.0f} | {seconds * 1e6:,.0f} |")
    if missing:
        lines.append(f"| pycapnp | missing: {missing} | |")
    lines.append("")
    if "pycapnp" in med:
        for name in ("cara frames", "cara capnp://"):
            value = _ratio(runs["pycapnp"], runs[name])  # times: theirs / ours
            lines.append(f"- {name} / pycapnp: {value:.2f}x "
                         f"(goal >= 2x: {'met' if value >= 2 else 'not met'})")
    if latency:
        rtt = 2 * delay
        lines += [
            "", f"Through tests/peers/proxy.py adding {args.delay_ms:g} ms each way "
            f"(a round trip of {rtt * 1000:g} ms), best of {args.latency_chains} chains:", "",
            "| client -> server | ms per chain | round trips |", "|---|---:|---:|"]
        for name, seconds in latency.items():
            lines.append(f"| {name} | {seconds * 1000:.1f} | {seconds / rtt:.2f} |")
    return "\n".join(lines) + "\n"


async def _latency(chains: int, delay: float, frames: str, capnp: str,
                   pyserver: int | None) -> dict[str, float]:
    """Best seconds per chain through the delaying proxy (one chain timed at a time)."""

    def best(url_of: Callable[[int], str], pipelined: bool = True
             ) -> Callable[[int], Awaitable[float]]:
        async def measure(port: int) -> float:
            times = [await cara_chain(url_of(port), 1, pipelined) for _ in range(chains)]
            return min(times)
        return measure

    out: dict[str, float] = {}
    cases: list[tuple[str, int, Callable[[int], Awaitable[float]]]] = [
        ("cara frames, pipelined", _port(frames),
         best(lambda p: f"tcp://127.0.0.1:{p}")),
        ("cara frames, each call awaited", _port(frames),
         best(lambda p: f"tcp://127.0.0.1:{p}", pipelined=False)),
        ("cara capnp://, pipelined", _port(capnp),
         best(lambda p: f"capnp://127.0.0.1:{p}")),
    ]
    if pyserver is not None:
        async def pycapnp_best(port: int) -> float:
            return min([await pycapnp_chain(port, 1) for _ in range(chains)])

        cases.append(("pycapnp, pipelined", pyserver, pycapnp_best))
    for name, port, measure in cases:
        out[name] = await through_proxy(port, delay, measure)
    return out


if __name__ == "__main__":
    print(main(sys.argv[1:]))
