"""Shared pieces of the asyncio transport tests: implementations and a server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from cara.rpc import InterfaceInfo, register_interface
from cara.transports import Client, Server
from tests.rpc.schemas import load

T = TypeVar("T")


def ifaces() -> dict[str, InterfaceInfo]:
    return load()


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test coroutine on a fresh loop, failing (not hanging) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Custom(Exception):
    """Not a builtin: must arrive as cara.rpc.Failed, never be imported by name."""


class SleepImpl:
    """A ``sleep(seconds)`` method for the cancellation tests: ``started`` counts the calls that
    began, ``cancelled`` is set when one is cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = 0

    async def sleep(self, seconds: float) -> bool:
        self.started += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return True


class CalcImpl:
    """Implements Calc; counts handler starts and cancellations for the cancellation tests."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.cancel_seen = asyncio.Event()

    def add(self, a: int, b: int) -> int:
        return a + b

    def fail(self, kind: str, message: str) -> None:
        errors: dict[str, type[Exception]] = {
            "ValueError": ValueError, "KeyError": KeyError, "Custom": Custom,
            "ZeroDivisionError": ZeroDivisionError,
        }
        raise errors[kind](message)

    async def sleep(self, seconds: float) -> bool:
        self.started += 1
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancel_seen.set()
            raise
        return True

    def pair(self) -> tuple[int, str]:
        return (3, "three")

    def info(self) -> dict[str, Any]:
        return {"name": "calc", "count": 7}

    async def takeInfo(self, info: dict[int, Any]) -> int:
        # Info is a named param struct: it arrives whole, keyed by field number.
        callback = ifaces()["Callback"]
        total = int(info.get(1, 0))
        if info.get(2) is not None:
            total += await info[2].cast(callback).call(1)
        for cap in info.get(3) or []:
            total += await cap.cast(callback).call(1)
        return total

    async def callBack(self, cb: Any, value: int) -> int:
        return int(await cb.call(value))

    def makeCallback(self, offset: int) -> Callable[[int], int]:
        return lambda value: value + offset

    async def callAll(self, cbs: list[Any], value: int) -> int:
        callback = ifaces()["Callback"]
        results = await asyncio.gather(*[cap.cast(callback).call(value) for cap in cbs])
        return sum(results)


class HolderImpl:
    def __init__(self) -> None:
        self.held: Any = None

    def put(self, cap: Any) -> None:
        self.held = cap

    def get(self) -> Any:
        return self.held

    async def callHeld(self, value: int) -> int:
        return int(await self.held.call(value))


@contextlib.asynccontextmanager
async def serving(*impls: tuple[InterfaceInfo, Any], url: str = "tcp://127.0.0.1:0",
                  **options: Any) -> AsyncIterator[Server]:
    server = Server(**options)
    server.bind(url)
    await server.start()
    for iface, impl in impls:
        register_interface(server, iface, impl)
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def connected(server: Server, **options: Any) -> AsyncIterator[Client]:
    client = Client(**options)
    client.connect(server.endpoints[0])
    async with client:
        yield client


async def eventually(check: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Wait until ``check()`` holds (releases and cancellations travel asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
