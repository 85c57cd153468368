"""Building Cap'n Proto messages: one growing segment, objects appended in the order written.

The builder never needs far pointers: everything goes into a single ``bytearray`` that grows at
the end, so an object is "allocated" by appending zero words and a pointer is the distance to
it. Writing fields in declaration order therefore lays the message out the way libcapnp does
when a caller sets fields in order (and the way the canonical form wants: preorder).

:func:`copy_pointer` deep-copies an object out of a received :class:`~.reader.Message` (an
``AnyPointer`` field's value, or a whole message for canonicalisation), optionally trimming it
to canonical form.
"""

from __future__ import annotations

import struct

from .copying import Ref, copy_object
from .framing import frame_segments
from .packing import pack
from .reader import ELEMENT_BITS, Message

__all__ = ["MessageBuilder", "copy_pointer"]

_PTR = struct.Struct("<iI")
_pack_ptr = _PTR.pack_into


class MessageBuilder:
    """A message under construction: ``buf`` holds its single segment, root pointer first."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray(8)

    # -------------------------------------------------------------------- allocation + pointers

    def alloc(self, nbytes: int) -> int:
        """Append ``nbytes`` (a multiple of 8) zero bytes; return where they start."""
        buf = self.buf
        pos = len(buf)
        buf += bytes(nbytes)
        return pos

    def init_struct(self, ptr_pos: int, data_words: int, ptr_count: int) -> int:
        """Allocate a struct, point ``ptr_pos`` at it, return its data section's position."""
        buf = self.buf
        pos = len(buf)
        size = data_words + ptr_count
        if size == 0:
            _pack_ptr(buf, ptr_pos, -4, 0)
            return pos
        buf += bytes(size * 8)
        _pack_ptr(buf, ptr_pos, (pos - ptr_pos - 8) >> 1, data_words | ptr_count << 16)
        return pos

    def init_list(self, ptr_pos: int, size_code: int, count: int) -> int:
        """Allocate a list of a non-composite element size (0..6)."""
        buf = self.buf
        pos = len(buf)
        if size_code == 1:
            nbytes = ((count + 63) >> 6) * 8
        elif size_code == 6:
            nbytes = count * 8
        else:
            nbytes = ((count * ELEMENT_BITS[size_code] + 63) >> 6) * 8
        buf += bytes(nbytes)
        _pack_ptr(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, count << 3 | size_code)
        return pos

    def init_struct_list(self, ptr_pos: int, count: int, data_words: int,
                         ptr_count: int) -> int:
        """Allocate an inline-composite list; return the first element's position."""
        buf = self.buf
        pos = len(buf)
        words = count * (data_words + ptr_count)
        buf += bytes(8 + words * 8)
        _pack_ptr(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, words << 3 | 7)
        _pack_ptr(buf, pos, count << 2, data_words | ptr_count << 16)
        return pos + 8

    def set_text(self, ptr_pos: int, text: str) -> None:
        raw = text.encode()
        buf = self.buf
        pos = len(buf)
        n = len(raw) + 1
        buf += raw
        buf += bytes(8 - (n - 1) % 8)
        _pack_ptr(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, n << 3 | 2)

    def set_data(self, ptr_pos: int, data: bytes | bytearray | memoryview) -> None:
        buf = self.buf
        pos = len(buf)
        n = len(data)
        buf += data
        if n & 7:
            buf += bytes(8 - (n & 7))
        _pack_ptr(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, n << 3 | 2)

    def set_capability(self, ptr_pos: int, index: int) -> None:
        _pack_ptr(self.buf, ptr_pos, 3, index)

    # ----------------------------------------------------------------------------- output

    def segment(self) -> bytes:
        """The single segment (what ``flat`` form is)."""
        return bytes(self.buf)

    def to_bytes(self) -> bytes:
        """Standard stream framing: a one-entry segment table, then the segment."""
        buf = self.buf
        return struct.pack("<II", 0, len(buf) >> 3) + buf

    def to_packed(self) -> bytes:
        return pack(frame_segments([bytes(self.buf)]))


# ------------------------------------------------------------------------------------ copying


class _BuilderTarget:
    """A :class:`MessageBuilder` as the :class:`~.copying.CopyTarget` of a deep copy (its one
    segment is segment 0)."""

    __slots__ = ("builder",)

    def __init__(self, builder: MessageBuilder) -> None:
        self.builder = builder

    def segment(self, seg: int) -> bytearray:
        return self.builder.buf

    def set_capability(self, ref: Ref, index: int) -> None:
        self.builder.set_capability(ref[1], index)

    def init_struct(self, ref: Ref, data_words: int, ptr_count: int) -> Ref:
        return 0, self.builder.init_struct(ref[1], data_words, ptr_count)

    def init_list(self, ref: Ref, size_code: int, count: int) -> Ref:
        return 0, self.builder.init_list(ref[1], size_code, count)

    def init_struct_list(self, ref: Ref, count: int, data_words: int, ptr_count: int) -> Ref:
        return 0, self.builder.init_struct_list(ref[1], count, data_words, ptr_count)


def copy_pointer(dst: MessageBuilder, dst_pos: int, msg: Message, seg: int, pos: int,
                 nesting: int, *, canonical: bool = False) -> None:
    """Deep-copy the object the pointer at ``pos`` (in ``msg``) points to, into ``dst``.

    With ``canonical`` the copy is in canonical form: struct sections lose trailing zero words
    and trailing null pointers (struct lists: as far as every element allows), objects are laid
    out in preorder.
    """
    copy_object(_BuilderTarget(dst), (0, dst_pos), msg, seg, pos, nesting, canonical=canonical)
