"""cara.transports: moving RPC frames. The built-in one runs on asyncio sockets.

``Server`` and ``Client`` are the asyncio transport's (``Client`` with the lifetimes of
:mod:`cara.transports.lifetimes`: ``disconnected``, ``on_disconnect``, ``reconnect``), both
extended to ``nats://`` URLs (:mod:`cara.transports.by_url`); ``connect_sync`` is the blocking
client (:mod:`cara.transports.sync_client`); ``register_interface`` is re-exported from
:mod:`cara.rpc` so that one import serves a whole program.
"""

from cara.rpc.register import register_interface
from cara.transports.asyncio_transport import DEFAULT_MAX_FRAME_SIZE
from cara.transports.by_url import Client, Server
from cara.transports.lifetimes import Backoff
from cara.transports.sync_client import SyncClient, connect_sync
from cara.transports.url import Endpoint, parse_url

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "Backoff", "Client", "Endpoint", "Server", "SyncClient",
           "connect_sync", "parse_url", "register_interface"]
