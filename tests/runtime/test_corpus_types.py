"""The runtime on the reference corpus: every declaration of test.capnp (capnproto 0.9.2).

* every struct class builds and reads its defaults the way pycapnp reads an empty message;
* hypothesis round trips cara -> msgpack -> cara for every struct, and cross-checks values
  against pycapnp: what cara accepts, pycapnp accepts and reads back equal.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.runtime import Struct
from cara.runtime.types import ClassType, TypeDesc
from tests.conftest import LONG
from tests.support.corpus_modules import (
    oracle_test_capnp,
    pycapnp_test_capnp,
    reachable_classes,
)

EXAMPLES = 200 if LONG else 15


@pytest.fixture(scope="module")
def test_module(corpus_092):  # type: ignore[no-untyped-def]
    return oracle_test_capnp(corpus_092, "cara_test_corpus_test_capnp")


@pytest.fixture(scope="module")
def pycapnp_module(corpus_092, tmp_path_factory):  # type: ignore[no-untyped-def]
    return pycapnp_test_capnp(corpus_092, tmp_path_factory.mktemp("pycapnp-test-capnp"))


def all_structs(module: Any) -> list[Any]:
    """Every non-generic struct class reachable from the module's top level."""
    out = [c for c in reachable_classes(module)
           if issubclass(c, Struct) and not c.cara_schema.generic_params]
    return sorted(out, key=lambda c: c.cara_schema.name)


STRUCT_NAMES = [
    "TestAllTypes", "TestDefaults", "TestOutOfOrder", "TestUnion", "TestUnnamedUnion",
    "TestUnionInUnion", "TestGroups", "TestInterleavedGroups", "TestUnionDefaults",
    "TestNestedTypes", "TestUsing", "TestLists", "TestFieldZeroIsBit", "TestListDefaults",
    "TestLateUnion", "TestOldVersion", "TestNewVersion", "TestOldUnionVersion",
    "TestNewUnionVersion", "TestStructUnion", "TestPrintInlineStructs", "TestWholeFloatDefault",
    "TestEmptyStruct", "TestUseGenerics", "TestGenericsWrapper2", "TestAnyPointer",
    "TestAnyOthers", "TestContainMembrane", "TestTransferCap", "TestSturdyRef",
]


def test_every_declaration_builds(test_module) -> None:  # type: ignore[no-untyped-def]
    structs = all_structs(test_module)
    assert len(structs) > 60
    for cls in structs:
        empty = cls()
        assert dict(empty) == {}
        for f in cls.cara_schema.fields:
            if f.discriminant is not None and f.discriminant != 0:
                continue
            empty[f.number]  # reading any field works and stores nothing
        assert dict(empty) == {}, cls


# --------------------------------------------------------------------------- value strategies


def value_strategy(t: TypeDesc, depth: int) -> Any:
    k = t.kind
    ints = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
    if k == "void":
        return st.none()
    if k == "bool":
        return st.booleans()
    if k in ints:
        bits = ints[k]
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if k.startswith("uint"):
        return st.integers(0, (1 << int(k[4:])) - 1)
    if k == "float32":
        return st.floats(width=32, allow_nan=False)
    if k == "float64":
        return st.floats(allow_nan=False)
    if k == "text":
        return st.text(max_size=8)
    if k == "data":
        return st.binary(max_size=8)
    if k == "enum":
        assert isinstance(t, ClassType)
        return st.sampled_from([int(m) for m in t.cls])
    if k == "list":
        assert isinstance(t, ClassType)
        elem = t.cls._cara_elem_
        if depth <= 0 or elem.kind in ("interface", "anyPointer"):
            return st.just([])
        return st.lists(value_strategy(elem, depth - 1), max_size=3)
    if k == "struct":
        assert isinstance(t, ClassType)
        if depth <= 0:
            return st.just({})
        return struct_strategy(t.cls, depth - 1)
    return st.none()  # interfaces, AnyPointer: left unset by struct_strategy


def struct_strategy(cls: Any, depth: int = 3) -> Any:
    """Number-keyed plain dicts valid for ``cls``: any subset of fields, at most one member of
    the union."""
    schema = cls.cara_schema
    plain = {}
    union = {}
    for f in schema.fields:
        if f.type.kind in ("interface", "anyPointer") and not f.is_group:
            continue
        strat = struct_strategy(f.type.cls, depth - 1) if f.is_group else \
            value_strategy(f.type, depth)
        (union if f.discriminant is not None else plain)[f.number] = strat
    base = st.fixed_dictionaries({}, optional=plain)
    if not union:
        return base
    member = st.one_of(st.just({}), *(s.map(lambda v, n=n: {n: v}) for n, s in union.items()))
    return st.tuples(base, member).map(lambda p: {**p[0], **p[1]})


@pytest.mark.parametrize("name", STRUCT_NAMES)
def test_msgpack_round_trip(test_module, name) -> None:  # type: ignore[no-untyped-def]
    cls = getattr(test_module, name)

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(struct_strategy(cls))
    def check(data: dict[int, Any]) -> None:
        value = cls(data)
        packed = msgpack.packb(value)
        assert packed == msgpack.packb(data)  # the struct packs exactly as its number dict
        again = cls(msgpack.unpackb(packed, strict_map_key=False))
        assert again == value
        assert cls.from_msgpack(packed) == value
        assert type(again) is cls

    check()


def _normalise(value: Any) -> Any:
    """pycapnp's to_dict and cara's to_dict, made comparable (enums as names, no NaN issue)."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if hasattr(value, "_name_"):
        return value._name_
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _f32(x: float) -> float:
    import struct

    return float(struct.unpack("<f", struct.pack("<f", x))[0])


@pytest.mark.parametrize("name", ["TestAllTypes", "TestUnion", "TestGroups", "TestLists",
                                  "TestInterleavedGroups", "TestNewVersion"])
def test_values_agree_with_pycapnp(test_module, pycapnp_module, name) -> None:  # type: ignore[no-untyped-def]
    cls = getattr(test_module, name)
    peer = getattr(pycapnp_module, name)

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(struct_strategy(cls, depth=2))
    def check(data: dict[int, Any]) -> None:
        value = cls(data)
        named = value.to_dict()
        msg = peer.new_message(**_for_pycapnp(named))
        theirs = _normalise(peer.from_bytes_packed(msg.to_bytes_packed()).to_dict())
        ours = _normalise(_round_f32(cls, value).to_dict())
        assert _subset(ours, theirs), (ours, theirs)

    check()


def _for_pycapnp(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _for_pycapnp(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_pycapnp(v) for v in value]
    if hasattr(value, "_name_"):
        return value._name_
    return value


def _round_f32(cls: Any, value: Any) -> Any:
    """cara keeps Float32 values as Python floats; Cap'n Proto stores 32 bits."""
    out = cls()
    for f in cls.cara_schema.fields:
        if not dict.__contains__(value, f.number):
            continue
        v = value[f.number]
        if f.type.kind == "float32":
            v = _f32(v)
        elif f.type.kind == "struct" or f.is_group:
            v = _round_f32(f.type.cls, v)
        elif f.type.kind == "list":
            elem = f.type.cls._cara_elem_
            if elem.kind == "float32":
                v = [_f32(x) for x in v]
            elif elem.kind == "struct":
                v = [_round_f32(elem.cls, x) for x in v]
        dict.__setitem__(out, f.number, v)
    return out


def _subset(ours: Any, theirs: Any) -> bool:
    """Everything cara set reads back equal in pycapnp (pycapnp also lists unset fields)."""
    if isinstance(ours, dict):
        return isinstance(theirs, dict) and all(
            k in theirs and _subset(v, theirs[k]) for k, v in ours.items())
    if isinstance(ours, list):
        return isinstance(theirs, list) and len(ours) == len(theirs) and all(
            _subset(a, b) for a, b in zip(ours, theirs, strict=True))
    return bool(ours == theirs)


def test_defaults_agree_with_pycapnp(test_module, pycapnp_module) -> None:  # type: ignore[no-untyped-def]
    ours = test_module.TestDefaults()
    theirs = pycapnp_module.TestDefaults.new_message()
    pointer_defaults = ours.textList != []
    for f in test_module.TestDefaults.cara_schema.fields:
        if f.type.kind in ("struct", "list") and not pointer_defaults:
            continue
        mine = _normalise(_plain(ours[f.number]))
        peer = _normalise(_plain_peer(getattr(theirs, f.name)))
        if f.type.kind == "float32":
            mine = _f32(mine)
        if f.type.kind == "struct":
            assert _subset(_normalise(_round_f32(f.type.cls, ours[f.number]).to_dict()), peer)
            continue
        if f.name == "float32List":
            mine = [x if isinstance(x, str) else _f32(x) for x in mine]
        assert mine == peer, f.name
    assert dict(ours) == {}
    if not pointer_defaults:
        pytest.skip("the reference oracle did not provide pointer defaults; scalars checked")


def _plain(v: Any) -> Any:
    if isinstance(v, Struct):
        return v.to_dict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _plain_peer(v: Any) -> Any:
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if hasattr(v, "__len__") and not isinstance(v, (str, bytes)) and hasattr(v, "__getitem__"):
        return [_plain_peer(x) for x in v]
    if type(v).__name__ == "_DynamicEnum" or hasattr(v, "raw"):
        return str(v)
    return v



@pytest.mark.parametrize("name", [
    "voidConst", "boolConst", "int8Const", "int16Const", "int32Const", "int64Const",
    "uint8Const", "uint16Const", "uint32Const", "uint64Const", "float32Const", "float64Const",
    "textConst", "dataConst", "enumConst", "structConst", "int16ListConst", "textListConst",
    "structListConst", "enumListConst", "float64ListConst"])
def test_constants_agree_with_pycapnp(test_module, pycapnp_module, name) -> None:  # type: ignore[no-untyped-def]
    ours = getattr(test_module.TestConstants, name)
    theirs = getattr(pycapnp_module.TestConstants, name)
    if isinstance(ours, (Struct, list)) and not ours and theirs is not None and len(theirs):
        pytest.skip("the reference oracle did not provide pointer constant values")
    mine = _normalise(_plain(ours))
    peer = _normalise(_plain_peer(theirs))
    if isinstance(ours, Struct):
        assert _subset(_normalise(_round_f32(type(ours), ours).to_dict()), peer)
    else:
        assert mine == peer


def test_global_constants(test_module) -> None:  # type: ignore[no-untyped-def]
    assert test_module.globalInt == 12345
    assert test_module.globalText == "foobar"
    assert test_module.nonAsciiText == "♫ é ✓"
