"""An echo client on pycapnp (schema tests/peers/echo.capnp, ``SimpleEcho``): times calls to any
echo server on Cap'n Proto's two-party RPC, pycapnp's or cara's on ``capnp://``.

Usage::

    python tests/peers/pycapnp_echo_client.py ECHO_CAPNP HOST PORT [N [CONCURRENT [GATHERS]]]

N (default 5000) sequential calls ``echo('hello')``, each awaited before the next, then
CONCURRENT (default 5000) calls sent at once and awaited together, GATHERS times (default 1;
the median is reported); every reply is checked, after a warm-up of 100 calls. Prints on
stdout::

    sequential n=<N> seconds=<s> calls_per_s=<rate>
    concurrent n=<CONCURRENT> seconds=<s> calls_per_s=<rate>

A count of 0 skips that part. Exit 0; on a wrong reply or an error, a message on stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import sys
import time

import capnp
from peerlib import connect, fail, parse_endpoint, say

USAGE = "pycapnp_echo_client.py ECHO_CAPNP HOST PORT [N [CONCURRENT [GATHERS]]]"
TEXT = "hello"


def report(kind: str, n: int, seconds: float) -> None:
    say(f"{kind} n={n} seconds={seconds:.6f} calls_per_s={n / seconds:.0f}")


async def run(schema: str, host: str, port: int, n: int, concurrent: int,
              gathers: int = 1) -> None:
    echo = capnp.load(schema)
    client = await connect(host, port)
    cap = client.bootstrap().cast_as(echo.SimpleEcho)

    def check(text: str) -> None:
        if text != TEXT:
            fail(f"echo returned {text!r}, expected {TEXT!r}")

    for _ in range(100):
        check((await cap.echo(TEXT)).text)
    if n:
        start = time.perf_counter()
        for _ in range(n):
            check((await cap.echo(TEXT)).text)
        report("sequential", n, time.perf_counter() - start)
    if concurrent:
        times = []
        for _ in range(max(gathers, 1)):
            start = time.perf_counter()
            replies = await asyncio.gather(*(cap.echo(TEXT) for _ in range(concurrent)))
            times.append(time.perf_counter() - start)
            for reply in replies:
                check(reply.text)
        report("concurrent", concurrent, sorted(times)[len(times) // 2])


def main(argv: list[str]) -> None:
    schema, host, port, rest = parse_endpoint(argv, USAGE, extra=3)
    if not all(word.isdigit() for word in rest):
        fail(f"usage: {USAGE}")
    counts = [int(word) for word in rest] + [5000, 5000, 1][len(rest):]
    asyncio.run(capnp.run(run(schema, host, port, counts[0], counts[1], counts[2])))


if __name__ == "__main__":
    main(sys.argv[1:])
