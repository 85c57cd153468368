"""The ``cara`` command: ``compile``, ``convert``, ``id``, mirroring the reference ``capnp`` tool.

Users of ``capnp`` should feel at home: the same subcommands, options, help layout and exit
codes. A subcommand whose machinery has not landed yet says so and exits with status 2 rather
than failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cara import __version__
from cara.cli import commands
from cara.cli.options import Command, UsageError

__all__ = ["main"]

_DESCRIPTION = "Command-line tool for Cap'n Proto development and debugging, in pure Python."


def _top_help() -> str:
    lines = [
        "Usage: cara [<option>...] <command> [<arg>...]",
        "",
        _DESCRIPTION,
        "",
        "Commands:",
    ]
    width = max(len(name) for name in commands.COMMANDS)
    for name, cmd in commands.COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {cmd.summary}")
    lines += [
        "",
        "See 'cara help <command>' for more information on a specific command.",
        "",
        "Options:",
        "    --version",
        "        Print version information and exit.",
        "    --help",
        "        Display this help text and exit.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cara`` console script; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("--help", "-h"):
        sys.stdout.write(_top_help())
        return 0 if args else 1
    if args[0] == "--version":
        sys.stdout.write(f"cara version {__version__}\n")
        return 0
    if args[0].startswith("-"):
        sys.stderr.write(
            f"cara: {args[0]}: unrecognized option\nTry 'cara --help' for more information.\n"
        )
        return 1
    name, rest = args[0], args[1:]
    if name == "help":
        if not rest:
            sys.stdout.write(_top_help())
            return 0
        name, rest = rest[0], ["--help"]
    spec = commands.COMMANDS.get(name)
    if spec is None:
        sys.stderr.write(
            f"cara: {name}: unknown command\nTry 'cara --help' for more information.\n"
        )
        return 1
    command: Command = spec.build()
    try:
        return command.main(rest, __version__)
    except commands.NotYetAvailable as exc:
        sys.stderr.write(f"{command.prog}: {exc}\n")
        return 2
    except UsageError as exc:  # pragma: no cover - Command.main handles these
        return command.fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
