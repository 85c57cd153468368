"""The reference testdata messages, decoded by cara and compared with pycapnp's reading of the
same files; canonical form compared with `capnp convert binary:canonical`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cara.codecs.capnp import canonical, reader
from tests.codecs.capnp_support import (
    assert_matches_pycapnp,
    corpus_codec,
    pycapnp_test_module,
    same_value,
    struct_id,
)
from tests.support.reference import require_capnp

FORMATS = [("binary", {}), ("packed", {"packed": True}), ("flat", {"flat": True}),
           ("packedflat", {"packed": True, "flat": True}), ("segmented", {}),
           ("segmented-packed", {"packed": True})]


def _data(root: Path, name: str) -> bytes:
    return (root / "c++/src/capnp/testdata" / name).read_bytes()


@pytest.mark.parametrize(("name", "options"), FORMATS)
def test_all_types_matches_pycapnp(corpus_092: Path, name: str, options: dict[str, bool]) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    mine = codec.decode(sid, _data(corpus_092, name), **options)
    mod = pycapnp_test_module(corpus_092)
    with mod.TestAllTypes.from_bytes(_data(corpus_092, "binary")) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), mine, ref)
    assert mine["textField"] == "foo"  # the check above is not vacuous
    assert len(mine["structList"]) == 3


def test_all_formats_decode_the_same(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    values = [codec.decode(sid, _data(corpus_092, n), **o) for n, o in FORMATS]
    assert all(same_value(values[0], v) for v in values[1:])


def test_lists_matches_pycapnp(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestLists")
    data = _data(corpus_092, "lists.binary")
    mine = codec.decode(sid, data)
    mod = pycapnp_test_module(corpus_092)
    with mod.TestLists.from_bytes(data) as ref:
        assert_matches_pycapnp(codec, codec.plan(sid), mine, ref)
    assert mine["list0"] and mine["int32ListList"]


@pytest.mark.parametrize("name", ["binary", "segmented", "lists.binary"])
def test_canonical_equals_capnp_convert(corpus_092: Path, name: str) -> None:
    exe = require_capnp()
    data = _data(corpus_092, name)
    ref = subprocess.run([exe, "convert", "binary:canonical"], input=data,
                         capture_output=True, check=True).stdout
    assert canonical.canonicalize(reader.read_message(data)) == ref


def test_reencode_is_byte_identical_to_libcapnp(corpus_092: Path) -> None:
    """libcapnp's initTestMessage sets fields in order; so does cara's encoder."""
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    data = _data(corpus_092, "binary")
    assert codec.encode(sid, codec.decode(sid, data)) == data


def test_encode_canonical_equals_capnp_convert(corpus_092: Path) -> None:
    exe = require_capnp()
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestLists")
    value = codec.decode(sid, _data(corpus_092, "lists.binary"))
    ours = codec.encode(sid, value)
    ref = subprocess.run([exe, "convert", "binary:canonical"], input=ours,
                         capture_output=True, check=True).stdout
    assert codec.encode(sid, value, canonical=True) == ref
