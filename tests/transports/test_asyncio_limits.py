"""The asyncio server's limits (issue 16, "the RPC server under abuse"; issue 12, "limits per
connection"): each attack at a size that runs in about a second, with the server's own accounting
(``server.stats()``) and tracemalloc as witnesses, and a well-behaved client on the same server
that must see no failure.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from typing import Any

import msgpack
import pytest

from cara.rpc import Disconnected, Overloaded
from cara.rpc import wire_cara as M
from cara.transports import Client
from cara.transports.asyncio_transport import RESERVE
from tests.transports import abuse_support as A
from tests.transports.support import connected, eventually, run, serving

#: Each test runs with the frame loop in C and in Python (tests/transports/conftest.py).
pytestmark = pytest.mark.usefixtures("frame_loop")

CALLBACK_SCHEMA = """
@0xe5f60718293a4b5c;
interface Callback { call @0 (value :Int64) -> (result :Int64); }
struct Box { cbs @0 :List(Callback); }
interface Calc {
    callBack @0 (cb :Callback, value :Int64) -> (result :Int64);
    callBox @1 (box :Box) -> (total :Int64);
    makeCallback @2 (offset :Int64) -> (cb :Callback);
}
"""


def callback_schema() -> Any:
    import cara

    return cara.loads(CALLBACK_SCHEMA, name="limits.capnp")


async def _value(result: Any) -> Any:
    """A call's value: a remote call returns an awaitable, a local one may not."""
    return await result if inspect.isawaitable(result) else result


class CalcImpl:
    async def callBack(self, cb: Any, value: int) -> int:
        return int(await _value(cb.call(value)))

    async def callBox(self, box: Any) -> int:
        return sum([int(await _value(cb.call(1))) for cb in box.cbs])

    def makeCallback(self, offset: int) -> Any:
        return lambda value: value + offset


async def _echo_works(client: Client, mod: Any, text: str = "still fine") -> None:
    """A call through the client's first Echo proxy, kept on the client: a connection whose
    peer holds a capability is not idle."""
    echo = getattr(client, "_test_echo", None)
    if echo is None:
        echo = client._test_echo = mod.Echo(client)  # type: ignore[attr-defined]
    assert await echo.echo(text) == text


# ------------------------------------------------------------------ memory and connections


def test_partial_frames_of_many_connections_hold_bounded_memory_then_time_out() -> None:
    """48 connections each send a maximum-size frame minus one byte. Unbounded, the server would
    hold 48 frames (48 MiB here; 849 MiB with the old 16 MiB default); it holds at most
    ``max_buffered`` plus a small reserve per connection, and drops them at ``frame_timeout``."""
    mod = A.schema()
    frame_size, budget, peers = 1 << 20, 8 << 20, 48

    async def main() -> None:
        async with serving((mod.Echo, lambda text: text), max_frame_size=frame_size,
                           max_buffered=budget, frame_timeout=1.5) as server, \
                connected(server) as client:
            await _echo_works(client, mod)
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                socks = await A.partial_frames(server.endpoints[0], peers, frame_size)
                for _ in range(20):  # while they push: calls keep working, memory stays put
                    await _echo_works(client, mod)
                    await asyncio.sleep(0.025)
                await eventually(lambda: server.limit_stats()["buffered"] >= budget,
                                 what="the budget to fill")
                await asyncio.sleep(0.2)
                held, peak = (m - base for m in tracemalloc.get_traced_memory())
            finally:
                tracemalloc.stop()
            # Held: the budget, a reserve per connection, and the connections themselves; the
            # peak adds what growing a buffer copies for a moment.
            bound = budget * 9 // 8 + peers * (RESERVE + 4096 + 20_000)
            assert server.limit_stats()["buffered"] <= budget + peers * (RESERVE + 4096)
            assert held < bound < peers * frame_size, (held, bound)
            assert peak < peers * frame_size / 2, peak
            # Every partial frame is dropped at its deadline; the good client never notices.
            await eventually(lambda: server.limit_stats()["timed_out"] == peers, timeout=10,
                             what="the partial frames' deadline")
            assert server.limit_stats()["buffered"] == 0
            assert server.stats()["connections"] == 1
            await _echo_works(client, mod)
            for sock in socks:
                sock.close()

    run(main())


def test_idle_connections_are_capped_and_closed() -> None:
    """1,000 connections that never send a byte: never more than ``max_connections`` open (an
    idle one makes room for a new one), all closed after ``idle_timeout``; a client that holds a
    capability is neither idle nor evicted."""
    mod = A.schema()

    async def main() -> None:
        async with serving((mod.Echo, lambda text: text), max_connections=100,
                           idle_timeout=0.5) as server, connected(server) as client:
            await _echo_works(client, mod)
            url = server.endpoints[0]
            socks: list[socket.socket] = []
            most = 0
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                for _ in range(10):
                    socks += await A.idle_connections(url, 100)
                    await asyncio.sleep(0.02)
                    most = max(most, server.stats()["connections"])
                    await _echo_works(client, mod)
                gc.collect()  # a closed connection's objects form cycles
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            assert most <= 100
            assert server.limit_stats()["evicted"] >= 900 - 100
            # What the server holds for 100 open connections (and what it let go of 900).
            assert held < 100 * 40_000, held
            await eventually(lambda: server.stats()["connections"] == 1, timeout=5,
                             what="idle connections to be closed")
            assert server.limit_stats()["idle_closed"] >= 1
            await _echo_works(client, mod)
            for sock in socks:
                sock.close()

    run(main())


@pytest.fixture
def idle_asks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a connection was asked whether it is idle (``[count]``, reset by the
    test at will)."""
    from cara.transports import asyncio_transport as T

    asks = [0]
    idle = T._FrameProtocol.idle

    def counting(self: Any) -> bool:
        asks[0] += 1
        return idle(self)

    monkeypatch.setattr(T._FrameProtocol, "idle", counting)
    return asks


def test_admissions_at_the_limit_do_not_each_visit_every_connection(
        idle_asks: list[int]) -> None:
    """At ``max_connections`` a new connection closes the connection idle longest, and finding
    the idle ones asks every connection: one look serves the admissions after it (oldest idle
    first), and a look that found none is not repeated at once. A peer connecting over and
    over at the limit made the server ask all its connections for each of its connections
    (1,000 connections: a few ms each time, outside any connection's account of loop time)."""
    mod = A.schema()

    async def main() -> None:
        async with serving((mod.Echo, lambda text: text), max_connections=40) as server, \
                connected(server) as client:
            await _echo_works(client, mod)  # (holds a capability: never idle, never closed)
            url = server.endpoints[0]
            first = await A.idle_connections(url, 39)
            await eventually(lambda: server.stats()["connections"] == 40, timeout=5,
                             what="40 connections")
            idle_asks[0] = 0
            later: list[socket.socket] = []
            for _ in range(30):
                later += await A.idle_connections(url, 1)
                await asyncio.sleep(0.002)
            await eventually(lambda: server.limit_stats()["evicted"] == 30, timeout=5,
                             what="30 connections closed to make room")
            # (one look at the 40 connections, then each of the 30 taken checked once more;
            # each admission looking at all 40 asked 1,200 times)
            assert idle_asks[0] <= 2 * 40 + 30, idle_asks
            # The oldest idle ones made room: the first 30 opened were told why and closed.
            loop = asyncio.get_running_loop()
            for i, sock in enumerate(first[:30]):
                said = b""
                while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 5):
                    said += chunk
                assert b"closed to make room" in said, (i, said)
            assert server.stats()["connections"] == 40
            await _echo_works(client, mod)
            for sock in first + later:
                sock.close()

    run(main())


def test_a_full_server_of_busy_connections_does_not_look_for_idle_ones_on_every_attempt(
        idle_asks: list[int]) -> None:
    """When no connection is idle (each holds a capability), a connection attempt is refused;
    the look that found no idle connection is not repeated for the attempts right after it."""
    mod = A.schema()
    echo_id = mod.Echo.cara_schema.id

    async def main() -> None:
        async with serving((mod.Echo, lambda text: text), max_connections=20) as server:
            url = server.endpoints[0]
            holders = []
            for q in range(20):  # each bootstraps: the server then exports to each of them
                sock = await A.raw_socket(url)
                await asyncio.get_running_loop().sock_sendall(
                    sock, A.frame([M.BOOTSTRAP, q, echo_id]))
                holders.append(sock)
            await eventually(lambda: server.stats()["exports"] >= 20, timeout=5,
                             what="20 connections holding a capability")
            idle_asks[0] = 0
            attempts = []
            for _ in range(30):
                attempts += await A.idle_connections(url, 1)
            await eventually(lambda: server.limit_stats()["refused"] == 30, timeout=5,
                             what="30 attempts refused")
            # (a look at the 20 per rescan time, 0.5 s: one here, or two or three on a slow
            # machine; a look per attempt asked 600 times)
            assert idle_asks[0] <= 3 * 20, idle_asks
            assert server.limit_stats()["evicted"] == 0
            for sock in holders + attempts:
                sock.close()

    run(main())


def test_a_full_server_refuses_new_connections_with_a_reason() -> None:
    mod = A.schema()

    async def main() -> None:
        async with serving((mod.Echo, lambda text: text), max_connections=2) as server, \
                connected(server) as one, connected(server) as two:
            await _echo_works(one, mod)
            await _echo_works(two, mod)
            async with connected(server) as three:
                with pytest.raises(Disconnected, match="too many connections"):
                    await mod.Echo(three).echo("no room")
            assert server.limit_stats()["refused"] == 1
            await _echo_works(one, mod)

    run(main())


# ------------------------------------------------------------------ work per frame


def test_a_frame_decoding_into_too_many_objects_is_refused() -> None:
    """Tiny maps cost a Python object (and a struct) each: a frame may decode into at most
    ``max_objects`` maps and arrays, counted while decoding, so the refusal costs no more."""
    mod = A.schema()
    sink_id = mod.Sink.cara_schema.id

    async def main() -> None:
        async with serving((mod.Sink, lambda items: len(items)), (mod.Echo, lambda t: t),
                           max_objects=1000) as server, connected(server) as client:
            url = server.endpoints[0]
            for items, accepted in ((990, True), (5000, False)):
                sock = await A.raw_socket(url)
                call = [M.CALL, 1, [0], sink_id, 0, {0: [{0: 1}] * items}, []]
                await asyncio.get_running_loop().sock_sendall(
                    sock, A.frame([M.BOOTSTRAP, 0, sink_id]) + A.frame(call))
                replies = await _read_frames(sock, 2)
                if accepted:
                    assert replies[1] == [M.RETURN_FINAL, 1, {0: items}, []]
                else:
                    assert replies[-1][0] == M.ABORT and "max_objects" in replies[-1][1]
                sock.close()
            await _echo_works(client, mod)
            assert mod.Sink(client).take([{"a": 1}] * 990) is not None

    run(main())


async def _read_frames(sock: socket.socket, count: int) -> list[Any]:
    """Up to ``count`` frames, fewer at EOF."""
    loop = asyncio.get_running_loop()
    data = b""
    frames: list[Any] = []
    while len(frames) < count:
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5)
            if not chunk:
                return frames
            data += chunk
        size = struct.unpack(">I", data[:4])[0]
        frames.append(msgpack.unpackb(data[4:4 + size], strict_map_key=False))
        data = data[4 + size:]
    return frames


# ------------------------------------------------------------------ capabilities


def test_a_map_where_a_capability_belongs_is_refused_naming_the_field() -> None:
    """A msgpack map (or any data) in an interface-typed field of received params is refused:
    the runtime would otherwise wrap it as a local implementation of the interface. A local
    caller may still pass a dict of functions on purpose."""
    mod = callback_schema()
    calc_id = mod.Calc.cara_schema.id

    async def main() -> None:
        async with serving((mod.Calc, CalcImpl())) as server, connected(server) as client:
            sock = await A.raw_socket(server.endpoints[0])
            calls = [
                [M.CALL, 1, [0], calc_id, 0, {0: {"call": 1}, 1: 5}, []],
                [M.CALL, 2, [0], calc_id, 1, {0: {0: [{"call": 1}]}}, []],
                [M.CALL, 3, [0], calc_id, 0, {0: "call", 1: 5}, []],
            ]
            await asyncio.get_running_loop().sock_sendall(
                sock, b"".join(A.frame(m) for m in [[M.BOOTSTRAP, 0, calc_id], *calls]))
            replies = {r[1]: r for r in await _read_frames(sock, 4)}
            for qid, field in ((1, "cb"), (2, "box.cbs[0]"), (3, "cb")):
                error = replies[qid]
                assert error[0] == M.ERROR and error[3] in ("TypeError", "ValueTypeError"), error
                assert field in error[4] and "capability" in error[4], error
            sock.close()
            # Real capabilities still work, and so does a dict implementation passed locally.
            calc = mod.Calc(client)
            assert await calc.callBack(lambda value: value * 2, 21) == 42
            assert await calc.callBox(mod.Box(cbs=[lambda value: 7])) == 7
            assert await mod.Calc(CalcImpl()).callBack({"call": lambda value: -value}, 3) == -3

    run(main())


def test_plain_descriptions_refuse_data_where_a_capability_belongs() -> None:
    from tests.transports.support import CalcImpl as PlainCalc
    from tests.transports.support import ifaces

    calc = ifaces()["Calc"]

    async def main() -> None:
        async with serving((calc, PlainCalc())) as server:
            sock = await A.raw_socket(server.endpoints[0])
            await asyncio.get_running_loop().sock_sendall(sock, A.frame(
                [M.BOOTSTRAP, 0, calc.id]) + A.frame(
                [M.CALL, 1, [0], calc.id, 6, {0: {"call": 1}, 1: 5}, []]))
            error = (await _read_frames(sock, 2))[1]
            assert error[0] == M.ERROR and error[3] == "TypeError" and "cb" in error[4], error
            sock.close()

    run(main())


# ------------------------------------------------------------------ shutting down


def test_asyncio_run_ending_while_a_task_awaits_a_call_is_quiet() -> None:
    """asyncio.run() cancels the task awaiting the call after the loop stopped running; the
    Finish this sends used to raise ``RuntimeError: no running event loop``."""
    program = textwrap.dedent("""
        import asyncio, gc
        from cara.rpc import register_interface
        from cara.transports import Client, Server
        from tests.transports.abuse_support import schema

        mod = schema()

        async def main():
            server = Server(); server.bind("tcp://127.0.0.1:0"); await server.start()
            register_interface(server, mod.Echo, {"echo": lambda text: asyncio.sleep(60)})
            client = Client(); client.connect(server.endpoints[0]); await client.start()
            asyncio.ensure_future(mod.Echo(client).echo("forever"))
            await asyncio.sleep(0.2)

        asyncio.run(main())
        gc.collect()
        print("done")
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            cwd=root, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout == "done\n", result.stderr
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr, \
        result.stderr


# ------------------------------------------------------------------ per connection (issue 12)


def test_per_connection_limits_refuse_the_greedy_peer_only() -> None:
    """Exports held by the peer (Overloaded), capabilities handed to us (disconnected) and
    calls in flight (Overloaded): the greedy connection is refused, a well-behaved one on the
    same server sees no failure, and the server's tables return to empty."""
    mod = callback_schema()
    echo_mod = A.schema()
    calc_id = mod.Calc.cara_schema.id

    async def main() -> None:
        gate = asyncio.Event()

        async def slow_echo(text: str) -> str:
            await gate.wait()
            return text

        async with serving((mod.Calc, CalcImpl()), (echo_mod.Echo, slow_echo),
                           max_exports=5, max_imports=3, max_answers=2,
                           max_queued_calls=2) as server, \
                connected(server) as good, connected(server) as greedy, \
                connected(server) as flooder:
            # Exports: the bootstrap capability and four callbacks fit, the fifth does not.
            calc = mod.Calc(greedy)
            held = [await calc.makeCallback(i) for i in range(4)]
            with pytest.raises(Overloaded, match="5 capabilities"):
                await calc.makeCallback(99)
            assert [await cb.call(1) for cb in held] == [1, 2, 3, 4]
            # Calls in flight: two run, two wait, the rest are refused.
            echo = echo_mod.Echo(flooder)
            calls = [asyncio.ensure_future(echo.echo(str(i))) for i in range(10)]
            await asyncio.sleep(0.1)
            gate.set()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert results[:4] == ["0", "1", "2", "3"]
            assert all(isinstance(r, Overloaded) for r in results[4:]), results
            # Meanwhile the good connection has its own tables and sees nothing of it.
            assert await mod.Calc(good).callBack(lambda v: v + 1, 1) == 2
            # Imports: a raw peer hands over four capabilities at once and is disconnected.
            sock = await A.raw_socket(server.endpoints[0])
            caps = [msgpack.ExtType(M.EXT_CAP, msgpack.packb(i)) for i in range(4)]
            await asyncio.get_running_loop().sock_sendall(sock, A.frame(
                [M.BOOTSTRAP, 0, calc_id]) + A.frame(
                [M.CALL, 1, [0], calc_id, 1, {0: {0: caps}}, [[1, i] for i in range(4)]]))
            replies = await _read_frames(sock, 3)
            assert replies[-1][0] == M.ABORT and "3 capabilities" in replies[-1][1], replies
            sock.close()
            del held
        assert server.stats()["connections"] == 0

    run(main())


def test_a_peer_opening_a_connection_per_expensive_frame_keeps_to_its_share() -> None:
    """Connections younger than a second share one account of loop time, so a peer cannot
    multiply its share by opening connections. It could still get one frame in per connection:
    a new connection processed its first frame before looking at the account, and one that
    left the young account started an account of its own. Here each frame costs tens of
    milliseconds (30,000 tiny structs) and comes on a connection of its own, from a process of
    its own (in ours, it would wait for the GIL while the server decodes and so set the pace
    itself). Alone, the peer gets the whole loop; while a light client makes a call every few
    milliseconds, the busy connections together get half of it, so once the young account has
    reached its share the peer's frames must drop well below its rate alone (they did not
    drop at all)."""
    mod = A.schema()
    handled: list[int] = []

    async def attack(url: str, light: Any) -> float:
        """Frames per second the server processed from the peer over 1.5 seconds, measured
        after the peer's first half second (the young account reaching its share)."""
        peer = A.ConnectionPerFrameProcess(url, 30_000)
        calls = 0

        async def light_calls() -> None:
            nonlocal calls
            while True:
                assert await light.echo("light") == "light"
                calls += 1
                await asyncio.sleep(0.003)

        caller = asyncio.ensure_future(light_calls() if light is not None else asyncio.sleep(9))
        try:
            await peer.start()
            await asyncio.sleep(0.6)
            before, start = len(handled), time.perf_counter()
            await asyncio.sleep(1.5)
            rate = (len(handled) - before) / (time.perf_counter() - start)
            assert await peer.stop() > 0
        finally:
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
            peer.close()
        assert light is None or calls > 0
        return rate

    async def main() -> None:
        async with serving((mod.Sink, lambda items: handled.append(len(items)) or 0),
                           (mod.Echo, lambda text: text)) as server:
            async with connected(server) as client:
                echo = client.bootstrap(mod.Echo)
                assert await echo.echo("light") == "light"
                url = server.endpoints[0]
                alone = await attack(url, None)
                # (the light client is older than a second by now, no longer in the young
                # connections' account, whose use decays meanwhile)
                await asyncio.sleep(1.2)
                beside = await attack(url, echo)
            assert alone > 0 and beside > 0
            assert beside / alone < 0.8, (alone, beside)

    run(main())
