"""Lifetimes of a client's connection: ``client.disconnected``, ``on_disconnect``, calls in
flight at a break, and ``Client(reconnect=...)`` across a server killed (SIGKILL) and restarted
in another process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import cara
from cara.rpc import Disconnected
from cara.transports import Backoff, Client, connect_sync
from tests.transports.backends import BACKENDS, Event, background, gather, sleep, wait_for
from tests.transports.backends import run as run_on

REPO = Path(__file__).resolve().parents[2]

SCHEMA = """@0xd1f0c2b3a4958677;
interface Svc {
  echo @0 (text :Text) -> (text :Text);
  sleep @1 (seconds :Float64) -> (done :Bool);
  child @2 () -> (svc :Svc);
}
"""

SERVER = """
import asyncio, sys
import cara

s = cara.load(sys.argv[1])

class Impl(s.Svc):
    def echo(self, text):
        return text

    async def sleep(self, seconds):
        await asyncio.sleep(seconds)
        return True

    def child(self):
        return Impl()

async def main():
    server = cara.Server()
    server.bind(sys.argv[2])
    cara.register_interface(server, s.Svc, Impl())
    await server.start()
    print(server.endpoints[0], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def schema(tmp_path: Path) -> Any:
    path = tmp_path / "svc.capnp"
    path.write_text(SCHEMA)
    (tmp_path / "server.py").write_text(SERVER)
    return cara.load(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """The Svc server in a process of its own, on a fixed port (so it can come back there)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.url = f"tcp://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), CARA_CACHE_DIR=str(self.directory / "c"))
        self.proc = subprocess.Popen(
            [sys.executable, str(self.directory / "server.py"),
             str(self.directory / "svc.capnp"), self.url],
            stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == self.url, line

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path, schema: Any) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path, free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@contextlib.asynccontextmanager
async def client_of(url: str, **options: Any) -> AsyncIterator[Client]:
    client = cara.Client(**options)
    client.connect(url)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


# ------------------------------------------------------------------------------ breaks


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_in_flight_fail_with_disconnected_when_the_server_dies(
        backend: str, schema: Any, server: ServerProcess) -> None:
    lost: list[BaseException] = []

    async def main() -> None:
        async with client_of(server.url, on_disconnect=lost.append) as client:
            svc = schema.Svc(client)
            assert await svc.echo("up") == "up"
            assert client.connected
            calls = [svc.sleep(30) for _ in range(3)]  # sent now
            await sleep(0.2)
            t0 = time.perf_counter()
            server.kill()
            results = await wait_for(gather(*calls, return_exceptions=True), 5)
            elapsed = time.perf_counter() - t0
            assert all(isinstance(r, Disconnected) for r in results), results
            assert elapsed < 1.0, elapsed
            print(f"calls in flight failed {elapsed * 1000:.1f} ms after the kill")
            reason = await wait_for(client.disconnected, 1)
            assert isinstance(reason, Disconnected)
            assert not client.connected
            with pytest.raises(Disconnected):
                await svc.echo("down")

    run_on(backend, main)
    assert len(lost) == 1 and isinstance(lost[0], Disconnected), lost


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_completes_disconnected_without_the_hook(backend: str, schema: Any,
                                                      server: ServerProcess) -> None:
    lost: list[BaseException] = []

    async def main() -> None:
        client = cara.Client(on_disconnect=lost.append)
        client.connect(server.url)
        await client.start()
        async with background(_wait(client)) as waiting:
            await sleep(0.05)
            assert not waiting.done.is_set()
            await client.stop()
            reason = await wait_for(waiting.result(), 1)
        assert "stopped" in str(reason)
        assert client.disconnected.done()  # nothing to wait for any more

    run_on(backend, main)
    assert lost == []


async def _wait(client: Client) -> BaseException:
    return await client.disconnected


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_on_disconnect_hook(backend: str, schema: Any, server: ServerProcess) -> None:
    async def main() -> None:
        seen = Event()

        async def hook(reason: BaseException) -> None:
            await sleep(0)
            seen.set()

        async with client_of(server.url, on_disconnect=hook) as client:
            assert await schema.Svc(client).echo("x") == "x"
            server.kill()
            await wait_for(seen.wait(), 5)

    run_on(backend, main)


# ------------------------------------------------------------------------------ reconnection


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconnect_after_a_server_restart(backend: str, schema: Any,
                                          server: ServerProcess) -> None:
    async def main() -> None:
        policy = Backoff(initial=0.05, maximum=0.2)
        async with client_of(server.url, reconnect=policy) as client:
            svc = schema.Svc(client)  # a bootstrap proxy: it follows the client
            child = await svc.child()  # a capability of the first connection
            assert await child.echo("one") == "one"
            in_flight = svc.sleep(30)  # sent now
            await sleep(0.1)
            t0 = time.perf_counter()
            server.kill()
            with pytest.raises(Disconnected):
                await wait_for(in_flight, 5)
            assert time.perf_counter() - t0 < 1.0
            with pytest.raises(Disconnected, match="reconnecting"):
                await svc.echo("while down")  # fails at once, does not hang
            server.start()  # the same port
            await client.wait_connected(10)
            assert await svc.echo("two") == "two"  # the old bootstrap proxy works again
            assert await schema.Svc(client).echo("three") == "three"
            with pytest.raises(Disconnected, match="capability lost"):
                await child.echo("old")  # capabilities of the old connection stay broken
            child2 = await svc.child()
            assert await child2.echo("new") == "new"
            # pipelining through the bootstrap proxy on the new connection
            assert await svc.child().svc.echo("piped") == "piped"
            # and the connection after that: the server killed and restarted once more
            server.kill()
            await wait_for(client.disconnected, 5)
            server.start()
            await client.wait_connected(10)
            assert await svc.echo("four") == "four"

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconnect_gives_up_after_its_attempts(backend: str, schema: Any,
                                               server: ServerProcess) -> None:
    async def main() -> None:
        policy = Backoff(initial=0.02, maximum=0.05, attempts=3)
        async with client_of(server.url, reconnect=policy) as client:
            svc = schema.Svc(client)
            assert await svc.echo("x") == "x"
            server.kill()
            await wait_for(client.disconnected, 5)
            with pytest.raises(Disconnected, match="gave up"):
                await client.wait_connected(5)
            with pytest.raises(Disconnected, match="gave up"):
                await svc.echo("y")

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wait_connected_times_out_and_stop_ends_the_redialling(
        backend: str, schema: Any, server: ServerProcess) -> None:
    """While the server stays down: wait_connected(timeout) raises TimeoutError, and stop()
    ends the re-dialling (no attempt after it, every waiter raises Disconnected)."""

    async def main() -> None:
        client = cara.Client(reconnect=Backoff(initial=0.02, maximum=0.05))
        client.connect(server.url)
        await client.start()
        assert await schema.Svc(client).echo("x") == "x"
        server.kill()
        await wait_for(client.disconnected, 5)
        with pytest.raises(asyncio.TimeoutError):
            await client.wait_connected(0.2)
        assert "reconnecting (attempt" in client._not_connected_reason()
        async def wait() -> BaseException | None:
            try:
                await client.wait_connected()
            except Disconnected as exc:
                return exc
            return None

        async with background(wait()) as waiting:
            await sleep(0.05)
            await client.stop()
            assert isinstance(await wait_for(waiting.result(), 1), Disconnected)
        attempts = client._attempt
        await sleep(0.2)
        assert client._attempt == attempts  # nothing re-dials after stop()
        assert client._redial is None

    run_on(backend, main)


def test_blocking_client_reconnects(schema: Any, server: ServerProcess) -> None:
    with connect_sync(server.url, reconnect=Backoff(initial=0.05, maximum=0.2)) as client:
        svc = schema.Svc(client)
        assert svc.echo("a") == "a"
        server.kill()
        assert isinstance(client.wait_disconnected(5), Disconnected)
        server.start()
        client.run(client.client.wait_connected(10))
        assert svc.echo("b") == "b"


# ------------------------------------------------------------------------------ policy


def test_backoff_delays() -> None:
    policy = Backoff(initial=0.1, maximum=1.0, factor=2.0, jitter=0.0, attempts=6)
    assert list(policy.delays()) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert policy(7) is None
    jittered = Backoff(initial=1.0, jitter=0.5)
    assert all(0.5 <= jittered(1) <= 1.5 for _ in range(100))
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)
    with pytest.raises(TypeError, match="reconnect"):
        Client(reconnect="yes")  # type: ignore[arg-type]
    assert Client(reconnect=lambda attempt: None)._policy is not None
