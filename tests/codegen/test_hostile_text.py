"""Schema text an attacker controls cannot make cara write a broken module (issue 16): a NUL byte
(or another control character) in a doc comment, which capnp accepts, is written as an escape;
every generated file is compiled before it is handed out; a NUL in an import or embed path is
an ordinary diagnostic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cara
from cara.codegen import _check_compiles, generate
from cara.errors import SchemaError
from cara.schema import compile_string
from tests.codegen.test_generate import REPO, assert_ok, run_python
from tests.support.reference import reference_request, require_capnp

HOSTILE = (
    "@0xd3a8a8f4c2b1e0a5;\n"
    "# file \0 doc \r\x0c\x7f \\ \"\"\"\n"
    "struct B { # com\0ment \"q\" \\\\ \x01\n"
    "  x @0 :UInt32; # x\0y\n"
    "}\n"
    "enum E { a @0; # e\0\x1b\n}\n"
    "interface I { m @0 () -> (); # m\0\n}\n"
)
DOCS = {"B": "com\0ment \"q\" \\\\ \x01", "E": None}


def test_capnp_accepts_the_comments(tmp_path: Path) -> None:
    require_capnp()
    (tmp_path / "nul.capnp").write_bytes(HOSTILE.encode())
    request = reference_request(["nul.capnp"], cwd=tmp_path)
    for relative, text in generate(request).items():
        ast.parse(text, relative)


def test_generated_files_compile_and_keep_the_text(tmp_path: Path) -> None:
    request = compile_string(HOSTILE, name="nul.capnp")
    files = generate(request)
    for relative, text in files.items():
        assert "\0" not in text
        ast.parse(text, relative)
    module = cara.loads(HOSTILE, name="nul.capnp")
    assert module.B.__doc__.strip() == DOCS["B"]
    assert "file \0 doc \r\x0c\x7f \\ \"\"\"" in (module.__doc__ or "")


def test_cara_compile_writes_importable_modules(tmp_path: Path) -> None:
    (tmp_path / "nul.capnp").write_bytes(HOSTILE.encode())
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-m", "cara", "compile", "-ocara:out", "nul.capnp"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    code = "import nul_capnp as m\nprint('imported', repr(m.B.__doc__.strip()))"
    assert_ok(run_python(code, tmp_path / "out"), "imported")


def test_a_broken_generated_file_fails_the_run() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        _check_compiles("x_capnp.py", "x = '\0'\n")
    with pytest.raises(ValueError, match="does not compile"):
        _check_compiles("x_capnp.pyi", "def (:\n")


@pytest.mark.parametrize("statement", ['using import "a\0b.capnp".A;',
                                       'const x :Data = embed "a\0b";'])
def test_nul_in_an_import_path_is_a_diagnostic(statement: str) -> None:
    with pytest.raises(SchemaError) as info:
        compile_string(f"@0xd3a8a8f4c2b1e0a4;\n{statement}\n", name="nulimp.capnp")
    text = "\n".join(info.value.diagnostics)
    assert "nulimp.capnp:2:" in text and "internal" not in text
