"""cara: a pythonic Cap'n Proto.

Schemas compile in pure Python, structs are dicts keyed by field number (tiny msgpack), the real
Cap'n Proto binary is spoken for interop, and interfaces become asyncio proxies and servers.

Importing ``cara`` is cheap: only ``msgpack`` is required, and the optional parts (pseud, pyzmq,
pycapnp) are imported lazily by the modules that need them.
"""

from __future__ import annotations

from cara._version import __version__
from cara.errors import CaraError, DecodeError, EncodeError, SchemaError, ValueTypeError
from cara.importer import install_import_hook, load, loads, remove_import_hook

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False

# `import x_capnp` finds x.capnp on sys.path from now on (cara.remove_import_hook() undoes it).
# Installing the hook imports only the standard library; the compiler loads on first use.
install_import_hook()

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from cara.rpc.proxies import feed
    from cara.rpc.register import register_interface
    from cara.transports import Client, Server, connect_sync

#: Names served lazily from the layers above, so that ``import cara`` stays light.
_LAZY = {
    "Server": "cara.transports",
    "Client": "cara.transports",
    "connect_sync": "cara.transports",
    "register_interface": "cara.rpc",
    "feed": "cara.rpc",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cara' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "CaraError",
    "Client",
    "DecodeError",
    "EncodeError",
    "SchemaError",
    "Server",
    "ValueTypeError",
    "__version__",
    "connect_sync",
    "feed",
    "install_import_hook",
    "load",
    "loads",
    "register_interface",
    "remove_import_hook",
]
