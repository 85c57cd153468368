"""``cara convert FROM:TO [SCHEMA TYPE]``: turn a stream of messages from one format into another.

It mirrors ``capnp convert`` (0.9.2): the same formats (binary, packed, flat, flat-packed,
canonical, text, json) plus cara's ``msgpack`` form, the same output bytes, the same warnings when
the input looks like another format, and the same rules on what a "stream" is:

* binary and packed input may hold several messages back to back, each converted in turn;
* text input is split at each top-level ``(...)``, JSON input at each top-level ``{...}``,
  msgpack input at each top-level object;
* flat, flat-packed and canonical input is always one message (there is no framing to tell
  where a message ends).

Binary output is laid out like libcapnp's ``MallocMessageBuilder`` lays out a copied message: a
first segment of 1024 words growing heuristically, or fixed segments of ``--segment-size`` words,
objects in preorder, a far pointer with a landing pad whenever an object does not fit the segment
of the pointer that points to it. That is what makes ``binary`` / ``packed`` output
byte-identical with the reference tool even for messages that need several segments.

The msgpack form is cara's wire form keyed by field number, what ``s.to_msgpack()`` writes for
the struct ``S.from_bytes()`` decodes: a struct is a map from the field's index in its scope
(its position in the schema's field list) to the value, leaving out what is at its default;
groups and named unions nest as maps likewise, lists are arrays, enums ints, Data ``bin``,
Text ``str``, AnyPointer values Cap'n Proto messages (ext 0x43). What a newer schema wrote
that the given one does not know is kept under the key -1 (see :mod:`.capnp.kept`), so binary
-> msgpack -> binary through an older schema loses nothing; text and JSON carry only the known
fields, as ``capnp convert``'s do.

Every problem with the input ends the run with exit status 1 and a message naming the message
number and the byte offset (for packed input: the offset in the unpacked bytes).
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from cara.errors import CaraError, DecodeError, EncodeError, SchemaError, ValueTypeError
from cara.schema import model

from .capnp.builder import MessageBuilder, copy_pointer
from .capnp.canonical import canonicalize
from .capnp.copying import Ref, copy_object, list_words
from .capnp.framing import frame_segments, framed_size, read_flat, read_framed
from .capnp.packing import pack, pack_framed, unpack
from .capnp.reader import DEFAULT_TRAVERSAL_LIMIT, AnyPointerReader, Message, resolve

__all__ = [
    "BINARY_FORMATS",
    "FORMATS",
    "SCHEMA_FORMATS",
    "ConvertError",
    "Converter",
    "SegmentedCopy",
    "convert_stream",
    "from_msgpack_form",
    "split_json",
    "split_text",
    "to_msgpack_form",
]

FORMATS = ("binary", "packed", "flat", "flat-packed", "canonical", "text", "json", "msgpack")
BINARY_FORMATS = frozenset({"binary", "packed", "flat", "flat-packed", "canonical"})
SCHEMA_FORMATS = frozenset({"text", "json", "msgpack"})

#: libcapnp's MallocMessageBuilder defaults: SUGGESTED_FIRST_SEGMENT_WORDS, and the largest
#: segment a framed message can describe.
FIRST_SEGMENT_WORDS = 1024
MAX_SEGMENT_WORDS = (1 << 29) - 1

_PTR = struct.Struct("<iI")
#: A root pointer to a zero-size struct (offset -1), what libcapnp writes for an empty root.
_EMPTY_STRUCT_ROOT = _PTR.pack(-4, 0)
_U32 = struct.Struct("<I")
_PROG = "cara convert"


class ConvertError(CaraError):
    """A conversion that cannot go on; the message is printed after ``cara convert:``."""


# ------------------------------------------------------------------------ segmented builder


class SegmentedCopy:
    """Copies a message the way libcapnp's ``MallocMessageBuilder::setRoot`` does.

    ``segment_words`` set means ``AllocationStrategy::FIXED_SIZE`` with that many words per
    segment; ``None`` means the default: a first segment of 1024 words, later segments as large
    as everything allocated so far (``GROW_HEURISTICALLY``).
    """

    def __init__(self, segment_words: int | None = None) -> None:
        self.fixed = segment_words is not None
        self.next_size = max(1, segment_words) if segment_words is not None \
            else FIRST_SEGMENT_WORDS
        self.segments: list[bytearray] = []
        self.capacity: list[int] = []
        self.used: list[int] = []
        self.with_space = -1

    # ------------------------------------------------------------------- allocation

    def _new_segment(self, words: int) -> int:
        size = max(words, self.next_size)
        if not self.fixed:
            # After the first segment, the next one is as large as everything so far.
            self.next_size = min(self.next_size + size if self.segments else size,
                                 MAX_SEGMENT_WORDS)
        self.segments.append(bytearray(size * 8))
        self.capacity.append(size)
        self.used.append(0)
        return len(self.segments) - 1

    def _try(self, seg: int, words: int) -> int:
        """Word offset of ``words`` fresh words in segment ``seg``, or -1 when full."""
        used = self.used[seg]
        if used + words > self.capacity[seg]:
            return -1
        self.used[seg] = used + words
        return used

    def _arena_allocate(self, words: int) -> tuple[int, int]:
        if self.with_space >= 0:
            at = self._try(self.with_space, words)
            if at >= 0:
                return self.with_space, at
        seg = self._new_segment(words)
        self.with_space = seg
        return seg, self._try(seg, words)

    def allocate(self, seg: int, ref: int, words: int) -> tuple[int, int, int]:
        """Space for an object of ``words`` words pointed to by the pointer at word ``ref`` of
        segment ``seg``: ``(segment, object word, pointer word)``. It goes into the pointer's
        own segment when it fits; otherwise elsewhere behind a landing pad, the original pointer
        becoming a far pointer and the landing pad the pointer the caller fills."""
        at = self._try(seg, words)
        if at >= 0:
            return seg, at, ref
        new_seg, pad = self._arena_allocate(words + 1)
        _PTR.pack_into(self.segments[seg], ref * 8, (pad << 3) | 2, new_seg)
        return new_seg, pad + 1, pad

    def _point(self, seg: int, ref: int, target: int, kind: int, hi: int) -> None:
        _PTR.pack_into(self.segments[seg], ref * 8, ((target - ref - 1) << 2) | kind, hi)

    # ------------------------------------------------------------------------- copying

    def copy_root(self, msg: Message) -> None:
        seg = self._new_segment(1)
        self.with_space = seg
        self._try(seg, 1)
        copy_object(self, (seg, 0), msg, 0, msg.bounds[0][0], msg.nesting_limit)

    def segment(self, seg: int) -> bytearray:
        return self.segments[seg]

    def set_capability(self, ref: Ref, index: int) -> None:
        _PTR.pack_into(self.segments[ref[0]], ref[1], 3, index)

    def init_struct(self, ref: Ref, data_words: int, ptr_count: int) -> Ref:
        total = data_words + ptr_count
        if total == 0:
            _PTR.pack_into(self.segments[ref[0]], ref[1], -4, 0)
            return ref
        oseg, at, pref = self.allocate(ref[0], ref[1] >> 3, total)
        self._point(oseg, pref, at, 0, data_words | ptr_count << 16)
        return oseg, at * 8

    def init_list(self, ref: Ref, size_code: int, count: int) -> Ref:
        oseg, at, pref = self.allocate(ref[0], ref[1] >> 3, list_words(size_code, count))
        self._point(oseg, pref, at, 1, count << 3 | size_code)
        return oseg, at * 8

    def init_struct_list(self, ref: Ref, count: int, data_words: int, ptr_count: int) -> Ref:
        words = count * (data_words + ptr_count)
        oseg, at, pref = self.allocate(ref[0], ref[1] >> 3, words + 1)
        self._point(oseg, pref, at, 1, words << 3 | 7)
        _PTR.pack_into(self.segments[oseg], at * 8, count << 2, data_words | ptr_count << 16)
        return oseg, at * 8 + 8

    def result(self) -> list[bytes]:
        return [bytes(s[:u * 8]) for s, u in zip(self.segments, self.used, strict=True)]


# ---------------------------------------------------------------------------- msgpack form


def to_msgpack_form(nodes: Mapping[int, model.Node], struct_id: int,
                    value: Mapping[str, Any]) -> dict[int, Any]:
    """A plain struct value keyed by field name -> cara's msgpack form keyed by field index.
    Null pointers are left out; a union's set member is always kept (it carries the
    discriminant). Only what the schema knows, and no AnyPointer values: ``cara convert``
    itself writes the form from the sparse decoder's value (see :meth:`Converter.write`),
    which keeps both."""
    fields = _fields(nodes, struct_id)
    out: dict[int, Any] = {}
    for index, field in enumerate(fields):
        if field.name not in value:
            continue
        member = value[field.name]
        if member is None and field.discriminantValue == model.NO_DISCRIMINANT:
            continue
        out[index] = _to_form(nodes, field, member)
    return out


def _to_form(nodes: Mapping[int, model.Node], field: model.Field, member: Any) -> Any:
    if field.which == "group":
        assert field.group is not None
        return to_msgpack_form(nodes, field.group.typeId, member or {})
    assert field.slot is not None
    return _type_to_form(nodes, field.slot.type, member, field.name)


def _type_to_form(nodes: Mapping[int, model.Node], type_: model.Type, member: Any,
                  where: str) -> Any:
    which = type_.which
    if member is None:
        return None
    if which == "struct":
        assert type_.struct is not None
        return to_msgpack_form(nodes, type_.struct.typeId, member)
    if which == "list":
        assert type_.list is not None
        element = type_.list.elementType
        return [_type_to_form(nodes, element, item, where) for item in member]
    if which == "anyPointer":
        raise EncodeError(f"{where}: an AnyPointer field has no msgpack form")
    return member


def _kept_form(codec: Any, plan: Any, value: Mapping[int, Any]) -> dict[int, Any]:
    """The msgpack form of a struct as the sparse index-keyed codec decoded it: what
    ``to_msgpack()`` writes for the struct ``S.from_bytes()`` gives (AnyPointer values as
    Cap'n Proto messages in ext 0x43; unknown data under key -1, see
    :mod:`.capnp.kept`)."""
    import msgpack

    from .capnp.kept import flat_of_record
    from .capnp.reader import EXT_CAPNP_MESSAGE

    fields_of = plan.by_key
    if fields_of is None:
        fields_of = plan.by_key = {fp.key: fp for fp in plan.fields}
    out: dict[int, Any] = {}
    for key, item in value.items():
        fp = fields_of[key]
        if fp.kind == "group":
            out[key] = _kept_form(codec, codec.plan(fp.group_id), item)
        else:
            out[key] = _kept_item(codec, fp.type, item)
    record = getattr(value, "_cara_unknown_", None)
    if record is not None:
        if record.loc is not None:
            out[-1] = msgpack.ExtType(EXT_CAPNP_MESSAGE, flat_of_record(codec, plan, record))
        elif record.disc is not None:  # a group's unknown union member
            out[-1] = record.disc
    return out


def _kept_item(codec: Any, type_: model.Type, item: Any) -> Any:
    if item is None:
        return None
    which = type_.which
    if which == "struct":
        return _kept_form(codec, codec.plan_for_type(type_), item)
    if which == "list":
        assert type_.list is not None
        element = type_.list.elementType
        if element.which in ("struct", "list", "anyPointer"):
            return [_kept_item(codec, element, x) for x in item]
        return item
    if which == "anyPointer" and isinstance(item, AnyPointerReader):
        import msgpack

        from .capnp.reader import EXT_CAPNP_MESSAGE

        return msgpack.ExtType(EXT_CAPNP_MESSAGE, item.to_flat())
    return item


def from_msgpack_form(nodes: Mapping[int, model.Node], struct_id: int, form: Any,
                      where: str = "", depth: int = 0) -> dict[str, Any]:
    """The inverse of :func:`to_msgpack_form` (keys may be ints or digit strings)."""
    if depth > 64:
        raise ValueTypeError(where, "msgpack value nests deeper than 64 levels")
    if not isinstance(form, dict):
        raise ValueTypeError(where, f"expected a map for a struct, found {type(form).__name__}")
    fields = _fields(nodes, struct_id)
    out: dict[str, Any] = {}
    record = None
    for key, item in form.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueTypeError(where, f"struct map key {key!r} is not a field number") from None
        if index == -1:
            record = _kept_from_form(nodes, struct_id, item, where, depth)
            continue
        if not 0 <= index < len(fields):
            raise ValueTypeError(where, f"field number {index} is out of range "
                                        f"(the struct has {len(fields)} fields)")
        field = fields[index]
        path = f"{where}.{field.name}" if where else field.name
        if field.which == "group":
            assert field.group is not None
            out[field.name] = from_msgpack_form(nodes, field.group.typeId, item, path, depth + 1)
        else:
            assert field.slot is not None
            out[field.name] = _type_from_form(nodes, field.slot.type, item, path, depth + 1)
    if record is not None:
        from .capnp.unknown import attach

        return attach(out, record)
    return out


def _kept_from_form(nodes: Mapping[int, model.Node], struct_id: int, item: Any, where: str,
                    depth: int) -> Any:
    """The unknown data a struct's key -1 holds in the msgpack form (as ``to_msgpack()``
    writes it: a struct's original sections as a Cap'n Proto message in ext 0x43, a group's
    unknown union member as its discriminant), checked whole now, as an
    :class:`~.capnp.unknown.Unknown` record."""
    from .capnp.kept import record_of_flat
    from .capnp.reader import EXT_CAPNP_MESSAGE
    from .capnp.unknown import Unknown

    node = nodes[struct_id]
    st = node.struct
    assert st is not None
    members = frozenset(f.discriminantValue for f in st.fields
                        if f.discriminantValue != model.NO_DISCRIMINANT)
    what = "unknown data (key -1)"
    if st.isGroup:
        if type(item) is not int:
            raise ValueTypeError(where, f"{what} of a group is its union's discriminant, an "
                                        f"integer, not {type(item).__name__}")
        if not st.discriminantCount:
            raise ValueTypeError(where, f"{what}: a discriminant, but this group has no union")
        if not 0 <= item <= 0xFFFF or item in members:
            raise ValueTypeError(where, f"{what}: discriminant {item} is out of range or a "
                                        f"member this schema has")
        return Unknown(item, None)
    code = getattr(item, "code", None)
    if code != EXT_CAPNP_MESSAGE or not isinstance(getattr(item, "data", None), bytes):
        raise ValueTypeError(where, f"{what} must be a Cap'n Proto message (msgpack ext type "
                                    f"0x43), not {type(item).__name__}")
    union = (st.discriminantOffset * 2, members) if st.discriminantCount else None
    try:
        # (the struct nests where it stands: what its pointers reach must fit the levels
        # left below it, as the binary form's reader will count them)
        return record_of_flat(item.data, union, levels=64 - depth)[0]
    except CaraError as exc:
        raise ValueTypeError(where, f"{what}: {exc}") from None


def _type_from_form(nodes: Mapping[int, model.Node], type_: model.Type, item: Any, where: str,
                    depth: int) -> Any:
    if item is None:
        return None
    which = type_.which
    if which == "struct":
        assert type_.struct is not None
        return from_msgpack_form(nodes, type_.struct.typeId, item, where, depth)
    if which == "list":
        assert type_.list is not None
        if not isinstance(item, (list, tuple)):
            raise ValueTypeError(where, f"expected an array, found {type(item).__name__}")
        element = type_.list.elementType
        return [_type_from_form(nodes, element, x, f"{where}[{i}]", depth + 1)
                for i, x in enumerate(item)]
    if which == "anyPointer" and getattr(item, "code", None) == 0x43 and \
            isinstance(getattr(item, "data", None), bytes):
        from .capnp.kept import checked_pointer

        try:  # (a Cap'n Proto object, as to_msgpack() writes it: checked whole now)
            return checked_pointer(item.data)
        except CaraError as exc:
            raise ValueTypeError(where, f"not a valid Cap'n Proto object (ext type 0x43): "
                                        f"{exc}") from None
    if which == "data" and isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if which in ("float32", "float64") and isinstance(item, int) and not isinstance(item, bool):
        return float(item)
    return item


def _fields(nodes: Mapping[int, model.Node], struct_id: int) -> list[model.Field]:
    node = nodes.get(struct_id)
    if node is None or node.struct is None:
        raise EncodeError(f"the schema has no struct node @0x{struct_id:016x}")
    return node.struct.fields


# ------------------------------------------------------------------------- stream splitting


def split_text(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split text-format input into messages at each top-level ``(``, like capnp: yields
    ``(byte offset, message bytes)``. Comments (``#``) and string literals are skipped."""
    yield from _split(data, ord("("), ord(")"), slash_comments=False)


def split_json(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split JSON input into messages at each top-level ``{``."""
    yield from _split(data, ord("{"), ord("}"), slash_comments=True)


def _split(data: bytes, open_: int, close: int, *,
           slash_comments: bool) -> Iterator[tuple[int, bytes]]:
    depth = 0
    seen_close = False
    start = 0
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c == 0x23 or (slash_comments and c == 0x2F and data[i + 1:i + 2] == b"/"):
            end = data.find(b"\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == 0x22:
            i += 1
            while i < n and data[i] != 0x22:
                i += 2 if data[i] == 0x5C else 1
            i += 1
            continue
        if c == open_:
            if depth == 0 and seen_close:
                yield start, data[start:i]
                start = i
                seen_close = False
            depth += 1
        elif c == close and depth > 0:
            depth -= 1
            if depth == 0:
                seen_close = True
        i += 1
    if data[start:].strip():
        yield start, data[start:]


# --------------------------------------------------------------------------- plausibility

_IMPOSSIBLE, _IMPLAUSIBLE, _WRONG_TYPE, _PLAUSIBLE = range(4)


class _Plausibility:
    """capnp's guesses about what format some input is in (``capnp.c++`` isPlausibly*)."""

    def __init__(self, data_words: int, pointer_count: int) -> None:
        self.data_words = data_words
        self.pointer_count = pointer_count

    def flat(self, prefix: bytes, segment_count: int = 1) -> int:
        if len(prefix) < 8:
            return _PLAUSIBLE
        if prefix[0] & 3 == 2:
            segment_id = _U32.unpack_from(prefix, 4)[0]
            return _IMPOSSIBLE if segment_id == 0 or segment_id >= segment_count else _PLAUSIBLE
        if prefix[0] & 3 != 0:
            return _IMPOSSIBLE
        if prefix[3] & 0x80 and prefix[:8] != b"\xff\xff\xff\xff\0\0\0\0":
            return _IMPOSSIBLE
        if prefix[3] & 0xE0:
            return _IMPLAUSIBLE
        data = prefix[4] | prefix[5] << 8
        pointers = prefix[6] | prefix[7] << 8
        if data + pointers > 2048:
            return _IMPLAUSIBLE
        dw, pc = self.data_words, self.pointer_count
        if (data < dw and pointers > pc) or (data > dw and pointers < pc):
            return _WRONG_TYPE
        if data > dw and data - dw > 128:
            return _WRONG_TYPE
        if pointers > pc and pointers - pc > 128:
            return _WRONG_TYPE
        return _PLAUSIBLE

    def binary(self, prefix: bytes) -> int:
        if len(prefix) < 8:
            return _PLAUSIBLE
        count = _U32.unpack_from(prefix, 0)[0] + 1
        if count > 65536:
            return _IMPOSSIBLE
        if count > 256:
            return _IMPLAUSIBLE
        if _U32.unpack_from(prefix, 4)[0] > 1 << 27:
            return _IMPLAUSIBLE
        offset = 4 + count * 4
        offset += offset % 8
        if len(prefix) < offset + 8:
            return _PLAUSIBLE
        return self.flat(prefix[offset:], count)

    def _unpack_prefix(self, prefix: bytes) -> bytes | None:
        out = bytearray()
        pos = 0
        end = min(len(prefix), 1024)
        while pos < end:
            tag = prefix[pos]
            pos += 1
            for bit in range(8):
                if pos >= end:
                    break
                if tag >> bit & 1:
                    b = prefix[pos]
                    pos += 1
                    if b == 0:
                        return None
                    out.append(b)
                else:
                    out.append(0)
            if pos == end:
                break
            if tag == 0:
                out += bytes(prefix[pos] * 8)
                pos += 1
            elif tag == 0xFF:
                count = prefix[pos] * 8
                pos += 1
                n = min(count, end - pos)
                out += prefix[pos:pos + n]
                pos += n
        return bytes(out)

    def packed(self, prefix: bytes) -> int:
        unpacked = self._unpack_prefix(prefix)
        return _IMPOSSIBLE if unpacked is None else self.binary(unpacked)

    def flat_packed(self, prefix: bytes) -> int:
        unpacked = self._unpack_prefix(prefix)
        return _IMPOSSIBLE if unpacked is None else self.flat(unpacked)

    @staticmethod
    def _textual(prefix: bytes, opener: str, slash: bool) -> int:
        state = 0  # 0 preamble, 1 comment, 2 body
        for byte in prefix:
            c = chr(byte)
            if state == 0:
                if c == opener:
                    state = 2
                    continue
                if c == "#" or (slash and c == "/"):
                    state = 1
                    continue
                if c not in " \n\r\t\v":
                    return _IMPOSSIBLE
            elif state == 1:
                if c == "\n":
                    state = 0
                    continue
            elif c == '"' or (not slash and c == "'"):
                return _PLAUSIBLE
            if (byte < 0x20 and c not in "\n\r\t\v" and (not slash or byte > 0)) or byte == 0x7F:
                return _IMPOSSIBLE
        return _PLAUSIBLE

    def text(self, prefix: bytes) -> int:
        return self._textual(prefix, "(", False)

    def json(self, prefix: bytes) -> int:
        return self._textual(prefix, "{", True)

    @staticmethod
    def msgpack(prefix: bytes) -> int:
        if not prefix:
            return _PLAUSIBLE
        first = prefix[0]
        return _PLAUSIBLE if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF) else _IMPOSSIBLE

    def check(self, fmt: str, prefix: bytes) -> int:
        if fmt in ("flat", "canonical"):
            return self.flat(prefix)
        if fmt == "flat-packed":
            return self.flat_packed(prefix)
        return int(getattr(self, fmt)(prefix))

    def guess(self, prefix: bytes) -> str | None:
        for candidate in ("binary", "text", "packed", "json", "flat", "flat-packed", "msgpack"):
            if self.check(candidate, prefix) in (_PLAUSIBLE, _WRONG_TYPE):
                return candidate
        return None


def _framed_instead_warning(fmt: str, framed: str) -> str:
    """capnp's warning for ``flat``/``flat-packed`` input that reads fine as ``framed``."""
    return (
        "*** WARNING ***\n"
        "The input data does not appear to match the schema that you specified. I'll try\n"
        "to parse it anyway, but if it doesn't look right, please verify that you\n"
        f'have the right schema. This could also be because the input is not in "{fmt}"\n'
        f"format; indeed, it looks like this input may be in regular {framed} format,\n"
        f'so you might want to try "{framed}" instead.  Use --quiet to suppress this\n'
        "warning.\n"
        "*** END WARNING ***\n")


def _plausibility_report(plaus: _Plausibility, fmt: str, prefix: bytes) -> tuple[str, str]:
    """``(error, warning)`` for input in format ``fmt`` (either may be empty)."""
    verdict = plaus.check(fmt, prefix)
    if verdict == _PLAUSIBLE:
        return "", ""
    guess = plaus.guess(prefix)
    if verdict == _IMPOSSIBLE:
        if guess:
            return (f'The input is not in "{fmt}" format. It looks like it is in "{guess}" '
                    f"format. Try that instead."), ""
        return f'The input is not in "{fmt}" format.', ""
    if verdict == _IMPLAUSIBLE:
        if guess:
            return "", (
                "*** WARNING ***\n"
                f'The input data does not appear to be in "{fmt}" format. It\n'
                f'looks like it may be in "{guess}" format. I\'ll try to parse\n'
                f'it in "{fmt}" format as you requested, but if it doesn\'t work,\n'
                f'try "{fmt}" instead. Use --quiet to suppress this warning.\n'
                "*** END WARNING ***\n")
        return "", (
            "*** WARNING ***\n"
            f'The input data does not appear to be in "{fmt}" format, nor\n'
            f'in any other known format. I\'ll try to parse it in "{fmt}"\n'
            "format anyway, as you requested. Use --quiet to suppress this warning.\n"
            "*** END WARNING ***\n")
    if fmt == "flat" and plaus.binary(prefix) in (_PLAUSIBLE, _WRONG_TYPE):
        return "", _framed_instead_warning(fmt, "binary")
    if fmt == "flat-packed" and plaus.packed(prefix) in (_PLAUSIBLE, _WRONG_TYPE):
        return "", _framed_instead_warning(fmt, "packed")
    return "", (
        "*** WARNING ***\n"
        "The input data does not appear to be the type that you specified.  I'll try\n"
        "to parse it anyway, but if it doesn't look right, please verify that you\n"
        "have the right type.  Use --quiet to suppress this warning.\n"
        "*** END WARNING ***\n")


# ------------------------------------------------------------------------------ converter


def _without_pointer_defaults(nodes: Mapping[int, model.Node]) -> dict[int, model.Node]:
    """The schema with explicit pointer defaults dropped, for the codec ``convert`` uses.

    A converter must see a null pointer as null: capnp prints a field only when its pointer is
    set, and writes back only what the input sets. The schema codec reads a null pointer as the
    field's default (what an application wants), so the converter gives it a schema in which
    no pointer field has one; scalar defaults (XOR masks) are kept, they are part of the
    encoding.
    """
    out: dict[int, model.Node] = {}
    for node_id, node in nodes.items():
        st = node.struct
        if st is not None and any(
                f.slot is not None and f.slot.hadExplicitDefault
                and f.slot.type.which in ("text", "data", "list", "struct", "anyPointer")
                for f in st.fields):
            fields = [
                dataclasses.replace(f, slot=dataclasses.replace(
                    f.slot, hadExplicitDefault=False, defaultValue=model.Value()))
                if f.slot is not None and f.slot.type.which in (
                    "text", "data", "list", "struct", "anyPointer") else f
                for f in st.fields]
            node = dataclasses.replace(node, struct=dataclasses.replace(st, fields=fields))
        out[node_id] = node
    return out



@dataclass
class Converter:
    """One ``FROM:TO`` conversion. ``nodes``/``root_id`` are the schema (needed for text, json
    and msgpack; optional for binary-to-binary)."""

    source: str
    target: str
    nodes: Mapping[int, model.Node] | None = None
    root_id: int = 0
    pretty: bool = True
    segment_size: int | None = None

    def __post_init__(self) -> None:
        for fmt in (self.source, self.target):
            if fmt not in FORMATS:
                raise ConvertError(f"unknown format: {fmt}")
            if fmt in SCHEMA_FORMATS and self.nodes is None:
                raise ConvertError(f"format requires schema: {fmt}")
        self._codec: Any = None
        self._sparse_codec: Any = None
        self._holds_any_pointer = False

    @property
    def codec(self) -> Any:
        if self._codec is None:
            from .capnp.schema_codec import SchemaCodec

            assert self.nodes is not None
            self._codec = SchemaCodec(_without_pointer_defaults(self.nodes))
        return self._codec

    @property
    def sparse_codec(self) -> Any:
        """The codec that reads binary for msgpack output: what ``S.from_bytes()`` decodes
        (keyed by field index, only what is not at its zero bits, unknown data kept)."""
        if self._sparse_codec is None:
            from .capnp.schema_codec import SchemaCodec

            assert self.nodes is not None
            self._sparse_codec = SchemaCodec(self.nodes, pointer_defaults=False, keys="index",
                                             sparse=True)
            self._holds_any_pointer = self._sparse_codec.reaches(self.root_id,
                                                                 frozenset({"anyPointer"}))
        return self._sparse_codec

    def plausibility(self) -> _Plausibility:
        if self.nodes is not None and self.root_id in self.nodes:
            st = self.nodes[self.root_id].struct
            if st is not None:
                return _Plausibility(st.dataWordCount, st.pointerCount)
        return _Plausibility(0, 0)

    # --------------------------------------------------------------------------- reading

    def messages(self, data: bytes) -> Iterator[tuple[int, Message]]:
        """Each input message as ``(byte offset in the input, Message)``."""
        limit = max(DEFAULT_TRAVERSAL_LIMIT, len(data))
        src = self.source
        if src in ("binary", "packed"):
            if src == "packed":
                data = unpack(data, max_bytes=max(8 * DEFAULT_TRAVERSAL_LIMIT, 8 * len(data)))
            yield from self._framed(data, limit)
        elif src in ("flat", "canonical", "flat-packed"):
            if src == "flat-packed":
                data = unpack(data, max_bytes=max(8 * DEFAULT_TRAVERSAL_LIMIT, 8 * len(data)))
            else:
                data = data[:len(data) & ~7]
            msg = Message(read_flat(data), traversal_limit_in_words=limit)
            if src == "canonical" and canonicalize(
                    Message(read_flat(data), traversal_limit_in_words=limit)) != data:
                raise DecodeError("the input is not in canonical form", 0)
            yield 0, msg
        elif src in ("text", "json"):
            from .capnp_json import parse_json
            from .text_format import parse_text

            assert self.nodes is not None
            split = split_text if src == "text" else split_json
            parse = parse_text if src == "text" else parse_json
            for offset, chunk in split(data):
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DecodeError(f"input is not valid UTF-8: {exc.reason}",
                                      offset + exc.start) from None
                try:
                    value = parse(self.nodes, self.root_id, text)
                except DecodeError as exc:
                    raise DecodeError(exc.reason, offset + (exc.offset or 0)) from None
                yield offset, self._build(value)
        else:
            yield from self._msgpack(data)

    def _framed(self, data: bytes, limit: int) -> Iterator[tuple[int, Message]]:
        offset = 0
        n = len(data)
        view = memoryview(data)
        while offset < n:
            try:
                size = framed_size(view[offset:])
                if size is None:
                    raise DecodeError("input ends inside a segment table", n - offset)
                if offset + size > n:
                    raise DecodeError(f"input ends inside a message of {size} bytes "
                                      f"({n - offset} bytes left)", n - offset)
                segments = read_framed(data[offset:offset + size])
            except DecodeError as exc:
                raise DecodeError(exc.reason, offset + (exc.offset or 0)) from None
            yield offset, Message(segments, traversal_limit_in_words=limit)
            offset += size

    def _msgpack(self, data: bytes) -> Iterator[tuple[int, Message]]:
        import msgpack

        assert self.nodes is not None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        unpacker.feed(data)
        offset = 0
        while True:
            try:
                form = unpacker.unpack()
            except msgpack.OutOfData:
                if offset < len(data):
                    raise DecodeError("msgpack input ends inside an object", offset) from None
                return
            except (msgpack.UnpackException, ValueError, TypeError) as exc:
                # (TypeError: a map key msgpack cannot hash, such as an array)
                raise DecodeError(f"malformed msgpack: {exc}", offset) from None
            try:
                value = from_msgpack_form(self.nodes, self.root_id, form)
            except ValueTypeError as exc:
                raise DecodeError(str(exc), offset) from None
            yield offset, self._build(value)
            offset = unpacker.tell()

    def _build(self, value: Mapping[str, Any]) -> Message:
        builder = self.codec.build(self.root_id, value)
        buf = bytes(builder.buf)
        return Message((buf, [(0, len(buf))]), traversal_limit_in_words=len(buf))

    # --------------------------------------------------------------------------- writing

    def write(self, msg: Message) -> bytes:
        root = msg.bounds[0][0]
        kind = resolve(msg, 0, root)[0]
        if kind not in (-1, 0):
            raise DecodeError("the root pointer is not a struct pointer", root)
        if kind < 0:  # a null root reads as an empty struct, and is written as one
            msg = Message((_EMPTY_STRUCT_ROOT, [(0, 8)]))
        target = self.target
        if target in ("binary", "packed"):
            copier = SegmentedCopy(self.segment_size)
            copier.copy_root(msg)
            segments = copier.result()
            return pack_framed(segments) if target == "packed" else frame_segments(segments)
        if target in ("flat", "flat-packed"):
            out = MessageBuilder()
            copy_pointer(out, 0, msg, 0, msg.bounds[0][0], msg.nesting_limit)
            flat = out.segment()
            return pack(flat) if target == "flat-packed" else flat
        if target == "canonical":
            return canonicalize(msg)
        assert self.nodes is not None
        if target == "msgpack":
            import msgpack

            from .capnp.unknown import SEEN

            codec = self.sparse_codec
            form = codec.decode_message(self.root_id, msg)
            if SEEN[0] or self._holds_any_pointer:
                # (unknown data, once any was seen, or AnyPointer values: what msgpack cannot
                # write as they are decoded)
                form = _kept_form(codec, codec.plan(self.root_id), form)
            return msgpack.packb(form, use_bin_type=True)
        value = self.codec.decode_message(self.root_id, msg)
        if target == "text":
            from .text_format import format_text_bytes

            return format_text_bytes(self.nodes, self.root_id, value, pretty=self.pretty) + b"\n"
        from .capnp_json import format_json

        text = format_json(self.nodes, self.root_id, value, pretty=self.pretty)
        return text.encode("utf-8", "surrogateescape") + b"\n"

    def run(self, data: bytes, out: BinaryIO) -> None:
        """Convert every message of ``data``, writing each result to ``out`` as it is ready.
        A bad message raises :class:`ConvertError` naming it and its byte offset."""
        single = self.source in ("flat", "flat-packed", "canonical")
        framed = self.source in BINARY_FORMATS
        messages = self.messages(data)
        number = 0
        while True:
            number += 1
            which = "the message" if single else f"message {number}"
            try:
                item = next(messages, None)
            except (DecodeError, EncodeError, ValueTypeError) as exc:
                raise self._error(which, exc, 0) from None
            if item is None:
                return
            try:
                out.write(self.write(item[1]))
            except (DecodeError, EncodeError, ValueTypeError) as exc:
                # offsets from the reader are inside this message's bytes
                raise self._error(which, exc, item[0] if framed else None) from None

    def _error(self, which: str, exc: Exception, base: int | None) -> ConvertError:
        if not isinstance(exc, DecodeError):
            return ConvertError(f"{which}: {exc}")
        where = "the unpacked input" if self.source in ("packed", "flat-packed") else "the input"
        at = ""
        if exc.offset is not None and base is not None:
            at = f" (at byte {base + exc.offset} of {where})"
        return ConvertError(f"{which}: {exc.reason}{at}")


# ------------------------------------------------------------------------------- the command


def _load_schema(values: Mapping[str, Any], schema_file: str,
                 type_name: str) -> tuple[Mapping[int, model.Node], int]:
    from cara import schema as schema_pkg

    compile_ = getattr(schema_pkg, "compile", None)
    if compile_ is None:
        raise ConvertError("the schema compiler is not available in this version of cara")
    request = compile_([schema_file], import_path=list(values.get("import_path") or []),
                       no_standard_import=bool(values.get("no_standard_import")))
    return request.nodes_by_id(), resolve_type(request, type_name)


def resolve_type(request: model.CodeGeneratorRequest, type_name: str) -> int:
    """The id of struct ``type_name`` (``Outer.Inner`` allowed) in the first requested file."""
    nodes = request.nodes_by_id()
    if not request.requestedFiles:
        raise ConvertError("the schema compiler returned no file")
    scope = nodes.get(request.requestedFiles[0].id)
    if scope is None:
        raise ConvertError("the schema compiler returned no file node")
    for part in type_name.split("."):
        found = next((nested.id for nested in scope.nestedNodes if nested.name == part), None)
        if found is None or found not in nodes:
            raise ConvertError(f"{type_name}: '{part}' is not defined in "
                               f"{scope.displayName or 'the schema'}.")
        scope = nodes[found]
    if scope.which != "struct":
        raise ConvertError(f"{type_name}: Type is not a struct.")
    return scope.id


def _usage_error(stderr: Any, message: str) -> int:
    stderr.write(f"{_PROG}: {message}\nTry '{_PROG} --help' for more information.\n")
    return 1


def convert_stream(values: Mapping[str, Any], source_format: str, target_format: str,
                   positionals: list[str], *, stdin: BinaryIO | None = None,
                   stdout: BinaryIO | None = None, stderr: Any = None,
                   request: tuple[Mapping[int, model.Node], int] | None = None) -> int:
    """Run ``cara convert``: read all of ``stdin``, write the converted messages to ``stdout``.

    ``values`` holds the parsed options (``import_path``, ``no_standard_import``, ``quiet``,
    ``segment_size``, ``short``, ``verbose``); ``positionals`` is ``[schema-file, type]``.
    ``request`` (``(nodes by id, root struct id)``) skips compiling the schema. Returns the exit
    status: 0, or 1 after printing what went wrong.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    stderr = stderr if stderr is not None else sys.stderr
    segment_size: int | None = None
    raw_size = values.get("segment_size")
    if raw_size not in (None, ""):
        try:
            segment_size = int(str(raw_size), 0)
        except ValueError:
            return _usage_error(stderr, f"--segment-size={raw_size}: not an integer")
        if segment_size < 0 or segment_size > MAX_SEGMENT_WORDS:
            return _usage_error(stderr, f"--segment-size={raw_size}: out of range")
        if segment_size == 0:  # as in capnp: 0 means the default allocation
            segment_size = None
    needs_schema = source_format in SCHEMA_FORMATS or target_format in SCHEMA_FORMATS
    nodes: Mapping[int, model.Node] | None = None
    root_id = 0
    if request is not None:
        nodes, root_id = request
    elif positionals:
        if len(positionals) < 2:
            return _usage_error(stderr, "missing <type> after <schema-file>")
        if len(positionals) > 2:
            return _usage_error(stderr, f"{positionals[2]}: too many arguments")
        try:
            nodes, root_id = _load_schema(values, positionals[0], positionals[1])
        except SchemaError as exc:
            for line in exc.diagnostics:
                stderr.write(line + "\n")
            return 1
        except ConvertError as exc:
            return _usage_error(stderr, str(exc))
    if needs_schema and nodes is None:
        fmt = source_format if source_format in SCHEMA_FORMATS else target_format
        return _usage_error(stderr, f"format requires schema: {fmt}")
    try:
        converter = Converter(source_format, target_format, nodes, root_id,
                              pretty=not values.get("short"), segment_size=segment_size)
    except ConvertError as exc:
        return _usage_error(stderr, str(exc))
    data = stdin.read()
    if not values.get("quiet"):
        error, warning = _plausibility_report(converter.plausibility(), source_format,
                                              data[:8192])
        if error:
            return _usage_error(stderr, error)
        if warning:
            stderr.write(warning)
            stderr.flush()
    try:
        converter.run(data, stdout)
    except ConvertError as exc:
        stdout.flush()
        stderr.write(f"{_PROG}: {exc}\n")
        return 1
    finally:
        stdout.flush()
    return 0
