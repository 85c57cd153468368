"""Test interfaces for the RPC tests, compiled by the reference compiler (``capnp``).

The nodes come from ``capnp compile -o-`` decoded by pycapnp (tests/support/reference.py), so the
interface ids, method indexes and field numbers the RPC tests use are the real compiler's, not
cara's. ``load()`` compiles once per session in a temporary directory.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from cara.rpc import InterfaceInfo, interfaces_from_nodes
from tests.support.reference import reference_request

TEST_SCHEMA = """
@0xc1a2d0f1e2b3a4c5;

interface Echo {
    echo @0 (text :Text) -> (text :Text);
}

interface Callback {
    call @0 (value :Int64) -> (result :Int64);
}

struct Info {
    name @0 :Text;
    count @1 :UInt32;
    cb @2 :Callback;
    cbs @3 :List(Callback);
}

interface Calc {
    add @0 (a :Int64, b :Int64) -> (sum :Int64);
    fail @1 (kind :Text, message :Text) -> ();
    sleep @2 (seconds :Float64) -> (done :Bool);
    pair @3 () -> (x :Int32, y :Text);
    info @4 () -> Info;
    takeInfo @5 Info -> (total :Int64);
    callBack @6 (cb :Callback, value :Int64) -> (result :Int64);
    makeCallback @7 (offset :Int64) -> (cb :Callback);
    callAll @8 (cbs :List(Callback), value :Int64) -> (total :Int64);
}

interface Left {
    name @0 () -> (v :Text);
}

interface Right {
    name @0 () -> (v :Text);
}

interface Both extends(Left, Right) {
    own @0 () -> (v :Text);
}

interface Holder {
    put @0 (cap :Callback) -> ();
    get @1 () -> (cap :Callback);
    callHeld @2 (value :Int64) -> (result :Int64);
}
"""


@functools.cache
def load(text: str = TEST_SCHEMA) -> dict[str, InterfaceInfo]:
    """Every interface of ``text`` by its short name."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "test.capnp").write_text(text)
        request = reference_request(["test.capnp"], cwd=tmp)
    return {info.name: info for info in interfaces_from_nodes(request.nodes).values()}


@functools.cache
def runtime_module(text: str = TEST_SCHEMA) -> Any:
    """The runtime classes (``cara.runtime.build_module``) of ``text``'s nodes."""
    from cara.runtime import build_module

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "test.capnp").write_text(text)
        request = reference_request(["test.capnp"], cwd=tmp)
    return build_module(request, register=False)
