"""The pycapnp peers checked against each other, so that they can be trusted as the independent
side of cara's interop tests: the calculator client passes all of the sample's steps against the
calculator server and really pipelines (read from the recorded bytes, decoded with rpc.capnp),
capabilities passed each way are counted and fall back to zero, the echo peers and the benchmark
modes report figures, failures are reported as failures, and the harness quotes a dead peer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.peers.harness import (
    CALCULATOR_STEPS,
    CORPUS,
    ECHO_CAPNP,
    PeerError,
    acalculator_server,
    acaps_peer,
    aecho_server,
    arun_calculator_client,
    arun_echo_client,
    calculator_schema,
    calculator_server,
    echo_server,
    figures,
    peer,
    require_pycapnp,
    run_calculator_client,
)
from tests.peers.proxy import Proxy, split_frames

PASSED = [f"{step} PASS" for step in CALCULATOR_STEPS]


def test_calculator_client_passes_every_step_and_the_server_lets_go() -> None:
    with calculator_server() as server:
        host, port, process = server
        assert process.poll() is None and port > 0
        code, lines = run_calculator_client(host, port)
        assert (code, lines) == (0, PASSED)
        assert server.wait_live(0) == 0


def rpc_schema() -> Any:
    require_pycapnp()
    import capnp

    src = CORPUS / "capnproto-0.9.2" / "c++" / "src"
    return capnp.load(str(src / "capnp" / "rpc.capnp"), imports=[str(src)])


def test_client_pipelines_and_server_calls_back_as_the_recording_shows() -> None:
    calculator_schema()
    rpc = rpc_schema()

    async def main() -> tuple[list[bytes], list[bytes]]:
        async with acalculator_server() as server:
            async with Proxy(server.host, server.port, record=True) as proxy:
                code, lines = await arun_calculator_client("127.0.0.1", proxy.port)
                assert (code, lines) == (0, PASSED)
            [rec] = proxy.connections
            return split_frames(rec.to_server), split_frames(rec.to_client)

    sent, received = asyncio.run(asyncio.wait_for(main(), 60))

    def summary(frame: bytes) -> dict[str, Any]:
        """The parts of one rpc.capnp Message that the checks read."""
        with rpc.Message.from_bytes(frame) as m:
            out: dict[str, Any] = {"which": m.which()}
            if m.which() == "bootstrap":
                out["question"] = m.bootstrap.questionId
            if m.which() == "call":
                target = m.call.target
                out["question"] = m.call.questionId
                out["target"] = target.which()
                if target.which() == "promisedAnswer":
                    out["answer"] = target.promisedAnswer.questionId
                    out["transform"] = [op.which() for op in target.promisedAnswer.transform]
                out["caps"] = [d.which() for d in m.call.params.capTable]
            return out

    first = [summary(frame) for frame in sent[:3]]
    assert first[0]["which"] == "bootstrap"
    # evaluate() on the bootstrap before it returned, read() on evaluate's promised `value`
    evaluate, read = first[1], first[2]
    assert (evaluate["which"], evaluate["target"]) == ("call", "promisedAnswer")
    assert evaluate["answer"] == first[0]["question"] and evaluate["transform"] == []
    assert (read["which"], read["target"]) == ("call", "promisedAnswer")
    assert read["answer"] == evaluate["question"]
    assert read["transform"] == ["getPointerField"]
    # operators not yet answered travel as receiverAnswer entries of a cap table; pow is ours
    caps = {cap for m in map(summary, sent) if m["which"] == "call" for cap in m["caps"]}
    assert {"receiverAnswer", "senderHosted"} <= caps
    # the callback step: the server calls the client's pow
    assert any(summary(frame)["which"] == "call" for frame in received)


def test_capabilities_each_way_are_counted_then_all_released() -> None:
    n = 300

    async def main() -> None:
        async with acalculator_server() as srv, acaps_peer(srv.host, srv.port, n) as client:
            assert await client.aline() == f"held {n}"     # n callbacks held by the server
            assert await srv.astats() == 3 * n             # operators, functions, values
            client.send("drop")
            assert await client.aline() == "live 0"
            assert await srv.await_live(0) == 0            # while the connection is still open
            assert client.process.poll() is None
            assert await client.astats() == 0
            assert await client.afinish() == (0, [])

    asyncio.run(asyncio.wait_for(main(), 60))


def test_calculator_client_reports_a_failing_server() -> None:
    calculator_schema()
    with echo_server() as server:                          # no Calculator there
        code, lines = run_calculator_client(server.host, server.port)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("literal FAIL"), lines


def test_echo_peers_and_benchmark_modes_report_figures() -> None:
    async def echo() -> dict[str, dict[str, float]]:
        async with aecho_server() as server:
            result = await arun_echo_client(server.host, server.port, 50, 200)
            assert await server.astats() == 0
            return result

    echoed = asyncio.run(asyncio.wait_for(echo(), 60))
    assert set(echoed) == {"sequential", "concurrent"}
    assert echoed["sequential"]["n"] == 50 and echoed["concurrent"]["n"] == 200
    assert echoed["sequential"]["calls_per_s"] > 0 and echoed["concurrent"]["seconds"] > 0
    with calculator_server() as server:
        code, lines = run_calculator_client(server.host, server.port, "--bench-chain", "20")
        assert code == 0
        chain = figures(lines)["chain"]
        assert chain["n"] == 20 and chain["us_per_chain"] > 0


def test_a_peer_that_dies_is_reported_with_its_stderr() -> None:
    with pytest.raises(PeerError, match="no such schema file"):
        with peer("pycapnp_calculator_server.py", "/nonexistent.capnp", "127.0.0.1", "0",
                  ready=True):
            pass
    with peer("pycapnp_echo_client.py", str(ECHO_CAPNP), "127.0.0.1", "1") as client:
        code, _ = client.finish()
    assert code == 1 and "cannot connect to 127.0.0.1:1" in client.stderr


def test_pycapnp_chain_of_three_dependent_calls_costs_one_round_trip_through_the_proxy() -> None:
    """The reference figure for the pipelining goal, and a check of the harness the cara
    pipelining tests use: getOperator -> evaluate -> read, pipelined by pycapnp, costs about one
    round trip more through the proxy (50 ms each way) than without it -- so the proxy delays
    both ways, and a pipelined chain crosses it once, not three times."""
    delay = 0.05

    async def chain(through_proxy: bool) -> float:
        async with acalculator_server() as server:
            if not through_proxy:
                code, lines = await arun_calculator_client(
                    "127.0.0.1", server.port, "--bench-chain", "3")
            else:
                async with Proxy(server.host, server.port, delay=delay) as proxy:
                    code, lines = await arun_calculator_client(
                        "127.0.0.1", proxy.port, "--bench-chain", "3")
        assert code == 0, lines
        return figures(lines)["chain"]["us_per_chain"] / 1e6

    async def main() -> tuple[float, float]:
        return await chain(False), await chain(True)

    direct, proxied = asyncio.run(asyncio.wait_for(main(), 60))
    added = (proxied - direct) / (2 * delay)
    print(f"pycapnp chain: {added:.2f} round trips added by the proxy")
    assert 0.9 <= added < 1.5, (direct, proxied)
