"""Shared pieces of the transport tests: implementations and a server on loopback (the
implementations and helpers that tests/transports/backends.py's primitives use run under asyncio
and trio alike)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from cara.rpc import InterfaceInfo, register_interface
from cara.transports import Client, Server
from tests.rpc.schemas import load
from tests.transports.backends import Event, gather, is_cancellation, sleep
from tests.transports.backends import eventually as eventually  # (re-exported)

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
        self.cancelled = Event()
        self.started = 0

    async def sleep(self, seconds: float) -> bool:
        self.started += 1
        try:
            await sleep(seconds)
        except BaseException as exc:
            if is_cancellation(exc):
                self.cancelled.set()
            raise
        return True


class CalcImpl:
    """Implements Calc; counts handler starts and cancellations for the cancellation tests."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.cancel_seen = Event()

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
            await sleep(seconds)
        except BaseException as exc:
            if is_cancellation(exc):
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
        results = await gather(*[cap.cast(callback).call(value) for cap in cbs])
        return sum(results)


class PeakSleep:
    """A ``sleep`` handler that records the most handlers running at once (``peak``)."""

    def __init__(self) -> None:
        self.running = self.peak = 0

    async def sleep(self, seconds: float) -> bool:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await sleep(seconds)
        self.running -= 1
        return True


async def check_handlers_capped_at_20(calc: Any, impl: PeakSleep) -> None:
    """On a server with max_answers=20 serving ``impl``: 20 handlers run, 20 calls wait, the
    rest are refused as Overloaded, and the connection keeps working."""
    from cara.rpc import Overloaded

    assert await gather(*[calc.sleep(0.02) for _ in range(40)]) == [True] * 40
    assert impl.peak == 20
    results = await gather(*[calc.sleep(0.3) for _ in range(100)], return_exceptions=True)
    assert results[:40] == [True] * 40
    assert all(isinstance(r, Overloaded) for r in results[40:]), results[40:]
    assert impl.peak == 20
    assert await calc.sleep(0) is True


async def check_remote_errors(calc: Any) -> None:
    """``calc.fail`` on a server sending tracebacks: builtins rebuilt by name with the remote
    traceback as their cause, anything else as Failed naming its type."""
    from cara.rpc import Failed, RemoteTraceback

    with pytest.raises(ValueError, match=r"^bad value$") as info:
        await calc.fail("ValueError", "bad value")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "def fail" in cause.text or "raise errors[kind](message)" in cause.text
    with pytest.raises(KeyError) as kinfo:
        await calc.fail("KeyError", "k")
    assert kinfo.value.args == ("k",)
    with pytest.raises(ZeroDivisionError, match="zero"):
        await calc.fail("ZeroDivisionError", "zero")
    with pytest.raises(Failed, match="Custom: mine") as finfo:
        await calc.fail("Custom", "mine")
    assert finfo.value.remote_type == "Custom"
    assert await calc.add(1, 1) == 2  # the connection is still usable after errors


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

