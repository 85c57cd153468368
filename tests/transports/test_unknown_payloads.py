"""RPC payloads keep what a newer peer's schema wrote (issue 16) on ``capnp://``.

A pycapnp client with a newer schema calls a cara server with an older one. What the server
sends back of what it received (a struct field of the params, or the params struct itself for
a method declared ``Box -> Box``) must keep every field the server's schema does not know,
the unknown union member, and capabilities among them (described anew in the results' cap
table, so the client can call its own object through them), as libcapnp would; also when the
server returns the struct as an ``AnyPointer`` value.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.reference import require_pycapnp
from tests.transports.support import run

OLD = """@0xc0ffee00d00d0301;
struct Box {
  id @0 :UInt32;
  union { a @1 :Void; b @2 :Int32; }
}
struct AnyBox {
  id @0 :UInt32;
  any @1 :AnyPointer;
}
interface Keeper {
  keep @0 (box :Box) -> (box :Box);
  keepAny @1 (box :AnyBox) -> (box :AnyBox);
  same @2 Box -> Box;
  wrap @3 (box :Box) -> (any :AnyPointer);
}
"""

NEW = """@0xc0ffee00d00d0301;
struct Box {
  id @0 :UInt32;
  union { a @1 :Void; b @2 :Int32; c @3 :Text; }
  note @4 :Text;
  extra @5 :Int64;
  cb @6 :Callback;
}
struct AnyBox {
  id @0 :UInt32;
  any @1 :AnyPointer;
  note @2 :Text;
  more @3 :Box;
}
interface Callback { ping @0 (x :Int32) -> (y :Int32); }
interface Keeper {
  keep @0 (box :Box) -> (box :Box);
  keepAny @1 (box :AnyBox) -> (box :AnyBox);
  same @2 Box -> Box;
  wrap @3 (box :Box) -> (any :AnyPointer);
}
"""

#: The newer client (run as ``python -c``): prints what it gets back from each method.
CLIENT = r"""
import asyncio, sys
import capnp

async def main(schema, host, port):
    s = capnp.load(schema)
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=int(port))
    client = capnp.TwoPartyClient(stream)
    k = client.bootstrap().cast_as(s.Keeper)

    class Cb(s.Callback.Server):
        async def ping(self, x, **_):
            return x * 2

    r = await k.keep(box={"id": 1, "c": "see", "note": "n", "extra": -5})
    print("keep", r.box.id, r.box.which(), r.box.c, r.box.note, r.box.extra, flush=True)
    box = s.AnyBox.new_message(id=1, note="any note", more={"id": 7, "note": "inner"})
    box.any.set_as_text("text")
    r = await k.keepAny(box=box)
    print("keepAny", r.box.id, r.box.any.as_text(), r.box.note, r.box.more.note, flush=True)
    r = await k.same(id=1, c="see", note="n", extra=-5, cb=Cb())
    print("same", r.id, r.which(), r.c, r.note, r.extra, flush=True)
    print("ping", (await r.cb.ping(21)).y, flush=True)
    r = await k.wrap(box={"id": 1, "c": "see", "note": "wrapped"})
    inner = r.any.as_struct(s.Box)
    print("wrap", inner.id, inner.which(), inner.c, inner.note, flush=True)

asyncio.run(capnp.run(main(*sys.argv[1:])))
"""


class Keeper:
    """Sends back what it received, its id changed."""

    def keep(self, box: Any) -> Any:
        box.id += 1
        return box

    def keepAny(self, box: Any) -> Any:
        box.id += 1
        return box

    def same(self, box: Any) -> Any:
        box.id += 1
        return box

    def wrap(self, box: Any) -> Any:  # (the struct as an AnyPointer value)
        box.id += 1
        return box


def test_a_newer_client_gets_back_what_it_sent(tmp_path: Path) -> None:
    import cara

    require_pycapnp()
    (tmp_path / "old_keep.capnp").write_text(OLD)
    (tmp_path / "new_keep.capnp").write_text(NEW)
    module = cara.load(tmp_path / "old_keep.capnp")

    async def main() -> str:
        server = cara.Server()
        server.bind("capnp://127.0.0.1:0")
        cara.register_interface(server, module.Keeper, Keeper())
        await server.start()
        try:
            host, port = server.endpoints[0].split("://", 1)[1].rsplit(":", 1)
            proc = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", CLIENT, str(tmp_path / "new_keep.capnp"),
                                 host, port], capture_output=True, text=True, timeout=60)
        finally:
            await server.stop()
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    lines = run(main(), timeout=90).splitlines()
    assert lines == ["keep 2 c see n -5",
                     "keepAny 2 text any note inner",
                     "same 2 c see n -5",
                     "ping 42",
                     "wrap 2 c see wrapped"]


