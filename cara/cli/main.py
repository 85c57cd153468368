"""The ``cara`` command: ``compile``, ``convert``, ``id``, mirroring the reference ``capnp`` tool.

Users of ``capnp`` should feel at home: the same subcommands, options, help layout and exit
codes. A subcommand whose machinery has not landed yet says so and exits with status 2 rather
than failing with a traceback.
"""

from __future__ import annotations

import gc
import os
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
        "    -I<dir>, --import-path=<dir>",
        "        Add <dir> to the list of directories searched for non-relative imports",
        "        (ones that start with a '/').",
        "    --no-standard-import",
        "        Do not add any default import paths; use only those specified by -I.",
        "    --verbose",
        "        Log informational messages to stderr; useful for debugging.",
        "    --version",
        "        Print version information and exit.",
        "    --help",
        "        Display this help text and exit.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cara`` console script; returns the process exit status.

    A command is short and leaves little cyclic garbage, yet the compiler allocates enough
    objects that Python's cyclic collector would run hundreds of times (5% of a ``cara compile``
    of test.capnp) and again over everything at exit. So, as mypy does, collections are made
    rare while the command runs; and when the command is the whole process (``argv`` None: the
    console script, ``python -m cara``), what exists when it starts is frozen out of them."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 200_000), *threshold[1:])
    if argv is None:
        gc.freeze()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        gc.set_threshold(*threshold)


def _main(args: list[str]) -> int:
    if not args or args[0] in ("--help", "-h"):
        sys.stdout.write(_top_help())
        return 0 if args else 1
    if args[0] == "--version":
        sys.stdout.write(f"cara version {__version__}\n")
        return 0
    try:
        shared, args = _global_options(args)
    except UsageError as exc:
        sys.stderr.write(f"cara: {exc}\nTry 'cara --help' for more information.\n")
        return 1
    if shared and args and args[0] in ("--help", "--version"):
        return _main(args)
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
    # Options given before the command apply to it, first, where it has them (as capnp's
    # subcommands share its -I, --no-standard-import and --verbose).
    accepted = {option.long for option in command.options}
    rest = [option for option in shared if option.split("=")[0][2:] in accepted] + rest
    try:
        return command.main(rest, __version__)
    except commands.NotYetAvailable as exc:
        sys.stderr.write(f"{command.prog}: {exc}\n")
        return 2
    except UsageError as exc:  # pragma: no cover - Command.main handles these
        return command.fail(str(exc))


def _global_options(args: list[str]) -> tuple[list[str], list[str]]:
    """The options before the command, in long ``--name[=value]`` form, and the rest; raises
    UsageError with capnp's wording (``-I nodir: no such directory``, ``missing command``)."""
    shared: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("--help", "--version"):
        arg = args[i]
        i += 1
        if arg.startswith("-I") or arg.startswith("--import-path"):
            if arg.startswith("-I"):
                value, shown = arg[2:], "-I {}"
            else:
                name, _, value = arg.partition("=")
                if name != "--import-path":
                    raise UsageError(f"{name}: unrecognized option")
                shown = "--import-path={}"
            if not value and not (arg.startswith("--") and "=" in arg):
                if i >= len(args):
                    raise UsageError(f"{arg}: missing argument")
                value = args[i]
                i += 1
            if not os.path.isdir(value):
                raise UsageError(f"{shown.format(value)}: no such directory")
            shared.append(f"--import-path={value}")
        elif arg in ("--no-standard-import", "--verbose"):
            shared.append(arg)
        else:
            raise UsageError(f"{arg}: unrecognized option")
    if i >= len(args):
        raise UsageError("missing command")
    return shared, args[i:]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
