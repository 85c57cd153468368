"""The asyncio client with lifetimes: knowing when the connection goes, and coming back.

:class:`Client` is :class:`cara.transports.asyncio_transport.Client` (exported as
``cara.Client``) plus:

* ``await client.disconnected`` -- completes when the current connection is lost, with the
  reason (a :class:`~cara.rpc.Disconnected`) as its value; ``on_disconnect=callback`` (or
  ``client.on_disconnect = ...``) is called with that reason when the connection is lost other
  than by ``stop()``; an ``async`` callback runs as a task. Calls in flight at the break fail
  with ``Disconnected`` as soon as the socket reports it.
* ``Client(reconnect=True)`` (or a :class:`Backoff`, or any callable ``attempt -> delay or
  None``) re-dials after a lost connection, waiting longer between failed attempts. Proxies from
  ``Iface(client)`` / ``client.bootstrap(Iface)`` follow the client to each new connection: a
  call made while it is reconnecting fails at once with ``Disconnected``, and the first call
  after it succeeds. Capabilities obtained from calls on an old connection stay broken
  (``Disconnected: capability lost: ...``): get them again through a bootstrap proxy.
  ``await client.wait_connected(timeout)`` waits for the next connection.
* Under trio, ``start()`` connects natively (:mod:`cara.transports.trio_transport`): the
  same proxies, handlers in trio tasks, no thread; ``disconnected``, ``on_disconnect``,
  ``reconnect`` (its re-dialling runs as a trio task) and ``wait_connected`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cara.rpc.caps import BrokenCap, Cap
from cara.rpc.connection import Connection
from cara.rpc.description import describe
from cara.rpc.errors import Disconnected
from cara.rpc.proxies import CallPromise, Method, check_loop, core_cap_of, current_loop
from cara.transports.asyncio_transport import Client as _AsyncioClient
from cara.transports.threads import current_trio

__all__ = ["Backoff", "Client"]

_log = logging.getLogger("cara.transports")


@dataclass(frozen=True)
class Backoff:
    """How a client re-dials: the first attempt after ``initial`` seconds, each next one
    ``factor`` times later, at most ``maximum`` seconds apart, each delay spread by up to
    ``jitter`` of itself (so that many clients of one restarted server do not all come back at
    once); ``attempts`` bounds the attempts of one outage (``None``: try forever)."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid backoff {self!r}: delays must be >= 0, factor >= 1, "
                             "jitter between 0 and 1")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("Backoff(attempts=...) must be at least 1 (or None: forever)")

    def __call__(self, attempt: int) -> float | None:
        """The delay before attempt ``attempt`` (1, 2, ...), or ``None`` to give up."""
        if self.attempts is not None and attempt > self.attempts:
            return None
        delay = min(self.maximum, self.initial * self.factor ** min(attempt - 1, 64))
        return delay * (1 + self.jitter * (2 * random.random() - 1))

    def delays(self) -> Iterator[float]:
        attempt = 1
        while (delay := self(attempt)) is not None:
            yield delay
            attempt += 1


ReconnectPolicy = Callable[[int], "float | None"]


def _loop() -> Any:
    """The running asyncio loop, or under trio the run's :class:`~cara.rpc.trio_loop.TrioLoop`
    (whose futures a trio task awaits)."""
    loop = current_loop()
    if loop is None:
        raise RuntimeError("no event loop runs in this thread")
    return loop


def _policy(reconnect: bool | ReconnectPolicy | None) -> ReconnectPolicy | None:
    if reconnect is None or reconnect is False:
        return None
    if reconnect is True:
        return Backoff()
    if callable(reconnect):
        return reconnect
    raise TypeError(f"reconnect must be True, False, a Backoff or a callable attempt -> delay, "
                    f"got {reconnect!r}")


class _BootstrapCap(Cap):
    """A reconnecting client's bootstrap capability: each call goes to the bootstrap of the
    connection that is current when it is made."""

    __slots__ = ("client", "conn", "iface", "inner")

    def __init__(self, client: Client, iface: Any) -> None:
        self.client = client
        self.iface = iface
        self.conn: Connection | None = None
        self.inner: Cap | None = None

    def _current(self) -> Cap:
        client = self.client
        conn = client._live_connection()
        if conn is None:
            return BrokenCap(Disconnected(client._not_connected_reason()))
        if self.conn is not conn or self.inner is None:
            inner = core_cap_of(conn.bootstrap(self.iface))
            assert isinstance(inner, Cap)
            self.conn, self.inner = conn, inner
        return self.inner

    def call(self, method: Method, params: Any, timeout: float | None = None, *,
             unbox: bool = True) -> CallPromise:
        return self._current().call(method, params, timeout, unbox=unbox)

    def resolved(self) -> Cap:
        return self._current().resolved()

    @property
    def is_promise(self) -> bool:
        return self._current().is_promise

    def close(self) -> None:
        inner, self.inner, self.conn = self.inner, None, None
        if inner is not None:
            inner.close()

    @property
    def closed(self) -> bool:
        return self.client._live_connection() is None

    def __repr__(self) -> str:
        return f"bootstrap of {self.client._url()}"


class Client(_AsyncioClient):
    """One connection to a server (see :class:`cara.transports.asyncio_transport.Client`),
    with ``disconnected``, ``on_disconnect`` and ``reconnect`` (see the module docstring)."""

    def __init__(self, *, reconnect: bool | ReconnectPolicy | None = False,
                 on_disconnect: Callable[[BaseException], Any] | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self._options = dict(options, reconnect=reconnect, on_disconnect=on_disconnect)
        self._on_trio = False  # started under trio (cara.transports.trio_transport)
        self.on_disconnect = on_disconnect
        self._policy = _policy(reconnect)
        self._stopping = False
        self._disconnected: asyncio.Future[BaseException] | None = None
        #: Futures of the tasks in wait_connected() (of the client's loop, asyncio's or trio's)
        self._connected: list[asyncio.Future[None]] = []
        self._redial: asyncio.Future[None] | None = None
        self._attempt = 0
        self._last_error: BaseException | None = None
        self._gave_up: BaseException | None = None
        self._hook_tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ state

    def _url(self) -> str:
        return self._endpoint.url() if self._endpoint is not None else "(no endpoint)"

    def _live_connection(self) -> Connection | None:
        proto = self._proto
        conn = proto.conn if proto is not None else None
        return conn if conn is not None and not conn.closed else None

    def _not_connected_reason(self) -> str:
        if self._gave_up is not None:
            return f"not connected to {self._url()}: gave up reconnecting ({self._gave_up})"
        if self._redial is not None and not self._redial.done():
            last = f", last error: {self._last_error}" if self._last_error else ""
            return (f"not connected to {self._url()}: reconnecting (attempt "
                    f"{max(1, self._attempt)}{last})")
        if self._policy is not None and self._proto is not None and not self._stopping:
            # lost a moment ago: the re-dialling starts once the loss has been handled (under
            # trio a task woken by the loss may run before that)
            return f"not connected to {self._url()}: reconnecting (the connection was just lost)"
        return f"not connected to {self._url()}"

    @property
    def connected(self) -> bool:
        """Whether the client has a live connection now."""
        return self._live_connection() is not None

    @property
    def disconnected(self) -> asyncio.Future[BaseException]:
        """An awaitable completing when the current connection is lost; its value is the
        reason (a :class:`~cara.rpc.Disconnected`). Done at once when there is none."""
        fut = self._disconnected
        if fut is None:
            fut = self._disconnected = _loop().create_future()
            if self._live_connection() is None:
                fut.set_result(Disconnected(self._not_connected_reason()))
        return fut

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the client is connected (after a reconnection); raises ``Disconnected``
        when it gave up reconnecting, ``TimeoutError`` after ``timeout`` seconds."""
        if self.connected:
            return
        if self._policy is None or self._stopping or self._gave_up is not None:
            raise Disconnected(self._not_connected_reason())
        waiter: asyncio.Future[None] = _loop().create_future()
        self._connected.append(waiter)
        try:
            trio = current_trio()
            if trio is None:
                await asyncio.wait_for(waiter, timeout)
            else:
                try:
                    with contextlib.nullcontext() if timeout is None else \
                            trio.fail_after(timeout):
                        await waiter
                except trio.TooSlowError:
                    raise asyncio.TimeoutError(
                        f"not connected to {self._url()} within {timeout} s") from None
        finally:
            if waiter in self._connected:
                self._connected.remove(waiter)
        if not self.connected:
            raise Disconnected(self._not_connected_reason())

    def _wake_waiters(self) -> None:
        """Let the tasks in :meth:`wait_connected` go on (connected, gave up or stopped)."""
        waiters, self._connected = self._connected, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ connecting

    async def start(self) -> None:
        if current_trio() is not None:
            from cara.transports import trio_transport

            self._stopping = False
            self._gave_up = None
            await trio_transport.start_client(self)
            self._on_trio = True
            self._watch()
            return
        self._on_trio = False
        self._stopping = False
        self._gave_up = None
        await super().start()
        self._watch()

    def _watch(self) -> None:
        proto = self._proto
        assert proto is not None
        fut = self._disconnected
        if fut is None or fut.done():
            self._disconnected = _loop().create_future()
        self._wake_waiters()
        proto.closed.add_done_callback(lambda _f: self._lost(proto))

    def _lost(self, proto: Any) -> None:
        conn = proto.conn
        reason = conn.close_reason if conn is not None and conn.close_reason is not None else \
            Disconnected("connection closed")
        if proto is not self._proto:
            return  # an older connection
        fut = self._disconnected
        if fut is not None and not fut.done():
            fut.set_result(reason)
        if self._stopping:
            return
        hook = self.on_disconnect
        if hook is not None:
            try:
                result = hook(reason)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result, loop=_loop())
                    self._hook_tasks.add(task)
                    task.add_done_callback(self._hook_tasks.discard)
            except Exception:
                _log.exception("on_disconnect hook of the client of %s failed", self._url())
        if self._policy is not None and (self._redial is None or self._redial.done()):
            self._attempt, self._last_error = 0, None
            self._redial = _loop().create_task(self._reconnect())  # (a trio task under trio)

    async def _reconnect(self) -> None:
        policy = self._policy
        assert policy is not None
        trio = current_trio() if self._on_trio else None
        retry: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)
        if trio is not None:
            from cara.transports import trio_transport

            retry = (*retry, trio.BrokenResourceError)  # (a TLS handshake cut short)
        while not self._stopping:
            self._attempt += 1
            delay = policy(self._attempt)
            if delay is None:
                self._gave_up = Disconnected(
                    f"{self._attempt - 1} attempts failed, last error: {self._last_error}")
                _log.warning("client of %s: %s", self._url(), self._gave_up)
                self._wake_waiters()  # they raise
                return
            if trio is not None:
                await trio.sleep(delay)
            else:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                if trio is not None:
                    await trio_transport.start_client(self)
                else:
                    await _AsyncioClient.start(self)
            except retry as exc:
                self._last_error = exc
                continue
            self._last_error = None
            self._watch()
            return

    async def stop(self) -> None:
        self._stopping = True
        redial, self._redial = self._redial, None
        if redial is not None and not redial.done():
            redial.cancel()
        await super().stop()
        fut = self._disconnected
        if fut is not None and not fut.done():
            fut.set_result(Disconnected("client stopped"))
        self._wake_waiters()

    async def _wait_closed(self, closing: list[Any]) -> None:
        if self._on_trio:
            from cara.transports import trio_transport

            await trio_transport.wait_closed(closing)
        else:
            await super()._wait_closed(closing)

    # ------------------------------------------------------------------ capabilities

    def bootstrap(self, iface: Any = None) -> Any:
        check_loop(self)
        if self._policy is None:
            return super().bootstrap(iface)
        if iface is not None and describe(iface) is None:
            raise TypeError(f"{iface!r} does not describe an interface")
        cap = _BootstrapCap(self, iface)
        return cap.cast(iface) if iface is not None else cap
