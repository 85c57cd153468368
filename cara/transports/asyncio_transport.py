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

A server also bounds what all its connections together can cost (a :class:`_Governor`):

* **connections**: at most ``max_connections`` are open; one more evicts the connection that
  has been idle longest (holding nothing), else the one starving longest for buffer room, or
  is refused with an ``Abort`` (the idle ones a look found serve the admissions after it, and
  a look that found none waits ``_IDLE_RESCAN``: a look asks every connection);
* **memory**: the partial frames of all connections together hold at most ``max_buffered``
  bytes (each connection may always buffer :data:`RESERVE` bytes); a connection whose partial
  frame needs more stops being read until others' frames complete or close;
* **time**: a frame must be completed within ``frame_timeout`` seconds of its first byte, and a
  connection with no frame for ``idle_timeout`` seconds that holds nothing (no call in flight
  either way, no capability either way) is closed;
* **the event loop**: a connection's frames are processed for at most ``_SLICE`` per loop turn
  before the others' turn. A connection is *busy* while it has frames left at the end of its
  slice or a slice of it takes over ``_EXPENSIVE`` (one expensive frame), *light* while it
  completes frames without being busy (a client making a call at a time). The busy ones share
  the loop: each may use ``1/n`` of it for ``n`` busy connections (at least 2%), and while
  light connections are active the busy ones get half of the loop between them
  (``_BUSY_SHARE / n`` each, and all that is not known to be light is counted together against
  that half), so a light client's calls find the loop free at least half the time. A
  connection over its share is not read, nor is anything it holds processed (not even one
  frame), until its use has decayed (time constant ``_TAU``) -- so a peer sending expensive
  frames slows itself, not the other peers. Connections younger than ``_YOUNG`` share one
  account, so a peer opening connections competes as one. Every frame's cost is bounded: at
  most ``max_frame_size`` bytes decoding into at most ``max_objects`` maps and arrays
  (:class:`~cara.rpc.wire_cara.CaraWire`).

Reading (servers and clients): a read goes into a scratch buffer (a server's is shared by its
connections) of :data:`READ_SIZE` bytes, :data:`BIG_READ` while a connection's frames are big;
complete frames are decoded in place. Only what is left is kept: a partial frame is completed
with the first bytes of the next read (copying one frame, not the read), and a frame too big for
a read is read straight into a buffer of its own size, allocated when the server's
``max_buffered`` has room for all of it (else it is kept as it comes, under that budget).

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
import collections
import contextlib
import functools
import math
import os
import socket
import ssl as _ssl
import stat
import struct
import time
from collections.abc import Callable
from typing import Any

from cara.rpc.accel import FRAMES as _FRAMES
from cara.rpc.connection import Connection
from cara.rpc.description import describe
from cara.rpc.dispatch import Services
from cara.rpc.errors import Disconnected, ProtocolError
from cara.rpc.wire_cara import DEFAULT_MAX_OBJECTS, CaraWire
from cara.transports.url import Endpoint, parse_url

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_ANSWERS",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_EXPORTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_IMPORTS",
    "DEFAULT_MAX_OBJECTS",
    "Client",
    "Server",
]

#: Largest frame (message) accepted or sent, in bytes.
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
#: Handlers running at once per connection (as many more calls wait; beyond: Overloaded).
DEFAULT_MAX_ANSWERS = 10_000
#: Capabilities of ours one peer may hold at once (beyond: the sending call fails, Overloaded).
DEFAULT_MAX_EXPORTS = 100_000
#: Capabilities one peer may hand us at once (beyond: the connection is aborted).
DEFAULT_MAX_IMPORTS = 100_000
#: Open connections per server.
DEFAULT_MAX_CONNECTIONS = 1000
#: Bytes of partial frames buffered across all of a server's connections.
DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
#: Seconds from a frame's first byte to its last.
DEFAULT_FRAME_TIMEOUT = 30.0
#: Seconds without a frame after which a connection holding nothing is closed.
DEFAULT_IDLE_TIMEOUT = 60.0
#: Bytes of a partial frame any connection may buffer whatever the server-wide total.
RESERVE = 16 * 1024
#: Bytes read from a socket at once, into a scratch buffer shared by a server's connections:
#: complete frames are decoded straight from it, only a partial frame is copied and kept.
READ_SIZE = 64 * 1024
#: Bytes read at once while a connection's frames are big (a partial frame of at least
#: _BIG_FRAME bytes was pending): several big frames per read, decoded in place.
BIG_READ = 256 * 1024
_BIG_FRAME = 16 * 1024

#: Queued items (a length and a frame each) after which a burst of frames is written at once,
#: without waiting for the end of the loop turn (see ``_write_burst``).
_BURST_WRITE = 512
#: Loop turns an outgoing write may wait for running handlers' answers to join it.
_COALESCE_TURNS = 16
#: A frame this big is not written alone at once (see ``_queue``): it waits for the end of the
#: loop turn, where the frames made after it join it (a stream's calls leave several to a
#: write, and their returns come back so); a loop turn is nothing beside its transfer.
_LONE_FRAME_MAX = _BIG_FRAME

_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from

#: Loop-time accounting: a connection's usage decays with this time constant (seconds).
_TAU = 1.0
#: A connection is *busy* while, within the last _ACTIVE_WINDOW seconds, it had frames left
#: when its slice ended or one slice of its cost more than this (seconds; an expensive frame):
#: the busy connections share the loop. One that completed a frame in that window without
#: being busy is *light* (latency-bound: a call at a time).
_EXPENSIVE = 0.01
#: While light connections are active, the busy ones together get at most this share of the
#: loop (each ``_BUSY_SHARE / n``): the rest is kept for the light ones' calls.
_BUSY_SHARE = 0.5
#: Connections younger than this (seconds) share one account of loop time: a peer opening
#: connection after connection competes as one, not as many.
_YOUNG = 1.0
_ACTIVE_WINDOW = 0.5
_MIN_SHARE = 0.02
#: At max_connections, a look for idle connections to close that found none is not repeated
#: for this long (seconds; see _Governor._idle_victim).
_IDLE_RESCAN = 0.5
_MAX_PAUSE = 2.0
#: With other connections open, a connection gets at most this long (seconds) per loop turn;
#: then the others' turn comes.
_SLICE = 0.0002
_now = time.monotonic


class _Usage:
    """Loop seconds used, decaying with time constant _TAU (so ``value / _TAU`` is the recent
    share of the loop)."""

    __slots__ = ("at", "throttled", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.at = 0.0
        self.throttled = False

    def now(self, now: float) -> float:
        self.value *= math.exp((self.at - now) / _TAU)
        self.at = now
        return self.value


class _Governor:
    """What a server's connections share: the connection count, the buffered bytes, the
    deadlines (checked by a periodic sweep) and the event loop's time (see the module
    docstring)."""

    def __init__(self, live: set[_FrameProtocol], *, max_connections: int, max_buffered: int,
                 frame_timeout: float, idle_timeout: float) -> None:
        self.live = live
        self.max_connections = max_connections
        self.max_buffered = max_buffered
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.buffered = 0
        self.starving: collections.deque[_FrameProtocol] = collections.deque()
        #: the idle connections the last look found, oldest last, and the time before
        #: which none is looked for again (see _idle_victim)
        self._idle_found: list[_FrameProtocol] = []
        self._no_idle_until = 0.0
        #: when each account was last busy (those compete for the loop) ...
        self.heavy: dict[_Usage, float] = {}
        #: ... and when each last completed a frame
        self.seen: dict[_Usage, float] = {}
        self._light = 0
        #: the account of all young connections (see _YOUNG)
        self.young = _Usage()
        #: the account of all that connections not known to be light used (see _BUSY_SHARE)
        self.busy = _Usage()
        self._active = 1
        self._active_at = -1.0
        self._sweeper: asyncio.TimerHandle | None = None
        self.counts = {"refused": 0, "evicted": 0, "timed_out": 0, "idle_closed": 0,
                       "throttled": 0}
        self.scratch = memoryview(bytearray(BIG_READ))

    # ------------------------------------------------------------------ connections

    def admit(self) -> bool:
        """Room for one more connection? At the limit, the connection idle longest is closed
        to make room, else the one that has waited longest for buffer room."""
        if len(self.live) < self.max_connections:
            return True
        victim = self._idle_victim()
        if victim is None:
            victim = self._starved_victim()
        if victim is None:
            self.counts["refused"] += 1
            return False
        self.counts["evicted"] += 1
        victim.abort("closed to make room: the server is at max_connections and this "
                     "connection was idle or stalled")
        return True

    def _idle_victim(self) -> _FrameProtocol | None:
        """The connection idle longest, if any. Finding the idle ones visits every connection,
        so one visit serves many admissions: what it found is kept, oldest last, and taken
        from while it lasts (each still idle when taken); and once a visit found none, none is
        made during ``_IDLE_RESCAN`` seconds. A peer connecting over and over at the limit
        would otherwise cost a visit of every connection per connection (with 1,000
        connections, milliseconds each time)."""
        found = self._idle_found
        live = self.live
        while found:
            proto = found.pop()
            if proto in live and proto.idle():
                return proto
        now = _now()
        if now < self._no_idle_until:
            return None
        found = sorted((p for p in live if p.idle()), key=lambda p: p.last_active,
                       reverse=True)
        if not found:
            self._no_idle_until = now + _IDLE_RESCAN
            return None
        victim = found.pop()
        self._idle_found = found
        return victim

    def _starved_victim(self) -> _FrameProtocol | None:
        """The connection starving longest (the front of ``starving``, once what closed or
        was woken meanwhile is dropped from it); taken off the queue, as it is closed."""
        starving, live = self.starving, self.live
        while starving:
            proto = starving.popleft()
            conn = proto.conn
            if proto.starved and proto in live and conn is not None and not conn.closed:
                return proto
        return None

    def forget(self, proto: _FrameProtocol) -> None:
        self.heavy.pop(proto.usage, None)
        self.seen.pop(proto.usage, None)
        self.settle(proto, 0)

    # ------------------------------------------------------------------ buffered bytes

    def settle(self, proto: _FrameProtocol, size: int) -> None:
        """``proto`` now buffers ``size`` bytes: account for them; stop reading it while it is
        over its reserve and the server over its total, and wake the waiting when room frees."""
        grew = size - proto.counted
        proto.counted = size
        self.buffered += grew
        if grew > 0 and size > RESERVE and self.buffered > self.max_buffered:
            if not proto.starved:
                proto.starved = True
                self.starving.append(proto)
                proto.update_reading()
        elif grew < 0:
            starving = self.starving
            while starving and self.buffered < self.max_buffered:
                waiting = starving.popleft()
                waiting.starved = False
                waiting.update_reading()

    # ------------------------------------------------------------------ loop time

    def share(self, now: float) -> float:
        """The share of the loop one connection may use now: with ``n`` connections busy,
        ``_BUSY_SHARE / n`` while light ones are active too, else ``1/n``, and ``inf`` (no
        limit) for a connection busy alone."""
        if now - self._active_at > 0.05:
            cutoff = now - _ACTIVE_WINDOW
            heavy, seen = self.heavy, self.seen
            for p in [p for p, t in heavy.items() if t < cutoff and not p.throttled]:
                del heavy[p]
            for p in [p for p, t in seen.items() if t < cutoff]:
                del seen[p]
            self._active = len(heavy)
            self._light = sum(1 for p in seen if p not in heavy)
            self._active_at = now
        if self._light and self._active:
            return max(_MIN_SHARE, _BUSY_SHARE / self._active)
        if self._active < 2:
            return math.inf
        return max(_MIN_SHARE, 1.0 / self._active)

    # ------------------------------------------------------------------ deadlines

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule()

    def _schedule(self) -> None:
        period = min(self.frame_timeout, self.idle_timeout) / 4
        self._sweeper = self._loop.call_later(min(max(period, 0.02), 1.0), self.sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def sweep(self) -> None:
        now = _now()
        for proto in list(self.live):
            proto.check_deadlines(now)
        self._schedule()


class _FrameProtocol(asyncio.BufferedProtocol):
    """Frames bytes for one :class:`Connection` and applies backpressure."""

    def __init__(self, services: Services, *, max_frame_size: int, max_answers: int,
                 send_tracebacks: bool, timeout: float | None,
                 live: set[_FrameProtocol] | None = None,
                 pause_reading_on_write: bool = True, wire: str = "cara",
                 limits: dict[str, int] | None = None, governor: _Governor | None = None) -> None:
        self.services = services
        #: "cara": 4-byte length-prefixed cara frames; "capnp": rpc.capnp messages, each with
        #: its own segment table (the framing *is* the message's).
        self.wire_name = wire
        self._framer: Any = None
        self.max_frame_size = max_frame_size
        self.max_answers = max_answers
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.limits = limits or {}
        self.live = live  # the server's set of open connections (joined once connected)
        self.gov = governor
        #: Servers stop reading a peer whose answers pile up unsent; clients never do: they
        #: always read, so two sides can never both wait for the other to read (deadlock).
        self.pause_reading_on_write = pause_reading_on_write
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Received bytes not processed yet: ``_rest[_pos:]`` (frames left to a later slice,
        #: or the start of a partial frame) ...
        self._rest = b""
        self._pos = 0
        #: ... or a frame too big for a read, being read straight into a buffer of its size.
        self._frame: bytearray | None = None
        self._have = 0
        self._big = False  # recent frames are big: read BIG_READ at once
        #: (a client's own, grown to BIG_READ when its frames are big)
        self._scratch = governor.scratch if governor is not None else \
            memoryview(bytearray(READ_SIZE))
        self._pending: collections.deque[bytes] = collections.deque()  # capnp, when throttled
        self._out: list[bytes] = []
        self._flush_scheduled = False
        #: A frame left at once, with no flush scheduled (see _queue), since our last read.
        self._wrote_alone = False
        #: Frames being handed to the connection: its answers wait for the burst's end.
        self._receiving = False
        self._flush_by_burst = False
        self._flush_waits = 0
        self._write_paused = False
        self._read_paused = False
        # The governor's bookkeeping (servers only).
        self.counted = 0            # bytes of ours in the governor's total
        self.starved = False        # not read: the server's buffered total is spent
        self.throttled = False      # not read: over our share of the loop
        self._throttle_timer: asyncio.Handle | None = None
        self.usage = _Usage()       # our account of loop time (once no longer young)
        self.born = _now()
        self.last_active = _now()   # when the last frame was completed (or we connected)
        self.frame_started = 0.0    # when the partial frame we buffer began (0: none)

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        admitted = self.gov is None or self.gov.admit()
        if self.live is not None and admitted:
            self.live.add(self)
        peer = transport.get_extra_info("peername")
        wire: Any = None
        send: Callable[[bytes], None] = self._send
        limits = self.limits
        if self.wire_name == "capnp":
            from cara.rpc.wire_capnp import CapnpFramer, CapnpWire

            wire = CapnpWire()
            self._framer = CapnpFramer(self.max_frame_size)
            send = self._send_raw
        else:
            wire = CaraWire(max_objects=limits.get("max_objects", DEFAULT_MAX_OBJECTS))
        self.conn = Connection(
            send, services=self.services, loop=self._loop, wire=wire,
            send_tracebacks=self.send_tracebacks, timeout=self.timeout, name=str(peer or ""),
            max_answers=self.max_answers,
            max_queued_calls=limits.get("max_queued_calls", self.max_answers),
            max_exports=limits.get("max_exports", DEFAULT_MAX_EXPORTS),
            max_imports=limits.get("max_imports", DEFAULT_MAX_IMPORTS),
        )
        if send == self._send:  # (the C fast path sends frames it built with their length)
            self.conn._send_framed = self._send_framed
            self.conn._send_soon = self._send_soon
        else:
            self.conn._send_soon = self._send_raw_soon
        if not admitted:
            self.abort("the server has too many connections")
            return
        if self.gov is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):  # find peers that vanished without a word
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the next read goes: the rest of a big pending frame's own buffer, else the
        scratch buffer, as much of it as the server's buffered total still allows us (see
        :meth:`_Governor.settle`)."""
        frame = self._frame
        if frame is not None:
            return memoryview(frame)[self._have:]
        size = BIG_READ if self._big else READ_SIZE
        gov = self.gov
        if gov is not None:
            room = max(gov.max_buffered - gov.buffered, RESERVE - self.counted, 4096)
            if room < size:
                size = room
        elif len(self._scratch) < size:
            self._scratch = memoryview(bytearray(size))
        return self._scratch[:size]

    def buffer_updated(self, nbytes: int) -> None:
        self._wrote_alone = False  # (a new loop turn: the next frame may leave at once)
        frame = self._frame
        if frame is None:
            data = self._scratch[:nbytes]
            if self._framer is None and not self._rest:  # (the common case, inline)
                if self.gov is not None:
                    conn = self.conn
                    if conn is not None and not conn.closed:
                        self._drain(data)
                    return
                self._receiving = True
                try:
                    progress = self._process(data, math.inf)
                    if 0 <= progress < nbytes:
                        self._rest = bytes(data[progress:])
                        self._keep_big()
                finally:
                    self._end_of_burst()
                return
            self._received(data)
            return
        self._have += nbytes
        if self._have == len(frame):  # complete: processed in place, as a read of it alone
            self._frame = None
            self._received(memoryview(frame))

    def data_received(self, data: bytes | memoryview) -> None:
        """Process ``data`` (for a buffered read, a view of the scratch buffer: everything
        that must outlive this call is copied)."""
        self._wrote_alone = False  # (a new loop turn: the next frame may leave at once)
        frame = self._frame
        if frame is not None:  # (from a transport that hands over bytes, e.g. trio's TLS)
            have = self._have
            n = min(len(data), len(frame) - have)
            frame[have:have + n] = data[:n]
            self._have = have + n
            if self._have < len(frame):
                return
            self._frame = None
            self._received(memoryview(frame))
            if n == len(data):
                return
            data = data[n:]
        self._received(data)

    def _received(self, data: bytes | memoryview) -> None:
        if self.gov is not None:
            self._receive_governed(data)
            return
        if self._framer is not None:
            self._process_capnp(data)
            return
        self._receiving = True
        try:
            self._take(data, math.inf)
        finally:
            self._end_of_burst()

    def _take(self, data: bytes | memoryview | None, deadline: float) -> int:
        """Hand complete frames to the connection until ``deadline``: first what is kept from
        before (completed by ``data``), then ``data`` in place; keep what is left. Returns how
        many bytes were used, or -1 once the connection closed."""
        rest = self._rest
        if not rest and data is not None:  # (the common case: nothing kept)
            progress = self._process(data, deadline)
            if 0 <= progress < len(data):
                self._rest = bytes(data[progress:])
                self._keep_big()
            return progress
        used = 0
        if rest:
            pos = self._pos
            if data is not None and len(rest) - pos < 4 + self._pending_size(rest, pos):
                # a partial frame: complete it with the first bytes of ``data`` (copying one
                # frame, not the whole read), or keep them too
                have = len(rest) - pos
                if have < 4:
                    head = b"".join((rest[pos:], data[:4 - have]))
                    if len(head) < 4:
                        self._rest, self._pos = head, 0
                        return 0
                    size = _unpack_header(head, 0)[0]
                else:
                    size = _unpack_header(rest, pos)[0]
                if size > self.max_frame_size:
                    self.abort(f"frame of {size} bytes exceeds the limit of "
                               f"{self.max_frame_size} bytes")
                    return -1
                missing = 4 + size - have
                if len(data) < missing:
                    self._rest, self._pos = b"".join((rest[pos:], data)), 0
                    self._keep_big()
                    return 0
                frame = b"".join((rest[pos:], data[:missing]))
                self._rest, self._pos = b"", 0
                if self._process(frame, deadline) < 0:
                    return -1
                used, data = missing, data[missing:]
            else:
                # frames left from an earlier slice (reading is paused meanwhile)
                view = memoryview(rest)[pos:]
                progress = self._process(view, deadline)
                view.release()
                if progress < 0:
                    return -1
                pos += progress
                if pos < len(rest):
                    self._pos = pos
                    if data is not None:
                        self._rest, self._pos = b"".join((rest[pos:], data)), 0
                    else:
                        self._keep_big()
                    return progress
                self._rest, self._pos = b"", 0
                used = progress
                if data is None:
                    return used
        if data is None or not len(data) or (used and _now() > deadline):
            if data is not None and len(data):
                self._rest = bytes(data)
            return used
        progress = self._process(data, deadline)
        if progress < 0:
            return -1
        if progress < len(data):
            self._rest = bytes(data[progress:])
            self._keep_big()
        return used + progress

    @staticmethod
    def _pending_size(rest: bytes, pos: int) -> int:
        """The body size of the frame starting at ``rest[pos:]`` (0 before its header)."""
        return _unpack_header(rest, pos)[0] if len(rest) - pos >= 4 else 0

    def _keep_big(self) -> None:
        """What is kept is a partial frame: note whether frames are big (then read more at
        once), and move one too big for a read into a buffer of its size, read straight into
        from now on (a server does it when its buffered total has room for the frame)."""
        rest, pos = self._rest, self._pos
        have = len(rest) - pos
        if have < 4:
            return
        total = 4 + _unpack_header(rest, pos)[0]
        if total <= have:
            return  # complete frames wait for a later slice
        self._big = total >= _BIG_FRAME
        if total - have <= BIG_READ // 2 or total - 4 > self.max_frame_size:
            return
        gov = self.gov
        if gov is not None and total > RESERVE and \
                gov.buffered - self.counted + total > gov.max_buffered:
            return  # no room: kept as it is (and not read while the server has none)
        frame = bytearray(total)
        frame[:have] = memoryview(rest)[pos:]
        self._frame, self._have = frame, have
        self._rest, self._pos = b"", 0

    def _buffered(self) -> int:
        """Bytes we hold for frames not processed yet (what the governor counts)."""
        frame = self._frame
        return len(self._rest) + (len(frame) if frame is not None else 0)

    def _process(self, view: bytes | bytearray | memoryview, deadline: float) -> int:
        """Hand the complete frames in ``view`` to the connection, until ``deadline`` (monotonic
        time) has passed; return how many bytes were used, or -1 once the connection closed."""
        conn = self.conn
        assert conn is not None
        limit = self.max_frame_size
        if _FRAMES is not None:  # the same loop in C (cara/rpc/_frames.c)
            pos = _FRAMES.process(conn, view, limit, deadline, _now)
            if pos < 0:
                self._close_transport()
                return -1
            if len(view) - pos >= 4:  # stopped before a frame over the limit?
                size = _unpack_header(view, pos)[0]
                if size > limit:
                    self.abort(f"frame of {size} bytes exceeds the limit of {limit} bytes")
                    return -1
            return pos
        pos, end_of_data = 0, len(view)
        while end_of_data - pos >= 4:
            size = _unpack_header(view, pos)[0]
            if size > limit:
                self.abort(f"frame of {size} bytes exceeds the limit of {limit} bytes")
                return -1
            end = pos + 4 + size
            if end > end_of_data:
                break
            try:  # (a frame that is not a valid message closes the connection)
                conn.receive(view[pos + 4:end])
            except ProtocolError:
                pass  # the connection has sent Abort and closed itself
            if conn.closed:
                self._close_transport()
                return -1
            pos = end
            if deadline < math.inf and _now() > deadline:
                break
        return pos

    def _process_capnp(self, data: bytes | memoryview) -> None:
        assert self._framer is not None
        try:
            frames = self._framer.feed(data)
        except ProtocolError as exc:
            self.abort(str(exc))
            return
        self._pending.extend(frames)
        self._big = self._framer._need >= _BIG_FRAME  # (a big message is pending)
        self._process_pending(math.inf)

    def _process_pending(self, deadline: float) -> int:
        """Hand the complete capnp messages waiting to the connection (as :meth:`_process`);
        return how many, or -1 once the connection closed."""
        pending = self._pending
        conn = self.conn
        assert conn is not None
        receive, take = conn.receive, pending.popleft
        done = 0
        self._receiving = True
        try:
            while pending:
                try:  # (as in _process)
                    receive(take())
                except ProtocolError:
                    pass  # the connection has sent Abort and closed itself
                if conn.closed:
                    self._close_transport()
                    return -1
                done += 1
                if deadline < math.inf and _now() > deadline:
                    break
        finally:
            self._end_of_burst()
        return done

    # ------------------------------------------------------------------ a server's limits

    def _receive_governed(self, data: bytes | memoryview) -> None:
        assert self.gov is not None
        if self.conn is None or self.conn.closed:
            return
        if self._framer is not None:
            try:
                self._pending.extend(self._framer.feed(data))
            except ProtocolError as exc:
                self.abort(str(exc))
                return
            self._big = self._framer._need >= _BIG_FRAME
            self._drain()
        else:
            self._drain(data)

    def _hold(self, data: bytes | memoryview | None) -> int:
        """Keep ``data`` unprocessed (after what is kept already); return the bytes held."""
        if data is not None and len(data):
            rest = self._rest
            self._rest = b"".join((rest[self._pos:], data)) if rest else bytes(data)
            self._pos = 0
        if self._framer is not None:
            return len(self._framer._buf) + sum(map(len, self._pending))
        return self._buffered()

    def _drain(self, data: bytes | memoryview | None = None) -> None:
        """Process what is kept (then ``data``) within our share of the loop; throttle
        ourselves once it is used up, and account for what stays buffered."""
        gov = self.gov
        conn = self.conn
        assert gov is not None and conn is not None
        if self.throttled or conn.closed:
            if not conn.closed:
                gov.settle(self, self._hold(data))
            return
        now = _now()
        share = gov.share(now)
        usage = gov.young if now - self.born < _YOUNG else self.usage
        used = usage.now(now)
        # Known to be light: completed frames lately, none of them expensive or left over.
        light = usage in gov.seen and usage not in gov.heavy
        # With others connected, every connection yields the loop after a slice, busy or not:
        # a light, latency-bound client (one call at a time) is served between the slices of
        # a flood. Alone, it keeps the loop (a burst of pipelined calls stays one burst).
        deadline = now + _SLICE if len(gov.live) > 1 else math.inf
        if share < math.inf:
            over = usage if used > share * _TAU else None
            if over is None and gov._light and not light and \
                    gov.busy.now(now) > _BUSY_SHARE * _TAU:
                # All that is not known to be light competes for the busy connections' part
                # of the loop too: many connections (each with an account of its own, e.g.
                # old enough to have left the young one) cannot each get a frame in.
                over, share = gov.busy, _BUSY_SHARE
            if over is not None:
                # Over our share before we start (a new connection of a throttled young
                # account, or frames completed while others' turn came): not even one frame.
                size = self._hold(data)
                if size and not self.frame_started:
                    self.frame_started = now
                self._throttle(share, over)
                gov.settle(self, size)
                return
            deadline = min(now + share * _TAU - used, deadline)
        if self._framer is not None:
            progress = self._process_pending(deadline)
            if progress < 0:
                return
            more = bool(self._pending)
            size = len(self._framer._buf) + sum(map(len, self._pending))
        else:
            self._receiving = True
            try:
                progress = self._take(data, deadline)
            finally:
                self._end_of_burst()
            if progress < 0:
                return
            rest, pos, frame = self._rest, self._pos, self._frame
            size = len(rest) if frame is None else len(rest) + len(frame)
            have = len(rest) - pos
            more = have >= 4 and have >= 4 + _unpack_header(rest, pos)[0]
        end = _now()
        usage.value += end - now
        if progress:
            gov.seen[usage] = end
            self.last_active = end
        if (more and end > deadline) or end - now > _EXPENSIVE:
            gov.heavy[usage] = end
            light = False
        if not light:
            gov.busy.now(end)
            gov.busy.value += end - now
        if not size:
            self.frame_started = 0.0
        elif progress or not self.frame_started:
            self.frame_started = end
        if more and end > deadline:
            if usage.value > share * _TAU:
                self._throttle(share, usage)
            else:  # our turn is over: the others' go first, then we continue
                self.throttled = True
                self.update_reading()
                self._throttle_timer = self._loop.call_soon(self._unthrottle)
        gov.settle(self, size)

    def _throttle(self, share: float, usage: _Usage) -> None:
        """Stop reading (and processing) until our loop usage has decayed below our share."""
        assert self.gov is not None
        target = 0.8 * share * _TAU
        pause = _TAU * math.log(usage.value / target) if usage.value > target else 0.0
        self.throttled = usage.throttled = True
        self.gov.counts["throttled"] += 1
        self.update_reading()
        self._throttle_timer = self._loop.call_later(min(max(pause, 0.001), _MAX_PAUSE),
                                                     self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttle_timer = None
        self.throttled = self.usage.throttled = False
        if self.gov is not None:
            self.gov.young.throttled = self.gov.busy.throttled = False
        if self.conn is not None and not self.conn.closed:
            self._drain()
            self.update_reading()

    def check_deadlines(self, now: float) -> None:
        """Close the connection if its partial frame or its silence lasted too long."""
        gov = self.gov
        assert gov is not None
        if self.conn is None or self.conn.closed:
            return
        if self.frame_started and not self.throttled and \
                now - self.frame_started > gov.frame_timeout:
            gov.counts["timed_out"] += 1
            self.abort(f"a frame was not completed within {gov.frame_timeout:g} seconds")
        elif now - self.last_active > gov.idle_timeout and self.idle():
            gov.counts["idle_closed"] += 1
            self.abort(f"no message for {gov.idle_timeout:g} seconds")

    def idle(self) -> bool:
        """Nothing buffered, no call in flight either way, no capability held either way."""
        conn = self.conn
        if conn is None or conn.closed or self.counted or self._pending:
            return False
        return not any(conn.stats().values())

    def update_reading(self) -> None:
        """Read while nothing says not to: unsent answers piling up (servers), our share of the
        loop used up, or the server's buffered total spent."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pause = (self._write_paused and self.pause_reading_on_write) or self.throttled or \
            self.starved
        if pause and not self._read_paused:
            self._read_paused = True
            transport.pause_reading()
        elif not pause and self._read_paused:
            self._read_paused = False
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            reason = Disconnected(f"connection lost: {exc}" if exc else "connection closed by peer")
            self.conn.connection_lost(reason)
        self._out.clear()
        self._rest, self._pos, self._frame = b"", 0, None
        self._pending.clear()
        if self._throttle_timer is not None:
            self._throttle_timer.cancel()
            self._throttle_timer = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.live is not None:
            self.live.discard(self)
        if self.gov is not None:
            self.gov.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    # ---------------------------------------------------------------------- sending frames

    def _send(self, frame: bytes) -> None:
        """Send one cara frame (behind its 4-byte length)."""
        size = len(frame)
        if self._flush_scheduled and size <= self.max_frame_size:  # (the commonest case)
            out = self._out
            out.append(_pack_header(size))
            out.append(frame)
            if len(out) >= _BURST_WRITE and not self.throttled:
                self._write_burst()
            return
        self._check_size(size)
        self._queue(_pack_header(size) + frame)

    def _send_framed(self, framed: bytes) -> None:
        """Send one cara frame already behind its 4-byte length (as cara/rpc/_frames.c builds
        them: ``Connection._send_framed``)."""
        # (_queue's commonest case inline, as in _send: 5% of a gathered echo call's
        # instructions)
        if self._flush_scheduled and len(framed) - 4 <= self.max_frame_size:
            out = self._out
            out.append(framed)
            if len(out) >= _BURST_WRITE and not self.throttled:
                self._write_burst()
            return
        self._check_size(len(framed) - 4)
        self._queue(framed)

    def _send_raw(self, message: bytes) -> None:
        """Send one already framed message (the capnp encoding frames its own)."""
        self._check_size(len(message))
        self._queue(message)

    def _send_soon(self, frame: bytes) -> None:
        """Send one cara frame with the next write, never alone before it (the Finishes a
        caller owes: the calls it makes next in this loop turn join them in one write)."""
        self._check_size(len(frame))
        self._queue_soon(_pack_header(len(frame)) + frame)

    def _send_raw_soon(self, message: bytes) -> None:
        """:meth:`_send_soon` of a message that frames itself (the capnp encoding)."""
        self._check_size(len(message))
        self._queue_soon(message)

    def _queue_soon(self, data: bytes) -> None:
        if self._flush_scheduled or self._receiving:
            self._queue(data)
        else:
            self._out.append(data)
            self._schedule_flush()

    def _check_size(self, size: int) -> None:
        if size > self.max_frame_size:
            raise ValueError(f"message of {size} bytes exceeds the frame limit of "
                             f"{self.max_frame_size} bytes")

    def _write_burst(self) -> None:
        """Write what a long burst of frames has queued so far, before the flush scheduled for
        its end: the peer starts on the first calls while we still make the last ones (the
        two ends then work at once instead of in turn)."""
        out, self._out = self._out, []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

    def _queue(self, data: bytes) -> None:
        """Send ``data``, framed already: with the writes already due, or at once."""
        out = self._out
        if self._flush_scheduled:
            out.append(data)
            if len(out) >= _BURST_WRITE and not self.throttled:
                self._write_burst()
            return
        if self._receiving:
            # Sent while a read's frames are handled: _end_of_burst writes (or schedules) it.
            # Marked as scheduled all the same, so the frames after it are appended inline.
            out.append(data)
            self._flush_scheduled = self._flush_by_burst = True
            return
        if not self._wrote_alone and not out and not self.throttled and \
                len(data) < _LONE_FRAME_MAX:
            # The first frame since our last read or flush leaves now (a lone call waits no
            # turn, and needs no flush callback: a sequential caller's loop turns stay as few
            # as they can be). A frame after it goes to the flush scheduled for it, and the
            # rest of a burst joins that one (a burst of calls costs two writes, not one each).
            # A big frame waits for that flush too (_LONE_FRAME_MAX).
            conn = self.conn
            transport = self.transport
            if conn is not None and not conn.answers_in_flight and transport is not None \
                    and not transport.is_closing():
                transport.write(data)
                self._wrote_alone = True
                return
        out.append(data)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # Not get_running_loop(): a frame may be sent while the loop is not running, e.g. the
        # Finish of a call whose awaiting task asyncio.run() cancels while shutting down.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                self._loop.call_soon(self._flush)
            except RuntimeError:  # the loop is closed: nobody is left to send to
                self._flush_scheduled = False
                self._out.clear()

    def _end_of_burst(self) -> None:
        """After the frames of one read: write the answers now, unless handlers started by
        them still run; then give those a few loop turns to join the same write (a pipelined
        chain's answers leave together instead of one latency apart)."""
        self._receiving = False
        if self._flush_by_burst:  # (no flush was scheduled for what this read's frames sent)
            self._flush_by_burst = self._flush_scheduled = False
        if not self._out:  # (nothing to write: a flush already scheduled stays so)
            return
        conn = self.conn
        if conn is not None and (conn.answers_in_flight or self.throttled):
            self._schedule_flush()  # (or frames of this read wait for our next slice)
        else:
            self._write_out()

    def _flush(self) -> None:
        out = self._out
        conn = self.conn
        if out and conn is not None and not conn.closed and self._flush_waits < _COALESCE_TURNS \
                and (conn.answers_in_flight or self.throttled):
            self._flush_scheduled = self._wrote_alone = False
            self._flush_waits += 1
            self._schedule_flush()
            return
        self._write_out()

    def _write_out(self) -> None:
        """Write everything queued now (the flush, once nothing makes it wait), with what the
        connection owes that may wait for a write (``Connection.flush_owed``)."""
        conn = self.conn
        if conn is not None and conn.owes:
            self._flush_scheduled = True  # (they join this write)
            conn.flush_owed()
        self._flush_scheduled = self._wrote_alone = False
        self._flush_waits = 0
        out = self._out
        if out:
            self._out = []
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(b"".join(out))

    def _close_transport(self) -> None:
        self._flush()  # let an ABORT out before closing
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Tell the peer why (an ``Abort``) and close; pending calls fail with ``Disconnected``."""
        if self.conn is not None and not self.conn.closed:
            self.conn.abort(reason)
        self._close_transport()
        self._drop_held()

    def _drop_held(self) -> None:
        """Let go of what was received and not processed (the connection is closing)."""
        self._rest, self._pos, self._frame = b"", 0, None
        self._pending.clear()
        if self.gov is not None:
            self.gov.settle(self, 0)

    def close(self, reason: str) -> None:
        """Close from our side: every pending call fails with :class:`Disconnected`."""
        if self.conn is not None:
            self.conn.connection_lost(Disconnected(reason))
        if self.transport is not None:
            self.transport.close()
        self._drop_held()


class _Options:
    def __init__(self, *, ssl: _ssl.SSLContext | None, max_frame_size: int, max_answers: int,
                 send_tracebacks: bool, timeout: float | None, max_queued_calls: int | None,
                 max_exports: int, max_imports: int, max_objects: int) -> None:
        if max_frame_size < 16:
            raise ValueError("max_frame_size must be at least 16 bytes")
        for name, value in (("max_answers", max_answers), ("max_exports", max_exports),
                            ("max_imports", max_imports), ("max_objects", max_objects)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        self.ssl = ssl
        self.max_frame_size = max_frame_size
        self.max_answers = max_answers
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.limits = {
            "max_queued_calls": max_answers if max_queued_calls is None else max_queued_calls,
            "max_exports": max_exports, "max_imports": max_imports, "max_objects": max_objects,
        }
        self.services = Services()

    async def _wait_closed(self, closing: list[asyncio.Future[None]]) -> None:
        """Wait (at most 5 seconds) until the connections being closed are gone."""
        if closing:
            await asyncio.wait(closing, timeout=5)


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
    makes on capabilities its clients passed it.

    Limits (see the module docstring; every one has a default meant for a server open to
    untrusted peers):

    * per message: ``max_frame_size`` bytes (4 MiB), decoding into at most ``max_objects`` maps
      and arrays (100,000; cara frames) -- over either, the connection is aborted;
    * per connection: ``max_answers`` handlers running (10,000) and ``max_queued_calls`` more
      waiting (as many; beyond: :class:`~cara.rpc.Overloaded`), ``max_exports`` of our
      capabilities held by the peer (100,000; beyond: the call sending one more fails with
      ``Overloaded``), ``max_imports`` capabilities the peer hands us (100,000; beyond: abort);
    * per server: ``max_connections`` open (1,000; then the longest-idle connection holding
      nothing is closed, else the new one is refused), ``max_buffered`` bytes of partial frames
      over all connections (64 MiB, plus 16 KiB any one connection may always buffer), a frame
      completed within ``frame_timeout`` seconds of its first byte (30), and a connection that
      holds nothing closed after ``idle_timeout`` seconds without a message (60).

    ``limit_stats()`` shows them at work: bytes ``buffered`` now, connections ``refused``,
    ``evicted``, ``timed_out`` and ``idle_closed``, and how often one was ``throttled``."""

    def __init__(self, *, ssl: _ssl.SSLContext | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None, bootstrap: object = None,
                 max_queued_calls: int | None = None,
                 max_exports: int = DEFAULT_MAX_EXPORTS,
                 max_imports: int = DEFAULT_MAX_IMPORTS,
                 max_objects: int = DEFAULT_MAX_OBJECTS,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_buffered: int = DEFAULT_MAX_BUFFERED,
                 frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__(ssl=ssl, max_frame_size=max_frame_size, max_answers=max_answers,
                         send_tracebacks=send_tracebacks, timeout=timeout,
                         max_queued_calls=max_queued_calls, max_exports=max_exports,
                         max_imports=max_imports, max_objects=max_objects)
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if max_buffered < max_frame_size:
            raise ValueError("max_buffered must hold at least one frame of max_frame_size")
        if frame_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("frame_timeout and idle_timeout must be positive")
        if bootstrap is not None:
            self.services.set_bootstrap(bootstrap)
        self._binds: list[Endpoint] = []
        self._servers: list[tuple[Endpoint, asyncio.Server]] = []
        self._protocols: set[_FrameProtocol] = set()
        self._governor = _Governor(self._protocols, max_connections=max_connections,
                                   max_buffered=max_buffered, frame_timeout=frame_timeout,
                                   idle_timeout=idle_timeout)

    def bind(self, url: str) -> None:
        """Add an endpoint to listen on (``tcp://host:port``, port 0 allowed; ``unix:///path``)."""
        self._binds.append(parse_url(url))

    def _protocol(self, wire: str = "cara") -> _FrameProtocol:
        return _FrameProtocol(
            self.services, max_frame_size=self.max_frame_size, max_answers=self.max_answers,
            send_tracebacks=self.send_tracebacks, timeout=self.timeout, live=self._protocols,
            wire=wire, limits=self.limits, governor=self._governor)

    async def start(self) -> None:
        if not self._binds:
            raise ValueError("bind() at least one endpoint before start()")
        loop = asyncio.get_running_loop()
        self._governor.start(loop)
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

    def limit_stats(self) -> dict[str, int]:
        """The server-wide limits at work: bytes ``buffered`` now, connections ``refused``,
        ``evicted``, ``timed_out`` and ``idle_closed`` so far, and how often one was
        ``throttled`` (see the class docstring)."""
        return {"buffered": self._governor.buffered, **self._governor.counts}

    async def stop(self) -> None:
        """Stop listening and close every connection (their pending calls fail)."""
        servers, self._servers = self._servers, []
        self._governor.stop()
        for _, server in servers:
            server.close()
        protocols = list(self._protocols)
        for proto in protocols:
            proto.close("server stopped")
        await self._wait_closed([p.closed for p in protocols])
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
    (``services``), reachable from the server by interface id. The per-message and
    per-connection limits are :class:`Server`'s, with the same defaults."""

    def __init__(self, *, ssl: _ssl.SSLContext | None = None, server_hostname: str | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None, max_queued_calls: int | None = None,
                 max_exports: int = DEFAULT_MAX_EXPORTS,
                 max_imports: int = DEFAULT_MAX_IMPORTS,
                 max_objects: int = DEFAULT_MAX_OBJECTS) -> None:
        super().__init__(ssl=ssl, max_frame_size=max_frame_size, max_answers=max_answers,
                         send_tracebacks=send_tracebacks, timeout=timeout,
                         max_queued_calls=max_queued_calls, max_exports=max_exports,
                         max_imports=max_imports, max_objects=max_objects)
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
                pause_reading_on_write=False, wire=ep.wire, limits=self.limits)

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
            await self._wait_closed([proto.closed])

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
