"""An echo server on pycapnp (schema tests/peers/echo.capnp, ``SimpleEcho``), the pycapnp side of
the RPC benchmarks and a peer for cara clients on ``capnp://``.

Usage::

    python tests/peers/pycapnp_echo_server.py ECHO_CAPNP HOST PORT

ECHO_CAPNP is tests/peers/echo.capnp (the same file id and interface as the shared anchors' copy).
PORT may be 0. Each connection's bootstrap capability is a ``SimpleEcho`` whose ``echo(text)``
returns ``text``. Prints ``READY <port>`` on stdout once listening; answers ``stats`` on stdin
with ``live 0`` (it hands out no capabilities) and ends on ``quit`` or end of file on stdin (see
tests/peers/peerlib.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import capnp
from peerlib import parse_endpoint, serve_bootstrap

USAGE = "pycapnp_echo_server.py ECHO_CAPNP HOST PORT"


async def serve(schema: str, host: str, port: int) -> None:
    module: Any = capnp.load(schema)

    class Echo(module.SimpleEcho.Server):
        async def echo(self, text: str, **kwargs: Any) -> str:
            return text

    await serve_bootstrap(Echo, host, port)


def main(argv: list[str]) -> None:
    schema, host, port, _ = parse_endpoint(argv, USAGE)
    asyncio.run(capnp.run(serve(schema, host, port)))


if __name__ == "__main__":
    main(sys.argv[1:])
