"""``capnpc-cara``: the plugin that ``capnp compile -ocara[:DIR]`` runs.

It reads a binary ``CodeGeneratorRequest`` from stdin with cara's own Cap'n Proto reader and
writes the same Python modules as ``cara compile -ocara`` into the current directory (capnp
starts plugins in the output directory). So a project that already drives ``capnp`` from its
build gets cara's modules without changing anything but the ``-o`` flag.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_HELP = (
    "Usage: capnpc-cara < request\n\n"
    "Cap'n Proto compiler plugin: reads a CodeGeneratorRequest on stdin and writes\n"
    "<name>_capnp.py and .pyi modules to the current directory. Run it through\n"
    "'capnp compile -ocara[:<dir>] <source>...' or 'cara compile -ocara[:<dir>] ...'.\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``capnpc-cara`` console script; returns the exit status (0 on
    success, 1 when stdin is not a request or the modules cannot be written, 2 when this build
    of cara lacks a needed layer)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--help", "-h"):
        sys.stdout.write(_HELP)
        return 0
    if args and args[0] == "--version":
        from cara import __version__

        sys.stdout.write(f"capnpc-cara (cara) {__version__}\n")
        return 0
    if args:
        sys.stderr.write(f"capnpc-cara: {args[0]}: unexpected argument (the request is read "
                         "from stdin)\n")
        return 1
    from cara.cli.commands import NotYetAvailable, feature, use_shipped_schema_nodes

    try:
        decode_request = feature("cara.codecs.capnp", "decode_request", "reading a request")
        write_modules = feature("cara.codegen", "write_modules", "the Python code generator")
    except NotYetAvailable as exc:
        sys.stderr.write(f"capnpc-cara: {exc}\n")
        return 2
    from cara.errors import CaraError

    use_shipped_schema_nodes()
    data = sys.stdin.buffer.read()
    try:
        request = decode_request(data)
    except CaraError as exc:
        sys.stderr.write(f"capnpc-cara: stdin is not a CodeGeneratorRequest: {exc}\n")
        return 1
    try:
        write_modules(request, ".")
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"capnpc-cara: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
