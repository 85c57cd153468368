"""Malformed messages end in DecodeError with a byte offset, nothing else; plus a hypothesis
fuzz over mutated reference messages and random bytes (CARA_LONG=1: 100,000 inputs)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.codecs.capnp import canonical, reader
from cara.errors import DecodeError
from tests.codecs.capnp_support import corpus_codec, struct_id
from tests.conftest import LONG


def _frame(*words: int) -> bytes:
    return struct.pack(f"<II{len(words)}Q", 0, len(words), *words)


def _struct_ptr(offset: int, data: int, ptrs: int) -> int:
    return (offset << 2 & 0xFFFFFFFF) | data << 32 | ptrs << 48


def _list_ptr(offset: int, size: int, count: int) -> int:
    return (offset << 2 & 0xFFFFFFFF) | 1 | (size | count << 3) << 32


def _walk(data: bytes, **limits: int) -> None:
    msg = reader.read_message(data, **limits)
    canonical.canonicalize(msg)


MALFORMED = {
    "struct past the end": _frame(_struct_ptr(0, 4, 0)),
    "negative offset before segment": _frame(_struct_ptr(-5, 1, 0)),
    "list past the end": _frame(_list_ptr(0, 5, 10)),
    "composite list tag lies": _frame(_list_ptr(0, 7, 1), _struct_ptr(5, 1, 0), 0),
    "far pointer to missing segment": _frame(2 | 7 << 32),
    "far landing pad out of segment": _frame(2 | (100 << 3)),
    "double far pad not far": _frame(6 | (0 << 3), 0),
    "self-referencing struct": _frame(_struct_ptr(0, 0, 1), _struct_ptr(-1, 0, 1)),
}


def test_capability_where_struct_expected(corpus_092: Path) -> None:
    codec = corpus_codec(corpus_092)
    with pytest.raises(DecodeError, match="struct pointer") as info:
        codec.decode(struct_id(corpus_092, "TestAllTypes"), _frame(3))
    assert info.value.offset == 8


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raise_decode_error_with_offset(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        _walk(data)
    assert info.value.offset is not None


def test_pointer_cycle_stops_at_nesting_limit() -> None:
    # a struct whose only pointer points at itself
    data = _frame(_struct_ptr(0, 0, 1), _struct_ptr(-1, 0, 1))
    with pytest.raises(DecodeError, match=r"nesting|traversal"):
        _walk(data, nesting_limit=1000, traversal_limit_in_words=1_000_000)


def test_zero_size_list_amplification_is_charged() -> None:
    # 2**29 - 1 void elements in a 2-word message
    data = _frame(_list_ptr(0, 0, (1 << 29) - 1))
    with pytest.raises(DecodeError, match="traversal"):
        _walk(data)
    # same for a composite list of zero-size structs
    data = _frame(_list_ptr(0, 7, 0), ((1 << 29) - 1) << 2)
    with pytest.raises(DecodeError, match="traversal"):
        _walk(data)


def test_traversal_limit_is_configurable(corpus_092: Path) -> None:
    data = (corpus_092 / "c++/src/capnp/testdata/binary").read_bytes()
    _walk(data)
    with pytest.raises(DecodeError, match="traversal"):
        _walk(data, traversal_limit_in_words=100)


def test_evolution_smaller_and_larger_structs(corpus_092: Path) -> None:
    """A struct written with fewer/more words than the schema reads as defaults/ignores."""
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    # only the first data word: boolField is bit 0, int8Field byte 1 (capnp compile -ocapnp)
    small = _frame(_struct_ptr(0, 1, 0), 0x7B << 8 | 1)
    value = codec.decode(sid, small)
    assert value["int8Field"] == 123 and value["int64Field"] == 0
    assert value["textField"] is None and value["boolField"] is True
    plan = codec.plan(sid)
    big = _frame(_struct_ptr(0, plan.data_words + 3, plan.pointer_count + 2),
                 *([0] * (plan.data_words + plan.pointer_count + 5)))
    assert codec.decode(sid, big)["int32Field"] == 0


# ------------------------------------------------------------------------------ fuzzing

FUZZ_EXAMPLES = 100_000 if LONG else 2_000
#: The fuzz decodes with a 1 Mi-word traversal budget: a mutated count can legitimately ask
#: for as many zero-size structs as the budget allows (each charged one word, as the spec
#: says), and at the default 8 Mi words that is seconds of honest work on a loaded machine.
#: With the smaller budget one decode stays far below the bound, so exceeding it means a hang
#: or a loop the budget does not cover.
FUZZ_TRAVERSAL_LIMIT = 1 << 20
PER_INPUT_SECONDS = 5.0
SOURCES = ["binary", "segmented", "lists.binary", "flat"]


def _decode_everything(root: Path, data: bytes) -> None:
    codec = corpus_codec(root)
    sids = [struct_id(root, "TestAllTypes"), struct_id(root, "TestLists")]
    for options in ({}, {"flat": True}, {"packed": True}):
        for sid in sids:
            start = time.perf_counter()
            try:
                codec.decode(sid, data, traversal_limit_in_words=FUZZ_TRAVERSAL_LIMIT,
                             **options)
            except DecodeError:
                pass
            assert time.perf_counter() - start < PER_INPUT_SECONDS
        try:
            canonical.canonicalize(reader.read_message(
                data, traversal_limit_in_words=FUZZ_TRAVERSAL_LIMIT, **options))
        except DecodeError:
            pass


@pytest.mark.slow
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(source=st.sampled_from(SOURCES), edits=st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4000)))
def test_fuzz_mutated_reference_messages(corpus_092: Path, source: str,
                                         edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray((corpus_092 / "c++/src/capnp/testdata" / source).read_bytes())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    if cut is not None:
        data = data[:cut]
    _decode_everything(corpus_092, bytes(data))


@pytest.mark.slow
@settings(max_examples=FUZZ_EXAMPLES // 4, deadline=None, derandomize=not LONG,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes(corpus_092: Path, data: bytes) -> None:
    _decode_everything(corpus_092, data)


def test_zero_size_struct_list_cannot_amplify_decoding(corpus_092: Path) -> None:
    """A 4-word message claiming 8 Mi - 1 zero-size structs: within libcapnp's traversal
    budget as words, but decoding each into a dict must be charged at the schema's size."""
    codec = corpus_codec(corpus_092)
    sid = struct_id(corpus_092, "TestAllTypes")
    plan = codec.plan(sid)
    index = next(f.pointer for f in plan.fields if f.name == "structList")
    words = [_struct_ptr(0, plan.data_words, plan.pointer_count)]
    words += [0] * plan.data_words
    ptrs = [0] * plan.pointer_count
    # list pointer at pointer `index`, pointing right after the struct: tag word only
    ptrs[index] = _list_ptr(plan.pointer_count - index - 1, 7, 0)
    words += [*ptrs, ((1 << 23) - 1) << 2]
    data = _frame(*words)
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="traversal"):
        codec.decode(sid, data)
    with pytest.raises(DecodeError, match="traversal"):
        _ = codec.view(sid, data).structList
    assert time.perf_counter() - start < 1.0
