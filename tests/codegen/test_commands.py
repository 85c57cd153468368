"""``cara compile -ocara`` and ``capnp compile -ocara`` (the real capnp running the
``capnpc-cara`` plugin) write modules that pass the seed's examples in a fresh process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.codegen.test_generate import (
    BLOCK_COMPILER,
    SEED_CHECK,
    SEED_SCHEMA,
    assert_ok,
    run_python,
)
from tests.support.reference import require_capnp

BIN = Path(sys.executable).parent


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_structs.capnp").write_text(SEED_SCHEMA)
    (tmp_path / "out").mkdir()
    return tmp_path


def test_cara_compile_ocara(seed_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cara", "compile", "-ocara:out",
                           "my_structs.capnp"], cwd=seed_dir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (seed_dir / "out").iterdir()) == [
        "my_structs_capnp.py", "my_structs_capnp.pyi"]
    (seed_dir / "my_structs.capnp").unlink()
    assert_ok(run_python(BLOCK_COMPILER + SEED_CHECK, seed_dir / "out"), "seed ok")


def test_cara_compile_is_deterministic(seed_dir: Path) -> None:
    (seed_dir / "again").mkdir()
    for out in ("out", "again"):
        subprocess.run([sys.executable, "-m", "cara", "compile", f"-ocara:{out}",
                        "my_structs.capnp"], cwd=seed_dir, check=True)
    for name in ("my_structs_capnp.py", "my_structs_capnp.pyi"):
        assert (seed_dir / "out" / name).read_bytes() == (seed_dir / "again" / name).read_bytes()


def test_capnp_compile_ocara_runs_the_plugin(seed_dir: Path) -> None:
    capnp = require_capnp()
    plugin = shutil.which("capnpc-cara", path=str(BIN))
    if plugin is None:
        pytest.skip(f"capnpc-cara is not installed in {BIN} (pip install -e .)")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([capnp, "compile", "-ocara:out", "my_structs.capnp"], cwd=seed_dir,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (seed_dir / "my_structs.capnp").unlink()
    assert_ok(run_python(BLOCK_COMPILER + SEED_CHECK, seed_dir / "out"), "seed ok")
