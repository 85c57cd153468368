"""Lazy views (attribute access) over the reference messages, compared with pycapnp."""

from __future__ import annotations

from pathlib import Path

import pytest

from cara.errors import DecodeError
from tests.codecs.capnp_support import (
    assert_matches_pycapnp,
    corpus_codec,
    pycapnp_test_module,
    struct_id,
)


def test_view_reads_like_pycapnp(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    data = (corpus_092 / "c++/src/capnp/testdata/binary").read_bytes()
    view = codec.view(sid, data)
    with pycapnp_test_module(corpus_092).TestAllTypes.from_bytes(data) as ref:
        assert view.int64Field == ref.int64Field
        assert view.textField == ref.textField
        assert view.structField.structField.textField == ref.structField.structField.textField
        assert [s.textField for s in view.structList] == [s.textField for s in ref.structList]
        assert view.float64List[:3] == list(ref.float64List)[:3]
        assert view.enumList == [int(e.raw) for e in ref.enumList]
        assert_matches_pycapnp(codec, codec.plan(sid), view.to_dict(), ref)
    with pytest.raises(AttributeError):
        _ = view.noSuchField


def test_view_union_and_groups(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestGroups")
    cls = pycapnp_test_module(corpus_092).TestGroups
    data = cls.new_message(groups={"bar": {"corge": 23, "grault": "barbaz",
                                           "garply": 234}}).to_bytes()
    view = codec.view(sid, data)
    assert view.groups.which() == "bar"
    assert view.groups.bar.grault == "barbaz" and view.groups.bar.garply == 234


def test_view_charges_traversal_per_access(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    data = (corpus_092 / "c++/src/capnp/testdata/binary").read_bytes()
    view = codec.view(sid, data, traversal_limit_in_words=200)
    with pytest.raises(DecodeError, match="traversal"):
        for _ in range(100):
            _ = view.structField.textField
