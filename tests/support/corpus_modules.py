"""The corpus's test.capnp (capnproto 0.9.2) loaded for the tests: as cara classes built from
the reference compiler's request, and as a pycapnp module (the peer).

Each test module builds its own cara module (``module_name``) so that classes and their caches
are not shared between test files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

#: Relative to the capnproto 0.9.2 root (the ``corpus_092`` fixture).
TEST_CAPNP = "c++/src/capnp/test.capnp"


def oracle_test_capnp(corpus_092: Path, module_name: str) -> Any:
    """test.capnp as cara runtime classes, built from the reference compiler's request."""
    from cara.runtime import build_module
    from tests.runtime.schemas import oracle_request

    request = oracle_request([TEST_CAPNP], cwd=str(corpus_092),
                             import_path=[str(corpus_092 / "c++/src")])
    return build_module(request, name=module_name)


def pycapnp_test_capnp(corpus_092: Path, tmp: Path) -> Any:
    """test.capnp loaded by pycapnp, from a copy in ``tmp`` whose ``import "c++.capnp"`` names
    the installed /capnp/c++.capnp: libcapnp aborts when one file id reaches it through two
    paths, and other tests load the installed one."""
    from tests.support.reference import require_pycapnp

    capnp = require_pycapnp()
    if not os.path.exists("/usr/include/capnp/c++.capnp"):
        pytest.skip("/usr/include/capnp/c++.capnp is missing (apt-get install libcapnp-dev)")
    text = (corpus_092 / TEST_CAPNP).read_text()
    (tmp / "test.capnp").write_text(text.replace('import "c++.capnp"', 'import "/capnp/c++.capnp"'))
    (tmp / "testdata").symlink_to(corpus_092 / "c++/src/capnp/testdata")
    return capnp.load(str(tmp / "test.capnp"), imports=["/usr/include"])


def reachable_classes(module: Any) -> list[type]:
    """Every Struct and Interface class reachable from a built module's top level (nested
    declarations included), each once."""
    from cara.runtime import Interface, Struct

    out: list[type] = []
    seen: set[int] = set()
    stack = [getattr(module, n) for n in dir(module) if not n.startswith("_")]
    while stack:
        obj = stack.pop()
        if not isinstance(obj, type) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if issubclass(obj, (Struct, Interface)):
            out.append(obj)
            stack.extend(getattr(obj, n) for n in vars(obj) if n[:1].isupper())
    return out
