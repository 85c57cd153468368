"""Deep-copying an object out of a received message into a message under construction.

Why one module: three writers copy objects (the single-segment :class:`~.builder.MessageBuilder`,
the libcapnp-placement :class:`~.arena.Arena`, and ``cara convert``'s segmented copy). They
differ only in where an object goes and how a pointer to it is written, so the walk over the
source (structs, struct lists, pointer lists, data lists, capabilities; preorder) lives here
once, and each writer supplies the few allocation steps as a :class:`CopyTarget`.
"""

from __future__ import annotations

from typing import Protocol

from .reader import ELEMENT_BITS, Message, list_at, resolve, struct_at

__all__ = ["CopyTarget", "Ref", "copy_object", "list_words"]

#: ``(segment index, byte offset in that segment)``
Ref = tuple[int, int]


class CopyTarget(Protocol):
    """A message under construction, as :func:`copy_object` writes into it.

    Each ``init_*`` allocates an object for the pointer at ``ref``, writes that pointer (or a
    far pointer and landing pad) and returns where the object's content starts.
    """

    def segment(self, seg: int) -> bytearray:
        """The bytes of segment ``seg`` (written in place)."""
        ...

    def set_capability(self, ref: Ref, index: int) -> None: ...

    def init_struct(self, ref: Ref, data_words: int, ptr_count: int) -> Ref:
        """Allocate a struct; a zero-size one gets the offset -1 pointer and no space."""
        ...

    def init_list(self, ref: Ref, size_code: int, count: int) -> Ref:
        """Allocate a list of a non-composite element size (0..6)."""
        ...

    def init_struct_list(self, ref: Ref, count: int, data_words: int, ptr_count: int) -> Ref:
        """Allocate an inline-composite list with its tag; return the first element."""
        ...


def _trimmed_words(buf: bytes, pos: int, nbytes: int) -> int:
    """Words needed to hold the bytes at ``pos`` once trailing zero words are dropped."""
    chunk = buf[pos:pos + nbytes].rstrip(b"\0")
    return (len(chunk) + 7) >> 3


def copy_object(dst: CopyTarget, ref: Ref, msg: Message, seg: int, pos: int, nesting: int, *,
                canonical: bool = False) -> None:
    """Deep-copy the object the pointer at ``pos`` (in ``msg``) points to, into ``dst``, with
    the pointer to the copy at ``ref``. Objects are allocated in preorder.

    With ``canonical`` the copy is in canonical form: struct sections lose trailing zero words
    and trailing null pointers (struct lists: as far as every element allows).
    """
    if pos < 0:
        return
    kind, _seg, _target, _lo, hi = resolve(msg, seg, pos)
    if kind < 0:
        return
    if kind == 3:
        dst.set_capability(ref, hi)
        return
    buf = msg.buf
    if kind == 0:
        loc = struct_at(msg, seg, pos, nesting)
        assert loc is not None
        sseg, dpos, dbytes, ppos, nptrs, inner = loc
        if canonical:
            dwords = _trimmed_words(buf, dpos, dbytes)
            pcount = _trimmed_words(buf, ppos, 8 * nptrs)
        else:
            dwords, pcount = (dbytes + 7) >> 3, nptrs
        oseg, out = dst.init_struct(ref, dwords, pcount)
        keep = min(dbytes, dwords * 8)
        dst.segment(oseg)[out:out + keep] = buf[dpos:dpos + keep]
        pout = out + dwords * 8
        for i in range(pcount):
            copy_object(dst, (oseg, pout + 8 * i), msg, sseg, ppos + 8 * i, inner,
                        canonical=canonical)
        return
    lloc = list_at(msg, seg, pos, nesting)
    assert lloc is not None
    lseg, lpos, count, step, dbytes, nptrs, size, inner = lloc
    if size == 7:
        if canonical:
            dwords = pcount = 0
            for i in range(count):
                base = lpos + i * step
                dwords = max(dwords, _trimmed_words(buf, base, dbytes))
                pcount = max(pcount, _trimmed_words(buf, base + dbytes, 8 * nptrs))
        else:
            dwords, pcount = dbytes >> 3, nptrs
        oseg, out = dst.init_struct_list(ref, count, dwords, pcount)
        target = dst.segment(oseg)
        ostep = (dwords + pcount) * 8
        keep = min(dbytes, dwords * 8)
        for i in range(count):
            base = lpos + i * step
            target[out + i * ostep:out + i * ostep + keep] = buf[base:base + keep]
        for i in range(count):
            base = lpos + i * step + dbytes
            obase = out + i * ostep + dwords * 8
            for j in range(pcount):
                copy_object(dst, (oseg, obase + 8 * j), msg, lseg, base + 8 * j, inner,
                            canonical=canonical)
        return
    if size == 6:
        oseg, out = dst.init_list(ref, 6, count)
        for i in range(count):
            copy_object(dst, (oseg, out + 8 * i), msg, lseg, lpos + 8 * i, inner,
                        canonical=canonical)
        return
    nbytes = (count + 7) >> 3 if size == 1 else count * (ELEMENT_BITS[size] >> 3)
    oseg, out = dst.init_list(ref, size, count)
    dst.segment(oseg)[out:out + nbytes] = buf[lpos:lpos + nbytes]


def list_words(size_code: int, count: int) -> int:
    """Words a non-composite list of ``count`` elements of size code ``size_code`` takes."""
    if size_code == 6:
        return count
    bits = 1 if size_code == 1 else ELEMENT_BITS[size_code]
    return (count * bits + 63) >> 6
