"""A stream producer on pycapnp (schema tests/peers/stream.capnp): times streaming to any
``Source`` server, pycapnp's (pycapnp_stream_server.py) or cara's on ``capnp://``.

Usage::

    python tests/peers/pycapnp_stream_client.py STREAM_CAPNP HOST PORT [MB [CHUNK_KB [IN_FLIGHT]]]

Opens a sink (``open(0, 0, false)``: it only counts) and writes MB (default 64) megabytes in
chunks of CHUNK_KB (default 64) kilobytes, then calls ``done()`` and checks the total. pycapnp
has no flow control for ``-> stream`` calls (a call's promise settles on its return), so a
producer keeps at most IN_FLIGHT (default 256: 16 MB of 64 KB chunks, cara's largest window)
calls in flight, awaiting the oldest before sending more -- the best a pycapnp program can do.
Prints on stdout::

    stream mb=<MB> seconds=<s> mb_per_s=<rate> cpu=<CPU seconds this process used>

Exit 0; on a wrong total or an error, a message on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from typing import Any

import capnp
from peerlib import connect, fail, load_streaming, parse_endpoint, say

USAGE = "pycapnp_stream_client.py STREAM_CAPNP HOST PORT [MB [CHUNK_KB [IN_FLIGHT]]]"


async def run(schema: str, host: str, port: int, mb: int, chunk_kb: int, in_flight: int) -> None:
    module: Any = load_streaming(schema)
    client = await connect(host, port)
    source = client.bootstrap().cast_as(module.Source)
    sink = (await source.open(0.0, 0, False)).sink
    chunk = b"x" * (chunk_kb * 1024)
    n = mb * 1024 * 1024 // len(chunk)
    pending: collections.deque[Any] = collections.deque()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        pending.append(sink.write(chunk))
        if len(pending) >= in_flight:
            await pending.popleft()
    while pending:
        await pending.popleft()
    total = (await sink.done()).total
    seconds = time.perf_counter() - start
    if total != n * len(chunk):
        fail(f"the sink counted {total} bytes, expected {n * len(chunk)}")
    cpu = time.process_time() - cpu
    say(f"stream mb={mb} seconds={seconds:.6f} mb_per_s={mb / seconds:.1f} cpu={cpu:.3f}")


def main(argv: list[str]) -> None:
    schema, host, port, rest = parse_endpoint(argv, USAGE, extra=3)
    numbers = [int(x) for x in rest] + [64, 64, 256][len(rest):]
    asyncio.run(capnp.run(run(schema, host, port, *numbers)))


if __name__ == "__main__":
    main(sys.argv[1:])
