"""cara's original pseud example, on asyncio and cara's built-in transport.

A server offers two interfaces from echo.capnp: SimpleEcho, implemented by a plain function, and
BackAndForth, implemented by a class whose interface is inferred from its base. The client echoes
a text, then hands the server a callback; the server calls it with a lambda (a capability made on
the spot), and the client calls that lambda back. Every step is printed.

    python examples/rpc_asyncio.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cara.importer import load
from cara.rpc import register_interface
from cara.transports import Client, Server

echo_capnp = load(Path(__file__).with_name("echo.capnp"))
SimpleEcho = echo_capnp.SimpleEcho
BackAndForth = echo_capnp.BackAndForth


async def create_server() -> Server:
    server = Server()
    server.bind("tcp://127.0.0.1:0")  # port 0: the system picks one; see server.endpoints
    await server.start()

    # A function implements a one-method interface; its name does not matter.
    @register_interface(server, SimpleEcho)
    def func(text: str) -> str:
        print(f"server: echo({text!r})")
        return text

    # A class implements a multi-method interface; subclassing the interface lets
    # register_interface infer which one. Methods may be async.
    @register_interface(server)
    class Impl(BackAndForth):
        async def callMeMaybe(self, callback: Any) -> None:
            print("server: callMeMaybe: calling the client's callback with a lambda")
            # A lambda is a capability too: the client can call it back.
            result = await callback(lambda: "internal callback")
            print(f"server: the client's callback answered {result!r}")

        def otherFunc(self) -> None:
            print("server: otherFunc()")

    print(f"server: listening on {', '.join(server.endpoints)}")
    return server


async def create_client(url: str) -> None:
    client = Client()
    client.connect(url)
    async with client:  # start() now, stop() at the end
        echo = SimpleEcho(client)  # the server's SimpleEcho, as in the seed
        result = await echo.echo("test")
        print(f"client: echo returned {result!r}")
        assert result == "test"

        back_and_forth = BackAndForth(client)
        await back_and_forth.otherFunc()

        # A method taking a one-method interface can be used as a decorator: the decorated
        # function is sent as the callback, and the name now holds the call's future.
        @back_and_forth.callMeMaybe
        async def callback(callback: Any = None) -> str:
            print("client: my callback was called; calling the lambda it was given")
            result = await callback()
            print(f"client: the server's lambda returned {result!r}")
            assert result == "internal callback"
            return f"thanks for {result!r}"

        await callback
        print(f"client: tables now {client.stats()}")


async def main() -> None:
    server = await create_server()
    await create_client(server.endpoints[0])
    await asyncio.sleep(0.05)  # let the releases of the callbacks arrive
    print(f"server: tables now {server.stats()}")
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
