"""The RPC messages of Cap'n Proto's protocol (rpc.capnp, level 1), as plain Python objects.

The protocol core (:mod:`cara.rpc.connection`) reads and writes only these; an *encoding*
(:mod:`cara.rpc.wire_cara`: cara's compact msgpack frames; :mod:`cara.rpc.wire_capnp`: rpc.capnp's
own messages in standard segment framing) turns them into bytes and back. Names follow rpc.capnp
so that its comments explain every field:

* :class:`Bootstrap` -- ask for the peer's bootstrap capability (the answer's only pointer).
  ``interface_id`` is a cara-frames extension: a cara server offers one implementation per
  registered interface; ``None`` asks for the single bootstrap of a Cap'n Proto peer.
* :class:`Call` -- ``target`` is an :class:`ImportedCap` (an export of the receiver) or a
  :class:`PromisedAnswer` (a capability inside the answer to an earlier question, reached through
  ``transform``: pointer steps, see below).
* :class:`Return` -- ``results`` (a :class:`Payload`), ``exception`` or ``canceled``.
* :class:`Finish` -- the caller is done with a question (cancels a running call).
* :class:`Resolve` -- a promise we exported (``senderPromise``) has resolved to ``cap`` or failed.
* :class:`Release` -- drop ``count`` references to an export.
* :class:`Disembargo` -- ``senderLoopback``/``receiverLoopback`` echoes that keep E-order when a
  promise resolves to a capability in the caller's own process.
* :class:`Abort`, :class:`Unimplemented`.

**Transforms.** A pipelined target or a ``receiverAnswer`` descriptor names a capability inside
a result struct by a tuple of steps. What a step means belongs to the encoding (it must address
the struct the same way on both sides): the capnp encoding uses rpc.capnp's ``getPointerField``
(the pointer's index in the struct's pointer section; groups add no step), cara frames use field
numbers (the msgpack map keys, so a group adds one step). The core never interprets them: it asks
the encoding (:meth:`Wire.transform` on the caller's side, :meth:`Wire.follow` on the answerer's).

**Payloads.** On the way out, ``Payload.content`` is the value to send -- a runtime struct, or a
field-number-keyed dict for interfaces described without runtime classes -- and ``struct_cls`` its
runtime class (``None`` for dicts). The encoding calls the ``describe_cap`` callback it is given for
every capability it meets in the content, in order, and the descriptors it returns become the
payload's cap table (index = position). On the way in, the encoding leaves ``content`` *raw*
(``Payload.raw``) and fills ``cap_table`` with descriptors: only the core knows which method a
return answers, so it asks :meth:`Wire.decode_content` with the struct class and the capability
objects once it has turned the descriptors into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "CAPABILITY",
    "Abort",
    "Bootstrap",
    "Call",
    "CapDescriptor",
    "Disembargo",
    "Finish",
    "ImportedCap",
    "Message",
    "Payload",
    "PromisedAnswer",
    "Release",
    "RemoteException",
    "Resolve",
    "Return",
    "Unimplemented",
    "Unknown",
    "Wire",
    "call_from_hot",
    "from_hot",
    "return_from_hot",
]


class RemoteException:
    """rpc.capnp's ``Exception``: ``kind`` is one of ``failed``, ``overloaded``,
    ``disconnected``, ``unimplemented``; ``type_name`` (cara's addition, also carried by the capnp
    encoding inside the reason text) names the Python exception type for the allow-list of
    :mod:`cara.rpc.errors`; ``trace`` is the remote traceback text or ``None``."""

    __slots__ = ("kind", "reason", "trace", "type_name")

    def __init__(self, kind: str, reason: str, type_name: str = "",
                 trace: str | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.type_name = type_name
        self.trace = trace

    def __repr__(self) -> str:
        return f"RemoteException({self.kind!r}, {self.reason!r}, {self.type_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteException) and (
            self.kind, self.reason, self.type_name, self.trace) == (
            other.kind, other.reason, other.type_name, other.trace)


class PromisedAnswer:
    """A capability in the answer to question ``question_id``, reached by ``transform``."""

    __slots__ = ("question_id", "transform")

    def __init__(self, question_id: int, transform: tuple[int, ...] = ()) -> None:
        self.question_id = question_id
        self.transform = transform

    def __repr__(self) -> str:
        return f"PromisedAnswer({self.question_id}, {self.transform!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromisedAnswer) and other.question_id == self.question_id \
            and tuple(other.transform) == tuple(self.transform)


class ImportedCap:
    """A call target: export ``id`` of the receiver."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"ImportedCap({self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImportedCap) and other.id == self.id


#: A call target.
Target = ImportedCap | PromisedAnswer


class CapDescriptor:
    """One entry of a payload's cap table (rpc.capnp's ``CapDescriptor``).

    ``kind``: ``none``, ``senderHosted`` (``id`` is the sender's export id), ``senderPromise``
    (likewise, and a ``Resolve`` will follow), ``receiverHosted`` (``id`` is the receiver's export
    id: a capability coming home), ``receiverAnswer`` (``answer``: a capability inside an answer
    the receiver is computing)."""

    __slots__ = ("answer", "id", "kind")

    NONE = "none"
    SENDER_HOSTED = "senderHosted"
    SENDER_PROMISE = "senderPromise"
    RECEIVER_HOSTED = "receiverHosted"
    RECEIVER_ANSWER = "receiverAnswer"

    def __init__(self, kind: str, id: int = 0,
                 answer: PromisedAnswer | None = None) -> None:
        self.kind = kind
        self.id = id
        self.answer = answer

    def __repr__(self) -> str:
        if self.kind == self.RECEIVER_ANSWER:
            return f"CapDescriptor(receiverAnswer, {self.answer!r})"
        if self.kind == self.NONE:
            return "CapDescriptor(none)"
        return f"CapDescriptor({self.kind}, {self.id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CapDescriptor) and (self.kind, self.id, self.answer) == (
            other.kind, other.id, other.answer)


class Payload:
    """Params or results (see the module docstring for the two directions)."""

    __slots__ = ("cap_table", "content", "raw", "struct_cls")

    def __init__(self, content: Any = None, struct_cls: Any = None, *, raw: Any = None,
                 cap_table: list[CapDescriptor] | None = None) -> None:
        self.content = content
        self.struct_cls = struct_cls
        self.raw = raw
        self.cap_table: list[CapDescriptor] = cap_table if cap_table is not None else []

    def __repr__(self) -> str:
        return f"Payload({self.content!r}, caps={self.cap_table!r})"


class Message:
    """Base of the message classes (for ``isinstance`` and typing only)."""

    __slots__ = ()

    def _fields(self) -> tuple[str, ...]:
        return tuple(getattr(type(self), "__slots__", ()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self._fields())


class Bootstrap(Message):
    __slots__ = ("interface_id", "question_id")

    def __init__(self, question_id: int, interface_id: int | None = None) -> None:
        self.question_id = question_id
        self.interface_id = interface_id


class Call(Message):
    __slots__ = ("interface_id", "method_id", "params", "question_id", "target")

    def __init__(self, question_id: int, target: Target, interface_id: int, method_id: int,
                 params: Payload) -> None:
        self.question_id = question_id
        self.target = target
        self.interface_id = interface_id
        self.method_id = method_id
        self.params = params


class Return(Message):
    """Exactly one of ``results``, ``exception``, ``canceled`` is set."""

    __slots__ = ("answer_id", "canceled", "exception", "no_finish", "release_param_caps",
                 "results")

    def __init__(self, answer_id: int, results: Payload | None = None, *,
                 exception: RemoteException | None = None, canceled: bool = False,
                 release_param_caps: bool = True, no_finish: bool = False) -> None:
        self.answer_id = answer_id
        self.results = results
        self.exception = exception
        self.canceled = canceled
        self.release_param_caps = release_param_caps
        #: cara frames only (an encoding with ``implicit_finish``): results that hold no
        #: capability need no ``Finish`` -- nothing can be pipelined on them. On the way out the
        #: core sets it to *allow* that and the encoding leaves it set only if the cap table it
        #: wrote is empty; on the way in it says the callee has already forgotten the answer.
        self.no_finish = no_finish


class Finish(Message):
    __slots__ = ("question_id", "release_result_caps")

    def __init__(self, question_id: int, release_result_caps: bool = True) -> None:
        self.question_id = question_id
        self.release_result_caps = release_result_caps


class Resolve(Message):
    """Exactly one of ``cap`` and ``exception`` is set."""

    __slots__ = ("cap", "exception", "promise_id")

    def __init__(self, promise_id: int, cap: CapDescriptor | None = None,
                 exception: RemoteException | None = None) -> None:
        self.promise_id = promise_id
        self.cap = cap
        self.exception = exception


class Release(Message):
    __slots__ = ("count", "id")

    def __init__(self, id: int, count: int) -> None:
        self.id = id
        self.count = count


class Disembargo(Message):
    """``kind``: ``senderLoopback`` or ``receiverLoopback`` (level 1 needs no others)."""

    __slots__ = ("embargo_id", "kind", "target")

    SENDER_LOOPBACK = "senderLoopback"
    RECEIVER_LOOPBACK = "receiverLoopback"

    def __init__(self, target: Target, kind: str, embargo_id: int) -> None:
        self.target = target
        self.kind = kind
        self.embargo_id = embargo_id


class Abort(Message):
    __slots__ = ("exception",)

    def __init__(self, exception: RemoteException) -> None:
        self.exception = exception


class Unimplemented(Message):
    """The peer did not understand ``message`` (which it echoes back)."""

    __slots__ = ("message",)

    def __init__(self, message: Message | None) -> None:
        self.message = message


class _Capability:
    """The type of :data:`CAPABILITY`."""

    def __repr__(self) -> str:
        return "CAPABILITY"


#: ``struct_cls`` of a payload whose content is one capability, not a struct (the answer to a
#: ``Bootstrap``): the content's root pointer is the capability itself.
CAPABILITY: Any = _Capability()

class Unknown(Message):
    """A received message that level 1 does not model (``provide``, ``accept``, a call whose
    results go elsewhere...): ``what`` names it, ``raw`` is the encoding's own view of it. The
    core answers it with :class:`Unimplemented`, which echoes it back as it came."""

    __slots__ = ("raw", "what")

    def __init__(self, what: str, raw: Any) -> None:
        self.what = what
        self.raw = raw

    def __repr__(self) -> str:
        return f"Unknown({self.what!r})"


#: Called by an encoding for each capability in outgoing content; returns its descriptor.
DescribeCap = Callable[[Any], CapDescriptor]


class Wire(Protocol):
    """An encoding of the messages (one per connection; it may keep per-connection state).

    Optional shortcuts the core uses when an encoding has them (``Connection`` looks them up
    once): ``encode_call``/``encode_results`` write a call or a plain return without message
    objects; ``decode_hot`` is :meth:`decode` that gives the commonest messages as tuples
    (see :func:`from_hot`); ``encode_finishes(question_ids)`` writes Finish messages back to
    back for an encoding whose frames may hold several; ``implicit_finish`` says a return
    holding no capability ends its answer on the callee's side."""

    #: Short name used in errors and URLs (``"cara"``, ``"capnp"``).
    name: str

    def encode(self, msg: Message, describe_cap: DescribeCap) -> bytes:
        """The frame for ``msg``. Outgoing payloads have ``content``; each capability in it is
        replaced by an index into the cap table built from ``describe_cap``'s answers."""
        ...

    def decode(self, frame: bytes | bytearray | memoryview) -> Message:
        """The message in ``frame``, payload contents left raw. Raises ``ProtocolError``
        (never IndexError/struct.error) on anything malformed, naming the byte offset."""
        ...

    def decode_content(self, raw: Any, struct_cls: Any, caps: list[Any]) -> Any:
        """A received payload's content as ``struct_cls`` (a runtime struct class, or ``None``:
        a field-number-keyed dict), its capability indexes replaced by ``caps[i]``."""
        ...

    def transform(self, struct_cls: Any, path: tuple[str, ...]) -> tuple[int, ...]:
        """The steps that reach field ``path`` (names, through nested structs and groups) of a
        ``struct_cls`` value (``None``: field-number dicts, ``path`` holds numbers as text)."""
        ...

    def follow(self, content: Any, transform: tuple[int, ...]) -> Any:
        """The value that ``transform`` reaches inside ``content`` (a struct as
        :meth:`decode_content` returns it, or as a local implementation returned it); ``None``
        where a pointer on the way is null. Raises ``ProtocolError`` for a step that names no
        pointer field."""
        ...


def from_hot(hot: tuple[Any, ...]) -> Message:
    """The message an encoding's ``decode_hot`` tuple stands for (``(content, False)`` is the
    payload's ``raw``): ``(question_id, export_id, interface_id, method_id, content)`` a
    ``Call`` on an export with no capability in its params, else a ``Return`` (see
    :func:`return_from_hot`)."""
    return call_from_hot(hot) if len(hot) == 5 else return_from_hot(hot)


def call_from_hot(hot: tuple[Any, ...]) -> Call:
    """The ``Call`` a ``decode_hot`` 5-tuple stands for."""
    qid, export_id, interface_id, method_id, content = hot
    return Call(qid, ImportedCap(export_id), interface_id, method_id,
                Payload(None, None, raw=(content, False), cap_table=[]))


def return_from_hot(hot: tuple[Any, ...]) -> Return:
    """The ``Return`` a ``decode_hot`` tuple stands for: ``(answer_id, content)`` a final one
    holding no capability, ``(answer_id, content, release_param_caps)`` one of results holding
    none, which a ``Finish`` must follow."""
    results = Payload(None, None, raw=(hot[1], False), cap_table=[])
    if len(hot) == 2:
        return Return(hot[0], results, release_param_caps=False, no_finish=True)
    return Return(hot[0], results, release_param_caps=hot[2])
