"""The main job of the README's quick start: the seed's examples, end to end.

Run with ``bash dev.sh demo``. Every step checks its own result, so a broken step stops the demo
with an error instead of printing something wrong:

1. compile the example schemas with cara's pure-Python compiler (``cara compile -ocara``);
2. the seed's struct examples: dicts keyed by field number, msgpack field shrinking, restoring;
3. the same struct as real Cap'n Proto binary and as JSON;
4. RPC on the built-in asyncio transport: echo, then a callback the server calls with a lambda
   that the client calls back (``examples/rpc_asyncio.py``);
5. the same over pseud (ZeroMQ) when pseud is installed (``examples/rpc_pseud.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent


def step(title: str) -> None:
    print(f"\n== {title}")


def compile_examples(out: Path) -> None:
    step("cara compile -ocara: the example schemas to Python modules (no C++ toolchain)")
    schemas = [HERE / "my_structs.capnp", HERE / "echo.capnp"]
    cmd = [sys.executable, "-m", "cara", "compile", f"-ocara:{out}",
           f"--src-prefix={HERE}", *map(str, schemas)]
    subprocess.run(cmd, check=True)
    for path in sorted(out.iterdir()):
        print(f"  wrote {path.name} ({path.stat().st_size} bytes)")


def structs(out: Path) -> None:
    step("structs are dicts keyed by field number (from the generated module)")
    sys.path.insert(0, str(out))
    my_structs_capnp = importlib.import_module("my_structs_capnp")
    MyStruct = my_structs_capnp.MyStruct

    first = MyStruct({"field": "some text for here"})
    m = MyStruct.Create(field="some different text")
    print(f"  {first!r}")
    print(f"  {m!r}")
    packed = msgpack.packb(m)
    print(f"  msgpack.packb(m) = {packed!r}")
    assert packed == b"\x81\x00\xb3some different text", packed
    plain = msgpack.packb({"field": "some different text"})
    print(f"  the same as a plain dict: {plain!r} ({len(plain)} vs {len(packed)} bytes)")

    original = MyStruct.Create(nested={"integer": 2})
    unpacked = msgpack.unpackb(msgpack.packb(original), strict_map_key=False)
    print(f"  unpacked: {unpacked!r}")
    assert unpacked == {1: {0: 2}}
    result = MyStruct(unpacked)
    print(f"  restored: {result!r}")
    assert result.nested.integer == 2 and result == original

    unset = MyStruct()
    assert unset.nested.integer == 0 and msgpack.packb(unset) == b"\x80"
    print("  reading an unset field gives the default and changes nothing:",
          msgpack.packb(unset))
    try:
        MyStruct.Create(nested={"integer": "two"})
    except TypeError as exc:  # cara.ValueTypeError is a TypeError
        print(f"  a wrong type names the path: {exc}")
    else:
        raise AssertionError("a Text in an Int32 field was accepted")
    sys.path.remove(str(out))


def wire_formats() -> None:
    step("the same struct as Cap'n Proto binary and JSON (through the import hook)")
    import cara  # noqa: F401  (installs the hook: `import my_structs_capnp` finds the .capnp)

    sys.path.insert(0, str(HERE))
    sys.modules.pop("my_structs_capnp", None)
    my_structs_capnp = importlib.import_module("my_structs_capnp")
    m = my_structs_capnp.MyStruct.Create(field="hello", nested={"integer": -7})
    binary = m.to_bytes()
    packed = m.to_bytes(packed=True)
    print(f"  to_bytes(): {len(binary)} bytes of Cap'n Proto; packed: {len(packed)} bytes")
    assert my_structs_capnp.MyStruct.from_bytes(binary) == m
    print(f"  to_json(): {m.to_json()}")
    assert my_structs_capnp.MyStruct.from_json(m.to_json()) == m
    sys.path.remove(str(HERE))


def rpc_asyncio() -> None:
    step("RPC on the built-in asyncio transport: echo and a callback with a lambda")
    spec = importlib.util.spec_from_file_location("rpc_asyncio", HERE / "rpc_asyncio.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    asyncio.run(module.main())


def rpc_pseud() -> None:
    step("the same over pseud (ZeroMQ), the original cara's transport")
    if importlib.util.find_spec("pseud") is None or not (HERE / "rpc_pseud.py").exists():
        print("  pseud is not installed (pip install 'cara[pseud]'); skipped")
        return
    subprocess.run([sys.executable, str(HERE / "rpc_pseud.py")], check=True, timeout=120)


def main() -> int:
    import cara

    print(f"cara {cara.__version__}")
    with tempfile.TemporaryDirectory(prefix="cara-demo-") as tmp:
        out = Path(tmp)
        compile_examples(out)
        structs(out)
    wire_formats()
    rpc_asyncio()
    rpc_pseud()
    print("\nAll steps passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
