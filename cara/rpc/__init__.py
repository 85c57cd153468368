"""cara.rpc: Cap'n Proto's capability RPC (level 1: promise pipelining, embargoes) over any
transport.

The core (:class:`Connection`) is a protocol state machine without I/O: frames in through
``receive``, frames out through the ``send`` callable it is given, ``connection_lost`` when the
transport is gone. It speaks rpc.capnp's messages (:mod:`cara.rpc.messages`) in one of two
encodings: cara's compact msgpack frames (:mod:`cara.rpc.wire_cara`, the default) or Cap'n
Proto's own (:mod:`cara.rpc.wire_capnp`, to talk to C++, Rust, Go and pycapnp peers). Transports
(:mod:`cara.transports`: asyncio sockets, pseud, ...) move the frames; servers and clients live
there, since this layer must not import the one above it.

Modules, bottom up: ``messages`` (the message objects), ``errors``, ``description`` (interfaces
as the core sees them), ``plain`` (params and results without runtime classes), ``flow`` (the
flow-control window of ``-> stream`` calls, sans-IO), ``proxies`` (what a program holds: typed
proxies, call promises, the caller's side of streaming), ``gate`` (the callee's side of
streaming: an object's calls in order), ``dispatch`` (calling local implementations), ``caps``
(local capabilities and promises), ``wire_cara``/``wire_capnp`` (encodings), ``connection``
(the tables and the state machine), ``register``.
"""

from cara.rpc.caps import BrokenCap, Cap, LocalCap, QueuedCap
from cara.rpc.connection import Connection, ImportCap, PipelineCap, Question
from cara.rpc.description import (
    FieldInfo,
    InterfaceInfo,
    MethodInfo,
    describe,
    interfaces_from_nodes,
    known_interface,
)
from cara.rpc.dispatch import Services
from cara.rpc.errors import (
    Disconnected,
    Failed,
    Overloaded,
    ProtocolError,
    RemoteTraceback,
    RpcError,
    Unimplemented,
)
from cara.rpc.flow import Window
from cara.rpc.plain import Results
from cara.rpc.proxies import (
    CallPromise,
    PipelinedField,
    Proxy,
    StreamCall,
    core_cap_of,
    feed,
    proxy_class,
    runtime_proxy_class,
    stream_window,
)
from cara.rpc.register import register_interface

#: The old name of :class:`ImportCap` (a capability on the other side of a connection).
RemoteCap = ImportCap


def release(cap: object) -> None:
    """Release a capability now (works even when its interface has a method named ``close``)."""
    core = core_cap_of(cap)
    if core is None:
        raise TypeError(f"{cap!r} is not a remote capability")
    core.close()


__all__ = [
    "BrokenCap",
    "CallPromise",
    "Cap",
    "Connection",
    "Disconnected",
    "Failed",
    "FieldInfo",
    "ImportCap",
    "InterfaceInfo",
    "LocalCap",
    "MethodInfo",
    "Overloaded",
    "PipelineCap",
    "PipelinedField",
    "ProtocolError",
    "Proxy",
    "Question",
    "QueuedCap",
    "RemoteCap",
    "RemoteTraceback",
    "Results",
    "RpcError",
    "Services",
    "StreamCall",
    "Unimplemented",
    "Window",
    "describe",
    "feed",
    "interfaces_from_nodes",
    "known_interface",
    "proxy_class",
    "register_interface",
    "release",
    "runtime_proxy_class",
    "stream_window",
]
