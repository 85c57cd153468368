"""cara's schema layer: the Cap'n Proto schema language compiled in pure Python.

``compile()`` and ``compile_string()`` turn ``.capnp`` text into the same
:class:`~cara.schema.model.CodeGeneratorRequest` that ``capnp compile -o-`` produces, node for
node; problems are raised as one :class:`cara.errors.SchemaError` listing every diagnostic in
capnp's ``file:line:col: error: message`` format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cara.schema import model

__all__ = ["compile", "compile_string", "model"]


def compile(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    import_path: Sequence[str] = (),
    no_standard_import: bool = False,
    src_prefix: str | None = None,
) -> model.CodeGeneratorRequest:
    """Compile schema files, as ``capnp compile -o-`` with the same options would.

    ``paths`` are the requested files (relative paths are taken from the current directory and,
    like capnp, name the file nodes); ``import_path`` are the ``-I`` directories searched for
    ``import "/..."``.
    """
    from cara.schema.compiler import compile_files

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return compile_files(list(paths), import_path=import_path,
                         no_standard_import=no_standard_import, src_prefix=src_prefix)


def compile_string(
    text: str,
    name: str = "<string>.capnp",
    import_path: Sequence[str] = (),
    no_standard_import: bool = False,
) -> model.CodeGeneratorRequest:
    """Compile schema source held in memory; ``name`` is its display name (and the base for
    its relative imports, taken from the current directory)."""
    from cara.schema.compiler import compile_files

    return compile_files([], import_path=import_path, no_standard_import=no_standard_import,
                         strings=[(name, text)])
