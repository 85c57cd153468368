"""A server under abuse keeps serving its well-behaved clients.

Abusive peers are raw loopback sockets that write frames by hand (a 4-byte big-endian length and a
msgpack array, as documented in cara/rpc/wire_cara.py): garbage, oversized frames, unknown
capabilities, interface ids and method numbers, and callers that vanish mid-call. Each must get
an error reply or be disconnected, while a normal client on the same server sees no failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest

from cara.rpc import wire_cara as M
from cara.rpc.errors import KIND_UNIMPLEMENTED
from cara.transports import Server
from tests.conftest import LONG
from tests.transports.support import CalcImpl, connected, eventually, ifaces, run, serving

#: Each test runs with the frame loop in C and in Python (tests/transports/conftest.py).
pytestmark = pytest.mark.usefixtures("frame_loop")

MAX_FRAME = 64 * 1024
#: What a good client keeps of its unloaded calls/s under four attackers (issue 16's goal is
#: 0.5; see test_a_good_client_keeps_a_share_of_its_rate_under_four_attackers).
MIN_SHARE = 0.2


class RawPeer:
    """A hand-driven connection: writes frames, reads frames, sees EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server) -> RawPeer:
        host, port = server.endpoints[0].removeprefix("tcp://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, message: Any) -> None:
        body = msgpack.packb(message)
        self.writer.write(struct.pack(">I", len(body)) + body)

    async def recv(self, timeout: float = 5.0) -> Any:
        """The next message, or ``None`` at EOF (the server closed the connection)."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
            body = await asyncio.wait_for(
                self.reader.readexactly(struct.unpack(">I", header)[0]), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return msgpack.unpackb(body, strict_map_key=False)

    async def expect_closed(self, timeout: float = 5.0) -> list[Any]:
        """Read until EOF (returning what came first, e.g. an ABORT); fails if still open."""
        seen = []
        while True:
            msg = await self.recv(timeout)
            if msg is None:
                return seen
            seen.append(msg)

    def close(self) -> None:
        self.writer.close()


class GoodClient:
    """Calls echo in a loop and records every failure; run beside the abuse."""

    def __init__(self) -> None:
        self.ok = 0
        self.failures: list[BaseException] = []
        self.stop = asyncio.Event()

    async def run(self, server: Server) -> None:
        async with connected(server) as client:
            echo = client.bootstrap(ifaces()["Echo"])
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    assert await echo.echo(f"hello {i}") == f"hello {i}"
                    self.ok += 1
                except BaseException as exc:
                    self.failures.append(exc)
                    return
                await asyncio.sleep(0)


def _garbage_frames(rng: random.Random) -> list[bytes]:
    """Bodies that are not valid messages, each in its own frame."""
    packb = msgpack.packb
    frames = [
        b"", b"\xc1", b"\x91", b"\xdd\xff\xff\xff\xff", os.urandom(50),
        packb("not an array"), packb([]), packb([99]), packb([M.CALL]),
        packb([M.CALL, "q", [1], 1, 0, None, []]), packb([M.CALL, 1, "target", 1, 0, None, []]),
        packb([M.CALL, 1, [1, 2], 1, "i", None, []]), packb([M.RETURN]), packb([M.RELEASE, 5]),
        packb([M.RETURN_FINAL, 3, None, [[1, 0]]]),  # a final return cannot hold capabilities
        packb([M.RETURN, 3, None, []]),  # a return for a question never asked
        packb([M.CALL, 1, 0, 1, 0, msgpack.ExtType(M.EXT_CAP, packb(0)), [[3, 4242]]]),
        packb([M.CALL, 1, [1], 1, 0, msgpack.ExtType(M.EXT_CAP, packb("x")), []]),
        packb([M.DISEMBARGO, [7], 1, 3]), packb([M.RESOLVE, 1, [9, 9]]),
        packb([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        b"\x91" * 100_000,  # 100,000 nested arrays: too deep for any decoder, must not crash
    ]
    frames += [os.urandom(rng.randrange(1, 200)) for _ in range(10)]
    return frames


def test_garbage_oversized_unknown_and_vanishing_peers_do_not_disturb_a_good_client() -> None:
    I = ifaces()
    echo_id, calc = I["Echo"].id, I["Calc"]
    rng = random.Random(1234)

    async def main() -> None:
        impl = CalcImpl()
        async with serving((I["Echo"], lambda text: text), (calc, impl),
                           max_frame_size=MAX_FRAME) as server:
            good = GoodClient()
            good_task = asyncio.ensure_future(good.run(server))
            await eventually(lambda: good.ok > 0, what="the good client to start")

            # 1. Garbage in a well-formed frame: ABORT (optional) and disconnect.
            for body in _garbage_frames(rng):
                peer = await RawPeer.open(server)
                peer.send_bytes(struct.pack(">I", len(body)) + body)
                seen = await peer.expect_closed()
                assert all(msg[0] == M.ABORT for msg in seen), seen
                peer.close()

            # 2. A frame header over the limit: disconnected before the body is buffered.
            peer = await RawPeer.open(server)
            peer.send_bytes(struct.pack(">I", MAX_FRAME + 1) + b"x" * 100)
            seen = await peer.expect_closed()
            assert seen and seen[0][0] == M.ABORT and "exceeds" in seen[0][1]
            peer.close()

            # 3. Unknown capability / interface / method, and bad params: error replies, and the
            #    connection stays usable.
            peer = await RawPeer.open(server)
            E, C = [100], [101]  # calls pipelined on the answers to two bootstraps
            peer.send([M.BOOTSTRAP, 100, echo_id])
            peer.send([M.BOOTSTRAP, 101, calc.id])
            peer.send([M.BOOTSTRAP, 102, 0x1234])                         # no such interface
            peer.send([M.CALL, 1, 12345, echo_id, 0, None, []])           # no such export
            peer.send([M.CALL, 2, [102], 0x1234, 0, None, []])            # on a failed bootstrap
            peer.send([M.CALL, 3, E, echo_id, 99, None, []])              # no such method
            peer.send([M.CALL, 4, E, calc.id, 0, None, []])               # another iface's method
            peer.send([M.CALL, 5, E, echo_id, 0, [1, 2], []])             # params not a map
            peer.send([M.CALL, 6, C, calc.id, 0, {0: "a", 1: 2}, []])     # a + b: TypeError
            replies = {}
            for _ in range(9):
                msg = await peer.recv()
                assert msg is not None and msg[0] in (M.ERROR, M.RETURN), msg  # bootstraps
                replies[msg[1]] = msg
            assert replies[100][0] == replies[101][0] == M.RETURN
            for qid in (102, 1, 2, 3):
                assert replies[qid][0] == M.ERROR and replies[qid][2] == KIND_UNIMPLEMENTED, \
                    replies[qid]
            assert replies[5][3] == "TypeError" and replies[6][3] == "TypeError"
            peer.send([M.RELEASE, 777, 1])  # releasing what was never exported: ignored
            peer.send([M.FINISH, 999])      # finishing an unknown question: ignored
            peer.send([M.CALL, 7, E, echo_id, 0, {0: "still here"}, []])
            assert await peer.recv() == [M.RETURN_FINAL, 7, {0: "still here"}, []]
            # A duplicate question id while the first is running is a protocol violation.
            peer.send([M.CALL, 8, C, calc.id, 2, {0: 30.0}, []])
            peer.send([M.CALL, 8, C, calc.id, 2, {0: 30.0}, []])
            seen = await peer.expect_closed()
            assert seen and seen[-1][0] == M.ABORT
            peer.close()

            # 4. Vanishing mid-call: the handler is cancelled and nothing is left behind.
            started = impl.started
            for qid in range(5):
                peer = await RawPeer.open(server)
                peer.send([M.BOOTSTRAP, 100, calc.id])
                peer.send([M.CALL, qid, [100], calc.id, 2, {0: 30.0}, []])
                await eventually(lambda s=started + qid: impl.started > s, what="handler start")
                peer.close()
            await eventually(lambda: impl.cancelled >= 5, what="handlers of vanished callers")
            await eventually(lambda: server.stats()["answers"] == 0, what="no answers left")

            # 5. Half a frame and silence: costs nothing and does not block anyone.
            idle = await RawPeer.open(server)
            idle.send_bytes(struct.pack(">I", 1000) + b"\x00" * 10)

            good.stop.set()
            await good_task
            assert good.failures == [] and good.ok > 10
            idle.close()
            await eventually(lambda: server.stats()["connections"] == 0, what="all gone")

    run(main())


def test_random_frames_never_crash_the_server() -> None:
    I = ifaces()
    rng = random.Random(99)
    n = 20_000 if LONG else 1000

    def random_value(depth: int = 0) -> Any:
        choice = rng.randrange(9 if depth < 3 else 5)
        if choice == 0:
            return rng.randrange(-5, 2**20)
        if choice == 1:
            return rng.choice([None, True, False, 1.5])
        if choice == 2:
            return "".join(rng.choice("ab\x00é") for _ in range(rng.randrange(5)))
        if choice == 3:
            return os.urandom(rng.randrange(4))
        if choice == 4:
            return msgpack.ExtType(rng.randrange(1, 4), msgpack.packb(rng.randrange(5)))
        if choice in (5, 6):
            return [random_value(depth + 1) for _ in range(rng.randrange(7))]
        return {rng.choice(["k", b"k", 2**40, -1]) if rng.random() < 0.3 else rng.randrange(4):
                random_value(depth + 1) for _ in range(rng.randrange(4))}

    def random_message() -> Any:
        ids = [I["Echo"].id, I["Calc"].id, I["Holder"].id, rng.randrange(2**64)]
        kind = rng.randrange(7)
        shape = [kind, rng.randrange(5), rng.choice([[rng.choice(ids)], rng.randrange(5)]),
                 rng.choice(ids), rng.randrange(12), random_value()]
        if rng.random() < 0.3:
            return random_value()
        return shape[:rng.randrange(1, 7)] if rng.random() < 0.3 else shape

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text), (I["Calc"], CalcImpl()),
                           (I["Holder"], {"put": lambda cap: None}),
                           max_frame_size=MAX_FRAME) as server:
            good = GoodClient()
            good_task = asyncio.ensure_future(good.run(server))
            peers = [await RawPeer.open(server) for _ in range(10)]
            for i in range(n):
                peer = peers[i % len(peers)]
                if peer.writer.is_closing() or peer.reader.at_eof():
                    peer.close()
                    peer = peers[i % len(peers)] = await RawPeer.open(server)
                try:
                    peer.send(random_message())
                except (ConnectionError, RuntimeError):
                    peer.close()
                    peers[i % len(peers)] = await RawPeer.open(server)
                if i % 10 == 0:
                    await asyncio.sleep(0)
            for peer in peers:
                peer.close()
            good.stop.set()
            await good_task
            assert good.failures == [] and good.ok > 0
            await eventually(lambda: server.stats()["connections"] == 0, what="all gone",
                             timeout=20)
            assert server.stats()["answers"] == 0

    run(main())


@pytest.mark.slow
def test_many_clients_many_concurrent_calls_lose_or_cross_no_reply() -> None:
    """100 clients x 1,000 concurrent calls (about 1 s); 200 x 5,000 with CARA_LONG=1."""
    I = ifaces()
    clients, calls = (200, 5000) if LONG else (100, 1000)

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl())) as server:

            async def one(c: int) -> None:
                async with connected(server) as client:
                    calc = client.bootstrap(I["Calc"])
                    results = await asyncio.gather(*[calc.add(c * 1_000_000, i)
                                                     for i in range(calls)])
                    assert results == [c * 1_000_000 + i for i in range(calls)]

            await asyncio.gather(*[one(c) for c in range(clients)])
            await eventually(lambda: server.stats()["connections"] == 0, what="all closed")

    run(main(), timeout=120)


def test_a_caller_that_never_reads_its_answers_is_slowed_not_buffered() -> None:
    """Backpressure: when answers pile up unread, the server stops reading that connection, so
    the caller's writes block in its own kernel buffers instead of filling the server's memory."""
    I = ifaces()
    echo_id = I["Echo"].id
    handled = 0
    text = "x" * 32768

    def echo(value: str) -> str:
        nonlocal handled
        handled += value == text  # the flood's calls, not the good client's
        return value

    async def main() -> None:
        async with serving((I["Echo"], echo)) as server:
            peer = await RawPeer.open(server)
            sent = 0
            peer.send([M.BOOTSTRAP, 1_000_000, echo_id])
            for qid in range(20_000):  # up to 650 MB: far more than any buffer holds
                peer.send([M.CALL, qid, [1_000_000], echo_id, 0, {0: text}, []])
                sent += 1
                try:
                    await asyncio.wait_for(peer.writer.drain(), 0.5)
                except asyncio.TimeoutError:
                    break  # the server stopped reading us
            else:
                raise AssertionError("the server never pushed back")
            await asyncio.sleep(0.2)
            plateau = handled
            await asyncio.sleep(0.3)
            # While we do not read, the server reads at most what the kernel lets its own
            # answers drain into (a read chunk, 8 frames here), not the backlog we wrote.
            assert handled - plateau <= 8 and handled < sent
            (proto,) = server._protocols
            assert proto.transport is not None
            assert proto.transport.get_write_buffer_size() < 4 * 1024 * 1024
            # A well-behaved client on the same server is not affected.
            async with connected(server) as client:
                assert await client.bootstrap(I["Echo"]).echo("hi") == "hi"
            # Reading the answers lets everything through, in order, none lost.
            assert (await peer.recv(10))[:2] == [M.RETURN, 1_000_000]  # the bootstrap
            for qid in range(sent):
                assert await peer.recv(10) == [M.RETURN_FINAL, qid, {0: text}, []]
            assert handled == sent
            peer.close()

    run(main())


def test_peer_abort_closes_the_connection() -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text)) as server:
            peer = await RawPeer.open(server)
            peer.send([M.ABORT, "bye"])
            assert await peer.expect_closed() == []
            peer.close()
            await eventually(lambda: server.stats()["connections"] == 0, what="closed")

    run(main())


def test_a_good_client_keeps_a_share_of_its_rate_under_four_attackers() -> None:
    """Issue 16's scenario: partial frames (8 connections, each a maximum-size frame minus a
    byte), huge frames (one after another, each just under the object budget: 90,000 tiny
    structs), idle connections (200) and a flood of pipelined calls, all at once, from another
    process; the well-behaved client, in a third process, has no failure, keeps MIN_SHARE of
    the calls per second it makes on the idle server, and the server's memory stays under the
    documented bound (SECURITY.md). The issue's goal, half the rate, holds on a quiet 2-core
    machine as a median (0.57 and 0.56 by benchmarks/bench_abuse.py, single rounds 0.36 to
    0.80); on the loaded shared machine the share was 0.26 to 0.82 (0.01 to 0.35 before busy
    connections were held to half the loop while light ones are active), so the suite asserts
    MIN_SHARE.

    The machine running the suite is shared, so rates are noisy: a round measures the client
    alone, then under attack, and the best of two rounds (three with CARA_LONG=1) counts. The
    attackers' own process needs CPU too: on a machine whose cores are already all busy (load
    average above the core count) the ratio measures the operating system's scheduler rather
    than the server, so it is then reported (skip) instead of asserted; failures and memory are
    asserted always.
    CARA_LONG=1 measures for longer, with twice the attackers' connections."""
    from cara.rpc.wire_cara import DEFAULT_MAX_OBJECTS
    from cara.transports.asyncio_transport import DEFAULT_MAX_BUFFERED, RESERVE
    from tests.transports import abuse_support as A

    alone, attacked, rounds = (3.0, 6.0, 3) if LONG else (0.6, 1.2, 2)
    partial, idle = (16, 400) if LONG else (8, 200)
    mod = A.schema()
    # The documented bound: the buffered budget, what a connection may hold beyond it (its
    # reserve, one read, its objects), and one frame's decoding (500 bytes per object).
    connections = partial + idle + 10
    bound = DEFAULT_MAX_BUFFERED + connections * (RESERVE + 4096 + 16_384) + \
        DEFAULT_MAX_OBJECTS * 500

    async def main() -> None:
        server = await A.echo_and_sink_server(mod)
        url = server.endpoints[0]
        good = A.GoodClientProcess(url)
        ratios: list[float] = []
        try:
            for _ in range(rounds):
                calls, failures = await good.measure(alone)
                assert failures == [] and calls > 0
                attackers = A.AttackersProcess(url, partial=partial, partial_size=1 << 22,
                                               idle=idle, items=90_000)
                await attackers.start()
                try:
                    await asyncio.sleep(0.3)
                    under, failures = await good.measure(attacked)
                    assert failures == [], failures
                    ratios.append((under / attacked) / (calls / alone))
                    if ratios[-1] >= MIN_SHARE and len(ratios) > 1:
                        break
                    tracemalloc.start()
                    await asyncio.sleep(0.5)
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                    assert peak < bound, (peak, bound)
                    if ratios[-1] >= MIN_SHARE:
                        break
                finally:
                    report = await attackers.stop()
                    attackers.close()
                assert report["flood_calls"] > 0 and report["huge_frames"] > 0, report
            busy = os.getloadavg()[0] > len(os.sched_getaffinity(0))
            if busy and max(ratios) < MIN_SHARE:
                pytest.skip(f"the machine is overloaded (load {os.getloadavg()}): the good "
                            f"client kept {max(ratios):.2f} of its rate, not asserted")
            # Before every connection yielded the loop after a slice, a flood starved the
            # good client to under 1% of its rate.
            assert max(ratios) >= MIN_SHARE, ratios
        finally:
            good.close()
            await server.stop()

    run(main(), timeout=120)
