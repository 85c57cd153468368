"""A worker process for the NATS tests: serves ``Work`` (WORK_SCHEMA) on the nats:// URL given,
prints READY, and serves until its stdin closes (or it is killed). A line ``stats`` on its stdin
makes it print its server's ``stats()`` as one JSON line.

    python nats_worker.py nats://127.0.0.1:4222/service LEASE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

WORK_SCHEMA = """
@0xd4f1a2b3c4d5e6f7;

# As /capnp/cara.capnp declares it (declared here: the reference compiler runs without cara's
# import path).
annotation idempotent @0x911365c837a1b943 (method) :Void;

interface Pinned {
    pid @0 () -> (pid :UInt32);
}

interface Callback {
    call @0 (n :UInt32) -> (n :UInt32);
}

interface Work {
    burn @0 (rounds :UInt32) -> (pid :UInt32);
    pid @1 () -> (pid :UInt32);
    pin @2 () -> (cap :Pinned);
    callBack @3 (cb :Callback, n :UInt32) -> (n :UInt32);
    callPinned @4 (cap :Pinned, times :UInt32) -> (pid :UInt32);
    count @5 () -> (n :UInt32);
    idle @6 (seconds :Float64) -> (pid :UInt32) $idempotent;
    idleOnce @7 (seconds :Float64) -> (pid :UInt32);
    burnAgain @8 (rounds :UInt32) -> (pid :UInt32) $idempotent;
    keep @9 (cap :Pinned) -> (pid :UInt32);
}

interface Broker {
    put @0 (cap :Pinned) -> ();
    get @1 () -> (cap :Pinned);
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
    def __init__(self) -> None:
        self.calls = 0
        self.kept: list[Any] = []

    async def keep(self, cap: Any) -> int:
        """Holds ``cap`` for good; its ``pid()``."""
        self.kept.append(cap)
        return await cap.pid()

    def burn(self, rounds: int) -> int:
        self.calls += 1
        return burn(rounds)

    def burnAgain(self, rounds: int) -> int:
        return self.burn(rounds)

    async def idle(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()

    idleOnce = idle

    def count(self) -> int:
        """Calls of ``burn`` this worker ran."""
        return self.calls

    async def callBack(self, cb: Any, n: int) -> int:
        return await cb.call(n) + 1

    async def callPinned(self, cap: Any, times: int) -> int:
        """Calls ``cap.pid()`` ``times`` times (at least once), 100 at a time."""
        pid = 0
        for start in range(0, max(times, 1), 100):
            pids = await asyncio.gather(*[cap.pid() for _ in range(min(100, times - start))]
                                        or [cap.pid()])
            pid = pids[-1]
        return pid

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
    while True:  # until stdin closes
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if line.strip() == "stats":
            print(json.dumps(server.stats()), flush=True)
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
