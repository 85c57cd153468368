"""cara RPC over pseud 1.0.1 (ZeroMQ ROUTER sockets): an adapter around pseud's own RPC.

The protocol is the sans-IO core's (:class:`cara.rpc.Connection`: refcounted exports, releases,
errors, cancellation); pseud only moves its frames. Each pair of peers gets one ``Connection``,
keyed by the peer's pseud identity (its user id when a security plugin provides one, else its
ZeroMQ routing id). Every frame travels as the single argument of a pseud call named
:data:`CARA_RPC` (``"cara.rpc"``), a name no Cap'n Proto method can have, so user methods never
collide with it; cara calls address ``(interface id, method index)`` inside the frame, so two
interfaces with a method of the same name do not clash either.

A cara ``CALL`` frame rides a pseud request and its ``RETURN``/``ERROR`` frame rides pseud's
reply, so a cara call costs the same two ZeroMQ messages as a bare pseud call. The other frames
(``FINISH``, ``RELEASE``, ``ABORT``) are pseud calls whose reply (``None``) is ignored. Frames are
addressed as ``rpc.send_to(peer)`` addresses (pseud's ``_prepare_work``, which asks the security
plugin for the routing id of a user id; the default noop plugin has no user ids, and the routing
id, taken from the incoming message, is used as it is).

What the adapter changes, on the given pseud instance only (pseud is never patched globally):

* ``rpc.packer`` -- pseud's packer calls ``msgpack.packb(encoding=...)``, which msgpack 1.0
  removed; :class:`Packer` is a msgpack >= 1 replacement with the same interface.
* ``rpc._handle_work`` -- pseud handles each incoming message inline in its reader loop, so a
  handler that awaits a call back to the same peer would never see the answer (deadlock until the
  timeout). Each incoming work now runs as its own task (started eagerly: a handler that answers
  at once costs no extra event-loop turn), with the caller's routing id and user id in a context
  variable (:func:`current_peer`); that is how answers, and calls from a server to the client
  that is calling it, find their peer.
* ``rpc.on_socket_ready`` -- a malformed message, or a late answer to a call that already timed
  out, makes pseud's reader raise and stop reading for good; the wrapper logs and goes on.
  (Effective when set up before ``start()``, as the original API requires.)
* ``rpc.stop`` -- also tells the peers (``ABORT``) and fails the pending calls.

Sending does not go through pseud's ``send_message``, which drops a message silently after three
"host unreachable" errors per peer (the burst a client sends right after ``connect()``, before
the handshake, is then lost) or on a full queue: :meth:`PseudRPC.emit` keeps such messages in
order and retries them until pseud's timeout.

``services``, ``cara_rpc`` and ``__cara_cast__`` are added as attributes, so that
``cara.rpc.register_interface(server, ...)`` and ``Iface(client)`` work on the pseud object.

Timeouts: pseud's ``timeout`` (seconds, per instance, default 5) bounds every call; a call that
takes longer fails with ``TimeoutError`` and the callee's handler is cancelled (``FINISH``).
ZeroMQ has no connections, so a peer that vanishes without ``stop()`` keeps its table until
:meth:`PseudRPC.forget` is called (or the other side's calls time out).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import importlib
import logging
import traceback
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgpack

from cara.rpc import wire_cara as M
from cara.rpc.connection import Connection
from cara.rpc.description import describe
from cara.rpc.dispatch import Services
from cara.rpc.errors import (
    KIND_DISCONNECTED,
    KIND_FAILED,
    KIND_UNIMPLEMENTED,
    Disconnected,
    ProtocolError,
)

__all__ = ["CARA_RPC", "Packer", "PseudRPC", "attach", "current_peer", "rpc_of"]

logger = logging.getLogger(__name__)

#: The one pseud RPC name cara uses. Cap'n Proto names cannot contain ``.``, so no method of a
#: user's interface (nor a pseud function named after one) can ever be called this.
CARA_RPC = "cara.rpc"

#: The peer whose message is being handled: ``(routing id, user id)``; set in each work task.
_CALLER: contextvars.ContextVar[tuple[bytes, bytes] | None] = contextvars.ContextVar(
    "cara_pseud_caller", default=None)

#: How long ``stop()`` waits for the peers to acknowledge the ``ABORT`` (seconds, at most).
STOP_GRACE = 1.0


def current_peer() -> tuple[bytes, bytes] | None:
    """``(routing id, user id)`` of the peer whose call is being handled, inside a handler run
    by a set-up pseud instance (``None`` elsewhere). The user id is ``b''`` without a security
    plugin."""
    return _CALLER.get()


# ------------------------------------------------------------------------------------ packer


class Packer:
    """A msgpack >= 1 packer with pseud's interface, assigned per instance (``rpc.packer``).

    Like pseud's: bytes stay bytes and text is UTF-8 (``use_bin_type``), arrays arrive as tuples,
    maps may have any keys, and ``translation_table`` / :meth:`register_ext_handler` add ext types
    (``code -> (class, pack, unpack)``). Unlike pseud's, no ext type is registered by default:
    pseud's datetime types travel as ``pickle``, which must never read data from the network."""

    def __init__(
        self,
        translation_table: Mapping[int, tuple[type, Callable[[Any], bytes], Callable[[bytes], Any]]]
        | None = None,
    ) -> None:
        self.translation_table = dict(translation_table or {})
        self._pack_cache: dict[type, tuple[int, Callable[[Any], bytes]] | None] = {}
        # No ``default`` hook: nothing can re-enter the shared packer, so one instance serves.
        self._plain = msgpack.Packer(use_bin_type=True)

    def packb(self, data: Any) -> bytes:
        if not self.translation_table:
            packed: bytes = self._plain.pack(data)
            return packed
        out: bytes = msgpack.packb(data, use_bin_type=True, default=self._ext_pack)
        return out

    def unpackb(self, packed: Any) -> Any:
        if not self.translation_table:
            return msgpack.unpackb(packed, use_list=False, raw=False, strict_map_key=False)
        return msgpack.unpackb(packed, use_list=False, raw=False, strict_map_key=False,
                               ext_hook=self._ext_unpack)

    def register_ext_handler(self, code: int, base_class: type, packer: Callable[[Any], bytes],
                             unpacker: Callable[[bytes], Any]) -> None:
        if code in self.translation_table:
            raise ValueError(f"ext code {code} is already registered: "
                             f"{self.translation_table[code]!r}")
        self.translation_table[code] = (base_class, packer, unpacker)
        self._pack_cache.clear()

    def _ext_pack(self, obj: Any) -> msgpack.ExtType:
        cls = type(obj)
        if cls not in self._pack_cache:
            self._pack_cache[cls] = next(
                ((code, pack) for code, (base, pack, _) in sorted(self.translation_table.items())
                 if isinstance(obj, base)), None)
        hit = self._pack_cache[cls]
        if hit is None:
            raise TypeError(f"cannot pack a {cls.__name__} (no ext type registered for it)")
        return msgpack.ExtType(hit[0], hit[1](obj))

    def _ext_unpack(self, code: int, data: bytes) -> Any:
        entry = self.translation_table.get(code)
        return msgpack.ExtType(code, data) if entry is None else entry[2](data)


# ------------------------------------------------------------------------------- frame header


def _peek(frame: bytes) -> tuple[int, int]:
    """``(message kind, question id)`` of a cara frame without decoding it; ``(-1, -1)`` when the
    frame does not start like one (the core then rejects it properly). Every message is a
    msgpack fixarray whose first item is a small int kind and, for calls, returns, errors and
    finishes, whose second item is the question id (see :mod:`cara.rpc.wire_cara`)."""
    if len(frame) < 3 or not 0x92 <= frame[0] <= 0x9F or frame[1] > 0x7F:
        return -1, -1
    kind, b = frame[1], frame[2]
    if b <= 0x7F:
        return kind, b
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(b)
    if width is None or len(frame) < 3 + width:
        return kind, -1
    return kind, int.from_bytes(frame[3:3 + width], "big")


#: Frames that ask (their answer rides the pseud reply) and frames that answer.
_QUESTIONS = frozenset({M.CALL, M.BOOTSTRAP})
_ANSWERS = frozenset({M.RETURN, M.RETURN_FINAL, M.ERROR, M.CANCELED})
_DEFERRABLE = frozenset({M.FINISH, M.RELEASE})

#: How long a FINISH or RELEASE waits for a call to ride with (seconds).
DEFER_SECONDS = 0.02


def _error_frame(qid: int, kind: int, name: str, message: str) -> bytes:
    frame: bytes = msgpack.packb([M.ERROR, qid, kind, name, message, None])
    return frame


# -------------------------------------------------------------------------------------- links


class _Link:
    """The cara connection with one peer, and the bookkeeping that pairs frames with pseud's
    requests and replies."""

    __slots__ = ("capture", "captured", "conn", "deferred", "flush_timer", "owner", "peer",
                 "waiting")

    def __init__(self, owner: PseudRPC, peer: bytes) -> None:
        self.owner = owner
        self.peer = peer
        #: FINISH and RELEASE frames waiting to ride with the next call (see :meth:`_send`).
        self.deferred: list[bytes] = []
        self.flush_timer: asyncio.TimerHandle | None = None
        self.conn = Connection(self._send, services=owner.services, loop=owner.loop,
                               send_tracebacks=owner.send_tracebacks, timeout=owner.timeout,
                               name=f"pseud:{peer.hex()}")
        #: The question id of the call being answered inline (its answer is pseud's reply).
        self.capture = -1
        self.captured: bytes | None = None
        #: Question id -> future of the reply frame, for calls whose handler runs as a task.
        self.waiting: dict[int, asyncio.Future[bytes | None]] = {}

    def _send(self, frame: bytes) -> None:
        """The core's ``send``: answers go back as pseud replies, the rest as pseud calls."""
        kind, qid = _peek(frame)
        if kind in _ANSWERS:
            if qid == self.capture:
                self.captured = frame
                return
            waiter = self.waiting.pop(qid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            return
        if kind in _DEFERRABLE:
            # A FINISH follows every answered call: sent alone it would cost a ZeroMQ round trip
            # per call. It rides with the next call instead (in order), or goes after a moment.
            self.deferred.append(frame)
            if self.flush_timer is None:
                self.flush_timer = self.owner.loop.call_later(DEFER_SECONDS, self.flush)
            return
        if kind in _QUESTIONS and self.deferred:
            batch, self.deferred = [*self.deferred, frame], []
            self._cancel_timer()
            self.post(batch, qid)
            return
        self.flush()
        self.post(frame, qid if kind in _QUESTIONS else -1)

    def flush(self) -> None:
        """Send the deferred frames now (one pseud call)."""
        self._cancel_timer()
        if self.deferred and not self.conn.closed:
            batch, self.deferred = self.deferred, []
            self.post(batch)

    def _cancel_timer(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None

    def post(self, frame: bytes | list[bytes], qid: int = -1,
             ack: asyncio.Future[None] | None = None) -> None:
        """Send ``frame`` as a pseud call of ``cara.rpc``, addressed as ``rpc.send_to(peer)``
        addresses (pseud's ``_prepare_work``: the security plugin maps a user id to its routing
        id, the noop plugin takes the routing id as it is). Its reply is fed back to the core when
        ``qid`` is a question; ``ack`` is resolved when the peer has answered or pseud gave up.

        This is ``send_to(peer).<name>(frame)`` without the coroutine, future and task that such
        a call costs: a :class:`_Reply` waits in pseud's ``future_pool`` instead of a future."""
        rpc = self.owner.rpc
        message, uid = rpc._prepare_work(self.peer, CARA_RPC, frame)
        rpc.future_pool[uid] = _Reply(self, qid, uid, ack)
        rpc.create_timeout_detector(uid)  # pseud's per-call timeout
        rpc.auth_backend.save_last_work(message)
        self.owner.emit(message)

    def on_reply(self, qid: int, reply: Any) -> None:
        if self.conn.closed:
            return
        if isinstance(reply, bytes):
            self.receive(reply)
        else:  # the peer answered without a frame: it dropped the call (e.g. it aborted)
            self.receive(_error_frame(qid, KIND_DISCONNECTED, "Disconnected",
                                      "the peer dropped the call"))

    def on_failure(self, qid: int, exc: Exception) -> None:
        """pseud could not deliver a call or get its answer: fail the question through the core
        (a synthesized ``ERROR``) and cancel the handler on the other side (``FINISH``)."""
        if self.conn.closed:
            return
        name = type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError):
            frame = _error_frame(qid, KIND_FAILED, "TimeoutError",
                                 f"no answer within pseud's timeout of {self.owner.rpc.timeout} s")
        elif name == "ServiceNotFoundError":
            frame = _error_frame(qid, KIND_UNIMPLEMENTED, name,
                                 "the peer does not speak cara (call cara_pseud.setup_server/"
                                 "setup_client on it)")
        else:
            frame = _error_frame(qid, KIND_DISCONNECTED, name, f"pseud failed: {exc}")
        self.receive(frame)
        if not self.conn.closed:
            self.post(msgpack.packb([M.FINISH, qid]))

    def receive(self, frame: bytes) -> None:
        conn = self.conn
        try:
            conn.receive(frame)
        except ProtocolError as exc:  # the core has queued an ABORT and closed the connection
            logger.warning("cara over pseud: bad frame from %r: %s", self.peer, exc)
        if conn.closed:
            self.owner._drop(self)

    def close(self) -> None:
        self._cancel_timer()
        self.deferred.clear()
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_result(None)
        self.waiting.clear()


class _Reply:
    """Waits in pseud's ``future_pool`` for the reply to one frame; pseud's reader calls
    ``set_result`` (OK) or ``set_exception`` (ERROR, or its timeout) on it."""

    __slots__ = ("ack", "link", "qid", "uid")

    def __init__(self, link: _Link, qid: int, uid: bytes,
                 ack: asyncio.Future[None] | None) -> None:
        self.link = link
        self.qid = qid
        self.uid = uid
        self.ack = ack

    def _acknowledge(self) -> None:
        if self.ack is not None and not self.ack.done():
            self.ack.set_result(None)

    def set_result(self, value: Any) -> None:
        self._acknowledge()
        if self.qid >= 0:
            self.link.on_reply(self.qid, value)

    def set_exception(self, exc: BaseException) -> None:
        self.link.owner.rpc.future_pool.pop(self.uid, None)  # pseud's timeout leaves it there
        self._acknowledge()
        if self.qid >= 0 and isinstance(exc, Exception):
            self.link.on_failure(self.qid, exc)


# ------------------------------------------------------------------------------------ adapter


class PseudRPC:
    """cara RPC on one pseud ``Server`` or ``Client`` (made by :func:`attach`)."""

    def __init__(self, rpc: Any, *, services: Services | None = None,
                 send_tracebacks: bool = True, timeout: float | None = None) -> None:
        self.rpc = rpc
        self.loop: asyncio.AbstractEventLoop = rpc.loop
        self.services = services if services is not None else Services()
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.links: dict[bytes, _Link] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        # Bound methods of the pseud class, taken before the instance attributes shadow them.
        self._pseud_handle_work = rpc._handle_work
        self._pseud_on_socket_ready = rpc.on_socket_ready
        self._pseud_stop = rpc.stop
        # pseud's message constants (OK, ERROR, VERSION...): pseud is there, rpc is one of its.
        self._wire: Any = importlib.import_module("pseud.interfaces")
        self._zmq: Any = importlib.import_module("zmq")
        #: Messages waiting for a peer that could not take them yet, per routing id.
        self._backlogs: dict[bytes, collections.deque[list[bytes]]] = {}

    # ------------------------------------------------------------------------ public API

    @property
    def is_client(self) -> bool:
        return getattr(self.rpc, "peer_routing_id", None) is not None

    def bootstrap(self, iface: Any, peer: bytes | None = None) -> Any:
        """A proxy of ``peer``'s registered implementation of ``iface``, without a round trip.

        ``peer`` defaults to a client's server, or, inside a handler, to the calling peer."""
        if describe(iface) is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        return self.link(self._peer(peer)).conn.bootstrap(iface)

    def __cara_cast__(self, iface: Any) -> Any:
        return self.bootstrap(iface)

    def connection(self, peer: bytes | None = None) -> Connection:
        """The cara connection with ``peer`` (created on first use)."""
        return self.link(self._peer(peer)).conn

    def link(self, peer: bytes) -> _Link:
        if self._stopped:
            raise Disconnected("the pseud instance was stopped")
        found = self.links.get(peer)
        if found is None:
            found = self.links[peer] = _Link(self, peer)
        return found

    def forget(self, peer: bytes, reason: str = "forgotten") -> None:
        """Drop everything shared with ``peer`` (its pending calls fail with Disconnected)."""
        link = self.links.get(peer)
        if link is not None:
            link.conn.connection_lost(Disconnected(reason))
            self._drop(link)

    def stats(self) -> dict[str, int]:
        """Live totals over the peers: connections, exports, imports, questions, answers."""
        total = {"connections": 0, "exports": 0, "imports": 0, "questions": 0, "answers": 0}
        for link in self.links.values():
            if link.conn.closed:
                continue
            total["connections"] += 1
            for key, value in link.conn.stats().items():
                total[key] += value
        return total

    async def stop(self) -> None:
        """Abort every connection (peers are told, pending calls fail), then stop pseud."""
        if not self._stopped:
            self._stopped = True
            for task in list(self._tasks):  # running handlers, messages waiting for a peer
                task.cancel()
            self._backlogs.clear()
            acks: list[asyncio.Future[None]] = []
            reason = "the peer stopped"
            for link in list(self.links.values()):
                if not link.conn.closed:
                    ack: asyncio.Future[None] = self.loop.create_future()
                    link.post(msgpack.packb([M.ABORT, reason]), ack=ack)
                    acks.append(ack)
                link.conn.connection_lost(Disconnected(reason))
                self._drop(link)
            if acks:  # let the peers hear it before the socket closes (pseud lingers 0 s)
                await asyncio.wait(acks, timeout=min(STOP_GRACE, float(self.rpc.timeout)))
            for task in list(self._tasks):
                task.cancel()
        await self._pseud_stop()

    # ------------------------------------------------------------------ pseud-side hooks

    def _peer(self, peer: bytes | None) -> bytes:
        if peer is not None:
            return bytes(peer)
        if self.is_client:
            return bytes(self.rpc.peer_routing_id)
        caller = _CALLER.get()
        if caller is None:
            raise TypeError("a server has many peers: pass peer=<routing id or user id>, or call "
                            "from inside a handler to reach the calling peer")
        return caller[1] or caller[0]

    def _spawn(self, coro: Coroutine[Any, Any, Any],
               caller: tuple[bytes, bytes] | None = None) -> None:
        """Run ``coro`` as its own task, started eagerly: its first step runs now (a work message
        answered without waiting, or a frame handed to ZeroMQ, costs no event-loop turn) and only
        what remains after its first real wait becomes a task. ``caller`` is set in its context.
        """
        ctx = None
        try:
            if caller is None:
                yielded = coro.send(None)
            else:
                ctx = contextvars.copy_context()
                ctx.run(_CALLER.set, caller)
                yielded = ctx.run(coro.send, None)
        except StopIteration:
            return
        except Exception:
            logger.error("cara over pseud: a task failed", exc_info=True)
            return
        if ctx is None:
            task = self.loop.create_task(_resume(coro, yielded))
        else:  # the task copies the context it is created in
            task = ctx.run(self.loop.create_task, _resume(coro, yielded))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("cara over pseud: a task failed", exc_info=task.exception())

    def _drop(self, link: _Link) -> None:
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
        link.close()

    async def _handle_work(self, message: Any, routing_id: bytes, user_id: bytes,
                           message_uuid: bytes) -> None:
        """Replaces pseud's inline handling: each work message runs as its own task.

        A cara frame (the only argument of ``cara.rpc``) goes straight to :meth:`_on_frame`, the
        function pseud's registry would find for it, skipping the registry search that costs
        more than the rest of pseud's dispatch; anything else takes pseud's own path."""
        caller = (bytes(routing_id), bytes(user_id or b""))
        try:
            locator, args, kw = self.rpc.packer.unpackb(message)
            fast = locator == CARA_RPC and len(args) == 1 and not kw
        except Exception:  # pseud's own path reports what is wrong with it
            fast = False
        if fast:
            self._spawn(self._cara_work(args[0], routing_id, message_uuid), caller)
        else:
            self._spawn(self._pseud_handle_work(message, routing_id, user_id, message_uuid),
                        caller)

    async def _cara_work(self, frame: Any, routing_id: bytes, message_uuid: bytes) -> None:
        """pseud's ``_handle_work`` for one cara frame: the reply is pseud's OK message carrying
        the answer frame (or pseud's ERROR message, ``(type name, message, traceback)``, when the
        frame was not one)."""
        wire = self._wire
        try:
            result = self._on_frame(frame)
            if asyncio.iscoroutine(result):
                result = await result
            status = wire.OK
        except Exception as exc:
            text = traceback.format_exc() if self.send_tracebacks else ""
            result = (type(exc).__name__, str(exc), text)
            status = wire.ERROR
        self.emit([routing_id, wire.EMPTY_DELIMITER, wire.VERSION, message_uuid, status,
                   self.rpc.packer.packb(result)])

    # ------------------------------------------------------------------ sending messages

    def emit(self, message: list[bytes]) -> None:
        """Hand one pseud message to ZeroMQ now, keeping the order per destination.

        pseud's ``send_message`` drops a message after three "host unreachable" errors *per
        peer and socket lifetime* (a client's first burst of calls, sent before the connection's
        handshake is done, is mostly lost) and drops it silently on a full queue. Here a message
        that cannot go now waits, with those after it for the same peer, and is retried until
        pseud's timeout; only then is it dropped (its call fails by that same timeout)."""
        dest = message[0]
        backlog = self._backlogs.get(dest)
        if backlog is not None:
            backlog.append(message)
            return
        sent = self.rpc.socket.send_multipart(message, flags=self._zmq.DONTWAIT)
        if sent.done():
            self._sent(message, sent)
        else:  # queued behind pseud's own sends by pyzmq
            sent.add_done_callback(functools.partial(self._sent, message))

    def _retryable(self, exc: BaseException) -> bool:
        zmq = self._zmq
        return isinstance(exc, zmq.ZMQError) and exc.errno in (zmq.EAGAIN, zmq.EHOSTUNREACH)

    def _sent(self, message: list[bytes], sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is None:
            return
        exc = sent.exception()
        assert exc is not None
        if not self._retryable(exc) or self._stopped:
            logger.warning("cara over pseud: could not send to %r: %s", message[0], exc)
            return
        dest = message[0]
        backlog = self._backlogs.get(dest)
        if backlog is not None:
            backlog.append(message)
            return
        backlog = self._backlogs[dest] = collections.deque([message])
        self._spawn(self._drain(dest, backlog))

    async def _drain(self, dest: bytes, backlog: collections.deque[list[bytes]]) -> None:
        loop = self.loop
        delay = 0.001
        deadline = loop.time() + float(self.rpc.timeout)
        try:
            while backlog:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                while backlog:
                    try:
                        await self.rpc.socket.send_multipart(backlog[0], flags=self._zmq.DONTWAIT)
                    except Exception as exc:
                        if not self._retryable(exc):
                            logger.warning("cara over pseud: could not send to %r: %s", dest, exc)
                            backlog.popleft()
                            continue
                        if loop.time() > deadline:
                            logger.warning("cara over pseud: %r unreachable for %s s; %d "
                                           "message(s) dropped", dest, self.rpc.timeout,
                                           len(backlog))
                            backlog.clear()
                        break
                    backlog.popleft()
                    delay = 0.001
                    deadline = loop.time() + float(self.rpc.timeout)
        finally:
            if self._backlogs.get(dest) is backlog:
                del self._backlogs[dest]

    async def _on_socket_ready(self, response: Any) -> None:
        try:
            await self._pseud_on_socket_ready(response)
        except asyncio.CancelledError:
            raise
        except KeyError:  # pseud's reply lookup: an answer after its call timed out
            logger.debug("pseud: a reply to a call that already timed out; ignored")
        except Exception:  # keep reading: one bad message must not stop the socket
            logger.warning("pseud could not handle a message; ignored", exc_info=True)

    def _on_frame(self, frame: Any) -> Any:
        """The handler of pseud's ``cara.rpc``: one cara frame from the calling peer."""
        caller = _CALLER.get()
        if caller is None:
            raise RuntimeError(f"{CARA_RPC} was called outside a pseud work task")
        link = self.link(caller[1] or caller[0])
        if isinstance(frame, (list, tuple)) and frame and \
                all(isinstance(f, bytes) for f in frame):
            # deferred frames (FINISH, RELEASE) followed by a call, or alone
            *leading, frame = frame
            for earlier in leading:
                if _peek(earlier)[0] in _QUESTIONS:
                    raise TypeError(f"{CARA_RPC}: only the last frame of a batch may ask")
                _deliver(link, earlier)
                if link.conn.closed:
                    return None
        if not isinstance(frame, bytes):
            raise TypeError(f"{CARA_RPC} takes one bytes frame, got {type(frame).__name__}")
        kind, qid = _peek(frame)
        if kind not in _QUESTIONS or qid < 0:
            _deliver(link, frame)
            return None
        link.capture, link.captured = qid, None
        try:
            link.receive(frame)
        finally:
            link.capture = -1
        reply, link.captured = link.captured, None
        if reply is not None or link.conn.closed:
            return reply
        waiter: asyncio.Future[bytes | None] = self.loop.create_future()
        link.waiting[qid] = waiter
        return _reply_when_done(waiter)


def _deliver(link: _Link, frame: bytes) -> None:
    """Hand a frame that asks nothing (FINISH, RELEASE, ...) to the link's connection."""
    kind, qid = _peek(frame)
    link.receive(frame)
    if kind == M.FINISH:  # the answer was cancelled: release its pseud request
        cancelled = link.waiting.pop(qid, None)
        if cancelled is not None and not cancelled.done():
            cancelled.set_result(None)


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """The rest of a coroutine whose first step already ran and yielded ``yielded`` (the future
    it waits for, or ``None`` for a bare yield): what a task does, from the second step on."""
    while True:
        thrown: BaseException | None = None
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False  # as a task does with what it is handed
                await yielded
        except asyncio.CancelledError as exc:  # we were cancelled: so is what the coroutine awaits
            if yielded is not None and not yielded.done():
                yielded.cancel()
            else:
                thrown = exc
        except Exception:  # the awaited future failed: the coroutine reads that itself
            pass
        try:
            yielded = coro.throw(thrown) if thrown is not None else coro.send(None)
        except StopIteration as stop:
            return stop.value


async def _reply_when_done(waiter: asyncio.Future[bytes | None]) -> bytes | None:
    return await waiter


def rpc_of(rpc: Any) -> PseudRPC:
    """The adapter of a set-up pseud instance (a clear error otherwise)."""
    adapter = vars(rpc).get("cara_rpc") if hasattr(rpc, "__dict__") else None
    if not isinstance(adapter, PseudRPC):
        raise TypeError(f"{type(rpc).__name__} is not set up for cara: call "
                        "cara_pseud.setup_server(server) / setup_client(client) first")
    return adapter


def attach(rpc: Any, *, services: Services | None = None, send_tracebacks: bool = True,
           timeout: float | None = None) -> PseudRPC:
    """Set up cara RPC on a pseud ``Server`` or ``Client`` (idempotent; see the module docstring).

    Call it before ``start()``. ``timeout`` (seconds) additionally bounds each call on the cara
    side; pseud's own ``timeout`` always applies."""
    existing = vars(rpc).get("cara_rpc")
    if isinstance(existing, PseudRPC):
        return existing
    adapter = PseudRPC(rpc, services=services, send_tracebacks=send_tracebacks, timeout=timeout)
    if type(rpc.packer).__module__.startswith("pseud"):  # keep a packer the user chose
        rpc.packer = Packer()
    rpc._handle_work = adapter._handle_work
    rpc.on_socket_ready = adapter._on_socket_ready
    rpc.stop = adapter.stop
    rpc.register_rpc(name=CARA_RPC)(adapter._on_frame)
    rpc.services = adapter.services
    rpc.cara_rpc = adapter
    rpc.__cara_cast__ = adapter.__cara_cast__
    return adapter
