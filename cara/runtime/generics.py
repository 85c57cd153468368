"""Generic bindings (``S[T, U]``) and type replacement (``S.ReplaceTypes([(Old, New)])``).

A generic struct or interface class is built with its parameters unbound (they read and write
as ``AnyPointer``: any value). ``S[A, B]`` asks the class's builder for the instantiation with
this node's own scope bound to ``(A, B)``; each instantiation is one cached class, so
``S[Text] is S[Text]``. Arguments are descriptors (``cara.runtime.types.TEXT``), runtime classes,
or ``str``/``bytes`` for Text/Data.

``ReplaceTypes`` rebuilds the class from its nodes with a builder that substitutes one type for
another wherever a field, list element, param or result refers to it.
"""

from __future__ import annotations

from typing import Any

from cara.runtime.types import TypeDesc, as_type

__all__ = ["bind", "replace_types"]


def bind(cls: Any, args: Any) -> Any:
    """``cls[args]``: the instantiation of generic ``cls`` with its own parameters bound."""
    schema = cls.cara_schema
    params = schema.generic_params
    if not params:
        raise TypeError(f"{cls._cara_name_} is not generic")
    if schema.node.id in schema.bindings:
        raise TypeError(f"{cls._cara_name_} is already bound")
    if not isinstance(args, tuple):
        args = (args,)
    if len(args) != len(params):
        raise TypeError(f"{cls._cara_name_} takes {len(params)} type argument(s) "
                        f"({', '.join(params)}), got {len(args)}")
    descs: tuple[TypeDesc, ...] = tuple(as_type(a) for a in args)
    for a, d in zip(args, descs, strict=True):
        if not d.is_pointer:
            raise TypeError(f"generic arguments must be pointer types (struct, list, Text, Data,"
                            f" interface, AnyPointer), not {a!r}")
    ctx = dict(schema.bindings)
    ctx[schema.node.id] = descs
    builder = schema.builder
    kind = "interface" if hasattr(schema, "all_methods") else "struct"
    bound = builder.struct_class(schema.node.id, ctx) if kind == "struct" else \
        builder.interface_class(schema.node.id, ctx)
    if not builder.replacements:
        bound._cara_locator_ = (_rebind, (cls, tuple(_token(a) for a in args)))
    return bound


def _token(arg: Any) -> Any:
    """A picklable stand-in for a generic argument."""
    if isinstance(arg, TypeDesc):
        from cara.runtime import types as t

        for name in dir(t):
            if getattr(t, name) is arg:
                return ("builtin", name)
    return arg


def _rebind(cls: Any, tokens: tuple[Any, ...]) -> Any:
    from cara.runtime import types as t

    args = tuple(getattr(t, tok[1]) if isinstance(tok, tuple) and tok[:1] == ("builtin",)
                 else tok for tok in tokens)
    return bind(cls, args)


def replace_types(cls: Any, pairs: Any) -> Any:
    """``cls`` rebuilt with every ``old`` type replaced by ``new`` (``[(old, new), ...]``)."""
    schema = cls.cara_schema
    builder = schema.builder.with_replacements(
        [(as_type(old), as_type(new)) for old, new in pairs])
    if hasattr(schema, "all_methods"):
        return builder.interface_class(schema.node.id, schema.bindings)
    return builder.struct_class(schema.node.id, schema.bindings)
