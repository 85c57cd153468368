"""Build script for the optional C accelerator; everything else is in pyproject.toml.

``cara.runtime._speedups`` makes struct construction faster and is never required: when no C
compiler is available the build skips it (``optional=True``) and cara runs as pure Python.
``CARA_PURE_PYTHON=1`` at install time skips it on purpose (and at run time ignores a built one).
"""

import os

from setuptools import Extension, setup

extensions = []
if not os.environ.get("CARA_PURE_PYTHON"):
    extensions.append(Extension("cara.runtime._speedups", ["cara/runtime/_speedups.c"],
                                optional=True))

setup(ext_modules=extensions)
