"""cara's JSON against libcapnp's JSON codec (``capnp convert`` 0.9.2, which handles structs by
their ``compat/json.capnp`` annotations) on random messages of every struct of test.capnp and
json-test.capnp, both directions:

* writing: the binary form of a value, converted by ``capnp convert binary:json``, is exactly
  the text ``to_json()`` writes (or both refuse: AnyPointer and capability fields);
* reading: what ``from_json`` reads from the text ``to_json()`` wrote is what libcapnp reads
  from it (``capnp convert json:binary``, then ``binary:json``), "where libcapnp can round-trip
  it": a text libcapnp does not give back is skipped (a ``Json.Value`` number that is infinite,
  which libcapnp writes as ``inf``; ``\u001f``, which 0.9.2's reader decodes wrongly).

And the cases issue 14 lists, each against ``capnp convert`` run here: an unset union's first
member with an explicit default, ``Json.Value`` null / -0.0 / infinity, a flattened empty-struct
member chosen by a discriminator, and a self-recursive union (a clean error in cara; capnp
itself crashes on it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cara.errors import EncodeError
from tests.conftest import LONG
from tests.runtime.test_binary_interop import (
    _SETTINGS,
    STRUCT_NAMES,
    _lookup,
    struct_strategy,
)
from tests.runtime.test_binary_interop import cara_module as cara_module  # the fixture
from tests.support.corpus_modules import reachable_classes

EXAMPLES = 30 if LONG else 2
JSON_TEST = "c++/src/capnp/compat/json-test.capnp"
TEST_CAPNP = "c++/src/capnp/test.capnp"

pytestmark = pytest.mark.skipif(shutil.which("capnp") is None,
                                reason="the reference compiler capnp is not installed")


def _convert(args: list[str], data: bytes, cwd: Path) -> bytes | None:
    """``capnp convert`` output, or None when it refuses (or crashes on) the input."""
    proc = subprocess.run(["capnp", "convert", "--quiet", *args, "-Ic++/src"], input=data,
                          capture_output=True, cwd=cwd, check=False, timeout=60)
    return proc.stdout if proc.returncode == 0 else None


def _display(cls: Any) -> str:
    return str(cls.cara_schema.name)


@pytest.fixture(scope="module")
def json_test_module(corpus_092: Path) -> Any:
    import cara.schema
    from cara.runtime import build_module

    request = cara.schema.compile([str(corpus_092 / JSON_TEST)],
                                  import_path=[str(corpus_092 / "c++/src")])
    return build_module(request, request.requestedFiles[0].id,
                        name="cara_test_json_vs_capnp_json_test")


def _check(cls: Any, schema_file: str, cwd: Path, data: dict[int, Any]) -> None:
    value = cls(data)
    name = _display(cls)
    try:
        ours = value.to_json()
    except EncodeError:
        ours = None
    theirs = _convert(["binary:json", "--short", schema_file, name], value.to_bytes(), cwd)
    if ours is None or theirs is None:
        assert ours is None and theirs is None, (
            f"cara {'refused' if ours is None else 'wrote'} it, capnp "
            f"{'refused' if theirs is None else 'wrote'} it: {ours or theirs!r}")
        return
    assert theirs.decode() == ours + "\n"
    binary = _convert(["json:binary", schema_file, name], ours.encode(), cwd)
    if binary is None or _convert(["binary:json", "--short", schema_file, name], binary,
                                  cwd) != theirs:
        # libcapnp cannot round-trip this text: it writes inf/nan in a Json.Value as no JSON
        # reader reads them, and 0.9.2's reader decodes "\u001f" as "\x15" (hex letters in a
        # \u escape read as decimal digits)
        return
    # what cara reads from the text is what libcapnp reads from it (libcapnp's own JSON of
    # its reading is ``theirs``: compared as text, so a bug in cara's binary decoding cannot
    # hide one in its JSON reader, or the other way round)
    assert cls.from_json(ours).to_json() + "\n" == theirs.decode()


def _run(cls: Any, schema_file: str, cwd: Path) -> None:
    @settings(_SETTINGS, max_examples=EXAMPLES)
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        _check(cls, schema_file, cwd, data)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", STRUCT_NAMES)
def test_test_capnp_structs(corpus_092: Path, cara_module: Any, name: str) -> None:
    cls = _lookup(cara_module, name)
    if cls.cara_schema.generic_params:
        pytest.skip("capnp convert cannot name a generic struct's instantiation")
    _run(cls, TEST_CAPNP, corpus_092)


def test_json_test_capnp_structs(corpus_092: Path, json_test_module: Any) -> None:
    from cara.runtime import Struct

    classes = [c for c in reachable_classes(json_test_module)
               if issubclass(c, Struct) and not c.cara_schema.is_group
               and "$" not in _display(c)]
    assert len(classes) >= 5
    for cls in classes:
        _run(cls, JSON_TEST, corpus_092)


# ------------------------------------------------------------------------- the listed cases

CASES = """\
@0xd1a2b3c4d5e6f701;
using Json = import "/capnp/compat/json.capnp";
struct A {
  union { c @0 :Text = "dflt"; d @1 :Int32; }
  before @2 :Int8;
}
struct AData { union { c @0 :Data = 0x"0102"; d @1 :Int32; } }
struct AList { union { c @0 :List(Int16) = [1, 2]; d @1 :Int32; } }
struct AStruct { union { c @0 :A = (before = 3); d @1 :Int32; } }
struct B {
  v @0 :Json.Value;
  l @1 :List(Json.Value);
}
struct R {
  union { again @0 :R; n @1 :Int32; }
}
struct E {}
struct F $Json.discriminator(name = "type") {
  union { e @0 :E $Json.flatten(); n @1 :Int32; f @2 :E $Json.flatten(); }
}
"""


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import cara

    where = tmp_path_factory.mktemp("json-cases")
    (where / "c++/src/capnp/compat").mkdir(parents=True)
    shutil.copy(Path(cara.__file__).parent / "schema/standard/capnp/compat/json.capnp",
                where / "c++/src/capnp/compat/json.capnp")
    (where / "cases.capnp").write_text(CASES)
    return cara.load(where / "cases.capnp", imports=[where / "c++/src"]), where


@pytest.mark.parametrize(("name", "text"), [
    ("A", "{}"), ("AData", "{}"), ("AList", "{}"), ("AStruct", "{}"),
    ("A", '{"d": 5}'), ("A", '{"before": 1}'),
    ("B", '{"v": null}'), ("B", '{"v": -0, "l": [null, -0, 0.5, true, "x", [], {}]}'),
    ("B", '{"v": 1e400}'), ("B", '{"l": [-1e400]}'),
    ("F", '{"type": "e"}'), ("F", '{"type": "n", "n": 3}'),
    ("F", '{"type": "f"}'),  # libcapnp writes the chosen member as a null pointer
])
def test_listed_cases_match_capnp(cases: tuple[Any, Path], name: str, text: str) -> None:
    """What ``capnp convert`` makes of a JSON text (to binary and back to JSON) is what cara
    makes of it (``from_json`` then ``to_json``), and the binary forms read the same."""
    module, where = cases
    cls = getattr(module, name)
    binary = _convert(["json:binary", "cases.capnp", name], text.encode(), where)
    assert binary is not None
    theirs = _convert(["binary:json", "--short", "cases.capnp", name], binary, where)
    assert theirs is not None
    ours = cls.from_json(text)
    assert ours.to_json() + "\n" == theirs.decode()
    assert ours == cls.from_bytes(binary)
    assert cls.from_bytes(binary).to_json() + "\n" == theirs.decode()


def test_self_recursive_union_is_a_clean_error(cases: tuple[Any, Path]) -> None:
    """``R()`` reads its union as ``again``, an ``R`` whose union reads as ``again``...: no
    finite JSON. cara says so; capnp convert crashes (stack overflow) on it."""
    module, where = cases
    with pytest.raises(EncodeError, match="nests too deeply"):
        module.R().to_json()
    assert module.R(n=1).to_json() == '{"n":1}'
    assert _convert(["binary:json", "cases.capnp", "R"], module.R().to_bytes(), where) is None


@settings(max_examples=5, deadline=None)
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_json_value_numbers_match(cases: tuple[Any, Path], number: float) -> None:
    module, where = cases
    value = module.B(v={"number": number})
    theirs = _convert(["binary:json", "--short", "cases.capnp", "B"], value.to_bytes(), where)
    assert theirs is not None and theirs.decode() == value.to_json() + "\n"
