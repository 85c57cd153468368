"""One RPC connection as a state machine: messages in, messages out, no I/O inside.

A :class:`Connection` is fed whole frames (:meth:`Connection.receive`) and hands the frames it
wants sent to the ``send`` callable it was given; an encoding (``wire``: cara frames by default,
or rpc.capnp's own messages) turns :mod:`cara.rpc.messages` into bytes. It keeps rpc.capnp's
four tables, with ids as rpc.capnp defines them, so a peer can only name what it was handed:

* **questions** -- calls (and bootstraps) we sent: a :class:`Question`, which is also the
  promise the caller holds; its id is reused once we have both sent ``Finish`` and received the
  ``Return``;
* **answers** -- calls we received: kept until the caller's ``Finish``, so calls pipelined on a
  capability inside the results (``PromisedAnswer`` targets) find it; calls that arrive before
  the results wait in order;
* **exports** -- our capabilities the peer holds, reference-counted by every descriptor we send
  and ``Release`` brings down (a promise is exported as ``senderPromise`` and followed by
  ``Resolve``);
* **imports** -- the peer's capabilities we hold, one :class:`ImportCap` each, held *weakly*:
  when the last proxy goes, a ``Release`` with the count is sent.

**Pipelining.** ``question.field`` is a :class:`PipelineCap` whose calls target the promised
answer until the ``Return`` arrives, then go to what the answer held. **Embargoes** keep E-order
when that turns out to be a capability of *this* process (or a promise we exported resolves to
one): new calls wait until a ``Disembargo`` sent along the old path comes back, so every call
made before the resolution is delivered first.

Handlers that return a plain value are answered inline (no task per call); those returning an
awaitable run as a task that a ``Finish`` can cancel. The only asyncio use is for those futures
and tasks: pass the loop, or construct the connection inside a running loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from functools import partial
from threading import get_ident
from types import CoroutineType
from typing import Any

from cara.rpc import messages as M
from cara.rpc.accel import FRAMES
from cara.rpc.caps import BrokenCap, Cap, LocalCap, QueuedCap, name_steps, to_cap
from cara.rpc.description import describe, known_interface
from cara.rpc.dispatch import Services
from cara.rpc.eager import is_awaitable, start
from cara.rpc.errors import (
    Disconnected,
    Failed,
    Overloaded,
    ProtocolError,
    Unimplemented,
    exception_from_remote,
    exception_to_remote,
)
from cara.rpc.proxies import CallPromise, Method, method_of
from cara.rpc.wire_cara import FINISH, CaraWire
from cara.runtime.accel import SPEEDUPS
from cara.runtime.interface import HOLDS_INTERFACES

__all__ = ["Connection", "ImportCap", "PipelineCap", "Question"]


#: The exports of a return whose type cannot hold a capability (shared, never filled).
_NO_EXPORTS: list[int] = []
#: A question's pipelined capabilities before it has any (shared, never filled: replaced).
_NO_PIPES: dict[tuple[int, ...], Any] = {}
#: Question._pipeline's transforms by (encoding class, method, path of result field names):
#: every pipelined call asks for one, the same for every answer of the method.
_transforms: dict[tuple[type, Any, tuple[str, ...]], tuple[int, ...]] = {}


class Question(CallPromise):
    """A call (or bootstrap) we sent: the promise its caller holds (see :class:`CallPromise`);
    cancelling it sends ``Finish`` so the callee cancels its handler."""

    # Slots, all set when the question is made (Connection._new_question, or send_plain in
    # cara/rpc/_frames.c, which reads and writes them in place): no per-question dict.
    __slots__ = ("_method", "_results", "_unbox", "conn", "finished", "param_exports", "pipes",
                 "qid", "returned", "timer")

    conn: Connection
    qid: int
    _unbox: bool
    returned: bool
    finished: bool
    timer: asyncio.TimerHandle | None
    pipes: dict[tuple[int, ...], PipelineCap]  # (_NO_PIPES until one is made: then replaced)
    param_exports: list[int] | None

    def _pipeline(self, path: tuple[str, ...]) -> Cap:
        wire, method = self.conn.wire, self._method
        key = (type(wire), method, path)
        steps = _transforms.get(key)
        if steps is None:
            steps = wire.transform(method.result_cls, name_steps(method, path)) \
                if method.result_cls is not M.CAPABILITY else ()
            if len(_transforms) >= 4096:
                _transforms.clear()
            _transforms[key] = steps
        return self.conn._pipeline_cap(self, steps)

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        self.conn._finish(self)
        return super().cancel(msg)

    def _time_out(self) -> None:
        if not self.done():
            self.conn._finish(self)
            self.set_exception(asyncio.TimeoutError(f"{self._method.name}() timed out"))


class ImportCap(Cap):
    """A capability of the peer (``id`` is its export id). A ``senderPromise`` import is a
    promise that a ``Resolve`` replaces."""

    __slots__ = ("called", "conn", "entry", "id", "promise", "resolution", "target", "waiters")

    def __init__(self, conn: Connection, import_id: int, promise: bool) -> None:
        self.conn = conn
        self.id = import_id
        self.target = M.ImportedCap(import_id)  # every call's target (made once)
        self.promise = promise
        self.called = False
        self.resolution: Cap | None = None
        self.entry: _Import | None = None
        self.waiters: list[Callable[[Cap], None]] | None = None

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        if self.resolution is not None:
            return self.resolution.call(method, params, timeout, unbox=unbox)
        if self.entry is None and not self.conn.closed:  # a programming error: say it now
            raise Disconnected(f"{method.name}(): this capability was released")
        self.called = True
        return self.conn.send_call(self.target, method, params, timeout, unbox)

    def resolved(self) -> Cap:
        return self.resolution.resolved() if self.resolution is not None else self

    @property
    def is_promise(self) -> bool:
        return self.promise and self.resolution is None

    def close(self) -> None:
        entry = self.entry
        if entry is not None:
            self.entry = None
            self.conn._release_import(entry)

    @property
    def closed(self) -> bool:
        return self.conn.closed or self.entry is None

    def __repr__(self) -> str:
        kind = "promise " if self.promise else ""
        return f"import {kind}{self.id}"


class PipelineCap(Cap):
    """A capability inside the answer to a question we sent, usable before the answer."""

    __slots__ = ("called", "question", "resolution", "steps", "waiters")

    def __init__(self, question: Question, steps: tuple[int, ...]) -> None:
        #: The question whose answer holds it (None once resolved: see _settle).
        self.question: Question | None = question
        self.steps = steps
        self.called = False
        self.resolution: Cap | None = None
        self.waiters: list[Callable[[Cap], None]] | None = None

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        if self.resolution is not None:
            return self.resolution.call(method, params, timeout, unbox=unbox)
        self.called = True
        q = self.question
        assert q is not None  # (unresolved)
        return q.conn.send_call(M.PromisedAnswer(q.qid, self.steps), method, params, timeout,
                                unbox)

    def resolved(self) -> Cap:
        return self.resolution.resolved() if self.resolution is not None else self

    @property
    def is_promise(self) -> bool:
        return self.resolution is None

    def __repr__(self) -> str:
        if self.resolution is not None or self.question is None:
            return repr(self.resolution)
        return f"pipelined {self.question._method.name}(){list(self.steps)}"


class _Import:
    __slots__ = ("count", "id", "ref")

    def __init__(self, import_id: int) -> None:
        self.id = import_id
        self.count = 1
        self.ref: weakref.ref[ImportCap] | None = None


class _Export:
    __slots__ = ("cap", "id", "key", "refs")

    def __init__(self, export_id: int, cap: Cap, key: int) -> None:
        self.id = export_id
        self.cap = cap
        self.key = key
        self.refs = 0


class _Answer:
    """A call (or bootstrap) we received."""

    __slots__ = ("call", "error", "finished", "method", "pipes", "result_exports", "results",
                 "returned")

    def __init__(self) -> None:
        self.call: asyncio.Future[Any] | None = None
        self.method: Method | None = None
        self.results: Any = None
        self.returned = False
        self.finished = False
        self.pipes: dict[tuple[int, ...], QueuedCap] = {}
        self.result_exports: list[int] | None = None
        self.error: BaseException | None = None


class Connection:
    """One side of an RPC connection (see the module docstring).

    ``send(frame)`` is called with each frame to send (the transport adds its own framing, if
    any; an encoding with ``encode_finishes``, which frames its own messages, may put several
    in one frame). ``wire``: the encoding (default cara frames). ``services`` answers ``Bootstrap``;
    ``send_tracebacks`` controls whether handler tracebacks travel to callers; ``timeout`` is
    the default per-call timeout in seconds (``None``: wait forever); ``max_imports`` bounds the
    capabilities the peer may hand us at once; at most ``max_answers`` handlers run at once and
    ``max_queued_calls`` more wait (later ones are refused as :class:`Overloaded`)."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        *,
        services: Services | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        wire: Any = None,
        send_tracebacks: bool = False,
        timeout: float | None = None,
        name: str = "",
        max_imports: int = 100_000,
        max_answers: int = 10_000,
        max_queued_calls: int | None = None,
        max_exports: int = 100_000,
    ) -> None:
        self._send = send
        self.services = services
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.wire = wire if wire is not None else CaraWire()
        #: ``encode_call`` is an encoding's shortcut for the commonest message (optional).
        self._encode_call: Callable[..., bytes] = getattr(self.wire, "encode_call", None) \
            or self._encode_call_message
        self._encode_results: Callable[..., tuple[bytes, bool]] = \
            getattr(self.wire, "encode_results", None) or self._encode_results_message
        #: ``decode_hot`` is an encoding's ``decode`` that gives a final return holding no
        #: capability as ``(answer_id, content)`` and a call on an export with none in its
        #: params as ``(question_id, export_id, interface_id, method_id, content)``
        #: (optional: see :meth:`_on_plain_return` and :meth:`_on_plain_call`).
        self._decode: Callable[[Any], Any] = getattr(self.wire, "decode_hot", None) \
            or self.wire.decode
        #: The encoding lets a return that holds no capability end its question (no Finish).
        self._implicit_finish = bool(getattr(self.wire, "implicit_finish", False))
        #: ``encode_finishes(question_ids)`` is an encoding's Finish messages back to back in
        #: one frame, for an encoding whose frames join (optional: the Finishes due then leave
        #: with the next call, see :meth:`_send_call_joined`, and together).
        self._encode_finishes: Callable[[list[int]], bytes] | None = \
            getattr(self.wire, "encode_finishes", None)
        self._send_call: Callable[[bytes], None] = \
            self._send_call_joined if self._encode_finishes is not None else send
        #: Plain calls and their final returns may take the C fast path (cara/rpc/_frames.c):
        #: the stock cara frames (an encoding of another class may frame differently).
        self._fast_frames = FRAMES is not None and type(self.wire) is CaraWire
        #: ``send`` for a frame already behind its 4-byte length, as the C fast path builds
        #: them: set by a transport that frames so (the asyncio one), else None (the fast path
        #: then hands ``send`` the frame alone).
        self._send_framed: Callable[[bytes], None] | None = None
        #: ``send`` for a frame that may wait for the next write (the Finishes a caller owes,
        #: which then leave with the calls it makes next rather than alone before them): set
        #: by a transport that can hold a frame so, else None (``send`` is used).
        self._send_soon: Callable[[bytes], None] | None = None
        self.send_tracebacks = send_tracebacks
        self.timeout = timeout
        self.name = name
        self.max_imports = max_imports
        self.max_exports = max_exports
        self.max_answers = max_answers
        self.max_queued_calls = max_answers if max_queued_calls is None else max_queued_calls
        self.closed = False
        self.close_reason: BaseException | None = None
        self._questions: dict[int, Question] = {}
        self._free_questions: list[int] = []
        self._next_question = 0
        self._answers: dict[int, _Answer] = {}
        self._running = 0
        #: Calls waiting for a handler slot, in arrival order, by question id; a Disembargo
        #: reflection that arrived behind them waits in line too (under a key of its own).
        self._queued: dict[Any, tuple[M.Call, Cap | BaseException, list[Any]] | M.Disembargo] = {}
        self._exports: dict[int, _Export] = {}
        self._export_by_key: dict[int, int] = {}
        self._free_exports: list[int] = []
        self._next_export = 0
        self._imports: dict[int, _Import] = {}
        self._embargoes: dict[int, tuple[QueuedCap, Cap]] = {}
        self._next_embargo = 0
        self._releases: list[tuple[int, int]] = []
        self._finishes: list[Question] = []
        self._release_scheduled = False
        self._sending_exports: list[int] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {self.name or hex(id(self))} {self.wire.name} {state}>"

    # ------------------------------------------------------------------------------ public

    def stats(self) -> dict[str, int]:
        """Live table sizes: what we export, import, await (questions: calls not answered)
        and run (answers: calls received whose handler runs or waits for a slot). Answered
        calls whose caller has not sent ``Finish`` yet are not counted."""
        return {
            "exports": len(self._exports), "imports": len(self._imports),
            "questions": len(self._questions) - len(self._finishes),
            "answers": self._running + len(self._queued),
        }

    @property
    def answers_in_flight(self) -> int:
        """Calls received and not yet answered (running or waiting for a free slot)."""
        return self._running + len(self._queued)

    def bootstrap(self, iface: Any = None) -> Any:
        """The peer's bootstrap capability (for cara frames: its implementation of ``iface``),
        usable at once: calls are pipelined on the bootstrap's answer."""
        info = describe(iface) if iface is not None else None
        if iface is not None and info is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        iid = info.id if info is not None and self.wire.name == "cara" else None
        method = Method(0, 0, "bootstrap", result_cls=M.CAPABILITY)
        if self.closed:
            cap: Cap = BrokenCap(Disconnected(f"connection closed: {self.close_reason}"))
            return cap.cast(info) if info is not None else cap
        q = self._new_question(method, False)
        self._emit(M.Bootstrap(q.qid, iid))
        cap = self._pipeline_cap(q, ())
        return cap.cast(info) if info is not None else cap

    def send_call(self, target: M.Target, method: Method, params: Any,
                  timeout: float | None = None, unbox: bool = True) -> Question:
        """Send a call now and return its promise."""
        q = self._new_question(method, unbox)
        qid = q.qid
        if self.closed:
            self._questions.pop(q.qid, None)
            q.set_exception(Disconnected(f"connection closed: {self.close_reason or 'by us'}"))
            return q
        param_cls = method.param_cls
        # (no list for what a call whose type holds no capability cannot export)
        exports: list[int] | None = None if HOLDS_INTERFACES.get(param_cls) is False else []
        self._sending_exports = exports
        try:
            self._send_call(self._encode_call(qid, target, method.interface_id, method.index,
                                              params, param_cls, self._describe))
        except BaseException as exc:
            self._drop_question(q)
            if exports:
                self._undo_exports(exports)
            q.set_exception(exc)
            return q
        finally:
            self._sending_exports = None
        if exports:
            q.param_exports = exports
        timeout = timeout if timeout is not None else self.timeout
        if timeout is not None:
            q.timer = self.loop.call_later(timeout, q._time_out)
        return q

    def receive(self, frame: bytes | bytearray | memoryview) -> None:
        """Process one frame from the peer. Raises :class:`ProtocolError` (after sending an
        ``Abort``) when the frame is not a valid message; the transport should then close."""
        if self.closed:
            return
        try:
            msg = self._decode(frame)
            if type(msg) is tuple:  # decode_hot's shortcuts (see messages.from_hot)
                if len(msg) == 5:
                    self._on_plain_call(*msg)
                else:
                    self._on_plain_return(msg)
                return
            handler = self._handlers.get(type(msg))
            if handler is not None:
                handler(self, msg)
            elif isinstance(msg, M.Unknown):  # a feature beyond level 1: say so, go on
                self._emit(M.Unimplemented(msg))
            else:
                raise ProtocolError(f"unexpected message {type(msg).__name__}")
        except Exception as exc:
            err = self._refuse(exc)
            if err is exc:
                raise
            raise err from None

    def _refuse(self, exc: Exception) -> ProtocolError:
        """Abort over ``exc``, raised while a frame was handled: the ProtocolError to raise
        (``exc`` itself, or one that says the message was malformed)."""
        err = exc if isinstance(exc, ProtocolError) else \
            ProtocolError(f"malformed message: {type(exc).__name__}: {exc}")
        self.abort(str(err))
        return err

    def abort(self, reason: str) -> None:
        """Tell the peer why we give up (an ``Abort``), then drop everything."""
        if not self.closed:
            try:
                self._emit(M.Abort(M.RemoteException("failed", reason, "ProtocolError")))
            except Exception:  # the transport may already be gone
                pass
            self.connection_lost(Disconnected(reason))

    def connection_lost(self, exc: BaseException | None = None) -> None:
        """The transport is gone: fail every question, cancel every answer, drop every export
        and break every import. Idempotent."""
        if self.closed:
            return
        self.closed = True
        reason = exc if exc is not None else Disconnected("connection closed")
        self.close_reason = reason
        questions, self._questions = self._questions, {}
        for q in questions.values():
            if q.timer is not None:
                q.timer.cancel()
            broken = BrokenCap(Disconnected(f"{q._method.name}(): {reason}"))
            for pipe in q.pipes.values():
                if pipe.resolution is None:
                    _settle(pipe, broken)
            if not q.done():  # a fresh exception each: tracebacks must not pile up on one
                q.set_exception(Disconnected(f"{q._method.name}(): {reason}"))
        answers, self._answers = self._answers, {}
        self._queued.clear()
        self._running = 0
        for a in answers.values():
            if a.call is not None and not a.call.done():
                a.call.cancel()
            for queued in a.pipes.values():
                queued.resolve(BrokenCap(Disconnected(str(reason))))
        self._exports.clear()
        self._export_by_key.clear()
        imports, self._imports = self._imports, {}
        for entry in imports.values():
            cap = entry.ref() if entry.ref is not None else None
            if cap is not None:
                cap.entry = None
                if cap.resolution is None:
                    _settle(cap, BrokenCap(Disconnected(f"capability lost: {reason}")))
        for queued, _cap in self._embargoes.values():
            queued.resolve(BrokenCap(Disconnected(str(reason))))
        self._embargoes.clear()
        self._releases.clear()

    # ------------------------------------------------------------------------------ sending

    def _emit(self, msg: M.Message) -> None:
        self._send(self.wire.encode(msg, self._describe))

    def _emit_soon(self, msg: M.Message) -> None:
        """:meth:`_emit` a message that may wait for the next write (see ``_send_soon``)."""
        (self._send_soon or self._send)(self.wire.encode(msg, self._describe))

    def _encode_results_message(self, qid: int, results: Any, result_cls: Any, final: bool,
                                describe_cap: M.DescribeCap) -> tuple[bytes, bool]:
        ret = M.Return(qid, M.Payload(results, result_cls), release_param_caps=False,
                       no_finish=final)
        frame = self.wire.encode(ret, describe_cap)
        return frame, ret.no_finish

    def _encode_call_message(self, qid: int, target: M.Target, interface_id: int,
                             method_id: int, params: Any, param_cls: Any,
                             describe_cap: M.DescribeCap) -> bytes:
        return self.wire.encode(M.Call(qid, target, interface_id, method_id,
                                       M.Payload(params, param_cls)), describe_cap)

    def _new_question(self, method: Method, unbox: bool) -> Question:
        if self._free_questions:
            qid = self._free_questions.pop()
        else:
            qid = self._next_question
            self._next_question = qid + 1
        q = Question(loop=self.loop)
        q.conn = self
        q.qid = qid
        q._method = method
        q._unbox = unbox
        q._results = None
        q.returned = q.finished = False
        q.timer = None
        q.pipes = _NO_PIPES
        q.param_exports = None
        self._questions[qid] = q
        return q

    def _drop_question(self, q: Question) -> None:
        if self._questions.get(q.qid) is q:
            del self._questions[q.qid]
            self._free_questions.append(q.qid)

    def _finish(self, q: Question) -> None:
        """The caller no longer wants the answer (cancelled or timed out)."""
        if q.timer is not None:
            q.timer.cancel()
        if q.finished or self.closed:
            return
        q.finished = True
        self._emit(M.Finish(q.qid, False))
        if q.returned:
            self._drop_question(q)

    def _pipeline_cap(self, q: Question, steps: tuple[int, ...]) -> Cap:
        pipe = q.pipes.get(steps)
        if pipe is None:
            pipe = PipelineCap(q, steps)
            if not q.pipes:
                q.pipes = {}
            q.pipes[steps] = pipe
            if q.returned:
                self._resolve_pipe(q, pipe)
        return pipe

    # ------------------------------------------------------------------ capabilities we send

    def _describe(self, obj: Any) -> M.CapDescriptor:
        """The descriptor for a capability met in outgoing content (the encodings' callback)."""
        cap = to_cap(obj)
        if cap is None:
            return M.CapDescriptor(M.CapDescriptor.NONE)
        cap = cap.resolved()
        if isinstance(cap, ImportCap) and cap.conn is self and cap.entry is not None:
            return M.CapDescriptor(M.CapDescriptor.RECEIVER_HOSTED, cap.id)
        if isinstance(cap, PipelineCap):
            q = cap.question
            if q is not None and q.conn is self and not q.finished:
                return M.CapDescriptor(M.CapDescriptor.RECEIVER_ANSWER,
                                       answer=M.PromisedAnswer(q.qid, cap.steps))
        if isinstance(cap, (ImportCap, PipelineCap)) and cap.closed and cap.resolution is None:
            cap = BrokenCap(Disconnected("capability of a closed connection"))
        eid, new = self._export(cap)
        if self._sending_exports is not None:
            self._sending_exports.append(eid)
        if cap.is_promise:
            if new:
                self._watch_promise(eid, cap)
            return M.CapDescriptor(M.CapDescriptor.SENDER_PROMISE, eid)
        return M.CapDescriptor(M.CapDescriptor.SENDER_HOSTED, eid)

    def _export(self, cap: Cap) -> tuple[int, bool]:
        key = id(cap.impl.obj) if isinstance(cap, LocalCap) else id(cap)
        eid = self._export_by_key.get(key)
        new = eid is None
        if eid is None:
            if len(self._exports) >= self.max_exports:
                raise Overloaded(f"more than {self.max_exports} capabilities exported")
            if self._free_exports:
                eid = self._free_exports.pop()
            else:
                eid = self._next_export
                self._next_export = eid + 1
            self._exports[eid] = _Export(eid, cap, key)
            self._export_by_key[key] = eid
        self._exports[eid].refs += 1
        return eid, new

    def _undo_exports(self, eids: list[int]) -> None:
        for eid in eids:
            self._release_export(eid, 1)

    def _release_export(self, eid: int, count: int) -> None:
        export = self._exports.get(eid)
        if export is None:
            return  # unknown or already gone: harmless
        export.refs -= count
        if export.refs <= 0:
            del self._exports[eid]
            self._export_by_key.pop(export.key, None)
            self._free_exports.append(eid)

    def _watch_promise(self, eid: int, cap: Cap) -> None:
        """Send ``Resolve`` when promise ``cap`` we exported as ``eid`` resolves."""

        def resolved(target: Cap) -> None:
            export = self._exports.get(eid)
            if self.closed or export is None or export.cap is not cap:
                return
            if isinstance(target, BrokenCap):
                self._emit(M.Resolve(eid, exception=exception_to_remote(
                    target.exc, with_traceback=False)))
                return
            try:
                self._emit(M.Resolve(eid, cap=self._describe(target)))
            except Exception as exc:
                self._emit(M.Resolve(eid, exception=exception_to_remote(
                    exc, with_traceback=False)))

        _when_resolved(cap, resolved)

    # ------------------------------------------------------------------ capabilities we get

    def _caps(self, table: list[M.CapDescriptor]) -> list[Any]:
        return [self._receive_cap(d) for d in table]

    def _receive_cap(self, d: M.CapDescriptor) -> Cap | None:
        kind = d.kind
        if kind == M.CapDescriptor.SENDER_HOSTED or kind == M.CapDescriptor.SENDER_PROMISE:
            return self._import(d.id, kind == M.CapDescriptor.SENDER_PROMISE)
        if kind == M.CapDescriptor.RECEIVER_HOSTED:
            export = self._exports.get(d.id)
            if export is None:
                raise ProtocolError(f"the peer sent back capability {d.id}, which we do not "
                                    "export")
            return export.cap
        if kind == M.CapDescriptor.RECEIVER_ANSWER:
            assert d.answer is not None
            return self._answer_cap(d.answer.question_id, d.answer.transform)
        return None

    def _import(self, import_id: int, promise: bool) -> ImportCap:
        entry = self._imports.get(import_id)
        if entry is not None and entry.ref is not None:
            cap = entry.ref()
            if cap is not None:
                entry.count += 1
                return cap
        if len(self._imports) >= self.max_imports:
            raise ProtocolError(f"the peer handed us more than {self.max_imports} capabilities")
        entry = _Import(import_id)
        cap = ImportCap(self, import_id, promise)
        cap.entry = entry
        entry.ref = weakref.ref(cap, partial(self._import_died, entry))
        self._imports[import_id] = entry
        return cap

    def _import_died(self, entry: _Import, _ref: object) -> None:
        # Called by the garbage collector, possibly in another thread or in the middle of our
        # own code: only queue the release; sending happens from the loop.
        self._release_import(entry)

    def _release_import(self, entry: _Import) -> None:
        if self.closed or self._imports.get(entry.id) is not entry:
            return
        del self._imports[entry.id]
        self._releases.append((entry.id, entry.count))
        if not self._release_scheduled:
            self._release_scheduled = True
            loop = self.loop
            try:
                if getattr(loop, "_thread_id", None) == get_ident() or \
                        asyncio._get_running_loop() is loop:
                    loop.call_soon(self._flush_releases)  # (no wake-up write to the loop)
                else:
                    loop.call_soon_threadsafe(self._flush_releases)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                self._release_scheduled = False

    @property
    def owes(self) -> bool:
        """Messages wait for the next write (see :meth:`flush_owed`)."""
        return bool(self._releases)

    def flush_owed(self) -> None:
        """Send now the messages that wait for a write (the Releases of the capabilities
        dropped since the last one): a transport calls this as it writes, so that they leave
        with that write rather than in one of their own."""
        if self._releases:
            self._flush_releases()

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        if self._releases and not self.closed:
            releases, self._releases = self._releases, []
            for import_id, count in releases:
                self._emit_soon(M.Release(import_id, count))

    # ------------------------------------------------------------------------------ answers

    def _answer_cap(self, qid: int, steps: tuple[int, ...]) -> Cap:
        """The capability at ``steps`` in the answer to the peer's question ``qid``."""
        answer = self._answers.get(qid)
        if answer is None:
            if self._implicit_finish:
                # An answer that held no capability is forgotten when it returns (no Finish
                # follows): a call pipelined on it before its return arrived lands here.
                return BrokenCap(Failed(f"answer {qid} held no capability to call"))
            raise ProtocolError(f"no answer {qid} to pipeline on")
        if answer.returned:
            if answer.results is _FAILED:
                return BrokenCap(answer.error or Failed("the call failed"))
            return self._cap_at(answer, steps)
        queued = answer.pipes.get(steps)
        if queued is None:
            queued = answer.pipes[steps] = QueuedCap()
        return queued

    def _cap_at(self, answer: _Answer, steps: tuple[int, ...]) -> Cap:
        return self._cap_in(answer.method, answer.results, steps)

    def _cap_in(self, method: Method | None, results: Any, steps: tuple[int, ...]) -> Cap:
        """The capability at ``steps`` in the results of a call of ``method`` (a broken one
        where there is none: pipelined calls on it fail, the connection goes on)."""
        try:
            if method is not None and method.result_cls is M.CAPABILITY:
                if steps:
                    raise ProtocolError("a bootstrap answer has no fields")
                value = results
            else:
                value = self.wire.follow(results, steps)
            cap = to_cap(value)
        except Exception as exc:
            return BrokenCap(exc)
        if cap is None:
            name = method.name if method is not None else "the call"
            return BrokenCap(Failed(f"{name}(): the pipelined capability is null"))
        return cap

    def _on_bootstrap(self, msg: M.Bootstrap) -> None:
        qid = msg.question_id
        if qid in self._answers:
            raise ProtocolError(f"duplicate question id {qid}")
        answer = self._answers[qid] = _Answer()
        answer.method = Method(0, 0, "bootstrap", result_cls=M.CAPABILITY)
        impl = self.services.lookup(msg.interface_id) if self.services is not None else None
        if impl is None:
            what = ("nothing" if msg.interface_id is None else
                    f"no implementation of interface 0x{msg.interface_id:016x}")
            self._return_error(qid, answer, Unimplemented(f"bootstrap: {what} is offered here"))
            return
        cap = LocalCap(impl.obj, impl.info)
        self._return_results(qid, answer, cap)

    def _on_call(self, msg: M.Call) -> None:
        qid = msg.question_id
        if qid in self._answers or qid in self._queued:
            raise ProtocolError(f"duplicate question id {qid}")
        caps = msg.params.cap_table
        if caps:
            caps = self._caps(caps)  # a capability we never exported: abort
        # the target as it is now: a promised answer may be finished by the time we run
        export = self._exports.get(msg.target.id) if type(msg.target) is M.ImportedCap else None
        target: Cap | BaseException
        if export is not None:  # (the common case of _call_target, inline)
            target = export.cap
        else:
            try:
                target = self._call_target(msg.target)
            except ProtocolError:
                raise
            except Exception as exc:
                target = exc
        if self._running >= self.max_answers or self._queued:
            if len(self._queued) >= self.max_queued_calls:
                answer = self._answers[qid] = _Answer()
                self._return_error(qid, answer, Overloaded(
                    f"{self._running} calls running and {len(self._queued)} waiting"))
                return
            self._queued[qid] = (msg, target, caps)
            return
        self._dispatch(msg, target, caps)

    def _on_plain_call(self, qid: int, export_id: int, interface_id: int, method_id: int,
                       content: Any) -> None:
        """A ``Call`` on one of our exports with no capability in its params (``decode_hot``'s
        5-tuple): most calls. One whose export is a local object and that may run now takes
        this short way; any other goes through :meth:`_on_call` as the message it stands for."""
        export = self._exports.get(export_id)
        local = export.cap.resolved() if export is not None else None
        if type(local) is not LocalCap or self._running >= self.max_answers or self._queued \
                or qid in self._answers:
            self._on_call(M.call_from_hot((qid, export_id, interface_id, method_id, content)))
            return
        self._run_local(qid, local, interface_id, method_id, (content, False), [], True)

    def _run_local(self, qid: int, local: LocalCap, interface_id: int, method_id: int,
                   raw: Any, caps: list[Any], plain: bool = False) -> None:
        """Run call ``qid`` on an object of this process (the common case of _dispatch);
        ``plain``: ``raw`` is ``decode_hot``'s ``(content, False)``."""
        method: Method | None = None
        try:
            handler = local.impl.handler(interface_id, method_id)
            method = handler.method
            cls = method.param_cls
            if plain and type(raw[0]) is dict and HOLDS_INTERFACES.get(cls) is False:
                params = cls(raw[0])  # (decode_content's common case)
            else:
                params = self.wire.decode_content(raw, cls, caps)
            result = handler.run(params)
        except Exception as exc:  # malformed params fail the call, not the connection
            self._return_error(qid, self._new_answer(qid, method), exc)
            return
        self._handled(qid, method, result)

    def _handled(self, qid: int, method: Method, result: Any) -> None:
        """Answer call ``qid`` with what its handler returned: now, or when the awaitable it
        returned is done (cara/rpc/_frames.c comes here with what it does not answer itself)."""
        try:
            if isinstance(result, dict) or not is_awaitable(result):
                # answered now (a results struct is a dict): no future, no task
                self._answer_now(qid, method, result)
                return
            # The task is the answer's call: its result is the results struct, and
            # cancelling it (a Finish) cancels the handler.
            if type(result) is CoroutineType:  # its first step runs now (cara.rpc.eager)
                started = start(result, self.loop)
                if started.done:
                    error = started.error
                    if error is None:
                        self._answer_now(qid, method, started.value)
                    elif isinstance(error, asyncio.CancelledError):
                        self._return_canceled(qid, self._new_answer(qid, method))
                    else:
                        self._return_error(qid, self._new_answer(qid, method), error)
                    return
                assert started.task is not None
                call: asyncio.Future[Any] = started.task
            else:
                call = asyncio.ensure_future(result, loop=self.loop)
        except Exception as exc:
            self._return_error(qid, self._new_answer(qid, method), exc)
            return
        self._track(qid, method, call)

    def _handler_failed(self, qid: int, method: Method, exc: Exception) -> None:
        """Call ``qid``'s handler raised ``exc`` (or its answer could not be sent)."""
        self._return_error(qid, self._new_answer(qid, method), exc)

    def _dispatch(self, msg: M.Call, target: Cap | BaseException, caps: list[Any]) -> None:
        qid = msg.question_id
        method: Method | None = None
        try:
            if isinstance(target, BaseException):
                raise target
            local = target.resolved()
            if isinstance(local, LocalCap):  # the common case: a handler of this process
                self._run_local(qid, local, msg.interface_id, msg.method_id, msg.params.raw,
                                caps)
                return
            method = self._method_for(msg, target)
            params = self.wire.decode_content(msg.params.raw, method.param_cls, caps)
            call = target.call(method, params, unbox=False)
        except Exception as exc:  # malformed params fail the call, not the connection
            self._return_error(qid, self._new_answer(qid, method), exc)
            return
        self._track(qid, method, call)

    def _track(self, qid: int, method: Method | None, call: asyncio.Future[Any]) -> None:
        """Answer ``qid`` with ``call``'s outcome: now if it is done, else when it is."""
        answer = self._new_answer(qid, method)
        answer.call = call
        if call.done():
            self._call_done(qid, answer, call)
        else:
            self._running += 1
            call.add_done_callback(partial(self._call_finished, qid, answer))

    def _new_answer(self, qid: int, method: Method | None) -> _Answer:
        answer = self._answers[qid] = _Answer()
        answer.method = method
        return answer

    def _answer_now(self, qid: int, method: Method, results: Any) -> None:
        """Return what a handler returned at once. Nothing refers to such an answer while
        it runs (no frame is read meanwhile), so the answers table gets an entry only when
        the return is not final: a ``Finish`` will come, and calls may be pipelined on it."""
        try:
            frame, final, exports = self._encode_return(qid, method, results)
        except Exception as exc:  # unencodable results, or too big for the transport
            self._return_error(qid, self._new_answer(qid, method), exc)
            return
        if not final:
            answer = self._new_answer(qid, method)
            answer.results = results
            answer.returned = True
            answer.result_exports = exports or None
        self._send(frame)

    def _encode_return(self, qid: int, method: Method | None,
                       results: Any) -> tuple[bytes, bool, list[int]]:
        """The Return frame of ``results``, whether it is final (no Finish will come) and the
        exports it made. Raises when the results cannot be sent, its exports undone."""
        cls = method.result_cls if method is not None else None
        if HOLDS_INTERFACES.get(cls) is False:  # nothing in it can be exported
            frame, final = self._encode_results(qid, results, cls, self._implicit_finish,
                                                self._describe)
            return frame, final, _NO_EXPORTS
        exports: list[int] = []
        self._sending_exports = exports
        try:
            frame, final = self._encode_results(
                qid, results, method.result_cls if method is not None else None,
                self._implicit_finish, self._describe)
        except BaseException:
            self._undo_exports(exports)
            raise
        finally:
            self._sending_exports = None
        return frame, final, exports

    def _call_target(self, target: M.Target) -> Cap:
        if isinstance(target, M.ImportedCap):
            export = self._exports.get(target.id)
            if export is None:
                raise Unimplemented(f"no capability {target.id} is exported on this connection")
            return export.cap
        return self._answer_cap(target.question_id, target.transform)

    def _method_for(self, msg: M.Call, target: Cap) -> Method:
        """The method a call names, as the target's implementation (or interface) knows it:
        its params class decodes the params."""
        interface_id, index = msg.interface_id, msg.method_id
        cap = target.resolved()
        if isinstance(cap, LocalCap):
            return cap.impl.handler(interface_id, index).method
        if isinstance(msg.target, M.PromisedAnswer):  # the answer's result type says
            answer = self._answers.get(msg.target.question_id)
            method = answer.method if answer is not None else None
            iface = _interface_at(self.wire, method.result_cls, msg.target.transform) \
                if method is not None and method.result_cls not in (None, M.CAPABILITY) else None
            spec = iface.cara_schema.all_methods.get((interface_id, index)) \
                if iface is not None else None
            if spec is not None:
                return method_of(spec)
        info = known_interface(interface_id)
        m = info.methods.get((interface_id, index)) if info is not None else None
        if m is None:
            raise Unimplemented(
                f"method @{index} of interface 0x{interface_id:016x} is not known here")
        return method_of(m)

    def _call_finished(self, qid: int, answer: _Answer, call: asyncio.Future[Any]) -> None:
        if self.closed:
            return  # connection_lost has forgotten every running call
        self._running -= 1
        if self._answers.get(qid) is answer:  # answered before the calls it let start
            self._call_done(qid, answer, call)
        if self._queued and not self.closed:
            self._run_queued()

    def _run_queued(self) -> None:
        """Start waiting calls, in arrival order, while handler slots are free."""
        queued = self._queued
        while queued and not self.closed:
            key = next(iter(queued))
            item = queued[key]
            if isinstance(item, M.Disembargo):  # every call that arrived before it has gone
                del queued[key]
                self._emit(item)
                continue
            if self._running >= self.max_answers:
                break
            del queued[key]
            self._dispatch(*item)

    def _call_done(self, qid: int, answer: _Answer, call: asyncio.Future[Any]) -> None:
        if call.cancelled():
            self._return_canceled(qid, answer)
            return
        exc = call.exception()
        if exc is not None:
            self._return_error(qid, answer, exc)
        else:
            self._return_results(qid, answer, call.result())

    def _return_results(self, qid: int, answer: _Answer, results: Any) -> None:
        answer.results = results
        answer.returned = True
        pipes, answer.pipes = answer.pipes, {}
        for steps, queued in pipes.items():  # pipelined calls go first (E-order)
            queued.resolve(self._cap_at(answer, steps))
        try:
            frame, final, exports = self._encode_return(qid, answer.method, results)
        except Exception as exc:  # unencodable results, or too big for the transport
            answer.results = _FAILED
            self._emit(M.Return(qid, exception=exception_to_remote(
                exc, with_traceback=self.send_tracebacks)))
            final, exports = self._implicit_finish, []
        else:
            self._send(frame)
        answer.result_exports = exports or None
        if answer.finished or final:  # (no Finish will come for a final return)
            self._answers.pop(qid, None)

    def _return_error(self, qid: int, answer: _Answer, exc: BaseException) -> None:
        answer.returned = True
        answer.results = _FAILED
        answer.error = exc
        pipes, answer.pipes = answer.pipes, {}
        for queued in pipes.values():
            queued.resolve(BrokenCap(exc))
        self._emit(M.Return(qid, exception=exception_to_remote(
            exc, with_traceback=self.send_tracebacks)))
        if answer.finished:
            self._answers.pop(qid, None)

    def _return_canceled(self, qid: int, answer: _Answer) -> None:
        answer.returned = True
        answer.results = _FAILED
        for queued in answer.pipes.values():
            queued.resolve(BrokenCap(asyncio.CancelledError("the call was canceled")))
        answer.pipes = {}
        self._emit(M.Return(qid, canceled=True))
        if answer.finished:
            self._answers.pop(qid, None)

    def _receive_control(self, kind: int, ident: int, n: int) -> None:
        """A ``Finish`` (``kind`` FINISH: question id, releaseResultCaps 1 or 0) or a
        ``Release`` (export id, count) decoded by cara/rpc/_frames.c, handled as
        :meth:`receive` handles the frame it came in."""
        if self.closed:
            return
        try:
            if kind == FINISH:
                self._finish_answer(ident, n == 1)
            else:
                self._release_export(ident, n)
        except Exception as exc:
            err = self._refuse(exc)
            if err is exc:
                raise
            raise err from None

    def _on_finish(self, msg: M.Finish) -> None:
        self._finish_answer(msg.question_id, msg.release_result_caps)

    def _finish_answer(self, qid: int, release_result_caps: bool) -> None:
        answer = self._answers.get(qid)
        if answer is None:
            if self._queued.pop(qid, None) is not None:
                self._emit(M.Return(qid, canceled=True))
            return
        answer.finished = True
        if release_result_caps and answer.result_exports:
            for eid in answer.result_exports:
                self._release_export(eid, 1)
            answer.result_exports = None
        if answer.returned:
            del self._answers[qid]
        elif answer.call is not None:
            answer.call.cancel()

    # ------------------------------------------------------------------------------ returns

    def _on_return(self, msg: M.Return) -> None:
        q = self._questions.get(msg.answer_id)
        if q is None or q.returned:
            raise ProtocolError(f"a return for question {msg.answer_id}, which was not asked")
        q.returned = True
        if q.timer is not None:
            q.timer.cancel()
        if q.param_exports is not None:
            if msg.release_param_caps:
                self._undo_exports(q.param_exports)
            q.param_exports = None
        if msg.exception is not None:
            exc = exception_from_remote(msg.exception)
            self._resolve_pipes(q, BrokenCap(exc))
            if not q.done():
                q.set_exception(exc)
        elif msg.canceled or msg.results is None:
            self._resolve_pipes(q, BrokenCap(asyncio.CancelledError("canceled")))
            if not q.done():
                q.cancel()
        else:
            method = q._method
            if q.finished and not q.pipes:
                pass  # nobody wants it: do not import its capabilities
            else:
                table = msg.results.cap_table
                try:
                    results = self.wire.decode_content(msg.results.raw, method.result_cls,
                                                       self._caps(table) if table else table)
                except ProtocolError:
                    raise
                except Exception as exc:
                    self._resolve_pipes(q, BrokenCap(exc))
                    if not q.done():
                        q.set_exception(exc)
                else:
                    q._results = results
                    if q.pipes:
                        for pipe in q.pipes.values():
                            self._resolve_pipe(q, pipe)
                    if not q.done():
                        if q._unbox and method.unbox is not None:
                            try:
                                q.set_result(method.unbox(results))
                            except Exception as exc:
                                q.set_exception(exc)
                        else:
                            q.set_result(results)
        if q.finished or msg.no_finish:  # (a final return: the callee forgot the answer)
            q.finished = True
            self._drop_question(q)
        else:  # sent with whatever goes out next (one write per call, not two)
            q.finished = True
            self._owe_finish(q)

    def _owe_finish(self, q: Question) -> None:
        """Send ``q``'s ``Finish`` soon: in this loop turn's batch of Finishes, or in front of
        the next call (see :meth:`_send_call_joined`)."""
        self._finishes.append(q)
        if len(self._finishes) == 1:
            self.loop.call_soon(self._flush_finishes)

    def _on_plain_return(self, hot: tuple[Any, ...]) -> None:
        """A ``Return`` of results holding no capability (``decode_hot``'s 2-tuple, final: the
        callee has forgotten the answer; or its 3-tuple, which our ``Finish`` must follow):
        the answer to most calls. A question nobody cancelled, timed or pipelined on takes
        this short way; any other goes through :meth:`_on_return` as the message it stands
        for (see :func:`~cara.rpc.messages.return_from_hot`)."""
        answer_id, content = hot[0], hot[1]
        q = self._questions.get(answer_id)
        if q is None or q.returned or q.finished or q.pipes or q.timer is not None or \
                q.param_exports is not None:
            self._on_return(M.return_from_hot(hot))
            return
        q.returned = q.finished = True
        final = len(hot) == 2
        if final:
            del self._questions[answer_id]
            self._free_questions.append(answer_id)
        method = q._method
        cls = method.result_cls
        try:
            if type(content) is dict and HOLDS_INTERFACES.get(cls) is False:
                results = cls(content)  # (decode_content's common case)
            else:
                results = self.wire.decode_content((content, False), cls, [])
            q._results = results
            if not q.done():
                q.set_result(method.unbox(results) if q._unbox and method.unbox is not None
                             else results)
        except ProtocolError:
            raise
        except Exception as exc:
            if not q.done():
                q.set_exception(exc)
        if not final:  # (after the result: the caller's next call may take the Finish along)
            self._owe_finish(q)

    def _send_call_joined(self, frame: bytes) -> None:
        """Send a call's ``frame`` with the Finishes due in front of it, in one frame (an
        encoding with ``encode_finishes``: a sequential caller's Finish and next call then
        cost one write, not two). Should the transport refuse the joined frame, the call goes
        alone and the Finishes stay due."""
        finishes = self._finishes
        if not finishes or len(finishes) > 16 or self.closed:
            self._send(frame)
            return
        assert self._encode_finishes is not None
        try:
            self._send(self._encode_finishes([q.qid for q in finishes]) + frame)
        except Exception:
            self._send(frame)
            return
        self._finishes = []
        for q in finishes:
            self._drop_question(q)

    def _flush_finishes(self) -> None:
        finishes, self._finishes = self._finishes, []
        if self.closed:
            return
        send = self._send_soon or self._send
        if self._encode_finishes is not None:  # (a few to a frame)
            for i in range(0, len(finishes), 16):
                send(self._encode_finishes([q.qid for q in finishes[i:i + 16]]))
            for q in finishes:
                self._drop_question(q)  # only now may its id be asked again
            return
        for q in finishes:
            self._emit_soon(M.Finish(q.qid, False))
            self._drop_question(q)  # only now may its id be asked again

    def _resolve_pipes(self, q: Question, cap: Cap) -> None:
        for pipe in q.pipes.values():
            if pipe.resolution is None:
                _settle(pipe, cap)

    def _resolve_pipe(self, q: Question, pipe: PipelineCap) -> None:
        """Point ``pipe`` at what the answer holds, with an embargo where E-order needs one."""
        if pipe.resolution is not None:
            return
        target = self._cap_in(q._method, q._results, pipe.steps)
        if isinstance(target, BrokenCap):
            _settle(pipe, target)
            return
        _settle(pipe, self._maybe_embargo(pipe.called, target,
                                          M.PromisedAnswer(q.qid, pipe.steps)))

    def _maybe_embargo(self, called: bool, target: Cap, path: M.Target) -> Cap:
        """``target`` for a promise that resolved to it, behind an embargo when calls already
        went along ``path`` and ``target`` does not live at the other end of this connection."""
        resolved = target.resolved()
        if isinstance(resolved, (ImportCap, PipelineCap)) and _conn_of(resolved) is self:
            # Still at the peer: no embargo now. But the calls made along ``path`` count as
            # made on it, should it resolve into this process later (a promise the peer
            # exported and will Resolve): they must arrive before calls made after that.
            if called and resolved.is_promise:
                resolved.called = True
            return target
        if not called or self.closed:
            return target
        eid = self._next_embargo
        self._next_embargo = eid + 1
        queued = QueuedCap()
        self._embargoes[eid] = (queued, target)
        self._emit(M.Disembargo(path, M.Disembargo.SENDER_LOOPBACK, eid))
        return queued

    # --------------------------------------------------------------------- resolve, release

    def _on_resolve(self, msg: M.Resolve) -> None:
        entry = self._imports.get(msg.promise_id)
        cap = entry.ref() if entry is not None and entry.ref is not None else None
        if msg.exception is not None:
            target: Cap = BrokenCap(exception_from_remote(msg.exception))
        else:
            assert msg.cap is not None
            received = self._receive_cap(msg.cap)
            target = received if received is not None else BrokenCap(
                Failed("the promise resolved to null"))
        if cap is None or not cap.promise or cap.resolution is not None:
            if isinstance(target, ImportCap):
                target.close()  # nobody holds the promise: give the new reference back
            return
        _settle(cap, self._maybe_embargo(cap.called, target, M.ImportedCap(cap.id)))

    def _on_release(self, msg: M.Release) -> None:
        self._release_export(msg.id, msg.count)

    def _on_disembargo(self, msg: M.Disembargo) -> None:
        if msg.kind == M.Disembargo.RECEIVER_LOOPBACK:
            found = self._embargoes.pop(msg.embargo_id, None)
            if found is None:
                raise ProtocolError(f"disembargo of unknown embargo {msg.embargo_id}")
            queued, target = found
            queued.resolve(target)
            return
        # senderLoopback: the target must be a capability that points back to the sender;
        # reflect the message once every call sent to it before has been passed on.
        target = self._call_target(msg.target).resolved()
        if not isinstance(target, ImportCap) or target.conn is not self:
            raise ProtocolError("disembargo target does not point back to the sender")
        reply = M.Disembargo(M.ImportedCap(target.id), M.Disembargo.RECEIVER_LOOPBACK,
                             msg.embargo_id)
        if self._queued:  # calls that arrived first still wait for a handler: they go first
            self._queued[object()] = reply
        else:
            self._emit(reply)

    def _on_abort(self, msg: M.Abort) -> None:
        self.connection_lost(Disconnected(f"peer aborted: {msg.exception.reason}"))

    def _on_unimplemented(self, msg: M.Unimplemented) -> None:
        """The peer could not handle something we sent. A call or bootstrap it refused fails
        (its question gets no Return); a refused Resolve or Disembargo changes nothing we
        rely on (level 0 peers never see our promises resolve)."""
        echoed = msg.message
        qid = getattr(echoed, "question_id", None)
        if isinstance(echoed, (M.Call, M.Bootstrap)) and qid is not None:
            q = self._questions.get(qid)
            if q is not None and not q.returned:
                q.returned = True
                exc = Unimplemented(f"the peer does not implement {type(echoed).__name__}")
                self._resolve_pipes(q, BrokenCap(exc))
                if not q.done():
                    q.set_exception(exc)
                self._drop_question(q)

    _handlers: dict[type, Callable[[Connection, Any], None]] = {
        M.Call: _on_call, M.Return: _on_return, M.Finish: _on_finish,
        M.Bootstrap: _on_bootstrap, M.Release: _on_release, M.Resolve: _on_resolve,
        M.Disembargo: _on_disembargo, M.Abort: _on_abort, M.Unimplemented: _on_unimplemented,
    }


_FAILED: Any = object()


_interfaces_at: dict[tuple[Any, str, tuple[int, ...]], Any] = {}


def _interface_at(wire: Any, struct_cls: Any, steps: tuple[int, ...]) -> Any:
    """The runtime interface class of the capability field that ``steps`` reach in a
    ``struct_cls`` value (``None`` if none): found by asking the encoding for the steps of each
    capability field, so it works whatever a step means to the encoding."""
    key = (struct_cls, wire.name, steps)
    if key in _interfaces_at:
        return _interfaces_at[key]
    found = None
    pending: list[tuple[Any, tuple[str, ...]]] = [(struct_cls, ())]
    while pending and found is None:
        cls, path = pending.pop()
        if len(path) > 8:
            continue
        for f in cls.cara_schema.fields:
            kind = f.type.kind
            if kind == "interface":
                try:
                    if wire.transform(struct_cls, (*path, f.name)) == steps:
                        found = f.type.cls
                        break
                except Exception:
                    continue
            elif kind == "struct":
                pending.append((f.type.cls, (*path, f.name)))
    if len(_interfaces_at) < 10_000:
        _interfaces_at[key] = found
    return found


def _conn_of(cap: Cap) -> Connection | None:
    if isinstance(cap, ImportCap):
        return cap.conn
    if isinstance(cap, PipelineCap):
        return cap.question.conn if cap.question is not None else None
    return None


def _settle(cap: ImportCap | PipelineCap, target: Cap) -> None:
    """Resolve promise ``cap`` to ``target`` and tell whoever waits for it."""
    cap.resolution = target
    if type(cap) is PipelineCap:  # its question no longer matters to it, and keeps it in
        cap.question = None       # its pipes: no cycle for the garbage collector to find
    waiters, cap.waiters = cap.waiters, None
    for callback in waiters or ():
        _when_resolved(target, callback)


def _when_resolved(cap: Cap, callback: Callable[[Cap], None]) -> None:
    """Call ``callback(target)`` once promise ``cap`` has resolved to a non-promise."""
    if isinstance(cap, QueuedCap):
        cap.when_resolved(lambda target: _when_resolved(target, callback))
    elif isinstance(cap, (ImportCap, PipelineCap)) and cap.resolution is None and \
            cap.is_promise:
        if cap.waiters is None:
            cap.waiters = []
        cap.waiters.append(callback)
    elif isinstance(cap, (ImportCap, PipelineCap)) and cap.resolution is not None:
        _when_resolved(cap.resolution, callback)
    else:
        callback(cap)


if FRAMES is not None:
    FRAMES.configure(Question, ImportCap, PipelineCap, LocalCap, HOLDS_INTERFACES,
                     ProtocolError, SPEEDUPS.packb, _NO_PIPES, asyncio._get_running_loop)
