"""Canonical form: the one encoding of a message that signing and hashing rely on.

Per the spec: a single segment with no segment table, objects in preorder, every struct's data
section without trailing zero words and its pointer section without trailing null pointers (a
struct list trims only what every element can lose), zero-size structs at offset -1, unpacked.
The result equals ``capnp convert binary:canonical``.
"""

from __future__ import annotations

from cara.errors import DecodeError

from .builder import MessageBuilder, copy_pointer
from .reader import Message

__all__ = ["canonicalize"]


def canonicalize(msg: Message) -> bytes:
    """The canonical bytes of ``msg``'s root object (every pointer checked on the way)."""
    out = MessageBuilder()
    try:
        copy_pointer(out, 0, msg, 0, msg.bounds[0][0], msg.nesting_limit, canonical=True)
    except RecursionError:
        raise DecodeError("message nests deeper than Python's recursion limit allows "
                          "(lower the nesting limit)", msg.bounds[0][0]) from None
    return out.segment()
