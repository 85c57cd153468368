"""Instructions per echo call (both ends in one process), counted by callgrind: repeatable on
a busy machine where wall-clock figures are not.

Usage::

    python benchmarks/_rpc_instructions.py [--wire tcp|capnp] [--mode sequential|concurrent|chain]

Runs this script's ``--child`` (``_profile_rpc.py``'s echo, unprofiled) twice under
``valgrind --tool=callgrind``, with 1,000 and 3,000 echo calls (``--mode chain``: 300 and 900
pipelined calculator chains) after the same warm-up, and prints the difference per call
(chain), so start-up, imports and schema loading cancel out. The figures in
docs/benchmarks.md ("Where the time goes") come from it. Not a benchmark
(``run.py`` runs only ``bench_*.py``); needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _callgrind import instructions


def child(wire: str, mode: str, calls: int) -> None:
    """The measured run: _profile_rpc.py's echo (its warm-up, then ``calls`` calls)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _profile_rpc import run

    asyncio.run(run(wire, mode, calls, None))


def count(wire: str, mode: str, calls: int) -> int:
    return instructions(__file__, "--child", "--wire", wire, "--mode", mode, "--calls", str(calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wire", choices=("tcp", "capnp"), default="tcp")
    parser.add_argument("--mode", choices=("sequential", "concurrent", "chain"),
                        default="concurrent")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.wire, args.mode, args.calls)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    n = 300 if args.mode == "chain" else 1000
    low, high = count(args.wire, args.mode, n), count(args.wire, args.mode, 3 * n)
    what = "pipelined chain" if args.mode == "chain" else "echo call"
    print(f"{args.wire} {args.mode}: {(high - low) // (2 * n):,} instructions per {what} "
          "(both ends)")


if __name__ == "__main__":
    main()
