"""The optional C accelerator (``cara/runtime/_speedups.c``), loaded once for the runtime.

``SPEEDUPS`` is the module, or None: not built (no C compiler at install time), or switched
off with ``CARA_PURE_PYTHON=1``. :mod:`cara.runtime.list` takes its typed lists' base class
from it and :mod:`cara.runtime.struct` its per-class plans; above the runtime, only the RPC
core's own C fast path uses it (:mod:`cara.rpc.accel`: its ``packb`` packs a call's params).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from cara.runtime.types import Invalid

__all__ = ["SPEEDUPS"]


def _load() -> Any:
    if os.environ.get("CARA_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module("cara.runtime._speedups")
    except ImportError:  # pragma: no cover - depends on the build
        return None
    module.set_invalid(Invalid)
    return module


SPEEDUPS: Any = _load()
