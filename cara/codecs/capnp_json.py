"""Cap'n Proto's JSON mapping (what ``capnp convert ...:json`` writes and reads) on plain values.

This works on the plain, schema-driven values of
:class:`~cara.codecs.capnp.schema_codec.SchemaCodec` (a struct is a ``dict`` by field name,
groups nest, enums are ``int``, Text ``str``, Data ``bytes``, Void ``None``), so ``cara convert``
can turn any message into JSON without generated classes.

The mapping, as libcapnp 0.9.2 does it:

* a struct is an object: every scalar field, every non-null pointer field, every group, then the
  set union member (always, even when null, and always last);
* Void is ``null``; Int64/UInt64 are decimal *strings* (JavaScript cannot hold them); other
  integers and floats are numbers printed as KJ prints a double; non-finite floats are the
  strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"``; Float32 is widened to double first;
* Data is an array of byte values (``$Json.base64`` / ``$Json.hex`` fields: a string); enums are
  the enumerant's name (its number when unknown); a ``Json.Value`` field is the raw JSON it holds;
* the ``/capnp/compat/json.capnp`` annotations: ``$Json.name`` renames fields and enumerants,
  ``$Json.flatten(prefix)`` writes a group's or struct's members into the enclosing object,
  ``$Json.discriminator(name, valueName)`` names the set union member in a separate key;
* pretty layout: a list or object goes one item per line when it has more than one item and any
  item is multi-line or longer than 50 bytes; objects inside keep their key on the same line.

The reader is lenient like libcapnp's: unknown keys are ignored, integers may be given as
strings, floats as numbers or the three special strings.

A value may leave fields out (as ``Struct.to_dict()`` does for unset ones): a missing scalar
field is written as its schema default and a union with no member given as its first member
(discriminant 0) with that member's explicit default, which is what libcapnp reads from the same
message's binary form (and what ``capnp convert`` writes). A union whose default member holds
the same union again has no finite JSON: an :class:`EncodeError` (libcapnp does not terminate).
A ``Json.Value`` given JSON ``null`` holds ``(null = void)``, and its numbers are written as
KJ writes a double (``-0``, ``inf``, ``nan``); ``List(AnyPointer)`` is refused, even empty, as
libcapnp refuses it. A ``$Json.flatten`` member chosen by a discriminator with nothing in it is
left unset when it is the union's default member (libcapnp leaves its pointer null). Generic
structs are written and read with the types their brand binds (``Box(Text)``'s ``T`` as Text).
The same mapping serves ``Struct.to_json()``/``from_json()`` (see :mod:`cara.codecs.json_codec`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cara.errors import DecodeError, EncodeError
from cara.schema import model

from .capnp.schema_codec import Bindings, _bindings, _substitute
from .text_format import format_float64, scalar_default, struct_fields

__all__ = ["MAX_JSON_NESTING", "JsonSyntaxError", "format_json", "format_json_value",
           "parse_json", "parse_json_value"]

#: Deepest nesting of arrays/objects accepted (as libcapnp's default ``maxNestingDepth``).
MAX_JSON_NESTING = 64

#: Annotation ids from ``/capnp/compat/json.capnp``.
JSON_NAME = 0xFA5B1FD61C2E7C3D
JSON_BASE64 = 0xD7D879450A253E4B
JSON_HEX = 0xF061E22F0AE5C7B5
JSON_FLATTEN = 0x82D3E852AF0336BF
JSON_DISCRIMINATOR = 0xCFA794E8D19A0162
#: ``Value`` of ``/capnp/compat/json.capnp``: a struct field of this type holds raw JSON.
JSON_VALUE = 0xA3FA7845F919DD83

_POINTER_TYPES = frozenset({"text", "data", "list", "struct", "interface", "anyPointer"})
_SMALL_INTS = frozenset({"int8", "int16", "int32", "uint8", "uint16", "uint32"})
_INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1), "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF),
    "uint64": (0, 0xFFFFFFFFFFFFFFFF),
}


def _annotation(annotations: list[model.Annotation], ann_id: int) -> model.Annotation | None:
    for ann in annotations:
        if ann.id == ann_id:
            return ann
    return None


def _json_name(field: model.Field | model.Enumerant) -> str:
    ann = _annotation(field.annotations, JSON_NAME)
    if ann is not None and ann.value.which == "text" and ann.value.text:
        return ann.value.text
    return field.name


# ------------------------------------------------------------------------------------- writer

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    return _ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _string(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def _number(value: float) -> str:
    return format_float64(float(value))


def _float32(number: float) -> float:
    """``number`` rounded to the nearest Float32 (what the field holds), widened back."""
    if math.isnan(number) or math.isinf(number):
        return number
    try:
        narrowed: float = struct.unpack("<f", struct.pack("<f", number))[0]
    except OverflowError:
        return math.copysign(math.inf, number)
    return narrowed


def _env_of(type_: model.Type) -> Bindings:
    """The generic bindings a (struct) type's brand makes."""
    branded = type_.struct if type_.which == "struct" else None
    if branded is None or not branded.brand.scopes:
        return {}
    return _bindings(branded.brand)


def _slot_type(field: model.Field, env: Bindings) -> model.Type:
    """A slot's type with the generic parameters ``env`` binds replaced."""
    assert field.slot is not None
    return _substitute(field.slot.type, env) if env else field.slot.type


#: A JSON value before layout: ("atom", text) | ("array", [values]) | ("object", [(key, value)])
_Json = tuple[str, Any]


def _struct_option(annotations: list[model.Annotation], ann_id: int) -> dict[str, Any] | None:
    """The struct value of annotation ``ann_id`` (e.g. ``$Json.flatten(prefix = "p.")``) as a
    dict, ``{}`` when given without arguments, ``None`` when absent."""
    ann = _annotation(annotations, ann_id)
    if ann is None:
        return None
    pointer = ann.value.struct if ann.value.which == "struct" else None
    value = pointer.value if pointer is not None else None
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass
class _Union:
    """How a union is written: ``tag`` is the discriminator member's key (None: the member's
    own key tells), ``value_name`` the key of the value when the discriminator renames it."""

    tag: str | None = None
    value_name: str | None = None


def _union_style(options: dict[str, Any] | None, union_name: str) -> _Union:
    if options is None:
        return _Union()
    return _Union(tag=options.get("name") or union_name, value_name=options.get("valueName"))


class _Schema:
    """Per-field JSON facts: names, flattening, discriminators (``$Json.*`` annotations)."""

    def __init__(self, nodes: Mapping[int, model.Node]) -> None:
        self.nodes = nodes

    def fields(self, struct_id: int) -> list[model.Field]:
        return struct_fields(self.nodes, struct_id)

    def target(self, field: model.Field) -> int | None:
        """The struct a group or struct field holds (what flattening descends into)."""
        if field.which == "group" and field.group is not None:
            return field.group.typeId
        slot = field.slot
        if slot is not None and slot.type.which == "struct" and slot.type.struct is not None:
            return slot.type.struct.typeId
        return None

    def flatten(self, field: model.Field) -> str | None:
        """The prefix for a ``$Json.flatten`` field (``None``: not flattened)."""
        if self.target(field) is None:
            return None
        options = _struct_option(field.annotations, JSON_FLATTEN)
        return None if options is None else str(options.get("prefix") or "")

    def union_of(self, struct_id: int, via: model.Field | None) -> _Union:
        """The union style of ``struct_id``'s unnamed union: from the field that holds it (a
        named union's ``$Json.discriminator``) or from the struct's own annotation."""
        options = None
        name = ""
        if via is not None:
            options = _struct_option(via.annotations, JSON_DISCRIMINATOR)
            name = _json_name(via)
        if options is None:
            node = self.nodes.get(struct_id)
            if node is not None:
                options = _struct_option(node.annotations, JSON_DISCRIMINATOR)
        return _union_style(options, name)


def _member(field: model.Field, value: Mapping[str, Any]) -> Any:
    """``field``'s value in ``value``; a scalar left out reads as its schema default."""
    if field.name in value:
        return value[field.name]
    slot = field.slot
    if slot is not None and slot.type.which not in _POINTER_TYPES:
        return scalar_default(field)
    return None


def _pointer_default(field: model.Field) -> Any:
    """The explicit default of a Text, Data, list or struct slot as a plain value (``None``
    when it has none: the type's empty value is written then)."""
    slot = field.slot
    if slot is None:
        return None
    value = slot.defaultValue
    which = slot.type.which
    if value.which != which:
        return None
    if which in ("text", "data"):
        return getattr(value, which)
    if which in ("list", "struct"):
        pointer = getattr(value, which)
        return pointer.value if pointer is not None else None
    return None


class _Encoder(_Schema):
    def struct(self, struct_id: int, value: Mapping[str, Any] | None,
               via: model.Field | None = None, env: Bindings | None = None) -> _Json:
        if struct_id == JSON_VALUE:
            return self.json_value(value or {})
        members: list[tuple[str, _Json]] = []
        # (an empty struct may still be marked as holding an unknown union member)
        self.gather(struct_id, {} if value is None else value, "", members, via, env or {})
        return ("object", members)

    def gather(self, struct_id: int, value: Mapping[str, Any], prefix: str,
               out: list[tuple[str, _Json]], via: model.Field | None, env: Bindings) -> None:
        """Append ``value``'s members to ``out`` (flattened members inline, keys prefixed)."""
        union_field: model.Field | None = None
        first_member: model.Field | None = None
        for field in self.fields(struct_id):
            if field.discriminantValue != model.NO_DISCRIMINANT:
                if union_field is None and field.name in value:
                    union_field = field
                if field.discriminantValue == 0:
                    first_member = field
                continue
            member = _member(field, value)
            if field.which == "slot" and field.slot is not None and \
                    field.slot.type.which in _POINTER_TYPES and member is None:
                continue
            flat = self.flatten(field)
            target = self.target(field)
            if flat is not None and target is not None:
                self.gather(target, {} if member is None else member, prefix + flat, out,
                            field,
                            env if field.which == "group" else self.env_of(field, env))
            else:
                out.append((prefix + _json_name(field), self.field(field, member, env)))
        if union_field is None:
            unknown = getattr(value, "_cara_unknown_", None)
            if unknown is not None and unknown.disc is not None:
                # (a binary message from a newer schema: writing the default member would
                # change the value, and JSON has no form for a member without a name)
                node = self.nodes.get(struct_id)
                name = node.displayName.rpartition(":")[2] if node is not None else "struct"
                raise EncodeError(
                    f"{name}: the union holds member number {unknown.disc}, which this schema "
                    f"does not have (a newer schema wrote the message); JSON cannot carry it")
            union_field = first_member  # none given: the member whose bits are all zero
            if union_field is None:
                return
        style = self.union_of(struct_id, via)
        name = _json_name(union_field)
        if style.tag is not None:
            out.append((prefix + style.tag, ("atom", _string(name))))
        member = _member(union_field, value)
        if member is None:  # unset: what libcapnp's reader gives, the explicit default
            member = _pointer_default(union_field)
        flat = self.flatten(union_field)
        target = self.target(union_field)
        if flat is not None and target is not None:
            self.gather(target, {} if member is None else member, prefix + flat, out,
                        union_field,
                        env if union_field.which == "group" else self.env_of(union_field, env))
        elif not (style.tag is not None and union_field.slot is not None
                  and union_field.slot.type.which == "void"):
            key = style.value_name or name
            out.append((prefix + key, self.field(union_field, member, env)))

    @staticmethod
    def env_of(field: model.Field, env: Bindings) -> Bindings:
        """The bindings inside a struct-typed slot ``field`` (a group shares its parent's)."""
        return _env_of(_slot_type(field, env)) if field.slot is not None else env

    def field(self, field: model.Field, member: Any, env: Bindings) -> _Json:
        if field.which == "group":
            assert field.group is not None
            return self.struct(field.group.typeId, member, field, env)
        assert field.slot is not None
        type_ = _slot_type(field, env)
        if type_.which == "data" and member is not None:
            if _annotation(field.annotations, JSON_BASE64) is not None:
                return ("atom", _string(base64.b64encode(bytes(member)).decode()))
            if _annotation(field.annotations, JSON_HEX) is not None:
                return ("atom", _string(bytes(member).hex()))
        return self.value(type_, member, field.name)

    def value(self, type_: model.Type, member: Any, where: str) -> _Json:
        which = type_.which
        if which == "void":
            return ("atom", "null")
        if which == "bool":
            return ("atom", "true" if member else "false")
        if which in _SMALL_INTS:
            return ("atom", _number(member or 0))
        if which in ("int64", "uint64"):
            return ("atom", f'"{int(member or 0)}"')
        if which == "float32":
            return self.float(_float32(0.0 if member is None else float(member)))
        if which == "float64":
            return self.float(0.0 if member is None else float(member))
        if which == "text":
            return ("atom", _string(member or ""))
        if which == "data":
            return ("array", [("atom", str(b)) for b in bytes(member or b"")])
        if which == "list":
            assert type_.list is not None
            element = type_.list.elementType
            if element.which == "anyPointer":  # even empty, as libcapnp refuses it
                raise EncodeError(f"{where}: don't know how to JSON-encode List(AnyPointer)")
            return ("array", [self.value(element, item, where) for item in (member or [])])
        if which == "enum":
            assert type_.enum is not None
            node = self.nodes.get(type_.enum.typeId)
            raw = int(member or 0)
            if node is not None and node.enum is not None and \
                    0 <= raw < len(node.enum.enumerants):
                return ("atom", _string(_json_name(node.enum.enumerants[raw])))
            return ("atom", _number(raw))
        if which == "struct":
            assert type_.struct is not None
            return self.struct(type_.struct.typeId, member, None, _env_of(type_))
        what = "capabilities" if which == "interface" else "AnyPointer"
        raise EncodeError(f"{where}: don't know how to JSON-encode {what}")

    @staticmethod
    def float(number: float) -> _Json:
        if math.isnan(number):
            return ("atom", '"NaN"')
        if math.isinf(number):
            return ("atom", '"Infinity"' if number > 0 else '"-Infinity"')
        return ("atom", _number(number))

    def json_value(self, value: Mapping[str, Any]) -> _Json:
        """A ``capnp/compat/json.capnp`` ``Value``: written as the JSON it describes."""
        if "boolean" in value:
            return ("atom", "true" if value["boolean"] else "false")
        if "number" in value:
            number = value["number"]
            return ("atom", _kj_double(0.0 if number is None else float(number)))
        if "string" in value:
            return ("atom", _string(value["string"] or ""))
        if "array" in value:
            return ("array", [self.json_value(v or {}) for v in value["array"] or []])
        if "object" in value:
            return ("object", [(f.get("name") or "", self.json_value(f.get("value") or {}))
                               for f in value["object"] or []])
        if "call" in value:
            call = value["call"] or {}
            return ("call", (call.get("function") or "",
                             [self.json_value(v or {}) for v in call.get("params") or []]))
        return ("atom", "null")


def _kj_double(number: float) -> str:
    """A ``Json.Value`` number as libcapnp writes it (KJ's rendering of a double): ``-0`` keeps
    its sign, and the values JSON has no number for are ``inf``, ``-inf`` and ``nan`` (which
    no JSON reader, libcapnp's included, reads back)."""
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return _number(number)


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


class _Layout:
    """KJ's JSON pretty printer: returns text and whether it spans several lines."""

    def __init__(self, pretty: bool) -> None:
        self.pretty = pretty
        self.colon = ": " if pretty else ":"

    def render(self, value: _Json, indent: int, has_prefix: bool) -> tuple[str, bool]:
        kind, body = value
        if kind == "atom":
            return body, False
        if kind == "call":
            function, params = body
            sub = indent + (len(params) > 1)
            child_multiline = False
            args: list[str] = []
            for element in params:
                text, multi = self.render(element, sub, False)
                child_multiline = child_multiline or multi
                args.append(text)
            inner, multi = self.join(args, child_multiline, indent, True)
            return function + "(" + inner + ")", multi
        sub = indent + (len(body) > 1)
        child_multiline = False
        items: list[str] = []
        if kind == "array":
            for element in body:
                text, multi = self.render(element, sub, False)
                child_multiline = child_multiline or multi
                items.append(text)
            inner, multi = self.join(items, child_multiline, indent, has_prefix)
            return "[" + inner + "]", multi
        for key, element in body:
            text, multi = self.render(element, sub, True)
            child_multiline = child_multiline or multi
            items.append(_string(key) + self.colon + text)
        inner, multi = self.join(items, child_multiline, indent, has_prefix)
        return "{" + inner + "}", multi

    def join(self, items: list[str], child_multiline: bool, indent: int,
             has_prefix: bool) -> tuple[str, bool]:
        if not self.pretty:
            return ",".join(items), False
        if len(items) > 1 and (child_multiline or max(_nbytes(i) for i in items) > 50):
            space = " " * ((indent + 1) * 2)
            prefix = "\n" + space if has_prefix else " "
            return prefix + (",\n" + space).join(items) + " ", True
        return ", ".join(items), False


def _indented(value: _Json, indent: int, level: int) -> str:
    """``json.dumps(..., indent=indent)``'s layout (one item per line) of the same atoms."""
    kind, body = value
    if kind == "atom":
        return body
    if kind == "call":
        function, params = body
        return function + "(" + ", ".join(_indented(p, indent, level) for p in params) + ")"
    if not body:
        return "[]" if kind == "array" else "{}"
    inner = " " * (indent * (level + 1))
    if kind == "array":
        items = [inner + _indented(v, indent, level + 1) for v in body]
        return "[\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "]"
    items = [inner + _string(k) + ": " + _indented(v, indent, level + 1) for k, v in body]
    return "{\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "}"


def _lay_out(tree: _Json, pretty: bool, indent: int | None) -> str:
    if indent is not None:
        return _indented(tree, indent, 0)
    return _Layout(pretty).render(tree, 0, False)[0]


def format_json(nodes: Mapping[int, model.Node], struct_id: int, value: Mapping[str, Any],
                *, pretty: bool = True, indent: int | None = None) -> str:
    """``value`` (a struct of node ``struct_id``) as capnp's JSON, without a final newline:
    laid out as ``capnp convert`` does (``pretty``) or with ``--short`` (not ``pretty``), or,
    given ``indent``, one item per line as ``json.dumps(..., indent=indent)`` lays it out."""
    tree = _encode(lambda encoder: encoder.struct(struct_id, value), nodes)
    return _lay_out(tree, pretty, indent)


def format_json_value(nodes: Mapping[int, model.Node], type_: model.Type, value: Any,
                      *, pretty: bool = True, indent: int | None = None) -> str:
    """Like :func:`format_json` for a value of any type ``type_`` (a branded struct, a list)."""
    tree = _encode(lambda encoder: encoder.value(type_, value, "root"), nodes)
    return _lay_out(tree, pretty, indent)


def _encode(run: Any, nodes: Mapping[int, model.Node]) -> _Json:
    """``run(encoder)``, with endless nesting a clear error: a union whose default member is
    a struct holding that union again (``union { again @0 :R; ... }``) has no finite JSON form,
    since an unset union is written as its default member (libcapnp does not terminate)."""
    try:
        tree: _Json = run(_Encoder(nodes))
    except RecursionError:
        raise EncodeError("the value nests too deeply to write as JSON (an unset union is "
                          "written as its default member: one whose type holds the same union "
                          "again never ends)") from None
    return tree


# ------------------------------------------------------------------------------------- reader


class JsonSyntaxError(DecodeError):
    """JSON input that cannot be parsed or does not fit the schema. ``path`` is the field path
    (``structList[1].textField``; ``""`` for the root) when the JSON is well-formed but a value
    does not fit, ``detail`` the message without the path."""

    def __init__(self, message: str, offset: int | None = None, *, path: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message, offset)
        self.path = path
        self.detail = detail if detail is not None else message


def _mismatch(where: str, message: str) -> JsonSyntaxError:
    """A value at ``where`` that does not fit its field."""
    return JsonSyntaxError(f"{where or 'root'}: {message}", path=where, detail=message)


_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _check_nesting(text: str) -> None:
    """Refuse input nested deeper than MAX_JSON_NESTING before the recursive parser sees it."""
    depth = 0
    for m in _STRUCTURE.finditer(text):
        ch = m.group()[0]
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_NESTING:
                raise JsonSyntaxError(f"JSON nests deeper than {MAX_JSON_NESTING} levels",
                                      m.start())
        elif ch in "]}":
            depth -= 1


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in input order (keeps ``{}`` apart from ``[]``)."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    return _Object(pairs)


class _Decoder(_Schema):
    def struct(self, struct_id: int, obj: Any, where: str,
               via: model.Field | None = None, env: Bindings | None = None) -> dict[str, Any]:
        if struct_id == JSON_VALUE:
            return self.json_value(obj, where, 0)
        if not isinstance(obj, _Object):
            raise _mismatch(where, "expected a JSON object")
        return self.members(struct_id, dict(obj), "", where, via, env or {})

    def members(self, struct_id: int, obj: dict[str, Any], prefix: str, where: str,
                via: model.Field | None, env: Bindings) -> dict[str, Any]:
        """The fields of ``struct_id`` found in ``obj`` under ``prefix`` (flattened members are
        looked up in the same object). Keys the schema does not know are ignored."""
        out: dict[str, Any] = {}
        union: list[model.Field] = []
        for field in self.fields(struct_id):
            if field.discriminantValue != model.NO_DISCRIMINANT:
                union.append(field)
                continue
            path = f"{where}.{field.name}" if where else field.name
            flat = self.flatten(field)
            target = self.target(field)
            if flat is not None and target is not None:
                inner = self.members(target, obj, prefix + flat, path, field,
                                     _Encoder.env_of(field, env))
                if inner or field.which == "group":
                    out[field.name] = inner
                continue
            key = prefix + _json_name(field)
            if key in obj:
                out[field.name] = self.field(field, obj[key], path, env)
        if union:
            self.union(struct_id, union, obj, prefix, where, via, out, env)
        return out

    def union(self, struct_id: int, union: list[model.Field], obj: dict[str, Any], prefix: str,
              where: str, via: model.Field | None, out: dict[str, Any],
              env: Bindings) -> None:
        style = self.union_of(struct_id, via)
        if style.tag is None:
            by_key = {prefix + _json_name(f): f for f in union}
            chosen = [by_key[k] for k in obj if k in by_key]
            if chosen:  # the last member given wins, as when setting them in order
                last = chosen[-1]
                path = f"{where}.{last.name}" if where else last.name
                out[last.name] = self.field(last, obj[prefix + _json_name(last)], path, env)
            return
        tag_key = prefix + style.tag
        if tag_key not in obj:
            return
        tag = obj[tag_key]
        found = next((f for f in union if _json_name(f) == tag), None)
        if found is None:
            raise _mismatch(where, f"unknown union member {tag!r}")
        member = found
        path = f"{where}.{member.name}" if where else member.name
        flat = self.flatten(member)
        target = self.target(member)
        if flat is not None and target is not None:
            inner = self.members(target, obj, prefix + flat, path, member,
                                 _Encoder.env_of(member, env))
            if inner or member.which == "group":
                out[member.name] = inner
            elif member.discriminantValue != 0:
                out[member.name] = {}  # selected; (libcapnp leaves the pointer null)
            # else: the default member with nothing in it is what an unset union reads as,
            # and libcapnp leaves its pointer null
            return
        key = prefix + (style.value_name or _json_name(member))
        if key in obj:
            out[member.name] = self.field(member, obj[key], path, env)
        elif member.which == "group":
            out[member.name] = {}
        elif member.slot is not None and member.slot.type.which not in _POINTER_TYPES:
            out[member.name] = scalar_default(member)
        else:
            out[member.name] = None

    def field(self, field: model.Field, item: Any, where: str, env: Bindings) -> Any:
        if field.which == "group":
            assert field.group is not None
            return self.struct(field.group.typeId, item, where, field, env)
        type_ = _slot_type(field, env)
        if type_.which == "data" and isinstance(item, str):
            return self.data_string(field, item, where)
        return self.value(type_, item, where)

    def json_value(self, item: Any, where: str, depth: int) -> dict[str, Any]:
        """Raw JSON as a ``capnp/compat/json.capnp`` ``Value``."""
        if depth > MAX_JSON_NESTING:
            raise _mismatch(where, f"JSON nests deeper than {MAX_JSON_NESTING} levels")
        if item is None:
            return {"null": None}
        if isinstance(item, bool):
            return {"boolean": item}
        if isinstance(item, (int, float)):
            return {"number": float(item)}
        if isinstance(item, str):
            return {"string": item}
        if isinstance(item, _Object):
            return {"object": [{"name": k, "value": self.json_value(v, where, depth + 1)}
                               for k, v in item]}
        return {"array": [self.json_value(v, where, depth + 1) for v in item]}

    def data_string(self, field: model.Field, item: str, where: str) -> bytes:
        try:
            if _annotation(field.annotations, JSON_HEX) is not None:
                return bytes.fromhex(item)
            return base64.b64decode(item, validate=True)
        except (ValueError, binascii.Error):
            raise _mismatch(where, "not valid base64/hex data") from None

    def value(self, type_: model.Type, item: Any, where: str) -> Any:
        which = type_.which
        if which == "void":
            return None
        if which == "bool":
            if isinstance(item, bool):
                return item
            raise _mismatch(where, "expected true or false")
        if which in _INT_RANGES:
            return self.integer(which, item, where)
        if which in ("float32", "float64"):
            if isinstance(item, bool):
                raise _mismatch(where, "expected a number")
            if isinstance(item, (int, float)):
                return float(item)
            if isinstance(item, str):
                special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
                if item in special:
                    return special[item]
                try:
                    return float(item)
                except ValueError:
                    pass
            if item is None:
                return math.nan
            raise _mismatch(where, "expected a number")
        if which == "struct" and type_.struct is not None and \
                type_.struct.typeId == JSON_VALUE:
            return self.json_value(item, where, 0)  # (JSON null too: ``(null = void)``)
        if item is None and which in _POINTER_TYPES:
            return None
        if which == "text":
            if isinstance(item, str):
                return item
            raise _mismatch(where, "expected a string")
        if which == "data":
            if isinstance(item, list) and not isinstance(item, _Object) and all(
                    isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                    for b in item):
                return bytes(item)
            raise _mismatch(where, "expected an array of byte values")
        if which == "list":
            assert type_.list is not None
            if not isinstance(item, list) or isinstance(item, _Object):
                raise _mismatch(where, "expected an array")
            element = type_.list.elementType
            return [self.value(element, x, f"{where}[{i}]") for i, x in enumerate(item)]
        if which == "enum":
            assert type_.enum is not None
            node = self.nodes.get(type_.enum.typeId)
            enumerants = node.enum.enumerants if node is not None and node.enum else []
            if isinstance(item, str):
                for index, enumerant in enumerate(enumerants):
                    if _json_name(enumerant) == item:
                        return index
                raise _mismatch(where, f"unknown enumerant {item!r}")
            return self.integer("uint16", item, where)
        if which == "struct":
            assert type_.struct is not None
            return self.struct(type_.struct.typeId, item, where, None, _env_of(type_))
        raise _mismatch(where, f"{which} fields cannot be read from JSON")

    def integer(self, which: str, item: Any, where: str) -> int:
        if isinstance(item, bool):
            raise _mismatch(where, "expected an integer")
        if isinstance(item, int):
            number = item
        elif isinstance(item, float):
            if not item.is_integer():
                raise _mismatch(where, f"{item!r} is not an integer")
            number = int(item)
        elif isinstance(item, str):
            try:
                number = int(item.strip(), 10)
            except ValueError:
                raise _mismatch(where, f"{item!r} is not an integer") from None
        else:
            raise _mismatch(where, "expected an integer")
        lo, hi = _INT_RANGES[which]
        if not lo <= number <= hi:
            raise _mismatch(where, f"{number} is out of range for {which}")
        return number


def _parse_int(text: str) -> int | float:
    """Integers as ints, except ``-0``, which keeps its sign for a float field."""
    return -0.0 if text == "-0" else int(text)


def _parse_tree(text: str) -> Any:
    """The JSON text parsed (objects as :class:`_Object`), its nesting bounded first."""
    _check_nesting(text)
    try:
        tree = json.loads(text, object_pairs_hook=_pairs, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"{exc.lineno}:{exc.colno}: {exc.msg}", exc.pos) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise JsonSyntaxError(f"invalid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - _check_nesting bounds the depth
        raise JsonSyntaxError("JSON nests too deeply") from None
    return tree


def parse_json(nodes: Mapping[int, model.Node], struct_id: int, text: str) -> dict[str, Any]:
    """Parse one JSON object as a struct of node ``struct_id`` into plain values."""
    return _Decoder(nodes).struct(struct_id, _parse_tree(text), "")


def parse_json_value(nodes: Mapping[int, model.Node], type_: model.Type, text: str) -> Any:
    """Like :func:`parse_json` for a value of any type ``type_`` (a branded struct, a list).
    A value that does not fit raises :class:`JsonSyntaxError` with its ``path``."""
    return _Decoder(nodes).value(type_, _parse_tree(text), "")
