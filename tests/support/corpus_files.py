"""Which schema files of the corpus the tests run over, listed once for every test module.

Listed rather than globbed so each file gets a stable test id; tests/schema/test_compile_corpus.py
checks that the lists still cover every ``.capnp`` file of the 0.9.2 tree. Paths are relative to
the capnproto 0.9.2 root (the ``corpus_092`` fixture).
"""

from __future__ import annotations

#: The schemas under ``c++/src`` (the library's own and its tests').
SRC_SCHEMAS_092 = [
    "c++/src/benchmark/carsales.capnp",
    "c++/src/benchmark/catrank.capnp",
    "c++/src/benchmark/eval.capnp",
    "c++/src/capnp/c++.capnp",
    "c++/src/capnp/compat/byte-stream.capnp",
    "c++/src/capnp/compat/http-over-capnp.capnp",
    "c++/src/capnp/compat/json-rpc.capnp",
    "c++/src/capnp/compat/json-test.capnp",
    "c++/src/capnp/compat/json.capnp",
    "c++/src/capnp/compiler/grammar.capnp",
    "c++/src/capnp/compiler/lexer.capnp",
    "c++/src/capnp/persistent.capnp",
    "c++/src/capnp/rpc-twoparty.capnp",
    "c++/src/capnp/rpc.capnp",
    "c++/src/capnp/schema.capnp",
    "c++/src/capnp/stream.capnp",
    "c++/src/capnp/test-import.capnp",
    "c++/src/capnp/test-import2.capnp",
    "c++/src/capnp/test.capnp",
]

#: Every schema of the 0.9.2 tree: the two samples, then :data:`SRC_SCHEMAS_092`.
ALL_SCHEMAS_092 = [
    "c++/samples/addressbook.capnp",
    "c++/samples/calculator.capnp",
    *SRC_SCHEMAS_092,
]
