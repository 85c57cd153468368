"""A plain-Python model of ``schema.capnp``: the nodes a ``CodeGeneratorRequest`` carries.

Every later layer of cara (runtime classes, code generation, both wire formats, RPC method
tables) is driven by these objects, so they mirror ``/capnp/schema.capnp`` exactly:

* each schema struct is a dataclass whose attribute names are the schema's field names
  (``displayName``, ``scopeId``, ``discriminantValue`` ...), so a generic, schema-driven codec can
  walk them with ``getattr`` and the tests can compare them field by field with what pycapnp
  decodes from ``capnp compile -o-``;
* a group (``Node.struct``, ``Field.slot``, ``Type.list`` ...) is a nested dataclass;
* a union is a ``which`` attribute naming the active member, plus one attribute per member that
  holds the member's value (``None`` for a ``Void`` member or an inactive one). Named unions
  (``Field.ordinal``, ``Type.anyPointer``) are groups, i.e. nested dataclasses with their own
  ``which``.

Defaults follow the schema: an unset scalar is 0/False/"" and an unset struct pointer is an empty
instance (``Brand()``), which is what a Cap'n Proto reader reports for a null pointer.

``Value``'s pointer members (``list``, ``struct``, ``anyPointer``) hold a :class:`PointerValue`: a
plain Python value together with the schema type that says how to encode it. The binary codec
turns it into words; nothing in this module knows about the wire.
"""

from __future__ import annotations

from cara.schema._record import field, record

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

Id = int
NO_DISCRIMINANT = 0xFFFF
# Annotations are strings (``from __future__ import annotations``), and ``Literal`` exists only
# for type checkers: ``typing.get_type_hints`` needs ``localns={"Literal": typing.Literal}``.
# `Value` has members named `bool` and `list`; annotations inside it that name those types would
# resolve to the members on Python 3.10 (typing.get_type_hints), so they use these aliases.
_Bool = bool

__all__ = [
    "NO_DISCRIMINANT",
    "Annotation",
    "AnyPointerImplicitParameter",
    "AnyPointerParameter",
    "AnyPointerType",
    "AnyPointerUnconstrained",
    "Brand",
    "BrandBinding",
    "BrandScope",
    "CapnpVersion",
    "CodeGeneratorRequest",
    "ElementSize",
    "Enumerant",
    "Field",
    "FieldGroup",
    "FieldOrdinal",
    "FieldSlot",
    "Id",
    "Method",
    "NestedNode",
    "Node",
    "NodeAnnotation",
    "NodeConst",
    "NodeEnum",
    "NodeInterface",
    "NodeStruct",
    "Parameter",
    "PointerValue",
    "RequestedFile",
    "RequestedFileImport",
    "SourceInfo",
    "SourceInfoMember",
    "Superclass",
    "Type",
    "TypeBranded",
    "TypeList",
    "Value",
]


class ElementSize:
    """The ``ElementSize`` enum of schema.capnp, as plain ints."""

    empty = 0
    bit = 1
    byte = 2
    twoBytes = 3
    fourBytes = 4
    eightBytes = 5
    pointer = 6
    inlineComposite = 7


# --------------------------------------------------------------------------------------- brands


@record
class BrandBinding:
    """``Brand.Binding``: a union of ``unbound`` (Void) and ``type``."""

    which: Literal["unbound", "type"] = "unbound"
    type: Type | None = None


@record
class BrandScope:
    """``Brand.Scope``: bindings for one generic scope, or ``inherit`` from the enclosing brand."""

    scopeId: Id = 0
    which: Literal["bind", "inherit"] = "bind"
    bind: list[BrandBinding] | None = None


@record
class Brand:
    """``Brand``: the generic bindings of a type, scope by scope."""

    scopes: list[BrandScope] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- types

if TYPE_CHECKING:
    TypeWhich = Literal[
        "void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float32", "float64", "text", "data", "list", "enum", "struct", "interface", "anyPointer",
    ]
else:  # typing is not imported at run time: the names are plain strings
    TypeWhich = str


@record
class TypeList:
    """The ``Type.list`` group."""

    elementType: Type = field(default_factory=lambda: Type())


@record
class TypeBranded:
    """The ``Type.enum`` / ``Type.struct`` / ``Type.interface`` groups."""

    typeId: Id = 0
    brand: Brand = field(default_factory=Brand)


@record
class AnyPointerUnconstrained:
    """``Type.anyPointer.unconstrained``: ``anyKind`` (AnyPointer), ``struct`` (AnyStruct),
    ``list`` (AnyList) or ``capability`` (Capability)."""

    which: Literal["anyKind", "struct", "list", "capability"] = "anyKind"


@record
class AnyPointerParameter:
    """``Type.anyPointer.parameter``: the ``parameterIndex``-th generic parameter of ``scopeId``."""

    scopeId: Id = 0
    parameterIndex: int = 0


@record
class AnyPointerImplicitParameter:
    """``Type.anyPointer.implicitMethodParameter``."""

    parameterIndex: int = 0


@record
class AnyPointerType:
    """The ``Type.anyPointer`` named union."""

    which: Literal["unconstrained", "parameter", "implicitMethodParameter"] = "unconstrained"
    unconstrained: AnyPointerUnconstrained | None = None
    parameter: AnyPointerParameter | None = None
    implicitMethodParameter: AnyPointerImplicitParameter | None = None


@record
class Type:
    """``Type``: a union; the primitive members are Void, the others are groups."""

    which: TypeWhich = "void"
    list: TypeList | None = None
    enum: TypeBranded | None = None
    struct: TypeBranded | None = None
    interface: TypeBranded | None = None
    anyPointer: AnyPointerType | None = None


# --------------------------------------------------------------------------------------- values


@record
class PointerValue:
    """The content of an ``AnyPointer`` member of :class:`Value`.

    ``type`` says how ``value`` is encoded: a struct value is a ``dict`` from field name to value
    (groups and named unions nest as dicts, only the set union member is present), a list is a
    Python ``list``, Text is ``str``, Data is ``bytes``, an enum is its ``int``, and ``None`` is
    a null pointer.
    """

    type: Type
    value: object = None


#: ``Value``'s union members: the same names as ``Type``'s.
ValueWhich = TypeWhich


@record
class Value:
    """``Value``: a union. Scalar members hold Python scalars; ``text`` is ``str``, ``data`` is
    ``bytes``, ``enum`` is the enumerant's ordinal, and ``list``/``struct``/``anyPointer`` hold a
    :class:`PointerValue` (or ``None`` for a null pointer)."""

    which: ValueWhich = "void"
    bool: _Bool = False
    int8: int = 0
    int16: int = 0
    int32: int = 0
    int64: int = 0
    uint8: int = 0
    uint16: int = 0
    uint32: int = 0
    uint64: int = 0
    float32: float = 0.0
    float64: float = 0.0
    text: str | None = None
    data: bytes | None = None
    list: PointerValue | None = None
    enum: int = 0
    struct: PointerValue | None = None
    anyPointer: PointerValue | None = None


@record
class Annotation:
    """``Annotation``: an annotation applied to a declaration."""

    id: Id = 0
    brand: Brand = field(default_factory=Brand)
    value: Value = field(default_factory=Value)


# --------------------------------------------------------------------------------------- fields


@record
class FieldSlot:
    """``Field.slot``: a field stored in the struct; ``offset`` is in units of the field's size."""

    offset: int = 0
    type: Type = field(default_factory=Type)
    defaultValue: Value = field(default_factory=Value)
    hadExplicitDefault: bool = False


@record
class FieldGroup:
    """``Field.group``: a group or named union, whose fields live in node ``typeId``."""

    typeId: Id = 0


@record
class FieldOrdinal:
    """The ``Field.ordinal`` named union: ``implicit`` (groups, unions) or ``explicit`` (``@N``)."""

    which: Literal["implicit", "explicit"] = "implicit"
    explicit: int = 0


@record
class Field:
    """``Field``: a member of a struct (a slot or a group)."""

    name: str = ""
    codeOrder: int = 0
    annotations: list[Annotation] = field(default_factory=list)
    discriminantValue: int = NO_DISCRIMINANT
    which: Literal["slot", "group"] = "slot"
    slot: FieldSlot | None = None
    group: FieldGroup | None = None
    ordinal: FieldOrdinal = field(default_factory=FieldOrdinal)


@record
class Enumerant:
    """``Enumerant``: one value of an enum."""

    name: str = ""
    codeOrder: int = 0
    annotations: list[Annotation] = field(default_factory=list)


@record
class Superclass:
    """``Superclass``: an interface this interface extends."""

    id: Id = 0
    brand: Brand = field(default_factory=Brand)


@record
class Parameter:
    """``Node.Parameter``: a generic parameter's name."""

    name: str = ""


@record
class Method:
    """``Method``: one method of an interface."""

    name: str = ""
    codeOrder: int = 0
    implicitParameters: list[Parameter] = field(default_factory=list)
    paramStructType: Id = 0
    paramBrand: Brand = field(default_factory=Brand)
    resultStructType: Id = 0
    resultBrand: Brand = field(default_factory=Brand)
    annotations: list[Annotation] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- nodes


@record
class NestedNode:
    """``Node.NestedNode``: a declaration nested in a scope."""

    name: str = ""
    id: Id = 0


@record
class NodeStruct:
    """``Node.struct``: a struct's layout and fields."""

    dataWordCount: int = 0
    pointerCount: int = 0
    preferredListEncoding: int = ElementSize.empty
    isGroup: bool = False
    discriminantCount: int = 0
    discriminantOffset: int = 0
    fields: list[Field] = field(default_factory=list)


@record
class NodeEnum:
    """``Node.enum``: an enum's enumerants."""

    enumerants: list[Enumerant] = field(default_factory=list)


@record
class NodeInterface:
    """``Node.interface``: an interface's methods and superclasses."""

    methods: list[Method] = field(default_factory=list)
    superclasses: list[Superclass] = field(default_factory=list)


@record
class NodeConst:
    """``Node.const``: a constant's type and value."""

    type: Type = field(default_factory=Type)
    value: Value = field(default_factory=Value)


@record
class NodeAnnotation:
    """``Node.annotation``: an annotation's type and targets."""

    type: Type = field(default_factory=Type)
    targetsFile: bool = False
    targetsConst: bool = False
    targetsEnum: bool = False
    targetsEnumerant: bool = False
    targetsStruct: bool = False
    targetsField: bool = False
    targetsUnion: bool = False
    targetsGroup: bool = False
    targetsInterface: bool = False
    targetsMethod: bool = False
    targetsParam: bool = False
    targetsAnnotation: bool = False


if TYPE_CHECKING:
    NodeWhich = Literal["file", "struct", "enum", "interface", "const", "annotation"]
else:  # typing is not imported at run time: the names are plain strings
    NodeWhich = str


@record
class Node:
    """``Node``: one declaration (file, struct, enum, interface, const, annotation)."""

    id: Id = 0
    displayName: str = ""
    displayNamePrefixLength: int = 0
    scopeId: Id = 0
    parameters: list[Parameter] = field(default_factory=list)
    isGeneric: bool = False
    nestedNodes: list[NestedNode] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    which: NodeWhich = "file"
    struct: NodeStruct | None = None
    enum: NodeEnum | None = None
    interface: NodeInterface | None = None
    const: NodeConst | None = None
    annotation: NodeAnnotation | None = None

    @property
    def shortName(self) -> str:
        """The declaration's own name: ``displayName`` after ``displayNamePrefixLength``."""
        return self.displayName[self.displayNamePrefixLength:]


@record
class SourceInfoMember:
    """``Node.SourceInfo.Member``: a member's doc comment."""

    docComment: str = ""


@record
class SourceInfo:
    """``Node.SourceInfo``: doc comments of a node and of its members (fields, enumerants,
    methods) in code order."""

    id: Id = 0
    docComment: str = ""
    members: list[SourceInfoMember] = field(default_factory=list)


@record
class RequestedFileImport:
    """``CodeGeneratorRequest.RequestedFile.Import``."""

    id: Id = 0
    name: str = ""


@record
class RequestedFile:
    """``CodeGeneratorRequest.RequestedFile``: a file to generate code for."""

    id: Id = 0
    filename: str = ""
    imports: list[RequestedFileImport] = field(default_factory=list)


@record
class CapnpVersion:
    """``CapnpVersion``: the compiler version a request comes from."""

    major: int = 0
    minor: int = 0
    micro: int = 0


@record
class CodeGeneratorRequest:
    """What the compiler produces and every ``capnpc-*`` plugin consumes."""

    capnpVersion: CapnpVersion = field(default_factory=CapnpVersion)
    nodes: list[Node] = field(default_factory=list)
    sourceInfo: list[SourceInfo] = field(default_factory=list)
    requestedFiles: list[RequestedFile] = field(default_factory=list)

    def node(self, node_id: Id) -> Node:
        """The node with id ``node_id`` (KeyError if the request does not carry it)."""
        for candidate in self.nodes:
            if candidate.id == node_id:
                return candidate
        raise KeyError(f"no node @0x{node_id:016x} in this request")

    def nodes_by_id(self) -> dict[Id, Node]:
        return {n.id: n for n in self.nodes}
