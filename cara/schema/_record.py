"""``@record``: the dataclasses of the schema layer, without the cost of ``dataclasses``.

``cara compile`` is a short-lived process, and ``@dataclasses.dataclass`` makes it pay at every
start: importing ``dataclasses`` (which imports ``inspect``, ``ast``, ``dis``, ``tokenize``) and
then, per class, generating and compiling ``__init__``, ``__repr__`` and ``__eq__`` with a lot of
bookkeeping around them. The ~70 record classes of cara.schema and cara.cli took longer to create
than compiling test.capnp does.

:func:`record` keeps the declarations as they were (annotated fields, defaults,
``field(default_factory=...)``; type checkers see a dataclass through ``dataclass_transform``)
and does only what the classes use: one generated ``__init__`` (calling ``__post_init__`` if
the class has one), a ``__repr__``, field-by-field ``__eq__`` (unless ``eq=False``, which keeps
identity equality and hashing) and optional ``__slots__``.

Code that treats these objects as dataclasses keeps working: ``dataclasses.fields``,
``replace``, ``is_dataclass`` and ``asdict`` read ``__dataclass_fields__``, which a record
class builds on first access (importing ``dataclasses`` then, and only then).
"""

from __future__ import annotations

import sys
from types import FunctionType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Any:
        return lambda f: f

__all__ = ["field", "field_names", "record"]

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


#: The ``__init__`` source of every record class so far, and those of them that the compiled
#: cache (:mod:`._record_inits`) lacks.
SOURCES: list[str] = []
CACHE_MISSES: list[str] = []
_CACHE: dict[str, Any] | None = None


def _make_init(source: str, env: dict[str, Any], defaults: tuple[Any, ...]) -> Any:
    """The function ``source`` defines, with globals ``env`` and parameter ``defaults``.

    Compiling source costs about as much as everything else a record class does, so the
    sources of every record class are kept compiled in :mod:`._record_inits` (written by
    ``python -m cara.schema._record``; its bytecode is cached like any module's). A source
    not found there (a record class changed since) is compiled here, which is only slower."""
    global _CACHE
    if _CACHE is None:
        try:
            from cara.schema._record_inits import INITS
        except ImportError:  # pragma: no cover - the generated module is part of cara
            INITS = {}
        _CACHE = INITS
    SOURCES.append(source)
    cached = _CACHE.get(source)
    if cached is not None:
        code = cached.__code__.replace(co_name="__init__")
    else:
        CACHE_MISSES.append(source)
        code = compile(source, "<record>", "exec").co_consts[0]
    return FunctionType(code, env, "__init__", defaults or None)


def _process(cls: type, eq: bool, slots: bool) -> type:
    # The class's own annotations (strings: every module using this has ``from __future__
    # import annotations``); Python 3.14 computes them on access instead of storing them.
    own = cls.__dict__.get("__annotations__")  # noqa: RUF063 - inspect is what we avoid
    if own is None:
        own = cls.__annotations__ if sys.version_info >= (3, 14) else {}
    fields: list[tuple[str, _Field]] = list(getattr(cls, "__record_fields__", ()))
    for name in own:
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, _Field) else _Field(value, MISSING, True)
        fields = [(n, s) for n, s in fields if n != name] + [(name, spec)]
    params: list[str] = []
    lines: list[str] = []
    defaults: list[Any] = []
    env: dict[str, Any] = {"MISSING": MISSING}
    for name, spec in fields:
        params.append(name)
        if spec.default_factory is not MISSING and spec.default is MISSING:
            env[f"_f_{name}"] = spec.default_factory
            defaults.append(MISSING)
            lines.append(f"    self.{name} = _f_{name}() if {name} is MISSING else {name}")
            continue
        if spec.default is not MISSING:
            defaults.append(spec.default)
        elif defaults:
            raise TypeError(f"{cls.__qualname__}: field {name} without a default follows one "
                            "with a default")
        lines.append(f"    self.{name} = {name}")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines or ["    pass"])
    init = _make_init(source, env, tuple(defaults))
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    extra: dict[str, Any] = {
        "__init__": init,
        "__record_fields__": tuple(fields),
        "__record_repr__": tuple(name for name, spec in fields if spec.repr),
        "__match_args__": tuple(name for name, _ in fields),
        "__dataclass_fields__": _LazyDataclassFields(),
    }
    if "__repr__" not in cls.__dict__:
        extra["__repr__"] = _repr
    if eq and "__eq__" not in cls.__dict__:
        extra["__eq__"] = _eq
        if "__hash__" not in cls.__dict__:
            extra["__hash__"] = None
    if slots:
        body = {k: v for k, v in cls.__dict__.items()
                if k not in own and k not in ("__dict__", "__weakref__")}
        body["__slots__"] = tuple(name for name in own)
        body.update(extra)
        return type(cls)(cls.__name__, cls.__bases__, body)
    for name, spec in fields:
        if isinstance(cls.__dict__.get(name), _Field):
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
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


def _write_cache(path: str) -> int:
    """Write :mod:`._record_inits` for every record class of cara.schema and cara.cli."""
    import importlib
    import pkgutil

    import cara.cli
    import cara.schema

    for package in (cara.schema, cara.cli):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    sources = sorted(set(SOURCES))
    out = ['"""Compiled ``__init__`` methods of the record classes (see :mod:`._record`).',
           "",
           "Generated by ``python -m cara.schema._record``; do not edit. A stale entry is only",
           'slower: the record compiles what it does not find here."""',
           "# ruff: noqa",
           "# mypy: ignore-errors",
           ""]
    for i, source in enumerate(sources):
        out += ["", source.replace("def __init__(", f"def _{i}(", 1), ""]
    out += ["", "INITS = {"]
    out += [f"    {source!r}: _{i}," for i, source in enumerate(sources)]
    out += ["}", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    return len(sources)


if __name__ == "__main__":  # pragma: no cover
    import os

    from cara.schema import _record  # this file as the module the classes use

    target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_record_inits.py")
    print(f"{_record._write_cache(target)} __init__ methods written to {target}")
