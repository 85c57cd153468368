"""A stream consumer on pycapnp (schema tests/peers/stream.capnp): the pycapnp side of the
streaming tests and benchmark, for cara producers on ``capnp://``.

Usage::

    python tests/peers/pycapnp_stream_server.py STREAM_CAPNP HOST PORT

PORT may be 0. Each connection's bootstrap capability is a ``Source``; ``open(delay, failAt, hash)``
gives a new ``Sink`` whose ``write(chunk)`` (``-> stream``: libcapnp delivers the calls of one
sink one at a time, in order) counts the chunk, adds it to a SHA-256 of everything received
(unless ``hash`` is false),
sleeps ``delay`` seconds, and raises on chunk number ``failAt`` (from 1; 0: never);
``done()`` returns ``(total, count, digest)``. Prints ``READY <port>`` once listening; ends on
``quit`` or end of file on stdin (see peerlib.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

import capnp
from peerlib import load_streaming, parse_endpoint, serve_bootstrap

USAGE = "pycapnp_stream_server.py STREAM_CAPNP HOST PORT"


async def serve(schema: str, host: str, port: int) -> None:
    module: Any = load_streaming(schema)

    class Sink(module.Sink.Server):
        def __init__(self, delay: float, fail_at: int, hash: bool) -> None:
            self.delay = delay
            self.fail_at = fail_at
            self.total = 0
            self.count = 0
            self.hash = hashlib.sha256() if hash else None

        async def write(self, chunk: bytes, **kwargs: Any) -> None:
            self.count += 1
            if self.count == self.fail_at:
                raise ValueError(f"chunk {self.count} refused")
            self.total += len(chunk)
            if self.hash is not None:
                self.hash.update(chunk)
            if self.delay:
                await asyncio.sleep(self.delay)

        async def done(self, _context: Any, **kwargs: Any) -> None:
            results = _context.results
            results.total = self.total
            results.count = self.count
            results.digest = self.hash.digest() if self.hash is not None else b""

    class Source(module.Source.Server):
        async def open(self, delay: float, failAt: int, hash: bool,
                       **kwargs: Any) -> Any:
            return Sink(delay, failAt, hash)

    await serve_bootstrap(Source, host, port)


def main(argv: list[str]) -> None:
    schema, host, port, _ = parse_endpoint(argv, USAGE)
    asyncio.run(capnp.run(serve(schema, host, port)))


if __name__ == "__main__":
    main(sys.argv[1:])
