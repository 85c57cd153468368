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

# `import x_capnp` finds x.capnp on sys.path from now on (cara.remove_import_hook() undoes it).
# Installing the hook imports only the standard library; the compiler loads on first use.
install_import_hook()

__all__ = [
    "CaraError",
    "DecodeError",
    "EncodeError",
    "SchemaError",
    "ValueTypeError",
    "__version__",
    "install_import_hook",
    "load",
    "loads",
    "remove_import_hook",
]
