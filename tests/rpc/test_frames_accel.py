"""The C fast path of cara frames (cara/rpc/_frames.c) against the Python path it shortens.

Two connections joined in memory, once with the fast path on (frames delivered through
``_frames.process``, calls sent by ``PlainMethod``/``send_plain``) and once with it off
(``Connection._fast_frames = False``: every frame through ``Connection.receive`` and every call
through ``cap.call``). The same calls must put the same bytes on the wire in both, give the same
results or errors, and leave the same tables behind; frames the C code declines (pipelined
questions, timers, unknown fields, nil content, malformed frames) must take the Python path
whole. The runtime classes come from the reference compiler.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.rpc import Connection, ProtocolError, Services
from cara.rpc import proxies as P
from cara.rpc import wire_cara as W
from cara.rpc.accel import FRAMES
from tests.rpc.schemas import runtime_module

pytestmark = pytest.mark.skipif(FRAMES is None,
                                reason="the C accelerator is not built (or CARA_PURE_PYTHON=1)")

SCHEMA = """
@0xd7a1c3e5f7091b2d;

struct Point { x @0 :Int32; y @1 :Int32; label @2 :Text; }
enum Color { red @0; green @1; blue @2; }

interface Mixed {
    text @0 (v :Text) -> (v :Text);
    int64 @1 (v :Int64) -> (v :Int64);
    uint64 @2 (v :UInt64) -> (v :UInt64);
    float64 @3 (v :Float64) -> (v :Float64);
    data @4 (v :Data) -> (v :Data);
    ints @5 (v :List(Int32)) -> (v :List(Int32));
    point @6 (v :Point) -> (v :Point);
    color @7 (v :Color) -> (v :Color);
    pair @8 (a :Int32, b :Text) -> (a :Int32, b :Text);
    nothing @9 () -> ();
    fail @10 (v :Text) -> (v :Text);
    later @11 (v :Text) -> (v :Text);
    flag @12 (v :Bool) -> (v :Bool);
    peak @13 () -> (n :UInt32);
    small @14 (v :Int64) -> (v :Int8);
}
"""

_HEADER = struct.Struct(">I")


@pytest.fixture(scope="module")
def mod() -> Any:
    return runtime_module(SCHEMA)


def implementation(mod: Any) -> Any:
    class Impl(mod.Mixed):  # type: ignore[misc,name-defined]
        running = 0
        most = 0  # the most `later` handlers that ran at once

        def text(self, v: str) -> str:
            return v

        def int64(self, v: int) -> int:
            return v

        def uint64(self, v: int) -> int:
            return v

        def float64(self, v: float) -> float:
            return v

        def data(self, v: bytes) -> bytes:
            return v

        def ints(self, v: list[int]) -> list[int]:
            return v

        def point(self, v: Any) -> Any:
            return v

        def color(self, v: Any) -> Any:
            return v

        def pair(self, a: int, b: str) -> tuple[int, str]:
            return a, b

        def nothing(self) -> None:
            return None

        def fail(self, v: str) -> str:
            raise ValueError(f"refused {v}")

        async def later(self, v: str) -> str:
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0)
            self.running -= 1
            return v.upper()

        def peak(self) -> int:
            return self.most

        def small(self, v: int) -> Any:
            return "seven" if v == 7 else v  # out of Int8's range, or not an int at all

        def flag(self, v: bool) -> bool:
            return not v

    return Impl()


class Pair:
    """A client and a server connection joined in memory, the fast path on or off; records
    the bytes of every frame each side sent."""

    def __init__(self, mod: Any, fast: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.fast = fast
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        #: the client's frames are recorded but not delivered (the server never answers)
        self.mute = False
        services = Services()
        services.register(mod.Mixed, implementation(mod))
        self.server = Connection(self._to("server", lambda: self.client), services=services,
                                 name="server", loop=self.loop)
        self.client = Connection(self._to("client", lambda: self.server), name="client",
                                 loop=self.loop)
        for conn in (self.server, self.client):
            assert conn._fast_frames
            conn._fast_frames = fast

    def _to(self, side: str, peer: Callable[[], Connection]) -> Callable[[bytes], None]:
        def send(frame: bytes) -> None:
            self.sent[side].append(bytes(frame))
            if not (self.mute and side == "client"):
                self.loop.call_soon(self.deliver, peer(), frame)

        return send

    def deliver(self, conn: Connection, frame: bytes) -> int:
        """``frame`` to ``conn`` as the asyncio transport hands it over."""
        if not self.fast:  # (asyncio_transport's _process loop, in Python)
            try:
                conn.receive(frame)
            except ProtocolError:
                pass  # the connection has sent Abort and closed itself
            return -1 if conn.closed else 4 + len(frame)
        return int(FRAMES.process(conn, _HEADER.pack(len(frame)) + frame, 1 << 30, math.inf,
                                  time.monotonic))

    async def proxy(self, mod: Any) -> Any:
        proxy = self.client.bootstrap(mod.Mixed)
        assert await proxy.text("warm") == "warm"  # (the bootstrap has resolved: an import)
        return proxy


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def outcome(promise: Any) -> Any:
    """What awaiting ``promise`` gives (a callable: what calling it and awaiting that gives;
    a call can also raise at once)."""
    try:
        value = await (promise() if callable(promise) else promise)
    except Exception as exc:  # compared by type and message
        return ("error", type(exc).__name__, str(exc))
    return ("value", value.to_dict() if hasattr(value, "to_dict") else value)


async def both(mod: Any, body: Callable[[Any, Pair], Any]) -> list[Any]:
    """``body(proxy, pair)``'s outcome with the fast path on, then off, with the frames each
    side sent (after the bootstrap) and the tables left."""
    found = []
    for fast in (True, False):
        pair = Pair(mod, fast)
        proxy = await pair.proxy(mod)
        start = {side: len(frames) for side, frames in pair.sent.items()}
        result = await body(proxy, pair)
        await settle()
        found.append((result,
                      {side: frames[start[side]:] for side, frames in pair.sent.items()},
                      pair.client.stats(), pair.server.stats()))
    return found


CASES = [
    ("text", "hello"), ("text", ""), ("text", "é" * 300), ("int64", -(2 ** 63)),
    ("int64", 2 ** 63 - 1), ("int64", 127), ("int64", 128), ("uint64", 2 ** 64 - 1),
    ("float64", 1.5), ("float64", -0.0), ("data", b"\x00\xff" * 200), ("ints", [1, -2, 3]),
    ("ints", []), ("color", 2), ("flag", True), ("flag", False),
]


@pytest.mark.parametrize(("name", "value"), CASES)
def test_a_plain_call_sends_and_answers_the_same_bytes_as_the_python_path(
        mod: Any, name: str, value: Any) -> None:
    async def body(proxy: Any, pair: Pair) -> Any:
        return await outcome(getattr(proxy, name)(value))

    fast, slow = run(both(mod, body))
    assert fast == slow
    assert fast[0][0] == "value"


def test_structs_several_params_and_no_params_take_the_same_way(mod: Any) -> None:
    async def body(proxy: Any, pair: Pair) -> Any:
        return [await outcome(proxy.point(mod.Point.Create(x=1, y=-2, label="p"))),
                await outcome(proxy.pair(7, "seven")),
                await outcome(proxy.pair(a=8, b="eight")),
                await outcome(proxy.nothing()),
                await outcome(proxy.later("soon"))]

    fast, slow = run(both(mod, body))
    assert fast == slow
    assert fast[0][-1] == ("value", "SOON")


def test_errors_are_the_same_on_both_paths(mod: Any) -> None:
    async def body(proxy: Any, pair: Pair) -> Any:
        return [await outcome(proxy.fail("x")),
                await outcome(lambda: proxy.text(5)),  # refused by the params' converter
                await outcome(lambda: proxy.int64(2 ** 64)),
                await outcome(proxy.small(5)),  # boxed in C
                await outcome(proxy.small(300)),  # refused by the results' converter
                await outcome(proxy.small(7)),
                await outcome(proxy.text("after"))]

    fast, slow = run(both(mod, body))
    assert fast == slow
    assert fast[0][0][0] == "error" and "refused x" in fast[0][0][2]
    assert fast[0][1][0] == "error"
    assert fast[0][3] == ("value", 5) and fast[0][4][0] == fast[0][5][0] == "error"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=8),
       ints=st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), min_size=1, max_size=8))
def test_random_values_give_the_same_frames_and_results(mod: Any, texts: list[str],
                                                        ints: list[int]) -> None:
    async def body(proxy: Any, pair: Pair) -> Any:
        calls = [proxy.text(t) for t in texts] + [proxy.int64(i) for i in ints]
        return [await outcome(c) for c in calls]

    fast, slow = run(both(mod, body))
    assert fast == slow
    assert [r[1] for r in fast[0]] == [*texts, *ints]


def test_question_ids_are_reused_alike_and_the_tables_end_empty(mod: Any) -> None:
    async def body(proxy: Any, pair: Pair) -> Any:
        out = []
        for _ in range(3):  # a burst, answered, then another reusing the freed ids
            out.append(await asyncio.gather(*[proxy.int64(i) for i in range(300)]))
        return out

    fast, slow = run(both(mod, body))
    assert fast == slow
    stats = fast[2]
    assert stats["questions"] == 0 and fast[3]["answers"] == 0


# ------------------------------------------------------------------ frames the C code declines


def test_returns_the_fast_path_declines_take_the_python_path(mod: Any) -> None:
    """A final return for a question that is pipelined on, timed, cancelled or unknown; with
    nil content, unknown field numbers or a capability in it: the same outcome both ways."""

    async def body(proxy: Any, pair: Pair) -> Any:
        conn = pair.client
        method = P.method_of(mod.Mixed.cara_schema.method("text"))
        target = proxy._cara_rpc_cap_.resolved().target
        out = []

        pair.mute = True  # (the returns are the ones made here)

        def question() -> Any:
            return conn.send_call(target, method, method.param_cls({0: "x"}))

        frames = {
            "nil": lambda qid: [W.RETURN_FINAL, qid, None, []],
            "unknown field": lambda qid: [W.RETURN_FINAL, qid, {0: "a", 9: 1}, []],
            "wrong type": lambda qid: [W.RETURN_FINAL, qid, {0: 5}, []],
            "names": lambda qid: [W.RETURN_FINAL, qid, {"v": "named"}, []],
            "plain": lambda qid: [W.RETURN_FINAL, qid, {0: "plain"}, []],
        }
        for kind, make in frames.items():
            for state in ("fresh", "pipelined", "timed", "cancelled"):
                q = question()
                if state == "pipelined":
                    q._pipeline(("v",))
                elif state == "timed":
                    q.timer = pair.loop.call_later(60, lambda: None)
                elif state == "cancelled":
                    q.cancel()
                    await settle()
                frame = msgpack.packb(make(q.qid))
                used = pair.deliver(conn, frame)
                if q.timer is not None:
                    q.timer.cancel()
                out.append((kind, state, used, await outcome(q) if not q.cancelled()
                            else "cancelled", conn.closed,
                            [type(pipe.resolution).__name__ for pipe in q.pipes.values()],
                            qid_in_use(conn, q)))
        # a return for a question never asked closes the connection on both paths
        used = pair.deliver(conn, msgpack.packb([W.RETURN_FINAL, 4000, {0: "x"}, []]))
        out.append(("unknown question", used, conn.closed, str(conn.close_reason)))
        return out

    fast, slow = run(both(mod, body))
    assert fast[0] == slow[0]
    assert fast[0][-1][2] is True  # (closed)


def qid_in_use(conn: Connection, q: Any) -> bool:
    return conn._questions.get(q.qid) is q


def test_malformed_and_oversized_frames_end_the_connection_alike(mod: Any) -> None:
    bad = [b"\x94\x0b", b"\x94\x0b\xce\xff\xff\xff\xff\x81\x00\xa1x\x90",
           b"\x94\x0b\x05\x81\x00\xa1", b"\x97\x00\x05\x00\xcf" + b"\x00" * 8 + b"\x00\x80\x90",
           b"\x94\x0b\x01\xc1\x90", b"\x97\x00\x01\x63\x00\x00\x80\x90"]

    async def body(proxy: Any, pair: Pair) -> Any:
        results = []
        for frame in bad:
            p2 = Pair(mod, pair.fast)
            await p2.proxy(mod)
            used = p2.deliver(p2.client, frame)
            results.append((used, p2.client.closed, str(p2.client.close_reason)))
            used = p2.deliver(p2.server, frame)
            results.append((used, p2.server.closed, str(p2.server.close_reason)))
        return results

    fast, slow = run(both(mod, body))
    assert fast[0] == slow[0]


def test_the_frame_loop_stops_at_an_incomplete_or_oversized_frame_and_at_its_deadline(
        mod: Any) -> None:
    async def main() -> None:
        pair = Pair(mod, True)
        await pair.proxy(mod)
        frames = [msgpack.packb([W.RETURN_FINAL, 9000 + i, {0: "x"}, []]) for i in range(2)]
        data = b"".join(_HEADER.pack(len(f)) + f for f in frames)
        assert FRAMES.process(pair.client, data[:3], 1 << 20, math.inf, time.monotonic) == 0
        one = 4 + len(frames[0])
        assert FRAMES.process(pair.client, _HEADER.pack(10 ** 6) + b"x", 100, math.inf,
                              time.monotonic) == 0  # over the limit: the caller aborts
        # a deadline already passed: one frame, then stop (it closes: unknown question)
        assert FRAMES.process(pair.client, data, 1 << 20, 0.0, time.monotonic) == -1
        assert pair.client.closed
        assert one < len(data)

    run(main())


def test_a_deadline_ends_the_loop_after_the_frame_that_passed_it(mod: Any) -> None:
    async def main() -> None:
        pair = Pair(mod, True)
        await pair.proxy(mod)
        frames = [msgpack.packb([W.FINISH, 50 + i]) for i in range(3)]  # (unknown: ignored)
        data = b"".join(_HEADER.pack(len(f)) + f for f in frames)
        used = FRAMES.process(pair.server, data, 1 << 20, 0.0, time.monotonic)
        assert used == 4 + len(frames[0])
        assert FRAMES.process(pair.server, memoryview(data)[used:], 1 << 20, math.inf,
                              time.monotonic) == len(data) - used

    run(main())


# ------------------------------------------------------------------ calls on local objects


def test_calls_the_server_declines_in_c_are_answered_by_python_alike(mod: Any) -> None:
    """More handlers running than allowed, a pipelined call, an unknown method, an answer id
    still in use: each answered (or refused) the same with the fast path on and off."""

    async def body(proxy: Any, pair: Pair) -> Any:
        pair.server.max_answers = 1
        slow = [proxy.later(str(i)) for i in range(3)]  # queued behind the first
        out = [await outcome(asyncio.gather(*slow)), await outcome(proxy.peak())]
        assert out[-1] == ("value", 1)
        iid = mod.Mixed.cara_schema.id
        target = proxy._cara_rpc_cap_.resolved().id
        for frame in ([W.CALL, 500, target, iid, 99, {0: "x"}, []],     # no such method
                      [W.CALL, 501, target, iid + 1, 0, {0: "x"}, []],  # no such interface
                      [W.CALL, 502, 999, iid, 0, {0: "x"}, []],         # no such export
                      [W.CALL, 503, target, iid, 0, None, []],          # nil params
                      [W.CALL, 504, target, iid, 0, {0: 5}, []],        # a wrong type
                      [W.CALL, 505, target, iid, 9, {0: 5}, []]):       # a failing handler
            pair.deliver(pair.server, msgpack.packb(frame))
            await settle()
        return out

    fast, slow = run(both(mod, body))
    assert fast == slow


def test_finish_and_release_frames_are_handled_alike(mod: Any) -> None:
    """Finish and Release frames the C loop hands to ``_receive_control``, and the odd ones
    it leaves to Python (ids past 32 bits, a flag other than 1, a trailing byte), give the
    same frames, tables and closed connections as the Python path."""
    P32 = 0xFFFFFFFF
    frames = [
        [W.FINISH, 600], [W.FINISH, 601, 1], [W.FINISH, 602, 2], [W.FINISH, P32],
        [W.RELEASE, 77, 1], [W.RELEASE, 0, 0], [W.RELEASE, 0, P32], [W.RELEASE, P32, 3],
    ]
    closing = [[W.FINISH, P32 + 1], [W.RELEASE, 0, P32 + 1], [W.RELEASE, 0], [W.FINISH]]

    async def body(proxy: Any, pair: Pair) -> Any:
        iid = mod.Mixed.cara_schema.id
        target = proxy._cara_rpc_cap_.resolved().id
        out: list[Any] = []
        # Finish of a running call cancels it; of an answered one, forgets it
        pair.deliver(pair.server, msgpack.packb([W.CALL, 600, target, iid, 11, {0: "x"}, []]))
        for frame in frames:
            pair.deliver(pair.server, msgpack.packb(frame))
            out.append((pair.server.stats(), pair.server.closed))
        await settle()
        for frame in [*closing, None]:
            p2 = Pair(mod, pair.fast)
            await p2.proxy(mod)
            data = msgpack.packb(frame) if frame is not None else \
                msgpack.packb([W.FINISH, 1]) + b"\x00"  # (a trailing byte)
            used = p2.deliver(p2.server, data)
            out.append((used, p2.server.closed, str(p2.server.close_reason)))
        return out

    fast, slow = run(both(mod, body))
    assert fast == slow
    assert fast[0][-1][1] is True  # (the trailing byte closed it)


# ------------------------------------------------------------------ proxy methods


def test_plain_method_falls_back_to_the_python_method_for_everything_unusual(mod: Any) -> None:
    async def main() -> None:
        pair = Pair(mod, True)
        proxy = await pair.proxy(mod)
        method = type(proxy).text
        assert isinstance(method, FRAMES.PlainMethod)
        assert method.__name__ == "text" and proxy.text.__name__ == "text"
        assert await proxy.text("a", _timeout=5) == "a"
        assert await proxy.text(v="kw") == "kw"
        assert (await proxy.pair(1, b="x")).b == "x"
        with pytest.raises(TypeError):
            proxy.text("a", "b")
        # the pure Python method words the same errors
        saved = P.FRAMES
        P.FRAMES = None
        try:
            spec = mod.Mixed.cara_schema.method("text")
            pure = P._runtime_proxy_method(spec, False)
        finally:
            P.FRAMES = saved
        errors = []
        for call in (lambda m: m(proxy, 5), lambda m: m(proxy, "a", "b"),
                     lambda m: m(proxy, nope=1)):
            for m in (method, pure):
                try:
                    call(m)
                except Exception as exc:
                    errors.append((type(exc).__name__, str(exc)))
                else:
                    errors.append(None)
        assert errors[0::2] == errors[1::2]

    run(main())


def test_a_call_from_a_thread_without_the_loop_is_refused_as_in_python(mod: Any) -> None:
    async def main() -> None:
        pair = Pair(mod, True)
        proxy = await pair.proxy(mod)
        caught: list[BaseException] = []

        def other() -> None:
            try:
                proxy.text("from a thread")
            except BaseException as exc:  # (reported below)
                caught.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(caught) == 1 and isinstance(caught[0], RuntimeError)
        assert str(caught[0]) == P.NO_RUNNING_LOOP
        assert pair.client.stats()["questions"] == 0
        # an object of this process (not a plain call: cap.call()) is refused the same way
        from cara.rpc import LocalCap

        local = P.cast(LocalCap(implementation(mod)), mod.Mixed)
        assert await local.text("here") == "here"
        proxy = local
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(caught) == 2 and str(caught[1]) == P.NO_RUNNING_LOOP

    run(main())


def test_running_loop_is_asyncios_answer_in_every_thread_loop_and_forked_child() -> None:
    """``running_loop()`` (asyncio's ``_get_running_loop`` without its ``getpid()``) gives
    what asyncio gives: the loop running in this thread, a second loop run after the first
    ended, another thread's own loop (or None with none there), None once no loop runs, and
    None in a child forked from inside a running loop (the loop it saw last is the parent's)."""
    import os

    running_loop = FRAMES.running_loop
    seen: dict[str, Any] = {}

    async def in_loop(name: str) -> None:
        loop = asyncio.get_running_loop()
        assert running_loop() is loop and running_loop() is loop
        seen[name] = loop

    def in_thread() -> None:
        seen["thread, none running"] = running_loop()
        asyncio.run(in_loop("thread"))

    asyncio.run(in_loop("first"))
    assert running_loop() is None
    asyncio.run(in_loop("second"))
    assert seen["second"] is not seen["first"]

    async def beside_a_thread() -> None:
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        assert running_loop() is loop
        pid = os.fork()
        if pid == 0:  # (the child: exit at once, with what it saw)
            os._exit(0 if running_loop() is None and asyncio._get_running_loop() is None
                     else 1)
        assert os.waitpid(pid, 0)[1] == 0

    asyncio.run(beside_a_thread())
    assert seen["thread, none running"] is None and seen["thread"] is not seen["first"]
    assert running_loop() is None


# ------------------------------------------------------------------ untrusted frames


def test_mutated_frames_get_the_same_answer_from_both_paths(mod: Any) -> None:
    """Calls and returns the fast path would take, damaged at random (bytes changed, inserted,
    cut, repeated): each side handles each one as the Python path does -- the same frames sent
    back, the same results, the same connection closed with the same reason -- and never
    crashes."""
    import random

    from tests.conftest import LONG
    from tests.test_fuzz_untrusted import _mutate

    iid = mod.Mixed.cara_schema.id
    rounds = 400 if LONG else 60

    async def body(proxy: Any, pair: Pair) -> Any:
        rng = random.Random(20261207)
        target = proxy._cara_rpc_cap_.resolved().id
        out = []
        pair.mute = True  # (the server's answers are checked by hand below)
        for i in range(rounds):
            fresh = Pair(mod, pair.fast)
            p = await fresh.proxy(mod)
            fresh.mute = True
            q = p.text("asked")  # a question the damaged return may answer
            seeds = [
                [W.CALL, 7, target, iid, 0, {0: "x" * (i % 40)}, []],
                [W.CALL, 8, target, iid, 6, {0: {0: i, 1: -i, 2: "p"}}, []],
                [W.CALL, 9, target, iid, 8, {0: i, 1: "b"}, []],
                [W.RETURN_FINAL, q.qid, {0: "answer" * (i % 3)}, []],
            ]
            for seed in seeds:
                frame = _mutate(rng, msgpack.packb(seed))
                conn = fresh.client if seed[0] == W.RETURN_FINAL else fresh.server
                before = len(fresh.sent["server"])
                used = fresh.deliver(conn, frame)
                await settle()
                out.append((used, conn.closed, str(conn.close_reason),
                            fresh.sent["server"][before:]))
            out.append(await outcome(asyncio.wait_for(q, 0.05)) if not fresh.client.closed
                       or q.done() else "closed")
        return out

    fast, slow = run(both(mod, body))
    assert fast[0] == slow[0]


def test_calls_take_the_fast_path_on_uvloop_too(mod: Any) -> None:
    """uvloop's loop does not say which thread it runs in (asyncio's ``_thread_id``): the
    fast path then asks for the running loop instead of sending every call the long way."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the test extra has it)")

    async def main() -> None:
        pair = Pair(mod, True)
        proxy = await pair.proxy(mod)
        cap = proxy._cara_rpc_cap_
        method = P.method_of(mod.Mixed.cara_schema.method("text"))
        q = FRAMES.send_plain(cap, method, method.param_cls({0: "uv"}))
        assert q is not None and await q == "uv"
        assert await proxy.text("again") == "again"

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        loop.close()
