"""Schema nodes as a compact, deterministic Python literal, and back.

A generated ``x_capnp.py`` carries the nodes of its schema file so that it can rebuild its
classes with no ``.capnp`` file, no compiler and no binary codec at hand. They are written as
Python source: each :mod:`cara.schema.model` dataclass becomes a ``dict`` of the fields that
differ from the dataclass default, in the dataclass's field order, so the text is short,
readable (the schema's own field names) and identical from run to run. Python compiles it into
constants of the module's ``.pyc``, so importing costs one ``marshal`` load plus one pass of
:func:`from_literal`.

Floats that have no literal (``inf``, ``nan``) are written as ``float("inf")``-style calls, the
only non-literal expressions; -0.0 keeps its sign. A value that is not plain data (an
uninterpreted AnyPointer from a binary request) is written as ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

from cara.schema import model

__all__ = ["from_literal", "render", "to_literal"]

T = TypeVar("T")

_WIDTH = 100
_INDENT = "    "


# ------------------------------------------------------------------------------ model -> literal


def to_literal(obj: object) -> object:
    """``obj`` (a model dataclass, or lists/dicts/scalars of them) as plain Python data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, object] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if _is_default(f, value):
                continue
            out[f.name] = to_literal(value)
        return out
    if isinstance(obj, list):
        return [to_literal(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(to_literal(x) for x in obj)
    if isinstance(obj, dict):
        return {k: to_literal(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, bytearray):
        return bytes(obj)
    # Anything else cannot be a literal: in practice an uninterpreted AnyPointer value (of a
    # generic parameter's type) decoded from a binary request. It is written as None, which
    # reads as the type's default.
    return None


def _is_default(f: dataclasses.Field[Any], value: object) -> bool:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return False
    if type(default) is not type(value):
        return False
    if isinstance(value, float):
        return math.copysign(1.0, value) == math.copysign(1.0, default) and value == default  # type: ignore[arg-type]
    return bool(value == default)


def render(data: object, indent: int = 0) -> str:
    """Python source text for ``data`` (dicts, lists, tuples, str, bytes, int, float, bool,
    None): on one line when it fits in the width, otherwise one item per line."""
    flat = _render_flat(data)
    fits = len(flat) + len(_INDENT) * indent <= _WIDTH
    if fits or not isinstance(data, (dict, list, tuple, str)):
        return flat
    inner = _INDENT * (indent + 1)
    if isinstance(data, str):
        return _render_long_text(data, indent)
    if isinstance(data, dict):
        items = [f"{inner}{_render_flat(k)}: {render(v, indent + 1)}," for k, v in data.items()]
        return "{\n" + "\n".join(items) + "\n" + _INDENT * indent + "}"
    open_, close = ("[", "]") if isinstance(data, list) else ("(", ")")
    items = [f"{inner}{render(v, indent + 1)}," for v in data]
    return open_ + "\n" + "\n".join(items) + "\n" + _INDENT * indent + close


def _render_long_text(text: str, indent: int) -> str:
    """A long string as adjacent literals in parentheses, one source line per line of text."""
    pieces = text.splitlines(keepends=True)
    if len(pieces) < 2:
        return repr(text)
    inner = _INDENT * (indent + 1)
    return "(\n" + "\n".join(inner + repr(p) for p in pieces) + "\n" + _INDENT * indent + ")"


def _render_flat(data: object) -> str:
    if isinstance(data, dict):
        items = (f"{_render_flat(k)}: {_render_flat(v)}" for k, v in data.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(data, list):
        return "[" + ", ".join(_render_flat(v) for v in data) + "]"
    if isinstance(data, tuple):
        if len(data) == 1:
            return "(" + _render_flat(data[0]) + ",)"
        return "(" + ", ".join(_render_flat(v) for v in data) + ")"
    if isinstance(data, bool) or data is None:
        return repr(data)
    if isinstance(data, int):
        # Ids read better in hex, as the schema language writes them.
        return hex(data) if data > 0xFFFFFFFF else repr(int(data))
    if isinstance(data, float):
        if math.isnan(data):
            return 'float("nan")'
        if math.isinf(data):
            return 'float("inf")' if data > 0 else 'float("-inf")'
        return repr(float(data))
    if isinstance(data, str):
        return repr(str(data))
    if isinstance(data, (bytes, bytearray)):
        return repr(bytes(data))
    raise TypeError(f"cannot write {type(data).__name__} {data!r} into a generated module")


# ------------------------------------------------------------------------------ literal -> model

_Converter = Callable[[Any], Any]
_PLANS: dict[type, dict[str, _Converter]] = {}


def _identity(value: Any) -> Any:
    return value


def _converter_for_annotation(annotation: str) -> _Converter | None:
    """The converter for a field annotated (as a string: model.py postpones annotations) with
    one of model.py's simple forms: a scalar or ``Literal[...]`` (kept as is), ``X``,
    ``X | None``, ``list[X]`` or ``list[X] | None`` of a model class; ``None`` for anything
    else. Reading the string directly saves ``typing.get_type_hints``, which costs more than a
    millisecond on every import of a generated module."""
    text = annotation.removesuffix(" | None")
    if text.startswith("Literal["):
        return _identity
    is_list = text.startswith("list[") and text.endswith("]")
    name = text[5:-1] if is_list else text
    if name in _KEPT_ANNOTATIONS:
        return None if is_list else _identity
    target = vars(model).get(name)
    if not (isinstance(target, type) and dataclasses.is_dataclass(target)):
        return None
    item_cls: type = target
    if is_list:
        return lambda items: [from_literal(item_cls, x) for x in items]
    return lambda data: from_literal(item_cls, data)


#: Annotation names (builtins and model.py's aliases) whose values are kept as they are.
_KEPT_ANNOTATIONS = frozenset({"int", "str", "bool", "float", "bytes", "object", "Id",
                               "TypeWhich", "ValueWhich", "NodeWhich", "_Bool"})


def _plan(cls: type) -> dict[str, _Converter]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = {}
        for f in dataclasses.fields(cls):
            convert = _converter_for_annotation(f.type) if isinstance(f.type, str) else None
            if convert is None:
                raise TypeError(f"{cls.__name__}.{f.name}: annotation {f.type!r} is not a form "
                                "cara.codegen.literal reads (extend _converter_for_annotation)")
            plan[f.name] = convert
        _PLANS[cls] = plan
    return plan


def from_literal(cls: type[T], data: Any) -> T:
    """Rebuild a ``cls`` instance (a :mod:`cara.schema.model` dataclass) from :func:`to_literal`'s
    output. Keys that ``cls`` does not know are an error: they mean the module was written by a
    newer cara."""
    if data is None:
        return None  # type: ignore[return-value]
    plan = _plan(cls)
    kwargs = {}
    for key, value in data.items():
        convert = plan.get(key)
        if convert is None:
            raise TypeError(f"{cls.__name__} has no field {key!r}: the module was generated by a "
                            "newer version of cara")
        kwargs[key] = value if convert is _identity else convert(value)
    return cls(**kwargs)
