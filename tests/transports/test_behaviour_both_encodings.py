"""The key behaviours of test_asyncio_rpc.py and test_asyncio_abuse.py on both encodings: cara
frames (``tcp://``) and Cap'n Proto's own messages (``capnp://``, which needs runtime classes, so
the interfaces here are tests/rpc/schemas.py's as runtime classes), each under asyncio and under
trio (tests/transports/backends.py: the same test body, the framework's own primitives).

1,000 callbacks each way then every table at zero; errors rebuilt (builtins by name, others as
Failed, tracebacks only when switched on); cancellation and timeouts reaching the handler; a
stopped server failing pending calls; three parties; the handler cap with calls waiting and
refused; handlers calling back beyond the cap; 100 clients x 1,000 calls; abusive peers on
capnp:// (garbage, oversized segment tables, unknown targets, vanishing callers) beside a
good client.
"""

from __future__ import annotations

import asyncio
import gc
import random
import struct
from typing import Any

import pytest

from cara.rpc import (
    Disconnected,
    Unimplemented,
    register_interface,
)
from cara.rpc import messages as M
from cara.rpc.wire_capnp import CapnpFramer, CapnpWire
from cara.transports import Client, Server
from tests.conftest import LONG
from tests.rpc.schemas import runtime_module
from tests.transports.backends import (
    BACKENDS,
    Event,
    RawStream,
    background,
    eventually,
    gather,
    run,
    sleep,
    wait_for,
)
from tests.transports.support import (
    CalcImpl,
    HolderImpl,
    PeakSleep,
    check_handlers_capped_at_20,
    check_remote_errors,
    connected,
)
from tests.transports.support import serving as support_serving

SCHEMES = ["tcp", "capnp"]


def mod() -> Any:
    return runtime_module()


class RuntimeCalc(CalcImpl):
    """support.CalcImpl with the methods that take capabilities written for runtime proxies."""

    async def takeInfo(self, info: Any) -> int:
        total = int(info.count)
        if info.cb is not None:
            total += await info.cb.call(1)
        for cb in info.cbs:
            total += await cb.call(1)
        return total

    async def callAll(self, cbs: list[Any], value: int) -> int:
        return sum(await gather(*[cb.call(value) for cb in cbs]))


def serving(scheme: str, iface: Any, impl: Any, **options: Any) -> Any:
    return support_serving((iface, impl), url=f"{scheme}://127.0.0.1:0", **options)


def empty(*sides: Any, exports: int = 0, imports: int = 0) -> bool:
    return all((s.stats()["exports"], s.stats()["imports"], s.stats()["questions"],
                s.stats()["answers"]) == (exports, imports, 0, 0) for s in sides)


# ------------------------------------------------------------------ capabilities, errors


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_thousand_callbacks_each_way_then_every_table_empty(backend: str, scheme: str) -> None:
    m = mod()
    n = 1000

    async def main() -> None:
        async with serving(scheme, m.Calc, RuntimeCalc()) as server, \
                connected(server) as client:
            calc = m.Calc(client)
            results = await gather(
                *[calc.callBack(lambda value, i=i: value * 2 + i, i) for i in range(n)])
            assert results == [i * 3 for i in range(n)]
            caps = await gather(*[calc.makeCallback(i) for i in range(n)])
            assert server.stats()["exports"] == n + 1  # and the bootstrap
            assert client.stats()["imports"] == n + 1
            assert await gather(*[cap.call(1) for cap in caps]) == [
                i + 1 for i in range(n)]
            # capabilities in a struct and a list, coming home to the server
            assert await calc.callAll(caps[:10], 1) == sum(i + 1 for i in range(10))
            assert await calc.takeInfo(name="x", count=1, cb=caps[5],
                                       cbs=[lambda v: 10, caps[6]]) == 1 + 6 + 10 + 7
            del caps, results, calc
            gc.collect()
            await eventually(lambda: empty(server, client),
                             what=f"empty tables (server {server.stats()}, "
                                  f"client {client.stats()})")
            assert server.stats()["connections"] == 1

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_remote_errors_are_rebuilt_safely(backend: str, scheme: str) -> None:
    m = mod()

    async def main() -> None:
        async with serving(scheme, m.Calc, RuntimeCalc(), send_tracebacks=True) as server, \
                connected(server) as client:
            await check_remote_errors(m.Calc(client))
            with pytest.raises(Unimplemented):
                await m.Holder(client).get()  # not what the bootstrap implements

        async with serving(scheme, m.Calc, RuntimeCalc()) as server, \
                connected(server) as client:
            with pytest.raises(ValueError, match="quiet") as info:
                await m.Calc(client).fail("ValueError", "quiet")
            assert info.value.__cause__ is None  # tracebacks are off by default

    run(backend, main)


# ------------------------------------------------------------------ cancellation, timeouts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_cancelling_the_caller_cancels_the_handler(backend: str, scheme: str) -> None:
    m = mod()

    async def main() -> None:
        impl = RuntimeCalc()
        async with serving(scheme, m.Calc, impl) as server, connected(server) as client:
            calc = m.Calc(client)
            async with background(calc.sleep(30)) as task:
                await eventually(lambda: impl.started == 1, what="the handler to start")
                assert server.stats()["answers"] == 1
                task.cancel()
                await wait_for(impl.cancel_seen.wait(), 5)
            assert impl.cancelled == 1
            await eventually(lambda: server.stats()["answers"] == 0, what="answer dropped")
            # the handler's Return(canceled) frees the question once it arrives
            await eventually(lambda: client.stats()["questions"] == 0, what="question freed")
            with pytest.raises(asyncio.TimeoutError):
                await calc.sleep(30, _timeout=0.05)
            await eventually(lambda: impl.cancelled == 2, what="the timed-out handler")
            assert await calc.add(1, 2) == 3

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_stopped_server_fails_pending_calls_with_connection_error(backend: str,
                                                                  scheme: str) -> None:
    m = mod()

    async def main() -> None:
        impl = RuntimeCalc()
        server = Server()
        server.bind(f"{scheme}://127.0.0.1:0")
        register_interface(server, m.Calc, impl)
        await server.start()
        client = Client()
        client.connect(server.endpoints[0])
        await client.start()
        calc = m.Calc(client)
        pending = calc.sleep(30)
        await eventually(lambda: impl.started == 1, what="the handler to start")
        await server.stop()
        with pytest.raises(Disconnected):
            await pending
        await wait_for(impl.cancel_seen.wait(), 5)
        with pytest.raises(ConnectionError):
            await calc.add(1, 2)
        await client.stop()

    run(backend, main)


# ------------------------------------------------------------------------ three parties


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_three_parties_a_hands_bs_capability_to_c(backend: str, scheme: str) -> None:
    m = mod()

    async def main() -> None:
        async with serving(scheme, m.Calc, RuntimeCalc()) as server_b, \
                serving(scheme, m.Holder, HolderImpl()) as server_c, \
                connected(server_b) as a_to_b, connected(server_c) as a_to_c:
            cap_from_b = await m.Calc(a_to_b).makeCallback(100)
            held = m.Holder(a_to_c)
            await held.put(cap_from_b)  # A hands B's capability to C
            assert await held.callHeld(5) == 105  # C calls it (through A) and B answers
            back = await held.get()  # C hands it back to A
            assert await back.call(1) == 101
            await held.put(None)
            del cap_from_b, back
            gc.collect()
            # B's bootstrap proxy went with the expression that used it; C's is `held`
            await eventually(lambda: empty(server_b, a_to_b) and empty(server_c, exports=1)
                             and empty(a_to_c, imports=1), what="three-party release")

    run(backend, main)


# ---------------------------------------------------------------- load and handler slots


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_running_handlers_per_connection_are_capped(backend: str, scheme: str) -> None:
    m = mod()

    async def main() -> None:
        impl = PeakSleep()
        async with serving(scheme, m.Calc, {"sleep": impl.sleep}, max_answers=20) as server, \
                connected(server) as client:
            await check_handlers_capped_at_20(m.Calc(client), impl)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_handlers_calling_back_their_caller_beyond_the_cap_do_not_deadlock(backend: str,
                                                                           scheme: str) -> None:
    m = mod()

    async def main() -> None:
        async with serving(scheme, m.Calc, RuntimeCalc(), max_answers=5) as server, \
                connected(server) as client:
            calc = m.Calc(client)

            async def slow_double(value: int) -> int:
                await sleep(0.01)
                return value * 2

            results = await gather(*[calc.callBack(slow_double, i) for i in range(10)])
            assert results == [i * 2 for i in range(10)]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["capnp"])  # tcp://: test_asyncio_abuse.py
def test_many_clients_many_concurrent_calls_lose_or_cross_no_reply(backend: str,
                                                                   scheme: str) -> None:
    """100 clients x 1,000 concurrent calls (about 5 s; under trio 20 clients, to keep the suite
    fast); 200 x 5,000 with CARA_LONG=1."""
    m = mod()
    clients, calls = (200, 5000) if LONG else (100 if backend == "asyncio" else 20, 1000)

    async def main() -> None:
        async with serving(scheme, m.Calc, RuntimeCalc()) as server:

            async def one(c: int) -> None:
                async with connected(server) as client:
                    calc = m.Calc(client)
                    results = await gather(*[calc.add(c * 1_000_000, i) for i in range(calls)])
                    assert results == [c * 1_000_000 + i for i in range(calls)]

            await gather(*[one(c) for c in range(clients)])
            await eventually(lambda: server.stats()["connections"] == 0, what="all closed")

    run(backend, main, timeout=300)


# ------------------------------------------------------------------ abuse on capnp://


class RawCapnpPeer:
    """A hand-driven capnp:// connection: writes rpc.capnp messages or bytes, reads messages."""

    def __init__(self, stream: RawStream) -> None:
        self.stream = stream
        self.wire = CapnpWire()
        self.framer = CapnpFramer()
        self.frames: list[bytes] = []

    @classmethod
    async def open(cls, server: Server) -> RawCapnpPeer:
        host, port = server.endpoints[0].removeprefix("capnp://").rsplit(":", 1)
        return cls(await RawStream.open(host, int(port)))

    async def send(self, msg: M.Message) -> None:
        await self.stream.send(self.wire.encode(msg, lambda cap: M.CapDescriptor(
            M.CapDescriptor.NONE)))

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send(data)

    async def recv(self, timeout: float = 5.0) -> M.Message | None:
        """The next message, or ``None`` once the server closed the connection."""
        while not self.frames:
            try:
                data = await wait_for(self.stream.receive(), timeout)
            except ConnectionError:
                return None
            if not data:
                return None
            self.frames += self.framer.feed(data)
        return self.wire.decode(self.frames.pop(0))

    async def expect_closed(self, timeout: float = 5.0) -> list[M.Message]:
        seen = []
        while (msg := await self.recv(timeout)) is not None:
            seen.append(msg)
        return seen

    async def close(self) -> None:
        await self.stream.close()


def _segment_table(sizes: list[int]) -> bytes:
    words = [len(sizes) - 1, *sizes]
    if len(words) % 2:
        words.append(0)
    return struct.pack(f"<{len(words)}I", *words)


@pytest.mark.parametrize("backend", BACKENDS)
def test_abusive_capnp_peers_do_not_disturb_a_good_client(backend: str) -> None:
    m = mod()
    rng = random.Random(4321)
    max_frame = 64 * 1024
    calc_id = m.Calc.cara_schema.id
    add = m.Calc.cara_schema.all_methods[(calc_id, 0)]

    def add_call(qid: int, target: M.Target, a: Any = 1, b: Any = 2, method: int = 0,
                 iface: int = calc_id) -> M.Call:
        return M.Call(qid, target, iface, method,
                      M.Payload(add.param_class(a=a, b=b), add.param_class))

    async def main() -> None:
        impl = RuntimeCalc()
        async with serving("capnp", m.Calc, impl, max_frame_size=max_frame) as server, \
                connected(server) as good_client:
            good = m.Calc(good_client)
            stop = Event()
            failures: list[BaseException] = []
            done = 0

            async def good_loop() -> None:
                nonlocal done
                while not stop.is_set():
                    try:
                        assert await good.add(done, 1) == done + 1
                    except BaseException as exc:
                        failures.append(exc)
                        return
                    done += 1
                    await sleep(0)

            async with background(good_loop()) as good_task:
                # 1. Garbage: an Abort (optional) and a disconnect.
                garbage = [
                    _segment_table([1]) + b"\xff" * 8,          # a root pointer of nonsense
                    _segment_table([0]),                         # an empty message
                    struct.pack("<I", 100_000) + b"\x00" * 12,   # 100,001 segments
                    _segment_table([2]) + struct.pack("<Q", (1 << 32) | (100 << 2))
                    + b"\x00" * 8,
                ] + [_segment_table([n]) + rng.randbytes(8 * n) for n in (1, 2, 3, 8, 8, 8)]
                for data in garbage:
                    peer = await RawCapnpPeer.open(server)
                    await peer.send_bytes(data)
                    seen = await peer.expect_closed()
                    assert all(isinstance(msg, M.Abort) for msg in seen), seen
                    await peer.close()

                # 2. A segment table claiming more than the limit: cut before the body arrives.
                peer = await RawCapnpPeer.open(server)
                await peer.send_bytes(_segment_table([max_frame // 8 + 1]) + b"\x00" * 64)
                seen = await peer.expect_closed()
                assert all(isinstance(msg, M.Abort) for msg in seen), seen
                await peer.close()

                # 3. Unknown targets and methods, bad params: error returns, the connection
                # lives.
                peer = await RawCapnpPeer.open(server)
                await peer.send(M.Bootstrap(0))
                await peer.send(add_call(1, M.ImportedCap(12345)))              # no such export
                await peer.send(add_call(2, M.PromisedAnswer(0), method=99))    # no such method
                await peer.send(add_call(3, M.PromisedAnswer(0), iface=0x1234))  # no such iface
                await peer.send(add_call(4, M.PromisedAnswer(0), a=2, b=40))    # fine
                replies: dict[int, M.Return] = {}
                for _ in range(5):
                    msg = await peer.recv()
                    assert isinstance(msg, M.Return), msg
                    replies[msg.answer_id] = msg
                assert replies[0].exception is None
                for qid in (1, 2, 3):
                    exc = replies[qid].exception
                    assert exc is not None and exc.kind == "unimplemented", replies[qid]
                assert replies[4].exception is None
                # a message of a kind level 1 does not know: echoed back as Unimplemented
                await peer.send_bytes(_segment_table([2])
                                      + struct.pack("<QQ", 1 << 32, 0xFFFF))
                msg = await peer.recv()
                assert isinstance(msg, M.Unimplemented) and msg.message is not None, msg
                await peer.send(M.Release(777, 1))   # releasing what was never exported: ignored
                await peer.send(M.Finish(999))       # finishing an unknown question: ignored
                await peer.send(add_call(5, M.PromisedAnswer(0), a=1, b=1))
                msg = await peer.recv()
                assert isinstance(msg, M.Return) and msg.answer_id == 5 and msg.exception is None
                # a duplicate question id while the first is running: Abort and disconnect
                sleep_params = m.Calc.cara_schema.all_methods[(calc_id, 2)].param_class
                for _ in range(2):
                    await peer.send(M.Call(6, M.PromisedAnswer(0), calc_id, 2,
                                           M.Payload(sleep_params(seconds=30.0), sleep_params)))
                seen = await peer.expect_closed()
                assert seen and isinstance(seen[-1], M.Abort), seen
                await peer.close()

                # 4. Callers vanishing mid-call: their handlers are cancelled, nothing is left.
                cancelled = impl.cancelled
                for _ in range(5):
                    started = impl.started  # (before sending: trio's send lets the server run)
                    peer = await RawCapnpPeer.open(server)
                    await peer.send(M.Bootstrap(0))
                    await peer.send(M.Call(1, M.PromisedAnswer(0), calc_id, 2,
                                           M.Payload(sleep_params(seconds=30.0), sleep_params)))
                    await eventually(lambda s=started: impl.started > s, what="handler start")
                    await peer.close()
                await eventually(lambda: impl.cancelled >= cancelled + 5,
                                 what="handlers of vanished callers")

                # 5. Half a message and silence: costs nothing, blocks nobody.
                idle = await RawCapnpPeer.open(server)
                await idle.send_bytes(_segment_table([100]) + b"\x00" * 10)

                stop.set()
                await good_task.result()
            assert failures == [] and done > 10
            await idle.close()
            await eventually(lambda: server.stats()["connections"] == 1, what="abusers gone")
            await eventually(lambda: server.stats()["answers"] == 0, what="no answers left")

    run(backend, main)
