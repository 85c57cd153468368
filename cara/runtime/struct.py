"""Structs: ``dict`` subclasses keyed by field number, typed on every write, lazy on read.

Storage is ``{field number: value}`` where the number is the field's index in its scope (the
node's ``fields`` list). That is exactly what ``msgpack.packb`` sees, so the packed form is small
(``{0: 'x'}`` is ``81 00 a1 78``) and ``S(msgpack.unpackb(b, strict_map_key=False))`` restores
it. Field names exist only on the class: attribute reads are ``property(itemgetter(n))`` (C
speed), and name keys (``s['name']``, ``s[b'name']``, ``s['0']``) miss the dict and land in
:meth:`Struct.__missing__`, which maps them to numbers.

Reading an unset field returns the Cap'n Proto default and never stores anything: what is
serialized is exactly what was written. An unset struct, group or list field reads as a *pending*
child: an empty (or default) object that remembers its parent and the field number, and attaches
itself to the parent the first time it is mutated, so ``m.nested.integer = 2`` and
``p.phones.append(...)`` are kept while ``print(m.nested)`` changes nothing.

Per class, code is generated on first use (never while a module is imported: constants and
annotation values are converted by the general path) that fills an instance with each field's
type check written out: from a number-keyed dict (msgpack output: one ``dict.update``, then one
``get`` and one ``type(v) is T`` per field, only values that need converting converted again)
and from keywords (``S.Create(name=...)``, whose parameters CPython binds itself). Nested
structs, groups and lists of structs given as plain dicts are converted by code written into the
parent's (two levels deep, within a size budget), which saves a Python call per nested value.
Anything unusual falls back to the general path, which also words the errors, so the fast and
the general path accept and reject exactly the same values. (Keys are matched by equality, so a
peer sending ``1.0`` or ``True`` as a key is read as field 1, and that key object is what is
stored.)

Reading a union member that is not the active one raises :class:`UnionMemberError`;
``which()`` names the active member. ``s.get(key)`` returns what is *set* (or the given
default), unlike ``s[key]``/``s.attr``, which return the schema default for unset fields.

Equality is by reading: two structs are equal when every field reads the same (a field set
to its default equals an unset one, as on the wire; see :func:`_same_reading`). Like dicts,
structs are mutable and therefore unhashable (``hash(s)`` raises ``TypeError``); use
``msgpack.packb(s)`` or ``tuple(sorted(s.items()))``as a key if needed.
"""

from __future__ import annotations

import copy as _copy
import keyword
from collections.abc import AsyncIterator, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

from cara.errors import CaraError
from cara.runtime import hooks as _hooks
from cara.runtime.accel import SPEEDUPS as _SPEEDUPS_MODULE
from cara.runtime.list import STRUCT_API as _LIST_NEEDS
from cara.runtime.list import List as _List
from cara.runtime.nesting import DEFAULT_NESTING_LIMIT, plain_depth_exceeds
from cara.runtime.nesting import KEPT_KEY as _KEPT_KEY
from cara.runtime.types import (
    ClassType,
    Invalid,
    TypeDesc,
    describe_value,
    hold_in_any_pointer,
    mismatch,
    round32,
)

#: The optional C accelerator (cara/runtime/_speedups.c), or None (see cara.runtime.accel).
_speedups: Any = _SPEEDUPS_MODULE

#: Whether struct construction runs through the C accelerator (see docs/structs.md).
SPEEDUPS = _speedups is not None

__all__ = ["FieldSpec", "Struct", "StructSchema", "UnionMemberError", "group_attribute",
           "make_struct_class"]

_MISSING: Any = object()
#: A struct class's own type, for the methods that return one (``S.from_bytes(b)`` is an ``S``).
_S = TypeVar("_S", bound="Struct")
_DEBUG = False
_dget = dict.get
_dset = dict.__setitem__
_dcontains = dict.__contains__
_dpop = dict.pop
_setattr = object.__setattr__

#: Names a field attribute must not take (they are the dict API or cara's own API); such a field
#: is reachable as ``name_`` and, always, as ``s['name']``.
RESERVED_ATTRS = frozenset(dir(dict)) | {
    "which", "to_dict", "ToDict", "Create", "to_msgpack", "from_msgpack", "to_json", "from_json",
    "to_bytes", "from_bytes", "to_packed_bytes", "from_packed_bytes", "ReplaceTypes",
    "write", "write_packed", "write_async", "read", "read_packed", "read_multiple",
    "read_multiple_packed", "read_multiple_bytes", "read_multiple_bytes_packed", "read_async",
    "read_multiple_async",
    "cara_schema", "mro",
}


class UnionMemberError(CaraError, AttributeError):
    """Reading a union member that is not the active one (``which()`` names the active one)."""


def attribute_name(name: str, reserved: frozenset[str] = RESERVED_ATTRS) -> str:
    """The Python attribute for a schema name: keywords and reserved names get a trailing ``_``."""
    if keyword.iskeyword(name) or name in reserved or name.startswith("_"):
        return name + "_"
    return name


class FieldSpec:
    """One field of a struct class, with everything the fast paths need precomputed."""

    __slots__ = ("_compare", "_default", "annotations", "attr", "default_plain", "discriminant",
                 "has_default", "is_group", "label", "name", "number", "owner", "siblings", "type")

    def __init__(self, number: int, name: str, type_: TypeDesc, *, is_group: bool = False,
                 discriminant: int | None = None, default_plain: Any = _MISSING,
                 annotations: Any = ()) -> None:
        self.number = number
        self.name = name
        self.attr = attribute_name(name)
        self.type = type_
        self.is_group = is_group
        self.discriminant = discriminant
        #: The explicit default as a plain value (converted lazily), or _MISSING.
        self.default_plain = default_plain
        self.has_default = default_plain is not _MISSING
        self._default: Any = _MISSING
        self._compare: Any = _MISSING
        #: Numbers of the other members of the same unnamed union (cleared when this one is set).
        self.siblings: tuple[int, ...] = ()
        self.label = "." + name
        self.annotations = annotations
        self.owner: Any = None

    @property
    def is_pointer_like(self) -> bool:
        """Reads of an unset field give a pending child (struct, group or list)."""
        return self.is_group or self.type.kind in ("struct", "list")

    def scalar_default(self) -> Any:
        """The default of a field that is not pointer-like (immutable, so shared)."""
        if self._default is _MISSING:
            if self.has_default:
                try:
                    self._default = self.type.convert(self.default_plain)
                except Invalid:
                    self._default = self.type.default()
            else:
                self._default = self.type.default()
        return self._default

    def fresh_default(self) -> Any:
        """A new object for a pointer-like field (so mutating it cannot change the default)."""
        cls = self.type.cls  # type: ignore[attr-defined]
        if self.has_default and self.default_plain is not None:
            try:
                return cls._cara_convert_(clean_plain(self.type, self.default_plain))
            except Invalid:
                pass
        return cls()

    def compare_default(self) -> Any:
        """What an unset field reads as, for comparisons only (a pointer-like default is made
        once and never handed out, so nothing can change it)."""
        if not self.is_pointer_like:
            return self.scalar_default()
        if self._compare is _MISSING:
            self._compare = self.fresh_default()
        return self._compare

    def __repr__(self) -> str:
        return f"<field {self.name} #{self.number} :{self.type.name}>"


_POINTER_KINDS = frozenset({"text", "data", "list", "struct", "interface", "anyPointer"})


def clean_plain(t: TypeDesc, value: Any) -> Any:
    """A fresh copy of a plain schema value (a default or constant) with null pointers
    (``None`` under a pointer field, as some producers write them) left out."""
    if t.kind == "struct" and isinstance(value, dict):
        schema = t.cls.cara_schema  # type: ignore[attr-defined]
        out = {}
        for k, v in value.items():
            f = schema.by_name.get(k) if isinstance(k, str) else None
            if f is None:
                n = schema.by_key.get(k) if not isinstance(k, (dict, list)) else None
                f = schema.fields[n] if n is not None else None
            if f is None:
                out[k] = _copy.deepcopy(v)
            elif v is None and (f.is_group or f.type.kind in _POINTER_KINDS):
                continue
            else:
                out[k] = clean_plain(f.type, v)
        return out
    if t.kind == "list" and isinstance(value, list):
        elem = t.cls._cara_elem_  # type: ignore[attr-defined]
        return [clean_plain(elem, v) for v in value]
    return _copy.deepcopy(value)


class StructSchema:
    """Everything a struct class knows about its schema (``S.cara_schema``)."""

    def __init__(self, type_id: int, name: str, fields: list[FieldSpec], *, node: Any = None,
                 is_group: bool = False, annotations: Any = (), builder: Any = None,
                 bindings: Any = (), generic_params: tuple[str, ...] = ()) -> None:
        self.id = type_id
        self.name = name
        self.node = node
        self.is_group = is_group
        self.fields: tuple[FieldSpec, ...] = tuple(fields)
        self.annotations = annotations
        self.builder = builder
        self.bindings = bindings
        self.generic_params = generic_params
        self.by_name = {f.name: f for f in fields}
        #: Every accepted key -> field number: numbers, names (str and bytes), digit strings.
        self.by_key: dict[Any, int] = {}
        for f in fields:
            n = f.number
            self.by_key[n] = n
            self.by_key[str(n)] = n
            self.by_key[str(n).encode()] = n
            self.by_key[f.name] = n
            self.by_key[f.name.encode()] = n
            self.by_key.setdefault(f.attr, n)  # ``class_`` for ``class`` (keyword arguments)
        self.attr_num = {f.attr: f.number for f in fields}
        union = [f for f in fields if f.discriminant is not None]
        self.union: tuple[FieldSpec, ...] = tuple(sorted(union, key=lambda f: f.discriminant or 0))
        nums = tuple(f.number for f in self.union)
        for f in self.union:
            f.siblings = tuple(n for n in nums if n != f.number)
        self.by_discriminant = {f.discriminant: f for f in self.union}
        self.known = frozenset(self.by_key[f.number] for f in fields)
        self.names = frozenset(f.name for f in fields)
        #: The defaults of the fields outside any union that are not pointer-like, by number
        #: (immutable, so shared): what reading such a field that is not set gives
        #: (Struct.__missing__; made on first use, once the field types can say).
        self.plain_defaults: dict[int, Any] | None = None

    def make_plain_defaults(self) -> dict[int, Any]:
        found = {f.number: f.scalar_default() for f in self.fields
                 if f.discriminant is None and not f.is_pointer_like}
        self.plain_defaults = found
        return found

    def field(self, key: Any) -> FieldSpec:
        return self.fields[self.by_key[key]]

    def __repr__(self) -> str:
        return f"<struct {self.name} @0x{self.id:016x}>"


#: The key under which a struct holds what a newer schema's binary message had beyond its own
#: schema (no field number is negative): kept through msgpack (see cara.codecs.capnp.kept).
KEPT_KEY = _KEPT_KEY


def _known_key(schema: StructSchema, key: Any) -> int | None:
    """Field number for a key; ``None`` for a number this schema does not know (schema evolution:
    kept as is). Anything else is an error."""
    try:
        num = schema.by_key.get(key)
    except TypeError:
        raise Invalid(f"unhashable key {describe_value(key)}") from None
    if num is not None:
        return num
    if type(key) is int and (0 <= key <= 0xFFFF or key == KEPT_KEY):
        return None
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if isinstance(key, str):
        raise Invalid(f"{schema.name} has no field named {key!r}")
    raise Invalid(f"{schema.name} has no field {describe_value(key)}")


# With the C accelerator, structs keep ``_p``, ``_c`` and ``_cara_unknown_`` in slots of their
# base class (which read as None while unset) and have no ``__dict__``.
if TYPE_CHECKING:
    _StructBase = dict
else:
    _StructBase = dict if _speedups is None else _speedups.StructBase


class Struct(_StructBase):
    """Base of every generated struct class (see the module docstring)."""

    if _StructBase is not dict:
        __slots__ = ()
    cara_schema: StructSchema
    _cara_name_: str = "Struct"
    #: (parent, field number) while this object is a pending default child, else None.
    _p: Any
    #: Pending children handed out by reads of unset fields: {number: child}.
    _c: Any
    #: How pickle finds this class when it is not importable by qualname (groups, generics).
    _cara_locator_: Any = None
    #: The fast constructors have been generated (see :func:`_compile`).
    _cara_ready_: bool = False
    #: The C accelerator's plan for this class (see :func:`_accelerate`), when it is built.
    _cara_plan_: Any = None
    #: What a binary message from a newer schema held beyond this one, kept for encoding it
    #: again (set by the Cap'n Proto decoder on the few instances that have any: see
    #: cara.codecs.capnp.unknown); it has ``disc``, an unknown discriminant or None.
    _cara_unknown_: Any
    if _StructBase is dict:  # (else the base's slots)
        _p = None
        _c = None
        _cara_unknown_ = None

    __hash__ = None

    def __eq__(self, other: object) -> bool:
        """Equal when every field reads the same (see :func:`_same_reading`)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        if dict.__eq__(self, other) is True:  # the same items (C speed)
            return True
        return _same_reading(self, other)

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    def __class_getitem__(cls, args: Any) -> Any:
        """``S[T, ...]``: generic struct ``S`` with its parameters bound."""
        from cara.runtime.generics import bind

        return bind(cls, args)

    # ------------------------------------------------------------------ construction

    def __init__(self, data: Any = None, /, **kwargs: Any) -> None:
        # Replaced per class by generated code on first use (see _compile).
        _compile(type(self))
        type(self).__init__(self, data, **kwargs)

    def _cara_init_general_(self, data: Any, kwargs: dict[str, Any] | None) -> None:
        """Construction from anything: names, bytes names, digit strings, Struct instances,
        other mappings, keywords (the generated ``__init__`` falls back to this)."""
        cls = type(self)
        try:
            if data is not None:
                if not isinstance(data, Mapping):
                    raise mismatch(f"a mapping for {cls._cara_name_}", data)
                if isinstance(data, Struct) and data.cara_schema.id != cls.cara_schema.id:
                    raise mismatch(cls._cara_name_, data)
                _fill_slow(self, data)
                if kwargs:
                    _fill_slow(self, kwargs, merge=True)
            elif kwargs:
                _fill_slow(self, kwargs)
        except Invalid as e:
            raise e.error(cls._cara_name_) from None
        except RecursionError:
            raise Invalid("value nested too deeply").error(cls._cara_name_) from None

    @classmethod
    def Create(cls, /, *args: Any, **kwargs: Any) -> Any:
        """``S.Create(value_of_field_0, ..., name=value)``."""
        if args:
            fields = cls.cara_schema.fields
            if len(args) > len(fields):
                raise Invalid(f"{cls._cara_name_} takes at most {len(fields)} positional values,"
                              f" got {len(args)}").error(cls._cara_name_)
            for f, v in zip(fields, args, strict=False):
                if f.name in kwargs:
                    raise Invalid(f"field {f.name!r} given twice").error(cls._cara_name_)
                kwargs[f.name] = v
        return cls._cara_create_(kwargs)

    @classmethod
    def _cara_create_(cls, kwargs: dict[str, Any]) -> Any:
        _compile(cls)
        return cls._cara_create_(kwargs)

    @classmethod
    def _cara_convert_(cls, value: Any) -> Any:
        """The value as an instance of this class (raises :class:`Invalid`)."""
        _compile(cls)
        return cls._cara_convert_(value)

    @classmethod
    def _cara_convert_general_(cls, value: Any) -> Any:
        if isinstance(value, Struct):
            if isinstance(value, cls):
                return value
            if value.cara_schema.id != cls.cara_schema.id:
                raise mismatch(cls._cara_name_, value)
        elif not isinstance(value, Mapping):
            raise mismatch(cls._cara_name_, value)
        obj = dict.__new__(cls)
        _fill_slow(obj, value)
        return obj

    @classmethod
    def _cara_convert_slow_(cls, value: Any) -> Any:
        """Like ``_cara_convert_`` but generating no code, down to the innermost value (used for
        constants and annotation values while a module is built)."""
        if isinstance(value, Struct):
            if isinstance(value, cls):
                return value
            if value.cara_schema.id != cls.cara_schema.id:
                raise mismatch(cls._cara_name_, value)
        elif not isinstance(value, Mapping):
            raise mismatch(cls._cara_name_, value)
        obj = dict.__new__(cls)
        _fill_slow(obj, value, slow=True)
        return obj

    @classmethod
    def _cara_zero_(cls) -> Any:
        return dict.__new__(cls)

    @classmethod
    def _cara_prepare_(cls, accelerate: bool = True) -> None:
        """Generate the fast constructors now (normally done on first use); with
        ``accelerate=False`` without the C accelerator even where it is built (to compare the
        two builds side by side, as the tests and benchmarks do)."""
        _compile(cls, accelerate)

    # ------------------------------------------------------------------ reads

    def __missing__(self, key: Any) -> Any:
        schema = self.cara_schema
        if type(key) is int:  # (a field number: most reads of a scalar that is not set)
            defaults = schema.plain_defaults
            if defaults is None:
                defaults = schema.make_plain_defaults()
            value = defaults.get(key, _MISSING)
            if value is not _MISSING:
                return value
        try:
            num = schema.by_key.get(key)
        except TypeError:
            raise KeyError(key) from None
        if num is None:
            raise KeyError(key)
        if num != key or type(key) is not int:
            value = _dget(self, num, _MISSING)
            if value is not _MISSING:
                if isinstance(value, _List):  # ``p["phones"]``: as the attribute does
                    _setattr(value, "_o", f"{self._cara_name_}.{schema.fields[num].name}")
                return value
        return self._cara_default_(schema.fields[num])

    def _cara_default_(self, f: FieldSpec) -> Any:
        if f.discriminant is not None:
            for n in f.siblings:
                if _dcontains(self, n):
                    raise UnionMemberError(
                        f"{self._cara_name_}.{f.name} is not set: the union holds "
                        f"{self.cara_schema.fields[n].name}")
            if f.discriminant != 0:
                first = self.cara_schema.union[0]
                raise UnionMemberError(
                    f"{self._cara_name_}.{f.name} is not set: the union holds {first.name}"
                    " (the default member)")
        if not f.is_pointer_like:
            return f.scalar_default()
        pending = self._c
        if pending is None:
            pending = {}
            _setattr(self, "_c", pending)
        child = pending.get(f.number)
        if child is None:
            child = f.fresh_default()
            _setattr(child, "_p", (self, f.number))
            pending[f.number] = child
        return child

    def get(self, key: Any, default: Any = None) -> Any:
        """The value set for ``key`` (number or name), else ``default`` (not the schema default)."""
        try:
            num = self.cara_schema.by_key.get(key, key)
        except TypeError:
            return default
        return _dget(self, num, default)

    def __contains__(self, key: object) -> bool:
        try:
            num = self.cara_schema.by_key.get(key, key)
        except TypeError:
            return False
        return _dcontains(self, num)

    def which(self) -> str:
        """Name of the active member of this struct's unnamed union (the member with
        discriminant 0 when none was set, as Cap'n Proto reads it), or ``None`` when a
        binary message from a newer schema chose a member this schema does not have (until a
        known member is set)."""
        union = self.cara_schema.union
        if not union:
            raise TypeError(f"{self._cara_name_} has no unnamed union")
        owner = type(self)
        while "cara_schema" not in owner.__dict__:
            owner = owner.__mro__[1]
        if "which" not in owner.__dict__:
            owner.which = _which_function(owner.cara_schema)  # type: ignore[method-assign]
        for f in union:
            if _dcontains(self, f.number):
                return f.name
        unknown = self._cara_unknown_
        if unknown is not None and unknown.disc is not None:
            return None  # type: ignore[return-value]
        return union[0].name

    # ------------------------------------------------------------------ writes

    # Hidden from type checkers: with a ``__setattr__`` in sight, mypy would accept writes to
    # any attribute, and a misspelt field (``p.nmae = "x"``) must be flagged by the stubs.
    if not TYPE_CHECKING:

        def __setattr__(self, name: str, value: Any) -> None:
            num = self.cara_schema.attr_num.get(name)
            if num is None:
                raise AttributeError(f"{self._cara_name_} has no field {name!r}")
            self._cara_set_(num, value)

        def __delattr__(self, name: str) -> None:
            num = self.cara_schema.attr_num.get(name)
            if num is None:
                raise AttributeError(f"{self._cara_name_} has no field {name!r}")
            self._cara_unset_(num)

    def __setitem__(self, key: Any, value: Any) -> None:
        try:
            num = _known_key(self.cara_schema, key)
        except Invalid as e:
            raise e.error(self._cara_name_) from None
        if num is None:  # a number from a newer schema: kept as is
            if key == KEPT_KEY:
                try:
                    value = _keep_unknown(self, value)
                except Invalid as e:
                    raise e.error(self._cara_name_) from None
            _dset(self, key, value)
            self._cara_touched_()
            return
        self._cara_set_(num, value)

    def __delitem__(self, key: Any) -> None:
        try:
            num = _known_key(self.cara_schema, key)
        except Invalid:
            raise KeyError(key) from None
        if num is None:
            num = key
        if not _dcontains(self, num):
            raise KeyError(key)
        self._cara_unset_(num)

    def _cara_set_(self, num: int, value: Any) -> None:
        f = self.cara_schema.fields[num]
        try:
            value = f.type.convert(value)
        except Invalid as e:
            raise e.at(f.label).error(self._cara_name_) from None
        except RecursionError:
            raise Invalid("value nested too deeply").at(f.label).error(self._cara_name_) from None
        self._cara_store_(num, value)

    def _cara_store_(self, num: int, value: Any) -> None:
        """Store an already converted value: clears union siblings, detaches a pending child
        handed out for this field, attaches this object to its own parent if it was pending."""
        f = self.cara_schema.fields[num]
        pending = self._c
        for n in f.siblings:
            _dpop(self, n, None)
            if pending:
                _detach(pending, n)
        _dset(self, num, value)
        if pending:
            child = pending.get(num)
            if child is not None and child is not value:
                _detach(pending, num)
            elif child is value:
                del pending[num]
        if self._p is not None:
            _attach(self)

    def _cara_unset_(self, num: int) -> None:
        _dpop(self, num, None)
        if num == KEPT_KEY:
            _setattr(self, "_cara_unknown_", None)
        if self._c:
            _detach(self._c, num)
        self._cara_touched_()

    def _cara_touched_(self) -> None:
        if self._p is not None:
            _attach(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set fields one by one, as assignments do (a union member replaces its siblings)."""
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 positional argument, got {len(args)}")
        for source in (*args, kwargs):
            items = source.items() if isinstance(source, Mapping) else source
            for k, v in items:
                self[k] = v

    def __ior__(self, other: Any) -> Any:
        self.update(other)
        return self

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[Any, Any]:
        item = dict.popitem(self)
        if item[0] == KEPT_KEY:
            _setattr(self, "_cara_unknown_", None)
        self._cara_touched_()
        return item

    def clear(self) -> None:
        dict.clear(self)
        if self._cara_unknown_ is not None:
            _setattr(self, "_cara_unknown_", None)
        if self._c:
            for n in list(self._c):
                _detach(self._c, n)
        self._cara_touched_()

    # ------------------------------------------------------------------ conversions

    def copy(self: _S) -> _S:
        """A shallow copy of the same class (a ``dict.copy`` would lose the class)."""
        new = dict.__new__(type(self))
        dict.update(new, self)
        if self._cara_unknown_ is not None:
            _setattr(new, "_cara_unknown_", self._cara_unknown_)
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = dict.__new__(type(self))
        memo[id(self)] = new
        for k, v in dict.items(self):
            _dset(new, k, _copy.deepcopy(v, memo))
        if self._cara_unknown_ is not None:  # (immutable: shared)
            _setattr(new, "_cara_unknown_", self._cara_unknown_)
        return new

    def __reduce__(self) -> Any:
        locator = self._cara_locator_
        if self._cara_unknown_ is not None:
            return (_rebuild_struct, (locator or type(self), dict(self), self._cara_unknown_))
        return (_rebuild_struct, (locator or type(self), dict(self)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested ``dict``/``list`` values keyed by field name (groups as dicts); fields
        from a newer schema keep their number as key."""
        fields = self.cara_schema.fields
        out: dict[Any, Any] = {}
        for k, v in dict.items(self):
            if type(k) is int and 0 <= k < len(fields):
                out[fields[k].name] = _plain(v, True)
            else:
                out[k] = _plain(v, True)
        return out

    def ToDict(self, with_field_names: bool = False) -> dict[Any, Any]:
        """The original's API: plain nested values keyed by number, or by name."""
        if with_field_names:
            return self.to_dict()
        return {k: _plain(v, False) for k, v in dict.items(self)}

    def __repr__(self) -> str:
        fields = self.cara_schema.fields
        parts = []
        for k, v in dict.items(self):
            name = fields[k].name if type(k) is int and 0 <= k < len(fields) else repr(k)
            parts.append(f"{name}: {v!r}")
        return f"{type(self).__name__}({{{', '.join(parts)}}})"

    # msgpack and JSON round trips (the codecs live in cara.codecs; imported lazily).

    def to_msgpack(self) -> bytes:
        """``msgpack.packb(self)``: this struct is a dict keyed by field number."""
        return _hooks.packb(self)

    @classmethod
    def from_msgpack(cls: type[_S], data: bytes) -> _S:
        """Decode msgpack ``data`` (as ``msgpack.packb(s)`` wrote it) into this class."""
        # (With the C accelerator, a class's own from_msgpack reads in C: see _accelerate.)
        return _hooks.unpack_plain(cls, data)

    def to_json(self, **options: Any) -> str:
        from cara.runtime import hooks

        return hooks.to_json(self, **options)

    @classmethod
    def from_json(cls: type[_S], text: str | bytes) -> _S:
        from cara.runtime import hooks

        return hooks.from_json(cls, text)

    def to_bytes(self, *, packed: bool = False) -> bytes:
        """The Cap'n Proto binary encoding (provided by the capnp codec when installed)."""
        return _hooks.to_bytes(self, packed=packed)

    def to_packed_bytes(self) -> bytes:
        return self.to_bytes(packed=True)

    @classmethod
    def from_bytes(cls: type[_S], data: bytes | bytearray | memoryview, *, packed: bool = False,
                   traversal_limit_in_words: int | None = None,
                   nesting_limit: int | None = None) -> _S:
        """One Cap'n Proto message (limits as pycapnp names them; libcapnp's defaults)."""
        return _hooks.from_bytes(cls, data, packed=packed,
                                 traversal_limit_in_words=traversal_limit_in_words,
                                 nesting_limit=nesting_limit)

    @classmethod
    def from_packed_bytes(cls: type[_S], data: bytes | bytearray | memoryview) -> _S:
        return cls.from_bytes(data, packed=True)

    # Messages in files, sockets and streams, under pycapnp's names (cara.codecs.capnp.stream).

    def write(self, file: Any) -> None:
        """Write this struct as one framed message to a binary file or a socket."""
        _hooks.stream("write")(self, file)

    def write_packed(self, file: Any) -> None:
        _hooks.stream("write")(self, file, packed=True)

    async def write_async(self, writer: Any, *, packed: bool = False) -> None:
        """Write one message to an ``asyncio.StreamWriter`` and drain it."""
        await _hooks.stream("write_async")(self, writer, packed=packed)

    @classmethod
    def read(cls: type[_S], file: Any, traversal_limit_in_words: int | None = None,
             nesting_limit: int | None = None) -> _S:
        """One message from a binary file or a socket (nothing after it is read)."""
        return _hooks.stream("read")(cls, file, traversal_limit_in_words=traversal_limit_in_words,
                                     nesting_limit=nesting_limit)

    @classmethod
    def read_packed(cls: type[_S], file: Any, traversal_limit_in_words: int | None = None,
                    nesting_limit: int | None = None) -> _S:
        return _hooks.stream("read")(cls, file, packed=True,
                                     traversal_limit_in_words=traversal_limit_in_words,
                                     nesting_limit=nesting_limit)

    @classmethod
    def read_multiple(cls: type[_S], file: Any, traversal_limit_in_words: int | None = None,
                      nesting_limit: int | None = None, skip_copy: bool = False
                      ) -> Iterator[_S]:
        """An iterator over the messages of a binary file or a socket, to its end (each
        message checked against the limits on its own; ``skip_copy`` is accepted for pycapnp's
        sake and changes nothing)."""
        return _hooks.stream("read_multiple")(
            cls, file, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    def read_multiple_packed(cls: type[_S], file: Any,
                             traversal_limit_in_words: int | None = None,
                             nesting_limit: int | None = None,
                             skip_copy: bool = False) -> Iterator[_S]:
        return _hooks.stream("read_multiple")(
            cls, file, packed=True, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    def read_multiple_bytes(cls: type[_S], buf: Any, traversal_limit_in_words: int | None = None,
                            nesting_limit: int | None = None) -> Iterator[_S]:
        """An iterator over the messages written one after another into ``buf``."""
        return _hooks.stream("read_multiple_bytes")(
            cls, buf, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    def read_multiple_bytes_packed(cls: type[_S], buf: Any,
                                   traversal_limit_in_words: int | None = None,
                                   nesting_limit: int | None = None) -> Iterator[_S]:
        return _hooks.stream("read_multiple_bytes")(
            cls, buf, packed=True, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    async def read_async(cls: type[_S], reader: Any, traversal_limit_in_words: int | None = None,
                         nesting_limit: int | None = None, *, packed: bool = False
                         ) -> _S | None:
        """One message from an ``asyncio.StreamReader``; ``None`` at the end of the stream."""
        return await _hooks.stream("read_async")(
            cls, reader, packed=packed, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    def read_multiple_async(cls: type[_S], reader: Any,
                            traversal_limit_in_words: int | None = None,
                            nesting_limit: int | None = None, *, packed: bool = False
                            ) -> AsyncIterator[_S]:
        """``async for s in S.read_multiple_async(reader)``: every message to the end."""
        return _hooks.stream("read_multiple_async")(
            cls, reader, packed=packed, traversal_limit_in_words=traversal_limit_in_words,
            nesting_limit=nesting_limit)

    @classmethod
    def ReplaceTypes(cls, replacements: Any) -> Any:
        """A copy of this struct class with types replaced everywhere it reaches:
        ``S.ReplaceTypes([(Old, New), ...])``."""
        from cara.runtime.generics import replace_types

        return replace_types(cls, replacements)


def _same_reading(a: Struct, other: Mapping[Any, Any]) -> bool:
    """The equality rule: two structs are equal when every field *reads* the same, so a field
    set to its default equals an unset one (Cap'n Proto's wire cannot tell them apart, and every
    codec's round trip must compare equal), the same union member must be active, and a NaN
    equals a NaN. A plain mapping is read as ``a``'s class (one that does not convert is
    unequal); a struct of another schema is unequal."""
    schema = a.cara_schema
    if isinstance(other, Struct):
        if other.cara_schema.id != schema.id:
            return False
        b: Any = other
    else:
        try:
            b = type(a)._cara_convert_(other)
        except (Invalid, CaraError, TypeError, ValueError, RecursionError):
            return False
        if dict.__eq__(a, b):
            return True
    if schema.union and a.which() != b.which():
        return False
    fields = schema.fields
    count = len(fields)
    for key in dict.keys(a) | dict.keys(b):
        x = _dget(a, key, _MISSING)
        y = _dget(b, key, _MISSING)
        if type(key) is int and 0 <= key < count:
            if x is _MISSING:
                x = fields[key].compare_default()
            elif y is _MISSING:
                y = fields[key].compare_default()
        elif x is _MISSING or y is _MISSING:  # a number from a newer schema, on one side
            return False
        if not _same_value(x, y):
            return False
    return True


def _same_value(x: Any, y: Any) -> bool:
    """``x == y``, where a NaN equals a NaN, also inside lists."""
    if x == y:
        return True
    if type(x) is float and type(y) is float:
        return x != x and y != y
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return all(map(_same_value, x, y))
    return False


def _plain(value: Any, names: bool) -> Any:
    if isinstance(value, Struct):
        return value.to_dict() if names else value.ToDict(False)
    if isinstance(value, list):
        return [_plain(v, names) for v in value]
    return value


def _rebuild_struct(locator: Any, data: dict[Any, Any], unknown: Any = None) -> Any:
    cls = locator if isinstance(locator, type) else locator[0](*locator[1])
    obj = cls(data)
    if unknown is not None:
        _setattr(obj, "_cara_unknown_", unknown)
        if unknown.disc is not None:
            note_unknown_member(cls)
    return obj


def _keep_unknown(obj: Any, value: Any) -> Any:
    """Give struct ``obj`` the unknown data that ``value`` (given for :data:`KEPT_KEY`, as
    msgpack carries it) holds; returns what to store under the key (raises Invalid)."""
    stored, record = _hooks.kept_data(type(obj), value)
    _setattr(obj, "_cara_unknown_", record)
    if record.disc is not None:
        note_unknown_member(type(obj))
    return stored


def note_unknown_member(cls: Any) -> None:
    """An instance of ``cls`` holds an unknown union member (``_cara_unknown_.disc``): from
    now on the class's ``which()`` looks for one when no known member is set (the faster
    ``which()`` every class starts with does not)."""
    owner = cls
    while "cara_schema" not in owner.__dict__:
        owner = owner.__mro__[1]
    if getattr(owner.__dict__.get("which"), "_cara_unknown_aware_", False):
        return
    union = owner.cara_schema.union
    if not union:
        return
    members = tuple((f.number, f.name) for f in union)
    first = union[0].name

    def which(self: Any) -> str | None:
        for number, name in members:
            if _dcontains(self, number):
                return name
        unknown = self._cara_unknown_
        if unknown is not None and unknown.disc is not None:
            return None
        return first

    which.__doc__ = Struct.which.__doc__
    which._cara_unknown_aware_ = True  # type: ignore[attr-defined]
    type.__setattr__(owner, "which", which)


def _detach(pending: dict[int, Any], num: int) -> None:
    child = pending.pop(num, None)
    if child is not None:
        _setattr(child, "_p", None)


def _attach(child: Any) -> None:
    """A pending child was mutated: store it in its parent (unless the parent's field was set
    to something else meanwhile, in which case the child simply stays detached)."""
    parent, num = child._p
    _setattr(child, "_p", None)
    pending = parent._c
    if pending and pending.get(num) is child:
        del pending[num]
    if _dcontains(parent, num):
        return
    parent._cara_store_(num, child)


def _fill_slow(self: Any, data: Any, merge: bool = False, slow: bool = False) -> None:
    """Fill from any mapping: names, bytes names, digit strings, numbers, unknown numbers."""
    schema: StructSchema = self.cara_schema
    fields = schema.fields
    seen: set[int] = set(dict.keys(self)) if merge else set()
    for key, value in data.items():
        num = _known_key(schema, key)
        if num is None:
            if key in seen:
                raise Invalid(f"field {key} given twice")
            if key == KEPT_KEY:
                value = _keep_unknown(self, value)
            elif plain_depth_exceeds(value):
                raise Invalid(f"field {key} (unknown to this schema) nests deeper than "
                              f"{DEFAULT_NESTING_LIMIT} levels")
            seen.add(key)
            _dset(self, key, value)
            continue
        f = fields[num]
        if num in seen:
            raise Invalid(f"field {f.name!r} given twice")
        seen.add(num)
        for n in f.siblings:
            if n in seen:
                raise Invalid(f"union members {fields[n].name!r} and {f.name!r} both set")
        try:
            _dset(self, num, f.type.convert_slow(value) if slow else f.type.convert(value))
        except Invalid as e:
            raise e.at(f.label) from None


# ---------------------------------------------------------------------- generated fill code


def _compile(cls: Any, accelerate: bool = True) -> None:
    """Generate ``__init__``, ``_cara_convert_`` and ``_cara_create_`` for ``cls``.

    The common case is inlined: a plain ``dict`` keyed by numbers (``__init__``,
    ``_cara_convert_``) or keywords by name (``_cara_create_``). The dict is copied in one
    ``dict.update`` and each field then costs a ``get`` and an inlined type check; only values
    that need converting are converted and stored again. Anything unusual (names in a
    number-keyed dict, unknown numbers, two union members) falls back to the general path, which
    also produces the error messages. Once the fast path has failed, the wording pass converts
    nested values without their own fast paths (``_fill_slow(..., slow=True)``): retrying the
    fast path at every level would double the work per level, exponential in the nesting."""
    while "cara_schema" not in cls.__dict__:
        cls = cls.__mro__[1]
    if "__init__" in cls.__dict__ or cls in _compiling:
        return
    _compiling.add(cls)
    try:
        _compile_now(cls, accelerate)
    finally:
        _compiling.discard(cls)


_compiling: set[Any] = set()


def lazy_converter(env: dict[str, Any], name: str, cls: Any) -> Any:
    """``cls._cara_convert_`` for generated code whose globals are ``env``: if ``cls`` has no
    generated converters yet, a stand-in that generates them on its first call and then puts
    the real converter in its place (so a class's code is generated only once a value of it
    is converted, and calls go straight to it afterwards)."""
    if getattr(cls, "_cara_ready_", True):
        return cls._cara_convert_

    def first_call(value: Any) -> Any:
        if not cls._cara_ready_:
            cls._cara_prepare_()
        conv = cls._cara_convert_
        env[name] = conv
        return conv(value)

    return first_call


_INT_KINDS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


#: How deep :func:`_number_fill` writes the conversion of nested structs into its parent's code.
_INLINE_DEPTH = 2
#: How many nested fields one generated function may take in (so a wide, deep schema does not
#: generate huge functions); beyond it, nested values are converted by a call.
_INLINE_FIELDS = 24


def _may_inline(env: dict[str, Any], child: Any, depth: int, stack: tuple[Any, ...]) -> bool:
    """Whether the conversion of nested ``child`` values is written into the code being
    generated (``env["_budget_"]`` counts the fields still allowed)."""
    if depth >= _INLINE_DEPTH or child in stack:
        return False
    budget = env["_budget_"]
    size = len(child.cara_schema.fields)
    if budget[0] < size:
        return False
    budget[0] -= size
    return True


def _number_fill(cls: Any, env: dict[str, Any], d: str, s: str, depth: int,
                 stack: tuple[Any, ...], prefix: str) -> list[str]:
    """Code for a number-keyed plain ``dict`` named ``d`` whose items were already copied into
    the new instance ``s``: store again only the values that need converting. A missing field
    is left alone; a value of the wrong type raises :class:`Invalid` (the caller then takes the
    general path, which words the error with the field path).

    Nested structs, groups and lists of structs given as number-keyed dicts (what msgpack
    decodes) are converted by code written into this one, down to :data:`_INLINE_DEPTH` levels
    (a class never inside itself), which saves a Python call per nested value."""
    schema: StructSchema = cls.cara_schema
    out: list[str] = []
    v, x, c, lst = f"v{depth}", f"x{depth}", f"c{depth}", f"l{depth}"
    for f in schema.fields:
        i, t, k = f.number, f.type, f.type.kind
        conv = f"{prefix}conv{i}"
        if isinstance(t, ClassType):
            env[f"{prefix}T{i}"] = t.cls
            env[conv] = lazy_converter(env, conv, t.cls)
        else:
            env[conv] = t.convert
        fix = f"_dset({s}, {i}, {conv}({v}))"
        if k in ("text", "data", "float64", "bool"):
            default = {"text": '""', "data": 'b""', "float64": "0.0", "bool": "False"}[k]
            pytype = {"text": "_str", "data": "_bytes", "float64": "_float", "bool": "_bool"}[k]
            out.append(f"{v} = {d}.get({i}, {default})")
            out.append(f"if _type({v}) is not {pytype}: {fix}")
        elif k == "void":
            out.append(f"{v} = {d}.get({i})")
            out.append(f"if {v} is not None: {fix}")
        elif k in _INT_KINDS:
            lo, hi = t.lo, t.hi  # type: ignore[attr-defined]
            out.append(f"{v} = {d}.get({i}, 0)")
            out.append(f"if _type({v}) is not _int or {v} < {lo} or {v} > {hi}: {fix}")
        elif k == "float32":
            lim = t.limit  # type: ignore[attr-defined]
            out.append(f"{v} = {d}.get({i}, 0.0)")
            out.append(f"if _type({v}) is not _float or not -{lim!r} <= {v} <= {lim!r}"
                       f" or _round32({v}) != {v}: {fix}")
        elif k == "enum":
            env[f"{prefix}T{i}"] = t.cls  # type: ignore[attr-defined]
            env[f"{prefix}vm{i}"] = t.cls._value2member_map_  # type: ignore[attr-defined]
            vm = f"{prefix}vm{i}"
            out.append(f"{v} = {d}.get({i}, _M)")
            out.append(f"if {v} is not _M and _type({v}) is not {prefix}T{i}: _dset({s}, {i}, "
                       f"{vm}[{v}] if _type({v}) is _int and {v} in {vm} else {conv}({v}))")
        elif k == "struct" and isinstance(t, ClassType):
            child = t.cls
            out.append(f"{v} = {d}.get({i}, _M)")
            out.append(f"if {v} is not _M:")
            if _may_inline(env, child, depth, stack):
                cp = f"{prefix}{i}_"
                test = _plain_test(child, env, cp, v)
                out.append(f"    if {test}:")
                out.append(f"        {c} = _dnew({cp}C)")
                out.append(f"        _du({c}, {v})")
                out += ["        " + line for line in _number_fill(
                    child, env, v, c, depth + 1, (*stack, child), cp)]
                out.append(f"        _dset({s}, {i}, {c})")
                out.append(f"    elif _type({v}) is not {prefix}T{i}: {fix}")
            else:
                out.append(f"    if _type({v}) is not {prefix}T{i}: {fix}")
        elif k == "list" and isinstance(t, ClassType):
            elem = t.cls._cara_elem_
            out.append(f"{v} = {d}.get({i}, _M)")
            out.append(f"if {v} is not _M and _type({v}) is not {prefix}T{i}:")
            if (isinstance(elem, ClassType) and elem.kind == "struct"
                    and _may_inline(env, elem.cls, depth, stack)):
                child = elem.cls
                cp = f"{prefix}{i}_"
                test = _plain_test(child, env, cp, x)
                env[f"{cp}conv"] = lazy_converter(env, f"{cp}conv", child)
                out.append(f"    if _type({v}) is _list:")
                out.append(f"        {lst} = _lnew({prefix}T{i})")
                out.append(f"        for {x} in {v}:")
                out.append(f"            if {test}:")
                out.append(f"                {c} = _dnew({cp}C)")
                out.append(f"                _du({c}, {x})")
                out += ["                " + line for line in _number_fill(
                    child, env, x, c, depth + 1, (*stack, child), cp)]
                out.append(f"                _lappend({lst}, {c})")
                out.append("            else:")
                out.append(f"                _lappend({lst}, {cp}conv({x}))")
                out.append(f"        _dset({s}, {i}, {lst})")
                out.append(f"    else: {fix}")
            else:
                out.append(f"    {fix}")
        else:  # interfaces: the converter decides (None stays None)
            out.append(f"{v} = {d}.get({i})")
            out.append(f"if {v} is not None: {fix}")
    return out


def _name_build(cls: Any, env: dict[str, Any], src: str, dst: str, depth: int,
                stack: tuple[Any, ...], prefix: str) -> list[str]:
    """Code that builds instance ``dst`` of ``cls`` from ``src``, a plain dict keyed by field
    names (all known, at most one union member: see :func:`_name_test`), as keyword arguments
    and ``Create`` give nested values. Nested dicts and lists of dicts are built by code written
    into this one (down to :data:`_INLINE_DEPTH`); wrong types raise :class:`Invalid`."""
    schema: StructSchema = cls.cara_schema
    w = f"_w{depth}"
    out = [f"{dst} = _dnew({prefix}C)"]
    for f in schema.fields:
        i, t = f.number, f.type
        conv = f"{prefix}conv{i}"
        if isinstance(t, ClassType):
            env[f"{prefix}T{i}"] = t.cls
            env[conv] = lazy_converter(env, conv, t.cls)
        else:
            env[conv] = t.convert
        out.append(f"{w} = {src}.get({f.name!r}, _M)")
        out.append(f"if {w} is not _M:")
        out += ["    " + line for line in _value_code(f, env, w, depth, stack, prefix)]
        out.append(f"    _dset({dst}, {i}, {w})")
    return out


def _value_code(f: FieldSpec, env: dict[str, Any], w: str, depth: int, stack: tuple[Any, ...],
                prefix: str) -> list[str]:
    """Code that converts ``w`` (a value given for field ``f``, by name) in place."""
    i, t, k = f.number, f.type, f.type.kind
    conv = f"{prefix}conv{i}"
    if k == "anyPointer":
        return [f"if {w} is not None: {w} = {conv}({w})"]
    if k in ("text", "data", "float64", "bool"):
        pytype = {"text": "_str", "data": "_bytes", "float64": "_float", "bool": "_bool"}[k]
        return [f"if _type({w}) is not {pytype}: {w} = {conv}({w})"]
    if k in _INT_KINDS:
        lo, hi = t.lo, t.hi  # type: ignore[attr-defined]
        return [f"if _type({w}) is not _int or {w} < {lo} or {w} > {hi}: {w} = {conv}({w})"]
    if k == "enum":
        nm = f"{prefix}nm{i}"
        env[nm] = t.cls._member_map_  # type: ignore[attr-defined]
        return [f"if _type({w}) is not {prefix}T{i}: {w} = {nm}[{w}] if _type({w}) is _str "
                f"and {w} in {nm} else {conv}({w})"]
    if k == "struct" and isinstance(t, ClassType):
        child = t.cls
        if not _may_inline(env, child, depth, stack):
            return [f"if _type({w}) is not {prefix}T{i}: {w} = {conv}({w})"]
        cp = f"{prefix}{i}_"
        c = f"_c{depth}"
        return [f"if _type({w}) is not {prefix}T{i}:",
                f"    if {_name_test(child, env, cp, w)}:",
                *["        " + line for line in _name_build(
                    child, env, w, c, depth + 1, (*stack, child), cp)],
                f"        {w} = {c}",
                "    else:",
                f"        {w} = {conv}({w})"]
    if k == "list" and isinstance(t, ClassType):
        elem = t.cls._cara_elem_
        if not isinstance(elem, ClassType) or elem.kind != "struct" \
                or not _may_inline(env, elem.cls, depth, stack):
            return [f"if _type({w}) is not {prefix}T{i}: {w} = {conv}({w})"]
        child = elem.cls
        cp = f"{prefix}{i}_"
        x, c, lst = f"_x{depth}", f"_c{depth}", f"_l{depth}"
        env[f"{cp}conv"] = lazy_converter(env, f"{cp}conv", child)
        return [f"if _type({w}) is not {prefix}T{i}:",
                f"    if _type({w}) is _list:",
                f"        {lst} = _lnew({prefix}T{i})",
                f"        for {x} in {w}:",
                f"            if _type({x}) is {cp}C:",
                f"                _lappend({lst}, {x})",
                f"            elif {_name_test(child, env, cp, x)}:",
                *["                " + line for line in _name_build(
                    child, env, x, c, depth + 1, (*stack, child), cp)],
                f"                _lappend({lst}, {c})",
                "            else:",
                f"                _lappend({lst}, {cp}conv({x}))",
                f"        {w} = {lst}",
                "    else:",
                f"        {w} = {conv}({w})"]
    return [f"{w} = {conv}({w})"]


def _name_test(cls: Any, env: dict[str, Any], prefix: str, var: str) -> str:
    """An expression true when ``var`` is a plain dict keyed by known field names of ``cls``
    with at most one union member (what :func:`_name_build` handles)."""
    schema: StructSchema = cls.cara_schema
    env[f"{prefix}C"] = cls
    env[f"{prefix}NAMES"] = frozenset(f.name for f in schema.fields)
    test = f"_type({var}) is _dict and {prefix}NAMES.issuperset({var})"
    names = [f.name for f in schema.union]
    if len(names) > 1:
        test += f" and (len({var}) < 2 or " + " + ".join(
            f"({n!r} in {var})" for n in names) + " < 2)"
    return test


def _plain_test(cls: Any, env: dict[str, Any], prefix: str, var: str) -> str:
    """An expression true when ``var`` is a plain dict of known numbers for ``cls`` with at
    most one union member (what :func:`_number_fill` handles)."""
    schema: StructSchema = cls.cara_schema
    env[f"{prefix}C"] = cls
    env[f"{prefix}KNOWN"] = frozenset(f.number for f in schema.fields)
    test = f"_type({var}) is _dict and {prefix}KNOWN.issuperset({var})"
    nums = [f.number for f in schema.union]
    if len(nums) > 1:  # (a dict of one item cannot hold two members)
        test += f" and (len({var}) < 2 or " + " + ".join(f"({n} in {var})" for n in nums) + " < 2)"
    return test


def _which_function(schema: StructSchema, accelerate: bool = True) -> Any:
    """``which()`` for a struct with an unnamed union: one C-level membership test per member
    (the default member last, since it is also the answer when nothing is set)."""
    if accelerate and _speedups is not None:
        return _speedups.Which(tuple(f.number for f in schema.union),
                               tuple(f.name for f in schema.union))
    first, *rest = schema.union
    source = "def which(self):\n" + "".join(
        f"    if _dcontains(self, {f.number}): return {f.name!r}\n" for f in rest
    ) + f"    return {first.name!r}\n"
    env: dict[str, Any] = {"_dcontains": _dcontains}
    exec(compile(source, f"<cara which {schema.name}>", "exec"), env)
    env["which"].__doc__ = Struct.which.__doc__
    return env["which"]


def _compile_now(cls: Any, accelerate: bool = True) -> None:
    schema: StructSchema = cls.cara_schema
    fields = schema.fields
    env: dict[str, Any] = {
        "M": _MISSING, "Invalid": Invalid, "dset": _dset, "dnew": dict.__new__, "C": cls,
        "dupdate": dict.update, "dclear": dict.clear, "NAME": cls._cara_name_,
        "slow": _fill_slow, "general": Struct._cara_init_general_,
        "convgeneral": cls._cara_convert_general_, "RecursionError": RecursionError,
        "deep": Invalid("value nested too deeply"), "basecreate": vars(Struct)["Create"].__func__,
        "KNOWN": frozenset(f.number for f in fields), "NAMES": frozenset(f.name for f in fields),
        "int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
    }
    for f in fields:
        t = f.type
        i = f.number
        if isinstance(t, ClassType):
            env[f"T{i}"] = t.cls
            env[f"conv{i}"] = lazy_converter(env, f"conv{i}", t.cls)
        else:
            env[f"conv{i}"] = t.convert
        if t.kind == "enum":
            env[f"vm{i}"] = t.cls._value2member_map_  # type: ignore[attr-defined]
            env[f"nm{i}"] = t.cls._member_map_  # type: ignore[attr-defined]
            env[f"Z{i}"] = t.cls._cara_zero_()  # type: ignore[attr-defined]
        if t.kind in ("struct", "list") and isinstance(t, ClassType):
            # A stand-in of the right type that ``d.get`` returns for a missing field.
            env[f"Z{i}"] = t.cls._cara_zero_()

    # Keyword functions: every field whose name can be a Python parameter is one (keyword-only,
    # default ``_M`` = not given), so CPython binds ``S.Create(name=...)`` and ``conv(**d)``
    # itself. Generated globals start with ``_``, which no schema name does, so a parameter
    # never hides one.
    params = [f for f in fields if f.name.isidentifier() and not keyword.iskeyword(f.name)
              and not f.name.startswith("_")]
    for f in fields:
        env[f"_conv{f.number}"] = env[f"conv{f.number}"]
        if isinstance(f.type, ClassType):
            env[f"_conv{f.number}"] = lazy_converter(env, f"_conv{f.number}", f.type.cls)
        for prefix in ("T", "vm", "nm"):
            if f"{prefix}{f.number}" in env:
                env[f"_{prefix}{f.number}"] = env[f"{prefix}{f.number}"]
    env.update({"_M": _MISSING, "_Invalid": Invalid, "_dnew": dict.__new__, "_C": cls,
                "_du": dict.update, "_RecursionError": RecursionError, "_dset": _dset,
                "_dict": dict, "_list": list, "_lnew": list.__new__, "_lappend": list.append,
                "_basecreate": vars(Struct)["Create"].__func__,
                "_PARAMS": frozenset(f.name for f in params), "_type": type, "_int": int,
                "_str": str, "_bytes": bytes, "_float": float, "_bool": bool,
                "_round32": round32})

    def keyword_stores() -> list[str]:
        """Parameters -> ``_d`` (a plain dict by number), converting what needs it."""
        env["_budget_"] = [_INLINE_FIELDS]
        out = ["_d = {}"]
        for f in params:
            out.append(f"if {f.name} is not _M:")
            out += ["    " + line for line in _value_code(f, env, f.name, 0, (cls,), "_")]
            out.append(f"    _d[{f.number}] = {f.name}")
        members = [f.name for f in schema.union if f in params]
        if len(members) > 1:
            count = " + ".join(f"({a} is not _M)" for a in members)
            out.append(f"if {count} > 1: raise _Invalid('union')")  # the slow path words it
        return out

    signature = ", ".join(f"{f.name}=_M" for f in params)
    given = "{" + ", ".join(f"{f.name!r}: {f.name}" for f in params) + "}"
    keyword_source = "\n".join([
        f"def Create(*_args, {signature + ', ' if signature else ''}**_kw):",
        "    if _args or _kw:",
        f"        _g = {{_k: _v for _k, _v in {given}.items() if _v is not _M}}",
        "        _g.update(_kw)",
        "        return _basecreate(_C, *_args, **_g)",
        "    try:",
        *["        " + line for line in keyword_stores()],
        "    except (_Invalid, _RecursionError):",
        f"        return _create({{_k: _v for _k, _v in {given}.items() if _v is not _M}})",
        "    _s = _dnew(_C)",
        "    _du(_s, _d)",
        "    return _s",
        "",
        f"def _kwconvert({'*, ' + signature if signature else ''}):",
        "    try:",
        *["        " + line for line in keyword_stores()],
        "    except _Invalid:",
        "        _s = _dnew(_C)",
        f"        _slow(_s, {{_k: _v for _k, _v in {given}.items() if _v is not _M}}, False, True)",
        "        return _s",  # (not reached: the slow path raises with the field path)
        "    _s = _dnew(_C)",
        "    _du(_s, _d)",
        "    return _s",
    ]) + "\n"
    env["_slow"] = _fill_slow

    def number_fill() -> list[str]:
        env["_budget_"] = [_INLINE_FIELDS]
        return _number_fill(cls, env, "d", "self", 0, (cls,), "_")

    union_nums = [f.number for f in schema.union]
    if len(union_nums) > 1:
        by_num = "len(d) > 1 and " + " + ".join(f"({n} in d)" for n in union_nums) + " > 1"
    else:
        by_num = "False"

    source = "\n".join([
        "def __init__(self, d=None, /, **kw):",
        "    if kw or type(d) is not dict:",
        "        return general(self, d, kw)",
        "    if not KNOWN.issuperset(d):",
        "        if NAMES.issuperset(d):",
        "            try:",
        "                return dupdate(self, byname(d))",
        "            except Invalid as e:",
        "                raise e.error(NAME) from None",
        "            except RecursionError:",
        "                raise deep.error(NAME) from None",
        "        return general(self, d, None)",
        f"    if {by_num}:",
        "        return general(self, d, None)",
        "    dupdate(self, d)",
        "    try:",
        "        pass",
        *["        " + line for line in number_fill()],
        "    except Invalid:",
        "        dclear(self)",
        "        try:",
        "            slow(self, d, False, True)",  # raises with the field path
        "        except Invalid as e:",
        "            raise e.error(NAME) from None",
        "    except RecursionError:",
        "        raise deep.error(NAME) from None",
        "",
        "def convert(d):",
        "    if type(d) is C:",
        "        return d",
        "    if type(d) is not dict:",
        "        return convgeneral(d)",
        f"    if KNOWN.issuperset(d) and not ({by_num}):",
        "        self = dnew(C)",
        "        dupdate(self, d)",
        "        try:",
        "            pass",
        *["            " + line for line in number_fill()],
        "        except Invalid:",
        "            dclear(self)",
        "            slow(self, d, False, True)",  # raises with the field path
        "        return self",
        "    if _PARAMS.issuperset(d):",  # keyed by name, as by hand
        "        return _kwconvert(**d)",
        "    self = dnew(C)",
        "    slow(self, d)",
        "    return self",
        "",
        "def byname(d):",
        "    if _PARAMS.issuperset(d):",
        "        return _kwconvert(**d)",
        "    self = dnew(C)",
        "    slow(self, d)",
        "    return self",
        "",
        "def create(d):",
        "    try:",
        "        return byname(d)",
        "    except Invalid as e:",
        "        raise e.error(NAME) from None",
        "    except RecursionError:",
        "        raise deep.error(NAME) from None",
    ]) + "\n"
    source += keyword_source
    if _DEBUG:
        print(source)
    exec(compile(source, f"<cara struct {schema.name}>", "exec"), env)
    env["_create"] = env["create"]
    cls.__init__ = env["__init__"]
    cls._cara_convert_ = staticmethod(env["convert"])
    cls._cara_create_ = staticmethod(env["create"])
    # A staticmethod: what it builds is always ``cls`` (as the general path does), and binding
    # no class saves a little on every call.
    cls.Create = staticmethod(env["Create"])
    cls._cara_type_.convert = env["convert"]
    if accelerate and _speedups is not None:
        _accelerate(cls, env, {f.number for f in params})
    if schema.union and "which" not in cls.__dict__:
        cls.which = _which_function(schema, accelerate)
    cls._cara_ready_ = True


_SIMPLE_KINDS = {"text": 1, "data": 2, "float64": 3, "bool": 4, "void": 5}
_K_INT, _K_FLOAT32, _K_ENUM, _K_STRUCT, _K_LIST, _K_OTHER = 6, 7, 8, 9, 10, 11


def _accelerate(cls: Any, env: dict[str, Any], by_name: set[int]) -> None:
    """Put the C accelerator in front of the generated ``__init__``, ``_cara_convert_`` and
    ``Create``. It handles the shapes the generated code handles first (number-keyed dicts,
    name-keyed dicts and keywords, values already of the right type) with the same checks, and
    calls the generated function with the original arguments for everything else, including
    every value it would reject, so both accept and reject exactly the same values and errors
    are worded by the same code."""
    specs = []
    for f in cls.cara_schema.fields:
        t, k = f.type, f.type.kind
        lo, hi, limit = 0, 0, 0.0
        tcls: Any = None
        vmap: Any = None
        nmap: Any = None
        elem_cls: Any = None
        elem_conv: Any = None
        conv = t.convert
        if k in _SIMPLE_KINDS:
            code = _SIMPLE_KINDS[k]
        elif k in _INT_KINDS:
            code, lo, hi = _K_INT, t.lo, t.hi
        elif k == "float32":
            code, limit = _K_FLOAT32, t.limit
        elif k == "enum":
            code, tcls = _K_ENUM, t.cls
            vmap, nmap = tcls._value2member_map_, tcls._member_map_
        elif k == "struct" and isinstance(t, ClassType):
            code, tcls = _K_STRUCT, t.cls
        elif k == "list" and isinstance(t, ClassType):
            code, tcls = _K_LIST, t.cls
            elem = tcls._cara_elem_
            if isinstance(elem, ClassType) and elem.kind == "struct":
                elem_cls, elem_conv = elem.cls, elem.convert
        else:
            code = _K_OTHER
        specs.append((f.number, f.name, code, int(f.discriminant is not None),
                      int(f.number in by_name), lo, hi, limit, tcls, vmap, nmap, conv,
                      elem_cls, elem_conv))
    plan = _speedups.Plan(cls, tuple(specs), env["__init__"], env["convert"], env["Create"])
    cls._cara_plan_ = plan
    cls.__init__ = plan
    cls._cara_convert_ = plan.convert
    cls.Create = plan.create
    cls._cara_type_.convert = plan.convert
    # to_msgpack() and from_msgpack(data) straight into C (msgpack itself for anything else)
    cls.to_msgpack = _speedups.ToMsgpack(_hooks.packb)
    cls.from_msgpack = _speedups.FromMsgpack(plan, _hooks.unpack_plain, _hooks.MAX_MESSAGE_BYTES)
    # Field reads in C: the same as the Python attributes make_struct_class puts there
    # (property(itemgetter(n)), _ListField), without a Python call per read.
    for f in cls.cara_schema.fields:
        attr = cls.__dict__.get(f.attr)
        if isinstance(attr, _ListField):
            setattr(cls, f.attr, _speedups.Field(f.number, attr.label, attr.__doc__))
        elif isinstance(attr, property):
            setattr(cls, f.attr, _speedups.Field(f.number, None, attr.__doc__))


# ---------------------------------------------------------------------- class creation


def group_attribute(field_name: str) -> str:
    """Where a group's class is found on its parent class: ``Person._employment_Group``.

    Groups have no name of their own in Cap'n Proto; this one is what the ``.pyi`` stubs call
    the class too, so an annotation like ``g: Person._employment_Group`` works at run time.
    (A field attribute never starts with ``_``, see :func:`attribute_name`.)"""
    return f"_{field_name}_Group"


class _GroupClass:
    """Class attribute resolving to a group's class on first read (classes are built lazily)."""

    __slots__ = ("type",)

    def __init__(self, type_: ClassType) -> None:
        self.type = type_

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self.type.cls


class _ListField:
    """A list field's attribute: reads like ``property(itemgetter(n))`` and tells the list it
    hands out where it lives (``Person.phones``), so that the list's own mutators name that path
    in their errors (``Person.phones[3].type``), as construction does."""

    __slots__ = ("__dict__", "label", "number")  # (__doc__ per instance, as property has)

    def __init__(self, number: int, label: str, doc: str) -> None:
        self.number = number
        self.label = label
        self.__doc__ = doc

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = obj[self.number]
        try:
            if value._o is self.label:
                return value
        except AttributeError:  # not read from a field yet (or not a typed list)
            pass
        try:
            _setattr(value, "_o", self.label)
        except AttributeError:  # (not a typed list: cannot happen through the field's checks)
            pass
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj._cara_set_(self.number, value)

    def __delete__(self, obj: Any) -> None:
        obj._cara_unset_(self.number)


def make_struct_class(name: str, schema: StructSchema, *, module: str | None = None,
                      qualname: str | None = None, base: type = Struct) -> type[Struct]:
    """A new struct class: one ``property(itemgetter(n))`` per field attribute."""
    ns: dict[str, Any] = {
        "__slots__": (),
        "cara_schema": schema,
        "_cara_name_": schema.name,
        "__module__": module or __name__,
        "__qualname__": qualname or schema.name,
        "__doc__": f"Cap'n Proto struct {schema.name} (@0x{schema.id:016x}).",
    }
    for f in schema.fields:
        doc = f"field {f.name} :{f.type.name}"
        if f.type.kind == "list" and not f.is_group:
            ns[f.attr] = _ListField(f.number, f"{schema.name}.{f.name}", doc)
        else:
            ns[f.attr] = property(itemgetter(f.number), doc=doc)
        if f.is_group and isinstance(f.type, ClassType):
            ns[group_attribute(f.name)] = _GroupClass(f.type)
    cls: Any = type(name, (base,), ns)
    for f in schema.fields:
        f.owner = cls
    cls._cara_type_ = ClassType("struct", lambda: cls, schema.name)
    return cls


def iter_fields(s: Struct) -> Iterator[tuple[FieldSpec, Any]]:
    """The set fields of ``s`` as ``(FieldSpec, value)`` (fields unknown to the schema skipped)."""
    fields = s.cara_schema.fields
    for k, v in dict.items(s):
        if type(k) is int and 0 <= k < len(fields):
            yield fields[k], v


_LIST_NEEDS.update(attach=_attach, plain=_plain, lazy_converter=lazy_converter)


hold_in_any_pointer(Struct)  # (an AnyPointer field holds a struct as it is)
