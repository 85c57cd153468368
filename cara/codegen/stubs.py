"""The writer of ``x_capnp.pyi``: type stubs that tell mypy and IDEs every field, type and method.

The stub mirrors what :mod:`cara.codegen.rebuild` builds at import time:

* a struct is ``class S(cara.runtime.Struct)`` with one typed attribute per field (named as the
  runtime names attributes, :func:`cara.runtime.struct.attribute_name`; a property whose setter
  takes what assignment converts where that differs from what is read: a dict for a struct or
  group, a name or number for an enum, any iterable for a list), nested declarations as nested
  classes, a typed ``Create`` (positional values in field order, or keywords), a keyword
  ``__init__``, and ``which()`` returning a ``Literal`` of the union members; a list reads as
  ``cara.runtime.List[T]`` (``Get`` included), and ``from_bytes``/``copy``/... return ``S``
  (typed on :class:`~cara.runtime.struct.Struct` itself);
* a group is a nested class ``_<field>_Group`` (groups have no name of their own in Cap'n
  Proto; the runtime puts the class under the same name, see
  :func:`cara.runtime.struct.group_attribute`); a method's implicit parameter and result
  structs are ``<Method>Params`` and ``<Method>Results`` inside their interface (real
  attributes, attached at import time);
* an enum is a ``cara.runtime.Enum`` (an ``IntEnum``) with its members;
* an interface is a class whose methods take the typed parameters (without defaults, so an
  implementation may declare them either way; a method taking a declared struct takes it whole)
  and return an awaitable of the result: nothing for ``-> ()``, the value for a single result,
  else the results struct (an ``async def`` implementation matches);
* constants are typed module (or class) attributes.

Types read back are precise (``Text`` -> ``str``, ``List(Int32)`` -> ``list[int]``); types
accepted on writes are as loose as the runtime's conversion (a struct also takes a mapping, an
enum an ``int`` or a name). Generic parameters and ``AnyPointer`` are ``Any``.

Imports of other schema files are absolute imports of their modules (``import y_capnp``,
``import cara.std.cxx_capnp``), aliased ``_dep_<n>``.
"""

from __future__ import annotations

from collections.abc import Iterator

from cara.codegen.naming import CONTROL, method_struct_name, python_name
from cara.codegen.rebuild import nested_attribute
from cara.codegen.schemafile import SchemaFile
from cara.runtime.struct import group_attribute
from cara.schema import model

__all__ = ["stub_source"]

_INDENT = "    "

_SCALARS = {
    "void": "None", "bool": "bool", "int8": "int", "int16": "int", "int32": "int",
    "int64": "int", "uint8": "int", "uint16": "int", "uint32": "int", "uint64": "int",
    "float32": "float", "float64": "float", "text": "str", "data": "bytes",
}

_ENUM_RESERVED = {"name", "value", "mro", "real", "imag", "numerator", "denominator",
                  "conjugate", "bit_length", "bit_count", "to_bytes", "from_bytes",
                  "as_integer_ratio"}


def field_attribute(name: str) -> str:
    """The attribute under which the runtime exposes a struct field."""
    from cara.runtime.struct import attribute_name

    return attribute_name(name)


def enumerant_attribute(name: str) -> str:
    """The attribute under which the runtime exposes an enumerant (see ``make_enum``)."""
    import keyword

    if keyword.iskeyword(name) or name.startswith("_") or name in _ENUM_RESERVED:
        return name + "_"
    return name


def group_class_name(field_name: str) -> str:
    return group_attribute(field_name)


def method_attribute(name: str) -> str:
    """The attribute under which the runtime exposes an interface method."""
    from cara.runtime.interface import INTERFACE_RESERVED
    from cara.runtime.struct import attribute_name

    return attribute_name(name, INTERFACE_RESERVED)


class _StubWriter:
    def __init__(self, schema: SchemaFile) -> None:
        self.schema = schema
        self.request = schema.request
        self.by_id = self.request.nodes_by_id()
        self.docs = schema.docs()
        self.lines: list[str] = []
        #: Member names of the class whose body is being written.
        self.shadowed: set[str] = set()
        #: The node whose class body is being written (its TypeVars are usable there).
        self.generic_scope: int | None = None
        #: A TypeVar per generic parameter of this file's structs and interfaces.
        self.typevars: dict[tuple[int, int], str] = {}
        for decl in schema.declarations():
            if decl.node.which in ("struct", "interface"):
                for i, p in enumerate(decl.node.parameters):
                    self.typevars[(decl.node.id, i)] = f"_{'_'.join(decl.path)}_{p.name}"
        self.deps: dict[int, str] = {}
        for file_id, target in schema.dependencies().items():
            self.deps[file_id] = target.lstrip(".")
        self.dep_alias = {fid: f"_dep_{n}" for n, fid in enumerate(self.deps)}
        self.files = {n.displayName: n.id for n in self.request.nodes if n.which == "file"}
        # Where each method's param/result struct lives (scopeId is 0 for those).
        self.method_structs: dict[int, tuple[int, str, bool]] = {}
        for node in self.request.nodes:
            if node.which == "interface" and node.interface is not None:
                for m in node.interface.methods:
                    for sid, res in ((m.paramStructType, False), (m.resultStructType, True)):
                        s = self.by_id.get(sid)
                        if s is not None and s.scopeId == 0:
                            self.method_structs[sid] = (node.id, m.name, res)
        self.group_fields: dict[int, tuple[int, str]] = {}
        for node in self.request.nodes:
            if node.which == "struct" and node.struct is not None:
                for f in node.struct.fields:
                    if f.which == "group" and f.group is not None:
                        self.group_fields[f.group.typeId] = (node.id, f.name)

    # ------------------------------------------------------------------ names

    def path_of(self, node_id: int) -> list[str] | None:
        """The Python attribute path of a node inside its module."""
        node = self.by_id.get(node_id)
        if node is None or node.which == "file":
            return None
        if node_id in self.method_structs:
            iface, method, results = self.method_structs[node_id]
            parent = self.path_of(iface)
            return None if parent is None else [*parent, method_struct_name(method, results)]
        if node_id in self.group_fields:
            owner, field = self.group_fields[node_id]
            parent = self.path_of(owner)
            return None if parent is None else [*parent, group_class_name(field)]
        parent_node = self.by_id.get(node.scopeId)
        if parent_node is None:
            return None
        if parent_node.which == "file":
            return [python_name(node.shortName)]
        parent = self.path_of(parent_node.id)
        return None if parent is None else [*parent, nested_attribute(node.shortName)]

    def file_of(self, node_id: int) -> int | None:
        node = self.by_id.get(node_id)
        if node is None:
            return None
        return self.files.get(node.displayName.split(":", 1)[0])

    def ref(self, node_id: int, args: list[str] | None = None) -> str:
        """How the stub names node ``node_id`` (``Any`` if it cannot be named); a generic class
        gets its type arguments, ``Any`` for each one not given."""
        path = self.path_of(node_id)
        file_id = self.file_of(node_id)
        if path is None or file_id is None:
            return "_t.Any"
        if file_id == self.schema.file.id:
            name = ".".join(path)
        else:
            alias = self.dep_alias.get(file_id)
            if alias is None:
                return "_t.Any"
            name = ".".join([alias, *path])
        node = self.by_id[node_id]
        # Method parameter structs carry the method's implicit parameters: not a generic class.
        if node.parameters and node_id not in self.method_structs:
            if args is None or len(args) != len(node.parameters):
                args = ["_t.Any"] * len(node.parameters)
            name += f"[{', '.join(args)}]"
        return name

    # ------------------------------------------------------------------ types

    def builtin(self, name: str) -> str:
        """A builtin type's name, qualified when the class being written has a member of that
        name (a field called ``bool`` would otherwise be what ``bool`` means in its body)."""
        if name != "None" and name in self.shadowed:
            return f"_b.{name}"
        return name

    def members(self, node: model.Node) -> set[str]:
        names = {nested_attribute(n.name) for n in node.nestedNodes}
        if node.struct is not None:
            for f in node.struct.fields:
                names.add(field_attribute(f.name))
                names.add(group_class_name(f.name))
        if node.interface is not None:
            for m in node.interface.methods:
                names.add(method_attribute(m.name))
                names.add(method_struct_name(m.name, False))
                names.add(method_struct_name(m.name, True))
        return names

    def read_type(self, t: model.Type) -> str:
        if t.which in _SCALARS:
            return self.builtin(_SCALARS[t.which])
        if t.which == "list" and t.list is not None:
            return f"_List[{self.read_type(t.list.elementType)}]"
        for kind in ("enum", "struct", "interface"):
            if t.which == kind:
                branded = getattr(t, kind)
                return self.branded_ref(branded) if branded is not None else "_t.Any"
        return self.parameter(t)

    def write_type(self, t: model.Type) -> str:
        if t.which == "data":
            return " | ".join(self.builtin(n) for n in ("bytes", "bytearray", "memoryview"))
        if t.which in _SCALARS:
            return self.builtin(_SCALARS[t.which])
        if t.which == "list" and t.list is not None:
            return f"_Iterable[{self.write_type(t.list.elementType)}]"
        if t.which == "enum" and t.enum is not None:
            return f"{self.ref(t.enum.typeId)} | int | str"
        if t.which == "struct" and t.struct is not None:
            return f"{self.branded_ref(t.struct)} | _Mapping[_t.Any, _t.Any]"
        if t.which == "interface":
            return "_t.Any"
        return self.parameter(t)

    # ------------------------------------------------------------------ generics

    def parameter(self, t: model.Type) -> str:
        """A generic parameter is its TypeVar inside the class that declares it; anywhere else
        (nested classes, other scopes, method-level parameters, AnyPointer) it is ``Any``."""
        ap = t.anyPointer
        if t.which == "anyPointer" and ap is not None and ap.parameter is not None:
            if ap.parameter.scopeId == self.generic_scope:
                name = self.typevars.get((ap.parameter.scopeId, ap.parameter.parameterIndex))
                if name is not None:
                    return name
        return "_t.Any"

    def branded_ref(self, branded: model.TypeBranded) -> str:
        """``Foo[str, int]`` for a generic struct or interface bound to those types, ``Foo``
        (its parameters are then ``Any``) when it is not generic or not bound."""
        target = self.by_id.get(branded.typeId)
        if target is None or not target.parameters:
            return self.ref(branded.typeId)
        for scope in branded.brand.scopes:
            if scope.scopeId == target.id and scope.which == "bind" and scope.bind:
                args = [self.read_type(b.type) if b.which == "type" and b.type is not None
                        else "_t.Any" for b in scope.bind]
                return self.ref(branded.typeId, args)
        return self.ref(branded.typeId)

    def generic_base(self, node: model.Node) -> list[str]:
        names = [self.typevars[(node.id, i)] for i in range(len(node.parameters))
                 if (node.id, i) in self.typevars]
        return [f"_t.Generic[{', '.join(names)}]"] if names else []

    # ------------------------------------------------------------------ output

    def out(self, depth: int, text: str = "") -> None:
        self.lines.append(_INDENT * depth + text if text else "")

    def doc(self, depth: int, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if '"' in text or "\\" in text or CONTROL.search(text):
            self.out(depth, repr(text))  # always a valid literal, if less pretty
        elif "\n" in text:
            self.out(depth, f'"""{text}\n' + _INDENT * depth + '"""')
        else:
            self.out(depth, f'"""{text}"""')

    def write(self) -> str:
        schema = self.schema
        self.out(0, "# Generated by cara from a Cap'n Proto schema: do not edit, and do not lint.")
        self.out(0, "# ruff: noqa")
        self.out(0, f'"""Type stubs of ``{schema.filename}`` (generated by cara; do not edit)."""')
        self.out(0)
        self.out(0, "import builtins as _b")
        self.out(0, "import typing as _t")
        self.out(0, "from collections.abc import Awaitable as _Awaitable")
        self.out(0, "from collections.abc import Iterable as _Iterable")
        self.out(0, "from collections.abc import Mapping as _Mapping")
        self.out(0)
        self.out(0, "from cara.runtime.build import AnnotationDecl as _AnnotationDecl")
        self.out(0, "from cara.runtime.build import AnnotationValue as _AnnotationValue")
        self.out(0, "from cara.runtime.enum import Enum as _Enum")
        self.out(0, "from cara.runtime.list import List as _List")
        self.out(0, "from cara.runtime.struct import Struct as _Struct")
        self.out(0, "from cara.runtime.interface import Interface as _Interface")
        self.out(0, "from cara.schema.model import Node as _Node")
        for file_id, target in self.deps.items():
            self.out(0, f"import {target} as {self.dep_alias[file_id]}")
        self.out(0)
        self.out(0, "cara_file_id: int")
        self.out(0, "cara_annotations: list[_AnnotationValue]")
        self.out(0, "cara_nodes: dict[int, _Node]")
        if self.typevars:
            self.out(0)
        for name in self.typevars.values():
            self.out(0, f'{name} = _t.TypeVar("{name}")')
        top = [self.by_id[n.id] for n in schema.file.nestedNodes if n.id in self.by_id]
        names = []
        for node in top:
            self.out(0)
            self.declaration(0, node, python_name(node.shortName))
            names.append(python_name(node.shortName))
        self.out(0)
        self.out(0, f"__all__ = {sorted(names)!r}")
        text = "\n".join(self.lines)
        while "\n\n\n\n" in text:
            text = text.replace("\n\n\n\n", "\n\n\n")
        return text.rstrip("\n") + "\n"

    def declaration(self, depth: int, node: model.Node, name: str) -> None:
        if node.which == "struct":
            self.struct(depth, node, name)
        elif node.which == "enum":
            self.enum(depth, node, name)
        elif node.which == "interface":
            self.interface(depth, node, name)
        elif node.which == "const" and node.const is not None:
            self.out(depth, f"{name}: {self.read_type(node.const.type)}")
        elif node.which == "annotation":
            self.out(depth, f"{name}: _AnnotationDecl")

    def nested(self, depth: int, node: model.Node) -> Iterator[None]:
        for nested in node.nestedNodes:
            child = self.by_id.get(nested.id)
            if child is not None:
                self.declaration(depth, child, nested_attribute(nested.name))
                yield None

    def struct(self, depth: int, node: model.Node, name: str) -> None:
        assert node.struct is not None
        bases = ", ".join(["_Struct", *self.generic_base(node)])
        self.out(depth, f"class {name}({bases}):")
        doc = self.docs.get(node.id)
        if doc:
            self.doc(depth + 1, doc[0])
        body = depth + 1
        saved = self.shadowed, self.generic_scope
        self.shadowed = self.members(node)
        self.generic_scope = node.id
        for _ in self.nested(body, node):
            pass
        fields = node.struct.fields
        for f in fields:
            if f.which == "group" and f.group is not None:
                group = self.by_id.get(f.group.typeId)
                if group is not None:
                    self.struct(body, group, group_class_name(f.name))
        member_docs = doc[1] if doc else ()
        by_code_order = sorted(fields, key=lambda f: f.codeOrder)
        for f in by_code_order:
            attr = field_attribute(f.name)
            index = fields.index(f)
            read, write = self.field_read(node, f), self.field_write(f)
            if read == write:
                self.out(body, f"{attr}: {read}")
            else:  # a property whose setter takes what assignment converts (a dict, a name)
                self.out(body, "@_b.property")
                self.out(body, f"def {attr}(_cara_self) -> {read}:")
                if index < len(member_docs) and member_docs[index]:
                    self.doc(body + 1, member_docs[index])
                self.out(body + 1, "...")
                self.out(body, f"@{attr}.setter")
                self.out(body, f"def {attr}(_cara_self, _cara_value: {write}) -> None: ...")
                continue
            if index < len(member_docs) and member_docs[index]:
                self.doc(body, member_docs[index])
        params = self.keyword_params(node, by_code_order)
        qual = self.ref(node.id)
        self.out(body, "def __init__(")
        # Parameter names with the _cara_ prefix cannot clash with schema names (those never
        # start with an underscore).
        self.out(body + 1, "_cara_self, _cara_data: _Mapping[_t.Any, _t.Any] | None = None, /,")
        if params:
            self.out(body + 1, "*,")
            for p in params:
                self.out(body + 1, p + ",")
        self.out(body, ") -> None: ...")
        self.out(body, "@classmethod")
        if params:
            # Positional values go to the fields in their order in the node (the ordinal
            # order), as ``S.Create(value_of_field_0, ...)`` takes them at run time.
            self.out(body, "def Create(")
            self.out(body + 1, "_cara_cls,")
            for p in self.keyword_params(node, list(fields)):
                self.out(body + 1, p + ",")
            self.out(body, f") -> {qual}: ...")
        else:
            self.out(body, f"def Create(_cara_cls) -> {qual}: ...")
        union = [f for f in fields if f.discriminantValue != model.NO_DISCRIMINANT]
        if union:
            members = ", ".join(repr(f.name) for f in
                                sorted(union, key=lambda f: f.discriminantValue))
            self.out(body, f"def which(_cara_self) -> _t.Literal[{members}]: ...")
        self.shadowed, self.generic_scope = saved

    def field_read(self, owner: model.Node, f: model.Field) -> str:
        if f.which == "group" and f.group is not None:
            return self.ref(f.group.typeId)
        assert f.slot is not None
        return self.read_type(f.slot.type)

    def field_write(self, f: model.Field) -> str:
        if f.which == "group" and f.group is not None:
            return f"{self.ref(f.group.typeId)} | _Mapping[_t.Any, _t.Any]"
        assert f.slot is not None
        return self.write_type(f.slot.type)

    def keyword_params(self, owner: model.Node, fields: list[model.Field]) -> list[str]:
        return [f"{field_attribute(f.name)}: {self.field_write(f)} = ..." for f in fields]

    def enum(self, depth: int, node: model.Node, name: str) -> None:
        assert node.enum is not None
        self.out(depth, f"class {name}(_Enum):")
        doc = self.docs.get(node.id)
        if doc:
            self.doc(depth + 1, doc[0])
        if not node.enum.enumerants and not doc:
            self.out(depth + 1, "pass")
        member_docs = doc[1] if doc else ()
        for i, e in enumerate(node.enum.enumerants):
            self.out(depth + 1, f"{enumerant_attribute(e.name)} = {i}")
            if i < len(member_docs) and member_docs[i]:
                self.doc(depth + 1, member_docs[i])

    def interface(self, depth: int, node: model.Node, name: str) -> None:
        assert node.interface is not None
        bases = [self.branded_ref(model.TypeBranded(s.id, s.brand))
                 for s in node.interface.superclasses]
        bases = [b for b in bases if b != "_t.Any"] or ["_Interface"]
        self.out(depth, f"class {name}({', '.join([*bases, *self.generic_base(node)])}):")
        doc = self.docs.get(node.id)
        body = depth + 1
        if doc:
            self.doc(body, doc[0])
        wrote = False
        saved = self.shadowed, self.generic_scope
        self.shadowed = self.members(node)
        self.generic_scope = node.id
        for _ in self.nested(body, node):
            wrote = True
        member_docs = doc[1] if doc else ()
        for index, m in enumerate(node.interface.methods):
            for sid, is_results in ((m.paramStructType, False), (m.resultStructType, True)):
                s = self.by_id.get(sid)
                if s is not None and sid in self.method_structs:
                    self.struct(body, s, method_struct_name(m.name, is_results))
            params = self.by_id.get(m.paramStructType)
            results = self.by_id.get(m.resultStructType)
            args = ["_cara_self"]
            if params is not None and params.scopeId != 0:
                # ``m @0 SomeStruct``: the implementation receives the struct whole.
                args += [f"_cara_params: {self.ref(params.id)} | _Mapping[_t.Any, _t.Any]", "/"]
            elif params is not None and params.struct is not None:
                # No defaults: an implementation overriding this may or may not give them.
                for f in sorted(params.struct.fields, key=lambda f: f.codeOrder):
                    args.append(f"{field_attribute(f.name)}: {self.field_write(f)}")
            result = self.method_result(results)
            self.out(body, f"def {method_attribute(m.name)}({', '.join(args)}) -> "
                           f"_Awaitable[{result}]: ...")
            if index < len(member_docs) and member_docs[index]:
                self.doc(body, member_docs[index])
            wrote = True
        self.shadowed, self.generic_scope = saved
        if not wrote and not doc:
            self.out(body, "pass")

    def method_result(self, results: model.Node | None) -> str:
        """What a call returns: the named result struct, nothing, the single result, or the
        implicit results struct."""
        if results is None or results.struct is None:
            return "_t.Any"
        if results.scopeId != 0:
            return self.ref(results.id)
        fields = results.struct.fields
        if not fields:
            return "None"
        if len(fields) == 1:
            return self.field_read(results, fields[0])
        return self.ref(results.id)


def stub_source(schema: SchemaFile) -> str:
    """The text of ``x_capnp.pyi`` for one schema file."""
    return _StubWriter(schema).write()
