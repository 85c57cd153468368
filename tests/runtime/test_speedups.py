"""The optional C accelerator (cara/runtime/_speedups.c) against pure Python.

The accelerator may only make construction faster: for any input, a class built with it and
the same class built without it must give the same value (same items in the same order, same
types all the way down) or the same error. Hypothesis throws valid and invalid inputs at both:
number-keyed and name-keyed dicts, keyword arguments, nested dicts and lists, wrong types,
out-of-range numbers, unknown keys, two union members at once.

The pure-Python build is also run as a whole (the struct and fast-path test files in a child
process with ``CARA_PURE_PYTHON=1``), so neither mode goes untested.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cara.errors import CaraError, DecodeError, ValueTypeError
from cara.runtime import struct as struct_module
from cara.runtime.struct import Struct
from cara.runtime.types import Invalid
from tests.runtime.schemas import CARA_CAPNP, SEED_CAPNP, oracle_request
from tests.runtime.test_fast_paths import SHADOW_CAPNP

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not struct_module.SPEEDUPS,
                                reason="the C accelerator is not built (or CARA_PURE_PYTHON=1)")


def _struct_classes(obj: Any, seen: set[int]) -> Iterator[Any]:
    for value in vars(obj).values():
        if isinstance(value, type) and issubclass(value, Struct) and id(value) not in seen:
            seen.add(id(value))
            yield value
            yield from _struct_classes(value, seen)


def _pair(text: str, filename: str) -> tuple[Any, Any]:
    """The module of ``text`` built twice: with the accelerator, and in pure Python."""
    from cara.runtime import build_module

    tmp = tempfile.mkdtemp(prefix="cara-speedups-")
    Path(tmp, "cara.capnp").write_text(CARA_CAPNP)
    Path(tmp, filename).write_text(text)
    request = oracle_request([filename], cwd=tmp)
    fast = build_module(request, register=False)
    pure = build_module(request, register=False)
    for cls in _struct_classes(pure, set()):
        cls._cara_prepare_(accelerate=False)
    for cls in _struct_classes(fast, set()):
        cls._cara_prepare_()
        assert type(cls.__dict__["__init__"]).__name__ == "Plan"
    for cls in _struct_classes(pure, set()):
        assert "_cara_plan_" not in cls.__dict__
    return fast, pure


@pytest.fixture(scope="module")
def modules() -> tuple[Any, Any]:
    return _pair(SHADOW_CAPNP + SEED_CAPNP.split(";", 1)[1] + DEEP_CAPNP, "speedups.capnp")


DEEP_CAPNP = ("struct Deep { children @0 :List(Deep); }\n"
              "struct Floats { f32 @0 :Float32; f64 @1 :Float64; l32 @2 :List(Float32);"
              " inner @3 :Floats; }\n")


def _shape(value: Any) -> Any:
    """Everything that must agree: types, items in order, recursively."""
    if isinstance(value, dict):
        return (type(value).__qualname__, [(k, _shape(v)) for k, v in dict.items(value)])
    if isinstance(value, list):
        return (type(value).__qualname__, [_shape(v) for v in value])
    if isinstance(value, float):  # bit for bit (NaN payloads may differ: any NaN is NaN)
        return ("float", "nan" if value != value else struct.pack("<d", value))
    return (type(value).__qualname__, repr(value))


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        result = fn(*args, **kwargs)
    except ValueTypeError as e:
        return ("error", str(e))
    except Invalid as e:  # what ``_cara_convert_`` raises (the caller adds the root)
        return ("invalid", e.message, e.parts)
    except TypeError as e:  # e.g. unhashable keys reaching a plain dict
        return ("TypeError", str(e))
    return ("ok", _shape(result))


scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([0, 1, 127, 128, 255, 256, -1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]),
    st.floats(allow_nan=True), st.text(max_size=4), st.binary(max_size=4),
    st.sampled_from(["one", "two", "three", "mobile", "work", "x"]),
)
names = st.sampled_from(["type", "str", "int", "d", "self", "w0", "x0", "c0", "v0", "cls", "any",
                         "inner", "a", "b", "id", "name", "email", "phones", "employment",
                         "number", "employer", "school", "unemployed", "selfEmployed", "nope"])
keys = st.one_of(st.integers(min_value=-1, max_value=12), names)  # (-1: unknown binary data)


def _values(children: Any) -> Any:
    return st.one_of(st.dictionaries(keys, children, max_size=5),
                     st.lists(children, max_size=3))


values = st.recursive(scalars, _values, max_leaves=12)
inputs = st.dictionaries(keys, values, max_size=6)


def _classes(fast: Any, pure: Any) -> list[tuple[Any, Any]]:
    return [(fast.Shadow, pure.Shadow), (fast.Shadow.Inner, pure.Shadow.Inner),
            (fast.Person, pure.Person), (fast.Person.PhoneNumber, pure.Person.PhoneNumber)]


@settings(max_examples=int(os.environ.get("CARA_SPEEDUPS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs, which=st.integers(min_value=0, max_value=3))
def test_accelerated_construction_equals_pure_python(modules: tuple[Any, Any],
                                                     data: dict[Any, Any], which: int) -> None:
    fast, pure = _classes(*modules)[which]
    assert _outcome(fast, data) == _outcome(pure, data)
    assert _outcome(fast._cara_convert_, data) == _outcome(pure._cara_convert_, data)
    by_name = {k: v for k, v in data.items() if isinstance(k, str)}
    assert _outcome(fast.Create, **by_name) == _outcome(pure.Create, **by_name)


float_inputs = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(width=32),
    st.sampled_from([0.1, -0.0, 3.4028234663852886e38, 3.4028235e38, 3.5e38, 1e-46, 2**-149,
                     float("nan"), float("inf")]),
    st.integers(min_value=-(2**130), max_value=2**130))


@settings(max_examples=int(os.environ.get("CARA_SPEEDUPS_EXAMPLES", "300")), deadline=None)
@given(f32=float_inputs, f64=float_inputs, items=st.lists(float_inputs, max_size=3))
def test_float32_rounding_agrees(modules: tuple[Any, Any], f32: Any, f64: Any,
                                 items: list[Any]) -> None:
    """A Float32 field holds its value rounded to single precision (what the wire carries),
    in both builds, by number, by name, nested, and in lists."""
    fast, pure = modules
    by_number = {0: f32, 1: f64, 2: items, 3: {0: f32, 2: items}}
    by_name = {"f32": f32, "f64": f64, "l32": items, "inner": {"f32": f32}}
    for fn in ("__call__", "_cara_convert_"):
        a = _outcome(getattr(fast.Floats, fn), by_number)
        assert a == _outcome(getattr(pure.Floats, fn), by_number)
    a = _outcome(fast.Floats.Create, **by_name)
    assert a == _outcome(pure.Floats.Create, **by_name)
    if a[0] == "ok" and isinstance(f32, float) and f32 == f32:
        value = fast.Floats.Create(**by_name)
        assert value.f32 == struct.unpack("<f", struct.pack("<f", f32))[0]
        assert value.inner.f32 == value.f32


def test_msgpack_round_trips_agree(modules: tuple[Any, Any]) -> None:
    fast, pure = modules
    person = {"id": 7, "name": "n", "phones": [{"number": "1", "type": "work"}, {"type": 1}],
              "employment": {"school": "s"}}
    a, b = fast.Person.Create(**person), pure.Person.Create(**person)
    assert type(a) is not type(b) and _shape(a) == _shape(b)
    assert msgpack.packb(a) == msgpack.packb(b)
    raw = msgpack.unpackb(msgpack.packb(a), strict_map_key=False)
    assert msgpack.packb(fast.Person(raw)) == msgpack.packb(pure.Person(raw))
    assert fast.Person(raw).phones[1].type is fast.Person.PhoneNumber.Type.home


@pytest.mark.parametrize("raw", [
    {3: [{1: 7}]},                      # unknown enum number: kept (schema evolution)
    {3: [{0: "x", 1: 99999}]},          # out of range for an enum
    {0: 2**32}, {0: -1}, {0: 1.5}, {0: True},
    {4: {1: "a", 2: "b"}},              # two union members
    {4: {9: "future"}},                 # unknown number in a group
    {9: "future"},                      # unknown number
    {1: b"bytes"}, {1: None},
    {3: [None]}, {3: [{0: 1}]}, {3: ({0: "x"},)},
    {"name": "n", 0: 1},                # names and numbers mixed
    {"0": 1}, {b"name": "n"},
])
def test_edge_inputs_agree(modules: tuple[Any, Any], raw: dict[Any, Any]) -> None:
    fast, pure = modules
    assert _outcome(fast.Person, raw) == _outcome(pure.Person, raw)
    assert _outcome(fast.Person._cara_convert_, raw) == _outcome(pure.Person._cara_convert_, raw)


def _depth_outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Like :func:`_outcome`, walking the (deep) result without recursion."""
    try:
        value = fn(*args, **kwargs)
    except (ValueTypeError, DecodeError) as e:
        return ("error", str(e))
    levels = []
    while value:
        levels.append((type(value).__qualname__, type(value[0]).__qualname__))
        value = value[0][0]
    return ("ok", levels)


@pytest.mark.parametrize("depth", [1, 50, 99, 100, 101, 102, 150, 250, 400, 1200, 20000])
def test_deep_nesting(modules: tuple[Any, Any], depth: int) -> None:
    """Nesting is limited by the interpreter's recursion limit in both builds, and absurd
    nesting is a clear error in both. The accelerator builds up to 100 levels in C, then
    hands the rest to Python (which calls it again), so it accepts deeper values than pure
    Python does, where each level costs a few Python frames: in between, each build either
    gives the value or the clear error, and when both give it, they agree."""
    fast, pure = modules
    data: dict[Any, Any] = {}
    names: dict[Any, Any] = {}
    for _ in range(depth):
        data = {0: [data]}
        names = {"children": [names]}
    for a, b in ((_depth_outcome(fast.Deep, data), _depth_outcome(pure.Deep, data)),
                 (_depth_outcome(fast.Deep.Create, **names),
                  _depth_outcome(pure.Deep.Create, **names))):
        for outcome in (a, b):
            assert outcome == ("ok", outcome[1]) or outcome == (
                "error", "Deep: value nested too deeply"), outcome[:1]
        if depth <= 100 or depth >= 20000 or a[0] == b[0] == "ok":
            assert a == b


def test_subclass_and_repeated_init(modules: tuple[Any, Any]) -> None:
    fast, _ = modules

    class Mine(fast.Person):  # type: ignore[misc, name-defined]
        pass

    m = Mine({1: "n"})
    assert type(m) is Mine and m.name == "n"
    m.__init__({0: 5})  # type: ignore[misc]
    assert dict(m) == {1: "n", 0: 5}
    with pytest.raises(ValueTypeError, match=r"Person\.id"):
        fast.Person.__init__(m, {0: "x"})


def test_init_again_keeps_what_is_there(modules: tuple[Any, Any]) -> None:
    """``__init__`` on a filled struct merges, as the general path does, whatever the keys."""
    fast, pure = modules
    for update in ({0: 5}, {999: "future", 0: 5}, {"name": "m"}, {4: {1: "a"}}):
        results = []
        for module in (fast, pure):
            p = module.Person({1: "n", 2: "e"})
            p.__init__(update)
            results.append(_shape(p))
        assert results[0] == results[1], update


def test_pure_python_mode_passes_the_struct_tests() -> None:
    """The struct tests again, in a child process where the accelerator is switched off."""
    env = {**os.environ, "CARA_PURE_PYTHON": "1"}
    files = ["tests/runtime/test_struct.py", "tests/runtime/test_fast_paths.py",
             "tests/runtime/test_list_enum.py", "tests/codecs/test_msgpack_codec.py",
             "tests/codecs/test_unknown_msgpack.py", "tests/codecs/test_anypointer_msgpack.py",
             "tests/codecs/test_unknown_pointers.py"]
    code = ("import cara.runtime.struct as s, sys; assert not s.SPEEDUPS; import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{files!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


# ---------------------------------------------------------------------- msgpack and field reads
#
# The accelerator also packs structs (``to_msgpack``), reads msgpack straight into instances
# (``from_msgpack``) and serves field attributes. The same rule holds: the bytes are msgpack's,
# and every value read or error raised is the one pure Python gives.


def _read_outcome(fn: Any, *args: Any) -> Any:
    try:
        result = fn(*args)
    except (CaraError, AttributeError, TypeError, ValueError) as e:
        return (type(e).__name__, str(e))
    return ("ok", _shape(result))


packable = st.recursive(
    st.one_of(scalars, st.integers(min_value=-(2**64), max_value=2**64 + 1),
              st.sampled_from([-33, -32, -129, -128, -32769, -32768, -(2**31) - 1, -(2**31),
                               -(2**63) - 1, -(2**63), 65535, 65536, 2**64, 1.5, -0.0]),
              st.text(min_size=30, max_size=40), st.text(alphabet="ab\udc80", max_size=3),
              st.binary(min_size=250, max_size=300), st.builds(bytearray, st.binary(max_size=3))),
    lambda children: st.one_of(
        st.dictionaries(st.one_of(st.integers(), st.text(max_size=3)), children, max_size=18),
        st.lists(children, max_size=18), st.lists(children, max_size=3).map(tuple)),
    max_leaves=40)


@settings(max_examples=int(os.environ.get("CARA_SPEEDUPS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(value=packable)
def test_packing_gives_msgpacks_bytes(value: Any) -> None:
    """``_speedups.packb`` gives exactly ``msgpack.packb``'s bytes, or None (then msgpack packs,
    and raises what it raises)."""
    packed = struct_module._speedups.packb(value)
    try:
        expected = msgpack.packb(value)
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError):
        assert packed is None
        return
    assert packed is None or packed == expected


def _pack_or_nothing(value: Any) -> bytes:
    try:
        return msgpack.packb(value)  # type: ignore[no-any-return]
    except (ValueError, TypeError, OverflowError, UnicodeEncodeError):
        return b""


def _messages(fast: Any) -> Any:
    """msgpack messages: what valid and invalid inputs pack to, then cut, extended or with a
    byte changed (so that every decoder branch sees bad input too)."""
    packed = inputs.map(_pack_or_nothing)
    person = st.builds(lambda d: fast.Person.Create(**d).to_msgpack(), st.fixed_dictionaries(
        {}, optional={"id": st.integers(0, 2**32 - 1), "name": st.text(max_size=3),
                      "phones": st.lists(st.fixed_dictionaries(
                          {}, optional={"number": st.text(max_size=3),
                                        "type": st.sampled_from(["mobile", "home", "work"])}),
                          max_size=3),
                      "employment": st.sampled_from([{"school": "s"}, {"unemployed": None},
                                                     {"employer": "e" * 40}])}))
    base = st.one_of(packed, person, st.binary(max_size=12))

    def damage(data: bytes, how: int, at: int, byte: int) -> bytes:
        if not data or how == 0:
            return data
        at %= len(data)
        if how == 1:
            return data[:at]
        if how == 2:
            return data + bytes([byte])
        return data[:at] + bytes([byte]) + data[at + 1:]

    return st.builds(damage, base, st.integers(0, 3), st.integers(0, 2**16),
                     st.integers(0, 255))


@settings(max_examples=int(os.environ.get("CARA_SPEEDUPS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.integers(min_value=0, max_value=3))
def test_from_msgpack_equals_pure_python(modules: tuple[Any, Any], data: Any,
                                         which: int) -> None:
    """``from_msgpack`` (read straight into instances in C) gives the value or the error pure
    Python gives, for valid, invalid and damaged messages."""
    fast, pure = _classes(*modules)[which]
    message = data.draw(_messages(modules[0]))
    a = _read_outcome(fast.from_msgpack, message)
    assert a == _read_outcome(pure.from_msgpack, message)
    assert a == _read_outcome(fast, msgpack.unpackb(message, strict_map_key=False)) \
        if a[0] == "ok" else True
    if a[0] == "ok":
        assert _read_outcome(fast.to_msgpack, fast.from_msgpack(message)) == \
            _read_outcome(msgpack.packb, pure.from_msgpack(message))


def test_from_msgpack_reads_in_c(modules: tuple[Any, Any]) -> None:
    """The common shape is read by the accelerator (not handed back to Python), also from a
    bytearray or memoryview, and not for a subclass (which gets its own class, in Python)."""
    fast, _ = modules
    person = fast.Person.Create(id=7, name="n", phones=[{"number": "1", "type": "work"}, {}],
                                employment={"school": "s"})
    data = person.to_msgpack()
    plan = fast.Person._cara_plan_
    expected = _shape(fast.Person(msgpack.unpackb(data, strict_map_key=False)))
    for form in (data, bytearray(data), memoryview(data)):
        read = plan.unpackb(fast.Person, form)
        assert read == person and _shape(read) == expected
    assert plan.unpackb(fast.Person.PhoneNumber, data) is None

    class Mine(fast.Person):  # type: ignore[misc, name-defined]
        pass

    assert type(Mine.from_msgpack(data)) is Mine
    assert type(fast.Person.from_msgpack(data)) is fast.Person
    assert fast.Person.from_msgpack(data).phones[0].type is fast.Person.PhoneNumber.Type.work


@pytest.mark.parametrize("depth", [1, 16, 31, 32, 33, 50, 100, 250])
def test_from_msgpack_deep(modules: tuple[Any, Any], depth: int) -> None:
    fast, pure = modules
    data: dict[Any, Any] = {}
    for _ in range(depth):
        data = {0: [data]}
    message = msgpack.packb(data)
    a, b = _depth_outcome(fast.Deep.from_msgpack, message), \
        _depth_outcome(pure.Deep.from_msgpack, message)
    # Every msgpack path stops at the nesting limit (one limit for every codec), with the
    # same error in both builds; below it, both read the same values.
    assert a == b
    limit = ("error", "message nests deeper than the nesting limit (64 levels)")
    if depth <= 31:  # a struct and a list a level, and the innermost struct: 63 levels
        assert a[0] == "ok"
    else:
        assert a == limit


@settings(max_examples=int(os.environ.get("CARA_SPEEDUPS_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs, which=st.integers(min_value=0, max_value=3))
def test_field_reads_equal_pure_python(modules: tuple[Any, Any], data: dict[Any, Any],
                                       which: int) -> None:
    """Every field attribute reads the same value (or raises the same error) in both builds,
    and a list read from a field knows where it lives (for the paths in its errors)."""
    fast, pure = _classes(*modules)[which]
    try:
        a, b = fast(data), pure(data)
    except ValueTypeError:
        return
    assert type(vars(fast)[fast.cara_schema.fields[0].attr]).__name__ == "Field"
    for f in fast.cara_schema.fields:
        x = _read_outcome(getattr, a, f.attr)
        assert x == _read_outcome(getattr, b, f.attr), f.name
        if x[0] == "ok" and f.type.kind == "list" and not f.is_group:
            assert getattr(a, f.attr)._o == getattr(b, f.attr)._o == f"{fast._cara_name_}.{f.name}"
            assert getattr(a, f.attr)._o is getattr(a, f.attr)._o  # set once, then kept


_EVERY_FORM = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -32, -33, -128,
    -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63), 1.5, -0.0, float("inf"), None, True,
    False, "", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é" * 40000, "a", "é", "\x7f",
    "x" * 64, "x" * 65, "x" * 63 + "é", "é" + "x" * 70, "\U0001f600", b"", b"x" * 255,
    b"x" * 256, b"x" * 65536, [], [1] * 15, [1] * 16, [None] * 65536, {}, {"a": 1, 2: [3]},
    {i: i for i in range(16)}, {str(i): i for i in range(70000)}, [[[{"deep": [1.25]}]]],
]


@pytest.mark.parametrize("value", _EVERY_FORM, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("single_float", [False, True])
def test_every_msgpack_form_is_read_as_msgpack_reads_it(modules: tuple[Any, Any], value: Any,
                                                        single_float: bool) -> None:
    """Every msgpack form (each int width and sign, float32/64, str/bin/array/map sizes) in an
    AnyPointer field, where it is kept as msgpack decodes it: read in C, same as Python."""
    fast, pure = modules
    message = msgpack.packb({10: value, 5: -2}, use_single_float=single_float)
    read = fast.Shadow._cara_plan_.unpackb(fast.Shadow, message)
    assert read is not None
    assert _shape(read) == _shape(pure.Shadow.from_msgpack(message))
    assert read.to_msgpack() == msgpack.packb(read) == msgpack.packb(
        pure.Shadow.from_msgpack(message))


# ---------------------------------------------------------------------- what the C paths assume
#
# The accelerator takes shortcuts that hold for cara's own classes and values: a field read goes
# straight to the dict when the class reads items as dict does; packing trusts a dict or int
# subclass once it has checked the class; small name-keyed dicts are matched by identity;
# typed lists and structs keep _p, _o, _c and _cara_unknown_ in slots of C base classes. Each
# shortcut must give what pure Python gives when its assumption does not hold.


def test_field_reads_follow_an_overridden_getitem(modules: tuple[Any, Any]) -> None:
    """A subclass overriding ``__getitem__`` is read through it (as ``property(itemgetter(n))``
    reads), also when the override comes after reads through dict's own (the class's version
    tag changes, so the remembered answer is not used)."""
    outcomes = []
    for module in modules:
        class Mine(module.Person):  # type: ignore[misc, name-defined]
            pass

        p = Mine({1: "n"})
        first = (p.name, p.id)
        Mine.__getitem__ = lambda self, key: f"item {key}"  # type: ignore[method-assign]
        second = (p.name, p.id, p.phones)
        del Mine.__getitem__
        outcomes.append((first, second, p.name))
    assert outcomes[0] == outcomes[1] == (("n", 0), ("item 1", "item 0", "item 3"), "n")


def test_name_keyed_dicts_not_matched_by_identity(modules: tuple[Any, Any]) -> None:
    """Names built at run time (equal to the field names, not the same objects), more names
    than the identity match takes, unknown names and a union member twice: the same values or
    errors as pure Python."""
    def built(name: str) -> str:
        return "".join(list(name))  # an equal str that is not the interned one

    phones = [{built("number"): "1", built("type"): built("work")},
              {"number": "2", built("type"): "home"}, {built("nope"): 1}]
    cases: list[Any] = [
        {built("id"): 5, built("name"): "n", "email": "e", "phones": phones[:2]},
        {"id": 5, "name": "n", "email": "e", "phones": phones[:2],
         "employment": {built("school"): "s"}},
        {"phones": phones},
        {"employment": {"school": "s", built("employer"): "e"}},
        {"employment": {"school": "s", "employer": "e"}},
        {"c0": {"type": "one", "inner": {"a": "x"}, built("b"): 2}},
        {"type": 1, "str": "s", "int": 2, "d": "d", "self": "x", "w0": 3, "cls": True,
         "v0": "two", "c0": {"a": "y"}},  # 9 names: more than the identity match takes
        {"type": 1, "str": "s", "int": 2, "d": "d", "self": "x", "w0": 3, "cls": True,
         "v0": "two", built("nope"): 1},
    ]
    fast, pure = modules
    for case in cases:
        for name in ("Person", "Shadow"):
            a, b = getattr(fast, name), getattr(pure, name)
            assert _outcome(a, case) == _outcome(b, case), (name, case)
            assert _outcome(a._cara_convert_, case) == _outcome(b._cara_convert_, case)
            kw = {k: v for k, v in case.items() if k.isidentifier()}
            assert _outcome(a.Create, **kw) == _outcome(b.Create, **kw)


def test_packing_subclasses_after_their_class_changes() -> None:
    """``packb`` remembers which dict and int subclasses pack as dict and int do; a class
    changed afterwards (``items`` or ``__gt__`` overridden) is checked again: then msgpack packs
    it (``packb`` gives None) or the bytes are msgpack's."""
    packb = struct_module._speedups.packb

    class D(dict):  # type: ignore[type-arg]
        pass

    class N(int):
        pass

    d, i = D({1: 2}), N(7)
    assert packb(d) == msgpack.packb(d) and packb(i) == msgpack.packb(i)
    D.items = lambda self: [(3, 4)]  # type: ignore[assignment, method-assign]
    N.__gt__ = lambda self, other: False  # type: ignore[assignment, method-assign]
    assert packb(d) is None and packb(i) is None
    assert packb([d, i]) is None and packb({0: d}) is None
    del D.items, N.__gt__
    assert packb({0: [d, i]}) == msgpack.packb({0: [d, i]})


def test_slots_of_the_base_classes(modules: tuple[Any, Any]) -> None:
    """``_p``, ``_c``, ``_o`` and ``_cara_unknown_`` read as None until set, in both builds;
    pending children attach on their first change; cycles through them are collected; structs
    can be weakly referenced."""
    import gc
    import weakref

    fast, pure = modules
    assert fast.Person.__mro__[-3].__name__ == "StructBase"
    assert pure.Person.__mro__[-2] is dict
    for module in (fast, pure):
        p = module.Person()
        assert (p._p, p._c, p._cara_unknown_) == (None, None, None)
        phones = p.phones  # a pending default: points at its parent
        assert phones._p == (p, 3) and p._c == {3: phones} and dict(p) == {}
        phones.append({"number": "1"})
        assert phones._p is None and p._c == {} and p[3] is phones
        assert phones._o == "Person.phones"
        q = module.Person()
        ref = weakref.ref(q)
        q.phones  # noqa: B018 - q -> _c -> list -> _p -> q: a cycle
        del q
        gc.collect()
        assert ref() is None
        group = p.employment
        assert group._p == (p, 4)


def test_from_msgpack_is_bound_once(modules: tuple[Any, Any]) -> None:
    """``S.from_msgpack`` is the same bound method every time (nothing made per call); a
    subclass and an instance get it bound to their own class."""
    fast, _ = modules
    data = fast.Person.Create(id=3, phones=[{"type": "home"}]).to_msgpack()
    assert fast.Person.from_msgpack is fast.Person.from_msgpack

    class Mine(fast.Person):  # type: ignore[misc, name-defined]
        pass

    assert type(Mine.from_msgpack(data)) is Mine
    assert type(Mine().from_msgpack(data)) is Mine
    assert type(fast.Person().from_msgpack(data)) is fast.Person
    assert fast.Person.from_msgpack(data) == Mine.from_msgpack(data)


@pytest.mark.parametrize("message", [
    msgpack.packb({3: [{1: 7}, {1: 2}, {1: 127}, {1: 128}, {1: -1}]}),  # enum numbers, unknown
    msgpack.packb({0: 0, 1: "", 2: "a" * 31, 3: [{0: "é", 1: 0}]}),
    msgpack.packb({0: 127, 1: "x" * 32}),
    b"\x82\x01\xa2\xff\xfe\x00\x05",   # Text not UTF-8 (a fixstr)
    b"\x81\x01\xa3ab",                 # a fixstr cut short
    msgpack.packb({0: "not a number", 1: 5}),
])
def test_from_msgpack_scalar_fields(modules: tuple[Any, Any], message: bytes) -> None:
    """Text, integer and enum fields read straight from their msgpack form give what pure
    Python gives (values, unknown enum numbers, errors for bad text and wrong types)."""
    fast, pure = modules
    for name in ("Person", "Shadow"):
        a = _read_outcome(getattr(fast, name).from_msgpack, message)
        assert a == _read_outcome(getattr(pure, name).from_msgpack, message), name
