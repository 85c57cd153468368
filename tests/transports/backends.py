"""Running one transport test under asyncio and under trio: the few primitives a test needs,
each doing what the framework running the test offers (``pytest.mark.parametrize("backend",
BACKENDS)`` and ``run(backend, main)``). trio tests skip when trio is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from cara.transports.threads import current_trio

T = TypeVar("T")

HAVE_TRIO = importlib.util.find_spec("trio") is not None

#: The ``backend`` parameter of a test that runs under both frameworks.
BACKENDS = [
    pytest.param("asyncio"),
    pytest.param("trio", marks=pytest.mark.skipif(not HAVE_TRIO, reason="trio is not installed")),
]


def run(backend: str, main: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run ``main()`` under ``backend``, failing (not hanging) after ``timeout`` seconds."""
    if backend == "asyncio":
        return asyncio.run(asyncio.wait_for(main(), timeout))
    import trio

    async def bounded() -> T:
        with trio.fail_after(timeout):
            return await main()

    return trio.run(bounded)


def on_trio() -> bool:
    return current_trio() is not None


async def sleep(seconds: float) -> None:
    if on_trio():
        import trio

        await trio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


def Event() -> Any:
    """An event of the running framework (asyncio's outside any)."""
    if on_trio():
        import trio

        return trio.Event()
    return asyncio.Event()


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is how the running framework cancels a task."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    if on_trio():
        import trio

        return isinstance(exc, trio.Cancelled)
    return False


async def wait_for(aw: Awaitable[T], timeout: float) -> T:
    """``await aw`` for at most ``timeout`` seconds (then ``asyncio.TimeoutError``, as
    ``asyncio.wait_for`` raises)."""
    if not on_trio():
        return await asyncio.wait_for(aw, timeout)
    import trio

    try:
        with trio.fail_after(timeout):
            return await aw
    except trio.TooSlowError:
        raise asyncio.TimeoutError(f"not done within {timeout} s") from None


async def gather(*aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    """The values of ``aws``, run concurrently (errors as values with ``return_exceptions``)."""
    if not on_trio():
        return list(await asyncio.gather(*aws, return_exceptions=return_exceptions))
    if all(isinstance(aw, asyncio.Future) for aw in aws):  # calls already on their way
        values: list[Any] = []
        for aw in aws:
            try:
                values.append(await aw)
            except Exception as exc:
                if not return_exceptions:
                    raise
                values.append(exc)
        return values
    import trio

    results: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Awaitable[Any]) -> None:
        try:
            results[i] = await aw
        except Exception as exc:
            if not return_exceptions:
                raise
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i, aw in enumerate(aws):
            nursery.start_soon(one, i, aw)
    return results


class Background:
    """A coroutine running beside the test body: ``cancel()`` it, ``await result()``."""

    def __init__(self) -> None:
        self.done = Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._cancel: Callable[[], Any] = lambda: None

    def cancel(self) -> None:
        self._cancel()

    async def result(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value

    async def _run(self, aw: Awaitable[Any]) -> None:
        try:
            self.value = await aw
        except BaseException as exc:
            self.error = exc
            if not is_cancellation(exc):
                raise
        finally:
            self.done.set()


@contextlib.asynccontextmanager
async def background(aw: Awaitable[Any]) -> AsyncIterator[Background]:
    """Run ``aw`` beside the body of the ``async with``; it is cancelled at the end if still
    running."""
    task = Background()
    if not on_trio():
        fut = asyncio.ensure_future(task._run(aw))
        task._cancel = fut.cancel
        try:
            yield task
        finally:
            fut.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fut
        return
    import trio

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def guarded() -> None:
            with scope:
                await task._run(aw)

        task._cancel = scope.cancel
        nursery.start_soon(guarded)
        yield task
        scope.cancel()


async def eventually(check: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Wait until ``check()`` holds (releases and cancellations travel asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await sleep(0.01)


# ------------------------------------------------------------------ raw byte streams


class RawStream:
    """A plain TCP connection for hand-made frames: ``send`` bytes, ``receive`` up to 64 KiB
    (``b""`` at the end), ``close``."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader = reader  # asyncio: (StreamReader, StreamWriter); trio: a SocketStream
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> RawStream:
        if on_trio():
            import trio

            stream = await trio.open_tcp_stream(host, port)
            return cls(stream, stream)
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, data: bytes) -> None:
        if on_trio():
            await self._writer.send_all(data)
        else:
            self._writer.write(data)

    async def receive(self) -> bytes:
        if not on_trio():
            data: bytes = await self._reader.read(65536)
            return data
        import trio

        try:
            data = await self._reader.receive_some(65536)
        except trio.BrokenResourceError as exc:
            raise ConnectionError(str(exc)) from exc
        return data

    async def close(self) -> None:
        if on_trio():
            await self._writer.aclose()
        else:
            self._writer.close()
