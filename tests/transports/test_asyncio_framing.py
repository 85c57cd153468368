"""Frames cut anywhere by the network arrive whole and in order (asyncio and trio).

The server reads into a shared scratch buffer, completes a partial frame with the first bytes
of the next read, reads a frame bigger than a read straight into a buffer of its size, and
reads more at once while frames are big (asyncio_transport: ``_take``, ``_keep_big``). A peer
made of a plain blocking socket in a thread writes hand-made frames (a 4-byte big-endian length
and a msgpack array, as documented in cara/rpc/wire_cara.py) in pieces of random sizes, with
pauses so that each piece is a read of its own: headers split, bodies split, many frames in one
piece. Every answer must come back, in order, equal to what was sent.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from typing import Any

import msgpack
import pytest

from cara.rpc import wire_cara as M
from tests.transports.backends import BACKENDS, sleep
from tests.transports.backends import run as run_on
from tests.transports.support import connected, ifaces, serving

#: Each test runs with the frame loop in C and in Python (tests/transports/conftest.py).
pytestmark = pytest.mark.usefixtures("frame_loop")

#: Text sizes: tiny, around a read (64 KiB), over the big-frame mark, several reads' worth.
SIZES = [1, 3, 1000, 16_000, 65_000, 65_536, 70_000, 140_000, 300_000, 1_500_000]


def _frame(message: Any) -> bytes:
    body = msgpack.packb(message)
    return struct.pack(">I", len(body)) + body


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = sock.recv(min(n - got, 1 << 20))
        if not part:
            raise AssertionError(f"connection closed after {got} of {n} bytes")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _recv_message(sock: socket.socket) -> Any:
    (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
    return msgpack.unpackb(_recv_exactly(sock, size), strict_map_key=False)


def _peer(url: str, echo_id: int, seed: int, outcome: dict[str, Any]) -> None:
    """Send echo calls of every size in randomly cut pieces; read and check the answers."""
    rng = random.Random(seed)
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    texts = [rng.choice("abcdé") * n for n in SIZES for _ in range(2)]
    rng.shuffle(texts)
    stream = _frame([M.BOOTSTRAP, 100, echo_id]) + b"".join(
        _frame([M.CALL, q, [100], echo_id, 0, {0: text}, []]) for q, text in enumerate(texts))
    try:
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = threading.Thread(target=_check_answers, args=(sock, texts, outcome))
            reader.start()
            pos = 0
            while pos < len(stream):
                # mostly small pieces (headers and bodies cut anywhere), some large ones
                n = rng.choice([1, 2, 3, 5, rng.randrange(1, 100), rng.randrange(1, 70_000),
                                rng.randrange(1, 400_000)])
                sock.sendall(stream[pos:pos + n])
                pos += n
                if rng.random() < 0.3:
                    threading.Event().wait(0.002)  # let the server read this piece alone
            reader.join(30)
    except Exception as exc:
        outcome.setdefault("error", repr(exc))
    outcome["done"] = True


def _check_answers(sock: socket.socket, texts: list[str], outcome: dict[str, Any]) -> None:
    try:
        first = _recv_message(sock)
        assert first[:2] == [M.RETURN, 100], first[:2]
        for q, text in enumerate(texts):
            answer = _recv_message(sock)
            assert answer[:2] == [M.RETURN_FINAL, q], answer[:2]
            assert answer[2] == {0: text}, f"answer {q}: {len(answer[2][0])} characters " \
                                            f"instead of {len(text)}"
        outcome["answers"] = len(texts)
    except Exception as exc:
        outcome["error"] = repr(exc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_cut_at_random_points_arrive_whole_and_in_order(backend: str) -> None:
    I = ifaces()

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text)) as server:
            outcomes: list[dict[str, Any]] = [{} for _ in range(3)]
            threads = [threading.Thread(target=_peer,
                                        args=(server.endpoints[0], I["Echo"].id, seed, out))
                       for seed, out in enumerate(outcomes)]
            for thread in threads:  # three at once: the scratch buffer is shared
                thread.start()
            for _ in range(3000):
                if all(out.get("done") for out in outcomes):
                    break
                await sleep(0.01)
            for out in outcomes:
                assert out.get("error") is None and out.get("answers") == 2 * len(SIZES), out
            assert server.limit_stats()["buffered"] == 0

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_answers_reach_a_client_whole(backend: str) -> None:
    """The client's side of the same path: answers of every size, many in flight at once."""
    I = ifaces()

    async def main() -> None:
        from tests.transports.backends import gather

        async with serving((I["Echo"], lambda text: text)) as server:
            async with connected(server) as client:
                echo = client.bootstrap(I["Echo"])
                texts = [ch * n for n in SIZES for ch in "xé"]
                assert await gather(*[echo.echo(t) for t in texts]) == texts
                for text in texts:  # one at a time too
                    assert await echo.echo(text) == text

    run_on(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_oversized_header_cut_in_pieces_aborts_before_the_body(backend: str) -> None:
    """The frame limit holds when the 4-byte header itself arrives a byte at a time."""
    I = ifaces()

    def peer(url: str, outcome: dict[str, Any]) -> None:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(_frame([M.BOOTSTRAP, 100, I["Echo"].id]))
                outcome["bootstrap"] = _recv_message(sock)[:2]
                for byte in struct.pack(">I", 70_000):  # over max_frame_size=65,536
                    sock.sendall(bytes([byte]))
                    threading.Event().wait(0.02)
                outcome["abort"] = _recv_message(sock)
                outcome["eof"] = sock.recv(1) == b""
        except Exception as exc:
            outcome["error"] = repr(exc)
        outcome["done"] = True

    async def main() -> None:
        async with serving((I["Echo"], lambda text: text), max_frame_size=65_536) as server:
            outcome: dict[str, Any] = {}
            threading.Thread(target=peer, args=(server.endpoints[0], outcome)).start()
            for _ in range(1000):
                if outcome.get("done"):
                    break
                await sleep(0.01)
            assert outcome.get("bootstrap") == [M.RETURN, 100], outcome
            abort = outcome["abort"]
            assert abort[0] == M.ABORT and "70000 bytes exceeds the limit" in str(abort), abort
            assert outcome["eof"] is True

    run_on(backend, main)
