"""The runtime's Cap'n Proto binary form against libcapnp (pycapnp), for every struct of
test.capnp (capnproto 0.9.2): the named ones, the implicit param/result structs of its methods,
and its generic structs both unbound and as instantiations (``TestGenerics(TestAllTypes, Text)``
as a field and as a message root).

For hypothesis-generated values (groups, unions, nested lists, lists of structs, Text and Data
with odd bytes, enums including numbers the schema does not name, floats including NaN, the
infinities and -0.0, integer extremes, values equal to the schema defaults; capabilities and
AnyPointers left null):

* cara -> bytes -> pycapnp -> bytes -> cara: cara writes ``s.to_bytes()``, pycapnp reads it and
  copies it into a message of its own (``as_builder()``), cara reads that back with
  ``S.from_bytes``; the result reads the same as the original, field by field (unpacked, and
  packed both ways);
* what pycapnp reads from cara's bytes is compared with cara's value field by field, so a bug
  that cara's writer and reader share (and a round trip would hide) still fails; unset pointers
  must be null on the wire;
* pycapnp builds the same value with libcapnp's own setters and cara reads that encoding.

"Reads the same" is the binary format's notion of equality: an unset scalar and one set to its
default are the same bytes, so structs are compared through their field reads (which give the
default for an unset field), not as dicts. Floats compare bit-exactly apart from NaN payloads.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.runtime import Struct
from cara.runtime.types import ClassType, TypeDesc
from tests.conftest import LONG
from tests.support.corpus_modules import TEST_CAPNP, pycapnp_test_capnp, reachable_classes

#: Examples per struct and direction (CARA_LONG=1: the long run).
EXAMPLES = 150 if LONG else 6
#: Examples per method param/result struct (there are many, most of them small).
PARAM_EXAMPLES = 40 if LONG else 2


#: Every struct declared by name in test.capnp (groups are covered through their structs; the
#: implicit param/result structs of methods by test_method_structs). test_every_struct_listed
#: fails when this list and the schema disagree.
STRUCT_NAMES = [
    "BoxedText", "TestAllTypes", "TestAnyOthers", "TestAnyPointer", "TestAnyPointerConstants",
    "TestConstants", "TestContainMembrane", "TestDefaults", "TestEmptyStruct",
    "TestFieldZeroIsBit", "TestGenerics", "TestGenerics.Inner", "TestGenerics.Inner2",
    "TestGenerics.Inner2.DeepNest", "TestGenerics.UseAliases", "TestGenericsUnion",
    "TestGenericsWrapper", "TestGenericsWrapper2", "TestGroups", "TestInterleavedGroups",
    "TestJoinResult", "TestLateUnion", "TestListDefaults", "TestListOfAny", "TestLists",
    "TestLists.Struct0", "TestLists.Struct0c", "TestLists.Struct1", "TestLists.Struct16",
    "TestLists.Struct16c", "TestLists.Struct1c", "TestLists.Struct32", "TestLists.Struct32c",
    "TestLists.Struct64", "TestLists.Struct64c", "TestLists.Struct8", "TestLists.Struct8c",
    "TestLists.StructP", "TestLists.StructPc", "TestMembrane.Result", "TestNameAnnotation",
    "TestNameAnnotation.NestedStruct", "TestNestedTypes", "TestNestedTypes.NestedStruct",
    "TestNewUnionVersion", "TestNewVersion", "TestOldUnionVersion", "TestOldVersion",
    "TestOutOfOrder", "TestPipeline.AnyBox", "TestPipeline.Box", "TestPrintInlineStructs",
    "TestPrintInlineStructs.InlineStruct", "TestProvisionId", "TestRecipientId",
    "TestStructUnion", "TestStructUnion.SomeStruct", "TestSturdyRef", "TestSturdyRefHostId",
    "TestSturdyRefObjectId", "TestTailCallee.TailResult", "TestThirdPartyCapId",
    "TestTransferCap", "TestTransferCap.Element", "TestUnion", "TestUnionDefaults",
    "TestUnionInUnion", "TestUnnamedUnion", "TestUseGenerics", "TestUsing",
    "TestWholeFloatDefault",
]

_SETTINGS = settings(deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cara_module(corpus_092: Path) -> Any:
    """test.capnp as cara runtime classes, compiled by cara's own compiler.

    (Not from the reference compiler's request: its oracle cannot decode pointer defaults whose
    fields are bound generic parameters, such as ``TestUseGenerics.default``. Layout mistakes
    of cara's compiler still fail here, since pycapnp reads cara's bytes with libcapnp's own
    layout.)"""
    import cara.schema
    from cara.runtime import build_module

    request = cara.schema.compile([str(corpus_092 / TEST_CAPNP)],
                                  import_path=[str(corpus_092 / "c++/src")])
    return build_module(request, request.requestedFiles[0].id,
                        name="cara_test_binary_interop_test_capnp")


@pytest.fixture(scope="module")
def peer_module(corpus_092: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return pycapnp_test_capnp(corpus_092, tmp_path_factory.mktemp("binary-interop"))


def _lookup(module: Any, dotted: str) -> Any:
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------- value strategies

_F32_MAX = struct.unpack("<f", bytes.fromhex("ffff7f7f"))[0]
_F32_TINY = struct.unpack("<f", bytes.fromhex("01000000"))[0]
_SPECIAL_FLOATS = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0]
_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64,
             "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}


def _scalar_strategy(t: TypeDesc) -> st.SearchStrategy[Any]:
    k = t.kind
    if k == "void":
        return st.none()
    if k == "bool":
        return st.booleans()
    if k in _INT_BITS:
        bits = _INT_BITS[k]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if k[0] == "i" else \
            (0, (1 << bits) - 1)
        return st.one_of(st.sampled_from([lo, hi, 0, 1, lo + 1, hi - 1]), st.integers(lo, hi))
    if k == "float32":
        return st.one_of(st.sampled_from([*_SPECIAL_FLOATS, _F32_MAX, -_F32_MAX, _F32_TINY]),
                         st.floats(width=32))
    if k == "float64":
        return st.one_of(st.sampled_from([*_SPECIAL_FLOATS, 5e-324, 1.7976931348623157e308]),
                         st.floats())
    if k == "text":
        return st.one_of(st.sampled_from(["", "\x00", "a\x00b", "é♫✓", "\U0010ffff" * 3]),
                         st.text(max_size=12))
    if k == "data":
        return st.one_of(st.sampled_from([b"", b"\x00", b"\xff" * 7, bytes(range(256))]),
                         st.binary(max_size=17))
    if k == "enum":
        assert isinstance(t, ClassType)
        known = [int(m) for m in t.cls]
        # Numbers the schema does not name: kept by cara, passed through by libcapnp.
        named = st.sampled_from(known)
        return st.one_of(named, named, named, st.sampled_from([max(known) + 1, 0xFFFF]))
    raise AssertionError(f"not a scalar: {t.kind}")


def value_strategy(t: TypeDesc, depth: int) -> st.SearchStrategy[Any] | None:
    """Plain values of type ``t``; ``None`` for types that stay unset (interfaces, AnyPointer:
    they need a capability table or a typed pointer, which plain values cannot carry)."""
    k = t.kind
    if k in ("interface", "anyPointer"):
        return None
    if k == "list":
        assert isinstance(t, ClassType)
        elem = t.cls._cara_elem_
        inner = value_strategy(elem, depth - 1) if depth > 0 else None
        if inner is None:
            return st.just([])  # an empty (non-null) list of anything
        return st.lists(inner, max_size=4 if elem.kind not in ("struct", "list") else 2)
    if k == "struct":
        assert isinstance(t, ClassType)
        return struct_strategy(t.cls, depth - 1) if depth > 0 else st.just({})
    return _scalar_strategy(t)


def struct_strategy(cls: Any, depth: int = 3) -> st.SearchStrategy[dict[int, Any]]:
    """Number-keyed plain dicts valid for ``cls``: any subset of its fields, at most one member
    of its union; a field with an explicit default sometimes gets exactly that default.
    (Deferred: built on first draw, and shown by hypothesis as one short line.)"""
    return st.deferred(lambda: _struct_strategy(cls, depth))


def _struct_strategy(cls: Any, depth: int) -> st.SearchStrategy[dict[int, Any]]:
    schema = cls.cara_schema
    plain: dict[int, st.SearchStrategy[Any]] = {}
    union: dict[int, st.SearchStrategy[Any]] = {}
    empty = cls()
    for f in schema.fields:
        strat = struct_strategy(f.type.cls, depth) if f.is_group else \
            value_strategy(f.type, depth)
        if strat is None:
            continue
        if f.has_default and f.default_plain is not None and f.discriminant is None:
            # the schema default, written explicitly (for a pointer: non-null on the wire)
            strat = st.one_of(st.just(_plain_copy(empty[f.number])), strat)
        (union if f.discriminant is not None else plain)[f.number] = strat
    base = st.fixed_dictionaries({}, optional=plain)
    if not union:
        return base
    member = st.one_of(st.just({}), *(_keyed(n, s) for n, s in union.items()))
    return st.tuples(base, member).map(lambda p: {**p[0], **p[1]})


def _plain_copy(value: Any) -> Any:
    """A struct or list read from cara as fresh number-keyed plain values."""
    if isinstance(value, Struct):
        return {k: _plain_copy(v) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


def _keyed(num: int, strat: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[int, Any]]:
    return strat.map(lambda v: {num: v})


# --------------------------------------------------------------------------- comparisons


def _f32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _fields(cls: Any, value: Any) -> Iterator[tuple[Any, str]]:
    """The fields of ``value`` that Cap'n Proto would read: every non-union field, and the
    active union member (``which()``)."""
    schema = cls.cara_schema
    active = value.which() if schema.union else None
    for f in schema.fields:
        if f.discriminant is None or f.name == active:
            yield f, f.name


#: How many unset struct fields deep the comparisons follow schema defaults (a default may hold
#: a struct whose own default is the same struct again: TestUseGenerics.defaultUser).
DEFAULT_DEPTH = 2


def _skip_unset(f: Any, depth: int, *values: Any) -> tuple[bool, int]:
    """Whether struct field ``f`` is left out of a comparison: none of ``values`` sets it and it
    has no explicit default (all read the type's empty struct, which may contain itself
    forever), or defaults were followed deep enough already. Also the depth to go on with."""
    if f.type.kind != "struct" or f.is_group or \
            any(dict.__contains__(v, f.number) for v in values):
        return False, depth
    explicit = f.has_default and f.default_plain is not None
    return not explicit or depth >= DEFAULT_DEPTH, depth + 1


def assert_same(t: TypeDesc, a: Any, b: Any, where: str, depth: int = 0) -> None:
    """``b`` (read back) reads the same as ``a`` (the original) as a value of type ``t``."""
    k = t.kind
    if k in ("interface", "anyPointer", "void"):
        return
    if k == "struct":
        cls = t.cls  # type: ignore[attr-defined]
        assert isinstance(b, cls), f"{where}: {type(b).__name__} is not {cls.__name__}"
        if cls.cara_schema.union:
            assert a.which() == b.which(), f"{where}: union holds {b.which()}, not {a.which()}"
        for f, name in _fields(cls, a):
            skip, deeper = _skip_unset(f, depth, a, b)
            if not skip:
                assert_same(f.type, a[f.number], b[f.number], f"{where}.{name}", deeper)
        return
    if k == "list":
        elem = t.cls._cara_elem_  # type: ignore[attr-defined]
        assert len(a) == len(b), f"{where}: {len(b)} elements, not {len(a)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(elem, x, y, f"{where}[{i}]", depth)
        return
    if k == "float32":
        assert _same_float(_f32(a), b), f"{where}: {b!r} != {a!r}"
    elif k == "float64":
        assert _same_float(a, b), f"{where}: {b!r} != {a!r}"
    elif k == "enum":
        assert int(a) == int(b) and type(b) is t.cls, f"{where}: {b!r} != {a!r}"  # type: ignore[attr-defined]
    else:
        assert type(a) is type(b) and a == b, f"{where}: {b!r} != {a!r}"


def assert_peer_reads(t: TypeDesc, mine: Any, theirs: Any, where: str, depth: int = 0) -> None:
    """pycapnp's reading ``theirs`` equals cara's value ``mine`` (what cara reads for the field,
    the schema default when unset).

    pycapnp objects are turned into Python values before any comparison, and failures are
    raised by hand: pytest's assertion messages would ``repr`` them, and libcapnp aborts the
    process when asked to print a capability outside RPC."""
    k = t.kind
    if k in ("interface", "anyPointer", "void"):
        return
    if k == "struct":
        cls = t.cls  # type: ignore[attr-defined]
        if cls.cara_schema.union:
            peer_which = str(theirs.which())
            _expect(peer_which == mine.which(),
                    f"{where}: pycapnp reads union member {peer_which}, cara {mine.which()}")
        for f, name in _fields(cls, mine):
            is_set = dict.__contains__(mine, f.number)
            skip, deeper = _skip_unset(f, depth, mine)
            if skip or _opaque(f.type):
                # Compared by presence only. (pycapnp cannot read capabilities outside RPC,
                # nor List(AnyPointer).)
                _expect(bool(theirs._has(name)) == is_set,
                        f"{where}.{name}: cara {'did not write' if is_set else 'wrote'} "
                        "the pointer")
                continue
            assert_peer_reads(f.type, mine[f.number], getattr(theirs, name), f"{where}.{name}",
                              deeper)
        return
    if k == "list":
        elem = t.cls._cara_elem_  # type: ignore[attr-defined]
        n = len(theirs)
        _expect(len(mine) == n, f"{where}: pycapnp reads {n} elements, cara {len(mine)}")
        for i, x in enumerate(mine):
            assert_peer_reads(elem, x, theirs[i], f"{where}[{i}]", depth)
        return
    if k in ("float32", "float64"):
        peer: Any = float(theirs)
        ok = _same_float(_f32(mine) if k == "float32" else mine, peer)
    elif k == "enum":
        peer = int(theirs.raw)
        ok = peer == int(mine)
    elif k == "text":
        peer = str(theirs)
        ok = peer == mine
    elif k == "data":
        peer = bytes(theirs)
        ok = peer == mine
    else:
        peer = theirs
        ok = type(peer) is type(mine) and peer == mine
    _expect(ok, f"{where}: pycapnp reads {peer!r}, cara {mine!r}")


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def _opaque(t: TypeDesc) -> bool:
    """Capabilities and AnyPointers, directly or as list elements: left unset by the
    strategies (plain values cannot carry them)."""
    while t.kind == "list":
        t = t.cls._cara_elem_  # type: ignore[attr-defined]
    return t.kind in ("interface", "anyPointer")


class _PeerCannot(Exception):
    """pycapnp's builder API cannot write this value (an enum number the schema does not name,
    inside a list; a list of AnyPointer)."""


def _peer_enum(value: Any) -> Any:
    name = value._name_
    return int(value) if name.startswith("<") else name


def fill_peer(cls: Any, builder: Any, value: Any) -> None:
    """Write cara's ``value`` into pycapnp's ``builder`` field by field, with libcapnp's own
    setters (``init`` for structs, groups and lists, so that empty ones are written too)."""
    fields = cls.cara_schema.fields
    for n, v in dict.items(value):
        f = fields[n]
        name, k = f.name, f.type.kind
        if _opaque(f.type):
            raise _PeerCannot  # an empty List(Capability): pycapnp's dynamic API has none
        if f.is_group or k == "struct":
            fill_peer(f.type.cls, builder.init(name), v)
        elif k == "list":
            _fill_peer_list(f.type.cls._cara_elem_, builder.init(name, len(v)), v)
        elif k == "enum":
            setattr(builder, name, _peer_enum(v))
        else:
            setattr(builder, name, v)


def _fill_peer_list(elem: TypeDesc, builder: Any, value: list[Any]) -> None:
    k = elem.kind
    for i, v in enumerate(value):
        if k == "struct":
            fill_peer(elem.cls, builder[i], v)  # type: ignore[attr-defined]
        elif k == "list":
            _fill_peer_list(elem.cls._cara_elem_, builder.init(i, len(v)), v)  # type: ignore[attr-defined]
        elif k == "enum":
            if v._name_.startswith("<"):
                raise _PeerCannot
            builder[i] = v._name_
        elif k != "void":
            builder[i] = v


# --------------------------------------------------------------------------- the round trips


def _check_round_trips(cls: Any, peer: Any, data: dict[int, Any], where: str) -> None:
    value = cls(data)
    t = cls._cara_type_
    # cara -> bytes -> pycapnp -> bytes (pycapnp's own copy) -> cara
    ours = value.to_bytes()
    with peer.from_bytes(ours) as reader:
        assert_peer_reads(t, value, reader, where)
        theirs = reader.as_builder().to_bytes()
    back = cls.from_bytes(theirs)
    assert_same(t, value, back, where)
    # what binary decoding gives is an ordinary struct: it survives msgpack too
    assert_same(t, value, cls.from_msgpack(back.to_msgpack()), where)
    # the same, packed both ways
    reader = peer.from_bytes_packed(value.to_bytes(packed=True))  # not a context manager
    assert_peer_reads(t, value, reader, where)
    theirs = reader.as_builder().to_bytes_packed()
    assert_same(t, value, cls.from_bytes(theirs, packed=True), where)
    # pycapnp builds the value from its fields; cara reads libcapnp's encoding
    built = peer.new_message()
    try:
        fill_peer(cls, built, value)
    except _PeerCannot:
        return
    assert_same(t, value, cls.from_bytes(built.to_bytes()), where)
    built.clear_write_flag()
    assert_same(t, value, cls.from_bytes(built.to_bytes_packed(), packed=True), where)


def _run(cls: Any, peer: Any, examples: int, where: str) -> None:
    @settings(_SETTINGS, max_examples=examples)
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        _check_round_trips(cls, peer, data, where)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", STRUCT_NAMES)
def test_binary_round_trip(cara_module: Any, peer_module: Any, name: str) -> None:
    _run(_lookup(cara_module, name), _lookup(peer_module, name), EXAMPLES, name)


# --------------------------------------------------------------------------- corpus messages


@pytest.mark.parametrize(("data", "name", "packed"), [
    ("binary", "TestAllTypes", False), ("packed", "TestAllTypes", True),
    ("segmented", "TestAllTypes", False), ("segmented-packed", "TestAllTypes", True),
    ("lists.binary", "TestLists", False)])
def test_corpus_message(corpus_092: Path, cara_module: Any, peer_module: Any, data: str,
                        name: str, packed: bool) -> None:
    """The reference messages of capnproto's own tests (multi-segment ones included): cara reads
    what libcapnp reads, and libcapnp reads cara's re-encoding the same way."""
    cls, peer = _lookup(cara_module, name), _lookup(peer_module, name)
    t = cls._cara_type_
    raw = (corpus_092 / "c++/src/capnp/testdata" / data).read_bytes()
    value = cls.from_bytes(raw, packed=packed)
    assert len(dict(value)) >= 10  # really decoded (not an empty message)
    for encoded in (raw, value.to_bytes(packed=packed)):
        if packed:
            assert_peer_reads(t, value, peer.from_bytes_packed(encoded), name)
        else:
            with peer.from_bytes(encoded) as reader:
                assert_peer_reads(t, value, reader, name)
    assert_same(t, value, cls.from_bytes(value.to_bytes(packed=packed), packed=packed), name)


# --------------------------------------------------------------------------- schema evolution


@pytest.mark.slow
@pytest.mark.parametrize(("writer", "reader"), [
    ("TestOldVersion", "TestNewVersion"), ("TestNewVersion", "TestOldVersion"),
    ("TestOldUnionVersion", "TestNewUnionVersion"),
    ("TestNewUnionVersion", "TestOldUnionVersion")])
def test_other_version_reads_the_same(cara_module: Any, peer_module: Any, writer: str,
                                      reader: str) -> None:
    """Bytes of one version of a struct read with the other version's schema: cara reads what
    pycapnp reads (fields missing from a smaller struct read as defaults; fields the reader
    does not know are skipped), both from cara's bytes and from libcapnp's."""
    cls, peer = _lookup(cara_module, writer), _lookup(peer_module, writer)
    other, other_peer = _lookup(cara_module, reader), _lookup(peer_module, reader)
    t = other._cara_type_

    @settings(_SETTINGS, max_examples=EXAMPLES * 2)
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        value = cls(data)
        built = peer.new_message()
        try:
            fill_peer(cls, built, value)
            encodings = [value.to_bytes(), built.to_bytes()]
        except _PeerCannot:
            encodings = [value.to_bytes()]
        for encoded in encodings:
            with other_peer.from_bytes(encoded) as theirs:
                assert_peer_reads(t, other.from_bytes(encoded), theirs, reader)

    check()


# --------------------------------------------------------------------------- generics

#: Fields whose type is a generic struct with its parameters bound (``TestGenerics(TestAllTypes,
#: Text)`` and the like): each such type is also tested as a message root (``S[A, B]``).
BOUND_FIELDS = [
    ("TestUseGenerics", name) for name in (
        "basic", "inner", "inner2", "unspecifiedInner", "default", "defaultInner", "wrapper",
        "defaultWrapper", "aliasInner", "aliasInner2", "aliasInner2Bind", "aliasInner2Text",
        "useAliases", "cap")
] + [("TestGenericsWrapper2", "value")]


@pytest.mark.slow
@pytest.mark.parametrize(("owner", "field"), BOUND_FIELDS)
def test_generic_instantiation_as_root(cara_module: Any, peer_module: Any, owner: str,
                                       field: str) -> None:
    """A bound generic struct as the root of a message, against pycapnp's reading of the same
    branded type (the field's schema in pycapnp carries the brand)."""
    import capnp

    cls = _lookup(cara_module, owner).cara_schema.by_name[field].type.cls
    assert cls.cara_schema.bindings, f"{owner}.{field} is not a generic instantiation"
    branded = _lookup(peer_module, owner).schema.fields[field].schema
    _run(cls, capnp._StructModule(branded, cls.cara_schema.name), EXAMPLES,
         f"{owner}.{field}")


def test_instantiations_are_the_field_types(cara_module: Any) -> None:
    """``S[A, B]`` written in Python is the class of a field declared ``S(A, B)``."""
    m = cara_module
    fields = m.TestUseGenerics.cara_schema.by_name
    assert m.TestGenerics[m.TestAllTypes, m.TestAnyPointer] is fields["basic"].type.cls
    assert m.TestGenerics[m.TestAllTypes, str] is fields["default"].type.cls
    data = {"foo": {"int32Field": -1}, "rev": {"foo": "text"}}
    assert m.TestGenerics[m.TestAllTypes, str](data).to_bytes() == \
        fields["default"].type.cls(data).to_bytes()


# --------------------------------------------------------------------------- ReplaceTypes


@pytest.mark.slow
def test_replace_types_gives_any_pointer_a_type(cara_module: Any, peer_module: Any) -> None:
    """``TestAnyPointer.ReplaceTypes([(AnyPointer, TestAllTypes)])`` writes its field as a
    TestAllTypes struct: pycapnp reads it with ``as_struct(TestAllTypes)``, and a struct that
    pycapnp put there reads back in cara."""
    from cara.runtime.types import ANY_POINTER

    cls = cara_module.TestAnyPointer.ReplaceTypes([(ANY_POINTER, cara_module.TestAllTypes)])
    inner_t = cara_module.TestAllTypes._cara_type_
    peer, peer_inner = peer_module.TestAnyPointer, peer_module.TestAllTypes

    @settings(_SETTINGS, max_examples=EXAMPLES * 3)
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        value = cls(data)
        is_set = dict.__contains__(value, 0)
        with peer.from_bytes(value.to_bytes()) as reader:
            _expect(bool(reader._has("anyPointerField")) == is_set, "presence differs")
            if is_set:
                assert_peer_reads(inner_t, value[0], reader.anyPointerField.as_struct(peer_inner),
                                  "anyPointerField")
            theirs = reader.as_builder().to_bytes()
        assert_same(cls._cara_type_, value, cls.from_bytes(theirs), "TestAnyPointer")
        if is_set:
            built = peer.new_message()
            inner = peer_inner.new_message()
            try:
                fill_peer(cara_module.TestAllTypes, inner, value[0])
            except _PeerCannot:
                return
            built.anyPointerField = inner
            assert_same(cls._cara_type_, value, cls.from_bytes(built.to_bytes()),
                        "TestAnyPointer")

    check()


def test_replace_types_that_move_data_are_refused(cara_module: Any) -> None:
    """A replacement that would change a struct's layout (an enum by a struct) cannot have a
    binary form: to_bytes says so instead of writing something libcapnp would misread."""
    m = cara_module
    cls = m.TestAllTypes.ReplaceTypes([(m.TestEnum, m.TestLists)])
    with pytest.raises(NotImplementedError, match="enumField: replacing TestEnum by TestLists"):
        cls().to_bytes()


# --------------------------------------------------------------------------- coverage


def _named_structs(module: Any) -> dict[str, Any]:
    return {c.cara_schema.name: c for c in reachable_classes(module)
            if issubclass(c, Struct) and not c.cara_schema.is_group}


def test_every_struct_listed(cara_module: Any) -> None:
    assert sorted(_named_structs(cara_module)) == sorted(STRUCT_NAMES)


def _peer_method_structs(peer_module: Any) -> dict[int, Any]:
    """pycapnp's schema of every method param/result struct, by node id."""
    out: dict[int, Any] = {}
    seen: set[int] = set()
    stack = [getattr(peer_module, n) for n in dir(peer_module) if n[:1].isupper()]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not hasattr(obj, "schema"):
            continue
        seen.add(id(obj))
        stack.extend(getattr(obj, n) for n in dir(obj) if n[:1].isupper())
        for method in getattr(obj.schema, "methods", {}).values():
            for schema in (method.param_type, method.result_type):
                out.setdefault(schema.node.id, schema)
    return out


def _method_struct_classes(cara_module: Any) -> Iterator[tuple[int, str, Any]]:
    builder = cara_module.TestAllTypes.cara_schema.builder
    for node in builder.nodes.values():
        if node.which == "struct" and node.struct is not None and not node.struct.isGroup \
                and node.scopeId == 0 and \
                node.displayName.split(":", 1)[0].endswith("capnp/test.capnp"):
            yield node.id, node.displayName.split(":", 1)[1], builder.struct_class(node.id)


@pytest.mark.slow
def test_method_structs(cara_module: Any, peer_module: Any) -> None:
    """The implicit param/result structs of every method of test.capnp."""
    import capnp

    peers = _peer_method_structs(peer_module)
    checked = 0
    for node_id, name, cls in _method_struct_classes(cara_module):
        if name.split("$")[-1] not in ("Params", "Results"):
            continue
        assert node_id in peers, f"pycapnp has no {name}"
        peer = capnp._StructModule(peers[node_id], name)
        _run(cls, peer, PARAM_EXAMPLES, name)
        checked += 1
    assert checked > 40


def test_any_pointer_passes_through(cara_module: Any, peer_module: Any) -> None:
    """An AnyPointer that cara read (an uninterpreted pointer) is written back as it was:
    pycapnp puts a struct, a text and a list there, cara reads and re-writes the message."""
    peer = peer_module.TestAnyPointer
    cls = cara_module.TestAnyPointer
    msg = peer.new_message()
    msg.anyPointerField = peer_module.TestAllTypes.new_message(
        int32Field=-7, textField="in any", structList=[{"float64Field": -0.0}])
    again = cls.from_bytes(cls.from_bytes(msg.to_bytes()).to_bytes())
    with peer.from_bytes(again.to_bytes()) as reader:
        inner = reader.anyPointerField.as_struct(peer_module.TestAllTypes)
        assert (inner.int32Field, inner.textField) == (-7, "in any")
        assert math.copysign(1.0, inner.structList[0].float64Field) == -1.0
    msg = peer.new_message()
    msg.anyPointerField.set_as_text("text in any")
    with peer.from_bytes(cls.from_bytes(msg.to_bytes()).to_bytes(packed=False)) as reader:
        assert reader.anyPointerField.as_text() == "text in any"
    msg.clear_write_flag()
    packed = cls.from_bytes(msg.to_bytes_packed(), packed=True).to_bytes(packed=True)
    assert peer.from_bytes_packed(packed).anyPointerField.as_text() == "text in any"
    assert "anyPointerField" not in cls.from_bytes(peer.new_message().to_bytes())
