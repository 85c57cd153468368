"""Generic brands: which type arguments are bound to which generic scopes.

A name in a schema is resolved relative to a chain of scopes (``Outer(A).Inner(B)`` binds ``A``
to Outer's parameters and ``B`` to Inner's). The result of resolving a type expression is a
:class:`BrandedDecl`: the declaration plus a :class:`BrandScope` chain. Turning that chain into
a ``schema.capnp`` ``Brand`` follows capnp's rules exactly, because the brand is part of every
type in the request and must be bit-identical:

* every scope level that has arguments is written as ``bind``;
* a level of the declaration currently being compiled whose parameters are still open is written
  as ``inherit`` (only when that level actually has parameters);
* all other levels are left out, and no brand at all is written when nothing is left.
"""

from __future__ import annotations

from collections.abc import Callable

from cara.schema import model
from cara.schema._record import field, record
from cara.schema.ast import Expression, Located

__all__ = [
    "BrandScope",
    "BrandedDecl",
    "DeclEnvironment",
    "ResolvedDecl",
    "ResolvedParameter",
    "decompile_type",
    "evaluate_brand",
    "expression_string",
    "substitute",
]

_TYPE_KINDS = frozenset({"struct", "enum", "interface"})

ErrorAt = Callable[[Expression | None, str], None]


@record(eq=False)
class ResolvedDecl:
    """A declaration a name resolved to. ``scope_id`` is the id of its parent scope (0 for
    files and built-ins); ``kind`` is a declaration kind or ``builtin:<Name>``; ``target`` is
    the compiler's node object (None for built-ins). ``brand`` is set when the name went
    through a ``using`` alias that fixed some brand bindings."""

    id: int
    param_count: int
    scope_id: int
    kind: str
    target: object = None
    brand: model.Brand | None = None


@record(eq=False)
class ResolvedParameter:
    """A generic parameter: the ``index``-th of scope ``id`` (``id == 0``: a method's implicit
    parameter)."""

    id: int
    index: int


@record(eq=False)
class BrandScope:
    """One level of brand bindings; ``parent`` is the enclosing level (None at the top)."""

    leaf_id: int
    leaf_param_count: int = 0
    inherited: bool = False
    params: list[BrandedDecl] = field(default_factory=list)
    parent: BrandScope | None = None

    def is_generic(self) -> bool:
        scope: BrandScope | None = self
        while scope is not None:
            if scope.leaf_param_count > 0:
                return True
            scope = scope.parent
        return False

    def push(self, type_id: int, param_count: int) -> BrandScope:
        return BrandScope(type_id, param_count, False, [], self)

    def pop(self, new_leaf_id: int) -> BrandScope:
        scope: BrandScope | None = self
        while scope is not None:
            if scope.leaf_id == new_leaf_id:
                return scope
            scope = scope.parent
        return BrandScope(new_leaf_id)

    def with_params(self, params: list[BrandedDecl]) -> BrandScope:
        return BrandScope(self.leaf_id, self.leaf_param_count, False, params, self.parent)

    def lookup_parameter(self, scope_id: int, index: int) -> BrandedDecl | None:
        """The argument bound to a parameter, None if it is inherited (still open)."""
        scope: BrandScope | None = self
        while scope is not None:
            if scope.leaf_id == scope_id:
                if index < len(scope.params):
                    return scope.params[index]
                if scope.inherited:
                    return None
                return any_pointer()
            scope = scope.parent
        return None

    def get_params(self, scope_id: int) -> list[BrandedDecl] | None:
        scope: BrandScope | None = self
        while scope is not None:
            if scope.leaf_id == scope_id:
                return None if scope.inherited else scope.params
            scope = scope.parent
        return None

    def compile(self, error: ErrorAt) -> model.Brand:
        levels = []
        scope: BrandScope | None = self
        while scope is not None:
            if scope.params or (scope.inherited and scope.leaf_param_count > 0):
                levels.append(scope)
            scope = scope.parent
        brand = model.Brand()
        for level in levels:
            if level.inherited:
                brand.scopes.append(model.BrandScope(level.leaf_id, "inherit"))
            else:
                bindings = []
                for param in level.params:
                    type_ = param.compile_as_type(error)
                    bindings.append(model.BrandBinding("type", type_ or model.Type()))
                brand.scopes.append(model.BrandScope(level.leaf_id, "bind", bindings))
        return brand


_BUILTIN_TYPES = {
    "Void": "void", "Bool": "bool", "Int8": "int8", "Int16": "int16", "Int32": "int32",
    "Int64": "int64", "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32",
    "UInt64": "uint64", "Float32": "float32", "Float64": "float64", "Text": "text",
    "Data": "data",
}
_ANY = {"AnyPointer": "anyKind", "AnyStruct": "struct", "AnyList": "list",
        "Capability": "capability", "Object": "anyKind"}
POINTER_KINDS = frozenset({"builtin:List", "builtin:Text", "builtin:Data", "builtin:AnyPointer",
                           "struct", "interface"})


def builtin_decl(name: str) -> ResolvedDecl:
    return ResolvedDecl(0, 1 if name == "List" else 0, 0, f"builtin:{name}")


def any_pointer() -> BrandedDecl:
    return BrandedDecl(builtin_decl("AnyPointer"), BrandScope(0), None)


@record(eq=False)
class BrandedDecl:
    """A resolved name together with its brand bindings and the expression that named it."""

    body: ResolvedDecl | ResolvedParameter
    brand: BrandScope | None
    source: Expression | None

    @property
    def kind(self) -> str | None:
        return self.body.kind if isinstance(self.body, ResolvedDecl) else None

    def apply_params(self, params: list[BrandedDecl], source: Expression,
                     error: ErrorAt) -> BrandedDecl | None:
        if not isinstance(self.body, ResolvedDecl) or self.brand is None:
            return None
        scope = self.brand
        if scope.params:
            error(source, "Double-application of generic parameters.")
            return None
        if len(params) > scope.leaf_param_count:
            if scope.leaf_param_count == 0:
                error(source, "Declaration does not accept generic parameters.")
            else:
                error(source, "Too many generic parameters.")
            return None
        if len(params) < scope.leaf_param_count:
            error(source, "Not enough generic parameters.")
            return None
        if self.body.kind != "builtin:List":
            for param in params:
                kind = param.kind
                if kind is not None and kind not in POINTER_KINDS:
                    error(param.source,
                          "Sorry, only pointer types can be used as generic parameters.")
        return BrandedDecl(self.body, scope.with_params(params), source)

    def list_param(self) -> BrandedDecl | None:
        assert self.brand is not None and isinstance(self.body, ResolvedDecl)
        params = self.brand.get_params(self.body.id)
        if params is None or len(params) != 1:
            return None
        return params[0]

    def brand_of(self, error: ErrorAt) -> model.Brand:
        assert self.brand is not None
        return self.brand.compile(error)

    def compile_as_type(self, error: ErrorAt) -> model.Type | None:
        body = self.body
        if isinstance(body, ResolvedParameter):
            if body.id == 0:
                return model.Type("anyPointer", anyPointer=model.AnyPointerType(
                    "implicitMethodParameter",
                    implicitMethodParameter=model.AnyPointerImplicitParameter(body.index)))
            return model.Type("anyPointer", anyPointer=model.AnyPointerType(
                "parameter", parameter=model.AnyPointerParameter(body.id, body.index)))
        kind = body.kind
        if kind in ("struct", "enum", "interface"):
            branded = model.TypeBranded(body.id, self.brand_of(error))
            return model.Type(kind, **{kind: branded})  # type: ignore[arg-type]
        if kind == "builtin:List":
            param = self.list_param()
            if param is None:
                error(self.source, "'List' requires exactly one parameter.")
                return None
            element = param.compile_as_type(error)
            if element is None:
                return None
            if element.which == "anyPointer" and element.anyPointer is not None:
                which = _unconstrained_kind_as_capnp_reads_it(element.anyPointer)
                if which == "anyKind":
                    error(self.source, "'List(AnyPointer)' is not supported.")
                    return None
                if which == "struct":
                    error(self.source, "'List(AnyStruct)' is not supported.")
                    return None
            return model.Type("list", list=model.TypeList(element))
        if kind.startswith("builtin:"):
            name = kind[len("builtin:"):]
            if name in _BUILTIN_TYPES:
                return model.Type(_BUILTIN_TYPES[name])  # type: ignore[arg-type]
            if name == "Object":
                error(self.source,
                      "As of Cap'n Proto 0.4, 'Object' has been renamed to 'AnyPointer'.  Sorry "
                      "for the inconvenience, and thanks for being an early adopter.  :)")
            return model.Type("anyPointer", anyPointer=model.AnyPointerType(
                "unconstrained", unconstrained=model.AnyPointerUnconstrained(
                    _ANY[name])))  # type: ignore[arg-type]
        error(self.source, f"'{expression_string(self.source)}' is not a type.")
        return None


def _unconstrained_kind_as_capnp_reads_it(ap: model.AnyPointerType) -> str:
    """capnp 0.9.2 checks ``List(...)`` elements by reading ``anyPointer.unconstrained`` even
    when the element is a generic parameter; that union tag shares its bits with
    ``parameterIndex``, so parameter 0 reads as AnyPointer and parameter 1 as AnyStruct."""
    if ap.which == "unconstrained":
        return ap.unconstrained.which if ap.unconstrained is not None else "anyKind"
    if ap.which == "parameter" and ap.parameter is not None:
        index = ap.parameter.parameterIndex
    elif ap.implicitMethodParameter is not None:
        index = ap.implicitMethodParameter.parameterIndex
    else:
        index = 0
    return {0: "anyKind", 1: "struct", 2: "list", 3: "capability"}.get(index, "unknown")


def expression_string(expr: Expression | None) -> str:
    """An expression written back as text, the way capnp quotes names in messages."""
    if expr is None:
        return ""
    kind = expr.kind
    text = str(expr.value.value) if isinstance(expr.value, Located) else ""
    if kind == "relativeName":
        return text
    if kind == "absoluteName":
        return "." + text
    if kind == "import":
        return f'import "{text}"'
    if kind == "embed":
        return f'embed "{text}"'
    if kind == "member":
        assert expr.name is not None
        return f"{expression_string(expr.parent)}.{expr.name.value}"
    if kind == "application":
        # capnp's own (odd) spelling: "G(( Text, Data ))".
        args = ", ".join(_param_string(p) for p in expr.params)
        return f"{expression_string(expr.function)}(( {args} ))"
    if kind == "positiveInt":
        return str(expr.value)
    if kind == "negativeInt":
        return f"-{expr.value}"
    if kind == "float":
        return repr(expr.value)
    if kind == "string":
        return '"' + str(expr.value) + '"'
    if kind == "list":
        return "[" + ", ".join(expression_string(e) for e in expr.elements) + "]"
    if kind == "tuple":
        return "(" + ", ".join(_param_string(p) for p in expr.params) + ")"
    return "<expr>"


def _param_string(param: object) -> str:
    from cara.schema.ast import Param
    assert isinstance(param, Param)
    if param.name is not None:
        return f"{param.name.value} = {expression_string(param.value)}"
    return expression_string(param.value)


class DeclEnvironment:
    """What brand evaluation needs to know about declarations by id (the compiler provides it)."""

    def parent_decl(self, decl: ResolvedDecl) -> ResolvedDecl | None:
        raise NotImplementedError

    def decl_for_id(self, type_id: int) -> ResolvedDecl:
        raise NotImplementedError


def evaluate_brand(scope: BrandScope, decl: ResolvedDecl, scopes: list[model.BrandScope],
                   env: DeclEnvironment, index: int = 0) -> BrandScope:
    """Rebuild brand scopes from a compiled ``Brand`` (a ``using`` alias's target), relative to
    ``scope``, the scope the alias is used from."""
    result = BrandScope(decl.id, decl.param_count)
    if index < len(scopes):
        next_scope = scopes[index]
        if next_scope.scopeId == decl.id:
            if next_scope.which == "bind":
                params = []
                for binding in next_scope.bind or []:
                    if binding.which == "unbound" or binding.type is None:
                        params.append(any_pointer())
                    else:
                        params.append(decompile_type(scope, binding.type, env))
                result.params = params
            else:
                inherited = scope.get_params(decl.id)
                if inherited is not None:
                    result.params = list(inherited)
                else:
                    result.inherited = True
            index += 1
    parent = env.parent_decl(decl)
    if parent is not None:
        result.parent = evaluate_brand(scope, parent, scopes, env, index)
    return result


def decompile_type(scope: BrandScope, type_: model.Type, env: DeclEnvironment) -> BrandedDecl:
    """A compiled type turned back into a branded declaration."""
    which = type_.which
    for name, w in _BUILTIN_TYPES.items():
        if w == which:
            return BrandedDecl(builtin_decl(name), BrandScope(0), None)
    if which in ("struct", "enum", "interface"):
        branded: model.TypeBranded = getattr(type_, which)
        decl = env.decl_for_id(branded.typeId)
        return BrandedDecl(decl, evaluate_brand(scope, decl, branded.brand.scopes, env), None)
    if which == "list":
        assert type_.list is not None
        element = decompile_type(scope, type_.list.elementType, env)
        list_decl = builtin_decl("List")
        return BrandedDecl(list_decl, BrandScope(0, 1, False, [element]), None)
    assert type_.anyPointer is not None
    ap = type_.anyPointer
    if ap.which == "parameter" and ap.parameter is not None:
        bound = scope.lookup_parameter(ap.parameter.scopeId, ap.parameter.parameterIndex)
        if bound is not None:
            return bound
        return BrandedDecl(ResolvedParameter(ap.parameter.scopeId, ap.parameter.parameterIndex),
                           None, None)
    if ap.which == "implicitMethodParameter" and ap.implicitMethodParameter is not None:
        return BrandedDecl(ResolvedParameter(0, ap.implicitMethodParameter.parameterIndex),
                           None, None)
    name = {"anyKind": "AnyPointer", "struct": "AnyStruct", "list": "AnyList",
            "capability": "Capability"}[ap.unconstrained.which if ap.unconstrained else "anyKind"]
    return BrandedDecl(builtin_decl(name), BrandScope(0), None)


def substitute(type_: model.Type, brand: model.Brand) -> model.Type:
    """``type_`` with the generic parameters bound by ``brand`` replaced by their arguments."""
    which = type_.which
    if which == "anyPointer" and type_.anyPointer is not None and \
            type_.anyPointer.which == "parameter" and type_.anyPointer.parameter is not None:
        param = type_.anyPointer.parameter
        for scope in brand.scopes:
            if scope.scopeId == param.scopeId:
                if scope.which == "inherit":
                    return type_
                bindings = scope.bind or []
                if param.parameterIndex < len(bindings):
                    binding = bindings[param.parameterIndex]
                    if binding.which == "type" and binding.type is not None:
                        return binding.type
                break
        return model.Type("anyPointer", anyPointer=model.AnyPointerType(
            "unconstrained", unconstrained=model.AnyPointerUnconstrained("anyKind")))
    if which == "list" and type_.list is not None:
        return model.Type("list", list=model.TypeList(substitute(type_.list.elementType, brand)))
    if which in _TYPE_KINDS:
        branded: model.TypeBranded = getattr(type_, which)
        if not branded.brand.scopes:
            return type_
        scopes = []
        for scope in branded.brand.scopes:
            if scope.which == "inherit":
                outer = next((o for o in brand.scopes if o.scopeId == scope.scopeId), None)
                scopes.append(outer if outer is not None else scope)
            else:
                scopes.append(model.BrandScope(scope.scopeId, "bind", [
                    model.BrandBinding("type", substitute(b.type, brand))
                    if b.which == "type" and b.type is not None else b
                    for b in scope.bind or []]))
        return model.Type(which, **{which: model.TypeBranded(  # type: ignore[arg-type]
            branded.typeId, model.Brand(scopes))})
    return type_
