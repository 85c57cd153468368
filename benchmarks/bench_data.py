"""Data-model benchmark: cara against pycapnp, capnpy, plain msgpack and msgspec, in one process.

The round trip timed for every contender is the same: build a ``Person`` (anchors/person.capnp:
three scalars, two phone numbers with an enum, a union member), serialize it, parse it back and
read every field. cara's round trip is ``Person.Create(...).to_msgpack()``, then
``Person.from_msgpack(b)`` and reading every attribute; a second row does the same with
``msgpack.packb(person)`` and ``Person(msgpack.unpackb(b, strict_map_key=False))`` (a struct is
a dict, so msgpack itself packs it). The floor is the same round trip of the plain number-keyed
dicts with msgpack alone (what cara adds is the rest). The Cap'n Proto peers (pycapnp, capnpy)
make the same round trip in their binary format.

A second section times the Cap'n Proto binary form on its own, build + serialize and parse +
read every field, cara (with its C fast path, and pure Python) beside capnpy and pycapnp
(:func:`measure_binary`; the goal is cara <= 1.0x capnpy in both).

Method: CPU time of this process (a shared machine's other load does not count), contenders
alternated round by round, the median of the rounds reported. The goals are cara <= 0.25x
pycapnp and <= 2.0x msgspec. Run: ``python benchmarks/bench_data.py [--n N] [--rounds R]``;
``benchmarks/run.py`` calls :func:`main`, which returns the markdown section.
"""

from __future__ import annotations

import argparse
import enum
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from _person import PERSON_CAPNP, REPO, pycapnp_person_bytes

sys.path.insert(0, str(REPO))

try:
    import msgspec
except ImportError:  # pragma: no cover - optional peer
    msgspec = None  # type: ignore[assignment]


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


def interleaved(contenders: dict[str, Callable[[], Any]], n: int, rounds: int
                ) -> dict[str, float]:
    """Median time per call (microseconds of CPU time) of each contender, measured in
    alternating rounds of ``n`` calls so that a busy machine slows all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(max(1, n // 10)):  # warm up (generated code, caches)
            fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = clock()
            for _ in range(n):
                fn()
            samples[name].append((clock() - t0) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def load_cara(tmp: str, pure: bool = False) -> Any:
    """The person.capnp module; ``pure``: its classes built without the C accelerator (as
    ``CARA_PURE_PYTHON=1`` would), for a row beside the accelerated one."""
    text = PERSON_CAPNP.read_text()
    try:
        from cara.schema import compile_string

        request = compile_string(text, "person.capnp")
    except Exception:
        from tests.support.reference import reference_request

        Path(tmp, "person.capnp").write_text(text)
        request = reference_request(["person.capnp"], cwd=tmp)
    from cara.runtime import build_module

    module = build_module(request, register=False)
    group = module.Person.cara_schema.by_name["employment"].type.cls
    for cls in (module.Person, module.Person.PhoneNumber, group):
        cls._cara_prepare_(accelerate=not pure)
    return module


def measure(n: int, rounds: int) -> tuple[dict[str, float], list[str]]:
    """``({contender: median us}, [notes on missing peers])``."""
    notes: list[str] = []
    contenders: dict[str, Callable[[], Any]] = {}
    from cara.runtime import struct as struct_module

    with tempfile.TemporaryDirectory() as tmp:
        Person = load_cara(tmp).Person
        packb, unpackb = msgpack.packb, msgpack.unpackb

        def cara_create() -> Any:
            return Person.Create(id=123, name="Alice", email="alice@example.com",
                                 phones=[{"number": "555-1212", "type": "mobile"},
                                         {"number": "555-9999", "type": "work"}],
                                 employment={"employer": "Acme"})

        def cara_round() -> Any:
            b = cara_create().to_msgpack()
            q = Person.from_msgpack(b)
            e = q.employment
            return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                    e.employer)

        def cara_round_packb() -> Any:
            b = packb(cara_create())
            q = Person(unpackb(b, strict_map_key=False))
            e = q.employment
            return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                    e.employer)

        sample = cara_create()
        packed = sample.to_msgpack()
        q = Person.from_msgpack(packed)

        def cara_read() -> Any:
            e = q.employment
            return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                    e.employer)

        contenders["cara round trip"] = cara_round
        contenders["cara round trip (msgpack.packb / Person(unpackb))"] = cara_round_packb
        if struct_module.SPEEDUPS:
            pure_person = load_cara(tmp, pure=True).Person

            def pure_create() -> Any:
                return pure_person.Create(
                    id=123, name="Alice", email="alice@example.com",
                    phones=[{"number": "555-1212", "type": "mobile"},
                            {"number": "555-9999", "type": "work"}],
                    employment={"employer": "Acme"})

            def cara_round_pure() -> Any:
                q = pure_person.from_msgpack(pure_create().to_msgpack())
                e = q.employment
                return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones],
                        e.which(), e.employer)

            def cara_round_pure_packb() -> Any:
                q = pure_person(unpackb(packb(pure_create()), strict_map_key=False))
                e = q.employment
                return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones],
                        e.which(), e.employer)

            contenders["cara round trip, pure Python (no C accelerator)"] = cara_round_pure
            contenders["cara round trip (packb / unpackb), pure Python"] = cara_round_pure_packb
        else:
            notes.append("the C accelerator is not built: every cara row is pure Python")
        contenders["  cara: Person.Create(...)"] = cara_create
        contenders["  cara: person.to_msgpack()"] = sample.to_msgpack
        contenders["  cara: Person.from_msgpack(b)"] = lambda: Person.from_msgpack(packed)
        contenders["  cara: read every field"] = cara_read
        contenders["  cara: msgpack.packb(person)"] = lambda: packb(sample)
        contenders["  cara: Person(msgpack.unpackb(b))"] = lambda: Person(
            unpackb(packed, strict_map_key=False))

        try:
            import capnp

            schema = capnp.load(str(PERSON_CAPNP))

            def pycapnp_round() -> Any:
                b = pycapnp_person_bytes(schema)
                with schema.Person.from_bytes(b) as r:
                    return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                            r.employment.which(), r.employment.employer)

            contenders["pycapnp round trip"] = pycapnp_round
        except ImportError:
            notes.append("pycapnp is not installed: no pycapnp row")

        try:
            from capnpy.compiler.compiler import DynamicCompiler

            cp = DynamicCompiler([str(PERSON_CAPNP.parent)]).load_schema(
                filename=str(PERSON_CAPNP))
            phone = cp.Person.PhoneNumber

            def capnpy_round() -> Any:
                b = cp.Person(id=123, name=b"Alice", email=b"alice@example.com",
                              phones=[phone(number=b"555-1212", type=phone.Type.mobile),
                                      phone(number=b"555-9999", type=phone.Type.work)],
                              employment=cp.Person.Employment(employer=b"Acme")).dumps()
                r = cp.Person.loads(b)
                return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                        r.employment.which(), r.employment.employer)

            contenders["capnpy round trip"] = capnpy_round
        except Exception as exc:  # not installed, or cannot compile the schema (needs capnp)
            notes.append(f"capnpy is not available ({type(exc).__name__}): no capnpy row")

        d = {0: 123, 1: "Alice", 2: "alice@example.com",
             3: [{0: "555-1212", 1: 0}, {0: "555-9999", 1: 2}], 4: {1: "Acme"}}

        def msgpack_round() -> Any:
            b = packb(d)
            r = unpackb(b, strict_map_key=False)
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
            notes.append("msgspec is not installed: no msgspec row")

        return interleaved(contenders, n, rounds), notes


#: The binary rows' goal: cara <= 1.0x capnpy (issue 15).
BINARY_GOAL = 1.0


def measure_binary(n: int, rounds: int) -> tuple[dict[str, float], list[str]]:
    """The Cap'n Proto binary rows: build + serialize, and parse + read every field, for cara
    (with its C fast path, and pure Python), capnpy and pycapnp, alternated in one process.
    ``({row: median us}, [notes])``; rows are ``"<who>: build"`` and ``"<who>: read"``."""
    notes: list[str] = []
    contenders: dict[str, Callable[[], Any]] = {}
    from cara.runtime import struct as struct_module

    def cara_rows(label: str, person: Any) -> None:
        def build() -> Any:
            return person.Create(id=123, name="Alice", email="alice@example.com",
                                 phones=[{"number": "555-1212", "type": "mobile"},
                                         {"number": "555-9999", "type": "work"}],
                                 employment={"employer": "Acme"}).to_bytes()
        blob = build()

        def read() -> Any:
            q = person.from_bytes(blob)
            e = q.employment
            return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                    e.employer)
        contenders[f"{label}: build"] = build
        contenders[f"{label}: read"] = read

    with tempfile.TemporaryDirectory() as tmp:
        cara_rows("cara", load_cara(tmp).Person)
        if struct_module.SPEEDUPS:
            cara_rows("cara, pure Python", load_cara(tmp, pure=True).Person)
        else:
            notes.append("the C accelerator is not built: the cara rows are pure Python")
        try:
            from capnpy.compiler.compiler import DynamicCompiler

            cp = DynamicCompiler([str(PERSON_CAPNP.parent)]).load_schema(
                filename=str(PERSON_CAPNP))
            phone = cp.Person.PhoneNumber

            def capnpy_build() -> Any:
                return cp.Person(id=123, name=b"Alice", email=b"alice@example.com",
                                 phones=[phone(number=b"555-1212", type=phone.Type.mobile),
                                         phone(number=b"555-9999", type=phone.Type.work)],
                                 employment=cp.Person.Employment(employer=b"Acme")).dumps()
            cblob = capnpy_build()

            def capnpy_read() -> Any:
                r = cp.Person.loads(cblob)
                return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                        r.employment.which(), r.employment.employer)
            contenders["capnpy: build"] = capnpy_build
            contenders["capnpy: read"] = capnpy_read
        except Exception as exc:  # not installed, or cannot compile the schema (needs capnp)
            notes.append(f"capnpy is not available ({type(exc).__name__}): no capnpy rows")
        try:
            import capnp

            schema = capnp.load(str(PERSON_CAPNP))
            pblob = pycapnp_person_bytes(schema)

            def pycapnp_read() -> Any:
                with schema.Person.from_bytes(pblob) as r:
                    return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones],
                            r.employment.which(), r.employment.employer)
            contenders["pycapnp: build"] = lambda: pycapnp_person_bytes(schema)
            contenders["pycapnp: read"] = pycapnp_read
        except ImportError:
            notes.append("pycapnp is not installed: no pycapnp rows")
        return interleaved(contenders, n, rounds), notes


def report_binary(results: dict[str, float], notes: list[str], n: int, rounds: int) -> str:
    who = [w.removesuffix(": build") for w in results if w.endswith(": build")]
    peers = [p for p in ("capnpy", "pycapnp") if p in who]
    lines = ["## data: Person in Cap'n Proto binary (anchors/person.capnp)", "",
             f"Median of {rounds} alternating rounds of {n} calls, CPU time per call. *build*: "
             "build the Person and serialize it (cara: `Person.Create(...).to_bytes()`; "
             "capnpy: `Person(...).dumps()`; pycapnp: `new_message` + setters + `to_bytes`); "
             "*read*: parse it and read every field (cara: `Person.from_bytes(b)`).", "",
             "| who | build us | read us |"
             + "".join(f" build / {p} | read / {p} |" for p in peers),
             "|---|---:|---:|" + "---:|---:|" * len(peers)]
    for w in who:
        b, r = results[f"{w}: build"], results[f"{w}: read"]
        lines.append(f"| {w} | {b:.2f} | {r:.2f} |" + "".join(
            f" {b / results[f'{p}: build']:.2f}x | {r / results[f'{p}: read']:.2f}x |"
            for p in peers))
    lines.append("")
    if "capnpy" in peers:
        for op in ("build", "read"):
            ratio = results[f"cara: {op}"] / results[f"capnpy: {op}"]
            met = "" if ratio <= BINARY_GOAL else ": not met"
            lines.append(f"- cara {op} / capnpy = {ratio:.2f} (goal <= {BINARY_GOAL}{met})")
    lines += [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def report(results: dict[str, float], notes: list[str], n: int, rounds: int) -> str:
    cara = results["cara round trip"]
    lines = ["## data: Person round trip (anchors/person.capnp)", "",
             f"Median of {rounds} alternating rounds of {n} calls, CPU time per call.", "",
             "| what | median us | cara round trip / this |", "|---|---:|---:|"]
    for name, us in results.items():
        label = name.strip()
        if name.startswith("  "):
            lines.append(f"| &nbsp;&nbsp;{label} | {us:.2f} | |")
        else:
            lines.append(f"| {label} | {us:.2f} | {cara / us:.2f}x |")
    lines.append("")
    goals = []
    if "pycapnp round trip" in results:
        r = cara / results["pycapnp round trip"]
        goals.append(f"cara / pycapnp = {r:.2f} (goal <= 0.25{'' if r <= 0.25 else ': not met'})")
    if "msgspec round trip" in results:
        for row in results:
            if row.startswith("cara round trip"):
                r = results[row] / results["msgspec round trip"]
                goal = 2.0 if row == "cara round trip" else None
                met = "" if goal is None else f" (goal <= {goal}{'' if r <= goal else ': not met'})"
                goals.append(f"{row} / msgspec = {r:.2f}{met}")
    goals.append(f"cara / msgpack floor = {cara / results['msgpack dict round trip (floor)']:.2f}")
    lines += [f"- {g}" for g in goals] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=int(os.environ.get("CARA_BENCH_N", "2000")))
    parser.add_argument("--rounds", type=int,
                        default=int(os.environ.get("CARA_BENCH_ROUNDS", "15")))
    args = parser.parse_args(argv if argv is not None else [])
    if not PERSON_CAPNP.is_file():
        return (f"## data: Person round trip (anchors/person.capnp)\n\nskipped: "
                f"{PERSON_CAPNP} is missing (set CARA_PERSON_CAPNP)\n")
    results, notes = measure(args.n, args.rounds)
    binary, binary_notes = measure_binary(args.n, args.rounds)
    return (report(results, notes, args.n, args.rounds) + "\n"
            + report_binary(binary, binary_notes, args.n, args.rounds))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
