"""Framing and packing against the reference testdata files (written by libcapnp)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cara.codecs.capnp import framing, packing
from cara.errors import DecodeError

PAIRS = [("binary", "packed"), ("flat", "packedflat")]


def read_testdata(corpus_092: Path, name: str) -> bytes:
    return (corpus_092 / "c++/src/capnp/testdata" / name).read_bytes()


@pytest.mark.parametrize(("plain", "packed"), PAIRS)
def test_pack_is_byte_identical(corpus_092: Path, plain: str, packed: str) -> None:
    assert packing.pack(read_testdata(corpus_092, plain)) == read_testdata(corpus_092, packed)


@pytest.mark.parametrize(("plain", "packed"), [*PAIRS, ("segmented", "segmented-packed")])
def test_unpack_is_byte_identical(corpus_092: Path, plain: str, packed: str) -> None:
    assert packing.unpack(read_testdata(corpus_092, packed)) == read_testdata(corpus_092, plain)


def test_segmented_pack_per_segment(corpus_092: Path) -> None:
    buf, bounds = framing.read_framed(read_testdata(corpus_092, "segmented"))
    assert len(bounds) == 125
    packed = packing.pack_framed([buf[s:e] for s, e in bounds])
    assert packed == read_testdata(corpus_092, "segmented-packed")


def test_frame_roundtrip(corpus_092: Path) -> None:
    data = read_testdata(corpus_092, "segmented")
    buf, bounds = framing.read_framed(data)
    assert framing.frame_segments([buf[s:e] for s, e in bounds]) == data
    assert framing.framed_size(data) == len(data)
    assert framing.framed_size(data[:3]) is None


def test_flat_is_binary_without_table(corpus_092: Path) -> None:
    assert read_testdata(corpus_092, "binary")[8:] == read_testdata(corpus_092, "flat")
    buf, bounds = framing.read_flat(read_testdata(corpus_092, "flat"))
    assert bounds == [(0, len(buf))]


@pytest.mark.parametrize("data", [
    b"", b"\0\0\0\0", b"\0\0\0\0\x05\0\0\0",  # empty, short, segment longer than input
    b"\xff\xff\xff\xff" + bytes(12),          # 2**32 segments
    b"\x01\0\0\0\x01\0\0\0\x01\0\0\0\0\0\0\0" + bytes(8),  # second segment truncated
    bytes(9),                                   # not word aligned
    b"\0\0\0\0\0\0\0\0",                        # empty first segment
])
def test_bad_frames_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        framing.read_framed(data)


@pytest.mark.parametrize("data", [b"\0", b"\xff\x01\x02", b"\xff" + bytes(8) + b"\x05",
                                  b"\x03\x01"])
def test_truncated_packed_raises(data: bytes) -> None:
    with pytest.raises(DecodeError):
        packing.unpack(data)


def test_unpack_size_is_bounded() -> None:
    bomb = b"\0\xff" * 1000  # 2 KB each
    with pytest.raises(DecodeError):
        packing.unpack(bomb, max_bytes=100_000)
    assert len(packing.unpack(bomb)) == 1000 * 256 * 8
