"""Shared helpers of the capnp codec tests: the compiled test.capnp, and a comparison of cara's
plain values with what pycapnp (libcapnp) reads from the same bytes."""

from __future__ import annotations

import functools
import math
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from cara.codecs.capnp.request_codec import RequestCodec
from cara.codecs.capnp.schema_codec import SchemaCodec, StructPlan
from cara.schema import model
from tests.support.reference import (
    reference_request,
    reference_request_bytes,
    require_capnp,
    require_pycapnp,
)

TEST_CAPNP = "c++/src/capnp/test.capnp"


@functools.cache
def schema_capnp_nodes() -> tuple[model.Node, ...]:
    """schema.capnp's own nodes, from the reference compiler (the bootstrap provider)."""
    require_capnp()
    req = reference_request(["/usr/include/capnp/schema.capnp"], cwd="/",
                            no_standard_import=False)
    return tuple(req.nodes)


@functools.cache
def request_codec() -> RequestCodec:
    return RequestCodec(schema_capnp_nodes())


@functools.cache
def corpus_request(root: Path) -> model.CodeGeneratorRequest:
    """test.capnp compiled by `capnp`, decoded by cara (pointer defaults included)."""
    raw = reference_request_bytes([TEST_CAPNP], cwd=root, import_path=["c++/src"])
    return request_codec().decode(raw)


@functools.cache
def corpus_codec(root: Path) -> SchemaCodec:
    return SchemaCodec(corpus_request(root))


def struct_id(root: Path, name: str) -> int:
    suffix = f"test.capnp:{name}"
    return next(n.id for n in corpus_request(root).nodes if n.displayName.endswith(suffix))


@functools.cache
def pycapnp_test_module(root: Path) -> Any:
    """test.capnp loaded by pycapnp.

    tests.support.reference loads /usr/include/capnp/schema.capnp, which imports
    /usr/include/capnp/c++.capnp; test.capnp imports its sibling c++.capnp, the same ids from
    another path, and libcapnp aborts the process on the duplicate. So pycapnp gets a temporary
    copy of test.capnp whose import names /capnp/c++.capnp (testdata linked for its embeds).
    """
    capnp = require_pycapnp()
    tmp = Path(tempfile.mkdtemp(prefix="cara-test-capnp-"))
    text = (root / TEST_CAPNP).read_text()
    (tmp / "test.capnp").write_text(text.replace('import "c++.capnp"',
                                                 'import "/capnp/c++.capnp"'))
    (tmp / "testdata").symlink_to(root / "c++/src/capnp/testdata")
    return capnp.load(str(tmp / "test.capnp"), imports=["/usr/include"])


_ISOLATED_DECODE = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
from tests.support.reference import decode_request
req = decode_request(sys.stdin.buffer.read())
req.__dict__.pop("_reference_loader", None)
sys.stdout.buffer.write(pickle.dumps(req))
"""


@functools.lru_cache(maxsize=16)
def _isolated_decode(raw: bytes) -> tuple[int, bytes]:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_DECODE, str(repo)], input=raw,
                          capture_output=True, check=False)
    return proc.returncode, proc.stdout if proc.returncode == 0 else proc.stderr


def reference_decode_isolated(raw: bytes) -> model.CodeGeneratorRequest:
    """tests.support.reference.decode_request run in a child process, so that a crash of the
    oracle (pycapnp has segfaulted on some requests) fails one test instead of the whole run."""
    require_pycapnp()
    code, out = _isolated_decode(raw)
    if code != 0:
        pytest.skip(f"the reference oracle (tests/support/reference.py decode_request) "
                    f"crashed with exit code {code}: {out.decode(errors='replace')[-300:]}")
    result = pickle.loads(out)
    assert isinstance(result, model.CodeGeneratorRequest)
    return result


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_matches_pycapnp(codec: SchemaCodec, plan: StructPlan, mine: dict[str, Any],
                           ref: Any, path: str = "") -> None:
    """Every field of ``mine`` (cara's decode) equals what pycapnp's reader ``ref`` says.

    A null pointer is ``None`` in cara and the type's empty value in pycapnp.
    """
    which = None
    if plan.discriminant_offset >= 0:
        which = str(ref.which())
    for fp in plan.fields:
        where = f"{path}.{fp.name}" if path else fp.name
        if fp.discriminant != model.NO_DISCRIMINANT and fp.name != which:
            assert fp.name not in mine, f"{where}: inactive union member decoded"
            continue
        assert fp.name in mine, f"{where}: missing"
        if fp.kind == "group":
            assert_matches_pycapnp(codec, codec.plan(fp.group_id), mine[fp.name],
                                   getattr(ref, fp.name), where)
            continue
        assert fp.type is not None
        _assert_value(codec, fp.type, mine[fp.name], getattr(ref, fp.name), where)


def _assert_value(codec: SchemaCodec, t: model.Type, mine: Any, ref: Any, where: str) -> None:
    w = t.which
    if w in ("void", "interface", "anyPointer"):
        return
    if w in ("float32", "float64"):
        assert same_float(mine, float(ref)), f"{where}: {mine!r} != {ref!r}"
    elif w == "enum":
        assert mine == int(ref.raw), f"{where}: {mine!r} != {ref!r}"
    elif w == "text":
        assert (mine if mine is not None else "") == str(ref), f"{where}: {mine!r} != {ref!r}"
    elif w == "data":
        assert (mine if mine is not None else b"") == bytes(ref), f"{where}"
    elif w == "list":
        assert t.list is not None
        items = [] if mine is None else mine
        assert len(items) == len(ref), f"{where}: length {len(items)} != {len(ref)}"
        for i, (a, b) in enumerate(zip(items, ref, strict=False)):
            _assert_value(codec, t.list.elementType, a, b, f"{where}[{i}]")
    elif w == "struct":
        assert t.struct is not None
        if mine is None:
            return  # null: pycapnp shows the default struct
        assert_matches_pycapnp(codec, codec.plan(t.struct.typeId), mine, ref, where)
    else:
        assert mine == ref, f"{where}: {mine!r} != {ref!r}"


def same_value(a: Any, b: Any) -> bool:
    """Equality with NaN == NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return same_float(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and \
            all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and \
            all(same_value(x, y) for x, y in zip(a, b, strict=False))
    return bool(a == b)
