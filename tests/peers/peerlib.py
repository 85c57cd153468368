"""What the pycapnp peer scripts share: argument parsing, the live-object counter and the
command loop on stdin.

The scripts in this folder run in a process of their own (``python tests/peers/<script>.py``),
so this module is imported as a top-level module (the script's folder is ``sys.path[0]``); it
imports nothing from cara.

Conventions of every peer (documented once here, relied on by :mod:`tests.peers.harness`):

- stdout carries one line per event, flushed at once: ``READY <port>`` when a server listens,
  ``<step> PASS`` per client step, ``live <n>`` in answer to ``stats``, benchmark figures as
  ``key=value`` words. Tracebacks and diagnostics go to stderr.
- When stdin is a pipe or a terminal the peer reads commands from it, one per line:
  ``stats`` -> ``live <n>`` (after a garbage collection), ``quit`` -> exit 0. End of file on
  such a stdin also ends the peer, so a peer never outlives the test process that started it.
  When stdin is anything else (``/dev/null``, a file) it is ignored.
"""

from __future__ import annotations

import asyncio
import gc
import os
import stat
import sys
from collections.abc import Callable
from typing import Any


class Counted:
    """Mixin that counts live instances of capability implementations in this process.

    ``Counted.live`` goes up in ``__init__`` and down in ``__del__``: once libcapnp drops its last
    reference to an exported object (the peer sent Release, or the connection ended) and Python
    collects it, the count falls. Put it first among the bases so its ``__init__`` runs.
    """

    live = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Counted.live += 1

    def __del__(self) -> None:
        Counted.live -= 1


def live_count() -> int:
    """The number of live :class:`Counted` objects, after collecting cycles."""
    gc.collect()
    return Counted.live


def say(line: str) -> None:
    """Print one protocol line on stdout and flush it, so a reader sees it at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    """Report a fatal error on stderr and exit 1."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    raise SystemExit(1)


def parse_endpoint(argv: list[str], usage: str, extra: int = 0) -> tuple[str, str, int, list[str]]:
    """``SCHEMA HOST PORT [extra...]`` -> (schema path, host, port, the rest); exits 2 on misuse."""
    if len(argv) < 3 or len(argv) > 3 + extra:
        sys.stderr.write(f"usage: {usage}\n")
        raise SystemExit(2)
    schema, host, port_text, *rest = argv
    if not os.path.isfile(schema):
        sys.stderr.write(f"no such schema file: {schema}\n")
        raise SystemExit(2)
    try:
        port = int(port_text)
    except ValueError:
        sys.stderr.write(f"PORT must be an integer, not {port_text!r}\n")
        raise SystemExit(2) from None
    return schema, host, port, rest


async def connect(host: str, port: int) -> Any:
    """A pycapnp two-party RPC client connected to HOST:PORT; exits 1 with a message when the
    connection is refused."""
    import capnp

    try:
        stream = await capnp.AsyncIoStream.create_connection(host=host, port=port)
    except OSError as exc:
        fail(f"cannot connect to {host}:{port}: {exc}")
    return capnp.TwoPartyClient(stream)


def stdin_is_a_channel() -> bool:
    """True when stdin is a pipe, a socket or a terminal (so commands can come on it)."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


class Commands:
    """Commands on stdin, one per line; the stream is opened once, on first use."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None

    async def next(self) -> str | None:
        """The next command word; None at end of file. Waits forever when stdin is not a
        channel (see :func:`stdin_is_a_channel`)."""
        if self._reader is None:
            if not stdin_is_a_channel():
                await asyncio.Event().wait()
            reader = asyncio.StreamReader()
            await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            self._reader = reader
        line = await self._reader.readline()
        return line.decode("utf-8", "replace").strip() if line else None

    async def serve(self, on_stats: Callable[[], int] = live_count, until: str = "") -> bool:
        """Answer ``stats`` (``live <n>``) until ``quit`` or end of file (then return False) or
        until the command ``until`` when one is given (then return True)."""
        while True:
            word = await self.next()
            if word is None or word == "quit":
                return False
            if until and word == until:
                return True
            if word == "stats":
                say(f"live {on_stats()}")
            elif word:
                say(f"error unknown command {word!r}")


async def serve_bootstrap(make: Callable[[], Any], host: str, port: int) -> None:
    """Serve ``make()`` as each connection's bootstrap capability on host:port; print
    ``READY <port>``; answer commands on stdin until ``quit`` or end of file."""
    import capnp

    async def on_connection(stream: Any) -> None:
        await capnp.TwoPartyServer(stream, bootstrap=make()).on_disconnect()

    server = await capnp.AsyncIoStream.create_server(on_connection, host, port)
    async with server:
        say(f"READY {server.sockets[0].getsockname()[1]}")
        await Commands().serve()


def load_streaming(schema: str) -> Any:
    """``capnp.load`` a schema with ``-> stream`` methods: they import /capnp/stream.capnp,
    which pycapnp ships inside its package (and libcapnp-dev in /usr/include)."""
    import capnp

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capnp.__file__)))
    return capnp.load(schema, imports=[package_parent, "/usr/include"])
