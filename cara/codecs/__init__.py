"""cara.codecs: wire formats. ``cara.codecs.capnp`` is the Cap'n Proto binary encoding."""

from __future__ import annotations

from .capnp import SchemaCodec, canonicalize, pack, read_message, unpack

__all__ = ["SchemaCodec", "canonicalize", "pack", "read_message", "unpack"]
