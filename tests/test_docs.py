"""Every example in docs/ runs and prints what the page says (see tests/support/docs_runner.py).

The pages compare cara with the reference tools in places (``capnp``, pycapnp), so they need
both; without them the test skips with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.reference import require_capnp, require_pycapnp

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "benchmarks.md")
RUNNER = REPO / "tests" / "support" / "docs_runner.py"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    require_capnp()
    require_pycapnp()
    env = dict(os.environ, CARA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(RUNNER), str(page)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
