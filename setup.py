"""Build script for the optional C accelerator; everything else is in pyproject.toml.

``cara.runtime._speedups`` makes struct construction and msgpack faster,
``cara.codecs.capnp._binary`` the Cap'n Proto binary form (``to_bytes``/``from_bytes``), and
``cara.rpc._frames`` the commonest RPC frames (plain calls and their returns); none
is ever required: when no C compiler is available the build skips them (``optional=True``) and
cara runs as pure Python.
``CARA_PURE_PYTHON=1`` at install time skips them on purpose (and at run time ignores built ones).
"""

import os

from setuptools import Extension, setup

extensions = []
if not os.environ.get("CARA_PURE_PYTHON"):
    extensions.append(Extension("cara.runtime._speedups", ["cara/runtime/_speedups.c"],
                                optional=True))
    extensions.append(Extension("cara.codecs.capnp._binary", ["cara/codecs/capnp/_binary.c"],
                                optional=True))
    extensions.append(Extension("cara.rpc._frames", ["cara/rpc/_frames.c"], optional=True))

setup(ext_modules=extensions)
