"""``cara convert`` through an older schema keeps what a newer one wrote (issue 16).

A binary message written by libcapnp with a newer schema goes ``binary:msgpack`` and back
``msgpack:binary`` (or ``packed``, ``canonical``) through the older schema: the result must be
byte for byte what ``capnp convert binary:binary`` (libcapnp's copy, which keeps everything)
makes of the original. The msgpack form is ``to_msgpack()``'s, so the library reads it and
keeps the data too. Text and JSON carry only what the schema knows, as ``capnp convert``'s do;
JSON refuses a union member it cannot name (see ``docs/formats.md``).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings

from cara.codecs.convert import convert_stream
from tests.codecs.test_unknown_data import NEWER, SUB, Schemas, _items
from tests.codecs.test_unknown_pointers import Schemas as PointerSchemas
from tests.conftest import LONG

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Schemas:
    if shutil.which("capnp") is None:
        pytest.skip("the capnp tool is not installed (apt-get install capnproto)")
    return Schemas(tmp_path_factory.mktemp("unknown_convert"))


def cara(schemas: Schemas, conversion: str, data: bytes, name: str = "Item",
         schema: str = "old_items.capnp", where: Path | None = None) -> bytes:
    """``cara convert`` in-process (status 0 asserted)."""
    status, out, err = cara_status(conversion, data, (where or schemas.dir) / schema, name)
    assert (status, err) == (0, "")
    return out


def cara_status(conversion: str, data: bytes, schema: Path, name: str) -> tuple[int, bytes, str]:
    values = {"import_path": [], "no_standard_import": False, "quiet": False,
              "segment_size": None, "short": True, "verbose": False}
    out, err = io.BytesIO(), io.StringIO()
    source, target = conversion.split(":")
    status = convert_stream(values, source, target, [str(schema), name],
                            stdin=io.BytesIO(data), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def capnp(conversion: str, data: bytes, schema: Path, name: str = "Item") -> bytes:
    """``capnp convert`` (libcapnp's tool)."""
    return subprocess.run(["capnp", "convert", conversion, schema.name, name], input=data,
                          capture_output=True, cwd=schema.parent, check=True).stdout


@pytest.mark.parametrize("target", ["binary", "packed", "canonical"])
def test_binary_msgpack_binary_is_libcapnp_s_copy(schemas: Schemas, target: str) -> None:
    data = schemas.newer(NEWER)
    form = cara(schemas, "binary:msgpack", data)
    back = cara(schemas, f"msgpack:{target}", form)
    new = schemas.dir / "new_items.capnp"
    assert back == capnp(f"binary:{target}", data, new)
    # (the same, read by the newer schema: every field the older one does not know is there)
    if target == "binary":
        assert schemas.read_new(back) == schemas.read_new(data)
        assert schemas.read_new(back)["kind"]["sized"]["height"] == 4


def test_a_stream_of_messages_and_packed_input(schemas: Schemas) -> None:
    first, second = schemas.newer(NEWER), schemas.newer({"id": 2, "sub": SUB, "note": "n"})
    new = schemas.dir / "new_items.capnp"
    packed = capnp("binary:packed", first + second, new)
    back = cara(schemas, "msgpack:binary", cara(schemas, "packed:msgpack", packed))
    assert back == capnp("binary:binary", first + second, new)


def test_the_library_reads_what_convert_writes(schemas: Schemas) -> None:
    """The msgpack form is the library's: ``from_msgpack`` keeps the unknown data, a change
    to a known field and ``to_bytes()`` give what libcapnp's copy with the same change gives,
    and what the library writes, ``msgpack:binary`` turns back into libcapnp's copy."""
    data = schemas.newer(NEWER)
    value = schemas.old.Item.from_msgpack(cara(schemas, "binary:msgpack", data))
    assert value.which() is None
    value.id = 42

    def change(v: Any) -> None:
        v.id = 42
    assert schemas.read_new(value.to_bytes()) == \
        schemas.read_new(schemas.libcapnp_copy(data, change))
    unchanged = schemas.old.Item.from_bytes(data).to_msgpack()
    assert cara(schemas, "msgpack:binary", unchanged) == \
        capnp("binary:binary", data, schemas.dir / "new_items.capnp")
    assert cara(schemas, "binary:msgpack", data) == unchanged  # (one form, both ways)


def test_a_known_field_changed_in_the_msgpack_form(schemas: Schemas) -> None:
    data = schemas.newer(NEWER)
    form = msgpack.unpackb(cara(schemas, "binary:msgpack", data), strict_map_key=False)
    form[0] = 42  # id
    form[2] = "renamed"  # name

    def change(v: Any) -> None:
        v.id = 42
        v.name = "renamed"
    back = cara(schemas, "msgpack:binary", msgpack.packb(form))
    assert schemas.read_new(back) == schemas.read_new(schemas.libcapnp_copy(data, change))


def test_text_and_json_carry_only_what_the_schema_knows(schemas: Schemas) -> None:
    """From msgpack as from binary: text is ``capnp convert``'s text of the original with the
    old schema (unknown fields left out, an unknown member printed empty); JSON refuses a
    union member it cannot name, and leaves the other unknown fields out."""
    old = schemas.dir / "old_items.capnp"
    data = schemas.newer(NEWER)
    form = cara(schemas, "binary:msgpack", data)
    assert cara(schemas, "msgpack:text", form) == cara(schemas, "binary:text", data)
    status, _out, err = cara_status("msgpack:json", form, old, "Item")
    assert status == 1 and "member number 3" in err  # (ratio: unknown in the old schema)
    known = schemas.newer({**{k: v for k, v in NEWER.items() if k not in ("ratio", "child")},
                           "label": "l"})
    json_form = cara(schemas, "binary:msgpack", known)
    assert cara(schemas, "msgpack:json", json_form) == cara(schemas, "binary:json", known)
    assert b"note" not in cara(schemas, "msgpack:json", json_form)


def test_text_is_capnp_s_text(schemas: Schemas) -> None:
    old = schemas.dir / "old_items.capnp"
    data = schemas.newer(NEWER)
    values = {"import_path": [], "no_standard_import": False, "quiet": False,
              "segment_size": None, "short": False, "verbose": False}
    out, err = io.BytesIO(), io.StringIO()
    form = cara(schemas, "binary:msgpack", data)
    status = convert_stream(values, "msgpack", "text", [str(old), "Item"],
                            stdin=io.BytesIO(form), stdout=out, stderr=err)
    assert status == 0 and out.getvalue() == capnp("binary:text", data, old)


BAD: list[tuple[Any, str]] = [
    ({-1: 5}, r"must be a Cap'n Proto message \(msgpack ext type 0x43\), not int"),
    ({-1: msgpack.ExtType(0x43, b"\0" * 7)}, "not a multiple of 8"),
    ({-1: msgpack.ExtType(0x43, bytes.fromhex("0000000000000100") +
                          bytes.fromhex("fcffffff00000100"))}, "nest|traversal"),
    ({6: {-1: 1}}, r"kind: unknown data \(key -1\): discriminant 1 is out of range or a member"),
    ({6: {-1: "x"}}, r"kind: unknown data \(key -1\) of a group is its union's discriminant"),
]


@pytest.mark.parametrize(("form", "error"), BAD)
def test_bad_unknown_data_is_refused(schemas: Schemas, form: Any, error: str) -> None:
    import re

    status, out, err = cara_status("msgpack:binary", msgpack.packb(form),
                                   schemas.dir / "old_items.capnp", "Item")
    assert status == 1 and out == b"" and re.search(error, err), err


def test_a_deep_kept_struct_is_refused_where_binary_would_nest_too_deep(
        schemas: Schemas) -> None:
    sub: dict[str, Any] = {"t": "leaf"}
    for _ in range(20):
        sub = {"subs": [sub]}
    form = msgpack.unpackb(cara(schemas, "binary:msgpack", schemas.newer({"more": [sub]})),
                           strict_map_key=False)
    assert cara(schemas, "msgpack:binary", msgpack.packb({7: form}))  # (7: child)
    deep = form
    for _ in range(43):
        deep = {7: deep}
    status, _, err = cara_status("msgpack:binary", msgpack.packb(deep),
                                 schemas.dir / "old_items.capnp", "Item")
    assert status == 1 and "unknown data (key -1)" in err and "nest" in err, err


def test_anypointer_and_capability_structs(tmp_path: Path) -> None:
    """A struct with AnyPointer and capability fields: AnyPointer values travel as ext 0x43
    (as ``to_msgpack()`` writes them), unknown data as elsewhere."""
    if shutil.which("capnp") is None:
        pytest.skip("the capnp tool is not installed (apt-get install capnproto)")
    boxes = PointerSchemas(tmp_path)
    data = boxes.newer(boxes.newest)
    old, new = tmp_path / "old_boxes.capnp", tmp_path / "new_boxes.capnp"
    status, form, err = cara_status("binary:msgpack", data, old, "Box")
    assert (status, err) == (0, "")
    assert msgpack.unpackb(form, strict_map_key=False)[1].code == 0x43  # any
    status, back, err = cara_status("msgpack:binary", form, old, "Box")
    assert (status, err) == (0, "")
    assert back == capnp("binary:binary", data, new, "Box")


@settings(max_examples=200 if LONG else 25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=_items())
def test_any_newer_value(schemas: Schemas, value: dict[str, Any]) -> None:
    """Whatever the newer schema wrote, the newer schema reads it back. (Not always the same
    bytes as libcapnp's copy: a section whose part beyond the old schema's is all zero holds
    nothing to keep, and is written at the old schema's size.)"""
    data = schemas.newer(value)
    back = cara(schemas, "msgpack:binary", cara(schemas, "binary:msgpack", data))
    assert schemas.read_new(back) == schemas.read_new(data)


def test_the_command(schemas: Schemas) -> None:
    """The real ``cara convert`` command, in a pipeline with ``capnp convert``."""
    data = schemas.newer(NEWER)
    old = str(schemas.dir / "old_items.capnp")

    def run(conversion: str, given: bytes) -> bytes:
        return subprocess.run([sys.executable, "-m", "cara", "convert", conversion, old, "Item"],
                              input=given, capture_output=True, cwd=REPO, check=True).stdout
    back = run("msgpack:packed", run("binary:msgpack", data))
    assert capnp("packed:binary", back, schemas.dir / "new_items.capnp") == \
        capnp("binary:binary", data, schemas.dir / "new_items.capnp")
