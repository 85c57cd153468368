"""The ``Person`` workload the data benchmarks share (``/work/shared/anchors/person.capnp``).

Not a benchmark itself (``run.py`` only runs ``bench_*.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The anchors' schema (``MyStruct`` and ``Person``); ``CARA_PERSON_CAPNP`` points elsewhere.
PERSON_CAPNP = Path(os.environ.get("CARA_PERSON_CAPNP",
                                   REPO.parent / "shared" / "anchors" / "person.capnp"))


def pycapnp_person_bytes(schema: Any) -> bytes:
    """The sample Person built with pycapnp's setters (``schema`` is the loaded person.capnp)
    and serialised: what every contender builds."""
    p = schema.Person.new_message(id=123, name="Alice", email="alice@example.com")
    ph = p.init("phones", 2)
    ph[0].number = "555-1212"
    ph[0].type = "mobile"
    ph[1].number = "555-9999"
    ph[1].type = "work"
    p.employment.employer = "Acme"
    return p.to_bytes()  # type: ignore[no-any-return]
