"""Endpoint URLs: ``tcp://host:port`` (port 0 picks a free one; IPv6 as ``tcp://[::1]:port``)
and ``unix:///absolute/path`` speak cara frames; ``capnp://host:port`` and
``capnp+unix:///absolute/path`` speak Cap'n Proto's own RPC messages (rpc.capnp in standard
stream framing, the two-party network of libcapnp, pycapnp and the Rust and Go implementations).
``nats://host:port/service`` speaks cara frames through a NATS server (port 4222 when left out;
see :mod:`cara.transports.nats_transport`). Parsed once, so a typo fails at ``bind``/``connect``
time with the URL in the message rather than deep inside asyncio."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["SCHEMES", "Endpoint", "parse_url"]


#: The encoding each URL scheme speaks, and its socket kind.
SCHEMES = {"tcp": ("cara", "tcp"), "unix": ("cara", "unix"), "capnp": ("capnp", "tcp"),
           "capnp+tcp": ("capnp", "tcp"), "capnp+unix": ("capnp", "unix"), "nats": ("cara", "nats")}
#: A NATS service name: subject tokens (no wildcards, no spaces), not starting with ``_``.
_SERVICE = re.compile(r"[A-Za-z0-9-][\w-]*(\.[\w-]+)*\Z")


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "tcp" or "unix": the socket kind; "nats": a NATS server (path: the service)
    host: str = ""
    port: int = 0
    path: str = ""
    wire: str = "cara"  # "cara" (cara frames) or "capnp" (rpc.capnp messages)

    def url(self) -> str:
        prefix = "capnp+" if self.wire == "capnp" else ""
        if self.scheme == "nats":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"nats://{host}:{self.port}/{self.path}"
        if self.scheme == "unix":
            return f"{prefix}unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"capnp://{host}:{self.port}" if prefix else f"tcp://{host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """Parse an endpoint URL (``ValueError`` naming the URL when it is not one we serve)."""
    if not isinstance(url, str):
        raise TypeError(f"an endpoint URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    wire, kind = SCHEMES.get(parts.scheme, ("", ""))
    if kind == "unix":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError(f"{url!r}: a unix URL needs a path (unix:///tmp/socket)")
        return Endpoint("unix", path=path, wire=wire)
    if kind == "tcp":
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{url!r}: bad port ({exc})") from None
        if not parts.hostname or port is None:
            raise ValueError(f"{url!r}: a tcp URL needs a host and a port (tcp://127.0.0.1:0)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: a tcp URL has no path, query or fragment")
        return Endpoint("tcp", host=parts.hostname, port=port, wire=wire)
    if kind == "nats":
        return _parse_nats(url)
    raise ValueError(f"{url!r}: unsupported scheme {parts.scheme!r} (use tcp://, unix://, "
                     "capnp://, capnp+unix:// or nats://)")


def _parse_nats(url: str) -> Endpoint:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r}: bad port ({exc})") from None
    service = parts.path[1:]
    if not parts.hostname or not _SERVICE.match(service) or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a nats URL is nats://host[:port]/service, the service a NATS "
                         "subject without wildcards (nats://127.0.0.1:4222/calculator)")
    return Endpoint("nats", host=parts.hostname, port=4222 if port is None else port,
                    path=service)
