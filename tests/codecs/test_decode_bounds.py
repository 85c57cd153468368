"""Decoding in bounded time and memory (issue 16): the attacks themselves, at sizes that run in
seconds. Bit lists are linear in their length; lists of elements with nothing on the wire
(Void, zero-size structs) cannot make a few bytes decode into millions of objects, through any
decoder (runtime structs, plain values, lazy views, ``cara convert``)."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import cara
from cara.codecs.capnp import SchemaCodec, read_message
from cara.codecs.capnp.canonical import canonicalize
from cara.codecs.convert import convert_stream
from cara.errors import DecodeError
from tests.support.reference import require_pycapnp

SCHEMA = """@0xd3a8a8f4c2b1e0a1;
struct Empty {}
struct Holder {
  items @0 :List(Empty);
  voids @1 :List(Void);
  bools @2 :List(Bool);
}
"""


@pytest.fixture(scope="module")
def amp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("amp") / "amp.capnp"
    path.write_text(SCHEMA)
    module = cara.load(path)
    module.path = path
    return module


def _frame(*words: int) -> bytes:
    return struct.pack(f"<II{len(words)}Q", 0, len(words), *words)


def _list_ptr(offset: int, size: int, count: int) -> int:
    return (offset << 2 & 0xFFFFFFFF) | 1 | (size | count << 3) << 32


#: The audit's 32-byte messages: a Holder whose list claims 2**23 - 64 elements of nothing.
COUNT = (1 << 23) - 64
ZERO_SIZE_STRUCTS = _frame(1 << 48, _list_ptr(0, 7, 0), COUNT << 2)
VOIDS = _frame(2 << 48, 0, _list_ptr(0, 0, COUNT))


def _peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        try:
            fn()
        except DecodeError:
            pass
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _decoders(amp: Any) -> dict[str, Callable[[bytes], Any]]:
    codec = SchemaCodec(amp.Holder.cara_schema.builder.nodes)
    sid = amp.Holder.cara_schema.id

    def view(data: bytes) -> Any:
        v = codec.view(sid, data)
        return v["items"], v.voids

    def convert(data: bytes, target: str = "json") -> Any:
        values = {"quiet": True}
        out = io.BytesIO()
        status = convert_stream(values, "binary", target, [str(amp.path), "Holder"],
                                stdin=io.BytesIO(data), stdout=out, stderr=io.StringIO())
        return status, len(out.getvalue())

    return {
        "from_bytes": amp.Holder.from_bytes,
        "plain": lambda data: codec.decode(sid, data),
        "view": view,
        "canonical": lambda data: canonicalize(read_message(data)),
        "convert": convert,
        "convert-msgpack": lambda data: convert(data, "msgpack"),  # (the sparse decoder)
    }


@pytest.mark.parametrize("attack", ["zero-size structs", "voids"])
@pytest.mark.parametrize("decoder", ["from_bytes", "plain", "view", "canonical", "convert",
                                     "convert-msgpack"])
def test_amplification_is_refused_or_small(amp: Any, attack: str, decoder: str) -> None:
    data = ZERO_SIZE_STRUCTS if attack == "zero-size structs" else VOIDS
    assert len(data) == 32
    start = time.perf_counter()
    peak = _peak_mib(lambda: _decoders(amp)[decoder](data))
    assert peak < 50, f"{peak:.0f} MiB"
    assert time.perf_counter() - start < 5


def test_small_zero_size_lists_still_decode(amp: Any) -> None:
    value = amp.Holder.Create(items=[{}] * 1000, voids=[None] * 1000)
    back = amp.Holder.from_bytes(value.to_bytes())
    assert back == value and len(back["items"]) == 1000


def test_bit_lists_are_linear(amp: Any) -> None:
    """A 1 MiB List(Bool) message (8 Mi bits) decodes and encodes in well under a second each
    (it took minutes when every bit shifted one big int); the bytes are pycapnp's."""
    capnp = require_pycapnp()
    count = 1 << 23
    ref = capnp.load(str(amp.path))
    msg = ref.Holder.new_message()
    out = msg.init("bools", count)
    for i in range(0, count, 3):
        out[i] = True
    expected = [i % 3 == 0 for i in range(count)]
    data = msg.to_bytes()
    start = time.perf_counter()
    value = amp.Holder.from_bytes(data)
    assert time.perf_counter() - start < 1.0
    assert value.bools == expected
    start = time.perf_counter()
    again = value.to_bytes()
    assert time.perf_counter() - start < 1.0
    # pycapnp splits the message into two segments; the canonical forms must be equal
    assert canonicalize(read_message(again)) == canonicalize(read_message(data))


@pytest.mark.parametrize("target", ["json", "text", "msgpack"])
def test_convert_of_bit_lists_is_linear(amp: Any, target: str) -> None:
    """The audit's ``cara convert binary:json`` of a 131 KB List(Bool) message (a million bits)
    took 12 s; it takes a fraction of a second, and the text formats are ``capnp convert``'s."""
    import shutil
    import subprocess

    capnp = require_pycapnp()
    count = 131 * 1024 * 8
    msg = capnp.load(str(amp.path)).Holder.new_message()
    out = msg.init("bools", count)
    for i in range(0, count, 5):
        out[i] = True
    data = msg.to_bytes()
    values = {"quiet": True, "short": True}
    written = io.BytesIO()
    start = time.process_time()
    status = convert_stream(values, "binary", target, [str(amp.path), "Holder"],
                            stdin=io.BytesIO(data), stdout=written, stderr=io.StringIO())
    assert status == 0 and time.process_time() - start < 2.0
    if target == "msgpack":
        import msgpack

        assert msgpack.unpackb(written.getvalue(), strict_map_key=False)[2] == \
            [i % 5 == 0 for i in range(count)]
    elif shutil.which("capnp") is not None:
        reference = subprocess.run(["capnp", "convert", f"binary:{target}", "--short",
                                    amp.path.name, "Holder"], input=data, capture_output=True,
                                   cwd=amp.path.parent, check=True).stdout
        assert written.getvalue() == reference


def test_convert_refuses_an_unhashable_msgpack_key(amp: Any) -> None:
    """The fuzz's finding: a msgpack map keyed by an array escaped ``cara convert`` as a
    TypeError."""
    err = io.StringIO()
    status = convert_stream({"quiet": True}, "msgpack", "binary", [str(amp.path), "Holder"],
                            stdin=io.BytesIO(b"\x81\x91\x00\x00"), stdout=io.BytesIO(),
                            stderr=err)
    assert status == 1 and "malformed msgpack" in err.getvalue()
