"""Source positions and compiler diagnostics, formatted the way ``capnp`` prints them.

The compiler keeps going after an error so that one run reports every problem of a file, as the
reference compiler does. Positions are byte offsets into the source text; they are turned into
``line:col`` only when a diagnostic is formatted. capnp's format is::

    file:LINE:COL-ENDCOL: error: message     (the span lies on one line)
    file:LINE:COL: error: message            (an empty span)
    file:LINE: error: message                (the span covers several lines)

with LINE and COL 1-based and ENDCOL one past the last character, all counted in bytes.
"""

from __future__ import annotations

import bisect

from cara.errors import SchemaError
from cara.schema._record import field, record

__all__ = ["Diagnostic", "Diagnostics", "SourceText"]


class SourceText:
    """A schema file's text plus what is needed to turn offsets into line and column numbers."""

    def __init__(self, display_name: str, text: str) -> None:
        self.display_name = display_name
        self.text = text
        # Worked out on the first diagnostic: a file that compiles never needs them.
        self._line_starts: list[int] | None = None
        self._ascii = True

    def _index_lines(self) -> list[int]:
        text = self.text
        starts = [0]
        index = text.find("\n")
        while index >= 0:
            starts.append(index + 1)
            index = text.find("\n", index + 1)
        self._line_starts = starts
        self._ascii = text.isascii()
        return starts

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and 1-based byte column of ``offset``."""
        offset = max(0, min(offset, len(self.text)))
        line_starts = self._line_starts
        if line_starts is None:
            line_starts = self._index_lines()
        line = bisect.bisect_right(line_starts, offset) - 1
        start = line_starts[line]
        if self._ascii:
            col = offset - start
        else:
            col = len(self.text[start:offset].encode("utf-8", "surrogatepass"))
        return line + 1, col + 1

    def location(self, start: int, end: int) -> str:
        """``file:LINE:COL-END`` (or a shorter form) exactly as capnp prints a span."""
        line, col = self.line_col(start)
        end_line, end_col = self.line_col(end)
        if end_line != line:
            return f"{self.display_name}:{line}"
        if end_col > col:
            return f"{self.display_name}:{line}:{col}-{end_col}"
        return f"{self.display_name}:{line}:{col}"


@record
class Diagnostic:
    """One error: where (a file and a byte span in it) and what."""

    source: SourceText | None
    start: int
    end: int
    message: str

    def format(self) -> str:
        if self.source is None:
            return f"error: {self.message}"
        return f"{self.source.location(self.start, self.end)}: error: {self.message}"


@record
class Diagnostics:
    """Collects the errors of one compilation, in the order they were found."""

    items: list[Diagnostic] = field(default_factory=list)

    def error(self, source: SourceText | None, start: int, end: int, message: str) -> None:
        self.items.append(Diagnostic(source, start, end, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def formatted(self) -> list[str]:
        return [d.format() for d in self.items]

    def raise_if_any(self) -> None:
        if self.items:
            raise SchemaError(self.formatted())
