"""Endpoint URLs: ``tcp://host:port`` (port 0 picks a free one; IPv6 as ``tcp://[::1]:port``)
and ``unix:///absolute/path`` speak cara frames; ``capnp://host:port`` and
``capnp+unix:///absolute/path`` speak Cap'n Proto's own RPC messages (rpc.capnp in standard
stream framing, the two-party network of libcapnp, pycapnp and the Rust and Go implementations).
Parsed once, so a typo fails at ``bind``/``connect`` time with the URL in the message rather
than deep inside asyncio."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["SCHEMES", "Endpoint", "parse_url"]


#: The encoding each URL scheme speaks, and its socket kind.
SCHEMES = {"tcp": ("cara", "tcp"), "unix": ("cara", "unix"), "capnp": ("capnp", "tcp"),
           "capnp+tcp": ("capnp", "tcp"), "capnp+unix": ("capnp", "unix")}


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "tcp" or "unix": the socket kind
    host: str = ""
    port: int = 0
    path: str = ""
    wire: str = "cara"  # "cara" (cara frames) or "capnp" (rpc.capnp messages)

    def url(self) -> str:
        prefix = "capnp+" if self.wire == "capnp" else ""
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
    raise ValueError(f"{url!r}: unsupported scheme {parts.scheme!r} (use tcp://, unix://, "
                     "capnp:// or capnp+unix://)")
