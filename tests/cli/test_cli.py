"""The ``cara`` command mirrors ``capnp``: subcommands, option spellings, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.reference import require_capnp


def run_cara(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cara", *args], input=stdin.decode(),
                          capture_output=True, text=True)


def long_options(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w\S*, )?(--[\w-]+)", help_text, re.M))


@pytest.mark.parametrize("command", ["compile", "convert"])
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
    wanted = {m for m in re.findall(r"^  (\w+)  ", theirs, re.M)} - {"decode", "encode"}
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
