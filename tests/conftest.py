"""Shared fixtures: where the reference corpus is, and how long the long tests run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The reference corpus sits beside the checkout (../shared/corpus); CARA_CORPUS overrides it.
CORPUS = Path(os.environ.get("CARA_CORPUS", REPO.parent / "shared" / "corpus"))
#: CARA_LONG=1 runs the fuzz and property tests at full size (as the issues' "long mode").
LONG = os.environ.get("CARA_LONG", "") not in ("", "0")


def _corpus_tree(name: str) -> Path:
    tree = CORPUS / name
    if not (tree / "c++/src/capnp").is_dir():
        pytest.skip(f"no Cap'n Proto source tree at {tree}: set CARA_CORPUS to a directory "
                    f"holding capnproto-0.9.2/ and capnproto-head/ (see README.md, Quick start)")
    return tree


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The Cap'n Proto reference corpus (schemas and messages), or skip with the reason."""
    _corpus_tree("capnproto-0.9.2")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_092(corpus: Path) -> Path:
    """Root of the capnproto v0.9.2 tree (run `capnp` from here with -I c++/src)."""
    return corpus / "capnproto-0.9.2"


@pytest.fixture(scope="session")
def corpus_head() -> Path:
    """Root of the capnproto master tree (1.x syntax)."""
    return _corpus_tree("capnproto-head")


def pytest_report_header(config: pytest.Config) -> str:
    found = [name for name in ("capnproto-0.9.2", "capnproto-head")
             if (CORPUS / name / "c++/src/capnp").is_dir()]
    if len(found) == 2:
        return f"cara corpus: {CORPUS}"
    return (f"cara corpus: {CORPUS} has {found or 'no source trees'}; the tests that need "
            f"capnproto-0.9.2/ and capnproto-head/ skip (set CARA_CORPUS, see README.md)")


@pytest.fixture(scope="module")
def s() -> Any:
    """The seed's schema (``MyStruct``, ``Person``) as runtime classes (see
    tests/runtime/schemas.py)."""
    from tests.runtime.schemas import seed

    return seed()


@pytest.fixture(scope="module")
def b() -> Any:
    """tests/runtime/schemas.py's ``basics.capnp`` as runtime classes."""
    from tests.runtime.schemas import basics

    return basics()


def _isolate_pycapnp() -> None:
    """Give every ``capnp.load`` in the suite a parser of its own.

    pycapnp's ``capnp.load`` shares one global libcapnp parser per process, and libcapnp
    aborts the whole interpreter ("Duplicate ID") when a file id arrives through two different
    paths — which the suite does on purpose (the 0.9.2 and 1.x corpora, /usr/include and the
    corpus copies of c++.capnp). A fresh ``SchemaParser`` per distinct load keeps them apart;
    loads of the same file with the same imports share one parser, so types stay identical.
    pycapnp's own import hook is removed too, so ``import x_capnp`` always means cara's hook.
    """
    try:
        import capnp  # type: ignore[import-untyped]
    except ImportError:
        return
    if getattr(capnp, "_cara_isolated", False):
        return
    loaded: dict[tuple[str, str | None, tuple[str, ...]], object] = {}

    def load(file_name: str, display_name: str | None = None, imports: object = ()) -> object:
        paths = tuple(str(p) for p in (imports or ()))  # type: ignore[attr-defined]
        key = (os.path.realpath(file_name), display_name, paths)
        if key not in loaded:
            loaded[key] = capnp.SchemaParser().load(file_name, display_name, list(paths))
        return loaded[key]

    capnp.load = load
    capnp._cara_isolated = True
    if hasattr(capnp, "remove_import_hook"):
        capnp.remove_import_hook()


def pytest_configure(config: pytest.Config) -> None:
    _isolate_pycapnp()
