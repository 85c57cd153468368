"""The generated ``.pyi`` stubs, checked by mypy itself (run as a subprocess, as a user would):
correct use passes, a misspelt field and a wrong type are flagged, and the stubs of the whole
corpus are valid."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cara.codegen import write_modules
from tests.codegen.test_generate import CORPUS_FILES, REPO, SEED_SCHEMA
from tests.support.reference import reference_request


def run_mypy(cwd: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed (pip install mypy)")
    env = {**os.environ, "MYPYPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
         "--python-version=3.10", "--config-file=", "--strict", *targets],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def seed_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stubs")
    (root / "my_structs.capnp").write_text(SEED_SCHEMA)
    (root / "iface.capnp").write_text(textwrap.dedent("""\
        @0xb1a0c6a1e7ec5c21;
        interface Echo {
          echo @0 (text :Text) -> (text :Text);
          pair @1 () -> (a :Int32, b :Text);
        }
        struct Shape {
          union {
            circle @0 :Float64;
            square @1 :Float64;
          }
          color @2 :Color;
          tags @3 :List(Text);
          enum Color { red @0; green @1; }
        }
        struct Box(T) { value @0 :T; }
        struct Holder { box @0 :Box(Text); }
        interface Calc {
          add @0 (a :Int64, b :Int64) -> (sum :Int64);
          subscribe @1 (listener :Listener) -> (subscription :Subscription);
          info @2 () -> (info :Info);
          interface Listener { event @0 (text :Text) -> (); }
          interface Subscription { cancel @0 () -> (); }
          struct Info { sub @0 :Subscription; name @1 :Text; }
        }
        interface Sink {
          write @0 (chunk :Data) -> stream;
          done @1 () -> (total :UInt64);
        }
        """))
    # (`-> stream` imports /capnp/stream.capnp: the copy cara bundles)
    request = reference_request(["my_structs.capnp", "iface.capnp"], cwd=root,
                                import_path=[str(REPO / "cara" / "schema" / "standard")])
    out = root / "out"
    write_modules(request, out)
    return out


GOOD = """\
import asyncio
import cara
import my_structs_capnp as s
import iface_capnp as i

m = s.MyStruct.Create(field="x", nested={"integer": 2})
n: s.MyStruct.NestedStruct = m.nested
text: str = m.field.upper()
number: int = m.nested.integer + 1
again = s.MyStruct({"field": "y"}, field="z")
shape = i.Shape.Create(circle=1.5, color=i.Shape.Color.red, tags=["a", "b"])
kind: str = shape.which()
first: str = shape.tags[0]
color: i.Shape.Color = shape.color

async def call(echo: i.Echo.Proxy) -> str:
    pair = await echo.pair()
    return await echo.echo(text="hi") + pair.b + str(pair.a + 1)

held: str = i.Holder().box.value
bound = i.Box[str]

def blocking(url: str) -> str:  # the blocking client's proxies: untyped (values, not promises)
    with cara.connect_sync(url) as client:
        value: str = i.Echo(client).echo("x")
        return value

async def stream(sink: i.Sink.Proxy) -> int:
    await sink.write(b"x")  # a StreamCall: waits for room in the flow-control window
    sent: int = await cara.feed(sink.write, [b"a", b"b"])
    return await sink.done() + sent

class SinkImpl(i.Sink):
    async def write(self, chunk: bytes) -> None:
        pass

    def done(self) -> int:
        return 0

class Server(i.Echo):
    async def echo(self, text: str = "") -> str:
        return text

    async def pair(self) -> i.Echo.PairResults:
        return i.Echo.PairResults.Create(a=1, b="x")
"""

#: What the docs recommend, as a user script (checked with ``mypy --strict``): structs from
#: bytes, msgpack and JSON keep their own type, copies too; dicts for struct fields and enum
#: names for enum fields in assignments; ``Create`` with positional values; ``List.Get``.
USER_SCRIPT = """\
from __future__ import annotations

import asyncio
import io

import cara
import iface_capnp as i
import my_structs_capnp as s

m = s.MyStruct.Create("x", {"integer": 2})
back: s.MyStruct = s.MyStruct.from_bytes(m.to_bytes())
packed: s.MyStruct = s.MyStruct.from_bytes(m.to_bytes(packed=True), packed=True)
also: s.MyStruct = s.MyStruct.from_msgpack(m.to_msgpack())
json: s.MyStruct = s.MyStruct.from_json(m.to_json())
copied: s.MyStruct = m.copy()
limited: s.MyStruct = s.MyStruct.from_bytes(m.to_bytes(), traversal_limit_in_words=100)
m.nested = {"integer": 3}
m.nested = s.MyStruct.NestedStruct.Create(integer=4)
shape = i.Shape.Create(circle=1.5, tags=["a"])
shape.color = "green"
shape.color = 1
shape.tags = ("b", "c")
first: str = shape.tags.Get()
index, tag = shape.tags.Get(_with_index=True)
position: int = index + 1
holder = i.Holder.Create({"value": "boxed"})
f = io.BytesIO()
m.write(f)
_ = f.seek(0)
read: s.MyStruct = s.MyStruct.read(f)
every: list[s.MyStruct] = list(s.MyStruct.read_multiple_bytes(f.getvalue()))


class CalcImpl(i.Calc):
    def __init__(self) -> None:
        self.listeners: list[i.Calc.Listener.Proxy] = []

    def add(self, a: int, b: int) -> int:  # a plain method
        return a + b

    async def subscribe(self, listener: i.Calc.Listener.Proxy) -> i.Calc.Subscription:
        self.listeners.append(listener)
        await listener.event("subscribed")  # the caller's callback, called back
        return i.Calc.Subscription(lambda: self.listeners.remove(listener))

    def info(self) -> i.Calc.Info:
        return i.Calc.Info.Create(sub=lambda: None, name="calc")


async def rpc() -> None:
    server = cara.Server()
    server.bind("tcp://127.0.0.1:0")
    cara.register_interface(server, CalcImpl)
    cara.register_interface(server, i.Echo, {"echo": str.upper, "pair": lambda: (1, "x")})
    await server.start()
    client = cara.Client()
    client.connect(server.endpoints[0])
    async with client:
        calc = i.Calc(client)
        total: int = await calc.add(2, 3)
        heard: list[str] = []
        promise = calc.subscribe(heard.append)  # a callback; the call is not awaited
        await promise.subscription.cancel()  # pipelined on the capability in the result
        sub: i.Calc.Subscription.Proxy = await calc.subscribe(lambda text: None)
        await sub.cancel()
        name: str = await calc.info().info.name  # a field of a struct in the results
        await calc.info().info.sub.cancel()  # a capability in a struct in the results
        info: i.Calc.Info = await calc.info()
        echo = i.Echo(client)
        loud: str = await echo.echo("hi")
        pair = await echo.pair()
        number: int = pair.a
        assert (total, heard, name, info.name, loud, number) == (5, ["subscribed"], "calc",
                                                                 "calc", "HI", 1)
    await server.stop()


asyncio.run(rpc())
"""

BAD = {
    "misspelt field": ("print(s.MyStruct.Create(field='x').feild)", 'has no attribute "feild"'),
    "wrong type": ("s.MyStruct.Create(field=3)", 'incompatible type "int"; expected "str"'),
    "misspelt field write": ("m = s.MyStruct()\nm.feild = 'x'", 'has no attribute "feild"'),
    "wrong type write": ("m = s.MyStruct()\nm.field = 3", "Incompatible types in assignment"),
    "misspelt keyword": ("s.MyStruct.Create(feild='x')", 'Unexpected keyword argument "feild"'),
    "wrong read type": ("x: str = s.MyStruct().nested.integer", "Incompatible types"),
    "union member": ("k: int = i.Shape().which()", "Incompatible types"),
    "list element": ("i.Shape.Create(tags=[1])", "List item 0 has incompatible type"),
    "method parameter": ("async def f(e: i.Echo) -> None:\n    await e.echo(text=1)",
                         'incompatible type "int"'),
    "method result": ("async def f(e: i.Echo.Proxy) -> int:\n    return await e.echo(text='x')",
                      "Incompatible return value type"),
    "generic binding": ("n: int = i.Holder().box.value", "Incompatible types"),
    "struct field write": ("m = s.MyStruct()\nm.nested = 5", "Incompatible types in assignment"),
    "enum field write": ("x = i.Shape()\nx.color = 1.5", "Incompatible types in assignment"),
    "from_bytes type": ("x: i.Shape = s.MyStruct.from_bytes(b'')", "Incompatible types"),
    "positional type": ("s.MyStruct.Create(3)", 'incompatible type "int"; expected "str"'),
    "list get type": ("x: int = i.Shape().tags.Get()", "Incompatible types"),
    "implementation": ("class S(i.Echo):\n    async def echo(self, text: int) -> str: ...",
                       "incompatible with supertype"),
    "implementation result": ("class S(i.Calc):\n    def add(self, a: int, b: int) -> str: ...",
                              'incompatible with return type "int | Awaitable[int]"'),
    "awaited result type": ("async def f(c: i.Calc.Proxy) -> str:\n    return await c.add(1, 2)",
                            "Incompatible return value type"),
    "missing proxy method": ("async def f(c: i.Calc.Proxy) -> None:\n    await c.mul(1, 2)",
                             '"Proxy" has no attribute "mul"'),
    "proxy argument": ("import cara\nasync def f() -> None:\n"
                       "    await i.Calc(cara.Client()).add('1')",
                       'incompatible type "str"; expected "int"'),
    "callback argument": ("async def f(c: i.Calc.Proxy) -> None:\n    await c.subscribe(3)",
                          'incompatible type "int"'),
    "promise field": ("async def f(c: i.Calc.Proxy) -> None:\n    await c.info().inf",
                      'has no attribute "inf"'),
    "pipelined method": ("async def f(c: i.Calc.Proxy) -> None:\n"
                         "    await c.info().info.sub.stop()",
                         '"Proxy" has no attribute "stop"'),
    "stream call value": ("async def f(s: i.Sink.Proxy) -> int:\n    return await s.write(b'x')",
                          "Incompatible return value type"),
    "stream implementation": ("class K(i.Sink):\n    def write(self, chunk: bytes) -> int: ...",
                              'incompatible with return type "Awaitable[None] | None"'),
    "server url": ("import cara\ncara.Server().bind(3)", 'incompatible type "int"; expected "str"'),
    "interface is not a proxy": ("async def f(c: i.Calc) -> None:\n    await c.add(1, 2)",
                                 'Incompatible types in "await"'),
}


def test_mypy_accepts_correct_use(seed_out: Path) -> None:
    (seed_out / "good.py").write_text(GOOD)
    proc = run_mypy(seed_out, "good.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_accepts_what_the_docs_recommend(seed_out: Path) -> None:
    (seed_out / "user.py").write_text(USER_SCRIPT)
    proc = run_mypy(seed_out, "user.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and the script runs
    run = subprocess.run([sys.executable, "user.py"], cwd=seed_out, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("case", sorted(BAD))
def test_mypy_flags_mistakes(bad_report: dict[str, list[str]], case: str) -> None:
    message = BAD[case][1]
    errors = bad_report[_bad_file(case)]
    assert errors, f"mypy accepted {case!r}"
    assert any(message in e for e in errors), errors


def _bad_file(case: str) -> str:
    return "bad_" + case.replace(" ", "_") + ".py"


@pytest.fixture(scope="module")
def bad_report(seed_out: Path) -> dict[str, list[str]]:
    """mypy's messages on each file of BAD, in one run (one mypy process per case is slow)."""
    for case, (line, _) in BAD.items():
        (seed_out / _bad_file(case)).write_text(
            "import my_structs_capnp as s\nimport iface_capnp as i\n" + line + "\n")
    proc = run_mypy(seed_out, *(_bad_file(case) for case in sorted(BAD)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report: dict[str, list[str]] = {_bad_file(case): [] for case in BAD}
    for line in proc.stdout.splitlines():
        name = line.split(":", 1)[0]
        if name in report:
            report[name].append(line)
    return report


def test_corpus_stubs_are_valid(corpus_092: Path, tmp_path: Path) -> None:
    request = reference_request(CORPUS_FILES, cwd=corpus_092, import_path=["c++/src"],
                                src_prefix="c++/src")
    written = write_modules(request, tmp_path)
    stubs = sorted(str(p.relative_to(tmp_path)) for p in written if p.suffix == ".pyi")
    assert len(stubs) == len(CORPUS_FILES)
    # Each directory is its own import root (how the modules import each other).
    for directory in sorted({Path(s).parent for s in stubs}):
        here = [str(Path(s).relative_to(directory)) for s in stubs if Path(s).parent == directory]
        proc = run_mypy(tmp_path / directory, *here)
        assert proc.returncode == 0, f"{directory}:\n{proc.stdout}{proc.stderr}"


def test_std_stubs_are_valid() -> None:
    stubs = sorted(str(p.relative_to(REPO)) for p in (REPO / "cara" / "std").rglob("*.pyi"))
    assert stubs
    proc = run_mypy(REPO, *stubs)
    assert proc.returncode == 0, proc.stdout + proc.stderr


