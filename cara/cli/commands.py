"""The subcommands of ``cara``: their options (worded as ``capnp``'s) and what they run.

Each command imports the layers it needs only when it runs, so ``cara --help`` stays instant
and works with nothing but msgpack installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from cara.cli.options import IMPORT_PATH, NO_STANDARD_IMPORT, VERBOSE, Command, Option, UsageError

__all__ = ["COMMANDS", "NotYetAvailable", "feature"]


class NotYetAvailable(Exception):
    """A feature this build of cara does not have yet; the CLI exits with status 2."""


def feature(module: str, name: str, what: str) -> Any:
    """Import ``module.name`` lazily; a missing piece becomes a clear NotYetAvailable."""
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise NotYetAvailable(f"{what} is not implemented in this version of cara yet") from exc


@dataclass
class CommandSpec:
    summary: str
    build: Callable[[], Command]


# ------------------------------------------------------------------------------------- compile

OUTPUT = Option(
    "o", "output",
    "Generate source code for language <lang> in directory <dir> (default:\n"
    "current directory).  <lang> actually specifies a plugin to use.  If\n"
    "<lang> is a simple word, the compiler searches for a plugin called\n"
    "'capnpc-<lang>' in $PATH; 'cara' is cara's own Python generator.  If\n"
    "<lang> is a file path containing slashes, it is interpreted as the exact\n"
    "plugin executable file name, and $PATH is not searched.  If <lang> is\n"
    "'-', the compiler dumps the request to standard output.",
    metavar="<lang>[:<dir>]", dest="output", repeat=True,
)
SRC_PREFIX = Option(
    None, "src-prefix",
    "If a file specified for compilation starts with <prefix>, remove the\n"
    "prefix for the purpose of deciding the names of output files.  For\n"
    "example, the following command:\n"
    "    cara compile --src-prefix=foo/bar -ocara:corge foo/bar/baz/qux.capnp\n"
    "would generate the file corge/baz/qux_capnp.py.",
    metavar="<prefix>", dest="src_prefix",
)


def _compile_request(values: dict[str, Any], sources: list[str]) -> Any:
    compile_ = feature("cara.schema", "compile", "the schema compiler")
    schema_error = feature("cara.errors", "SchemaError", "the schema compiler")
    try:
        return compile_(
            sources,
            import_path=list(values["import_path"]),
            no_standard_import=bool(values["no_standard_import"]),
            src_prefix=values["src_prefix"],
        )
    except schema_error as exc:
        for line in exc.diagnostics:
            sys.stderr.write(line + "\n")
        return None


def _split_output(spec: str) -> tuple[str, str | None]:
    # A Windows drive letter is not a concern here; the first ':' splits like capnp does.
    lang, sep, directory = spec.partition(":")
    return lang, (directory if sep else None)


def _run_compile(values: dict[str, Any], sources: list[str]) -> int:
    if not sources:
        raise UsageError("no source files given")
    outputs = [_split_output(o) for o in values["output"]]
    for _, directory in outputs:
        if directory and not os.path.isdir(directory):
            raise UsageError(f"{directory}: output directory does not exist")
    request = _compile_request(values, sources)
    if request is None:
        return 1
    if not outputs:
        return 0  # like capnp: no -o means just check the schema
    encode = None
    status = 0
    for lang, directory in outputs:
        if lang == "cara":
            generate = feature("cara.codegen", "write_modules", "the Python code generator")
            generate(request, directory or ".")
            continue
        if encode is None:
            encode = feature("cara.codecs.capnp", "encode_request", "writing a binary request")
        data: bytes = encode(request)
        if lang == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            continue
        status = max(status, _run_plugin(lang, directory, data))
    return status


def _run_plugin(lang: str, directory: str | None, request: bytes) -> int:
    """Run ``capnpc-<lang>`` (or the exact path ``lang``) with the request on stdin, in
    ``directory``, as ``capnp compile`` does; report failures in capnp's words."""
    exe = os.path.abspath(lang) if "/" in lang else f"capnpc-{lang}"
    cwd = os.path.abspath(directory) if directory else None
    env = dict(os.environ)
    if cwd:
        env["PWD"] = cwd
    try:
        proc = subprocess.run([exe], input=request, cwd=cwd, env=env, check=False)
    except FileNotFoundError:
        hint = "" if "/" in lang else f" (executable should be 'capnpc-{lang}')"
        sys.stderr.write(f"{lang}: no such plugin{hint}\n")
        return 1
    except PermissionError:
        sys.stderr.write(f"{lang}: plugin is not executable\n")
        return 1
    if proc.returncode != 0:
        sys.stderr.write(f"{lang}: plugin failed: exit code {proc.returncode}\n")
        return 1
    return 0


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


def _build_eval() -> Command:
    def run(values: dict[str, Any], positionals: list[str]) -> int:
        raise NotYetAvailable("eval is not implemented in this version of cara yet")

    return Command(
        prog="cara eval", usage="[<option>...] <schema-file> <name>",
        description="Prints (or encodes) the value of a constant from a schema file.",
        options=[IMPORT_PATH, NO_STANDARD_IMPORT], run=run,
    )


COMMANDS: dict[str, CommandSpec] = {
    "compile": CommandSpec("Generate source code from schema files.", _build_compile),
    "convert": CommandSpec("Convert messages between binary, text, JSON, msgpack, etc.",
                           _build_convert),
    "eval": CommandSpec("Evaluate a const from a schema file.", _build_eval),
    "id": CommandSpec("Generate a new unique ID.", _build_id),
}
