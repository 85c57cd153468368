"""The standard schemas (``import "/capnp/<name>.capnp"``) as generated modules.

A generated module whose schema imports ``/capnp/c++.capnp`` imports ``cara.std.cxx_capnp``
(see :func:`cara.codegen.naming.import_target`), so generated code works without any ``.capnp``
file. These modules are generated from cara's bundled copies in ``cara/schema/standard/capnp``
and must not be edited; regenerate them after changing those files or the generator with::

    cara compile --no-standard-import -Icara/schema/standard \\
        --src-prefix=cara/schema/standard/capnp -ocara:cara/std \\
        cara/schema/standard/capnp/*.capnp cara/schema/standard/capnp/compat/*.capnp

(``tests/codegen/test_std.py`` checks that they match what the reference compiler's request
generates.)
"""

#: The module of each standard schema by its file id. A schema that imports its own copy of a
#: standard file (``import "c++.capnp"`` next to it) names a module that may not exist beside
#: the generated code; the generated module then falls back to this one, found by the id.
BY_FILE_ID = {
    0xBDF87D7BB8304E81: "cara.std.cxx_capnp",
    0xBF48045DE8B5906B: "cara.std.cara_capnp",
    0x8EF99297A43A5E34: "cara.std.compat.json_capnp",
    0xB8630836983FEED7: "cara.std.persistent_capnp",
    0xB312981B2552A250: "cara.std.rpc_capnp",
    0xA184C7885CDAF2A1: "cara.std.rpc_twoparty_capnp",
    0xA93FC509624C72D9: "cara.std.schema_capnp",
    0x86C366A91393F3F8: "cara.std.stream_capnp",
}
