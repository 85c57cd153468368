"""The order of the nodes and the source info in capnp's ``CodeGeneratorRequest``.

capnp 0.9.2 writes ``nodes`` in the order its final ``SchemaLoader`` first heard of each id
(a ``kj::HashMap``, which iterates in insertion order): loading a node first validates it, and
every type id the validator meets that is not loaded yet is entered as a placeholder, so a
dependency can take its place before the node that names it; a node loaded later fills its
placeholder's place. :class:`FinalLoader` replays that.

``sourceInfo`` is written from a ``std::unordered_map<uint64_t, ...>`` keyed by node id;
:func:`unordered_map_order` replays libstdc++'s hash table (identity hash, prime bucket counts,
each new key at the front of its bucket or of the whole list), which is what the Debian
``capnp`` 0.9.2 binary (GCC 12's libstdc++) iterates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from math import floor

from cara.schema import model

__all__ = ["FinalLoader", "unordered_map_order"]


# ----------------------------------------------------------------------------- the loader

def _validated_type(type_: model.Type) -> Iterator[int]:
    """The ids capnp's schema validator checks for a type: the type's own id, then its brand's
    bound types (``Validator::validate(Type)``)."""
    while type_.which == "list" and type_.list is not None:
        type_ = type_.list.elementType
    if type_.which in ("struct", "enum", "interface"):
        branded: model.TypeBranded = getattr(type_, type_.which)
        yield branded.typeId
        yield from _validated_brand(branded.brand)


def _validated_brand(brand: model.Brand) -> Iterator[int]:
    for scope in brand.scopes:
        for binding in scope.bind or []:
            if binding.type is not None:
                yield from _validated_type(binding.type)


def validated_ids(node: model.Node) -> Iterator[int]:
    """The type ids ``SchemaLoader``'s validator looks up for ``node``, in its order."""
    if node.struct is not None:
        for f in node.struct.fields:
            if f.slot is not None:
                yield from _validated_type(f.slot.type)
            elif f.group is not None:
                yield f.group.typeId
        if node.struct.isGroup:
            yield node.scopeId
    elif node.interface is not None:
        for superclass in node.interface.superclasses:
            yield superclass.id
            yield from _validated_brand(superclass.brand)
        for method in node.interface.methods:
            yield method.paramStructType
            yield from _validated_brand(method.paramBrand)
            yield method.resultStructType
            yield from _validated_brand(method.resultBrand)
    elif node.const is not None:
        yield from _validated_type(node.const.type)
    elif node.annotation is not None:
        yield from _validated_type(node.annotation.type)


class FinalLoader:
    """capnp's final ``SchemaLoader`` as far as the order of its entries goes."""

    def __init__(self) -> None:
        self._entries: dict[int, model.Node | None] = {}  # None: a placeholder

    def load_once(self, node: model.Node) -> None:
        if self._entries.get(node.id) is not None:
            return
        for dep in validated_ids(node):
            self._entries.setdefault(dep, None)
        self._entries[node.id] = node  # a placeholder keeps its place

    def nodes(self) -> list[model.Node]:
        """The loaded nodes (not the placeholders), in the loader's order."""
        return [node for node in self._entries.values() if node is not None]


# ------------------------------------------------------------------ libstdc++'s hash table

#: libstdc++'s ``std::__detail::__prime_list`` (the bucket counts it grows through).
_PRIMES = (
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
    97, 103, 109, 113, 127, 137, 139, 149, 157, 167, 179, 193, 199, 211, 227, 241, 257, 277, 293,
    313, 337, 359, 383, 409, 439, 467, 503, 541, 577, 619, 661, 709, 761, 823, 887, 953, 1031,
    1109, 1193, 1289, 1381, 1493, 1613, 1741, 1879, 2029, 2179, 2357, 2549, 2753, 2971, 3209,
    3469, 3739, 4027, 4349, 4703, 5087, 5503, 5953, 6427, 6949, 7517, 8123, 8783, 9497, 10273,
    11113, 12011, 12983, 14033, 15173, 16411, 17749, 19183, 20753, 22447, 24281, 26267, 28411,
    30727, 33223, 35933, 38873, 42043, 45481, 49201, 53201, 57557, 62233, 67307, 72817, 78779,
    85229, 92203, 99733, 107897, 116731, 126271, 136607, 147793, 159871, 172933, 187091, 202409,
    218971, 236897, 256279, 277261, 299951, 324503, 351061, 379787, 410857, 444487, 480881,
    520241, 562841, 608903, 658753, 712697, 771049, 834181, 902483, 976369, 1056323, 1142821,
    1236397, 1337629, 1447153, 1565659, 1693859, 1832561, 1982627, 2144977, 2320627, 2510653,
    2716249, 2938679, 3179303, 3439651, 3721303, 4026031, 4355707, 4712381, 5098259, 5515729,
    5967347, 6456007, 6984629, 7556579, 8175383, 8844859, 9569143, 10352717, 11200489, 12117689,
    13109983, 14183539, 15345007, 16601593, 17961079, 19431899, 21023161, 22744717, 24607243,
    26622317, 28802401, 31160981, 33712729, 36473443, 39460231, 42691603, 46187573, 49969847,
    54061849, 58488943, 63278561, 68460391, 74066549, 80131819, 86693767, 93793069, 101473717,
    109783337, 118773397, 128499677, 139022417, 150406843, 162723577, 176048909, 190465427,
    206062531, 222936881, 241193053, 260944219, 282312799, 305431229, 330442829, 357502601,
    386778277, 418451333, 452718089, 489790921, 529899637, 573292817, 620239453, 671030513,
    725980837, 785430967, 849749479, 919334987, 994618837, 1076067617, 1164186217, 1259520799,
    1362662261, 1474249943, 1594975441, 1725587117, 1866894511, 2019773507, 2185171673,
    2364114217, 2557710269, 2767159799, 2993761039, 3238918481, 3504151727, 3791104843,
    4101556399, 4294967291,)
#: ``_Prime_rehash_policy::_M_next_bkt``'s table for small requests.
_FAST_BUCKETS = (2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13)


class _RehashPolicy:
    """libstdc++'s ``_Prime_rehash_policy`` with the maximum load factor 1.0."""

    def __init__(self) -> None:
        self.next_resize = 0

    def next_bucket_count(self, n: int) -> int:
        if n < len(_FAST_BUCKETS):
            if n == 0:
                return 1
            self.next_resize = _FAST_BUCKETS[n]
            return _FAST_BUCKETS[n]
        for prime in _PRIMES[6:]:
            if prime >= n:
                self.next_resize = prime
                return prime
        self.next_resize = _PRIMES[-1]
        return _PRIMES[-1]

    def need_rehash(self, buckets: int, elements: int, inserting: int) -> int | None:
        """The new bucket count, or None to keep the buckets."""
        if elements + inserting <= self.next_resize:
            return None
        min_buckets = max(elements + inserting, 0 if self.next_resize else 11)
        if min_buckets >= buckets:
            return self.next_bucket_count(max(floor(min_buckets) + 1, buckets * 2))
        self.next_resize = buckets
        return None


def unordered_map_order(keys: Iterable[int]) -> list[int]:
    """The iteration order of a libstdc++ ``std::unordered_map<uint64_t, T>`` after inserting
    ``keys`` in this order (repeated keys are ignored, as ``insert`` ignores them)."""
    policy = _RehashPolicy()
    buckets = 1
    # The singly linked list of all entries, as "next" links; None is the list's head
    # (``_M_before_begin``). bucket_before[b] is the entry before bucket b's first one.
    after: dict[int | None, int | None] = {None: None}
    bucket_before: dict[int, int | None] = {}
    for key in keys:
        if key in after:
            continue
        grown = policy.need_rehash(buckets, len(after) - 1, 1)
        if grown is not None:
            buckets = grown
            after, bucket_before = _rehash(after, buckets)
        bucket = key % buckets
        if bucket in bucket_before:
            before = bucket_before[bucket]
            after[key] = after[before]
            after[before] = key
        else:
            first = after[None]
            after[key] = first
            after[None] = key
            if first is not None:
                bucket_before[first % buckets] = key
            bucket_before[bucket] = None
    order = []
    entry = after[None]
    while entry is not None:
        order.append(entry)
        entry = after[entry]
    return order


def _rehash(after: dict[int | None, int | None],
            buckets: int) -> tuple[dict[int | None, int | None], dict[int, int | None]]:
    """``_Hashtable::_M_rehash_aux`` for unique keys: the entries in list order, each to the
    front of its new bucket, or of the list when its bucket is new."""
    new_after: dict[int | None, int | None] = {None: None}
    bucket_before: dict[int, int | None] = {}
    begin_bucket = 0
    entry = after[None]
    while entry is not None:
        following = after[entry]
        bucket = entry % buckets
        if bucket not in bucket_before:
            new_after[entry] = new_after[None]
            new_after[None] = entry
            bucket_before[bucket] = None
            if new_after[entry] is not None:
                bucket_before[begin_bucket] = entry
            begin_bucket = bucket
        else:
            before = bucket_before[bucket]
            new_after[entry] = new_after[before]
            new_after[before] = entry
        entry = following
    return new_after, bucket_before
