"""Shared fixtures: where the reference corpus is, and how long the long tests run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: The reference corpus sits beside the checkout (../shared/corpus); CARA_CORPUS overrides it.
CORPUS = Path(os.environ.get("CARA_CORPUS", REPO.parent / "shared" / "corpus"))
#: CARA_LONG=1 runs the fuzz and property tests at full size (as the issues' "long mode").
LONG = os.environ.get("CARA_LONG", "") not in ("", "0")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The Cap'n Proto reference corpus (schemas and messages), or skip with the reason."""
    if not (CORPUS / "capnproto-0.9.2").is_dir():
        pytest.skip(f"the Cap'n Proto reference corpus is not at {CORPUS} (set CARA_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_092(corpus: Path) -> Path:
    """Root of the capnproto v0.9.2 tree (run `capnp` from here with -I c++/src)."""
    return corpus / "capnproto-0.9.2"


@pytest.fixture(scope="session")
def corpus_head(corpus: Path) -> Path:
    """Root of the capnproto master tree (1.x syntax)."""
    return corpus / "capnproto-head"
