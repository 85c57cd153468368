"""The main job of the README's quick start: the seed's examples, end to end.

Run with ``bash dev.sh demo``. Each step prints what it does and checks its own result, so a
broken step stops the demo with an error instead of printing something wrong.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def step(title: str) -> None:
    print(f"\n== {title}")


def main() -> int:
    import cara

    step(f"cara {cara.__version__}: the command line")
    out = subprocess.run([sys.executable, "-m", "cara", "--help"], capture_output=True,
                         text=True, check=True)
    print(out.stdout.splitlines()[0])
    print("\nThe schema compiler, data model and RPC steps are added as they land.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
