"""The optional C fast path of cara frames (``cara/rpc/_frames.c``), loaded once for the core.

``FRAMES`` is the module, or None: not built (no C compiler at install time), switched off
with ``CARA_PURE_PYTHON=1``, or the runtime accelerator is missing (the fast path packs params
with its ``packb``). :mod:`cara.rpc.connection` configures it with its classes and marks each
connection that may use it (``Connection._fast_frames``: the stock :class:`CaraWire`);
:mod:`cara.rpc.proxies` sends plain calls through it and the asyncio transport's frame loop
runs in it. Whatever it declines goes through the Python path, the reference.

``get_running_loop`` is ``asyncio._get_running_loop``, or its C twin that skips the
``getpid()`` system call Python 3.11 makes on every ask while the loop it gave last still runs
in this thread (``_frames.c``, ``running_loop``; forgotten in a forked child).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable
from typing import Any

from cara.runtime.accel import SPEEDUPS

__all__ = ["FRAMES", "get_running_loop"]


def _load() -> Any:
    if os.environ.get("CARA_PURE_PYTHON") or SPEEDUPS is None:
        return None
    try:
        return importlib.import_module("cara.rpc._frames")
    except ImportError:  # pragma: no cover - depends on the build
        return None


FRAMES: Any = _load()

get_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop
if FRAMES is not None:
    get_running_loop = FRAMES.running_loop
    os.register_at_fork(after_in_child=FRAMES.forget_loop)
