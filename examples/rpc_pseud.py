"""cara's original pseud example, modernised: pseud 1.0.1 on asyncio, msgpack 1.x, ZeroMQ.

A pseud server offers two interfaces from echo.capnp (the original my_ifaces.capnp with ids and
ordinals): SimpleEcho, implemented by a plain function, and BackAndForth, implemented by a class
whose interface is inferred from its base. The client echoes a text, then hands the server a
callback; the server calls it with a lambda (a capability made on the spot), and the client calls
that lambda back. Every step is printed, and the capability tables are empty at the end.

    pip install 'cara[pseud]'        # pseud==1.0.1, pyzmq, zope.interface, zope.component
    python examples/rpc_pseud.py [tcp://127.0.0.1:5598]

Differences from the 2015 README: pseud wants bytes identities (``pseud.Server(b"service")``),
coroutines are ``async def`` and ``await`` instead of ``tornado.gen`` and ``yield``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import Any

import pseud

from cara import cara_pseud
from cara.importer import load

my_ifaces = load(Path(__file__).with_name("echo.capnp"))
SimpleEcho = my_ifaces.SimpleEcho
BackAndForth = my_ifaces.BackAndForth


async def create_server(url: str) -> Any:
    server = pseud.Server(b"service")
    server.bind(url)
    cara_pseud.setup_server(server)  # before start()
    await server.start()

    # A function can implement an interface with a single method; its name does not matter.
    @cara_pseud.register_interface(server, SimpleEcho)
    def func(text: str) -> str:
        print(f"server: echo({text!r})")
        return text

    # An interface with several methods needs a class (or an object, or a dict). Subclassing the
    # interface lets register_interface infer which one it implements.
    @cara_pseud.register_interface(server)
    class Server(BackAndForth):
        async def callMeMaybe(self, callback: Any) -> None:
            print("server: callMeMaybe: calling the client's callback with a lambda")
            # You can even use a lambda as an interface.
            result = await callback(lambda: "internal callback")
            print(f"server: the client's callback answered {result!r}")

        def otherFunc(self) -> None:
            print("server: otherFunc()")

    return server


async def create_client(url: str) -> Any:
    client = pseud.Client(b"service")
    client.connect(url)
    cara_pseud.setup_client(client)
    await client.start()

    # Wrapping the client in an interface gives the server's implementation of it.
    echo_iface = SimpleEcho(client)
    result = await echo_iface.echo("test")
    print(f"client: echo returned {result!r}")
    assert result == "test"

    # Now let's mess with this exported interface.
    back_and_forth = BackAndForth(client)
    await back_and_forth.otherFunc()

    # A method with one argument that is an interface with one method can be used as a
    # decorator; the name then holds the call, which still has to be awaited.
    @back_and_forth.callMeMaybe
    async def callback(callback: Any = None) -> str:
        print("client: my callback was called; calling the lambda it was given")
        result = await callback()
        print(f"client: the server's lambda returned {result!r}")
        assert result == "internal callback"
        return f"thanks for {result!r}"

    await callback
    return client


async def main(url: str) -> None:
    server = await create_server(url)
    client = await create_client(url)
    gc.collect()
    await asyncio.sleep(0.1)  # let the releases of the callbacks arrive
    print(f"client: tables {cara_pseud.stats(client)}")
    print(f"server: tables {cara_pseud.stats(server)}")
    await client.stop()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5598"))
