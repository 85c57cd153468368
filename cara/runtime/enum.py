"""Enums: ``IntEnum`` subclasses that also take enumerant names, and keep unknown numbers.

An enum value travels as its number (msgpack packs an ``IntEnum`` as an int), so a peer with a
newer schema can send a number this schema does not know. Rejecting it would make adding an
enumerant a breaking change, so :meth:`Enum._missing_` keeps it as a pseudo-member named
``<unknown N>``; it compares equal to ``N`` and packs back as ``N``.
"""

from __future__ import annotations

import enum
from typing import Any

from cara.errors import ValueTypeError
from cara.runtime.types import ClassType, Invalid, describe_value

__all__ = ["Enum", "make_enum"]


class Enum(enum.IntEnum):
    """Base of every generated enum."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
            member = int.__new__(cls, value)
            member._name_ = f"<unknown {value}>"
            member._value_ = value
            return member
        if isinstance(value, str):
            found = cls.__members__.get(value)
            if found is not None:
                return found
        return None

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}.{self._name_}"

    def __eq__(self, other: object) -> bool:
        """Equal to its number, and to its enumerant's name (``phone.type == "home"``, as
        pycapnp compares); a string that names no enumerant of this enum raises
        :class:`~cara.errors.ValueTypeError` instead of being silently unequal."""
        if isinstance(other, str):
            return _named(self, other)
        return int.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        if isinstance(other, str):
            return not _named(self, other)
        return int.__ne__(self, other)

    # Defining __eq__ would drop the hash; members hash as their numbers (they equal them).
    # (A name equals a member without hashing like it: look names up with ``E[name]``.)
    __hash__ = int.__hash__


def _named(member: Enum, name: str) -> bool:
    """Whether ``name`` names ``member`` (its schema name or its attribute name)."""
    cls = type(member)
    found = cls._member_map_.get(name)
    if found is None:
        names = ", ".join(getattr(cls, "_cara_enumerant_names_", cls._member_map_))
        raise ValueTypeError(getattr(cls, "_cara_name_", cls.__qualname__),
                             f"{name!r} is not one of its enumerants ({names}); "
                             "comparing with it would always be false")
    return found is member



def _convert(cls: Any, value: Any) -> Any:
    """A member for a member, a number (0..65535) or an enumerant name (str or bytes)."""
    if type(value) is cls:
        return value
    if isinstance(value, Enum):
        if type(value)._cara_id_ == cls._cara_id_:  # type: ignore[attr-defined]
            return cls(int(value))
        raise Invalid(f"expected {cls._cara_name_}, got {describe_value(value)}")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 0xFFFF:
            member = cls._value2member_map_.get(value)
            return member if member is not None else cls._missing_(value)
        raise Invalid(f"{value} is out of range for enum {cls._cara_name_} [0, 65535]")
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            pass
    if isinstance(value, str):
        member = cls._member_map_.get(value)
        if member is not None:
            return member
    raise Invalid(f"expected {cls._cara_name_}, got {describe_value(value)}")



def _zero(cls: Any) -> Any:
    return cls._cara_convert_(0)


# _sunder_ names cannot be defined in an Enum class body; attach them afterwards.
Enum._cara_convert_ = classmethod(_convert)  # type: ignore[attr-defined]
Enum._cara_zero_ = classmethod(_zero)  # type: ignore[attr-defined]


def make_enum(name: str, qualname: str, enumerants: list[str], type_id: int,
              module: str | None = None) -> type[Enum]:
    """An :class:`Enum` subclass whose members are ``enumerants`` numbered in order.

    Enumerant names that are Python keywords or clash with ``IntEnum`` attributes get a trailing
    underscore as the attribute, but are still found by their schema name (``E['from']``,
    ``E('from')``)."""
    import keyword
    import sys

    # Names interned: a name written in code (``type="mobile"``) is then the very key of
    # ``_member_map_``, which makes looking it up a pointer comparison.
    enumerants = [sys.intern(n) for n in enumerants]
    members = []
    for i, n in enumerate(enumerants):
        attr = n + "_" if keyword.iskeyword(n) or n.startswith("_") or n in _RESERVED else n
        members.append((sys.intern(attr), i))
    factory: Any = Enum  # the functional API (typeshed does not describe it for subclasses)
    cls: Any = factory(name, members, module=module or __name__, qualname=qualname)
    for i, n in enumerate(enumerants):
        if members[i][0] != n:
            cls._member_map_[n] = cls(i)
    cls._cara_id_ = type_id
    cls._cara_name_ = qualname
    cls._cara_enumerant_names_ = tuple(enumerants)
    desc = ClassType("enum", lambda: cls, qualname, ("enum", type_id))
    cls._cara_type_ = desc
    return cls


_RESERVED = {"name", "value", "mro", "real", "imag", "numerator", "denominator", "conjugate",
             "bit_length", "bit_count", "to_bytes", "from_bytes", "as_integer_ratio"}
