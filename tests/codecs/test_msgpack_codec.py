"""msgpack codec: exact bytes, schema evolution, and malformed input from the wire."""

from __future__ import annotations

import sys

import msgpack
import pytest

from cara.codecs import msgpack_codec
from cara.errors import DecodeError, EncodeError, ValueTypeError


def test_seed_bytes(s) -> None:  # type: ignore[no-untyped-def]
    m = s.MyStruct.Create(field="some different text")
    assert msgpack_codec.packb(m) == b"\x81\x00\xb3some different text"
    assert msgpack_codec.unpackb(s.MyStruct, b"\x81\x00\xb3some different text") == m


def test_person_bytes_equal_plain_dict(s) -> None:  # type: ignore[no-untyped-def]
    p = s.Person.Create(id=123, name="Alice", email="alice@example.com",
                        phones=[{"number": "555-1212", "type": "mobile"},
                                {"number": "555-9999", "type": "work"}],
                        employment={"employer": "Acme"})
    plain = {0: 123, 1: "Alice", 2: "alice@example.com",
             3: [{0: "555-1212", 1: 0}, {0: "555-9999", 1: 2}], 4: {1: "Acme"}}
    assert msgpack.packb(p) == msgpack.packb(plain)
    assert s.Person.from_msgpack(msgpack.packb(plain)) == p


def test_schema_evolution_old_reads_new(s) -> None:  # type: ignore[no-untyped-def]
    newer = {0: "x", 7: "a field this schema does not know", 9: {0: [1, 2]}}
    packed = msgpack.packb(newer)
    old = s.MyStruct(msgpack.unpackb(packed, strict_map_key=False))
    assert old.field == "x"
    assert msgpack.packb(old) == packed  # unknown numbers survive the round trip
    assert s.MyStruct.from_msgpack(packed).to_msgpack() == packed


@pytest.mark.parametrize("data", [
    b"",  # truncated
    b"\x81",  # map without its entry
    b"\xc1",  # never-used byte
    b"\x81\x00\xa3ab",  # string shorter than announced
    b"\x81\x00\xa1x\x00",  # trailing byte
    b"\xdf\xff\xff\xff\xff",  # a map claiming 4 billion entries
    b"\x91" * 2000 + b"\x90",  # absurd nesting
    b"\x81\x00\xa2\xff\xfe",  # invalid UTF-8 in a str
])
def test_malformed_bytes_are_decode_errors(s, data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError):
        msgpack_codec.unpackb(s.MyStruct, data)


@pytest.mark.parametrize(("data", "path"), [
    (msgpack.packb({0: 5}), "MyStruct.field"),
    (msgpack.packb({1: {0: "x"}}), "MyStruct.nested.integer"),
    (msgpack.packb({1: [1]}), "MyStruct.nested"),
    (msgpack.packb({1: {0: 2**40}}), "MyStruct.nested.integer"),
    (msgpack.packb([1, 2]), "MyStruct"),
    (msgpack.packb({"bogus": 1}), "MyStruct"),
    (msgpack.packb({-1: 1}), "MyStruct"),
    (msgpack.packb({1.5: 1}), "MyStruct"),
])
def test_wrong_types_from_the_wire(s, data, path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError) as info:
        msgpack_codec.unpackb(s.MyStruct, data)
    assert info.value.path == path


def test_deeply_nested_valid_msgpack_is_a_clear_error(b) -> None:  # type: ignore[no-untyped-def]
    data: dict = {}
    for _ in range(450):  # msgpack itself packs at most 512 levels
        data = {2: [data]}
    packed = msgpack.packb(data)
    # Whether 450 levels fit depends on the interpreter (its recursion limits) and on the C
    # accelerator; either way: the value unchanged, or a clear error.
    try:
        value = msgpack_codec.unpackb(b.Basic, packed)
    except (ValueTypeError, DecodeError) as e:
        assert "nested too deeply" in str(e)
    else:
        assert msgpack.packb(value) == packed


def test_nesting_beyond_the_recursion_limit_is_a_clear_error(b) -> None:  # type: ignore[no-untyped-def]
    data: dict = {}
    for _ in range(sys.getrecursionlimit() + 100):
        data = {2: [data]}
    with pytest.raises(ValueTypeError, match="nested too deeply"):
        b.Basic(data)
    with pytest.raises(ValueTypeError, match="nested too deeply"):
        b.Basic.Create(structs=[data])


def test_size_limit(s) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecodeError, match="exceeds"):
        msgpack_codec.unpackb(s.MyStruct, msgpack.packb({0: "x" * 100}), max_bytes=50)


def test_capabilities_do_not_pack(b) -> None:  # type: ignore[no-untyped-def]
    holds = b.HoldsCaps.Create(echo=lambda text: text)
    with pytest.raises(EncodeError, match="capabilities travel only over RPC"):
        msgpack_codec.packb(holds)


def test_capnp_binary_hook_agrees_with_pycapnp(s, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``to_bytes``/``from_bytes`` go through the wire codec; pycapnp reads what it writes."""
    from tests.runtime.schemas import SEED_CAPNP
    from tests.support.reference import require_pycapnp

    capnp = require_pycapnp()
    try:
        from cara.codecs import capnp as _wire  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the binary codec is not importable yet: {e}")
    p = s.Person.Create(id=123, name="Alice", phones=[{"number": "1", "type": "work"}],
                        employment={"school": "MIT"})
    (tmp_path / "person.capnp").write_text(SEED_CAPNP)
    peer = capnp.load(str(tmp_path / "person.capnp"))
    with peer.Person.from_bytes(p.to_bytes()) as r:
        assert (r.id, r.name, r.phones[0].type, r.employment.school) == (123, "Alice", "work",
                                                                          "MIT")
    theirs = peer.Person.new_message(id=7, email="e", employment={"unemployed": None})
    back = s.Person.from_bytes(theirs.to_bytes())
    assert (back.id, back.email, back.employment.which()) == (7, "e", "unemployed")
    assert s.Person.from_bytes(p.to_bytes(packed=True), packed=True).employment.school == "MIT"
