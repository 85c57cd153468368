"""Runtime structs <-> Cap'n Proto binary: what ``s.to_bytes()`` and ``S.from_bytes()`` run.

The runtime (below the codecs in the layer order) only knows the hook names; this module
registers itself for them in :mod:`cara.runtime.hooks` when imported, as the msgpack and JSON
codecs do. It builds one :class:`~cara.codecs.capnp.schema_codec.SchemaCodec` per schema builder
and direction: encoding reads a struct's own dict (keyed by field index) when its runtime form is
the codec's, and ``to_dict()`` otherwise; decoding is sparse (scalars holding their default and
null pointers stay unset, so a decoded struct equals the one written) and, where it can, builds
the runtime instances directly in generated code. Generic instantiations (``S[T]``) and
``ReplaceTypes`` classes get codecs for their brands or replaced nodes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NoReturn

from cara.runtime import hooks

from .reader import DEFAULT_NESTING_LIMIT, DEFAULT_TRAVERSAL_LIMIT

__all__ = ["from_bytes", "model_type", "replaced_nodes", "to_bytes"]


def _codec_module() -> Any:
    from cara.codecs.capnp import schema_codec

    return schema_codec


def to_bytes(value: Any, *, packed: bool = False) -> bytes:
    """``value.to_bytes()``: a runtime struct as a Cap'n Proto message."""
    cls = type(value)
    fast = cls.__dict__.get("_cara_capnp_encoder_")
    if fast is None:
        fast = _fast_encoder(cls)
        type.__setattr__(cls, "_cara_capnp_encoder_", fast)
    if fast:
        codec, type_id, cplan = fast
        if cplan is not None:
            out = _c_encode(cplan, value)
            if out is not _BAIL:
                if packed:  # (the same single-segment framing, packed)
                    from .packing import pack

                    return pack(out)
                return out
        try:
            return codec.encode(type_id, value, packed=packed)
        except Exception:
            pass  # the general path below words the error
    codec, type_id = _schema_codec(cls)
    return codec.encode(type_id, value.to_dict(), packed=packed)


#: Field types whose runtime values are not what the codec encodes (capabilities, AnyPointer
#: values as the runtime holds them).
_NOT_DIRECT = frozenset({"anyPointer", "interface"})
_ANY_POINTER = frozenset({"anyPointer"})


def _fast_encoder(cls: Any) -> tuple[Any, ...]:
    """The index-keyed codec and key that encode ``cls``'s instances as they are (cached on
    the class as ``_cara_capnp_encoder_``), or ``()`` when they must go through ``to_dict()``.

    A struct instance is a dict keyed by field index whose nested structs and lists are
    dicts and lists too, enums ``IntEnum`` members: the index-keyed codec encodes it without
    the copy ``to_dict()`` makes. Not for generic instantiations, replaced types, or structs
    that can hold AnyPointer or capability values (their runtime form is not the codec's)."""
    schema = cls.cara_schema
    builder = schema.builder
    if builder is None or schema.bindings or builder.replacements:
        return ()
    codec, type_id = _schema_codec(cls, decoding=True)
    if codec.reaches(type_id, _NOT_DIRECT):
        return ()
    if "_cara_capnp_read_" not in cls.__dict__:
        _reader(cls)  # (binds the classes the C plan makes: see _c_plan)
    return codec, type_id, cls.__dict__.get("_cara_capnp_cplan_")


def c_plan(cls: Any) -> Any:
    """The C plan of runtime struct class ``cls`` (see accel.py), or None: what the RPC
    encoding reads and writes payloads of ``cls`` with (its reader is built on first use)."""
    if "_cara_capnp_read_" not in cls.__dict__:
        _reader(cls)
    return cls.__dict__.get("_cara_capnp_cplan_")


def from_bytes(cls: Any, data: bytes, *, packed: bool = False,
               traversal_limit_in_words: int | None = None,
               nesting_limit: int | None = None) -> Any:
    """``S.from_bytes(data)``: a Cap'n Proto message as a runtime struct of class ``cls``
    (with libcapnp's default limits unless given, as pycapnp names them)."""
    if traversal_limit_in_words not in (None, DEFAULT_TRAVERSAL_LIMIT) or \
            nesting_limit not in (None, DEFAULT_NESTING_LIMIT):
        # other limits than the defaults (the defaults, as the stream readers pass them, take
        # the path below)
        codec, type_id = _schema_codec(cls, decoding=True)
        return _from_sparse(cls, codec.decode(
            type_id, data, packed=packed,
            traversal_limit_in_words=(DEFAULT_TRAVERSAL_LIMIT if traversal_limit_in_words
                                      is None else traversal_limit_in_words),
            nesting_limit=DEFAULT_NESTING_LIMIT if nesting_limit is None else nesting_limit))
    if packed:
        # unpacked as read_message(data, packed=True) would (the same bound on the output, the
        # same errors), then read as unpacked input: offsets in errors are in the unpacked bytes
        # either way
        from .packing import unpack

        data = unpack(data, max_bytes=max(8 * DEFAULT_TRAVERSAL_LIMIT, 4096) + 4096)
    # Cached on the class itself (its own __dict__, not inherited by subclasses): a dict
    # lookup is the cheapest per-call cost.
    read = cls.__dict__.get("_cara_capnp_read_")
    if read is None:
        read = _reader(cls)
    return read(data)


def _reader(cls: Any) -> Callable[[Any], Any]:
    """``cls.from_bytes`` for unpacked data as one function (cached on the class).

    Where it can, the decoder builds ``cls``'s instances itself (:func:`_direct_decoder`);
    otherwise, and whenever that fails, the sparse decoding codec's value goes through the
    trusted builder or, failing that, the general constructor (which words any error)."""
    codec, type_id = _schema_codec(cls, decoding=True)
    decode = codec.decoder(type_id)
    build = _from_decoded(cls)

    def read_plain(data: Any) -> Any:
        decoded = decode(data)
        try:
            return build(decoded)
        except Exception:  # the general constructor decides, and words the error
            return cls(decoded)

    direct = _direct_decoder(cls)
    if direct is None:
        read = read_plain
    else:
        def read(data: Any) -> Any:
            try:
                return direct(data)
            except Exception:  # (an error, or a value only the general path may judge)
                return read_plain(data)
    cplan = _c_plan(cls)
    type.__setattr__(cls, "_cara_capnp_cplan_", cplan)
    if cplan is not None:
        # the C fast path (accel.py); anything it does not take, the Python code reads
        python_read = read

        def read(data: Any) -> Any:
            out = _c_decode(cplan, data)
            if out is _BAIL:
                return python_read(data)
            return out
        _install(cls, cplan)
    type.__setattr__(cls, "_cara_capnp_read_", read)
    return read


def _install(cls: Any, cplan: Any) -> None:
    """Put the C fast path in front of ``cls.to_bytes`` and ``cls.from_bytes`` themselves (no
    Python call on the plain path; the inherited methods take every other call), unless the
    class defines either method itself."""
    from . import accel

    if "to_bytes" in cls.__dict__ or "from_bytes" in cls.__dict__:
        return
    to, frm = _inherited(cls, "to_bytes"), _inherited(cls, "from_bytes")
    if not callable(to) or not isinstance(frm, classmethod):
        return
    type.__setattr__(cls, "to_bytes", accel.binary.ToBytes(cplan, to))
    type.__setattr__(cls, "from_bytes", accel.binary.FromBytes(cplan, frm.__func__))


def _inherited(cls: Any, name: str) -> Any:
    for base in cls.__mro__[1:]:
        if name in base.__dict__:
            return base.__dict__[name]
    return None


def _c_plan(cls: Any) -> Any:
    """The C plan (see accel.py) of an accelerated class whose instance decoder is bound (by
    its own ``_direct_decoder`` or by an enclosing struct's), or None."""
    from . import accel

    if accel.binary is None or cls.__dict__.get("_cara_plan_") is None:
        return None
    schema = cls.cara_schema
    builder = schema.builder
    if builder is None or schema.bindings or builder.replacements:
        return None
    codec = getattr(builder, "_capnp_instances", None)
    if codec is None or codec.ns.get(f"C_{codec.plan(schema.id).tag}") is not cls:
        return None
    return accel.make_plans(codec, schema.id)


def _load_c() -> tuple[Any, Any, Any]:
    from . import accel

    if accel.binary is None:
        return None, None, object()
    return accel.binary.encode, accel.binary.decode, accel.binary.BAIL


_c_encode, _c_decode, _BAIL = _load_c()


def _direct_decoder(cls: Any) -> Callable[[Any], Any] | None:
    """A decoder whose generated code makes ``cls``'s instances, typed lists and enum members
    as it reads (``SchemaCodec(instances=True)``, one per builder), or None where the runtime
    classes cannot be tied to the codec's plans one to one: generic instantiations, replaced
    types, AnyPointer and capability values (their runtime form is not the codec's)."""
    schema = cls.cara_schema
    builder = schema.builder
    if builder is None or schema.bindings or builder.replacements:
        return None
    codec = getattr(builder, "_capnp_instances", None)
    if codec is None:
        module = _codec_module()
        codec = module.SchemaCodec(builder.nodes, pointer_defaults=False, keys="index",
                                   sparse=True, instances=True)
        builder._capnp_instances = codec
    if codec.reaches(schema.id, _ANY_POINTER):
        return None
    names: dict[str, Any] = {}
    if not _bind(codec, schema.id, cls, names, set()):
        return None
    ns = codec.ns
    for name, value in names.items():
        if ns.get(name, value) is not value:
            return None  # another class decoded by the same plan (should not happen)
    ns.update(names)
    if codec.reaches(schema.id, _NOT_DIRECT):
        # the generated decoder would store a cap-table index or a reader where the runtime
        # holds a capability or a value; the names stay bound for the C plan, which reads a
        # capability only through the cap table the RPC encoding gives it (see accel.py)
        return None
    decoder: Callable[[Any], Any] = codec.decoder(schema.id)
    return decoder


def _bind(codec: Any, key: Any, cls: Any, names: dict[str, Any], seen: set[Any]) -> bool:
    """Collect in ``names`` the runtime objects the instance decoder of plan ``key`` (decoding
    ``cls``) and of every plan it reaches refers to; False on a mismatch."""
    if key in seen:
        return names.get(f"C_{codec.plan(key).tag}") is cls
    seen.add(key)
    plan = codec.plan(key)
    tag = plan.tag
    names[f"C_{tag}"] = cls
    fields = cls.cara_schema.fields
    for fp in plan.fields:
        index = fp.key
        if type(index) is not int or index >= len(fields):
            return False
        desc = fields[index].type
        if fp.kind == "group":
            if desc.kind != "struct" or not _bind(codec, fp.group_id, desc.cls, names, seen):
                return False
        elif fp.kind == "struct":
            if desc.kind != "struct" or \
                    not _bind(codec, codec.plan_for_type(fp.type).key, desc.cls, names, seen):
                return False
        elif fp.kind == "enum":
            if desc.kind != "enum":
                return False
            names[f"EV_{tag}_{index}"] = desc.cls._value2member_map_
            names[f"EC_{tag}_{index}"] = desc.convert
        elif fp.kind == "list":
            if desc.kind != "list":
                return False
            names[f"LM_{tag}_{index}"] = _shared_list_maker(desc)
            t, elem = fp.type, desc.cls._cara_elem_
            while t.list.elementType.which == "list" and elem.kind == "list":
                t, elem = t.list.elementType, elem.cls._cara_elem_
            et = t.list.elementType
            if et.which == "struct":
                if elem.kind != "struct" or \
                        not _bind(codec, codec.plan_for_type(et).key, elem.cls, names, seen):
                    return False
    return True


def _shared_list_maker(desc: Any) -> Callable[[list[Any]], Any]:
    """:func:`_list_maker` of list type ``desc``, made once per list class: every struct
    whose decoder reaches a list type binds the same function (see _direct_decoder)."""
    lcls = desc.cls
    found = lcls.__dict__.get("_cara_capnp_list_maker_")
    if found is None:
        found = _list_maker(desc)
        type.__setattr__(lcls, "_cara_capnp_list_maker_", found)
    return found


def _list_maker(desc: Any) -> Callable[[list[Any]], Any]:
    """For the instance decoder: the typed list of list type ``desc`` from a decoded list
    whose struct elements are already instances (inner lists are still plain)."""
    lcls = desc.cls
    elem = lcls._cara_elem_
    lnew, lextend = list.__new__, list.extend
    ekind = elem.kind
    if ekind == "list":
        inner = _list_maker(elem)

        def list_list(value: list[Any]) -> Any:
            out = lnew(lcls)
            lextend(out, [_untrusted() if x is None else inner(x) for x in value])
            return out
        return list_list
    if ekind != "struct":
        return _maker(desc)

    def struct_list(value: list[Any]) -> Any:
        out = lnew(lcls)
        lextend(out, value)
        return out
    return struct_list


def _from_sparse(cls: Any, decoded: Any) -> Any:
    """An instance of ``cls`` from the sparse decoding codec's value (which already leaves out
    what _sparse would drop, and holds the types the schema says)."""
    try:
        return _from_decoded(cls)(decoded)
    except Exception:  # the general constructor decides, and words the error
        return cls(decoded)


# ------------------------------------------------------------------ trusted construction


def _from_decoded(cls: Any) -> Callable[[dict[int, Any]], Any]:
    """A function that makes an instance of struct class ``cls`` from what the sparse decoding
    codec returned for it (cached on the class as ``_cara_from_decoded_``).

    The codec's output needs no checking: its dicts hold only known field numbers and at most
    one union member, and its scalars, Text and Data already have their Python types (a
    Float32 read from four bytes is always representable). What is left is giving nested
    values their runtime classes: structs and groups become instances, lists typed lists,
    enum numbers members. Anything else (capabilities) goes through the field's converter, and
    AnyPointer values are stored as they are, as the generated constructor does."""
    found = cls.__dict__.get("_cara_from_decoded_")
    if found is not None:
        return found
    if not cls._cara_ready_:
        cls._cara_prepare_()
    env: dict[str, Any] = {"_dnew": dict.__new__, "_du": dict.update, "_dset": _dict_set,
                           "_C": cls, "_M": _MISSING, "_carry": _carry_unknown}
    lines = ["def build(d):", "    s = _dnew(_C)", "    _du(s, d)",
             "    if type(d) is not dict:", "        _carry(s, d)"]
    for f in cls.cara_schema.fields:
        i, t, kind = f.number, f.type, f.type.kind
        if kind in _TRUSTED_KINDS or kind == "anyPointer":
            continue
        if kind == "float32":
            lim = t.limit
            env[f"conv{i}"] = t.convert
            lines += [f"    v = d.get({i}, 0.0)",
                      f"    if not -{lim!r} <= v <= {lim!r}: _dset(s, {i}, conv{i}(v))"]
            continue
        if kind == "enum":
            env[f"vm{i}"] = t.cls._value2member_map_
            env[f"conv{i}"] = t.convert
            lines += [f"    v = d.get({i}, _M)",
                      "    if v is not _M:",
                      f"        e = vm{i}.get(v)",
                      f"        _dset(s, {i}, e if e is not None else conv{i}(v))"]
            continue
        if kind in ("struct", "list"):
            env[f"make{i}"] = _lazy_maker(env, f"make{i}", t)
        else:  # capabilities: the field's own converter
            env[f"make{i}"] = t.convert
        lines += [f"    v = d.get({i})", "    if v is not None:",
                  f"        _dset(s, {i}, make{i}(v))"]
    lines.append("    return s")
    exec(compile("\n".join(lines) + "\n", f"<cara from_bytes {cls._cara_name_}>", "exec"), env)
    build: Callable[[dict[int, Any]], Any] = env["build"]
    type.__setattr__(cls, "_cara_from_decoded_", build)
    return build


def _carry_unknown(s: Any, d: Any) -> None:
    """Give instance ``s`` the unknown data (see :mod:`.unknown`) its decoded value carried."""
    record = getattr(d, "_cara_unknown_", None)
    if record is not None:
        from .unknown import attach

        attach(s, record)


_TRUSTED_KINDS = frozenset({"void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                            "uint32", "uint64", "float64", "text", "data"})
_MISSING: Any = object()
_dict_set = dict.__setitem__


class _Untrusted(Exception):
    """A decoded value the trusted builder leaves to the general constructor."""


def _untrusted() -> NoReturn:
    raise _Untrusted


def _lazy_maker(env: dict[str, Any], name: str, desc: Any) -> Callable[[Any], Any]:
    """A stand-in for the maker of a struct or list value of type ``desc`` that makes the real
    one on its first call and puts it in its place (so recursive types need no order)."""
    def first_call(value: Any) -> Any:
        make = _maker(desc)
        env[name] = make
        return make(value)
    return first_call


def _maker(desc: Any) -> Callable[[Any], Any]:
    """The function turning a decoded value of struct or list type ``desc`` into its runtime
    form."""
    if desc.kind == "struct":
        return _from_decoded(desc.cls)
    lcls = desc.cls
    elem = lcls._cara_elem_
    lnew, lextend = list.__new__, list.extend
    ekind = elem.kind
    if ekind in ("text", "data"):
        def blob_list(value: list[Any]) -> Any:
            if None in value:  # a null element: the general constructor decides
                raise _Untrusted
            out = lnew(lcls)
            lextend(out, value)
            return out
        return blob_list
    if ekind in _TRUSTED_KINDS or ekind == "float32":
        # (a Float32 list element is as representable as a field)
        def plain_list(value: list[Any]) -> Any:
            out = lnew(lcls)
            lextend(out, value)
            return out
        return plain_list
    if ekind == "enum":
        vm = elem.cls._value2member_map_
        conv = elem.convert

        def enum_list(value: list[Any]) -> Any:
            out = lnew(lcls)
            lextend(out, [e if (e := vm.get(x)) is not None else conv(x) for x in value])
            return out
        return enum_list
    if ekind in ("struct", "list"):
        holder: dict[str, Any] = {}
        holder["make"] = _lazy_maker(holder, "make", elem)

        def nested_list(value: list[Any]) -> Any:
            out = lnew(lcls)
            make = holder["make"]
            lextend(out, [_untrusted() if x is None else make(x) for x in value])
            return out
        return nested_list
    conv_list: Callable[[Any], Any] = lcls._cara_convert_  # AnyPointer, capabilities
    return conv_list



def _schema_codec(cls: Any, *, decoding: bool = False) -> tuple[Any, Any]:
    """The Cap'n Proto binary codec for ``cls``'s nodes (one per builder and direction, made on
    first use) when no codec registered ``to_bytes``/``from_bytes`` hooks, and the key of
    ``cls`` in it: the struct's node id, or for a generic instantiation (``S[T]``) the plan the
    codec makes for the struct type with that brand. Encoding works on name-keyed plain values
    (what ``to_dict()`` gives); decoding yields dicts keyed by field index, the numbers the
    runtime's structs use, so they need no renaming."""
    schema = cls.cara_schema
    builder = schema.builder
    if builder is None:
        raise NotImplementedError(f"{cls._cara_name_} was not built from schema nodes")
    attr = "_capnp_decoder" if decoding else "_capnp_codec"
    codec = getattr(builder, attr, None)
    if codec is None:
        try:
            module = _codec_module()
        except ImportError as e:
            raise NotImplementedError(f"the Cap'n Proto binary codec is not available: {e}") \
                from None
        nodes = replaced_nodes(builder) if builder.replacements else builder.nodes
        # Null pointers decode as None (unset), not as the field's default; decoding leaves
        # out scalars holding their default (zero bits), which the wire cannot tell from unset,
        # so a decoded struct equals the one written (tests/support/sparse_rule.py states the
        # rule the generated decoder follows).
        if decoding:
            codec = module.SchemaCodec(nodes, pointer_defaults=False, keys="index", sparse=True)
        else:
            codec = module.SchemaCodec(nodes, pointer_defaults=False, keys="name")
        setattr(builder, attr, codec)
    if not schema.bindings:
        return codec, schema.id
    keys = _generic_keys[decoding]
    key = keys.get(cls)
    if key is None:
        if not hasattr(codec, "plan_for_type"):
            raise NotImplementedError(f"{cls._cara_name_}: this Cap'n Proto codec does not"
                                      " support generic instantiations")
        key = keys[cls] = codec.plan_for_type(model_type(cls._cara_type_)).key
    return codec, key


#: The codec's plan key of each generic instantiation class (worked out once per class), for
#: the encoding codec (False) and the decoding one (True).
_generic_keys: dict[bool, weakref.WeakKeyDictionary[Any, Any]] = {
    False: weakref.WeakKeyDictionary(), True: weakref.WeakKeyDictionary()}


def model_type(desc: Any) -> Any:
    """The schema ``Type`` a runtime type descriptor stands for, generic bindings included as
    the type's brand (what the codec needs to lay out a generic instantiation)."""
    from cara.schema import model

    kind = desc.kind
    if kind == "list":
        return model.Type(which="list", list=model.TypeList(model_type(desc.cls._cara_elem_)))
    if kind == "enum":
        return model.Type(which="enum", enum=model.TypeBranded(desc.cls._cara_id_))
    if kind in ("struct", "interface"):
        schema = desc.cls.cara_schema
        brand = model.Brand([
            model.BrandScope(scope_id, "bind",
                             [model.BrandBinding("type", model_type(d)) for d in descs])
            for scope_id, descs in sorted(schema.bindings.items())])
        branded = model.TypeBranded(schema.id, brand)
        if kind == "struct":
            return model.Type(which="struct", struct=branded)
        return model.Type(which="interface", interface=branded)
    if kind == "anyPointer":
        return model.Type(which="anyPointer", anyPointer=model.AnyPointerType(
            which="unconstrained",
            unconstrained=model.AnyPointerUnconstrained(getattr(desc, "constraint", "anyKind"))))
    return model.Type(which=kind)


def replaced_nodes(builder: Any) -> dict[int, Any]:
    """The builder's nodes with ``ReplaceTypes`` applied to the field types, for the codec: a
    pointer field that now holds another pointer type is laid out as before (a pointer is a
    pointer) and encoded as the new type; its explicit default, written for the old type, is
    dropped. Other replacements would move data and cannot be encoded."""
    import dataclasses

    out = dict(builder.nodes)
    for node_id, node in builder.nodes.items():
        st = node.struct
        if node.which != "struct" or st is None:
            continue
        fields = list(st.fields)
        changed = False
        for i, f in enumerate(fields):
            if f.slot is None:
                continue
            new_type = _replaced_type(builder, f.slot.type, f.name)
            if new_type is not f.slot.type:
                fields[i] = dataclasses.replace(f, slot=dataclasses.replace(
                    f.slot, type=new_type, hadExplicitDefault=False,
                    defaultValue=type(f.slot.defaultValue)()))
                changed = True
        if changed:
            out[node_id] = dataclasses.replace(node, struct=dataclasses.replace(st, fields=fields))
    return out


def _replaced_type(builder: Any, t: Any, where: str) -> Any:
    """Schema type ``t`` after the builder's replacements (``t`` itself when none applies)."""
    from cara.runtime.types import type_key

    if t.which == "list" and t.list is not None:
        elem = _replaced_type(builder, t.list.elementType, where)
        if elem is not t.list.elementType:
            from cara.schema import model

            return model.Type(which="list", list=model.TypeList(elem))
    if t.which == "anyPointer" and t.anyPointer is not None and \
            t.anyPointer.which != "unconstrained":
        return t  # a generic parameter: the codec substitutes what a brand binds
    old = builder._type_desc(t, {})
    new = builder.replacements.get(type_key(old))
    if new is None:
        return t
    if not (old.is_pointer and new.is_pointer):
        raise NotImplementedError(
            f"field {where}: replacing {old.name} by {new.name} changes the struct's layout,"
            " which the Cap'n Proto binary form cannot follow (only pointer types can replace"
            " pointer types)")
    return model_type(new)


hooks.register("to_bytes", to_bytes)
hooks.register("from_bytes", from_bytes)
