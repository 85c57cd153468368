"""Stream framing: the segment table that precedes a Cap'n Proto message on the wire.

A framed message is ``u32 segmentCount-1``, one ``u32`` size (in words) per segment, padding to
a word boundary, then the segments back to back. A *flat* message is a single segment with no
table at all (what ``capnp convert`` calls ``flat``).

The reader keeps the input as one ``bytes`` object and describes each segment by its byte range
inside it, so a decode error can name the byte offset in the caller's input, and no segment is
copied.
"""

from __future__ import annotations

import struct

from cara.errors import DecodeError

__all__ = [
    "DEFAULT_MAX_SEGMENTS",
    "Segments",
    "frame_segments",
    "framed_size",
    "read_flat",
    "read_framed",
]

#: libcapnp refuses more than 512 segments in a stream message (``ReaderOptions`` has no knob for
#: it; it is the fixed limit of ``InputStreamMessageReader``). We accept the same by default.
DEFAULT_MAX_SEGMENTS = 512

_U32 = struct.Struct("<I")

#: One message as the reader sees it: the buffer and each segment's ``(start, end)`` byte range.
Segments = tuple[bytes, list[tuple[int, int]]]


def framed_size(data: bytes | bytearray | memoryview, *,
                max_segments: int = DEFAULT_MAX_SEGMENTS) -> int | None:
    """Total byte length of the framed message at the start of ``data``, or ``None`` when the
    segment table itself is not complete yet (a stream reader should wait for more bytes)."""
    n = len(data)
    if n < 4:
        return None
    count = _U32.unpack_from(data, 0)[0] + 1
    if count > max_segments:
        raise DecodeError(f"message has {count} segments, more than the limit {max_segments}", 0)
    table = (4 + 4 * count + 7) & ~7
    if n < table:
        return None
    words = 0
    for i in range(count):
        words += _U32.unpack_from(data, 4 + 4 * i)[0]
    return table + 8 * words


def read_framed(data: bytes | bytearray | memoryview, *,
                max_segments: int = DEFAULT_MAX_SEGMENTS,
                allow_trailing: bool = False) -> Segments:
    """Split a framed message into segments (no copy when ``data`` is ``bytes``).

    Sizes are checked against the input length before anything is sliced or allocated, so an
    absurd segment table costs nothing. Extra bytes after the last segment are an error unless
    ``allow_trailing`` is set.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    n = len(buf)
    if n >= 16 and buf[:4] == b"\0\0\0\0" and not allow_trailing:
        # one segment, the usual case: the table is a single word
        if _U32.unpack_from(buf, 4)[0] * 8 + 8 == n:
            return buf, [(8, n)]
    if n < 8:
        raise DecodeError(f"message is {n} bytes, too short for a segment table", 0)
    if n & 7:
        raise DecodeError(f"message length {n} is not a multiple of 8 bytes", n)
    count = _U32.unpack_from(buf, 0)[0] + 1
    if count > max_segments:
        raise DecodeError(f"message has {count} segments, more than the limit {max_segments}", 0)
    table = (4 + 4 * count + 7) & ~7
    if table > n:
        raise DecodeError(f"segment table of {count} segments is truncated", n)
    bounds: list[tuple[int, int]] = []
    pos = table
    for i in range(count):
        size = _U32.unpack_from(buf, 4 + 4 * i)[0] * 8
        end = pos + size
        if end > n:
            raise DecodeError(
                f"segment {i} of {size // 8} words runs past the end of the message "
                f"({n} bytes)", 4 + 4 * i)
        bounds.append((pos, end))
        pos = end
    if pos != n and not allow_trailing:
        raise DecodeError(f"{n - pos} bytes after the last segment", pos)
    if bounds[0][0] == bounds[0][1]:
        raise DecodeError("the first segment is empty (no root pointer)", 4)
    return buf, bounds


def read_flat(data: bytes | bytearray | memoryview) -> Segments:
    """A flat (single segment, no table) message."""
    buf = data if isinstance(data, bytes) else bytes(data)
    n = len(buf)
    if n & 7:
        raise DecodeError(f"flat message length {n} is not a multiple of 8 bytes", n)
    if n == 0:
        raise DecodeError("flat message is empty (no root pointer)", 0)
    return buf, [(0, n)]


def frame_segments(segments: list[bytes] | list[bytearray]) -> bytes:
    """Prefix segments with their table: the standard stream framing."""
    count = len(segments)
    if count == 0:
        raise ValueError("a message has at least one segment")
    head = struct.pack(f"<{count + 1}I", count - 1, *(len(s) // 8 for s in segments))
    if count % 2 == 0:
        head += b"\0\0\0\0"
    return b"".join([head, *segments])
