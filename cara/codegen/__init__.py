"""cara.codegen: schema nodes -> importable ``x_capnp.py`` modules and ``x_capnp.pyi`` stubs.

* :func:`generate` returns the text of every file to write, by relative path;
* :func:`write_modules` writes them (what ``cara compile -ocara`` and ``capnpc-cara`` run).

Generated modules import :mod:`cara.codegen.rebuild` at import time, so this package's
``__init__`` stays light: the writers are imported only when :func:`generate` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cara.schema.model import CodeGeneratorRequest

__all__ = ["generate", "write_modules"]


def generate(request: CodeGeneratorRequest) -> dict[str, str]:
    """The generated files for every requested file of ``request``: ``{"dir/x_capnp.py": text,
    "dir/x_capnp.pyi": text, ...}``, paths relative to the output directory, POSIX separators.
    The same request always gives byte-identical text."""
    from cara.codegen.module import module_source
    from cara.codegen.naming import module_path
    from cara.codegen.schemafile import SchemaFile
    from cara.codegen.stubs import stub_source

    out: dict[str, str] = {}
    origin: dict[str, str] = {}
    for requested in request.requestedFiles:
        schema = SchemaFile.of(request, requested.id)
        path = module_path(requested.filename)
        if str(path) in origin:
            raise ValueError(f"{requested.filename} and {origin[str(path)]} would both be "
                             f"written to {path}; rename one of them")
        origin[str(path)] = requested.filename
        out[str(path)] = module_source(schema)
        out[str(path.with_suffix(".pyi"))] = stub_source(schema)
    for relative, text in out.items():
        _check_compiles(relative, text)
    return out


def _check_compiles(relative: str, text: str) -> None:
    """Refuse to hand out a generated file that Python cannot compile (a writer's bug must
    fail the run that made it, not the later import)."""
    try:
        compile(text, relative, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"internal error: the generated {relative} does not compile "
                         f"({exc}); please report this schema") from None


def write_modules(request: CodeGeneratorRequest, directory: str | Path) -> list[Path]:
    """Write :func:`generate`'s files under ``directory`` (creating subdirectories as needed)
    and return their paths. A file whose content is already identical is left untouched, so
    its mtime (and Python's ``.pyc`` of it) stays valid."""
    root = Path(directory)
    written: list[Path] = []
    for relative, text in generate(request).items():
        target = root / relative
        data = text.encode("utf-8")
        try:
            if target.read_bytes() == data:
                written.append(target)
                continue
        except OSError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        written.append(target)
    return written
