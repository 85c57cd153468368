"""A worker process for the NATS tests: serves ``Work`` (WORK_SCHEMA) on the nats:// URL given,
prints READY, and serves until its stdin closes (or it is killed).

    python nats_worker.py nats://127.0.0.1:4222/service LEASE
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

WORK_SCHEMA = """
@0xd4f1a2b3c4d5e6f7;

interface Pinned {
    pid @0 () -> (pid :UInt32);
}

interface Work {
    burn @0 (rounds :UInt32) -> (pid :UInt32);
    pid @1 () -> (pid :UInt32);
    pin @2 () -> (cap :Pinned);
}
"""


def interfaces() -> dict[str, Any]:
    from tests.rpc.schemas import load

    return load(WORK_SCHEMA)


def burn(rounds: int) -> int:
    """CPU only: ``rounds`` steps of integer arithmetic, then this process's id."""
    x = 0
    for i in range(rounds):
        x = (x * 31 + i) % 1_000_003
    return os.getpid() if x >= 0 else 0


class PinnedImpl:
    def pid(self) -> int:
        return os.getpid()


class WorkImpl:
    def burn(self, rounds: int) -> int:
        return burn(rounds)

    def pid(self) -> int:
        return os.getpid()

    def pin(self) -> Any:
        return PinnedImpl()


async def main(url: str, lease: float) -> None:
    from cara.transports import Server

    ifaces = interfaces()
    server = Server(lease=lease)
    server.bind(url)
    server.services.register(ifaces["Work"], WorkImpl())
    await server.start()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
