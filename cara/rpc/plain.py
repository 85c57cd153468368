"""Params and results of methods described without runtime classes
(:func:`~cara.rpc.description.interfaces_from_nodes`): field-number-keyed dicts built from
positional and keyword arguments, and the values a caller gets back.

With runtime classes the runtime does all of this (``MethodSpec.box_params``/``unbox_results``);
these functions are the same rules for bare descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cara.rpc.description import (
    INTERFACE,
    PLAIN,
    FieldInfo,
    InterfaceInfo,
    MethodInfo,
    known_interface,
)
from cara.rpc.errors import ProtocolError

__all__ = [
    "Exported",
    "Results",
    "decode_plain_results",
    "encode_plain_params",
    "encode_plain_results",
    "incoming",
]


class Results(dict[str, Any]):
    """Several results of a call, by name; also readable as attributes (``r.text``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Exported:
    """Marks a local object to be sent as a capability implementing ``info`` (a plain object
    in an interface-typed field of a method described without runtime classes: a dict there
    would otherwise travel as a map)."""

    __slots__ = ("info", "obj")

    def __init__(self, obj: object, info: InterfaceInfo | None = None) -> None:
        self.obj = obj
        self.info = info


def _is_capability(value: Any) -> bool:
    """A proxy, promise, pipelined field or core capability (already a capability to send).
    Asked of the class: some objects, such as pseud clients, answer every attribute name."""
    cls = type(value)
    return isinstance(value, Exported) or getattr(cls, "_cara_core_cap_", False) is True or \
        getattr(cls, "__cara_cast__", None) is not None or \
        getattr(cls, "_cara_rpc_proxy_", False) is True


def incoming(f: FieldInfo, value: Any) -> Any:
    """An arriving param or result value as the field's description types it."""
    if f.kind == INTERFACE:
        if value is None:
            return value
        if getattr(type(value), "_cara_core_cap_", False) is not True:
            if _is_capability(value):
                return value
            raise TypeError(f"{f.name}: expected a capability, got {type(value).__name__} "
                            "(received data cannot implement an interface)")
        if f.convert is None:
            info = known_interface(f.interface_id)
            return value.cast(info) if info is not None else value
    convert = f.convert
    return convert(value) if convert is not None and value is not None else value


def _outgoing(f: FieldInfo, value: Any) -> Any:
    if f.kind == INTERFACE and value is not None and not _is_capability(value):
        return Exported(value, known_interface(f.interface_id))
    return value


def _by_number(numbers: Mapping[str, int], fields: tuple[FieldInfo, ...], d: Mapping[Any, Any],
               what: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    by_number = {f.number: f for f in fields}
    for k, v in d.items():
        num = k if isinstance(k, int) else numbers.get(k)
        if num is None:
            raise TypeError(f"{what} has no field {k!r}")
        f = by_number.get(num)
        out[num] = _outgoing(f, v) if f is not None else v
    return out


def encode_plain_params(m: MethodInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The params dict (by field number) of a call of a method described without classes."""
    if m.params_named:
        if len(args) == 1 and not kwargs:
            value = args[0]
        elif not args:
            value = kwargs
        else:
            raise TypeError(f"{m.name}() takes one struct or keyword arguments")
        if value is None:
            return None
        if m.param_type is not None and not isinstance(value, m.param_type):  # type: ignore[arg-type]
            return m.param_type(value)
        return _by_number(m.param_numbers, m.params, value, f"{m.name}() params")
    fields = m.params
    if len(args) > len(fields):
        raise TypeError(f"{m.name}() takes {len(fields)} arguments but {len(args)} were given")
    if not kwargs:
        if not args:
            return None
        return {f.number: (v if f.kind == PLAIN else _outgoing(f, v))
                for f, v in zip(fields, args, strict=False)}
    params = {f.number: _outgoing(f, v) for f, v in zip(fields, args, strict=False)}
    for name, v in kwargs.items():
        num = m.param_numbers.get(name)
        if num is None:
            raise TypeError(f"{m.name}() got an unexpected keyword argument {name!r}")
        if num in params:
            raise TypeError(f"{m.name}() got multiple values for argument {name!r}")
        params[num] = _outgoing(fields[[f.number for f in fields].index(num)], v)
    return params


def encode_plain_results(m: MethodInfo, result: Any) -> Any:
    """The results dict (by field number) for what a plain implementation returned."""
    fields = m.results
    if m.results_named:
        if result is None:
            return None
        if m.result_type is not None and not isinstance(result, m.result_type):  # type: ignore[arg-type]
            return m.result_type(result)
        if not isinstance(result, Mapping):
            raise TypeError(
                f"{m.name}() must return a struct (a mapping), got {type(result).__name__}")
        return _by_number(m.result_numbers, fields, result, f"{m.name}() results")
    if not fields:
        return None
    if len(fields) == 1:
        f = fields[0]
        if type(result) is dict and len(result) == 1 and f.name in result:
            result = result[f.name]  # ``return {'text': t}`` for a single result ``text``
        if result is None:
            return None
        return {f.number: _outgoing(f, result)}
    if isinstance(result, Mapping):
        return _by_number(m.result_numbers, fields, result, f"{m.name}() results")
    if isinstance(result, (tuple, list)):
        if len(result) > len(fields):
            raise TypeError(f"{m.name}() returned {len(result)} results, expected {len(fields)}")
        return {f.number: _outgoing(f, v) for f, v in zip(fields, result, strict=False)}
    if result is None:
        return None
    raise TypeError(f"{m.name}() must return a mapping or a tuple of {len(fields)} results")


def decode_plain_results(m: MethodInfo, results: Any) -> Any:
    """What the caller of a plain proxy gets: None, the one result, a :class:`Results`, or the
    struct of a ``-> Struct`` method."""
    if m.results_named:
        value = results if results is not None else {}
        return m.result_type(value) if m.result_type is not None else value
    fields = m.results
    if not fields:
        return None
    if results is None:
        results = {}
    elif not isinstance(results, dict):
        raise ProtocolError(f"results of {m.name}() must be a map")
    if len(fields) == 1:
        f = fields[0]
        v = results.get(f.number)
        return v if f.kind == PLAIN else incoming(f, v)
    return Results({
        f.name: (results.get(f.number) if f.kind == PLAIN else incoming(f, results.get(f.number)))
        for f in fields
    })
