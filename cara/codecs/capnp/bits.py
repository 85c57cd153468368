"""Bit lists (``List(Bool)``) to and from bytes in time linear in the number of bits.

A bit list packs element ``i`` into bit ``i % 8`` of byte ``i // 8``. Building one big ``int``
and shifting it per element (``bits >> i & 1``, ``bits |= 1 << i``) costs time proportional to
the int's size on every step, which is quadratic in the list's length; both directions here work
a byte at a time through C-level loops instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

__all__ = ["pack_bits", "unpack_bits"]

#: The eight bits of each byte value, least significant first, as bools.
_BYTE_BITS = tuple(tuple(b >> i & 1 == 1 for i in range(8)) for b in range(256))
#: byte 0/1 -> ASCII "0"/"1" (for ``int(..., 2)``, which is linear for base 2).
_DIGITS = bytes.maketrans(b"\0\1", b"01")


def unpack_bits(buf: bytes | bytearray | memoryview, start: int, count: int) -> list[bool]:
    """The ``count`` bits stored from byte ``start`` of ``buf`` on, as bools."""
    raw = buf[start:start + ((count + 7) >> 3)]
    out = list(chain.from_iterable(map(_BYTE_BITS.__getitem__, raw)))
    del out[count:]
    return out


def pack_bits(items: Iterable[object], nbytes: int | None = None) -> bytes:
    """The truth values of ``items`` as a bit list's bytes (padded with zero bytes to
    ``nbytes``, by default to a whole number of bytes)."""
    flags = bytes(map(bool, items))
    count = len(flags)
    if nbytes is None:
        nbytes = (count + 7) >> 3
    if not count:
        return bytes(nbytes)
    return int(flags[::-1].translate(_DIGITS), 2).to_bytes(nbytes, "little")
