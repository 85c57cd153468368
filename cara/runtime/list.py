"""Typed lists: ``list`` subclasses that convert on every mutator.

``List[Int32]`` is a class (cached per element type) whose ``append``, ``extend``, ``insert``,
item and slice assignment, ``+=`` and ``*=`` check and convert each new element, so a list held
by a struct can never contain a wrong-typed value. Reads are plain ``list`` reads (C speed);
reading a slice gives a plain ``list``. ``+`` and ``*`` give the typed class.

A list handed out for an unset field is *pending* (see :mod:`cara.runtime.struct`): its first
mutation stores it in the parent.
"""

from __future__ import annotations

import copy as _copy
import enum
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeVar, cast, overload

from cara.runtime.accel import SPEEDUPS
from cara.runtime.types import (
    BUILTINS,
    ClassType,
    Invalid,
    TypeDesc,
    as_type,
    hold_in_any_pointer,
    mismatch,
    type_key,
)

#: What lists need of :mod:`cara.runtime.struct` (attaching a detached child to its parent,
#: plain values, lazy element converters). ``struct`` imports this module, so it hands these
#: over when it is imported instead of this module importing it back.
STRUCT_API: dict[str, Any] = {}

__all__ = ["List", "list_class"]

_lock = threading.RLock()
_classes: dict[Any, type[List]] = {}


#: The element type, for type checkers (``List[Person]`` in the stubs); at run time
#: ``List[T]`` is the class of a Cap'n Proto element type (``__class_getitem__``).
_T = TypeVar("_T")

# With the C accelerator, typed lists keep ``_p`` and ``_o`` in two slots of their base class
# (which read as None while unset), not in a ``__dict__`` made for each list on its first read.
if TYPE_CHECKING:
    _ListBase = list
else:
    _ListBase = list if SPEEDUPS is None else SPEEDUPS.ListBase


class List(_ListBase[_T]):
    """Base of every typed list class. ``List[T]`` gives the class for element type ``T``."""

    _cara_elem_: TypeDesc
    _cara_name_: str = "List"
    #: (parent, field number) while this list is a pending default handed out by a struct.
    _p: Any
    #: Where this list was last read from (``Person.phones``), for error messages.
    _o: Any
    if _ListBase is list:  # (else the base's slots)
        _p = None
        _o = None
    #: The fast converters have been generated (see :func:`_compile_items`; done on first use).
    _cara_ready_: bool = False

    def __class_getitem__(cls, item: Any) -> Any:
        return list_class(as_type(item))

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        try:
            list.__init__(self, type(self)._cara_items_(iterable))
        except Invalid as e:
            raise e.error(self._cara_name_) from None
        except RecursionError:
            raise Invalid("value nested too deeply").error(self._cara_name_) from None

    @classmethod
    def Create(cls, *items: Any) -> Any:
        return cls(items)

    @classmethod
    def _cara_items_(cls, iterable: Any) -> list[Any]:
        """Converted elements of ``iterable`` as a plain list (raises :class:`Invalid`)."""
        if not cls._cara_ready_ and "_cara_elem_" in cls.__dict__:
            _compile_items(cls)
            return cls._cara_items_(iterable)
        return cls._cara_items_general_(iterable)

    @classmethod
    def _cara_items_general_(cls, iterable: Any, slow: bool = False) -> list[Any]:
        if isinstance(iterable, (str, bytes, bytearray, dict)) or not isinstance(
                iterable, Iterable):
            raise mismatch(cls._cara_name_, iterable)
        elem = cls._cara_elem_
        conv = elem.convert_slow if slow else elem.convert
        items = list(iterable)
        out = []
        for i, x in enumerate(items):
            try:
                out.append(_element(elem, conv, x))
            except Invalid as e:
                raise e.at(f"[{i}]") from None
        return out

    @classmethod
    def _cara_convert_(cls, value: Any) -> Any:
        if not cls._cara_ready_ and "_cara_elem_" in cls.__dict__:
            _compile_items(cls)
            return cls._cara_convert_(value)
        if type(value) is cls:
            return value
        new = list.__new__(cls)
        list.extend(new, cls._cara_items_(value))
        return new

    @classmethod
    def _cara_convert_slow_(cls, value: Any) -> Any:
        """Like ``_cara_convert_`` but generating no code (constants while building)."""
        if type(value) is cls:
            return value
        new = list.__new__(cls)
        list.extend(new, cls._cara_items_general_(value, True))
        return new

    @classmethod
    def _cara_prepare_(cls) -> None:
        if not cls._cara_ready_ and "_cara_elem_" in cls.__dict__:
            _compile_items(cls)

    @classmethod
    def _cara_zero_(cls) -> Any:
        return list.__new__(cls)

    def _where(self) -> str:
        """The path errors start with: the field this list was read from (``Person.phones``),
        else the list's type (``List[Int32]``)."""
        if self._p is not None:  # a pending default, handed out by its parent
            parent, num = self._p
            return f"{parent._cara_name_}.{parent.cara_schema.fields[num].name}"
        return self._o or self._cara_name_

    def _conv(self, value: Any, index: Any) -> Any:
        try:
            return _element(self._cara_elem_, self._cara_elem_.convert, value)
        except Invalid as e:
            raise e.at(f"[{index}]").error(self._where()) from None

    def _many(self, values: Any, start: int = 0, step: int = 1) -> list[Any]:
        """Converted ``values`` that will sit at ``start``, ``start + step``, ... in this list
        (errors name that index, not the position in ``values``)."""
        try:
            return type(self)._cara_items_(values)
        except Invalid as e:
            # The outermost part is the element's position in ``values``: ``[i]``.
            if e.parts and e.parts[-1].startswith("[") and (start or step != 1):
                e.parts[-1] = f"[{start + int(e.parts[-1][1:-1]) * step}]"
            raise e.error(self._where()) from None
        except RecursionError:
            raise Invalid("value nested too deeply").error(self._where()) from None

    def _touched(self) -> None:
        if self._p is not None:
            STRUCT_API["attach"](self)

    # ------------------------------------------------------------------ mutators

    def append(self, value: Any) -> None:
        list.append(self, self._conv(value, len(self)))
        self._touched()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, self._many(values, len(self)))
        self._touched()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        at = index.__index__()  # where list.insert puts it
        at = min(max(at + len(self) if at < 0 else at, 0), len(self))
        list.insert(self, index, self._conv(value, at))
        self._touched()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            start, _, step = index.indices(len(self))
            list.__setitem__(self, index, self._many(value, start, step))
        else:
            at = index.__index__() if hasattr(index, "__index__") else index
            if isinstance(at, int) and at < 0:
                at += len(self)
            list.__setitem__(self, index, self._conv(value, at))
        self._touched()

    def __delitem__(self, index: Any) -> None:
        list.__delitem__(self, index)
        self._touched()

    def __iadd__(self, values: Iterable[Any]) -> Any:  # type: ignore[misc]
        self.extend(values)
        return self

    def __imul__(self, count: SupportsIndex) -> Any:
        list.__imul__(self, count)
        self._touched()
        return self

    def __add__(self, values: Any) -> Any:
        new = list.__new__(type(self))
        list.extend(new, self)
        list.extend(new, self._many(values))
        return new

    def __radd__(self, values: Any) -> Any:
        new = list.__new__(type(self))
        list.extend(new, self._many(values))
        list.extend(new, self)
        return new

    def __mul__(self, count: SupportsIndex) -> Any:
        new = list.__new__(type(self))
        list.extend(new, list.__mul__(self, count))
        return new

    __rmul__ = __mul__

    def pop(self, index: SupportsIndex = -1) -> Any:
        value = list.pop(self, index)
        self._touched()
        return value

    def remove(self, value: Any) -> None:
        list.remove(self, value)
        self._touched()

    def clear(self) -> None:
        list.clear(self)
        self._touched()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        list.sort(self, *args, **kwargs)
        self._touched()

    def reverse(self) -> None:
        list.reverse(self)
        self._touched()

    # ------------------------------------------------------------------ queries and copies

    @overload
    def Get(self, _with_index: Literal[False] = False, **query: Any) -> _T: ...

    @overload
    def Get(self, _with_index: Literal[True], **query: Any) -> tuple[int, _T]: ...

    def Get(self, _with_index: bool = False, **query: Any) -> Any:
        """The first struct element whose fields match ``query``; ``a__b=v`` looks into nested
        structs (``element.a.b == v``); an enum field matches its member, number or name.
        ``_with_index=True`` returns ``(index, element)``.
        Raises ``KeyError`` when nothing matches."""
        paths = [(key.split("__"), value) for key, value in query.items()]
        for index, element in enumerate(self):
            if all(_matches(_lookup(element, path), value) for path, value in paths):
                return (index, element) if _with_index else element
        raise KeyError(f"no element of {self._cara_name_} matches {query}")

    def ToList(self) -> list[Any]:
        """Plain nested values (structs as name-keyed dicts)."""
        plain = STRUCT_API["plain"]
        return [plain(v, True) for v in self]

    to_list = ToList

    def copy(self) -> Any:
        new = list.__new__(type(self))
        list.extend(new, self)
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = list.__new__(type(self))
        memo[id(self)] = new
        list.extend(new, [_copy.deepcopy(v, memo) for v in self])
        return new

    def __reduce__(self) -> Any:
        return (_rebuild_list, (_token(self._cara_elem_), list(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"


#: Element kinds stored behind a pointer that Cap'n Proto reads as their default when null.
_NULLABLE_KINDS = frozenset({"text", "data", "list", "struct"})


def _element(elem: TypeDesc, conv: Any, value: Any) -> Any:
    """One converted element. ``None`` in a list of Text, Data, lists or structs is a null
    pointer (Cap'n Proto messages may hold them): it is read as every Cap'n Proto reader reads
    it, the element type's default (``""``, ``b""``, ``[]``, an empty struct), so the list
    holds only values of its element type."""
    try:
        return conv(value)
    except Invalid:
        if value is None and elem.kind in _NULLABLE_KINDS:
            return elem.default()
        raise


def _lookup(element: Any, path: list[str]) -> Any:
    value = element
    for part in path:
        try:
            value = value[part]
        except (KeyError, TypeError, IndexError, AttributeError):
            return _NOTHING
    return value


_NOTHING = object()


def _matches(found: Any, wanted: Any) -> bool:
    """``found == wanted``, where an enum value also matches its enumerant's name (as enums
    are written everywhere else: ``phones.Get(type="home")``)."""
    if found == wanted:
        return True
    return isinstance(found, enum.Enum) and isinstance(wanted, str) and found.name == wanted


def _token(t: TypeDesc) -> Any:
    """A picklable stand-in for an element type."""
    if isinstance(t, ClassType):
        if t.kind == "list":
            return ("list", _token(t.cls._cara_elem_))
        return t.cls
    for kind, builtin in BUILTINS.items():
        if builtin is t:
            return kind
    return ("any", t.name)


def _from_token(token: Any) -> TypeDesc:
    from cara.runtime import types as _types

    if isinstance(token, str):
        return BUILTINS[token]
    if isinstance(token, tuple):
        if token[0] == "list":
            return cast(TypeDesc, vars(list_class(_from_token(token[1])))["_cara_type_"])
        return {"AnyStruct": _types.ANY_STRUCT, "AnyList": _types.ANY_LIST,
                "Capability": _types.CAPABILITY}.get(token[1], _types.ANY_POINTER)
    return as_type(token)


def _rebuild_list(token: Any, items: list[Any]) -> Any:
    return list_class(_from_token(token))(items)


def _short(t: TypeDesc) -> str:
    if isinstance(t, ClassType):
        return str(t.cls.__name__)
    return t.name


def list_class(elem: TypeDesc) -> type[List]:
    """The ``List`` subclass for element type ``elem`` (one class per element type)."""
    key = _key(elem)
    cls = _classes.get(key)
    if cls is not None:
        return cls
    with _lock:
        cls = _classes.get(key)
        if cls is None:
            name = f"List[{_short(elem)}]"
            new: Any = type(name, (List,), {"__slots__": (), "_cara_elem_": elem,
                                            "_cara_name_": f"List[{elem.name}]",
                                            "__module__": __name__, "__qualname__": name})
            new._cara_type_ = ClassType("list", lambda: new, f"List({elem.name})",
                                        ("list", type_key(elem)))
            _classes[key] = new
            cls = new
    return cls


def _key(elem: TypeDesc) -> Any:
    # By resolved class: two builders (e.g. after ReplaceTypes) may have classes for the same
    # node, and each needs its own list class.
    if isinstance(elem, ClassType):
        return ("cls", elem.cls)
    return type_key(elem)


def _compile_items(cls: Any) -> None:
    """``_cara_items_`` and ``_cara_convert_`` with the element check inlined (no call per
    element that already has the right type, and one call in all for a plain list)."""
    elem: TypeDesc = cls._cara_elem_
    env: dict[str, Any] = {"conv": elem.convert, "Invalid": Invalid, "C": cls,
                           "slow": vars(List)["_cara_items_general_"].__func__,
                           "lnew": list.__new__, "lextend": list.extend}
    if isinstance(elem, ClassType):
        env["T"] = elem.cls
        env["conv"] = STRUCT_API["lazy_converter"](env, "conv", elem.cls)
        check: str | None = "type(x) is T"
    else:
        check = elem.fast_check("x", env)
    if check is None or check == "True":
        expr = "x" if check == "True" else "conv(x)"
    else:
        expr = f"x if {check} else conv(x)"
    # Struct, list and enum elements: the element class's own converter returns at once for
    # a value of the right type, so ``map`` (driven from C) beats a comprehension.
    fill = "map(conv, v)" if isinstance(elem, ClassType) else f"[{expr} for x in v]"
    source = (
        "def items(cls, it):\n"
        "    if type(it) is not list and type(it) is not tuple and type(it) is not cls:\n"
        "        return slow(cls, it)\n"
        "    try:\n"
        f"        return [{expr} for x in it]\n"
        "    except Invalid:\n"
        "        return slow(cls, it)\n"
        "\n"
        "def convert(v):\n"
        "    if type(v) is C:\n"
        "        return v\n"
        "    new = lnew(C)\n"
        "    if type(v) is list or type(v) is tuple:\n"
        "        try:\n"
        f"            lextend(new, {fill})\n"
        "            return new\n"
        "        except Invalid:\n"
        "            list.clear(new)\n"
        "    lextend(new, slow(C, v))\n"
        "    return new\n"
    )
    exec(compile(source, f"<cara {cls.__name__}>", "exec"), env)
    cls._cara_items_ = classmethod(env["items"])
    cls._cara_convert_ = staticmethod(env["convert"])
    cls._cara_ready_ = True


hold_in_any_pointer(List)  # (an AnyPointer field holds a typed list as it is)
