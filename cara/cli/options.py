"""A small command-line option parser in the style of the reference ``capnp`` tool.

``capnp`` (built on KJ's MainBuilder) accepts ``-I<dir>``, ``-I <dir>``, ``--import-path=<dir>``
and ``--import-path <dir>``, prints its help in a fixed layout, and reports errors as
``capnp compile: <message>`` followed by ``Try 'capnp compile --help' for more information.``.
argparse formats all of that differently, so cara mirrors the reference wording with this
parser, which does only what the subcommands need: declared options, positional arguments, and
errors that name the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from cara.schema._record import field, record

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["Command", "Option", "UsageError"]


class UsageError(Exception):
    """Bad command-line usage; the message is printed after ``<prog>: ``, exit status 1."""


@record
class Option:
    """One option. ``short`` is a letter (``"I"``), ``long`` a word (``"import-path"``);
    ``metavar`` set means the option takes a value; ``help`` is the paragraph shown by --help."""

    short: str | None
    long: str | None
    help: str
    metavar: str | None = None
    dest: str = ""
    repeat: bool = False
    #: Validates the option the moment it is read, as KJ's option callbacks do (so the first
    #: bad option on the command line is the one reported). Called with the option as capnp
    #: echoes it in errors (``-I nodir``, ``--import-path=nodir``, ``-p``), its value (``""``
    #: for a flag) and the values parsed so far; raises UsageError.
    check: Callable[[str, str, dict[str, object]], None] | None = None

    def __post_init__(self) -> None:
        if not self.dest:
            self.dest = (self.long or self.short or "").replace("-", "_")

    def spelling(self) -> str:
        parts = []
        if self.short:
            parts.append(f"-{self.short}{self.metavar or ''}")
        if self.long:
            parts.append(f"--{self.long}" + (f"={self.metavar}" if self.metavar else ""))
        return ", ".join(parts)


@record
class Command:
    """A (sub)command: its name as printed (``cara compile``), one-line usage, description,
    options, and the function that runs it with the parsed options and positionals."""

    prog: str
    usage: str
    description: str
    options: list[Option] = field(default_factory=list)
    run: Callable[[dict[str, object], list[str]], int] | None = None
    epilog: str = ""

    def help_text(self) -> str:
        lines = [f"Usage: {self.prog} {self.usage}", "", self.description.rstrip(), ""]
        lines.append("Options:")
        for opt in [*self.options, *_STANDARD]:
            lines.append(f"    {opt.spelling()}")
            for para in opt.help.splitlines():
                lines.append(f"        {para}" if para else "")
        if self.epilog:  # after the options, as KJ's MainBuilder prints it
            lines += ["", self.epilog.rstrip()]
        return "\n".join(lines) + "\n"

    def fail(self, message: str, stream: TextIO | None = None) -> int:
        stream = stream or sys.stderr
        stream.write(f"{self.prog}: {message}\nTry '{self.prog} --help' for more information.\n")
        return 1

    def parse(self, argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
        """Split ``argv`` into option values (by ``dest``) and positionals; raises UsageError."""
        values: dict[str, object] = {}
        for opt in self.options:
            if opt.repeat:
                values[opt.dest] = []
            elif opt.metavar is None:
                values[opt.dest] = False
            else:
                values[opt.dest] = None
        by_short = {o.short: o for o in [*self.options, *_STANDARD] if o.short}
        by_long = {o.long: o for o in [*self.options, *_STANDARD] if o.long}
        positionals: list[str] = []
        args = list(argv)
        i = 0
        only_positionals = False
        while i < len(args):
            arg = args[i]
            i += 1
            if only_positionals or arg == "-" or not arg.startswith("-"):
                positionals.append(arg)
                continue
            if arg == "--":
                only_positionals = True
                continue
            value: str | None
            shown = arg
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
                found = by_long.get(name)
                if found is None:
                    raise UsageError(f"--{name}: unrecognized option")
                opt = found
                if opt.metavar is None:
                    if eq:
                        raise UsageError(f"--{name}: option does not accept an argument")
                    value = None
                elif not eq:
                    if i >= len(args):
                        raise UsageError(f"--{name}: missing argument")
                    value = args[i]
                    i += 1
                if value is not None:
                    shown = f"--{name}={value}"
            else:
                letter, value = arg[1], arg[2:]
                found = by_short.get(letter)
                if found is None:
                    raise UsageError(f"-{letter}: unrecognized option")
                opt = found
                if opt.metavar is None:
                    if value:
                        raise UsageError(f"-{letter}: option does not accept an argument")
                    value = None
                elif not value:
                    if i >= len(args):
                        raise UsageError(f"-{letter}: missing argument")
                    value = args[i]
                    i += 1
                if value is not None:
                    shown = f"-{letter} {value}"
            if opt.dest in ("help", "version"):
                values[opt.dest] = True
                continue
            if opt.check is not None:
                opt.check(shown, value or "", values)
            if opt.repeat:
                existing = values[opt.dest]
                assert isinstance(existing, list)
                existing.append(value)
            else:
                values[opt.dest] = True if opt.metavar is None else value
        return values, positionals

    def main(self, argv: Sequence[str], version: str) -> int:
        try:
            values, positionals = self.parse(argv)
        except UsageError as exc:
            return self.fail(str(exc))
        if values.get("help"):
            sys.stdout.write(self.help_text())
            return 0
        if values.get("version"):
            sys.stdout.write(f"cara version {version}\n")
            return 0
        assert self.run is not None
        try:
            return self.run(values, positionals)
        except UsageError as exc:
            return self.fail(str(exc))


def _check_import_dir(shown: str, value: str, values: dict[str, object]) -> None:
    """``-I`` must name an existing directory; capnp checks it when it reads the option."""
    import os

    if not os.path.isdir(value):
        raise UsageError(f"{shown}: no such directory")


IMPORT_PATH = Option(
    "I", "import-path",
    "Add <dir> to the list of directories searched for non-relative imports\n"
    "(ones that start with a '/').",
    metavar="<dir>", dest="import_path", repeat=True, check=_check_import_dir,
)
NO_STANDARD_IMPORT = Option(
    None, "no-standard-import",
    "Do not add any default import paths; use only those specified by -I.\n"
    "Otherwise, the standard schemas bundled with cara (/capnp/*.capnp) are\n"
    "importable by default.",
)
VERBOSE = Option(None, "verbose", "Log informational messages to stderr; useful for debugging.")

_STANDARD = [
    Option(None, "version", "Print version information and exit."),
    Option(None, "help", "Display this help text and exit."),
]
