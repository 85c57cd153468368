"""Which nodes a request carries, and building the ``CodeGeneratorRequest``.

capnp decides the node set by an eager traversal (``Compiler::Node::traverse``): the requested
files with everything nested in them, then, transitively, every node their nodes use (field
types and generic arguments, annotations, superclasses, method structs, constant and annotation
types), each with its enclosing scopes. The source info list and the imports of each requested
file follow capnp's rules too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cara.schema import ast, model
from cara.schema.ast import Declaration, Expression, Located
from cara.schema.declarations import CompilerServices, DeclNode, ParsedFile
from cara.schema.request_order import FinalLoader, unordered_map_order

__all__ = ["CAPNP_VERSION", "Collector", "build_request", "dependencies", "find_imports",
           "traverse"]

CAPNP_VERSION = model.CapnpVersion(0, 9, 2)

_TYPE_KINDS = frozenset({"struct", "enum", "interface"})

# Eagerness bits of capnp's traversal (compiler.h).
_NODE, _PARENTS, _CHILDREN, _DEPENDENCIES = 1, 2, 4, 8
DEFAULT_EAGERNESS = _NODE | _CHILDREN | _DEPENDENCIES | (_PARENTS * _DEPENDENCIES)


def traverse(compiler: CompilerServices, node: DeclNode, eagerness: int, seen: dict[int, int],
             loaded: FinalLoader, source_info: dict[int, model.SourceInfo]) -> None:
    """capnp's ``Compiler::Node::traverse``, without recursion.

    A node's source info is recorded after its dependencies were traversed, into a map where
    the first entry for an id wins; the order matters for the one entry capnp writes with
    id 0 (the method structs', see :func:`build_request`).
    """
    stack: list[Iterator[tuple[DeclNode, int]]] = [_traverse_steps(
        compiler, node, eagerness, seen, loaded, source_info)]
    while stack:
        try:
            child, eager = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        stack.append(_traverse_steps(compiler, child, eager, seen, loaded, source_info))

def _traverse_steps(compiler: CompilerServices, node: DeclNode, eager: int, seen: dict[int, int],
                    loaded: FinalLoader,
                    source_info: dict[int, model.SourceInfo]) -> Iterator[tuple[DeclNode, int]]:
    slot = seen.get(node.id, 0)
    if slot & eager == eager:
        return
    seen[node.id] = slot | eager
    compiler.finish(node)
    infos = node.source_info
    if node.model is not None:
        # capnp's loadFinalSchema: the auxiliary nodes (groups in declaration order, method
        # structs), then the node. Its source info lists the node's, then the same order.
        aux = _aux_in_capnp_order(node.model, node.aux)
        for schema_node in [*aux, node.model]:
            loaded.load_once(schema_node)
        if node.model.struct is not None and aux:
            rank = {n.id: i for i, n in enumerate([node.model, *aux])}
            infos = sorted(infos, key=lambda info: rank.get(info.id, len(rank)))
    if eager // _DEPENDENCIES and node.model is not None:
        new_eager = (eager & ~(_DEPENDENCIES - 1)) | (eager // _DEPENDENCIES)
        for schema_node in [node.model, *node.aux]:
            for dep in dependencies(schema_node):
                target = compiler.nodes_by_id.get(dep)
                if target is not None:
                    yield target, new_eager
    for info in infos:
        source_info.setdefault(info.id, info)
    if eager & _PARENTS and node.parent is not None:
        yield node.parent, eager
    if eager & _CHILDREN:
        for child in node.ordered:
            yield child, eager
        # Once the children are done (the driver finishes each before asking for the next),
        # capnp compiles this scope's "using" declarations, used or not, in name order.
        for name in sorted(node.aliases):
            compiler.compile_alias(node.aliases[name])


def _aux_in_capnp_order(top: model.Node, aux: list[model.Node]) -> list[model.Node]:
    """A struct's groups as capnp creates them (declaration order, each group before the groups
    inside it); an interface's method structs stay as they are."""
    if top.struct is None:
        return aux
    by_id = {n.id: n for n in aux}
    by_id[top.id] = top
    keys: dict[int, tuple[int, ...]] = {top.id: ()}

    def key(node: model.Node) -> tuple[int, ...]:
        if node.id not in keys:
            parent = by_id[node.scopeId]
            assert parent.struct is not None
            order = next(f.codeOrder for f in parent.struct.fields
                         if f.group is not None and f.group.typeId == node.id)
            keys[node.id] = (*key(parent), order)
        return keys[node.id]

    return sorted(aux, key=key)


def _type_deps(type_: model.Type) -> Iterator[int]:
    while type_.which == "list" and type_.list is not None:
        type_ = type_.list.elementType
    if type_.which in _TYPE_KINDS:
        branded: model.TypeBranded = getattr(type_, type_.which)
        yield from _brand_deps(branded.brand)
        yield branded.typeId


def _brand_deps(brand: model.Brand) -> Iterator[int]:
    """Types used as generic arguments are dependencies too."""
    for scope in brand.scopes:
        for binding in scope.bind or []:
            if binding.type is not None:
                yield from _type_deps(binding.type)


def _annotation_deps(annotations: list[model.Annotation]) -> Iterator[int]:
    for a in annotations:
        yield from _brand_deps(a.brand)
        yield a.id


def dependencies(node: model.Node) -> Iterator[int]:
    if node.which == "struct" and node.struct is not None:
        for f in node.struct.fields:
            if f.which == "slot" and f.slot is not None:
                yield from _type_deps(f.slot.type)
            yield from _annotation_deps(f.annotations)
    elif node.which == "enum" and node.enum is not None:
        for e in node.enum.enumerants:
            yield from _annotation_deps(e.annotations)
    elif node.which == "const" and node.const is not None:
        yield from _type_deps(node.const.type)
    elif node.which == "annotation" and node.annotation is not None:
        yield from _type_deps(node.annotation.type)
    elif node.which == "interface" and node.interface is not None:
        for s in node.interface.superclasses:
            if s.id:
                yield from _brand_deps(s.brand)
                yield s.id
        for m in node.interface.methods:
            yield from _brand_deps(m.paramBrand)
            yield m.paramStructType
            yield from _brand_deps(m.resultBrand)
            yield m.resultStructType
            yield from _annotation_deps(m.annotations)
    yield from _annotation_deps(node.annotations)


def find_imports(root: Declaration) -> set[str]:
    """Import names used in type positions, as capnp lists them in ``RequestedFile.imports``."""
    names: set[str] = set()

    def expr(e: Expression | None) -> None:
        while e is not None:
            if e.kind == "import":
                assert isinstance(e.value, Located)
                names.add(str(e.value.value))
                return
            if e.kind == "list":
                for el in e.elements:
                    expr(el)
                return
            if e.kind == "tuple":
                for p in e.params:
                    expr(p.value)
                return
            if e.kind == "application":
                for p in e.params:
                    expr(p.value)
                e = e.function
                continue
            if e.kind == "member":
                e = e.parent
                continue
            return

    def params(pl: ast.ParamList | None) -> None:
        if pl is None:
            return
        if pl.kind == "namedList":
            for p in pl.named:
                expr(p.type)
                for a in p.annotations:
                    expr(a.name)
        elif pl.kind == "type":
            expr(pl.type)
        else:
            names.add("/capnp/stream.capnp")

    stack = [root]
    while stack:
        decl = stack.pop()
        if decl.kind in ("using", "const", "field"):
            expr(decl.type)
        elif decl.kind == "interface":
            for s in decl.superclasses:
                expr(s)
        elif decl.kind == "method":
            params(decl.params)
            params(decl.results)
        elif decl.kind == "annotation":
            pass
        for a in decl.annotations:
            expr(a.name)
        if decl.annotation is not None:
            expr(decl.annotation.name)
        stack.extend(decl.nested)
    return names


class Collector:
    """What the eager traversal has gathered so far (capnp compiles each requested file as soon
    as it is named, so that a file imported by an earlier one keeps its imported name)."""

    def __init__(self) -> None:
        self.loaded = FinalLoader()
        self.source_info: dict[int, model.SourceInfo] = {}

    def add(self, compiler: CompilerServices, file: ParsedFile) -> None:
        assert file.node is not None
        # Each file's traversal starts afresh (capnp's eagerlyCompile has a "seen" map of its
        # own); what it loads and records accumulates.
        traverse(compiler, file.node, DEFAULT_EAGERNESS, {}, self.loaded, self.source_info)


def build_request(compiler: CompilerServices, requested: Sequence[ParsedFile],
                  collector: Collector) -> model.CodeGeneratorRequest:
    loaded = collector.loaded
    source_info = collector.source_info
    compiler.diag.raise_if_any()
    request = model.CodeGeneratorRequest(capnpVersion=model.CapnpVersion(
        CAPNP_VERSION.major, CAPNP_VERSION.minor, CAPNP_VERSION.micro))
    request.nodes.extend(loaded.nodes())
    request.sourceInfo.extend(source_info[i] for i in unordered_map_order(source_info))
    for file in requested:
        assert file.node is not None
        imports = []
        for name in sorted(find_imports(file.root), key=lambda s: s.encode("utf-8")):
            target = compiler.import_file(file, name)
            if target is not None and target.node is not None:
                imports.append(model.RequestedFileImport(target.node.id, name))
        request.requestedFiles.append(
            model.RequestedFile(file.node.id, file.source.display_name, imports))
    return request
