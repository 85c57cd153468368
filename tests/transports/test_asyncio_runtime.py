"""RPC with the runtime's interface classes (cara.runtime built from the reference compiler's
nodes): proxies are instances of the interface class, structs and capabilities inside them are
converted by the runtime, implementations are subclasses, dicts, objects or functions.

Every test runs on both encodings -- cara frames (``tcp://``) and Cap'n Proto's own messages
(``capnp://``) -- and under asyncio and trio (tests/transports/backends.py). A Cap'n Proto peer
sees one bootstrap capability per server, so an interface that needs its own bootstrap gets a
server of its own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cara.rpc import Failed, Unimplemented, register_interface, release
from cara.transports import Client, Server
from tests.rpc.schemas import runtime_module
from tests.transports.backends import BACKENDS, Event, gather, wait_for
from tests.transports.backends import run as run_on
from tests.transports.support import CalcImpl as CalcImplBase
from tests.transports.support import HolderImpl, SleepImpl, connected, eventually


def mod() -> Any:
    return runtime_module()


class CalcImpl(SleepImpl):  # a plain object implementing Calc by attribute names
    def add(self, a: int, b: int) -> int:
        return a + b

    def fail(self, kind: str, message: str) -> None:
        raise {"ValueError": ValueError, "LookupError": LookupError}[kind](message)

    def pair(self) -> tuple[int, str]:
        return 3, "three"

    def info(self) -> Any:
        return mod().Info(name="calc", count=7)

    async def takeInfo(self, info: Any) -> int:
        total = info.count
        if info.cb is not None:
            total += await info.cb(1)
        for cb in info.cbs:
            total += await cb.call(1)
        return total

    async def callBack(self, cb: Any, value: int) -> int:
        assert isinstance(cb, mod().Callback)
        return int(await cb.call(value))

    def makeCallback(self, offset: int) -> Any:
        return lambda value: value + offset

    async def callAll(self, cbs: list[Any], value: int) -> int:
        # Capabilities that come home are the local objects again: their calls are plain.
        results = [cb(value) for cb in cbs]
        return sum([await r if inspect.isawaitable(r) else r for r in results])


@pytest.fixture(params=["tcp", "capnp"])
def url(request: pytest.FixtureRequest) -> str:
    """The endpoint to serve on, once per encoding."""
    return f"{request.param}://127.0.0.1:0"


async def start(*impls: tuple[Any, Any], url: str = "tcp://127.0.0.1:0") -> Server:
    server = Server()
    server.bind(url)
    await server.start()
    for iface, impl in impls:
        register_interface(server, iface, impl)
    return server


def one_bootstrap_each(url: str) -> bool:
    """Whether each interface needs a server of its own (capnp://: one bootstrap per server)."""
    return url.startswith("capnp")


@contextlib.asynccontextmanager
async def bootstraps(url: str, *impls: tuple[Any, Any]) -> AsyncIterator[list[Any]]:
    """A proxy per ``(interface, implementation)``: all served by one server on cara frames,
    each by its own server on capnp://."""
    groups = [[impl] for impl in impls] if one_bootstrap_each(url) else [list(impls)]
    async with contextlib.AsyncExitStack() as stack:
        proxies = []
        for group in groups:
            server = await start(*group, url=url)
            stack.push_async_callback(server.stop)
            client = await stack.enter_async_context(connected(server))
            proxies += [client.bootstrap(iface) for iface, _ in group]
        yield proxies


@pytest.mark.parametrize("backend", BACKENDS)
def test_proxies_are_instances_and_values_are_converted(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        async with bootstraps(url, (m.Calc, CalcImpl()),
                              (m.Echo, lambda text: text.upper())) as (calc, echo):
            assert isinstance(calc, m.Calc)
            assert await calc.add(2, 3) == 5
            assert await calc.add(a=2, b=-3) == -1
            assert await echo("x") == "X"  # one-method proxy is callable
            pair = await calc.pair()
            assert (pair.x, pair.y) == (3, "three")
            info = await calc.info()
            assert isinstance(info, m.Info) and info.name == "calc" and info.count == 7
            assert await calc.takeInfo(m.Info(name="n", count=1, cb=lambda v: 10)) == 11
            assert await calc.takeInfo(name="n", count=2, cbs=[lambda v: 5, lambda v: 6]) == 13
            with pytest.raises(TypeError):
                calc.add(1, 2, 3)
            with pytest.raises(TypeError):
                calc.add(1, "not an int")  # checked by the runtime before sending

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subclass_registration_infers_the_interface(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        servers = [Server() for _ in range(3 if one_bootstrap_each(url) else 1)]
        for server in servers:
            server.bind(url)
            await server.start()
        for_both, for_left, for_right = servers * (3 // len(servers))

        @register_interface(for_both)
        class Both(m.Both):
            def own(self) -> str:
                return "own"

            def name(self) -> str:
                return "both"

        @register_interface(for_left, m.Left)
        def left_name() -> str:
            return "left"

        register_interface(for_right, m.Right, {"name": lambda: "right"})

        assert isinstance(Both(), m.Both)  # the decorator returns the class
        async with connected(for_both) as c_both, connected(for_left) as c_left, \
                connected(for_right) as c_right:
            both = c_both.bootstrap(m.Both)
            assert await both.own() == "own"
            assert await both.name() == "both"
            assert await both[(m.Right.cara_schema.id, 0)]() == "both"
            assert await c_left.bootstrap(m.Left).name() == "left"
            assert await c_right.bootstrap(m.Right).name() == "right"
        for server in servers:
            await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callbacks_released_and_errors(backend: str, url: str) -> None:
    m = mod()
    n = 1000

    async def main() -> None:
        server = await start((m.Calc, CalcImpl()), url=url)
        async with connected(server) as client:
            calc = client.bootstrap(m.Calc)
            results = await gather(*[calc.callBack(lambda v, i=i: v + i, 1)
                                             for i in range(n)])
            assert results == [i + 1 for i in range(n)]
            caps = await gather(*[calc.makeCallback(i) for i in range(n)])
            assert all(isinstance(cap, m.Callback) for cap in caps)
            assert await gather(*[cap.call(2) for cap in caps]) == [
                i + 2 for i in range(n)]
            assert await calc.callAll(caps[:10], 1) == sum(i + 1 for i in range(10))
            release(caps[0])
            caps[1].close()
            async with caps[2] as cap:
                assert await cap(0) == 2
            with pytest.raises(ConnectionError):
                caps[2].call(0)  # released: calling it fails at once
            del caps, results
            gc.collect()
            # Only the bootstrap capability (`calc`) is left.
            await eventually(lambda: server.stats()["exports"] == 1
                             and client.stats()["exports"] == 0
                             and client.stats()["imports"] == 1
                             and server.stats()["imports"] == 0, what="empty tables")

            with pytest.raises(ValueError, match="nope"):
                await calc.fail("ValueError", "nope")
            with pytest.raises(LookupError, match="where"):
                await calc.fail("LookupError", "where")
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_object_made_per_call_dies_when_its_capability_is_released(backend: str,
                                                                         url: str) -> None:
    """What the server makes for each call (here a closure over an object of its own) lives
    only as long as the capability the client holds: nothing on the call path (handler caches
    included) keeps it. A cache of handlers keyed by function once kept every such closure,
    and with it whatever capabilities it held."""
    import weakref

    m = mod()

    class State:
        pass

    states: list[weakref.ref[State]] = []

    class Impl(CalcImplBase):
        def makeCallback(self, offset: int) -> Any:
            state = State()
            states.append(weakref.ref(state))
            return lambda value: value + offset + 0 * id(state)

    async def main() -> None:
        server = await start((m.Calc, Impl()), url=url)
        async with connected(server) as client:
            calc = client.bootstrap(m.Calc)
            caps = await gather(*[calc.makeCallback(i) for i in range(20)])
            assert await gather(*[cap.call(1) for cap in caps]) == [i + 1 for i in range(20)]
            del caps
            gc.collect()
            await eventually(lambda: server.stats()["exports"] == 1, what="released")
            gc.collect()
            assert [r() for r in states] == [None] * 20
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_method_is_unimplemented(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        server = Server()
        server.bind(url)
        await server.start()

        @register_interface(server)
        class Partial(m.Holder):
            def put(self, cap: Any) -> None:
                pass

        async with connected(server) as client:
            holder = client.bootstrap(m.Holder)
            await holder.put(None)
            with pytest.raises(Unimplemented):
                await holder.get()
            with pytest.raises(NotImplementedError):  # Unimplemented is one
                await holder.callHeld(1)
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel_and_timeout_reach_the_handler(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        impl = CalcImpl()
        server = await start((m.Calc, impl), url=url)
        async with connected(server) as client:
            calc = client.bootstrap(m.Calc)
            with pytest.raises(asyncio.TimeoutError):
                await wait_for(calc.sleep(30), 0.05)
            await wait_for(impl.cancelled.wait(), 5)
            await eventually(lambda: server.stats()["answers"] == 0, what="answer dropped")
        async with connected(server) as client:
            impl.cancelled = Event()
            with pytest.raises(asyncio.TimeoutError):
                await client.bootstrap(m.Calc).sleep(30, _timeout=0.05)
            await wait_for(impl.cancelled.wait(), 5)
        async with connected(server, timeout=0.05) as client:
            impl.cancelled = Event()
            with pytest.raises(asyncio.TimeoutError):
                await client.bootstrap(m.Calc).sleep(30)
            await wait_for(impl.cancelled.wait(), 5)
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_parties_with_runtime_classes(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        class Holder(HolderImpl, m.Holder):
            pass

        server_b = await start((m.Calc, CalcImpl()), url=url)
        server_c = await start((m.Holder, Holder()), url=url)
        async with connected(server_b) as a_to_b, connected(server_c) as a_to_c:
            cap = await a_to_b.bootstrap(m.Calc).makeCallback(100)
            holder = a_to_c.bootstrap(m.Holder)
            await holder.put(cap)
            assert await holder.callHeld(1) == 101
            back = await holder.get()
            assert isinstance(back, m.Callback) and await back.call(2) == 102
            await holder.put(None)
            del cap, back
            gc.collect()
            await eventually(lambda: server_b.stats()["exports"] == 0
                             and a_to_c.stats()["exports"] == 0, what="three-party release")
        await server_b.stop()
        await server_c.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_custom_exception_is_failed(backend: str, url: str) -> None:
    m = mod()

    class Mine(Exception):
        pass

    def boom(text: str) -> str:
        raise Mine(text)

    async def main() -> None:
        server = await start((m.Echo, boom), url=url)
        async with connected(server) as client:
            with pytest.raises(Failed, match="Mine: x"):
                await client.bootstrap(m.Echo).echo("x")
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interface_of_client_is_a_bootstrap_proxy(backend: str, url: str) -> None:
    m = mod()

    async def main() -> None:
        server = await start((m.Echo, lambda text: text), url=url)
        try:
            client = Client()
            client.connect(server.endpoints[0])
            async with client:
                echo = m.Echo(client)
                assert await echo.echo("pseud shape") == "pseud shape"
        finally:
            await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_params_left_out_by_the_caller_arrive_as_defaults(backend: str, url: str) -> None:
    """Cap'n Proto passes every param; one the caller did not set reads as its default. An
    implementation taking fewer params than the method has (the seed's zero-argument lambda
    for a one-param Callback) still gets only what it accepts."""
    m = mod()

    async def main() -> None:
        got: list[tuple[str, ...]] = []

        def echo(text: str) -> str:
            got.append((text,))
            return f"<{text}>"

        server = await start((m.Echo, echo), url=url)
        try:
            client = Client()
            client.connect(server.endpoints[0])
            async with client:
                proxy = m.Echo(client)
                assert await proxy.echo() == "<>"
                assert got == [("",)]
        finally:
            await server.stop()

    run_on(backend, main)
