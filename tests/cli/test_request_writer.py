"""``cara compile -o-``'s dedicated request writer against the binary codec's general encoder.

:mod:`cara.cli.request_writer` spells schema.capnp's layout out by hand for speed; the general
encoder (:func:`cara.cli.commands.encode_request_generic`, driven by schema.capnp's own nodes) is
the reference. Both must give the same bytes for every schema of both corpora and every snippet
the compiler tests use (tests/cli/test_compile_cmd.py compares the writer's output with capnp's
own bytes too). Values the writer leaves to the general encoder must still come out right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cara.cli.commands import encode_request, encode_request_generic
from cara.cli.request_writer import Unsupported, write_request
from cara.schema import compile as compile_schema
from cara.schema import compile_string, model
from tests.schema.test_compile_corpus import VALID_SNIPPETS
from tests.support.corpus_files import ALL_SCHEMAS_092


def _same(request: model.CodeGeneratorRequest) -> None:
    try:
        ours = write_request(request)
    except Unsupported:
        ours = None  # left to the general encoder: encode_request must still be exact
    reference = encode_request_generic(request)
    if ours is not None:
        assert ours == reference
    assert encode_request(request) == reference


def test_corpus_092(corpus_092: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus_092)
    for name in ALL_SCHEMAS_092:
        _same(compile_schema([name], import_path=["c++/src"], no_standard_import=True))
    _same(compile_schema(ALL_SCHEMAS_092[:6], import_path=["c++/src"], no_standard_import=True))


def test_corpus_head(corpus_head: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = corpus_head / "c++" / "src"
    names = sorted(str(p.relative_to(src)) for p in src.glob("capnp/**/*.capnp"))
    assert names
    monkeypatch.chdir(src)
    for name in names:
        _same(compile_schema([name], import_path=["."], no_standard_import=True))


@pytest.mark.parametrize("key", sorted(VALID_SNIPPETS))
def test_snippets(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.capnp").write_text(VALID_SNIPPETS[key], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    _same(compile_schema(["x.capnp"], import_path=["/usr/include"], no_standard_import=True))


GENERIC_VALUES = """@0xd6b8e9a1c3f4a5b7;
struct Box(T) { value @0 :T; more @1 :List(Box(T)); }
struct Pair(A, B) { a @0 :A; b @1 :B; inner @2 :Box(B); }
struct Leaf { x @0 :Int32 = 7; f @1 :Float32 = 1.5; t @2 :Text; on @3 :Bool = true; }
struct User {
  p @0 :Pair(Leaf, Text) = (a = (x = 1, f = 2.5, on = false), b = "b",
                            inner = (value = "v", more = [(value = "i"), (value = "j")]));
  q @1 :Box(List(Leaf)) = (value = [(x = 3), (t = "t")]);
}
const c :Box(Box(Leaf)) = (value = (value = (x = -1), more = [(value = (x = 2))]));
"""
def test_generic_values() -> None:
    _same(compile_string(GENERIC_VALUES, "g.capnp"))


def test_unsupported_values_fall_back() -> None:
    """A capability in an AnyPointer value (no schema writes one, a plugin's request may hold
    one) is left to the general encoder."""
    request = compile_string('@0xd6b8e9a1c3f4a5b8;\nconst c :Text = "x";\n', "u.capnp")
    const = next(n for n in request.nodes if n.which == "const")
    assert const.const is not None
    any_type = model.Type(which="anyPointer", anyPointer=model.AnyPointerType(
        unconstrained=model.AnyPointerUnconstrained()))
    const.const.type = any_type
    const.const.value = model.Value(which="anyPointer",
                                    anyPointer=model.PointerValue(any_type, 0))
    with pytest.raises(Unsupported):
        write_request(request)
    assert encode_request(request) == encode_request_generic(request)
