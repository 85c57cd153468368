"""cara.runtime: the Python classes built from schema nodes.

* :class:`Struct` — ``dict`` subclasses keyed by field number (:mod:`.struct`);
* :class:`List` — typed ``list`` subclasses, ``List[Int32]`` (:mod:`.list`);
* :class:`Enum` — ``IntEnum`` subclasses (:mod:`.enum`);
* :class:`Interface` — local implementations and proxies (:mod:`.interface`);
* the builtin type descriptors ``Int32``, ``Text``, ... (:mod:`.types`);
* :func:`build_module` / :class:`SchemaBuilder` — nodes to classes (:mod:`.build`);
* ``GlobalTypeRegistry`` — classes annotated ``$Cara.registerGlobally`` (:mod:`.registry`).
"""

from __future__ import annotations

from cara.runtime.build import (
    AnnotationDecl,
    AnnotationValue,
    SchemaBuilder,
    build_module,
    load_request,
)
from cara.runtime.enum import Enum
from cara.runtime.interface import Interface, InterfaceSchema, MethodSpec, find_capabilities
from cara.runtime.list import List, list_class
from cara.runtime.registry import GlobalTypeRegistry
from cara.runtime.struct import FieldSpec, Struct, StructSchema, UnionMemberError
from cara.runtime.types import (
    ANY_LIST,
    ANY_POINTER,
    ANY_STRUCT,
    BOOL,
    CAPABILITY,
    DATA,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT64,
    TEXT,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    VOID,
    TypeDesc,
)

#: The builtin types under their schema names, for ``S[Text]``, ``List[Int32]``, ReplaceTypes.
Void, Bool, Int8, Int16, Int32, Int64 = VOID, BOOL, INT8, INT16, INT32, INT64
UInt8, UInt16, UInt32, UInt64, Float32, Float64 = UINT8, UINT16, UINT32, UINT64, FLOAT32, FLOAT64
Text, Data, AnyPointer, AnyStruct, AnyList, Capability = (
    TEXT, DATA, ANY_POINTER, ANY_STRUCT, ANY_LIST, CAPABILITY)

__all__ = [
    "AnnotationDecl", "AnnotationValue", "AnyList", "AnyPointer", "AnyStruct", "Bool",
    "Capability", "Data", "Enum", "FieldSpec", "Float32", "Float64", "GlobalTypeRegistry",
    "Int8", "Int16", "Int32", "Int64", "Interface", "InterfaceSchema", "List", "MethodSpec",
    "SchemaBuilder", "Struct", "StructSchema", "Text", "TypeDesc", "UInt8", "UInt16", "UInt32",
    "UInt64", "UnionMemberError", "Void", "build_module", "find_capabilities", "list_class",
    "load_request",
]
