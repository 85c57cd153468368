"""Where the runtime finds the wire codecs without importing them.

The codecs (``cara.codecs``) sit above the runtime in the layer order, so a struct's
``to_json()``/``to_bytes()`` cannot import them. Each codec module registers its functions here
when imported; if a method is used before that, the codec module is imported by name once.
"""

from __future__ import annotations

import importlib
import math as _math
import threading
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["from_bytes", "from_json", "from_msgpack", "packb", "register", "to_bytes", "to_json",
           "unpack_into"]

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


_msgpack: Any = None
_packers = threading.local()


def packb(value: Any) -> bytes:
    """``msgpack.packb(value)`` with one reused ``Packer`` per thread (a new one per call, as
    ``msgpack.packb`` makes, costs as much as packing a small struct)."""
    try:
        packer = _packers.packer
    except AttributeError:
        import msgpack

        packer = _packers.packer = msgpack.Packer()
    result: bytes = packer.pack(value)
    return result


def unpack_into(cls: Any, data: bytes | bytearray | memoryview, *,
                max_bytes: int = MAX_MESSAGE_BYTES,
                ext_hook: Callable[[int, bytes], Any] | None = None) -> Any:
    """Decode msgpack ``data`` into an instance of ``cls``: msgpack failures become
    ``DecodeError``, wrong-typed values ``ValueTypeError`` (naming the field path).

    msgpack's own C decoder builds plain dicts and lists (no hooks called back into Python),
    and the class's generated constructor then checks and converts them in one pass."""
    global _msgpack
    msgpack = _msgpack
    if msgpack is None:  # imported on first use: the runtime itself does not need it
        msgpack = _msgpack = importlib.import_module("msgpack")
    if len(data) > max_bytes:
        from cara.errors import DecodeError

        raise DecodeError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}", 0)
    try:
        if ext_hook is None:
            raw = msgpack.unpackb(data, strict_map_key=False)  # (raw=False is the default)
        else:
            raw = msgpack.unpackb(data, strict_map_key=False, raw=False, ext_hook=ext_hook)
    except Exception as e:
        _decode_error(e, data)
    return cls(raw)


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
    func = _hooks.get("to_bytes")
    if func is not None:
        return func(value, packed=packed)
    codec, type_id = _schema_codec(type(value))
    return codec.encode(type_id, value.to_dict(), packed=packed)


def from_bytes(cls: Any, data: bytes, *, packed: bool = False) -> Any:
    func = _hooks.get("from_bytes")
    if func is not None:
        return func(cls, data, packed=packed)
    codec, type_id = _schema_codec(cls, decoding=True)
    return cls(_sparse(cls._cara_type_, codec.decode(type_id, data, packed=packed)))


_SCALAR_KINDS = frozenset({"void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                           "uint32", "uint64", "float32", "float64", "enum"})
_POINTERISH = frozenset({"struct", "list", "text", "data", "interface", "anyPointer"})


def _same_scalar(value: Any, default: Any) -> bool:
    """``value`` is its field's default, bit for bit (so -0.0 is not the default 0.0)."""
    if type(value) is float or type(default) is float:
        return bool(value == default) and _math.copysign(1.0, value) == _math.copysign(
            1.0, float(default))
    return bool(value == default)


# What _sparse does with a decoded field (see _sparse_plan).
_KEEP, _SCALAR, _POINTER, _NESTED, _GROUP = range(5)
_SPARSE_PLANS: dict[Any, dict[int, tuple[int, int, Any, Any]]] = {}


def _sparse_plan(struct_cls: Any) -> dict[int, tuple[int, int, Any, Any]]:
    """Per struct class, once: field number -> (number, action, default, type)."""
    plan = _SPARSE_PLANS.get(struct_cls)
    if plan is None:
        plan = {}
        for f in struct_cls.cara_schema.fields:
            kind = f.type.kind
            droppable = not f.discriminant  # None (not in a union) or 0
            default = None
            if f.is_group:
                action = _GROUP if droppable else _NESTED
            elif kind in _SCALAR_KINDS:
                action = _SCALAR if droppable else _KEEP
                default = f.scalar_default()
            elif kind in ("struct", "list"):
                action = _NESTED
            elif kind in _POINTERISH:
                action = _POINTER
            else:
                action = _KEEP
            plan[f.number] = (f.number, action, default, f.type)
        _SPARSE_PLANS[struct_cls] = plan
    return plan


def _sparse(t: Any, value: Any, depth: int = 0) -> Any:
    """The codec's decoded value (fresh dicts keyed by field number) made ready for the struct
    class in one pass (the runtime's fast path takes it as it is): without null pointers
    and without the scalars that hold their default. The wire stores both as zeros, so leaving
    them unset makes a decoded struct equal to the one that was written, and as small in
    msgpack. Union members are kept (which one is set matters), except the discriminant-0
    member holding its default: an empty union already reads as that member."""
    if depth > 256:  # the codec's nesting limit is far lower; this only bounds recursion
        return value
    if t.kind == "struct" and isinstance(value, dict):
        plan = _sparse_plan(t.cls)
        out = {}
        for key, v in value.items():
            entry = plan.get(key)
            if entry is None:
                out[key] = v
                continue
            number, action, default, ft = entry
            if action == _SCALAR:
                if v == default and (type(v) is not float or _same_scalar(v, default)):
                    continue
            elif action != _KEEP:
                if v is None:
                    continue
                if action != _POINTER:
                    v = _sparse(ft, v, depth + 1)
                    if action == _GROUP and not v:
                        continue
            out[number] = v
        return out
    if t.kind == "list" and isinstance(value, list):
        elem = t.cls._cara_elem_
        if elem.kind in ("struct", "list"):
            return [_sparse(elem, v, depth + 1) for v in value]
    return value


def _schema_codec(cls: Any, *, decoding: bool = False) -> tuple[Any, Any]:
    """The Cap'n Proto binary codec for ``cls``'s nodes (one per builder and direction, made on
    first use) when no codec registered ``to_bytes``/``from_bytes`` hooks, and the key of
    ``cls`` in it: the struct's node id, or for a generic instantiation (``S[T]``) the plan the
    codec makes for the struct type with that brand. Encoding works on name-keyed plain values
    (what ``to_dict()`` gives); decoding yields dicts keyed by field index, the numbers the
    runtime's structs use, so they need no renaming."""
    schema = cls.cara_schema
    builder = schema.builder
    if builder is None:
        raise NotImplementedError(f"{cls._cara_name_} was not built from schema nodes")
    attr = "_capnp_decoder" if decoding else "_capnp_codec"
    codec = getattr(builder, attr, None)
    if codec is None:
        try:
            module = importlib.import_module("cara.codecs.capnp")
        except ImportError as e:
            raise NotImplementedError(f"the Cap'n Proto binary codec is not available: {e}") \
                from None
        nodes = _replaced_nodes(builder) if builder.replacements else builder.nodes
        # Null pointers decode as None (unset), not as the field's default.
        codec = module.SchemaCodec(nodes, pointer_defaults=False,
                                   keys="index" if decoding else "name")
        setattr(builder, attr, codec)
    if not schema.bindings:
        return codec, schema.id
    keys = _generic_keys[decoding]
    key = keys.get(cls)
    if key is None:
        if not hasattr(codec, "plan_for_type"):
            raise NotImplementedError(f"{cls._cara_name_}: this Cap'n Proto codec does not"
                                      " support generic instantiations")
        key = keys[cls] = codec.plan_for_type(_model_type(cls._cara_type_)).key
    return codec, key


#: The codec's plan key of each generic instantiation class (worked out once per class), for
#: the encoding codec (False) and the decoding one (True).
_generic_keys: dict[bool, weakref.WeakKeyDictionary[Any, Any]] = {
    False: weakref.WeakKeyDictionary(), True: weakref.WeakKeyDictionary()}


def _model_type(desc: Any) -> Any:
    """The schema ``Type`` a runtime type descriptor stands for, generic bindings included as
    the type's brand (what the codec needs to lay out a generic instantiation)."""
    from cara.schema import model

    kind = desc.kind
    if kind == "list":
        return model.Type(which="list", list=model.TypeList(_model_type(desc.cls._cara_elem_)))
    if kind == "enum":
        return model.Type(which="enum", enum=model.TypeBranded(desc.cls._cara_id_))
    if kind in ("struct", "interface"):
        schema = desc.cls.cara_schema
        brand = model.Brand([
            model.BrandScope(scope_id, "bind",
                             [model.BrandBinding("type", _model_type(d)) for d in descs])
            for scope_id, descs in sorted(schema.bindings.items())])
        branded = model.TypeBranded(schema.id, brand)
        if kind == "struct":
            return model.Type(which="struct", struct=branded)
        return model.Type(which="interface", interface=branded)
    if kind == "anyPointer":
        return model.Type(which="anyPointer", anyPointer=model.AnyPointerType(
            which="unconstrained",
            unconstrained=model.AnyPointerUnconstrained(getattr(desc, "constraint", "anyKind"))))
    return model.Type(which=kind)


def _replaced_nodes(builder: Any) -> dict[int, Any]:
    """The builder's nodes with ``ReplaceTypes`` applied to the field types, for the codec: a
    pointer field that now holds another pointer type is laid out as before (a pointer is a
    pointer) and encoded as the new type; its explicit default, written for the old type, is
    dropped. Other replacements would move data and cannot be encoded."""
    import dataclasses

    out = dict(builder.nodes)
    for node_id, node in builder.nodes.items():
        st = node.struct
        if node.which != "struct" or st is None:
            continue
        fields = list(st.fields)
        changed = False
        for i, f in enumerate(fields):
            if f.slot is None:
                continue
            new_type = _replaced_type(builder, f.slot.type, f.name)
            if new_type is not f.slot.type:
                fields[i] = dataclasses.replace(f, slot=dataclasses.replace(
                    f.slot, type=new_type, hadExplicitDefault=False,
                    defaultValue=type(f.slot.defaultValue)()))
                changed = True
        if changed:
            out[node_id] = dataclasses.replace(node, struct=dataclasses.replace(st, fields=fields))
    return out


def _replaced_type(builder: Any, t: Any, where: str) -> Any:
    """Schema type ``t`` after the builder's replacements (``t`` itself when none applies)."""
    from cara.runtime.types import type_key

    if t.which == "list" and t.list is not None:
        elem = _replaced_type(builder, t.list.elementType, where)
        if elem is not t.list.elementType:
            from cara.schema import model

            return model.Type(which="list", list=model.TypeList(elem))
    if t.which == "anyPointer" and t.anyPointer is not None and \
            t.anyPointer.which != "unconstrained":
        return t  # a generic parameter: the codec substitutes what a brand binds
    old = builder._type_desc(t, {})
    new = builder.replacements.get(type_key(old))
    if new is None:
        return t
    if not (old.is_pointer and new.is_pointer):
        raise NotImplementedError(
            f"field {where}: replacing {old.name} by {new.name} changes the struct's layout,"
            " which the Cap'n Proto binary form cannot follow (only pointer types can replace"
            " pointer types)")
    return _model_type(new)
