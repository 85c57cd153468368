"""A blocking client: cara RPC from scripts, notebooks and threads, with no event loop in sight.

``connect_sync(url, **client_options)`` starts a private asyncio event loop in a daemon thread,
connects a :class:`~cara.transports.Client` there, and returns a :class:`SyncClient`::

    with cara.connect_sync("tcp://127.0.0.1:5000") as client:
        echo = SimpleEcho(client)           # the same typed proxy classes as the async client
        assert echo.echo("x") == "x"        # blocks, returns the value

Its proxies are the usual typed proxies, over capabilities usable from any thread (see
:mod:`cara.transports.threads`): any number of threads may share one client, each call
waiting for its own answer; capabilities in answers are blocking proxies too.

* ``client.defer(proxy)`` is the same proxy whose calls return a
  :class:`~cara.transports.threads.SyncPromise` at once instead of waiting:
  ``promise.result()`` waits; its fields and capabilities can be used before the answer
  (promise pipelining: ``client.defer(calc).evaluate(e).value.read()`` is one round trip), and
  a promise can be passed where a capability is expected.
* Callbacks: a local function or object passed as a capability is served on the client's loop
  thread. There, a blocking proxy returns the usual awaitable promise (blocking would deadlock
  the loop), so a callback that calls back is an ``async def`` that awaits, exactly as with the
  asyncio client.
* ``client.run(coroutine)`` runs a coroutine on the loop thread and returns its result
  (``client.client`` is the asyncio client living there).
"""

from __future__ import annotations

import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from cara.transports.by_url import Client
from cara.transports.threads import (
    Bridge,
    SyncField,
    SyncPromise,
    ThreadCap,
    defer,
    shutdown,
)

__all__ = ["SyncClient", "SyncField", "SyncPromise", "ThreadCap", "connect_sync"]

T = TypeVar("T")


class SyncClient(Bridge):
    """A connection served by a private event loop in a daemon thread (see the module
    docstring). ``Iface(client)`` or ``client.bootstrap(Iface)`` gives a blocking proxy;
    ``close()`` (or leaving ``with``) stops the client and its thread."""

    client: Client

    def __init__(self, url: str, **client_options: Any) -> None:
        super().__init__(url, lambda: Client(**client_options), deferred=False)
        try:
            self.begin().result()
        except BaseException:
            self.shutdown()
            raise
        # Stops the thread when the client is garbage; holds the runner, not the client.
        self._finalizer = weakref.finalize(self, shutdown, self._runner, self.client)

    def defer(self, proxy: Any) -> Any:
        """``proxy`` (a blocking proxy, or a capability field of a promise) whose calls return
        a :class:`~cara.transports.threads.SyncPromise` at once instead of waiting."""
        return defer(proxy)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the client's loop thread and return its result."""
        return self._runner.run(coro, timeout)

    def wait_disconnected(self, timeout: float | None = None) -> BaseException:
        """Wait until the connection is lost; returns the reason (a ``Disconnected``)."""

        async def wait() -> BaseException:
            return await self.client.disconnected

        return self.run(wait(), timeout)

    def close(self) -> None:
        """Stop the client (pending calls fail with ``Disconnected``) and its loop thread."""
        self._finalizer()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncClient {self.url} {'closed' if self.closed else 'open'}>"


def connect_sync(url: str, **client_options: Any) -> SyncClient:
    """Connect a blocking client to ``url`` (``tcp://``, ``unix://``, ``capnp://``...);
    ``client_options`` are :class:`~cara.transports.Client`'s (``timeout``, ``ssl``,
    ``reconnect``...). Use it in a ``with`` block, or call ``close()``."""
    return SyncClient(url, **client_options)
