"""``cara convert`` against ``capnp convert`` 0.9.2, byte for byte, on the corpus messages.

Most tests run :func:`cara.codecs.convert.convert_stream` in-process with the reference
compiler's schema (so they do not depend on cara's schema compiler); the CLI tests at the end run
the real ``cara`` command as a subprocess, the schema-driven ones as soon as cara's compiler
handles ``test.capnp``. Every expected output comes from running ``capnp convert`` on the same
input here.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cara.codecs.convert import SegmentedCopy, convert_stream, split_json, split_text
from tests.codecs.test_text_format import TESTDATA, Schema, test_capnp
from tests.conftest import LONG

__all__ = ["test_capnp"]  # fixture shared with the text-format tests

REPO = Path(__file__).resolve().parents[2]
SCHEMA_ARGS = ["-Ic++/src", "c++/src/capnp/test.capnp"]


def run_cara(schema: Schema | None, conversion: str, data: bytes, type_name: str = "TestAllTypes",
             **options: Any) -> tuple[int, bytes, str]:
    values: dict[str, Any] = {"import_path": [], "no_standard_import": False, "quiet": False,
                              "segment_size": None, "short": False, "verbose": False}
    values.update(options)
    source, target = conversion.split(":")
    out = io.BytesIO()
    err = io.StringIO()
    request = None if schema is None else (schema.nodes, schema.type_id(type_name))
    status = convert_stream(values, source, target, [], stdin=io.BytesIO(data), stdout=out,
                            stderr=err, request=request)
    return status, out.getvalue(), err.getvalue()


def run_capnp(corpus_092: Path, conversion: str, data: bytes, type_name: str = "TestAllTypes",
              extra: tuple[str, ...] = ()) -> tuple[int, bytes, str]:
    proc = subprocess.run(["capnp", "convert", conversion, *extra, *SCHEMA_ARGS, type_name],
                          input=data, capture_output=True, cwd=corpus_092, check=False,
                          env={**os.environ, "PWD": str(corpus_092)})
    return proc.returncode, proc.stdout, proc.stderr.decode()


def corpus_file(corpus_092: Path, name: str) -> bytes:
    return (corpus_092 / TESTDATA / name).read_bytes()


# (conversion, input file, cara options, capnp options); stream formats get the input twice
CASES = [
    ("binary:packed", "binary", {}, ()),
    ("packed:binary", "packed", {}, ()),
    ("binary:canonical", "segmented", {}, ()),
    ("packed:canonical", "segmented-packed", {}, ()),
    ("binary:binary", "segmented", {}, ()),
    ("binary:flat", "binary", {}, ()),
    ("binary:flat-packed", "binary", {}, ()),
    ("flat:binary", "flat", {}, ()),
    ("flat-packed:binary", "packedflat", {}, ()),
    ("binary:text", "binary", {}, ()),
    ("binary:text", "segmented", {"short": True}, ("--short",)),
    ("binary:json", "binary", {}, ()),
    ("packed:json", "packed", {"short": True}, ("--short",)),
    ("text:binary", "pretty.txt", {}, ()),
    ("text:canonical", "short.txt", {}, ()),
    ("json:binary", "pretty.json", {}, ()),
    ("json:canonical", "short.json", {}, ()),
    ("json:text", "pretty.json", {}, ()),
    ("text:json", "pretty.txt", {"short": True}, ("--short",)),
    ("binary:binary", "binary", {"segment_size": "1"}, ("--segment-size=1",)),
    ("binary:packed", "binary", {"segment_size": "16"}, ("--segment-size=16",)),
    ("text:binary", "short.txt", {"segment_size": "100"}, ("--segment-size=100",)),
]


@pytest.mark.parametrize(("conversion", "name", "options", "extra"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(c[3]) or 'default'}" for c in CASES])
def test_conversion_matches_capnp(test_capnp: Schema, corpus_092: Path, conversion: str,
                                  name: str, options: dict[str, Any],
                                  extra: tuple[str, ...]) -> None:
    data = corpus_file(corpus_092, name)
    if conversion.split(":")[0] in ("binary", "packed", "text", "json"):
        data += data  # a stream of two messages
    expected = run_capnp(corpus_092, conversion, data, extra=extra)
    assert expected[0] == 0, expected[2]
    status, out, err = run_cara(test_capnp, conversion, data, **options)
    assert (status, err) == (0, "")
    assert out == expected[1]


@pytest.mark.parametrize("conversion", ["binary:json", "binary:canonical", "binary:text",
                                        "binary:packed"])
def test_lists_message_matches_capnp(test_capnp: Schema, corpus_092: Path,
                                     conversion: str) -> None:
    data = corpus_file(corpus_092, "lists.binary")
    expected = run_capnp(corpus_092, conversion, data, "TestLists")
    assert expected[0] == 0, expected[2]
    assert run_cara(test_capnp, conversion, data, "TestLists") == (0, expected[1], "")


def test_big_message_uses_capnp_segment_growth(test_capnp: Schema, corpus_092: Path) -> None:
    """A message over 1024 words: libcapnp's MallocMessageBuilder splits it into growing
    segments with far pointers, and cara's binary output does the same."""
    big = {"uInt64List": [str(i) for i in range(3000)], "textField": "t" * 20000,
           "structList": [{"textField": "x" * i, "int8List": [1] * i} for i in range(120)],
           "structField": {"structList": [{"dataField": [1, 2, 3]}] * 50}}
    status, binary, err = run_capnp(corpus_092, "json:binary", json.dumps(big).encode())
    assert status == 0, err
    for conversion, extra in [("binary:binary", ()), ("binary:packed", ()),
                              ("binary:binary", ("--segment-size=500",)),
                              ("binary:canonical", ()), ("binary:flat", ())]:
        expected = run_capnp(corpus_092, conversion, binary + binary, extra=extra)
        options = {"segment_size": extra[0].split("=")[1]} if extra else {}
        got = run_cara(test_capnp, conversion, binary + binary, **options)
        assert got == (0, expected[1], ""), (conversion, extra)


def test_segmented_copy_grows_like_malloc_message_builder() -> None:
    copier = SegmentedCopy()
    assert copier._new_segment(1) == 0 and copier.capacity == [1024]
    copier._new_segment(2502)
    copier._new_segment(10)
    assert copier.capacity == [1024, 2502, 3526]
    fixed = SegmentedCopy(16)
    fixed._new_segment(1)
    fixed._new_segment(40)
    fixed._new_segment(3)
    assert fixed.capacity == [16, 40, 16]


# -------------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(("conversion", "name"), [
    ("binary:text", "packed"),
    ("packed:text", "binary"),
    ("flat:text", "binary"),
    ("flat-packed:text", "packed"),
    ("text:binary", "binary"),
    ("json:binary", "pretty.txt"),
    ("binary:text", "pretty.json"),
    ("canonical:text", "binary"),
])
def test_wrong_format_warnings_match_capnp(test_capnp: Schema, corpus_092: Path,
                                           conversion: str, name: str) -> None:
    data = corpus_file(corpus_092, name)
    expected = run_capnp(corpus_092, conversion, data)
    status, _out, err = run_cara(test_capnp, conversion, data)
    assert status == expected[0]
    if status:  # an impossible format: a usage error, nothing converted
        assert err.replace("cara convert", "capnp convert") == expected[2]
    else:  # a warning first, then the conversion goes on
        assert err.replace("cara convert", "capnp convert").startswith(expected[2])


def test_quiet_skips_the_format_check(test_capnp: Schema, corpus_092: Path) -> None:
    _status, _out, err = run_cara(test_capnp, "flat:canonical",
                                  corpus_file(corpus_092, "binary"), quiet=True)
    assert "WARNING" not in err


# ------------------------------------------------------------------------------- msgpack


def test_msgpack_round_trip_keeps_canonical_bytes(test_capnp: Schema, corpus_092: Path) -> None:
    binary = corpus_file(corpus_092, "binary")
    status, packed, err = run_cara(test_capnp, "binary:msgpack", binary + binary)
    assert (status, err) == (0, "")
    status, back, err = run_cara(test_capnp, "msgpack:binary", packed)
    assert (status, err) == (0, "")
    reference = run_capnp(corpus_092, "binary:canonical", binary)[1]
    assert run_capnp(corpus_092, "binary:canonical", back[:len(back) // 2])[1] == reference
    assert back[:len(back) // 2] == back[len(back) // 2:]


def test_msgpack_form_is_keyed_by_field_index(test_capnp: Schema, corpus_092: Path) -> None:
    status, packed, _ = run_cara(test_capnp, "binary:msgpack", corpus_file(corpus_092, "binary"))
    assert status == 0
    form = msgpack.unpackb(packed, strict_map_key=False, raw=False)
    fields = test_capnp.nodes[test_capnp.type_id("TestAllTypes")].struct.fields  # type: ignore[union-attr]
    names = {f.name: i for i, f in enumerate(fields)}
    assert form[names["textField"]] == "foo"
    assert form[names["dataField"]] == b"bar"
    assert form[names["enumField"]] == 5  # corge
    assert form[names["structField"]][names["textField"]] == "baz"


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("conversion", "mangle", "message"), [
    ("binary:text", lambda b: b[:-16], "message 1: input ends inside a message of 2816 bytes"),
    ("binary:text", lambda b: b + b[:100], "message 2: input ends inside a message"),
    ("binary:canonical", lambda b: b[:8] + b"\x02\x00\x00\x00\x05\x00\x00\x00" + b[16:],
     "message 1: far pointer names segment 5, but the message has 1 (at byte 8 of the input)"),
    ("binary:packed", lambda b: b[:8] + b"\x01\x00\x00\x00\x00\x00\x00\x00" + b[16:],
     "message 1: the root pointer is not a struct pointer (at byte 8 of the input)"),
    ("packed:binary", lambda b: b[:-3], "packed input ends inside"),
    ("text:binary", lambda b: b"(voidField = void, int8Field = 1000)",
     "message 1: 1:32: int8Field: 1000 is out of range for int8"),
    ("json:binary", lambda b: b'{"textField": 5}', "message 1: textField: expected a string"),
    ("canonical:binary", lambda b: b, "the message: the input is not in canonical form"),
])
def test_malformed_input_is_a_clear_error(test_capnp: Schema, corpus_092: Path, conversion: str,
                                          mangle: Any, message: str) -> None:
    name = {"packed": "packed", "canonical": "flat"}.get(conversion.split(":")[0], "binary")
    data = mangle(corpus_file(corpus_092, name))
    status, _out, err = run_cara(test_capnp, conversion, data, quiet=True)
    assert status == 1
    assert err.startswith("cara convert: ")
    assert message in err


def test_error_names_byte_offset(test_capnp: Schema, corpus_092: Path) -> None:
    binary = bytearray(corpus_file(corpus_092, "binary"))
    binary[8:16] = (0x7FFFFF00).to_bytes(4, "little") + (6 | 20 << 16).to_bytes(4, "little")
    status, _out, err = run_cara(test_capnp, "binary:text", bytes(binary), quiet=True)
    assert status == 1
    assert "struct pointer points outside its segment (at byte 8 of the input)" in err


def test_schema_formats_need_a_schema() -> None:
    err = io.StringIO()
    status = convert_stream({"quiet": False}, "binary", "json", [], stdin=io.BytesIO(b""),
                            stdout=io.BytesIO(), stderr=err)
    assert status == 1
    assert err.getvalue().startswith("cara convert: format requires schema: json\n")


def test_stream_splitting_follows_capnp() -> None:
    text = b'(a = "(x)") # (comment)\n(b = [(c = 1)])\n\n  '
    assert [chunk for _, chunk in split_text(text)] == [
        b'(a = "(x)") # (comment)\n', b"(b = [(c = 1)])\n\n  "]
    assert [chunk for _, chunk in split_json(b'{"a": "}{"} // {\n{}')] == [
        b'{"a": "}{"} // {\n', b"{}"]


# ----------------------------------------------------------------------------------- CLI


def cli(args: list[str], data: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "cara", "convert", *args], input=data,
                          capture_output=True, cwd=cwd, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(("conversion", "name", "extra"), [
    ("binary:packed", "binary", ()),
    ("packed:binary", "packed", ()),
    ("binary:canonical", "segmented", ()),
    ("packed:canonical", "segmented-packed", ()),
    ("binary:flat", "binary", ()),
    ("flat-packed:binary", "packedflat", ()),
    ("binary:binary", "binary", ("--segment-size=1",)),
])
def test_cli_binary_conversions(corpus_092: Path, conversion: str, name: str,
                                extra: tuple[str, ...]) -> None:
    data = corpus_file(corpus_092, name)
    expected = subprocess.run(["capnp", "convert", conversion, *extra], input=data,
                              capture_output=True, check=False)
    proc = cli([conversion, *extra], data, corpus_092)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == expected.stdout


@pytest.fixture(scope="module")
def cli_compiles_test_capnp(corpus_092: Path) -> None:
    """Skip the schema-driven CLI tests until cara's compiler handles test.capnp."""
    proc = cli(["binary:canonical", *SCHEMA_ARGS, "TestAllTypes"],
               corpus_file(corpus_092, "binary"), corpus_092)
    if proc.returncode != 0:
        first = (proc.stderr.decode().strip().splitlines() or ["?"])[0]
        pytest.skip(f"cara's schema compiler cannot compile test.capnp yet: {first}")


@pytest.mark.parametrize(("conversion", "name", "extra", "expected_name"), [
    ("binary:text", "binary", (), "pretty.txt"),
    ("binary:text", "binary", ("--short",), "short.txt"),
    ("binary:json", "binary", (), "pretty.json"),
    ("binary:json", "binary", ("--short",), "short.json"),
    ("text:canonical", "pretty.txt", (), None),
    ("json:canonical", "pretty.json", (), None),
])
def test_cli_schema_conversions(cli_compiles_test_capnp: None, corpus_092: Path,
                                conversion: str, name: str, extra: tuple[str, ...],
                                expected_name: str | None) -> None:
    data = corpus_file(corpus_092, name)
    proc = cli([conversion, *extra, *SCHEMA_ARGS, "TestAllTypes"], data, corpus_092)
    assert proc.returncode == 0, proc.stderr.decode()
    if expected_name is not None:
        assert proc.stdout == corpus_file(corpus_092, expected_name)
    else:
        assert proc.stdout == run_capnp(corpus_092, "binary:canonical",
                                        corpus_file(corpus_092, "binary"))[1]


def test_cli_lists_and_msgpack(cli_compiles_test_capnp: None, corpus_092: Path) -> None:
    lists = corpus_file(corpus_092, "lists.binary")
    proc = cli(["binary:json", *SCHEMA_ARGS, "TestLists"], lists, corpus_092)
    assert proc.stdout == run_capnp(corpus_092, "binary:json", lists, "TestLists")[1]
    binary = corpus_file(corpus_092, "binary")
    packed = cli(["binary:msgpack", *SCHEMA_ARGS, "TestAllTypes"], binary, corpus_092)
    back = cli(["msgpack:canonical", *SCHEMA_ARGS, "TestAllTypes"], packed.stdout, corpus_092)
    assert back.stdout == run_capnp(corpus_092, "binary:canonical", binary)[1]


# ----------------------------------------------------------------------- defaults, null root


@pytest.mark.parametrize("conversion", ["binary:text", "binary:json", "binary:canonical",
                                        "binary:binary", "binary:flat", "binary:packed"])
def test_null_pointers_with_schema_defaults_stay_null(test_capnp: Schema, corpus_092: Path,
                                                      conversion: str) -> None:
    """TestDefaults has a default for every field: a null pointer is printed as capnp prints
    it (not at all), and a null root is written as an empty struct, as libcapnp does."""
    header = bytes(4) + (1).to_bytes(4, "little")  # one segment of one word
    empty_root = header + bytes(8)  # a null root pointer
    empty_struct = header + b"\xfc\xff\xff\xff" + bytes(4)  # a zero-size root struct
    for data in (empty_root, empty_struct):
        expected = run_capnp(corpus_092, conversion, data, "TestDefaults", ("--quiet",))
        assert expected[0] == 0, expected[2]
        got = run_cara(test_capnp, conversion, data, "TestDefaults", quiet=True)
        assert got == (0, expected[1], "")


# ---------------------------------------------------------------------------- robustness

FUZZ_ROUNDS = 2000 if LONG else 150


@pytest.mark.parametrize(("conversion", "name"), [
    ("binary:text", "binary"), ("packed:json", "packed"), ("binary:canonical", "segmented"),
    ("flat:binary", "flat"), ("text:binary", "short.txt"), ("json:canonical", "short.json"),
    ("binary:msgpack", "binary"), ("flat-packed:packed", "packedflat"),
])
def test_mangled_input_fails_cleanly(test_capnp: Schema, corpus_092: Path, conversion: str,
                                     name: str) -> None:
    """Random byte edits, cuts and splices: every run ends with status 0 or 1, never with an
    uncaught exception (IndexError, struct.error, RecursionError ...)."""
    rng = random.Random(f"{conversion}-{name}")
    original = corpus_file(corpus_092, name)
    for _ in range(FUZZ_ROUNDS):
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(data)) if data else 0
            if op < 0.6 and data:
                data[pos] = rng.randrange(256)
            elif op < 0.8:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        status, _out, err = run_cara(test_capnp, conversion, bytes(data), quiet=True)
        assert status in (0, 1), err
        if status:
            assert err.startswith("cara convert: ")
