"""Reading Cap'n Proto messages: pointer resolution with every safety check, and lazy readers.

The input is kept as one ``bytes`` object; every position below is a byte offset into it, and a
segment is a ``(start, end)`` byte range. That lets every :class:`~cara.errors.DecodeError` name
the byte offset in the caller's input (for packed input: in the unpacked bytes).

Safety, as the encoding spec asks (its "Security Considerations"):

* every pointer target is checked to lie inside its segment before anything is read;
* far pointers must name an existing segment and land on a struct/list pointer (single far) or
  on a far pointer plus a tag (double far);
* every dereference is charged against a *traversal limit* in words (default 8 Mi words, as
  libcapnp); a list is charged at least a word per eight elements and an element with no
  bytes on the wire (Void, zero-size structs) ``ZERO_SIZE_ELEMENT_WORDS``, so pointer
  cycles, overlapping pointers and amplification all end in a ``DecodeError``;
* nesting is limited (default 64 levels), so deep or cyclic structures never recurse without
  bound.

The low-level functions (``struct_at``, ``list_at``, ``text_at``, ``data_at``) return plain
tuples so the schema-driven decoder can use them without creating objects; the classes
(:class:`StructReader`, :class:`ListReader`, :class:`AnyPointerReader`) wrap them for callers
that want to look around a message without a schema.
"""

from __future__ import annotations

import struct
from typing import Any

from cara.errors import DecodeError
from cara.runtime import hooks
from cara.runtime.types import hold_in_any_pointer

from .framing import Segments, read_flat, read_framed
from .packing import unpack

__all__ = [
    "DEFAULT_NESTING_LIMIT",
    "DEFAULT_TRAVERSAL_LIMIT",
    "ELEMENT_BITS",
    "EXT_CAPNP_MESSAGE",
    "ZERO_SIZE_ELEMENT_WORDS",
    "AnyPointerReader",
    "ListLoc",
    "ListReader",
    "Message",
    "StructLoc",
    "StructReader",
    "charge_elements",
    "data_at",
    "list_at",
    "pointer_from_ext",
    "read_message",
    "struct_at",
    "text_at",
]

DEFAULT_TRAVERSAL_LIMIT = 8 * 1024 * 1024
DEFAULT_NESTING_LIMIT = 64
#: What one list element with no bytes on the wire (a Void, or a struct of zero words) is
#: charged against the traversal limit, in words. libcapnp charges one word, but decoding
#: makes a Python object per element (about 14 words for an empty struct; some 30 words more
#: on its way to JSON in ``cara convert``); at 64 words, the 8 Mi-word default budget buys at
#: most 128 Ki such elements, so a 32-byte message cannot decode into millions of objects.
ZERO_SIZE_ELEMENT_WORDS = 64

_PTR = struct.Struct("<iI")
_unpack_ptr = _PTR.unpack_from

#: Bits of data per element for each list element size code (0..6); 7 is inline composite.
ELEMENT_BITS = (0, 1, 8, 16, 32, 64, 0)

#: ``(segment, data position, data size in bytes, pointer position, pointer count, nesting)``
StructLoc = tuple[int, int, int, int, int, int]
#: ``(segment, first element position, count, element step in bytes (-1: bit list),
#: data bytes per element, pointers per element, element size code, nesting)``
ListLoc = tuple[int, int, int, int, int, int, int, int]


class Message:
    """A received message: its segments, the traversal budget, nesting limit and cap table."""

    __slots__ = ("bounds", "buf", "cap_table", "nesting_limit", "traversal_left")

    def __init__(self, segments: Segments, *,
                 traversal_limit_in_words: int = DEFAULT_TRAVERSAL_LIMIT,
                 nesting_limit: int = DEFAULT_NESTING_LIMIT,
                 cap_table: list[Any] | None = None) -> None:
        self.buf, self.bounds = segments
        self.traversal_left = traversal_limit_in_words
        self.nesting_limit = nesting_limit
        #: Capabilities referenced by index from capability pointers (filled by RPC).
        self.cap_table = cap_table if cap_table is not None else []

    def root(self) -> StructReader:
        """The root struct (an empty struct when the root pointer is null)."""
        start = self.bounds[0][0]
        return StructReader(self, struct_at(self, 0, start, self.nesting_limit))

    def root_pointer(self) -> AnyPointerReader:
        return AnyPointerReader(self, 0, self.bounds[0][0], self.nesting_limit)


def read_message(data: bytes | bytearray | memoryview, *, packed: bool = False,
                 flat: bool = False,
                 traversal_limit_in_words: int = DEFAULT_TRAVERSAL_LIMIT,
                 nesting_limit: int = DEFAULT_NESTING_LIMIT) -> Message:
    """Parse framing (and packing) and return a :class:`Message` ready to be read."""
    if packed:
        data = unpack(data, max_bytes=max(8 * traversal_limit_in_words, 4096) + 4096)
    segments = read_flat(data) if flat else read_framed(data)
    return Message(segments, traversal_limit_in_words=traversal_limit_in_words,
                   nesting_limit=nesting_limit)


# ------------------------------------------------------------------------ pointer resolution


def resolve(msg: Message, seg: int, pos: int) -> tuple[int, int, int, int, int]:
    """Follow the pointer word at ``pos`` through any far pointers.

    Returns ``(kind, segment, target, lo, hi)``: kind 0 struct, 1 list, 3 capability (target is
    meaningless), or -1 for a null pointer; ``lo``/``hi`` are the two halves of the word that
    describes the object (the landing pad's or the tag's for far pointers).
    """
    lo, hi = _unpack_ptr(msg.buf, pos)
    kind = lo & 3
    if kind < 2:
        if lo == 0 and hi == 0:
            return -1, seg, 0, 0, 0
        return kind, seg, pos + 8 + (lo >> 2) * 8, lo, hi
    if kind == 3:
        if lo != 3:
            raise DecodeError("malformed capability pointer", pos)
        return 3, seg, 0, lo, hi
    # far pointer
    bounds = msg.bounds
    if hi >= len(bounds):
        raise DecodeError(f"far pointer names segment {hi}, but the message has "
                          f"{len(bounds)}", pos)
    start, end = bounds[hi]
    pad = start + ((lo & 0xFFFFFFFF) >> 3) * 8
    if not lo & 4:
        if pad + 8 > end:
            raise DecodeError("far pointer landing pad is outside its segment", pos)
        lo2, hi2 = _unpack_ptr(msg.buf, pad)
        kind = lo2 & 3
        if kind > 1:
            raise DecodeError("far pointer landing pad is not a struct or list pointer", pad)
        if lo2 == 0 and hi2 == 0:
            return -1, hi, 0, 0, 0
        return kind, hi, pad + 8 + (lo2 >> 2) * 8, lo2, hi2
    if pad + 16 > end:
        raise DecodeError("double-far landing pad is outside its segment", pos)
    lo2, hi2 = _unpack_ptr(msg.buf, pad)
    if lo2 & 7 != 2:
        raise DecodeError("double-far landing pad does not start with a single far pointer",
                          pad)
    if hi2 >= len(bounds):
        raise DecodeError(f"double-far landing pad names segment {hi2}, but the message has "
                          f"{len(bounds)}", pad)
    lo3, hi3 = _unpack_ptr(msg.buf, pad + 8)
    kind = lo3 & 3
    if kind > 1:
        raise DecodeError("double-far tag is not a struct or list pointer", pad + 8)
    return kind, hi2, bounds[hi2][0] + ((lo2 & 0xFFFFFFFF) >> 3) * 8, lo3, hi3


def charge_elements(msg: Message, count: int, step: int, words_each: int, pos: int) -> None:
    """Charge a struct list as if each element had ``words_each`` words (the size the schema
    reads), minus what :func:`list_at` already charged for its ``step``-byte elements.

    Decoding a list element into a Python object costs about the same whatever its size on
    the wire, so a list of small or zero-size elements must not buy more objects per word of
    traversal budget than a list of full-size ones (the amplification guard, per object).
    """
    already = (count * step + 7) >> 3 if step else count * ZERO_SIZE_ELEMENT_WORDS
    extra = count * max(words_each, 1) - already
    if extra > 0:
        _charge(msg, extra, pos)


def _charge(msg: Message, words: int, pos: int) -> None:
    left = msg.traversal_left - words
    msg.traversal_left = left
    if left < 0:
        raise DecodeError("message exceeds the traversal limit (too large, or pointers "
                          "that overlap or loop)", pos)


def struct_at(msg: Message, seg: int, pos: int, nesting: int) -> StructLoc | None:
    """The struct the pointer word at ``pos`` points to, or ``None`` for a null pointer."""
    lo, hi = _unpack_ptr(msg.buf, pos)
    if lo & 3 == 0 and (lo or hi):  # a near struct pointer, the common case: no resolve()
        kind = 0
        target = pos + 8 + (lo >> 2) * 8
    else:
        kind, seg, target, lo, hi = resolve(msg, seg, pos)
    if kind != 0:
        if kind < 0:
            return None
        raise DecodeError(f"expected a struct pointer, found a "
                          f"{'list' if kind == 1 else 'capability'} pointer", pos)
    if nesting <= 0:
        raise DecodeError("message nests deeper than the nesting limit", pos)
    data = (hi & 0xFFFF) * 8
    ptrs = hi >> 16
    start, end = msg.bounds[seg]
    if target < start or target + data + ptrs * 8 > end:
        raise DecodeError("struct pointer points outside its segment", pos)
    left = msg.traversal_left - ((data >> 3) + ptrs or 1)
    msg.traversal_left = left
    if left < 0:
        _charge(msg, 0, pos)
    return seg, target, data, target + data, ptrs, nesting - 1


def list_at(msg: Message, seg: int, pos: int, nesting: int) -> ListLoc | None:
    """The list the pointer word at ``pos`` points to, or ``None`` for a null pointer."""
    lo, hi = _unpack_ptr(msg.buf, pos)
    if lo & 3 == 1:  # a near list pointer, the common case: no resolve()
        kind = 1
        target = pos + 8 + (lo >> 2) * 8
    else:
        kind, seg, target, lo, hi = resolve(msg, seg, pos)
    if kind != 1:
        if kind < 0:
            return None
        raise DecodeError(f"expected a list pointer, found a "
                          f"{'struct' if kind == 0 else 'capability'} pointer", pos)
    if nesting <= 0:
        raise DecodeError("message nests deeper than the nesting limit", pos)
    size = hi & 7
    count = hi >> 3
    start, end = msg.bounds[seg]
    if size == 7:
        words = count
        if target < start or target + 8 + words * 8 > end:
            raise DecodeError("list pointer points outside its segment", pos)
        tag_lo, tag_hi = _unpack_ptr(msg.buf, target)
        if tag_lo & 3:
            raise DecodeError("inline-composite list tag is not a struct tag", target)
        count = tag_lo >> 2
        if count < 0:
            raise DecodeError("inline-composite list has a negative element count", target)
        dbytes = (tag_hi & 0xFFFF) * 8
        ptrs = tag_hi >> 16
        step = dbytes + ptrs * 8
        if step * count > words * 8:
            raise DecodeError(f"inline-composite list of {count} elements of "
                              f"{step // 8} words does not fit its {words} words", target)
        left = msg.traversal_left - ((max(words, count) if step else
                                      count * ZERO_SIZE_ELEMENT_WORDS) or 1)
        msg.traversal_left = left
        if left < 0:
            _charge(msg, 0, pos)
        return seg, target + 8, count, step, dbytes, ptrs, 7, nesting - 1
    if size == 1:
        nbytes = (count + 7) >> 3
        step = -1
        dbytes = 0
        ptrs = 0
    elif size == 6:
        step = 8
        nbytes = 8 * count
        dbytes = 0
        ptrs = 1
    else:
        step = ELEMENT_BITS[size] >> 3
        nbytes = step * count
        dbytes = step
        ptrs = 0
    if target < start or target + nbytes > end:
        raise DecodeError("list pointer points outside its segment", pos)
    # Decoding makes a Python list slot per element, so the charge is at least a word per
    # eight elements (a bit list's bytes, not its words), and an element with nothing on the
    # wire (Void) costs ZERO_SIZE_ELEMENT_WORDS: the amplification guard.
    if size > 1:
        words = (nbytes + 7) >> 3
    elif size:
        words = (count + 7) >> 3
    else:
        words = count * ZERO_SIZE_ELEMENT_WORDS
    left = msg.traversal_left - words
    msg.traversal_left = left
    if left < 0:
        _charge(msg, 0, pos)
    return seg, target, count, step, dbytes, ptrs, size, nesting - 1


def _blob_at(msg: Message, seg: int, pos: int, what: str) -> tuple[int, int] | None:
    kind, seg, target, _lo, hi = resolve(msg, seg, pos)
    if kind != 1:
        if kind < 0:
            return None
        raise DecodeError(f"expected a {what} (list) pointer, found a "
                          f"{'struct' if kind == 0 else 'capability'} pointer", pos)
    if hi & 7 != 2:
        raise DecodeError(f"{what} pointer does not point to a list of bytes", pos)
    count = hi >> 3
    start, end = msg.bounds[seg]
    if target < start or target + count > end:
        raise DecodeError(f"{what} points outside its segment", pos)
    left = msg.traversal_left - ((count + 7) >> 3)
    msg.traversal_left = left
    if left < 0:
        _charge(msg, 0, pos)
    return target, count


def text_at(msg: Message, seg: int, pos: int) -> str | None:
    """The Text the pointer at ``pos`` points to (``None`` for a null pointer)."""
    buf = msg.buf
    lo, hi = _unpack_ptr(buf, pos)
    if lo & 3 == 1 and hi & 7 == 2:  # near pointer to a byte list: the common case, inline
        target = pos + 8 + (lo >> 2) * 8
        count = hi >> 3
        start, end = msg.bounds[seg]
        if start <= target and target + count <= end and count and buf[target + count - 1] == 0:
            left = msg.traversal_left - ((count + 7) >> 3)
            msg.traversal_left = left
            if left >= 0:
                try:
                    return buf[target:target + count - 1].decode()
                except UnicodeDecodeError:
                    pass  # the slow path below reports it
            msg.traversal_left += (count + 7) >> 3
    return _text_slow(msg, seg, pos)


def _text_slow(msg: Message, seg: int, pos: int) -> str | None:
    blob = _blob_at(msg, seg, pos, "text")
    if blob is None:
        return None
    target, count = blob
    buf = msg.buf
    if count == 0 or buf[target + count - 1] != 0:
        raise DecodeError("text is not NUL-terminated", pos)
    try:
        return buf[target:target + count - 1].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"text is not valid UTF-8: {exc.reason}", target + exc.start) from None


def data_at(msg: Message, seg: int, pos: int) -> bytes | None:
    """The Data the pointer at ``pos`` points to (``None`` for a null pointer)."""
    blob = _blob_at(msg, seg, pos, "data")
    if blob is None:
        return None
    target, count = blob
    return msg.buf[target:target + count]


# ------------------------------------------------------------------------------ lazy readers

_SCALARS = {
    "bool": None, "int8": struct.Struct("<b"), "uint8": struct.Struct("<B"),
    "int16": struct.Struct("<h"), "uint16": struct.Struct("<H"),
    "int32": struct.Struct("<i"), "uint32": struct.Struct("<I"),
    "int64": struct.Struct("<q"), "uint64": struct.Struct("<Q"),
    "float32": struct.Struct("<f"), "float64": struct.Struct("<d"),
}


class StructReader:
    """A struct inside a message, read field by field without a schema.

    Fields past the end of the struct's sections read as zero / null: that is how a newer
    reader sees a struct written with an older, smaller schema.
    """

    __slots__ = ("dbytes", "dpos", "msg", "nesting", "nptrs", "ppos", "seg")

    def __init__(self, msg: Message, loc: StructLoc | None) -> None:
        self.msg = msg
        if loc is None:
            self.seg, self.dpos, self.dbytes, self.ppos, self.nptrs = 0, 0, 0, 0, 0
            self.nesting = msg.nesting_limit
        else:
            self.seg, self.dpos, self.dbytes, self.ppos, self.nptrs, self.nesting = loc

    @property
    def data_words(self) -> int:
        return (self.dbytes + 7) // 8

    @property
    def pointer_count(self) -> int:
        return self.nptrs

    def data_section(self) -> bytes:
        return self.msg.buf[self.dpos:self.dpos + self.dbytes]

    def get(self, kind: str, offset: int) -> int | float | bool:
        """Scalar ``kind`` (``"uint16"``, ``"bool"`` ...) at ``offset`` in units of its size."""
        if kind == "bool":
            byte = offset >> 3
            if byte >= self.dbytes:
                return False
            return bool(self.msg.buf[self.dpos + byte] >> (offset & 7) & 1)
        codec = _SCALARS[kind]
        assert codec is not None
        at = offset * codec.size
        if at + codec.size > self.dbytes:
            return 0
        return codec.unpack_from(self.msg.buf, self.dpos + at)[0]

    def pointer(self, index: int) -> AnyPointerReader:
        """Pointer ``index`` of the pointer section (a null pointer when out of range)."""
        if index >= self.nptrs:
            return AnyPointerReader(self.msg, self.seg, -1, self.nesting)
        return AnyPointerReader(self.msg, self.seg, self.ppos + 8 * index, self.nesting)


class ListReader:
    """A list inside a message, without a schema: elements as ints, structs or pointers."""

    __slots__ = ("count", "dbytes", "msg", "nesting", "nptrs", "pos", "seg", "size", "step")

    def __init__(self, msg: Message, loc: ListLoc) -> None:
        self.msg = msg
        (self.seg, self.pos, self.count, self.step, self.dbytes, self.nptrs, self.size,
         self.nesting) = loc

    def __len__(self) -> int:
        return self.count

    def _check(self, index: int) -> int:
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError("list index out of range")
        return index

    def struct(self, index: int) -> StructReader:
        """Element ``index`` read as a struct (any element size except bits, per the spec)."""
        index = self._check(index)
        if self.size == 1:
            raise DecodeError("a bit list cannot be read as a list of structs", self.pos)
        base = self.pos + index * self.step
        return StructReader(self.msg, (self.seg, base, self.dbytes, base + self.dbytes,
                                       self.nptrs, self.nesting))

    def bit(self, index: int) -> bool:
        index = self._check(index)
        if self.size != 1:
            raise DecodeError("expected a bit list", self.pos)
        return bool(self.msg.buf[self.pos + (index >> 3)] >> (index & 7) & 1)

    def pointer(self, index: int) -> AnyPointerReader:
        index = self._check(index)
        if self.nptrs == 0:
            raise DecodeError("list elements carry no pointer", self.pos)
        return AnyPointerReader(self.msg, self.seg, self.pos + index * self.step + self.dbytes,
                                self.nesting)


class AnyPointerReader:
    """An uninterpreted pointer: a struct, list, capability or null, resolved on demand.

    This is the value an ``AnyPointer`` field decodes to; the builder copies it verbatim.
    """

    __slots__ = ("msg", "nesting", "pos", "seg")

    def __init__(self, msg: Message, seg: int, pos: int, nesting: int) -> None:
        self.msg = msg
        self.seg = seg
        self.pos = pos  # -1: a pointer beyond the end of a (smaller, older) struct: null
        self.nesting = nesting

    def __copy__(self) -> AnyPointerReader:
        return self  # a view of immutable bytes

    def __deepcopy__(self, memo: dict[int, Any]) -> AnyPointerReader:
        return self

    def __repr__(self) -> str:
        return f"<AnyPointerReader {self.which()} at byte {self.pos}>"

    def to_flat(self) -> bytes:
        """A flat single-segment message whose root pointer is a copy of this one (how the
        object travels in msgpack: :data:`EXT_CAPNP_MESSAGE`)."""
        from .builder import MessageBuilder, copy_pointer

        out = MessageBuilder()
        if self.pos >= 0:
            copy_pointer(out, 0, self.msg, self.seg, self.pos, self.nesting)
        return out.segment()

    def __reduce__(self) -> Any:
        return (_pointer_from_flat, (self.to_flat(),))

    def which(self) -> str:
        """``"null"``, ``"struct"``, ``"list"`` or ``"capability"``."""
        if self.pos < 0:
            return "null"
        kind = resolve(self.msg, self.seg, self.pos)[0]
        return ("null", "struct", "list", "", "capability")[kind + 1]

    def is_null(self) -> bool:
        return self.which() == "null"

    def as_struct(self) -> StructReader:
        if self.pos < 0:
            return StructReader(self.msg, None)
        return StructReader(self.msg, struct_at(self.msg, self.seg, self.pos, self.nesting))

    def as_list(self) -> ListReader | None:
        if self.pos < 0:
            return None
        loc = list_at(self.msg, self.seg, self.pos, self.nesting)
        return None if loc is None else ListReader(self.msg, loc)

    def as_text(self) -> str | None:
        return None if self.pos < 0 else text_at(self.msg, self.seg, self.pos)

    def as_data(self) -> bytes | None:
        return None if self.pos < 0 else data_at(self.msg, self.seg, self.pos)

    def as_capability(self) -> int | None:
        """The capability's index in the message's cap table (``None`` for null)."""
        if self.pos < 0:
            return None
        kind, _seg, _target, _lo, hi = resolve(self.msg, self.seg, self.pos)
        if kind < 0:
            return None
        if kind != 3:
            raise DecodeError("expected a capability pointer", self.pos)
        return hi


def _pointer_from_flat(data: bytes) -> AnyPointerReader:
    msg = Message(read_flat(data))
    return AnyPointerReader(msg, 0, 0, msg.nesting_limit)


#: The msgpack ext type code of a Cap'n Proto object without a schema (an ``AnyPointer``
#: value read from a binary message): its data is a flat single-segment message whose root
#: pointer is the object. The binary encoder copies it back verbatim.
EXT_CAPNP_MESSAGE = 0x43


def pointer_from_ext(data: bytes) -> AnyPointerReader:
    """The object an :data:`EXT_CAPNP_MESSAGE` ext value holds (bounds-checked on use)."""
    return _pointer_from_flat(data)


def _msgpack_default(value: Any) -> Any:
    """msgpack's ``default`` for the objects this module makes (see hooks.packb)."""
    if isinstance(value, AnyPointerReader):
        import msgpack

        return msgpack.ExtType(EXT_CAPNP_MESSAGE, value.to_flat())
    raise TypeError(f"cannot encode {type(value).__name__} in msgpack")


def _msgpack_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook`` for :data:`EXT_CAPNP_MESSAGE` (see hooks.unpack_into)."""
    if code != EXT_CAPNP_MESSAGE:
        import msgpack

        return msgpack.ExtType(code, data)
    return pointer_from_ext(data)


hooks.register("msgpack_default", _msgpack_default)
hold_in_any_pointer(AnyPointerReader)  # an AnyPointer field holds one as it is
hooks.register("msgpack_ext", _msgpack_ext)
