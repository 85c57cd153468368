"""Every runtime bug listed for cara 0.10.3 (notes §5), each shown fixed."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from cara.errors import ValueTypeError


def test_import_needs_no_pseud_or_tornado() -> None:
    code = ("import sys, cara, cara.runtime; "
            "bad = [m for m in ('pseud', 'tornado', 'zmq', 'capnp') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unset_scalars_are_not_none(b) -> None:  # type: ignore[no-untyped-def]
    x = b.AllScalars()
    assert x.i32 == 0 and x.t == "" and x.b is False and x.e is b.Color.red


def test_values_are_type_checked(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueTypeError):
        b.AllScalars.Create(i32="str")
    with pytest.raises(ValueTypeError):
        b.AllScalars.Create(v=5)


def test_enums_from_names_and_which(b) -> None:  # type: ignore[no-untyped-def]
    assert b.AllScalars.Create(e="blue").e is b.Color.blue
    assert b.WithUnion.Create(b="x").which() == "b"


def test_eq_and_hash_do_not_vivify(b) -> None:  # type: ignore[no-untyped-def]
    x, y = b.Basic(), b.Basic()
    assert x == y
    with pytest.raises(TypeError):
        hash(x)
    assert msgpack.packb(x) == msgpack.packb(y) == b"\x80"


def test_list_defaults_persist_and_all_mutators_convert(b) -> None:  # type: ignore[no-untyped-def]
    x = b.Basic()
    x.list.extend([1, 2])
    x.list[0:1] = [5]
    x.list += [3]
    assert dict(x) == {1: [5, 2, 3]}
    with pytest.raises(ValueTypeError):
        x.list.extend(["a"])


def test_extra_positional_args_are_an_error(b) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError):
        b.Echo(lambda text: text).echo("a", "b")


def test_to_dict_with_an_interface_works(b) -> None:  # type: ignore[no-untyped-def]
    holds = b.HoldsCaps.Create(echo=lambda text: text)
    d = holds.to_dict()
    assert isinstance(d["echo"], b.Echo)
    assert holds.ToDict()[0] is holds.echo


def test_numbers_are_field_indexes_not_ordinals(b) -> None:  # type: ignore[no-untyped-def]
    # In WithUnion the group ``c`` holds x @3 and y @4, numbered 0 and 1 in its own scope.
    u = b.WithUnion.Create(c={"y": "why"})
    assert msgpack.unpackb(msgpack.packb(u), strict_map_key=False) == {3: {1: "why"}}


def test_int_keys_unpack_with_from_msgpack(b) -> None:  # type: ignore[no-untyped-def]
    packed = msgpack.packb({0: 1})
    with pytest.raises(ValueError):
        msgpack.unpackb(packed)  # msgpack >= 1.0 refuses int keys by default
    assert b.Basic.from_msgpack(packed).field == 1
