"""Readable comparison of two schema models: the first differing attribute, by path."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cara.schema import model

__all__ = ["first_difference", "request_difference"]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """None if equal, else ``path: a != b`` for the first difference found.

    Pointer values (``PointerValue``) are compared by their Python value and type; a float NaN
    equals NaN (defaults may be NaN).
    """
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        if type(a) is not type(b):
            return f"{path}: {type(a).__name__} != {type(b).__name__}"
        for f in dataclasses.fields(a):
            diff = first_difference(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if diff is not None:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = first_difference(x, y, f"{path}[{i}]")
            if diff is not None:
                return diff
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            diff = first_difference(a[k], b[k], f"{path}[{k!r}]")
            if diff is not None:
                return diff
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    if a != b or (type(a) is not type(b) and not (isinstance(a, (int, float)) and
                                                   isinstance(b, (int, float)))):
        return f"{path}: {a!r} != {b!r}"
    return None


def request_difference(ours: model.CodeGeneratorRequest,
                       theirs: model.CodeGeneratorRequest) -> str | None:
    """Compare two requests node by node (sorted by id); None if they are the same."""
    ours_by_id = {n.id: n for n in ours.nodes}
    theirs_by_id = {n.id: n for n in theirs.nodes}
    missing = sorted(set(theirs_by_id) - set(ours_by_id))
    extra = sorted(set(ours_by_id) - set(theirs_by_id))
    if missing or extra:
        return ("node sets differ: missing "
                + str([theirs_by_id[i].displayName for i in missing])
                + " extra " + str([ours_by_id[i].displayName for i in extra]))
    for node_id in sorted(theirs_by_id):
        diff = first_difference(ours_by_id[node_id], theirs_by_id[node_id])
        if diff is not None:
            return f"node @0x{node_id:016x} ({theirs_by_id[node_id].displayName}){diff}"
    ours_info = sorted(ours.sourceInfo, key=lambda s: s.id)
    theirs_info = sorted(theirs.sourceInfo, key=lambda s: s.id)
    diff = first_difference(ours_info, theirs_info, "sourceInfo")
    if diff is not None:
        return diff
    diff = first_difference(ours.requestedFiles, theirs.requestedFiles, "requestedFiles")
    if diff is not None:
        return diff
    return first_difference(ours.capnpVersion, theirs.capnpVersion, "capnpVersion")
