"""The seed's example (SimpleEcho, BackAndForth with its callback) through the blocking client.

The server is examples/rpc_asyncio.py's, run in a thread of its own; the client is plain,
blocking code: ``cara.connect_sync(url)`` runs the connection on a private event loop in a
daemon thread, and every call returns its value. The callback is served on that loop thread, so
a callback that calls back is ``async def`` and awaits, as with the asyncio client.

    python examples/rpc_blocking.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpc_asyncio import BackAndForth, SimpleEcho, create_server

import cara


def serve_in_thread() -> tuple[str, threading.Event]:
    """Start the example's server on an event loop in a daemon thread; returns its URL and an
    event that stops it."""
    ready: list[str] = []
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        server = await create_server()
        ready.append(server.endpoints[0])
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await server.stop()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    started.wait(10)
    return ready[0], stop


def run_client(url: str) -> None:
    with cara.connect_sync(url) as client:  # connected now, closed at the end
        echo = SimpleEcho(client)  # the server's SimpleEcho, as in the seed
        result = echo.echo("test")  # blocks; returns the value
        print(f"client: echo returned {result!r}")
        assert result == "test"

        back_and_forth = BackAndForth(client)
        back_and_forth.otherFunc()

        # The decorator sends the function as the callback and calls callMeMaybe, which now
        # blocks until the server has called the callback back; the name holds its value.
        @back_and_forth.callMeMaybe
        async def callback(callback: Any = None) -> str:
            print("client: my callback was called; calling the lambda it was given")
            result = await callback()  # on the client's loop thread: await, as in asyncio
            print(f"client: the server's lambda returned {result!r}")
            assert result == "internal callback"
            return f"thanks for {result!r}"

        assert callback is None  # callMeMaybe has no results
        print(f"client: tables now {client.stats()}")


def main() -> None:
    url, stop = serve_in_thread()
    run_client(url)
    stop.set()


if __name__ == "__main__":
    main()
