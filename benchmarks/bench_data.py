"""Data-model benchmark: cara against pycapnp, plain msgpack and msgspec, in one process.

The round trip timed for every contender is the same: build a ``Person`` (anchors/person.capnp:
three scalars, two phone numbers with an enum, a union member), serialize it, parse it back and
read every field. Ratios are printed against pycapnp and msgspec; the targets are cara <= 0.25x
pycapnp and <= 5x msgspec. Run: ``python benchmarks/bench_data.py [--n N]``.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PERSON_CAPNP = """@0xd3a8a8f4c2b1e001;
struct Person {
  id @0 :UInt32;
  name @1 :Text;
  email @2 :Text;
  phones @3 :List(PhoneNumber);
  struct PhoneNumber {
    number @0 :Text;
    type @1 :Type;
    enum Type { mobile @0; home @1; work @2; }
  }
  employment :union {
    unemployed @4 :Void;
    employer @5 :Text;
    school @6 :Text;
    selfEmployed @7 :Void;
  }
}
"""


try:
    import msgspec
except ImportError:  # pragma: no cover - optional peer
    msgspec = None


class PT(enum.IntEnum):
    mobile = 0
    home = 1
    work = 2


if msgspec is not None:
    class Phone(msgspec.Struct, array_like=True):
        number: str
        type: PT

    class MPerson(msgspec.Struct, array_like=True, omit_defaults=True):
        id: int
        name: str
        email: str
        phones: list[Phone]
        employer: str | None = None


#: CPU time of this process: on a shared machine, wall-clock time also counts the moments the
#: process was not running, which is noise that differs between contenders.
clock = time.process_time


def timeit(fn: Callable[[], Any], n: int) -> float:
    """Best of 5 runs of ``n`` calls, in microseconds (CPU time) per call."""
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = clock()
        for _ in range(n):
            fn()
        best = min(best, (clock() - t0) / n * 1e6)
    return best


def interleaved(contenders: dict[str, Callable[[], Any]], n: int, rounds: int = 7
                ) -> dict[str, float]:
    """Best time per call of each contender, measured in alternating rounds so that a busy
    machine slows all of them alike (the ratios are what matters)."""
    best = {name: float("inf") for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = clock()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (clock() - t0) / n * 1e6)
    return best


def load_cara(tmp: str) -> Any:
    try:
        from cara.schema import compile_string  # type: ignore[attr-defined]

        request = compile_string(PERSON_CAPNP, "person.capnp")
    except Exception:
        from tests.support.reference import reference_request

        Path(tmp, "person.capnp").write_text(PERSON_CAPNP)
        request = reference_request(["person.capnp"], cwd=tmp)
    from cara.runtime import build_module

    return build_module(request, register=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mod = load_cara(tmp)
        Person = mod.Person

        def cara_round() -> Any:
            p = Person.Create(id=123, name="Alice", email="alice@example.com",
                              phones=[{"number": "555-1212", "type": "mobile"},
                                      {"number": "555-9999", "type": "work"}],
                              employment={"employer": "Acme"})
            b = msgpack.packb(p)
            q = Person(msgpack.unpackb(b, strict_map_key=False))
            e = q.employment
            return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                    e.employer)

        sample = Person.Create(id=123, name="Alice", email="alice@example.com",
                               phones=[{"number": "555-1212", "type": "mobile"},
                                       {"number": "555-9999", "type": "work"}],
                               employment={"employer": "Acme"})
        packed = msgpack.packb(sample)
        results["cara create"] = timeit(lambda: Person.Create(
            id=123, name="Alice", email="alice@example.com",
            phones=[{"number": "555-1212", "type": "mobile"},
                    {"number": "555-9999", "type": "work"}],
            employment={"employer": "Acme"}), n)
        results["cara packb"] = timeit(lambda: msgpack.packb(sample), n)
        results["cara unpackb+S()"] = timeit(
            lambda: Person(msgpack.unpackb(packed, strict_map_key=False)), n)
        q = Person(msgpack.unpackb(packed, strict_map_key=False))
        results["cara read all"] = timeit(lambda: (
            q.id, q.name, q.email, [(x.number, x.type) for x in q.phones],
            q.employment.which(), q.employment.employer), n)
        contenders: dict[str, Callable[[], Any]] = {"cara round trip": cara_round}

        try:
            import capnp  # type: ignore[import-untyped]

            Path(tmp, "person.capnp").write_text(PERSON_CAPNP)
            schema = capnp.load(os.path.join(tmp, "person.capnp"))

            def pycapnp_round() -> Any:
                p = schema.Person.new_message(id=123, name="Alice", email="alice@example.com")
                ph = p.init("phones", 2)
                ph[0].number = "555-1212"
                ph[0].type = "mobile"
                ph[1].number = "555-9999"
                ph[1].type = "work"
                p.employment.employer = "Acme"
                b = p.to_bytes()
                with schema.Person.from_bytes(b) as r:
                    return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                            r.employment.which(), r.employment.employer)

            contenders["pycapnp round trip"] = pycapnp_round
        except ImportError:
            print("pycapnp not installed: skipped")

        d = {0: 123, 1: "Alice", 2: "alice@example.com",
             3: [{0: "555-1212", 1: 0}, {0: "555-9999", 1: 2}], 4: {1: "Acme"}}

        def msgpack_round() -> Any:
            b = msgpack.packb(d)
            r = msgpack.unpackb(b, strict_map_key=False)
            return (r[0], r[1], r[2], [(x[0], x[1]) for x in r[3]], r[4][1])

        contenders["msgpack dict round trip (floor)"] = msgpack_round

        if msgspec is not None:
            enc = msgspec.msgpack.Encoder()
            dec = msgspec.msgpack.Decoder(MPerson)

            def msgspec_round() -> Any:
                b = enc.encode(MPerson(123, "Alice", "alice@example.com",
                                       [Phone("555-1212", PT.mobile), Phone("555-9999", PT.work)],
                                       "Acme"))
                r = dec.decode(b)
                return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                        r.employer)

            contenders["msgspec round trip"] = msgspec_round
        else:
            print("msgspec not installed: skipped")

        results.update(interleaved(contenders, max(1, n // 4)))

    for name, us in results.items():
        print(f"{name:36s} {us:8.2f} us")
    cara = results["cara round trip"]
    if "pycapnp round trip" in results:
        print(f"cara / pycapnp = {cara / results['pycapnp round trip']:.3f}  (target <= 0.25)")
    if "msgspec round trip" in results:
        print(f"cara / msgspec = {cara / results['msgspec round trip']:.2f}  (target <= 5)")
    print(f"cara / msgpack floor = {cara / results['msgpack dict round trip (floor)']:.2f}")


if __name__ == "__main__":
    main()
