"""Schema texts and a loader shared by the runtime and codec tests.

Each schema is compiled by the reference compiler (``capnp``, via tests/support/reference.py)
and the resulting nodes are built into classes by ``cara.runtime.build``.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cara.schema import model

CARA_CAPNP = """@0xd45ae5a4f3c1b2a1;
annotation registerGlobally @0xebd6c4912189be2c (struct, interface) :Void;
"""

SEED_CAPNP = """@0xd3a8a8f4c2b1e001;
struct MyStruct {
    field @0 :Text;
    nested @1 :NestedStruct;
    struct NestedStruct {
        integer @0 :Int32;
    }
}
struct Person {
  id @0 :UInt32;
  name @1 :Text;
  email @2 :Text;
  phones @3 :List(PhoneNumber);
  struct PhoneNumber {
    number @0 :Text;
    type @1 :Type;
    enum Type { mobile @0; home @1; work @2; }
  }
  employment :union {
    unemployed @4 :Void;
    employer @5 :Text;
    school @6 :Text;
    selfEmployed @7 :Void;
  }
}
"""

BASICS_CAPNP = """@0xa1b2c3d4e5f60718;
using Cara = import "cara.capnp";

struct Basic $Cara.registerGlobally {
  field @0 :Int32;
  list @1 :List(Int32);
  structs @2 :List(Basic);
  nested @3 :Inner;
  struct Inner {
    field @0 :Int32;
    text @1 :Text = "dflt";
  }
}

struct WithUnion {
  before @0 :Text;
  union {
    a @1 :Int32;
    b @2 :Text;
    c :group {
      x @3 :Int32;
      y @4 :Text;
    }
  }
  named :union {
    p @5 :Int32;
    q @6 :Data;
  }
  grp :group {
    g1 @7 :UInt8;
    g2 @8 :Bool;
  }
}

enum Color { red @0; green @1; blue @2; }

struct Defaults {
  i @0 :Int32 = -5;
  f @1 :Float32 = 1.5;
  t @2 :Text = "hello";
  d @3 :Data = 0x"0102";
  e @4 :Color = green;
  b @5 :Bool = true;
  s @6 :Basic.Inner = (field = 7);
  l @7 :List(Int32) = [1, 2, 3];
  u64 @8 :UInt64 = 18446744073709551615;
}

struct AllScalars {
  v @0 :Void;
  b @1 :Bool;
  i8 @2 :Int8;
  i16 @3 :Int16;
  i32 @4 :Int32;
  i64 @5 :Int64;
  u8 @6 :UInt8;
  u16 @7 :UInt16;
  u32 @8 :UInt32;
  u64 @9 :UInt64;
  f32 @10 :Float32;
  f64 @11 :Float64;
  t @12 :Text;
  d @13 :Data;
  e @14 :Color;
  any @15 :AnyPointer;
  ll @16 :List(List(Int16));
  el @17 :List(Color);
}

struct Keywords {
  class @0 :Int32;
  items @1 :Text;
  keys @2 :Int32;
  which @3 :Bool;
}

const answer :Int32 = 42;
const greeting :Text = "hi";
const colors :List(Color) = [red, blue];
const basicConst :Basic = (field = 5, list = [1, 2]);

annotation note(struct, field, enum, enumerant, interface, method) :Text;
annotation level(struct) :Color;

struct Annotated $note("a struct") $level(blue) {
  x @0 :Int32 $note("a field");
}

interface Echo {
  echo @0 (text :Text) -> (text :Text);
}

interface Calc $Cara.registerGlobally {
  add @0 (a :Int32, b :Int32) -> (sum :Int32);
  divmod @1 (a :Int32, b :Int32) -> (q :Int32, r :Int32);
  make @2 (field :Int32) -> Basic;
  take @3 Basic -> (field :Int32);
  nothing @4 () -> ();
}

interface Sub extends(Calc) {
  extra @0 () -> (n :UInt8);
}

interface BackAndForth {
  interface Callback {
    callback @0 (callback :Callback) -> (result :Text);
  }
  callMeMaybe @0 (callback :Callback) -> ();
  otherFunc @1 () -> ();
}

struct HoldsCaps {
  echo @0 :Echo;
  echoes @1 :List(Echo);
  inner @2 :Inner;
  struct Inner { calc @0 :Calc; }
}

struct Generic(T) {
  value @0 :T;
  defaulted @1 :Text = "defaulteds";
  next @2 :Generic(T);
  inner @3 :Inner;
  struct Inner {
    t @0 :T;
  }
}

struct Pair(A, B) {
  a @0 :A;
  b @1 :B;
}

struct UsesGeneric {
  g @0 :Generic(Text);
  gb @1 :Generic(Basic);
  inner @2 :Generic(Data).Inner;
  pair @3 :Pair(Text, List(Int32));
}

interface GenIface(T) {
  get @0 (x :T) -> (y :T);
}
"""


def request_without_pointer_values(files: list[str], **kwargs: Any) -> model.CodeGeneratorRequest:
    """The reference request without pointer defaults (``reference_request`` fills them with
    pycapnp, which can crash the interpreter on some schemas)."""
    from tests.support import reference as ref

    data = ref.reference_request_bytes(files, **kwargs)
    capnp = ref.require_pycapnp()
    schema = ref._schema_module()
    with schema.CodeGeneratorRequest.from_bytes(data, traversal_limit_in_words=2**62) as req:
        loader = capnp.SchemaLoader()
        for n in req.nodes:
            loader.load_dynamic(n)
        return ref._Converter(capnp, loader).convert(  # type: ignore[no-any-return]
            req, model.CodeGeneratorRequest)


@functools.cache
def _full_oracle_works(files: tuple[str, ...], cwd: str, import_path: tuple[str, ...]) -> bool:
    """Whether ``reference_request`` (with pointer values) survives these files (checked in a
    subprocess, since a crash there is a segfault)."""
    root = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {root!r})\n"
            "from tests.support.reference import reference_request\n"
            f"reference_request({list(files)!r}, cwd={cwd!r}, import_path={list(import_path)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          check=False)
    return proc.returncode == 0


def oracle_request(files: list[str], *, cwd: str, import_path: list[str] = ()  # type: ignore[assignment]
                   ) -> model.CodeGeneratorRequest:
    """The reference request, with pointer values when the oracle can produce them."""
    from tests.support.reference import reference_request

    if _full_oracle_works(tuple(files), str(cwd), tuple(import_path)):
        return reference_request(files, cwd=cwd, import_path=list(import_path))
    return request_without_pointer_values(files, cwd=cwd, import_path=list(import_path))


@functools.cache
def load_text(text: str, filename: str = "schema.capnp") -> Any:
    """Compile ``text`` (with cara.capnp beside it) and build its module."""
    from tests.support.reference import require_capnp, require_pycapnp

    require_capnp()
    require_pycapnp()
    from cara.runtime import build_module

    tmp = tempfile.mkdtemp(prefix="cara-rt-")
    Path(tmp, "cara.capnp").write_text(CARA_CAPNP)
    Path(tmp, filename).write_text(text)
    request = oracle_request([filename], cwd=tmp)
    return build_module(request, name=f"cara_test_{filename.replace('.', '_')}")


def seed() -> Any:
    return load_text(SEED_CAPNP, "person.capnp")


def basics() -> Any:
    return load_text(BASICS_CAPNP, "basics.capnp")
