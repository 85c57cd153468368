"""An asyncio TCP pass-through for tests: adds latency to every chunk and records both streams.

::

    async with Proxy(host, port, delay=0.05, record=True) as proxy:
        client.connect(f"capnp://127.0.0.1:{proxy.port}")     # instead of host:port
        ...
    proxy.connections[0].to_server   # bytes the client sent, as the server got them
    proxy.connections[0].to_client   # bytes the server sent

Each accepted connection opens one to the upstream ``host:port``. Every chunk read on one side
is written to the other ``delay`` seconds after it was read (not after the previous chunk was
written: chunks in flight overlap, as on a network link with that one-way latency), in order.
So a request and its reply cost ``2 * delay`` more than without the proxy, and N calls sent
before the first reply still cost one round trip. When one side closes, the other side's
writing half is closed once everything before it has been delivered. ``split_frames`` cuts a
recorded stream into Cap'n Proto messages in the standard stream framing. ``proxy_thread``
runs a proxy on a loop in a thread of its own, for tests under another framework (trio).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Recording:
    """One proxied connection's two byte streams (empty unless the proxy records)."""

    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)


class Proxy:
    """A pass-through listening on ``listen_host`` (a free port) that forwards to host:port."""

    def __init__(self, host: str, port: int, delay: float = 0.0, record: bool = False,
                 listen_host: str = "127.0.0.1") -> None:
        self.upstream = (host, port)
        self.delay = delay
        self.record = record
        self.listen_host = listen_host
        self.port = 0
        self.connections: list[Recording] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and cut every proxied connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def url(self, scheme: str = "capnp") -> str:
        return f"{scheme}://{self.listen_host}:{self.port}"

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                server_r, server_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                client_w.close()
                return
            rec = Recording()
            self.connections.append(rec)
            try:
                await asyncio.gather(
                    self._pipe(client_r, server_w, rec.to_server, client_w),
                    self._pipe(server_r, client_w, rec.to_client, server_w),
                )
            finally:
                client_w.close()
                server_w.close()
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    log: bytearray, back: asyncio.StreamWriter) -> None:
        """Copy reader to writer, each chunk ``delay`` seconds after it was read; pass an end
        of file on as one (half-close); on a connection error cut both sides (``back`` is the
        reader's own side)."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await pending.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                if self.record:
                    log += data
                pending.put_nowait((loop.time() + self.delay, data))
            pending.put_nowait((loop.time() + self.delay, b""))
            await sender
        except (ConnectionError, OSError):
            writer.close()
            back.close()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender


@contextlib.contextmanager
def proxy_thread(host: str, port: int, delay: float = 0.0) -> Iterator[Proxy]:
    """A :class:`Proxy` running on an asyncio loop of its own in a thread: usable from a test
    running under any framework (trio's, say)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test proxy", daemon=True)
    thread.start()
    proxy = Proxy(host, port, delay=delay)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def split_frames(data: bytes | bytearray) -> list[bytes]:
    """Cut a byte stream into Cap'n Proto messages (segment table + segments); a partial
    message at the end is left out."""
    frames = []
    offset = 0
    while offset + 4 <= len(data):
        (count,) = struct.unpack_from("<I", data, offset)
        count += 1
        table = 4 + 4 * count
        table += table % 8  # the segment table is padded to a whole word
        if count > 512 or offset + table > len(data):
            break
        sizes = struct.unpack_from(f"<{count}I", data, offset + 4)
        end = offset + table + 8 * sum(sizes)
        if end > len(data):
            break
        frames.append(bytes(data[offset:end]))
        offset = end
    return frames
