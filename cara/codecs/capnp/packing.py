"""The packed encoding: each word becomes a tag byte plus its non-zero bytes.

Tag ``0x00`` is followed by a count of further all-zero words; tag ``0xff`` by the eight bytes
and a count of words copied verbatim. The packer uses the same run heuristic as libcapnp (a raw
run goes on while words have at most one zero byte), so its output is byte-identical to the
reference tools' ``packed`` files.

Unpacking is bounded: a two-byte ``00 ff`` expands to 2 KiB, so the output size is checked
against ``max_bytes`` before every expansion.
"""

from __future__ import annotations

import struct

from cara.errors import DecodeError

__all__ = ["DEFAULT_MAX_UNPACKED_BYTES", "pack", "pack_framed", "unpack"]

#: 8 Mi words, the same ceiling as the default traversal limit.
DEFAULT_MAX_UNPACKED_BYTES = 8 * 1024 * 1024 * 8

_ZERO_WORD = bytes(8)
# For each tag, a Struct that scatters the tag's non-zero bytes into a word ('x' pads are 0).
_SCATTER = [
    struct.Struct("".join("B" if tag >> bit & 1 else "x" for bit in range(8)))
    for tag in range(256)
]
# word.translate(_NONZERO_TO_ONE) -> an 8-byte 0/1 pattern; _TAG_OF maps it to the tag byte.
_POPCOUNT = [bin(tag).count("1") for tag in range(256)]
_NONZERO_TO_ONE = bytes([0] + [1] * 255)
_TAG_OF = {
    bytes(tag >> bit & 1 for bit in range(8)): tag for tag in range(256)
}


def pack(data: bytes | bytearray | memoryview) -> bytes:
    """Pack a word-aligned byte string (a framed or flat message)."""
    src = bytes(data)
    n = len(src)
    if n & 7:
        raise ValueError(f"packing needs whole words; got {n} bytes")
    out = bytearray()
    i = 0
    zero = _ZERO_WORD
    while i < n:
        word = src[i:i + 8]
        i += 8
        if word == zero:
            run = 0
            while run < 255 and i < n and src[i:i + 8] == zero:
                run += 1
                i += 8
            out += b"\0"
            out.append(run)
            continue
        tag = _TAG_OF[word.translate(_NONZERO_TO_ONE)]
        out.append(tag)
        out += word.replace(b"\0", b"")
        if tag == 0xFF:
            start = i
            run = 0
            while run < 255 and i < n and src[i:i + 8].count(0) <= 1:
                run += 1
                i += 8
            out.append(run)
            out += src[start:i]
    return bytes(out)


def pack_framed(segments: list[bytes] | list[bytearray]) -> bytes:
    """Pack a message given as segments, as libcapnp's packed stream writer does: the segment
    table and each segment are packed separately, so no zero or raw run crosses a segment
    boundary (this is what makes ``segmented-packed`` byte-identical)."""
    from cara.codecs.capnp.framing import frame_segments

    framed = frame_segments(segments)
    table = framed[:len(framed) - sum(len(s) for s in segments)]
    return b"".join([pack(table), *(pack(s) for s in segments)])


def unpack(data: bytes | bytearray | memoryview, *,
           max_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> bytes:
    """Unpack; ``DecodeError`` if the input is truncated or would exceed ``max_bytes``."""
    src = bytes(data)
    n = len(src)
    out = bytearray()
    i = 0
    scatter = _SCATTER
    while i < n:
        tag = src[i]
        i += 1
        if tag == 0:
            if i >= n:
                raise DecodeError("packed input ends inside a zero run", i)
            size = 8 * (src[i] + 1)
            i += 1
            if len(out) + size > max_bytes:
                raise DecodeError(f"unpacked message would exceed {max_bytes} bytes", i)
            out += bytes(size)
        elif tag == 0xFF:
            if i + 9 > n:
                raise DecodeError("packed input ends inside a word", n)
            size = 8 * src[i + 8]
            if i + 9 + size > n:
                raise DecodeError("packed input ends inside a run of raw words", n)
            if len(out) + 8 + size > max_bytes:
                raise DecodeError(f"unpacked message would exceed {max_bytes} bytes", i)
            out += src[i:i + 8]
            out += src[i + 9:i + 9 + size]
            i += 9 + size
        else:
            s = scatter[tag]
            k = _POPCOUNT[tag]
            if i + k > n:
                raise DecodeError("packed input ends inside a word", n)
            if len(out) + 8 > max_bytes:
                raise DecodeError(f"unpacked message would exceed {max_bytes} bytes", i)
            out += s.pack(*src[i:i + k])
            i += k
    return bytes(out)
