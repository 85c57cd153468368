"""cara.rpc: capability RPC over any transport.

The core (:class:`Connection`) is a protocol state machine without I/O: frames in through
``receive``, frames out through the ``send`` callable it is given, ``connection_lost`` when the
transport is gone. Transports (:mod:`cara.transports`: asyncio sockets, the pseud adapter) move
the frames; servers and clients live there (``cara.transports.Server``/``Client``), since this
layer must not import the one above it.

Interfaces are runtime classes (``cara.runtime``) or bare descriptions built from schema nodes
(:func:`interfaces_from_nodes`); methods are addressed by ``(interface id, method index)``.
"""

from cara.rpc.connection import (
    Connection,
    LocalCap,
    Proxy,
    RemoteCap,
    Results,
    Services,
    proxy_class,
    release,
    runtime_proxy_class,
)
from cara.rpc.description import (
    FieldInfo,
    InterfaceInfo,
    MethodInfo,
    describe,
    interfaces_from_nodes,
    known_interface,
)
from cara.rpc.errors import (
    Disconnected,
    Failed,
    Overloaded,
    ProtocolError,
    RemoteTraceback,
    RpcError,
    Unimplemented,
)
from cara.rpc.register import register_interface

__all__ = [
    "Connection",
    "Disconnected",
    "Failed",
    "FieldInfo",
    "InterfaceInfo",
    "LocalCap",
    "MethodInfo",
    "Overloaded",
    "ProtocolError",
    "Proxy",
    "RemoteCap",
    "RemoteTraceback",
    "Results",
    "RpcError",
    "Services",
    "Unimplemented",
    "describe",
    "interfaces_from_nodes",
    "known_interface",
    "proxy_class",
    "register_interface",
    "release",
    "runtime_proxy_class",
]
