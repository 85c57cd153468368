"""The long fuzz mode of issue 16: mutated inputs against the schema compiler, the binary, msgpack
and JSON decoders and ``cara convert``, each input held to three rules:

* only cara's own exceptions (:class:`cara.errors.CaraError`) come out, never IndexError,
  RecursionError, struct.error, MemoryError...;
* no input takes more than ``PER_INPUT_SECONDS`` of CPU time (no hang; generous for loaded
  machines; CPU time, since a process niced on a busy machine can wait longer than that for
  the processor);
* no input makes Python allocate more than ``PEAK_BYTES`` at once (measured with tracemalloc,
  at the default limits: 8 Mi-word traversal budget, nesting 64).

What a decoder accepts is then fed to every other codec (``to_bytes``/``from_bytes``,
``to_json``/``from_json``, msgpack, ``deepcopy``, ``to_dict``): nothing one codec accepts may
crash another. The default run is small (a few hundred inputs per target, seconds);
``CARA_LONG=1`` runs 100,000 inputs per target (tens of minutes).
"""

from __future__ import annotations

import copy
import io
import os
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cara
from cara.codecs.convert import convert_stream
from cara.errors import CaraError
from cara.schema import compile_string
from tests.conftest import LONG

#: Inputs per target (CARA_LONG=1: the issue's 100,000; CARA_FUZZ_INPUTS sets any number).
INPUTS = int(os.environ.get("CARA_FUZZ_INPUTS") or (100_000 if LONG else 300))
PER_INPUT_SECONDS = 10.0
#: Decoded values larger than this (as binary) skip the cross-codec round trips.
CROSS_CHECK_BYTES = 256 * 1024
#: Peak memory one input may allocate (the bound SECURITY.md states).
PEAK_BYTES = 64 * 2**20
#: The long run goes on after a failure, up to this many per target.
MAX_FAILURES = 50

SCHEMA = """@0xd3a8a8f4c2b1e0f1;
struct Empty {}
struct All {
  b @0 :Bool;
  i8 @1 :Int8;
  u16 @2 :UInt16;
  i32 @3 :Int32 = -7;
  u64 @4 :UInt64;
  f32 @5 :Float32;
  f64 @6 :Float64 = 1.5;
  t @7 :Text;
  d @8 :Data;
  e @9 :Color;
  child @10 :All;
  kids @11 :List(All);
  bools @12 :List(Bool);
  ints @13 :List(Int64);
  texts @14 :List(Text);
  nested @15 :List(List(UInt8));
  voids @16 :List(Void);
  empties @17 :List(Empty);
  colors @18 :List(Color);
  any @19 :AnyPointer;
  union {
    none @20 :Void;
    num @21 :UInt32;
    name @22 :Text;
    grp :group { x @23 :Int16; y @24 :List(Float32); }
  }
  g :group { inner @25 :All; flag @26 :Bool; }
}
enum Color { red @0; green @1; blue @2; }
"""


#: A newer version of ``All``: a new union member, new data and pointer fields (its messages
#: decode into values of ``All`` that keep unknown data, which msgpack then carries).
NEWER_SCHEMA = SCHEMA.replace("@0xd3a8a8f4c2b1e0f1;", "@0xd3a8a8f4c2b1e0f2;").replace(
    "    grp :group { x @23 :Int16; y @24 :List(Float32); }\n",
    "    grp :group { x @23 :Int16; y @24 :List(Float32); }\n    added @27 :List(All);\n"
).replace("  g :group { inner @25 :All; flag @26 :Bool; }\n",
          "  g :group { inner @25 :All; flag @26 :Bool; }\n  big @28 :UInt64;\n"
          "  note @29 :Text;\n  more @30 :List(All);\n")


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "fuzz.capnp"
    path.write_text(SCHEMA)
    (tmp / "fuzz_newer.capnp").write_text(NEWER_SCHEMA)
    module = cara.load(path)
    module.path = path
    module.newer = cara.load(tmp / "fuzz_newer.capnp")
    return module


def _seed_values(m: Any) -> list[Any]:
    leaf = m.All.Create(b=True, i8=-3, t="leaf", d=b"\x00\xff", e="blue", num=9)
    full = m.All.Create(
        u16=513, i32=70000, u64=2**63, f32=0.5, f64=-0.0, t="héllo", d=b"data",
        child=leaf, kids=[leaf, {"name": "k"}], bools=[True, False, True] * 5,
        ints=[-1, 2**40], texts=["a", "", "ccc"], nested=[[1, 2], [], [255]],
        voids=[None] * 3, empties=[{}, {}], colors=["red", "blue"],
        grp={"x": -2, "y": [1.0, 2.5]}, g={"inner": leaf, "flag": True})
    deep = leaf
    for _ in range(20):
        deep = m.All.Create(child=deep, kids=[leaf], g={"inner": leaf})
    newer = m.newer.All
    kept = newer.Create(t="newer", big=7, note="n", more=[{"t": "m", "added": [{}]}],
                        added=[{"i8": 1}], child={"added": [], "big": 1}, kids=[{"note": "k"}])
    # decoded by the older schema: values that keep unknown data (also through msgpack)
    return [m.All.Create(), leaf, full, deep, m.All.from_bytes(kept.to_bytes())]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(out) + 1)
        if op < 0.55 and out:
            out[min(pos, len(out) - 1)] = rng.choice(
                (0, 0xFF, 0x7F, 0x80, 1, 7, rng.randrange(256)))
        elif op < 0.7:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op < 0.85 and out:
            del out[pos:pos + rng.randint(1, 8)]
        else:
            out[pos:pos] = out[max(0, pos - 16):pos]  # repeat a stretch (nesting, counts)
    if rng.random() < 0.1:
        del out[rng.randrange(len(out) + 1):]
    return bytes(out)


def _json_seeds(values: list[Any]) -> list[bytes]:
    """The values as JSON, where they have a JSON form (not an unknown union member)."""
    out = []
    for v in values:
        try:
            out.append(v.to_json().encode())
        except CaraError:
            pass
    return out


def _every_other_codec(m: Any, value: Any) -> None:
    """What one decoder accepted must not crash the others (refusing is fine). Values that
    are large once decoded (packed input unpacks up to the traversal limit) are only
    re-encoded: writing JSON, which spells out every field of every struct, is bounded by the
    traversal limit too but takes seconds for a few hundred thousand structs."""
    try:
        size = len(value.to_bytes())
    except CaraError:
        size = 0
    if size > CROSS_CHECK_BYTES:
        return
    copy.deepcopy(value)
    value.to_dict()
    for attempt in (lambda: m.All.from_bytes(value.to_bytes()),
                    lambda: m.All.from_json(value.to_json()),
                    lambda: m.All.from_msgpack(value.to_msgpack())):
        try:
            attempt()
        except CaraError:
            pass


def _run(inputs: Callable[[random.Random], bytes], target: Callable[[bytes], Any],
         label: str) -> None:
    """Feed ``INPUTS`` inputs to ``target``. The default run stops at the first broken rule;
    the long run goes on (up to ``MAX_FAILURES`` per target), so that one run finds them all,
    and reports what it measured (``CARA_FUZZ_REPORT=file`` appends it there too)."""
    rng = random.Random(16)
    if LONG:
        rng.seed()  # a different run each time in long mode; the failure prints the input
    failures: list[str] = []
    worst_time = worst_peak = 0.0
    began = time.perf_counter()
    tracemalloc.start()
    try:
        for _ in range(INPUTS):
            data = inputs(rng)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            start = time.process_time()  # (CPU time: a loaded machine stalls the wall clock)
            problem = ""
            try:
                target(data)
            except CaraError:
                pass
            except Exception as exc:  # pragma: no cover - the failure is the report
                problem = f"{label}: {type(exc).__name__}: {exc} for input {_show(data)}"
                if not LONG:
                    raise AssertionError(problem) from exc
            took = time.process_time() - start
            peak = tracemalloc.get_traced_memory()[1] - base
            worst_time, worst_peak = max(worst_time, took), max(worst_peak, peak)
            if not problem and took >= PER_INPUT_SECONDS:
                problem = f"{label}: {took:.1f} s for input {_show(data)}"
            if not problem and peak >= PEAK_BYTES:
                problem = f"{label}: {peak / 2**20:.0f} MiB for {_show(data)}"
            if problem:
                failures.append(problem)
                assert LONG and len(failures) < MAX_FAILURES, "\n".join(failures)
    finally:
        tracemalloc.stop()
    summary = (f"{label}: {INPUTS} inputs in {time.perf_counter() - began:.0f} s, "
               f"{len(failures)} failures, slowest input {worst_time:.2f} s CPU, "
               f"largest peak {worst_peak / 2**20:.1f} MiB")
    print(summary)
    report = os.environ.get("CARA_FUZZ_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(summary + "\n" + "".join(f"  {f}\n" for f in failures))
    assert not failures, "\n".join(failures)


def _show(data: bytes) -> str:
    """The input for a failure message: whole when short, else its hex in a file."""
    if len(data) <= 400:
        return repr(data)
    path = Path(tempfile.gettempdir()) / f"cara-fuzz-{hash(data) & 0xFFFFFFFF:08x}.bin"
    path.write_bytes(data)
    return f"of {len(data)} bytes, written to {path}"


def _from_seeds(seeds: list[bytes]) -> Callable[[random.Random], bytes]:
    return lambda rng: _mutate(rng, rng.choice(seeds))


def test_fuzz_binary(schema: Any) -> None:
    seeds = [v.to_bytes() for v in _seed_values(schema)]
    seeds += [v.to_bytes(packed=True) for v in _seed_values(schema)]

    def target(data: bytes) -> None:
        for packed in (False, True):
            try:
                value = schema.All.from_bytes(data, packed=packed)
            except CaraError:
                continue
            _every_other_codec(schema, value)
    _run(_from_seeds(seeds), target, "binary")


def test_fuzz_msgpack(schema: Any) -> None:
    seeds = [v.to_msgpack() for v in _seed_values(schema)]

    def target(data: bytes) -> None:
        _every_other_codec(schema, schema.All.from_msgpack(data))
    _run(_from_seeds(seeds), target, "msgpack")


def test_fuzz_json(schema: Any) -> None:
    seeds = _json_seeds(_seed_values(schema))

    def target(data: bytes) -> None:
        _every_other_codec(schema, schema.All.from_json(data))
    _run(_from_seeds(seeds), target, "json")


CONVERSIONS = ["binary:json", "binary:text", "binary:packed", "packed:binary", "json:binary",
               "binary:canonical", "msgpack:binary", "binary:msgpack", "flat:json"]


def test_fuzz_convert(schema: Any) -> None:
    values = _seed_values(schema)
    by_format = {
        "binary": [v.to_bytes() for v in values],
        "packed": [v.to_bytes(packed=True) for v in values],
        "json": _json_seeds(values),
        "msgpack": [v.to_msgpack() for v in values],
        "flat": [v.to_bytes()[8:] for v in values],
    }
    options = {"quiet": True, "import_path": [], "no_standard_import": False}
    pick: list[str] = []

    def inputs(rng: random.Random) -> bytes:
        conversion = rng.choice(CONVERSIONS)
        pick[:] = [conversion]
        return _mutate(rng, rng.choice(by_format[conversion.split(":")[0]]))

    def target(data: bytes) -> None:
        source, target_format = pick[0].split(":")
        err = io.StringIO()
        status = convert_stream(options, source, target_format, [str(schema.path), "All"],
                                stdin=io.BytesIO(data), stdout=io.BytesIO(), stderr=err)
        assert status == 0 or err.getvalue(), "a failed conversion must say why"
    _run(inputs, target, "convert")


def _schema_seeds() -> list[bytes]:
    seeds = [SCHEMA.encode()]
    corpus = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
    for name in ("capnproto-0.9.2/c++/src/capnp/test.capnp",
                 "capnproto-0.9.2/c++/samples/addressbook.capnp",
                 "capnproto-0.9.2/c++/samples/calculator.capnp"):
        path = corpus / name
        if path.is_file():
            seeds.append(path.read_bytes()[:6000])
    return seeds


def test_fuzz_schema_compiler() -> None:
    seeds = _schema_seeds()

    def target(data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        compile_string(text, name="fuzz.capnp")
    _run(_from_seeds(seeds), target, "schema compiler")
