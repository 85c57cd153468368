"""Cap'n Proto's own encoding of the RPC messages: rpc.capnp ``Message`` structs in standard
stream framing (the two-party vat network of rpc-twoparty.capnp), as libcapnp and pycapnp speak.

:class:`CapnpWire` implements :class:`cara.rpc.messages.Wire`; :class:`CapnpFramer` cuts a byte
stream into framed messages. The envelope (``Message``, ``Call``, ``Return``, ``Payload``,
``CapDescriptor``, ...) is read and written here directly with the binary codec's bounds-checked
primitives, at the offsets rpc.capnp's layout gives them (wire-stable since 0.5; the tests check
each against the bundled schema's nodes), because it is on the hot path of every call; the
envelopes laid out as this module writes them (a Call to an imported capability or a promised
answer, a Return of results, with or without a cap table, Finish, Release) are recognized by
their fixed words and read without walking the envelope's pointers, anything else takes the
general, pointer-following path. For the core's per-call path, :meth:`CapnpWire.encode_call`
and :meth:`~CapnpWire.encode_results` write a Call or Return with no message objects (the
envelope as one ``bytes`` head, the content behind it written by the binary codec's C path in
the same call where it can be), :meth:`~CapnpWire.decode_hot` gives the plain Call and Return
as tuples (recognized in C when the accelerator is built), :meth:`~CapnpWire.encode_finishes`
writes Finish messages back to back, and :class:`CapnpFramer` cuts plain one-segment
messages from the stream in C. A frame handed to the connection's ``send`` may therefore hold
several framed messages (a caller's due Finishes ride with its next call): it is a piece of
the byte stream, as this encoding's framing expects. Params and
results are real Cap'n Proto structs written and read by the schema codec
(:mod:`cara.codecs.capnp.schema_codec`), one per schema builder, whose capability and
AnyPointer hooks are replaced here:

* encoding, every capability met in the content (a non-``None`` value of an interface or
  ``Capability`` field, at any depth: nested structs, groups, unions, lists; or an AnyPointer
  value that is none of struct, Text, Data, received pointer) becomes a capability pointer to the
  next cap-table entry, whose descriptor ``describe_cap(value)`` returns (called in order);
* decoding (:meth:`CapnpWire.decode_content`), capability pointer ``i`` becomes ``caps[i]`` as
  it is (the struct's field converter makes the typed proxy through ``__cara_cast__``); an
  AnyPointer field holding a capability pointer gets ``caps[i]`` too, any other AnyPointer an
  :class:`~cara.codecs.capnp.reader.AnyPointerReader` whose message's ``cap_table`` is ``caps``.

Choices where rpc.capnp leaves room, or where cara's messages carry more:

* ``RemoteException.type_name`` travels in the reason text as ``"TypeName: reason"`` (what a
  pycapnp or C++ peer shows as is); a received reason is split back only when its prefix is a
  plain identifier followed by ``": "``. ``trace`` is ``Exception.trace`` (rpc.capnp @4, in
  0.9.2 and 1.x alike). The kinds are rpc.capnp's ``Exception.Type`` names; an unknown type
  number reads as ``failed``.
* ``Bootstrap.interface_id`` (a cara-frames feature) is not sent; ``deprecatedObjectId`` is null.
* ``Finish`` is sent with ``requireEarlyCancellationWorkaround = false``, as libcapnp 1.x does.
* A message this level-1 encoding does not model (``provide``, ``accept``, ``join``, the
  obsolete ones, a ``Call`` with ``sendResultsTo`` other than ``caller``, a ``Return`` of kind
  ``resultsSentElsewhere``/``takeFromOtherQuestion``/``awaitFromThirdParty``, a ``Disembargo``
  of context ``accept``/``provide``, an unknown union member) decodes to :class:`Unknown`, which
  keeps the whole message; ``encode(Unimplemented(unknown))`` echoes it verbatim, as rpc.capnp
  asks.
* A payload of ``struct_cls`` :data:`~cara.rpc.messages.CAPABILITY` (a bootstrap's answer):
  ``content`` is one capability, written as a capability pointer with index 0 (or ``None``: a
  null pointer). ``struct_cls`` ``None`` (field-number dicts, interfaces described without
  runtime classes) raises ``TypeError``: this encoding needs the classes. A payload with ``raw``
  set and ``content`` ``None`` (a received one passed on) is copied as it is, with its
  ``cap_table``.
* Transforms are ``getPointerField`` indexes: the field's slot in its struct's pointer section
  (a group adds no step, a nested struct one).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

from cara.codecs.capnp import accel as _binary_accel
from cara.codecs.capnp.builder import MessageBuilder, copy_pointer
from cara.codecs.capnp.framing import DEFAULT_MAX_SEGMENTS, read_framed
from cara.codecs.capnp.reader import (
    DEFAULT_NESTING_LIMIT,
    DEFAULT_TRAVERSAL_LIMIT,
    AnyPointerReader,
    _charge,
    list_at,
    resolve,
    struct_at,
    text_at,
)
from cara.codecs.capnp.reader import Message as _Segments
from cara.codecs.capnp.schema_codec import SchemaCodec
from cara.codecs.capnp.schema_codec import _encode_data as _data
from cara.codecs.capnp.schema_codec import _encode_text as _text
from cara.codecs.capnp.structs import _from_sparse, c_plan, model_type, replaced_nodes
from cara.codecs.capnp.unknown import SEEN as _SEEN
from cara.codecs.capnp.unknown import encode_struct as _encode_kept
from cara.codecs.capnp.unknown import record_of as _record_of
from cara.errors import DecodeError, EncodeError, ValueTypeError
from cara.rpc.errors import ProtocolError
from cara.rpc.messages import (
    CAPABILITY,
    Abort,
    Bootstrap,
    Call,
    CapDescriptor,
    DescribeCap,
    Disembargo,
    Finish,
    ImportedCap,
    Message,
    Payload,
    PromisedAnswer,
    Release,
    RemoteException,
    Resolve,
    Return,
    Unimplemented,
    Unknown,
)
from cara.runtime.interface import HOLDS_INTERFACES, may_hold_interfaces
from cara.schema.model import PointerValue

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "CapnpFramer",
    "CapnpWire",
    "Unknown",
]

#: The largest framed message a :class:`CapnpFramer` accepts by default (as the asyncio
#: transport's ``DEFAULT_MAX_FRAME_SIZE``).
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_PTR = struct.Struct("<iI")
_PP = _PTR.pack_into
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_C_HEAD = struct.Struct("<IIII").pack
#: The head of a lone struct's message for ``_C.encode``'s longer form: the segment table and
#: the root pointer (the struct follows)
_NO_HEAD = bytes(16)
#: The binary codec's C path (None without it): it reads and writes plain payloads.
_C = _binary_accel.binary
_C_BAIL: Any = _C.BAIL if _C is not None else object()
#: The C path's envelope recognizer and stream cutter (see decode_hot, CapnpFramer), or None.
_C_HOT: Any = getattr(_C, "rpc_hot", None)
_C_ENVELOPE: Any = getattr(_C, "rpc_envelope", None)
_C_SPLIT: Any = getattr(_C, "split", None)
_U32x2 = struct.Struct("<II").unpack_from
_HH = struct.Struct("<HH").unpack_from
_HxxI = struct.Struct("<HxxI").unpack_from
_II = struct.Struct("<II").pack_into

# rpc.capnp ``Message`` union members, by discriminant.
_MESSAGE_KINDS = ("unimplemented", "abort", "call", "return", "finish", "resolve", "release",
                  "obsoleteSave", "bootstrap", "obsoleteDelete", "provide", "accept", "join",
                  "disembargo", "thirdPartyAnswer")
_UNIMPLEMENTED, _ABORT, _CALL, _RETURN, _FINISH, _RESOLVE, _RELEASE = range(7)
_BOOTSTRAP, _DISEMBARGO = 8, 13

_EXCEPTION_KINDS = ("failed", "overloaded", "disconnected", "unimplemented")
_EXCEPTION_NUMBER = {k: i for i, k in enumerate(_EXCEPTION_KINDS)}
_RETURN_KINDS = ("results", "exception", "canceled", "resultsSentElsewhere",
                 "takeFromOtherQuestion", "awaitFromThirdParty")
_CAP_KINDS = (CapDescriptor.NONE, CapDescriptor.SENDER_HOSTED, CapDescriptor.SENDER_PROMISE,
              CapDescriptor.RECEIVER_HOSTED, CapDescriptor.RECEIVER_ANSWER, "thirdPartyHosted")
_CAP_NUMBER = {k: i for i, k in enumerate(_CAP_KINDS)}
if _C is not None and hasattr(_C, "set_cap_kinds"):
    _C.set_cap_kinds({k: i for k, i in _CAP_NUMBER.items() if i < 5})  # (C writes these)
_DISEMBARGO_KINDS = (Disembargo.SENDER_LOOPBACK, Disembargo.RECEIVER_LOOPBACK, "accept",
                     "provide")
_DISEMBARGO_NUMBER = {Disembargo.SENDER_LOOPBACK: 0, Disembargo.RECEIVER_LOOPBACK: 1}
_NULL = bytes(8)
_TYPE_PREFIX = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): ")

#: rpc.capnp's struct sizes ``(data words, pointer count)`` as this module writes them (the
#: offsets used below are listed in the tests, which check them against the schema).
LAYOUT = {
    "Message": (1, 1), "Bootstrap": (1, 1), "Call": (3, 3), "Return": (2, 1), "Finish": (1, 0),
    "Resolve": (1, 1), "Release": (1, 0), "Disembargo": (1, 2), "MessageTarget": (1, 1),
    "Payload": (0, 2), "CapDescriptor": (1, 1), "PromisedAnswer": (1, 1),
    "PromisedAnswer.Op": (1, 0), "Exception": (1, 3),
}


def _error(text: str, offset: int | None) -> ProtocolError:
    err = ProtocolError(f"capnp message: {text}" +
                        ("" if offset is None else f" (at byte {offset})"))
    err.offset = offset  # type: ignore[attr-defined]
    return err


def _from_decode_error(exc: DecodeError) -> ProtocolError:
    text = str(exc)
    suffix = f" (at byte {exc.offset})"
    if exc.offset is not None and text.endswith(suffix):
        text = text[:-len(suffix)]
    return _error(text, exc.offset)


# =================================================================================== framing


class CapnpFramer:
    """Cuts a byte stream into framed Cap'n Proto messages (segment table + segments).

    ``feed(data)`` takes any chunk of the stream and returns the messages it completed, each as
    one ``bytes`` object ready for :meth:`CapnpWire.decode`. The segment table is checked as
    soon as it has arrived: more than ``max_segments`` segments or a total above
    ``max_message_size`` bytes raises :class:`~cara.rpc.errors.ProtocolError` before the body
    is buffered, so memory stays bounded by ``max_message_size`` plus one chunk.
    """

    __slots__ = ("_buf", "_need", "max_message_size", "max_segments", "offset")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *,
                 max_segments: int = DEFAULT_MAX_SEGMENTS) -> None:
        self.max_message_size = max_message_size
        self.max_segments = max_segments
        self._buf = bytearray()
        #: size of the message at the head of the buffer, once its table is known
        self._need = 0
        #: stream offset of the buffer's first byte (for error messages)
        self.offset = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        if not buf and self._need == 0:
            # nothing pending: cut straight from the chunk, copying only what is left over
            out, used = self._cut(data)
            if used < len(data):
                buf += memoryview(data)[used:]
            self.offset += used
            return out
        buf += data
        out, used = self._cut(buf)
        if used:
            del buf[:used]
            self.offset += used
        return out

    def _cut(self, data: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
        pos = 0
        if _C_SPLIT is not None and self._need == 0:
            # the plain one-segment messages in C; what follows them (the incomplete message
            # at the end, anything unusual, every error) below
            out, pos = _C_SPLIT(data, self.max_message_size)
        else:
            out = []
        n = len(data)
        while True:
            need = self._need
            if need == 0:
                need = self._size(data, pos, n)
                if need == 0:
                    return out, pos
                self._need = need
            if n - pos < need:
                return out, pos
            out.append(bytes(data[pos:pos + need]))
            pos += need
            self._need = 0

    def _size(self, data: bytes | bytearray | memoryview, pos: int, n: int) -> int:
        """The framed size of the message at ``pos``, 0 while its table is incomplete."""
        if n - pos < 8:
            if n - pos < 4 or _U32(data, pos)[0] == 0:
                return 0
            count, first = _U32(data, pos)[0], 0  # the count is checked at once
        else:
            count, first = _U32x2(data, pos)
        if count == 0:  # one segment, the common case
            size = 8 + 8 * first
            if size > self.max_message_size:
                raise _error(f"message of {size} bytes is larger than the limit "
                             f"{self.max_message_size}", self.offset + pos)
            if first == 0:
                raise _error("the first segment is empty (no root pointer)", self.offset + pos)
            return size
        count += 1
        if count > self.max_segments:
            raise _error(f"message has {count} segments, more than the limit "
                         f"{self.max_segments}", self.offset + pos)
        table = (4 + 4 * count + 7) & ~7
        if n - pos < table:
            return 0
        sizes = struct.unpack_from(f"<{count}I", data, pos + 4)
        size = table + 8 * sum(sizes)
        if size > self.max_message_size:
            raise _error(f"message of {size} bytes is larger than the limit "
                         f"{self.max_message_size}", self.offset + pos)
        if sizes[0] == 0:
            raise _error("the first segment is empty (no root pointer)", self.offset + pos)
        return size

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)


# =========================================================================== payload content

#: The payloads being encoded, by the ``id`` of the buffer they are written into: its
#: ``describe_cap`` and the cap table it builds (keyed by buffer, so that encodes in other
#: threads, or one that ``describe_cap`` itself starts, keep their own tables).
_ENCODING: dict[int, tuple[DescribeCap, list[CapDescriptor]]] = {}


def _cap_encode(buf: bytearray, ptr_pos: int, value: Any) -> None:
    describe, table = _ENCODING[id(buf)]
    index = len(table)
    table.append(describe(value))
    _PP(buf, ptr_pos, 3, index)


def _cap_object(msg: _Segments, pos: int, index: int) -> Any:
    table = msg.cap_table
    if index >= len(table):
        raise DecodeError(f"capability index {index} is outside the payload's cap table "
                          f"({len(table)} entries)", pos)
    return table[index]


def _cap_decode(msg: _Segments, seg: int, pos: int) -> Any:
    kind, _s, _t, _lo, hi = resolve(msg, seg, pos)
    if kind < 0:
        return None
    if kind != 3:
        raise DecodeError(f"expected a capability pointer, found a "
                          f"{'struct' if kind == 0 else 'list'} pointer", pos)
    return _cap_object(msg, pos, hi)


def _any_decode(msg: _Segments, seg: int, pos: int, nest: int) -> Any:
    kind, _s, _t, _lo, hi = resolve(msg, seg, pos)
    if kind < 0:
        return None
    if kind == 3:
        return _cap_object(msg, pos, hi)
    return AnyPointerReader(msg, seg, pos, nest)


class _Redescribing(MessageBuilder):
    """The message being built, as the target of a copy whose capability pointers are
    described anew: index ``i`` of the source message names ``source.cap_table[i]`` (the
    objects a received payload was decoded with), which gets an entry of the outgoing table."""

    __slots__ = ("source",)

    def __init__(self, buf: bytearray, source: _Segments) -> None:
        self.buf = buf
        self.source = source

    def set_capability(self, ptr_pos: int, index: int) -> None:
        table = self.source.cap_table
        if index >= len(table):
            raise ValueTypeError("", f"a received AnyPointer value names capability {index}, "
                                     f"which its message's cap table ({len(table)}) lacks")
        _cap_encode(self.buf, ptr_pos, table[index])


def _write_struct(buf: bytearray, ptr_pos: int, value: Any) -> None:
    """Write runtime struct ``value`` (of its own class) at pointer ``ptr_pos``."""
    codec, _key, plan = _content_codec(type(value))
    if _SEEN[0]:
        u = _record_of(value)
        if u is not None and u.loc is not None:  # (a newer schema's data: see unknown.py)
            _encode_kept(codec, plan, buf, ptr_pos, value, u)
            return
    dw, pc = plan.data_words, plan.pointer_count
    pos = len(buf)
    if dw + pc == 0:
        _PP(buf, ptr_pos, -4, 0)
        return
    buf += bytes((dw + pc) * 8)
    _PP(buf, ptr_pos, (pos - ptr_pos - 8) >> 1, dw | pc << 16)
    plan.encode(buf, pos, pos + dw * 8, value)


def _any_encoder(default: Any) -> Any:
    """An AnyPointer field's writer: a received pointer is copied (its capabilities described
    anew), a runtime struct written as its own class, ``str`` as Text, ``bytes`` as Data, a
    typed :class:`~cara.schema.model.PointerValue` by the codec (``default``); anything else
    that is not a plain container is a capability."""
    def any_encode(buf: bytearray, ptr_pos: int, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, AnyPointerReader):
            if value.pos >= 0:
                copy_pointer(_Redescribing(buf, value.msg), ptr_pos, value.msg, value.seg,
                             value.pos, value.nesting)
        elif isinstance(value, dict) and hasattr(type(value), "cara_schema"):
            _write_struct(buf, ptr_pos, value)
        elif isinstance(value, str):
            _text(buf, ptr_pos, value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            _data(buf, ptr_pos, bytes(value))
        elif isinstance(value, PointerValue):
            default(buf, ptr_pos, value)
        elif isinstance(value, (list, tuple, Mapping)):
            raise ValueTypeError("", f"an AnyPointer value must be a struct, Text, Data, a "
                                     f"capability or a received pointer, not a plain "
                                     f"{type(value).__name__}")
        else:
            _cap_encode(buf, ptr_pos, value)
    return any_encode


def _payload_codec(builder: Any) -> Any:
    """The schema codec (index keys, sparse decoding) for a builder's structs in payloads, with
    this module's capability and AnyPointer hooks (one per builder, made on first use)."""
    codec = getattr(builder, "_capnp_rpc_codec", None)
    if codec is None:
        nodes = replaced_nodes(builder) if builder.replacements else builder.nodes
        codec = SchemaCodec(nodes, pointer_defaults=False, keys="index", sparse=True)
        ns = codec.ns
        ns["cap_encode"] = _cap_encode
        ns["cap_decode"] = _cap_decode
        ns["any_encode"] = _any_encoder(ns["any_encode"])
        ns["any_decode"] = _any_decode
        ns["kept_target"] = _Redescribing  # (unknown data's capabilities: described anew)
        builder._capnp_rpc_codec = codec
    return codec


def _content_codec(cls: Any) -> tuple[Any, Any, Any]:
    """``(codec, plan key, plan)`` of runtime struct class ``cls`` (cached on the class)."""
    found = cls.__dict__.get("_cara_capnp_rpc_")
    if found is not None:
        return found
    schema: Any = getattr(cls, "cara_schema", None)
    builder = getattr(schema, "builder", None)
    if schema is None or builder is None:
        raise TypeError(f"{getattr(cls, '__name__', cls)!s} is not a runtime struct class built "
                        f"from schema nodes (the capnp encoding needs one)")
    codec = _payload_codec(builder)
    key: Any = schema.id
    if schema.bindings:
        key = codec.plan_for_type(model_type(cls._cara_type_)).key
    found = (codec, key, codec.plan(key))
    type.__setattr__(cls, "_cara_capnp_rpc_", found)
    return found


#: _c_plan's answers by class (a class's ``__dict__`` is a new mappingproxy at each look, and
#: two to four looks are made per call). Bounded: programs that make classes at run time start
#: over rather than hold them all.
_C_PLANS: dict[Any, Any] = {}


def _c_plan(cls: Any) -> Any:
    """The C plan that reads and writes payloads of ``cls`` (cached on the class), or None."""
    found = _C_PLANS.get(cls)
    if found is not None:
        return found or None
    found = cls.__dict__.get("_cara_capnp_rpc_c_")
    if found is None:
        found = None if _C is None else c_plan(cls)
        found = found if found is not None else False
        type.__setattr__(cls, "_cara_capnp_rpc_c_", found)
    if len(_C_PLANS) >= 4096:
        _C_PLANS.clear()
    _C_PLANS[cls] = found
    return found or None


def _c_read(cplan: Any, msg: _Segments, pos: int, nesting: int, caps: list[Any]) -> Any:
    """The struct that the near struct pointer at ``pos`` of one-segment message ``msg``
    points to, read by the C path with the traversal budget and nesting the message has
    left and capability ``i`` as ``caps[i]``; ``_C_BAIL`` for anything else (the Python
    reader then reads it, or words the error). A framed message is read where it lies;
    otherwise the C path gets the segment behind a root pointer of its own, outside the
    segment's bounds, aimed where the payload pointer aims."""
    buf = msg.buf
    start, end = msg.bounds[0]
    if start == 8 and end == len(buf) and type(buf) is bytes:  # (decode()'s own frames)
        return _C.decode(cplan, buf, msg.traversal_left, nesting, pos, caps)
    lo, hi = _U32x2(buf, pos)
    if lo & 3 or not (lo or hi):
        return _C_BAIL
    offset = lo >> 2
    if offset & 0x20000000:
        offset -= 0x40000000
    target = pos + 8 + offset * 8 - start
    if target < 0:
        return _C_BAIL
    words = (end - start) >> 3
    data = _C_HEAD(0, words + 1, target >> 1, hi) + buf[start:end]
    return _C.decode(cplan, data, msg.traversal_left, nesting, None, caps)


def _no_classes(what: str) -> TypeError:
    return TypeError(f"{what}: the capnp encoding (capnp://) needs runtime struct classes; "
                     f"an interface described without them can only use cara frames")


# ============================================================================ transforms


def _pointer_table(cls: Any) -> dict[int, list[tuple[tuple[int, ...], int]]]:
    """Pointer index -> the fields of ``cls`` (groups included) stored in that slot, each as
    ``(group field numbers on the way, field number)`` (cached on the class)."""
    found = cls.__dict__.get("_cara_capnp_pointers_")
    if found is not None:
        return found
    table: dict[int, list[tuple[tuple[int, ...], int]]] = {}

    def walk(c: Any, groups: tuple[int, ...]) -> None:
        schema = c.cara_schema
        node = schema.node
        if node is None or node.struct is None:
            raise _no_classes(schema.name)
        for number, f in enumerate(node.struct.fields):
            if f.which == "group":
                walk(schema.fields[number].type.cls, (*groups, number))
            elif f.slot is not None and f.slot.type.which in _POINTER_TYPES:
                table.setdefault(f.slot.offset, []).append((groups, number))
    walk(cls, ())
    type.__setattr__(cls, "_cara_capnp_pointers_", table)
    return table


_POINTER_TYPES = frozenset({"text", "data", "list", "struct", "interface", "anyPointer"})
_dget = dict.get


# ================================================================================== decoding


def _open(msg: _Segments, seg: int, pos: int, nest: int, need: int) -> tuple[Any, ...]:
    """The struct the pointer at ``pos`` points to (``pos`` < 0 or null: an empty one) as
    ``(data buffer, data position, segment, pointer position, pointer count, nesting)``; the
    data section is zero-padded to ``need`` bytes when the writer's is smaller."""
    loc = struct_at(msg, seg, pos, nest) if pos >= 0 else None
    if loc is None:
        return bytes(need), 0, seg, 0, 0, nest
    seg, dpos, dbytes, ppos, nptrs, nest = loc
    if dbytes >= need:
        return msg.buf, dpos, seg, ppos, nptrs, nest
    return msg.buf[dpos:dpos + dbytes] + bytes(need - dbytes), 0, seg, ppos, nptrs, nest


def _exception(msg: _Segments, seg: int, pos: int, nest: int) -> RemoteException:
    buf, d, seg, ppos, nptrs, nest = _open(msg, seg, pos, nest, 8)
    reason = (text_at(msg, seg, ppos) if nptrs > 0 else None) or ""
    trace = text_at(msg, seg, ppos + 8) if nptrs > 1 else None
    number = _U16(buf, d + 4)[0]
    kind = _EXCEPTION_KINDS[number] if number < 4 else "failed"
    type_name = ""
    m = _TYPE_PREFIX.match(reason)
    if m is not None:
        type_name = m[1]
        reason = reason[m.end():]
    return RemoteException(kind, reason, type_name, trace or None)


def _promised_answer(msg: _Segments, seg: int, pos: int, nest: int) -> PromisedAnswer:
    buf, d, seg, ppos, nptrs, nest = _open(msg, seg, pos, nest, 8)
    qid = _U32(buf, d)[0]
    if nptrs == 0:
        return PromisedAnswer(qid, ())
    loc = list_at(msg, seg, ppos, nest)
    if loc is None:
        return PromisedAnswer(qid, ())
    _lseg, start, count, step, dbytes, _np, size, _n = loc
    if size == 1:
        raise DecodeError("PromisedAnswer.transform is a bit list, not a list of Op", ppos)
    if count == 0:
        return PromisedAnswer(qid, ())
    mbuf = msg.buf
    steps: list[int] = []
    append = steps.append
    if dbytes >= 4:
        for at in range(start, start + count * step, step):
            which, index = _HH(mbuf, at)
            if which == 1:
                append(index)
            elif which:
                raise DecodeError(f"unknown PromisedAnswer.Op kind {which}", at)
    else:
        # elements smaller than an Op (older or odd writers): missing bits read as zero
        for i in range(count):
            at = start + i * step
            item = mbuf[at:at + dbytes] + bytes(4 - dbytes)
            which, index = _HH(item, 0)
            if which == 1:
                append(index)
            elif which:
                raise DecodeError(f"unknown PromisedAnswer.Op kind {which}", at)
    return PromisedAnswer(qid, tuple(steps))


def _target(msg: _Segments, seg: int, pos: int, nest: int) -> ImportedCap | PromisedAnswer:
    buf, d, seg, ppos, nptrs, nest = _open(msg, seg, pos, nest, 8)
    which = _U16(buf, d + 4)[0]
    if which == 0:
        return ImportedCap(_U32(buf, d)[0])
    if which == 1:
        return _promised_answer(msg, seg, ppos if nptrs else -1, nest)
    raise DecodeError(f"unknown MessageTarget kind {which}", pos)


def _cap_descriptor(msg: _Segments, buf: Any, d: int, seg: int, ppos: int, nptrs: int,
                    nest: int) -> CapDescriptor:
    which, ident = _HxxI(buf, d)
    if which == 4:
        return CapDescriptor(CapDescriptor.RECEIVER_ANSWER, 0,
                             _promised_answer(msg, seg, ppos if nptrs else -1, nest))
    if which < 4:
        return CapDescriptor(_CAP_KINDS[which], ident if which else 0)
    what = "thirdPartyHosted (level 3)" if which == 5 else f"kind {which}"
    raise DecodeError(f"unsupported CapDescriptor {what}", d)


def _payload(msg: _Segments, seg: int, pos: int, nest: int) -> Payload:
    _buf, _d, seg, ppos, nptrs, nest = _open(msg, seg, pos, nest, 0)
    raw = AnyPointerReader(msg, seg, ppos if nptrs else -1, nest)
    caps: list[CapDescriptor] = []
    if nptrs > 1 and msg.buf[ppos + 8:ppos + 16] != _NULL:
        caps = _cap_table(msg, seg, ppos + 8, nest)
    return Payload(raw=raw, cap_table=caps)


def _fast_cap_table(msg: _Segments, pos: int, nest: int) -> list[CapDescriptor]:
    """_cap_table for CapnpWire._fast_decode (its errors worded as the general path's)."""
    try:
        return _cap_table(msg, 0, pos, nest)
    except DecodeError as exc:
        raise _from_decode_error(exc) from None


def _cap_table(msg: _Segments, seg: int, pos: int, nest: int) -> list[CapDescriptor]:
    """The ``Payload.capTable`` the (non-null) pointer at ``pos`` points to."""
    caps: list[CapDescriptor] = []
    loc = list_at(msg, seg, pos, nest)
    if loc is None:
        return caps
    lseg, start, count, step, dbytes, lnp, size, inner = loc
    if size == 1:
        raise DecodeError("Payload.capTable is a bit list", pos)
    mbuf = msg.buf
    if dbytes >= 8:
        for at in range(start, start + count * step, step):
            caps.append(_cap_descriptor(msg, mbuf, at, lseg, at + dbytes, lnp, inner))
    else:
        for i in range(count):
            at = start + i * step
            item = mbuf[at:at + dbytes] + bytes(8 - dbytes)
            caps.append(_cap_descriptor(msg, item, 0, lseg, at + dbytes, lnp, inner))
    return caps


def _decode_root(msg: _Segments, seg: int, pos: int, nest: int) -> Message:
    """The rpc.capnp ``Message`` the pointer at ``pos`` points to."""
    top = seg, nest
    buf, d, seg, ppos, nptrs, nest = _open(msg, seg, pos, nest, 8)
    which = _U16(buf, d)[0]
    p0 = ppos if nptrs else -1
    if which == _CALL:
        buf, d, seg, ppos, nptrs, nest = _open(msg, seg, p0, nest, 24)
        qid, method, send_to, iface = _CALL_FIELDS(buf, d)
        if send_to:
            name = ("caller", "yourself", "thirdParty")[send_to] if send_to < 3 else str(send_to)
            return Unknown(f"call.sendResultsTo.{name}", _reader(msg, top, pos))
        target = _target(msg, seg, ppos if nptrs else -1, nest)
        params = _payload(msg, seg, ppos + 8 if nptrs > 1 else -1, nest)
        return Call(qid, target, iface, method, params)
    if which == _RETURN:
        buf, d, seg, ppos, nptrs, nest = _open(msg, seg, p0, nest, 16)
        aid, flags, kind = _RETURN_FIELDS(buf, d)
        release = not flags & 1
        no_finish = bool(flags & _NO_FINISH_NEEDED)
        p = ppos if nptrs else -1
        if kind == 0:
            return Return(aid, _payload(msg, seg, p, nest), release_param_caps=release,
                          no_finish=no_finish)
        if kind == 1:
            return Return(aid, exception=_exception(msg, seg, p, nest),
                          release_param_caps=release, no_finish=no_finish)
        if kind == 2:
            return Return(aid, canceled=True, release_param_caps=release, no_finish=no_finish)
        name = _RETURN_KINDS[kind] if kind < len(_RETURN_KINDS) else str(kind)
        return Unknown(f"return.{name}", _reader(msg, top, pos))
    if which == _FINISH:
        buf, d, *_rest = _open(msg, seg, p0, nest, 8)
        qid, flags = _U32x2(buf, d)
        return Finish(qid, release_result_caps=not flags & 1)
    if which == _BOOTSTRAP:
        buf, d, *_rest = _open(msg, seg, p0, nest, 8)
        return Bootstrap(_U32(buf, d)[0])
    if which == _RELEASE:
        buf, d, *_rest = _open(msg, seg, p0, nest, 8)
        ident, count = _U32x2(buf, d)
        return Release(ident, count)
    if which == _RESOLVE:
        buf, d, seg, ppos, nptrs, nest = _open(msg, seg, p0, nest, 8)
        promise, kind = _U32_U16(buf, d)
        p = ppos if nptrs else -1
        if kind == 0:
            cbuf, cd, cseg, cppos, cnp, cnest = _open(msg, seg, p, nest, 8)
            return Resolve(promise, cap=_cap_descriptor(msg, cbuf, cd, cseg, cppos, cnp, cnest))
        if kind == 1:
            return Resolve(promise, exception=_exception(msg, seg, p, nest))
        return Unknown(f"resolve.{kind}", _reader(msg, top, pos))
    if which == _DISEMBARGO:
        buf, d, seg, ppos, nptrs, nest = _open(msg, seg, p0, nest, 8)
        embargo, kind = _U32_U16(buf, d)
        if kind > 1:
            name = _DISEMBARGO_KINDS[kind] if kind < 4 else str(kind)
            return Unknown(f"disembargo.context.{name}", _reader(msg, top, pos))
        return Disembargo(_target(msg, seg, ppos if nptrs else -1, nest),
                          _DISEMBARGO_KINDS[kind], embargo)
    if which == _ABORT:
        return Abort(_exception(msg, seg, p0, nest))
    if which == _UNIMPLEMENTED:
        if p0 < 0 or resolve(msg, seg, p0)[0] < 0:
            return Unimplemented(None)
        return Unimplemented(_decode_root(msg, seg, p0, nest))
    name = _MESSAGE_KINDS[which] if which < len(_MESSAGE_KINDS) else f"kind {which}"
    return Unknown(name, _reader(msg, top, pos))


def _reader(msg: _Segments, top: tuple[int, int], pos: int) -> AnyPointerReader:
    return AnyPointerReader(msg, top[0], pos, top[1])


_CALL_FIELDS = struct.Struct("<IHHQ").unpack_from
_RETURN_FIELDS = struct.Struct("<IBxH").unpack_from
#: Return's flags byte (bits 32-39 of its data): bit 0 releaseParamCaps (stored inverted, its
#: default being true), bit 1 noFinishNeeded (Cap'n Proto 1.0's hint that no Finish is due).
_NO_FINISH_NEEDED = 2
_U32_U16 = struct.Struct("<IH").unpack_from


# ================================================================================== encoding

def _word(offset: int, hi: int) -> int:
    """A struct pointer word (``offset`` words ahead, ``hi`` its sizes) as a little-endian u64."""
    return int.from_bytes(_PTR.pack(offset << 2, hi), "little")


# The fixed part of a Call, written by one pack_into from byte 8: root pointer -> Message
# (@16: kind; @24: pointer) -> Call (@32: questionId, @36: methodId, @40: interfaceId, @48:
# flags; pointers @56 target, @64 params, @72 sendResultsTo.thirdParty) -> MessageTarget (@80:
# importedCap, @84: kind; @88: promisedAnswer) and Payload (pointers @96 content, @104
# capTable), 112 bytes with the segment table; the content follows.
_CALL_SIZE = 112
_CALL_HEAD = struct.Struct("<QH6xQIH2xQ8xQQ8xIH").pack_into
_ROOT_WORD = _word(0, 1 | 1 << 16)
_CALL_WORD = _word(0, 3 | 3 << 16)
_TARGET_WORD = _word(2, 1 | 1 << 16)
_PARAMS_WORD = _word(3, 2 << 16)
_CONTENT_PTR = 96

# Return, likewise: root -> Message -> Return (@32: answerId, @36: flags, @38: kind; pointer
# @48: results or exception), 56 bytes.
_RETURN_SIZE = 56
_RETURN_HEAD = struct.Struct("<QH6xQIBxH").pack_into
_RETURN_WORD = _word(0, 2 | 1 << 16)

# Finish, whole: segment table, root -> Message (@16: kind; @24: pointer) -> Finish (@32:
# questionId, @36: flags), 40 bytes.
_FINISH_FRAME = struct.Struct("<IIQH6xQIB3x").pack
_FINISH_WORD = _word(0, 1)

# The envelopes above, as decode() recognizes them without walking pointers (see _fast_decode).
_ROOT_BYTES = _ROOT_WORD.to_bytes(8, "little")
_CALL_BYTES = _CALL_WORD.to_bytes(8, "little")
_TARGET_PARAMS_BYTES = _TARGET_WORD.to_bytes(8, "little") + _PARAMS_WORD.to_bytes(8, "little")
_RETURN_BYTES = _RETURN_WORD.to_bytes(8, "little")
_RESULTS_BYTES = _word(0, 2 << 16).to_bytes(8, "little")
_FINISH_BYTES = _FINISH_WORD.to_bytes(8, "little")
#: The traversal budget the general path charges for the envelope before a payload's content
#: (Message 2 words, Call 6, MessageTarget 2, Payload 2; Return 3).
_CALL_ENVELOPE_WORDS = 12
_RETURN_ENVELOPE_WORDS = 7

# The hot path (CapnpWire.encode_call, encode_results, decode_hot): the envelopes above as
# whole ``bytes`` heads (segment table words zero) that the content follows; the binary
# codec's C path writes the content behind them in one call.
_CALL_FRAME = struct.Struct("<8xQH6xQIH2xQ8xQQ8xIH26x").pack
_RETURN_FRAME = struct.Struct("<8xQH6xQIBxH8xQ16x").pack
_RETURN_CONTENT_PTR = 56
_RETURN_FRAME_SIZE = 72
_RESULTS_WORD = _word(0, 2 << 16)
#: A Message's data word and pointer as encode() writes a Call, a Return (bytes 16-32).
_CALL_KIND = struct.pack("<H6x", _CALL) + _CALL_BYTES
_RETURN_KIND = struct.pack("<H6x", _RETURN) + _RETURN_BYTES
_FINISH_KIND = struct.pack("<H6x", _FINISH) + _FINISH_BYTES
_FINISHES = struct.Struct("<IIQH6xQIB3x")


def _hot_reader(buf: bytes, traversal_limit: int, nesting_limit: int,
                budget: int | bool = False) -> AnyPointerReader:
    """The content pointer of a frame that :meth:`CapnpWire.decode_hot` took (a Call's at
    byte 96, a Return's at 56), with the budget the general path would leave it (``budget``
    when one is given: what the envelope's own pointers left)."""
    if buf[16] == _CALL:
        pos, left = _CONTENT_PTR, traversal_limit - _CALL_ENVELOPE_WORDS
    else:
        pos, left = _RETURN_CONTENT_PTR, traversal_limit - _RETURN_ENVELOPE_WORDS
    if budget is not False:
        left = budget
    msg = _Segments((buf, [(8, len(buf))]), traversal_limit_in_words=left,
                    nesting_limit=nesting_limit)
    return AnyPointerReader(msg, 0, pos, nesting_limit - 3)


def _as_reader(raw: Any) -> AnyPointerReader:
    """A payload's ``raw`` as an AnyPointerReader (``decode_hot``'s ``(frame, budget)`` too)."""
    if type(raw) is tuple:
        return _hot_reader(raw[0], DEFAULT_TRAVERSAL_LIMIT, DEFAULT_NESTING_LIMIT, raw[1])
    return raw


def _alloc(buf: bytearray, ptr_pos: int, dw: int, pc: int) -> int:
    pos = len(buf)
    buf += bytes((dw + pc) * 8)
    _PP(buf, ptr_pos, (pos - ptr_pos - 8) >> 1, dw | pc << 16)
    return pos


def _write_promised(buf: bytearray, ptr_pos: int, answer: PromisedAnswer) -> None:
    pos = _alloc(buf, ptr_pos, 1, 1)
    steps = answer.transform
    struct.pack_into("<I", buf, pos, answer.question_id)
    # (an empty transform is an empty list, not null, as libcapnp writes it)
    count = len(steps)
    at = len(buf)
    buf += bytes(8 + 8 * count)
    _PP(buf, pos + 8, (at - pos - 16) >> 1 | 1, count << 3 | 7)
    _PP(buf, at, count << 2, 1)
    if count:
        struct.pack_into("<" + "HH4x" * count, buf, at + 8, *[x for s in steps for x in (1, s)])


def _write_target(buf: bytearray, ptr_pos: int, target: Any) -> None:
    pos = _alloc(buf, ptr_pos, 1, 1)
    if type(target) is ImportedCap:
        struct.pack_into("<I", buf, pos, target.id)
    elif type(target) is PromisedAnswer:
        struct.pack_into("<4xH", buf, pos, 1)
        _write_promised(buf, pos + 8, target)
    else:
        raise EncodeError(f"a message target is an ImportedCap or a PromisedAnswer, not "
                          f"{type(target).__name__}")


def _write_descriptor(buf: bytearray, at: int, desc: CapDescriptor) -> None:
    """CapDescriptor ``desc`` into the struct whose data starts at ``at`` (1 word + 1 ptr)."""
    kind = desc.kind
    number = _CAP_NUMBER.get(kind)
    if number is None or number == 5:
        raise EncodeError(f"unknown CapDescriptor kind {kind!r}")
    if number == 4:
        if desc.answer is None:
            raise EncodeError("a receiverAnswer CapDescriptor needs its answer")
        struct.pack_into("<H", buf, at, 4)
        _write_promised(buf, at + 8, desc.answer)
    elif number:
        struct.pack_into("<HxxI", buf, at, number, desc.id)


def _write_cap_table(buf: bytearray, ptr_pos: int, table: list[CapDescriptor]) -> None:
    count = len(table)
    pos = len(buf)
    buf += bytes(8 + 16 * count)
    _PP(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, (2 * count) << 3 | 7)
    _PP(buf, pos, count << 2, 1 | 1 << 16)
    at = pos + 8
    for desc in table:
        _write_descriptor(buf, at, desc)
        at += 16


def _write_exception(buf: bytearray, ptr_pos: int, exc: RemoteException) -> None:
    pos = _alloc(buf, ptr_pos, 1, 3)
    struct.pack_into("<4xH", buf, pos, _EXCEPTION_NUMBER.get(exc.kind, 0))
    reason = f"{exc.type_name}: {exc.reason}" if exc.type_name else exc.reason
    _text(buf, pos + 8, reason)
    if exc.trace is not None:
        _text(buf, pos + 16, exc.trace)


def _write_content(buf: bytearray, ptr_pos: int, payload: Payload,
                   describe: DescribeCap) -> list[CapDescriptor]:
    """Write a payload's content at pointer ``ptr_pos``; return its cap table."""
    content = payload.content
    if content is None:
        raw = payload.raw
        if raw is not None:
            _copy_verbatim(buf, ptr_pos, _as_reader(raw))
            return list(payload.cap_table)
        return []
    return _write_value(buf, ptr_pos, content, payload.struct_cls, describe)


def _write_value(buf: bytearray, ptr_pos: int, content: Any, cls: Any,
                 describe: DescribeCap) -> list[CapDescriptor]:
    """Write content ``content`` (not None) of class ``cls`` at pointer ``ptr_pos``; return
    its cap table."""
    table: list[CapDescriptor] = []
    if cls is CAPABILITY:
        table.append(describe(content))  # a bare capability (a bootstrap's answer)
        _PP(buf, ptr_pos, 3, 0)
        return table
    if cls is None:
        raise _no_classes("a payload of a field-number dict")
    if type(content) is not cls:
        if not (isinstance(content, dict) and hasattr(type(content), "cara_schema")):
            content = cls(content)
    cplan = _c_plan(type(content))
    if cplan is not None:  # the C path writes the struct; spliced in, it stands as written
        out = _C.encode(cplan, content, _NO_HEAD, 8, describe, table)
        if out is not _C_BAIL and len(out) > 16:
            pos = len(buf)
            buf += memoryview(out)[16:]  # (its root pointer at 8 points to the word at 16)
            _PP(buf, ptr_pos, (pos - ptr_pos - 8) >> 1, _U32(out, 12)[0])
            return table
    codec, _key, plan = _content_codec(type(content))
    key = id(buf)
    if _SEEN[0]:
        u = _record_of(content)
        if u is not None and u.loc is not None:
            # a struct that keeps a newer schema's data (params or results of a method whose
            # params or results are a named struct, received and sent on): see unknown.py
            _ENCODING[key] = (describe, table)
            try:
                _encode_kept(codec, plan, buf, ptr_pos, content, u)
            finally:
                del _ENCODING[key]
            return table
    dw, pc = plan.data_words, plan.pointer_count
    pos = len(buf)
    if dw + pc == 0:
        _PP(buf, ptr_pos, -4, 0)
        return table
    buf += bytes((dw + pc) * 8)
    _PP(buf, ptr_pos, (pos - ptr_pos - 8) >> 1, dw | pc << 16)
    _ENCODING[key] = (describe, table)
    try:
        # (a runtime struct holds checked values: what fails here is describe_cap's own
        # error, which goes to the caller as it is)
        plan.encode(buf, pos, pos + dw * 8, content)
    finally:
        del _ENCODING[key]
    return table


def _write_payload(buf: bytearray, ptr_pos: int, payload: Payload,
                   describe: DescribeCap) -> None:
    pos = _alloc(buf, ptr_pos, 0, 2)
    table = _write_content(buf, pos, payload, describe)
    if table:
        _write_cap_table(buf, pos + 8, table)


def _frame_with(head: bytes, ptr_pos: int, content: Any, cls: Any,
                describe: DescribeCap) -> bytes:
    """The framed one-segment message ``head`` (a Call's or Return's envelope, see
    ``_CALL_FRAME``) with ``content`` of class ``cls`` written behind it at pointer ``ptr_pos``
    and its cap table (if any) in the pointer after; ``encode``'s bytes."""
    if content is not None and _C is not None:
        cplan = _c_plan(cls) if type(content) is cls else None
        if cplan is not None and HOLDS_INTERFACES.get(cls) is False:
            out = _C.encode(cplan, content, head, ptr_pos)
            if out is not _C_BAIL:
                return out
        elif cplan is not None:
            table: list[CapDescriptor] = []
            out = _C.encode(cplan, content, head, ptr_pos, describe, table)
            if out is not _C_BAIL:
                if not table or out[ptr_pos + 8:ptr_pos + 16] != _NULL:  # (C wrote it)
                    return out
                buf = bytearray(out)  # (the cap table after the content)
                _write_cap_table(buf, ptr_pos + 8, table)
                _II(buf, 0, 0, (len(buf) - 8) >> 3)
                return bytes(buf)
    buf = bytearray(head)
    if content is not None:
        table = _write_value(buf, ptr_pos, content, cls, describe)
        if table:
            _write_cap_table(buf, ptr_pos + 8, table)
    _II(buf, 0, 0, (len(buf) - 8) >> 3)
    return bytes(buf)


def _write_message(buf: bytearray, ptr_pos: int, msg: Message, describe: DescribeCap) -> None:
    """Message ``msg`` as an rpc.capnp ``Message`` struct at pointer ``ptr_pos``."""
    if type(msg) is Unknown:
        raw = msg.raw
        _copy_verbatim(buf, ptr_pos, raw)
        return
    pos = _alloc(buf, ptr_pos, 1, 1)
    p = pos + 8
    t = type(msg)
    if t is Call:
        assert isinstance(msg, Call)
        _U16_INTO(buf, pos, _CALL)
        c = _alloc(buf, p, 3, 3)
        struct.pack_into("<IH2xQ", buf, c, msg.question_id, msg.method_id, msg.interface_id)
        _write_target(buf, c + 24, msg.target)
        _write_payload(buf, c + 32, msg.params, describe)
    elif t is Return:
        assert isinstance(msg, Return)
        _U16_INTO(buf, pos, _RETURN)
        r = _alloc(buf, p, 2, 1)
        if msg.exception is not None:
            kind = 1
            _write_exception(buf, r + 16, msg.exception)
        elif msg.canceled:
            kind = 2
        else:
            kind = 0
            _write_payload(buf, r + 16, msg.results or Payload(), describe)
        struct.pack_into("<IBxH", buf, r, msg.answer_id, 0 if msg.release_param_caps else 1,
                         kind)
    elif t is Finish:
        assert isinstance(msg, Finish)
        _U16_INTO(buf, pos, _FINISH)
        f = _alloc(buf, p, 1, 0)
        # releaseResultCaps and requireEarlyCancellationWorkaround (both default true, stored
        # inverted): the second is false, as libcapnp 1.x sends it
        struct.pack_into("<IB", buf, f, msg.question_id,
                         (0 if msg.release_result_caps else 1) | 2)
    elif t is Bootstrap:
        assert isinstance(msg, Bootstrap)
        _U16_INTO(buf, pos, _BOOTSTRAP)
        b = _alloc(buf, p, 1, 1)
        struct.pack_into("<I", buf, b, msg.question_id)
    elif t is Release:
        assert isinstance(msg, Release)
        _U16_INTO(buf, pos, _RELEASE)
        r = _alloc(buf, p, 1, 0)
        struct.pack_into("<II", buf, r, msg.id, msg.count)
    elif t is Resolve:
        assert isinstance(msg, Resolve)
        _U16_INTO(buf, pos, _RESOLVE)
        r = _alloc(buf, p, 1, 1)
        if msg.exception is not None:
            struct.pack_into("<IH", buf, r, msg.promise_id, 1)
            _write_exception(buf, r + 8, msg.exception)
        else:
            if msg.cap is None:
                raise EncodeError("a Resolve needs its cap or its exception")
            struct.pack_into("<I", buf, r, msg.promise_id)
            c = _alloc(buf, r + 8, 1, 1)
            _write_descriptor(buf, c, msg.cap)
    elif t is Disembargo:
        assert isinstance(msg, Disembargo)
        _U16_INTO(buf, pos, _DISEMBARGO)
        context = _DISEMBARGO_NUMBER.get(msg.kind)
        if context is None:
            raise EncodeError(f"unknown Disembargo kind {msg.kind!r}")
        d = _alloc(buf, p, 1, 2)
        struct.pack_into("<IH", buf, d, msg.embargo_id, context)
        _write_target(buf, d + 8, msg.target)
    elif t is Abort:
        assert isinstance(msg, Abort)
        _U16_INTO(buf, pos, _ABORT)
        _write_exception(buf, p, msg.exception)
    elif t is Unimplemented:
        assert isinstance(msg, Unimplemented)
        if msg.message is not None:
            _write_message(buf, p, msg.message, _no_describe)
    else:
        raise EncodeError(f"the capnp encoding has no form for {type(msg).__name__}")


_U16_INTO = struct.Struct("<H").pack_into


def _no_describe(value: Any) -> CapDescriptor:
    raise EncodeError("an echoed (Unimplemented) message cannot introduce capabilities")


def _copy_verbatim(buf: bytearray, ptr_pos: int, raw: AnyPointerReader) -> None:
    """Copy what ``raw`` points to (verbatim, capability indexes kept) to pointer ``ptr_pos``."""
    if raw.pos < 0:
        return
    target = MessageBuilder.__new__(MessageBuilder)
    target.buf = buf
    copy_pointer(target, ptr_pos, raw.msg, raw.seg, raw.pos, raw.nesting)


# ====================================================================================== wire


class CapnpWire:
    """rpc.capnp messages in standard stream framing (see the module docstring).

    ``traversal_limit_in_words`` and ``nesting_limit`` bound each received message (libcapnp's
    defaults); ``max_segments`` its segment table. The instance keeps no per-connection state.
    """

    name = "capnp"
    #: The core may forget an answer whose results hold no capability as soon as it is
    #: returned (no call can be pipelined on it; one that is gets a broken capability). Such a
    #: return says ``noFinishNeeded`` (:meth:`encode_results`); a caller that does not know
    #: the hint still sends ``Finish``, and the core ignores a ``Finish`` for no answer.
    implicit_finish = True

    def __init__(self, *, traversal_limit_in_words: int = DEFAULT_TRAVERSAL_LIMIT,
                 nesting_limit: int = DEFAULT_NESTING_LIMIT,
                 max_segments: int = DEFAULT_MAX_SEGMENTS) -> None:
        self.traversal_limit_in_words = traversal_limit_in_words
        self.nesting_limit = nesting_limit
        self.max_segments = max_segments
        # the fast path (see _fast_decode) stands for the general one only where the limits
        # cannot stop the general one inside the envelope
        self._fast = nesting_limit > 3 and traversal_limit_in_words > _CALL_ENVELOPE_WORDS
        self._content_budget_c = traversal_limit_in_words - _CALL_ENVELOPE_WORDS
        self._content_budget_r = traversal_limit_in_words - _RETURN_ENVELOPE_WORDS

    # ------------------------------------------------------------------------------ encode

    def encode(self, msg: Message, describe_cap: DescribeCap) -> bytes:
        t = type(msg)
        if t is Call:
            assert isinstance(msg, Call)
            target = msg.target
            buf = bytearray(_CALL_SIZE)
            if type(target) is ImportedCap:
                _CALL_HEAD(buf, 8, _ROOT_WORD, _CALL, _CALL_WORD, msg.question_id, msg.method_id,
                           msg.interface_id, _TARGET_WORD, _PARAMS_WORD, target.id, 0)
            else:
                _CALL_HEAD(buf, 8, _ROOT_WORD, _CALL, _CALL_WORD, msg.question_id, msg.method_id,
                           msg.interface_id, _TARGET_WORD, _PARAMS_WORD, 0, 1)
                if type(target) is not PromisedAnswer:
                    raise EncodeError(f"a call target is an ImportedCap or a PromisedAnswer, "
                                      f"not {type(target).__name__}")
                _write_promised(buf, 88, target)
            table = _write_content(buf, _CONTENT_PTR, msg.params, describe_cap)
            if table:
                _write_cap_table(buf, _CONTENT_PTR + 8, table)
        elif t is Return:
            assert isinstance(msg, Return)
            buf = bytearray(_RETURN_SIZE)
            flags = (0 if msg.release_param_caps else 1) | \
                (_NO_FINISH_NEEDED if msg.no_finish else 0)
            if msg.exception is not None:
                _RETURN_HEAD(buf, 8, _ROOT_WORD, _RETURN, _RETURN_WORD, msg.answer_id, flags, 1)
                _write_exception(buf, 48, msg.exception)
            elif msg.canceled:
                _RETURN_HEAD(buf, 8, _ROOT_WORD, _RETURN, _RETURN_WORD, msg.answer_id, flags, 2)
            else:
                _RETURN_HEAD(buf, 8, _ROOT_WORD, _RETURN, _RETURN_WORD, msg.answer_id, flags, 0)
                _write_payload(buf, 48, msg.results or Payload(), describe_cap)
        elif t is Finish:
            assert isinstance(msg, Finish)
            return _FINISH_FRAME(0, 4, _ROOT_WORD, _FINISH, _FINISH_WORD, msg.question_id,
                                 (0 if msg.release_result_caps else 1) | 2)
        else:
            buf = bytearray(16)
            _write_message(buf, 8, msg, describe_cap)
        _II(buf, 0, 0, (len(buf) - 8) >> 3)
        return bytes(buf)

    def encode_call(self, question_id: int, target: Any, interface_id: int, method_id: int,
                    params: Any, param_cls: Any, describe_cap: DescribeCap) -> bytes:
        """``encode(Call(question_id, target, interface_id, method_id, Payload(params,
        param_cls)))``, the same bytes, without the message objects (the core calls this for
        every call it sends). Params the binary codec's C path can write (no capability can
        be in them) are written with the envelope in one C call."""
        if type(target) is ImportedCap:
            head = _CALL_FRAME(_ROOT_WORD, _CALL, _CALL_WORD, question_id, method_id,
                               interface_id, _TARGET_WORD, _PARAMS_WORD, target.id, 0)
        elif type(target) is PromisedAnswer:
            buf = bytearray(_CALL_FRAME(_ROOT_WORD, _CALL, _CALL_WORD, question_id, method_id,
                                        interface_id, _TARGET_WORD, _PARAMS_WORD, 0, 1))
            _write_promised(buf, 88, target)
            head = bytes(buf)
        else:
            raise EncodeError(f"a call target is an ImportedCap or a PromisedAnswer, "
                              f"not {type(target).__name__}")
        return _frame_with(head, _CONTENT_PTR, params, param_cls, describe_cap)

    def encode_results(self, answer_id: int, results: Any, result_cls: Any, final: bool,
                       describe_cap: DescribeCap) -> tuple[bytes, bool]:
        """``encode(Return(answer_id, Payload(results, result_cls), release_param_caps=False))``
        without the message objects, and whether the answer is done with (``final`` asked and
        ``result_cls`` unable to hold a capability: nothing can be pipelined on it). The frame
        is marked ``noFinishNeeded`` then (as libcapnp 1.x marks a return holding no
        capability): a caller that knows the hint sends no ``Finish``; one that does not sends
        it, and it finds no answer."""
        final = final and (HOLDS_INTERFACES.get(result_cls) is False or (
            result_cls is not None and result_cls is not CAPABILITY
            and not may_hold_interfaces(result_cls)))
        head = _RETURN_FRAME(_ROOT_WORD, _RETURN, _RETURN_WORD, answer_id,
                             1 | _NO_FINISH_NEEDED if final else 1, 0, _RESULTS_WORD)
        return _frame_with(head, _RETURN_CONTENT_PTR, results, result_cls, describe_cap), final

    @staticmethod
    def encode_finishes(question_ids: list[int]) -> bytes:
        """``encode(Finish(q, release_result_caps=False))`` for each id, one after the other
        (framed messages can be written back to back)."""
        pack = _FINISHES.pack
        return b"".join([pack(0, 4, _ROOT_WORD, _FINISH, _FINISH_WORD, q, 3)
                         for q in question_ids])

    # ------------------------------------------------------------------------------ decode

    def decode(self, frame: bytes | bytearray | memoryview) -> Message:
        buf = frame if type(frame) is bytes else bytes(frame)
        return self._decode_framed(buf, _C_ENVELOPE is not None)

    def _decode_framed(self, buf: bytes, envelope: bool) -> Message:
        """:meth:`decode` of ``buf`` (C's envelope reader tried first with ``envelope``)."""
        n = len(buf)
        if n >= 40 and buf[:4] == b"\0\0\0\0" and buf[8:16] == _ROOT_BYTES and \
                _U32(buf, 4)[0] * 8 + 8 == n and self._fast:
            if envelope:
                message = self._envelope(buf, False)
                if message is not None:
                    return message
            found = self._fast_decode(buf, n)
            if found is not None:
                return found
        return self._decode(buf, n)

    def decode_hot(self, frame: bytes | bytearray | memoryview) -> Message | tuple[Any, ...]:
        """:meth:`decode`, except for the two commonest messages, laid out as :meth:`encode`
        writes them (libcapnp writes them alike), which come back as tuples, with no message
        objects (the core's optional shortcut, see ``Connection.receive``):

        * a ``Call`` to an imported capability (results to the caller) without a cap table
          as ``(question_id, export_id, interface_id, method_id, frame)``;
        * a ``Return`` of results without a cap table as ``(answer_id, frame,
          release_param_caps)``, or ``(answer_id, frame)`` when it says ``noFinishNeeded``
          and not ``releaseParamCaps`` (final: the core sends no ``Finish``).

        ``(frame, False)`` then stands for the payload's ``raw`` in :meth:`decode_content`
        (which reads it as the message's ``Payload.raw``, with the same limits). A Call or a
        Return of results that C reads otherwise (a cap table, a promised answer as the
        target: see ``_envelope``) comes as its message with ``(frame, budget)`` as its
        payload's ``raw``: the budget its envelope left, no reader made."""
        buf = frame if type(frame) is bytes else bytes(frame)
        if _C_HOT is not None and self._fast:
            found = _C_HOT(buf)
            if found is not None:
                if len(found) == 2 and type(found[1]) is int:  # a Finish
                    return Finish(found[0], release_result_caps=not found[1] & 1)
                return found
            if _C_ENVELOPE is not None:
                message = self._envelope(buf, True)
                if message is not None:
                    return message
            return self._decode_framed(buf, False)  # (what the Python twin would do with it)
        return self._decode_hot(buf)

    def _decode_hot(self, buf: bytes) -> Message | tuple[Any, ...]:
        """:meth:`decode_hot` in Python (the C path's twin, and what runs without it)."""
        n = len(buf)
        if buf[8:16] == _ROOT_BYTES and buf[:4] == b"\0\0\0\0" and \
                _U32(buf, 4)[0] * 8 + 8 == n and self._fast:
            kind = buf[16:32]
            if kind == _CALL_KIND:
                if n >= 112 and buf[56:72] == _TARGET_PARAMS_BYTES and buf[104:112] == _NULL:
                    qid, method, send_to, iface = _CALL_FIELDS(buf, 32)
                    export, target_kind = _U32_U16(buf, 80)
                    if not send_to and not target_kind:
                        return qid, export, iface, method, buf
            elif kind == _RETURN_KIND:
                if n >= 72 and buf[48:56] == _RESULTS_BYTES and buf[64:72] == _NULL:
                    aid, flags, which = _RETURN_FIELDS(buf, 32)
                    if not which and flags & 3 == 3:  # noFinishNeeded: final (no Finish)
                        return aid, buf
                    if not which and not flags & _NO_FINISH_NEEDED:
                        return aid, buf, not flags & 1
            elif kind == _FINISH_KIND and n == 40:
                qid, flags = _U32x2(buf, 32)
                return Finish(qid, release_result_caps=not flags & 1)
            found = self._fast_decode(buf, n) if n >= 40 else None
            if found is not None:
                return found
        return self._decode(buf, n)

    def _fast_decode(self, buf: bytes, n: int) -> Message | None:
        """The message in single-segment frame ``buf`` when its envelope is laid out exactly
        as :meth:`encode` writes it (libcapnp writes Finish, and most Returns, alike): a Call
        to an imported capability or a promised answer, a Return of results, a Finish or a
        Release; else ``None`` (the general path decodes it). The words read here directly lie
        in the first 112 bytes, which ``n`` covers; what the envelope points to past them (a
        promised answer's transform, a cap table) is read through its pointer as the general
        path reads it, charged to the same traversal budget in the same order, and the content
        is read later through its pointer, with the budget the general path would leave
        (C's ``rpc_envelope``, where built, reads the same envelopes first: see
        :meth:`_decode_framed`)."""
        which = _U16(buf, 16)[0]
        if which == _RETURN:
            if n < 72 or buf[24:32] != _RETURN_BYTES or buf[48:56] != _RESULTS_BYTES:
                return None
            aid, flags, kind = _RETURN_FIELDS(buf, 32)
            if kind:
                return None
            nest = self.nesting_limit - 3
            msg = _Segments((buf, [(8, n)]), traversal_limit_in_words=self._content_budget_r,
                            nesting_limit=self.nesting_limit)
            caps = [] if buf[64:72] == _NULL else _fast_cap_table(msg, 64, nest)
            return Return(aid, Payload(raw=AnyPointerReader(msg, 0, 56, nest), cap_table=caps),
                          release_param_caps=not flags & 1,
                          no_finish=bool(flags & _NO_FINISH_NEEDED))
        if which == _CALL:
            if n < 112 or buf[24:32] != _CALL_BYTES or buf[56:72] != _TARGET_PARAMS_BYTES:
                return None
            qid, method, send_to, iface = _CALL_FIELDS(buf, 32)
            if send_to:  # sendResultsTo other than caller
                return None
            export, target_kind = _U32_U16(buf, 80)
            nest = self.nesting_limit - 3
            target: ImportedCap | PromisedAnswer
            if target_kind == 0:
                msg = _Segments((buf, [(8, n)]),
                                traversal_limit_in_words=self._content_budget_c,
                                nesting_limit=self.nesting_limit)
                target = ImportedCap(export)
            elif target_kind == 1:
                # (the general path reads the promised answer before the Payload struct)
                msg = _Segments((buf, [(8, n)]),
                                traversal_limit_in_words=self._content_budget_c + 2,
                                nesting_limit=self.nesting_limit)
                try:
                    target = _promised_answer(msg, 0, 88, nest)
                    _charge(msg, 2, 64)
                except DecodeError as exc:
                    raise _from_decode_error(exc) from None
            else:
                return None
            caps = [] if buf[104:112] == _NULL else _fast_cap_table(msg, 104, nest)
            return Call(qid, target, iface, method,
                        Payload(raw=AnyPointerReader(msg, 0, 96, nest), cap_table=caps))
        if n == 40:
            if which == _FINISH and buf[24:32] == _FINISH_BYTES:
                qid, flags = _U32x2(buf, 32)
                return Finish(qid, release_result_caps=not flags & 1)
            if which == _RELEASE and buf[24:32] == _FINISH_BYTES:  # (the same struct size)
                ident, count = _U32x2(buf, 32)
                return Release(ident, count)
        return None

    def _envelope(self, buf: bytes, hot: bool) -> Message | None:
        """The Call or Return whose envelope C's ``rpc_envelope`` reads (see ``_binary.c``),
        made as :meth:`_fast_decode` makes it: the content is read later, with the budget
        left (``hot``: the payload's ``raw`` is ``(frame, budget)``, as :meth:`decode_hot`
        gives); None for any other frame."""
        found = _C_ENVELOPE(buf, self._content_budget_c, self._content_budget_r,
                            self.nesting_limit - 3)
        if found is None:
            return None
        *head, table, left = found
        caps = [CapDescriptor(_CAP_KINDS[c[0]], c[1]) if c[0] < 4 else
                CapDescriptor(CapDescriptor.RECEIVER_ANSWER, 0, PromisedAnswer(c[1], c[2]))
                for c in table]
        call = len(head) == 4
        raw: Any = (buf, left)
        if not hot:
            msg = _Segments((buf, [(8, len(buf))]), traversal_limit_in_words=left,
                            nesting_limit=self.nesting_limit)
            raw = AnyPointerReader(msg, 0, _CONTENT_PTR if call else _RETURN_CONTENT_PTR,
                                   self.nesting_limit - 3)
        if call:
            qid, target, iface, method = head
            return Call(qid, ImportedCap(target) if type(target) is int else
                        PromisedAnswer(target[0], target[1]), iface, method,
                        Payload(raw=raw, cap_table=caps))
        aid, flags = head
        return Return(aid, Payload(raw=raw, cap_table=caps), release_param_caps=not flags & 1,
                      no_finish=bool(flags & _NO_FINISH_NEEDED))

    def _decode(self, buf: bytes, n: int) -> Message:
        """The general path: any framing, every pointer followed and checked."""
        try:
            if n >= 16 and buf[:4] == b"\0\0\0\0" and _U32(buf, 4)[0] * 8 + 8 == n:
                segments = (buf, [(8, n)])
            else:
                segments = read_framed(buf, max_segments=self.max_segments)
            msg = _Segments(segments, traversal_limit_in_words=self.traversal_limit_in_words,
                            nesting_limit=self.nesting_limit)
            root = segments[1][0][0]
            if buf[root:root + 8] == _NULL:
                raise DecodeError("the message's root pointer is null", root)
            return _decode_root(msg, 0, root, msg.nesting_limit)
        except DecodeError as exc:
            raise _from_decode_error(exc) from None
        except RecursionError:
            raise _error("message nests deeper than Python's recursion limit allows", None) \
                from None

    def decode_content(self, raw: Any, struct_cls: Any, caps: list[Any]) -> Any:
        """The content of a received payload (``raw``: its ``Payload.raw``) as an instance of
        runtime struct class ``struct_cls``, capability pointer ``i`` becoming ``caps[i]``.

        With ``struct_cls`` :data:`~cara.rpc.messages.CAPABILITY` the content must be a
        capability (a bootstrap's answer: its object is returned) or null (``None``); with
        ``None`` (no runtime classes) this raises ``TypeError``. Anything malformed raises
        :class:`~cara.rpc.errors.ProtocolError` naming the byte offset in the frame."""
        if type(caps) is not list:  # (C reads a list)
            caps = list(caps)
        if type(raw) is tuple and len(raw) == 2 and type(raw[0]) is bytes:
            # decode_hot's (frame, False) or (frame, budget): read by the C path straight
            # from the frame
            buf, budget = raw
            if _C is not None and struct_cls is not None and struct_cls is not CAPABILITY:
                cplan = _c_plan(struct_cls)
                if cplan is not None:
                    call = buf[16] == _CALL
                    if budget is False:
                        budget = self._content_budget_c if call else self._content_budget_r
                    found = _C.decode(cplan, buf, budget, self.nesting_limit - 3,
                                      _CONTENT_PTR if call else _RETURN_CONTENT_PTR, caps)
                    if found is not _C_BAIL:
                        return found
            raw = _hot_reader(buf, self.traversal_limit_in_words, self.nesting_limit, raw[1])
        elif not isinstance(raw, AnyPointerReader):
            raise TypeError(f"raw content must be the AnyPointerReader decode() left in "
                            f"Payload.raw, not {type(raw).__name__}")
        if struct_cls is None:
            raise _no_classes("a received payload as a field-number dict")
        msg = raw.msg
        msg.cap_table = caps
        try:
            if struct_cls is CAPABILITY:
                if raw.pos < 0:
                    return None
                kind, _s, _t, _lo, hi = resolve(msg, raw.seg, raw.pos)
                if kind < 0:
                    return None
                if kind != 3:
                    raise DecodeError(f"expected a capability (a bootstrap's answer), found a "
                                      f"{'struct' if kind == 0 else 'list'} pointer", raw.pos)
                return _cap_object(msg, raw.pos, hi)
            cplan = _c_plan(struct_cls)
            if cplan is not None and raw.pos >= 0 and len(msg.bounds) == 1:
                found = _c_read(cplan, msg, raw.pos, raw.nesting, caps)
                if found is not _C_BAIL:
                    return found
            _codec, _key, plan = _content_codec(struct_cls)
            loc = struct_at(msg, raw.seg, raw.pos, raw.nesting) if raw.pos >= 0 else None
            if loc is None:
                decoded = plan.decode(msg, 0, 0, 0, 0, 0, raw.nesting)
            else:
                decoded = plan.decode(msg, *loc)
        except DecodeError as exc:
            raise _from_decode_error(exc) from None
        except RecursionError:
            raise _error("payload nests deeper than Python's recursion limit allows",
                         raw.pos) from None
        return _instance(struct_cls, decoded)

    # -------------------------------------------------------------------------- transforms

    def transform(self, struct_cls: Any, path: tuple[str, ...]) -> tuple[int, ...]:
        """The ``getPointerField`` steps reaching field ``path`` (names) of a ``struct_cls``
        value: each pointer field on the way adds its index in its struct's pointer section;
        a group adds none. Raises ``ValueError`` for a name that is not a field, a path that
        continues past a non-struct or ends on a group or a non-pointer field."""
        if struct_cls is None:
            raise _no_classes("a pipelined field path")
        steps: list[int] = []
        cls = struct_cls
        last = len(path) - 1
        for i, name in enumerate(path):
            schema = cls.cara_schema
            node = schema.node
            if node is None or node.struct is None:
                raise _no_classes(schema.name)
            spec = schema.by_name.get(name)
            if spec is None:
                number = schema.by_key.get(name)
                if number is None:
                    raise ValueError(f"{schema.name} has no field {name!r}")
                spec = schema.fields[number]
            f = node.struct.fields[spec.number]
            where = f"{schema.name}.{spec.name}"
            if f.which == "group":
                if i == last:
                    raise ValueError(f"{where} is a group, not a pointer field")
                cls = spec.type.cls
                continue
            assert f.slot is not None
            which = f.slot.type.which
            if which not in _POINTER_TYPES:
                raise ValueError(f"{where} is a {which} field, not a pointer field")
            steps.append(f.slot.offset)
            if i < last:
                if which != "struct":
                    raise ValueError(f"{where} is not a struct, so {path[i + 1]!r} cannot be "
                                     f"reached through it")
                cls = spec.type.cls
        return tuple(steps)

    def follow(self, content: Any, transform: tuple[int, ...]) -> Any:
        value = content
        for i, step in enumerate(transform):
            if value is None:
                return None
            cls = type(value)
            if not isinstance(value, dict) or not hasattr(cls, "cara_schema"):
                if isinstance(value, Mapping):
                    raise _no_classes("a pipelined call into a field-number dict")
                raise _error(f"transform step {i} (pointer {step}) reaches into a "
                             f"{cls.__name__}, not a struct", None)
            entries = _pointer_table(cls).get(step)
            if entries is None:
                raise _error(f"transform step {i}: {cls.cara_schema.name} has no pointer "
                             f"field {step}", None)
            found = None
            for groups, number in entries:
                holder: Any = value
                for g in groups:
                    holder = _dget(holder, g)
                    if holder is None:
                        break
                else:
                    found = _dget(holder, number)
                    if found is not None:
                        break
            value = found
        return value


#: A runtime struct of class ``cls`` from the payload codec's sparse dict (the trusted builder
#: that ``S.from_bytes`` uses, falling back to the general constructor).
_instance = _from_sparse
