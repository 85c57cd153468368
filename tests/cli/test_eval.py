"""``cara eval`` prints and encodes what ``capnp eval`` 0.9.2 prints and encodes.

Every case runs both tools on the same schema and name and compares stdout, stderr (with the
program name swapped) and the exit status byte for byte: constants of every type from
capnproto's test.capnp, struct-field defaults, paths into values (``a.b[1].c``), generic
constants, every output format, and the error messages for names that cannot be evaluated.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cara.cli import commands
from cara.cli.main import main
from tests.support.reference import require_capnp

TEST_CAPNP = "capnp/test.capnp"
FLAGS = ["-I.", "--no-standard-import"]

CONSTANTS = [
    "globalInt", "globalText", "globalStruct", "globalPrintableStruct", "derivedConstant",
    "genericConstant", "embeddedData", "embeddedText", "embeddedStruct", "nonAsciiText",
    "TestConstants.voidConst", "TestConstants.boolConst", "TestConstants.int8Const",
    "TestConstants.int16Const", "TestConstants.int32Const", "TestConstants.int64Const",
    "TestConstants.uint8Const", "TestConstants.uint16Const", "TestConstants.uint32Const",
    "TestConstants.uint64Const", "TestConstants.float32Const", "TestConstants.float64Const",
    "TestConstants.textConst", "TestConstants.dataConst", "TestConstants.structConst",
    "TestConstants.enumConst", "TestConstants.voidListConst", "TestConstants.boolListConst",
    "TestConstants.int8ListConst", "TestConstants.uint64ListConst",
    "TestConstants.float32ListConst", "TestConstants.float64ListConst",
    "TestConstants.textListConst", "TestConstants.dataListConst",
    "TestConstants.structListConst", "TestConstants.enumListConst",
]
PATHS = [
    "TestDefaults.int32Field", "TestDefaults.textField", "TestDefaults.structField",
    "TestDefaults.structField.structField", "TestDefaults.textList", "TestDefaults.structList",
    "TestDefaults.interfaceField", "globalStruct.int32Field", "TestConstants.structListConst[1]",
    "TestConstants.structListConst[1].textField", "TestConstants.int8ListConst[1]",
    "TestGroups.groups", "TestGroups.groups.foo.corge", "TestUnion.union0", "TestUnion.union1",
    "TestUnionDefaults.s16s8s64s8Set", "TestUnionDefaults.s0sps1s32Set",
    "TestUnionDefaults.unnamed1", "TestUnionDefaults.unnamed2",
    "TestUseGenerics.default", "TestUseGenerics.defaultInner", "TestUseGenerics.defaultUser",
    "TestUseGenerics.defaultWrapper", "TestUseGenerics.defaultWrapper2",
    "TestAnyPointerConstants.anyKindAsStruct",
]
ERRORS = [
    "nosuch", "TestDefaults", "TestEnum", "TestEnum.foo", "globalInt.x", "globalStruct.nosuch",
    "globalStruct[0]", "TestDefaults[1]", "TestConstants.int8ListConst[5]",
    "TestConstants.int8ListConst[1][2]", "globalStruct.int32Field[0]", "a..b", "1x", "a.",
    ".a", "TestImport.field",
]
STRUCTS = [
    "globalStruct", "derivedConstant", "genericConstant", "embeddedStruct",
    "TestConstants.structConst", "TestDefaults.structField", "TestConstants.structListConst[1]",
    "TestGroups.groups", "TestUnion.union0", "TestUseGenerics.default",
    "TestUnionDefaults.unnamed2", "globalInt",
    "anyPointerConstants",
]
BINARY_FORMATS = [["-b"], ["-p"], ["--flat"], ["-p", "--flat"], ["-ocanonical"], ["-ojson"],
                  ["-ojson", "--short"], ["-oflat-packed"]]


@dataclasses.dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes


@functools.cache
def reference(src: str, args: tuple[str, ...]) -> Run:
    proc = subprocess.run(["capnp", "eval", *args], executable=require_capnp(), cwd=src,
                          env={**os.environ, "PWD": src}, capture_output=True, check=False)
    return Run(proc.returncode, proc.stdout,
               proc.stderr.replace(b"capnp eval", b"cara eval"))


@pytest.fixture
def cara(monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]) -> Any:
    """``cara eval`` in this process; the schema is compiled once per test session."""
    compiled: dict[tuple[str, ...], Any] = _CACHE
    original = commands._compile_request

    def cached(values: dict[str, Any], sources: list[str]) -> Any:
        key = (os.getcwd(), *sources, *values["import_path"], str(values["no_standard_import"]))
        if key not in compiled:
            compiled[key] = original(values, sources)
        return compiled[key]

    monkeypatch.setattr(commands, "_compile_request", cached)

    def run(src: str, args: tuple[str, ...]) -> Run:
        capfdbinary.readouterr()
        with monkeypatch.context() as m:
            m.chdir(src)
            code = main(["eval", *args])
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = capfdbinary.readouterr()
        return Run(code, out, err)

    return run


_CACHE: dict[tuple[str, ...], Any] = {}


@pytest.fixture(scope="module")
def src(corpus_092: Path) -> str:
    require_capnp()
    return str(corpus_092 / "c++" / "src")


def check(cara: Any, src: str, *args: str) -> None:
    expected = reference(src, args)
    actual = cara(src, args)
    theirs = expected.stderr.decode(errors="replace")
    if theirs.startswith("*** Uncaught exception ***"):
        # capnp crashes here (e.g. JSON of an AnyPointer); cara must fail cleanly for the
        # same reason: an error line that carries capnp's message, no traceback, exit 1.
        reason = re.search(r"failed: ([^;\n]+)", theirs)
        assert reason is not None, theirs
        ours = actual.stderr.decode(errors="replace")
        assert actual.returncode == 1 and "Traceback" not in ours
        assert reason.group(1) in ours, (reason.group(1), ours)
        return
    assert actual.stderr.decode(errors="replace") == theirs
    assert actual.stdout == expected.stdout
    assert actual.returncode == expected.returncode


@pytest.mark.parametrize("short", [False, True], ids=["pretty", "short"])
@pytest.mark.parametrize("name", CONSTANTS + PATHS)
def test_text_output_matches_capnp(name: str, short: bool, src: str, cara: Any) -> None:
    check(cara, src, *FLAGS, *(["--short"] if short else []), TEST_CAPNP, name)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_match_capnp(name: str, src: str, cara: Any) -> None:
    check(cara, src, *FLAGS, TEST_CAPNP, name)


@pytest.mark.parametrize("fmt", BINARY_FORMATS, ids=lambda f: "".join(f))
@pytest.mark.parametrize("name", STRUCTS)
def test_encoded_output_matches_capnp(name: str, fmt: list[str], src: str, cara: Any) -> None:
    check(cara, src, *FLAGS, *fmt, TEST_CAPNP, name)


@pytest.mark.parametrize("args", [
    [], [TEST_CAPNP], ["nofile.capnp", "x"], ["-ofoo", TEST_CAPNP, "globalInt"],
    ["-b", "-p", TEST_CAPNP, "globalStruct"], ["-p", "-b", TEST_CAPNP, "globalStruct"],
    ["--flat", "-b", TEST_CAPNP, "globalStruct"], ["-I", "nodir", TEST_CAPNP, "globalInt"],
    ["--src-prefix=x", TEST_CAPNP, "globalInt"], ["-otext", TEST_CAPNP, "globalInt"],
], ids=lambda a: " ".join(a) or "none")
def test_usage_matches_capnp(args: list[str], src: str, cara: Any) -> None:
    flags = [] if args and args[0] == "-I" else FLAGS
    check(cara, src, *flags, *args)


def test_broken_schema_reports_diagnostics(tmp_path: Path, cara: Any) -> None:
    (tmp_path / "bad.capnp").write_text("@0xbf5147cbbecf40c2;\nstruct A { x @0 :Foo; }\n")
    expected = reference(str(tmp_path), ("bad.capnp", "A"))
    actual = cara(str(tmp_path), ("bad.capnp", "A"))
    # capnp then crashes (an uncaught exception); cara stops after the diagnostics.
    assert actual.returncode == 1
    assert actual.stderr.decode().splitlines() == [
        line for line in expected.stderr.decode().splitlines() if re.match(r"bad\.capnp:", line)]


def test_help_mirrors_capnp() -> None:
    ours = subprocess.run([sys.executable, "-m", "cara", "eval", "--help"], capture_output=True,
                          text=True, check=False).stdout
    theirs = subprocess.run(["capnp", "eval", "--help"], executable=require_capnp(),
                            capture_output=True, text=True, check=False).stdout
    assert ours == (theirs.replace("capnp eval", "cara eval")
                    .replace("capnp help convert", "cara help convert")
                    .replace("typically /usr/include and /usr/local/include are added by\n"
                             "        default.",
                             "the standard schemas bundled with cara (/capnp/*.capnp) are\n"
                             "        importable by default."))
