"""Import-time support of generated modules: schema literal -> runtime classes -> module names.

A generated ``x_capnp.py`` calls :func:`build` once. It turns the embedded node literals back
into :mod:`cara.schema.model` nodes, imports the modules of the schema files it refers to, and
gives the module a ``__getattr__`` (PEP 562) that asks :mod:`cara.runtime` for a top-level
declaration's classes the first time its name is read, attaching nested declarations to their
parents and doc comments to classes; so importing a large schema is cheap until its types are
used. It records what the module holds in a few ``cara_``-prefixed attributes (never Python's
own ``__annotations__``):

* ``cara_file_id``: the schema file's id;
* ``cara_annotations``: the file's own annotations (``$Cxx.namespace("x")``), as
  :class:`cara.runtime.AnnotationValue` objects (the same attribute the runtime's
  ``build_module`` sets);
* ``cara_nodes``: its nodes by id (``model.Node``), e.g. for the binary codec;
* ``_cara_types_``: everything built so far, by node id (classes, constant values,
  annotations);
* ``_cara_imported_``: the modules of the schema files it imports.

Every module built registers itself by file id in :data:`MODULES`; an import between schema
files is resolved there first, so modules made by :func:`cara.importer.load` (which live under
no importable name) find each other.

Nothing here imports the schema compiler: only the model, the runtime and the standard library.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from cara.codegen.literal import from_literal
from cara.codegen.naming import STANDARD_PACKAGE, method_struct_name
from cara.schema import model

__all__ = ["MODULES", "SUPPORTED_FORMATS", "build", "import_schema_module"]

#: Generated-module layouts this version of cara can load.
SUPPORTED_FORMATS = (1, 2)

#: Every schema module built in this process, by schema file id.
MODULES: dict[int, ModuleType] = {}


def import_schema_module(target: str, package: str | None) -> ModuleType:
    """Import the module of a schema file named by :func:`cara.codegen.naming.import_target`.

    A relative target (``.y_capnp``) is resolved against ``package``; a top-level generated
    module (no package) finds it as a top-level module instead (``y_capnp``), which is where
    ``cara compile -ocara`` puts it and where the import hook finds ``y.capnp`` on sys.path."""
    if target.startswith(".") and not package:
        target = target.lstrip(".")
    return importlib.import_module(target, package)


def build(
    namespace: dict[str, Any],
    format: int,
    file_id: int,
    nodes: list[dict[str, Any]],
    imports: Mapping[int, str],
    docs: Mapping[int, tuple[str, tuple[str, ...]]],
    declarations: Mapping[str, int] | None = None,
) -> dict[int, Any]:
    """Build the classes of one schema file into the module whose globals are ``namespace``.

    Format 1 (older generated modules) builds every declaration now and returns them by node
    id; the module binds its top-level names from that. Format 2 passes ``declarations`` (each
    top-level name and its node id) and builds a declaration, with everything nested in it, the
    first time the module's attribute is read (a module ``__getattr__``, PEP 562): importing a
    large schema costs little until its types are used. A file whose import must do something
    (``$Cara.registerGlobally`` fills the global registry) has its declarations built at once.
    (No declaration can be hidden by a module attribute: Cap'n Proto names contain neither
    underscores nor a leading ``_``.)"""
    module_name = namespace.get("__name__", "?")
    if format not in SUPPORTED_FORMATS:
        raise ImportError(f"{module_name} was generated for a different version of cara "
                          f"(format {format}); regenerate it with this one")
    decoded = [from_literal(model.Node, n) for n in nodes]
    imported = [_resolve_import(fid, target, namespace.get("__package__"), module_name)
                for fid, target in imports.items()]
    file_node = next((n for n in decoded if n.id == file_id), None)
    with _LOCK:  # modules imported by two threads at once share the one builder
        # The imported files' nodes too, as the imported modules hold them: another file with
        # the same id (a second vendored version) may have been built since, and this module's
        # types must be built from the version its own imports lead to.
        builder = shared_builder([*decoded, *_imported_nodes(imported)])
        builder.module_names[file_id] = module_name
        maker = _DeclarationMaker(builder, decoded, docs)
        annotations = (builder.annotation_values(file_node.annotations, {})
                       if file_node is not None else [])
    namespace["cara_file_id"] = file_id
    namespace["cara_annotations"] = annotations
    namespace["cara_nodes"] = maker.by_id
    namespace["_cara_types_"] = maker.built
    namespace["_cara_imported_"] = tuple(m for m in imported if m is not None)
    module = sys.modules.get(module_name)
    if module is not None and module.__dict__ is namespace:
        MODULES[file_id] = module
    if declarations is None or file_node is None:
        if file_node is not None:
            with _LOCK:
                maker.walk(file_node)
        return maker.built
    _install_lazy_names(namespace, module_name, maker, file_node, declarations)
    return maker.built


def _imported_nodes(imported: list[ModuleType | None]) -> list[model.Node]:
    """The nodes of the schema files ``imported`` reach, directly or through their imports."""
    out: list[model.Node] = []
    seen: set[int] = set()
    stack = [m for m in imported if m is not None]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.extend(getattr(module, "cara_nodes", {}).values())
        stack.extend(getattr(module, "_cara_imported_", ()))
    return out


def _install_lazy_names(namespace: dict[str, Any], module_name: str, maker: _DeclarationMaker,
                        file_node: model.Node, declarations: Mapping[str, int]) -> None:
    """The module ``__getattr__``/``__dir__`` that build top-level declarations on first use."""
    entries = {nested.id: nested for nested in file_node.nestedNodes}
    names = dict(declarations)

    def __getattr__(name: str) -> Any:
        node_id = names.get(name)
        entry = entries.get(node_id) if node_id is not None else None
        if entry is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        with _LOCK:
            obj = maker.nested(file_node, entry)
        namespace[name] = obj
        return obj

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
    if maker.registers_globally():
        for name in names:
            __getattr__(name)


def _resolve_import(file_id: int, target: str, package: str | None,
                    importer: str) -> ModuleType | None:
    module = MODULES.get(file_id)
    if module is not None:
        return module
    try:
        return import_schema_module(target, package)
    except ModuleNotFoundError as exc:
        if (exc.name or "").rpartition(".")[2] != target.rpartition(".")[2]:
            raise  # the module exists; something it imports is missing
        from cara.std import BY_FILE_ID

        standard = BY_FILE_ID.get(file_id)
        if standard is not None and standard != target:
            # Its own copy of a standard schema (``import "c++.capnp"``), not generated
            # beside it: the shipped module of that file is the same declarations.
            return importlib.import_module(standard)
        if target.startswith(STANDARD_PACKAGE + "."):
            # A standard schema cara does not ship: its annotations still work (kept as
            # plain values), only its types would be missing.
            return None
        raise ImportError(f"{importer}: cannot import {target!r}, the module of a schema file "
                          f"it uses (file id 0x{file_id:016x}): {exc}") from exc


_BUILDER: Any = None
_LOCK = threading.RLock()


def shared_builder(nodes: list[model.Node]) -> Any:
    """The process-wide :class:`cara.runtime.build.SchemaBuilder`, holding ``nodes`` too.

    All generated modules share one builder, so a struct of ``y.capnp`` used as a field type in
    ``x.capnp`` is the very class that ``y_capnp`` exposes. If ``nodes`` disagree with nodes the
    builder already has (a schema was edited and loaded again), a new builder takes over for the
    modules built from then on."""
    from cara.runtime.build import SchemaBuilder

    global _BUILDER
    builder = _BUILDER
    if builder is not None:
        known = builder.nodes
        # repr, not ==: a NaN default makes a node unequal to an identical copy of itself.
        if any(known.get(n.id, n) is not n and repr(known[n.id]) != repr(n) for n in nodes):
            merged = {**known, **{n.id: n for n in nodes}}
            builder = SchemaBuilder(list(merged.values()), module_names=builder.module_names)
        else:
            builder.add_nodes(nodes)
    else:
        builder = SchemaBuilder(nodes)
    _BUILDER = builder
    return builder


def nested_attribute(name: str) -> str:
    """The attribute of a nested declaration on its parent class, as the runtime names it:
    constants and annotations (lower-case names) like fields, types by their own name."""
    from cara.runtime.struct import attribute_name

    return attribute_name(name) if name[:1].islower() else name


def attach_method_structs(builder: Any, node: model.Node, cls: type,
                          by_id: dict[int, model.Node]) -> None:
    """Expose each method's implicit ``$Params``/``$Results`` structs on the interface class as
    ``<Method>Params``/``<Method>Results`` (C++'s names), as the stubs declare them."""
    assert node.interface is not None
    for method in node.interface.methods:
        for struct_id, results in ((method.paramStructType, False),
                                   (method.resultStructType, True)):
            struct_node = by_id.get(struct_id)
            if struct_node is None or struct_node.scopeId != 0:
                continue  # a declared struct: it has its own name already
            attr = method_struct_name(method.name, results)
            if attr not in vars(cls):
                setattr(cls, attr, builder.struct_class(struct_id))


class _DeclarationMaker:
    """Builds a file's declarations (classes, constant values, annotation declarations) with the
    shared runtime builder, one nested declaration at a time, attaching what the runtime does
    not: doc comments as ``__doc__``, the implicit method structs of interfaces, ``None``
    constants. ``built`` holds every object made so far, by node id."""

    def __init__(self, builder: Any, nodes: list[model.Node],
                 docs: Mapping[int, tuple[str, tuple[str, ...]]]) -> None:
        self.builder = builder
        self.by_id = {n.id: n for n in nodes}
        self.docs = docs
        self.built: dict[int, Any] = {}

    def registers_globally(self) -> bool:
        """Whether building a declaration of this file registers it globally (a side effect
        the import must have)."""
        from cara.runtime.registry import REGISTER_GLOBALLY_ID

        return any(a.id == REGISTER_GLOBALLY_ID for n in self.by_id.values()
                   for a in n.annotations)

    def walk(self, node: model.Node) -> None:
        for nested in node.nestedNodes:
            self.nested(node, nested)

    def nested(self, parent: model.Node, nested: model.NestedNode) -> Any:
        """The object of ``parent``'s nested declaration ``nested`` (built with everything
        nested in it on the first call)."""
        if nested.id in self.built:
            return self.built[nested.id]
        child = self.by_id.get(nested.id)
        if child is None:
            return None
        obj = self.builder.declaration(nested.id)
        self.built[nested.id] = obj
        owner = self.built.get(parent.id)
        if obj is None and isinstance(owner, type):
            # A Void constant's value is None; the runtime attaches only non-None ones.
            attr = nested_attribute(nested.name)
            if attr not in vars(owner):
                setattr(owner, attr, None)
        doc = self.docs.get(nested.id)
        if doc and doc[0] and isinstance(obj, type):
            try:
                obj.__doc__ = doc[0].strip()
            except (AttributeError, TypeError):
                pass
        if child.which == "interface" and isinstance(obj, type):
            attach_method_structs(self.builder, child, obj, self.by_id)
        self.walk(child)
        return obj
