"""The subcommands of ``cara``: their options (worded as ``capnp``'s) and what they run.

Each command imports the layers it needs only when it runs, so ``cara --help`` stays instant
and works with nothing but msgpack installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import import_module

from cara.cli.options import IMPORT_PATH, NO_STANDARD_IMPORT, VERBOSE, Command, Option, UsageError
from cara.schema._record import record

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "COMMANDS", "EVAL_FORMATS", "NotYetAvailable", "encode_request", "feature", "run_plugin",
    "schema_nodes_as_in_capnp_092", "use_shipped_schema_nodes", "write_stdout",
]


class NotYetAvailable(Exception):
    """A feature this build of cara does not have yet; the CLI exits with status 2."""


def feature(module: str, name: str, what: str) -> Any:
    """Import ``module.name`` lazily; a missing piece becomes a clear NotYetAvailable."""
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise NotYetAvailable(f"{what} is not implemented in this version of cara yet") from exc


@record
class CommandSpec:
    """A subcommand: its one-line summary and how to build its parser."""

    summary: str
    build: Callable[[], Command]


# ------------------------------------------------------------------------------------- compile


def _check_directory(shown: str, value: str, values: dict[str, object]) -> None:
    """``--src-prefix`` must name an existing directory (capnp's words)."""
    if not os.path.isdir(value):
        raise UsageError(f"{shown}: no such directory")


def _check_output(shown: str, value: str, values: dict[str, object]) -> None:
    """``-o<lang>:<dir>``: the directory must already exist, as capnp requires."""
    _, directory = _split_output(value)
    if directory is not None and not os.path.isdir(directory):
        raise UsageError(f"{shown}: output location is inaccessible or is not a directory")


OUTPUT = Option(
    "o", "output",
    "Generate source code for language <lang> in directory <dir> (default:\n"
    "current directory).  <lang> actually specifies a plugin to use.  If\n"
    "<lang> is a simple word, the compiler searches for a plugin called\n"
    "'capnpc-<lang>' in $PATH; 'cara' is cara's own Python generator.  If\n"
    "<lang> is a file path containing slashes, it is interpreted as the exact\n"
    "plugin executable file name, and $PATH is not searched.  If <lang> is\n"
    "'-', the compiler dumps the request to standard output.",
    metavar="<lang>[:<dir>]", dest="output", repeat=True, check=_check_output,
)
SRC_PREFIX = Option(
    None, "src-prefix",
    "If a file specified for compilation starts with <prefix>, remove the\n"
    "prefix for the purpose of deciding the names of output files.  For\n"
    "example, the following command:\n"
    "    cara compile --src-prefix=foo/bar -ocara:corge foo/bar/baz/qux.capnp\n"
    "would generate the file corge/baz/qux_capnp.py.",
    metavar="<prefix>", dest="src_prefix", check=_check_directory,
)

#: Outputs that write no files, for which a source outside every root does not matter.
_NO_FILE_OUTPUTS = ("-", "capnp")


def _compile_request(values: dict[str, Any], sources: list[str]) -> Any:
    """Compile ``sources``; on schema errors print them (``file:line:col: error: ...``, as
    capnp does) and return None."""
    compile_ = feature("cara.schema", "compile", "the schema compiler")
    schema_error = feature("cara.errors", "SchemaError", "the schema compiler")
    try:
        return compile_(
            sources,
            import_path=list(values["import_path"]),
            no_standard_import=bool(values["no_standard_import"]),
            src_prefix=values.get("src_prefix"),
        )
    except schema_error as exc:
        for line in exc.diagnostics:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        return None


def _split_output(spec: str) -> tuple[str, str | None]:
    """``lang[:dir]``, split at the first ``:`` as capnp does (``-o-:dir`` is legal)."""
    lang, sep, directory = spec.partition(":")
    return lang, (directory if sep else None)


def _inside(path: str, directory: str) -> bool:
    directory = os.path.abspath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _warn_outside_roots(values: dict[str, Any], sources: list[str],
                        outputs: list[tuple[str, str | None]]) -> None:
    """capnp's warning for a source it cannot name an output file for: one neither under a
    ``--src-prefix`` nor under the current directory (only when some output writes files)."""
    if all(lang in _NO_FILE_OUTPUTS for lang, _ in outputs):
        return
    prefix = values.get("src_prefix")
    cwd = os.getcwd()
    for source in sources:
        path = os.path.abspath(source)
        if (prefix and _inside(path, prefix)) or _inside(path, cwd):
            continue
        sys.stderr.write(
            f"{source}: File is not in the current directory and does not match any prefix "
            "defined with --src-prefix. Please pass an appropriate --src-prefix so I can "
            "figure out where to write the output for this file.\n")


#: Fields schema.capnp gained after Cap'n Proto 0.9.2, by struct (display name). capnp 0.9.2
#: sizes its request structs without them (``Node`` has 5 data words, not 6), and code
#: generators such as capnpc-c++ embed each node with the size it has in the request.
_AFTER_092 = {
    "schema.capnp:Node": ("startByte", "endByte"),
    "schema.capnp:Node.SourceInfo": ("startByte", "endByte"),
    "schema.capnp:Node.SourceInfo.Member": ("startByte", "endByte"),
    "schema.capnp:CodeGeneratorRequest.RequestedFile": ("fileSourceInfo",),
}
_DATA_BITS = {
    "void": 0, "bool": 1, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "enum": 16,
    "int32": 32, "uint32": 32, "float32": 32, "int64": 64, "uint64": 64, "float64": 64,
}


def schema_nodes_as_in_capnp_092(nodes: list[Any]) -> list[Any]:
    """schema.capnp's nodes as Cap'n Proto 0.9.2 has them: without the fields added since,
    and with struct sizes shrunk to fit the rest (field offsets never move when a schema
    grows, so only the sizes change). cara's requests then have capnp 0.9.2's layout, which
    matters to plugins that copy nodes verbatim."""
    import dataclasses

    by_id = {n.id: n for n in nodes}
    out = dict(by_id)
    for node in nodes:
        dropped = _AFTER_092.get(node.displayName)
        if dropped is None or node.struct is None:
            continue
        family = [node.id]  # the struct and its groups share one layout
        data_bits = pointers = 0
        for member_id in family:
            member = by_id[member_id]
            assert member.struct is not None
            st = member.struct
            if st.discriminantCount:
                data_bits = max(data_bits, 16 * (st.discriminantOffset + 1))
            for f in st.fields:
                if member_id == node.id and f.name in dropped:
                    continue
                if f.group is not None:
                    family.append(f.group.typeId)
                elif f.slot is not None:
                    bits = _DATA_BITS.get(f.slot.type.which)
                    if bits is None:
                        pointers = max(pointers, f.slot.offset + 1)
                    else:
                        data_bits = max(data_bits, bits * (f.slot.offset + 1))
        words = (data_bits + 63) // 64
        for member_id in family:
            member = out[member_id]
            fields = [f for f in member.struct.fields
                      if not (member_id == node.id and f.name in dropped)]
            out[member_id] = dataclasses.replace(member, struct=dataclasses.replace(
                member.struct, dataWordCount=words, pointerCount=pointers, fields=fields))
    return list(out.values())


def use_shipped_schema_nodes() -> None:
    """Give the request codec schema.capnp's nodes as capnp 0.9.2 lays them out, from the copy
    generated as plain model objects (:mod:`cara.cli.request_schema`; it loads in well under a
    millisecond, where the codec's own default compiles schema.capnp). A provider registered by
    someone else is left alone."""
    from cara.codecs.capnp import request_codec

    if getattr(request_codec, "_provider", None) is not None:
        return

    def provider() -> list[Any]:
        from cara.cli._request_schema_nodes import NODES

        return list(NODES)

    request_codec.set_schema_nodes_provider(provider)


def encode_request(request: Any) -> bytes:
    """The request as ``capnp compile -o-`` writes it (stream framing, unpacked): by the
    dedicated writer (:mod:`cara.cli.request_writer`) or, for what it leaves out, by the binary
    codec's general encoder (the same bytes, slower to start)."""
    from cara.cli.request_writer import Unsupported, write_request

    try:
        return write_request(request)
    except Unsupported:
        return encode_request_generic(request)


def encode_request_generic(request: Any) -> bytes:
    """:func:`encode_request` by the binary codec, driven by schema.capnp's nodes."""
    encode = feature("cara.codecs.capnp", "encode_request", "writing a binary request")
    use_shipped_schema_nodes()
    return bytes(encode(request))


def _as_plugins_see_it(request: Any, data: bytes | None) -> Any:
    """The request as ``capnpc-cara`` would read it: encoded, then decoded by cara's reader.

    ``cara compile -ocara`` thereby writes exactly what ``capnp compile -ocara`` (which runs
    ``capnpc-cara``) writes for the same request: the compiler's in-memory values (sparse
    struct values, typed null defaults) and the decoded ones are equivalent but not equal, and
    generated modules embed them. Should encoding fail (a bug), the in-memory request is used
    rather than failing the command."""
    from cara.errors import CaraError

    try:
        if data is None:
            data = encode_request(request)
        decode = feature("cara.codecs.capnp", "decode_request", "reading a request")
        return decode(data)
    except CaraError:
        return request


def write_stdout(data: bytes) -> bool:
    """Write binary output; False when the reader went away (``... | head``): capnp dies of
    SIGPIPE there, cara exits with status 1 without a traceback."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return True
    except BrokenPipeError:
        # Python would complain again when flushing at exit: point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False


def _run_compile(values: dict[str, Any], sources: list[str]) -> int:
    if not sources:
        raise UsageError("missing argument <source>")
    outputs = [_split_output(o) for o in values["output"]]
    for index, source in enumerate(sources):
        if not os.path.isfile(source):
            # capnp compiles each source as it reads the command line: the files before the
            # missing one are compiled (and their errors shown) first.
            if index:
                _compile_request(values, sources[:index])
            raise UsageError(f"{source}: no such file")
    _warn_outside_roots(values, sources, outputs)
    request = _compile_request(values, sources)
    if request is None:
        return 1
    if not outputs:
        raise UsageError("no outputs specified")
    data: bytes | None = None
    failed = False
    plugin_view: Any = None
    for lang, directory in outputs:
        if lang == "cara":
            write_modules = feature("cara.codegen", "write_modules", "the Python code generator")
            if plugin_view is None:
                plugin_view = _as_plugins_see_it(request, data)
            try:
                write_modules(plugin_view, directory or ".")
            except (OSError, ValueError) as exc:
                sys.stderr.write(f"cara: {exc}\n")
                failed = True
            continue
        if data is None:
            data = encode_request(request)
        if lang == "-":
            if not write_stdout(data):
                return 1
            continue
        failed = not run_plugin(lang, directory, data) or failed
    return 1 if failed else 0


def run_plugin(lang: str, directory: str | None, request: bytes) -> bool:
    """Run plugin ``lang`` as ``capnp compile -o<lang>[:<dir>]`` does and say whether it
    succeeded; failures are reported on stderr in capnp's words.

    A ``lang`` containing ``/`` is the exact executable (relative to the current directory);
    otherwise ``capnpc-<lang>`` is searched in ``$PATH``. The plugin gets the binary request on
    stdin, no arguments, and ``<dir>`` as its working directory (``$PWD`` set to match)."""
    import shutil
    import signal
    import subprocess

    if "/" in lang:
        exe: str | None = os.path.abspath(lang)
        expected = exe
        argv0 = lang
    else:
        expected = argv0 = f"capnpc-{lang}"
        exe = shutil.which(expected)
    cwd = os.path.abspath(directory) if directory else None
    env = dict(os.environ)
    if cwd is not None:
        env["PWD"] = cwd
    sys.stdout.flush()
    if exe is None or not os.path.exists(exe):
        sys.stderr.write(f"{lang}: no such plugin (executable should be '{expected}')\n"
                         f"{lang}: plugin failed: exit code 1\n")
        return False
    try:
        proc = subprocess.run([argv0], executable=exe, input=request, cwd=cwd, env=env,
                              check=False)
    except OSError as exc:
        sys.stderr.write(f"{lang}: exec(): {exc.strerror or exc}\n"
                         f"{lang}: plugin failed: exit code 1\n")
        return False
    if proc.returncode < 0:
        try:
            reason = signal.strsignal(-proc.returncode) or f"signal {-proc.returncode}"
        except ValueError:
            reason = f"signal {-proc.returncode}"
        sys.stderr.write(f"{lang}: plugin failed: {reason}\n")
        return False
    if proc.returncode > 0:
        sys.stderr.write(f"{lang}: plugin failed: exit code {proc.returncode}\n")
        return False
    return True


def _build_compile() -> Command:
    return Command(
        prog="cara compile",
        usage="[<option>...] <source>...",
        description=(
            "Compiles Cap'n Proto schema files and generates corresponding source code in one\n"
            "or more languages. The compiler is pure Python: no C++ toolchain is needed."
        ),
        options=[IMPORT_PATH, NO_STANDARD_IMPORT, OUTPUT, SRC_PREFIX, VERBOSE],
        run=_run_compile,
    )


# ------------------------------------------------------------------------------------- convert

FORMATS = (
    ("binary", "standard binary format"),
    ("packed", "packed binary format (deflates zeroes)"),
    ("flat", "binary single segment, no segment table (rare)"),
    ("flat-packed", "flat and packed"),
    ("canonical", "canonicalized binary single segment, no segment table"),
    ("text", "schema language struct literal format"),
    ("json", "JSON format"),
    ("msgpack", "cara's msgpack form, keyed by field number"),
)


def _run_convert(values: dict[str, Any], positionals: list[str]) -> int:
    if not positionals:
        raise UsageError("missing <from>:<to>")
    source, sep, target = positionals[0].partition(":")
    names = {name for name, _ in FORMATS}
    if not sep or source not in names or target not in names:
        raise UsageError(f"{positionals[0]}: expected <from>:<to> with formats from --help")
    convert = feature("cara.codecs.convert", "convert_stream", "cara convert")
    return int(convert(values, source, target, positionals[1:]))


def _build_convert() -> Command:
    formats = "\n".join(f"    {name.ljust(11)} {text}" for name, text in FORMATS)
    return Command(
        prog="cara convert",
        usage="[<option>...] <from>:<to> [<schema-file>] [<type>]",
        description=(
            "Converts messages between formats. Reads a stream of messages from stdin in\n"
            "format <from> and writes them to stdout in format <to>. Valid formats are:\n"
            f"{formats}\n"
            "When using \"text\", \"json\" or \"msgpack\" format, you must specify <schema-file>\n"
            "and <type> (but they are ignored and can be omitted for binary-to-binary\n"
            "conversions). <type> names a struct type defined in <schema-file>, which is the\n"
            "root type of the message(s)."
        ),
        options=[
            IMPORT_PATH, NO_STANDARD_IMPORT,
            Option(None, "quiet", "Do not print warning messages about the input being in the\n"
                   "wrong format."),
            Option(None, "segment-size", "For binary output, sets the preferred segment size to\n"
                   "<n> words.  Without it, each message is written as a single segment.",
                   metavar="<n>", dest="segment_size"),
            Option(None, "short", "Write text or JSON output in short (non-pretty) format. Each\n"
                   "message will be printed on one line."),
            VERBOSE,
        ],
        run=_run_convert,
    )


# -------------------------------------------------------------------------------------- decode


class _Relabel:
    """A text stream that writes through, naming ``cara decode`` where the convert machinery
    says ``cara convert`` (capnp's decode is its convert with another name in messages)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return int(self.stream.write(text.replace("cara convert", "cara decode")))

    def flush(self) -> None:
        self.stream.flush()


def _run_decode(values: dict[str, Any], positionals: list[str]) -> int:
    if not positionals:
        raise UsageError("missing argument <schema-file>")
    if len(positionals) < 2:
        raise UsageError("missing argument <type>")
    if len(positionals) > 2:
        raise UsageError(f"{positionals[2]}: too many arguments")
    if not os.path.isfile(positionals[0]):
        raise UsageError(f"{positionals[0]}: no such file")
    source = ("flat-" if values.get("flat") else "") + ("packed" if values.get("packed") else "")
    convert = feature("cara.codecs.convert", "convert_stream", "cara decode")
    return int(convert(values, source.rstrip("-") or "binary", "text", positionals,
                       stderr=_Relabel(sys.stderr)))


def _build_decode() -> Command:
    return Command(
        prog="cara decode",
        usage="[<option>...] <schema-file> <type>",
        description=(
            "Decodes one or more encoded Cap'n Proto messages as text.  The messages have\n"
            "root type <type> defined in <schema-file>.  Messages are read from standard\n"
            "input and by default are expected to be in standard Cap'n Proto serialization\n"
            "format."
        ),
        options=[
            IMPORT_PATH,
            Option(None, "flat", "Interpret the input as one large single-segment message rather "
                   "than a\nstream in standard serialization format.  (Rarely used.)"),
            NO_STANDARD_IMPORT,
            Option("p", "packed", "Expect the input to be packed using standard Cap'n Proto "
                   "packing, which\ndeflates zero-valued bytes."),
            Option(None, "quiet", "Do not print warning messages about the input being in the "
                   "wrong format.\nUse this if you find the warnings are wrong."),
            Option(None, "short", "Print in short (non-pretty) format.  Each message will be "
                   "printed on one\nline, without using whitespace to improve readability."),
            VERBOSE,
        ],
        run=_run_decode,
    )


# ------------------------------------------------------------------------------------------ id


def _run_id(values: dict[str, Any], positionals: list[str]) -> int:
    if positionals:
        raise UsageError(f"{positionals[0]}: too many arguments")
    generate = feature("cara.schema.ids", "generate_file_id", "generating ids")
    sys.stdout.write(f"@0x{generate():016x};\n")
    return 0


def _build_id() -> Command:
    return Command(
        prog="cara id", usage="[<option>...]",
        description="Generates a new 64-bit unique ID for use in a Cap'n Proto schema.",
        run=_run_id,
    )


# ---------------------------------------------------------------------------------------- eval

#: ``-o`` formats of ``cara eval`` (capnp's, plus cara's msgpack form).
EVAL_FORMATS = ("text", "binary", "packed", "flat", "flat-packed", "canonical", "json", "msgpack")

_NAME_PART = r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[0-9]+\])*)"
_SUBSCRIPT = r"\[([0-9]+)\]"
_POINTER_TYPES = ("text", "data", "list", "struct", "interface", "anyPointer")


class EvalError(Exception):
    """``cara eval`` cannot evaluate the name; printed as ``cara eval: <name>: <message>``."""


def _parse_eval_name(name: str) -> list[tuple[str, list[int]]]:
    """``a.b[1][2].c`` as ``[("a", []), ("b", [1, 2]), ("c", [])]`` (capnp's grammar)."""
    import re

    part_re = re.compile(_NAME_PART)
    parts: list[tuple[str, list[int]]] = []
    pos = 0
    while True:
        match = part_re.match(name, pos)
        if match is None:
            raise EvalError("invalid syntax")
        parts.append((match.group(1), [int(n) for n in re.findall(_SUBSCRIPT, match.group(2))]))
        pos = match.end()
        if pos == len(name):
            return parts
        if name[pos] != "." or pos + 1 == len(name):
            raise EvalError("invalid syntax")
        pos += 1


class _Monomorphizer:
    """Concrete copies of the structs a value uses, so the text printer and the binary codec
    (which know nothing of brands) see each field with its bound type.

    ``TestGenerics(TestAllTypes, Text)`` becomes a synthetic struct node whose ``foo`` field is
    typed ``TestAllTypes`` instead of the parameter ``Foo``; a plain struct is copied too, since
    one of its fields may have a generic type. Synthetic ids are below 2**63, so they never
    collide with real ones (which all have bit 63 set). Copies are cached by (struct,
    bindings) and filled from a work list, so recursive types terminate without deep recursion;
    a generic that grows without end stops at :attr:`MAX_COPIES`."""

    MAX_COPIES = 20000

    def __init__(self, nodes: dict[int, Any]) -> None:
        self.nodes = nodes
        self._made: dict[tuple[int, str], int] = {}
        self._pending: list[tuple[int, int, dict[tuple[int, int], Any]]] = []

    def concrete(self, type_: Any) -> Any:
        """``type_`` (in no generic scope) with every struct it reaches made concrete."""
        result = self._type(type_, {})
        while self._pending:
            self._fill(*self._pending.pop())
        return result

    def _type(self, type_: Any, env: dict[tuple[int, int], Any]) -> Any:
        from cara.schema import model

        which = type_.which
        if which == "anyPointer" and type_.anyPointer is not None \
                and type_.anyPointer.which == "parameter":
            param = type_.anyPointer.parameter
            return env.get((param.scopeId, param.parameterIndex), type_)
        if which == "list" and type_.list is not None:
            return model.Type(which="list", list=model.TypeList(
                self._type(type_.list.elementType, env)))
        if which == "struct" and type_.struct is not None:
            bound = self._bindings(type_.struct.brand, env)
            return model.Type(which="struct", struct=model.TypeBranded(
                typeId=self._struct(type_.struct.typeId, bound)))
        return type_

    def _bindings(self, brand: Any, env: dict[tuple[int, int], Any]) -> dict[tuple[int, int], Any]:
        out: dict[tuple[int, int], Any] = {}
        for scope in brand.scopes:
            if scope.which == "inherit":
                out.update({key: t for key, t in env.items() if key[0] == scope.scopeId})
                continue
            for index, binding in enumerate(scope.bind or []):
                if binding.which == "type" and binding.type is not None:
                    out[(scope.scopeId, index)] = self._type(binding.type, env)
        return out

    def _struct(self, struct_id: int, env: dict[tuple[int, int], Any]) -> int:
        node = self.nodes.get(struct_id)
        if node is None or node.struct is None:
            return struct_id
        key = (struct_id, repr(sorted(env.items(), key=lambda item: item[0])))
        made = self._made.get(key)
        if made is not None:
            return made
        if len(self._made) >= self.MAX_COPIES:
            raise EvalError(f"'{node.shortName}' expands to too many generic instances")
        new_id = len(self._made) + 1
        self._made[key] = new_id
        self._pending.append((new_id, struct_id, env))
        return new_id

    def _fill(self, new_id: int, struct_id: int, env: dict[tuple[int, int], Any]) -> None:
        import dataclasses

        node = self.nodes[struct_id]
        fields = []
        for f in node.struct.fields:
            if f.group is not None:
                f = dataclasses.replace(f, group=dataclasses.replace(
                    f.group, typeId=self._struct(f.group.typeId, env)))
            elif f.slot is not None:
                f = dataclasses.replace(f, slot=dataclasses.replace(
                    f.slot, type=self._type(f.slot.type, env)))
            fields.append(f)
        self.nodes[new_id] = dataclasses.replace(
            node, id=new_id, struct=dataclasses.replace(node.struct, fields=fields))


class _EmptyStruct(dict):  # type: ignore[type-arg, unused-ignore]
    """A struct value read from a null pointer (or a group of one): it prints like ``{}``, but
    capnp encodes it as a zero-sized struct, since it copies the reader it has."""


def _pointer_default(field: Any) -> Any:
    """What a null pointer field reads as: its schema default, else an empty value."""
    slot = field.slot
    default = slot.defaultValue
    which = slot.type.which
    if default.which == which:
        member = getattr(default, default.which, None)
        value = getattr(member, "value", member)
        if value is not None:
            return value
    if which == "struct":
        return _EmptyStruct()
    return {"text": "", "data": b"", "list": []}.get(which)


def _read_field(fields: list[Any], struct_value: Any, field: Any) -> tuple[Any, Any]:
    """``(type, value)`` of ``field`` read from a struct value, as a Cap'n Proto reader would:
    a missing scalar is its default, a null pointer its default or an empty value."""
    from cara.codecs.text_format import scalar_default
    from cara.schema import model

    value = struct_value if isinstance(struct_value, dict) else {}
    if field.discriminantValue != model.NO_DISCRIMINANT:
        other = [f for f in fields if f is not field
                 and f.discriminantValue != model.NO_DISCRIMINANT and f.name in value]
        if other and field.name not in value:
            raise EvalError(f"'{field.name}' is not the member set in its union")
    if field.group is not None:
        group_type = model.Type(which="struct",
                                struct=model.TypeBranded(typeId=field.group.typeId))
        member = value.get(field.name)
        if member is None:
            member = _EmptyStruct() if isinstance(value, _EmptyStruct) else {}
        return group_type, member
    slot = field.slot
    member = value.get(field.name)
    if member is None:
        member = (_pointer_default(field) if slot.type.which in _POINTER_TYPES
                  else scalar_default(field))
    return slot.type, member


def _evaluate(request: Any, name: str) -> tuple[dict[int, Any], Any, Any]:
    """Find ``name`` in the first requested file as ``capnp eval`` does and return ``(nodes,
    type, value)``; nodes include the concrete copies of generic structs the value uses."""
    from cara.schema import model

    parts = _parse_eval_name(name)
    nodes: dict[int, Any] = dict(request.nodes_by_id())
    mono = _Monomorphizer(nodes)
    scope_id = request.requestedFiles[0].id
    pos = 0
    stopped_at_subscript = False
    while pos < len(parts):
        part, subscripts = parts[pos]
        scope = nodes.get(scope_id)
        child = next((n.id for n in (scope.nestedNodes if scope else []) if n.name == part), None)
        if child is None or child not in nodes:
            break
        scope_id = child
        if subscripts:
            stopped_at_subscript = True
            break
        pos += 1
    node = nodes[scope_id]
    type_: Any
    value: Any
    if node.which == "const" and node.const is not None:
        type_ = mono.concrete(node.const.type)
        value = _const_value(node.const.value)
    elif node.which == "struct" and node.struct is not None and not node.struct.isGroup \
            and pos < len(parts):
        type_ = mono.concrete(
            model.Type(which="struct", struct=model.TypeBranded(typeId=node.id)))
        value = _EmptyStruct()
    elif stopped_at_subscript:
        raise EvalError(f"'{node.shortName}' is not a list.")
    elif pos < len(parts):
        raise EvalError(f"'{parts[pos][0]}' is not defined.")
    else:
        raise EvalError(f"'{node.shortName}' cannot be evaluated.")
    while pos < len(parts):
        part, subscripts = parts[pos]
        if not stopped_at_subscript:
            if type_.which != "struct":
                raise EvalError(f"'{parts[pos - 1][0]}' is not a struct.")
            struct_node = nodes.get(type_.struct.typeId)
            fields = struct_node.struct.fields if struct_node and struct_node.struct else []
            field = next((f for f in fields if f.name == part), None)
            if field is None:
                raise EvalError(f"'{parts[pos - 1][0]}' has no member '{part}'.")
            type_, value = _read_field(fields, value, field)
        for i, subscript in enumerate(subscripts):
            if type_.which != "list":
                if i:
                    shown = "][".join(str(n) for n in subscripts[:i])
                    raise EvalError(f"'{part}[{shown}]' is not a list.")
                raise EvalError(f"'{part}' is not a list.")
            items = value or []
            if subscript >= len(items):
                shown = "][".join(str(n) for n in subscripts[:i + 1])
                raise EvalError(f"'{part}[{shown}]' is out-of-bounds.")
            type_ = type_.list.elementType
            value = items[subscript]
            if value is None:
                value = {"text": "", "data": b"", "list": [], "struct": {}}.get(type_.which)
                if type_.which == "struct":
                    value = _EmptyStruct()
        stopped_at_subscript = False
        pos += 1
    return nodes, type_, value


def _const_value(value: Any) -> Any:
    """The plain Python value of a constant's ``Value``."""
    member = getattr(value, value.which, None)
    if value.which in ("list", "struct", "anyPointer"):
        member = getattr(member, "value", member)
        if member is None:
            return {"struct": _EmptyStruct(), "list": []}.get(value.which)
    if value.which == "text" and member is None:
        return ""
    if value.which == "data" and member is None:
        return b""
    return member


def _with_union_members(nodes: dict[int, Any], type_: Any, value: Any, depth: int = 0) -> Any:
    """``value`` with each union's member made explicit where it is left out.

    The compiler's struct values hold only what the schema text sets; a reader sees an unset
    union as its first member (discriminant 0), and that is what capnp prints."""
    from cara.codecs.text_format import scalar_default
    from cara.schema import model

    if depth > 200 or value is None:
        return value
    if type_.which == "list" and type_.list is not None and isinstance(value, list):
        element = type_.list.elementType
        if element.which in ("struct", "list"):
            return [_with_union_members(nodes, element, v, depth + 1) for v in value]
        return value
    if type_.which != "struct" or type_.struct is None or not isinstance(value, dict):
        return value
    node = nodes.get(type_.struct.typeId)
    if node is None or node.struct is None:
        return value
    out = type(value)(value)
    fields = node.struct.fields
    members = [f for f in fields if f.discriminantValue != model.NO_DISCRIMINANT]
    if members and not any(f.name in out for f in members):
        first = next((f for f in members if f.discriminantValue == 0), None)
        if first is not None:
            if first.group is not None:
                out[first.name] = _EmptyStruct() if isinstance(value, _EmptyStruct) else {}
            elif first.slot is not None and first.slot.type.which not in _POINTER_TYPES:
                out[first.name] = scalar_default(first)
    for f in fields:
        if f.name not in out:
            if f.group is None:
                continue
            out[f.name] = _EmptyStruct() if isinstance(value, _EmptyStruct) else {}
        field_type = (model.Type(which="struct", struct=model.TypeBranded(typeId=f.group.typeId))
                      if f.group is not None else f.slot.type)
        out[f.name] = _with_union_members(nodes, field_type, out[f.name], depth + 1)
    return out


def _eval_format(values: dict[str, Any]) -> str:
    """The output format: the ``-b``/``-p``/``--flat`` flags win over ``-o``, as in capnp."""
    if values["binary"]:
        return "binary"
    if values["packed"]:
        return "flat-packed" if values["flat"] else "packed"
    if values["flat"]:
        return "flat"
    return str(values["output"] or "text")


def _eval_output(nodes: dict[int, Any], type_: Any, value: Any, fmt: str, pretty: bool) -> bytes:
    """The evaluated value written in ``fmt`` (text for any type; the others need a struct)."""
    if fmt == "text":
        from cara.codecs import text_format

        value = _with_union_members(nodes, type_, value)
        # TODO(text_format): use a public "format any value" function once it exists.
        printer = text_format._Printer(nodes)
        text = printer.value(type_, value, 1 if pretty else 0, text_format._BARE)
        return text.encode("utf-8", "surrogateescape") + b"\n"
    if type_.which != "struct":
        raise EvalError("not a struct; binary output is only available on structs")
    from cara.codecs.capnp.framing import read_flat
    from cara.codecs.capnp.reader import Message
    from cara.codecs.capnp.schema_codec import SchemaCodec
    from cara.codecs.convert import Converter

    root_id = type_.struct.typeId
    if isinstance(value, _EmptyStruct):
        buf = bytes(8)  # a null root: written as the empty struct capnp copies
    else:
        # Null pointers stay null (no pointer defaults): the message holds exactly the value.
        buf = bytes(SchemaCodec(nodes, pointer_defaults=False).build(root_id, value or {}).buf)
    message = Message(read_flat(buf), traversal_limit_in_words=max(len(buf), 1 << 20))
    converter = Converter("binary", fmt, nodes=nodes, root_id=root_id, pretty=pretty)
    return bytes(converter.write(message))


def _check_format(shown: str, value: str, values: dict[str, object]) -> None:
    if value not in EVAL_FORMATS:
        raise UsageError(f"{shown}: unknown format: {value}")


def _check_binary(shown: str, value: str, values: dict[str, object]) -> None:
    if values.get("packed"):
        raise UsageError(f"{shown}: cannot be used with --packed")
    if values.get("flat"):
        raise UsageError(f"{shown}: cannot be used with --flat")


def _check_not_binary(shown: str, value: str, values: dict[str, object]) -> None:
    if values.get("binary"):
        raise UsageError(f"{shown}: cannot be used with --binary")


def _run_eval(values: dict[str, Any], positionals: list[str]) -> int:
    if not positionals:
        raise UsageError("missing argument <schema-file>")
    source = positionals[0]
    if not os.path.isfile(source):
        raise UsageError(f"{source}: no such file")
    if len(positionals) < 2:
        # capnp compiles the file when it reads its name, so errors come first.
        if _compile_request(values, [source]) is None:
            return 1
        raise UsageError("missing argument <name>")
    # Like capnp, only the first name is evaluated (capnp exits as soon as it has printed it).
    name = positionals[1]
    request = _compile_request(values, [source])
    if request is None:
        return 1
    from cara.errors import CaraError

    fmt = _eval_format(values)
    try:
        nodes, type_, value = _evaluate(request, name)
        data = _eval_output(nodes, type_, value, fmt, pretty=not values["short"])
    except EvalError as exc:
        raise UsageError(f"{name}: {exc}") from None
    except CaraError as exc:  # a value cara cannot encode (a bug): say so, no traceback
        sys.stderr.write(f"cara eval: {name}: cannot write the value as {fmt}: {exc}\n")
        return 1
    return 0 if write_stdout(data) else 1


def _build_eval() -> Command:
    return Command(
        prog="cara eval", usage="[<option>...] <schema-file> <name>",
        description=(
            "Prints (or encodes) the value of <name>, which must be defined in <schema-file>.\n"
            "<name> must refer to a const declaration, a field of a struct type (prints the\n"
            "default value), or a field or list element nested within some other value.\n"
            "Examples:\n"
            "    cara eval myschema.capnp MyType.someField\n"
            "    cara eval myschema.capnp someConstant\n"
            "    cara eval myschema.capnp someConstant.someField\n"
            "    cara eval myschema.capnp someConstant.someList[4]\n"
            "    cara eval myschema.capnp someConstant.someList[4].anotherField[1][2][3]\n"
            "Since consts can have complex struct types, and since you can define a const\n"
            "using import and variable substitution, this can be a convenient way to write\n"
            "text-format config files which are compiled to binary before deployment."
        ),
        options=[
            IMPORT_PATH,
            Option("b", "binary", "same as -obinary", check=_check_binary),
            Option(None, "flat", "same as -oflat", check=_check_not_binary),
            NO_STANDARD_IMPORT,
            Option("o", "output",
                   "Encode the output in the given format. See `cara help convert` for a\n"
                   "list of formats. Defaults to \"text\".",
                   metavar="<format>", dest="output", check=_check_format),
            Option("p", "packed", "same as -opacked", check=_check_not_binary),
            Option(None, "short",
                   "If output format is text or JSON, write in short (non-pretty) format.\n"
                   "The message will be printed on one line, without using whitespace to\n"
                   "improve readability."),
            VERBOSE,
        ],
        epilog=(
            "By default the value is written in text format and can have any type.  The -b,\n"
            "-p, and --flat flags specify binary output, in which case the const must be of\n"
            "struct type."
        ),
        run=_run_eval,
    )


COMMANDS: dict[str, CommandSpec] = {
    "compile": CommandSpec("Generate source code from schema files.", _build_compile),
    "convert": CommandSpec("Convert messages between binary, text, JSON, msgpack, etc.",
                           _build_convert),
    "decode": CommandSpec("Decode messages to text (as `convert <format>:text`).",
                          _build_decode),
    "eval": CommandSpec("Evaluate a const from a schema file.", _build_eval),
    "id": CommandSpec("Generate a new unique ID.", _build_id),
}
