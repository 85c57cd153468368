"""Translating one declaration into its schema nodes: capnp's ``NodeTranslator``.

A struct becomes its node plus one node per group and named union; an interface its node plus
the ``m$Params``/``m$Results`` structs of its methods; enums, constants and annotation
declarations one node each. The order in which problems are found follows capnp's, so that the
diagnostics come out in the same order: member names first, then layout problems, then field
types and primitive defaults in ordinal order, then annotations; struct, list and AnyPointer
values are deferred until the node is finished.
"""

from __future__ import annotations

from cara.schema import ast, ids, layout, model
from cara.schema._record import field_names, record
from cara.schema.ast import Declaration, Expression, Located
from cara.schema.brands import ResolvedDecl, expression_string, substitute
from cara.schema.declarations import (
    CompilerServices,
    DeclNode,
    ImplicitParams,
    RecursiveDependency,
)
from cara.schema.values import FieldShape, StructShape, default_value

__all__ = ["TARGET_OF_KIND", "NodeTranslator", "assign_value"]

_TYPE_KINDS = frozenset({"struct", "enum", "interface"})

@record(eq=False)
class MemberInfo:
    """A struct member (field, group or union) during translation."""

    decl: Declaration
    member: layout.Member
    ordinal: int = 0
    type: model.Type | None = None
    scope_node: DeclNode | None = None


TARGET_OF_KIND = {
    "file": "targetsFile", "struct": "targetsStruct", "field": "targetsField",
    "union": "targetsUnion", "group": "targetsGroup", "enum": "targetsEnum",
    "enumerant": "targetsEnumerant", "interface": "targetsInterface", "method": "targetsMethod",
    "param": "targetsParam", "annotation": "targetsAnnotation", "const": "targetsConst",
}


class NodeTranslator:
    """Turns one declaration into its schema node(s): capnp's NodeTranslator."""

    def __init__(self, compiler: CompilerServices, node: DeclNode) -> None:
        self.c = compiler
        self.node = node
        self.text = node.file.text
        self.diag = compiler.diag

    def error(self, start: int, end: int, message: str) -> None:
        self.diag.error(self.text, start, end, message)

    def error_on(self, item: Expression | Located | Declaration, message: str) -> None:
        self.diag.error(self.text, item.start, item.end, message)

    def translate(self) -> None:
        node = self.node
        decl = node.decl
        out = model.Node(
            id=node.id, displayName=node.display_name, displayNamePrefixLength=node.prefix_len,
            scopeId=node.parent.id if node.parent is not None else 0,
            parameters=[model.Parameter(p) for p in node.params],
            isGeneric=node.is_generic(),
            nestedNodes=[model.NestedNode(child.display_name[child.prefix_len:], child.id)
                         for child in node.ordered],
            which=node.kind,  # type: ignore[arg-type]
        )
        node.model = out
        doc = decl.doc or ""
        if node.kind == "file":
            # A file's doc comment is the one following its "@0x...;" line.
            doc = next((d.doc or "" for d in decl.nested if d.kind == "nakedId"), "")
        info = model.SourceInfo(node.id, doc)
        node.source_info.append(info)
        kind = node.kind
        if kind == "file":
            self._check_names(decl.nested, {}, [None])
            annotations = [d.annotation for d in decl.nested
                           if d.kind == "nakedAnnotation" and d.annotation is not None]
            out.annotations = self.annotations(annotations, "file")
        elif kind == "struct":
            out.struct = model.NodeStruct()
            self._check_names(decl.nested, {}, [None])
            self.struct(out, decl.nested, info, ImplicitParams(), is_param_list=False)
            out.annotations = self.annotations(decl.annotations, "struct")
        elif kind == "enum":
            self._check_names(decl.nested, {}, [None])
            out.enum = model.NodeEnum()
            self.enum(out.enum, decl, info)
            out.annotations = self.annotations(decl.annotations, "enum")
        elif kind == "interface":
            self._check_names(decl.nested, {}, [None])
            out.interface = model.NodeInterface()
            self.interface(out, decl, info)
            out.annotations = self.annotations(decl.annotations, "interface")
        elif kind == "const":
            assert decl.type is not None and decl.value is not None
            compiled = self.c.compile_type(decl.type, node)
            type_ = compiled or model.Type()
            value = default_value(type_)
            out.const = model.NodeConst(type_, value)
            if compiled is not None:
                # As capnp: a type that did not compile was reported; its value is not checked.
                self.compile_bootstrap_value(decl.value, type_, value)
            out.annotations = self.annotations(decl.annotations, "const")
        elif kind == "annotation":
            assert decl.type is not None
            type_ = self.c.compile_type(decl.type, node) or model.Type()
            out.annotation = model.NodeAnnotation(type_)
            for target in decl.targets:
                setattr(out.annotation, TARGET_OF_KIND[target], True)
            out.annotations = self.annotations(decl.annotations, "annotation")

    # ------------------------------------------------------------------ names

    def _check_names(self, decls: list[Declaration], seen: dict[str, Declaration],
                     unnamed_union: list[Declaration | None]) -> None:
        for decl in decls:
            if decl.kind in ("nakedId", "nakedAnnotation"):
                continue
            if decl.name is None:
                if decl.kind == "union":
                    if unnamed_union[0] is not None:
                        kw = decl.keyword or Located("", decl.start, decl.end)
                        prev = unnamed_union[0].keyword or Located("", unnamed_union[0].start,
                                                                    unnamed_union[0].end)
                        self.error_on(kw, "An unnamed union is already defined in this scope.")
                        self.error_on(prev, "Previously defined here.")
                    else:
                        unnamed_union[0] = decl
                    if decl.misplaced:
                        self.error_on(decl, "This kind of declaration doesn't belong here.")
                    self._check_names(decl.nested, seen, [decl])
                continue
            name = str(decl.name.value)
            if name:
                previous = seen.get(name)
                if previous is not None and previous.name is not None:
                    self.error_on(decl.name, f"'{name}' is already defined in this scope.")
                    self.error_on(previous.name, f"'{name}' previously defined here.")
                else:
                    seen[name] = decl
                if decl.kind in _TYPE_KINDS or (decl.kind == "using" and
                                                 _names_a_type(decl.type)):
                    if not name[0].isupper():
                        self.error_on(decl.name, "Type names must begin with a capital letter.")
                elif name[0].isupper():
                    self.error_on(decl.name, "Non-type names must begin with a lower-case letter.")
                if "_" in name:
                    self.error_on(decl.name,
                                  "Cap'n Proto declaration names should use camelCase and must "
                                  "not contain underscores. (Code generators may convert names "
                                  "to the appropriate style for the target language.)")
            if decl.misplaced:
                self.error_on(decl, "This kind of declaration doesn't belong here.")
                continue
            if decl.kind in ("union", "group"):
                self._check_names(decl.nested, {}, [None])

    # ------------------------------------------------------------------ annotations

    def annotations(self, apps: list[ast.AnnotationApplication],
                    target: str) -> list[model.Annotation]:
        result = []
        node = self.node
        for app in apps:
            decl = self.c.compile_decl_expression(app.name, node, node.local_brand(),
                                                  ImplicitParams())
            if decl is None:
                continue
            kind = decl.kind
            if kind != "annotation":
                self.error_on(app.name, f"'{expression_string(app.name)}' is not an annotation.")
                continue
            assert isinstance(decl.body, ResolvedDecl) and isinstance(decl.body.target, DeclNode)
            target_node = decl.body.target
            brand = decl.brand_of(node.type_error())
            annotation = model.Annotation(target_node.id, brand)
            try:
                self.c.bootstrap(target_node)
            except RecursiveDependency:
                target_node.error_on_node("Declaration recursively depends on itself.")
                continue
            if target_node.model is None or target_node.model.annotation is None:
                continue
            proto = target_node.model.annotation
            if not getattr(proto, TARGET_OF_KIND[target]):
                self.error_on(app.name, f"'{expression_string(app.name)}' cannot be applied to "
                                        "this kind of declaration.")
            type_ = substitute(proto.type, brand)
            if app.value is None:
                if type_.which == "void":
                    annotation.value = model.Value("void")
                else:
                    self.error_on(app.name, f"'{expression_string(app.name)}' requires a value.")
                    annotation.value = default_value(type_)
            else:
                annotation.value = default_value(type_)
                self.compile_bootstrap_value(app.value, type_, annotation.value)
            result.append(annotation)
        return result

    # ------------------------------------------------------------------ values

    def compile_bootstrap_value(self, expr: Expression, type_: model.Type,
                                target: model.Value) -> None:
        if type_.which in ("list", "struct", "interface", "anyPointer"):
            self.node.deferred.append((expr, type_, target, self.node))
            return
        value = self.c.compile_value(expr, type_, self.node)
        assign_value(target, self.c.values.to_model(value, type_) if value is not None
                      else default_value(type_))

    # ------------------------------------------------------------------ enums

    def enum(self, out: model.NodeEnum, decl: Declaration, info: model.SourceInfo) -> None:
        entries: list[tuple[int, int, Declaration]] = []
        for code_order, member in enumerate(d for d in decl.nested if d.kind == "enumerant"
                                            and not d.misplaced):
            ordinal = int(member.id.value) if member.id is not None else 0  # type: ignore[call-overload]
            entries.append((ordinal, code_order, member))
        detector = OrdinalDetector(self)
        for _, code_order, member in sorted(entries, key=lambda e: (e[0], e[1])):
            detector.check(member)
            assert member.name is not None
            name = str(member.name.value)
            self.node.enumerant_ordinals.setdefault(name, len(out.enumerants))
            out.enumerants.append(model.Enumerant(
                name, code_order, self.annotations(member.annotations, "enumerant")))
        info.members = [model.SourceInfoMember(m.doc or "")
                        for _, _, m in sorted(entries, key=lambda e: (e[0], e[1]))]

    # ------------------------------------------------------------------ structs

    def struct(self, out: model.Node, members: list[Declaration], info: model.SourceInfo,
               implicit: ImplicitParams, is_param_list: bool,
               param_list: list[ast.MethodParam] | None = None) -> None:
        """Translate a struct body (or a method's named parameter list) into ``out`` plus group
        nodes, following capnp's StructTranslator."""
        node = self.node
        self.member_fields: list[tuple[MemberInfo, model.Field]] = []
        infos: list[MemberInfo] = []
        by_source: dict[int, MemberInfo] = {}

        def build(decls: list[Declaration]) -> list[layout.Member]:
            result: list[layout.Member] = []
            for d in decls:
                if d.misplaced:
                    continue
                if d.kind == "field":
                    ordinal = int(d.id.value) if d.id is not None else 0  # type: ignore[call-overload]
                    fm = layout.FieldMember(str(d.name.value) if d.name else "", ordinal,
                                            layout.SlotSize.VOID, d)
                    mi = MemberInfo(d, fm, ordinal)
                    infos.append(mi)
                    by_source[id(fm)] = mi
                    result.append(fm)
                elif d.kind == "group":
                    gm = layout.GroupMember(str(d.name.value) if d.name else "", build(d.nested),
                                            d)
                    mi = MemberInfo(d, gm)
                    by_source[id(gm)] = mi
                    result.append(gm)
                elif d.kind == "union":
                    um_ordinal = int(d.id.value) if d.id is not None else None  # type: ignore[call-overload]
                    um = layout.UnionMember(str(d.name.value) if d.name else "",
                                            build(d.nested), um_ordinal, d)
                    mi = MemberInfo(d, um, um_ordinal or 0)
                    by_source[id(um)] = mi
                    if um_ordinal is not None:
                        infos.append(mi)  # a retroactive union takes part in the ordinal walk
                    result.append(um)
            return result

        if param_list is not None:
            layout_members: list[layout.Member] = []
            for index, p in enumerate(param_list):
                pseudo = Declaration("field", p.name, p.start, p.end, type=p.type,
                                     value=p.default, annotations=p.annotations)
                fm = layout.FieldMember(str(p.name.value), index, layout.SlotSize.VOID, pseudo)
                mi = MemberInfo(pseudo, fm, index)
                infos.append(mi)
                by_source[id(fm)] = mi
                layout_members.append(fm)
        else:
            layout_members = build(members)

        # Types first (capnp compiles them while allocating, in ordinal order).
        type_errors: dict[int, list[int]] = {}
        ordered = sorted(infos, key=lambda m: m.ordinal)
        for mi in ordered:
            if mi.decl.kind != "field":
                continue
            assert mi.decl.type is not None
            before = len(self.diag.items)
            mi.type = self.c.compile_type(mi.decl.type, node, implicit)
            if mi.type is not None:
                mi.member.size = layout.slot_size(mi.type.which)  # type: ignore[union-attr]
            type_errors[id(mi)] = list(range(before, len(self.diag.items)))
        captured = self.diag.items
        type_diags = {key: [captured[i] for i in idx] for key, idx in type_errors.items()}
        all_type_indexes = {i for idx in type_errors.values() for i in idx}
        self.diag.items = [d for i, d in enumerate(captured) if i not in all_type_indexes]

        result = layout.layout_struct(layout_members, is_param_list=is_param_list)

        # capnp's order: problems found while collecting members first; then, member by member
        # in ordinal order, that member's ordinal problems, its type and its primitive default.
        ordinal_problems: dict[int, list[layout.LayoutProblem]] = {}
        trailing: list[layout.LayoutProblem] = []
        previous: int | None = None
        for problem in result.problems:
            src = problem.member.source
            assert isinstance(src, Declaration)
            if problem.at == "ordinal":
                key = id(problem.member)
                if problem.message.startswith("Ordinal @") and previous is not None:
                    key = previous  # "originally used here" goes with the duplicate
                ordinal_problems.setdefault(key, []).append(problem)
                previous = key
            elif problem.message == layout.ISSUE_344_MESSAGE:
                trailing.append(problem)
            else:
                self.error_on(src, problem.message)
        events: list[object] = []
        for mi in ordered:
            events.extend(ordinal_problems.pop(id(mi.member), []))
            events.extend(type_diags.get(id(mi), []))
            events.append(mi)
        for leftover in ordinal_problems.values():
            events.extend(leftover)
        events.extend(trailing)
        slot_of: dict[int, model.Field] = {}

        # Create fields and group nodes.
        struct = out.struct
        assert struct is not None
        struct.dataWordCount = result.data_word_count
        struct.pointerCount = result.pointer_count
        struct.preferredListEncoding = model.ElementSize.inlineComposite
        struct.isGroup = False
        struct.discriminantCount = result.root.discriminant_count
        struct.discriminantOffset = result.root.discriminant_offset
        shape = StructShape(out.id, out.displayName[out.displayNamePrefixLength:], {})
        node.shapes[out.id] = shape
        self._fill_scope(out, result.root, result, by_source, slot_of, shape, info)

        # Now walk the events: report problems and compile bootstrap defaults in order.
        for event in events:
            if isinstance(event, layout.LayoutProblem):
                src = event.member.source
                assert isinstance(src, Declaration)
                if event.at == "ordinal" and src.id is not None:
                    self.error_on(src.id, event.message)
                else:
                    self.error_on(src, event.message)
            elif isinstance(event, MemberInfo):
                f = slot_of.get(id(event.member))
                if f is None or f.slot is None:
                    continue
                default = event.decl.value
                if default is not None and event.type is not None:
                    if is_param_list and default.kind == "relativeName" and \
                            isinstance(default.value, Located) and default.value.value == "null":
                        if event.type.which in ("text", "data", "list", "struct", "interface",
                                                "anyPointer"):
                            f.slot.hadExplicitDefault = True
                        else:
                            self.error_on(default, "Only pointer parameters can declare their "
                                                   "default as 'null'.")
                        continue
                    f.slot.hadExplicitDefault = True
                    self.compile_bootstrap_value(default, event.type, f.slot.defaultValue)
            else:
                self.diag.items.append(event)  # type: ignore[arg-type]

        # Annotations of members, in code order.
        for mi_source, f in sorted(self.member_fields, key=lambda p: p[1].codeOrder):
            target = {"field": "param" if is_param_list else "field",
                      "group": "group", "union": "union"}[mi_source.decl.kind]
            f.annotations = self.annotations(mi_source.decl.annotations, target)

    def _fill_scope(self, out: model.Node, scope: layout.ScopeLayout,
                    result: layout.StructLayout, by_source: dict[int, MemberInfo],
                    slot_of: dict[int, model.Field], shape: StructShape,
                    info: model.SourceInfo) -> None:
        struct = out.struct
        assert struct is not None
        docs: list[tuple[int, str]] = []
        for laid in scope.fields:
            member = laid.member
            mi = by_source[id(member)]
            name = member.name
            f = model.Field(name=name, codeOrder=laid.code_order,
                            discriminantValue=laid.discriminant_value)
            if laid.ordinal is not None and not isinstance(member, layout.GroupMember) and (
                    isinstance(member, layout.FieldMember) or member.ordinal is not None):
                f.ordinal = model.FieldOrdinal("explicit", laid.ordinal)
            self.member_fields.append((mi, f))
            docs.append((len(docs), mi.decl.doc or ""))
            if isinstance(member, layout.FieldMember):
                type_ = mi.type or model.Type()
                f.which = "slot"
                f.slot = model.FieldSlot(laid.offset, type_, default_value(type_), False)
                slot_of[id(member)] = f
                shape.fields[name] = FieldShape(name, type_, None, laid.discriminant_value,
                                                laid.code_order)
            else:
                assert laid.group is not None
                group_id = ids.group_id(out.id, laid.index)
                f.which = "group"
                f.group = model.FieldGroup(group_id)
                display = f"{out.displayName}.{name}"
                group_node = model.Node(
                    id=group_id, displayName=display,
                    displayNamePrefixLength=len(display) - len(name), scopeId=out.id,
                    isGeneric=out.isGeneric, which="struct",
                    struct=model.NodeStruct(
                        result.data_word_count, result.pointer_count,
                        model.ElementSize.inlineComposite, True,
                        laid.group.discriminant_count, laid.group.discriminant_offset))
                self.node.aux.append(group_node)
                self.c.aux_by_id[group_id] = group_node
                group_info = model.SourceInfo(group_id, mi.decl.doc or "")
                self.node.source_info.append(group_info)
                group_shape = StructShape(group_id, name, {})
                self.node.shapes[group_id] = group_shape
                shape.fields[name] = FieldShape(name, None, group_shape,
                                                laid.discriminant_value, laid.code_order)
                self._fill_scope(group_node, laid.group, result, by_source, slot_of,
                                 group_shape, group_info)
            struct.fields.append(f)
        docs.sort()
        info.members = [model.SourceInfoMember(doc) for _, doc in docs]
        if shape.fields:
            # The node's fields[0] (fields are listed by ordinal), which 1.x's implied first
            # field uses.
            shape.first_field = next(iter(shape.fields))

    # ------------------------------------------------------------------ interfaces

    def interface(self, out: model.Node, decl: Declaration, info: model.SourceInfo) -> None:
        node = self.node
        assert out.interface is not None
        for expr in decl.superclasses:
            sup = self.c.compile_decl_expression(expr, node, node.local_brand(),
                                                 ImplicitParams())
            if sup is None:
                continue
            if sup.kind != "interface":
                self.error_on(expr, f"'{expression_string(expr)}' is not an interface.")
                continue
            assert isinstance(sup.body, ResolvedDecl)
            out.interface.superclasses.append(
                model.Superclass(sup.body.id, sup.brand_of(node.type_error())))
        entries: list[tuple[int, int, Declaration]] = []
        for code_order, member in enumerate(d for d in decl.nested if d.kind == "method"
                                            and not d.misplaced):
            ordinal = int(member.id.value) if member.id is not None else 0  # type: ignore[call-overload]
            entries.append((ordinal, code_order, member))
        methods: list[model.Method] = []
        detector = OrdinalDetector(self)
        for ordinal, code_order, member in sorted(entries, key=lambda e: (e[0], e[1])):
            detector.check(member)
            assert member.name is not None and member.params is not None
            name = str(member.name.value)
            implicit_names = [str(p.value) for p in member.parameters]
            method = model.Method(name, code_order,
                                  [model.Parameter(n) for n in implicit_names])
            method.paramStructType = self._param_list(
                name, ordinal, False, member.params, implicit_names, method.paramBrand)
            results = member.results or ast.ParamList("namedList", member.end, member.end)
            method.resultStructType = self._param_list(
                name, ordinal, True, results, implicit_names, method.resultBrand)
            method.annotations = self.annotations(member.annotations, "method")
            methods.append(method)
        out.interface.methods = methods
        info.members = [model.SourceInfoMember(m.doc or "")
                        for _, _, m in sorted(entries, key=lambda e: (e[0], e[1]))]

    def _param_list(self, method_name: str, ordinal: int, is_results: bool,
                    params: ast.ParamList, implicit_names: list[str],
                    brand_out: model.Brand) -> int:
        node = self.node
        if params.kind == "namedList":
            assert node.model is not None
            type_name = f"{method_name}{'$Results' if is_results else '$Params'}"
            struct_id = ids.method_params_id(node.id, ordinal, is_results)
            display = f"{node.display_name}.{type_name}"
            out = model.Node(
                id=struct_id, displayName=display,
                displayNamePrefixLength=len(display) - len(type_name), scopeId=0,
                parameters=[model.Parameter(n) for n in implicit_names],
                isGeneric=node.model.isGeneric or bool(implicit_names), which="struct",
                struct=model.NodeStruct())
            seen_names: set[str] = set()
            for p in params.named:
                if str(p.name.value) in seen_names:
                    # capnp has no check of its own here; its schema validator catches it.
                    node.error_on_node(
                        "Internal compiler bug: Bootstrap schema failed validation:\n"
                        f"  validating schema node {display}: duplicate name; "
                        f"name = {p.name.value}")
                    break
                seen_names.add(str(p.name.value))
            node.aux.append(out)
            # capnp gives method structs source info without their id (so: id 0).
            info = model.SourceInfo(0, "")
            node.source_info.append(info)
            self.struct(out, [], info, ImplicitParams(struct_id, implicit_names),
                        is_param_list=True, param_list=params.named)
            # capnp 0.9.2 leaves the method's own implicit parameters out of this brand.
            brand = node.local_brand().push(struct_id, len(implicit_names))
            brand_out.scopes = brand.compile(node.type_error()).scopes
            return struct_id
        if params.kind == "type":
            assert params.type is not None
            target = self.c.compile_decl_expression(
                params.type, node, node.local_brand(), ImplicitParams(0, implicit_names))
            if target is None:
                return 0
            if target.kind != "struct":
                self.error_on(params.type,
                              f"'{expression_string(params.type)}' is not a struct type.")
                return 0
            assert isinstance(target.body, ResolvedDecl)
            brand_out.scopes = target.brand_of(node.type_error()).scopes
            return target.body.id
        # stream
        if not is_results:
            self.error(params.start, params.end,
                       "'stream' can only appear after '->', not before.")
        stream_file = self.c.import_file(node.file, "/capnp/stream.capnp")
        if stream_file is None or stream_file.node is None:
            self.error(params.start, params.end,
                       "A method declaration uses streaming, but '/capnp/stream.capnp' is not "
                       "found in the import path. This is a standard file that should always "
                       "be installed with the Cap'n Proto compiler.")
            return 0
        if not is_results:
            return 0
        result = stream_file.node.nested.get("StreamResult")
        return result.id if result is not None else 0


class OrdinalDetector:
    """capnp's DuplicateOrdinalDetector: fed members in ordinal order, it reports duplicate
    and skipped ordinals."""

    def __init__(self, translator: NodeTranslator) -> None:
        self.translator = translator
        self.expected = 0
        self.last: Declaration | None = None

    def check(self, member: Declaration) -> None:
        assert member.id is not None
        ordinal = int(member.id.value)  # type: ignore[call-overload]
        error_on = self.translator.error_on
        if ordinal < self.expected:
            error_on(member.id, "Duplicate ordinal number.")
            if self.last is not None and self.last.id is not None:
                error_on(self.last.id, f"Ordinal @{self.last.id.value} originally used here.")
                self.last = None
        elif ordinal > self.expected:
            error_on(member.id, f"Skipped ordinal @{self.expected}.  Ordinals must be "
                                "sequential with no holes.")
            self.expected = ordinal + 1
        else:
            self.expected += 1
            self.last = member


def assign_value(target: model.Value, value: model.Value) -> None:
    for name in field_names(model.Value):
        setattr(target, name, getattr(value, name))


def _names_a_type(target: Expression | None) -> bool:
    """Whether a ``using`` target looks like a type, judged from its spelling as capnp does:
    an import, or a last name component that is capitalized."""
    while target is not None:
        if target.kind == "import":
            return True
        if target.kind == "application":
            target = target.function
            continue
        if target.kind == "member" and target.name is not None:
            return str(target.name.value)[:1].isupper()
        if target.kind in ("relativeName", "absoluteName") and isinstance(target.value, Located):
            return str(target.value.value)[:1].isupper()
        return False
    return False
