"""The sans-IO core on its own: two Connections whose frames are handed over in memory.

No sockets: each side's ``send`` queues the frame for the other side's ``receive`` on the next
loop turn. The frames themselves are checked against the shapes documented in wire_cara.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from cara.rpc import Connection, Disconnected, ProtocolError, Services, Unimplemented
from cara.rpc import wire_cara as M
from cara.rpc.proxies import current_loop
from tests.conftest import LONG
from tests.rpc.schemas import load


class Wire:
    """Two connections joined in memory; records every frame each side sent."""

    def __init__(self, services: Services | None = None) -> None:
        self.loop = current_loop()  # (asyncio's, or under trio a TrioLoop)
        self.sent: dict[str, list[Any]] = {"client": [], "server": []}
        self.server = Connection(self._to("server", lambda: self.client), services=services,
                                 name="server", loop=self.loop)
        self.client = Connection(self._to("client", lambda: self.server), name="client",
                                 loop=self.loop)

    def _to(self, side: str, peer: Callable[[], Connection]) -> Callable[[bytes], None]:
        def send(frame: bytes) -> None:
            self.sent[side].append(msgpack.unpackb(frame, strict_map_key=False))
            self.loop.call_soon(peer().receive, frame)

        return send


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_call_and_return_frames_have_the_documented_shape() -> None:
    I = load()

    async def main() -> None:
        services = Services()
        services.register(I["Calc"], {"add": lambda a, b: a + b})
        wire = Wire(services)
        calc = wire.client.bootstrap(I["Calc"])
        assert await calc.add(2, 3) == 5
        calc_id = I["Calc"].id
        # The call is pipelined on the bootstrap's answer: no round trip before it.
        # The results hold no capability: a final return, which needs no Finish.
        assert wire.sent["client"] == [[M.BOOTSTRAP, 0, calc_id],
                                       [M.CALL, 1, [0], calc_id, 0, {0: 2, 1: 3}, []],
                                       [M.FINISH, 0]]
        boot = msgpack.ExtType(M.EXT_CAP, msgpack.packb(0))
        assert wire.sent["server"] == [[M.RETURN, 0, boot, [[1, 0]]],
                                       [M.RETURN_FINAL, 1, {0: 5}, []]]

    run(main())


def test_capabilities_are_reference_counted_and_released() -> None:
    I = load()

    async def main() -> None:
        held: list[Any] = []
        services = Services()
        services.register(I["Holder"], {"put": held.append})
        wire = Wire(services)
        holder = wire.client.bootstrap(I["Holder"])

        def cb(value: int) -> int:
            return value

        await holder.put(cb)
        await holder.put(cb)  # the same object twice: one export, two references
        assert wire.client.stats()["exports"] == 1
        export = next(iter(wire.client._exports.values()))
        assert export.refs == 2
        assert held[0]._cap is held[1]._cap  # the receiver keeps one import per export id
        assert wire.server.stats()["imports"] == 1
        calls = [frame for frame in wire.sent["client"] if frame[0] == M.CALL]
        assert calls[0][5] == {0: msgpack.ExtType(M.EXT_CAP, msgpack.packb(0))}
        assert calls[0][6] == [[1, 0]]  # senderHosted, export 0
        held.clear()
        gc.collect()
        await settle()
        releases = [f for f in wire.sent["server"] if f[0] == M.RELEASE]
        assert releases == [[M.RELEASE, 0, 2]]  # one release giving back both references
        assert wire.client.stats() == {"exports": 0, "imports": 1, "questions": 0, "answers": 0}
        assert wire.server.stats()["imports"] == 0

    run(main())


def test_capability_sent_home_is_the_original_object() -> None:
    I = load()

    async def main() -> None:
        services = Services()
        box: dict[str, Any] = {}
        services.register(I["Holder"], {"put": lambda cap: box.update(cap=cap),
                                        "get": lambda: box["cap"]})
        wire = Wire(services)
        holder = wire.client.bootstrap(I["Holder"])

        def mine(value: int) -> int:
            return value

        await holder.put(mine)
        back = await holder.get()
        # A capability is always called the same way: our own object comes back as a proxy
        # whose calls return awaitables, served here without a round trip.
        assert back is not mine and await back.call(5) == 5
        from cara.rpc import LocalCap, core_cap_of

        cap = core_cap_of(back)
        assert isinstance(cap, LocalCap) and cap.obj is mine
        # the server returned the client's own capability: it travels as receiver-hosted
        server_frames = [f for f in wire.sent["server"] if f[0] in (M.RETURN, M.RETURN_FINAL)]
        assert server_frames[-1][3] == [[3, 0]]

    run(main())


def test_calls_are_handled_in_the_order_sent() -> None:
    I = load()

    async def main() -> None:
        seen: list[int] = []
        services = Services()
        services.register(I["Calc"], {"add": lambda a, b: seen.append(a) or a + b})
        wire = Wire(services)
        calc = wire.client.bootstrap(I["Calc"])
        assert await asyncio.gather(*[calc.add(i, 0) for i in range(500)]) == list(range(500))
        assert seen == list(range(500))

    run(main())


def test_connection_lost_fails_questions_and_cancels_answers() -> None:
    I = load()

    async def main() -> None:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def sleep(seconds: float) -> bool:
            started.set()
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return True

        services = Services()
        services.register(I["Calc"], {"sleep": sleep})
        wire = Wire(services)
        pending = wire.client.bootstrap(I["Calc"]).sleep(30)
        await started.wait()
        wire.client.connection_lost()
        wire.server.connection_lost()
        with pytest.raises(Disconnected):
            await pending
        await asyncio.wait_for(cancelled.wait(), 5)
        with pytest.raises(ConnectionError):
            await wire.client.bootstrap(I["Calc"]).sleep(1)
        assert wire.server.stats() == wire.client.stats() == {
            "exports": 0, "imports": 0, "questions": 0, "answers": 0}

    run(main())


def test_unknown_targets_are_unimplemented_errors() -> None:
    I = load()

    async def main() -> None:
        wire = Wire(Services())
        with pytest.raises(Unimplemented, match="no implementation"):
            await wire.client.bootstrap(I["Calc"]).add(1, 2)
        ghost = wire.client._import(42, False).cast(I["Callback"])  # pretend we were handed it
        with pytest.raises(Unimplemented, match="no capability 42"):
            await ghost.call(1)

    run(main())


def test_malformed_frames_raise_only_protocol_error() -> None:
    """Whatever the bytes, receive() raises ProtocolError (after sending ABORT) or nothing."""
    I = load()
    rng = random.Random(7)
    n = 20_000 if LONG else 2_000

    async def main() -> None:
        services = Services()
        services.register(I["Echo"], lambda text: text)
        aborted = 0
        for i in range(n):
            frames: list[bytes] = []
            conn = Connection(frames.append, services=services)
            if i % 3 == 0:
                data = os.urandom(rng.randrange(0, 40))
            else:
                parts: list[Any] = [rng.randrange(11), rng.randrange(3),
                                    rng.choice([[0], 0, "x", [], [1, 2], None, I["Echo"].id]),
                                    rng.choice([I["Echo"].id, -1, "y", 0, 1]), rng.randrange(3),
                                    rng.choice([None, {0: "t"}, [1], {"k": b"v"},
                                                msgpack.ExtType(1, b"\x05"), [1, 0]]),
                                    rng.choice([[], [[1, 0]], [[3, 0]], [[4, 0]], "z"])]
                data = msgpack.packb(parts[: rng.randrange(0, 8)])
            try:
                conn.receive(data)
            except ProtocolError:
                aborted += 1
                assert conn.closed
                assert msgpack.unpackb(frames[-1])[0] == M.ABORT
            await asyncio.sleep(0)  # let any handler task run
        assert 0 < aborted < n

    run(main())


def test_a_flood_of_capabilities_is_refused() -> None:
    I = load()

    async def main() -> None:
        services = Services()
        services.register(I["Calc"], {"callAll": lambda cbs, value: len(cbs)})
        frames: list[bytes] = []
        conn = Connection(frames.append, services=services, max_imports=10)
        calc_id = I["Calc"].id
        conn.receive(msgpack.packb([M.BOOTSTRAP, 100, calc_id]))
        caps = [msgpack.ExtType(M.EXT_CAP, msgpack.packb(i)) for i in range(10)]
        table = [[1, i] for i in range(10)]
        conn.receive(msgpack.packb([M.CALL, 0, [100], calc_id, 8, {0: caps, 1: 1}, table]))
        assert msgpack.unpackb(frames[-1], strict_map_key=False) == [
            M.RETURN_FINAL, 0, {0: 10}, []]
        more = [msgpack.ExtType(M.EXT_CAP, msgpack.packb(i)) for i in range(11)]
        table = [[1, i] for i in range(10, 21)]
        with pytest.raises(ProtocolError, match="more than 10"):
            conn.receive(msgpack.packb([M.CALL, 1, [100], calc_id, 8, {0: more, 1: 1}, table]))
        assert conn.closed

    run(main())


def test_waiting_calls_run_in_order_and_can_be_finished_before_they_start() -> None:
    I = load()

    async def main() -> None:
        started: list[float] = []
        gate = asyncio.Event()

        async def sleep(seconds: float) -> bool:
            started.append(seconds)
            await gate.wait()
            return True

        services = Services()
        services.register(I["Calc"], {"sleep": sleep})
        frames: list[bytes] = []
        conn = Connection(frames.append, services=services, max_answers=1, max_queued_calls=2)
        calc_id = I["Calc"].id
        conn.receive(msgpack.packb([M.BOOTSTRAP, 100, calc_id]))
        for qid in range(4):
            conn.receive(msgpack.packb([M.CALL, qid, [100], calc_id, 2, {0: float(qid)}, []]))
        await settle()
        assert started == [0.0]  # one slot: the others wait
        refused = msgpack.unpackb(frames[-1], strict_map_key=False)
        assert refused[:4] == [M.ERROR, 3, 1, "Overloaded"]  # queue of 2 full: qid 3 refused
        assert conn.stats()["answers"] == 3  # the running call and the two waiting ones
        conn.receive(msgpack.packb([M.FINISH, 1]))  # the caller gives up on a waiting call
        assert msgpack.unpackb(frames[-1]) == [M.CANCELED, 1]
        gate.set()
        await settle()
        assert started == [0.0, 2.0]  # qid 1 never ran; qid 2 ran after qid 0
        returns = [msgpack.unpackb(f, strict_map_key=False) for f in frames]
        assert [r[1] for r in returns if r[0] in (M.RETURN, M.RETURN_FINAL)] == [100, 0, 2]
        assert conn.stats()["answers"] == 0
        for qid in (100, 0, 2, 3):
            conn.receive(msgpack.packb([M.FINISH, qid]))
        assert not conn._answers  # every answer forgotten once its caller finished it

    run(main())


def test_a_final_return_needs_no_finish_and_late_pipelined_calls_fail_softly() -> None:
    """A return holding no capability is final on cara frames: the callee forgets the answer
    at once (no Finish follows), and a call the caller pipelined on it before the return
    arrived gets an error, not an abort."""
    I = load()

    async def main() -> None:
        services = Services()
        services.register(I["Echo"], lambda text: text)
        frames: list[bytes] = []
        conn = Connection(frames.append, services=services)
        echo_id = I["Echo"].id
        conn.receive(msgpack.packb([M.BOOTSTRAP, 100, echo_id]))
        conn.receive(msgpack.packb([M.CALL, 1, [100], echo_id, 0, {0: "x"}, []]))
        assert msgpack.unpackb(frames[-1], strict_map_key=False) == [
            M.RETURN_FINAL, 1, {0: "x"}, []]
        conn.receive(msgpack.packb([M.CALL, 2, [1, 0], echo_id, 0, {0: "y"}, []]))
        reply = msgpack.unpackb(frames[-1], strict_map_key=False)
        assert reply[:2] == [M.ERROR, 2] and "no capability" in reply[4]
        assert not conn.closed
        conn.receive(msgpack.packb([M.CALL, 1, [100], echo_id, 0, {0: "again"}, []]))  # id reused
        assert msgpack.unpackb(frames[-1], strict_map_key=False)[:3] == [
            M.RETURN_FINAL, 1, {0: "again"}]

    run(main())


def test_a_capability_result_of_an_interface_described_without_classes_is_pipelined() -> None:
    """``calc.makeCallback(5).cb.call(1)`` where the interfaces come from nodes only (no
    runtime classes): the pipelined field knows its interface from the description."""
    I = load()

    async def main() -> None:
        services = Services()
        services.register(I["Calc"], {
            "makeCallback": lambda offset: {"call": lambda value: value + offset}})
        wire = Wire(services)
        calc = wire.client.bootstrap(I["Calc"])
        assert await calc.makeCallback(5).cb.call(1) == 6

    run(main())
