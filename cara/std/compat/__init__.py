"""Generated modules of the standard schemas in ``/capnp/compat/`` (see :mod:`cara.std`)."""
