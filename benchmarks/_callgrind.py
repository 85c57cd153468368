"""Instructions a Python program executes, counted by callgrind (for the ``_*_instructions.py``
scripts): a count repeats to a fraction of a percent where wall-clock time does not."""

from __future__ import annotations

import re
import subprocess
import sys


def instructions(script: str, *args: str) -> int:
    """Instructions executed by ``python script args...`` under ``valgrind --tool=callgrind``."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         script, *args],
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no count in valgrind's output:\n{out.stderr[-2000:]}")
    return int(found.group(1))
