"""``Struct.to_json()``/``from_json()`` in Cap'n Proto's mapping, checked against the reference
files of the corpus (testdata/short.json and pretty.json, written by ``capnp convert`` from
testdata/binary), ``capnp convert text:json`` on a schema using the ``/capnp/compat/json.capnp``
annotations, and pycapnp reading testdata/binary (the same TestAllTypes message)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cara.codecs import json_codec
from cara.errors import DecodeError, ValueTypeError
from tests.runtime.schemas import basics, oracle_request
from tests.support.corpus_modules import oracle_test_capnp
from tests.support.reference import require_capnp


@pytest.fixture(scope="module")
def t(corpus_092):  # type: ignore[no-untyped-def]
    return oracle_test_capnp(corpus_092, "cara_test_json_test_capnp")


@pytest.fixture(scope="module")
def testdata(corpus_092):  # type: ignore[no-untyped-def]
    return corpus_092 / "c++/src/capnp/testdata"


def test_short_json_round_trips_byte_for_byte(t, testdata) -> None:  # type: ignore[no-untyped-def]
    short = (testdata / "short.json").read_text().strip()
    value = t.TestAllTypes.from_json(short)
    assert value.to_json() == short


def test_binary_message_writes_corpus_json(t, testdata) -> None:  # type: ignore[no-untyped-def]
    """testdata/binary decoded into a runtime struct writes what ``capnp convert`` wrote for
    it, in both layouts."""
    value = t.TestAllTypes.from_bytes((testdata / "binary").read_bytes())
    assert (value.to_json() + "\n").encode() == (testdata / "short.json").read_bytes()
    assert (value.to_json(pretty=True) + "\n").encode() == (testdata / "pretty.json").read_bytes()


def test_lists_alone_write_as_inside_the_struct(t, testdata) -> None:  # type: ignore[no-untyped-def]
    short = (testdata / "short.json").read_text()
    value = t.TestAllTypes.from_bytes((testdata / "binary").read_bytes())
    for name in ("int32List", "float32List", "enumList", "structList", "dataList"):
        items = value[name]
        assert f'"{name}":{json_codec.dumps(items)}' in short
        back = json_codec.loads(type(items), json_codec.dumps(items))
        assert json_codec.dumps(back) == json_codec.dumps(items)


def test_pretty_json_reads_the_same(t, testdata) -> None:  # type: ignore[no-untyped-def]
    pretty = t.TestAllTypes.from_json((testdata / "pretty.json").read_text())
    short = t.TestAllTypes.from_json((testdata / "short.json").read_text())
    assert pretty == short
    reference = json.loads((testdata / "pretty.json").read_text())
    assert json.loads(pretty.to_json(indent=2)) == reference


def test_json_matches_pycapnp_reading_the_binary(t, testdata) -> None:  # type: ignore[no-untyped-def]
    from tests.support.reference import require_pycapnp

    require_pycapnp()
    value = t.TestAllTypes.from_json((testdata / "short.json").read_text())
    assert value.int64Field == -123456789012345
    assert value.uInt64Field == 12345678901234567890
    assert value.dataField == b"bar"
    assert value.enumField == t.TestEnum.corge
    assert value.structField.structField.structField.textField == "really nested"
    assert [x.textField for x in value.structList] == ["structlist 1", "structlist 2",
                                                       "structlist 3"]
    f = value.float32List
    assert f[0] == 5555.5 and f[1] == math.inf and f[2] == -math.inf and math.isnan(f[3])
    assert value.structField.enumList == [t.TestEnum.qux, t.TestEnum.bar, t.TestEnum.grault]
    assert value.voidList == [None] * 6


def test_unions_groups_and_omitted_pointers(t) -> None:  # type: ignore[no-untyped-def]
    u = t.TestUnnamedUnion.Create(before="b", bar=5)
    assert json.loads(u.to_json()) == {"before": "b", "bar": 5, "middle": 0}
    g = t.TestGroups.Create(groups={"bar": {"corge": 1}})
    assert json.loads(g.to_json()) == {"groups": {"bar": {"corge": 1, "garply": "0"}}}
    assert t.TestGroups.from_json(g.to_json()) == t.TestGroups.Create(
        groups={"bar": {"corge": 1, "garply": 0}})


def test_unknown_fields_are_ignored(t) -> None:  # type: ignore[no-untyped-def]
    assert t.TestOldVersion.from_json('{"old1": "5", "new2": "x"}') == {0: 5}


@pytest.mark.parametrize(("text", "path"), [
    ('{"int8Field": 300}', "TestAllTypes.int8Field"),
    ('{"int64Field": "12x"}', "TestAllTypes.int64Field"),
    ('{"enumField": "nope"}', "TestAllTypes.enumField"),
    ('{"dataField": [1, 256]}', "TestAllTypes.dataField"),
    ('{"structField": [1]}', "TestAllTypes.structField"),
    ('{"structList": [{}, {"textField": 5}]}', "TestAllTypes.structList[1].textField"),
    ('[1]', "TestAllTypes"),
])
def test_wrong_values_name_the_path(t, text, path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError) as info:
        t.TestAllTypes.from_json(text)
    assert info.value.path == path


@pytest.mark.parametrize("text", ['{"a": ', "[" * 100000 + "]" * 100000, b"\xff\xfe"])
def test_malformed_json_is_a_decode_error(t, text) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError):
        t.TestAllTypes.from_json(text)


def test_number_formatting() -> None:
    write = json_codec.dumps
    b = basics()
    x = b.AllScalars.Create(f64=345.0, f32=2.0**100, i64=-5, u64=2**64 - 1, d=b"\x00\xff", e="blue")
    data = json.loads(write(x))
    assert data["i64"] == "-5" and data["u64"] == "18446744073709551615"
    assert data["d"] == [0, 255] and data["e"] == "blue"
    assert '"f64":345,' in write(x)
    back = b.AllScalars.from_json(write(x))
    # JSON writes every data field, so the defaults come back as set values
    assert all(back[f.number] == x[f.number] for f in b.AllScalars.cara_schema.fields)
    assert set(back) > set(x)


# ---------------------------------------------------------- $Json annotations, against capnp

ANNOTATED = """@0xd1f0a3b2c4e5f601;
using Json = import "/capnp/compat/json.capnp";
struct Box(T) { value @0 :T; }
enum Color { red @0; lightBlue @1 $Json.name("light-blue"); }
struct S {
  id @0 :UInt64;
  note @1 :Text $Json.name("remark");
  ratio @2 :Float32 = 1.5;
  color @3 :Color = lightBlue;
  blob @4 :Data $Json.base64;
  box @5 :Box(Text);
  inner :group $Json.flatten(prefix = "in_") { a @6 :Int32 = 7; b @7 :Bool; }
  union {
    none @8 :Void;
    count @9 :Int16 $Json.name("n");
    label @10 :Text;
  }
  colors @11 :List(Color);
}
"""

#: The same values as Python (``S.Create(**kwargs)``) and as capnp text.
ANNOTATED_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"note": "hi"}, '(note = "hi")'),
    ({"note": "x\ny", "ratio": 1e37, "count": 3, "blob": b"ab", "box": {"value": "v"},
      "color": "red", "id": 2**64 - 1},
     '(note = "x\\ny", ratio = 1e37, count = 3, blob = "ab", box = (value = "v"), color = red,'
     ' id = 18446744073709551615)'),
    ({"label": "l", "inner": {"a": -1, "b": True}, "colors": ["lightBlue", "red"]},
     '(label = "l", inner = (a = -1, b = true), colors = [lightBlue, red])'),
]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    require_capnp()
    from cara.runtime import build_module

    where = tmp_path_factory.mktemp("annotated")
    (where / "s.capnp").write_text(ANNOTATED)
    request = oracle_request(["s.capnp"], cwd=str(where), import_path=["/usr/include"])
    return build_module(request, name="cara_test_json_annotated"), where


def capnp_text_to_json(where: Path, text: str, short: bool) -> str:
    args = ["capnp", "convert", "text:json", "s.capnp", "S"] + (["--short"] if short else [])
    proc = subprocess.run(args, input=text.encode(), capture_output=True, cwd=where, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().rstrip("\n")


@pytest.mark.parametrize(("kwargs", "text"), ANNOTATED_VALUES)
def test_json_annotations_match_capnp_convert(annotated: tuple[Any, Path],
                                              kwargs: dict[str, Any], text: str) -> None:
    """``$Json.name`` (fields and enumerants), ``flatten``, ``base64``, unset fields with
    defaults, the union's default member, a generic field: as ``capnp convert`` writes them."""
    module, where = annotated
    value = module.S.Create(**kwargs)
    short = capnp_text_to_json(where, text, short=True)
    assert value.to_json() == short
    assert value.to_json(pretty=True) == capnp_text_to_json(where, text, short=False)
    assert json.loads(value.to_json(indent=2)) == json.loads(short)
    # and capnp's JSON reads back as the same value
    back = module.S.from_json(short)
    assert back.to_json() == short
    assert back.to_bytes() == value.to_bytes()


def test_renamed_field_is_read_by_its_json_name(annotated: tuple[Any, Path]) -> None:
    module, _ = annotated
    assert module.S.from_json('{"remark": "r", "note": "ignored"}').note == "r"
    with pytest.raises(ValueTypeError) as info:
        module.S.from_json('{"box": {"value": 5}}')
    assert info.value.path == "S.box.value"
