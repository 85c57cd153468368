"""Finding schema files: display names and import resolution compared with ``capnp``.

The tree below is compiled by the reference compiler with various command lines; the names it
gives the files (file nodes' ``displayName``, ``RequestedFile.filename``) and the files its
imports resolve to (``RequestedFile.imports``) must be what :class:`SourceLoader` answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cara.schema.loader import BUNDLED_STANDARD_DIR, SourceError, SourceLoader
from tests.support.reference import reference_request

BUNDLED = ["c++.capnp", "schema.capnp", "rpc.capnp", "rpc-twoparty.capnp", "persistent.capnp",
           "stream.capnp", "compat/json.capnp"]

FILES = {
    "src/a.capnp": """@0xd1a5e7f00d5eed11;
using B = import "sub/b.capnp";
using C = import "/other/c.capnp";
struct A { b @0 :B.Bs; c @1 :C.Cs; }
""",
    "src/sub/b.capnp": """@0xd1a5e7f00d5eed12;
using A = import "./../sub/../a.capnp";
struct Bs { x @0 :UInt8; a @1 :A.A; }
""",
    "inc/other/c.capnp": """@0xd1a5e7f00d5eed13;
using D = import "d.capnp";
struct Cs { x @0 :UInt8; d @1 :D.Ds; }
""",
    "inc/other/d.capnp": "@0xd1a5e7f00d5eed14;\nstruct Ds {}\n",
    "inc2/other/c.capnp": "@0xd1a5e7f00d5eed15;\nstruct Cs { y @0 :Text; }\n",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


# ------------------------------------------------------------------------- bundled schemas


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_schema_is_capnproto_head_copy(corpus_head: Path, name: str) -> None:
    bundled = (BUNDLED_STANDARD_DIR / "capnp" / name).read_bytes()
    assert bundled == (corpus_head / "c++/src/capnp" / name).read_bytes()


def test_bundled_license_is_capnproto_license(corpus: Path) -> None:
    assert (BUNDLED_STANDARD_DIR / "LICENSE-capnproto").read_bytes() == \
        (corpus / "LICENSE-capnproto").read_bytes()


def test_cara_capnp_compiles_with_capnp() -> None:
    request = reference_request(["capnp/cara.capnp"], cwd=BUNDLED_STANDARD_DIR)
    annotations = {n.displayName: n for n in request.nodes if n.which == "annotation"}
    assert sorted(annotations) == ["capnp/cara.capnp:idempotent",
                                   "capnp/cara.capnp:registerGlobally"]
    idempotent = annotations["capnp/cara.capnp:idempotent"]
    assert idempotent.id == 0x911365C837A1B943
    assert idempotent.annotation is not None and idempotent.annotation.targetsMethod
    annotation = annotations["capnp/cara.capnp:registerGlobally"]
    assert annotation.id == 0xEBD6C4912189BE2C
    assert annotation.displayName == "capnp/cara.capnp:registerGlobally"
    assert annotation.annotation is not None
    assert annotation.annotation.targetsStruct and annotation.annotation.targetsInterface
    assert annotation.annotation.type.which == "void"
    file_node = request.node(annotation.scopeId)
    assert file_node.id >> 63 == 1


def test_standard_import_prefers_bundled_copy(tmp_path: Path) -> None:
    (tmp_path / "x.capnp").write_text('@0xd1a5e7f00d5eed16;\nusing import "/capnp/c++.capnp";\n')
    loader = SourceLoader(cwd=tmp_path)
    root = loader.load_root("x.capnp")
    found = loader.resolve_import(root, "/capnp/c++.capnp")
    assert found is not None
    assert found.display_name == "capnp/c++.capnp"
    assert found.path == BUNDLED_STANDARD_DIR / "capnp" / "c++.capnp"
    assert loader.resolve_import(root, "/capnp/cara.capnp") is not None
    without = SourceLoader(cwd=tmp_path, no_standard_import=True)
    assert without.resolve_import(without.load_root("x.capnp"), "/capnp/c++.capnp") is None


def test_import_dirs_come_before_standard_dirs(tmp_path: Path) -> None:
    (tmp_path / "inc/capnp").mkdir(parents=True)
    (tmp_path / "inc/capnp/c++.capnp").write_text("@0xd1a5e7f00d5eed17;\n")
    (tmp_path / "x.capnp").write_text("@0xd1a5e7f00d5eed16;\n")
    loader = SourceLoader(["inc"], cwd=tmp_path)
    found = loader.resolve_import(loader.load_root("x.capnp"), "/capnp/c++.capnp")
    assert found is not None and found.path == tmp_path / "inc/capnp/c++.capnp"


# --------------------------------------------------------------- display names, vs capnp


def _capnp_view(files: list[str], cwd: Path, import_path: list[str],
                src_prefix: str | None = None) -> tuple[dict[int, str], list[tuple[str, dict]]]:
    request = reference_request(files, cwd=cwd, import_path=import_path, src_prefix=src_prefix)
    names = {n.id: n.displayName for n in request.nodes if n.which == "file"}
    requested = [(f.filename, {i.name: names.get(i.id) for i in f.imports})
                 for f in request.requestedFiles]
    return names, requested


@pytest.mark.parametrize(("cwd", "files", "import_path", "src_prefix"), [
    ("", ["src/a.capnp"], ["inc"], None),
    ("", ["src/a.capnp"], ["inc"], "src"),
    ("", ["./src/a.capnp", "inc/other/c.capnp"], ["inc"], None),
    ("src", ["./a.capnp", "sub/b.capnp"], ["../inc"], None),
    ("src", ["a.capnp"], ["../inc2", "../inc"], None),
    ("src/sub", ["../a.capnp"], ["../../inc"], "../"),
])
def test_names_and_imports_match_capnp(
    tree: Path, cwd: str, files: list[str], import_path: list[str], src_prefix: str | None
) -> None:
    where = tree / cwd
    names, requested = _capnp_view(files, where, import_path, src_prefix)
    loader = SourceLoader(import_path, no_standard_import=True, cwd=where,
                          src_prefixes=[src_prefix] if src_prefix else [])
    for (filename, imports), given in zip(requested, files, strict=True):
        source = loader.load_root(given)
        assert source.display_name == filename
        for name, display_name in imports.items():
            found = loader.resolve_import(source, name)
            assert found is not None, name
            assert found.display_name == display_name, name
    # Every file capnp shows, cara reaches under the same name (following imports).
    pending = list(loader.files)
    seen = {f.display_name for f in pending}
    while pending:
        source = pending.pop()
        for line in source.text.splitlines():
            if 'import "' in line:
                target = loader.resolve_import(source, line.split('"')[1])
                assert target is not None
                if target.display_name not in seen:
                    seen.add(target.display_name)
                    pending.append(target)
    assert set(names.values()) <= seen


def test_first_import_dir_wins(tree: Path) -> None:
    _, requested = _capnp_view(["src/a.capnp"], tree, ["inc2", "inc"])
    loader = SourceLoader(["inc2", "inc"], no_standard_import=True, cwd=tree)
    found = loader.resolve_import(loader.load_root("src/a.capnp"), "/other/c.capnp")
    assert found is not None
    assert found.path == tree / "inc2/other/c.capnp"
    assert requested[0][1]["/other/c.capnp"] == found.display_name


def test_same_file_reached_twice_is_one_file(tree: Path) -> None:
    loader = SourceLoader(["../inc"], no_standard_import=True, cwd=tree / "src")
    a = loader.load_root("a.capnp")
    c = loader.resolve_import(a, "/other/c.capnp")
    again = loader.load_root("../inc/other/c.capnp")
    assert again is c and c is not None and c.display_name == "other/c.capnp"
    b = loader.resolve_import(a, "sub/b.capnp")
    assert b is not None
    assert loader.resolve_import(b, "./../sub/../a.capnp") is a  # a cycle: the cached file
    assert loader.load_root("./sub/../a.capnp") is a


def test_file_outside_cwd_is_named_by_absolute_path(tree: Path) -> None:
    where = tree / "src"
    outside = str(tree / "inc2/other/c.capnp")
    _, requested = _capnp_view([outside], where, [])
    loader = SourceLoader(no_standard_import=True, cwd=where)
    assert loader.load_root(outside).display_name == requested[0][0] == outside.lstrip("/")


# ------------------------------------------------------------------------------- failures


def test_missing_files(tree: Path) -> None:
    loader = SourceLoader(["inc"], no_standard_import=True, cwd=tree)
    with pytest.raises(SourceError, match=r"^src/nosuch\.capnp: no such file$"):
        loader.load_root("src/nosuch.capnp")
    with pytest.raises(SourceError, match=r"^src: no such file$"):
        loader.load_root("src")  # a directory
    with pytest.raises(SourceError, match=r"^nodir: no such directory$"):
        SourceLoader(["nodir"], cwd=tree)
    with pytest.raises(SourceError, match=r"^nodir: no such directory$"):
        SourceLoader(src_prefixes=["nodir"], cwd=tree)
    a = loader.load_root("src/a.capnp")
    assert loader.resolve_import(a, "nosuch.capnp") is None
    assert loader.resolve_import(a, "/nosuch/x.capnp") is None
    assert loader.resolve_import(a, "sub") is None
    assert loader.resolve_import(a, "") is None
    # `..` may not leave the file's root (capnp crashes on this; cara says "not found").
    assert loader.resolve_import(a, "../../../../../../../../etc/hostname") is None


def test_embed(tree: Path) -> None:
    (tree / "src/blob.bin").write_bytes(b"\x00\xffbinary")
    loader = SourceLoader(["inc"], no_standard_import=True, cwd=tree)
    a = loader.load_root("src/a.capnp")
    assert loader.read_embed(a, "blob.bin") == b"\x00\xffbinary"
    assert loader.read_embed(a, "/other/d.capnp") == FILES["inc/other/d.capnp"].encode()
    assert loader.read_embed(a, "nosuch.bin") is None
    assert loader.read_embed(a, "../../../../../../../etc/hostname") is None


def test_bad_content(tree: Path) -> None:
    (tree / "src/bad.capnp").write_bytes(b"@0xd1a5e7f00d5eed18;\n# caf\xe9\n")
    loader = SourceLoader(no_standard_import=True, cwd=tree)
    with pytest.raises(SourceError, match=r"^src/bad\.capnp:2:6: error: file is not valid UTF-8"):
        loader.load_root("src/bad.capnp")
    small = SourceLoader(no_standard_import=True, cwd=tree, max_file_size=10)
    with pytest.raises(SourceError, match="larger than the limit of 10 bytes"):
        small.load_root("src/a.capnp")


def test_bom_is_kept_for_the_lexer(tree: Path) -> None:
    (tree / "bom.capnp").write_bytes(b"\xef\xbb\xbf@0xd1a5e7f00d5eed19;\n")
    source = SourceLoader(no_standard_import=True, cwd=tree).load_root("bom.capnp")
    assert source.text.startswith("\ufeff@0x")
    assert source.data.startswith(b"\xef\xbb\xbf")


def test_default_cwd_is_process_cwd(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "src")
    loader = SourceLoader(no_standard_import=True)
    assert loader.load_root("a.capnp").display_name == "a.capnp"
    assert loader.load_root(os.path.join(tree, "src", "sub", "b.capnp")).display_name == \
        "sub/b.capnp"


def test_in_memory_file(tree: Path) -> None:
    loader = SourceLoader(["inc"], no_standard_import=True, cwd=tree)
    mem = loader.add_text("src/mem.capnp", '@0xd1a5e7f00d5eed1a;\nusing import "a.capnp";\n')
    assert mem.display_name == "src/mem.capnp" and mem.root == tree
    a = loader.resolve_import(mem, "a.capnp")
    assert a is not None and a.display_name == "src/a.capnp"
    assert loader.resolve_import(a, "mem.capnp") is mem
    assert loader.resolve_import(a, "/other/c.capnp") is not None
    with pytest.raises(SourceError, match="not a relative file name"):
        loader.add_text("/abs.capnp", "")
