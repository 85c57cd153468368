"""``@record``: the dataclasses of the schema layer, without the cost of ``dataclasses``.

``cara compile`` is a short-lived process, and ``@dataclasses.dataclass`` makes it pay at every
start: importing ``dataclasses`` (which imports ``inspect``, ``ast``, ``dis``, ``tokenize``) and
then, per class, generating and compiling ``__init__``, ``__repr__`` and ``__eq__`` with a lot of
bookkeeping around them. Creating the ~70 record classes of cara.schema and cara.cli that way
cost more than half as much as compiling test.capnp.

:func:`record` keeps the declarations as they were (annotated fields, defaults,
``field(default_factory=...)``; type checkers see a dataclass through ``dataclass_transform``)
and does only what the classes use: one ``__init__`` (calling ``__post_init__`` if the class
has one; kept compiled in :mod:`._record_inits`, see :func:`_make_init`), a ``__repr__``,
field-by-field ``__eq__`` (unless ``eq=False``, which keeps identity equality and hashing) and
optional ``__slots__``.

Code that treats these objects as dataclasses keeps working: ``dataclasses.fields``,
``replace``, ``is_dataclass`` and ``asdict`` read ``__dataclass_fields__``, which a record
class builds on first access (importing ``dataclasses`` then, and only then).
"""

from __future__ import annotations

import sys
from types import FunctionType

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Any:
        return lambda f: f

__all__ = ["field", "field_names", "record"]

if TYPE_CHECKING:
    _T = TypeVar("_T", bound=type)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Field:
    """What :func:`field` returns: a default, a default factory, and whether repr shows it."""

    __slots__ = ("default", "default_factory", "repr")

    def __init__(self, default: Any, default_factory: Any, repr: bool) -> None:
        self.default = default
        self.default_factory = default_factory
        self.repr = repr


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          repr: bool = True) -> Any:
    """``dataclasses.field`` for :func:`record` classes (the options the schema layer uses)."""
    return _Field(default, default_factory, repr)


class _LazyDataclassFields:
    """``__dataclass_fields__`` of a record class, made by ``dataclasses`` when first asked for
    (and then stored on the class in place of this descriptor)."""

    def __get__(self, obj: object, owner: type) -> dict[str, Any]:
        import dataclasses

        specs = []
        for name, spec in owner.__record_fields__:  # type: ignore[attr-defined]
            options: dict[str, Any] = {"repr": spec.repr}
            if spec.default is not MISSING:
                options["default"] = spec.default
            elif spec.default_factory is not MISSING:
                options["default_factory"] = spec.default_factory
            specs.append((name, owner.__annotations__.get(name, "Any"),
                          dataclasses.field(**options)))
        shadow: Any = dataclasses.make_dataclass(owner.__name__, specs)
        fields: dict[str, Any] = shadow.__dataclass_fields__
        type.__setattr__(owner, "__dataclass_fields__", fields)
        return fields


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}"
                      for name in type(self).__record_repr__)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return all(getattr(self, name) == getattr(other, name)
               for name, _ in type(self).__record_fields__)


#: How a field is initialised: passed in, with a default, or by a default factory.
_REQUIRED, _DEFAULT, _FACTORY = 0, 1, 2
#: The ``__init__`` shape of every record class so far (its fields with how each is
#: initialised, and whether it calls ``__post_init__``), and those the compiled cache lacks.
SHAPES: list[tuple[tuple[tuple[str, int], ...], bool]] = []
CACHE_MISSES: list[tuple[tuple[tuple[str, int], ...], bool]] = []
_CACHE: dict[Any, Any] | None = None


def init_source(shape: tuple[tuple[str, int], ...], post_init: bool, name: str) -> str:
    """The source of an ``__init__`` of this shape (its defaults are given apart)."""
    lines = []
    for field_name, how in shape:
        if how == _FACTORY:
            lines.append(f"    self.{field_name} = _f_{field_name}() "
                         f"if {field_name} is MISSING else {field_name}")
        else:
            lines.append(f"    self.{field_name} = {field_name}")
    if post_init:
        lines.append("    self.__post_init__()")
    params = "".join(f", {field_name}" for field_name, _ in shape)
    return f"def {name}(self{params}):\n" + "\n".join(lines or ["    pass"]) + "\n"


def _make_init(shape: tuple[tuple[str, int], ...], post_init: bool, env: dict[str, Any],
               defaults: tuple[Any, ...]) -> Any:
    """An ``__init__`` of this shape, with globals ``env`` and parameter ``defaults``.

    Compiling source costs about as much as everything else a record class does, so the
    ``__init__`` of every record class is kept compiled in :mod:`._record_inits` (written by
    ``python -m cara.cli.record_cache``; its bytecode is cached like any module's). A shape not
    found there (a record class changed since) is compiled here, which is only slower."""
    global _CACHE
    if _CACHE is None:
        try:
            from cara.schema._record_inits import INITS
        except ImportError:  # pragma: no cover - the generated module is part of cara
            INITS = {}
        _CACHE = INITS
    key = (shape, post_init)
    SHAPES.append(key)
    cached = _CACHE.get(key)
    if cached is not None:
        code = cached.__code__.replace(co_name="__init__")
    else:
        CACHE_MISSES.append(key)
        code = compile(init_source(shape, post_init, "__init__"), "<record>",
                       "exec").co_consts[0]
    return FunctionType(code, env, "__init__", defaults or None)


def _process(cls: type, eq: bool, slots: bool) -> type:
    # The class's own annotations (strings: every module using this has ``from __future__
    # import annotations``); Python 3.14 computes them on access instead of storing them.
    namespace = cls.__dict__
    own = namespace.get("__annotations__")
    if own is None:
        own = cls.__annotations__ if sys.version_info >= (3, 14) else {}
    # As in dataclasses: inherited fields first, a redefined one keeps its place.
    fields: dict[str, _Field] = dict(getattr(cls, "__record_fields__", ()))
    for name in own:
        value = namespace.get(name, MISSING)
        fields[name] = value if type(value) is _Field else _Field(value, MISSING, True)
    shape: list[tuple[str, int]] = []
    defaults: list[Any] = []
    shown: list[str] = []
    env: dict[str, Any] = {"MISSING": MISSING}
    for name, spec in fields.items():
        if spec.repr:
            shown.append(name)
        if spec.default is not MISSING:
            defaults.append(spec.default)
            shape.append((name, _DEFAULT))
        elif spec.default_factory is not MISSING:
            env[f"_f_{name}"] = spec.default_factory
            defaults.append(MISSING)
            shape.append((name, _FACTORY))
        elif defaults:
            raise TypeError(f"{cls.__qualname__}: field {name} without a default follows one "
                            "with a default")
        else:
            shape.append((name, _REQUIRED))
    init = _make_init(tuple(shape), hasattr(cls, "__post_init__"), env, tuple(defaults))
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    extra: dict[str, Any] = {
        "__init__": init,
        "__record_fields__": tuple(fields.items()),
        "__record_repr__": tuple(shown),
        "__match_args__": tuple(fields),
        "__dataclass_fields__": _LazyDataclassFields(),
    }
    if "__repr__" not in namespace:
        extra["__repr__"] = _repr
    if eq and "__eq__" not in namespace:
        extra["__eq__"] = _eq
        if "__hash__" not in namespace:
            extra["__hash__"] = None
    if slots:
        body = {k: v for k, v in namespace.items()
                if k not in own and k not in ("__dict__", "__weakref__")}
        body["__slots__"] = tuple(own)
        body.update(extra)
        return type(cls)(cls.__name__, cls.__bases__, body)
    for name in own:
        value = namespace.get(name)
        if type(value) is _Field:
            if value.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value.default)
    for key, value in extra.items():
        setattr(cls, key, value)
    return cls


@dataclass_transform(field_specifiers=(field,))
def record(cls: _T | None = None, /, *, eq: bool = True,
           slots: bool = False) -> Any:
    """A class decorator like ``@dataclass`` (see the module docstring for what it does)."""
    def wrap(cls: _T) -> _T:
        return _process(cls, eq, slots)  # type: ignore[return-value]

    return wrap if cls is None else wrap(cls)


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of a record class, in declaration order."""
    return tuple(name for name, _ in cls.__record_fields__)  # type: ignore[attr-defined]
