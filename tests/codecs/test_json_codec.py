"""JSON in Cap'n Proto's mapping, checked against the reference files of the corpus
(testdata/short.json and pretty.json, written by ``capnp convert``) and pycapnp reading
testdata/binary (the same TestAllTypes message)."""

from __future__ import annotations

import json
import math

import pytest

from cara.codecs import json_codec
from cara.errors import DecodeError, ValueTypeError
from tests.runtime.schemas import basics, oracle_request

TEST_CAPNP = "c++/src/capnp/test.capnp"


@pytest.fixture(scope="module")
def corpus_root(corpus_092):  # type: ignore[no-untyped-def]
    return corpus_092


@pytest.fixture(scope="module")
def t(corpus_root):  # type: ignore[no-untyped-def]
    from cara.runtime import build_module

    request = oracle_request([TEST_CAPNP], cwd=str(corpus_root),
                             import_path=[str(corpus_root / "c++/src")])
    return build_module(request, name="cara_test_json_test_capnp")


@pytest.fixture(scope="module")
def testdata(corpus_root):  # type: ignore[no-untyped-def]
    return corpus_root / "c++/src/capnp/testdata"


def test_short_json_round_trips_byte_for_byte(t, testdata) -> None:  # type: ignore[no-untyped-def]
    short = (testdata / "short.json").read_text().strip()
    value = t.TestAllTypes.from_json(short)
    assert value.to_json() == short


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
    x = b.AllScalars.Create(f64=345.0, f32=1e37, i64=-5, u64=2**64 - 1, d=b"\x00\xff", e="blue")
    data = json.loads(write(x))
    assert data["i64"] == "-5" and data["u64"] == "18446744073709551615"
    assert data["d"] == [0, 255] and data["e"] == "blue"
    assert '"f64":345,' in write(x)
    assert '"f32":1e37' in write(x)
    back = b.AllScalars.from_json(write(x))
    # JSON writes every data field, so the defaults come back as set values
    assert all(back[f.number] == x[f.number] for f in b.AllScalars.cara_schema.fields)
    assert set(back) > set(x)
