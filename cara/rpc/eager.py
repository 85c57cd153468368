"""Starting a handler's coroutine at once: its first step runs in the loop turn of its call.

asyncio before 3.12 runs a new task's first step one loop turn after ``create_task``, and the
task's done callbacks one more turn after it ends. A handler that awaits only what is ready (a
local capability's sync method, a promise already settled) then costs two loop turns and a
callback before its answer can leave, and a call pipelined on that answer waits behind them:
the calculator sample's ``evaluate`` is such a handler.

:func:`start` gives such a handler the answer of a plain function. It makes the task as
``create_task`` would, runs the coroutine's first step now, with that task current
(``asyncio.current_task()`` is it, so ``asyncio.timeout`` and task groups work in that step)
and in the task's own copy of the context, then:

* the coroutine returned (or raised) in that step: the outcome is known now; the task only
  runs one empty step later, and its result is ``None`` (nothing is left for it to report);
* the coroutine waits on a future: the task goes on from there, exactly as if it had taken the
  first step itself (cancelling the task cancels that future and raises ``CancelledError``
  where the coroutine waits).

On Python 3.12 and later this is asyncio's own eager start (``Task(eager_start=True)``). On
3.10, whose tasks cannot be handed a context, and on loops that are not asyncio's (cara's trio
bridge) the task starts as ``create_task`` starts it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Coroutine, Generator
from types import GeneratorType
from typing import Any

__all__ = ["Started", "is_awaitable", "start"]

_EAGER_TASKS = sys.version_info >= (3, 12)
#: Before 3.11 a task cannot be given the context its first step ran in: no eager start there.
_EAGER_STEP = sys.version_info >= (3, 11)
_current_task = asyncio.current_task
_enter_task = asyncio.tasks._enter_task
_leave_task = asyncio.tasks._leave_task


class Started:
    """What :func:`start` did: ``done`` (the coroutine ended in its first step: ``error`` is
    what it raised, else ``value`` what it returned) or, if not, ``task`` runs the rest."""

    __slots__ = ("done", "error", "task", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Future[Any] | None = None


class _Rest(Coroutine[Any, Any, Any]):
    """The coroutine a task runs when :func:`start` took the first step: the task's first
    step hands it what the coroutine waits on (or ends at once if it has ended); later steps
    go to the coroutine itself."""

    __slots__ = ("_coro", "_first", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._first = True  # the task has not taken its first step
        self._waiting: Any = None  # what the coroutine yielded in the eager step

    def send(self, value: Any) -> Any:
        if self._first:
            self._first = False
            if self._coro is None:  # it ended in the eager step: nothing to report
                raise StopIteration(None)
            waiting, self._waiting = self._waiting, None
            return waiting  # the task now waits on it, as if it had taken the step itself
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = val if val is not None else typ
        if self._first:
            self._first = False
            if self._coro is None:
                raise exc
            # cancelled before its first step, while the coroutine waits: what it waits on is
            # cancelled with it (as Task.cancel does), and it gets the CancelledError there
            waiting, self._waiting = self._waiting, None
            if isinstance(exc, asyncio.CancelledError) or (
                    isinstance(exc, type) and issubclass(exc, asyncio.CancelledError)):
                cancel = getattr(waiting, "cancel", None)
                if cancel is not None:
                    cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # (the three-argument form, as it was given)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:  # (never awaited: a task runs it)
        raise TypeError("a started handler is run by its task")


#: Whether values of a type are awaitable, by type: ``inspect.isawaitable`` asks the
#: ``Awaitable`` ABC (about a microsecond) for every handler result that is not a coroutine,
#: and handlers return values of few types. Bounded.
_AWAITABLE_BY_TYPE: dict[type, bool] = {}


def is_awaitable(value: Any) -> bool:
    """``inspect.isawaitable(value)``, known by type once asked (a generator is asked each
    time: a generator-based coroutine is one by its code's flags)."""
    t = type(value)
    found = _AWAITABLE_BY_TYPE.get(t)
    if found is None:
        found = inspect.isawaitable(value)
        if t is not GeneratorType and len(_AWAITABLE_BY_TYPE) < 1024:
            _AWAITABLE_BY_TYPE[t] = found
    return found


def start(coro: Coroutine[Any, Any, Any], loop: Any) -> Started:
    """Run ``coro``'s first step now, inside the task that runs the rest (see the module
    docstring). ``KeyboardInterrupt`` and ``SystemExit`` raised in that step propagate."""
    started = Started()
    if not _EAGER_STEP or not isinstance(loop, asyncio.AbstractEventLoop):  # (trio's bridge)
        started.task = loop.create_task(coro)
        return started
    if _EAGER_TASKS:
        task = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
        if task.done():
            started.done = True
            if task.cancelled():
                started.error = asyncio.CancelledError()
            else:
                started.error = task.exception()
                if started.error is None:
                    started.value = task.result()
        else:
            started.task = task
        return started
    rest = _Rest(coro)
    context = contextvars.copy_context()
    task = loop.create_task(rest, context=context)  # type: ignore[call-arg,unused-ignore]
    previous = _current_task(loop)
    if previous is not None:
        _leave_task(loop, previous)
    _enter_task(loop, task)
    try:
        rest._waiting = context.run(coro.send, None)
    except StopIteration as stop:
        started.done, started.value = True, stop.value
    except (KeyboardInterrupt, SystemExit):
        rest._coro = None  # type: ignore[assignment]
        raise
    except BaseException as exc:
        started.done, started.error = True, exc
    finally:
        _leave_task(loop, task)
        if previous is not None:
            _enter_task(loop, previous)
    if started.done:
        rest._coro = None  # type: ignore[assignment]
    else:
        started.task = task
    return started
