"""The blocking client (cara.connect_sync): values from plain threads, the same proxy classes,
pipelining through deferred calls, callbacks served on the client's loop thread, many threads
on one client, and the clear error of an async proxy called with no loop running."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cara
from cara.rpc import Disconnected, register_interface
from cara.transports import Server, SyncClient, connect_sync
from cara.transports.sync_client import SyncPromise
from tests.rpc.schemas import runtime_module
from tests.transports.support import HolderImpl, SleepImpl

REPO = Path(__file__).resolve().parents[2]


def mod() -> Any:
    return runtime_module()


class CalcImpl(SleepImpl):
    """Calc for the blocking client: records the thread its callbacks' answers came in."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def fail(self, kind: str, message: str) -> None:
        raise {"ValueError": ValueError, "KeyError": KeyError}[kind](message)

    def pair(self) -> tuple[int, str]:
        return 3, "three"

    def info(self) -> Any:  # capabilities inside a struct, and inside a list in it
        return mod().Info(name="calc", count=7, cb=lambda v: v * 10, cbs=[lambda v: v + 1])

    async def takeInfo(self, info: Any) -> int:
        return int(info.count + (await info.cb.call(1) if info.cb is not None else 0))

    async def callBack(self, cb: Any, value: int) -> int:
        return int(await cb.call(value))

    def makeCallback(self, offset: int) -> Any:
        return lambda value: value + offset

    async def callAll(self, cbs: list[Any], value: int) -> int:
        return sum([await cb.call(value) for cb in cbs])


class ServerThread:
    """A cara Server on an event loop of its own thread (the blocking client's peer)."""

    def __init__(self, *impls: tuple[Any, Any], url: str = "tcp://127.0.0.1:0",
                 **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(**options)
        self.server.bind(url)
        self.run(self.server.start())
        for iface, impl in impls:
            register_interface(self.server, iface, impl)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def url(self) -> str:
        return self.server.endpoints[0]

    def stats(self) -> dict[str, int]:
        async def stats() -> dict[str, int]:
            return self.server.stats()

        return dict(self.run(stats()))

    def stop(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def calc_server(**options: Any) -> Iterator[ServerThread]:
    m = mod()
    server = ServerThread((m.Calc, CalcImpl), (m.Echo, lambda text: text),
                          (m.Holder, HolderImpl()), **options)
    try:
        yield server
    finally:
        server.stop()


def wait_for(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ------------------------------------------------------------------------------ values


def test_calls_block_and_return_values() -> None:
    m = mod()
    with calc_server() as server, cara.connect_sync(server.url) as client:
        assert isinstance(client, SyncClient)
        calc = m.Calc(client)
        assert isinstance(calc, m.Calc)  # the same typed proxy classes
        assert calc.add(2, 3) == 5
        assert m.Echo(client).echo("hi") == "hi"
        pair = calc.pair()
        assert (pair.x, pair.y) == (3, "three")
        assert client.bootstrap(m.Calc).add(a=1, b=1) == 2
        assert client.stats()["connections"] == 1


def test_errors_raise_in_the_calling_thread() -> None:
    m = mod()
    with calc_server() as server, connect_sync(server.url) as client:
        calc = m.Calc(client)
        with pytest.raises(ValueError, match="bad"):
            calc.fail("ValueError", "bad")
        with pytest.raises(cara.ValueTypeError, match=r"Calc\.add"):
            calc.add("2", 3)  # converted here, before anything is sent
        with pytest.raises(asyncio.TimeoutError):
            calc.sleep(10, _timeout=0.1)
        assert calc.add(1, 2) == 3  # the client is still fine


def test_connect_failure_raises_and_leaves_no_thread() -> None:
    with calc_server() as server:
        url = server.url
    before = threading.active_count()
    with pytest.raises(OSError):
        connect_sync(url)
    assert wait_for(lambda: threading.active_count() <= before)


# ------------------------------------------------------------------------------ capabilities


def test_capabilities_in_results_are_blocking_proxies() -> None:
    m = mod()
    with calc_server() as server, connect_sync(server.url) as client:
        calc = m.Calc(client)
        cb = calc.makeCallback(3)
        assert isinstance(cb, m.Callback)
        assert cb.call(4) == 7
        info = calc.info()  # a struct holding capabilities, one inside a list
        assert info.name == "calc"
        assert info.cb.call(2) == 20
        assert info.cbs[0].call(2) == 3
        # a blocking proxy passed back as an argument reaches the server's own object
        assert calc.callBack(cb, 10) == 13


def test_callbacks_run_on_the_client_loop_thread() -> None:
    m = mod()
    seen: list[str] = []

    def double(value: int) -> int:
        seen.append(threading.current_thread().name)
        return value * 2

    with calc_server() as server, connect_sync(server.url) as client:
        calc = m.Calc(client)
        assert calc.callBack(double, 21) == 42
        assert seen == [client._runner.thread.name]
        assert calc.takeInfo(name="x", count=1, cb=double) == 3

        # A callback that calls back is async and awaits: on the loop thread a blocking proxy
        # returns the usual awaitable promise (blocking there would deadlock).
        async def via_calc(value: int) -> int:
            return int(await calc.add(value, 100))

        assert calc.callBack(via_calc, 1) == 101


def test_release_of_dropped_blocking_proxies() -> None:
    m = mod()
    with calc_server() as server, connect_sync(server.url) as client:
        calc = m.Calc(client)
        cbs = [calc.makeCallback(i) for i in range(5)]
        assert [cb.call(1) for cb in cbs] == [1, 2, 3, 4, 5]
        assert server.stats()["exports"] == 6  # five callbacks and the bootstrap
        del cbs
        gc.collect()
        assert wait_for(lambda: server.stats()["exports"] == 1), server.stats()
        assert client.stats()["imports"] == 1


# ------------------------------------------------------------------------------ pipelining


def test_deferred_calls_pipeline() -> None:
    m = mod()
    with calc_server() as server, connect_sync(server.url) as client:
        calc = m.Calc(client)
        deferred = client.defer(calc)
        promise = deferred.makeCallback(5)
        assert isinstance(promise, SyncPromise)
        assert promise.call(1) == 6  # pipelined on the promised capability, then blocks
        assert promise.cb.call(2) == 7
        assert promise.result().call(3) == 8
        assert promise.done() and promise.exception() is None
        # a promise, or a field of one, passed where a capability is expected
        assert calc.callBack(deferred.makeCallback(2), 5) == 7
        assert calc.callBack(deferred.makeCallback(3).cb, 5) == 8
        # many calls in flight at once, then their values
        promises = [deferred.add(i, i) for i in range(200)]
        assert [p.result() for p in promises] == [2 * i for i in range(200)]
        assert deferred.pair().y.result() == "three"
        # a deferred pipelined capability: calls on it are deferred too
        inner = client.defer(promise.cb)
        assert inner.call(10).result() == 15
        with pytest.raises(ValueError, match="no"):
            deferred.fail("ValueError", "no").result()
        with pytest.raises(TypeError, match="blocking client"):
            client.defer(m.Calc({"add": lambda a, b: a + b}))


def test_pipelining_saves_round_trips() -> None:
    """Through 50 ms of latency each way, a deferred call and a call on its promised capability
    cost one round trip, not two."""
    from tests.peers.proxy import Proxy as LatencyProxy

    m = mod()
    with calc_server() as server:
        host, port = server.url[len("tcp://"):].rsplit(":", 1)
        proxy = LatencyProxy(host, int(port), delay=0.05)
        server.run(proxy.__aenter__())
        try:
            with connect_sync(f"tcp://127.0.0.1:{proxy.port}") as client:
                calc = m.Calc(client)
                calc.add(0, 0)  # bootstrap done
                t0 = time.perf_counter()
                assert client.defer(calc).makeCallback(1).call(1) == 2
                pipelined = time.perf_counter() - t0
                t0 = time.perf_counter()
                assert calc.makeCallback(1).call(1) == 2
                waited = time.perf_counter() - t0
        finally:
            server.run(proxy.__aexit__(None, None, None))
    assert pipelined < 0.15 < waited, (pipelined, waited)


def test_deferred_call_cancel() -> None:
    m = mod()
    impl = SleepImpl()
    server = ServerThread((m.Calc, impl))
    try:
        with connect_sync(server.url) as client:
            promise = client.defer(m.Calc(client)).sleep(10)
            assert wait_for(lambda: impl.started == 1)
            assert promise.cancel()
            with pytest.raises(asyncio.CancelledError):
                promise.result(5)
            assert wait_for(impl.cancelled.is_set)
    finally:
        server.stop()


# ------------------------------------------------------------------------------ threads


def test_many_threads_share_one_client() -> None:
    """8 threads x 1,000 calls on one blocking client: every reply reaches its own caller."""
    m = mod()
    threads, calls = 8, 1000
    errors: list[str] = []
    with calc_server() as server, connect_sync(server.url) as client:
        calc, echo = m.Calc(client), m.Echo(client)

        def work(t: int) -> None:
            try:
                for i in range(calls):
                    if i % 2:
                        got = calc.add(t * 1_000_000, i)
                        want: Any = t * 1_000_000 + i
                    else:
                        got, want = echo.echo(f"{t}:{i}"), f"{t}:{i}"
                    if got != want:
                        errors.append(f"thread {t} call {i}: {got!r} != {want!r}")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(f"thread {t}: {exc!r}")

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        elapsed = time.perf_counter() - t0
        assert not errors, errors[:5]
        assert client.stats()["questions"] == 0
    print(f"{threads * calls} blocking calls from {threads} threads in {elapsed:.2f} s")


def test_close_fails_pending_calls_and_later_ones() -> None:
    m = mod()
    with calc_server() as server:
        client = connect_sync(server.url)
        calc = m.Calc(client)
        outcome: list[BaseException] = []

        def slow() -> None:
            try:
                calc.sleep(30)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=slow)
        t.start()
        assert wait_for(lambda: client.stats()["questions"] == 1)
        client.close()
        t.join(5)
        assert len(outcome) == 1 and isinstance(outcome[0], Disconnected), outcome
        assert not client._runner.thread.is_alive()
        with pytest.raises(Disconnected, match="closed"):
            calc.add(1, 2)
        client.close()  # again: nothing happens


def test_a_forgotten_client_stops_its_thread() -> None:
    m = mod()
    with calc_server() as server:
        client = connect_sync(server.url)
        thread = client._runner.thread
        assert m.Calc(client).add(1, 1) == 2
        del client
        gc.collect()
        thread.join(10)
        assert not thread.is_alive()


# ------------------------------------------------------------------------------ no loop


def test_async_proxy_without_a_loop_names_the_blocking_client() -> None:
    m = mod()
    with calc_server() as server:
        loop = asyncio.new_event_loop()
        try:
            client = cara.Client()
            client.connect(server.url)
            loop.run_until_complete(client.start())
            calc = loop.run_until_complete(_bootstrap(client, m.Calc))
            with pytest.raises(RuntimeError, match=r"cara\.connect_sync"):
                calc.add(1, 2)  # no loop runs in this thread
            with pytest.raises(RuntimeError, match=r"cara\.connect_sync"):
                m.Calc(client)
            assert loop.run_until_complete(_add(calc)) == 3  # the connection is intact
            loop.run_until_complete(client.stop())
        finally:
            loop.close()


async def _bootstrap(client: Any, iface: Any) -> Any:
    return iface(client)


async def _add(calc: Any) -> int:
    return int(await calc.add(1, 2))


# ------------------------------------------------------------------------------ the example


def test_blocking_example_runs() -> None:
    """examples/rpc_blocking.py: the seed's SimpleEcho and BackAndForth (with its callback)
    through the blocking client."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "rpc_blocking.py")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "client: echo returned 'test'" in proc.stdout
    assert "server: the client's callback answered \"thanks for 'internal callback'\"" \
        in proc.stdout


# ------------------------------------------------------------------------------ trio


def test_client_under_trio() -> None:
    """cara.Client started under trio (natively: tests/transports/test_trio.py) against an
    asyncio server in another thread: pipelining, callbacks, errors, concurrency in a nursery
    and cancellation."""
    trio = pytest.importorskip("trio")
    m = mod()
    impl = CalcImpl()
    server = ServerThread((m.Calc, impl))

    async def main() -> None:
        client = cara.Client()
        client.connect(server.url)
        async with client:
            calc = m.Calc(client)
            assert isinstance(calc, m.Calc)
            assert await calc.add(2, 3) == 5
            assert await calc.makeCallback(5).cb.call(1) == 6  # pipelined
            assert await calc.callBack(lambda v: v * 2, 21) == 42  # a callback
            with pytest.raises(ValueError, match="bad"):
                await calc.fail("ValueError", "bad")
            results: list[int] = []

            async def add(i: int) -> None:
                results.append(await calc.add(i, i))

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(add, i)
            assert sorted(results) == [2 * i for i in range(100)]
            with trio.move_on_after(0.2):
                await calc.sleep(10)
            for _ in range(500):  # the cancellation crossed the wire
                if impl.cancelled.is_set():
                    break
                await trio.sleep(0.01)
            assert impl.cancelled.is_set()
            assert client.stats()["connections"] == 1

    try:
        trio.run(main)
    finally:
        server.stop()
