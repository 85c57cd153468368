"""Where schema source files come from: command-line files, ``import`` and ``embed``.

A schema file is known by a *root* directory and a path inside it, exactly like ``capnp``
(``compiler/module-loader.c++`` and ``capnp.c++``): the path inside the root is the file's
**display name**, which becomes the file node's ``displayName``, the prefix of every
declaration's ``displayName`` and ``RequestedFile.filename``. Getting it the same as capnp keeps
generated code and error messages identical.

Rules (all checked against capnp 0.9.2):

* **Files named on the command line** (``load_root``): the path is made absolute against the
  current directory (``.`` and ``..`` are folded without touching the disk). If a
  ``--src-prefix`` directory contains it, the longest such prefix is the root; otherwise the
  current directory is, if it contains the file; otherwise the filesystem root (display name:
  the absolute path without its leading ``/``).
* **``import "/a/b.capnp"``** (absolute): searched in each ``-I`` directory in order, then in the
  standard directories unless ``no_standard_import``. The directory it is found in is its root,
  so the display name is ``a/b.capnp``.
* **``import "b.capnp"``** (relative): resolved against the importing file's directory *inside
  the same root*; ``..`` may not leave that root (capnp crashes there; cara answers "not found").
* **``embed``** resolves the same way and yields bytes.
* **Standard directories** (cara's decision): first cara's bundled copies of the Cap'n Proto
  standard schemas (``cara/schema/standard``: ``/capnp/c++.capnp``, ``schema``, ``rpc``,
  ``rpc-twoparty``, ``persistent``, ``stream``, ``compat/json`` from Cap'n Proto 1.x, plus
  ``/capnp/cara.capnp``), so cara works with no Cap'n Proto installed; then, like capnp,
  ``/usr/local/include`` and ``/usr/include`` for other installed schemas. The bundled files
  keep their ids, so output matches capnp's that read the system copies.
* **The same file reached twice** (another path, another ``-I`` directory, a symlink) is one
  :class:`SourceFile` (the first display name wins), like capnp's same-file detection. Import
  cycles between files are legal in Cap'n Proto; this module only resolves names and caches
  files, so it never loops; the compiler decides what a cycle of *definitions* means.
* **Reading**: files must be UTF-8 (a BOM is kept in ``text`` for the lexer to skip) and at most
  ``max_file_size`` bytes (default 64 MiB); anything else raises :class:`SourceError` naming the
  file (and the line and column of the first bad byte). capnp itself accepts non-UTF-8 bytes in
  comments; cara refuses them because its text values are Python ``str``.

API:

* ``SourceLoader(import_path=(), *, no_standard_import=False, src_prefixes=(), cwd=None,
  max_file_size=64 MiB, standard_dirs=None)``; a missing ``-I`` or ``--src-prefix`` directory
  raises ``SourceError("<dir>: no such directory")`` (capnp's words).
* ``loader.load_root(path) -> SourceFile`` (``SourceError("<path>: no such file")``).
* ``loader.resolve_import(from_file, name) -> SourceFile | None``: ``None`` when not found (the
  compiler reports ``Import failed: <name>`` at the import expression); ``SourceError`` when
  found but unreadable.
* ``loader.read_embed(from_file, name) -> bytes | None`` (``Couldn't read file for embed:
  <name>`` is the compiler's message for ``None``).
* ``loader.add_text(display_name, text, *, root=None) -> SourceFile``: an in-memory file,
  importable by that name (relative to ``root``, default the current directory).
* ``loader.files`` lists every file loaded so far, in load order.
* :class:`SourceFile`: ``display_name``, ``path`` (a real filesystem path), ``root``, ``data``
  (the raw bytes, for byte offsets), ``text`` (decoded) and ``shown_name``, the name in
  diagnostics (capnp prints a file under its ``-I`` or ``--src-prefix`` directory as that
  directory was given, and a file outside the current directory with its leading ``/``).
* ``BUNDLED_STANDARD_DIR``: the bundled directory (a ``pathlib.Path``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cara.errors import SchemaError
from cara.schema._record import field, record

__all__ = [
    "BUNDLED_STANDARD_DIR",
    "DEFAULT_MAX_FILE_SIZE",
    "SYSTEM_INCLUDE_DIRS",
    "SourceError",
    "SourceFile",
    "SourceLoader",
]

#: cara's bundled copies of the standard schemas (``import "/capnp/..."``).
BUNDLED_STANDARD_DIR = Path(__file__).resolve().parent / "standard"
#: Searched after the bundled directory, as capnp does, unless ``no_standard_import``.
SYSTEM_INCLUDE_DIRS: tuple[str, ...] = ("/usr/local/include", "/usr/include")
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024


class SourceError(SchemaError):
    """A schema source file could not be found or read."""


@record(eq=False)
class SourceFile:
    """One schema file: where it is, what capnp calls it, and its content."""

    display_name: str
    path: Path
    root: Path
    data: bytes = field(repr=False)
    text: str = field(repr=False)
    #: The name diagnostics print (capnp's ``getDisplayName``): the display name behind the
    #: ``-I``/``--src-prefix`` directory as it was given, ``/`` for the filesystem root.
    shown_name: str = ""

    def __post_init__(self) -> None:
        if not self.shown_name:
            self.shown_name = self.display_name

    @property
    def parts(self) -> tuple[str, ...]:
        """The display name split into path components (relative to ``root``)."""
        return tuple(self.display_name.split("/"))


def _fold(parts: Iterable[str]) -> list[str] | None:
    """Fold ``.``/``..``/empty components like kj::Path; None if ``..`` leaves the start."""
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
        else:
            out.append(part)
    return out


def _absolute(cwd: Path, name: str | os.PathLike[str]) -> list[str]:
    """``name`` made absolute against ``cwd``, as components (``..`` stops at ``/``)."""
    text = os.fspath(name)
    base: list[str] = [] if text.startswith("/") else list(cwd.parts[1:])
    out: list[str] = []
    for part in [*base, *text.split("/")]:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return out


class SourceLoader:
    """Finds, reads and caches schema files for one compilation (see the module docstring)."""

    def __init__(
        self,
        import_path: Sequence[str | os.PathLike[str]] = (),
        *,
        no_standard_import: bool = False,
        src_prefixes: Sequence[str | os.PathLike[str]] = (),
        cwd: str | os.PathLike[str] | None = None,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        standard_dirs: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.cwd = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
        self.max_file_size = max_file_size
        # How diagnostics name each directory's files: the first spelling it was given in.
        self._shown_prefix: dict[Path, str] = {}
        self.search_path: list[Path] = [self._directory(d) for d in import_path]
        if not no_standard_import:
            if standard_dirs is None:
                standard = [BUNDLED_STANDARD_DIR, *(Path(d) for d in SYSTEM_INCLUDE_DIRS)]
                # Standard directories that do not exist are skipped silently, as capnp does.
                for directory in standard:
                    if directory.is_dir():
                        self.search_path.append(self._directory(directory))
            else:
                self.search_path += [self._directory(d) for d in standard_dirs]
        self.src_prefixes: list[Path] = [self._directory(d) for d in src_prefixes]
        self._by_location: dict[tuple[Path, tuple[str, ...]], SourceFile] = {}
        self._by_identity: dict[tuple[int, int], SourceFile] = {}
        self.files: list[SourceFile] = []

    # ------------------------------------------------------------------------------ public

    def load_root(self, path: str | os.PathLike[str]) -> SourceFile:
        """A file named on the command line (or passed to ``cara.load``)."""
        parts = _absolute(self.cwd, path)
        root, rel = self._root_for(parts)
        found = self._load(root, rel)
        if found is None:
            raise SourceError(f"{os.fspath(path)}: no such file")
        return found

    def resolve_import(self, from_file: SourceFile, name: str) -> SourceFile | None:
        """The file ``import "name"`` in ``from_file`` refers to, or None if there is none."""
        for root, rel in self._candidates(from_file, name):
            found = self._load(root, rel)
            if found is not None:
                return found
        return None

    def read_embed(self, from_file: SourceFile, name: str) -> bytes | None:
        """The bytes ``embed "name"`` in ``from_file`` refers to, or None if there are none."""
        for root, rel in self._candidates(from_file, name):
            real = root.joinpath(*rel)
            if real.is_file():
                return self._read(real, name)
        return None

    def add_text(self, display_name: str, text: str, *,
                 root: str | os.PathLike[str] | None = None) -> SourceFile:
        """Register an in-memory schema (``cara.loads``-style use, tests).

        It behaves as if the file ``display_name`` existed under ``root`` (default: the current
        directory): other files can import it and it can import files next to it on disk.
        """
        rel = _fold(display_name.split("/"))
        if not rel or display_name.startswith("/"):
            raise SourceError(f"{display_name}: not a relative file name")
        base = Path("/", *_absolute(self.cwd, root)) if root is not None else self.cwd
        data = text.encode("utf-8")
        if len(data) > self.max_file_size:
            raise SourceError(
                f"{display_name}: file is larger than the limit of {self.max_file_size} bytes"
            )
        source = SourceFile("/".join(rel), base.joinpath(*rel), base, data, text,
                            self._shown_name(base, rel))
        self._by_location[(base, tuple(rel))] = source
        self.files.append(source)
        return source

    # ---------------------------------------------------------------------------- helpers

    def _directory(self, name: str | os.PathLike[str]) -> Path:
        path = Path("/", *_absolute(self.cwd, name))
        if not path.is_dir():
            raise SourceError(f"{os.fspath(name)}: no such directory")
        if path not in (self.cwd, Path("/")):
            text = os.fspath(name)
            self._shown_prefix.setdefault(path, text if text.endswith("/") else text + "/")
        return path

    def _shown_name(self, root: Path, rel: Sequence[str]) -> str:
        """capnp's ``getDisplayName(dir, path)``."""
        name = "/".join(rel)
        prefix = self._shown_prefix.get(root)
        if prefix is not None:
            return prefix + name
        return "/" + name if root == Path("/") else name

    def _root_for(self, parts: list[str]) -> tuple[Path, tuple[str, ...]]:
        # The longest --src-prefix that is a proper prefix of the file wins.
        prefix_parts = {tuple(p.parts[1:]): p for p in self.src_prefixes}
        for i in range(len(parts) - 1, 0, -1):
            prefix = prefix_parts.get(tuple(parts[:i]))
            if prefix is not None:
                return prefix, tuple(parts[i:])
        cwd_parts = list(self.cwd.parts[1:])
        if parts[: len(cwd_parts)] == cwd_parts and len(parts) > len(cwd_parts):
            return self.cwd, tuple(parts[len(cwd_parts):])
        return Path("/"), tuple(parts)

    def _candidates(self, from_file: SourceFile, name: str) -> list[tuple[Path, tuple[str, ...]]]:
        if "\0" in name:  # no file has such a name (the OS would refuse to look it up)
            return []
        if name.startswith("/"):
            rel = _fold(name[1:].split("/"))
            if not rel:
                return []
            return [(root, tuple(rel)) for root in self.search_path]
        relative = _fold([*from_file.parts[:-1], *name.split("/")])
        if not relative:
            return []
        return [(from_file.root, tuple(relative))]

    def _load(self, root: Path, rel: tuple[str, ...]) -> SourceFile | None:
        key = (root, rel)
        cached = self._by_location.get(key)
        if cached is not None:
            return cached
        real = root.joinpath(*rel)
        try:
            st = real.stat()
        except (OSError, ValueError):  # (ValueError: a NUL in the name)
            return None
        if not real.is_file():
            return None
        identity = (st.st_dev, st.st_ino)
        same = self._by_identity.get(identity)
        if same is not None:
            # The same file under another name: capnp keeps the first name it saw.
            self._by_location[key] = same
            return same
        display_name = "/".join(rel)
        shown_name = self._shown_name(root, rel)
        data = self._read(real, shown_name)
        text = _decode(data, shown_name)
        source = SourceFile(display_name, real, root, data, text, shown_name)
        self._by_location[key] = source
        self._by_identity[identity] = source
        self.files.append(source)
        return source

    def _read(self, real: Path, display_name: str) -> bytes:
        try:
            with open(real, "rb") as stream:
                # in pieces: one read of the limit would allocate the whole limit up front
                chunks: list[bytes] = []
                left = self.max_file_size + 1
                while left > 0:
                    chunk = stream.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            raise SourceError(f"{display_name}: cannot read file: {exc.strerror or exc}") from None
        if len(data) > self.max_file_size:
            raise SourceError(
                f"{display_name}: file is larger than the limit of {self.max_file_size} bytes"
            )
        return data


def _decode(data: bytes, display_name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SourceError(
            f"{display_name}:{line}:{column}: error: file is not valid UTF-8 "
            f"(byte 0x{data[exc.start]:02x}); cara reads schema files as UTF-8"
        ) from None
