"""Timing helpers the benchmarks share: where the corpus is, fresh-process timing, scratch dirs.

Not a benchmark itself (``run.py`` only runs ``bench_*.py``); the bench modules import it as
``_timing`` (``run.py`` and running a bench as a script both put this directory on sys.path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("CARA_CORPUS", REPO.parent / "shared" / "corpus"))
#: The C++ sources of the corpus's capnproto 0.9.2 (``capnp/test.capnp`` and its imports).
SRC = CORPUS / "capnproto-0.9.2" / "c++" / "src"


def runs(default: int) -> int:
    """How many timed runs a row takes: ``CARA_BENCH_RUNS``, else the bench's ``default``."""
    return int(os.environ.get("CARA_BENCH_RUNS", str(default)))


def best_of(cmd: list[str], cwd: Path, env: dict[str, str], runs: int) -> float:
    """Best wall time in milliseconds of ``runs`` fresh runs of ``cmd`` (after one warm-up).

    A failing warm-up raises :class:`subprocess.CalledProcessError` carrying its stderr.
    """
    env = {**env, "PWD": str(cwd)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(cmd, cwd=cwd, env=env, check=True, **quiet)  # type: ignore[call-overload]
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, **quiet)  # type: ignore[call-overload]
        best = min(best, time.perf_counter() - start)
    return best * 1000


def child_env(work: Path, **extra: str) -> dict[str, str]:
    """This process's environment for timed children, with Python's bytecode cache on (as in a
    normal installation) and kept in ``work``; ``extra`` variables added."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(work / "pycache"), **extra)
    return env


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
