"""Fixtures of the transport tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(params=["c", "python"])
def frame_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with the asyncio transport's frame loop and the plain calls in C
    (cara/rpc/_frames.c), then in Python: the accelerated build otherwise never runs the
    Python twins, which a build without a C compiler relies on."""
    from cara.rpc import connection
    from cara.rpc.accel import FRAMES
    from cara.transports import asyncio_transport

    if request.param == "c" and FRAMES is None:
        pytest.skip("the C accelerator is not built (or CARA_PURE_PYTHON=1)")
    if request.param == "python":
        monkeypatch.setattr(asyncio_transport, "_FRAMES", None)
        monkeypatch.setattr(connection, "FRAMES", None)  # (Connection._fast_frames is False)
    yield request.param
