"""Streaming calls (``-> stream``): the flow-control window (cara.rpc.flow, with a fake clock),
then producers and consumers over both encodings -- every byte in order, errors on the next
call, calls of one object one at a time, the producer's memory bounded by the window -- and a
pycapnp consumer on ``capnp://``. The RPC tests run under asyncio and under trio (``backend``).
``CARA_LONG=1`` streams 1 GB."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cara
from cara.rpc import Failed, LocalCap, StreamCall, Window, feed, stream_window
from cara.rpc.flow import DEFAULT_MAXIMUM, DEFAULT_MINIMUM
from tests.peers.harness import HOST, apeer
from tests.peers.proxy import proxy_thread
from tests.rpc.stream_consumer import STREAM_CAPNP, Sink, Source, stream_capnp
from tests.transports.backends import BACKENDS, Event, gather, is_cancellation, sleep
from tests.transports.backends import run as run_on

LONG = bool(os.environ.get("CARA_LONG"))
ROOT = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024
KB = 1024
MB = 1024 * 1024


# ------------------------------------------------------------------------------ the window


def test_ready_allows_the_window_plus_the_largest_message() -> None:
    w = Window(100 * KB, minimum=64 * KB)
    assert w.ready and w.idle
    t1 = w.sent(150 * KB, 0.0)  # bigger than the window: the next still goes
    assert w.ready and w.in_flight == 150 * KB and w.max_message == 150 * KB
    w.sent(100 * KB, 0.0)
    assert not w.ready  # 250 KB >= 100 KB + 150 KB
    w.returned(t1, 0.1)
    assert w.ready and w.in_flight == 100 * KB and w.calls == 1
    w.returned(t1, 0.2)  # a second report changes nothing
    assert w.in_flight == 100 * KB and w.calls == 1


def test_a_waiting_sender_resumes_at_half_of_what_ready_allows() -> None:
    w = Window(256 * KB, adaptive=False)
    tickets = [w.sent(CHUNK, 0.0) for _ in range(5)]  # 320 KB = window + largest message
    assert not w.ready and not w.resume
    w.returned(tickets[0], 0.1)
    assert w.ready and not w.resume  # room for one: a waiting sender sleeps on
    w.returned(tickets[1], 0.1)
    assert not w.resume  # 192 KB in flight
    w.returned(tickets[2], 0.1)
    assert w.ready and w.resume  # 128 KB: under half of 320 KB


def test_calls_in_flight_are_bounded_however_small() -> None:
    w = Window(max_calls=3)
    for _ in range(3):
        w.sent(10, 0.0)
    assert not w.ready and w.in_flight == 30


def test_a_fixed_window_does_not_move() -> None:
    w = Window(200 * KB, adaptive=False)
    clock = 0.0
    for _ in range(100):
        t = w.sent(CHUNK, clock)
        clock += 0.01
        w.returned(t, clock)
    assert w.window == 200 * KB


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="minimum <= maximum"):
        Window(minimum=10, maximum=5)
    with pytest.raises(ValueError, match="max_calls"):
        Window(max_calls=0)


def simulate(w: Window, phases: list[tuple[float, float]], rtt: float,
             size: int = CHUNK) -> tuple[float, int, list[int]]:
    """A producer that sends whenever the window has room, over a path of round trip ``rtt``
    whose consumer takes ``bandwidth`` bytes/s (one call after the other) for ``seconds``, per
    phase ``(bandwidth, seconds)``: (bytes/s carried in the last phase, most bytes ever in
    flight, the window after each return)."""
    clock = 0.0
    link_free = 0.0
    pending: list[tuple[float, Any]] = []  # (return time, ticket), in order
    most = 0
    windows = []
    end = 0.0
    for bandwidth, seconds in phases:
        begin, end, delivered = clock, end + seconds, 0
        while clock < end:
            while w.ready:
                ticket = w.sent(size, clock)
                most = max(most, w.in_flight)
                start = max(link_free, clock + rtt / 2)  # arrives, waits for the consumer
                link_free = start + size / bandwidth
                pending.append((link_free + rtt / 2, ticket))
            back, ticket = pending.pop(0)
            clock = back
            w.returned(ticket, clock)
            delivered += size
            windows.append(w.window)
    return delivered / (clock - begin), most, windows


@pytest.mark.parametrize(("bandwidth", "rtt"), [(50 * MB, 0.1), (200 * MB, 0.01),
                                                (20 * MB, 0.2)])
def test_the_window_finds_the_bandwidth_delay_product(bandwidth: float, rtt: float) -> None:
    w = Window()
    rate, _most, windows = simulate(w, [(bandwidth, 60 * rtt)], rtt)
    bdp = bandwidth * rtt
    assert rate > 0.8 * bandwidth  # the path is kept busy
    assert not w.startup
    # and not much more than that is kept in flight: queues do not grow without bound
    assert bdp <= w.window <= 2.5 * bdp
    assert max(windows) <= min(DEFAULT_MAXIMUM, 4 * bdp)


def test_the_window_grows_at_most_twofold_per_round_trip() -> None:
    w = Window(64 * KB)
    _rate, _most, windows = simulate(w, [(1000 * MB, 0.35)], 0.1)
    # returns of the first round cannot more than double the first window, and so on
    for a, b in itertools.pairwise(windows):
        assert b <= 2 * a + CHUNK


def test_a_slow_consumer_shrinks_the_window() -> None:
    w = Window()
    # 100 MB/s for 5 s, then the consumer slows down to 1 MB/s: the window follows (by 7/8
    # per round trip at most, and round trips are long while the queue is deep)
    rate, _most, windows = simulate(w, [(100 * MB, 5), (1 * MB, 120)], 0.05)
    big = max(windows)
    assert big >= 4 * MB
    assert w.window < big / 4
    assert w.window <= max(DEFAULT_MINIMUM, 3 * 1 * MB * 0.05)
    assert rate > 0.9 * MB


# ------------------------------------------------------------------------------ RPC


def on_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop of its ``backend`` parameter (asyncio's when it
    has none), with a deadline."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            await test(*args, **kwargs)

        run_on(kwargs.get("backend", "asyncio"), main, 600 if LONG else 60)

    return run


SCHEMES = ("tcp", "capnp")


def chunks(n: int, size: int = CHUNK) -> Iterator[bytes]:
    """``n`` chunks that all differ (reordering one changes the digest)."""
    for i in range(n):
        yield i.to_bytes(8, "little") * (size // 8)


async def finish(sink: Any) -> tuple[int, int, bytes]:
    """``sink.done()``'s total, count and digest."""
    r = await sink.done()
    return r.total, r.count, r.digest


async def write_until_it_fails(sink: Any, exc: type[BaseException], fail_at: int) -> None:
    """Write small chunks, pausing so that the refusal of chunk ``fail_at`` comes back: a
    later write raises it (as ``exc``); then ``done()`` does too."""
    with pytest.raises(exc, match=f"chunk {fail_at} refused") as raised:
        for c in chunks(1000, KB):
            await sink.write(c)
            await sleep(0.002)
    assert not is_cancellation(raised.value)
    with pytest.raises(exc, match=f"chunk {fail_at} refused"):
        await sink.done()


def digest(items: Iterable[bytes]) -> tuple[int, bytes]:
    h = hashlib.sha256()
    total = 0
    for c in items:
        h.update(c)
        total += len(c)
    return total, h.digest()


@contextlib.asynccontextmanager
async def local_source(scheme: str, delay: float = 0.0) -> AsyncIterator[tuple[Any, Source]]:
    """A cara Source served in this loop, and a client's proxy of it (through a proxy adding
    ``delay`` each way when given)."""
    impl = Source()
    server = cara.Server()
    server.bind(f"{scheme}://{HOST}:0")
    server.services.register(stream_capnp.Source, impl)
    await server.start()
    port = int(server.endpoints[0].rsplit(":", 1)[1])
    with contextlib.ExitStack() as stack:
        if delay:
            port = stack.enter_context(proxy_thread(HOST, port, delay=delay)).port
        client = cara.Client()
        client.connect(f"{scheme}://{HOST}:{port}")
        await client.start()
        try:
            yield stream_capnp.Source(client), impl
        finally:
            await client.stop()
            await server.stop()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_every_byte_arrives_in_order(scheme: str, backend: str) -> None:
    """8 MB (with CARA_LONG=1, 1 GB) of chunks that all differ: the consumer's SHA-256 of what
    it got, in the order it got it, is the producer's."""
    n = 16384 if LONG else 125
    async with local_source(scheme) as (source, impl):
        sink = await source.open(0.0 if LONG else 0.0005, 0)
        calls = [sink.write(c) for c in chunks(3)]
        assert all(isinstance(c, StreamCall) for c in calls)
        for c in chunks(n, CHUNK):
            await sink.write(c)
        total, count, dig = await finish(sink)
        want_total, want_digest = digest(itertools.chain(chunks(3), chunks(n)))
        assert (total, count, dig) == (want_total, n + 3, want_digest)
        # the consumer saw one call at a time
        assert impl.sinks[0].most_running == 1


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_writes_do_not_wait_for_returns(scheme: str, backend: str) -> None:
    """Through 40 ms of round trip, 200 writes take a few round trips, not 200."""
    async with local_source(scheme, delay=0.02) as (source, _impl):
        sink = await source.open(0.0, 0)
        start = time.perf_counter()
        for c in chunks(200, 16 * KB):
            await sink.write(c)
        total, count, _ = await finish(sink)
        assert (total, count) == (200 * 16 * KB, 200)
        assert time.perf_counter() - start < 2.0  # one round trip per write would take 8 s


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_an_error_surfaces_on_the_next_write_and_on_done(scheme: str,
                                                               backend: str) -> None:
    async with local_source(scheme) as (source, _impl):
        sink = await source.open(0.0, 3)
        await write_until_it_fails(sink, Exception, 3)
        with pytest.raises(Exception, match="chunk 3 refused"):
            await sink.write(b"more")  # every later write raises it, nothing is sent
        # another sink of the same source is not affected
        other = await source.open(0.0, 0)
        await other.write(b"abc")
        assert (await finish(other))[:2] == (3, 1)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_done_waits_for_every_earlier_write(scheme: str, backend: str) -> None:
    """done() is sent at once but answers after the writes (the consumer runs them first), and
    raises the error of a write that failed before it even when done() itself succeeded."""
    async with local_source(scheme) as (source, _impl):
        sink = await source.open(0.002, 0)
        for c in chunks(20, KB):
            await sink.write(c)  # the window has room: none of these waits
        total, count, _ = await finish(sink)
        assert (total, count) == (20 * KB, 20)


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_feed_sends_an_async_iterator_and_waits_for_every_return(backend: str) -> None:
    async with local_source("tcp") as (source, impl):
        sink = await source.open(0.001, 0)

        async def produce() -> AsyncIterator[bytes]:
            for c in chunks(40, 8 * KB):
                yield c

        assert await feed(sink.write, produce()) == 40
        assert impl.sinks[0].count == 40  # every call has returned
        assert await cara.feed(sink.write, chunks(2, KB)) == 2
        assert (await finish(sink))[1] == 42
        bad = await source.open(0.0, 5)
        with pytest.raises(Exception, match="chunk 5 refused"):
            await feed(bad.write, chunks(6, KB))  # the error of the last returns still counts


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_in_process_streams_are_ordered_and_fail_the_same_way(backend: str) -> None:
    """A sink of this process (no connection) streams through the same window and gate."""
    good = Sink(0.0005, 0)
    sink = LocalCap(good).cast(stream_capnp.Sink)
    for c in chunks(30, KB):
        await sink.write(c)
    assert await finish(sink) == (30 * KB, 30, digest(chunks(30, KB))[1])
    assert good.most_running == 1
    await write_until_it_fails(LocalCap(Sink(0.0005, 4)).cast(stream_capnp.Sink), ValueError, 4)


@contextlib.contextmanager
def consumer_process(scheme: str) -> Iterator[str]:
    """tests/rpc/stream_consumer.py in a process of its own: its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.rpc.stream_consumer",
                             f"{scheme}://{HOST}:0"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["READY"], line
        yield line[1]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def stream_measured(url: str, megabytes: int, delay: float,
                          window: Window | None = None) -> tuple[int, int, int]:
    """Stream ``megabytes`` in 64 KB chunks to a consumer at ``url`` sleeping ``delay`` per
    chunk: (bytes the consumer counted, the producer's peak traced memory, the window bound)."""
    client = cara.Client()
    client.connect(url)
    await client.start()
    try:
        sink = await stream_capnp.Source(client).open(delay, 0)
        w = stream_window(sink, window)
        chunk = b"x" * CHUNK
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(megabytes * MB // CHUNK):
                await sink.write(chunk)
            total, count, _ = await finish(sink)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert count == megabytes * MB // CHUNK
        return total, peak, w.maximum + w.max_message
    finally:
        await client.stop()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_a_slow_consumer_bounds_the_producers_memory(scheme: str, backend: str) -> None:
    """A consumer taking 64 MB/s at most: the producer's memory stays under the window plus a
    constant while it sends several times the window."""
    megabytes = 1024 if LONG else 24
    with consumer_process(scheme) as url:
        window = Window(maximum=4 * MB)
        total, peak, bound = await stream_measured(url, megabytes, 0.001, window)
    assert total == megabytes * MB
    assert peak < bound + 2 * MB, f"peak {peak / MB:.1f} MB"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_the_default_window_bounds_memory_too(scheme: str, backend: str) -> None:
    megabytes = 1024 if LONG else 48
    with consumer_process(scheme) as url:
        total, peak, bound = await stream_measured(url, megabytes, 0.0002)
    assert total == megabytes * MB
    assert DEFAULT_MAXIMUM < bound < DEFAULT_MAXIMUM + 2 * CHUNK
    assert peak < bound + 2 * MB, f"peak {peak / MB:.1f} MB"


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_a_pycapnp_consumer_gets_the_same_stream(backend: str) -> None:
    async with apeer("pycapnp_stream_server.py", str(STREAM_CAPNP), HOST, "0",
                     ready=True) as peer:
        url = f"capnp://{HOST}:{peer.port}"
        client = cara.Client()
        client.connect(url)
        await client.start()
        try:
            source = stream_capnp.Source(client)
            sink = await source.open(0.0, 0)
            n = 256 if not LONG else 16384
            assert await feed(sink.write, chunks(n)) == n
            total, count, dig = await finish(sink)
            assert (total, dig) == digest(chunks(n)) and count == n
            await write_until_it_fails(await source.open(0.0, 3), Failed, 3)
        finally:
            await client.stop()
        # and its memory, measured here, stays bounded (the consumer sleeps per chunk)
        total, peak, bound = await stream_measured(url, 1024 if LONG else 24, 0.001,
                                                   Window(maximum=4 * MB))
        assert peak < bound + 2 * MB, f"peak {peak / MB:.1f} MB"


def test_params_are_counted_by_their_bytes_and_text() -> None:
    from cara.rpc.proxies import params_size

    assert params_size({0: b"x" * 1000}) == 16 + 1008
    assert params_size({0: [b"ab", "cd"], 1: 5, 2: None}) == 16 + (16 + 10 + 10) + 8 + 8
    assert params_size([[[[b"x"]]]]) == 16 * 4 + 9
    deep: Any = b"y"
    for _ in range(40):  # bounded, however deep
        deep = [deep]
    assert params_size(deep) < 40 * 16


# ------------------------------------------------------------------------------ the gate


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_the_gate_runs_calls_in_order_a_stream_call_alone(backend: str) -> None:
    from cara.rpc.gate import StreamGate

    gate = StreamGate()
    log: list[str] = []
    release = Event()

    async def write(name: str) -> str:
        log.append(f"start {name}")
        if name == "w1":
            await release.wait()
        elif name == "slow":
            await sleep(10)
        log.append(f"end {name}")
        return name

    def status(name: str) -> str:
        log.append(f"status {name}")
        return name

    stream = gate.wrap(write, True)
    plain = gate.wrap(status, False)
    first = stream("w1")  # (a future: the handler waits in the gate's drainer)
    second = stream("w2")
    middle = plain("s")
    skipped = stream("skipped")
    slow = stream("slow")
    last = stream("w3")
    skipped.cancel()  # a call cancelled while it waits never runs
    await sleep(0.01)
    assert log == ["start w1"]  # everything else waits behind the running stream call
    release.set()
    assert await first == "w1" and await second == "w2" and await middle == "s"
    await sleep(0.01)
    assert log[-1] == "start slow"
    slow.cancel()  # the running call: its handler is cancelled, the next one runs
    assert await last == "w3"
    assert slow.cancelled()
    assert log == ["start w1", "end w1", "start w2", "end w2", "status s", "start slow",
                   "start w3", "end w3"]
    assert gate.drainer is None  # nothing left: the drainer has gone


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_a_failed_stream_call_breaks_the_object(backend: str) -> None:
    from cara.rpc.gate import StreamGate

    gate = StreamGate()

    async def write(n: int) -> None:
        await sleep(0)
        if n == 2:
            raise ValueError("broken at 2")

    stream = gate.wrap(write, True)
    plain = gate.wrap(lambda _: "ok", False)
    calls = [stream(1), stream(2), stream(3), plain(None)]
    results = await gather(*calls, return_exceptions=True)
    assert results[0] is None
    assert all(isinstance(r, ValueError) and "broken at 2" in str(r) for r in results[1:])
    with pytest.raises(ValueError, match="broken at 2"):
        plain(None)  # every later call fails at once


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_a_pycapnp_producer_streams_to_a_cara_consumer(backend: str) -> None:
    """pycapnp sends up to 256 writes at once (it has no flow control): the cara consumer still
    runs them one at a time, in order, and answers done() after the last."""
    impl = Source()
    server = cara.Server()
    server.bind(f"capnp://{HOST}:0")
    server.services.register(stream_capnp.Source, impl)
    await server.start()
    port = server.endpoints[0].rsplit(":", 1)[1]
    try:
        async with apeer("pycapnp_stream_client.py", str(STREAM_CAPNP), HOST, port,
                         "8") as peer:
            code, lines = await peer.afinish(60)
        assert code == 0 and lines[0].startswith("stream mb=8 "), lines
        (sink,) = impl.sinks
        assert (sink.count, sink.total, sink.most_running) == (128, 8 * MB, 1)
    finally:
        await server.stop()


@pytest.mark.parametrize("backend", BACKENDS)
@on_loop
async def test_interfaces_described_without_runtime_classes_stream_too(
        tmp_path: Path, backend: str) -> None:
    """Plain proxies and implementations (interfaces_from_nodes, the reference compiler's
    nodes): the same StreamCall, order and error on done()."""
    from cara.rpc import Services, interfaces_from_nodes
    from tests.rpc.test_connection import Wire
    from tests.support.reference import reference_request

    (tmp_path / "stream.capnp").write_bytes(STREAM_CAPNP.read_bytes())
    request = reference_request(["stream.capnp"], cwd=tmp_path,
                                import_path=[str(ROOT / "cara" / "schema" / "standard")])
    infos = {i.name: i for i in interfaces_from_nodes(request.nodes).values()}
    received: list[bytes] = []

    async def write(chunk: bytes) -> None:
        if chunk == b"bad":
            raise ValueError("bad chunk")
        received.append(chunk)
        await sleep(0)

    services = Services()
    services.register(infos["Sink"], {"write": write, "done": lambda: (len(received), 0, b"")})
    sink = Wire(services).client.bootstrap(infos["Sink"])
    calls = [sink.write(c) for c in chunks(20, KB)]
    assert all(isinstance(c, StreamCall) for c in calls)
    assert (await sink.done())["total"] == 20
    assert received == list(chunks(20, KB))
    with pytest.raises(ValueError, match="bad chunk"):
        await feed(sink.write, [b"bad", b"more"])
    with pytest.raises(ValueError, match="bad chunk"):
        await sink.done()
