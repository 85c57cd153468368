"""Compiling test.capnp (with its imports) with ``cara compile``, beside ``capnp compile``.

The schema is the corpus's ``capnp/test.capnp`` (it imports ``c++.capnp`` and
``/capnp/stream.capnp``), compiled from ``c++/src`` with ``-I. --no-standard-import``. Rows:

* cold, a fresh process each time (best wall time of several runs, after one warm-up):
  ``capnp compile -o-``, ``python -c pass`` (the floor of any Python row), the ``cara``
  console script and ``python -m cara`` running ``compile -o-`` (compile + encode the
  request), the compiler alone (import + ``compile()``, no request written) and ``python -m
  cara compile -ocara:DIR`` (compile + generate the Python modules);
* in-process: ``cara.schema.compile()`` timed inside a fresh interpreter (its first call:
  nothing compiled or cached yet, modules already imported) and a second, warm call.

The goal is the cold ``cara compile -o-`` command <= 8x ``capnp compile -o-``. Wall times on a
shared machine are noisy, so when ``valgrind`` is installed the section also counts the
instructions each command executes (``valgrind --tool=callgrind``: the same count on a loaded
machine as on a quiet one; ``CARA_BENCH_CALLGRIND=0`` skips it). With ``CARA_BENCH_PROFILE=1``
the section also lists the functions where an in-process compile spends its time (cProfile,
by own time).

Run: ``.venv/bin/python benchmarks/bench_compile.py`` (needs ``capnp`` and the corpus; set
``CARA_CORPUS`` if it is not at ../shared/corpus).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import _timing
from _timing import REPO, SRC

RUNS = _timing.runs(7)
GOAL = 8.0
FLAGS = ["-I.", "--no-standard-import"]
SOURCE = "capnp/test.capnp"

IN_PROCESS = """
import json, sys, time
import cara.schema, cara.schema.compiler  # imports are not part of the compile time
args = dict(import_path=["."], no_standard_import=True)
start = time.perf_counter()
cara.schema.compile([{source!r}], **args)
cold = time.perf_counter() - start
start = time.perf_counter()
cara.schema.compile([{source!r}], **args)
warm = time.perf_counter() - start
json.dump({{"cold": cold * 1000, "warm": warm * 1000}}, sys.stdout)
"""

PROFILE = """
import cProfile, pstats, io
import cara.schema, cara.schema.compiler
profile = cProfile.Profile()
profile.enable()
cara.schema.compile([{source!r}], import_path=["."], no_standard_import=True)
profile.disable()
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
print(out.getvalue())
"""


def best_of(cmd: list[str], cwd: Path, env: dict[str, str]) -> float | str:
    """Best wall time in ms of ``RUNS`` fresh runs (after a warm-up), or why it failed."""
    try:
        return _timing.best_of(cmd, cwd, env, RUNS)
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode(errors="replace").strip().splitlines()
        return f"fails (exit {exc.returncode}): {lines[-1] if lines else ''}"


def instructions(cmd: list[str], cwd: Path, env: dict[str, str]) -> int | None:
    """Instructions ``cmd`` executes (valgrind's callgrind count), None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    proc = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
                          cwd=cwd, env={**env, "PWD": str(cwd)}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if found else None


def main() -> str:
    capnp = shutil.which("capnp")
    if capnp is None or not (SRC / SOURCE).is_file():
        return "## compile\n\nskipped: needs `capnp` and the corpus (capnproto-0.9.2)\n"
    with _timing.scratch_dir("cara-bench-compile-") as work:
        return _measure(capnp, work)


def _measure(capnp: str, work: Path) -> str:
    env = _timing.child_env(work, PWD=str(SRC), PYTHONPATH=str(REPO))
    py = sys.executable
    # The console script installed beside this interpreter (``pip install`` puts it there).
    script = Path(py).parent / "cara"
    cara = str(script) if script.is_file() else shutil.which("cara")
    out = work / "out"
    out.mkdir()
    rows: dict[str, float | str] = {
        "capnp compile -o-": best_of([capnp, "compile", *FLAGS, "-o-", SOURCE], SRC, env),
        "python -c pass": best_of([py, "-c", "pass"], SRC, env),
        "cara compile -o-": (best_of([cara, "compile", *FLAGS, "-o-", SOURCE], SRC, env)
                             if cara else "the cara console script is not installed"),
        "python -m cara compile -o-": best_of(
            [py, "-m", "cara", "compile", *FLAGS, "-o-", SOURCE], SRC, env),
        "python: import cara.schema + compile() only": best_of(
            [py, "-c", f"import cara.schema; cara.schema.compile([{SOURCE!r}], "
             "import_path=['.'], no_standard_import=True)"], SRC, env),
        "python -m cara compile -ocara:DIR": best_of(
            [py, "-m", "cara", "compile", *FLAGS, f"-ocara:{out}", SOURCE], SRC, env),
    }
    cold = warm = float("inf")
    for _ in range(max(3, RUNS // 2)):
        proc = subprocess.run([py, "-c", IN_PROCESS.format(source=SOURCE)], cwd=SRC, env=env,
                              capture_output=True, text=True, check=True)
        times = json.loads(proc.stdout)
        cold, warm = min(cold, times["cold"]), min(warm, times["warm"])
    rows["cara.schema.compile() in-process, first call"] = cold
    rows["cara.schema.compile() in-process, second call"] = warm
    base = rows["capnp compile -o-"]
    assert isinstance(base, float)
    lines = [f"## compile: {SOURCE} and its imports", "",
             "| what | best ms | / capnp compile |", "|---|---:|---:|"]
    for name, ms in rows.items():
        if isinstance(ms, str):
            lines.append(f"| {name} | {ms} | |")
        else:
            lines.append(f"| {name} | {ms:.1f} | {ms / base:.1f}x |")
    lines.append("")
    what = "cara compile -o-"
    cli = rows[what]
    if isinstance(cli, str):
        what = "python -m cara compile -o-"
        cli = rows[what]
    if isinstance(cli, float):
        ratio = cli / base
        lines.append(f"ratio (cold {what} / capnp compile -o-): {ratio:.1f}x "
                     f"(goal <= {GOAL:.0f}x{'' if ratio <= GOAL else ': not met'})")
    if os.environ.get("CARA_BENCH_CALLGRIND", "1") != "0" and shutil.which("valgrind"):
        lines += _instruction_rows(capnp, cara, py, env)
    if os.environ.get("CARA_BENCH_PROFILE"):
        proc = subprocess.run([py, "-c", PROFILE.format(source=SOURCE)], cwd=SRC, env=env,
                              capture_output=True, text=True, check=True)
        lines += ["", "Hot spots of one in-process compile (cProfile, by own time):", "",
                  "```", proc.stdout.strip(), "```"]
    lines.append("")
    return "\n".join(lines)


def _instruction_rows(capnp: str, cara: str | None, py: str, env: dict[str, str]) -> list[str]:
    """Instruction counts (each command already ran, so Python's bytecode cache is warm)."""
    rows = {"capnp compile -o-": [capnp, "compile", *FLAGS, "-o-", SOURCE],
            "python -c pass": [py, "-c", "pass"],
            "python -m cara compile -o-": [py, "-m", "cara", "compile", *FLAGS, "-o-", SOURCE]}
    if cara:
        rows["cara compile -o-"] = [cara, "compile", *FLAGS, "-o-", SOURCE]
    counts = {name: instructions(cmd, SRC, env) for name, cmd in rows.items()}
    base = counts["capnp compile -o-"]
    if not base:
        return []
    lines = ["", "Instructions executed (`valgrind --tool=callgrind`):", "",
             "| what | instructions | / capnp compile |", "|---|---:|---:|"]
    for name, count in counts.items():
        if count is not None:
            lines.append(f"| {name} | {count / 1e6:.0f} M | {count / base:.2f}x |")
    what = "cara compile -o-" if counts.get("cara compile -o-") else "python -m cara compile -o-"
    count = counts[what]
    if count is not None:
        ratio = count / base
        lines += ["", f"instruction ratio ({what} / capnp compile -o-): {ratio:.2f}x "
                      f"(goal <= {GOAL:.0f}x{'' if ratio <= GOAL else ': not met'})"]
    return lines


if __name__ == "__main__":
    print(main())
