"""Run cara's benchmarks (all, or those named on the command line) and print markdown tables.

Each ``benchmarks/bench_<name>.py`` module defines ``main() -> str`` that runs its measurements
beside the peers in this process and returns a markdown section. Peers that are not installed
are reported as missing, never silently dropped.
"""

from __future__ import annotations

import datetime
import importlib.util
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The bench modules import their shared helpers (``_timing``, ``_person``) from here.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def available() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def run(name: str, path: Path) -> str:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    result: str = module.main()
    return result


def main(argv: list[str]) -> int:
    benches = available()
    wanted = argv or list(benches)
    unknown = [w for w in wanted if w not in benches]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(benches)}",
              file=sys.stderr)
        return 2
    print(f"<!-- {datetime.date.today()} · Python {platform.python_version()} · "
          f"{platform.machine()} · `python benchmarks/run.py {' '.join(argv)}`. -->\n")
    for name in wanted:
        print(run(name, benches[name]))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
