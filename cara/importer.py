"""``import x_capnp`` straight from ``x.capnp``: the import hook, its cache, ``load`` and ``loads``.

After ``import cara`` (which calls :func:`install_import_hook`), importing a module whose last
name ends in ``_capnp`` looks for a schema file on ``sys.path`` (or in the package's
``__path__`` for ``import pkg.x_capnp``) whose module name is that name, by the same rule as
``cara compile -ocara`` (:func:`cara.codegen.naming.module_name`: ``x_capnp`` <- ``x.capnp``,
``cxx_capnp`` <- ``c++.capnp``). The finder sits at the *end* of ``sys.meta_path``, so a
generated ``x_capnp.py`` on the path wins over compiling ``x.capnp``.

Compiling is the slow part, so the compiled module (the code object of the generated
``x_capnp.py``, marshalled) is cached in the user's cache directory (``$CARA_CACHE_DIR``, else
``$XDG_CACHE_HOME/cara``, else ``~/.cache/cara``), one entry per schema path. An entry records the
SHA-256 of the schema and of every schema file the compiled request contained, the cara version
and the import path; it is used only if all of them still match, so an edited schema or import
is recompiled and a second import in a new process reads the entry instead of parsing anything.
An unwritable cache directory only costs speed.

The schema compiler is imported on a cache miss only; installing the hook imports nothing but
the standard library.

Imports between schema files are Python imports (see :mod:`cara.codegen.naming`):
``import "y.capnp"`` in ``x.capnp`` is the sibling module ``y_capnp`` (found by this hook too),
``import "/capnp/c++.capnp"`` is ``cara.std.cxx_capnp``.

:func:`load` and :func:`loads` build a module without importing it by name (like pycapnp's
``capnp.load``): its imports are loaded the same way, from paths, and the modules are not put
into ``sys.modules``.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.abc import Loader as _LoaderBase
    from importlib.abc import MetaPathFinder as _FinderBase
    from pathlib import Path
    from typing import Any
else:
    _LoaderBase = _FinderBase = object

# hashlib and marshal are imported where the cache is used (pathlib only by cache_dir()), and
# the finder and loader are plain classes rather than importlib.abc subclasses (which pull in
# importlib.resources): installing the hook is part of ``import cara`` and must cost next to
# nothing, and a cached import little more.

__all__ = [
    "SchemaFinder",
    "SchemaLoader",
    "cache_dir",
    "install_import_hook",
    "load",
    "loads",
    "remove_import_hook",
]

_SUFFIX = "_capnp"
#: Bump when the cache entry layout changes.
_CACHE_LAYOUT = 2


# -------------------------------------------------------------------------------- naming


def _module_name(filename: str) -> str:
    # The same rule as cara.codegen.naming.module_name, repeated here so that finding a module
    # imports nothing from cara (``import cara`` must stay cheap).
    import keyword
    import re

    cleaned = filename.replace("+", "x").replace(".", "_").replace("-", "_")
    cleaned = re.sub(r"[^0-9A-Za-z_]", "_", cleaned)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned + "_" if keyword.iskeyword(cleaned) else cleaned


def _find_schema(directory: str, name: str) -> str | None:
    """The ``.capnp`` file in ``directory`` whose module name is ``name``, if any."""
    base = name[: -len(_SUFFIX)]
    direct = os.path.join(directory, base + ".capnp")
    if os.path.isfile(direct):
        return direct
    try:
        entries = os.listdir(directory)
    except OSError:
        return None
    for entry in sorted(entries):
        if entry.endswith(".capnp") and _module_name(entry) == name:
            path = os.path.join(directory, entry)
            if os.path.isfile(path):
                return path
    return None


# -------------------------------------------------------------------------------- the hook


class SchemaFinder(_FinderBase):
    """Finds ``<name>_capnp`` modules as ``.capnp`` files on the import path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        name = fullname.rpartition(".")[2]
        if not name.endswith(_SUFFIX) or len(name) == len(_SUFFIX):
            return None
        entries = list(path) if path is not None else list(sys.path)
        for entry in entries:
            if not isinstance(entry, str):
                continue
            directory = entry or os.getcwd()
            if not os.path.isdir(directory):
                continue
            found = _find_schema(directory, name)
            if found is None:
                continue
            # The import-path root is the sys.path entry the top-level package was found in.
            depth = fullname.count(".")
            root = os.path.abspath(directory)
            for _ in range(depth):
                root = os.path.dirname(root)
            loader = SchemaLoader(os.path.abspath(found), root)
            spec = ModuleSpec(fullname, loader, origin=loader.path, is_package=False)
            spec.has_location = True
            return spec
        return None

    def invalidate_caches(self) -> None:
        pass


class SchemaLoader(_LoaderBase):
    """Executes the (cached) generated module of one schema file."""

    def __init__(self, path: str, root: str) -> None:
        self.path = path
        self.root = root

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__file__ = self.path
        code = _compiled(self.path, None, self.root, key_imports=[])[1]
        exec(code, module.__dict__)

    def get_filename(self, fullname: str) -> str:
        return self.path


_FINDER: SchemaFinder | None = None


def install_import_hook() -> None:
    """Let ``import x_capnp`` compile ``x.capnp`` from ``sys.path`` (idempotent)."""
    global _FINDER
    if _FINDER is None:
        _FINDER = SchemaFinder()
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def remove_import_hook() -> None:
    """Undo :func:`install_import_hook`; modules already imported stay imported."""
    if _FINDER is not None:
        while _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)


def _hook_import_path(root: str) -> list[str]:
    """Where ``import "/x/y.capnp"`` looks for a module found by the hook: its import-path root
    and every other directory on sys.path (the compiler adds the standard schemas itself)."""
    out = [root]
    for entry in sys.path:
        directory = os.path.abspath(entry or os.getcwd())
        if directory not in out and os.path.isdir(directory):
            out.append(directory)
    return out


# -------------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where compiled schema modules are cached (see the module docstring)."""
    from pathlib import Path

    return Path(_cache_directory())


def _cache_directory() -> str:
    # os.path, not pathlib: this runs on every hook import, and pathlib costs milliseconds.
    configured = os.environ.get("CARA_CACHE_DIR")
    if configured:
        base = configured
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (os.path.join(xdg, "cara") if xdg
                else os.path.join(os.path.expanduser("~"), ".cache", "cara"))
    return os.path.join(base, sys.implementation.cache_tag or "python")


def _version() -> str:
    from cara import __version__

    return str(__version__)


def _sha256(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _entry_path(path: str, key_imports: list[str], src_root: str) -> str:
    import hashlib

    key = repr([_CACHE_LAYOUT, _version(), sys.implementation.cache_tag, path, key_imports,
                src_root])
    return os.path.join(_cache_directory(),
                        hashlib.sha256(key.encode()).hexdigest()[:32] + ".cara")


def _read_entry(entry: str) -> tuple[dict[str, Any], types.CodeType] | None:
    """The header and code of a cache entry (one ``marshal`` blob), or None when it is missing,
    unreadable, of another layout, or stale (a file it was compiled from has changed)."""
    import marshal

    try:
        with open(entry, "rb") as f:
            data = f.read()
        layout, header, code = marshal.loads(data)
        if layout != _CACHE_LAYOUT or not isinstance(code, types.CodeType):
            return None
        for dep, digest in header["files"]:
            if _sha256(dep) != digest:
                return None
    except (OSError, ValueError, TypeError, KeyError, EOFError):
        return None
    return header, code


def _write_entry(entry: str, header: dict[str, Any], code: types.CodeType) -> None:
    import marshal

    data = marshal.dumps((_CACHE_LAYOUT, header, code))
    try:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        tmp = f"{entry}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only cache only costs speed


def _compiled(
    path: str, import_path: list[str] | None, src_root: str,
    key_imports: list[str] | None = None,
) -> tuple[dict[str, Any], types.CodeType]:
    """The generated module of ``path`` as a code object, from the cache or freshly compiled;
    with the header (``files``: [[path, sha256]], ``imports``: [[file id, import name]]).

    The entry is keyed by the schema's path, its source root and ``key_imports`` (the explicit
    import path of :func:`load`; the hook's import path is sys.path, which varies between
    runs of the same program, so it is left out) and validated by the content hashes.
    ``import_path`` None means the hook's (see :func:`_hook_import_path`)."""
    entry = _entry_path(path, (import_path or []) if key_imports is None else key_imports,
                        src_root)
    cached = _read_entry(entry)
    if cached is not None:
        return cached
    if import_path is None:  # the hook's: worked out only when something must be compiled
        import_path = _hook_import_path(src_root)
    request = _compile_request(path, import_path, src_root)
    from cara.codegen.module import module_source
    from cara.codegen.schemafile import SchemaFile

    requested = request.requestedFiles[0]
    source = module_source(SchemaFile.of(request, requested.id))
    code = compile(source, path[: -len(".capnp")] + "_capnp.py (generated from the schema)",
                   "exec", dont_inherit=True)
    # What the compiled module depends on: the schema, the files it imports (a constant taken
    # from an import is copied into this file's nodes), and every other file in the request.
    deps = {path}
    for imp in requested.imports:
        found = _resolve_import(imp.name, os.path.dirname(path), import_path)
        if found is not None:
            deps.add(found)
    for node in request.nodes:
        if node.which == "file" and node.id != requested.id:
            found = _locate(node.displayName, src_root, import_path)
            if found is not None:
                deps.add(found)
    files = [[path, _sha256(path)]] + [[d, _sha256(d)] for d in sorted(deps - {path})]
    header = {
        "cara": _version(),
        "files": files,
        "imports": [[imp.id, imp.name] for imp in requested.imports],
        "file_id": requested.id,
    }
    _write_entry(entry, header, code)
    return header, code


def _locate(display_name: str, src_root: str, import_path: list[str]) -> str | None:
    for base in (src_root, *import_path):
        candidate = os.path.join(base, display_name)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def _resolve_import(name: str, directory: str, import_path: list[str]) -> str | None:
    """The file an ``import "<name>"`` in a schema in ``directory`` reads (None: a standard
    schema or not found; those are covered by the cara version in the cache key)."""
    if name.startswith("/"):
        for base in import_path:
            candidate = os.path.join(base, name.lstrip("/"))
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        return None
    candidate = os.path.normpath(os.path.join(directory, name))
    return candidate if os.path.isfile(candidate) else None


def _compile_request(path: str, import_path: list[str], src_root: str) -> Any:
    """Compile one schema file with cara's compiler (imported only now)."""
    from cara.schema import compile as compile_schema

    return compile_schema([path], import_path=import_path, no_standard_import=False,
                          src_prefix=src_root)


# -------------------------------------------------------------------------------- load / loads


def load(path: str | os.PathLike[str], imports: Sequence[str | os.PathLike[str]] = (),
         *, name: str | None = None) -> types.ModuleType:
    """Compile (or take from the cache) the schema file ``path`` and return its module.

    ``imports`` is the import path for ``import "/dir/file.capnp"`` (like ``capnp -I``; the
    standard ``/capnp/*.capnp`` schemas are always found). Schema files it imports are loaded
    the same way first. The module is not added to ``sys.modules``; ``name`` sets its
    ``__name__`` (default: the module name of the file, ``x_capnp``)."""
    full = os.path.abspath(os.fspath(path))
    import_path = [os.path.abspath(os.fspath(p)) for p in imports]
    return _load(full, import_path, name, set())


#: Modules built by :func:`load`, by (schema path, SHA-256 of its text): a file imported by
#: several loaded schemas is built once, as long as it is the same file with the same text.
_LOADED: dict[tuple[str, str | None], types.ModuleType] = {}


def _load(path: str, import_path: list[str], name: str | None,
          loading: set[str]) -> types.ModuleType:
    """Build ``path``'s module, after the modules of the files it imports (each found by *path*
    from ``path``'s directory and ``import_path``, never by file id alone: two projects may
    vendor two versions of one schema, with one id). While a module is built, the registry
    that generated code resolves imports in (``MODULES``, by file id) holds exactly the files
    this module's imports lead to; it is restored afterwards, so modules built from other
    files with the same id are kept apart."""

    src_root = os.path.dirname(path)
    header, code = _compiled(path, import_path, src_root)
    loading.add(path)
    module = types.ModuleType(name or _module_name(os.path.basename(path)))
    module.__file__ = path
    # Known before its imports are loaded: in an import cycle (Cap'n Proto allows them) they
    # find this module, whose declarations are built only when first used.
    key = (path, header["files"][0][1])
    _LOADED[key] = module
    try:
        imported = _load_imports(header["imports"], src_root, import_path, loading)
        _exec_with_imports(code, module, imported, header["file_id"])
    except BaseException:
        if _LOADED.get(key) is module:
            del _LOADED[key]
        raise
    return module


def _load_imports(imports: Sequence[tuple[int, str]], directory: str, import_path: list[str],
                  loading: set[str]) -> dict[int, types.ModuleType]:
    """The modules of the schema files ``imports`` (``(file id, import name)`` pairs, as
    written in a schema in ``directory``), loaded where needed: file id -> module."""
    imported: dict[int, types.ModuleType] = {}
    for file_id, import_name in imports:
        dep = _resolve_import(import_name, directory, import_path)
        if dep is None:
            # Not found on the import path: a standard schema (the generated module imports
            # cara.std), or a file the generated module will report as missing.
            continue
        known = _LOADED.get((dep, _sha256(dep)))
        if known is not None:
            imported[file_id] = known
        elif dep not in loading:
            imported[file_id] = _load(dep, import_path, None, loading)
    return imported


def _exec_with_imports(code: types.CodeType, module: types.ModuleType,
                       imported: dict[int, types.ModuleType], file_id: int) -> None:
    """Run a generated module's ``code`` with ``imported`` (file id -> module) as what its
    schema imports resolve to, then leave the registry as it was (plus this module, unless
    another file with its id is registered already)."""
    from cara.codegen.rebuild import MODULES

    saved = {fid: MODULES.get(fid) for fid in (*imported, file_id)}
    MODULES.update(imported)
    try:
        exec(code, module.__dict__)
    finally:
        for fid, previous in saved.items():
            if previous is None:
                MODULES.pop(fid, None)
            else:
                MODULES[fid] = previous
    MODULES.setdefault(file_id, module)


def loads(text: str, name: str = "schema.capnp",
          imports: Sequence[str | os.PathLike[str]] = ()) -> types.ModuleType:
    """Compile schema source ``text`` (as if it were a file called ``name``) and return its
    module. ``imports`` is the import path, as for :func:`load`; relative imports in ``text``
    resolve against ``name``'s directory (relative to the current one). The schema files it
    imports are loaded (and cached) as :func:`load` loads them; ``text`` itself is not
    cached."""
    from cara.codegen.module import module_source
    from cara.codegen.rebuild import MODULES
    from cara.codegen.schemafile import SchemaFile
    from cara.schema import compile_string

    import_path = [os.path.abspath(os.fspath(p)) for p in imports]
    request = compile_string(text, name=name, import_path=import_path)
    requested = request.requestedFiles[0]
    # relative imports resolve where the compiler found them: beside ``name``
    directory = os.path.dirname(os.path.abspath(name))
    imported = _load_imports([(d.id, d.name) for d in requested.imports], directory,
                             import_path, set())
    source = module_source(SchemaFile.of(request, requested.id))
    module = types.ModuleType(_module_name(os.path.basename(name)))
    module.__file__ = name
    code = compile(source, f"<{name} generated by cara>", "exec", dont_inherit=True)
    _exec_with_imports(code, module, imported, requested.id)
    MODULES[requested.id] = module  # (a text has no path: the latest one is the one found)
    return module
