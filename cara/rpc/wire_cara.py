"""cara frames: the RPC messages as compact msgpack arrays (the default encoding).

Each frame is one msgpack array whose first item says what it is. Payload contents are cara
structs as msgpack maps keyed by field number (or ``None`` for an empty struct); a capability in
them is an ext type :data:`EXT_CAP` whose data is a msgpack uint, its index in the cap table that
ends the frame. The shapes (ids are non-negative ints)::

    [CALL,        question_id, target, interface_id, method_id, params, cap_table]
    [RETURN,      answer_id, results, cap_table]             (+ release_param_caps when true)
    [RETURN_FINAL, answer_id, results, []]     the same, holding no capability: the callee has
                                               forgotten the answer, the caller sends no Finish
    [ERROR,       answer_id, kind, type_name, reason, trace_or_None]    a Return of an exception
    [CANCELED,    answer_id]                                  a Return for a canceled call
    [FINISH,      question_id]                                (+ 1: release_result_caps)
    [RELEASE,     export_id, count]
    [ABORT,       reason]                                     (+ kind, type_name, trace)
    [BOOTSTRAP,   question_id, interface_id_or_None]
    [RESOLVE,     promise_id, cap_descriptor]                 or
    [RESOLVE,     promise_id, None, kind, type_name, reason, trace]
    [DISEMBARGO,  target, 0 (senderLoopback) | 1 (receiverLoopback), embargo_id]
    [UNIMPLEMENTED, echoed_kind, echoed_id]

``target`` is an int (:class:`~cara.rpc.messages.ImportedCap`) or ``[question_id, step, ...]``
(:class:`~cara.rpc.messages.PromisedAnswer`; steps are field numbers). A cap descriptor is
``[0]`` (none), ``[1, id]`` (senderHosted), ``[2, id]`` (senderPromise), ``[3, id]``
(receiverHosted) or ``[4, question_id, step, ...]`` (receiverAnswer). Exception kinds are
numbers: 0 failed, 1 overloaded, 2 disconnected, 3 unimplemented. An empty cap table costs one
byte, and a call with a short text argument about twenty bytes around it. An ``AnyPointer``
value read from a Cap'n Proto message travels as the codecs' ext type 0x43 (a flat message).
"""

from __future__ import annotations

from typing import Any

import msgpack

from cara.codecs.capnp.reader import EXT_CAPNP_MESSAGE, AnyPointerReader, pointer_from_ext
from cara.rpc import messages as M
from cara.rpc.errors import ProtocolError
from cara.runtime.interface import HOLDS_INTERFACES, may_hold_interfaces, received_values

__all__ = [
    "ABORT",
    "BOOTSTRAP",
    "CALL",
    "CANCELED",
    "DEFAULT_MAX_OBJECTS",
    "DISEMBARGO",
    "ERROR",
    "EXT_CAP",
    "FINISH",
    "KINDS",
    "RELEASE",
    "RESOLVE",
    "RETURN",
    "RETURN_FINAL",
    "UNIMPLEMENTED",
    "CaraWire",
    "field_steps",
    "follow_steps",
]

CALL = 0
RETURN = 1
ERROR = 2
FINISH = 3
RELEASE = 4
ABORT = 5
BOOTSTRAP = 6
RESOLVE = 7
DISEMBARGO = 8
CANCELED = 9
UNIMPLEMENTED = 10
RETURN_FINAL = 11

EXT_CAP = 1
#: The ext values of the first cap-table indexes (made once: an ExtType is a checked tuple).
_CAP_EXTS = tuple(msgpack.ExtType(EXT_CAP, msgpack.packb(i)) for i in range(32))
#: The empty cap table of a payload whose type holds no capability (packed, never changed).
_NO_CAPS: list[Any] = []

#: Exception kinds by wire number (rpc.capnp's ``Exception.Type`` order).
KINDS = ("failed", "overloaded", "disconnected", "unimplemented")
_KIND_NUMBER = {k: i for i, k in enumerate(KINDS)}

_DESC_KINDS = (M.CapDescriptor.NONE, M.CapDescriptor.SENDER_HOSTED,
               M.CapDescriptor.SENDER_PROMISE, M.CapDescriptor.RECEIVER_HOSTED,
               M.CapDescriptor.RECEIVER_ANSWER)
_DESC_NUMBER = {k: i for i, k in enumerate(_DESC_KINDS)}
_MAX_DEPTH = 64
#: Maps and arrays one frame may decode into (the work and memory a message can cost).
DEFAULT_MAX_OBJECTS = 100_000


class _CapIndex:
    """A capability reference in decoded content, before the core has its object."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0 or value > 0xFFFFFFFF:
        raise ProtocolError(f"bad {what}: {value!r}")
    return value


def _steps(items: Any, what: str) -> tuple[int, ...]:
    if len(items) > _MAX_DEPTH:
        raise ProtocolError(f"{what}: more than {_MAX_DEPTH} steps")
    for s in items:
        if type(s) is not int or not 0 <= s <= 0xFFFFFFFF:
            _uint(s, what)  # raises, worded as every id
    return tuple(items)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _exception(kind: Any, type_name: Any, reason: Any, trace: Any) -> M.RemoteException:
    k = KINDS[kind] if type(kind) is int and 0 <= kind < len(KINDS) else "failed"
    return M.RemoteException(k, _text(reason), type_name if isinstance(type_name, str) else "",
                             trace if isinstance(trace, str) else None)


def _exception_items(e: M.RemoteException) -> list[Any]:
    return [_KIND_NUMBER.get(e.kind, 0), e.type_name, e.reason, e.trace]


class CaraWire:
    """The cara-frames encoding (see the module docstring); one per connection.

    A received frame decodes into at most ``max_objects`` maps and arrays: each becomes Python
    objects (and the struct conversion more), so a small frame of tiny maps would otherwise cost
    far more memory and time than its size. Frames longer than ``max_objects`` bytes are
    counted as they decode (shorter ones cannot hold more); over the limit is a
    :class:`~cara.rpc.errors.ProtocolError` before more is allocated."""

    name = "cara"
    #: A return holding no capability can tell the caller that no Finish is needed.
    implicit_finish = True

    def __init__(self, max_objects: int = DEFAULT_MAX_OBJECTS) -> None:
        self.max_objects = max_objects
        self._objects = 0
        self._describe: Any = None
        self._table: list[Any] = []
        # A small first buffer (it grows as needed): msgpack's default 256 KiB would be
        # allocated for every connection, 256 MB for a thousand idle ones.
        self._packer = msgpack.Packer(default=self._pack_cap, buf_size=4096)
        self._frame_caps = False
        self._ext_hook = self._unpack_cap

    # ------------------------------------------------------------------ encoding

    def _pack_cap(self, obj: Any) -> msgpack.ExtType:
        if isinstance(obj, AnyPointerReader):  # an AnyPointer value read from binary
            return msgpack.ExtType(EXT_CAPNP_MESSAGE, obj.to_flat())
        describe = self._describe
        if describe is None:
            raise TypeError(f"cannot send a {type(obj).__name__} here (not a capability)")
        table = self._table
        table.append(self._descriptor(describe(obj)))
        index = len(table) - 1
        if index < len(_CAP_EXTS):
            return _CAP_EXTS[index]
        return msgpack.ExtType(EXT_CAP, msgpack.packb(index))

    @staticmethod
    def _descriptor(d: M.CapDescriptor) -> list[Any]:
        n = _DESC_NUMBER[d.kind]
        if n == 4:
            assert d.answer is not None
            return [4, d.answer.question_id, *d.answer.transform]
        if n == 0:
            return [0]
        return [n, d.id]

    @staticmethod
    def _target(t: M.Target) -> Any:
        if isinstance(t, M.ImportedCap):
            return t.id
        return [t.question_id, *t.transform]

    def _with_caps(self, items: list[Any], describe: M.DescribeCap, *tail: Any) -> bytes:
        table: list[Any] = []
        items.append(table)  # filled while the content before it is packed
        items.extend(tail)
        self._describe, self._table = describe, table
        try:
            out: bytes = self._packer.pack(items)
        finally:
            self._describe = None
            self._table = []
        return out

    def encode_call(self, question_id: int, target: M.Target, interface_id: int,
                    method_id: int, params: Any, param_cls: Any,
                    describe_cap: M.DescribeCap) -> bytes:
        """A ``Call`` frame, without the message objects (every call comes this way)."""
        t = target.id if type(target) is M.ImportedCap else self._target(target)
        if HOLDS_INTERFACES.get(param_cls) is False or (
                param_cls is not None and param_cls is not M.CAPABILITY
                and not may_hold_interfaces(param_cls)):
            # no capability can be met: no cap table
            return self._packer.pack([CALL, question_id, t, interface_id, method_id, params,
                                      _NO_CAPS])
        return self._with_caps([CALL, question_id, t, interface_id, method_id, params],
                               describe_cap)

    def encode_results(self, answer_id: int, results: Any, result_cls: Any, final: bool,
                       describe_cap: M.DescribeCap) -> tuple[bytes, bool]:
        """A ``Return`` of ``results`` without the message objects, and whether it is final:
        asked to be (``final``) and holding no capability, so no ``Finish`` will follow."""
        if final and (HOLDS_INTERFACES.get(result_cls) is False or (
                result_cls is not None and result_cls is not M.CAPABILITY
                and not may_hold_interfaces(result_cls))):
            # no capability can be met: final
            return self._packer.pack([RETURN_FINAL, answer_id, results, _NO_CAPS]), True
        items = [RETURN, answer_id, results]
        frame = self._with_caps(items, describe_cap)
        if final and not items[3]:  # [RETURN, ...] -> [RETURN_FINAL, ...]: the second byte
            return b"%c%c%s" % (frame[0], RETURN_FINAL, frame[2:]), True
        return frame, False

    def encode(self, msg: M.Message, describe_cap: M.DescribeCap) -> bytes:
        pack = self._packer.pack
        t = type(msg)
        if t is M.Call:
            assert isinstance(msg, M.Call)
            return self.encode_call(msg.question_id, msg.target, msg.interface_id,
                                    msg.method_id, msg.params.content, msg.params.struct_cls,
                                    describe_cap)
        if t is M.Return:
            assert isinstance(msg, M.Return)
            if msg.exception is not None:
                return pack([ERROR, msg.answer_id, *_exception_items(msg.exception)])
            if msg.canceled or msg.results is None:
                return pack([CANCELED, msg.answer_id])
            items = [RETURN, msg.answer_id, msg.results.content]
            if msg.release_param_caps:
                frame = self._with_caps(items, describe_cap, True)
            else:
                frame = self._with_caps(items, describe_cap)
            if msg.no_finish:
                if items[3]:  # it holds capabilities: a Finish must follow
                    msg.no_finish = False
                else:  # [RETURN, ...] -> [RETURN_FINAL, ...]: the kind is the second byte
                    return b"%c%c%s" % (frame[0], RETURN_FINAL, frame[2:])
            return frame
        if t is M.Finish:
            assert isinstance(msg, M.Finish)
            if msg.release_result_caps:
                return pack([FINISH, msg.question_id, 1])
            return pack([FINISH, msg.question_id])
        if t is M.Release:
            assert isinstance(msg, M.Release)
            return pack([RELEASE, msg.id, msg.count])
        if t is M.Bootstrap:
            assert isinstance(msg, M.Bootstrap)
            return pack([BOOTSTRAP, msg.question_id, msg.interface_id])
        if t is M.Resolve:
            assert isinstance(msg, M.Resolve)
            if msg.exception is not None:
                return pack([RESOLVE, msg.promise_id, None, *_exception_items(msg.exception)])
            assert msg.cap is not None
            return pack([RESOLVE, msg.promise_id, self._descriptor(msg.cap)])
        if t is M.Disembargo:
            assert isinstance(msg, M.Disembargo)
            loop = 0 if msg.kind == M.Disembargo.SENDER_LOOPBACK else 1
            return pack([DISEMBARGO, self._target(msg.target), loop, msg.embargo_id])
        if t is M.Abort:
            assert isinstance(msg, M.Abort)
            e = msg.exception
            return pack([ABORT, e.reason, _KIND_NUMBER.get(e.kind, 0), e.type_name, e.trace])
        if t is M.Unimplemented:
            assert isinstance(msg, M.Unimplemented)
            echoed = msg.message
            ident = getattr(echoed, "question_id", getattr(echoed, "answer_id", None))
            return pack([UNIMPLEMENTED, type(echoed).__name__, ident])
        raise TypeError(f"not an RPC message: {msg!r}")

    # ------------------------------------------------------------------ decoding

    def _unpack_cap(self, code: int, data: bytes) -> Any:
        if code == EXT_CAPNP_MESSAGE:
            try:
                return pointer_from_ext(data)
            except Exception as exc:
                raise ProtocolError(f"bad AnyPointer value: {exc}") from None
        if code != EXT_CAP:
            raise ProtocolError(f"unknown ext type {code} in a payload")
        self._frame_caps = True
        if len(data) == 1 and data[0] < 0x80:  # a positive fixint: the common small index
            return _CapIndex(data[0])
        return _CapIndex(_uint(msgpack.unpackb(data), "capability index"))

    def _count(self, obj: Any) -> Any:
        self._objects += 1
        if self._objects > self.max_objects:
            raise ProtocolError(f"the frame decodes into more than {self.max_objects} maps and "
                                "arrays (max_objects)")
        return obj

    def _payload(self, content: Any, table: Any) -> M.Payload:
        if table:
            caps = [self._read_descriptor(d) for d in table]
        elif self._frame_caps:
            raise ProtocolError("a capability in a payload without a cap table")
        else:
            return M.Payload(None, None, raw=(content, False), cap_table=[])
        return M.Payload(None, None, raw=(content, self._frame_caps), cap_table=caps)

    @staticmethod
    def _read_descriptor(d: Any) -> M.CapDescriptor:
        if type(d) is not list or not d or type(d[0]) is not int or not 0 <= d[0] <= 4:
            raise ProtocolError(f"bad capability descriptor {d!r}")
        n = d[0]
        if n == 0:
            return M.CapDescriptor(M.CapDescriptor.NONE)
        if n == 4:
            if len(d) < 2:
                raise ProtocolError(f"bad capability descriptor {d!r}")
            return M.CapDescriptor(M.CapDescriptor.RECEIVER_ANSWER, answer=M.PromisedAnswer(
                _uint(d[1], "question id"), _steps(d[2:], "transform")))
        if len(d) != 2:
            raise ProtocolError(f"bad capability descriptor {d!r}")
        return M.CapDescriptor(_DESC_KINDS[n], _uint(d[1], "export id"))

    @staticmethod
    def _read_target(t: Any) -> M.Target:
        if type(t) is int:
            return M.ImportedCap(_uint(t, "import id"))
        if type(t) is list and t:
            return M.PromisedAnswer(_uint(t[0], "question id"), _steps(t[1:], "transform"))
        raise ProtocolError(f"bad call target {t!r}")

    def decode(self, frame: bytes | bytearray | memoryview) -> M.Message:
        msg = self.decode_hot(frame)
        return M.from_hot(msg) if isinstance(msg, tuple) else msg

    def decode_hot(self, frame: bytes | bytearray | memoryview) -> M.Message | tuple[Any, ...]:
        """:meth:`decode`, except that the two commonest frames come back as tuples, with no
        message objects (the core's optional shortcut, see ``Connection.receive``): a final
        ``Return`` holding no capability (the answer to a plain call) as ``(answer_id,
        content)``, and a ``Call`` on an export with no capability in its params as
        ``(question_id, export_id, interface_id, method_id, content)``."""
        self._frame_caps = False
        size = len(frame)
        count: Any = None
        if size > self.max_objects:
            self._objects = 0
            count = self._count
        try:
            # (unpackb bounds every str, bin, ext, array and map by the frame's length, half
            # of it for maps, so a frame cannot make it allocate more than it could hold)
            if count is None:
                msg = msgpack.unpackb(frame, ext_hook=self._ext_hook, strict_map_key=False)
            else:
                msg = msgpack.unpackb(frame, ext_hook=self._ext_hook, strict_map_key=False,
                                      object_hook=count, list_hook=count)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}") from None
        if type(msg) is not list or not msg or type(msg[0]) is not int:
            raise ProtocolError("a frame must be an array starting with its message type")
        if msg[0] == CALL and len(msg) == 7 and not msg[6] and not self._frame_caps:
            # a call on an export with no capability in its params: the other common frame
            _, qid, target, iid, mid, params, _ = msg
            if type(target) is int and 0 <= target <= 0xFFFFFFFF and type(qid) is int and \
                    0 <= qid <= 0xFFFFFFFF and type(iid) is int and 0 <= iid < 1 << 64 and \
                    type(mid) is int and 0 <= mid <= 0xFFFF:
                return qid, target, iid, mid, params
        elif msg[0] == RETURN_FINAL and len(msg) == 4 and not msg[3] and not self._frame_caps:
            # the commonest frame, decoded here (what _message does for it)
            aid = msg[1]
            if type(aid) is not int or not 0 <= aid <= 0xFFFFFFFF:
                raise ProtocolError(f"bad answer id: {aid!r}")
            return aid, msg[2]
        try:
            return self._message(msg)
        except ProtocolError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise ProtocolError(f"malformed message {msg[0]}: {type(exc).__name__}: {exc}") \
                from None

    def _message(self, msg: list[Any]) -> M.Message:
        kind = msg[0]
        n = len(msg)
        if kind == CALL and n == 7:
            _, qid, target, iid, mid, params, table = msg
            if type(iid) is not int or not 0 <= iid < 1 << 64:
                raise ProtocolError(f"bad interface id {iid!r}")
            if type(target) is int and 0 <= target <= 0xFFFFFFFF:  # the common target
                target = M.ImportedCap(target)
            else:
                target = self._read_target(target)
            if type(qid) is not int or not 0 <= qid <= 0xFFFFFFFF:
                qid = _uint(qid, "question id")
            if type(mid) is not int or not 0 <= mid <= 0xFFFF:
                mid = _uint(mid, "method id")
            return M.Call(qid, target, iid, mid, self._payload(params, table))
        if (kind == RETURN or kind == RETURN_FINAL) and n in (4, 5):
            release = n == 5 and msg[4] is True
            final = kind == RETURN_FINAL
            if final and msg[3]:
                raise ProtocolError("a final return holds capabilities")
            return M.Return(_uint(msg[1], "answer id"), self._payload(msg[2], msg[3]),
                            release_param_caps=release, no_finish=final)
        if kind == FINISH and n in (2, 3):
            return M.Finish(_uint(msg[1], "question id"), n == 3 and msg[2] == 1)
        if kind == ERROR and n == 6:
            return M.Return(_uint(msg[1], "answer id"), exception=_exception(*msg[2:6]))
        if kind == CANCELED and n == 2:
            return M.Return(_uint(msg[1], "answer id"), canceled=True)
        if kind == RELEASE and n == 3:
            return M.Release(_uint(msg[1], "export id"), _uint(msg[2], "reference count"))
        if kind == BOOTSTRAP and n == 3:
            iid = msg[2]
            if iid is not None and (type(iid) is not int or not 0 <= iid < 1 << 64):
                raise ProtocolError(f"bad interface id {iid!r}")
            return M.Bootstrap(_uint(msg[1], "question id"), iid)
        if kind == RESOLVE and n == 3:
            return M.Resolve(_uint(msg[1], "promise id"), cap=self._read_descriptor(msg[2]))
        if kind == RESOLVE and n == 7 and msg[2] is None:
            return M.Resolve(_uint(msg[1], "promise id"), exception=_exception(*msg[3:7]))
        if kind == DISEMBARGO and n == 4 and msg[2] in (0, 1):
            loop = M.Disembargo.SENDER_LOOPBACK if msg[2] == 0 else M.Disembargo.RECEIVER_LOOPBACK
            return M.Disembargo(self._read_target(msg[1]), loop, _uint(msg[3], "embargo id"))
        if kind == ABORT and n in (2, 5):
            if n == 2:
                return M.Abort(M.RemoteException("failed", _text(msg[1])))
            return M.Abort(_exception(msg[2], msg[3], msg[1], msg[4]))
        if kind == UNIMPLEMENTED and n == 3:
            return M.Unimplemented(None)
        raise ProtocolError(f"unknown message type {kind!r} (or {n} items)")

    def decode_content(self, raw: Any, struct_cls: Any, caps: list[Any]) -> Any:
        content, has_caps = raw
        if has_caps:
            content = _replace_caps(content, caps, 0)
        if struct_cls is M.CAPABILITY:
            return content
        if type(content) is dict and HOLDS_INTERFACES.get(struct_cls) is False:
            return struct_cls(content)  # the common case, checked as below
        if struct_cls is None:
            if content is not None and type(content) is not dict:
                raise TypeError("a payload must be a map")
            return content
        if content is None:
            return struct_cls()
        if type(content) is not dict:
            raise TypeError(f"a {getattr(struct_cls, '_cara_name_', 'struct')} payload "
                            "must be a map")
        if may_hold_interfaces(struct_cls):
            with received_values():  # a map where a capability belongs is refused, not wrapped
                return struct_cls(content)
        return struct_cls(content)

    # ------------------------------------------------------------------ pipelining

    def transform(self, struct_cls: Any, path: tuple[str, ...]) -> tuple[int, ...]:
        return field_steps(struct_cls, path)

    def follow(self, content: Any, transform: tuple[int, ...]) -> Any:
        return follow_steps(content, transform)


def field_steps(struct_cls: Any, path: tuple[str, ...]) -> tuple[int, ...]:
    """Field numbers reaching ``path`` (names; numbers as text where ``struct_cls`` is None)."""
    steps: list[int] = []
    cls = struct_cls
    for name in path:
        if cls is None:
            steps.append(int(name))
            continue
        schema = cls.cara_schema
        f = schema.by_name.get(name)
        if f is None:
            num = schema.attr_num.get(name)
            f = schema.fields[num] if num is not None else None
        if f is None:
            raise AttributeError(f"{schema.name} has no field {name!r}")
        steps.append(f.number)
        cls = getattr(f.type, "cls", None) if f.type.kind == "struct" else None
    return tuple(steps)


def follow_steps(content: Any, steps: tuple[int, ...]) -> Any:
    """The value that field numbers ``steps`` reach in ``content`` (None past a null)."""
    value = content
    for step in steps:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ProtocolError(f"transform step {step} does not name a field of a struct")
        value = dict.get(value, step)
    return value


def _replace_caps(value: Any, caps: list[Any], depth: int) -> Any:
    """Put the capability objects in place of the indexes in decoded content (in place)."""
    if depth > _MAX_DEPTH:
        raise ProtocolError(f"payload nested more than {_MAX_DEPTH} levels")
    if isinstance(value, _CapIndex):
        if value.index >= len(caps):
            raise ProtocolError(f"capability index {value.index} outside the cap table "
                                f"of {len(caps)}")
        return caps[value.index]
    if type(value) is dict:
        for k, v in value.items():
            if type(v) in (dict, list, _CapIndex):
                value[k] = _replace_caps(v, caps, depth + 1)
    elif type(value) is list:
        for i, v in enumerate(value):
            if type(v) in (dict, list, _CapIndex):
                value[i] = _replace_caps(v, caps, depth + 1)
    return value
