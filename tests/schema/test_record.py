"""``cara.schema._record.record``: the dataclass stand-in of the schema layer and the CLI.

What the record classes promise: dataclass construction (positional and keyword arguments,
defaults, fresh default factories, ``__post_init__``), field-by-field equality (or identity with
``eq=False``), a dataclass-like repr, optional ``__slots__``, and what ``dataclasses`` itself
reads (``fields``, ``replace``, ``asdict``, ``is_dataclass``) for the code that treats them as
dataclasses. Their ``__init__`` methods come precompiled from ``_record_inits``; a stale copy
is only slower, and the last test says to regenerate it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pickle
import pkgutil

import pytest

import cara.cli
import cara.schema
from cara.schema import _record, model
from cara.schema._record import field, record


@record
class _Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    note: str = field(default="", repr=False)


@record(eq=False, slots=True)
class _Slotted:
    a: int
    b: list[int] = field(default_factory=list)


@record
class _Checked:
    value: int
    double: int = 0

    def __post_init__(self) -> None:
        self.double = self.value * 2


def test_construction_and_defaults() -> None:
    p = _Point(1)
    assert (p.x, p.y, p.tags, p.note) == (1, 0, [], "")
    assert _Point(1).tags is not p.tags  # a fresh list each time
    q = _Point(x=2, y=3, tags=["a"], note="n")
    assert (q.x, q.y, q.tags, q.note) == (2, 3, ["a"], "n")
    with pytest.raises(TypeError):
        _Point()  # type: ignore[call-arg]
    assert _Checked(4).double == 8


def test_eq_repr_hash() -> None:
    assert _Point(1, 2) == _Point(1, 2)
    assert _Point(1, 2) != _Point(1, 3)
    assert _Point(1) != (1, 0, [], "")
    assert repr(_Point(1, 2, ["t"], "hidden")) == "_Point(x=1, y=2, tags=['t'])"
    with pytest.raises(TypeError):
        hash(_Point(1))
    s = _Slotted(1)
    assert s != _Slotted(1) and s == s and hash(s) == hash(s)
    assert repr(s) == "_Slotted(a=1, b=[])"


def test_slots() -> None:
    s = _Slotted(1)
    assert _Slotted.__slots__ == ("a", "b")
    with pytest.raises(AttributeError):
        s.other = 1  # type: ignore[attr-defined]


def test_what_dataclasses_reads() -> None:
    p = _Point(1, 2, ["t"])
    assert dataclasses.is_dataclass(p) and dataclasses.is_dataclass(_Point)
    fields = dataclasses.fields(p)
    assert [f.name for f in fields] == ["x", "y", "tags", "note"]
    assert fields[1].default == 0 and fields[2].default_factory is list
    assert fields[3].repr is False and fields[0].type == "int"
    assert dataclasses.replace(p, y=5) == _Point(1, 5, ["t"])
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": ["t"], "note": ""}
    node = model.Node(id=5, nestedNodes=[model.NestedNode("n", 6)])
    assert dataclasses.replace(node, id=7).nestedNodes == node.nestedNodes
    assert [f.name for f in dataclasses.fields(model.Brand)] == ["scopes"]


def test_copy_and_pickle() -> None:
    p = _Point(1, 2, ["t"])
    assert copy.deepcopy(p) == p and copy.copy(p) == p
    s = _Slotted(3, [4])
    assert copy.deepcopy(s).b == [4]
    node = model.Node(id=5, struct=model.NodeStruct(dataWordCount=1))
    assert pickle.loads(pickle.dumps(node)) == node


def test_precompiled_inits_are_current() -> None:
    for package in (cara.schema, cara.cli):
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
    # This module's own classes are not in the cache; every class of cara's must be.
    ours = {("x", "y", "tags", "note"), ("a", "b"), ("value", "double")}
    missing = [names for names in (tuple(n for n, _ in shape) for shape, _ in _record.CACHE_MISSES)
               if names not in ours]
    assert not missing, ("record classes changed: regenerate cara/schema/_record_inits.py "
                         f"with `python -m cara.cli.record_cache` ({missing})")
