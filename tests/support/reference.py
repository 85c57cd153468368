"""The reference oracle: ``capnp compile -o-`` decoded by pycapnp, turned into cara's model.

Tests compare what cara produces against what the real tools produce. This module runs the
reference compiler (``capnp``, Debian's 0.9.2) and decodes its ``CodeGeneratorRequest`` with
pycapnp (bundling libcapnp 1.x), then converts the result into :mod:`cara.schema.model` objects,
so a test can compare cara's request with ``==`` node by node.

Pointer values inside ``Value`` (struct, list and AnyPointer defaults, constants and annotation
values) are decoded with the type that the surrounding node gives them, and represented as
pycapnp's ``to_dict()`` output (structs: every field by name, enums by enumerant name) or a
Python list; tests that compare them normalise both sides (see ``normalise_pointer_value``).
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
        return _Converter(capnp, loader).convert(req, model.CodeGeneratorRequest)


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
            self.hints[cls] = typing.get_type_hints(cls, vars(model))
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
                continue  # filled in by the owner, which knows the type
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
