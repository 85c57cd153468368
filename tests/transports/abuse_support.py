"""Attackers and a well-behaved client for the abuse tests (tests/transports/test_asyncio_*).

The well-behaved client runs in its own process (:class:`GoodClientProcess`), as a real client
would: what it measures is what the *server* gives it, not the share of one event loop that it
would otherwise have to split with the server. The attackers are raw sockets that write
prebuilt bytes, so they cost almost nothing; they run in the test's process, or in one of their
own (:class:`AttackersProcess`, :class:`ConnectionPerFrameProcess`) where their pace must not
depend on the GIL the measured server holds while it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import msgpack

from cara.rpc import wire_cara as M

SCHEMA = """
@0xd4e5f60718293a4b;

struct Tiny { a @0 :UInt8; }

interface Echo { echo @0 (text :Text) -> (text :Text); }

interface Sink { take @0 (items :List(Tiny)) -> (count :UInt32); }
"""


def schema() -> Any:
    import cara

    return cara.loads(SCHEMA, name="abuse.capnp")


def frame(message: Any) -> bytes:
    body = msgpack.packb(message)
    return struct.pack(">I", len(body)) + body


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


async def raw_socket(url: str) -> socket.socket:
    """A non-blocking connected socket (cheaper than a stream pair when there are 1,000)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, address(url))
    return sock


async def send_forever(sock: socket.socket, data: bytes | memoryview) -> None:
    """Write ``data`` (it may never all go: the server stops reading); ends when closed."""
    with contextlib.suppress(OSError):
        await asyncio.get_running_loop().sock_sendall(sock, data)


async def drain_forever(sock: socket.socket) -> None:
    """Read and drop whatever comes, until EOF."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while await loop.sock_recv(sock, 1 << 20):
            pass


# ---------------------------------------------------------------------- the attackers


async def partial_frames(url: str, count: int, size: int) -> list[socket.socket]:
    """``count`` connections, each sending all but the last byte of a ``size``-byte frame."""
    payload = memoryview(struct.pack(">I", size) + b"\x00" * (size - 1))
    socks = [await raw_socket(url) for _ in range(count)]
    _senders.extend(asyncio.ensure_future(send_forever(sock, payload)) for sock in socks)
    return socks


_senders: list[asyncio.Future[None]] = []


async def idle_connections(url: str, count: int) -> list[socket.socket]:
    return [await raw_socket(url) for _ in range(count)]


async def _session(url: str, opening: bytes, frames: list[bytes], stop: asyncio.Event, *,
                   cycle: bool) -> int:
    """One connection: send ``opening``, then ``frames`` in order (over and over if ``cycle``)
    until ``stop``, reading and dropping the answers; returns how many frames were written."""
    loop = asyncio.get_running_loop()
    sent = 0
    sock = await raw_socket(url)
    reader = asyncio.ensure_future(drain_forever(sock))
    try:
        await loop.sock_sendall(sock, opening)
        while not stop.is_set() and (cycle or sent < len(frames)):
            await loop.sock_sendall(sock, frames[sent % len(frames)])
            sent += 1
            await asyncio.sleep(0)
    except OSError:
        pass
    finally:
        reader.cancel()  # first: its reader must leave the selector before the fd is reused
        await asyncio.gather(reader, return_exceptions=True)
        sock.close()
    return sent


async def huge_frames(url: str, sink_id: int, items: int, stop: asyncio.Event) -> int:
    """Send calls whose one frame holds ``items`` tiny structs, eight per connection, then
    again on a new connection; returns how many frames were written."""
    calls = [frame([M.CALL, q, [0], sink_id, 0, {0: [{0: 1}] * items}, []]) +
             frame([M.FINISH, q]) for q in range(1, 9)]
    sent = 0
    while not stop.is_set():
        sent += await _session(url, frame([M.BOOTSTRAP, 0, sink_id]), calls, stop, cycle=False)
    return sent


async def connection_per_frame(url: str, sink_id: int, items: int, stop: asyncio.Event) -> int:
    """Four at a time until ``stop``: open a connection, send one call of ``items`` tiny structs
    on it, wait for its answer, close it. The server always has frames waiting from us (it is
    saturated) but never more than four (its loop turn, which reads every connection ready,
    stays short). Returns how many calls were answered."""
    loop = asyncio.get_running_loop()
    payload = frame([M.BOOTSTRAP, 0, sink_id]) + \
        frame([M.CALL, 1, [0], sink_id, 0, {0: [{0: 1}] * items}, []])
    answered = 0

    async def one_after_another() -> None:
        nonlocal answered
        while not stop.is_set():
            sock = await raw_socket(url)
            try:
                await loop.sock_sendall(sock, payload)
                data, frames = b"", 0
                while frames < 2:  # the bootstrap's Return, then the call's
                    chunk = await loop.sock_recv(sock, 1 << 16)
                    if not chunk:
                        break
                    data += chunk
                    while len(data) >= 4 and len(data) >= 4 + struct.unpack_from(">I", data)[0]:
                        data = data[4 + struct.unpack_from(">I", data)[0]:]
                        frames += 1
                answered += frames == 2
            except OSError:
                pass
            finally:
                sock.close()

    workers = [asyncio.ensure_future(one_after_another()) for _ in range(4)]
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return answered


async def flood(url: str, echo_id: int, stop: asyncio.Event) -> int:
    """Pipeline echo calls (each followed by its Finish, as a client does) as fast as the server
    takes them, reading the answers so that backpressure does not simply park us; returns how
    many calls were written."""
    batch = b"".join(frame([M.CALL, q, [1 << 30], echo_id, 0, {0: "flood"}, []]) +
                     frame([M.FINISH, q]) for q in range(1000))
    batches = await _session(url, frame([M.BOOTSTRAP, 1 << 30, echo_id]), [batch], stop,
                             cycle=True)
    return 1000 * batches


# ---------------------------------------------------------------------- the good client


class _Subprocess:
    """``python -m tests.transports.abuse_support <args>`` with this checkout first on the
    path; it reads commands from stdin and ends when stdin closes."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.transports.abuse_support", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)

    async def ask(self, line: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not answer:
            raise AssertionError(f"the {self.proc.args[3]} process died")
        return json.loads(answer)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class GoodClientProcess(_Subprocess):
    """The well-behaved client: ``await measure(seconds)`` runs sequential echo calls for that
    long and returns ``(calls, failures)``."""

    def __init__(self, url: str) -> None:
        super().__init__("good", url)

    async def measure(self, seconds: float) -> tuple[int, list[str]]:
        report = await self.ask(str(seconds))
        self.last = report
        return report["calls"], report["failures"]


class AttackersProcess(_Subprocess):
    """The four attackers at once: ``partial`` connections each holding a frame of
    ``partial_size`` bytes minus one, ``idle`` silent connections, one connection after another
    sending frames of ``items`` tiny structs, and one flooding pipelined echo calls.
    ``await start()`` returns once all are under way; ``await stop()`` returns what they did."""

    def __init__(self, url: str, *, partial: int, partial_size: int, idle: int,
                 items: int, flood: bool = True) -> None:
        super().__init__("attack", url, str(partial), str(partial_size), str(idle), str(items),
                         str(int(flood)))

    async def start(self) -> None:
        await self.ask("start")

    async def stop(self) -> dict[str, int]:
        report: dict[str, int] = await self.ask("stop")
        return report


class ConnectionPerFrameProcess(_Subprocess):
    """A peer opening a connection per expensive frame (:func:`connection_per_frame`), in a
    process of its own: sharing the server's process, it would wait for the GIL while the
    server decodes, so that its own pace, not the server's, would set the rate measured."""

    def __init__(self, url: str, items: int) -> None:
        super().__init__("per-frame", url, str(items))

    async def start(self) -> None:
        await self.ask("start")

    async def stop(self) -> int:
        opened: int = await self.ask("stop")
        return opened


class ServerProcess(_Subprocess):
    """A server of Echo and Sink in a process of its own (``url``): a target for attackers
    that must not share the measured server's process (the ceiling a server cannot beat)."""

    def __init__(self) -> None:
        super().__init__("serve")

    async def start(self) -> str:
        self.url: str = await self.ask("start")
        return self.url


async def echo_and_sink_server(mod: Any) -> Any:
    """A started server of ``mod``'s Echo and Sink on a loopback port (the one attacked)."""
    from cara.rpc import register_interface
    from cara.transports import Server

    server = Server()
    server.bind("tcp://127.0.0.1:0")
    await server.start()
    register_interface(server, mod.Echo, lambda text: text)
    register_interface(server, mod.Sink, lambda items: len(items))
    return server


async def _serve() -> None:
    mod = schema()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    server = await echo_and_sink_server(mod)
    print(json.dumps(server.endpoints[0]), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # until stdin closes
    await server.stop()


async def _attack(url: str, partial: int, partial_size: int, idle: int, items: int,
                  flooding: int = 1) -> None:
    """The attackers (``items`` 0: no huge frames, ``flooding`` 0: no flood)."""
    loop = asyncio.get_running_loop()
    mod = schema()
    await loop.run_in_executor(None, sys.stdin.readline)
    stop = asyncio.Event()
    socks = await partial_frames(url, partial, partial_size)
    socks += await idle_connections(url, idle)
    tasks = [asyncio.ensure_future(huge_frames(url, mod.Sink.cara_schema.id, items, stop)
                                   if items else asyncio.sleep(0, 0)),
             asyncio.ensure_future(flood(url, mod.Echo.cara_schema.id, stop)
                                   if flooding else asyncio.sleep(0, 0))]
    print(json.dumps("started"), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    huge, flooded = await asyncio.gather(*tasks)
    for sock in socks:
        sock.close()
    print(json.dumps({"huge_frames": huge, "flood_calls": flooded, "cpu": time.process_time()}),
          flush=True)


async def _per_frame(url: str, items: int) -> None:
    loop = asyncio.get_running_loop()
    sink_id = schema().Sink.cara_schema.id
    await loop.run_in_executor(None, sys.stdin.readline)
    stop = asyncio.Event()
    task = asyncio.ensure_future(connection_per_frame(url, sink_id, items, stop))
    print(json.dumps("started"), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    print(json.dumps(await task), flush=True)


async def _good_client(url: str) -> None:
    from cara.transports import Client

    mod = schema()
    loop = asyncio.get_running_loop()
    client = Client(timeout=30)
    client.connect(url)
    async with client:
        echo = mod.Echo(client)
        assert await echo.echo("ready") == "ready"
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            seconds = float(line)
            calls, failures, slowest = 0, [], 0.0
            cpu = time.process_time()
            deadline = time.monotonic() + seconds
            while (now := time.monotonic()) < deadline:
                try:
                    text = f"call {calls}"
                    answer = await echo.echo(text)
                    slowest = max(slowest, time.monotonic() - now)
                    if answer != text:
                        failures.append(f"wrong answer to {text!r}")
                    calls += 1
                except Exception as exc:  # every failure is reported, none is fatal
                    failures.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.01)
            print(json.dumps({"calls": calls, "failures": failures[:10], "slowest": slowest,
                              "cpu": time.process_time() - cpu}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "good":
        asyncio.run(_good_client(sys.argv[2]))
    elif sys.argv[1] == "serve":
        asyncio.run(_serve())
    elif sys.argv[1] == "per-frame":
        asyncio.run(_per_frame(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(_attack(sys.argv[2], *map(int, sys.argv[3:8])))
