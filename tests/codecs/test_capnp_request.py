"""CodeGeneratorRequest <-> binary, driven by schema.capnp's own nodes, against `capnp compile
-o-` and pycapnp's decoding of it (tests/support/reference.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cara.schema import model
from tests.codecs.capnp_support import (
    TEST_CAPNP,
    reference_decode_isolated,
    request_codec,
    same_value,
)
from tests.support import reference
from tests.support.reference import reference_request_bytes

FILES = [TEST_CAPNP, "c++/src/capnp/schema.capnp", "c++/src/capnp/rpc.capnp",
         "c++/src/capnp/compat/json.capnp"]


def _plain(obj: Any) -> Any:
    """Dataclasses as dicts; pointer values dropped (the reference does not decode them)."""
    if isinstance(obj, model.PointerValue):
        return None
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    return obj


@pytest.mark.parametrize("name", FILES)
def test_decode_matches_reference(corpus_092: Path, name: str) -> None:
    raw = reference_request_bytes([name], cwd=corpus_092, import_path=["c++/src"])
    mine = request_codec().decode(raw)
    assert _plain(mine) == _plain(reference_decode_isolated(raw))
    assert len(mine.nodes) > 3


@pytest.mark.parametrize("name", FILES)
def test_encode_reads_back_in_pycapnp(corpus_092: Path, name: str) -> None:
    raw = reference_request_bytes([name], cwd=corpus_092, import_path=["c++/src"])
    codec = request_codec()
    mine = codec.decode(raw)
    ours = codec.encode(mine)
    theirs_back = reference_decode_isolated(ours)
    theirs = reference_decode_isolated(raw)
    assert _plain(theirs_back) == _plain(theirs)
    # pointer values (defaults, constants, annotation values) as pycapnp reads them back
    for i, (a, b) in enumerate(zip(_pointer_values(theirs_back), _pointer_values(theirs),
                                   strict=True)):
        assert same_value(a, b), f"value {i}: {a!r} != {b!r}"
    again = codec.decode(ours)
    assert again == mine or _plain(again) == _plain(mine)


def test_pointer_defaults_are_typed(corpus_092: Path) -> None:
    raw = reference_request_bytes([TEST_CAPNP], cwd=corpus_092, import_path=["c++/src"])
    req = request_codec().decode(raw)
    node = next(n for n in req.nodes if n.displayName.endswith(":TestDefaults"))
    assert node.struct is not None
    fields = {f.name: f for f in node.struct.fields}
    slot = fields["structField"].slot
    assert slot is not None and slot.defaultValue.which == "struct"
    pv = slot.defaultValue.struct
    assert pv is not None and pv.type.which == "struct"
    assert pv.value["textField"] == "baz" and pv.value["int32Field"] == -78901234
    int_list = fields["int32List"].slot
    assert int_list is not None and int_list.defaultValue.list is not None
    assert int_list.defaultValue.list.value == [111111111, -111111111]  # test.capnp:144


def _pointer_values(req: model.CodeGeneratorRequest) -> list[Any]:
    """Every pointer-typed Value's content, in a fixed order (None for a null pointer)."""
    out: list[Any] = []
    for value, _type in reference._values_of(req):
        if value.which in ("list", "struct", "anyPointer"):
            pv = getattr(value, value.which)
            out.append(None if pv is None else pv.value)
    return out


@pytest.mark.parametrize("name", [TEST_CAPNP, "c++/src/capnp/compat/json.capnp",
                                  "c++/src/capnp/rpc.capnp"])
def test_pointer_values_match_reference(corpus_092: Path, name: str) -> None:
    """Struct and list defaults, constants and annotation values, typed from their context,
    against pycapnp's reading of the same values (both normalised by the reference module)."""
    raw = reference_request_bytes([name], cwd=corpus_092, import_path=["c++/src"])
    ref = reference_decode_isolated(raw)
    mine = request_codec().decode(raw)
    reference.normalise_request_values(mine, ref)
    got, want = _pointer_values(mine), _pointer_values(ref)
    assert len(got) == len(want)
    assert any(v is not None for v in want) or name != TEST_CAPNP
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert same_value(a, b), f"value {i}: {a!r} != {b!r}"


def test_self_hosted_bootstrap(corpus_092: Path) -> None:
    """Without a provider, schema.capnp's nodes come from cara's own compiler (its bundled,
    newer schema.capnp); the request then decodes as with the reference's nodes."""
    from cara.codecs.capnp import request_codec as module

    raw = reference_request_bytes([TEST_CAPNP], cwd=corpus_092, import_path=["c++/src"])
    saved = module._provider
    module.set_schema_nodes_provider(None)
    try:
        mine = module.decode_request(raw)
        ours = module.encode_request(mine)
    finally:
        module.set_schema_nodes_provider(saved)
    assert _plain(mine) == _plain(request_codec().decode(raw))
    assert _plain(reference_decode_isolated(ours)) == _plain(reference_decode_isolated(raw))


def _corpus_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "c++").rglob("*.capnp"))


def test_reencode_is_byte_identical_to_capnp(corpus_092: Path) -> None:
    """Every corpus schema: capnp's request, decoded and re-encoded by cara (layout "capnp",
    with capnp 0.9.2's schema.capnp nodes), is the same bytes: libcapnp's segments, far
    pointers, object order, and which empty lists/strings are null."""
    codec = request_codec()
    files = _corpus_files(corpus_092)
    assert len(files) > 15
    for name in files:
        for prefix in (None, "c++/src"):
            raw = reference_request_bytes([name], cwd=corpus_092, import_path=["c++/src"],
                                          src_prefix=prefix)
            assert codec.encode(codec.decode(raw)) == raw, name


def test_compact_layout_reads_back_in_pycapnp(corpus_092: Path) -> None:
    raw = reference_request_bytes([TEST_CAPNP], cwd=corpus_092, import_path=["c++/src"])
    codec = request_codec()
    mine = codec.decode(raw)
    compact = codec.encode(mine, layout="compact")
    assert len(compact) < len(raw)  # one segment, no far pointers or landing pads
    assert _plain(reference_decode_isolated(compact)) == _plain(reference_decode_isolated(raw))
    assert _plain(codec.decode(compact)) == _plain(mine)


def test_generic_values_decode_with_bound_parameters(corpus_092: Path) -> None:
    """A default of a generic struct type decodes its parameter-typed fields with the types the
    brand binds (test.capnp:628), and encodes back the same way."""
    raw = reference_request_bytes([TEST_CAPNP], cwd=corpus_092, import_path=["c++/src"])
    codec = request_codec()
    req = codec.decode(raw)
    node = next(n for n in req.nodes if n.displayName.endswith(":TestUseGenerics"))
    assert node.struct is not None
    fields = {f.name: f for f in node.struct.fields}
    slot = fields["default"].slot
    assert slot is not None and slot.defaultValue.struct is not None
    value = slot.defaultValue.struct.value
    assert value["foo"]["int16Field"] == 123  # Foo = TestAllTypes
    assert value["rev"]["foo"] == "text"  # rev: TestGenerics(Text, TestAllTypes)
    assert value["rev"]["rev"]["foo"]["int16Field"] == 321
    wrapper = fields["defaultWrapper2"].slot
    assert wrapper is not None and wrapper.defaultValue.struct is not None
    assert wrapper.defaultValue.struct.value["value"]["value"]["rev"]["foo"][
        "int16Field"] == 321
    assert codec.encode(req) == raw
