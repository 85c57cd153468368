"""``capnpc-cara`` run by the real ``capnp compile -ocara`` writes what ``cara compile -ocara``
writes.

The plugin reads capnp's own request with cara's reader; ``cara compile`` uses cara's compiler.
Identical files prove that both halves agree with the reference (and with each other), for
the schemas of the capnproto 0.9.2 tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cara.cli.main import main
from tests.support.reference import require_capnp

FLAGS = ["-I", "c++/src", "--no-standard-import", "--src-prefix=c++/src"]

FILES = [
    "c++/src/benchmark/carsales.capnp",
    "c++/src/capnp/compat/http-over-capnp.capnp",
    "c++/src/capnp/compat/json.capnp",
    "c++/src/capnp/persistent.capnp",
    "c++/src/capnp/rpc.capnp",
    "c++/src/capnp/schema.capnp",
    "c++/src/capnp/test-import2.capnp",
    "c++/src/capnp/test.capnp",
]


def plugin_path() -> Path:
    exe = Path(sys.executable).parent / "capnpc-cara"
    if not exe.exists():
        pytest.skip("capnpc-cara is not installed beside this Python (pip install -e .)")
    return exe


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def capnp_env(cwd: Path) -> dict[str, str]:
    bindir = str(plugin_path().parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PWD": str(cwd)}


@pytest.mark.parametrize("source", FILES)
def test_capnp_with_plugin_writes_what_cara_compile_writes(
        source: str, corpus_092: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capnp = require_capnp()
    theirs, ours = tmp_path / "capnp", tmp_path / "cara"
    theirs.mkdir()
    ours.mkdir()
    proc = subprocess.run([capnp, "compile", *FLAGS, f"-ocara:{theirs}", source],
                          cwd=corpus_092, env=capnp_env(corpus_092), capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(corpus_092)
    assert main(["compile", *FLAGS, f"-ocara:{ours}", source]) == 0
    expected = tree(theirs)
    assert expected, "the plugin wrote nothing"
    actual = tree(ours)
    assert sorted(actual) == sorted(expected)
    for name, data in expected.items():
        assert actual[name] == data, f"{name} differs"


def test_plugin_reads_request_from_stdin_into_cwd(corpus_092: Path, tmp_path: Path) -> None:
    capnp = require_capnp()
    request = subprocess.run([capnp, "compile", *FLAGS, "-o-", "c++/src/capnp/persistent.capnp"],
                             cwd=corpus_092, env=capnp_env(corpus_092), capture_output=True,
                             check=True).stdout
    proc = subprocess.run([str(plugin_path())], input=request, cwd=tmp_path,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(tree(tmp_path)) == ["capnp/persistent_capnp.py", "capnp/persistent_capnp.pyi"]


@pytest.mark.parametrize("junk", [b"", b"\x00" * 3, b"not a request at all, clearly"])
def test_plugin_rejects_what_is_not_a_request(junk: bytes, tmp_path: Path) -> None:
    proc = subprocess.run([str(plugin_path())], input=junk, cwd=tmp_path, capture_output=True,
                          check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"capnpc-cara: stdin is not a CodeGeneratorRequest: ")
    assert b"Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_plugin_takes_no_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([str(plugin_path()), "x.capnp"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
    assert "unexpected argument" in proc.stderr
