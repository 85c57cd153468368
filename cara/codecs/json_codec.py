"""``Struct.to_json()`` / ``S.from_json()``: runtime values in Cap'n Proto's JSON mapping.

There is one JSON mapping in cara, :mod:`cara.codecs.capnp_json` (what ``capnp convert
...:json`` writes and reads, ``$Json.name``, ``flatten``, ``discriminator``, ``base64`` and
``hex`` included). This module only bridges runtime values to it: a struct goes out as
``s.to_dict()`` (plain values by field name: enums as numbers, Data as bytes, only set fields,
which the mapping completes with the schema defaults) and comes back through ``S(mapping)``,
as the binary codec's ``to_bytes``/``from_bytes`` hooks do. The schema nodes are the ones the
class was built from (``S.cara_schema.builder.nodes``); a generic instantiation (``S[T]``) is
written with the types its parameters are bound to.

Layouts: ``indent=None`` is ``capnp convert --short``'s (``testdata/short.json``),
``pretty=True`` the default ``capnp convert`` layout, ``indent=N`` one item per line as
``json.dumps(..., indent=N)`` lays it out (same keys, numbers and strings).

Reading accepts what libcapnp's reader accepts (unknown keys ignored, 64-bit integers as
numbers or strings, floats as strings, enum numbers); malformed JSON and nesting deeper than
:data:`~cara.codecs.capnp_json.MAX_JSON_NESTING` raise ``DecodeError`` (with the offset where
the parser stopped), a value that does not fit its field ``ValueTypeError`` naming the path.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from cara.codecs.capnp import unknown
from cara.codecs.capnp.structs import model_type, replaced_nodes
from cara.errors import DecodeError, ValueTypeError
from cara.runtime import hooks
from cara.runtime.struct import KEPT_KEY, Struct, clean_plain
from cara.schema import model

from .capnp_json import JsonSyntaxError, format_json_value, parse_json_value

__all__ = ["dumps", "loads"]


def dumps(value: Any, *, indent: int | None = None, pretty: bool = False) -> str:
    """JSON text for a struct (or list) in Cap'n Proto's mapping: compact like
    ``capnp convert --short``, laid out like ``capnp convert`` (``pretty``), or indented."""
    desc = type(value)._cara_type_
    nodes = _nodes_for(desc)
    return format_json_value(nodes, model_type(desc), _plain(value), pretty=pretty,
                             indent=indent)


def loads(cls: Any, text: str | bytes) -> Any:
    """Parse JSON text into an instance of struct (or list) class ``cls``."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"invalid JSON: not UTF-8 ({e.reason})", e.start) from None
    desc = cls._cara_type_
    try:
        plain = parse_json_value(_nodes_for(desc), model_type(desc), text)
    except JsonSyntaxError as e:
        if e.path is None:
            raise
        path = cls._cara_name_ + ("" if not e.path or e.path.startswith("[") else ".") + e.path
        raise ValueTypeError(path, e.detail) from None
    return cls(clean_plain(desc, plain))


def _plain(value: Any) -> Any:
    """``value`` as the plain name-keyed values the mapping works on."""
    if isinstance(value, Struct):
        if not unknown.SEEN[0]:
            return value.to_dict()
        return _plain_keeping(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _plain_keeping(value: Any) -> Any:
    """``to_dict()``'s value, where a struct that holds a union member unknown to its schema
    (from a newer schema's binary message) stays marked, so that the mapping refuses to
    write it as another member."""
    if isinstance(value, Struct):
        fields = value.cara_schema.fields
        out: dict[Any, Any] = {}
        for k, v in dict.items(value):
            if k == KEPT_KEY:
                continue  # (binary data: JSON has no form for it, as libcapnp's)
            out[fields[k].name if type(k) is int and 0 <= k < len(fields) else k] = \
                _plain_keeping(v)
        record = value._cara_unknown_
        if record is not None and record.disc is not None:
            return unknown.attach(out, record)
        return out
    if isinstance(value, list):
        return [_plain_keeping(v) for v in value]
    return value


#: Schema nodes per runtime builder, with the builder's type replacements applied.
_NODES: weakref.WeakKeyDictionary[Any, Mapping[int, model.Node]] = weakref.WeakKeyDictionary()


def _nodes_for(desc: Any) -> Mapping[int, model.Node]:
    """The nodes a value of runtime type ``desc`` is written with: those of the builder its
    struct classes came from; for a list of enums or scalars, enough to name the enumerants."""
    builder = _builder_of(desc)
    if builder is None:
        return _enum_nodes(desc)
    nodes = _NODES.get(builder)
    if nodes is None:
        nodes = replaced_nodes(builder) if builder.replacements else builder.nodes
        _NODES[builder] = nodes
    return nodes


def _builder_of(desc: Any) -> Any:
    while desc.kind == "list":
        desc = desc.cls._cara_elem_
    if desc.kind in ("struct", "interface"):
        builder = getattr(desc.cls, "cara_schema", None)
        builder = getattr(builder, "builder", None)
        if builder is None:
            raise NotImplementedError(f"{desc.name} was not built from schema nodes")
        return builder
    return None


def _enum_nodes(desc: Any) -> dict[int, model.Node]:
    """An enum node for a list-of-enum root (enum classes keep their names, not their node)."""
    while desc.kind == "list":
        desc = desc.cls._cara_elem_
    if desc.kind != "enum":
        return {}
    cls = desc.cls
    enumerants = [model.Enumerant(name=name, codeOrder=i)
                  for i, name in enumerate(cls._cara_enumerant_names_)]
    node = model.Node(id=cls._cara_id_, displayName=cls._cara_name_, which="enum",
                      enum=model.NodeEnum(enumerants=enumerants))
    return {cls._cara_id_: node}


def _to_json(value: Any, **options: Any) -> str:
    return dumps(value, **options)


hooks.register("to_json", _to_json)
hooks.register("from_json", loads)
