"""Cap'n Proto binary encoding in pure Python: framing, packing, a bounds-checked reader, a
builder, canonical form, a schema-driven codec for plain values, and the CodeGeneratorRequest
codec that bootstraps from schema.capnp's own nodes."""

from __future__ import annotations

from .arena import Arena, ArenaWriter
from .builder import MessageBuilder, copy_pointer
from .canonical import canonicalize
from .framing import frame_segments, framed_size, read_flat, read_framed
from .packing import pack, pack_framed, unpack
from .reader import (
    DEFAULT_NESTING_LIMIT,
    DEFAULT_TRAVERSAL_LIMIT,
    AnyPointerReader,
    ListReader,
    Message,
    StructReader,
    read_message,
)
from .request_codec import (
    RequestCodec,
    bundled_schema_nodes,
    decode_request,
    encode_request,
    set_schema_nodes_provider,
)
from .schema_codec import FieldPlan, SchemaCodec, StructPlan
from .views import StructView

__all__ = [
    "DEFAULT_NESTING_LIMIT",
    "DEFAULT_TRAVERSAL_LIMIT",
    "AnyPointerReader",
    "Arena",
    "ArenaWriter",
    "FieldPlan",
    "ListReader",
    "Message",
    "MessageBuilder",
    "RequestCodec",
    "SchemaCodec",
    "StructPlan",
    "StructReader",
    "StructView",
    "bundled_schema_nodes",
    "canonicalize",
    "copy_pointer",
    "decode_request",
    "encode_request",
    "frame_segments",
    "framed_size",
    "pack",
    "pack_framed",
    "read_flat",
    "read_framed",
    "read_message",
    "set_schema_nodes_provider",
    "unpack",
]
