"""The server side of streaming: the calls to one object that has streaming methods are
delivered in order, and a streaming call blocks the object until it has returned.

As libcapnp's ``LocalClient`` does: while a ``-> stream`` call runs (its handler is awaiting),
every later call to the same object -- streaming or not -- waits in a queue, in arrival order,
and starts when it ends. So the handlers see the stream one call at a time, in order; a call
made after the stream (``sink.done()``) runs after every call of it; and a consumer that takes
its time holds the producer back (through the caller's flow-control window) instead of letting
calls pile up. When a streaming call fails, the object is broken: every later call to it fails
with that error, as the caller expects (it raises the error on its next call).

Objects without streaming methods do not go through a gate at all.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

from cara.rpc.description import InterfaceInfo
from cara.rpc.proxies import fresh_error, is_stream_method
from cara.runtime.interface import Interface as RuntimeInterface

__all__ = ["StreamGate", "stream_gate"]


def stream_gate(obj: object, info: InterfaceInfo | None) -> StreamGate | None:
    """A gate for implementation ``obj`` when its interface has streaming methods."""
    if isinstance(obj, RuntimeInterface):
        methods: Any = type(obj).cara_schema.all_methods.values()
    elif info is not None:
        methods = [m.spec if m.spec is not None else m for m in info.methods.values()]
    else:
        return None
    return StreamGate() if any(is_stream_method(m) for m in methods) else None


class StreamGate:
    """The calls to one object: ``wrap(run, stream)`` gives the ``run`` that goes through it."""

    __slots__ = ("broken", "running", "waiting")

    def __init__(self) -> None:
        #: A streaming call is running: later calls wait.
        self.running = False
        self.waiting: deque[tuple[Callable[[Any], Any], Any, bool, asyncio.Future[Any]]] = \
            deque()
        #: The error of the streaming call that failed: every later call raises it.
        self.broken: BaseException | None = None

    def __repr__(self) -> str:
        state = "broken" if self.broken else "streaming" if self.running else "idle"
        return f"<StreamGate {state}, {len(self.waiting)} waiting>"

    def wrap(self, run: Callable[[Any], Any], stream: bool) -> Callable[[Any], Any]:
        def gated(params: Any) -> Any:
            if self.broken is not None:
                raise fresh_error(self.broken)
            if self.running or self.waiting:
                # the caller awaits (and a Finish cancels) this future: no task until its turn
                turn: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self.waiting.append((run, params, stream, turn))
                return turn
            return self._start(run, params, stream)

        return gated

    def _start(self, run: Callable[[Any], Any], params: Any, stream: bool) -> Any:
        try:
            result = run(params)
        except Exception as exc:
            if stream:
                self.broken = exc
            raise
        if not stream or not inspect.isawaitable(result):
            return result
        self.running = True
        task = asyncio.ensure_future(result)
        task.add_done_callback(self._stream_done)
        return task

    def _stream_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None and self.broken is None:
            self.broken = task.exception()
        self.running = False
        waiting = self.waiting
        while waiting and not self.running:
            run, params, stream, turn = waiting.popleft()
            if turn.done():  # canceled while it waited
                continue
            if self.broken is not None:
                turn.set_exception(fresh_error(self.broken))
                continue
            try:
                result = self._start(run, params, stream)
            except Exception as exc:
                turn.set_exception(exc)
                continue
            if inspect.isawaitable(result):
                _chain(asyncio.ensure_future(result), turn)
            else:
                turn.set_result(result)


def _chain(task: asyncio.Future[Any], turn: asyncio.Future[Any]) -> None:
    """Settle ``turn`` as ``task`` settles; cancelling ``turn`` cancels ``task``."""

    def done(task: asyncio.Future[Any]) -> None:
        if turn.done():
            return
        if task.cancelled():
            turn.cancel()
        elif task.exception() is not None:
            turn.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            turn.set_result(task.result())

    def canceled(turn: asyncio.Future[Any]) -> None:
        if turn.cancelled() and not task.done():
            task.cancel()

    task.add_done_callback(done)
    turn.add_done_callback(canceled)

