"""The ``cara`` command mirrors ``capnp``: subcommands, option spellings, exit codes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cara.cli.main import main
from tests.support.reference import require_capnp


def run_cara(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cara", *args], input=stdin.decode(),
                          capture_output=True, text=True)


def long_options(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w\S*, )?(--[\w-]+)", help_text, re.M))


@pytest.mark.parametrize("command", ["compile", "convert", "decode"])
def test_subcommand_options_mirror_capnp(command: str) -> None:
    capnp = require_capnp()
    theirs = subprocess.run([capnp, command, "--help"], capture_output=True, text=True).stdout
    ours = run_cara(command, "--help")
    assert ours.returncode == 0
    assert long_options(theirs) <= long_options(ours.stdout), long_options(theirs) - long_options(
        ours.stdout)
    assert ours.stdout.startswith(f"Usage: cara {command} ")


def test_top_level_commands_cover_capnp() -> None:
    capnp = require_capnp()
    theirs = subprocess.run([capnp, "--help"], capture_output=True, text=True).stdout
    wanted = {m for m in re.findall(r"^  (\w+)  ", theirs, re.M)} - {"encode"}
    ours = run_cara("--help").stdout
    assert wanted <= set(re.findall(r"^  (\w+)  ", ours, re.M))


def test_unknown_command_exits_1_with_capnp_wording() -> None:
    out = run_cara("frobnicate")
    assert out.returncode == 1
    assert out.stderr == (
        "cara: frobnicate: unknown command\nTry 'cara --help' for more information.\n"
    )


def test_unknown_option_names_it() -> None:
    out = run_cara("compile", "--frob")
    assert out.returncode == 1
    assert "--frob: unrecognized option" in out.stderr
    assert "Traceback" not in out.stderr


def test_compile_without_sources_is_usage_error() -> None:
    out = run_cara("compile")
    assert out.returncode == 1
    assert "missing argument <source>" in out.stderr  # capnp's wording


def test_convert_rejects_unknown_format() -> None:
    out = run_cara("convert", "binary:yaml")
    assert out.returncode == 1
    assert "binary:yaml" in out.stderr


def test_help_subcommand_is_subcommand_help() -> None:
    assert run_cara("help", "compile").stdout == run_cara("compile", "--help").stdout


def test_plugin_help() -> None:
    out = subprocess.run([sys.executable, "-m", "cara.cli.plugin", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "capnp compile -ocara" in out.stdout


# ------------------------------------------------------------------------- decode, as capnp's

_FLAGS = ["-I..", "--no-standard-import"]


Outcome = tuple[int, bytes, str]


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch,
         capfdbinary: pytest.CaptureFixture[bytes]) -> Callable[..., tuple[Outcome, Outcome]]:
    """``both(*args, cwd=, stdin=)``: (status, stdout, stderr) of ``capnp <args>`` and of
    ``cara <args>`` (run in this process, for speed), capnp's program name in its messages
    replaced by cara's."""
    capnp = require_capnp()

    def run(*args: str, cwd: Path, stdin: bytes = b"") -> tuple[Outcome, Outcome]:
        env = {**os.environ, "PWD": str(cwd)}
        # argv[0] "capnp": capnp names itself by it in messages.
        ref = subprocess.run(["capnp", *args], executable=capnp, cwd=cwd, input=stdin,
                             capture_output=True, env=env)
        theirs = re.sub(r"(?<![\w./])capnp(?=[ :])", "cara", ref.stderr.decode())
        capfdbinary.readouterr()
        with monkeypatch.context() as m:
            m.chdir(cwd)
            m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            code = main(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = capfdbinary.readouterr()
        return (ref.returncode, ref.stdout, theirs), (code, out, err.decode())

    return run


@pytest.mark.parametrize("options, data", [
    ([], "binary"), (["--short"], "binary"), (["-p"], "packed"), (["--packed"], "packed"),
    (["--flat"], "flat"), (["--flat", "-p"], "packedflat"), (["--short", "--flat"], "flat"),
    (["--quiet"], "segmented"), (["-p"], "segmented-packed"),
])
def test_decode_same_text_as_capnp(corpus_092: Path, options: list[str], data: str,
                                   both: Callable[..., tuple[Outcome, Outcome]]) -> None:
    cwd = corpus_092 / "c++/src/capnp"
    stdin = (cwd / "testdata" / data).read_bytes() * 2  # a stream of two messages
    theirs, ours = both("decode", *_FLAGS, *options, "test.capnp", "TestAllTypes",
                        cwd=cwd, stdin=stdin)
    assert theirs[0] == 0 and theirs[1]
    assert ours == theirs


@pytest.mark.parametrize("args, data", [
    (["test.capnp", "TestAllTypes"], b"garbage\n"),
    (["test.capnp", "TestAllTypes"], "packed"),
    (["-p", "test.capnp", "TestAllTypes"], "binary"),
    (["test.capnp"], "binary"),
    ([], "binary"),
    (["test.capnp", "TestAllTypes", "x"], "binary"),
    (["nope.capnp", "X"], "binary"),
    (["test.capnp", "TestEnum"], "binary"),
    (["--frob", "test.capnp", "TestAllTypes"], "binary"),
])
def test_decode_errors_as_capnp(corpus_092: Path, args: list[str], data: bytes | str,
                                both: Callable[..., tuple[Outcome, Outcome]]) -> None:
    cwd = corpus_092 / "c++/src/capnp"
    stdin = data if isinstance(data, bytes) else (cwd / "testdata" / data).read_bytes()
    theirs, ours = both("decode", *_FLAGS, *args, cwd=cwd, stdin=stdin)
    assert theirs[0] == 1
    assert ours == theirs


# ------------------------------------------------------------- options before the command

_LIB = "@0xd508eebdc2dc42b9;\nstruct S { a @0 :Int8; }\n"
_MAIN = "@0xd508eebdc2dc42ba;\nstruct M { s @0 :import \"/lib.capnp\".S; }\n"


@pytest.mark.parametrize("args", [
    ["-Ilib", "compile", "-o-", "m.capnp"],
    ["-I", "lib", "compile", "-o-", "m.capnp"],
    ["--import-path=lib", "--no-standard-import", "compile", "-o-", "m.capnp"],
    ["--import-path", "lib", "--verbose", "compile", "-o-", "m.capnp"],
    ["-Ilib", "compile", "--no-standard-import", "-Inope2", "-o-", "m.capnp"],
    ["--no-standard-import", "compile", "-o-", "m.capnp"],
    ["-Inope", "compile", "-o-", "m.capnp"],
    ["--import-path=nope", "compile", "-o-", "m.capnp"],
    ["-I"],
    ["-Ilib"],
    ["-x", "compile"],
    ["--frob", "id"],
])
def test_options_before_the_command_as_capnp(
        tmp_path: Path, args: list[str], both: Callable[..., tuple[Outcome, Outcome]]) -> None:
    """capnp's subcommands share the options given before them (-I, --no-standard-import,
    --verbose)."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/lib.capnp").write_text(_LIB)
    (tmp_path / "m.capnp").write_text(_MAIN)
    theirs, ours = both(*args, cwd=tmp_path)
    assert ours == theirs


def test_options_before_id_and_help_are_accepted() -> None:
    assert run_cara("-I.", "--verbose", "id").returncode == 0
    assert run_cara("-I.", "help", "compile").stdout == run_cara("compile", "--help").stdout
