"""The README's main job (``bash dev.sh demo``) runs end to end and checks itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def test_demo_runs_every_step() -> None:
    proc = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "msgpack.packb(m) = b'\\x81\\x00\\xb3some different text'" in out
    assert "client: the server's lambda returned 'internal callback'" in out
    assert out.rstrip().endswith("All steps passed.")
