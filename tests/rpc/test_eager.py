"""cara.rpc.eager: a handler's coroutine takes its first step in the turn of its call, inside
the task that runs the rest, and behaves as under a plain asyncio task otherwise."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
from typing import Any

import msgpack
import pytest

from cara.rpc import Connection, Services
from cara.rpc import wire_cara as M
from cara.rpc.eager import start
from tests.rpc.schemas import load
from tests.rpc.test_connection import settle

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="a task takes the context its first step ran in from Python 3.11: no eager start "
           "before it")

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outer")


def test_a_coroutine_that_ends_in_its_first_step_is_done_at_once() -> None:
    async def main() -> None:
        seen: list[Any] = []

        async def handler() -> int:
            seen.append(asyncio.current_task())
            VAR.set("inner")  # (in the task's own context, not the caller's)
            return 7

        outer = asyncio.current_task()
        started = start(handler(), asyncio.get_running_loop())
        assert started.done and started.value == 7 and started.error is None
        assert started.task is None
        task = seen[0]
        assert isinstance(task, asyncio.Task) and task is not outer
        assert asyncio.current_task() is outer  # the caller's task is current again
        assert VAR.get() == "outer"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # (3.11: the task's empty step reports nothing; 3.12's own eager task keeps the value)
        assert task.done() and task.result() == (7 if sys.version_info >= (3, 12) else None)

    asyncio.run(main())


def test_an_error_or_a_cancellation_in_the_first_step_is_reported_not_logged() -> None:
    async def main() -> None:
        logged: list[Any] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: logged.append(ctx))

        async def fails() -> None:
            raise ValueError("no")

        async def cancels() -> None:
            raise asyncio.CancelledError()

        started = start(fails(), asyncio.get_running_loop())
        assert started.done and isinstance(started.error, ValueError)
        started = start(cancels(), asyncio.get_running_loop())
        assert started.done and isinstance(started.error, asyncio.CancelledError)
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        assert logged == []

    asyncio.run(main())


def test_a_coroutine_that_waits_goes_on_in_its_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()
        steps: list[str] = []

        async def handler() -> str:
            steps.append("first")
            VAR.set("inner")
            value = await gate
            steps.append(f"rest {VAR.get()} {asyncio.current_task() is task_seen[0]}")
            return value + "!"

        task_seen: list[Any] = []

        async def spy() -> str:
            task_seen.append(asyncio.current_task())
            return await handler()

        started = start(spy(), loop)
        assert not started.done and steps == ["first"]
        assert started.task is task_seen[0]
        gate.set_result("ok")
        assert await started.task == "ok!"
        assert steps == ["first", "rest inner True"]
        assert VAR.get() == "outer"

    asyncio.run(main())


def test_cancelling_before_the_task_steps_cancels_what_the_coroutine_waits_on() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inner = loop.create_future()
        seen: list[str] = []

        async def handler() -> None:
            try:
                await inner
            except asyncio.CancelledError:
                seen.append("cancelled where it waits")
                raise

        started = start(handler(), loop)
        assert started.task is not None
        started.task.cancel()  # before the task's first step
        with pytest.raises(asyncio.CancelledError):
            await started.task
        assert inner.cancelled() and seen == ["cancelled where it waits"]

    asyncio.run(main())


def test_cancelling_later_works_as_for_any_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def handler() -> None:
            await asyncio.sleep(0)
            try:
                await asyncio.sleep(10)
            finally:
                seen.append("finally")

        started = start(handler(), loop)
        assert started.task is not None
        await asyncio.sleep(0.01)
        started.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started.task
        assert seen == ["finally"]

    asyncio.run(main())


def test_a_start_inside_a_started_coroutine_gives_the_outer_task_back() -> None:
    """A local capability's async method called from a handler's first step starts inside it:
    each step sees its own task as current, and the outer one is current again after."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[Any] = []

        async def inner() -> str:
            seen.append(("inner", asyncio.current_task()))
            return "in"

        async def outer() -> str:
            me = asyncio.current_task()
            got = start(inner(), loop)
            seen.append(("outer again", asyncio.current_task() is me))
            return f"out+{got.value}"

        caller = asyncio.current_task()
        started = start(outer(), loop)
        assert started.done and started.value == "out+in"
        assert seen[1] == ("outer again", True)
        assert seen[0][1] is not caller and isinstance(seen[0][1], asyncio.Task)
        assert asyncio.current_task() is caller

    asyncio.run(main())


def test_asyncio_timeout_works_in_the_first_step() -> None:
    async def main() -> None:
        async def handler() -> str:
            try:
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                    await asyncio.sleep(10)
            except TimeoutError:
                return "timed out"
            return "slept"

        started = start(handler(), asyncio.get_running_loop())
        assert started.task is not None
        assert await started.task == "timed out"

    asyncio.run(main())


def test_an_async_handler_that_does_not_wait_is_answered_in_the_turn_of_its_call() -> None:
    """No loop turn between a call's frame and its return; a call pipelined on a capability
    an async handler returns, in the same read, is answered in that turn too."""
    I = load()

    async def main() -> None:
        async def add(a: int, b: int) -> int:
            return a + b

        async def make_callback(offset: int) -> Any:
            return {"call": lambda value: value + offset}

        services = Services()
        services.register(I["Calc"], {"add": add, "makeCallback": make_callback})
        frames: list[bytes] = []
        conn = Connection(frames.append, services=services)
        calc_id, cb_id = I["Calc"].id, I["Callback"].id
        conn.receive(msgpack.packb([M.BOOTSTRAP, 100, calc_id]))
        conn.receive(msgpack.packb([M.CALL, 0, [100], calc_id, 0, {0: 2, 1: 3}, []]))
        conn.receive(msgpack.packb([M.CALL, 1, [100], calc_id, 7, {0: 10}, []]))
        conn.receive(msgpack.packb([M.CALL, 2, [1, 0], cb_id, 0, {0: 5}, []]))
        returns = [msgpack.unpackb(f, strict_map_key=False) for f in frames[1:]]
        assert [r[:2] for r in returns] == [[M.RETURN_FINAL, 0], [M.RETURN, 1],
                                            [M.RETURN_FINAL, 2]]
        assert returns[0][2] == {0: 5} and returns[2][2] == {0: 15}
        await settle()
        assert len(frames) == 4

    asyncio.run(main())


def test_eager_start_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()

        async def now() -> Any:
            return asyncio.current_task()

        async def later() -> str:
            return await gate

        started = start(now(), loop)
        assert started.done and isinstance(started.value, asyncio.Task)
        started = start(later(), loop)
        assert not started.done and started.task is not None
        gate.set_result("ok")
        assert await started.task == "ok"

    uvloop.run(main())
