"""cara.Server and cara.Client natively under trio (cara.transports.trio_transport on
cara.rpc.trio_loop): what only trio shows -- handlers are trio tasks on the calling thread, no
thread or asyncio loop is started, trio cancellation reaches handlers and calls, trio peers talk
to asyncio peers -- and the transport's features under trio (unix://, a server's idle deadline
and connection limit, stopping). The behaviour shared with asyncio runs under both frameworks in
test_asyncio_rpc.py, test_asyncio_runtime.py, test_behaviour_both_encodings.py,
test_lifetimes.py (reconnection too), tests/rpc/test_pipelining.py and tests/rpc/test_stream.py
(``-> stream`` methods); test_nats.py checks that ``nats://`` refuses trio, saying why."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import cara
from cara.rpc import Disconnected, LocalCap
from cara.transports import Client, Server
from tests.rpc.schemas import runtime_module
from tests.transports.support import connected, ifaces, serving

trio = pytest.importorskip("trio")


def run(main: Any, timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(timeout):
            return await main()

    return trio.run(bounded)


class TrioCalc:
    """Calc whose handlers use trio and record where they ran."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.in_trio_task = 0
        self.cancelled = 0
        self.started = 0

    def add(self, a: int, b: int) -> int:
        self.threads.add(threading.get_ident())
        return a + b

    async def sleep(self, seconds: float) -> bool:
        self.threads.add(threading.get_ident())
        trio.lowlevel.current_task()  # raises outside a trio task
        self.in_trio_task += 1
        self.started += 1
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return True

    async def callBack(self, cb: Any, value: int) -> int:
        async with trio.open_nursery() as nursery:  # a handler may open nurseries
            results: list[int] = []

            async def one() -> None:
                results.append(int(await cb.call(value)))

            nursery.start_soon(one)
            nursery.start_soon(one)
        return sum(results)

    def makeCallback(self, offset: int) -> Any:
        return lambda value: value + offset

    def fail(self, kind: str, message: str) -> None:
        raise {"ValueError": ValueError, "KeyError": KeyError}[kind](message)


async def _eventually(check: Any, what: str) -> None:
    with trio.fail_after(5):
        while not check():
            await trio.sleep(0.01)
    assert check(), what


@pytest.mark.parametrize("scheme", ["tcp", "capnp"])
def test_handlers_are_trio_tasks_on_this_thread_and_no_thread_is_started(scheme: str) -> None:
    m = runtime_module()
    impl = TrioCalc()
    threads_before = threading.active_count()

    async def main() -> None:
        async with serving((m.Calc, impl), url=f"{scheme}://127.0.0.1:0") as server, \
                connected(server) as client:
            calc = m.Calc(client)
            assert await calc.add(2, 3) == 5
            assert await calc.sleep(0) is True
            assert await calc.makeCallback(5).cb.call(1) == 6  # pipelined
            assert await calc.callBack(lambda v: v * 2, 21) == 84  # callbacks, a nursery
            with pytest.raises(KeyError):
                await calc.fail("KeyError", "k")
            assert threading.active_count() == threads_before
            assert asyncio._get_running_loop() is None
        assert impl.threads == {threading.get_ident()}
        assert impl.in_trio_task == 1

    run(main)


@pytest.mark.parametrize("scheme", ["tcp", "capnp"])
def test_trio_cancellation_cancels_the_call_and_the_handler(scheme: str) -> None:
    m = runtime_module()
    impl = TrioCalc()

    async def main() -> None:
        async with serving((m.Calc, impl), url=f"{scheme}://127.0.0.1:0") as server, \
                connected(server) as client:
            calc = m.Calc(client)
            with trio.move_on_after(0.1) as scope:
                await calc.sleep(30)
            assert scope.cancelled_caught
            await _eventually(lambda: impl.cancelled == 1, "the handler cancelled")
            await _eventually(lambda: server.stats()["answers"] == 0, "the answer dropped")
            await _eventually(lambda: client.stats()["questions"] == 0, "the question freed")
            async def sleep_long() -> None:  # (a proxy method returns a promise, not a
                await calc.sleep(30)         # coroutine: start_soon needs an async def)

            async with trio.open_nursery() as nursery:  # a cancelled nursery, many calls
                for _ in range(10):
                    nursery.start_soon(sleep_long)
                await _eventually(lambda: impl.started == 11, "ten handlers running")
                nursery.cancel_scope.cancel()
            await _eventually(lambda: impl.cancelled == 11, "ten handlers cancelled")
            with pytest.raises(asyncio.TimeoutError):  # a call's own timeout, as under asyncio
                await calc.sleep(30, _timeout=0.05)
            await _eventually(lambda: impl.cancelled == 12, "the timed-out handler")
            assert await calc.add(1, 1) == 2

    run(main)


class AsyncioServerThread:
    """A cara Server on an asyncio loop in a thread of its own."""

    def __init__(self, impl: tuple[Any, Any], url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server()
        self.server.bind(url)
        self._run(self.server.start())
        cara.register_interface(self.server, *impl)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.mark.parametrize("scheme", ["tcp", "capnp"])
def test_a_trio_client_and_an_asyncio_server_call_each_other(scheme: str) -> None:
    m = runtime_module()
    srv = AsyncioServerThread((m.Calc, _AsyncioCalc()), f"{scheme}://127.0.0.1:0")

    async def main() -> None:
        client = Client()
        client.connect(srv.server.endpoints[0])
        async with client:
            calc = m.Calc(client)
            assert await calc.add(40, 2) == 42
            # the asyncio server calls back a function served by the trio client
            served_on: list[int] = []
            assert await calc.callBack(lambda v: served_on.append(threading.get_ident()) or v,
                                       5) == 5
            assert served_on == [threading.get_ident()]
            assert await calc.makeCallback(1).cb.call(1) == 2

    try:
        run(main)
    finally:
        srv.stop()


class _AsyncioCalc:
    def add(self, a: int, b: int) -> int:
        return a + b

    async def callBack(self, cb: Any, value: int) -> int:
        asyncio.get_running_loop()  # runs on the server's asyncio loop
        return int(await cb.call(value))

    def makeCallback(self, offset: int) -> Any:
        return lambda value: value + offset


def test_an_asyncio_client_calls_a_trio_server_in_another_thread() -> None:
    m = runtime_module()
    ready: list[str] = []
    stop = threading.Event()
    seen: list[Any] = []

    def serve() -> None:
        async def main() -> None:
            async with serving((m.Calc, TrioCalc())) as server:
                ready.append(server.endpoints[0])
                while not stop.is_set():
                    await trio.sleep(0.01)

        seen.append(run(main))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def client_main() -> None:
        while not ready:
            await asyncio.sleep(0.01)
        client = Client()
        client.connect(ready[0])
        async with client:
            calc = m.Calc(client)
            assert await calc.add(1, 2) == 3
            assert await calc.callBack(lambda v: v * 3, 2) == 12  # a trio nursery, two calls
            assert await calc.sleep(0.01) is True

    try:
        asyncio.run(asyncio.wait_for(client_main(), 30))
    finally:
        stop.set()
        thread.join(10)
    assert seen == [None]


def test_unix_socket_and_stopping_fail_pending_calls(tmp_path: Path) -> None:
    m = runtime_module()
    impl = TrioCalc()
    path = tmp_path / "calc.sock"

    async def main() -> None:
        server = Server()
        server.bind(f"unix://{path}")
        cara.register_interface(server, m.Calc, impl)
        await server.start()
        assert server.endpoints == [f"unix://{path}"]
        client = Client()
        client.connect(server.endpoints[0])
        async with client:
            calc = m.Calc(client)
            assert await calc.add(1, 2) == 3
            async with trio.open_nursery() as nursery:
                failures: list[BaseException] = []

                async def pending() -> None:
                    try:
                        await calc.sleep(30)
                    except Disconnected as exc:
                        failures.append(exc)

                nursery.start_soon(pending)
                await _eventually(lambda: impl.started == 1, "the handler to start")
                await server.stop()
            assert len(failures) == 1
            await _eventually(lambda: impl.cancelled == 1, "the handler cancelled by stop()")
            with pytest.raises(ConnectionError):
                await calc.add(1, 2)
        assert not path.exists()

    run(main)


def test_the_servers_idle_deadline_and_connection_limit_hold_under_trio() -> None:
    m = runtime_module()

    async def main() -> None:
        async with serving((m.Calc, TrioCalc()), idle_timeout=1.0,
                           max_connections=1) as server:
            first, second = Client(), Client()
            first.connect(server.endpoints[0])
            await first.start()
            assert await first.bootstrap(m.Calc).add(1, 1) == 2
            gc.collect()  # the bootstrap proxy is gone: the connection holds nothing
            await _eventually(lambda: server.stats()["exports"] == 0, "released")
            # one connection more than max_connections evicts the idle one
            second.connect(server.endpoints[0])
            await second.start()
            assert await second.bootstrap(m.Calc).add(2, 2) == 4
            assert server.limit_stats()["evicted"] == 1
            # then the idle deadline closes the one that holds nothing
            gc.collect()
            await _eventually(lambda: server.stats()["connections"] == 0, "idle closed")
            assert server.limit_stats()["idle_closed"] == 1
            for c in (first, second):
                await c.stop()

    run(main)


def test_local_capabilities_under_trio_need_no_server() -> None:
    calc = ifaces()["Calc"]

    async def slow(seconds: float) -> bool:
        await trio.sleep(seconds)
        return True

    async def main() -> None:
        local = LocalCap({"add": lambda a, b: a + b, "sleep": slow}, calc).cast(calc)
        assert await local.add(1, 2) == 3
        assert await local.sleep(0) is True
        with trio.move_on_after(0.05) as scope:
            await local.sleep(30)
        assert scope.cancelled_caught

    run(main)


def test_asyncio_promises_keep_the_c_await_until_trio_is_met() -> None:
    """A program that never meets trio awaits asyncio.Future's own iterator (no Python
    frame per await); under trio the promise class gains the trio-aware one."""
    code = textwrap.dedent("""
        import asyncio, sys
        from cara.rpc import CallPromise
        from cara.rpc.caps import LocalCap
        from tests.transports.support import ifaces

        async def main():
            calc = ifaces()["Calc"]
            assert await LocalCap({"add": lambda a, b: a + b}, calc).cast(calc).add(1, 2) == 3
        asyncio.run(main())
        assert "__await__" not in CallPromise.__dict__
        import trio
        async def under_trio():
            calc = ifaces()["Calc"]
            return await LocalCap({"add": lambda a, b: a + b}, calc).cast(calc).add(2, 2)
        assert trio.run(under_trio) == 4
        assert "__await__" in CallPromise.__dict__
        assert asyncio.run(main()) is None  # asyncio still works after
        print("ok")
    """)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_outside_any_loop_a_call_says_what_to_do() -> None:
    calc = ifaces()["Calc"]
    local = LocalCap({"add": lambda a, b: a + b}, calc).cast(calc)
    with pytest.raises(RuntimeError, match="connect_sync"):
        local.add(1, 2)
