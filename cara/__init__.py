"""cara: a pythonic Cap'n Proto.

Schemas compile in pure Python, structs are dicts keyed by field number (tiny msgpack), the real
Cap'n Proto binary is spoken for interop, and interfaces become asyncio proxies and servers.

Importing ``cara`` is cheap: only ``msgpack`` is required, and the optional parts (pseud, pyzmq,
pycapnp) are imported lazily by the modules that need them.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from cara.errors import CaraError, DecodeError, EncodeError, SchemaError, ValueTypeError

try:
    __version__ = _metadata.version("cara")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "CaraError",
    "DecodeError",
    "EncodeError",
    "SchemaError",
    "ValueTypeError",
    "__version__",
]
