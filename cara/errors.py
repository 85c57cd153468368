"""Exceptions shared by every layer of cara.

They live outside the layer packages so that ``cara.schema`` (the bottom layer) and
``cara.transports`` (the top one) raise the same types, and users catch them as ``cara.X``.
Every error says *where*: a schema error names ``file:line:col``, a value error the field path
(``Person.phones[1].type``), a decode error the byte offset.
"""

from __future__ import annotations

__all__ = ["CaraError", "DecodeError", "EncodeError", "SchemaError", "ValueTypeError"]


class CaraError(Exception):
    """Base class of every error cara raises on purpose."""


class SchemaError(CaraError):
    """A schema could not be compiled. ``diagnostics`` holds every problem found, each already
    formatted as ``file:line:col: error: message``; ``str()`` joins them one per line."""

    def __init__(self, diagnostics: list[str] | str) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [diagnostics]
        self.diagnostics: list[str] = list(diagnostics)
        super().__init__("\n".join(self.diagnostics))


class DecodeError(CaraError, ValueError):
    """Bytes that are not a valid message. ``offset`` is the byte offset in the input where the
    problem was found (``None`` when no single place is to blame)."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        self.reason = message
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


class EncodeError(CaraError, ValueError):
    """A value that cannot be written in the requested wire format."""


class ValueTypeError(CaraError, TypeError):
    """A value of the wrong type or out of range for a schema field. ``path`` names the field,
    e.g. ``Person.phones[1].type``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)
