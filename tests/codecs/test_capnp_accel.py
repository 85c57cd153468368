"""The C fast path of the binary codec (cara/codecs/capnp/_binary.c) against pure Python.

``s.to_bytes()`` and ``S.from_bytes(b)`` of an accelerated class run in C and hand anything
but the plain case to the Python codec; a class prepared without the accelerator runs the
Python codec alone. For every struct of test.capnp (capnproto 0.9.2), built twice (with and
without the accelerator), the two builds must give the same bytes for the same value, the same
decoded values (same items in the same order, same classes at every depth, same unknown data
kept) for the same bytes, and the same error (class and message, byte offsets included) for
the same bad input: hypothesis-generated values, the corpus' reference messages, values with
wrong types or out-of-range numbers put into a struct past its checks, and mutated messages
(a few thousand; ``CARA_LONG=1``: 100,000), which must never crash the C code.

So that the equality is not won by C always declining, every valid message and value here
must also be taken by C itself (``accel.binary.encode``/``decode`` return no ``BAIL``) for the
classes that have a C plan, and the test names classes that must have one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cara.codecs.capnp import accel
from cara.errors import CaraError
from cara.runtime import Struct
from cara.runtime import struct as struct_module
from tests.conftest import LONG
from tests.runtime.test_binary_interop import _SETTINGS, STRUCT_NAMES, _lookup, struct_strategy
from tests.support.corpus_modules import TEST_CAPNP, reachable_classes
from tests.test_fuzz_untrusted import _mutate

pytestmark = pytest.mark.skipif(accel.binary is None or not struct_module.SPEEDUPS,
                                reason="the C accelerator is not built (or CARA_PURE_PYTHON=1)")

#: Mutated messages (CARA_LONG=1: the issue's 100,000).
FUZZ_INPUTS = 100_000 if LONG else 3000
EXAMPLES = 60 if LONG else 8

#: Structs the C path must take (the rest may go to Python: AnyPointer and capability fields,
#: lists of lists, generic parameters).
MUST_ACCELERATE = ["TestAllTypes", "TestUnion", "TestGroups", "TestInterleavedGroups",
                   "TestUnnamedUnion", "TestUnionInUnion", "TestDefaults", "TestOldVersion",
                   "TestNewVersion", "TestLateUnion", "TestFieldZeroIsBit",
                   "TestEmptyStruct", "TestWholeFloatDefault", "TestPrintInlineStructs"]


@pytest.fixture(scope="module")
def pair(corpus_092: Path) -> tuple[Any, Any]:
    """test.capnp twice: accelerated, and prepared without the accelerator."""
    import cara.schema
    from cara.runtime import build_module

    request = cara.schema.compile([str(corpus_092 / TEST_CAPNP)],
                                  import_path=[str(corpus_092 / "c++/src")])
    fast = build_module(request, request.requestedFiles[0].id, name="cara_accel_fast",
                        register=False)
    pure = build_module(request, request.requestedFiles[0].id, name="cara_accel_pure",
                        register=False)
    for cls in reachable_classes(pure):
        if issubclass(cls, Struct):
            cls._cara_prepare_(accelerate=False)
    for cls in reachable_classes(fast):
        if issubclass(cls, Struct):
            cls._cara_prepare_()
    return fast, pure


def _shape(value: Any) -> Any:
    """Everything that must agree: classes by name, items in order, unknown data kept."""
    if isinstance(value, dict):
        u = getattr(value, "_cara_unknown_", None)
        kept = None if u is None else (u.disc, u.loc is not None)
        return (type(value).__qualname__, kept,
                tuple((k, _shape(v)) for k, v in dict.items(value)))
    if isinstance(value, list):
        return (type(value).__qualname__, tuple(_shape(v) for v in value))
    if isinstance(value, float):
        return ("float", value.hex() if value == value else "nan")
    return (type(value).__qualname__, repr(value))


def _read(cls: Any, data: bytes, packed: bool = False) -> Any:
    """What ``cls.from_bytes(data)`` gives: the value's shape and its bytes written again, or
    the error."""
    try:
        value = cls.from_bytes(data, packed=packed)
    except CaraError as e:
        return ("error", type(e).__name__, str(e))
    try:
        again = value.to_bytes(packed=packed)
    except CaraError as e:
        again = ("error", type(e).__name__, str(e))
    return ("ok", _shape(value), again)


def _write(value: Any) -> Any:
    try:
        return value.to_bytes()
    except CaraError as e:
        return ("error", type(e).__name__, str(e))


def _plan(cls: Any) -> Any:
    if "_cara_capnp_read_" not in cls.__dict__:
        cls.from_bytes(b"\0\0\0\0\1\0\0\0" + bytes(8))  # (an empty message: makes the reader)
    return cls.__dict__.get("_cara_capnp_cplan_")


def test_c_plans_are_made(pair: tuple[Any, Any]) -> None:
    fast, pure = pair
    for name in MUST_ACCELERATE:
        assert _plan(_lookup(fast, name)) is not None, name
        assert _plan(_lookup(pure, name)) is None, name


@pytest.mark.parametrize("name", STRUCT_NAMES)
def test_values_agree(pair: tuple[Any, Any], name: str) -> None:
    fast_cls, pure_cls = _lookup(pair[0], name), _lookup(pair[1], name)
    plan = _plan(fast_cls)

    @settings(_SETTINGS, max_examples=EXAMPLES)
    @given(value=struct_strategy(fast_cls), rng=st.randoms(use_true_random=False))
    def check(value: dict[int, Any], rng: random.Random) -> None:
        a, b = fast_cls(value), pure_cls(value)
        data = _write(a)
        assert data == _write(b)
        assert isinstance(data, bytes), data
        if plan is not None:  # C takes every valid value and message itself
            assert accel.binary.encode(plan, a) == data
            assert accel.binary.decode(plan, data) is not accel.binary.BAIL
        assert _read(fast_cls, data) == _read(pure_cls, data)
        for _ in range(3):
            bad = _mutate(rng, data)
            assert _read(fast_cls, bad) == _read(pure_cls, bad)
    check()


#: values no schema type takes, and numbers at and past the limits
_JUNK = [None, True, -1, 0, 1, 255, 256, 65535, 65536, 2**31, -2**31 - 1, 2**32, 2**63,
         2**64, -2**63 - 1, 1.5, float("nan"), float("inf"), 3.5e38, "x", "\udc80", b"x",
         bytearray(b"x"), [], [None], [1, "x"], [{}], ({},), {}, {0: "x"}, object()]


@pytest.mark.parametrize("name", ["TestAllTypes", "TestUnion", "TestGroups", "TestDefaults",
                                  "TestUnionInUnion", "TestInterleavedGroups"])
def test_bad_values_give_the_same_error(pair: tuple[Any, Any], name: str) -> None:
    """Values that construction would refuse, put into a struct past its checks (as a
    caller's ``dict`` methods can), and written by both builds."""
    fast_cls, pure_cls = _lookup(pair[0], name), _lookup(pair[1], name)
    rng = random.Random(name)
    fields = fast_cls.cara_schema.fields
    taken = 0
    for _ in range(400):
        junk = {f.number: rng.choice(_JUNK) for f in rng.sample(fields, min(3, len(fields)))}
        a, b = fast_cls(), pure_cls()
        dict.update(a, junk)
        dict.update(b, junk)
        out = _write(a)
        assert out == _write(b), junk
        taken += isinstance(out, bytes)
    assert taken  # (some of it is writable: both builds agree on those bytes too)


def _corpus_messages(corpus_092: Path) -> list[tuple[str, bytes]]:
    data = corpus_092 / "c++/src/capnp/testdata"
    return [("TestAllTypes", (data / "binary").read_bytes()),
            ("TestAllTypes", (data / "segmented").read_bytes()),
            ("TestLists", (data / "lists.binary").read_bytes())]


def test_corpus_messages_agree(pair: tuple[Any, Any], corpus_092: Path) -> None:
    fast, pure = pair
    for name, data in _corpus_messages(corpus_092):
        fast_cls, pure_cls = _lookup(fast, name), _lookup(pure, name)
        out = _read(fast_cls, data)
        assert out[0] == "ok", out
        assert out == _read(pure_cls, data)
    binary = _corpus_messages(corpus_092)[0][1]
    plan = _plan(fast.TestAllTypes)
    assert accel.binary.decode(plan, binary) is not accel.binary.BAIL
    assert accel.binary.decode(plan, _corpus_messages(corpus_092)[1][1]) is accel.binary.BAIL


def _corrupt(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few bytes or words of its segment changed, its framing kept: bits
    flipped, words zeroed, pointers aimed elsewhere (struct, list, far and capability pointers
    with small offsets and sizes, so that many still land inside the message)."""
    out = bytearray(data)
    words = (len(out) - 8) // 8
    for _ in range(rng.randint(1, 4)):
        at = 8 + 8 * rng.randrange(words)
        op = rng.random()
        if op < 0.4:
            out[at + rng.randrange(8)] ^= 1 << rng.randrange(8)
        elif op < 0.55:
            out[at:at + 8] = bytes(8)
        else:
            kind = rng.choice((0, 0, 1, 1, 2, 3))
            offset = rng.randint(-4, words)
            lo = (offset << 2 | kind) & 0xFFFFFFFF
            if kind == 1:
                hi = rng.randint(0, 24) << 3 | rng.randrange(8)
            else:
                hi = rng.randint(0, 4) | rng.randint(0, 4) << 16
            out[at:at + 8] = lo.to_bytes(4, "little") + hi.to_bytes(4, "little")
    return bytes(out)


def test_mutated_messages_agree(pair: tuple[Any, Any], corpus_092: Path) -> None:
    """Mutated corpus messages and values (far pointers, bad pointers, cut and repeated
    stretches): the same value or the same DecodeError in both builds, never a crash."""
    fast, pure = pair
    seeds = _corpus_messages(corpus_092)
    seeds += [("TestUnion", fast.TestUnion.Create(union0={"u0f1sp": "x"},
                                                  union1={"u1f0s8": -3}).to_bytes()),
              ("TestGroups", fast.TestGroups.Create(
                  groups={"bar": {"corge": 7, "grault": "a", "garply": -1}}).to_bytes()),
              ("TestNewVersion", fast.TestNewVersion(_NEWER).to_bytes()),
              ("TestOldVersion", fast.TestNewVersion(_NEWER).to_bytes())]
    rng = random.Random(15)
    taken = 0
    for i in range(FUZZ_INPUTS):
        name, data = seeds[i % len(seeds)]
        bad = _mutate(rng, data) if i & 1 else _corrupt(rng, data)
        fast_cls = _lookup(fast, name)
        out = _read(fast_cls, bad)
        assert out == _read(_lookup(pure, name), bad), (name, bad.hex())
        taken += accel.binary.decode(_plan(fast_cls), bad) is not accel.binary.BAIL \
            if _plan(fast_cls) is not None else 0
    assert taken > FUZZ_INPUTS // 20, taken  # (C took a good share of them itself)


def test_mutated_packed_messages_agree(pair: tuple[Any, Any], corpus_092: Path) -> None:
    """Packed input: the packing mutated, and mutated messages packed."""
    from cara.codecs.capnp import pack

    fast, pure = pair
    seeds = [pack(data) for _name, data in _corpus_messages(corpus_092)[:1]]
    seeds.append((corpus_092 / "c++/src/capnp/testdata/packed").read_bytes())
    rng = random.Random(16)
    for i in range(FUZZ_INPUTS // 3):
        data = seeds[i % len(seeds)]
        bad = _mutate(rng, data) if i & 1 else pack(_corrupt(rng, _corpus_messages(
            corpus_092)[0][1]))
        out = _read(fast.TestAllTypes, bad, packed=True)
        assert out == _read(pure.TestAllTypes, bad, packed=True), bad.hex()


def test_unknown_data_is_kept_in_both_builds(pair: tuple[Any, Any]) -> None:
    """A newer schema's message read with an older one (an unknown field and pointer, an
    unknown union member): C declines, the Python codec keeps what it does not know, in both
    builds; what the older schema knows entirely, C reads."""
    fast, pure = pair
    cases = [(fast.TestNewVersion(_NEWER), "TestOldVersion", True),
             (fast.TestNewUnionVersion.Create(a={"a1": 5}), "TestOldUnionVersion", True),
             (fast.TestNewUnionVersion.Create(b=9), "TestOldUnionVersion", False)]
    for value, old, unknown in cases:
        data = value.to_bytes()
        out = _read(_lookup(fast, old), data)
        assert out == _read(_lookup(pure, old), data)
        assert out[0] == "ok" and (out[1][1] is not None) == unknown, out
        if unknown:
            assert out[2] == data  # written back with what it did not know
        taken = accel.binary.decode(_plan(_lookup(fast, old)), data)
        assert (taken is accel.binary.BAIL) == unknown


#: a TestNewVersion whose new fields an older reader does not know
_NEWER = {0: 1, 1: "o", 2: {0: 2, 4: "inner"}, 3: 7, 4: "new"}


def test_entry_points_take_every_call(pair: tuple[Any, Any], corpus_092: Path) -> None:
    """``to_bytes``/``from_bytes`` of a class with a C plan are C entry points; calls with
    keywords (packing, limits) and calls on subclasses go to the Python methods, and give what
    the pure build gives."""
    fast, pure = pair
    data = _corpus_messages(corpus_092)[0][1]
    fast_cls, pure_cls = fast.TestAllTypes, pure.TestAllTypes
    _plan(fast_cls)
    assert type(fast_cls.__dict__["from_bytes"]).__name__ == "FromBytes"
    assert type(fast_cls.__dict__["to_bytes"]).__name__ == "ToBytes"
    assert "to_bytes" not in pure_cls.__dict__
    a, b = fast_cls.from_bytes(data), pure_cls.from_bytes(data)
    assert _shape(a) == _shape(b)
    assert a.to_bytes(packed=True) == b.to_bytes(packed=True)
    packed = b.to_bytes(packed=True)
    assert _shape(fast_cls.from_bytes(packed, packed=True)) == \
        _shape(pure_cls.from_bytes(packed, packed=True))
    defaults = {"traversal_limit_in_words": 8 * 1024 * 1024, "nesting_limit": 64}
    assert _shape(fast_cls.from_bytes(data, **defaults)) == _shape(b)  # (as streams read)
    for limits in ({"traversal_limit_in_words": 10}, {"nesting_limit": 1}):
        with pytest.raises(CaraError) as fast_error:
            fast_cls.from_bytes(data, **limits)
        with pytest.raises(CaraError) as pure_error:
            pure_cls.from_bytes(data, **limits)
        assert str(fast_error.value) == str(pure_error.value)

    class FastSub(fast_cls):  # type: ignore[misc, valid-type]
        pass

    class PureSub(pure_cls):  # type: ignore[misc, valid-type]
        pass

    c, d = FastSub.from_bytes(data), PureSub.from_bytes(data)
    assert type(c) is FastSub and type(d) is PureSub
    assert c.to_bytes() == d.to_bytes() == a.to_bytes()
