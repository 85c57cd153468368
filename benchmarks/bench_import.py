"""Importing a schema module in a fresh process, beside the reference compiler compiling it.

The schema is the corpus's ``test.capnp`` (252 nodes). Each row is the best wall time of
several fresh subprocesses:

* ``capnp compile -o-`` of test.capnp (the C++ reference compiler; output discarded);
* ``python -c pass`` (interpreter start-up, the floor for any Python row);
* ``import test_capnp`` through the import hook, from cara's cache (the goal: <= 2x capnp);
* ``import test_capnp`` of the module ``cara compile -ocara`` wrote (Python's .pyc cache on);
* the first import through the hook with an empty cache (cara's compiler runs).

Python's bytecode cache is enabled for the children (``PYTHONDONTWRITEBYTECODE`` removed,
``.pyc`` files in a temporary ``PYTHONPYCACHEPREFIX``), as in a normal installation.

Run: ``.venv/bin/python benchmarks/bench_import.py`` (needs ``capnp`` and the corpus; set
``CARA_CORPUS`` if it is not at ../shared/corpus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _timing
from _timing import REPO, SRC

RUNS = _timing.runs(15)


def best_of(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    return _timing.best_of(cmd, cwd, env, RUNS)


def main() -> str:
    capnp = shutil.which("capnp")
    if capnp is None or not (SRC / "capnp" / "test.capnp").is_file():
        return "## import\n\nskipped: needs `capnp` and the corpus (capnproto-0.9.2)\n"
    with _timing.scratch_dir("cara-bench-import-") as work:
        return _measure(capnp, work)


def _measure(capnp: str, work: Path) -> str:
    # test.capnp imports "c++.capnp" beside it, and /capnp/stream.capnp imports
    # "/capnp/c++.capnp": lay the files out as an import root so both are the same file.
    include = work / "include"
    schema_dir = include / "capnp"
    schema_dir.mkdir(parents=True)
    for name in ("test.capnp", "c++.capnp", "stream.capnp"):
        shutil.copy(SRC / "capnp" / name, schema_dir)
    shutil.copytree(SRC / "capnp" / "testdata", schema_dir / "testdata")
    generated = work / "generated"
    generated.mkdir()
    env = _timing.child_env(work, CARA_CACHE_DIR=str(work / "cache"),
                            PYTHONPATH=os.pathsep.join([str(REPO), str(include)]))
    py = sys.executable
    flags = [f"-I{include}", "--no-standard-import"]
    subprocess.run([py, "-m", "cara", "compile", *flags, f"-ocara:{generated}", "test.capnp"],
                   cwd=schema_dir, env=env, check=True)
    hook = ("import cara.importer; cara.importer.install_import_hook(); import test_capnp; "
            "assert test_capnp.TestAllTypes")
    rows = {
        "capnp compile -o- test.capnp": best_of(
            [capnp, "compile", *flags, "-o-", "test.capnp"],
            schema_dir, env),
        "python -c pass": best_of([py, "-c", "pass"], schema_dir, env),
        "import test_capnp (hook, cached)": best_of([py, "-c", hook], schema_dir, env),
        "import test_capnp (generated .py)": best_of(
            [py, "-c", "import test_capnp; assert test_capnp.TestAllTypes"], generated, env),
    }
    cold = float("inf")
    for i in range(3):
        cold_env = {**env, "CARA_CACHE_DIR": str(work / f"cold-{i}")}
        start = time.perf_counter()
        subprocess.run([py, "-c", hook], cwd=schema_dir, env=cold_env, check=True)
        cold = min(cold, (time.perf_counter() - start) * 1000)
    rows["import test_capnp (hook, empty cache)"] = cold
    # The import statement alone, timed inside a running interpreter (start-up excluded):
    # first with nothing of cara imported (the hook is installed inside the timed part), then
    # with cara's runtime already imported (what one more schema module costs).
    timed = ("import time; {pre}t = time.perf_counter(); {hook}import test_capnp; "
             "assert test_capnp.TestAllTypes; print((time.perf_counter() - t) * 1000)")
    hook = "import cara.importer; cara.importer.install_import_hook(); "
    rows["in-process: import test_capnp (hook, cached), cara not imported yet"] = _in_process(
        py, timed.format(pre="", hook=hook), schema_dir, env)
    rows["in-process: import test_capnp (hook, cached), cara's runtime imported"] = _in_process(
        py, timed.format(pre=hook + "import cara.runtime.build, cara.codegen.rebuild; ",
                         hook=""), schema_dir, env)
    base = rows["capnp compile -o- test.capnp"]
    lines = ["## import: test.capnp in a fresh process", "",
             "| what | best ms | / capnp compile |", "|---|---:|---:|"]
    for name, ms in rows.items():
        lines.append(f"| {name} | {ms:.1f} | {ms / base:.2f}x |")
    ratio = rows["import test_capnp (hook, cached)"] / base
    start = rows["python -c pass"] / base
    lines += ["", f"ratio (hook import from cache / capnp compile): {ratio:.2f} "
              f"(goal <= 2.00{'' if ratio <= 2 else ': not met'}; interpreter start-up alone "
              f"is {start:.2f}x)", ""]
    return "\n".join(lines)


def _in_process(py: str, code: str, cwd: Path, env: dict[str, str]) -> float:
    """Best of the times (ms) that ``code`` prints, each in a fresh interpreter."""
    best = float("inf")
    for _ in range(RUNS + 1):
        out = subprocess.run([py, "-c", code], cwd=cwd, env=env, check=True,
                             capture_output=True, text=True).stdout
        best = min(best, float(out.strip().splitlines()[-1]))
    return best


if __name__ == "__main__":
    print(main())
