"""Where the runtime finds the wire codecs without importing them.

The codecs (``cara.codecs``) sit above the runtime in the layer order, so a struct's
``to_json()``/``to_bytes()`` cannot import them. Each codec module registers its functions here
when imported; if a method is used before that, the codec module is imported by name once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["from_bytes", "from_json", "from_msgpack", "register", "to_bytes", "to_json"]

#: Which module provides which hook.
_PROVIDERS = {
    "from_msgpack": "cara.codecs.msgpack_codec",
    "to_json": "cara.codecs.json_codec",
    "from_json": "cara.codecs.json_codec",
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


def unpack_into(cls: Any, data: bytes | bytearray | memoryview, *,
                max_bytes: int = MAX_MESSAGE_BYTES,
                ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    """Decode msgpack ``data`` into an instance of ``cls``: msgpack failures become
    ``DecodeError``, wrong-typed values ``ValueTypeError`` (naming the field path)."""
    import msgpack

    from cara.errors import DecodeError

    if len(data) > max_bytes:
        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}", 0)
    kwargs: dict[str, Any] = {"strict_map_key": False, "raw": False}
    if ext_hook is not None:
        kwargs["ext_hook"] = ext_hook
    try:
        raw = msgpack.unpackb(data, **kwargs)
    except msgpack.ExtraData as e:
        raise DecodeError(f"extra bytes after the message: {len(e.extra)} byte(s)",
                          len(data) - len(e.extra)) from None
    except msgpack.StackError:
        raise DecodeError("message nested too deeply") from None
    except (msgpack.FormatError, ValueError, UnicodeDecodeError, TypeError) as e:
        raise DecodeError(f"invalid msgpack: {e}") from None
    except RecursionError:
        raise DecodeError("message nested too deeply") from None
    return cls(raw)


def to_json(value: Any, **options: Any) -> str:
    return _get("to_json")(value, **options)


def from_json(cls: Any, text: str | bytes) -> Any:
    return _get("from_json")(cls, text)


def to_bytes(value: Any, *, packed: bool = False) -> bytes:
    func = _hooks.get("to_bytes")
    if func is not None:
        return func(value, packed=packed)
    codec, type_id = _schema_codec(type(value))
    return codec.encode(type_id, value.to_dict(), packed=packed)


def from_bytes(cls: Any, data: bytes, *, packed: bool = False) -> Any:
    func = _hooks.get("from_bytes")
    if func is not None:
        return func(cls, data, packed=packed)
    from cara.runtime.struct import clean_plain

    codec, type_id = _schema_codec(cls)
    # The codec reports a null pointer as None; for a struct that is an unset field.
    return cls(clean_plain(cls._cara_type_, codec.decode(type_id, data, packed=packed)))


def _schema_codec(cls: Any) -> tuple[Any, int]:
    """The Cap'n Proto binary codec for ``cls``'s nodes (one per builder, made on first use)
    when no codec registered ``to_bytes``/``from_bytes`` hooks: the wire codec works on
    name-keyed plain values, which is what ``to_dict()`` gives."""
    schema = cls.cara_schema
    if schema.bindings or schema.builder is None or schema.builder.replacements:
        raise NotImplementedError(f"{cls._cara_name_}: the Cap'n Proto binary form of generic"
                                  " instantiations and replaced types is not supported yet")
    builder = schema.builder
    codec = getattr(builder, "_capnp_codec", None)
    if codec is None:
        try:
            module = importlib.import_module("cara.codecs.capnp")
        except ImportError as e:
            raise NotImplementedError(f"the Cap'n Proto binary codec is not available: {e}") \
                from None
        codec = module.SchemaCodec(builder.nodes)
        builder._capnp_codec = codec
    return codec, schema.id
