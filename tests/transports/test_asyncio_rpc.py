"""cara RPC end to end over the built-in transport, on real loopback sockets, under asyncio and
under trio (tests/transports/backends.py).

Interfaces come from the reference compiler (tests/rpc/schemas.py); servers and clients are real
TCP/Unix/TLS endpoints. Expected values are computed by the tests from the inputs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from cara.rpc import Disconnected, Results, Unimplemented
from cara.transports import Client, Server
from tests.rpc.schemas import runtime_module
from tests.transports.backends import BACKENDS, Event, background, gather, sleep, wait_for
from tests.transports.backends import run as run_on
from tests.transports.support import (
    CalcImpl,
    HolderImpl,
    PeakSleep,
    check_handlers_capped_at_20,
    check_remote_errors,
    connected,
    eventually,
    ifaces,
    serving,
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_echo_positional_keyword_and_real_port(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text)) as server:
            (url,) = server.endpoints
            assert url.startswith("tcp://127.0.0.1:") and not url.endswith(":0")
            async with connected(server) as client:
                echo = client.bootstrap(I["Echo"])
                assert await echo.echo("hi") == "hi"
                assert await echo.echo(text="kw") == "kw"
                assert await echo("callable one-method proxy") == "callable one-method proxy"
                assert await echo["echo"]("by name") == "by name"
                assert await echo[(I["Echo"].id, 0)]("by address") == "by address"
                assert await echo.echo("é\x00" * 1000) == "é\x00" * 1000

    run_on(backend, main)


@pytest.mark.parametrize("scheme", ["tcp", "capnp"])
def test_a_lone_small_frame_leaves_at_once_and_big_ones_leave_together(scheme: str) -> None:
    """The first small frame since a read or a write is written at once (a sequential caller
    waits no loop turn); the frames after it in that loop turn leave together, in a second
    write. A big frame (a stream's chunk) is not written alone: it waits for the end of the
    turn, so several big calls made in one turn leave in one write."""
    m = runtime_module()

    async def main() -> None:
        async with serving((m.Echo, lambda text: text), url=f"{scheme}://127.0.0.1:0") \
                as server, connected(server) as client:
            echo = client.bootstrap(m.Echo)
            assert await echo.echo("warm") == "warm"
            transport = client._proto.transport
            writes: list[int] = []
            write = transport.write

            def counted(data: Any) -> None:
                writes.append(len(data))
                write(data)

            transport.write = counted
            for text in ("a", "x" * 40_000):
                await sleep(0.01)  # (what is due from before, such as a Finish, has gone)
                writes.clear()
                calls = [echo.echo(text) for _ in range(3)]  # three calls in one loop turn
                assert await asyncio.gather(*calls) == [text] * 3
                if len(text) == 1:
                    assert len(writes) == 2 and writes[0] < writes[1], writes
                else:
                    assert len(writes) == 1 and writes[0] > 3 * len(text), writes

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unix_socket(backend: str, tmp_path: Path) -> None:
    I = ifaces()
    path = tmp_path / "rpc.sock"

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text[::-1]), url=f"unix://{path}") as server:
            assert server.endpoints == [f"unix://{path}"]
            async with connected(server) as client:
                assert await client.bootstrap(I["Echo"]).echo("abc") == "cba"
        assert not path.exists()
        # One server on two endpoints at once.
        server = Server()
        server.bind(f"unix://{path}")
        server.bind("tcp://127.0.0.1:0")
        await server.start()
        server.services.register(I["Echo"], lambda text: text + "!")
        assert len(server.endpoints) == 2
        for url in server.endpoints:
            client = Client()
            client.connect(url)
            async with client:
                assert await client.bootstrap(I["Echo"]).echo(url) == url + "!"
        await server.stop()

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_call_is_sent_without_awaiting(backend: str) -> None:
    I = ifaces()
    seen: list[str] = []

    async def main() -> None:
        async with serving((I["Echo"], lambda text: seen.append(text) or text)) as server:
            async with connected(server) as client:
                echo = client.bootstrap(I["Echo"])
                echo.echo("fire and forget")  # never awaited
                await eventually(lambda: seen == ["fire and forget"], what="the unawaited call")

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_and_async_methods_results_and_structs(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl())) as server, connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            assert await calc.add(2, 40) == 42
            assert await calc.add(a=-1, b=1) == 0
            assert await calc.add(5, b=6) == 11
            assert await calc.sleep(0) is True
            pair = await calc.pair()
            assert isinstance(pair, Results) and pair == {"x": 3, "y": "three"}
            assert (pair.x, pair.y) == (3, "three")
            # ``-> Info``: the struct travels by field number (name @0, count @1).
            assert await calc.info() == {0: "calc", 1: 7}
            # ``takeInfo @5 Info``: keyword params are boxed into the struct.
            assert await calc.takeInfo(name="x", count=5) == 5
            assert await calc.takeInfo({"name": "y", "count": 6}) == 6
            with pytest.raises(TypeError):
                calc.add(1, 2, 3)
            with pytest.raises(TypeError):
                calc.add(1, c=2)

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_remote_errors_are_rebuilt_safely(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl()), send_tracebacks=True) as server, \
                connected(server) as client:
            await check_remote_errors(client.bootstrap(I["Calc"]))

        async with serving((I["Calc"], CalcImpl()), send_tracebacks=False) as server, \
                connected(server) as client:
            with pytest.raises(ValueError, match="quiet") as info:
                await client.bootstrap(I["Calc"]).fail("ValueError", "quiet")
            assert info.value.__cause__ is None

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unregistered_interface_and_missing_method_are_unimplemented(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text),
                           (I["Holder"], {"put": lambda cap: None})) as server, \
                connected(server) as client:
            with pytest.raises(Unimplemented):
                await client.bootstrap(I["Calc"]).add(1, 2)
            with pytest.raises(Unimplemented, match="get"):
                await client.bootstrap(I["Holder"]).get()
            assert await client.bootstrap(I["Echo"]).echo("still fine") == "still fine"

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_thousand_callbacks_then_nothing_left_exported_or_imported(backend: str) -> None:
    I = ifaces()
    n = 1000

    async def main() -> None:
        calc_impl = CalcImpl()
        async with serving((I["Calc"], calc_impl)) as server, connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            # Client functions passed to the server, which calls them back.
            results = await gather(
                *[calc.callBack(lambda value, i=i: value * 2 + i, i) for i in range(n)])
            assert results == [i * 3 for i in range(n)]
            # Server functions returned to the client, which calls them.
            caps = await gather(*[calc.makeCallback(i) for i in range(n)])
            assert server.stats()["exports"] == n + 1  # and the bootstrap capability
            values = await gather(*[cap.call(1) for cap in caps])
            assert values == [i + 1 for i in range(n)]
            del caps, results, values, calc
            gc.collect()

            def empty() -> bool:
                s, c = server.stats(), client.stats()
                return all(s[k] == 0 and c[k] == 0
                           for k in ("exports", "imports", "questions", "answers"))

            await eventually(empty, what=f"empty tables (server {server.stats()}, "
                                         f"client {client.stats()})")
            assert server.stats()["connections"] == 1

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_capabilities_inside_structs_and_lists(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl())) as server, connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            calls: list[int] = []

            def cb(value: int) -> int:
                calls.append(value)
                return 100

            total = await calc.takeInfo(name="n", count=1, cb=cb,
                                        cbs=[lambda v: 10, lambda v: 20])
            assert total == 1 + 100 + 10 + 20
            assert calls == [1]
            assert await calc.callAll([lambda v: v, lambda v: v * 10], 3) == 33
            await eventually(lambda: client.stats()["exports"] == 0, what="client exports freed")

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_close_and_async_with_release(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl())) as server, connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            cap = await calc.makeCallback(5)
            assert server.stats()["exports"] == 2  # and the bootstrap capability
            assert await cap.call(1) == 6
            cap.close()
            await eventually(lambda: server.stats()["exports"] == 1, what="release after close")
            with pytest.raises(Disconnected):
                cap.call(1)
            async with await calc.makeCallback(7) as cap2:
                assert await cap2(1) == 8  # a one-method proxy is callable
            await eventually(lambda: server.stats()["exports"] == 1, what="release after with")

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancelling_the_caller_cancels_the_handler(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        impl = CalcImpl()
        async with serving((I["Calc"], impl)) as server, connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            async with background(calc.sleep(30)) as task:
                await eventually(lambda: impl.started == 1, what="the handler to start")
                assert server.stats()["answers"] == 1
                task.cancel()
                await wait_for(impl.cancel_seen.wait(), 5)
            assert impl.cancelled == 1
            await eventually(lambda: server.stats()["answers"] == 0, what="answer dropped")
            # the handler's Return(canceled) frees the question once it arrives
            await eventually(lambda: client.stats()["questions"] == 0, what="question freed")
            assert await calc.add(1, 2) == 3

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_call_and_default_timeouts(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        impl = CalcImpl()
        async with serving((I["Calc"], impl)) as server:
            async with connected(server) as client:
                with pytest.raises(asyncio.TimeoutError):
                    await client.bootstrap(I["Calc"]).sleep(30, _timeout=0.05)
                await wait_for(impl.cancel_seen.wait(), 5)
            impl.cancel_seen = Event()
            async with connected(server, timeout=0.05) as client:
                calc = client.bootstrap(I["Calc"])
                with pytest.raises(asyncio.TimeoutError):
                    await calc.sleep(30)
                await wait_for(impl.cancel_seen.wait(), 5)
                assert await calc.add(1, 1) == 2
            assert impl.cancelled == 2

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stopped_server_fails_pending_calls_with_connection_error(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        impl = CalcImpl()
        server = Server()
        server.bind("tcp://127.0.0.1:0")
        await server.start()
        server.services.register(I["Calc"], impl)
        client = Client()
        client.connect(server.endpoints[0])
        await client.start()
        calc = client.bootstrap(I["Calc"])
        pending = calc.sleep(30)
        await eventually(lambda: impl.started == 1, what="the handler to start")
        await server.stop()
        with pytest.raises(ConnectionError):
            await pending
        await wait_for(impl.cancel_seen.wait(), 5)  # the handler was cancelled too
        with pytest.raises(ConnectionError):
            await calc.add(1, 2)
        await client.stop()
        with pytest.raises(ConnectionError):
            client.bootstrap(I["Calc"])

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_parties_a_hands_bs_capability_to_c(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        holder = HolderImpl()
        async with serving((I["Calc"], CalcImpl())) as server_b, \
                serving((I["Holder"], holder)) as server_c, \
                connected(server_b) as a_to_b, connected(server_c) as a_to_c:
            cap_from_b = await a_to_b.bootstrap(I["Calc"]).makeCallback(100)
            held = a_to_c.bootstrap(I["Holder"])
            await held.put(cap_from_b)  # A hands B's capability to C
            assert await held.callHeld(5) == 105  # C calls it (through A) and B answers
            back = await held.get()  # C hands it back to A: A gets a working capability
            assert await back.call(1) == 101
            # Dropping every reference frees all three tables.
            await held.put(None)
            del cap_from_b, back
            gc.collect()
            await eventually(
                lambda: server_b.stats()["exports"] == 0 and server_c.stats()["imports"] == 0
                and a_to_c.stats()["exports"] == 0 and a_to_b.stats()["imports"] == 0,
                what="three-party release")

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_method_name_in_two_interfaces_does_not_clash(backend: str) -> None:
    I = ifaces()
    left, right, both = I["Left"], I["Right"], I["Both"]

    async def main() -> None:
        both_impl = {
            (left.id, 0): lambda: "both as left",
            (right.id, 0): lambda: "both as right",
            "own": lambda: "own",
        }
        async with serving((left, {"name": lambda: "left"}), (right, {"name": lambda: "right"}),
                           (both, both_impl)) as server, connected(server) as client:
            assert await client.bootstrap(left).name() == "left"
            assert await client.bootstrap(right).name() == "right"
            b = client.bootstrap(both)
            assert await b.own() == "own"
            assert await b[(left.id, 0)]() == "both as left"
            assert await b[(right.id, 0)]() == "both as right"

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_calls_client_callback_that_calls_back(backend: str) -> None:
    """The seed's BackAndForth story: the server calls a client callback with a lambda, which
    the client calls back."""
    I = ifaces()

    async def main() -> None:
        async def call_back(cb: Any, value: int) -> int:
            inner = await cb.call(value)
            return int(inner)

        async with serving((I["Calc"], {"callBack": call_back})) as server, \
                connected(server) as client:
            calc = client.bootstrap(I["Calc"])
            assert await calc.callBack(lambda value: value + 1, 41) == 42

    run_on(backend, main)


def _make_cert(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return key, cert


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls(backend: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    I = ifaces()
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = _make_cert(Path(tmp))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))

        async def main() -> None:
            async with serving((I["Echo"], lambda text: text), ssl=server_ctx) as server:
                async with connected(server, ssl=client_ctx) as client:
                    echo = client.bootstrap(I["Echo"])
                    assert await echo.echo("secret") == "secret"
                    # frames bigger than a read (read into a buffer of their size where the
                    # transport asks for a buffer, copied into it where it hands over bytes)
                    texts = ["é" * n for n in (40_000, 70_000, 300_000, 1_500_000)]
                    assert await gather(*[echo.echo(t) for t in texts]) == texts
                    for text in texts:
                        assert await echo.echo(text) == text
                # A plain-text client cannot talk to the TLS server.
                plain = Client(timeout=0.5)
                plain.connect(server.endpoints[0])
                await plain.start()
                with pytest.raises((ConnectionError, asyncio.TimeoutError)):
                    await plain.bootstrap(I["Echo"]).echo("x")
                await plain.stop()

        run_on(backend, main)


@pytest.mark.parametrize("url", ["tcp://127.0.0.1", "http://x:1", "unix://", "tcp://h:1/p"])
def test_bad_urls_fail_at_bind(url: str) -> None:
    with pytest.raises(ValueError, match=r"tcp://|unix"):
        Server().bind(url)


@pytest.mark.parametrize("backend", BACKENDS)
def test_server_stats_count_connections(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text)) as server:
            async with connected(server) as c1, connected(server) as c2:
                assert await c1.bootstrap(I["Echo"]).echo("1") == "1"
                assert await c2.bootstrap(I["Echo"]).echo("2") == "2"
                assert server.stats()["connections"] == 2
            await eventually(lambda: server.stats()["connections"] == 0, what="disconnects")

    run_on(backend, main)


if os.name == "nt":  # pragma: no cover
    pytestmark = pytest.mark.skip("unix sockets")


@pytest.mark.parametrize("backend", BACKENDS)
def test_running_handlers_per_connection_are_capped(backend: str) -> None:
    """max_answers=20: at most 20 handlers run per connection, 20 more calls wait in order, and
    calls beyond that are refused as Overloaded; the connection keeps working."""
    I = ifaces()

    async def main() -> None:
        impl = PeakSleep()
        async with serving((I["Calc"], {"sleep": impl.sleep}), max_answers=20) as server, \
                connected(server) as client:
            await check_handlers_capped_at_20(client.bootstrap(I["Calc"]), impl)

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_handlers_calling_back_their_caller_beyond_the_cap_do_not_deadlock(backend: str) -> None:
    """Each handler awaits a call back to the client: the server must keep reading the client's
    answers even with every handler slot taken."""
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl()), max_answers=5) as server, \
                connected(server) as client:
            calc = client.bootstrap(I["Calc"])

            async def slow_double(value: int) -> int:
                await sleep(0.01)
                return value * 2

            results = await gather(*[calc.callBack(slow_double, i) for i in range(10)])
            assert results == [i * 2 for i in range(10)]

    run_on(backend, main)
