"""msgpack: a struct is its field-number-keyed dict, so ``msgpack.packb(s)`` already works.

This module adds what plain msgpack does not do: decoding straight into a class with bounded,
checked input (``unpackb(Person, data)``), turning every msgpack failure into
:class:`cara.errors.DecodeError` and every wrong-typed value into
:class:`cara.errors.ValueTypeError` naming the field path, and a clear error for values msgpack
cannot encode (capabilities need the RPC layer's ext hook).

Fields whose numbers this schema does not know are kept by the struct as they were decoded and
packed back unchanged, so a message from a newer schema survives a round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from cara.errors import EncodeError
from cara.runtime import hooks

__all__ = ["MAX_MESSAGE_BYTES", "packb", "unpackb"]

#: Largest message :func:`unpackb` accepts by default.
MAX_MESSAGE_BYTES = hooks.MAX_MESSAGE_BYTES


def _no_default(value: Any) -> Any:
    try:
        return hooks.msgpack_default(value)
    except TypeError:
        pass
    raise TypeError(
        f"cannot encode {type(value).__name__} in msgpack"
        + (" (capabilities travel only over RPC)" if hasattr(value, "cara_schema") else ""))


def packb(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``msgpack.packb(value)``: struct fields keyed by number, enums as ints."""
    try:
        return msgpack.packb(value, default=default or _no_default)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(str(e)) from None


def unpackb(cls: Any, data: bytes | bytearray | memoryview, *,
            max_bytes: int = MAX_MESSAGE_BYTES,
            ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    """Decode ``data`` into an instance of ``cls`` (a struct or list class): invalid msgpack
    is a ``DecodeError``, a wrong-typed value a ``ValueTypeError`` naming its field path."""
    return hooks.unpack_into(cls, data, max_bytes=max_bytes, ext_hook=ext_hook)


hooks.register("from_msgpack", hooks.unpack_into)
