"""``cara.Server`` and ``cara.Client`` natively under trio.

Under ``trio.run`` the same server and client run without an asyncio loop or a thread: the
RPC core runs on :class:`cara.rpc.trio_loop.TrioLoop` (trio's own tasks and scheduling behind
the few loop services the core uses), and each connection's bytes move on a trio stream
(``trio.SocketStream``, ``trio.SSLStream`` for TLS). The framing, limits and backpressure are
the asyncio transport's own: its per-connection protocol object
(:class:`~cara.transports.asyncio_transport._FrameProtocol`, asyncio's sans-IO ``Protocol``
interface) is driven by :class:`_StreamTransport`, which reads the stream in one task and
writes in another. So both encodings (``tcp://``/``unix://`` cara frames,
``capnp://``/``capnp+unix://``), TLS, ``max_frame_size``, the per-connection limits and a
server's governor (connection count, buffered bytes, frame and idle deadlines, fair share)
behave as under asyncio. Handlers run in trio tasks (a ``Finish`` cancels them: they see
``trio.Cancelled``); ``await proxy.method()`` parks the calling trio task, and cancelling it
(``trio.move_on_after``, a cancelled nursery) cancels the call. Stopping is the asyncio
classes' own ``stop()``, waiting through :func:`wait_closed`.

The server's accept loops and connections run as trio *system* tasks, so ``start()``/``stop()``
and ``async with`` work as under asyncio without a nursery from the caller; when the run ends
they are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import trio

from cara.rpc.proxies import current_loop
from cara.rpc.trio_loop import TrioLoop, wait_future
from cara.transports.asyncio_transport import READ_SIZE, Client, Server, _FrameProtocol

__all__ = ["start_client", "start_server", "wait_closed"]

_log = logging.getLogger("cara.transports")

#: Bytes waiting to be written above which the protocol is told to pause (a server then stops
#: reading that peer), and below which it resumes (asyncio's defaults).
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def _loop() -> TrioLoop:
    loop = current_loop()
    if not isinstance(loop, TrioLoop):
        raise RuntimeError("the trio transport runs only under trio.run")
    return loop


@contextlib.contextmanager
def _running(loop: TrioLoop) -> Iterator[None]:
    """Let code that asks asyncio for the running loop (a protocol being made) find ``loop``."""
    asyncio._set_running_loop(loop)  # type: ignore[arg-type]
    try:
        yield
    finally:
        asyncio._set_running_loop(None)


class _Parking:
    """One task waits until another wakes it (no system call, no allocation per wait)."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None

    async def park(self) -> None:
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


class _StreamTransport(asyncio.Transport):
    """asyncio's ``Transport`` interface over a trio stream, for one protocol object: a reader
    task feeds ``data_received`` (while reading is not paused), a writer task sends what
    ``write`` collected, one ``send_all`` per batch; ``close`` lets the writer finish first."""

    def __init__(self, stream: trio.abc.Stream, protocol: asyncio.BaseProtocol,
                 loop: TrioLoop) -> None:
        super().__init__()
        self.stream = stream
        self.protocol = protocol
        self.loop = loop
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writer = _Parking()
        self._read_scope = trio.CancelScope()
        self._closing = False
        self._aborted = False
        self._write_paused = False
        self._read_paused = False
        self._resume = _Parking()
        self._error: BaseException | None = None
        raw = stream
        while isinstance(raw, trio.SSLStream):
            raw = raw.transport_stream
        self._socket = getattr(raw, "socket", None)
        #: The plain socket under a trio.SocketStream (not TLS): ``write`` sends on it at once
        #: while nothing waits to be written, as asyncio's transports do (no task switch).
        self._direct: socket.socket | None = getattr(self._socket, "_sock", None) \
            if isinstance(stream, trio.SocketStream) else None
        self._sending = False  # the writer task is inside send_all

    # ------------------------------------------------------------------ asyncio's interface

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._socket
        if name == "socket":
            return sock if sock is not None else default
        if sock is not None and name in ("peername", "sockname"):
            with contextlib.suppress(OSError):
                return sock.getpeername() if name == "peername" else sock.getsockname()
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        direct = self._direct
        if direct is not None and not self._out and not self._sending:
            try:
                sent = direct.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:  # the reader or writer task will see it too
                self._error = exc
                self.abort()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._out.append(bytes(data))
        self._out_bytes += len(data)
        self._writer.wake()
        if not self._write_paused and self._out_bytes > HIGH_WATER:
            self._write_paused = True
            self.protocol.pause_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; the writer sends what is buffered, then the stream closes."""
        self._closing = True
        self._read_scope.cancel()
        self._writer.wake()

    def abort(self) -> None:
        self._aborted = True
        self.close()

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        self._resume.wake()

    def is_reading(self) -> bool:
        return not self._read_paused and not self._closing

    def get_write_buffer_size(self) -> int:
        return self._out_bytes

    # ------------------------------------------------------------------ the tasks

    def start(self) -> None:
        """Tell the protocol it is connected, then run the reader and writer."""
        self.protocol.connection_made(self)
        trio.lowlevel.spawn_system_task(self._run, name=f"cara connection {self._peer()}")

    def _peer(self) -> Any:
        return self.get_extra_info("peername", "")

    async def _run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                await self._read_loop()
        finally:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(*_STREAM_ERRORS), trio.move_on_after(1):
                    await self.stream.aclose()
            error = self._error
            self.protocol.connection_lost(error if isinstance(error, Exception) else None)

    async def _read_loop(self) -> None:
        buffered = self.protocol if isinstance(self.protocol, asyncio.BufferedProtocol) \
            else None
        sock = self._direct  # (None under TLS)
        with self._read_scope:
            try:
                while not self._closing:
                    if self._read_paused:
                        await self._resume.park()
                        continue
                    if buffered is not None and sock is not None:
                        # Straight into the protocol's buffer (a server's scratch, shared by its
                        # connections): no await between the read and the processing.
                        await trio.lowlevel.wait_readable(sock)
                        try:
                            size = sock.recv_into(buffered.get_buffer(-1))
                        except (BlockingIOError, InterruptedError):
                            continue
                        if size:
                            with self.loop.turn():
                                buffered.buffer_updated(size)
                            continue
                    else:
                        data = await self.stream.receive_some(READ_SIZE)
                        if data:
                            with self.loop.turn():
                                self.protocol.data_received(data)  # type: ignore[attr-defined]
                            continue
                    if not self.protocol.eof_received():  # type: ignore[attr-defined]
                        self.close()
                    return
            except _STREAM_ERRORS as exc:
                self._error = exc
                self.abort()

    async def _write_loop(self) -> None:
        try:
            while True:
                out = self._out
                if out and not self._aborted:
                    self._out = []
                    data = out[0] if len(out) == 1 else b"".join(out)
                    self._sending = True
                    try:
                        await self.stream.send_all(data)
                    finally:
                        self._sending = False
                    self._out_bytes -= len(data)
                    if self._write_paused and self._out_bytes <= LOW_WATER:
                        self._write_paused = False
                        self.protocol.resume_writing()
                elif self._closing:
                    return
                else:
                    await self._writer.park()
        except _STREAM_ERRORS as exc:
            if self._error is None:
                self._error = exc
            self._aborted = True
            self.close()


# ---------------------------------------------------------------------------- servers


class _Listening:
    """A bound endpoint's listeners, shaped like the ``asyncio.Server`` the asyncio
    :class:`~cara.transports.asyncio_transport.Server` keeps (``sockets``, ``close``,
    ``wait_closed``)."""

    def __init__(self, listeners: list[Any]) -> None:
        self.listeners = listeners
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.running = len(listeners)

    @property
    def sockets(self) -> list[Any]:
        found = []
        for listener in self.listeners:
            while isinstance(listener, trio.SSLListener):
                listener = listener.transport_listener
            found.append(listener.socket)
        return found

    def close(self) -> None:
        self.scope.cancel()

    async def wait_closed(self) -> None:
        await self.done.wait()

    async def accept(self, listener: Any, server: Server, wire: str, loop: TrioLoop) -> None:
        try:
            with self.scope:
                while True:
                    try:
                        stream = await listener.accept()
                    except trio.ClosedResourceError:
                        return
                    except OSError as exc:  # out of descriptors, say: wait, then go on
                        _log.warning("accepting a connection failed: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    with _running(loop):
                        protocol = server._protocol(wire)
                    _StreamTransport(stream, protocol, loop).start()
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
                await listener.aclose()
            self.running -= 1
            if not self.running:
                self.done.set()


async def _unix_listener(path: str) -> trio.SocketListener:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier run
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def start_server(server: Server) -> None:
    """Listen on ``server``'s bound endpoints under trio (what ``Server.start()`` does there)."""
    if not server._binds:
        raise ValueError("bind() at least one endpoint before start()")
    loop = _loop()
    server._governor.start(loop)  # type: ignore[arg-type]
    for ep in server._binds:
        listeners: list[Any]
        if ep.scheme == "unix":
            listeners = [await _unix_listener(ep.path)]
        else:
            listeners = list(await trio.open_tcp_listeners(ep.port, host=ep.host))
        if server.ssl is not None:
            listeners = [trio.SSLListener(listener, server.ssl) for listener in listeners]
        listening = _Listening(listeners)
        server._servers.append((ep, listening))  # type: ignore[arg-type]
        for listener in listeners:
            trio.lowlevel.spawn_system_task(listening.accept, listener, server, ep.wire, loop,
                                            name=f"cara accept {ep.url()}")


async def wait_closed(closing: list[asyncio.Future[None]]) -> None:
    """Wait (at most 5 seconds) until the connections being closed are gone (what
    ``Server.stop()`` and ``Client.stop()`` wait for, under trio)."""
    with trio.move_on_after(5):
        for fut in closing:
            await wait_future(fut)


# ---------------------------------------------------------------------------- clients


async def start_client(client: Client) -> None:
    """Connect ``client`` to its endpoint under trio (what ``Client.start()`` does there)."""
    ep = client._endpoint
    if ep is None:
        raise ValueError("connect() to an endpoint before start()")
    loop = _loop()
    stream: trio.abc.Stream
    if ep.scheme == "unix":
        stream = await trio.open_unix_socket(ep.path)
    else:
        stream = await trio.open_tcp_stream(ep.host, ep.port)
    if client.ssl is not None:
        ssl_stream = trio.SSLStream(stream, client.ssl,
                                    server_hostname=client.server_hostname or ep.host)
        try:
            await ssl_stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(ssl_stream)
            raise
        stream = ssl_stream
    with _running(loop):
        protocol = _FrameProtocol(
            client.services, max_frame_size=client.max_frame_size,
            max_answers=client.max_answers, send_tracebacks=client.send_tracebacks,
            timeout=client.timeout, pause_reading_on_write=False, wire=ep.wire,
            limits=client.limits)
    _StreamTransport(stream, protocol, loop).start()
    client._proto = protocol

