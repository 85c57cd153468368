"""The reference oracle: ``capnp compile -o-`` decoded by pycapnp, turned into cara's model.

Tests compare what cara produces against what the real tools produce. This module runs the
reference compiler (``capnp``, Debian's 0.9.2) and decodes its ``CodeGeneratorRequest`` with
pycapnp (bundling libcapnp 1.x), then converts the result into :mod:`cara.schema.model` objects,
so a test can compare cara's request with ``==`` node by node.

Pointer values inside ``Value`` (struct and list defaults, constants and annotation values) are
decoded with the type that the surrounding node gives them and stored as ``PointerValue(type,
normalised)``: a struct is pycapnp's ``to_dict(verbose=True)`` (every field, enums by enumerant
name), a list a Python list of normalised elements. cara's own pointer values (plain dicts that
hold only the fields written in the schema) are brought to the same form by
:func:`normalise_request_values`, which builds each struct with pycapnp from cara's dict; after
that the two requests compare with ``==``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest

from cara.schema import model

SCHEMA_CAPNP = "/usr/include/capnp/schema.capnp"


def require_capnp() -> str:
    """Path of the reference compiler, or skip the calling test with the reason."""
    exe = shutil.which("capnp")
    if exe is None:
        pytest.skip("the reference compiler `capnp` is not installed (apt-get install capnproto)")
    return exe


def require_pycapnp() -> Any:
    try:
        import capnp  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("pycapnp, the reference peer, is not installed (pip install pycapnp)")
    return capnp


@functools.cache
def _schema_module() -> Any:
    capnp = require_pycapnp()
    if not os.path.exists(SCHEMA_CAPNP):
        pytest.skip(f"{SCHEMA_CAPNP} is missing (apt-get install libcapnp-dev)")
    return capnp.load(SCHEMA_CAPNP, imports=["/usr/include"])


def reference_request_bytes(
    files: list[str], *, cwd: str | Path, import_path: list[str] = (),  # type: ignore[assignment]
    no_standard_import: bool = True, src_prefix: str | None = None,
) -> bytes:
    """Run ``capnp compile -o-`` and return the request exactly as it wrote it."""
    exe = require_capnp()
    cmd = [exe, "compile"]
    for d in import_path:
        cmd.append(f"-I{d}")
    if no_standard_import:
        cmd.append("--no-standard-import")
    if src_prefix is not None:
        cmd.append(f"--src-prefix={src_prefix}")
    cmd += ["-o-", *files]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"capnp failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc.stdout


def decode_request(data: bytes) -> model.CodeGeneratorRequest:
    """Decode a binary ``CodeGeneratorRequest`` with pycapnp into cara's model."""
    capnp = require_pycapnp()
    schema = _schema_module()
    reader = schema.CodeGeneratorRequest.from_bytes(data, traversal_limit_in_words=2**62)
    # from_bytes is a context manager in pycapnp >= 2; keep the reader alive while converting.
    with reader as req:
        loader = capnp.SchemaLoader()
        for node in req.nodes:
            loader.load_dynamic(node)
        result = _Converter(capnp, loader).convert(req, model.CodeGeneratorRequest)
        _fill_pointer_values(capnp, loader, req, result)
        result._reference_loader = loader  # type: ignore[attr-defined]
        return result


# ----------------------------------------------------------------------------- pointer values

_POINTER_MEMBERS = ("list", "struct", "anyPointer")
_PRIMITIVE_LIST_TYPES = {
    "void": "Void", "bool": "Bool", "int8": "Int8", "int16": "Int16", "int32": "Int32",
    "int64": "Int64", "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32",
    "uint64": "UInt64", "float32": "Float32", "float64": "Float64", "text": "Text",
    "data": "Data",
}
# The normalised form of a pointer value (both sides): a struct is a dict holding every field
# outside unions plus the active union member (groups nest as dicts), enums are ints, Void and
# capabilities are None, absent pointers are None, Float32 is rounded to single precision.


def _f32(x: float) -> float:
    import struct as _struct

    try:
        return float(_struct.unpack("<f", _struct.pack("<f", x))[0])
    except OverflowError:
        return x


def _element_schema(capnp: Any, loader: Any, type_: model.Type) -> Any:
    which = type_.which
    if which in _PRIMITIVE_LIST_TYPES:
        return getattr(capnp.types, _PRIMITIVE_LIST_TYPES[which])
    if which == "struct":
        return loader.get(type_.struct.typeId).as_struct()  # type: ignore[union-attr]
    if which == "enum":
        return loader.get(type_.enum.typeId).as_enum()  # type: ignore[union-attr]
    if which == "interface":
        return loader.get(type_.interface.typeId).as_interface()  # type: ignore[union-attr]
    if which == "list":
        return capnp.lib.capnp._ListSchema(
            _element_schema(capnp, loader, type_.list.elementType))  # type: ignore[union-attr]
    raise TypeError(f"no list schema for {which}")


class _Normaliser:
    """Values of one side -> the normalised form, walking cara's model of the schema."""

    def __init__(self, by_id: dict[int, model.Node]) -> None:
        self.by_id = by_id

    def struct(self, v: Any, node: model.Node) -> dict[str, Any]:
        raise NotImplementedError

    def value(self, v: Any, type_: model.Type) -> Any:
        which = type_.which
        if which == "struct":
            return self.struct(v, self.by_id[type_.struct.typeId])  # type: ignore[union-attr]
        if which == "list":
            return [self.value(x, type_.list.elementType) for x in v]  # type: ignore[union-attr]
        if which == "float32":
            return _f32(float(v))
        if which in ("void", "anyPointer", "interface"):
            return None
        return self.leaf(v, which)

    def leaf(self, v: Any, which: str) -> Any:
        """A non-pointer, non-float32 value of type ``which`` as the normalised form has it."""
        return v


class _ReaderNormaliser(_Normaliser):
    """pycapnp readers -> the normalised form."""

    def struct(self, reader: Any, node: model.Node) -> dict[str, Any]:
        assert node.struct is not None
        active = None
        if node.struct.discriminantCount:
            active = str(reader.which())
        out: dict[str, Any] = {}
        for f in node.struct.fields:
            if f.discriminantValue != model.NO_DISCRIMINANT and f.name != active:
                continue
            if f.which == "group" and f.group is not None:
                out[f.name] = self.struct(getattr(reader, f.name), self.by_id[f.group.typeId])
                continue
            assert f.slot is not None
            type_ = f.slot.type
            if type_.which in ("text", "data", "list", "struct", "anyPointer", "interface"):
                if type_.which in ("anyPointer", "interface") or not reader._has(f.name):
                    out[f.name] = None
                    continue
            out[f.name] = self.value(getattr(reader, f.name), type_)
        return out

    def leaf(self, v: Any, which: str) -> Any:
        if which == "enum":
            return int(v.raw) if hasattr(v, "raw") else int(v)
        if which == "data":
            return bytes(v)
        if which == "text":
            return str(v)
        return v


class _DictNormaliser(_Normaliser):
    """cara's Python values -> the normalised form, filling in defaults from the schema."""

    def struct(self, d: dict[str, Any], node: model.Node) -> dict[str, Any]:
        assert node.struct is not None
        union = [f for f in node.struct.fields if f.discriminantValue != model.NO_DISCRIMINANT]
        active = next((f.name for f in union if f.name in d), None)
        if active is None and union:
            active = min(union, key=lambda f: f.discriminantValue).name
        out: dict[str, Any] = {}
        for f in node.struct.fields:
            if f.discriminantValue != model.NO_DISCRIMINANT and f.name != active:
                continue
            if f.which == "group" and f.group is not None:
                inner = d.get(f.name)
                out[f.name] = self.struct(inner if isinstance(inner, dict) else {},
                                          self.by_id[f.group.typeId])
                continue
            assert f.slot is not None
            type_ = f.slot.type
            if f.name in d and d[f.name] is not None:
                out[f.name] = self.value(d[f.name], type_)
            else:
                out[f.name] = self.default(f.slot.defaultValue, type_)
        return out

    def default(self, value: model.Value, type_: model.Type) -> Any:
        # An absent pointer reads as null in a message (its default is only a reader's
        # fallback), so it normalises to None like the reference side's unset pointer.
        which = value.which
        if which in _POINTER_MEMBERS or which in ("text", "data"):
            return None
        if which in ("void", "interface"):
            return None
        return self.value(getattr(value, which), type_)


def _read_pointer(capnp: Any, loader: Any, reader: Any, type_: model.Type,
                  normaliser: _ReaderNormaliser) -> Any:
    which = type_.which
    if which == "struct":
        schema = loader.get(type_.struct.typeId).as_struct()  # type: ignore[union-attr]
        return normaliser.value(reader.as_struct(schema), type_)
    if which == "list":
        schema = capnp.lib.capnp._ListSchema(
            _element_schema(capnp, loader, type_.list.elementType))  # type: ignore[union-attr]
        return normaliser.value(reader.as_list(schema), type_)
    return None


def _fill_value(capnp: Any, loader: Any, value_reader: Any, value: model.Value,
                type_: model.Type, normaliser: _ReaderNormaliser) -> None:
    which = value.which
    if which not in _POINTER_MEMBERS:
        return
    if not value_reader._has(which):
        setattr(value, which, model.PointerValue(type_, None))
        return
    if type_.which in ("anyPointer", "interface"):
        # Nothing says what the pointer holds; only its presence is compared.
        setattr(value, which, model.PointerValue(type_, "<non-null>"))
        return
    try:
        python = _read_pointer(capnp, loader, getattr(value_reader, which), type_, normaliser)
    except Exception as exc:
        python = f"<unreadable: {exc}>"
    setattr(value, which, model.PointerValue(type_, python))


def _values_of(request: model.CodeGeneratorRequest) -> list[tuple[model.Value, model.Type]]:
    """Every Value in the request with the type it is written in."""
    by_id = {n.id: n for n in request.nodes}

    def annotation_type(ann: model.Annotation) -> model.Type:
        decl = by_id.get(ann.id)
        if decl is None or decl.annotation is None:
            return model.Type()
        return decl.annotation.type

    out: list[tuple[model.Value, model.Type]] = []
    for node in request.nodes:
        anns = list(node.annotations)
        if node.struct is not None:
            for f in node.struct.fields:
                anns += f.annotations
                if f.slot is not None:
                    out.append((f.slot.defaultValue, f.slot.type))
        if node.const is not None:
            out.append((node.const.value, node.const.type))
        if node.enum is not None:
            for e in node.enum.enumerants:
                anns += e.annotations
        if node.interface is not None:
            for m in node.interface.methods:
                anns += m.annotations
        out += [(a.value, annotation_type(a)) for a in anns]
    return out


def _value_readers(req: Any) -> list[Any]:
    """The pycapnp Value readers in the same order as :func:`_values_of`."""
    out: list[Any] = []
    for node in req.nodes:
        anns = list(node.annotations)
        which = str(node.which())
        if which == "struct":
            for f in node.struct.fields:
                anns += list(f.annotations)
                if str(f.which()) == "slot":
                    out.append(f.slot.defaultValue)
        if which == "const":
            out.append(node.const.value)
        if which == "enum":
            for e in node.enum.enumerants:
                anns += list(e.annotations)
        if which == "interface":
            for m in node.interface.methods:
                anns += list(m.annotations)
        out += [a.value for a in anns]
    return out


def _fill_pointer_values(capnp: Any, loader: Any, req: Any,
                         result: model.CodeGeneratorRequest) -> None:
    normaliser = _ReaderNormaliser({n.id: n for n in result.nodes})
    for (value, type_), reader in zip(_values_of(result), _value_readers(req), strict=True):
        _fill_value(capnp, loader, reader, value, type_, normaliser)


def normalise_request_values(request: model.CodeGeneratorRequest,
                             reference: model.CodeGeneratorRequest) -> None:
    """Rewrite cara's pointer values in ``request`` into the normalised form the reference's
    were decoded into, using the reference's nodes for the schema."""
    normaliser = _DictNormaliser({n.id: n for n in reference.nodes})
    for value, declared in _values_of(request):
        if value.which in _POINTER_MEMBERS:
            pv = getattr(value, value.which)
            if pv is not None and declared.which in ("anyPointer", "interface"):
                setattr(value, value.which, model.PointerValue(
                    declared, None if pv.value is None else "<non-null>"))
                continue
            if pv is not None and pv.value is not None:
                try:
                    pv.value = normaliser.value(pv.value, pv.type)
                except Exception as exc:
                    pv.value = f"<not normalisable: {type(exc).__name__}: {exc}>"


def reference_request(files: list[str], **kwargs: Any) -> model.CodeGeneratorRequest:
    return decode_request(reference_request_bytes(files, **kwargs))


class _Converter:
    """Walks a pycapnp reader along the dataclasses of :mod:`cara.schema.model`."""

    def __init__(self, capnp: Any, loader: Any) -> None:
        self.capnp = capnp
        self.loader = loader
        self.hints: dict[type, dict[str, Any]] = {}

    def _hints(self, cls: type) -> dict[str, Any]:
        if cls not in self.hints:
            self.hints[cls] = typing.get_type_hints(cls, vars(model), {"Literal": typing.Literal})
        return self.hints[cls]

    def convert(self, reader: Any, cls: type) -> Any:
        hints = self._hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs: dict[str, Any] = {}
        which = reader.which() if "which" in names else None
        if which is not None:
            which = str(which)
            kwargs["which"] = which
        for name in names:
            if name == "which":
                continue
            hint = hints[name]
            if which is not None and _is_union_member(cls, name):
                if name != which:
                    continue
            if cls is model.Value and name in ("list", "struct", "anyPointer"):
                continue  # filled in by _fill_pointer_values, which knows the type
            raw = getattr(reader, name)
            kwargs[name] = self._value(raw, hint)
        obj = cls(**kwargs)
        return obj

    def _value(self, raw: Any, hint: Any) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Union or type(hint).__name__ == "UnionType":
            inner = [a for a in args if a is not type(None)]
            return self._value(raw, inner[0])
        if origin is list:
            return [self._value(x, args[0]) for x in raw]
        if dataclasses.is_dataclass(hint):
            return self.convert(raw, hint)  # type: ignore[arg-type]
        if hint is bool:
            return bool(raw)
        if hint is int:
            return int(raw.raw) if hasattr(raw, "raw") else int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return str(raw)
        if hint is bytes:
            return bytes(raw)
        return raw


def _is_union_member(cls: type, name: str) -> bool:
    members = {
        model.Type: {"list", "enum", "struct", "interface", "anyPointer"},
        model.AnyPointerType: {"unconstrained", "parameter", "implicitMethodParameter"},
        model.BrandBinding: {"type"},
        model.BrandScope: {"bind"},
        model.Value: {f.name for f in dataclasses.fields(model.Value)} - {"which"},
        model.Field: {"slot", "group"},
        model.FieldOrdinal: {"explicit"},
        model.Node: {"struct", "enum", "interface", "const", "annotation"},
    }
    return name in members.get(cls, set())


# ------------------------------------------------------------------- libcapnp 1.x (pycapnp)

def _walk_parsed(schema: Any, seen: dict[int, Any]) -> None:
    """Every node reachable from a pycapnp ``_ParsedSchema``: nested declarations, groups and
    methods' parameter and result structs (by id, first seen wins)."""
    stack = [schema]
    nested_walked: set[int] = set()
    while stack:
        current = stack.pop()
        node = current.node
        # A struct reached as a field's or a method's type cannot list what it nests; reached
        # again as a declaration, it can.
        if hasattr(current, "get_nested") and node.id not in nested_walked:
            nested_walked.add(node.id)
            stack += [current.get_nested(nested.name) for nested in node.nestedNodes]
        if node.id in seen:
            continue
        seen[node.id] = node
        which = str(node.which())
        if which == "struct":
            for field in current.as_struct().fields_list:
                if str(field.proto.which()) == "group":
                    stack.append(field.schema)
        elif which == "interface":
            for method in current.as_interface().methods.values():
                stack += [method.param_type, method.result_type]


def pycapnp_nodes(file_names: list[str], *, cwd: str | Path,
                  import_path: list[str] = ()) -> list[model.Node]:  # type: ignore[assignment]
    """The nodes that libcapnp 1.x (pycapnp's ``SchemaParser``) compiles for each of
    ``file_names`` (relative to ``cwd``, displayed under that name, as ``capnp compile`` would),
    as cara's model, pointer values normalised like :func:`decode_request`'s. Values are read
    with the types of all the files' nodes together (an annotation declared in an imported file
    gives its value's type), so pass the imported files too.

    Each file gets a parser of its own: libcapnp refuses one file id arriving by two paths,
    which the 0.9.2 and HEAD corpora (and a file both requested and imported) do on purpose.
    """
    capnp = require_pycapnp()
    schema = _schema_module()
    pool: dict[int, bytes] = {}
    for file_name in file_names:
        module = capnp.SchemaParser().load(str(Path(cwd) / file_name), file_name,
                                           [str(Path(cwd) / d) for d in import_path])
        seen: dict[int, Any] = {}
        _walk_parsed(module.schema, seen)
        for node_id, node in seen.items():
            # Only the file's own nodes: a method may take a struct of another file.
            if node.displayName.split(":")[0] == file_name:
                pool[node_id] = node.as_builder().to_bytes()
    # Each node through bytes into schema.capnp's own Node type (the parser's readers carry
    # libcapnp's built-in copy of the schema, which pycapnp will not mix with a loaded one).
    readers = []
    for data in pool.values():
        with schema.Node.from_bytes(data) as reader:
            readers.append(reader.as_builder().as_reader())
    loader = capnp.SchemaLoader()
    for reader in readers:
        loader.load_dynamic(reader)
    converter = _Converter(capnp, loader)
    result = model.CodeGeneratorRequest(nodes=[converter.convert(r, model.Node) for r in readers])

    class _Request:
        nodes = readers

    _fill_pointer_values(capnp, loader, _Request(), result)
    return result.nodes


_FIRST_ERROR = r"""
import re, sys, capnp
try:
    capnp.SchemaParser().load(sys.argv[1], sys.argv[2], sys.argv[3:])
except Exception as exc:
    print(str(exc).splitlines()[0])
"""


def pycapnp_first_error(file_name: str, *, cwd: str | Path,
                        import_path: list[str] = ()) -> str | None:  # type: ignore[assignment]
    """``file:line: message`` of the first error libcapnp 1.x (pycapnp) finds in the file, or
    None if it loads. Run in a child process: libcapnp may abort the interpreter on a schema
    error. The line is 1-based here (libcapnp's exception counts from 0)."""
    require_pycapnp()
    import re
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_ERROR, str(Path(cwd) / file_name), file_name,
         *[str(Path(cwd) / d) for d in import_path]],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    text = proc.stdout + proc.stderr
    if proc.returncode == 0 and not text.strip():
        return None
    found = re.search(r"(\S+?):(\d+): failed: (.*)", text)
    if found is None:
        raise AssertionError(f"pycapnp gave no error line: {text!r}")
    name = found.group(1)
    name = file_name if name.endswith(file_name) else name
    return f"{name}:{int(found.group(2)) + 1}: {found.group(3)}"
