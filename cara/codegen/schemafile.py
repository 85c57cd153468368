"""What a generator needs to know about one schema file of a request.

A ``CodeGeneratorRequest`` carries nodes of many files (the requested ones in full, plus parts
of what they import). :class:`SchemaFile` picks out one file's nodes, its declarations in
nesting order with their Python paths (``MyStruct.NestedStruct``), its doc comments, and the
other files it depends on, so the module writer and the stub writer walk the same structure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cara.codegen.naming import import_target, module_name, python_name
from cara.schema import model

__all__ = ["Declaration", "SchemaFile", "type_ids"]


@dataclass
class Declaration:
    """A named node of the file: ``path`` is its Python attribute path from the module."""

    node: model.Node
    path: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass
class SchemaFile:
    request: model.CodeGeneratorRequest
    file: model.Node
    #: Python module (``.y_capnp``, ``cara.std.cxx_capnp``) of each imported file, by file id.
    imports: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, request: model.CodeGeneratorRequest, file_id: int) -> SchemaFile:
        file_node = request.node(file_id)
        imports: dict[int, str] = {}
        for requested in request.requestedFiles:
            if requested.id == file_id:
                for imp in requested.imports:
                    imports[imp.id] = import_target(imp.name)
        return cls(request, file_node, imports)

    @property
    def filename(self) -> str:
        for requested in self.request.requestedFiles:
            if requested.id == self.file.id:
                return requested.filename
        return self.file.displayName

    @property
    def module_name(self) -> str:
        return module_name(self.filename)

    def owns(self, node: model.Node) -> bool:
        name = self.file.displayName
        return node.displayName == name or node.displayName.startswith(name + ":")

    def nodes(self) -> list[model.Node]:
        """This file's nodes in reading order: the file, then each declaration followed by its
        groups, its methods' parameter and result structs and its nested declarations, as they
        appear in the schema. The order depends only on the nodes, never on the request's
        order (anything not reached that way follows, sorted by id)."""
        own = {n.id: n for n in self.request.nodes if self.owns(n)}
        ordered: list[model.Node] = []
        seen: set[int] = set()

        def visit(node_id: int) -> None:
            node = own.get(node_id)
            if node is None or node_id in seen:
                return
            seen.add(node_id)
            ordered.append(node)
            if node.struct is not None:
                for f in node.struct.fields:
                    if f.group is not None:
                        visit(f.group.typeId)
            if node.interface is not None:
                for m in node.interface.methods:
                    visit(m.paramStructType)
                    visit(m.resultStructType)
            for nested in node.nestedNodes:
                visit(nested.id)

        visit(self.file.id)
        ordered += [own[i] for i in sorted(own) if i not in seen]
        return ordered

    def declarations(self) -> Iterator[Declaration]:
        """Named declarations, parents before children, in the order they were declared."""
        by_id = self.request.nodes_by_id()

        def walk(node: model.Node, prefix: tuple[str, ...]) -> Iterator[Declaration]:
            for nested in node.nestedNodes:
                child = by_id.get(nested.id)
                if child is None:
                    continue
                path = (*prefix, python_name(nested.name))
                yield Declaration(child, path)
                yield from walk(child, path)

        yield from walk(self.file, ())

    def docs(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        """Doc comments of this file's nodes and their members, by node id (only non-empty)."""
        out: dict[int, tuple[str, tuple[str, ...]]] = {}
        own = {n.id for n in self.nodes()}
        for info in sorted(self.request.sourceInfo, key=lambda i: i.id):
            if info.id not in own:
                continue
            members = tuple(m.docComment for m in info.members)
            if info.docComment or any(members):
                while members and not members[-1]:
                    members = members[:-1]
                out[info.id] = (info.docComment, members)
        return out

    def dependencies(self) -> dict[int, str]:
        """Every other file whose nodes this file refers to, mapped to its Python module.

        Imports named in the request come first; a file reached only through an alias of an
        imported file (``using X = import "y.capnp".Z`` where Z is from z.capnp) is named from
        its display name, relative to this file."""
        by_id = self.request.nodes_by_id()
        files = {n.displayName: n.id for n in self.request.nodes if n.which == "file"}

        def owner(node_id: int) -> int | None:
            node = by_id.get(node_id)
            return None if node is None else files.get(node.displayName.split(":", 1)[0])

        referenced: set[int] = set()
        for node in self.nodes():
            for type_id in type_ids(node):
                file_id = owner(type_id)
                if file_id is not None and file_id != self.file.id:
                    referenced.add(file_id)
        out = dict(sorted(self.imports.items()))
        for file_id in sorted(referenced - set(out)):
            out[file_id] = _relative_module(self.file.displayName,
                                            self.request.node(file_id).displayName)
        return out


def _relative_module(own: str, other: str) -> str:
    own_dirs = own.split("/")[:-1]
    other_parts = other.split("/")
    common = 0
    while (common < len(own_dirs) and common < len(other_parts) - 1
           and own_dirs[common] == other_parts[common]):
        common += 1
    ups = len(own_dirs) - common
    rel = "/".join([".."] * ups + other_parts[common:])
    return import_target(rel)


def type_ids(obj: object) -> Iterator[int]:
    """Ids of every node that ``obj`` (a node or any part of one) refers to: field and constant
    types, brand bindings, superclasses, method parameter structs, annotations."""
    if isinstance(obj, model.TypeBranded):
        yield obj.typeId
        yield from type_ids(obj.brand)
    elif isinstance(obj, model.Annotation):
        yield obj.id
        yield from type_ids(obj.brand)
    elif isinstance(obj, model.Superclass):
        yield obj.id
        yield from type_ids(obj.brand)
    elif isinstance(obj, model.Method):
        yield obj.paramStructType
        yield obj.resultStructType
        for part in (obj.paramBrand, obj.resultBrand, obj.annotations):
            yield from type_ids(part)
    elif isinstance(obj, model.FieldGroup):
        yield obj.typeId
    elif isinstance(obj, list):
        for item in obj:
            yield from type_ids(item)
    elif isinstance(obj, (model.PointerValue, model.Value)):
        return
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from type_ids(getattr(obj, name))
