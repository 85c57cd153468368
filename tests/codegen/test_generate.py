"""Generated modules, imported in fresh processes, against the seed's examples and the
reference compiler's view of the corpus.

Requests come from the reference oracle (``capnp compile -o-`` decoded by pycapnp), so these
tests check the generator and the import-time rebuild, not cara's schema compiler.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cara.codegen import generate, write_modules
from cara.codegen.naming import module_path
from cara.codegen.schemafile import SchemaFile
from tests.support.corpus_files import ALL_SCHEMAS_092
from tests.support.reference import reference_request, require_capnp

REPO = Path(__file__).resolve().parents[2]

SEED_SCHEMA = """\
@0xd3a8a8f4c2b1e001;
struct MyStruct {
    field @0 :Text;
    nested @1 :NestedStruct;
    struct NestedStruct {
        integer @0 :Int32;
    }
}
"""

#: The examples of the original cara's description (seed), verbatim where it gives values.
SEED_CHECK = """\
import msgpack
import my_structs_capnp

m = my_structs_capnp.MyStruct.Create(field='some different text')
assert msgpack.packb(m) == b'\\x81\\x00\\xb3some different text', msgpack.packb(m)
assert my_structs_capnp.MyStruct({'field': 'some text for here'}).field == 'some text for here'
original = my_structs_capnp.MyStruct.Create(nested={'integer': 2})
packed = msgpack.packb(original)
unpacked = msgpack.unpackb(packed, strict_map_key=False)
assert unpacked == {1: {0: 2}}, unpacked
result = my_structs_capnp.MyStruct(unpacked)
assert repr(result) == 'MyStruct({nested: NestedStruct({integer: 2})})', repr(result)
assert result.nested.integer == 2
assert my_structs_capnp.MyStruct.NestedStruct is type(result.nested)
print("seed ok")
"""

#: Makes a process fail loudly if the schema compiler or the wire codecs get imported.
BLOCK_COMPILER = """\
import sys
class _Blocker:
    BLOCKED = ("cara.schema.compiler", "cara.schema.parser", "cara.schema.lexer",
               "cara.schema.loader", "cara.codecs")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.BLOCKED):
            raise ImportError(f"{name} must not be imported by a generated module")
        return None
sys.meta_path.insert(0, _Blocker())
"""


def run_python(code: str, cwd: Path, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (the project on its path) and return the result."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def assert_ok(proc: subprocess.CompletedProcess[str], expect: str = "") -> None:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert expect in proc.stdout


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_structs.capnp").write_text(SEED_SCHEMA)
    return tmp_path


def test_seed_examples_hold_in_a_fresh_process(seed_dir: Path) -> None:
    request = reference_request(["my_structs.capnp"], cwd=seed_dir)
    out = seed_dir / "out"
    written = write_modules(request, out)
    assert sorted(p.name for p in written) == ["my_structs_capnp.py", "my_structs_capnp.pyi"]
    assert_ok(run_python(BLOCK_COMPILER + SEED_CHECK, out), "seed ok")


def test_generated_module_imports_neither_compiler_nor_codecs(seed_dir: Path) -> None:
    request = reference_request(["my_structs.capnp"], cwd=seed_dir)
    out = seed_dir / "out"
    write_modules(request, out)
    (seed_dir / "my_structs.capnp").unlink()  # no schema file either
    code = textwrap.dedent("""\
        import sys
        import my_structs_capnp
        loaded = sorted(m for m in sys.modules if m.startswith(("cara.schema.", "cara.codecs")))
        # the node classes, and the record machinery they are made with: nothing else
        assert loaded == ["cara.schema._record", "cara.schema._record_inits",
                          "cara.schema.model"], loaded
        print("clean")
        """)
    assert_ok(run_python(code, out), "clean")


def test_output_is_deterministic(corpus_092: Path) -> None:
    files = ["c++/src/capnp/test.capnp", "c++/src/capnp/test-import2.capnp"]
    first = generate(reference_request(files, cwd=corpus_092, import_path=["c++/src"]))
    again = reference_request(files, cwd=corpus_092, import_path=["c++/src"])
    random.Random(7).shuffle(again.nodes)
    random.Random(8).shuffle(again.sourceInfo)
    second = generate(again)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], name


def test_written_files_are_byte_identical_across_runs(seed_dir: Path) -> None:
    request = reference_request(["my_structs.capnp"], cwd=seed_dir)
    a = [p.read_bytes() for p in write_modules(request, seed_dir / "a")]
    b = [p.read_bytes() for p in write_modules(request, seed_dir / "b")]
    assert a == b


CORPUS_FILES = ALL_SCHEMAS_092

EXPOSES_EVERYTHING = """\
import importlib, json, sys
expected = json.loads(sys.argv[1])
problems = []
for module_name, decls in expected.items():
    module = importlib.import_module(module_name)
    for dotted, kind in decls:
        obj = module
        for part in dotted.split("."):
            if not hasattr(obj, part):
                problems.append(f"{module_name}: {dotted} missing")
                break
            obj = getattr(obj, part)
        else:
            ok = {
                "struct": lambda o: isinstance(o, type) and o.__mro__[-2] is dict,
                "enum": lambda o: isinstance(o, type) and issubclass(o, int),
                "interface": lambda o: isinstance(o, type),
                "const": lambda o: True,
                "annotation": lambda o: o is not None,
            }[kind](obj)
            if not ok:
                problems.append(f"{module_name}: {dotted} is {obj!r}, not a {kind}")
assert not problems, "\\n".join(problems)
print("exposed", sum(len(d) for d in expected.values()))
"""


def test_every_corpus_file_generates_a_module_exposing_every_declaration(
        corpus_092: Path, tmp_path: Path) -> None:
    for name in CORPUS_FILES:
        assert (corpus_092 / name).is_file(), name
    request = reference_request(CORPUS_FILES, cwd=corpus_092, import_path=["c++/src"],
                                src_prefix="c++/src")
    write_modules(request, tmp_path)
    by_dir: dict[Path, dict[str, list[tuple[str, str]]]] = {}
    for requested in request.requestedFiles:
        schema = SchemaFile.of(request, requested.id)
        path = module_path(requested.filename)
        decls = [(d.dotted, d.node.which) for d in schema.declarations()]
        by_dir.setdefault(tmp_path / path.parent, {})[path.stem] = decls
    assert sum(len(m) for m in by_dir.values()) == len(CORPUS_FILES)
    total = 0
    for directory, expected in sorted(by_dir.items()):
        proc = subprocess.run(
            [sys.executable, "-c", EXPOSES_EVERYTHING, json.dumps(expected)], cwd=directory,
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert_ok(proc, "exposed")
        total += int(proc.stdout.split()[-1])
    assert total > 250


def _capnp_eval(corpus_092: Path, name: str) -> str:
    exe = require_capnp()
    proc = subprocess.run([exe, "eval", "-Ic++/src", "--no-standard-import", "--short",
                           "c++/src/capnp/test.capnp", name], cwd=corpus_092,
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


CONSTANTS = ["globalInt", "globalText", "TestConstants.int32Const", "TestConstants.uint64Const",
             "TestConstants.float64Const", "TestConstants.float32Const",
             "TestConstants.textConst", "TestConstants.enumConst", "TestConstants.boolConst",
             "TestConstants.int8Const", "TestConstants.uint16Const"]


def test_constants_and_enums_match_the_reference(corpus_092: Path, tmp_path: Path) -> None:
    """Constant values as ``capnp eval`` prints them, enumerants as the reference compiler
    numbers them, against what the generated module of test.capnp exposes."""
    request = reference_request(["test.capnp"], cwd=corpus_092 / "c++/src/capnp",
                                import_path=[str(corpus_092 / "c++/src")])
    write_modules(request, tmp_path)
    code = textwrap.dedent("""\
        import enum, json, sys, test_capnp as t
        out = {}
        for dotted in json.loads(sys.argv[1]):
            obj = t
            for part in dotted.split("."):
                obj = getattr(obj, part)
            out[dotted] = obj.name if isinstance(obj, enum.Enum) else obj
        out["enum"] = [(m.name, int(m)) for m in t.TestEnum]
        out["is_intenum"] = issubclass(t.TestEnum, enum.IntEnum)
        print(json.dumps(out))
        """)
    full_env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(CONSTANTS)], cwd=tmp_path,
                          env=full_env, capture_output=True, text=True, timeout=120)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    for name in CONSTANTS:
        expected = _capnp_eval(corpus_092, name)
        value = got[name]
        if isinstance(value, bool):
            assert str(value).lower() == expected, name
        elif isinstance(value, str) and expected.startswith('"'):
            assert value == json.loads(expected), name
        elif isinstance(value, float):
            assert value == float(expected), name
        else:
            assert str(value) == expected, name
    enum_node = next(n for n in request.nodes if n.displayName.endswith(":TestEnum"))
    assert enum_node.enum is not None
    assert got["enum"] == [[e.name, i] for i, e in enumerate(enum_node.enum.enumerants)]
    assert got["is_intenum"] is True


def test_docs_annotations_and_interfaces(tmp_path: Path) -> None:
    (tmp_path / "iface.capnp").write_text(textwrap.dedent("""\
        @0xb1a0c6a1e7ec5c11;
        annotation note(file, struct) :Text;
        $note("the file");
        interface Greeter {
          # A greeting service.
          greet @0 (name :Text) -> (text :Text);
          # Says hello.
        }
        struct Box $note("a box") {
          # Holds one thing.
          from @0 :Int32;   # a keyword as a field name
          kind @1 :Kind;
          enum Kind { import @0; plain @1; }
        }
        """))
    request = reference_request(["iface.capnp"], cwd=tmp_path)
    write_modules(request, tmp_path / "out")
    code = textwrap.dedent("""\
        import iface_capnp as m
        assert m.Greeter.__doc__.strip() == "A greeting service.", m.Greeter.__doc__
        assert m.Box.__doc__.strip() == "Holds one thing.", m.Box.__doc__
        assert "__annotations__" not in vars(m) or not isinstance(m.__annotations__, list)
        anns = m.cara_annotations
        assert [(a.name, a.value) for a in anns] == [("note", "the file")], anns
        assert m.cara_file_id == 0xb1a0c6a1e7ec5c11
        b = m.Box({"from": 3, "kind": "import"})
        assert b.from_ == 3 and b.kind == 0 and b.kind is m.Box.Kind.import_
        assert issubclass(m.Greeter, object) and hasattr(m.Greeter, "greet")
        g = m.Greeter({"greet": lambda name: "hi " + name})
        assert g.greet("ann") == "hi ann"
        print("ok")
        """)
    assert_ok(run_python(code, tmp_path / "out"), "ok")


def test_keyword_named_fields_as_create_keywords(tmp_path: Path) -> None:
    (tmp_path / "kw.capnp").write_text(
        "@0xb1a0c6a1e7ec5c12;\nstruct Box { from @0 :Int32; class @1 :Text; }\n")
    write_modules(reference_request(["kw.capnp"], cwd=tmp_path), tmp_path / "out")
    code = textwrap.dedent("""\
        import kw_capnp as m
        b = m.Box.Create(from_=3, class_="x")
        assert b == {0: 3, 1: "x"} and b.from_ == 3 and b.class_ == "x"
        assert m.Box(from_=4).from_ == 4
        print("ok")
        """)
    assert_ok(run_python(code, tmp_path / "out"), "ok")


def test_imports_between_schemas_in_a_package(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "base.capnp").write_text("@0xc3a8a8f4c2b1e002;\nstruct Point { x @0 :Int32; }\n")
    (pkg / "shapes.capnp").write_text(textwrap.dedent("""\
        @0xc3a8a8f4c2b1e003;
        using B = import "base.capnp";
        using Cxx = import "/capnp/c++.capnp";
        $Cxx.namespace("shapes");
        struct Line { a @0 :B.Point; b @1 :B.Point; }
        """))
    request = reference_request(["pkg/base.capnp", "pkg/shapes.capnp"], cwd=tmp_path / "src",
                                no_standard_import=False)
    out = tmp_path / "out"
    write_modules(request, out)
    (out / "pkg" / "__init__.py").write_text("")
    code = textwrap.dedent("""\
        from pkg import shapes_capnp, base_capnp
        line = shapes_capnp.Line.Create(a={"x": 1}, b=base_capnp.Point.Create(x=2))
        assert type(line.a) is base_capnp.Point
        assert line.b.x == 2
        print("ok")
        """)
    assert_ok(run_python(code, out), "ok")
    text = (out / "pkg" / "shapes_capnp.py").read_text()
    assert "'.base_capnp'" in text and "'cara.std.cxx_capnp'" in text


def test_std_modules_match_the_bundled_standard_schemas() -> None:
    """cara/std holds the generated modules of cara/schema/standard/capnp; regenerating them
    from the reference compiler's request must give the same bytes."""
    root = REPO / "cara" / "schema" / "standard"
    files = sorted(str(p.relative_to(root)) for p in (root / "capnp").rglob("*.capnp"))
    request = reference_request(files, cwd=root, import_path=["."], src_prefix="capnp")
    for relative, text in generate(request).items():
        shipped = REPO / "cara" / "std" / relative
        assert shipped.is_file(), f"{shipped} is missing: regenerate cara/std"
        assert shipped.read_text() == text, f"{shipped} is stale: regenerate cara/std"


def test_a_local_copy_of_a_standard_schema_falls_back_to_cara_std(
        corpus_092: Path, tmp_path: Path) -> None:
    """test.capnp-style ``import "c++.capnp"`` of a copy beside the schema: the generated
    module names ``cxx_capnp``, which is not generated; the shipped module with the same file
    id is used instead."""
    (tmp_path / "c++.capnp").write_bytes((corpus_092 / "c++/src/capnp/c++.capnp").read_bytes())
    (tmp_path / "t.capnp").write_text(textwrap.dedent("""\
        @0xe1a8a8f4c2b1e099;
        using Cxx = import "c++.capnp";
        $Cxx.namespace("t");
        struct T $Cxx.name("TT") { a @0 :Int32; }
        """))
    write_modules(reference_request(["t.capnp"], cwd=tmp_path), tmp_path / "out")
    code = textwrap.dedent("""\
        import t_capnp
        assert [m.__name__ for m in t_capnp._cara_imported_] == ["cara.std.cxx_capnp"]
        assert [(a.name, a.value) for a in t_capnp.cara_annotations] == [("namespace", "t")]
        print("fallback ok")
        """)
    assert_ok(run_python(code, tmp_path / "out"), "fallback ok")


def test_a_missing_imported_module_is_a_clear_import_error(tmp_path: Path) -> None:
    (tmp_path / "base.capnp").write_text("@0xe1a8a8f4c2b1e0a0;\nstruct P { x @0 :Int32; }\n")
    (tmp_path / "user.capnp").write_text(
        '@0xe1a8a8f4c2b1e0a1;\nusing B = import "base.capnp";\nstruct U { p @0 :B.P; }\n')
    write_modules(reference_request(["user.capnp"], cwd=tmp_path), tmp_path / "out")
    code = textwrap.dedent("""\
        try:
            import user_capnp
        except ImportError as exc:
            print("ImportError:", exc)
        """)
    proc = run_python(code, tmp_path / "out")
    assert_ok(proc, "cannot import '.base_capnp'")
    assert "0xe1a8a8f4c2b1e0a0" in proc.stdout


def test_std_table_names_every_shipped_module() -> None:
    import importlib

    import cara.std

    shipped = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "cara" / "std").rglob("*_capnp.py"))
    assert sorted(cara.std.BY_FILE_ID.values()) == shipped
    for file_id, name in cara.std.BY_FILE_ID.items():
        assert importlib.import_module(name).cara_file_id == file_id


def test_two_schemas_with_one_module_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a-b.capnp").write_text("@0xe1a8a8f4c2b1e0b0;\nstruct X {}\n")
    (tmp_path / "a_b.capnp").write_text("@0xe1a8a8f4c2b1e0b1;\nstruct Y {}\n")
    request = reference_request(["a-b.capnp", "a_b.capnp"], cwd=tmp_path)
    with pytest.raises(ValueError, match=r"a_b_capnp\.py"):
        generate(request)
