"""cara.transports: moving RPC frames. The built-in one runs on asyncio sockets.

``Server`` and ``Client`` are the asyncio transport's; ``register_interface`` is re-exported from
:mod:`cara.rpc` so that one import serves a whole program.
"""

from cara.rpc.register import register_interface
from cara.transports.asyncio_transport import DEFAULT_MAX_FRAME_SIZE, Client, Server
from cara.transports.url import Endpoint, parse_url

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "Client", "Endpoint", "Server", "parse_url",
           "register_interface"]
