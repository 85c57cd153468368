"""Messages in files, sockets, byte strings and asyncio streams, under pycapnp's names.

``s.write(f)`` / ``s.write_packed(f)`` write one framed message; ``S.read(f)`` /
``S.read_packed(f)`` read one; ``S.read_multiple(f)`` / ``S.read_multiple_packed(f)`` iterate
over the messages of a stream until its end; ``S.read_multiple_bytes(buf)`` (and ``_packed``)
do the same over a byte string; ``await S.read_async(reader)`` and ``await s.write_async(writer)``
work on asyncio streams (``read_async`` returns ``None`` at the end of the stream, as pycapnp's
does), and ``S.read_multiple_async(reader)`` is an async iterator.

A stream is read by a *sans-IO* parser (:func:`_message`): a generator that asks for the number
of bytes it needs next and gets them, so files, sockets, byte strings and asyncio streams share
one implementation, and nothing past the current message is ever read (a file or socket is left
exactly after it, as libcapnp leaves it). Each message is checked on its own, before its body is
read: at most 512 segments (libcapnp's fixed limit) and at most ``traversal_limit_in_words``
words in all ("Message is too large", libcapnp's ``InputStreamMessageReader`` check); then it is
decoded with the same traversal and nesting limits. A stream that ends between messages ends the
iteration; one that ends inside a message is a :class:`~cara.errors.DecodeError` naming the byte
offset in the stream.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from cara.errors import DecodeError
from cara.runtime import hooks

from .framing import DEFAULT_MAX_SEGMENTS
from .packing import _POPCOUNT, _SCATTER
from .reader import DEFAULT_NESTING_LIMIT, DEFAULT_TRAVERSAL_LIMIT

__all__ = ["read", "read_async", "read_multiple", "read_multiple_async", "read_multiple_bytes",
           "write", "write_async"]

_U32 = struct.Struct("<I")

#: What the parser yields (bytes wanted) and is sent (the bytes; shorter only at the end).
_Steps = Generator[int, bytes, "bytes | None"]


class _Unpacker:
    """Packed input turned back into words on demand (a zero or raw run may cross from one
    request into the next, so the run's state lives here)."""

    def __init__(self) -> None:
        self.zeros = 0  # words of a zero run still to give
        self.raw = 0    # words of a raw run still to read
        self.consumed = 0  # packed bytes read so far (for error offsets)

    def words(self, count: int) -> Generator[int, bytes, bytes]:
        out = bytearray()
        while count:
            if self.zeros:
                k = min(self.zeros, count)
                out += bytes(8 * k)
                self.zeros -= k
                count -= k
                continue
            if self.raw:
                k = min(self.raw, count)
                out += (yield from self._take(8 * k))
                self.raw -= k
                count -= k
                continue
            tag = (yield from self._take(1))[0]
            if tag == 0:
                out += bytes(8)
                self.zeros = (yield from self._take(1))[0]
            elif tag == 0xFF:
                out += (yield from self._take(8))
                self.raw = (yield from self._take(1))[0]
            else:
                out += _SCATTER[tag].pack(*(yield from self._take(_POPCOUNT[tag])))
            count -= 1
        return bytes(out)

    def _take(self, n: int) -> Generator[int, bytes, bytes]:
        data = yield n
        if len(data) < n:
            raise DecodeError("the stream ends inside a packed message",
                              self.consumed + len(data))
        self.consumed += n
        return data


def _message(packed: bool, max_words: int, start: int = 0) -> _Steps:
    """Parse one framed message (``packed`` or not) from a stream: yields how many bytes it
    needs, returns the message unpacked (``None`` when the stream ends before it starts)."""
    unpacker = _Unpacker() if packed else None
    offset = start  # of what is read next, in the stream (unpacked bytes: the reader's view)

    def take(n: int) -> Generator[int, bytes, bytes]:
        nonlocal offset
        if unpacker is not None:
            data = yield from unpacker.words(n // 8)
        else:
            data = yield n
            if len(data) < n:
                raise DecodeError(f"the stream ends inside a message ({len(data)} of {n} bytes"
                                  " read)", offset + len(data))
        offset += n
        return data

    first = yield (1 if packed else 8)
    if not first:
        return None  # the end of the stream, between messages
    if packed:
        assert unpacker is not None
        unpacker.consumed = 0
        head = yield from _first_packed_word(unpacker, first)
        offset += 8
    elif len(first) < 8:
        raise DecodeError(f"the stream ends inside a segment table ({len(first)} bytes)",
                          start + len(first))
    else:
        head = first
        offset += 8
    count = _U32.unpack_from(head, 0)[0] + 1
    if count > DEFAULT_MAX_SEGMENTS:
        raise DecodeError(f"message has {count} segments, more than the limit "
                          f"{DEFAULT_MAX_SEGMENTS}", start)
    table_bytes = (4 + 4 * count + 7) & ~7
    table = head + ((yield from take(table_bytes - 8)) if table_bytes > 8 else b"")
    words = sum(_U32.unpack_from(table, 4 + 4 * i)[0] for i in range(count))
    if words > max_words:
        raise DecodeError(f"message of {words} words is too large (traversal limit "
                          f"{max_words} words; raise traversal_limit_in_words to read it)", start)
    body = yield from take(8 * words)
    return table + body


def _first_packed_word(unpacker: _Unpacker, tag_byte: bytes) -> Generator[int, bytes, bytes]:
    """The first word of a packed message whose tag byte was already read."""
    unpacker.consumed = 1
    tag = tag_byte[0]
    if tag == 0:
        unpacker.zeros = (yield from unpacker._take(1))[0]
        return bytes(8)
    if tag == 0xFF:
        word = yield from unpacker._take(8)
        unpacker.raw = (yield from unpacker._take(1))[0]
        return word
    return _SCATTER[tag].pack(*(yield from unpacker._take(_POPCOUNT[tag])))


# ------------------------------------------------------------------------- drivers


def _reader_of(source: Any) -> Callable[[int], bytes]:
    """``read(n)``: up to ``n`` bytes from a file object (``read``) or a socket (``recv``),
    shorter only at the end of the stream."""
    if hasattr(source, "read"):
        call = source.read
    elif hasattr(source, "recv"):
        call = source.recv
    else:
        raise TypeError(f"cannot read messages from {type(source).__name__}: give a binary"
                        " file, a socket, or bytes (read_multiple_bytes)")

    def read_fully(n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = call(n)
            if not chunk:
                break
            if isinstance(chunk, str):
                raise TypeError("messages are read from binary streams (open the file with"
                                " 'rb')")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    return read_fully


def _run(steps: _Steps, read: Callable[[int], bytes]) -> bytes | None:
    try:
        wanted = next(steps)
        while True:
            wanted = steps.send(read(wanted))
    except StopIteration as stop:
        result: bytes | None = stop.value
        return result


def _limits(traversal_limit_in_words: int | None, nesting_limit: int | None) -> tuple[int, int]:
    return (DEFAULT_TRAVERSAL_LIMIT if traversal_limit_in_words is None
            else traversal_limit_in_words,
            DEFAULT_NESTING_LIMIT if nesting_limit is None else nesting_limit)


def _decode(cls: Any, data: bytes, traversal: int, nesting: int, offset: int) -> Any:
    try:
        return hooks.from_bytes(cls, data, traversal_limit_in_words=traversal,
                                nesting_limit=nesting)
    except DecodeError as e:
        if offset and e.offset is not None:
            raise DecodeError(f"{e.reason} (in the message at stream offset {offset})",
                              offset + e.offset) from None
        raise


def read(cls: Any, source: Any, *, packed: bool = False,
         traversal_limit_in_words: int | None = None, nesting_limit: int | None = None) -> Any:
    """``S.read(f)``: one message from a binary file or a socket (nothing after it is read).
    The end of the stream before a message is a :class:`DecodeError` (pycapnp raises too)."""
    traversal, nesting = _limits(traversal_limit_in_words, nesting_limit)
    data = _run(_message(packed, traversal), _reader_of(source))
    if data is None:
        raise DecodeError("the stream ended: no message to read", 0)
    return _decode(cls, data, traversal, nesting, 0)


def read_multiple(cls: Any, source: Any, *, packed: bool = False,
                  traversal_limit_in_words: int | None = None,
                  nesting_limit: int | None = None) -> Iterator[Any]:
    """``S.read_multiple(f)``: the messages of a file or socket, one at a time, to its end."""
    traversal, nesting = _limits(traversal_limit_in_words, nesting_limit)
    read_bytes = _reader_of(source)
    counted = 0

    def counting(n: int) -> bytes:
        nonlocal counted
        data = read_bytes(n)
        counted += len(data)
        return data

    while True:
        start = counted
        data = _run(_message(packed, traversal, start), counting)
        if data is None:
            return
        yield _decode(cls, data, traversal, nesting, start)


def read_multiple_bytes(cls: Any, data: bytes | bytearray | memoryview, *, packed: bool = False,
                        traversal_limit_in_words: int | None = None,
                        nesting_limit: int | None = None) -> Iterator[Any]:
    """``S.read_multiple_bytes(buf)``: the messages written one after another into ``buf``."""
    return read_multiple(cls, _ViewReader(data), packed=packed,
                         traversal_limit_in_words=traversal_limit_in_words,
                         nesting_limit=nesting_limit)


class _ViewReader:
    """A byte string read like a file (without copying it first)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = bytes(self.view[self.pos:self.pos + n])
        self.pos += len(chunk)
        return chunk


def write(value: Any, target: Any, *, packed: bool = False) -> None:
    """``s.write(f)``: the message to a binary file (``write``) or a socket (``sendall``)."""
    data = value.to_bytes(packed=packed)
    if hasattr(target, "write"):
        target.write(data)
    elif hasattr(target, "sendall"):
        target.sendall(data)
    else:
        raise TypeError(f"cannot write a message to {type(target).__name__}: give a binary"
                        " file or a socket")


# ------------------------------------------------------------------------- asyncio


async def _run_async(steps: _Steps, reader: Any) -> bytes | None:
    try:
        wanted = next(steps)
        while True:
            chunks = []
            need = wanted
            while need > 0:
                chunk = await reader.read(need)
                if not chunk:
                    break
                chunks.append(chunk)
                need -= len(chunk)
            wanted = steps.send(b"".join(chunks))
    except StopIteration as stop:
        result: bytes | None = stop.value
        return result


async def read_async(cls: Any, reader: Any, *, packed: bool = False,
                     traversal_limit_in_words: int | None = None,
                     nesting_limit: int | None = None) -> Any:
    """``await S.read_async(reader)``: one message from an ``asyncio.StreamReader``, or
    ``None`` when the stream ends before one starts (as pycapnp's ``read_async``)."""
    traversal, nesting = _limits(traversal_limit_in_words, nesting_limit)
    data = await _run_async(_message(packed, traversal), reader)
    return None if data is None else _decode(cls, data, traversal, nesting, 0)


async def read_multiple_async(cls: Any, reader: Any, *, packed: bool = False,
                              traversal_limit_in_words: int | None = None,
                              nesting_limit: int | None = None) -> AsyncIterator[Any]:
    """``async for s in S.read_multiple_async(reader)``: every message to the stream's end."""
    while True:
        value = await read_async(cls, reader, packed=packed,
                                 traversal_limit_in_words=traversal_limit_in_words,
                                 nesting_limit=nesting_limit)
        if value is None:
            return
        yield value


async def write_async(value: Any, writer: Any, *, packed: bool = False) -> None:
    """``await s.write_async(writer)``: the message to an ``asyncio.StreamWriter`` (drained)."""
    writer.write(value.to_bytes(packed=packed))
    await writer.drain()


for _name, _func in (("read", read), ("read_multiple", read_multiple),
                     ("read_multiple_bytes", read_multiple_bytes), ("write", write),
                     ("read_async", read_async), ("read_multiple_async", read_multiple_async),
                     ("write_async", write_async)):
    hooks.register("stream_" + _name, _func)
