"""Module and identifier naming, as the original cara generator named things (see
/work/shared/notes/original-cara-0.10.3.md §1) and as Python requires."""

from __future__ import annotations

import keyword

import pytest

from cara.codegen.naming import import_target, module_name, module_path, python_name


@pytest.mark.parametrize(("schema", "module"), [
    ("c++.capnp", "cxx_capnp"),
    ("rpc-twoparty.capnp", "rpc_twoparty_capnp"),
    ("my_structs.capnp", "my_structs_capnp"),
    ("a.b.capnp", "a_b_capnp"),
    ("dir/sub/test-import2.capnp", "test_import2_capnp"),
    ("1st.capnp", "_1st_capnp"),
])
def test_module_names_follow_the_original_generator(schema: str, module: str) -> None:
    assert module_name(schema) == module
    assert module.isidentifier()


def test_module_path_keeps_directories_and_never_escapes() -> None:
    assert str(module_path("capnp/compat/json-rpc.capnp")) == "capnp/compat/json_rpc_capnp.py"
    assert str(module_path("/abs/x.capnp")) == "abs/x_capnp.py"
    assert str(module_path("../../x.capnp")) == "x_capnp.py"


@pytest.mark.parametrize(("name", "target"), [
    ("/capnp/c++.capnp", "cara.std.cxx_capnp"),
    ("/capnp/compat/json.capnp", "cara.std.compat.json_capnp"),
    ("/foo/bar-baz.capnp", "foo.bar_baz_capnp"),
    ("test.capnp", ".test_capnp"),
    ("sub/y.capnp", ".sub.y_capnp"),
    ("../y.capnp", "..y_capnp"),
    ("../other/y.capnp", "..other.y_capnp"),
    ("sub/../y.capnp", ".y_capnp"),
])
def test_schema_imports_become_python_modules(name: str, target: str) -> None:
    assert import_target(name) == target


@pytest.mark.parametrize("word", sorted(keyword.kwlist))
def test_every_keyword_gets_one_trailing_underscore(word: str) -> None:
    assert python_name(word) == word + "_"


def test_ordinary_and_soft_keyword_names_are_kept() -> None:
    for name in ("field", "match", "case", "type", "Person", "_x"):
        assert python_name(name) == name
