"""What the RPC core needs to know about an interface: its methods, addressed by
``(interface id, method index)``, and their param/result fields by field number.

The core never looks at runtime classes directly. It works on :class:`InterfaceInfo`, built here
from the schema nodes of :mod:`cara.schema.model` (the contract below every layer), so RPC runs
on nothing but a ``CodeGeneratorRequest``. A runtime interface class is turned into one by
:func:`describe`, which asks the class through the small :class:`DescribesInterface` protocol
(``__cara_interface_info__``) or, failing that, from its schema node.

Methods of superclasses (``extends``) keep their own interface id, so two interfaces with a
method of the same name never clash on the wire: the name is only a local convenience.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cara.schema import model

__all__ = [
    "DescribesInterface",
    "FieldInfo",
    "InterfaceInfo",
    "MethodInfo",
    "describe",
    "interfaces_from_nodes",
    "known_interface",
    "register_interface_info",
]

#: Field kinds that need converting on arrival (everything else is a plain msgpack value).
PLAIN = "plain"
INTERFACE = "interface"
STRUCT = "struct"
LIST = "list"
ENUM = "enum"
ANY = "anyPointer"


@dataclass(frozen=True)
class FieldInfo:
    """One param or result field: ``number`` is its key in the msgpack map (the ordinal)."""

    name: str
    number: int
    kind: str = PLAIN
    #: For ``kind == "interface"``: the interface's node id.
    interface_id: int = 0
    #: Optional converter of an arriving value (a runtime struct/list/enum class); filled in by
    #: the runtime adapter. ``None``: the value is used as msgpack decoded it.
    convert: Callable[[Any], Any] | None = field(default=None, compare=False)


@dataclass(eq=False)
class MethodInfo:
    """One method, as the wire addresses it: ``(interface_id, index)``."""

    name: str
    interface_id: int
    index: int
    #: Param and result fields in code order (the order of positional arguments / tuple results).
    params: tuple[FieldInfo, ...] = ()
    results: tuple[FieldInfo, ...] = ()
    #: True when the params (results) are a named struct (``foo @0 Basic``, ``-> Basic``) rather
    #: than an implicit ``(a :X, b :Y)`` list: the implementation gets (returns) the struct whole.
    params_named: bool = False
    results_named: bool = False
    param_struct_id: int = 0
    result_struct_id: int = 0
    #: Optional converters from a field-number-keyed dict to the runtime struct (``Struct(d)``);
    #: filled in by the runtime adapter. ``None``: values are used as they arrive.
    param_type: Callable[[Any], Any] | None = None
    result_type: Callable[[Any], Any] | None = None
    #: The runtime's ``MethodSpec`` when this describes a runtime interface class: the runtime
    #: then does every conversion (``box_params``/``invoke``/``unbox_results``) and the core
    #: moves its structs as they are.
    spec: Any = None

    def __post_init__(self) -> None:
        self.param_numbers: dict[str, int] = {f.name: f.number for f in self.params}
        self.result_numbers: dict[str, int] = {f.name: f.number for f in self.results}
        #: Whether arriving params/results need any conversion beyond msgpack's own.
        self.params_plain = all(f.kind == PLAIN for f in self.params) and self.param_type is None
        self.results_plain = all(f.kind == PLAIN for f in self.results) and self.result_type is None

    def __repr__(self) -> str:
        return f"<method {self.name} @{self.index} of 0x{self.interface_id:016x}>"


@dataclass(eq=False)
class InterfaceInfo:
    """An interface with every method it can be called with (its own and inherited ones)."""

    id: int
    name: str
    own: tuple[MethodInfo, ...] = ()
    superclass_ids: tuple[int, ...] = ()
    #: The runtime class this describes, when there is one (used to infer an interface from a
    #: subclass and to give proxies the right type).
    pyclass: type | None = None
    methods: dict[tuple[int, int], MethodInfo] = field(default_factory=dict)
    by_name: dict[str, MethodInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.own:
            self.methods[(m.interface_id, m.index)] = m
            self.by_name[m.name] = m

    def __repr__(self) -> str:
        return f"<interface {self.name} 0x{self.id:016x}: {sorted(self.by_name)}>"


@runtime_checkable
class DescribesInterface(Protocol):
    """What a runtime interface class offers so RPC can use it (the runtime fills it in)."""

    __cara_interface_info__: InterfaceInfo


_known: dict[int, InterfaceInfo] = {}
_known_lock = threading.Lock()


def register_interface_info(info: InterfaceInfo) -> InterfaceInfo:
    """Remember ``info`` by id (first registration of a given id wins) and return the kept one.

    Lets a capability that arrives as a plain object or function be dispatched by method name
    when only the interface id is known."""
    with _known_lock:
        return _known.setdefault(info.id, info)


def known_interface(interface_id: int) -> InterfaceInfo | None:
    return _known.get(interface_id)


#: describe()'s answers by class, where there is one (a class's description does not change:
#: it comes from its class attributes and schema). Bounded: programs that make classes at run
#: time start over rather than hold them all.
_described: dict[type, InterfaceInfo] = {}
_DESCRIBED_MAX = 4096


def describe(obj: object) -> InterfaceInfo | None:
    """The :class:`InterfaceInfo` for an interface description, a runtime interface class (or a
    subclass of one, walking the MRO), an instance of one, or ``None`` when ``obj`` describes no
    interface. Every capability sent or made asks this of its object's class: found once."""
    cls = obj if isinstance(obj, type) else type(obj)
    found = _described.get(cls)
    if found is not None:
        return found
    if isinstance(obj, InterfaceInfo):
        return obj
    for klass in cls.__mro__:
        info = klass.__dict__.get("__cara_interface_info__")
        if isinstance(info, InterfaceInfo):
            found = info
            break
        if klass.__dict__.get("_cara_generated_") and hasattr(klass, "cara_schema"):
            found = _from_runtime(klass)
            break
    if found is not None:
        if len(_described) >= _DESCRIBED_MAX:
            _described.clear()
        _described[cls] = found
    return found


_runtime_infos: dict[int, tuple[Any, InterfaceInfo]] = {}


def _from_runtime(cls: Any) -> InterfaceInfo:
    """Adapt a runtime interface class (``cls.cara_schema``, an ``InterfaceSchema``)."""
    schema = cls.cara_schema
    cached = _runtime_infos.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    own = tuple(
        MethodInfo(name=spec.name, interface_id=spec.interface_id, index=spec.index,
                   params_named=spec.params_named, results_named=spec.results_named, spec=spec)
        for spec in schema.methods)
    info = InterfaceInfo(id=schema.id, name=schema.name, own=own, pyclass=cls,
                         superclass_ids=tuple(s.cara_schema.id for s in schema.superclasses))
    for key, spec in schema.all_methods.items():
        if key not in info.methods:
            info.methods[key] = MethodInfo(
                name=spec.name, interface_id=spec.interface_id, index=spec.index,
                params_named=spec.params_named, results_named=spec.results_named, spec=spec)
    for name, spec in schema.by_name.items():
        info.by_name.setdefault(name, info.methods[spec.key])
    _runtime_infos[id(schema)] = (schema, info)
    with _known_lock:
        existing = _known.get(info.id)
        if existing is None or existing.pyclass is None:
            _known[info.id] = info  # a runtime class describes more than bare nodes
    return info


# ------------------------------------------------------------------ building from schema nodes


def _ordinal(f: model.Field) -> int:
    return f.ordinal.explicit if f.ordinal.which == "explicit" else f.codeOrder


def _cast_within(infos: Mapping[int, InterfaceInfo], interface_id: int, value: Any) -> Any:
    """Type a received capability by the description built with the method's own interface
    (so one set of nodes stays one world), else by any known description of that id."""
    info = infos.get(interface_id) or known_interface(interface_id)
    cast = getattr(value, "__cara_cast__", None)
    return cast(info) if info is not None and cast is not None else value


def _field_info(f: model.Field, infos: Mapping[int, InterfaceInfo]) -> FieldInfo:
    if f.which != "slot" or f.slot is None:
        return FieldInfo(f.name, _ordinal(f), STRUCT)
    t = f.slot.type
    if t.which == "interface" and t.interface is not None:
        tid = t.interface.typeId
        return FieldInfo(f.name, _ordinal(f), INTERFACE, tid,
                         convert=functools.partial(_cast_within, infos, tid))
    if t.which in (STRUCT, LIST, ENUM, ANY):
        return FieldInfo(f.name, _ordinal(f), t.which)
    return FieldInfo(f.name, _ordinal(f), PLAIN)


def _struct_fields(node: model.Node | None,
                   infos: Mapping[int, InterfaceInfo]) -> tuple[FieldInfo, ...]:
    if node is None or node.struct is None:
        return ()
    return tuple(_field_info(f, infos)
                 for f in sorted(node.struct.fields, key=lambda f: f.codeOrder))


def interfaces_from_nodes(
    nodes: Mapping[int, model.Node] | Iterable[model.Node],
    *,
    struct_types: Mapping[int, Callable[[Any], Any]] | None = None,
    register: bool = True,
) -> dict[int, InterfaceInfo]:
    """An :class:`InterfaceInfo` for every interface node in ``nodes`` (by node id).

    ``struct_types`` maps a struct node id to its runtime class (a converter from a
    field-number-keyed dict), used for named param/result structs."""
    by_id = dict(nodes) if isinstance(nodes, Mapping) else {n.id: n for n in nodes}
    struct_types = struct_types or {}
    infos: dict[int, InterfaceInfo] = {}
    for node in by_id.values():
        if node.which != "interface" or node.interface is None:
            continue
        own = []
        for index, m in enumerate(node.interface.methods):
            pnode, rnode = by_id.get(m.paramStructType), by_id.get(m.resultStructType)
            params_named = pnode is not None and pnode.scopeId != 0
            results_named = rnode is not None and rnode.scopeId != 0
            own.append(MethodInfo(
                name=m.name, interface_id=node.id, index=index,
                params=_struct_fields(pnode, infos), results=_struct_fields(rnode, infos),
                params_named=params_named, results_named=results_named,
                param_struct_id=m.paramStructType, result_struct_id=m.resultStructType,
                param_type=struct_types.get(m.paramStructType) if params_named else None,
                result_type=struct_types.get(m.resultStructType) if results_named else None,
            ))
        infos[node.id] = InterfaceInfo(
            id=node.id, name=node.shortName, own=tuple(own),
            superclass_ids=tuple(s.id for s in node.interface.superclasses),
        )
    # Inherit along `extends`, nearest first (breadth-first over the superclass graph).
    for info in infos.values():
        queue, seen = list(info.superclass_ids), {info.id}
        while queue:
            sid = queue.pop(0)
            if sid in seen:
                continue
            seen.add(sid)
            parent = infos.get(sid) or known_interface(sid)
            if parent is None:
                continue
            for m in parent.own:
                info.methods.setdefault((m.interface_id, m.index), m)
                info.by_name.setdefault(m.name, m)
            queue.extend(parent.superclass_ids)
    if register:
        for info in infos.values():
            register_interface_info(info)
    return infos
