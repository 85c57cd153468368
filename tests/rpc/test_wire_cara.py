"""cara frames (cara.rpc.wire_cara): what a frame's headers may claim, and the decoder's fast
cases read as the general ones."""

from __future__ import annotations

import struct

import msgpack
import pytest

from cara.rpc import messages as M
from cara.rpc.errors import ProtocolError
from cara.rpc.wire_cara import CALL, FINISH, CaraWire


@pytest.mark.parametrize("header", [
    b"\xdd" + struct.pack(">I", 1 << 30),   # array32 of 2**30 items
    b"\xdc" + struct.pack(">H", 60000),     # array16
    b"\xdf" + struct.pack(">I", 1 << 30),   # map32
    b"\xdb" + struct.pack(">I", 1 << 30),   # str32
    b"\xc6" + struct.pack(">I", 1 << 30),   # bin32
    b"\xc9" + struct.pack(">I", 1 << 30) + b"\x01",  # ext32
])
def test_lengths_beyond_the_frame_are_refused_before_allocating(header: bytes) -> None:
    """A container or string claiming more items or bytes than the frame holds is a
    ProtocolError, whatever the nesting (the frame's length bounds every length)."""
    container = header[0] in (0xDC, 0xDD, 0xDF)
    for frame in (header + bytes(20), b"\x93\x00\x01" + header + bytes(20)):
        # containers are refused by their count (before a list of that size is made)
        with pytest.raises(ProtocolError, match="exceeds max_" if container else "malformed"):
            CaraWire().decode(frame)


def test_call_targets_and_finish() -> None:
    wire = CaraWire()
    call = wire.decode(msgpack.packb([CALL, 1, 5, 7, 0, None, []]))
    assert isinstance(call, M.Call) and call.target == M.ImportedCap(5)
    call = wire.decode(msgpack.packb([CALL, 1, [3, 0, 2], 7, 0, None, []]))
    assert isinstance(call, M.Call) and call.target == M.PromisedAnswer(3, (0, 2))
    for bad in (-1, 1 << 32, True, 1.5, "x", []):
        with pytest.raises(ProtocolError, match=r"target|import id|question id"):
            wire.decode(msgpack.packb([CALL, 1, bad, 7, 0, None, []]))
    assert wire.decode(msgpack.packb([FINISH, 4])) == M.Finish(4, False)
    assert wire.decode(msgpack.packb([FINISH, 4, 1])) == M.Finish(4, True)
    with pytest.raises(ProtocolError, match="question id"):
        wire.decode(msgpack.packb([FINISH, -4]))
