"""Lazy, schema-driven reading: attribute access by field name, decoded on each access.

``codec.view(struct_id, data).phones[1].number`` touches only the words it needs, like
libcapnp's readers: nothing is decoded up front, and every access is bounds-checked and charged
against the message's traversal limit (so re-reading a field repeatedly eventually fails, as in
libcapnp). Struct and group fields return further views; struct lists return a list of views;
everything else returns the same plain values as :meth:`SchemaCodec.decode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cara.schema import model

from .reader import StructLoc, charge_elements, list_at, struct_at

if TYPE_CHECKING:
    from .schema_codec import SchemaCodec, StructPlan

__all__ = ["StructView", "ViewLayout"]

Getter = Callable[..., Any]


class ViewLayout:
    """Per-struct getters for :class:`StructView`, compiled once from the struct's plan."""

    __slots__ = ("cls", "discriminant_offset", "getters", "members", "name", "plan")

    def __init__(self, plan: StructPlan) -> None:
        self.plan = plan
        #: the generated StructView subclass with one property per field
        self.cls: type[StructView] = StructView
        self.name = plan.name
        self.getters: dict[str, Getter] = {}
        self.discriminant_offset = plan.discriminant_offset
        self.members = {f.discriminant: f.name for f in plan.fields
                        if f.discriminant != model.NO_DISCRIMINANT}


class StructView:
    """A struct inside a received message, read field by field on attribute access."""

    __slots__ = ("_layout", "_loc", "_msg")

    def __init__(self, layout: ViewLayout, msg: Any, loc: StructLoc) -> None:
        self._layout = layout
        self._msg = msg
        #: (segment, data pos, data bytes, pointer pos, pointer count, nesting left)
        self._loc = loc

    def __getattr__(self, name: str) -> Any:
        # Fields are properties of the generated subclass; this only runs for other names.
        raise AttributeError(f"{self._layout.name} has no field {name!r}")

    def __getitem__(self, name: str) -> Any:
        """Field ``name`` (also for fields whose names clash with methods, like ``which``)."""
        getter = self._layout.getters.get(name)
        if getter is None:
            raise KeyError(name)
        return getter(self._msg, *self._loc)

    def __dir__(self) -> list[str]:
        return [*self._layout.getters, "which", "to_dict"]

    def which(self) -> str | None:
        """The set member of the struct's unnamed union (``None`` if it has none, or if the
        discriminant is one this schema does not know)."""
        off = self._layout.discriminant_offset
        if off < 0:
            return None
        disc = 0
        _seg, dpos, dbytes, _ppos, _nptrs, _nest = self._loc
        if dbytes >= off + 2:
            buf = self._msg.buf
            disc = buf[dpos + off] | buf[dpos + off + 1] << 8
        return self._layout.members.get(disc)

    def to_dict(self) -> dict[str, Any]:
        """The whole struct as plain values (what :meth:`SchemaCodec.decode` returns)."""
        decode = self._layout.plan.decode
        assert decode is not None
        return decode(self._msg, *self._loc)

    def __repr__(self) -> str:
        return f"<{self._layout.name} view at byte {self._loc[1]}>"


def build_layout(codec: SchemaCodec, plan: StructPlan) -> ViewLayout:
    """Compile the getters of ``plan`` (fields of struct kind become view constructors)."""
    layout = ViewLayout(plan)
    ns = codec._ns
    props: dict[str, property] = {}
    for fp in plan.fields:
        if fp.kind == "group":
            lc = _layout_cell(codec, fp.group_id)
            gk = codec._const(fp.group_id, "GK")
            expr = (f"SVIEW(({lc}[0] if {lc} else LAYOUT_FILL({lc}, {gk})), msg, seg, "
                    f"dpos, dbytes, ppos, nptrs, nest)")
        elif fp.kind == "struct" or _is_struct_list(fp.type):
            assert fp.type is not None
            helper = "VIEW_STRUCT" if fp.kind == "struct" else "VIEW_LIST"
            factory = "None"
            if fp.default is not None:
                factory = codec._const(codec._default_factory(fp), "DF")
            sid = codec._const(codec._key_of(_element_type(fp.type)), "SK")
            lc = _layout_cell(codec, sid)
            expr = (f"{helper}(({lc}[0] if {lc} else LAYOUT_FILL({lc}, {sid})), msg, seg, ppos, "
                    f"nptrs, {fp.pointer}, nest, {factory})")
        else:
            expr = codec._field_expr(fp, True)
        name = codec._name("G")
        src = (f"def {name}(msg, seg, dpos, dbytes, ppos, nptrs, nest):\n"
               f"    buf = msg.buf\n"
               f"    return {expr}\n")
        prop = codec._name("V")
        psrc = (f"def {prop}(self):\n"
                f"    msg = self._msg\n"
                f"    seg, dpos, dbytes, ppos, nptrs, nest = self._loc\n"
                + ("    buf = msg.buf\n" if "buf" in expr else "")
                + f"    return {expr}\n")
        code = compile(src + psrc, f"<cara capnp view {plan.name}.{fp.name}>", "exec")
        exec(code, ns)
        layout.getters[fp.name] = ns[name]
        props[fp.name] = property(ns[prop])
    reserved = set(dir(StructView))
    layout.cls = type(f"{plan.name}View", (StructView,),
                      {"__slots__": (), **{k: v for k, v in props.items()
                                           if k not in reserved}})
    return layout


def _layout_cell(codec: SchemaCodec, sid: object) -> str:
    """Name of a one-element list that will hold ``sid``'s layout once it is first needed
    (layouts of recursive structs cannot all be built up front)."""
    return codec._const([], "LC")


def fill_layout_cell(codec: SchemaCodec) -> Callable[[list[ViewLayout], Any], ViewLayout]:
    def fill(cell: list[ViewLayout], sid: Any) -> ViewLayout:
        if not cell:
            cell.append(codec.layout(sid))
        return cell[0]
    return fill


def _is_struct_list(t: model.Type | None) -> bool:
    return (t is not None and t.which == "list" and t.list is not None
            and t.list.elementType.which == "struct")


def _element_type(t: model.Type) -> model.Type:
    if t.which == "list":
        assert t.list is not None
        t = t.list.elementType
    return t


def view_struct(layout: ViewLayout, msg: Any, seg: int, ppos: int, nptrs: int, index: int,
                nest: int, default: Callable[[], Any] | None) -> Any:
    if index >= nptrs:
        return default() if default is not None else None
    loc = struct_at(msg, seg, ppos + 8 * index, nest)
    if loc is None:
        return default() if default is not None else None
    return layout.cls(layout, msg, loc)


def view_list(layout: ViewLayout, msg: Any, seg: int, ppos: int, nptrs: int, index: int,
              nest: int, default: Callable[[], Any] | None) -> Any:
    if index >= nptrs:
        return default() if default is not None else None
    loc = list_at(msg, seg, ppos + 8 * index, nest)
    if loc is None:
        return default() if default is not None else None
    lseg, start, count, step, dbytes, lptrs, esize, inner = loc
    if esize == 1:
        from cara.errors import DecodeError

        raise DecodeError("a bit list cannot be read as a list of structs", ppos + 8 * index)
    words_each = layout.plan.data_words + layout.plan.pointer_count
    if step < words_each * 8:
        charge_elements(msg, count, step, words_each, ppos + 8 * index)
    cls = layout.cls
    return [cls(layout, msg, (lseg, b, dbytes, b + dbytes, lptrs, inner))
            for b in range(start, start + count * step, step)] if step else \
        [cls(layout, msg, (lseg, start, 0, start, 0, inner)) for _ in range(count)]
