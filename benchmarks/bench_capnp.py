"""cara's pure-Python Cap'n Proto binary codec beside pycapnp (libcapnp), in one process.

The shapes are those of /work/shared/anchors/data_peers.py: a ``Person`` (3 scalars, a list of
2 structs with an enum, a union) built and serialised, then read back field by field. cara's
schema comes from the reference compiler (``capnp compile -o-``, decoded by cara itself with
schema.capnp compiled by cara), so the benchmark needs ``capnp`` and pycapnp.

Run: ``.venv/bin/python benchmarks/bench_capnp.py`` (or through ``benchmarks/run.py capnp``).
Returns a markdown table of microseconds per operation and cara/pycapnp ratios (below 1.0 means
cara is faster). Rows: the user's path (``Person.Create(...).to_bytes()``,
``Person.from_bytes(b)`` + reading every field), then the codec alone on plain values
(``SchemaCodec.encode``/``decode``) and its lazy view (attribute access, as pycapnp reads).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _person import PERSON_CAPNP as PERSON
from _person import REPO, pycapnp_person_bytes


def timeit(fn: Callable[[], Any], n: int = 20000, repeat: int = 5) -> float:
    """Best-of-``repeat`` mean time per call in microseconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> str:
    import capnp  # type: ignore[import-untyped]

    sys.path.insert(0, str(REPO))
    import cara
    from cara.codecs.capnp import SchemaCodec, decode_request

    person_capnp = PERSON
    raw = subprocess.run(["capnp", "compile", "-o-", person_capnp.name],
                         cwd=person_capnp.parent, check=True, capture_output=True).stdout
    # decoded with schema.capnp's nodes from cara's own compiler (the default provider)
    request = decode_request(raw)
    person_id = next(n.id for n in request.nodes if n.displayName.endswith(":Person"))
    codec = SchemaCodec(request)
    codec.plan(person_id)

    schema = capnp.SchemaParser().load(str(person_capnp))
    Person = cara.load(person_capnp).Person

    pyc_build = functools.partial(pycapnp_person_bytes, schema)
    blob = pyc_build()

    def pyc_read() -> Any:
        with schema.Person.from_bytes(blob) as p:
            return (p.id, p.name, p.email, [(x.number, x.type) for x in p.phones],
                    p.employment.which(), p.employment.employer)

    def cara_build() -> bytes:
        return codec.encode(person_id, {
            "id": 123, "name": "Alice", "email": "alice@example.com",
            "phones": [{"number": "555-1212", "type": 0}, {"number": "555-9999", "type": 2}],
            "employment": {"employer": "Acme"}})

    def cara_read() -> Any:
        return codec.decode(person_id, blob)

    def cara_view_read() -> Any:
        p = codec.view(person_id, blob)
        return (p.id, p.name, p.email, [(x.number, x.type) for x in p.phones],
                p.employment.which(), p.employment.employer)

    def struct_build() -> bytes:
        return Person.Create(  # type: ignore[no-any-return]
            id=123, name="Alice", email="alice@example.com",
            phones=[{"number": "555-1212", "type": "mobile"},
                    {"number": "555-9999", "type": "work"}],
            employment={"employer": "Acme"}).to_bytes()

    def struct_read() -> Any:
        p = Person.from_bytes(blob)
        return (p.id, p.name, p.email, [(x.number, x.type) for x in p.phones],
                p.employment.which(), p.employment.employer)

    assert cara_build() == blob, "cara's bytes differ from pycapnp's"
    assert struct_build() == blob, "Person.to_bytes() differs from pycapnp's bytes"
    rows = [("Person.Create(...).to_bytes()", timeit(pyc_build), timeit(struct_build)),
            ("Person.from_bytes + read all", timeit(pyc_read), timeit(struct_read)),
            ("codec: encode plain values", timeit(pyc_build), timeit(cara_build)),
            ("codec: decode to plain values", timeit(pyc_read), timeit(cara_read)),
            ("codec: lazy view + read all", timeit(pyc_read), timeit(cara_view_read))]
    lines = ["## capnp: Cap'n Proto binary beside pycapnp (person.capnp)", "",
             "| operation | pycapnp µs | cara µs | cara / pycapnp |", "|---|---:|---:|---:|"]
    for name, ref, mine in rows:
        lines.append(f"| {name} | {ref:.2f} | {mine:.2f} | {mine / ref:.2f}x |")
    lines += ["", f"Message: {len(blob)} bytes; cara's output is byte-identical to pycapnp's. "
              "pycapnp's build is `new_message` + setters + `to_bytes`; its read is "
              "`from_bytes` + reading every field. Goal: <= 1.0x.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
