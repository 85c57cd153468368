"""Where the runtime finds the wire codecs without importing them.

The codecs (``cara.codecs``) sit above the runtime in the layer order, so a struct's
``to_json()``/``to_bytes()`` cannot import them. Each codec module registers its functions here
when imported; if a method is used before that, the codec module is imported by name once.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from cara.runtime.nesting import DEFAULT_NESTING_LIMIT, KEPT_READ, check_nesting

__all__ = ["from_bytes", "from_json", "from_msgpack", "packb", "register", "stream", "to_bytes",
           "to_json", "unpack_into", "unpack_plain"]

#: Which module provides which hook.
_PROVIDERS = {
    "from_msgpack": "cara.codecs.msgpack_codec",
    "to_json": "cara.codecs.json_codec",
    "from_json": "cara.codecs.json_codec",
    "to_bytes": "cara.codecs.capnp.structs",
    "from_bytes": "cara.codecs.capnp.structs",
    **{f"stream_{name}": "cara.codecs.capnp.stream" for name in (
        "read", "read_multiple", "read_multiple_bytes", "write", "read_async",
        "read_multiple_async", "write_async")},
    "msgpack_default": "cara.codecs.capnp.reader",
    "msgpack_ext": "cara.codecs.capnp.reader",
    "kept_data": "cara.codecs.capnp.kept",
    "checked_pointer": "cara.codecs.capnp.kept",
    "pointer_fits": "cara.codecs.capnp.kept",
}
_hooks: dict[str, Callable[..., Any]] = {}


def register(name: str, func: Callable[..., Any]) -> None:
    """Install ``func`` as the implementation of hook ``name`` (one of ``_PROVIDERS``)."""
    _hooks[name] = func


def _get(name: str) -> Callable[..., Any]:
    func = _hooks.get(name)
    if func is None:
        provider = _PROVIDERS[name]
        try:
            importlib.import_module(provider)
        except ImportError as e:
            raise NotImplementedError(f"{name} needs {provider}, which is not available: {e}") \
                from None
        func = _hooks.get(name)
        if func is None:
            raise NotImplementedError(f"{provider} does not provide {name} (yet)")
    return func


def from_msgpack(cls: Any, data: bytes) -> Any:
    """msgpack needs no schema-aware codec: decoding lives here so that ``S.from_msgpack``
    works whatever state the codec package is in."""
    func = _hooks.get("from_msgpack")
    if func is not None:
        return func(cls, data)
    return unpack_into(cls, data)


#: Largest message :func:`unpack_into` accepts by default (msgpack derives its own limits on
#: map, array and string sizes from the input length, so nothing inside can claim more).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


_msgpack: Any = None
_packers = threading.local()


def packb(value: Any) -> bytes:
    """``msgpack.packb(value)`` with one reused ``Packer`` per thread (a new one per call, as
    ``msgpack.packb`` makes, costs as much as packing a small struct). (With the C accelerator,
    a struct's ``to_msgpack`` packs in C first and comes here only for what that does not take.)"""
    try:
        packer = _packers.packer
    except AttributeError:
        import msgpack

        packer = _packers.packer = msgpack.Packer(default=msgpack_default)
    result: bytes = packer.pack(value)
    return result


def msgpack_default(value: Any) -> Any:
    """msgpack's ``default``: objects a codec module knows how to put in msgpack (an
    ``AnyPointer`` value read from a binary message, registered by the capnp reader)."""
    func = _hooks.get("msgpack_default")
    if func is None:
        raise TypeError(f"cannot encode {type(value).__name__} in msgpack")
    return func(value)


#: msgpack ext codes a codec module turns back into objects (the capnp reader's
#: EXT_CAPNP_MESSAGE); any other ext value stays a ``msgpack.ExtType``.
_EXT_PROVIDED = frozenset({0x43})


def checked_pointer(data: bytes) -> Any:
    """The Cap'n Proto object msgpack's ext value 0x43 holds, checked whole (a codec module
    reads it; a broken one raises ``DecodeError``)."""
    return _get("checked_pointer")(data)


def kept_data(cls: Any, value: Any) -> tuple[Any, Any]:
    """What a struct of class ``cls`` stores under the reserved key for unknown data, and the
    record it keeps, from the value a mapping gave for that key (see
    cara.codecs.capnp.kept; raises ``Invalid``)."""
    result: tuple[Any, Any] = _get("kept_data")(cls, value)
    return result


def _ext_hook(code: int, data: bytes) -> Any:
    if code in _EXT_PROVIDED:  # (a Cap'n Proto object: checked whole now, and it nests)
        KEPT_READ[0] += 1
        return _get("checked_pointer")(data)
    return _msgpack.ExtType(code, data)


def unpack_into(cls: Any, data: bytes | bytearray | memoryview, *,
                max_bytes: int = MAX_MESSAGE_BYTES,
                ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    """Decode msgpack ``data`` into an instance of ``cls``: msgpack failures become
    ``DecodeError``, wrong-typed values ``ValueTypeError`` (naming the field path).

    msgpack's own C decoder builds plain dicts and lists (no hooks called back into Python),
    and the class's generated constructor then checks and converts them in one pass. With the
    C accelerator, the common shape is read straight into instances instead (``Plan.unpackb``
    in cara/runtime/_speedups.c), and anything else takes that path."""
    if ext_hook is None and len(data) <= max_bytes:
        plan = getattr(cls, "_cara_plan_", None)
        if plan is not None:
            value = plan.unpackb(cls, data)
            if value is not None:
                _check_depth(cls, value, data, KEPT_READ[0])
                return value
    return unpack_plain(cls, data, max_bytes=max_bytes, ext_hook=ext_hook)


def _check_depth(cls: Any, value: Any, data: bytes | bytearray | memoryview,
                 kept_before: int) -> None:
    """The nesting limit, for every msgpack path. Most types cannot nest deeply (their greatest
    depth is known), and input shorter than the limit cannot either (each level takes a byte):
    no walk for those, unless the value holds unknown binary data read from the input
    (``KEPT_READ`` moved past ``kept_before``), which nests below its struct."""
    if KEPT_READ[0] != kept_before:
        check_nesting(value, kept=True, fits=_get("pointer_fits"))
        return
    depth = cls.__dict__.get("_cara_static_depth_")
    if (depth is None or depth > DEFAULT_NESTING_LIMIT) and len(data) > DEFAULT_NESTING_LIMIT:
        check_nesting(value)


def unpack_plain(cls: Any, data: bytes | bytearray | memoryview, *,
                 max_bytes: int = MAX_MESSAGE_BYTES,
                 ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    """:func:`unpack_into` without the accelerator's reader: ``cls(msgpack.unpackb(data))``."""
    global _msgpack
    msgpack = _msgpack
    if msgpack is None:  # imported on first use: the runtime itself does not need it
        msgpack = _msgpack = importlib.import_module("msgpack")
    if len(data) > max_bytes:
        from cara.errors import DecodeError

        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}", 0)
    kept_before = KEPT_READ[0]
    try:
        if ext_hook is None:
            raw = msgpack.unpackb(data, strict_map_key=False, ext_hook=_ext_hook)
        else:
            raw = msgpack.unpackb(data, strict_map_key=False, raw=False, ext_hook=ext_hook)
    except Exception as e:
        _decode_error(e, data)
    value = cls(raw)
    _check_depth(cls, value, data, kept_before)
    return value


def _decode_error(e: Exception, data: bytes | bytearray | memoryview) -> NoReturn:
    """Raise the ``DecodeError`` for msgpack's failure ``e`` (anything else, e.g. raised by an
    ``ext_hook``, is raised again unchanged)."""
    msgpack = _msgpack
    from cara.errors import DecodeError

    if isinstance(e, msgpack.ExtraData):
        raise DecodeError(f"extra bytes after the message: {len(e.extra)} byte(s)",
                          len(data) - len(e.extra)) from None
    if isinstance(e, (msgpack.StackError, RecursionError)):
        raise DecodeError("message nested too deeply") from None
    if isinstance(e, (msgpack.FormatError, ValueError, UnicodeDecodeError, TypeError)):
        raise DecodeError(f"invalid msgpack: {e}") from None
    raise e


def to_json(value: Any, **options: Any) -> str:
    return _get("to_json")(value, **options)


def from_json(cls: Any, text: str | bytes) -> Any:
    return _get("from_json")(cls, text)


def to_bytes(value: Any, *, packed: bool = False) -> bytes:
    return _get("to_bytes")(value, packed=packed)


def from_bytes(cls: Any, data: bytes | bytearray | memoryview, *, packed: bool = False,
               traversal_limit_in_words: int | None = None,
               nesting_limit: int | None = None) -> Any:
    if traversal_limit_in_words is None and nesting_limit is None:
        return _get("from_bytes")(cls, data, packed=packed)
    return _get("from_bytes")(cls, data, packed=packed,
                              traversal_limit_in_words=traversal_limit_in_words,
                              nesting_limit=nesting_limit)


def stream(name: str) -> Callable[..., Any]:
    """The message-stream function ``name`` (``read``, ``read_multiple``, ``write``, ...; see
    :mod:`cara.codecs.capnp.stream`)."""
    return _get("stream_" + name)
