"""The test proxy (tests/peers/proxy.py): bytes pass unchanged both ways and are recorded, every
chunk is delayed by the given latency without chunks queueing behind each other, ends of file
pass on, and Cap'n Proto stream framing is cut into messages."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Coroutine
from typing import Any

from tests.peers.proxy import Proxy, split_frames

DELAY = 0.05


async def echo_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.write(b"BYE")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def test_delay_is_latency_per_chunk_and_both_streams_are_recorded() -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server, Proxy("127.0.0.1", port, delay=DELAY, record=True) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            # one round trip costs 2 x DELAY
            t0 = time.perf_counter()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"PING"
            rtt = time.perf_counter() - t0
            assert 2 * DELAY <= rtt < 2 * DELAY + 0.08, rtt
            # chunks sent 10 ms apart arrive 10 ms apart: they do not queue behind each other
            t0 = time.perf_counter()
            for word in (b"a", b"b", b"c"):
                writer.write(word)
                await writer.drain()
                await asyncio.sleep(0.01)
            got = b""
            while len(got) < 3:
                got += await reader.read(10)
            spent = time.perf_counter() - t0
            assert got == b"ABC"
            assert spent < 2 * DELAY + 0.02 + 0.06, spent  # serial delays would take 0.2 s
            # an end of file passes through, and what the server sends after it arrives
            writer.write_eof()
            assert await reader.read() == b"BYE"
            writer.close()
            await writer.wait_closed()
        [rec] = proxy.connections
        assert bytes(rec.to_server) == b"pingabc"
        assert bytes(rec.to_client) == b"PINGABCBYE"

    run(main())


def test_without_record_nothing_is_kept_and_stop_cuts_open_connections() -> None:
    async def main() -> None:
        server, port = await echo_server()
        async with server:
            proxy = await Proxy("127.0.0.1", port).start()
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"X"
            await proxy.stop()
            assert await reader.read() == b""  # cut, not hanging
            writer.close()
            assert proxy.connections[0].to_server == b""

    run(main())


def test_upstream_refusing_closes_the_client_side() -> None:
    async def main() -> None:
        server, port = await echo_server()
        server.close()
        await server.wait_closed()
        async with Proxy("127.0.0.1", port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            assert await reader.read() == b""
            writer.close()
        assert proxy.connections == []

    run(main())


def test_split_frames_follows_the_segment_table() -> None:
    one = struct.pack("<II", 0, 1) + b"\x01" * 8                           # 1 segment, 1 word
    two = struct.pack("<IIII", 1, 1, 2, 0) + b"\x02" * 24                  # 2 segments, padded
    stream = one + two + one[:10]                                          # a partial message
    assert split_frames(stream) == [one, two]
    assert split_frames(b"") == []
    assert split_frames(struct.pack("<I", 100000)) == []                  # absurd table: stop
