"""The global type registry: structs and interfaces annotated ``$Cara.registerGlobally``.

A program that receives a type id (for example inside an ``AnyPointer`` envelope) can find the
class here without knowing which module declared it. Classes are registered when built.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["REGISTER_GLOBALLY_ID", "GlobalTypeRegistry", "lookup", "register"]

#: ``annotation registerGlobally @0xebd6c4912189be2c (struct, interface) :Void;``
REGISTER_GLOBALLY_ID = 0xEBD6C4912189BE2C

#: type id -> class. (The original documented it as ``GlobalTypeRegistery``; that name is kept
#: as an alias.)
GlobalTypeRegistry: dict[int, Any] = {}
GlobalTypeRegistery = GlobalTypeRegistry
_lock = threading.Lock()


def register(type_id: int, cls: Any) -> Any:
    """Register ``cls`` under ``type_id`` (the first registration of an id wins)."""
    with _lock:
        return GlobalTypeRegistry.setdefault(type_id, cls)


def lookup(type_id: int) -> Any:
    """The registered class for ``type_id`` (``KeyError`` if none)."""
    return GlobalTypeRegistry[type_id]
