"""The original cara's pseud integration, on pseud 1.0.1, asyncio and msgpack >= 1.

::

    from cara import cara_pseud

    server = pseud.Server(b"service")          # pseud wants bytes identities
    server.bind("tcp://127.0.0.1:5555")
    cara_pseud.setup_server(server)            # before start()
    await server.start()

    @cara_pseud.register_interface(server, SimpleEcho)
    def echo(text): return text

    @cara_pseud.register_interface(server)     # interface inferred from the base class
    class Impl(BackAndForth): ...

    client = pseud.Client(b"service")
    client.connect("tcp://127.0.0.1:5555")
    cara_pseud.setup_client(client)
    await client.start()
    echo = SimpleEcho(client)                  # or cara_pseud.bootstrap(client, SimpleEcho)
    assert await echo.echo("test") == "test"

Capabilities travel both ways (a client passes a callback, the server calls it, the callback
calls a lambda the server passed back), are reference counted and released, and remote errors
arrive as the same builtin exception (``ValueError``...) or :class:`cara.rpc.Failed`. How it maps
onto pseud, and what it changes on the given instances only, is in
:mod:`cara.transports.pseud_transport`.

Importing this module imports neither pseud nor ZeroMQ nor the RPC machinery; the functions do,
on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from cara.transports.pseud_transport import Packer, PseudRPC

__all__ = [
    "Packer",
    "bootstrap",
    "current_peer",
    "register_interface",
    "setup_client",
    "setup_server",
    "stats",
]

T = TypeVar("T")


def setup_server(server: Any, *, send_tracebacks: bool = True,
                 timeout: float | None = None) -> PseudRPC:
    """Make a ``pseud.Server`` speak cara (call before ``server.start()``). Returns the adapter.

    ``send_tracebacks=False`` keeps handler tracebacks private; ``timeout`` (seconds) bounds the
    calls this side makes, in addition to pseud's own per-instance ``timeout``."""
    from cara.transports.pseud_transport import attach

    return attach(server, send_tracebacks=send_tracebacks, timeout=timeout)


def setup_client(client: Any, *, send_tracebacks: bool = True,
                 timeout: float | None = None) -> PseudRPC:
    """Make a ``pseud.Client`` speak cara (call before ``client.start()``). Afterwards
    ``Iface(client)`` (or :func:`bootstrap`) is a proxy of the server's implementation."""
    from cara.transports.pseud_transport import attach

    return attach(client, send_tracebacks=send_tracebacks, timeout=timeout)


@overload
def register_interface(server: Any, iface: Any = None, impl: None = None) -> Callable[[T], T]: ...
@overload
def register_interface(server: Any, iface: Any, impl: T) -> T: ...


def register_interface(server: Any, iface: Any = None, impl: Any = None) -> Any:
    """Offer ``impl`` as ``server``'s implementation of interface ``iface``.

    A call or a decorator: a function implements a one-method interface (its name does not
    matter), a class is instantiated with no arguments and may leave ``iface`` out when it
    subclasses the interface, a dict maps method names to callables, any other object is used by
    attribute. Works on a set-up client too (the server can then reach it by interface)."""
    from cara.rpc.register import register_interface as register
    from cara.transports.pseud_transport import rpc_of

    return register(rpc_of(server).services, iface, impl)


def bootstrap(rpc: Any, iface: Any, peer: bytes | None = None) -> Any:
    """A proxy of the peer's implementation of ``iface`` (the same as ``iface(client)``).

    On a server, ``peer`` is a client's routing id (or its user id with a security plugin);
    inside a handler it defaults to the calling client."""
    from cara.transports.pseud_transport import rpc_of

    return rpc_of(rpc).bootstrap(iface, peer)


def stats(rpc: Any) -> dict[str, int]:
    """Live table sizes of a set-up instance, summed over its peers."""
    from cara.transports.pseud_transport import rpc_of

    return rpc_of(rpc).stats()


def current_peer() -> tuple[bytes, bytes] | None:
    """``(routing id, user id)`` of the peer whose call is being handled (inside a handler)."""
    from cara.transports.pseud_transport import current_peer as peer

    return peer()


def __getattr__(name: str) -> Any:
    """``cara_pseud.Packer``: the msgpack >= 1 packer for any pseud instance (imported lazily);
    ``server.packer = cara_pseud.Packer()`` makes plain pseud work with today's msgpack."""
    if name == "Packer":
        from cara.transports.pseud_transport import Packer

        return Packer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
