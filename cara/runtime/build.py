"""From schema nodes (``cara.schema.model``) to Python classes, constants and modules.

:class:`SchemaBuilder` owns one set of nodes (usually a ``CodeGeneratorRequest``) and builds, on
demand and once each, the class of every struct, enum and interface: one class per node and
generic binding (``TestGenerics(Text, Data)`` is its own class), so building is lazy and
recursive types are fine. Types inside fields are resolved when first used.

:func:`build_module` turns one requested file into a module whose attributes are the file's
top-level declarations, nested ones hanging off their parent (``person_capnp.Person.PhoneNumber``).
"""

from __future__ import annotations

import functools
import re
import sys
import threading
import types as pytypes
from collections.abc import Iterable
from typing import Any, cast

from cara.runtime import registry
from cara.runtime.enum import make_enum
from cara.runtime.list import list_class
from cara.runtime.struct import (
    _MISSING,
    FieldSpec,
    Struct,
    StructSchema,
    attribute_name,
    clean_plain,
    make_struct_class,
)
from cara.runtime.types import (
    ANY_LIST,
    ANY_POINTER,
    ANY_STRUCT,
    BUILTINS,
    CAPABILITY,
    ClassType,
    Invalid,
    TypeDesc,
    as_type,
    ctx_key,
    hold_in_any_pointer,
    type_key,
)
from cara.schema import model

__all__ = [
    "AnnotationDecl",
    "AnnotationValue",
    "SchemaBuilder",
    "build_module",
    "load_request",
    "module_name_for",
    "type_key",
]

Ctx = dict[int, tuple[TypeDesc, ...]]


def module_name_for(filename: str) -> str:
    """``foo/bar-baz.capnp`` -> ``bar_baz_capnp`` (the original generator's file naming)."""
    base = filename.rsplit("/", 1)[-1]
    return re.sub(r"[^0-9A-Za-z_]", "_", base.replace("+", "x"))


class AnnotationDecl:
    """An ``annotation`` declaration. Calling it with a value gives an :class:`AnnotationValue`
    (as in the original: ``ann(value)``)."""

    def __init__(self, type_id: int, name: str, qualname: str, type_: TypeDesc,
                 targets: tuple[str, ...]) -> None:
        self.id = type_id
        self.name = name
        self.qualname = qualname
        self.type = type_
        self.targets = targets

    def __call__(self, value: Any = None) -> AnnotationValue:
        return AnnotationValue(self, self.type.convert(value))

    def __repr__(self) -> str:
        return f"<annotation {self.qualname} @0x{self.id:016x} :{self.type.name}>"


class AnnotationValue:
    """One annotation applied somewhere: the declaration (when known) and its value."""

    __slots__ = ("annotation", "id", "value")

    def __init__(self, annotation: AnnotationDecl | None, value: Any, type_id: int = 0) -> None:
        self.annotation = annotation
        self.id = annotation.id if annotation is not None else type_id
        self.value = value

    @property
    def name(self) -> str:
        return self.annotation.name if self.annotation is not None else f"@0x{self.id:016x}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnnotationValue):
            return NotImplemented
        return self.id == other.id and self.value == other.value

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self.name}({self.value!r})"


class SchemaBuilder:
    """Builds runtime classes for the nodes it was given (see the module docstring)."""

    def __init__(self, nodes: model.CodeGeneratorRequest | Iterable[model.Node], *,
                 module_names: dict[int, str] | None = None,
                 replacements: dict[Any, TypeDesc] | None = None) -> None:
        if isinstance(nodes, model.CodeGeneratorRequest):
            nodes = nodes.nodes
        self.nodes: dict[int, model.Node] = {n.id: n for n in nodes}
        self.module_names: dict[int, str] = dict(module_names or {})
        self.replacements: dict[Any, TypeDesc] = dict(replacements or {})
        self._lock = threading.RLock()
        self._classes: dict[Any, Any] = {}
        self._annotations: dict[int, AnnotationDecl] = {}
        self._files: dict[str, int] = {
            n.displayName: n.id for n in self.nodes.values() if n.which == "file"}
        self._by_display: dict[str, int] = {n.displayName: n.id for n in self.nodes.values()}

    def add_nodes(self, nodes: Iterable[model.Node]) -> None:
        """Make more nodes known (e.g. the files of a schema imported later). Classes already
        built are kept; a node replacing one with the same id is used for what is built from
        now on."""
        nodes = list(nodes)
        with self._lock:
            for n in nodes:
                self.nodes[n.id] = n
                self._by_display[n.displayName] = n.id
                if n.which == "file":
                    self._files[n.displayName] = n.id

    # ------------------------------------------------------------------ naming

    def qualname(self, node: model.Node) -> str:
        name = node.displayName
        return name.split(":", 1)[1] if ":" in name else name

    def file_id(self, node: model.Node) -> int:
        if node.which == "file":
            return node.id
        return self._files.get(node.displayName.split(":", 1)[0], 0)

    def module_name(self, node: model.Node) -> str:
        fid = self.file_id(node)
        name = self.module_names.get(fid)
        if name is None:
            fnode = self.nodes.get(fid)
            base = module_name_for(fnode.displayName if fnode else "unknown.capnp")
            name = f"cara.loaded.{base}"
        return name

    def scope_chain(self, node_id: int) -> list[int]:
        chain = []
        seen = set()
        while node_id and node_id not in seen:
            seen.add(node_id)
            chain.append(node_id)
            node = self.nodes.get(node_id)
            if node is None:
                break
            node_id = node.scopeId
            if node_id == 0 and "$" in node.displayName:  # a method's $Params/$Results
                owner = node.displayName.rsplit("$", 1)[0].rsplit(".", 1)[0]
                node_id = self._by_display.get(owner, 0)
        return chain

    # ------------------------------------------------------------------ types

    def type_desc(self, t: model.Type, ctx: Ctx) -> TypeDesc:
        desc = self._type_desc(t, ctx)
        if self.replacements:
            return self.replacements.get(type_key(desc), desc)
        return desc

    def replaced(self, desc: Any) -> Any:
        """``desc``, or what ``ReplaceTypes`` put in its place."""
        return self.replacements.get(type_key(desc), desc) if self.replacements else desc

    def _type_desc(self, t: model.Type, ctx: Ctx) -> TypeDesc:
        w = t.which
        builtin = BUILTINS.get(w)
        if builtin is not None:
            return builtin
        if w == "list" and t.list is not None:
            elem = self.type_desc(t.list.elementType, ctx)
            desc = ClassType("list", lambda: list_class(elem), f"List({elem.name})")
            desc.key = ("list", type_key(elem))
            return desc
        if w == "enum" and t.enum is not None:
            eid = t.enum.typeId
            enode = self.nodes.get(eid)
            desc = ClassType("enum", lambda: self.enum_class(eid),
                             self.qualname(enode) if enode else f"@0x{eid:016x}")
            desc.key = ("enum", eid)
            return desc
        if w in ("struct", "interface"):
            branded = t.struct if w == "struct" else t.interface
            assert branded is not None
            tid = branded.typeId
            ctx2 = self.brand_ctx(branded.brand, ctx, tid)
            return self.class_type(w, tid, ctx2)
        if w == "anyPointer" and t.anyPointer is not None:
            ap = t.anyPointer
            if ap.which == "parameter" and ap.parameter is not None:
                bound = ctx.get(ap.parameter.scopeId)
                if bound is not None and ap.parameter.parameterIndex < len(bound):
                    return bound[ap.parameter.parameterIndex]
                return ANY_POINTER
            if ap.which == "unconstrained" and ap.unconstrained is not None:
                return {"struct": ANY_STRUCT, "list": ANY_LIST,
                        "capability": CAPABILITY}.get(ap.unconstrained.which, ANY_POINTER)
            return ANY_POINTER
        return ANY_POINTER

    def class_type(self, kind: str, tid: int, ctx: Ctx) -> ClassType:
        node = self.nodes.get(tid)
        name = self.qualname(node) if node else f"@0x{tid:016x}"
        if kind == "struct":
            desc = ClassType("struct", lambda: self.struct_class(tid, ctx), name)
        else:
            desc = ClassType("interface", lambda: self.interface_class(tid, ctx), name)
        desc.key = (kind, tid, ctx_key(ctx))
        return desc

    def brand_ctx(self, brand: model.Brand, ctx: Ctx, target: int) -> Ctx:
        """The generic bindings a reference to ``target`` carries (only its own scopes)."""
        chain = set(self.scope_chain(target))
        out: Ctx = {}
        for scope in brand.scopes:
            if scope.scopeId not in chain:
                continue
            if scope.which == "bind":
                out[scope.scopeId] = tuple(
                    self.type_desc(b.type, ctx) if b.which == "type" and b.type is not None
                    else ANY_POINTER for b in (scope.bind or []))
            elif scope.scopeId in ctx:
                out[scope.scopeId] = ctx[scope.scopeId]
        return out

    # ------------------------------------------------------------------ values

    @staticmethod
    def plain_value(value: model.Value) -> Any:
        """A ``Value`` as a plain Python value (pointer values: what ``PointerValue`` holds)."""
        w = value.which
        if w == "void":
            return None
        if w in ("list", "struct", "anyPointer"):
            pv = getattr(value, w)
            return None if pv is None else pv.value
        if w == "interface":
            return None
        return getattr(value, w)

    def convert_value(self, value: model.Value, desc: TypeDesc) -> Any:
        plain = self.plain_value(value)
        if plain is None and desc.kind in ("struct", "list"):
            return desc.default()
        try:
            return desc.convert_slow(clean_plain(desc, plain))
        except Invalid:
            return plain

    def annotation_values(self, anns: list[model.Annotation], ctx: Ctx) -> list[AnnotationValue]:
        out = []
        for a in anns:
            decl = self.annotation_decl(a.id, ctx)
            if decl is None:
                out.append(AnnotationValue(None, self.plain_value(a.value), a.id))
            else:
                out.append(AnnotationValue(decl, self.convert_value(a.value, decl.type)))
        return out

    # ------------------------------------------------------------------ declarations

    def _cached(self, key: Any) -> Any:
        return self._classes.get(key)

    def struct_class(self, node_id: int, ctx: Ctx | None = None) -> Any:
        ctx = {k: v for k, v in (ctx or {}).items() if k in set(self.scope_chain(node_id))}
        key = ("struct", node_id, ctx_key(ctx))
        cls = self._classes.get(key)
        if cls is not None:
            return cls
        with self._lock:
            cls = self._classes.get(key)
            if cls is None:
                cls = self._build_struct(node_id, ctx, key)
        return cls

    def _display(self, node: model.Node, ctx: Ctx) -> tuple[str, str]:
        """(short name, qualified name) including generic arguments bound at this node."""
        short = node.shortName
        qual = self.qualname(node)
        own = ctx.get(node.id)
        if own is not None and node.parameters:
            args = ", ".join(t.name for t in own)
            short = f"{short}[{args}]"
            qual = f"{qual}[{args}]"
        return short, qual

    def _build_struct(self, node_id: int, ctx: Ctx, key: Any) -> Any:
        node = self.nodes[node_id]
        if node.which != "struct" or node.struct is None:
            raise TypeError(f"node @0x{node_id:016x} ({node.displayName}) is not a struct")
        short, qual = self._display(node, ctx)
        fields: list[FieldSpec] = []
        for index, f in enumerate(node.struct.fields):
            disc = None if f.discriminantValue == model.NO_DISCRIMINANT else f.discriminantValue
            if f.which == "group" and f.group is not None:
                gid = f.group.typeId
                gnode = self.nodes.get(gid)
                gdesc = ClassType("struct", functools.partial(self.struct_class, gid, ctx),
                                  self.qualname(gnode) if gnode else f.name,
                                  ("struct", gid, ctx_key(ctx)))
                spec = FieldSpec(index, f.name, gdesc, is_group=True, discriminant=disc)
            else:
                assert f.slot is not None
                desc = self.type_desc(f.slot.type, ctx)
                default: Any = _MISSING
                if f.slot.hadExplicitDefault:
                    default = self.plain_value(f.slot.defaultValue)
                    if default is None and desc.kind in ("struct", "list", "anyPointer",
                                                         "interface"):
                        default = _MISSING  # pointer default not available: zero value
                spec = FieldSpec(index, f.name, desc, discriminant=disc, default_plain=default)
            spec.annotations = self.annotation_values(f.annotations, ctx)
            fields.append(spec)
        schema = StructSchema(
            node_id, qual, fields, node=node, is_group=node.struct.isGroup,
            builder=self, bindings=ctx,
            generic_params=tuple(p.name for p in node.parameters))
        cls: Any = make_struct_class(short, schema, module=self.module_name(node),
                                qualname=self.qualname(node) if node.id not in ctx else qual)
        cls._cara_type_.key = key
        self._classes[key] = cls
        if node.struct.isGroup:
            parent_node = self.nodes.get(node.scopeId)
            num = next((i for i, pf in enumerate(parent_node.struct.fields)
                        if pf.which == "group" and pf.group and pf.group.typeId == node_id),
                       0) if parent_node is not None and parent_node.struct else 0
            cls._cara_locator_ = (_group_class, (self.struct_class(node.scopeId, ctx), num))
        elif node.id in ctx or self.replacements:
            cls._cara_locator_ = (_bound_class, (self, "struct", node_id, ctx))
        schema.annotations = self.annotation_values(node.annotations, ctx)
        self._finish_declaration(cls, node, ctx)
        return cls

    def _finish_declaration(self, cls: Any, node: model.Node, ctx: Ctx) -> None:
        """Nested declarations as class attributes; the global registry annotation."""
        for nested in node.nestedNodes:
            if nested.id not in self.nodes:
                continue
            obj = self.declaration(nested.id, ctx)
            if obj is not None or self.nodes[nested.id].which == "const":
                try:
                    setattr(cls, attribute_name(nested.name) if nested.name[:1].islower()
                            else nested.name, obj)
                except (AttributeError, TypeError):
                    pass
        if any(a.id == registry.REGISTER_GLOBALLY_ID for a in node.annotations):
            if not ctx:
                registry.register(node.id, cls)

    def declaration(self, node_id: int, ctx: Ctx | None = None) -> Any:
        """The Python object for any declaration node: class, constant value, annotation."""
        node = self.nodes.get(node_id)
        if node is None:
            return None
        ctx = ctx or {}
        if node.which == "struct":
            return self.struct_class(node_id, ctx)
        if node.which == "enum":
            return self.enum_class(node_id)
        if node.which == "interface":
            return self.interface_class(node_id, ctx)
        if node.which == "const" and node.const is not None:
            return self.convert_value(node.const.value, self.type_desc(node.const.type, ctx))
        if node.which == "annotation":
            return self.annotation_decl(node_id, ctx)
        return None

    def enum_class(self, node_id: int) -> Any:
        key = ("enum", node_id)
        cls = self._classes.get(key)
        if cls is not None:
            return cls
        with self._lock:
            cls = self._classes.get(key)
            if cls is None:
                node = self.nodes[node_id]
                assert node.enum is not None
                names = [e.name for e in node.enum.enumerants]
                cls = cast(Any, make_enum(node.shortName, self.qualname(node), names, node_id,
                                          self.module_name(node)))
                cls._cara_annotations_ = self.annotation_values(node.annotations, {})
                cls._cara_enumerant_annotations_ = {
                    e.name: self.annotation_values(e.annotations, {})
                    for e in node.enum.enumerants}
                cls._cara_type_.key = key
                self._classes[key] = cls
        return cls

    def interface_class(self, node_id: int, ctx: Ctx | None = None) -> Any:
        from cara.runtime.interface import build_interface_class

        ctx = {k: v for k, v in (ctx or {}).items() if k in set(self.scope_chain(node_id))}
        key = ("interface", node_id, ctx_key(ctx))
        cls = self._classes.get(key)
        if cls is not None:
            return cls
        with self._lock:
            cls = self._classes.get(key)
            if cls is None:
                node = self.nodes[node_id]
                short, qual = self._display(node, ctx)
                cls = build_interface_class(self, node, ctx, short, qual)
                cls._cara_type_.key = key
                self._classes[key] = cls
                if node.id in ctx or self.replacements:
                    cls._cara_locator_ = (_bound_class, (self, "interface", node_id, ctx))
                self._finish_declaration(cls, node, ctx)
        return cls

    def annotation_decl(self, node_id: int, ctx: Ctx | None = None) -> AnnotationDecl | None:
        decl = self._annotations.get(node_id)
        if decl is not None:
            return decl
        node = self.nodes.get(node_id)
        if node is None or node.annotation is None:
            return None
        a = node.annotation
        targets = tuple(name[len("targets"):].lower() for name in (
            "targetsFile", "targetsConst", "targetsEnum", "targetsEnumerant", "targetsStruct",
            "targetsField", "targetsUnion", "targetsGroup", "targetsInterface", "targetsMethod",
            "targetsParam", "targetsAnnotation") if getattr(a, name))
        decl = AnnotationDecl(node_id, node.shortName, self.qualname(node),
                              self.type_desc(a.type, ctx or {}), targets)
        self._annotations[node_id] = decl
        return decl

    def with_replacements(self, pairs: Iterable[tuple[Any, Any]]) -> SchemaBuilder:
        """A builder over the same nodes where each ``old`` type is replaced by ``new``."""
        repl = dict(self.replacements)
        for old, new in pairs:
            repl[type_key(as_type(old))] = as_type(new)
        return SchemaBuilder(self.nodes.values(), module_names=self.module_names,
                             replacements=repl)

    # ------------------------------------------------------------------ modules

    def build_module(self, file_id: int, name: str | None = None, *,
                     register: bool = True) -> pytypes.ModuleType:
        fnode = self.nodes[file_id]
        if name is not None:
            self.module_names[file_id] = name
        modname = self.module_name(fnode)
        module = pytypes.ModuleType(modname, f"Cap'n Proto schema {fnode.displayName}")
        module.__file__ = fnode.displayName
        module.cara_annotations = self.annotation_values(  # type: ignore[attr-defined]
            fnode.annotations, {})
        module.cara_file_id = file_id  # type: ignore[attr-defined]
        module.cara_builder = self  # type: ignore[attr-defined]
        for nested in fnode.nestedNodes:
            if nested.id not in self.nodes:
                continue
            obj = self.declaration(nested.id)
            if obj is not None or self.nodes[nested.id].which == "const":
                setattr(module, nested.name, obj)
        if register:
            sys.modules[modname] = module
        return module


def _group_class(parent: Any, num: int) -> Any:
    return parent.cara_schema.fields[num].type.cls


def _bound_class(builder: SchemaBuilder, kind: str, node_id: int, ctx: Ctx) -> Any:
    if kind == "struct":
        return builder.struct_class(node_id, ctx)
    return builder.interface_class(node_id, ctx)


def build_module(request: model.CodeGeneratorRequest, file_id: int | None = None,
                 name: str | None = None, *, register: bool = True) -> pytypes.ModuleType:
    """The module for one requested file (the first requested file by default)."""
    builder = SchemaBuilder(request)
    if file_id is None:
        file_id = request.requestedFiles[0].id
    return builder.build_module(file_id, name, register=register)


def load_request(request: model.CodeGeneratorRequest, *, register: bool = True
                 ) -> dict[str, pytypes.ModuleType]:
    """A module for every requested file, by filename, sharing one builder (so a type imported
    from another requested file is the same class in both)."""
    builder = SchemaBuilder(request)
    return {rf.filename: builder.build_module(rf.id, register=register)
            for rf in request.requestedFiles}


_ = Struct


hold_in_any_pointer(model.PointerValue)  # (schema values: AnyPointer defaults, constants)
