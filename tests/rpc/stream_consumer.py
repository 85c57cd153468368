"""The cara side of the streaming tests: a ``Source`` of ``Sink``s (tests/peers/stream.capnp)
that counts, hashes and optionally slows down or refuses chunks -- the same behaviour as the
pycapnp consumer tests/peers/pycapnp_stream_server.py.

Used in the tests' own process (:func:`implementation`), or run in a process of its own so that
the producer's memory can be measured alone::

    python -m tests.rpc.stream_consumer URL      # prints `READY <endpoint>`, ends at EOF on stdin
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import cara
from tests.transports.backends import sleep

STREAM_CAPNP = Path(__file__).resolve().parent.parent / "peers" / "stream.capnp"
stream_capnp: Any = cara.load(str(STREAM_CAPNP))


class Sink(stream_capnp.Sink):  # type: ignore[misc]
    """Counts (and hashes) every chunk; sleeps ``delay`` per chunk; refuses chunk ``fail_at``.
    ``running``/``most_running`` watch that the calls come one at a time."""

    def __init__(self, delay: float = 0.0, fail_at: int = 0, hash: bool = True) -> None:
        self.delay = delay
        self.fail_at = fail_at
        self.total = 0
        self.count = 0
        self.hash = hashlib.sha256() if hash else None
        self.running = 0
        self.most_running = 0

    async def write(self, chunk: bytes) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            self.count += 1
            if self.count == self.fail_at:
                raise ValueError(f"chunk {self.count} refused")
            self.total += len(chunk)
            if self.hash is not None:
                self.hash.update(chunk)
            if self.delay:
                await sleep(self.delay)  # (asyncio's or trio's)
        finally:
            self.running -= 1

    def done(self) -> tuple[int, int, bytes]:
        return self.total, self.count, self.hash.digest() if self.hash is not None else b""


class Source(stream_capnp.Source):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    def open(self, delay: float, fail_at: int, hash: bool) -> Sink:
        sink = Sink(delay, fail_at, hash)
        self.sinks.append(sink)
        return sink


async def serve(url: str) -> None:
    server = cara.Server()
    server.bind(url)
    server.services.register(stream_capnp.Source, Source())
    await server.start()
    print("READY", server.endpoints[0], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until end of file
    await server.stop()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
