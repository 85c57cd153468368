"""How schema names become Python names: module files, import paths and identifiers.

One rule each, used by the module writer, the stub writer, the import hook and the runtime, so
that a name in a ``.capnp`` file is spelled the same way everywhere in Python:

* a schema file ``dir/c++.capnp`` becomes the module ``cxx_capnp`` (file ``dir/cxx_capnp.py``):
  in the file's base name ``.`` becomes ``_``, ``+`` becomes ``x`` and ``-`` becomes ``_``, as the
  original cara generator did (``rpc-twoparty.capnp`` -> ``rpc_twoparty_capnp``). Any other
  character that cannot appear in a Python identifier also becomes ``_``;
* a schema identifier that is a Python keyword (``from``, ``import``, ``None`` ...) gets ONE
  trailing underscore (``from_``), for struct attributes, ``Create`` keywords, enum members,
  nested classes and constants alike. Soft keywords (``match``, ``type``) are valid identifiers
  and stay as they are.
"""

from __future__ import annotations

import keyword
import re
from pathlib import PurePosixPath

#: Characters a doc comment may hold (capnp accepts any but newline in a comment) that a
#: generated file must write as escapes: Python source cannot hold a NUL, and a raw carriage
#: return or form feed would change or break the text.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

__all__ = [
    "CONTROL",
    "STANDARD_PACKAGE",
    "import_target",
    "method_struct_name",
    "module_name",
    "module_path",
    "python_name",
]

#: Package holding the generated modules of the standard schemas (``/capnp/*.capnp``).
STANDARD_PACKAGE = "cara.std"

_SCHEMA_SUFFIX = ".capnp"
_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z_]")


def python_name(name: str) -> str:
    """A schema identifier as a Python identifier: keywords get one trailing underscore."""
    return name + "_" if keyword.iskeyword(name) else name


def module_name(filename: str) -> str:
    """The Python module name for a schema file name (only its last path component counts):
    ``c++.capnp`` -> ``cxx_capnp``, ``rpc-twoparty.capnp`` -> ``rpc_twoparty_capnp``."""
    base = PurePosixPath(filename).name
    cleaned = base.replace("+", "x").replace(".", "_").replace("-", "_")
    cleaned = _NOT_IDENTIFIER.sub("_", cleaned)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return python_name(cleaned)


def module_path(filename: str) -> PurePosixPath:
    """Where ``cara compile -ocara`` writes the module of a requested file, relative to the output
    directory: the file's directories are kept (as ``capnp compile`` plugins do), the base name
    is cleaned by :func:`module_name`. A leading ``/`` and ``..`` components are dropped so the
    output never escapes the output directory."""
    parts = [p for p in PurePosixPath(filename).parts if p not in ("/", "..", ".")]
    if not parts:
        raise ValueError(f"{filename!r} is not a schema file name")
    directories = parts[:-1]
    return PurePosixPath(*directories, module_name(parts[-1]) + ".py")


def _package_part(directory: str) -> str:
    cleaned = _NOT_IDENTIFIER.sub("_", directory.replace("+", "x").replace("-", "_"))
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return python_name(cleaned)


def import_target(import_name: str) -> str:
    """The Python module that an ``import "<import_name>"`` of a schema file refers to.

    * ``/capnp/<x>.capnp`` (a standard schema) -> ``cara.std.<x>_capnp`` and
      ``/capnp/compat/<x>.capnp`` -> ``cara.std.compat.<x>_capnp``, shipped with cara;
    * ``/<dirs>/<x>.capnp`` (found on the import path, ``-I``) -> the absolute module
      ``<dirs>.<x>_capnp``: the import-path directory must be on ``sys.path``;
    * ``<x>.capnp`` or ``<dirs>/<x>.capnp`` or ``../<x>.capnp`` (relative to the importing file)
      -> a relative module name, ``.x_capnp``, ``.dirs.x_capnp``, ``..x_capnp``. The generated
      module resolves it against its own package, or, when it is a top-level module, as a
      top-level module (``x_capnp``).
    """
    path = PurePosixPath(import_name)
    stem = module_name(path.name)
    if import_name.startswith("/"):
        directories = [_package_part(p) for p in path.parts[1:-1] if p not in (".", "..")]
        if directories[:1] == ["capnp"]:
            return ".".join([STANDARD_PACKAGE, *directories[1:], stem])
        return ".".join([*directories, stem])
    dots = 1
    directories = []
    for part in path.parts[:-1]:
        if part == "..":
            if directories:
                directories.pop()
            else:
                dots += 1
        elif part != ".":
            directories.append(_package_part(part))
    return "." * dots + ".".join([*directories, stem])


def method_struct_name(method_name: str, results: bool) -> str:
    """The interface class attribute holding a method's implicit parameter or result struct,
    named as Cap'n Proto's C++ code names them: ``echo`` -> ``EchoParams``, ``EchoResults``."""
    return method_name[:1].upper() + method_name[1:] + ("Results" if results else "Params")
