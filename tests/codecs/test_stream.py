"""Messages in files, sockets, byte strings and asyncio streams under pycapnp's names, against
pycapnp (libcapnp 1.x): files pycapnp writes (``write``, ``write_packed``, several messages one
after another) read by cara, and files cara writes read by pycapnp's ``read_multiple``."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from cara.errors import DecodeError
from tests.runtime.schemas import SEED_CAPNP

PEOPLE = [
    {"id": 1, "name": "Ann", "phones": [{"number": "555", "type": "home"}]},
    {"id": 2, "name": "Bo", "employment": {"employer": "Acme"}},
    {},  # an empty message: one word of root pointer
    {"id": 3, "email": "x" * 5000, "phones": [{"number": str(i)} for i in range(300)]},
]


@pytest.fixture(scope="module")
def person(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """``Person`` as cara loads it and as pycapnp loads it, from one file."""
    capnp = pytest.importorskip("capnp", reason="pycapnp is needed as the reference")
    import cara

    path = tmp_path_factory.mktemp("stream") / "person.capnp"
    path.write_text(SEED_CAPNP)
    return cara.load(path).Person, capnp.load(str(path)).Person


def _people(cls: Any) -> list[Any]:
    return [cls.Create(**p) for p in PEOPLE]


def _write_all(values: list[Any], target: Any, packed: bool) -> None:
    for value in values:
        (value.write_packed if packed else value.write)(target)


def _peer_message(peer: Any, value: dict[str, Any]) -> Any:
    msg = peer.new_message()
    for key, v in value.items():
        if key == "phones":
            phones = msg.init("phones", len(v))
            for i, phone in enumerate(v):
                for k, x in phone.items():
                    setattr(phones[i], k, x)
        elif key == "employment":
            for k, x in v.items():
                setattr(msg.employment, k, x)
        else:
            setattr(msg, key, v)
    return msg


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_reads_files_pycapnp_writes(person: tuple[Any, Any], tmp_path: Path,
                                    packed: bool) -> None:
    cls, peer = person
    path = tmp_path / "people.bin"
    with path.open("wb") as f:
        _write_all([_peer_message(peer, p) for p in PEOPLE], f, packed)  # pycapnp's write
    expected = _people(cls)
    read_multiple = cls.read_multiple_packed if packed else cls.read_multiple
    with path.open("rb") as f:
        assert list(read_multiple(f)) == expected
    with path.open("rb") as f:  # one at a time: each read stops right after its message
        read = cls.read_packed if packed else cls.read
        for value in expected:
            assert read(f) == value
        assert f.read() == b""
        with pytest.raises(DecodeError, match="no message"):
            read(f)
    data = path.read_bytes()
    from_bytes = cls.read_multiple_bytes_packed if packed else cls.read_multiple_bytes
    assert list(from_bytes(data)) == expected
    assert list(from_bytes(bytearray(data))) == expected


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_pycapnp_reads_files_cara_writes(person: tuple[Any, Any], tmp_path: Path,
                                         packed: bool) -> None:
    cls, peer = person
    path = tmp_path / "people.bin"
    with path.open("wb") as f:
        _write_all(_people(cls), f, packed)
    with path.open("rb") as f:
        read_multiple = peer.read_multiple_packed if packed else peer.read_multiple
        theirs = [cls.from_bytes(m.as_builder().to_bytes()) for m in read_multiple(f)]
    assert theirs == _people(cls)


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_sockets(person: tuple[Any, Any], packed: bool) -> None:
    """Over a socket: written with ``sendall``, read exactly (nothing after a message is
    consumed), and ``read_multiple`` ends when the peer closes."""
    cls, _ = person
    left, right = socket.socketpair()
    values = _people(cls)

    def send() -> None:
        _write_all(values, left, packed)
        left.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        first = (cls.read_packed if packed else cls.read)(right)
        rest = list((cls.read_multiple_packed if packed else cls.read_multiple)(right))
    finally:
        sender.join()
        right.close()
    assert [first, *rest] == values


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_asyncio_streams(person: tuple[Any, Any], packed: bool) -> None:
    cls, _ = person
    values = _people(cls)

    async def main() -> tuple[list[Any], list[Any]]:
        received: list[Any] = []
        done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (value := await cls.read_async(reader, packed=packed)) is not None:
                received.append(value)
            writer.close()
            done.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for value in values:
            await value.write_async(writer, packed=packed)
        writer.close()
        await done.wait()
        server.close()
        stream = asyncio.StreamReader()
        stream.feed_data(b"".join(v.to_bytes(packed=packed) for v in values))
        stream.feed_eof()
        iterated = [v async for v in cls.read_multiple_async(stream, packed=packed)]
        return received, iterated

    received, iterated = asyncio.run(main())
    assert received == values and iterated == values


def test_two_concatenated_messages_are_two(person: tuple[Any, Any]) -> None:
    cls, _ = person
    a, b = _people(cls)[:2]
    assert list(cls.read_multiple_bytes(a.to_bytes() + b.to_bytes())) == [a, b]
    with pytest.raises(DecodeError, match="bytes after the last segment"):
        cls.from_bytes(a.to_bytes() + b.to_bytes())  # one message is one message


def test_limits_apply_per_message(person: tuple[Any, Any]) -> None:
    """The traversal limit bounds each message on its own (checked from the segment table,
    before the body is read), and the nesting limit is passed on to each decode."""
    cls, _ = person
    small, big = _people(cls)[1], _people(cls)[3]
    words = len(big.to_bytes()) // 8 - 1
    stream = small.to_bytes() + big.to_bytes() + small.to_bytes()
    assert len(list(cls.read_multiple_bytes(stream, traversal_limit_in_words=words))) == 3
    messages = cls.read_multiple_bytes(stream, traversal_limit_in_words=words - 1)
    assert next(messages) == small
    with pytest.raises(DecodeError, match="too large") as info:
        next(messages)
    assert info.value.offset == len(small.to_bytes())  # where that message starts
    with pytest.raises(DecodeError):
        list(cls.read_multiple_bytes(stream, nesting_limit=1))
    with pytest.raises(DecodeError):
        cls.from_bytes(big.to_bytes(), traversal_limit_in_words=10)


@pytest.mark.parametrize("packed", [False, True], ids=["unpacked", "packed"])
def test_truncated_and_absurd_streams(person: tuple[Any, Any], packed: bool) -> None:
    """A stream that ends inside a message is an error naming the offset; a segment table
    claiming huge segments is refused before anything is allocated or read."""
    cls, _ = person
    data = b"".join(v.to_bytes(packed=packed) for v in _people(cls))
    read = cls.read_multiple_bytes_packed if packed else cls.read_multiple_bytes
    for cut in (1, 3, 8, 13, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            list(read(data[:cut]))
    huge = b"\x00\x00\x00\x00\xff\xff\xff\xff"  # one segment of 2**32 - 1 words
    if packed:
        from cara.codecs.capnp import pack

        huge = pack(huge)
    with pytest.raises(DecodeError, match="too large"):
        list(read(huge))
    many = (600).to_bytes(4, "little") + bytes(4)  # 601 segments
    with pytest.raises(DecodeError, match="segments"):
        list(read(pack_if(many, packed)))


def pack_if(data: bytes, packed: bool) -> bytes:
    from cara.codecs.capnp import pack

    return pack(data) if packed else data


def test_wrong_sources_are_clear_errors(person: tuple[Any, Any], tmp_path: Path) -> None:
    cls, _ = person
    with pytest.raises(TypeError, match="cannot read messages"):
        cls.read(42)
    path = tmp_path / "x.bin"
    path.write_bytes(cls().to_bytes())
    with path.open("r") as text, pytest.raises(TypeError, match="binary"):
        cls.read(text)
