"""Errors of remote calls, and how an exception crosses the wire.

A handler's exception travels as ``(kind, type name, message, traceback text)``. The receiving side
rebuilds it from an *allow-list* of builtin exception types (a remote ``ValueError`` raises
``ValueError`` with the same message) and never imports or looks up an arbitrary name, so a peer
cannot make us instantiate a class of its choosing. Anything else arrives as :class:`Failed`.
The remote traceback, when the server sends it, is attached as ``__cause__`` (a
:class:`RemoteTraceback` whose ``str`` is the text) so it shows in the usual "The above exception
was the direct cause" output, and as the ``remote_traceback`` attribute.
"""

from __future__ import annotations

import builtins
import traceback
from typing import Any

from cara.errors import CaraError

__all__ = [
    "BUILTIN_EXCEPTIONS",
    "Disconnected",
    "Failed",
    "Overloaded",
    "ProtocolError",
    "RemoteTraceback",
    "RpcError",
    "Unimplemented",
    "exception_from_remote",
    "exception_from_wire",
    "exception_to_remote",
    "exception_to_wire",
]

# Error kinds on the wire; the same four as Cap'n Proto's ``Exception.Type``.
KIND_FAILED = 0
KIND_OVERLOADED = 1
KIND_DISCONNECTED = 2
KIND_UNIMPLEMENTED = 3


class RpcError(CaraError):
    """Base class of the errors that remote calls raise on purpose."""

    #: Text of the traceback on the side that raised, when it was sent (``None`` otherwise).
    remote_traceback: str | None = None
    #: Name of the exception type on the side that raised (``None`` for local errors).
    remote_type: str | None = None


class Failed(RpcError):
    """The call failed on the other side with an exception that is not rebuilt locally."""


class Overloaded(Failed):
    """The other side refused the call for lack of resources; retrying later may succeed."""


class Unimplemented(Failed, NotImplementedError):
    """The target does not implement the called interface or method (unknown capability,
    interface id or method number, or an implementation missing the method)."""


class Disconnected(RpcError, ConnectionError):
    """The connection was lost or closed before the answer arrived, or the capability's
    connection is gone. A ``ConnectionError``, so ``except ConnectionError`` catches it."""


class ProtocolError(CaraError):
    """The peer sent something that is not a valid RPC message (the connection is aborted)."""


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised on the other side of a connection."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


#: Builtin exceptions rebuilt by name. Only types whose constructor takes a message are listed;
#: the receiver looks names up in this table, never in ``builtins`` or ``sys.modules``.
BUILTIN_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        ValueError, TypeError, KeyError, IndexError, LookupError, AttributeError,
        ArithmeticError, ZeroDivisionError, OverflowError, FloatingPointError,
        RuntimeError, NotImplementedError, RecursionError, AssertionError, NameError,
        UnicodeError, EOFError, MemoryError, BufferError,
        OSError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
        NotADirectoryError, TimeoutError, ConnectionError, BrokenPipeError,
        ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError,
        InterruptedError, ProcessLookupError, ChildProcessError, BlockingIOError,
    )
}
assert all(getattr(builtins, name) is cls for name, cls in BUILTIN_EXCEPTIONS.items())

_KIND_OF_CLASS: tuple[tuple[type[BaseException], int], ...] = (
    (Overloaded, KIND_OVERLOADED),
    (Unimplemented, KIND_UNIMPLEMENTED),
    (Disconnected, KIND_DISCONNECTED),
    (NotImplementedError, KIND_UNIMPLEMENTED),  # e.g. the runtime's "does not implement"
)


def _message(exc: BaseException) -> str:
    # KeyError's str() is the repr of its key; send the plain argument so KeyError('x') arrives
    # as KeyError('x') and not KeyError("'x'").
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def exception_to_wire(exc: BaseException, *, with_traceback: bool) -> list[object]:
    """``[kind, type name, message, traceback text or None]`` for an exception a handler raised."""
    kind = KIND_FAILED
    for cls, code in _KIND_OF_CLASS:
        if isinstance(exc, cls):
            kind = code
            break
    name = exc.remote_type if isinstance(exc, RpcError) and exc.remote_type else type(exc).__name__
    text = None
    if with_traceback:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [kind, name, _message(exc), text]


def exception_from_wire(kind: object, name: object, message: object, text: object) -> BaseException:
    """Rebuild an exception from its wire form; unknown names become :class:`Failed`."""
    name_s = name if isinstance(name, str) else "Exception"
    message_s = message if isinstance(message, str) else repr(message)
    exc: BaseException
    if kind == KIND_OVERLOADED:
        exc = Overloaded(message_s)
    elif kind == KIND_UNIMPLEMENTED:
        exc = Unimplemented(message_s)
    elif kind == KIND_DISCONNECTED:
        exc = Disconnected(message_s)
    elif name_s in BUILTIN_EXCEPTIONS:
        try:
            exc = BUILTIN_EXCEPTIONS[name_s](message_s)
        except Exception:  # a builtin whose constructor wants more (defensive)
            exc = Failed(f"{name_s}: {message_s}")
    else:
        exc = Failed(f"{name_s}: {message_s}")
    if isinstance(exc, RpcError):
        exc.remote_type = name_s
    if isinstance(text, str):
        exc.__cause__ = RemoteTraceback(text)
        try:
            setattr(exc, "remote_traceback", text)  # noqa: B010 - builtins too, not only ours
        except AttributeError:  # pragma: no cover - builtins accept attributes
            pass
    return exc


_KIND_NAMES = ("failed", "overloaded", "disconnected", "unimplemented")


def exception_to_remote(exc: BaseException, *, with_traceback: bool) -> Any:
    """rpc.capnp's ``Exception`` (a :class:`cara.rpc.messages.RemoteException`) for ``exc``."""
    from cara.rpc.messages import RemoteException

    kind, name, message, text = exception_to_wire(exc, with_traceback=with_traceback)
    assert isinstance(kind, int) and isinstance(name, str) and isinstance(message, str)
    return RemoteException(_KIND_NAMES[kind], message, name,
                           text if isinstance(text, str) else None)


def exception_from_remote(e: Any) -> BaseException:
    """The exception to raise for a received ``RemoteException`` (allow-listed types only)."""
    kind = _KIND_NAMES.index(e.kind) if e.kind in _KIND_NAMES else KIND_FAILED
    return exception_from_wire(kind, e.type_name or "Exception", e.reason, e.trace)
