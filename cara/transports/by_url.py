"""``cara.Server`` and ``cara.Client``: one API whatever the URL says.

``tcp://``, ``unix://``, ``capnp://`` and ``capnp+unix://`` are served by the asyncio transport
(these classes *are* its ``Server`` and ``Client``, extended); ``nats://host:port/service`` by
:mod:`cara.transports.nats_transport` (imported, with nats-py, only when such a URL is used). A
server may bind both kinds at once: one set of registered interfaces answers on all of them.
``lease`` and ``nats_options`` only concern ``nats://`` endpoints. Started under trio, the
socket endpoints are served natively there (:mod:`cara.transports.trio_transport`); a
``nats://`` endpoint then raises ``NotImplementedError`` saying why (:data:`NATS_UNDER_TRIO`).
"""

from __future__ import annotations

from typing import Any

from cara.rpc.connection import Connection
from cara.rpc.errors import Disconnected
from cara.transports import asyncio_transport, lifetimes
from cara.transports.threads import current_trio
from cara.transports.url import parse_url

__all__ = ["NATS_UNDER_TRIO", "Client", "Server"]

#: Why ``nats://`` endpoints cannot start under trio, and what to do instead.
NATS_UNDER_TRIO = (
    "nats:// endpoints run under asyncio only: nats-py, the NATS client library, needs an "
    "asyncio event loop (its connection is an asyncio stream, its reading, flushing and pinging "
    "are asyncio tasks), and cara runs no asyncio loop inside trio. From trio, use the blocking "
    "client, which runs asyncio in a thread of its own: client = cara.connect_sync(url), then "
    "`await client.defer(proxy).method(...)` in a trio task")


def _nats_module() -> Any:
    from cara.transports import nats_transport

    return nats_transport


def _nats_options(settings: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a NATS server or client: its own settings that were given, and
    the options it shares with the socket transport."""
    mine = {k: v for k, v in common.items()
            if k in ("max_frame_size", "max_answers", "send_tracebacks", "timeout")}
    return {**mine, **{k: v for k, v in settings.items() if v is not None}}


class Server(asyncio_transport.Server):
    __doc__ = asyncio_transport.Server.__doc__

    def __init__(self, *, lease: float | None = None,
                 nats_options: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._nats_settings = {"lease": lease, "nats_options": nats_options}
        self._nats_common = options
        self._nats: Any = None
        self._socket_binds = 0
        self._on_trio = False

    def bind(self, url: str) -> None:
        if parse_url(url).scheme != "nats":
            super().bind(url)
            self._socket_binds += 1
            return
        if self._nats is None:
            self._nats = _nats_module().NatsServer(
                services=self.services, **_nats_options(self._nats_settings, self._nats_common))
        self._nats.bind(url)

    async def start(self) -> None:
        if current_trio() is not None:
            from cara.transports import trio_transport

            if self._nats is not None:
                raise NotImplementedError(NATS_UNDER_TRIO)
            await trio_transport.start_server(self)
            self._on_trio = True
            return
        if self._socket_binds or self._nats is None:
            await super().start()
        if self._nats is not None:
            await self._nats.start()

    @property
    def endpoints(self) -> list[str]:
        nats = self._nats.endpoints if self._nats is not None else []
        return [*super().endpoints, *nats]

    @property
    def connections(self) -> list[Connection]:
        nats = self._nats.connections if self._nats is not None else []
        return [*super().connections, *nats]

    async def _wait_closed(self, closing: list[Any]) -> None:
        if self._on_trio:
            from cara.transports import trio_transport

            await trio_transport.wait_closed(closing)
        else:
            await super()._wait_closed(closing)

    async def stop(self) -> None:
        await super().stop()
        self._on_trio = False
        if self._nats is not None:
            await self._nats.stop()

    async def __aenter__(self) -> Server:
        await self.start()
        return self


class Client(lifetimes.Client):
    """One connection to a server (see :class:`cara.transports.lifetimes.Client`), or, for a
    ``nats://`` URL, a client of a NATS service (see
    :class:`cara.transports.nats_transport.NatsClient`). On NATS, ``reconnect`` makes bootstrap
    proxies follow the client to each new session (a new worker when the old one is gone);
    ``disconnected`` and ``on_disconnect`` concern socket connections only."""

    def __init__(self, *, lease: float | None = None,
                 nats_options: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._nats_settings = {"lease": lease, "nats_options": nats_options}
        self._nats_common = options
        self._nats: Any = None

    def connect(self, url: str) -> None:
        if parse_url(url).scheme != "nats":
            self._nats = None
            super().connect(url)
            return
        self._nats = _nats_module().NatsClient(
            services=self.services, **_nats_options(self._nats_settings, self._nats_common))
        self._nats.connect(url)

    async def start(self) -> None:
        if self._nats is not None:
            if current_trio() is not None:
                raise NotImplementedError(NATS_UNDER_TRIO)
            await self._nats.start()
        else:
            await super().start()

    @property
    def connection(self) -> Connection:
        if self._nats is not None:
            conn: Connection = self._nats.connection
            return conn
        return super().connection

    def _live_connection(self) -> Connection | None:
        if self._nats is not None:
            try:
                return self.connection  # the current session, or a new one
            except Disconnected:
                return None
        return super()._live_connection()

    def stats(self) -> dict[str, int]:
        if self._nats is not None:
            stats: dict[str, int] = self._nats.stats()
            return stats
        return super().stats()

    async def stop(self) -> None:
        if self._nats is not None:
            await self._nats.stop()
        await super().stop()

    async def __aenter__(self) -> Client:
        await self.start()
        return self
