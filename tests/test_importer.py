"""The import hook, its cache, ``load`` and ``loads``: each scenario in a fresh interpreter, as a
user's program would run, with a private cache directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.codegen.test_generate import REPO, SEED_CHECK, SEED_SCHEMA, assert_ok

HOOK = "import cara.importer\ncara.importer.install_import_hook()\n"

#: Fails the process if anything tries to compile a schema (proves the cache was used).
NO_COMPILE = """\
import cara.importer
def _refuse(*args, **kwargs):
    raise AssertionError("the schema was compiled again instead of read from the cache")
cara.importer._compile_request = _refuse
"""


def _require_compiler() -> None:
    import cara.schema

    if not hasattr(cara.schema, "compile"):
        pytest.skip("cara's schema compiler is not available yet")


def run(code: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CARA_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    _require_compiler()
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "my_structs.capnp").write_text(SEED_SCHEMA)
    return tmp_path


def test_hook_imports_the_seed_schema_and_caches_it(project: Path) -> None:
    app, cache = project / "app", project / "cache"
    assert_ok(run(HOOK + SEED_CHECK, app, cache), "seed ok")
    entries = list(cache.rglob("*.cara"))
    assert len(entries) == 1
    # A second process reads the cache: nothing is compiled, no compiler module is imported.
    second = HOOK + NO_COMPILE + SEED_CHECK + textwrap.dedent("""\
        import sys
        parsed = [m for m in sys.modules if m.startswith(("cara.schema.compiler",
                  "cara.schema.parser", "cara.schema.lexer"))]
        assert not parsed, parsed
        print("from cache")
        """)
    assert_ok(run(second, app, cache), "from cache")


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\xe9" * 40, "truncate", "other layout"])
def test_a_damaged_cache_entry_is_compiled_again(project: Path, damage: object) -> None:
    import marshal

    app, cache = project / "app", project / "cache"
    assert_ok(run(HOOK + SEED_CHECK, app, cache), "seed ok")
    (entry,) = cache.rglob("*.cara")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:50])
    elif damage == "other layout":
        _, header, code = marshal.loads(entry.read_bytes())
        entry.write_bytes(marshal.dumps((999, header, code)))
    else:
        entry.write_bytes(damage)  # type: ignore[arg-type]
    assert_ok(run(HOOK + SEED_CHECK, app, cache), "seed ok")
    assert_ok(run(HOOK + NO_COMPILE + SEED_CHECK, app, cache), "seed ok")  # rewritten


def test_an_edited_schema_is_compiled_again(project: Path) -> None:
    app, cache = project / "app", project / "cache"
    assert_ok(run(HOOK + "import my_structs_capnp\nprint('first')", app, cache), "first")
    (app / "my_structs.capnp").write_text(
        SEED_SCHEMA.replace("nested @1", "extra @2 :Bool;\n    nested @1"))
    code = HOOK + "import my_structs_capnp as s\nprint(s.MyStruct.Create(extra=True))"
    assert_ok(run(code, app, cache), "MyStruct({extra: True})")


def test_an_edited_import_is_compiled_again(project: Path) -> None:
    app, cache = project / "app", project / "cache"
    (app / "consts.capnp").write_text("@0xe3a8a8f4c2b1e010;\nconst answer :Int32 = 41;\n")
    (app / "user.capnp").write_text(textwrap.dedent("""\
        @0xe3a8a8f4c2b1e011;
        using C = import "consts.capnp";
        const doubled :Int32 = C.answer;
        """))
    code = HOOK + "import user_capnp\nprint('value', user_capnp.doubled)"
    assert_ok(run(code, app, cache), "value 41")
    (app / "consts.capnp").write_text("@0xe3a8a8f4c2b1e010;\nconst answer :Int32 = 42;\n")
    assert_ok(run(code, app, cache), "value 42")


def test_hook_finds_schemas_inside_packages_and_their_imports(project: Path) -> None:
    pkg = project / "app" / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rpc-base.capnp").write_text("@0xe3a8a8f4c2b1e020;\nstruct Point { x @0 :Int32; }\n")
    (pkg / "shapes.capnp").write_text(textwrap.dedent("""\
        @0xe3a8a8f4c2b1e021;
        using B = import "rpc-base.capnp";
        using Cxx = import "/capnp/c++.capnp";
        $Cxx.namespace("shapes");
        struct Line { a @0 :B.Point; }
        """))
    code = HOOK + textwrap.dedent("""\
        import pkg.shapes_capnp as shapes
        from pkg import rpc_base_capnp
        line = shapes.Line.Create(a={"x": 3})
        assert type(line.a) is rpc_base_capnp.Point, type(line.a)
        assert shapes.__name__ == "pkg.shapes_capnp"
        print("package ok", line.a.x)
        """)
    assert_ok(run(code, project / "app", project / "cache"), "package ok 3")


def test_removing_the_hook_stops_schema_imports(project: Path) -> None:
    code = HOOK + textwrap.dedent("""\
        import sys
        cara.importer.remove_import_hook()
        try:
            import my_structs_capnp
        except ImportError:
            print("not found")
        cara.importer.install_import_hook()
        cara.importer.install_import_hook()
        import my_structs_capnp
        assert sum(type(f).__name__ == "SchemaFinder" for f in sys.meta_path) == 1
        print("found again")
        """)
    out = run(code, project / "app", project / "cache")
    assert_ok(out, "not found")
    assert "found again" in out.stdout


def test_a_generated_module_on_the_path_wins_over_the_schema(project: Path) -> None:
    app = project / "app"
    (app / "my_structs_capnp.py").write_text("MARKER = 'generated file'\n")
    code = HOOK + "import my_structs_capnp\nprint(my_structs_capnp.MARKER)"
    assert_ok(run(code, app, project / "cache"), "generated file")


def test_load_with_an_import_path(project: Path) -> None:
    inc = project / "include" / "lib"
    inc.mkdir(parents=True)
    (inc / "units.capnp").write_text(
        "@0xe3a8a8f4c2b1e030;\nenum Unit { metre @0; foot @1; }\n")
    schemas = project / "elsewhere"  # not on sys.path
    schemas.mkdir()
    (schemas / "point.capnp").write_text("@0xe3a8a8f4c2b1e032;\nstruct P { x @0 :Int32; }\n")
    (schemas / "length.capnp").write_text(textwrap.dedent("""\
        @0xe3a8a8f4c2b1e031;
        using U = import "/lib/units.capnp";
        using Pt = import "point.capnp";
        struct Length { value @0 :Float64; unit @1 :U.Unit; at @2 :Pt.P; }
        """))
    code = textwrap.dedent(f"""\
        import sys
        import cara.importer
        m = cara.importer.load({str(schemas / "length.capnp")!r},
                               imports=[{str(project / "include")!r}])
        assert "length_capnp" not in sys.modules
        length = m.Length.Create(value=2.5, unit="foot", at={{"x": 7}})
        print("loaded", m.__name__, int(length.unit), type(length.unit).__name__, length.at.x)
        """)
    assert_ok(run(code, project / "app", project / "cache"), "loaded length_capnp 1 Unit 7")


def test_loads_compiles_text(project: Path) -> None:
    import cara.schema

    if not hasattr(cara.schema, "compile_string"):
        pytest.skip("cara.schema.compile_string is not available yet")
    code = textwrap.dedent(f"""\
        import cara.importer, msgpack
        m = cara.importer.loads({SEED_SCHEMA!r}, name="my_structs.capnp")
        packed = msgpack.packb(m.MyStruct.Create(field="some different text"))
        assert packed == b"\\x81\\x00\\xb3some different text", packed
        print("loads ok", m.__name__)
        """)
    assert_ok(run(code, project / "app", project / "cache"), "loads ok my_structs_capnp")


def test_loads_takes_an_import_path(project: Path) -> None:
    include = project / "include" / "shapes"
    include.mkdir(parents=True)
    (include / "point.capnp").write_text(
        "@0xe1f2a3b4c5d6e7f1;\nstruct Point { x @0 :Int32; y @1 :Int32; }\n")
    text = ('@0xe1f2a3b4c5d6e7f2;\nusing P = import "/shapes/point.capnp";\n'
            "struct Line { a @0 :P.Point; b @1 :P.Point; }\n")
    code = textwrap.dedent(f"""\
        import cara.importer
        m = cara.importer.loads({text!r}, name="line.capnp", imports=[{str(project / "include")!r}])
        line = m.Line.Create(a={{"x": 1}}, b={{"y": 2}})
        assert line.b.y == 2 and type(line.a).__name__ == "Point", line
        try:
            cara.importer.loads({text!r}, name="line.capnp")
        except Exception as e:
            print("without the path:", type(e).__name__)
        print("loads with imports ok")
        """)
    proc = run(code, project / "app", project / "cache")
    assert_ok(proc, "loads with imports ok")
    assert "without the path: SchemaError" in proc.stdout


def test_installing_the_hook_imports_no_compiler(tmp_path: Path) -> None:
    code = HOOK + textwrap.dedent("""\
        import sys
        heavy = [m for m in sys.modules if m.startswith(("cara.schema", "cara.codegen",
                 "cara.runtime", "cara.codecs"))]
        assert not heavy, heavy
        print("light")
        """)
    assert_ok(run(code, tmp_path, tmp_path / "cache"), "light")


def test_unwritable_cache_only_costs_speed(project: Path) -> None:
    blocked = project / "cache-is-a-file"
    blocked.write_text("not a directory")
    assert_ok(run(HOOK + SEED_CHECK, project / "app", blocked), "seed ok")


def test_schema_errors_name_the_file(project: Path) -> None:
    (project / "app" / "broken.capnp").write_text(
        "@0xe3a8a8f4c2b1e040;\nstruct X { a @0 :Nope; }\n")
    code = HOOK + textwrap.dedent("""\
        try:
            import broken_capnp
        except Exception as exc:
            print(type(exc).__name__, exc)
        """)
    out = run(code, project / "app", project / "cache")
    assert_ok(out, "broken.capnp:2:")


def test_loading_an_edited_schema_again_in_one_process(project: Path) -> None:
    path = project / "app" / "my_structs.capnp"
    code = textwrap.dedent(f"""\
        import pathlib
        import cara.importer
        path = pathlib.Path({str(path)!r})
        old = cara.importer.load(path)
        path.write_text(path.read_text().replace("nested @1", "extra @2 :Bool;\\n    nested @1"))
        new = cara.importer.load(path)
        assert "extra" not in old.MyStruct.cara_schema.by_name
        print(new.MyStruct.Create(extra=True), old.MyStruct.Create(field="x"))
        """)
    assert_ok(run(code, project / "app", project / "cache"),
              "MyStruct({extra: True}) MyStruct({field: 'x'})")


_SHARED_OLD = """@0xe1b2c3d4e5f60711;
struct Shared {
  x @0 :Int32;
  union { a @1 :Int32; b @2 :Text; }
}
"""
_SHARED_NEW = """@0xe1b2c3d4e5f60711;
struct Shared {
  x @0 :Int32;
  union { a @1 :Int32; b @2 :Text; c @3 :Text; }
  y @4 :Text;
}
"""


def test_two_files_with_one_id_are_kept_apart(tmp_path: Path) -> None:
    """Two projects vendor two versions of one schema (same file id, different text): each
    ``load`` gets the version its own import path leads to, in either order, also when the
    shared file is loaded directly; a message with the newer fields keeps them (no silent
    decode as empty, no other union member)."""
    _require_compiler()
    for project, shared, user_id in (("old", _SHARED_OLD, "0xe1b2c3d4e5f60712"),
                                     ("new", _SHARED_NEW, "0xe1b2c3d4e5f60713")):
        (tmp_path / project).mkdir()
        (tmp_path / project / "shared.capnp").write_text(shared)
        (tmp_path / project / "user.capnp").write_text(
            f'@{user_id};\nusing import "shared.capnp".Shared;\nstruct User {{ s @0 :Shared; }}\n')
    code = textwrap.dedent(f"""\
        import cara
        root = {str(tmp_path)!r}
        def names(cls):
            return sorted(cls.cara_schema.by_name)
        for order in (("old", "new"), ("new", "old")):
            users = {{p: cara.load(f"{{root}}/{{p}}/user.capnp") for p in order}}
            shared = {{p: cara.load(f"{{root}}/{{p}}/shared.capnp") for p in order}}
            for p in order:
                inner = users[p].User.cara_schema.fields[0].type.cls
                assert names(inner) == names(shared[p].Shared), (order, p)
            assert names(shared["new"].Shared) == ["a", "b", "c", "x", "y"]
            assert names(shared["old"].Shared) == ["a", "b", "x"]
            msg = users["new"].User.Create(s={{"c": "new member", "y": "new field"}})
            back = users["new"].User.from_bytes(msg.to_bytes())
            assert back == msg and back.s.which() == "c" and back.s.y == "new field", back
            old = users["old"].User.from_bytes(msg.to_bytes())  # the old reader: unknown member
            assert old.s.which() != "c"
        print("kept apart")
        """)
    assert_ok(run(code, tmp_path, tmp_path / "cache"), "kept apart")


def test_load_handles_import_cycles(project: Path) -> None:
    """Cap'n Proto allows files to import each other (capnp compiles them, the import hook
    loads them); ``load`` from a directory not on sys.path used to raise ImportError."""
    schemas = project / "cycle"  # not on sys.path
    schemas.mkdir()
    (schemas / "a.capnp").write_text('@0xe3a8a8f4c2b1e051;\nusing B = import "b.capnp";\n'
                                     "struct A { b @0 :B.B; n @1 :UInt32; }\n")
    (schemas / "b.capnp").write_text('@0xe3a8a8f4c2b1e052;\nusing A = import "a.capnp";\n'
                                     "struct B { a @0 :A.A; m @1 :UInt32; }\n")
    code = textwrap.dedent(f"""\
        import cara.importer
        from cara.codegen.rebuild import MODULES
        a = cara.importer.load({str(schemas / "a.capnp")!r})
        v = a.A.Create(b={{"a": {{"n": 3}}, "m": 2}})
        assert a.A.from_bytes(v.to_bytes()) == v
        assert type(v.b) is MODULES[0xe3a8a8f4c2b1e052].B
        assert type(v.b.a) is a.A
        print("cycle ok", v.b.a.n)
        """)
    assert_ok(run(code, project / "app", project / "cache"), "cycle ok 3")


def test_loads_resolves_relative_imports_beside_its_name(project: Path) -> None:
    """``loads(text, name="sub/a.capnp")``: the compiler reads ``import "b.capnp"`` as
    sub/b.capnp, and the module of that file must be the one loaded (not ./b.capnp)."""
    (project / "app" / "sub").mkdir()
    (project / "app" / "sub" / "b.capnp").write_text(
        "@0xe3a8a8f4c2b1e054;\nstruct B { m @0 :UInt32; }\n")
    text = '@0xe3a8a8f4c2b1e053;\nusing import "b.capnp".B;\nstruct A { b @0 :B; }\n'
    code = textwrap.dedent(f"""\
        import cara.importer
        from cara.codegen.rebuild import MODULES
        m = cara.importer.loads({text!r}, name="sub/a.capnp")
        b = MODULES[0xe3a8a8f4c2b1e054]
        assert b.__file__.endswith("sub/b.capnp"), b.__file__
        assert m.A.cara_schema.fields[0].type.cls is b.B
        v = m.A.Create(b={{"m": 2}})
        print("loads sub ok", m.A.from_bytes(v.to_bytes()).b.m)
        """)
    assert_ok(run(code, project / "app", project / "cache"), "loads sub ok 2")
