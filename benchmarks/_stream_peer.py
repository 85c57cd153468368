"""The raw floor of the stream benchmark: an asyncio TCP sink run in a process of its own by
``bench_stream.py`` (the cara consumer is ``tests/rpc/stream_consumer.py``, the pycapnp one
``tests/peers/pycapnp_stream_server.py``).

Usage::

    python benchmarks/_stream_peer.py     # prints `READY <port>`; serves until EOF on stdin

Each connection sends an 8-byte little-endian count, then that many bytes; the sink reads them
(up to 1 MB per read), counting and dropping them, and answers with the count it got. Not a
benchmark itself (``run.py`` runs only ``bench_*.py``).
"""

from __future__ import annotations

import asyncio

from _rpc_peer import until_stdin_closes


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    want = int.from_bytes(await reader.readexactly(8), "little")
    got = 0
    while got < want:
        data = await reader.read(1 << 20)
        if not data:
            break
        got += len(data)
    writer.write(got.to_bytes(8, "little"))
    await writer.drain()
    writer.close()


async def serve() -> None:
    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await until_stdin_closes()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve())
