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
* an interface class is what an implementation sees: its methods take the parameters as they
  arrive (without defaults, so an implementation may declare them either way; a capability as
  its proxy; a method taking a declared struct takes it whole) and return what
  ``MethodSpec.box_results`` accepts, or an awaitable of it, so plain and ``async def``
  overrides both check. ``Iface(x)`` is overloaded: on anything with ``__cara_cast__`` (a client,
  a proxy, a promise, a pipelined field) it gives the stub-only nested class ``Iface.Proxy``
  (deriving from ``Iface`` and from its superclasses' proxies), the type of every capability
  read from a struct or received as a parameter. Its methods (own and inherited) take what a
  call accepts, all optional, plus ``_timeout``, and return a stub-only promise class deriving
  from ``cara.rpc.CallPromise[value]`` with one property per result field (a capability: that
  interface's proxy; a struct or group: a stub-only pipeline class, awaitable, with a property
  per field; anything else: an awaitable of it) and, when the single result is a capability,
  that capability's methods (names of Future methods excepted, as at run time). Generic
  parameters are ``Any`` in proxies and promises; ``Iface(blocking client)`` is ``Any`` (its
  calls return values, not promises);
* constants are typed module (or class) attributes.

Types read back are precise (``Text`` -> ``str``, ``List(Int32)`` -> ``List[int]``, a capability
-> its ``Proxy``); types accepted on writes are as loose as the runtime's conversion (a struct
also takes a mapping, an enum an ``int`` or a name, a capability an implementation, a dict of
callables, a promise, ``None``, and a plain callable for a one-method interface). Generic
parameters and ``AnyPointer`` are ``Any``.

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
from cara.schema.ids import STREAM_RESULT_ID

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
        #: Methods whose promise classes are written at the end, and struct pipelines.
        self.promises: list[tuple[model.Node, model.Method]] = []
        self.pipelines: dict[int, str] = {}
        self.pipelines_pending: list[int] = []
        #: Whether the file declares or uses an interface (the stub then needs the RPC names).
        self.rpc = any(
            n.which == "interface" or any(f.slot is not None and _mentions_interface(f.slot.type)
                                          for f in (n.struct.fields if n.struct else ()))
            for n in self.request.nodes if self.file_of(n.id) == schema.file.id)
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

    def ref(self, node_id: int, args: list[str] | None = None, *, bare: bool = False) -> str:
        """How the stub names node ``node_id`` (``Any`` if it cannot be named); a generic class
        gets its type arguments, ``Any`` for each one not given (none when ``bare``)."""
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
        if node.parameters and node_id not in self.method_structs and not bare:
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
        for kind in ("enum", "struct"):
            if t.which == kind:
                branded = getattr(t, kind)
                return self.branded_ref(branded) if branded is not None else "_t.Any"
        if t.which == "interface" and t.interface is not None:
            return self.proxy_ref(t.interface.typeId)  # a capability read is its proxy
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
        if t.which == "interface" and t.interface is not None:
            return self.capability_write(t.interface)
        return self.parameter(t)

    def capability_write(self, branded: model.TypeBranded) -> str:
        """What a capability field or parameter accepts: an implementation (an instance of the
        interface or a subclass, a proxy), a dict of callables, a promise or a client (anything
        with ``__cara_cast__``), a plain callable for a one-method interface, or ``None``."""
        iface = self.branded_ref(branded)
        if iface == "_t.Any":
            return iface
        kinds = [iface, "_Mapping[_b.str, _t.Any]", "_CaraCastable"]
        node = self.by_id.get(branded.typeId)
        if node is not None and node.interface is not None and (
                len(node.interface.methods) == 1 or len(self.all_methods(node)) == 1):
            kinds.append("_t.Callable[..., _t.Any]")
        return " | ".join([*kinds, "None"])

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
        if self.rpc:
            self.out(0, "from cara.rpc.proxies import CallPromise as _CallPromise")
            if self.streams():
                self.out(0, "from cara.rpc.proxies import StreamCall as _StreamCall")
            self.out(0, "from cara.transports.sync_client import SyncClient as _SyncClient")
            self.out(0, "import typing_extensions as _te")
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
        if self.rpc:
            self.out(0)
            self.out(0, "class _CaraCastable(_t.Protocol):")
            self.out(1, '"""What becomes a capability when cast to an interface: a client, a '
                        'promise, a pipelined field."""')
            self.out(1, "def __cara_cast__(self, iface: _t.Any, /) -> _t.Any: ...")
        top = [self.by_id[n.id] for n in schema.file.nestedNodes if n.id in self.by_id]
        names = []
        for node in top:
            self.out(0)
            self.declaration(0, node, python_name(node.shortName))
            names.append(python_name(node.shortName))
        self.write_promises()
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
            read, write = self.field_read(f), self.field_write(f)
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

    def field_read(self, f: model.Field) -> str:
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

    # ------------------------------------------------------------------ interfaces

    def interface(self, depth: int, node: model.Node, name: str) -> None:
        """The interface class as implementations see it (what a method receives, and that it
        may return the value or an awaitable of it), its ``__new__`` (``Iface(client)`` gives
        the proxy type), and the nested stub-only ``Proxy`` class as callers see it."""
        assert node.interface is not None
        bases = [self.branded_ref(model.TypeBranded(s.id, s.brand))
                 for s in node.interface.superclasses]
        bases = [b for b in bases if b != "_t.Any"] or ["_Interface"]
        self.out(depth, f"class {name}({', '.join([*bases, *self.generic_base(node)])}):")
        doc = self.docs.get(node.id)
        body = depth + 1
        if doc:
            self.doc(body, doc[0])
        saved = self.shadowed, self.generic_scope
        self.shadowed = self.members(node)
        self.generic_scope = node.id
        for _ in self.nested(body, node):
            pass
        member_docs = doc[1] if doc else ()
        for m in node.interface.methods:
            for sid, is_results in ((m.paramStructType, False), (m.resultStructType, True)):
                s = self.by_id.get(sid)
                if s is not None and sid in self.method_structs:
                    self.struct(body, s, method_struct_name(m.name, is_results))
        proxy = self.proxy_ref(node.id)
        # The blocking client's proxies return values, not promises: untyped for now.
        self.out(body, "@_t.overload")
        self.out(body, "def __new__(_cara_cls, _cara_impl: _SyncClient, /) -> _t.Any: ...")
        self.out(body, "@_t.overload")
        self.out(body, f"def __new__(_cara_cls, _cara_impl: _CaraCastable, /) -> {proxy}: ...")
        self.out(body, "@_t.overload")
        self.out(body, "def __new__(_cara_cls, _cara_impl: _b.object, /) -> _te.Self: ...")
        self.out(body, "@_t.overload")
        self.out(body, "def __new__(_cara_cls) -> _te.Self: ...")
        for index, m in enumerate(node.interface.methods):
            args = ["_cara_self", *self.implementation_params(m)]
            result = self.implementation_result(m)
            self.out(body, f"def {method_attribute(m.name)}({', '.join(args)}) -> "
                           f"{result} | _Awaitable[{result}]: ...")
            if index < len(member_docs) and member_docs[index]:
                self.doc(body, member_docs[index])
        self.shadowed, self.generic_scope = saved
        self.proxy(body, node, name)

    def proxy(self, depth: int, node: model.Node, name: str) -> None:
        """``Iface.Proxy``: what ``Iface(client)`` returns and what a capability read from a
        struct or received as a parameter is; every method (own and inherited) sends a call
        and returns its promise at once."""
        assert node.interface is not None
        methods = self.all_methods(node)
        saved = self.shadowed, self.generic_scope
        # Generic parameters are Any here (a nested class cannot use the outer TypeVars).
        self.shadowed, self.generic_scope = {*methods, "close"}, None
        own = self.ref(node.id)  # generic parameters as Any
        supers = [self.proxy_ref(s.id) for s in node.interface.superclasses]
        supers = [s for s in supers if s != "_t.Any"]
        self.out(depth, f"class {self.proxy_attr(node)}({', '.join([own, *supers])}):")
        body = depth + 1
        self.doc(body, f"A capability of {name} as its callers hold it (exists only for "
                       "type checkers).")
        for owner, m in methods.values():
            self.out(body, f"def {method_attribute(m.name)}({self.caller_params(m)}) -> "
                           f"{self.promise_ref(owner, m)}: ...")
        if len(methods) == 1:
            ((owner, m),) = methods.values()
            self.out(body, f"def __call__({self.caller_params(m)}) -> "
                           f"{self.promise_ref(owner, m)}: ...")
        if "close" not in methods:
            self.out(body, "def close(_cara_self) -> None: ...")
        self.out(body, "async def __aenter__(_cara_self) -> _te.Self: ...")
        self.out(body, "async def __aexit__(_cara_self, *_cara_exc: _b.object) -> None: ...")
        for m in node.interface.methods:
            if m.resultStructType != STREAM_RESULT_ID:
                self.promises.append((node, m))
        self.shadowed, self.generic_scope = saved

    def all_methods(self, node: model.Node) -> dict[str, tuple[model.Node, model.Method]]:
        """Every method callable on ``node`` by attribute, own first, then the superclasses'
        breadth first (as :class:`cara.runtime.interface.InterfaceSchema` orders them)."""
        found: dict[str, tuple[model.Node, model.Method]] = {}
        queue, seen = [node], set()
        while queue:
            n = queue.pop(0)
            if n.id in seen or n.interface is None:
                continue
            seen.add(n.id)
            for m in n.interface.methods:
                found.setdefault(method_attribute(m.name), (n, m))
            queue.extend(self.by_id[s.id] for s in n.interface.superclasses if s.id in self.by_id)
        return found

    def proxy_attr(self, node: model.Node) -> str:
        return "Proxy_" if "Proxy" in self.members(node) else "Proxy"

    def proxy_ref(self, node_id: int) -> str:
        """How the stub names the proxy class of interface ``node_id``."""
        base = self.ref(node_id, bare=True)
        node = self.by_id.get(node_id)
        if base == "_t.Any" or node is None or node.which != "interface":
            return "_t.Any"
        return f"{base}.{self.proxy_attr(node)}"

    def streams(self) -> bool:
        """Whether an interface known here has a ``-> stream`` method."""
        return any(m.resultStructType == STREAM_RESULT_ID for n in self.by_id.values()
                   if n.interface is not None for m in n.interface.methods)

    def promise_ref(self, owner: model.Node, m: model.Method) -> str:
        """The module-level stub class of what calling ``m`` (of ``owner``) returns (for a
        ``-> stream`` method, a ``StreamCall``: awaiting it waits for the flow-control window)."""
        if m.resultStructType == STREAM_RESULT_ID:
            return "_StreamCall"
        name = "__".join(["_Promise", *(self.path_of(owner.id) or ["?"]),
                          method_attribute(m.name)])
        file_id = self.file_of(owner.id)
        if file_id is None or file_id == self.schema.file.id:
            return name
        alias = self.dep_alias.get(file_id)
        return "_t.Any" if alias is None else f"{alias}.{name}"

    def params_of(self, m: model.Method) -> tuple[model.Node | None, list[model.Field]]:
        """The declared struct a method takes whole (or None), and its implicit parameters."""
        params = self.by_id.get(m.paramStructType)
        if params is None or params.struct is None:
            return None, []
        if params.scopeId != 0:
            return params, []
        return None, sorted(params.struct.fields, key=lambda f: f.codeOrder)

    def implementation_params(self, m: model.Method) -> list[str]:
        """What an implementation receives: the values as read (a capability as its proxy),
        without defaults, so an implementation may declare them either way."""
        struct, fields = self.params_of(m)
        if struct is not None:  # ``m @0 SomeStruct``: the implementation receives it whole
            return [f"_cara_params: {self.ref(struct.id)}", "/"]
        return [f"{field_attribute(f.name)}: {self.field_read(f)}" for f in fields]

    def caller_params(self, m: model.Method) -> str:
        """What a caller passes: any value assignment converts, every one optional (an unset
        parameter is its default), and ``_timeout``."""
        struct, fields = self.params_of(m)
        args = ["_cara_self"]
        if struct is not None:  # the struct, or its fields as keywords
            args += [f"_cara_params: {self.ref(struct.id)} | _Mapping[_t.Any, _t.Any] = ...",
                     "/", "*"]
            assert struct.struct is not None
            fields = sorted(struct.struct.fields, key=lambda f: f.codeOrder)
        args += [f"{field_attribute(f.name)}: {self.field_write(f)} = ..." for f in fields]
        if struct is None:
            args.append("*")
        args.append("_timeout: _b.float | None = ...")
        return ", ".join(args)

    def implementation_result(self, m: model.Method) -> str:
        """What an implementation may return (see ``MethodSpec.box_results``): nothing, the
        single value, or for several results a tuple in field order, a mapping or the results
        struct; a declared results struct or a mapping. A ``-> stream`` method returns
        nothing."""
        if m.resultStructType == STREAM_RESULT_ID:
            return "None"
        results = self.by_id.get(m.resultStructType)
        if results is None or results.struct is None:
            return "_t.Any"
        if results.scopeId != 0:
            return f"{self.ref(results.id)} | _Mapping[_t.Any, _t.Any]"
        fields = results.struct.fields
        if not fields:
            return "None"
        if len(fields) == 1:
            return self.field_write(fields[0])
        values = ", ".join(self.field_write(f) for f in fields)
        return (f"{self.ref(results.id)} | _Mapping[_t.Any, _t.Any] | "
                f"{self.builtin('tuple')}[{values}]")

    def single_capability(self, results: model.Node) -> model.Field | None:
        """The only result when it is a capability (the promise then takes its methods)."""
        if results.scopeId != 0 or results.struct is None or len(results.struct.fields) != 1:
            return None
        f = results.struct.fields[0]
        if f.slot is not None and f.slot.type.which == "interface":
            return f
        return None

    # ------------------------------------------------------------------ promises

    def write_promises(self) -> None:
        """The module-level classes of call promises and pipelined struct fields."""
        saved = self.shadowed, self.generic_scope
        self.shadowed, self.generic_scope = set(), None
        for node, m in self.promises:
            self.out(0)
            self.promise(node, m)
        while self.pipelines_pending:
            node_id = self.pipelines_pending.pop(0)
            self.out(0)
            self.pipeline(node_id)
        self.shadowed, self.generic_scope = saved

    def promise(self, node: model.Node, m: model.Method) -> None:
        results = self.by_id.get(m.resultStructType)
        value = self.method_result(results)
        self.out(0, f"class {self.promise_ref(node, m)}(_CallPromise[{value}]):")
        self.doc(1, f"What calling {'.'.join(self.path_of(node.id) or [])}.{m.name}() "
                    "returns (exists only for type checkers).")
        if results is None or results.struct is None:
            return
        names = set(_future_names())
        fields = sorted(results.struct.fields, key=lambda f: f.codeOrder)
        single = self.single_capability(results)
        target = None
        if single is not None:
            assert single.slot is not None and single.slot.type.interface is not None
            target = self.by_id.get(single.slot.type.interface.typeId)
        methods = self.all_methods(target) if target is not None else {}
        self.shadowed = {field_attribute(f.name) for f in fields} | set(methods)
        for f in fields:
            attr = field_attribute(f.name)
            if attr in names:  # a Future method wins: promise["name"] reaches the field
                continue
            names.add(attr)
            self.out(1, "@_b.property")
            self.out(1, f"def {attr}(_cara_self) -> {self.pipelined(f)}: ...")
        if target is None or self.proxy_ref(target.id) == "_t.Any":
            return
        for attr, (owner, method) in methods.items():
            if attr not in names:
                self.out(1, f"def {attr}({self.caller_params(method)}) -> "
                            f"{self.promise_ref(owner, method)}: ...")

    def pipelined(self, f: model.Field) -> str:
        """A result field before the answer: a capability takes calls (its proxy), a struct
        or group goes deeper, anything else is awaited."""
        if f.which == "group" and f.group is not None:
            return self.pipeline_ref(f.group.typeId)
        assert f.slot is not None
        t = f.slot.type
        if t.which == "interface" and t.interface is not None:
            return self.proxy_ref(t.interface.typeId)
        if t.which == "struct" and t.struct is not None:
            return self.pipeline_ref(t.struct.typeId)
        return f"_Awaitable[{self.read_type(t)}]"

    def pipeline_ref(self, struct_id: int) -> str:
        name = self.pipelines.get(struct_id)
        if name is None:
            path = self.path_of(struct_id)
            file_id = self.file_of(struct_id)
            if path is None or file_id is None or self.by_id[struct_id].struct is None:
                return "_Awaitable[_t.Any]"
            prefix = [] if file_id == self.schema.file.id else [self.dep_alias.get(file_id, "?")]
            name = "__".join(["_Pipeline", *prefix, *path])
            self.pipelines[struct_id] = name
            self.pipelines_pending.append(struct_id)
        return name

    def pipeline(self, struct_id: int) -> None:
        node = self.by_id[struct_id]
        assert node.struct is not None
        value = self.ref(struct_id)
        self.out(0, f"class {self.pipelines[struct_id]}(_Awaitable[{value}]):")
        self.doc(1, f"A {'.'.join(self.path_of(struct_id) or [])} in an answer that has not "
                    "arrived (exists only for type checkers).")
        self.out(1, f"def __await__(_cara_self) -> _t.Generator[_t.Any, None, {value}]: ...")
        fields = sorted(node.struct.fields, key=lambda f: f.codeOrder)
        self.shadowed = {field_attribute(f.name) for f in fields}
        for f in fields:
            self.out(1, "@_b.property")
            self.out(1, f"def {field_attribute(f.name)}(_cara_self) -> {self.pipelined(f)}: ...")

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
            return self.field_read(fields[0])
        return self.ref(results.id)


def _mentions_interface(t: model.Type) -> bool:
    while t.which == "list" and t.list is not None:
        t = t.list.elementType
    return t.which == "interface"


def _future_names() -> list[str]:
    """Attributes of every promise (a Future's methods): a result field of such a name is
    reached with ``promise["name"]``."""
    import asyncio

    return [n for n in dir(asyncio.Future) if not n.startswith("_")]


def stub_source(schema: SchemaFile) -> str:
    """The text of ``x_capnp.pyi`` for one schema file."""
    return _StubWriter(schema).write()
