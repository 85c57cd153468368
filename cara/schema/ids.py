"""Node ids: the automatic ids capnp derives, random file ids, and how ids are written.

Every Cap'n Proto node has a 64-bit id with the top bit set. A file's id is written in the file
(``@0x...;``); everything else may carry an explicit ``@0x...`` or gets an id derived from its
parent's id, so that two compilers given the same schema agree on every id (other tools and
peers refer to types only by id). The derivations are those of ``compiler/type-id.c++``: the
first eight bytes of an MD5 digest, read big-endian, with bit 63 forced on.

API:

* ``child_id(parent_id, name) -> int``: a nested declaration (struct, enum, interface, const,
  annotation) named ``name`` inside the node ``parent_id`` (a file or another declaration).
* ``group_id(parent_id, index) -> int``: a group or named union; ``index`` is its position in
  the parent node's ``struct.fields`` list (``LaidOutField.index`` from :mod:`.layout`), and
  ``parent_id`` is the id of the struct or group node that holds that list.
* ``method_params_id(interface_id, method_ordinal, is_results) -> int``: the implicit
  ``m$Params`` / ``m$Results`` structs of a method.
* ``generate_file_id() -> int``: a fresh random id for ``capnp id`` / new files.
* ``format_id(id) -> str``: ``"@0x%016x"``, the spelling in schema files.
* ``STREAM_RESULT_ID``: ``StreamResult`` of ``/capnp/stream.capnp``, the results type of every
  ``-> stream`` method (how later layers recognise a streaming method).
* ``is_valid_id(id) -> bool``: a 64-bit value with bit 63 set (capnp rejects the others with
  "Invalid ID.  Please generate a new one with 'capnpc -i'.").
"""

from __future__ import annotations

try:  # the built-in MD5: hashlib would initialise OpenSSL first, 10% of a `cara compile` run
    from _md5 import md5  # type: ignore[import-not-found]  # (CPython's, no stubs)
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import md5

__all__ = [
    "ID_BIT",
    "STREAM_RESULT_ID",
    "child_id",
    "format_id",
    "generate_file_id",
    "group_id",
    "is_valid_id",
    "method_params_id",
]

#: ``StreamResult`` (/capnp/stream.capnp): what ``-> stream`` compiles to as a method's results.
STREAM_RESULT_ID = 0x995F9A3377C0B16E

#: Bit 63: set in every Cap'n Proto id, so that ids are easy to tell from ordinary numbers.
ID_BIT = 1 << 63
_MASK = (1 << 64) - 1


def _digest_id(data: bytes) -> int:
    return int.from_bytes(md5(data, usedforsecurity=False).digest()[:8], "big") | ID_BIT


def _le64(value: int) -> bytes:
    return (value & _MASK).to_bytes(8, "little")


def child_id(parent_id: int, name: str) -> int:
    """The id of declaration ``name`` nested in ``parent_id`` (MD5 of parent id LE64 + name)."""
    return _digest_id(_le64(parent_id) + name.encode("utf-8"))


def group_id(parent_id: int, index: int) -> int:
    """The id of the group at ``index`` in ``parent_id``'s field list (MD5 of LE64 + LE16)."""
    return _digest_id(_le64(parent_id) + (index & 0xFFFF).to_bytes(2, "little"))


def method_params_id(interface_id: int, method_ordinal: int, is_results: bool) -> int:
    """The id of a method's implicit params (``is_results=False``) or results struct."""
    return _digest_id(
        _le64(interface_id)
        + (method_ordinal & 0xFFFF).to_bytes(2, "little")
        + (b"\x01" if is_results else b"\x00")
    )


def generate_file_id() -> int:
    """A new random id (63 random bits, bit 63 set) from the OS's secure source."""
    import secrets  # imported here: most compiles need no new id, and the import costs

    return secrets.randbits(64) | ID_BIT


def is_valid_id(value: int) -> bool:
    return 0 <= value <= _MASK and bool(value & ID_BIT)


def format_id(value: int) -> str:
    """``@0x`` followed by 16 lower-case hex digits, as schema files and ``capnp id`` write it."""
    return f"@0x{value & _MASK:016x}"
