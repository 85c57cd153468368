"""Instructions per call of the data benchmark's msgpack round trip and its parts, counted by
callgrind: repeatable on a busy machine where the CPU-time figures move with the load.

Usage::

    python benchmarks/_data_instructions.py [PART ...]

PART is one of round, packb-round, create, to-msgpack, from-msgpack, read, msgspec, and the
Cap'n Proto binary rows bytes-build (``Person.Create(...).to_bytes()``) and bytes-read
(``Person.from_bytes(b)`` and reading every field) (default: all). Each is run twice under
``valgrind --tool=callgrind`` (this script's ``--child``), with 2,000 and 6,000 calls after
the same warm-up, and the difference per call is printed, so
start-up, imports and building the classes cancel out (each call still includes the loop's own
few hundred instructions). With ``CARA_PURE_PYTHON=1`` in the environment the cara parts run
pure Python. The instruction table of docs/benchmarks.md's data section comes from it. Not a
benchmark (``run.py`` runs only ``bench_*.py``); needs valgrind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _callgrind import instructions

PARTS = ("round", "packb-round", "create", "to-msgpack", "from-msgpack", "read", "msgspec",
         "bytes-build", "bytes-read")


def functions() -> dict[str, Callable[[], Any]]:
    """What each part calls: the same calls as bench_data.py's contenders."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_data
    import msgpack

    person = bench_data.load_cara(tempfile.mkdtemp(prefix="cara-instructions-")).Person
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def create() -> Any:
        return person.Create(id=123, name="Alice", email="alice@example.com",
                             phones=[{"number": "555-1212", "type": "mobile"},
                                     {"number": "555-9999", "type": "work"}],
                             employment={"employer": "Acme"})

    def read_all(q: Any) -> Any:
        e = q.employment
        return (q.id, q.name, q.email, [(x.number, x.type) for x in q.phones], e.which(),
                e.employer)

    sample = create()
    packed = sample.to_msgpack()
    decoded = person.from_msgpack(packed)
    blob = sample.to_bytes()
    parts: dict[str, Callable[[], Any]] = {
        "round": lambda: read_all(person.from_msgpack(create().to_msgpack())),
        "packb-round": lambda: read_all(person(unpackb(packb(create()), strict_map_key=False))),
        "create": create,
        "to-msgpack": sample.to_msgpack,
        "from-msgpack": lambda: person.from_msgpack(packed),
        "read": lambda: read_all(decoded),
        "bytes-build": lambda: create().to_bytes(),
        "bytes-read": lambda: read_all(person.from_bytes(blob)),
    }
    if bench_data.msgspec is not None:
        enc = bench_data.msgspec.msgpack.Encoder()
        dec = bench_data.msgspec.msgpack.Decoder(bench_data.MPerson)
        phone, pt = bench_data.Phone, bench_data.PT

        def msgspec_round() -> Any:
            b = enc.encode(bench_data.MPerson(123, "Alice", "alice@example.com",
                                              [phone("555-1212", pt.mobile),
                                               phone("555-9999", pt.work)], "Acme"))
            r = dec.decode(b)
            return (r.id, r.name, r.email, [(x.number, x.type) for x in r.phones], r.employer)

        parts["msgspec"] = msgspec_round
    return parts


def child(part: str, calls: int) -> None:
    fn = functions()[part]
    for _ in range(500):  # warm up (generated code, specialization)
        fn()
    for _ in range(calls):
        fn()


def count(part: str, calls: int) -> int:
    return instructions(__file__, "--child", part, "--calls", str(calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help=", ".join(PARTS))
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}; have: {', '.join(PARTS)}")
    if args.child:
        child(args.parts[0], args.calls)
        return
    args.parts = args.parts or list(PARTS)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    for part in args.parts:
        low, high = count(part, 2000), count(part, 6000)
        print(f"{part}: {(high - low) // 4000:,} instructions per call", flush=True)


if __name__ == "__main__":
    main()
