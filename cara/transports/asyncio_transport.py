"""The built-in transport: cara RPC over asyncio sockets (TCP or Unix, optionally TLS).

Each frame is a 4-byte big-endian length followed by one msgpack message; a frame longer than
``max_frame_size`` aborts the connection before its body is buffered, so memory per connection is
bounded. Outgoing frames are collected and written once per event-loop turn (one ``write`` for a
burst of 5,000 calls, not 5,000 system calls).

Backpressure: when a server's socket write buffer is above its high-water mark, the server
stops *reading* that connection until it drains -- a peer that sends calls faster than it reads
the answers slows down itself, not the server. Clients always read (so the two sides can never
both wait for the other). At most ``max_answers`` handlers run per connection; as many more calls
wait in order, and calls beyond that are refused with :class:`~cara.rpc.Overloaded` (reading
never stops for this, so a handler awaiting a call back to its caller still gets the answer).

The API has pseud's shape::

    server = Server(); server.bind("tcp://127.0.0.1:0"); await server.start()
    register_interface(server, SimpleEcho, lambda text: text)
    client = Client(); client.connect(server.endpoints[0]); await client.start()
    echo = client.bootstrap(SimpleEcho)      # or SimpleEcho(client) with runtime classes
    await echo.echo("hi")
    await client.stop(); await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl as _ssl
import stat
import struct
from collections.abc import Callable
from typing import Any

from cara.rpc.connection import Connection
from cara.rpc.description import describe
from cara.rpc.dispatch import Services
from cara.rpc.errors import Disconnected, ProtocolError
from cara.transports.url import Endpoint, parse_url

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "Client", "Server"]

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_ANSWERS = 10_000

#: Loop turns an outgoing write may wait for running handlers' answers to join it.
_COALESCE_TURNS = 4

_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class _FrameProtocol(asyncio.Protocol):
    """Frames bytes for one :class:`Connection` and applies backpressure."""

    def __init__(self, services: Services, *, max_frame_size: int, max_answers: int,
                 send_tracebacks: bool, timeout: float | None,
                 live: set[_FrameProtocol] | None = None,
                 pause_reading_on_write: bool = True, wire: str = "cara") -> None:
        self.services = services
        #: "cara": 4-byte length-prefixed cara frames; "capnp": rpc.capnp messages, each with
        #: its own segment table (the framing *is* the message's).
        self.wire_name = wire
        self._framer: Any = None
        self.max_frame_size = max_frame_size
        self.max_answers = max_answers
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.live = live  # the server's set of open connections (joined once connected)
        #: Servers stop reading a peer whose answers pile up unsent; clients never do: they
        #: always read, so two sides can never both wait for the other to read (deadlock).
        self.pause_reading_on_write = pause_reading_on_write
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._flush_waits = 0
        self._write_paused = False
        self._read_paused = False

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.live is not None:
            self.live.add(self)
        peer = transport.get_extra_info("peername")
        wire: Any = None
        send: Callable[[bytes], None] = self._send
        if self.wire_name == "capnp":
            from cara.rpc.wire_capnp import CapnpFramer, CapnpWire

            wire = CapnpWire()
            self._framer = CapnpFramer(self.max_frame_size)
            send = self._send_raw
        self.conn = Connection(
            send, services=self.services, loop=asyncio.get_running_loop(), wire=wire,
            send_tracebacks=self.send_tracebacks, timeout=self.timeout, name=str(peer or ""),
            max_answers=self.max_answers,
        )

    def data_received(self, data: bytes) -> None:
        if self._framer is not None:
            self._process_capnp(data)
            return
        if self._buf:
            self._buf += data
            self._process(self._buf)
        else:
            self._process(data)

    def _process(self, view: bytes | bytearray) -> None:
        """Hand every complete frame in ``view`` to the connection; keep the rest buffered."""
        conn = self.conn
        assert conn is not None
        pos, end_of_data = 0, len(view)
        limit = self.max_frame_size
        try:
            while end_of_data - pos >= 4:
                size = _unpack_header(view, pos)[0]
                if size > limit:
                    conn.abort(f"frame of {size} bytes exceeds the limit of {limit} bytes")
                    self._close_transport()
                    return
                end = pos + 4 + size
                if end > end_of_data:
                    break
                conn.receive(view[pos + 4:end])
                pos = end
                if conn.closed:  # the peer sent ABORT
                    self._close_transport()
                    return
        except ProtocolError:
            self._close_transport()
            return
        finally:
            self._end_of_burst()
        buf = self._buf
        if view is buf:
            del buf[:pos]
        elif pos < end_of_data:
            buf += view[pos:]

    def _process_capnp(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None and self._framer is not None
        try:
            for frame in self._framer.feed(data):
                conn.receive(frame)
                if conn.closed:
                    self._close_transport()
                    return
        except ProtocolError as exc:
            if not conn.closed:
                conn.abort(str(exc))
            self._close_transport()
        finally:
            self._end_of_burst()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            reason = Disconnected(f"connection lost: {exc}" if exc else "connection closed by peer")
            self.conn.connection_lost(reason)
        self._out.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.live is not None:
            self.live.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.pause_reading_on_write:
            self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._maybe_resume_reading()

    # ---------------------------------------------------------------------- sending frames

    def _send(self, frame: bytes) -> None:
        size = len(frame)
        if size > self.max_frame_size:
            raise ValueError(f"message of {size} bytes exceeds the frame limit of "
                             f"{self.max_frame_size} bytes")
        self._out.append(_pack_header(size))
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _send_raw(self, message: bytes) -> None:
        """Send one already framed message (the capnp encoding frames its own)."""
        size = len(message)
        if size > self.max_frame_size:
            raise ValueError(f"message of {size} bytes exceeds the frame limit of "
                             f"{self.max_frame_size} bytes")
        self._out.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _end_of_burst(self) -> None:
        """After the frames of one read: write the answers now, unless handlers started by
        them still run; then give those a few loop turns to join the same write (a pipelined
        chain's answers leave together instead of one latency apart)."""
        conn = self.conn
        if self._out and conn is not None and conn.answers_in_flight:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        conn = self.conn
        if out and conn is not None and not conn.closed and conn.answers_in_flight and \
                self._flush_waits < _COALESCE_TURNS:
            self._flush_waits += 1
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._flush_waits = 0
        if out:
            self._out = []
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(b"".join(out))

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.transport.is_closing():
            self._read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if self._read_paused and not self._write_paused:
            self._read_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def _close_transport(self) -> None:
        self._flush()  # let an ABORT out before closing
        if self.transport is not None:
            self.transport.close()

    def close(self, reason: str) -> None:
        """Close from our side: every pending call fails with :class:`Disconnected`."""
        if self.conn is not None:
            self.conn.connection_lost(Disconnected(reason))
        if self.transport is not None:
            self.transport.close()


class _Options:
    def __init__(self, *, ssl: _ssl.SSLContext | None, max_frame_size: int, max_answers: int,
                 send_tracebacks: bool, timeout: float | None) -> None:
        if max_frame_size < 16:
            raise ValueError("max_frame_size must be at least 16 bytes")
        self.ssl = ssl
        self.max_frame_size = max_frame_size
        self.max_answers = max_answers
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.services = Services()


def _sum_stats(conns: list[Connection]) -> dict[str, int]:
    total = {"connections": 0, "exports": 0, "imports": 0, "questions": 0, "answers": 0}
    for conn in conns:
        if conn.closed:
            continue
        total["connections"] += 1
        for key, value in conn.stats().items():
            total[key] += value
    return total


class Server(_Options):
    """Accepts connections on the bound endpoints and serves the registered interfaces.

    Endpoints: ``tcp://``/``unix://`` speak cara frames, ``capnp://``/``capnp+unix://`` Cap'n
    Proto's own RPC protocol (for libcapnp, pycapnp, Rust and Go peers). A Cap'n Proto peer asks
    for *the* bootstrap capability: ``bootstrap`` when given, else the one registered
    implementation. ``ssl``: a server-side :class:`ssl.SSLContext` for TLS.
    ``send_tracebacks=True`` sends handler tracebacks to callers (for development; off by
    default: they show file paths). ``timeout``: default timeout (seconds) for calls the server
    makes on capabilities its clients passed it."""

    def __init__(self, *, ssl: _ssl.SSLContext | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None, bootstrap: object = None) -> None:
        super().__init__(ssl=ssl, max_frame_size=max_frame_size, max_answers=max_answers,
                         send_tracebacks=send_tracebacks, timeout=timeout)
        if bootstrap is not None:
            self.services.set_bootstrap(bootstrap)
        self._binds: list[Endpoint] = []
        self._servers: list[tuple[Endpoint, asyncio.Server]] = []
        self._protocols: set[_FrameProtocol] = set()

    def bind(self, url: str) -> None:
        """Add an endpoint to listen on (``tcp://host:port``, port 0 allowed; ``unix:///path``)."""
        self._binds.append(parse_url(url))

    def _protocol(self, wire: str = "cara") -> _FrameProtocol:
        return _FrameProtocol(
            self.services, max_frame_size=self.max_frame_size, max_answers=self.max_answers,
            send_tracebacks=self.send_tracebacks, timeout=self.timeout, live=self._protocols,
            wire=wire)

    async def start(self) -> None:
        if not self._binds:
            raise ValueError("bind() at least one endpoint before start()")
        loop = asyncio.get_running_loop()
        for ep in self._binds:
            server: asyncio.Server
            factory = functools.partial(self._protocol, ep.wire)
            if ep.scheme == "unix":
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.stat(ep.path).st_mode):
                        os.unlink(ep.path)  # a stale socket from an earlier run
                server = await loop.create_unix_server(factory, ep.path, ssl=self.ssl)
            else:
                server = await loop.create_server(factory, ep.host, ep.port, ssl=self.ssl)
            self._servers.append((ep, server))

    @property
    def endpoints(self) -> list[str]:
        """The URLs actually listened on (with the real port when 0 was bound)."""
        urls: list[str] = []
        for ep, server in self._servers:
            if ep.scheme == "unix":
                urls.append(ep.url())
                continue
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                urls.append(Endpoint("tcp", host=host, port=port, wire=ep.wire).url())
        return urls

    @property
    def connections(self) -> list[Connection]:
        return [p.conn for p in self._protocols if p.conn is not None]

    def stats(self) -> dict[str, int]:
        """Live totals over open connections: connections, exports, imports, questions, answers."""
        return _sum_stats(self.connections)

    async def stop(self) -> None:
        """Stop listening and close every connection (their pending calls fail)."""
        servers, self._servers = self._servers, []
        for _, server in servers:
            server.close()
        protocols = list(self._protocols)
        for proto in protocols:
            proto.close("server stopped")
        if protocols:
            await asyncio.wait([p.closed for p in protocols], timeout=5)
        for _, server in servers:
            await server.wait_closed()
        for ep, _ in servers:
            if ep.scheme == "unix":
                with contextlib.suppress(OSError):
                    os.unlink(ep.path)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Client(_Options):
    """One connection to a server. ``client.bootstrap(Iface)`` (or ``Iface(client)`` with runtime
    classes) gives a proxy of the server's registered implementation of ``Iface``.

    ``ssl``: a client :class:`ssl.SSLContext` (``server_hostname`` for certificate checking);
    ``timeout``: default per-call timeout in seconds. A client can register interfaces too
    (``services``), reachable from the server by interface id."""

    def __init__(self, *, ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None) -> None:
        super().__init__(ssl=ssl, max_frame_size=max_frame_size, max_answers=max_answers,
                         send_tracebacks=send_tracebacks, timeout=timeout)
        self.server_hostname = server_hostname
        self._endpoint: Endpoint | None = None
        self._proto: _FrameProtocol | None = None

    def connect(self, url: str) -> None:
        self._endpoint = parse_url(url)

    async def start(self) -> None:
        if self._endpoint is None:
            raise ValueError("connect() to an endpoint before start()")
        ep = self._endpoint
        loop = asyncio.get_running_loop()

        def factory() -> _FrameProtocol:
            return _FrameProtocol(
                self.services, max_frame_size=self.max_frame_size, max_answers=self.max_answers,
                send_tracebacks=self.send_tracebacks, timeout=self.timeout,
                pause_reading_on_write=False, wire=ep.wire)

        if ep.scheme == "unix":
            _, proto = await loop.create_unix_connection(
                factory, ep.path, ssl=self.ssl, server_hostname=self.server_hostname)
        else:
            kwargs: dict[str, Any] = {}
            if self.ssl is not None:
                kwargs["server_hostname"] = self.server_hostname or ep.host
            _, proto = await loop.create_connection(factory, ep.host, ep.port, ssl=self.ssl,
                                                    **kwargs)
        self._proto = proto

    @property
    def connection(self) -> Connection:
        if self._proto is None or self._proto.conn is None:
            raise Disconnected("the client is not started")
        return self._proto.conn

    def bootstrap(self, iface: Any = None) -> Any:
        """A proxy of the server's implementation of ``iface`` (no round trip): an instance of
        (a subclass of) the runtime interface class, or a :class:`~cara.rpc.Proxy` for a bare
        description."""
        return self.connection.bootstrap(iface)

    def __cara_cast__(self, iface: Any) -> Any:
        if describe(iface) is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        return self.bootstrap(iface)

    def stats(self) -> dict[str, int]:
        return _sum_stats([self._proto.conn] if self._proto and self._proto.conn else [])

    async def stop(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.close("client stopped")
            await asyncio.wait([proto.closed], timeout=5)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
