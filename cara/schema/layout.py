"""Struct layout: where every field of a struct lives, decided exactly as ``capnp`` decides it.

Cap'n Proto has no layout annotations: the offsets in a struct follow from the order of the
ordinals, the sizes of the fields and the nesting of groups and unions. A message written with
cara must be readable by every other implementation, so this module reproduces the reference
compiler's algorithm (``StructLayout``/``StructTranslator`` in ``compiler/node-translator.c++``)
step by step, including its quirks: lazily created field lists, discriminants allocated when a
union's second member appears, unions that grow their shared slots in place, and the
"issue 344" check with which capnp refuses a few nested-union layouts.

API (the schema compiler describes the members, this module answers):

* Describe one struct's members in **declaration order** with three dataclasses:

  - :class:`FieldMember` ``(name, ordinal, size, source=None)``: a field. ``size`` is a
    :class:`SlotSize`; :func:`slot_size` maps a ``model.Type.which`` string to it.
  - :class:`GroupMember` ``(name, members, source=None)``: ``name :group { ... }``.
  - :class:`UnionMember` ``(name, members, ordinal=None, source=None)``: ``name :union {...}``,
    or the unnamed ``union {...}`` when ``name == ""``; ``ordinal`` is the ``@N!`` of a
    retroactive union.

  Nested declarations (structs, enums, ...) are not members: leave them out. ``source`` is the
  caller's own handle (typically the AST node); it is handed back untouched in results and in
  problems so that the caller can name file positions.

* ``layout_struct(members, *, is_param_list=False, detect_issue_344=True) -> StructLayout``.
  For a method's parameter or result list pass the params as ``FieldMember`` with
  ``ordinal = position`` and ``is_param_list=True`` (no ordinal checks, as capnp).

* The result, :class:`StructLayout`:

  - ``data_word_count``, ``pointer_count``: the struct's (and every group node's) sizes.
  - ``root``: a :class:`ScopeLayout` for the struct node; every group and named union has its
    own ``ScopeLayout`` (a group node), reachable through ``LaidOutField.group``.
  - ``ScopeLayout.fields``: the node's ``struct.fields`` **in the order capnp writes them**
    (first-touch order while walking ordinals, not declaration order), each a
    :class:`LaidOutField` with ``member`` (your input object), ``index`` (position in that
    list, which is what the group's id is derived from: ``ids.group_id(parent_node_id,
    index)``), ``code_order``, ``discriminant_value`` (``0xffff`` outside a union),
    ``ordinal`` (explicit ordinal or ``None`` for ``implicit``), ``offset`` (slot offset in
    units of the field's own size; 0 for Void fields and groups) and ``group``.
  - ``ScopeLayout.discriminant_count`` / ``discriminant_offset`` (in 16-bit units): non-zero
    count only for scopes holding a union (the root or a group with an unnamed union, or a
    named union's own node).
  - ``problems``: a list of :class:`LayoutProblem` ``(message, member, at)`` in the order capnp
    reports them; ``at`` is ``"declaration"`` (point at the member's whole declaration) or
    ``"ordinal"`` (point at its ``@N`` token). The messages are capnp's own words. The layout
    is still complete when there are problems (like capnp, which keeps going to find more).
    If ``issue_344`` is true, capnp 0.9.2 stops the whole run with an uncaught exception
    ("*** Uncaught exception *** ... context: member.name = <name> ... failed: " followed by
    :data:`ISSUE_344_MESSAGE`), not with a positioned error; the problem names the member
    capnp was laying out (``at="declaration"``). The layout returned is then the one capnp
    produces with ``CAPNP_IGNORE_ISSUE_344=1``.

    ``at`` is ``"struct"`` for the one problem capnp reports on the struct's own name (a field
    list that capnp's schema validator rejects as "not ordered by ordinal", see
    :func:`_unordered_fields`); it is only checked when there is no other problem.

  - ``StructLayout.walk()`` yields ``(scope, parent_scope, field)`` for every group node,
    parents before children; ``StructLayout.group_ids(struct_id)`` maps each group's
    ``ScopeLayout`` to its automatic id (``ids.group_id`` of its parent node's id and its
    ``index``), the root to ``struct_id``.

Example (``struct S { a @0 :Bool; u :union { b @1 :Text; c @2 :UInt8; } }``)::

    u = UnionMember("u", [FieldMember("b", 1, SlotSize.POINTER),
                          FieldMember("c", 2, SlotSize.BYTE)])
    result = layout_struct([FieldMember("a", 0, SlotSize.BIT), u])
    # result.data_word_count == 1, result.pointer_count == 1
    # result.root.fields[1].group.discriminant_offset == 1  (bits 16..31)

Everything here is plain Python with no recursion on input size beyond the nesting depth of the
schema itself (bounded by the parser).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence

from cara.schema._record import field, record
from cara.schema.ids import group_id

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

__all__ = [
    "ISSUE_344_MESSAGE",
    "NO_DISCRIMINANT",
    "FieldMember",
    "GroupMember",
    "LaidOutField",
    "LayoutProblem",
    "Member",
    "ScopeLayout",
    "SlotSize",
    "StructLayout",
    "UnionMember",
    "layout_struct",
    "slot_size",
]

NO_DISCRIMINANT = 0xFFFF

ISSUE_344_MESSAGE = (
    "Bad news: Cap'n Proto 0.5.x and previous contained a bug which would cause this schema to "
    "be compiled incorrectly. Please see: https://github.com/sandstorm-io/capnproto/issues/344"
)


class SlotSize(enum.IntEnum):
    """How much room a field takes: log2 of its bit width, or one of two special values."""

    POINTER = -2
    VOID = -1
    BIT = 0
    BYTE = 3
    TWO_BYTES = 4
    FOUR_BYTES = 5
    EIGHT_BYTES = 6


_SIZE_OF_TYPE: dict[str, SlotSize] = {
    "void": SlotSize.VOID,
    "bool": SlotSize.BIT,
    "int8": SlotSize.BYTE,
    "uint8": SlotSize.BYTE,
    "int16": SlotSize.TWO_BYTES,
    "uint16": SlotSize.TWO_BYTES,
    "enum": SlotSize.TWO_BYTES,
    "int32": SlotSize.FOUR_BYTES,
    "uint32": SlotSize.FOUR_BYTES,
    "float32": SlotSize.FOUR_BYTES,
    "int64": SlotSize.EIGHT_BYTES,
    "uint64": SlotSize.EIGHT_BYTES,
    "float64": SlotSize.EIGHT_BYTES,
    "text": SlotSize.POINTER,
    "data": SlotSize.POINTER,
    "list": SlotSize.POINTER,
    "struct": SlotSize.POINTER,
    "interface": SlotSize.POINTER,
    "anyPointer": SlotSize.POINTER,
}


def slot_size(type_which: str) -> SlotSize:
    """The slot size of a field whose ``model.Type.which`` is ``type_which``."""
    try:
        return _SIZE_OF_TYPE[type_which]
    except KeyError:
        raise ValueError(f"not a schema type: {type_which!r}") from None


# ------------------------------------------------------------------------------------ inputs


@record(eq=False)
class FieldMember:
    """A field declaration ``name @ordinal :Type``."""

    name: str
    ordinal: int
    size: SlotSize
    source: object = None


@record(eq=False)
class GroupMember:
    """``name :group { members }``: shares the enclosing scope's space, has no ordinal."""

    name: str
    members: list[Member] = field(default_factory=list)
    source: object = None


@record(eq=False)
class UnionMember:
    """``name [@N!] :union { members }``, or the unnamed ``union { members }`` (``name == ""``)."""

    name: str
    members: list[Member] = field(default_factory=list)
    ordinal: int | None = None
    source: object = None


Member = FieldMember | GroupMember | UnionMember


# ----------------------------------------------------------------------------------- outputs


@record(eq=False)
class LaidOutField:
    """One entry of a node's ``struct.fields``."""

    member: Member
    index: int
    code_order: int
    discriminant_value: int = NO_DISCRIMINANT
    ordinal: int | None = None
    offset: int = 0
    group: ScopeLayout | None = None


@record(eq=False)
class ScopeLayout:
    """The layout facts of one struct node or group node."""

    member: GroupMember | UnionMember | None
    fields: list[LaidOutField] = field(default_factory=list)
    discriminant_count: int = 0
    discriminant_offset: int = 0


@record
class LayoutProblem:
    """A schema error found while laying out; ``at`` says which token of ``member`` to blame."""

    message: str
    member: Member
    at: Literal["declaration", "ordinal", "struct"] = "declaration"


@record(eq=False)
class StructLayout:
    """The layout of one struct: its scopes, sizes and the problems found."""

    root: ScopeLayout
    data_word_count: int = 0
    pointer_count: int = 0
    problems: list[LayoutProblem] = field(default_factory=list)
    issue_344: bool = False

    def group_ids(self, struct_id: int) -> dict[ScopeLayout, int]:
        """The id of every scope: ``struct_id`` for the root, derived ids for the groups."""
        result = {self.root: struct_id}
        for scope, parent, laid_out in self.walk():
            result[scope] = group_id(result[parent], laid_out.index)
        return result

    def walk(self) -> Iterator[tuple[ScopeLayout, ScopeLayout, LaidOutField]]:
        """Every group node as ``(scope, parent_scope, field_in_parent)``, parents first."""
        stack: list[ScopeLayout] = [self.root]
        while stack:
            parent = stack.pop()
            children = [(f.group, f) for f in parent.fields if f.group is not None]
            stack.extend(group for group, _ in reversed(children))
            for group, laid_out in children:
                yield group, parent, laid_out


# -------------------------------------------------------------------------- space allocation

_HOLE_SIZES = 6  # one hole of each size from 1 bit (lg 0) to 32 bits (lg 5)


class _HoleSet:
    """Free space left by padding: at most one hole per power-of-two size below 64 bits.

    ``holes[lg]`` is the offset of the hole of size ``2**lg`` in units of that size; 0 means no
    hole (offset 0 is always taken by the first allocation, so it can never be a hole).
    """

    __slots__ = ("holes",)

    def __init__(self) -> None:
        self.holes = [0] * _HOLE_SIZES

    def try_allocate(self, lg: int) -> int | None:
        for size in range(lg, _HOLE_SIZES):
            if self.holes[size]:
                offset = self.holes[size]
                self.holes[size] = 0
                # Split the hole down to the requested size; each split leaves its upper half.
                while size > lg:
                    size -= 1
                    offset *= 2
                    self.holes[size] = offset + 1
                return offset
        return None

    def add_holes_at_end(self, lg: int, offset: int, limit: int = _HOLE_SIZES) -> None:
        """Record the rest of a ``2**limit`` space after allocating ``2**lg`` bits at its start.

        ``offset`` is the (odd) offset of the first new hole, in units of ``2**lg``.
        """
        while lg < limit:
            self.holes[lg] = offset
            lg += 1
            offset = (offset + 1) // 2

    def try_expand(self, old_lg: int, old_offset: int, factor: int) -> bool:
        """Grow the allocation ``(old_lg, old_offset)`` ``2**factor``-fold by eating holes."""
        if factor == 0:
            return True
        if old_lg >= _HOLE_SIZES or self.holes[old_lg] != old_offset + 1:
            return False
        if self.try_expand(old_lg + 1, old_offset >> 1, factor - 1):
            self.holes[old_lg] = 0
            return True
        return False

    def smallest_at_least(self, lg: int) -> int | None:
        for size in range(lg, _HOLE_SIZES):
            if self.holes[size]:
                return size
        return None


class _Scope:
    """Somewhere fields can be added: the struct itself or one member of a union."""

    def add_void(self) -> None:
        raise NotImplementedError

    def add_data(self, lg: int) -> int:
        raise NotImplementedError

    def add_pointer(self) -> int:
        raise NotImplementedError

    def try_expand_data(self, old_lg: int, old_offset: int, factor: int) -> bool:
        raise NotImplementedError


class _Top(_Scope):
    """The struct's own sections: a word count, a pointer count and the padding holes."""

    def __init__(self) -> None:
        self.data_word_count = 0
        self.pointer_count = 0
        self.holes = _HoleSet()

    def add_void(self) -> None:
        pass

    def add_data(self, lg: int) -> int:
        hole = self.holes.try_allocate(lg)
        if hole is not None:
            return hole
        offset = self.data_word_count << (6 - lg)
        self.data_word_count += 1
        self.holes.add_holes_at_end(lg, offset + 1)
        return offset

    def add_pointer(self) -> int:
        self.pointer_count += 1
        return self.pointer_count - 1

    def try_expand_data(self, old_lg: int, old_offset: int, factor: int) -> bool:
        return self.holes.try_expand(old_lg, old_offset, factor)


class _DataLocation:
    """A piece of the parent's data section shared by all members of a union."""

    __slots__ = ("lg", "offset")

    def __init__(self, lg: int, offset: int) -> None:
        self.lg = lg
        self.offset = offset

    def try_expand_to(self, union: _Union, new_lg: int) -> bool:
        if new_lg <= self.lg:
            return True
        if union.parent.try_expand_data(self.lg, self.offset, new_lg - self.lg):
            self.offset >>= new_lg - self.lg
            self.lg = new_lg
            return True
        return False


class _Union:
    """The space of one union: locations its members share, and the discriminant."""

    def __init__(self, parent: _Scope) -> None:
        self.parent = parent
        self.group_count = 0
        self.discriminant_offset: int | None = None
        self.data_locations: list[_DataLocation] = []
        self.pointer_locations: list[int] = []

    def add_new_data_location(self, lg: int) -> int:
        offset = self.parent.add_data(lg)
        self.data_locations.append(_DataLocation(lg, offset))
        return offset

    def add_new_pointer_location(self) -> int:
        offset = self.parent.add_pointer()
        self.pointer_locations.append(offset)
        return offset

    def new_group_adding_first_member(self) -> None:
        self.group_count += 1
        if self.group_count == 2:
            self.add_discriminant()

    def add_discriminant(self) -> bool:
        if self.discriminant_offset is None:
            self.discriminant_offset = self.parent.add_data(4)
            return True
        return False


class _LocationUsage:
    """How much of one union data location a single union member already uses.

    ``holes`` offsets are relative to the start of the location.
    """

    __slots__ = ("holes", "is_used", "lg_used")

    def __init__(self, lg_used: int | None = None) -> None:
        self.is_used = lg_used is not None
        self.lg_used = lg_used if lg_used is not None else 0
        self.holes = _HoleSet()

    def smallest_hole_at_least(self, location: _DataLocation, lg: int) -> int | None:
        if not self.is_used:
            return location.lg if lg <= location.lg else None
        if lg >= self.lg_used:
            return lg if lg < location.lg else None
        hole = self.holes.smallest_at_least(lg)
        if hole is not None:
            return hole
        return self.lg_used if self.lg_used < location.lg else None

    def allocate_from_hole(self, location: _DataLocation, lg: int) -> int:
        if not self.is_used:
            result = 0
            self.is_used = True
            self.lg_used = lg
        elif lg >= self.lg_used:
            self.holes.add_holes_at_end(self.lg_used, 1, lg)
            self.lg_used = lg + 1
            result = 1
        else:
            hole = self.holes.try_allocate(lg)
            if hole is not None:
                result = hole
            else:
                result = 1 << (self.lg_used - lg)
                self.holes.add_holes_at_end(lg, result + 1, self.lg_used)
                self.lg_used += 1
        return (location.offset << (location.lg - lg)) + result

    def try_allocate_by_expanding(
        self, group: _Group, location: _DataLocation, lg: int
    ) -> int | None:
        if not self.is_used:
            if location.try_expand_to(group.union, lg):
                self.is_used = True
                self.lg_used = lg
                return location.offset << (location.lg - lg)
            return None
        new_lg = max(self.lg_used, lg) + 1
        if self._try_expand_usage(group, location, new_lg, new_holes=True):
            result = self.holes.try_allocate(lg)
            assert result is not None, "layout: expanded usage has no hole"
            return (location.offset << (location.lg - lg)) + result
        return None

    def try_expand(
        self, group: _Group, location: _DataLocation, old_lg: int, old_offset: int, factor: int
    ) -> bool:
        if old_offset == 0 and self.lg_used == old_lg:
            return self._try_expand_usage(group, location, old_lg + factor, new_holes=False)
        return self.holes.try_expand(old_lg, old_offset, factor)

    def _try_expand_usage(
        self, group: _Group, location: _DataLocation, desired: int, *, new_holes: bool
    ) -> bool:
        if desired > location.lg and not location.try_expand_to(group.union, desired):
            return False
        if new_holes:
            self.holes.add_holes_at_end(self.lg_used, 1, desired)
        else:
            # capnp <= 0.5 added holes here too, overlapping fields; 0.6+ fixed it but refuses
            # to compile the schemas whose layout the fix changes.
            group.issue_344()
        self.lg_used = desired
        return True


class _Group(_Scope):
    """One member of a union (a field is wrapped in a one-member group for layout)."""

    def __init__(self, union: _Union, flag: list[bool]) -> None:
        self.union = union
        self.usages: list[_LocationUsage] = []
        self.pointers_used = 0
        self.has_members = False
        self._issue_344_flag = flag

    def issue_344(self) -> None:
        self._issue_344_flag[0] = True

    def _add_member(self) -> None:
        if not self.has_members:
            self.has_members = True
            self.union.new_group_adding_first_member()

    def add_void(self) -> None:
        self._add_member()
        # A Void member of a union nested in another union still counts as a member of the
        # outer one (it decides when the outer discriminant is allocated).
        self.union.parent.add_void()

    def add_data(self, lg: int) -> int:
        self._add_member()
        locations = self.union.data_locations
        best_size: int | None = None
        best: int | None = None
        for i, location in enumerate(locations):
            if len(self.usages) == i:
                self.usages.append(_LocationUsage())
            hole = self.usages[i].smallest_hole_at_least(location, lg)
            if hole is not None and (best_size is None or hole < best_size):
                best_size = hole
                best = i
        if best is not None:
            return self.usages[best].allocate_from_hole(locations[best], lg)
        for i, location in enumerate(locations):
            result = self.usages[i].try_allocate_by_expanding(self, location, lg)
            if result is not None:
                return result
        result = self.union.add_new_data_location(lg)
        self.usages.append(_LocationUsage(lg))
        return result

    def add_pointer(self) -> int:
        self._add_member()
        if self.pointers_used < len(self.union.pointer_locations):
            self.pointers_used += 1
            return self.union.pointer_locations[self.pointers_used - 1]
        self.pointers_used += 1
        return self.union.add_new_pointer_location()

    def try_expand_data(self, old_lg: int, old_offset: int, factor: int) -> bool:
        locations = self.union.data_locations
        if old_lg + factor > 6 or (old_offset & ((1 << factor) - 1)) != 0:
            # An impossible expansion (too large or misaligned). capnp <= 0.5 forgot to give up
            # here and sometimes succeeded, producing bogus layouts; 0.6+ gives up, but refuses
            # to compile the schemas where the old code would have succeeded. Ask a throwaway
            # copy of the layout what the old code would have done.
            for i in range(len(self.usages)):
                location = locations[i]
                if (location.lg >= old_lg
                        and old_offset >> (location.lg - old_lg) == location.offset):
                    import copy  # here: only this rare case needs it (and it costs at start-up)

                    trial = copy.deepcopy(self, {id(self._issue_344_flag): self._issue_344_flag})
                    local = old_offset - (location.offset << (location.lg - old_lg))
                    if trial.usages[i].try_expand(
                        trial, trial.union.data_locations[i], old_lg, local, factor
                    ):
                        self.issue_344()
                    break
            return False
        for i in range(len(self.usages)):
            location = locations[i]
            if location.lg >= old_lg and old_offset >> (location.lg - old_lg) == location.offset:
                local = old_offset - (location.offset << (location.lg - old_lg))
                return self.usages[i].try_expand(self, location, old_lg, local, factor)
        raise AssertionError("layout: tried to expand a field that was never allocated")


# ------------------------------------------------------------------------- member traversal


class _Info:
    """What the translator knows about one member (or the struct itself, ``member is None``)."""

    def __init__(
        self,
        parent: _Info | None,
        code_order: int,
        member: Member | None,
        in_union: bool,
        field_scope: _Scope | None = None,
    ) -> None:
        self.parent = parent
        self.code_order = code_order
        self.member = member
        self.in_union = in_union
        self.field_scope = field_scope
        self.union_scope: _Union | None = None
        self.child_count = 0
        self.children_initialized = 0
        self.discriminants_given = 0
        self.laid_out: LaidOutField | None = None
        self.node: ScopeLayout | None = None
        if member is None or not isinstance(member, FieldMember):
            self.node = ScopeLayout(member if not isinstance(member, FieldMember) else None)

    def get_field(self) -> LaidOutField:
        """This member's entry in its parent's field list, created on first use.

        The position is decided by when this is first called, which is why capnp's field lists
        are in "first touched while walking ordinals" order.
        """
        if self.laid_out is not None:
            return self.laid_out
        parent = self.parent
        assert parent is not None and parent.node is not None and self.member is not None
        index = parent.children_initialized
        if index == 0 and parent.parent is not None:
            parent.get_field()  # a group appears in its parent once its first child does
        parent.children_initialized += 1
        laid_out = LaidOutField(self.member, index, self.code_order)
        if self.in_union:
            laid_out.discriminant_value = parent.discriminants_given
            parent.discriminants_given += 1
        parent.node.fields.append(laid_out)
        self.laid_out = laid_out
        return laid_out

    def finish_group(self) -> None:
        assert self.node is not None
        if self.union_scope is not None:
            self.union_scope.add_discriminant()
            self.node.discriminant_count = self.discriminants_given
            assert self.union_scope.discriminant_offset is not None
            self.node.discriminant_offset = self.union_scope.discriminant_offset
        if self.parent is not None:
            self.get_field().group = self.node


class _Translator:
    def __init__(self, issue_flag: list[bool]) -> None:
        self.by_ordinal: list[tuple[int, int, _Info]] = []  # (ordinal, insertion, info)
        self.all_members: list[_Info] = []
        self.problems: list[LayoutProblem] = []
        self.issue_flag = issue_flag
        #: The member being laid out when the issue-344 check first fired (capnp's context).
        self.issue_member: Member | None = None

    def _with_ordinal(self, ordinal: int, info: _Info) -> None:
        self.by_ordinal.append((ordinal, len(self.by_ordinal), info))

    def top_or_group(self, members: Sequence[Member], parent: _Info, scope: _Scope) -> None:
        code_order = 0
        for member in members:
            if isinstance(member, FieldMember):
                parent.child_count += 1
                info = _Info(parent, code_order, member, False, scope)
                code_order += 1
                self.all_members.append(info)
                self._with_ordinal(member.ordinal, info)
            elif isinstance(member, UnionMember):
                union = _Union(scope)
                if member.name == "":
                    owner = parent
                    # An unnamed union's members are numbered along with the enclosing scope's.
                    code_order = self.union(member, parent, union, code_order)
                else:
                    parent.child_count += 1
                    owner = _Info(parent, code_order, member, False)
                    code_order += 1
                    self.all_members.append(owner)
                    owner.union_scope = union
                    self.union(member, owner, union, 0)
                owner.union_scope = union
                if member.ordinal is not None:
                    self._with_ordinal(member.ordinal, owner)
            elif isinstance(member, GroupMember):
                parent.child_count += 1
                info = _Info(parent, code_order, member, False)
                code_order += 1
                self.all_members.append(info)
                self.group(member, info, scope)
            else:
                raise TypeError(f"not a struct member: {member!r}")

    def group(self, member: GroupMember, info: _Info, scope: _Scope) -> None:
        if not member.members:
            self.problems.append(LayoutProblem("Group must have at least one member.", member))
        self.top_or_group(member.members, info, scope)

    def union(self, decl: UnionMember, parent: _Info, union: _Union, code_order: int) -> int:
        if len(decl.members) < 2:
            self.problems.append(LayoutProblem("Union must have at least two members.", decl))
        for member in decl.members:
            if isinstance(member, FieldMember):
                parent.child_count += 1
                info = _Info(parent, code_order, member, True, _Group(union, self.issue_flag))
                code_order += 1
                self.all_members.append(info)
                self._with_ordinal(member.ordinal, info)
            elif isinstance(member, UnionMember):
                if member.name == "":
                    self.problems.append(
                        LayoutProblem("Unions cannot contain unnamed unions.", member)
                    )
                    continue
                parent.child_count += 1
                inner = _Union(_Group(union, self.issue_flag))
                info = _Info(parent, code_order, member, True)
                code_order += 1
                self.all_members.append(info)
                info.union_scope = inner
                self.union(member, info, inner, 0)
                if member.ordinal is not None:
                    self._with_ordinal(member.ordinal, info)
            elif isinstance(member, GroupMember):
                parent.child_count += 1
                info = _Info(parent, code_order, member, True)
                code_order += 1
                self.all_members.append(info)
                self.group(member, info, _Group(union, self.issue_flag))
            else:
                raise TypeError(f"not a struct member: {member!r}")
        return code_order

    def allocate(self, root: _Info, check_ordinals: bool) -> None:
        expected = 0
        last: _Info | None = None
        for ordinal, _, info in sorted(self.by_ordinal, key=lambda entry: entry[:2]):
            member = info.member
            if check_ordinals and member is not None:
                # Mirrors capnp's DuplicateOrdinalDetector.
                if ordinal < expected:
                    self.problems.append(
                        LayoutProblem("Duplicate ordinal number.", member, "ordinal")
                    )
                    if last is not None and last.member is not None:
                        self.problems.append(LayoutProblem(
                            f"Ordinal @{_ordinal_of(last.member)} originally used here.",
                            last.member, "ordinal",
                        ))
                        last = None
                elif ordinal > expected:
                    self.problems.append(LayoutProblem(
                        f"Skipped ordinal @{expected}.  Ordinals must be sequential with no "
                        "holes.",
                        member, "ordinal",
                    ))
                    expected = ordinal + 1
                else:
                    expected += 1
                    last = info
            if info.parent is not None:
                info.get_field().ordinal = ordinal
            if self.issue_flag[0] is False and self.issue_member is None:
                self.issue_member = member
            if isinstance(member, FieldMember):
                assert info.field_scope is not None
                laid_out = info.get_field()
                if member.size == SlotSize.POINTER:
                    laid_out.offset = info.field_scope.add_pointer()
                elif member.size == SlotSize.VOID:
                    info.field_scope.add_void()
                    laid_out.offset = 0
                else:
                    laid_out.offset = info.field_scope.add_data(int(member.size))
            else:
                assert info.union_scope is not None and member is not None
                if not info.union_scope.add_discriminant():
                    self.problems.append(LayoutProblem(
                        "Union ordinal, if specified, must be greater than no more than one of "
                        "its member ordinals (i.e. there can only be one field retroactively "
                        "unionized).",
                        _union_with_ordinal(info, ordinal), "ordinal",
                    ))
            if not self.issue_flag[0]:
                self.issue_member = None
        root.finish_group()
        for info in self.all_members:
            if not isinstance(info.member, FieldMember):
                info.finish_group()


def _ordinal_of(member: Member) -> int | None:
    return member.ordinal if isinstance(member, (FieldMember, UnionMember)) else None


def _union_with_ordinal(info: _Info, ordinal: int) -> Member:
    """The union declaration an explicit union ordinal belongs to (for error positions)."""
    assert info.member is not None
    return info.member


def layout_struct(
    members: Sequence[Member],
    *,
    is_param_list: bool = False,
    detect_issue_344: bool = True,
) -> StructLayout:
    """Lay out one struct (see the module docstring for the input and output shapes).

    ``detect_issue_344=False`` behaves like capnp with ``CAPNP_IGNORE_ISSUE_344`` set: no
    problem is reported for those layouts.
    """
    issue_flag = [False]
    top = _Top()
    translator = _Translator(issue_flag)
    root = _Info(None, 0, None, False)
    translator.top_or_group(members, root, top)
    translator.allocate(root, check_ordinals=not is_param_list)
    assert root.node is not None
    result = StructLayout(root.node, top.data_word_count, top.pointer_count,
                          translator.problems, issue_flag[0] and detect_issue_344)
    if result.issue_344 and members:
        culprit = translator.issue_member if translator.issue_member is not None else members[0]
        result.problems.append(LayoutProblem(ISSUE_344_MESSAGE, culprit))
    if not result.problems:
        result.problems.extend(_unordered_fields(result))
    return result


def _unordered_fields(layout: StructLayout) -> list[LayoutProblem]:
    """capnp's own schema validator rejects a field list whose explicit ordinals go backwards.

    That happens when a retroactive union (``@N!``) is touched through one of its members before
    a sibling with a lower ordinal: capnp then stops with "Internal compiler bug: Bootstrap
    schema failed validation", reported on the struct's name.
    """
    problems: list[LayoutProblem] = []
    scopes = [layout.root, *(scope for scope, _, _ in layout.walk())]
    for scope in scopes:
        next_ordinal = 0
        for f in scope.fields:
            if f.ordinal is None:
                continue
            if f.ordinal < next_ordinal:
                problems.append(LayoutProblem(
                    "Internal compiler bug: Bootstrap schema failed validation: fields were not "
                    f"ordered by ordinal (field {f.member.name!r})",
                    f.member, "struct",
                ))
            next_ordinal = f.ordinal + 1
    return problems
