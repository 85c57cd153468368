"""cara RPC through NATS: ``nats://host:port/service`` (extra ``[nats]``: nats-py).

A service runs in any number of worker processes on any number of hosts, all connected to one
NATS server or cluster; every process dials out, so nothing needs to accept connections. The
frames are cara's (:mod:`cara.rpc.wire_cara`), moved by NATS instead of a socket; the protocol is
the sans-IO core's (:class:`cara.rpc.Connection`): what changes is how two processes find each
other, and how they notice that one of them has gone.

**Nodes and sessions.** A *node* is one NATS connection with an inbox of its own,
``_cara.<id>``, on which it subscribes ``_cara.<id>.>``: each bound ``nats://`` endpoint of a
:class:`NatsServer` is a node, and so is each :class:`NatsClient`. A *session* is one cara
:class:`~cara.rpc.Connection` between two nodes, with an address on each side:

* the side that opened it (a client) receives its frames on ``<inbox>.<n>``;
* the side that accepted it (a worker) receives them on ``<inbox>.<opener id>.<n>``.

Every message is published with the sender's address of the session as its reply subject: the
receiver knows where to answer, and when the receiver is gone NATS bounces a "no responders"
status to that address, so the sender learns at once which session lost its peer.

**Bootstrap through a queue group.** Every worker of a service subscribes ``<service>`` in the
queue group ``<service>``. A client's first message (its ``Bootstrap`` and the calls pipelined on
it: everything it sent in that event-loop turn, as much as fits in one NATS message) goes to the
group; the one worker that takes it answers from its own address, and from then on the client
talks to that worker directly. So every capability of the session lives in the process that
answers it: calls on it (and calls pipelined on them) go there and nowhere else. A client holds
one session at a time; when it is gone (its worker stopped, died or forgot it),
``client.bootstrap()`` opens a new one through the group, which lands on a live worker.

**Capabilities of third processes.** When A passes C a capability that it imported from B,
C calls B directly, not through A. A sends C a third-party descriptor: B's address of the
session A-B and B's export id there, plus a *vine* (A's own export of the capability to C,
which keeps A's reference to B alive until C holds one of its own). C asks B, on a session
C-B (one it has, or a new one that the ``ADOPT`` itself opens: ``<B inbox>.<C id>.<n>``), for a
reference of its own (``ADOPT``); B exports the capability on that session (``ADOPTED``: the
descriptor; B now holds it for C under C's lease) and C drops the vine (A's export goes back
to zero with the usual ``Release``). C's calls wait for the answer, in order, and then go to B;
if B no longer has it, or is gone, they go through the vine instead (and fail as calls through
A would). Calls that C had already pipelined through A keep that path (E-order). Any process
on the NATS account can name any session's exports by subject: the NATS account is the trust
boundary, as for every other message.

**Leases instead of connections.** NATS says nothing when a process vanishes. Every node sends
each peer it has sessions with one heartbeat per quarter lease (all sessions in one message:
their addresses, so the peer answers ``GONE`` for any it no longer knows); a peer that has sent
nothing for three quarters in a row (at most one ``lease``) is gone: its sessions are dropped,
which releases every capability it held here and fails every question waiting for it with
:class:`~cara.rpc.Disconnected`. Where the peer's inbox has no subscriber any more (a killed
process: the NATS server notices the closed socket), the next message to it -- a call, or the
next heartbeat -- comes back as "no responders" and the sessions are dropped at once. A handler
that blocks the event loop for longer than the lease makes its process look gone: keep CPU-bound
handlers short, or run them in an executor.

**Delivery.** NATS core delivers at most once, in order per publisher. A node whose NATS
connection drops (the server restarts, or closes it as a slow consumer) may have lost messages:
it aborts all its sessions (calls in flight fail with ``Disconnected``; nothing is retried) and
opens new ones after reconnecting. Calls are at-most-once: a call whose worker dies before
answering fails; retrying it (on a new ``bootstrap()``) is the caller's decision. Except for
methods annotated ``$Cara.idempotent`` (or marked by :func:`idempotent`): a call of one on a
client's bootstrap capability that fails with ``Disconnected`` is made again, up to
:data:`RETRIES` times, on the client's current session (a new one, through the queue group,
when the old one is gone). Messages are handled as nats-py reads them (:class:`_AtOnce`).

**Large messages.** Frames to one peer in one event-loop turn travel in one NATS message; a batch
larger than the server's ``max_payload`` (1 MB by default) is split into pieces that the receiver
reassembles (NATS keeps their order). A single frame larger than ``max_frame_size`` (16 MiB by
default) is refused with a :class:`ValueError` naming the limit, and a peer sending one is
aborted; nothing is dropped silently.

Payload of every message: one kind byte (``DATA``, ``MORE``, ``GONE``), then frames, each with a
4-byte big-endian length; or ``ADOPT`` (msgpack ``[request, B's address of the session with A,
export id, first message of the session]``) or ``ADOPTED`` (``[request, cap descriptor]`` or
``[request, None, why]``). Heartbeats go to ``<inbox>._hb`` (a msgpack list of the sender's
session addresses) with reply subject ``<sender inbox>._hb.<receiver id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import string
import struct
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import msgpack

from cara.rpc import messages as M
from cara.rpc.caps import Cap, LocalCall, QueuedCap, running_loop, to_cap
from cara.rpc.connection import Connection, ImportCap
from cara.rpc.description import describe
from cara.rpc.dispatch import Services
from cara.rpc.errors import Disconnected, ProtocolError
from cara.rpc.proxies import CallPromise, Method, core_cap_of
from cara.rpc.wire_cara import FINISH, CaraWire
from cara.transports.url import Endpoint, parse_url

__all__ = ["DEFAULT_LEASE", "DEFAULT_MAX_FRAME_SIZE", "IDEMPOTENT_ID", "RETRIES", "NatsClient",
           "NatsServer", "idempotent", "is_idempotent", "nats_problem"]

logger = logging.getLogger(__name__)

#: Seconds without a word after which a peer is taken for gone (see the module docstring).
DEFAULT_LEASE = 10.0
#: The largest single frame sent or accepted (bytes); batches above ``max_payload`` are split.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_ANSWERS = 10_000
#: Sessions one node keeps at most (openings beyond it are refused with ``GONE``).
DEFAULT_MAX_SESSIONS = 100_000
#: How long ``Finish`` frames with nothing else to go wait for a frame to ride with (seconds).
FINISH_DELAY = 0.02
#: ``annotation idempotent @0x911365c837a1b943 (method) :Void;`` of ``/capnp/cara.capnp``.
IDEMPOTENT_ID = 0x911365C837A1B943
#: How many times a call of an idempotent method is made again after losing its worker.
RETRIES = 3
#: Quarters of a lease without a word from a peer before it is dropped.
_SILENT_SWEEPS = 3

DATA, MORE, GONE, ADOPT, ADOPTED = 0, 1, 2, 3, 4
_DATA, _MORE, _GONE, _ADOPT, _ADOPTED = b"\x00", b"\x01", b"\x02", b"\x03", b"\x04"
#: A cara ``FINISH`` frame's second byte (a fixarray whose first item is the kind).
_FINISH = FINISH
_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from

_ID_CHARS = string.ascii_letters + string.digits
#: A node id: 22 random letters and digits (131 bits), a single subject token.
_ID = r"[A-Za-z0-9]{22}"
_OPENER_ADDRESS = re.compile(rf"_cara\.({_ID})\.(\d{{1,18}})\Z")
_ACCEPTOR_ADDRESS = re.compile(rf"_cara\.({_ID})\.({_ID})\.(\d{{1,18}})\Z")
_HEARTBEAT_REPLY = re.compile(rf"_cara\.({_ID})\._hb\.({_ID})\Z")


def nats_problem() -> str | None:
    """Why ``nats://`` cannot work here (nats-py missing), or ``None``."""
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        return f"nats:// needs nats-py (pip install 'cara[nats]'): {exc}"
    return None


def _new_id() -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(22))


def _peer_inbox(address: str) -> str:
    """``_cara.<id>`` of a session address or heartbeat reply subject."""
    return address[:28]  # "_cara." + 22 characters


# -------------------------------------------------------------------------- publishing

def _start(coro: Coroutine[Any, Any, None], failed: Callable[[str], None]) -> None:
    """Run a nats-py ``publish`` coroutine now, without a task when it does not suspend (it
    only appends to the connection's buffer, nearly always); the rest of one that does suspend
    (a full buffer) runs as a task. Keeps the order of publishes and saves a task per message."""
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    task = asyncio.ensure_future(_resume(coro, yielded))
    task.add_done_callback(partial(_check, failed))


async def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await yielded  # a future the coroutine waits for (asyncio's protocol)
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


class _AtOnce:
    """Stands in for a nats-py subscription's queue of pending messages: each message goes to
    ``handler`` as nats-py reads it, rather than through the queue to the subscription's task
    (an event-loop turn and a task switch less per message received). Nothing waits: there is
    never a message pending."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: Any, handler: Callable[[Any], None]) -> None:
        self.sub = sub
        self.handler = handler

    def put_nowait(self, msg: Any) -> None:
        self.sub._pending_size -= len(msg.data)
        try:
            self.handler(msg)
        except Exception:  # never into nats-py's read loop
            logger.exception("handling a NATS message on %s failed", msg.subject)

    async def get(self) -> Any:
        await asyncio.Event().wait()  # the subscription's task waits here until cancelled

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


def _deliver_at_once(sub: Any, handler: Callable[[Any], None]) -> None:
    """Have ``sub`` hand its messages to ``handler`` at once (see :class:`_AtOnce`), where this
    nats-py is the one we know (a pending queue, a pending size); otherwise its callback and
    task stay (slower by a task switch per message, the same otherwise)."""
    queue = getattr(sub, "_pending_queue", None)
    if isinstance(queue, asyncio.Queue) and queue.empty() and \
            isinstance(getattr(sub, "_pending_size", None), int):
        sub._pending_queue = _AtOnce(sub, handler)


def _check(failed: Callable[[str], None], task: asyncio.Future[None]) -> None:
    exc = task.exception() if not task.cancelled() else None
    if exc is not None:
        failed(f"a NATS publish failed: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------- three-party handoff

#: The cap descriptor kind of a capability that lives in a third process (see ``_Handoff``).
THIRD_PARTY = "thirdPartyHosted"


class _ThirdParty(M.CapDescriptor):
    """``[5, host, id, vine]``: export ``id`` of the session whose address at its host is
    ``host`` (``_cara.<host id>...``), and the sender's own export ``vine`` of the same
    capability, which keeps it alive until the receiver holds it directly."""

    __slots__ = ("host", "vine")

    def __init__(self, host: str, export_id: int, vine: int) -> None:
        super().__init__(THIRD_PARTY, export_id)
        self.host = host
        self.vine = vine

    def __repr__(self) -> str:
        return f"CapDescriptor(thirdPartyHosted, {self.host}, {self.id}, vine {self.vine})"


def _session_address(value: Any) -> bool:
    return type(value) is str and bool(_OPENER_ADDRESS.match(value) or
                                       _ACCEPTOR_ADDRESS.match(value))


class _NatsWire(CaraWire):
    """cara frames with one more cap descriptor, ``[5, host, id, vine]`` (:class:`_ThirdParty`)."""

    @staticmethod
    def _descriptor(d: M.CapDescriptor) -> list[Any]:
        if isinstance(d, _ThirdParty):
            return [5, d.host, d.id, d.vine]
        return CaraWire._descriptor(d)

    @staticmethod
    def _read_descriptor(d: Any) -> M.CapDescriptor:
        if type(d) is list and d and d[0] == 5:
            if len(d) != 4 or not _session_address(d[1]) or \
                    not all(type(n) is int and 0 <= n < 1 << 32 for n in d[2:]):
                raise ProtocolError(f"bad third-party capability descriptor {d!r}")
            return _ThirdParty(d[1], d[2], d[3])
        return CaraWire._read_descriptor(d)


class _Adoption(QueuedCap):
    """A capability handed to us by one process that lives in another: calls wait until the
    host answers our ``ADOPT`` with a reference of our own (then they go to the host
    directly), or, should that fail, go through the sender's ``vine``."""

    __slots__ = ("dropped", "vine")

    def __init__(self, vine: ImportCap) -> None:
        super().__init__()
        self.vine: ImportCap | None = vine
        self.dropped = False

    def settle(self, cap: Cap) -> None:
        self.vine = None  # the sender's reference goes (a Release) once nobody needs it
        if self.dropped:
            cap.close()
        self.resolve(cap)

    def close(self) -> None:
        self.dropped = True
        if self.target is not None:
            self.target.close()

    @property
    def closed(self) -> bool:
        return self.dropped or (self.target is not None and self.target.closed)


class _SessionConnection(Connection):
    """The core's connection, with capabilities of third processes handed over directly."""

    session: _Session

    def _describe(self, obj: Any) -> M.CapDescriptor:
        cap = to_cap(obj)
        found = cap.resolved() if cap is not None else None
        if isinstance(found, ImportCap) and found.conn is not self and found.entry is not None \
                and not found.is_promise and isinstance(found.conn, _SessionConnection):
            home = found.conn.session
            if home.peer is not None and not found.conn.closed and \
                    home.node.reaches(self.session.node):
                # It lives in the process at the other end of ``home``: tell the receiver
                # where (the host's address of that session and its export id), and export it
                # ourselves too (the vine) so that it stays alive until the receiver holds
                # it directly.
                vine, _ = self._export(found)
                if self._sending_exports is not None:
                    self._sending_exports.append(vine)
                return _ThirdParty(home.peer, found.id, vine)
        return super()._describe(obj)

    def bootstrap(self, iface: Any = None) -> Any:
        proxy = super().bootstrap(iface)
        reopen = self.session.node.reopen
        if reopen is None or self.closed:
            return proxy
        first = core_cap_of(proxy)
        assert isinstance(first, Cap)
        cap = _ServiceCap(first, iface, reopen)
        info = describe(iface) if iface is not None else None
        return cap.cast(info) if info is not None else cap

    def _receive_cap(self, d: M.CapDescriptor) -> Cap | None:
        if isinstance(d, _ThirdParty):
            return self.session.node.adopt(self, d)
        return super()._receive_cap(d)

    def _maybe_embargo(self, called: bool, target: Cap, path: M.Target) -> Cap:
        if called and isinstance(target, _Adoption) and target.vine is not None:
            # Calls were pipelined through the sender already: later ones follow them there
            # (E-order), through the vine, rather than overtake them on the direct path.
            return target.vine
        return super()._maybe_embargo(called, target, path)


# ------------------------------------------------------------------- idempotent methods

_marked: set[tuple[int, int]] = set()


def idempotent(iface: Any, *names: str) -> None:
    """Mark methods of ``iface`` idempotent from Python, as ``$Cara.idempotent`` does in the
    schema (for interfaces described without the annotation). See :func:`is_idempotent`."""
    info = describe(iface)
    if info is None:
        raise TypeError(f"{iface!r} does not describe an interface")
    by_name = {m.name: key for key, m in info.methods.items()}
    for name in names:
        if name not in by_name:
            raise ValueError(f"{info.name} has no method {name!r}")
        _marked.add(by_name[name])


def is_idempotent(method: Method) -> bool:
    """Whether a call of ``method`` may run again after its worker was lost: the method is
    annotated ``$Cara.idempotent`` in its schema, or was marked by :func:`idempotent`."""
    if (method.interface_id, method.index) in _marked:
        return True
    annotations = getattr(method.spec, "annotations", None) or ()
    return any(getattr(a, "id", None) == IDEMPOTENT_ID for a in annotations)


class _ServiceCap(Cap):
    """A client's bootstrap capability of a service. Calls go to the worker of the session it
    was made on; a call of an idempotent method that loses that worker (``Disconnected``) is
    made again, on the client's current session (a new one through the queue group: another
    worker), up to :data:`RETRIES` times."""

    __slots__ = ("first", "iface", "reopen")

    def __init__(self, first: Cap, iface: Any, reopen: Callable[[Any], Cap]) -> None:
        self.first = first
        self.iface = iface
        self.reopen = reopen

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        if not is_idempotent(method):
            return self.first.call(method, params, timeout, unbox=unbox)
        return _Retried(self, method, params, timeout, unbox)

    def resolved(self) -> Cap:
        return self.first.resolved()

    @property
    def is_promise(self) -> bool:
        return self.first.is_promise

    def close(self) -> None:
        self.first.close()

    @property
    def closed(self) -> bool:
        return self.first.closed

    def __repr__(self) -> str:
        return f"service bootstrap {self.first!r}"


class _Retried(LocalCall):
    """The promise of an idempotent call on a service (see :class:`_ServiceCap`)."""

    def __init__(self, service: _ServiceCap, method: Method, params: Any,
                 timeout: float | None, unbox: bool) -> None:
        super().__init__(running_loop(), method, unbox)
        self._service = service
        self._params = params
        self._timeout = timeout
        self._left = RETRIES
        self._inner: CallPromise | None = None
        self._attempt(service.first)

    def _attempt(self, cap: Cap) -> None:
        inner = self._inner = cap.call(self._method, self._params, self._timeout, unbox=False)
        inner.add_done_callback(self._inner_done)

    def _inner_done(self, inner: asyncio.Future[Any]) -> None:
        if self.done() or inner is not self._inner:
            return
        if inner.cancelled():
            self._fail(asyncio.CancelledError())
            return
        exc = inner.exception()
        if exc is None:
            self._params = None
            self._settle(inner.result())
            return
        if isinstance(exc, Disconnected) and self._left > 0:
            self._left -= 1
            try:
                cap = self._service.reopen(self._service.iface)
            except Disconnected as again:  # the client is stopped
                self._fail(again)
                return
            logger.debug("%s() lost its worker (%s): made again", self._method.name, exc)
            self._attempt(cap)
            return
        self._fail(exc)

    def cancel(self, msg: Any = None) -> bool:
        if self._inner is not None:
            self._inner.cancel(msg)
        return super().cancel(msg)


# ----------------------------------------------------------------------------- sessions

class _Peer:
    """Another node we have sessions with: its inbox, the sessions, and whether it was heard."""

    __slots__ = ("heard", "inbox", "sessions", "silent")

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        self.sessions: dict[str, _Session] = {}  # by our address
        self.heard = True
        self.silent = 0


class _Session:
    """One cara connection between this node and a peer node (see the module docstring)."""

    __slots__ = ("adoptions", "conn", "dirty", "eager", "local", "node", "opened", "out",
                 "out_size", "peer", "peer_state", "rx", "service", "sweeps", "timer")

    def __init__(self, node: _Node, local: str, peer: str | None, service: str = "") -> None:
        self.node = node
        self.local = local  # where the peer's frames arrive
        self.peer = peer  # where ours go (None: an opening not yet answered)
        self.peer_state: _Peer | None = None
        self.service = service  # an opening's queue group
        self.opened = False
        self.sweeps = 0
        self.out: list[bytes] = []  # header, frame, header, frame, ...
        self.out_size = 0
        self.timer: asyncio.TimerHandle | None = None
        self.dirty = False
        self.eager = True  # no frame but ``Finish`` sent or queued yet in this turn
        self.rx: bytearray | None = None
        self.adoptions: dict[int, _Adoption] = {}  # ADOPTs we sent, by request id
        opts = node.opts
        self.conn = _SessionConnection(
            self._send, services=node.services, loop=node.loop, wire=_NatsWire(),
            send_tracebacks=opts.send_tracebacks, timeout=opts.timeout, name=f"nats:{local}",
            max_answers=opts.max_answers)
        self.conn.session = self

    def __repr__(self) -> str:
        return f"<session {self.local} <-> {self.peer or self.service + ' (opening)'}>"

    def _send(self, frame: bytes) -> None:
        size = len(frame)
        limit = self.node.opts.max_frame_size
        if size > limit:
            raise ValueError(f"message of {size} bytes exceeds the frame limit of {limit} bytes "
                             "(max_frame_size)")
        if not self.dirty:
            self.dirty = True
            self.node.mark_dirty(self)
        if self.eager and frame[1] != _FINISH and self.peer is not None and \
                self.out_size + size < self.node.max_payload - 5:
            # The first frame of an event-loop turn leaves at once, with the ``Finish``es
            # waiting (a ``Finish`` alone waits, so that it travels with the caller's next
            # call); the frames that follow in the same turn are batched.
            self.eager = False
            out = self.out
            if out:
                self.out, self.out_size = [], 0
                payload = b"".join([_DATA, *out, _pack_header(size), frame])
            else:
                payload = b"".join((_DATA, _pack_header(size), frame))
            self.node.publish(self.peer, payload, self.local)
            return
        self.out.append(_pack_header(size))
        self.out.append(frame)
        self.out_size += size + 4

    # ------------------------------------------------------------------------ outgoing

    def flush(self, hold_finishes: bool = True) -> None:
        self.dirty = False
        self.eager = True
        out = self.out
        if not out:
            return
        node = self.node
        if self.peer is None:
            if not self.opened:
                self._open()
            return  # the rest waits for the worker's answer
        if hold_finishes and all(f[1] == _FINISH for f in out[1::2]):
            # Only ``Finish``es: they ride with the next frame that leaves, or go after
            # FINISH_DELAY, rather than cost a NATS message each.
            if self.timer is None:
                self.timer = node.loop.call_later(FINISH_DELAY, self._flush_held)
            return
        size = self.out_size
        self.out, self.out_size = [], 0
        limit = node.opts.max_frame_size + 4
        if size <= limit:
            node.send_batch(self.peer, self.local, out)
            return
        group: list[bytes] = []
        size = 0
        for i in range(0, len(out), 2):
            n = len(out[i + 1]) + 4
            if group and size + n > limit:
                node.send_batch(self.peer, self.local, group)
                group, size = [], 0
            group += out[i:i + 2]
            size += n
        node.send_batch(self.peer, self.local, group)

    def _flush_held(self) -> None:
        self.timer = None
        if self.out and not self.conn.closed:
            self.flush(hold_finishes=False)

    def _open(self) -> None:
        """Send the opening: as many whole frames as fit in one NATS message, to the group."""
        out = self.out
        room = self.node.max_payload - 1
        take = 0
        while take < len(out) and len(out[take]) + len(out[take + 1]) <= room:
            room -= len(out[take]) + len(out[take + 1])
            take += 2
        self.opened = True
        self.out = out[take:]
        self.out_size = sum(map(len, self.out))
        self.node.publish(self.service, b"".join([_DATA, *out[:take]]), self.local)

    # ------------------------------------------------------------------------ incoming

    def received(self, data: bytes, reply: str) -> None:
        """A message from the peer on our address."""
        node = self.node
        if self.peer is None:  # the answer to our opening: the worker's address
            m = _ACCEPTOR_ADDRESS.match(reply or "")
            if m is None or m[2] != node.id:
                return  # not from a worker of ours: ignore it
            self.peer = reply
            node.attach(self)
            if self.out:
                self.flush(hold_finishes=False)
        elif reply != self.peer:
            return  # someone else: only the peer's frames belong here
        assert self.peer_state is not None
        self.peer_state.heard = True
        kind = data[0] if data else DATA
        if kind == MORE or self.rx is not None:
            rx = self.rx if self.rx is not None else bytearray()
            rx += memoryview(data)[1:]
            limit = node.opts.max_frame_size + 5
            if len(rx) > limit:
                self.rx = None
                self.abort(f"a message of more than {limit} bytes (max_frame_size)")
                return
            if kind == MORE:
                self.rx = rx
                return
            self.rx = None
            self._frames(memoryview(rx), 0)
        elif kind == DATA:
            self._frames(memoryview(data), 1)
        elif kind == GONE:
            node.drop(self, Disconnected(f"{_peer_inbox(self.peer)} does not know this "
                                         "connection (it expired there, or was refused)"))
        elif kind == ADOPT:
            node.on_adopt(self, data)
        elif kind == ADOPTED:
            self._on_adopted(data)
        else:
            self.abort(f"unknown message kind {kind}")

    def _frames(self, view: memoryview, pos: int) -> None:
        conn = self.conn
        end = len(view)
        try:
            while pos < end:
                if end - pos < 4:
                    raise ProtocolError(f"a truncated frame header at byte {pos}")
                size = _unpack_header(view, pos)[0]
                pos += 4
                if size > end - pos:
                    raise ProtocolError(f"a frame of {size} bytes at byte {pos} runs past the "
                                        f"end of the message ({end} bytes)")
                conn.receive(view[pos:pos + size])
                pos += size
                if conn.closed:
                    break
        except ProtocolError as exc:
            if not conn.closed:
                conn.abort(str(exc))
        if conn.closed:
            self.node.forget(self)
        elif self.dirty and self.peer is not None:
            self.flush()  # answers leave now rather than at the end of the event-loop turn

    def _on_adopted(self, data: bytes) -> None:
        """The host's answer to our ``ADOPT``: ``[request, descriptor]`` or ``[request, None,
        why]``."""
        try:
            reply = msgpack.unpackb(data[1:])
            request, desc = reply[0], reply[1]
        except Exception:
            self.abort("a malformed ADOPTED message")
            return
        adoption = self.adoptions.pop(request, None) if type(request) is int else None
        if adoption is None:
            return
        vine = adoption.vine
        assert vine is not None
        if desc is None:  # it is gone there: what the sender holds says why
            logger.debug("%r: adoption refused (%s): through the sender", self, reply[2:])
            adoption.settle(vine)
            return
        conn = self.conn
        try:
            cap = conn._receive_cap(conn.wire._read_descriptor(desc))
        except Exception as exc:
            adoption.settle(vine)
            self.abort(f"a bad ADOPTED message: {type(exc).__name__}: {exc}")
            return
        adoption.settle(cap if cap is not None else vine)

    def abort(self, reason: str) -> None:
        """Tell the peer (an ``Abort``) and drop the session."""
        if not self.conn.closed:
            self.conn.abort(reason)
        self.flush(hold_finishes=False)
        self.node.forget(self)


# -------------------------------------------------------------------------------- nodes

class _Options:
    def __init__(self, *, services: Services | None, max_frame_size: int, max_answers: int,
                 send_tracebacks: bool, timeout: float | None, lease: float,
                 max_sessions: int, nats_options: dict[str, Any] | None) -> None:
        if max_frame_size < 16:
            raise ValueError("max_frame_size must be at least 16 bytes")
        if not lease > 0:
            raise ValueError("the lease must be a positive number of seconds")
        self.services = services if services is not None else Services()
        self.max_frame_size = max_frame_size
        self.max_answers = max_answers
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.lease = float(lease)
        self.max_sessions = max_sessions
        self.nats_options = dict(nats_options or {})


class _Node:
    """One NATS connection with its own inbox, and its sessions with other nodes."""

    def __init__(self, endpoint: Endpoint, opts: _Options, *, queue_group: bool) -> None:
        self.endpoint = endpoint
        self.opts = opts
        self.services = opts.services
        self.queue_group = queue_group
        self.id = _new_id()
        self.inbox = f"_cara.{self.id}"
        self.loop = asyncio.get_running_loop()
        self.nc: Any = None
        self.max_payload = 1024 * 1024
        self.sessions: dict[str, _Session] = {}
        self.peers: dict[str, _Peer] = {}
        self.opening: dict[str, _Session] = {}
        self._next_session = 0
        self._next_adoption = 0
        #: A client's: the bootstrap capability of its current session (idempotent retries).
        self.reopen: Callable[[Any], Cap] | None = None
        #: Messages received on sessions' addresses (heartbeats and openings not counted).
        self.session_messages = 0
        self._dirty: list[_Session] = []
        self._flush_scheduled = False
        self._sweeper: asyncio.Task[None] | None = None
        self._service_sub: Any = None
        self.stopped = False

    def __repr__(self) -> str:
        return f"<cara NATS node {self.inbox} on {self.endpoint.url()}>"

    async def start(self) -> None:
        problem = nats_problem()
        if problem:
            raise RuntimeError(problem)
        import nats

        ep = self.endpoint
        host = f"[{ep.host}]" if ":" in ep.host else ep.host
        options: dict[str, Any] = {"name": f"cara {self.inbox}", "connect_timeout": 5}
        options.update(self.opts.nats_options)
        options.update(error_cb=self._on_error, disconnected_cb=self._on_disconnected)
        try:
            # nats-py retries a first connection for minutes (as it reconnects): look first.
            _, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port),
                                               options["connect_timeout"])
            writer.close()
            self.nc = await nats.connect(f"nats://{host}:{ep.port}", **options)
        except Exception as exc:
            raise ConnectionError(f"cannot reach the NATS server of {ep.url()}: "
                                  f"{type(exc).__name__}: {exc}") from None
        self.max_payload = max(int(self.nc.max_payload), 64)
        sub = await self.nc.subscribe(self.inbox + ".>", cb=self._on_message,
                                      pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30)
        _deliver_at_once(sub, self._handle_message)
        if self.queue_group:
            self._service_sub = await self.nc.subscribe(
                ep.path, queue=ep.path, cb=self._on_open,
                pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30)
            _deliver_at_once(self._service_sub, self._handle_open)
        await self.nc.flush()  # the subscriptions are in place before anyone is told to call
        self._sweeper = self.loop.create_task(self._sweep_loop())

    async def stop(self, reason: str) -> None:
        """Leave the queue group, abort every session (the peers learn it at once), close."""
        if self.stopped:
            return
        self.stopped = True
        nc = self.nc
        with contextlib.suppress(Exception):
            if self._service_sub is not None:
                await self._service_sub.unsubscribe()
        for session in list(self.sessions.values()):
            session.abort(reason)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(), 2)
            with contextlib.suppress(Exception):
                await nc.close()

    # -------------------------------------------------------------------------- sessions

    def open(self, service: str) -> _Session:
        """A new session with whichever worker of ``service`` takes it."""
        if self.stopped or self.nc is None:
            raise Disconnected("the client is not started")
        n = self._next_session
        self._next_session = n + 1
        session = _Session(self, f"{self.inbox}.{n}", None, service)
        self.sessions[session.local] = session
        self.opening[session.local] = session
        return session

    def attach(self, session: _Session) -> None:
        """``session`` knows its peer's address now: keep it under that peer's lease."""
        assert session.peer is not None
        self.opening.pop(session.local, None)
        inbox = _peer_inbox(session.peer)
        peer = self.peers.get(inbox)
        if peer is None:
            peer = self.peers[inbox] = _Peer(inbox)
        peer.sessions[session.local] = session
        session.peer_state = peer

    def forget(self, session: _Session) -> None:
        if self.sessions.get(session.local) is session:
            del self.sessions[session.local]
        adoptions, session.adoptions = session.adoptions, {}
        for adoption in adoptions.values():  # the host is gone: through the senders
            if adoption.vine is not None:
                adoption.settle(adoption.vine)
        self.opening.pop(session.local, None)
        peer = session.peer_state
        if peer is not None:
            peer.sessions.pop(session.local, None)
            if not peer.sessions and self.peers.get(peer.inbox) is peer:
                del self.peers[peer.inbox]

    # ------------------------------------------------------------- three-party handoff

    def reaches(self, other: _Node) -> bool:
        """Whether ``other``'s peers can reach ours by subject: the same NATS server or
        cluster (a process may hold nodes on unrelated NATS systems)."""
        if other is self:
            return True
        mine, theirs = self.endpoint, other.endpoint
        if (mine.host, mine.port) == (theirs.host, theirs.port):
            return True
        cluster = self.cluster()
        return cluster is not None and cluster == other.cluster()

    def cluster(self) -> str | None:
        info = getattr(self.nc, "_server_info", None)
        name = info.get("cluster") if isinstance(info, dict) else None
        return name if isinstance(name, str) and name else None

    def adopt(self, conn: _SessionConnection, d: _ThirdParty) -> Cap:
        """The capability a peer handed us that lives in a third process (``d.host``): ask
        the host for a reference of our own (``ADOPT``); calls wait for its answer."""
        vine = conn._import(d.vine, False)
        host = _peer_inbox(d.host)
        if host == self.inbox:  # it lives here: it comes home
            home = self.sessions.get(d.host)
            export = home.conn._exports.get(d.id) if home is not None else None
            return export.cap if export is not None else vine
        try:
            session = self.session_with(host)
        except Disconnected:  # we are stopping: the sender's reference will do
            return vine
        adoption = _Adoption(vine)
        request = self._next_adoption
        self._next_adoption = request + 1
        session.adoptions[request] = adoption
        first = not session.opened
        session.opened = True
        assert session.peer is not None
        self.publish(session.peer, _ADOPT + msgpack.packb([request, d.host, d.id, first]),
                     session.local)
        return adoption

    def session_with(self, inbox: str) -> _Session:
        """A live session with the node ``inbox``: one we have, or a new one we open directly
        (its first message is an ``ADOPT``, which the peer accepts as an opening)."""
        peer = self.peers.get(inbox)
        if peer is not None:
            for session in peer.sessions.values():
                if not session.conn.closed:
                    return session
        if self.stopped or self.nc is None:
            raise Disconnected(f"{self!r} is stopped")
        n = self._next_session
        self._next_session = n + 1
        session = _Session(self, f"{self.inbox}.{n}", f"{inbox}.{self.id}.{n}")
        self.sessions[session.local] = session
        self.attach(session)
        return session

    def on_adopt(self, session: _Session, data: bytes) -> None:
        """A peer asks for its own reference to a capability that another peer holds here:
        ``[request, address of that peer's session here, export id, first]``."""
        try:
            request, home_address, eid, _first = msgpack.unpackb(data[1:])
            if type(request) is not int or type(eid) is not int:
                raise ValueError("not integers")
        except Exception:
            session.abort("a malformed ADOPT message")
            return
        home = self.sessions.get(home_address) if type(home_address) is str else None
        export = home.conn._exports.get(eid) if home is not None else None
        reply: list[Any]
        if export is None:
            reply = [request, None, f"no capability {eid} is exported to {home_address} (it "
                     "was released, or its holder is gone)"]
        else:
            conn = session.conn
            try:
                reply = [request, conn.wire._descriptor(conn._describe(export.cap))]
            except Exception as exc:
                reply = [request, None, f"{type(exc).__name__}: {exc}"]
        session.flush(hold_finishes=False)  # frames that were waiting go first
        assert session.peer is not None
        self.publish(session.peer, _ADOPTED + msgpack.packb(reply), session.local)

    def _accept_direct(self, subject: str, msg: Any) -> bool:
        """A peer opens a session with this node directly, with an ``ADOPT``."""
        reply = msg.reply or ""
        m = _OPENER_ADDRESS.match(reply)
        if m is None or subject != f"{self.inbox}.{m[1]}.{m[2]}" or self.stopped:
            return False
        try:
            first = msgpack.unpackb(msg.data[1:])[3] is True
        except Exception:
            return False
        if not first or len(self.sessions) >= self.opts.max_sessions:
            return False
        session = _Session(self, subject, reply)
        self.sessions[subject] = session
        self.attach(session)
        session.received(msg.data, reply)
        return True

    def drop(self, session: _Session, exc: BaseException) -> None:
        """The peer is gone (or forgot the session): fail and release everything at once."""
        self.forget(session)
        session.out, session.out_size = [], 0
        session.conn.connection_lost(exc)

    def drop_peer(self, peer: _Peer, why: str) -> None:
        for session in list(peer.sessions.values()):
            self.drop(session, Disconnected(f"{peer.inbox} is gone: {why}"))
        self.peers.pop(peer.inbox, None)

    def stats(self) -> dict[str, int]:
        total = {"connections": 0, "exports": 0, "imports": 0, "questions": 0, "answers": 0}
        for session in self.sessions.values():
            if session.conn.closed:
                continue
            total["connections"] += 1
            for key, value in session.conn.stats().items():
                total[key] += value
        return total

    # -------------------------------------------------------------------------- sending

    def mark_dirty(self, session: _Session) -> None:
        self._dirty.append(session)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            session.flush()

    def send_batch(self, subject: str, reply: str, parts: list[bytes]) -> None:
        """Publish frames (header, frame, ...) in one message, or in pieces of ``max_payload``."""
        payload = b"".join([_DATA, *parts])
        room = self.max_payload
        if len(payload) <= room:
            self.publish(subject, payload, reply)
            return
        view = memoryview(payload)
        step = room - 1
        last = len(payload) - 1
        for start in range(1, len(payload), step):
            end = min(start + step, last + 1)
            kind = _DATA if end > last else _MORE
            self.publish(subject, kind + view[start:end], reply)

    def publish(self, subject: str, payload: bytes, reply: str) -> None:
        nc = self.nc
        if nc is None or (self.stopped and not nc.is_connected):
            return
        try:
            _start(nc.publish(subject, payload, reply=reply), self._publish_failed)
        except Exception as exc:  # closed, or reconnecting with a full buffer: messages lost
            self._publish_failed(f"a NATS publish failed: {type(exc).__name__}: {exc}")

    def _publish_failed(self, why: str) -> None:
        logger.warning("%r: %s", self, why)
        self.loop.call_soon(self._lost, why)

    def _lost(self, why: str) -> None:
        """Messages may have been lost: every session is unreliable now; abort them all."""
        for session in list(self.sessions.values()):
            session.abort(why)

    # ------------------------------------------------------------------------- receiving

    async def _on_message(self, msg: Any) -> None:
        self._handle_message(msg)

    def _handle_message(self, msg: Any) -> None:
        subject: str = msg.subject
        session = self.sessions.get(subject)
        if session is not None:
            self.session_messages += 1
            if msg.headers and msg.headers.get("Status") == "503":
                self._no_responders(session)
                return
            session.received(msg.data, msg.reply)
            return
        tail = subject[len(self.inbox) + 1:]
        if tail == "_hb":
            self._on_heartbeat(msg)
        elif tail.startswith("_hb."):
            if msg.headers and msg.headers.get("Status") == "503":
                peer = self.peers.get("_cara." + tail[4:])
                if peer is not None:
                    self.drop_peer(peer, "no responders (its NATS connection is closed)")
        elif msg.data[:1] == _ADOPT and not msg.headers and self._accept_direct(subject, msg):
            return
        elif msg.data[:1] != _GONE and not msg.headers and (
                _OPENER_ADDRESS.match(msg.reply or "") or _ACCEPTOR_ADDRESS.match(msg.reply or "")):
            self.publish(msg.reply, _GONE, subject)  # a session we do not know (any more)

    def _no_responders(self, session: _Session) -> None:
        if session.peer is None:
            self.drop(session, Disconnected(
                f"no server of service {session.service!r} at {self.endpoint.url()} "
                "(NATS: no responders)"))
        elif session.peer_state is not None:
            self.drop_peer(session.peer_state, "no responders (its NATS connection is closed)")

    async def _on_open(self, msg: Any) -> None:
        self._handle_open(msg)

    def _handle_open(self, msg: Any) -> None:
        """A client's opening, taken from the service's queue group."""
        reply = msg.reply or ""
        m = _OPENER_ADDRESS.match(reply)
        if m is None or msg.headers or self.stopped:
            return  # not a cara opening
        local = f"{self.inbox}.{m[1]}.{m[2]}"
        if local in self.sessions:
            return
        if len(self.sessions) >= self.opts.max_sessions:
            logger.warning("%r: %d sessions, refusing %s", self, len(self.sessions), reply)
            self.publish(reply, _GONE, local)
            return
        session = _Session(self, local, reply)
        self.sessions[local] = session
        self.attach(session)
        session.received(msg.data, reply)
        if not session.out and not session.conn.closed:
            self.publish(reply, _DATA, local)  # the opener learns our address from this

    def _on_heartbeat(self, msg: Any) -> None:
        m = _HEARTBEAT_REPLY.match(msg.reply or "")
        if m is None or m[2] != self.id:
            return
        inbox = "_cara." + m[1]
        peer = self.peers.get(inbox)
        if peer is not None:
            peer.heard = True
        try:
            addresses = msgpack.unpackb(msg.data)
        except Exception:
            return
        if not isinstance(addresses, list) or len(addresses) > self.opts.max_sessions:
            return
        known = {s.peer for s in peer.sessions.values()} if peer is not None else set()
        prefix = inbox + "."
        for address in addresses:
            if isinstance(address, str) and address not in known and \
                    address.startswith(prefix) and (_OPENER_ADDRESS.match(address) or
                                                    _ACCEPTOR_ADDRESS.match(address)):
                self.publish(address, _GONE, self._own_address(address))

    def _own_address(self, peer_address: str) -> str:
        """Our address of the session whose address at the peer is ``peer_address``."""
        m = _OPENER_ADDRESS.match(peer_address)
        if m is not None:
            return f"{self.inbox}.{m[1]}.{m[2]}"
        return f"{self.inbox}.{peer_address.rsplit('.', 1)[1]}"

    # ------------------------------------------------------------------------ the lease

    async def _sweep_loop(self) -> None:
        interval = self.opts.lease / 4
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # never let the lease keeper die
                logger.exception("%r: sweep failed", self)

    def sweep(self) -> None:
        """Count silent quarters, drop the peers silent for a lease, send the heartbeats."""
        lease = self.opts.lease
        for peer in list(self.peers.values()):
            if peer.heard:
                peer.heard = False
                peer.silent = 0
            else:
                peer.silent += 1
                if peer.silent >= _SILENT_SWEEPS:
                    self.drop_peer(peer, f"no word from it within the lease ({lease:g} s)")
                    continue
            payload = msgpack.packb([s.local for s in peer.sessions.values()])
            if len(payload) > self.max_payload:
                payload = msgpack.packb([])  # too many sessions to list: say we are alive
            self.publish(peer.inbox + "._hb", payload, f"{self.inbox}._hb.{peer.inbox[6:]}")
        for session in list(self.opening.values()):
            session.sweeps += 1
            if session.sweeps >= _SILENT_SWEEPS:
                self.drop(session, Disconnected(
                    f"no server of service {session.service!r} at {self.endpoint.url()} "
                    f"answered within the lease ({lease:g} s)"))

    async def _on_error(self, exc: Exception) -> None:
        from nats.errors import SlowConsumerError

        if isinstance(exc, SlowConsumerError):  # nats-py dropped messages of ours
            self._lost("NATS dropped messages (slow consumer)")
        else:
            logger.debug("%r: NATS error: %s", self, exc)

    async def _on_disconnected(self) -> None:
        if not self.stopped:
            self._lost("the connection to the NATS server was lost (messages may be lost)")


# ------------------------------------------------------------------------ server, client

class NatsServer(_Options):
    """Serves the registered interfaces as one or more NATS services: each ``bind`` of
    ``nats://host:port/service`` joins the service's queue group with a node of its own.

    ``lease``: seconds of silence after which a peer counts as gone (its capabilities are
    released, its pending calls fail); ``nats_options``: more keyword arguments for
    ``nats.connect`` (``user``, ``password``, ``tls``, ...). The other options are the asyncio
    transport's."""

    def __init__(self, *, services: Services | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None, lease: float = DEFAULT_LEASE,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 nats_options: dict[str, Any] | None = None, bootstrap: object = None) -> None:
        super().__init__(services=services, max_frame_size=max_frame_size,
                         max_answers=max_answers, send_tracebacks=send_tracebacks,
                         timeout=timeout, lease=lease, max_sessions=max_sessions,
                         nats_options=nats_options)
        if bootstrap is not None:
            self.services.set_bootstrap(bootstrap)
        self._binds: list[Endpoint] = []
        self._nodes: list[_Node] = []

    def bind(self, url: str) -> None:
        ep = parse_url(url)
        if ep.scheme != "nats":
            raise ValueError(f"{url!r}: not a nats:// URL")
        self._binds.append(ep)

    async def start(self) -> None:
        if not self._binds:
            raise ValueError("bind() at least one endpoint before start()")
        for ep in self._binds[len(self._nodes):]:
            node = _Node(ep, self, queue_group=True)
            await node.start()
            self._nodes.append(node)

    @property
    def endpoints(self) -> list[str]:
        return [node.endpoint.url() for node in self._nodes]

    @property
    def connections(self) -> list[Connection]:
        return [s.conn for node in self._nodes for s in node.sessions.values()
                if not s.conn.closed]

    def stats(self) -> dict[str, int]:
        """Live totals over sessions: connections, exports, imports, questions, answers."""
        return _sum(node.stats() for node in self._nodes)

    async def stop(self) -> None:
        nodes, self._nodes = self._nodes, []
        self._binds = []
        for node in nodes:
            await node.stop("server stopped")

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class NatsClient(_Options):
    """A client of one NATS service: ``client.bootstrap(Iface)`` (or ``Iface(client)``) is the
    service's implementation in whichever worker took the client's session; a new session is
    opened when the last one is gone. Options as :class:`NatsServer`'s."""

    def __init__(self, *, services: Services | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 max_answers: int = DEFAULT_MAX_ANSWERS, send_tracebacks: bool = False,
                 timeout: float | None = None, lease: float = DEFAULT_LEASE,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 nats_options: dict[str, Any] | None = None) -> None:
        super().__init__(services=services, max_frame_size=max_frame_size,
                         max_answers=max_answers, send_tracebacks=send_tracebacks,
                         timeout=timeout, lease=lease, max_sessions=max_sessions,
                         nats_options=nats_options)
        self._endpoint: Endpoint | None = None
        self._node: _Node | None = None
        self._session: _Session | None = None

    def connect(self, url: str) -> None:
        ep = parse_url(url)
        if ep.scheme != "nats":
            raise ValueError(f"{url!r}: not a nats:// URL")
        self._endpoint = ep

    async def start(self) -> None:
        if self._endpoint is None:
            raise ValueError("connect() to an endpoint before start()")
        node = _Node(self._endpoint, self, queue_group=False)
        await node.start()
        node.reopen = self._current_bootstrap
        self._node = node

    def _current_bootstrap(self, iface: Any) -> Cap:
        cap = core_cap_of(Connection.bootstrap(self.connection, iface))
        assert isinstance(cap, Cap)
        return cap

    @property
    def connection(self) -> Connection:
        """The current session's connection (a new session when there is none, or it is
        closed: the next worker of the service)."""
        node = self._node
        if node is None:
            raise Disconnected("the client is not started")
        session = self._session
        if session is None or session.conn.closed:
            assert self._endpoint is not None
            session = self._session = node.open(self._endpoint.path)
        return session.conn

    def bootstrap(self, iface: Any = None) -> Any:
        """A proxy of the service's implementation of ``iface`` (no round trip)."""
        return self.connection.bootstrap(iface)

    def __cara_cast__(self, iface: Any) -> Any:
        if describe(iface) is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        return self.bootstrap(iface)

    def stats(self) -> dict[str, int]:
        return self._node.stats() if self._node is not None else _sum([])

    async def stop(self) -> None:
        node, self._node = self._node, None
        self._session = None
        if node is not None:
            await node.stop("client stopped")

    async def __aenter__(self) -> NatsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _sum(parts: Any) -> dict[str, int]:
    total = {"connections": 0, "exports": 0, "imports": 0, "questions": 0, "answers": 0}
    for part in parts:
        for key, value in part.items():
            total[key] += value
    return total
