"""``cara compile`` against ``capnp compile`` 0.9.2 and the real ``capnpc-c++``.

The strongest check there is: for every schema of the capnproto 0.9.2 tree, the C++ code that
the real ``capnpc-c++`` generates from cara's request must be byte-identical to what it
generates from capnp's own request. ``capnpc-c++`` embeds every node (encoded) in the generated
``.c++`` file, so any difference in a node shows up. The request itself (``-o-``) is compared
decoded (pycapnp) and byte for byte (nodes and source info in capnp's order). The rest checks
the command's behaviour (plugins, exit codes, messages) against what ``capnp`` does in the same
situation.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cara.cli.main import main
from tests.schema.test_compile_corpus import VALID_SNIPPETS
from tests.support.corpus_files import SRC_SCHEMAS_092
from tests.support.reference import decode_request, require_capnp

# Relative to the capnproto 0.9.2 root; listed (not globbed) so each gets a stable test id.
CORPUS_FILES = SRC_SCHEMAS_092

COMPILE_FLAGS = ["-I", "c++/src", "--no-standard-import", "--src-prefix=c++/src"]


@dataclasses.dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


CaraRunner = Callable[..., Run]


@pytest.fixture
def cara(monkeypatch: pytest.MonkeyPatch,
         capfdbinary: pytest.CaptureFixture[bytes]) -> CaraRunner:
    """Run ``cara <args>`` in this process (fast: no interpreter start-up), in directory
    ``cwd``; plugins it starts write to the same captured file descriptors."""

    def run(*args: str, cwd: Path | str) -> Run:
        capfdbinary.readouterr()
        with monkeypatch.context() as m:
            m.chdir(cwd)
            code = main(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = capfdbinary.readouterr()
        return Run(code, out, err)

    return run


def run_capnp(*args: str, cwd: Path | str) -> Run:
    # KJ trusts $PWD for the current directory (and complains when it is stale).
    env = {**os.environ, "PWD": str(Path(cwd).resolve())}
    # argv[0] "capnp": capnp names itself by it in messages.
    proc = subprocess.run(["capnp", *args], executable=require_capnp(), cwd=cwd,
                          capture_output=True, env=env, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def require_capnpc_cxx() -> str:
    exe = shutil.which("capnpc-c++")
    if exe is None:
        pytest.skip("capnpc-c++ (the reference C++ generator) is not installed")
    return exe


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def corpus_params(files: list[str]) -> list[object]:
    return [pytest.param(f, id=f.removeprefix("c++/src/")) for f in files]


# --------------------------------------------------------------------------- the whole corpus


@pytest.mark.parametrize("source", corpus_params(CORPUS_FILES))
def test_cxx_output_identical_to_capnp(source: str, corpus_092: Path, tmp_path: Path,
                                       cara: CaraRunner) -> None:
    require_capnpc_cxx()
    theirs, ours = tmp_path / "capnp", tmp_path / "cara"
    theirs.mkdir()
    ours.mkdir()
    ref = run_capnp("compile", *COMPILE_FLAGS, f"-oc++:{theirs}", source, cwd=corpus_092)
    assert ref.returncode == 0, ref.err
    got = cara("compile", *COMPILE_FLAGS, f"-oc++:{ours}", source, cwd=corpus_092)
    assert got.returncode == 0, got.err
    assert got.stderr == ref.stderr
    expected, actual = tree(theirs), tree(ours)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        assert actual[name] == expected[name], f"{name} differs"


@pytest.mark.parametrize("source", corpus_params(CORPUS_FILES))
def test_request_decodes_like_capnp(source: str, corpus_092: Path, cara: CaraRunner) -> None:
    ref = run_capnp("compile", *COMPILE_FLAGS, "-o-", source, cwd=corpus_092)
    assert ref.returncode == 0, ref.err
    got = cara("compile", *COMPILE_FLAGS, "-o-", source, cwd=corpus_092)
    assert got.returncode == 0, got.err
    assert decode_request(got.stdout).capnpVersion == decode_request(ref.stdout).capnpVersion
    same_request(got.stdout, ref.stdout)


@pytest.mark.parametrize("source", corpus_params(CORPUS_FILES))
def test_request_bytes_identical_to_capnp(source: str, corpus_092: Path, cara: CaraRunner) -> None:
    ref = run_capnp("compile", *COMPILE_FLAGS, "-o-", source, cwd=corpus_092)
    got = cara("compile", *COMPILE_FLAGS, "-o-", source, cwd=corpus_092)
    assert got.returncode == ref.returncode == 0, got.err
    assert len(got.stdout) == len(ref.stdout)
    assert got.stdout == ref.stdout


@pytest.mark.parametrize("files", [
    ["c++/samples/addressbook.capnp"],
    ["c++/samples/calculator.capnp"],
    ["c++/samples/addressbook.capnp", "c++/src/capnp/rpc.capnp"],
    ["c++/src/capnp/test-import.capnp", "c++/src/capnp/test.capnp"],
    ["c++/src/capnp/test.capnp", "c++/src/capnp/test-import.capnp",
     "c++/src/capnp/test-import2.capnp"],
    ["c++/src/capnp/schema.capnp", "c++/src/capnp/test-import2.capnp"],
    ["c++/src/capnp/compat/json-test.capnp", "c++/src/capnp/compat/json.capnp"],
], ids=lambda files: "+".join(Path(f).stem for f in files))
def test_several_files_request_bytes_identical(files: list[str], corpus_092: Path,
                                               cara: CaraRunner) -> None:
    flags = ["-I", "c++/src", "--no-standard-import", "-o-", *files]
    ref = run_capnp("compile", *flags, cwd=corpus_092)
    got = cara("compile", *flags, cwd=corpus_092)
    assert got.returncode == ref.returncode == 0, got.err
    assert got.stdout == ref.stdout


@pytest.mark.parametrize("key", sorted(VALID_SNIPPETS))
def test_snippet_request_bytes_identical(key: str, tmp_path: Path, cara: CaraRunner) -> None:
    (tmp_path / "x.capnp").write_text(VALID_SNIPPETS[key], encoding="utf-8")
    flags = ["-I/usr/include", "--no-standard-import", "-o-", "x.capnp"]
    ref = run_capnp("compile", *flags, cwd=tmp_path)
    got = cara("compile", *flags, cwd=tmp_path)
    assert got.returncode == ref.returncode == 0, got.err
    assert got.stdout == ref.stdout


def test_several_files_and_several_outputs(corpus_092: Path, tmp_path: Path,
                                           cara: CaraRunner) -> None:
    require_capnpc_cxx()
    files = ["c++/src/capnp/test-import.capnp", "c++/src/capnp/test-import2.capnp"]
    for who in ("capnp", "cara"):
        (tmp_path / who).mkdir()
    ref = run_capnp("compile", *COMPILE_FLAGS, f"-oc++:{tmp_path / 'capnp'}", "-o-", *files,
                    cwd=corpus_092)
    got = cara("compile", *COMPILE_FLAGS, f"-oc++:{tmp_path / 'cara'}", "-o-", *files,
               cwd=corpus_092)
    assert (got.returncode, ref.returncode) == (0, 0), got.err
    assert decode_request(got.stdout).requestedFiles == decode_request(ref.stdout).requestedFiles
    assert tree(tmp_path / "cara") == tree(tmp_path / "capnp")


# ------------------------------------------------------------------------------------ plugins

PROBE = """#!{python}
import json, os, sys
data = sys.stdin.buffer.read()
open("probe-request.bin", "wb").write(data)
json.dump({{"cwd": os.getcwd(), "pwd": os.environ.get("PWD"), "argv": sys.argv[1:]}},
          open("probe.json", "w"))
sys.exit({status})
"""

SCHEMA = "@0xbf5147cbbecf40c1;\nstruct A { x @0 :Int32; }\nconst c :Int32 = 5;\n"


def write_plugin(path: Path, status: int = 0) -> Path:
    path.write_text(PROBE.format(python=sys.executable, status=status))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "ok.capnp").write_text(SCHEMA)
    (tmp_path / "out").mkdir()
    return tmp_path


def test_exact_path_plugin_gets_request_on_stdin_in_dir(workdir: Path, cara: CaraRunner) -> None:
    require_capnp()
    write_plugin(workdir / "probe")
    got = cara("compile", "-o./probe:out", "ok.capnp", cwd=workdir)
    assert got.returncode == 0, got.err
    ours = (workdir / "out" / "probe-request.bin").read_bytes()
    import json

    seen = json.loads((workdir / "out" / "probe.json").read_text())
    assert seen == {"cwd": str(workdir / "out"), "pwd": str(workdir / "out"), "argv": []}
    ref = run_capnp("compile", "-o./probe:out", "ok.capnp", cwd=workdir)
    assert ref.returncode == 0
    assert json.loads((workdir / "out" / "probe.json").read_text()) == seen
    same_request(ours, (workdir / "out" / "probe-request.bin").read_bytes())


def test_named_plugin_is_found_in_path(workdir: Path, cara: CaraRunner,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = workdir / "bin"
    bindir.mkdir()
    write_plugin(bindir / "capnpc-probe")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    got = cara("compile", "-oprobe:out", "ok.capnp", cwd=workdir)
    assert got.returncode == 0, got.err
    assert (workdir / "out" / "probe-request.bin").exists()


def same_request(ours: bytes, theirs: bytes) -> None:
    """Both requests decoded by pycapnp hold the same content (node order is not part of the
    contract: capnp's own order follows its hash maps)."""
    a, b = decode_request(ours), decode_request(theirs)
    assert a.requestedFiles == b.requestedFiles
    assert sorted(n.id for n in a.nodes) == sorted(n.id for n in b.nodes)
    by_id = b.nodes_by_id()
    for node in a.nodes:
        # NaN defaults (TestDefaults.float32List) are unequal to themselves; their reprs match.
        if node != by_id[node.id]:
            assert repr(node) == repr(by_id[node.id]), node.displayName
    assert sorted(a.sourceInfo, key=lambda s: s.id) == sorted(b.sourceInfo, key=lambda s: s.id)


def capnp_words(run: Run) -> str:
    """capnp's stderr with its program name replaced by cara's."""
    return run.err.replace("capnp compile", "cara compile").replace("capnp eval", "cara eval")


@pytest.mark.parametrize("args", [
    pytest.param(["-ofoo:nodir", "ok.capnp"], id="output-dir-missing"),
    pytest.param(["-ofoo:a:b", "ok.capnp"], id="first-colon-splits"),
    pytest.param(["-o-:", "ok.capnp"], id="empty-dir"),
    pytest.param(["-I", "nodir", "-o-", "ok.capnp"], id="import-dir-missing"),
    pytest.param(["--import-path=nodir", "-o-", "ok.capnp"], id="import-dir-missing-long"),
    pytest.param(["--src-prefix=nodir", "-o-", "ok.capnp"], id="src-prefix-missing"),
    pytest.param(["-o-", "nofile.capnp"], id="source-missing"),
    pytest.param([], id="no-source"),
    pytest.param(["ok.capnp"], id="no-outputs"),
    pytest.param(["-I", "nodir", "-ofoo:nodir", "ok.capnp"], id="first-bad-option-wins"),
    pytest.param(["-o-", "bad.capnp"], id="schema-errors"),
    pytest.param(["-o-", "bad.capnp", "nofile.capnp"], id="errors-then-missing-file"),
    pytest.param(["-o-", "worse.capnp"], id="several-errors-in-capnp-order"),
])
def test_errors_worded_like_capnp(args: list[str], workdir: Path, cara: CaraRunner) -> None:
    (workdir / "bad.capnp").write_text(
        "@0xbf5147cbbecf40c2;\nstruct A { x @0 :Foo; }\n")
    (workdir / "worse.capnp").write_text(
        "@0xbf5147cbbecf40c3;\nstruct A { x @0 :Foo; y @0 :Int32; }\n")
    ref = run_capnp("compile", *args, cwd=workdir)
    got = cara("compile", *args, cwd=workdir)
    assert ref.returncode == 1
    assert got.returncode == 1
    assert got.err == capnp_words(ref)
    assert got.stdout == b""


def test_plugin_exit_status_and_signal_reported(workdir: Path, cara: CaraRunner) -> None:
    write_plugin(workdir / "fail3", status=3)
    killer = workdir / "killer"
    killer.write_text("#!/bin/sh\ncat >/dev/null\nkill -9 $$\n")  # reads first: no SIGPIPE race
    killer.chmod(0o755)
    for plugin in ("./fail3", "./killer"):
        ref = run_capnp("compile", f"-o{plugin}", "-o-", "ok.capnp", cwd=workdir)
        got = cara("compile", f"-o{plugin}", "-o-", "ok.capnp", cwd=workdir)
        assert (got.returncode, ref.returncode) == (1, 1)
        assert got.err == capnp_words(ref)
        # the other output still runs, as in capnp
        same_request(got.stdout, ref.stdout)


def test_missing_named_plugin(workdir: Path, cara: CaraRunner) -> None:
    ref = run_capnp("compile", "-onosuch-plugin-xyz", "ok.capnp", cwd=workdir)
    got = cara("compile", "-onosuch-plugin-xyz", "ok.capnp", cwd=workdir)
    # capnp's exit is racy here (1, or SIGPIPE when the forked child dies before capnp has
    # written the request); its first line is stable, and cara always adds the second.
    assert got.err.splitlines()[0] == ref.err.splitlines()[0] == (
        "nosuch-plugin-xyz: no such plugin (executable should be 'capnpc-nosuch-plugin-xyz')")
    assert got.err.splitlines()[1:] == ["nosuch-plugin-xyz: plugin failed: exit code 1"]
    assert got.returncode == 1


def test_missing_exact_path_plugin(workdir: Path, cara: CaraRunner) -> None:
    ref = run_capnp("compile", "-o./nosuch", "ok.capnp", cwd=workdir)
    got = cara("compile", "-o./nosuch", "ok.capnp", cwd=workdir)
    # capnp dies of SIGPIPE here (exit 141) after the first line; cara exits 1 cleanly.
    first = ref.err.splitlines()[0]
    assert first == f"./nosuch: no such plugin (executable should be '{workdir}/./nosuch')"
    assert got.err.splitlines()[0] == f"./nosuch: no such plugin (executable should be " \
                                      f"'{workdir / 'nosuch'}')"
    assert got.returncode == 1


def test_warns_about_file_outside_current_directory(workdir: Path, cara: CaraRunner) -> None:
    write_plugin(workdir / "probe")
    ref = run_capnp("compile", "-o../probe", "../ok.capnp", cwd=workdir / "out")
    got = cara("compile", "-o../probe", "../ok.capnp", cwd=workdir / "out")
    assert (got.returncode, ref.returncode) == (0, 0)
    assert got.err == ref.err
    assert "File is not in the current directory" in got.err
    # -o- writes no files: no warning
    assert cara("compile", "-o-", "../ok.capnp", cwd=workdir / "out").stderr == b""


# ----------------------------------------------------------------------------------------- id


def test_id_is_random_with_bit_63_set(cara: CaraRunner) -> None:
    import re

    theirs = run_capnp("id", cwd=".").stdout.decode()
    # capnp 0.9.2 prints "@0x...\n"; cara (like capnp 1.x) adds the ";" so the line pastes
    # into a schema as it is.
    assert re.fullmatch(r"@0x[0-9a-f]{16}\n", theirs)
    ids = set()
    for _ in range(20):
        got = cara("id", cwd=".")
        assert got.returncode == 0
        line = got.stdout.decode()
        assert re.fullmatch(r"@0x[0-9a-f]{16};\n", line), line
        value = int(line[3:19], 16)
        assert value >> 63 == 1
        ids.add(value)
    assert len(ids) == 20
    extra = cara("id", "x", cwd=".")
    assert extra.returncode == 1
    assert extra.err == capnp_words(run_capnp("id", "x", cwd=".")).replace("capnp id", "cara id")
