"""cara RPC over NATS (``nats://host:port/service``), against real ``nats-server`` processes
that the tests start on loopback (skipped, with the reason, without nats-server or nats-py).

The behaviour tests of the built-in transport run here unchanged: the very functions of
test_asyncio_rpc.py and test_asyncio_runtime.py, with their servers bound to a NATS service
instead of a TCP port. Then what only NATS has: the queue group, leases, vanished and frozen
peers, split messages, several worker processes (scaling and failover), and the calculator
acceptance programs run as subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cara.rpc import Disconnected, register_interface
from cara.transports import Client, Server
from tests.conftest import LONG
from tests.transports import test_asyncio_rpc as rpc_tests
from tests.transports import test_asyncio_runtime as runtime_tests
from tests.transports.nats_support import (
    REPO,
    NatsServer,
    nats_server,
    service_name,
    workers,
)
from tests.transports.nats_worker import interfaces as work_interfaces
from tests.transports.support import CalcImpl, eventually, ifaces, run, serving

#: The lease of the in-process tests: short, so that vanishing peers are noticed quickly.
LEASE = 2.0


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsServer]:
    with nats_server() as server:
        yield server


# --------------------------------------------------------- the built-in transport's tests

RPC_TESTS = [
    "test_call_is_sent_without_awaiting",
    "test_sync_and_async_methods_results_and_structs",
    "test_remote_errors_are_rebuilt_safely",
    "test_unregistered_interface_and_missing_method_are_unimplemented",
    "test_thousand_callbacks_then_nothing_left_exported_or_imported",
    "test_capabilities_inside_structs_and_lists",
    "test_explicit_close_and_async_with_release",
    "test_cancelling_the_caller_cancels_the_handler",
    "test_per_call_and_default_timeouts",
    "test_three_parties_a_hands_bs_capability_to_c",
    "test_same_method_name_in_two_interfaces_does_not_clash",
    "test_server_calls_client_callback_that_calls_back",
    "test_server_stats_count_connections",
    "test_running_handlers_per_connection_are_capped",
    "test_handlers_calling_back_their_caller_beyond_the_cap_do_not_deadlock",
]
RUNTIME_TESTS = [
    "test_proxies_are_instances_and_values_are_converted",
    "test_subclass_registration_infers_the_interface",
    "test_missing_method_is_unimplemented",
    "test_callbacks_released_and_errors",
    "test_cancel_and_timeout_reach_the_handler",
    "test_three_parties_with_runtime_classes",
    "test_remote_custom_exception_is_failed",
    "test_interface_of_client_is_a_bootstrap_proxy",
    "test_params_left_out_by_the_caller_arrive_as_defaults",
]


def _nats_serving(base: str) -> Callable[..., Any]:
    """``support.serving`` with the server bound to a fresh NATS service instead of TCP."""

    @contextlib.asynccontextmanager
    async def nats_serving(*impls: Any, url: str = "", **options: Any) -> AsyncIterator[Server]:
        async with serving(*impls, url=f"{base}/{service_name()}", lease=LEASE,
                           **options) as server:
            yield server

    return nats_serving


@pytest.mark.parametrize("name", RPC_TESTS)
def test_built_in_transport_behaviour_on_nats(name: str, nats: NatsServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc_tests, "serving", _nats_serving(nats.url))
    getattr(rpc_tests, name)(backend="asyncio")  # (NATS runs under asyncio only)


@pytest.mark.parametrize("name", RUNTIME_TESTS)
def test_runtime_classes_behaviour_on_nats(name: str, nats: NatsServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    async def start(*impls: tuple[Any, Any], url: str = "") -> Server:
        server = Server(lease=LEASE)  # a service of its own each (three parties: two)
        server.bind(f"{nats.url}/{service_name()}")
        await server.start()
        for iface, impl in impls:
            register_interface(server, iface, impl)
        return server

    monkeypatch.setattr(runtime_tests, "start", start)
    getattr(runtime_tests, name)(backend="asyncio", url=f"{nats.url}/{service_name()}")



# ------------------------------------------------------------------------ NATS specifics

def test_urls_endpoints_and_one_api(nats: NatsServer) -> None:
    I = ifaces()
    url = f"{nats.url}/{service_name('echo')}"

    async def main() -> None:
        server = Server(lease=LEASE)
        server.bind(url)
        server.bind("tcp://127.0.0.1:0")  # one server, a socket and a NATS service at once
        register_interface(server, I["Echo"], lambda text: text[::-1])
        await server.start()
        nats_url = server.endpoints[-1]
        assert nats_url == url and server.endpoints[0].startswith("tcp://")
        for endpoint in server.endpoints:
            client = Client(lease=LEASE)
            client.connect(endpoint)
            async with client:
                assert await client.bootstrap(I["Echo"]).echo("abc") == "cba"
                assert server.stats()["connections"] == 1
        await eventually(lambda: server.stats()["connections"] == 0, what="sessions closed")
        await server.stop()

    with pytest.raises(ValueError, match="nats://host"):
        Server().bind(f"{nats.url}/a.*")
    with pytest.raises(ValueError, match="nats://host"):
        Client().connect(f"{nats.url}/")
    run(main())


def test_no_server_for_the_service_fails_at_once(nats: NatsServer) -> None:
    I = ifaces()

    async def main() -> None:
        client = Client(lease=30)
        client.connect(f"{nats.url}/{service_name('nobody')}")
        async with client:
            start = time.monotonic()
            with pytest.raises(Disconnected, match=r"no server of service .*no responders"):
                await client.bootstrap(I["Echo"]).echo("anyone?")
            assert time.monotonic() - start < 2  # NATS said so: no waiting for the lease

    run(main())


def test_unreachable_nats_server_is_a_clear_error() -> None:
    from tests.transports.nats_support import free_port, require_nats

    require_nats()

    async def main() -> None:
        client = Client()
        client.connect(f"nats://127.0.0.1:{free_port()}/svc")
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="cannot reach the NATS server"):
            await client.start()
        assert time.monotonic() - start < 5

    run(main())


def test_stopped_server_fails_pending_calls_and_the_next_bootstrap_finds_another(
        nats: NatsServer) -> None:
    I = ifaces()
    service = f"{nats.url}/{service_name()}"

    async def main() -> None:
        first, second = CalcImpl(), CalcImpl()
        server = Server(lease=LEASE)
        server.bind(service)
        register_interface(server, I["Calc"], first)
        await server.start()
        client = Client(lease=LEASE)
        client.connect(service)
        await client.start()
        following = Client(lease=LEASE, reconnect=True)  # its bootstrap proxies follow it
        following.connect(service)
        await following.start()
        follower = following.bootstrap(I["Calc"])
        assert await follower.add(1, 1) == 2
        calc = client.bootstrap(I["Calc"])
        pending = calc.sleep(30)
        await eventually(lambda: first.started == 1, what="the handler to start")
        other = Server(lease=LEASE)
        other.bind(service)
        register_interface(other, I["Calc"], second)
        await other.start()
        await server.stop()
        with pytest.raises(Disconnected, match="server stopped"):
            await pending
        await asyncio.wait_for(first.cancel_seen.wait(), 5)  # the handler was cancelled
        with pytest.raises(Disconnected):
            await calc.add(1, 2)  # pinned to the stopped server
        # A new bootstrap opens a new session: the queue group sends it to the other server.
        assert await client.bootstrap(I["Calc"]).sleep(0) is True
        assert second.started == 1
        assert await follower.sleep(0) is True  # the same proxy, on the other server now
        assert second.started == 2
        await following.stop()
        await client.stop()
        await other.stop()

    run(main())


def test_leases_release_a_frozen_client_and_fail_calls_to_a_frozen_server(
        nats: NatsServer) -> None:
    """SIGSTOP keeps the peer's NATS connection (no "no responders"): only the lease can tell
    that it is gone. A frozen client's capabilities are released after the lease; calls to a
    frozen worker fail with Disconnected within the lease."""
    work = work_interfaces()
    url = f"{nats.url}/{service_name('work')}"
    lease = 1.0

    async def main() -> None:
        with workers(url, 1, lease=lease) as (worker,):
            client = Client(lease=lease)
            client.connect(url)
            async with client:
                pinned = await client.bootstrap(work["Work"]).pin()
                assert await pinned.pid() == worker.pid
                os.kill(worker.pid, signal.SIGSTOP)
                try:
                    start = time.monotonic()
                    with pytest.raises(Disconnected, match="within the lease"):
                        await pinned.pid()
                    waited = time.monotonic() - start
                    assert waited <= lease + 0.5, waited
                finally:
                    os.kill(worker.pid, signal.SIGCONT)
                assert client.stats()["imports"] == 0

    run(main())

    # The other way round: a frozen client process holding the server's capabilities.
    I = ifaces()

    async def serve() -> None:
        impl = CalcImpl()
        async with serving((I["Calc"], impl), url=url, lease=lease) as server:
            holder = subprocess.Popen(
                [sys.executable, "-c", _HOLDER, url, str(lease)], stdout=subprocess.PIPE,
                text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            try:
                assert holder.stdout is not None
                loop = asyncio.get_running_loop()
                line = await loop.run_in_executor(None, holder.stdout.readline)
                assert line.strip() == "HOLDING", line
                assert server.stats()["exports"] == 11  # the bootstrap and ten callbacks
                os.kill(holder.pid, signal.SIGSTOP)
                start = time.monotonic()
                await eventually(lambda: server.stats()["exports"] == 0, timeout=lease + 2,
                                 what="the frozen client's capabilities released")
                assert time.monotonic() - start <= lease + 0.5
                assert server.stats()["connections"] == 0
            finally:
                holder.kill()
                holder.wait()

    run(serve())


_HOLDER = """
import asyncio, sys
from cara.transports import Client
from tests.transports.support import ifaces

async def main():
    client = Client(lease=float(sys.argv[2]))
    client.connect(sys.argv[1])
    await client.start()
    calc = client.bootstrap(ifaces()["Calc"])
    caps = [await calc.makeCallback(i) for i in range(10)]
    print("HOLDING", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_killed_worker_is_noticed_at_once_by_no_responders(nats: NatsServer) -> None:
    work = work_interfaces()
    url = f"{nats.url}/{service_name('work')}"

    async def main() -> None:
        with workers(url, 1, lease=30) as (worker,):
            client = Client(lease=30)  # a long lease: only NATS can make this fast
            client.connect(url)
            async with client:
                pinned = await client.bootstrap(work["Work"]).pin()
                assert await pinned.pid() == worker.pid
                worker.kill()
                start = time.monotonic()
                with pytest.raises(Disconnected, match="no responders"):
                    await pinned.pid()
                assert time.monotonic() - start < 2

    run(main())


def test_large_messages_are_split_and_frames_beyond_the_limit_refused() -> None:
    """A nats-server with max_payload 4 KiB: 300 KB arguments and results travel in pieces; a
    frame beyond max_frame_size is refused by name, on either side."""
    I = ifaces()
    with nats_server("max_payload: 4096") as small:
        url = f"{small.url}/{service_name('big')}"

        async def main() -> None:
            async with serving((I["Echo"], lambda text: text + text), url=url,
                               lease=LEASE, max_frame_size=400_000) as server:
                client = Client(lease=LEASE)
                client.connect(url)
                async with client:
                    echo = client.bootstrap(I["Echo"])
                    text = "".join(chr(0x20 + i % 90) for i in range(150_000))
                    assert await echo.echo(text) == text + text
                    many = await asyncio.gather(*[echo.echo(str(i) * 3000) for i in range(50)])
                    assert many == [str(i) * 6000 for i in range(50)]
                    # The server's answer would exceed its limit: the call fails, by name.
                    with pytest.raises(Exception, match="400000 bytes"):
                        await echo.echo("x" * 250_000)
                    assert await echo.echo("still") == "stillstill"
                client = Client(lease=LEASE, max_frame_size=1000)
                client.connect(url)
                async with client:
                    with pytest.raises(ValueError, match="exceeds the frame limit of 1000"):
                        await client.bootstrap(I["Echo"]).echo("y" * 2000)
                assert server.stats()["connections"] <= 1

        run(main())

        async def too_big_for_the_server() -> None:
            async with serving((I["Echo"], lambda text: text), url=url, lease=LEASE,
                               max_frame_size=10_000):
                client = Client(lease=LEASE)
                client.connect(url)
                async with client:
                    echo = client.bootstrap(I["Echo"])
                    assert await echo.echo("small") == "small"
                    with pytest.raises(Disconnected, match="max_frame_size"):
                        await echo.echo("z" * 20_000)

        run(too_big_for_the_server())


# ------------------------------------------------------------ the calculator acceptance

ACCEPTANCE = REPO.parent / "shared" / "acceptance"


def test_calculator_acceptance_programs_over_nats(nats: NatsServer) -> None:
    from tests.peers.harness import calculator_schema

    schema = calculator_schema()
    if not (ACCEPTANCE / "calc_cara_server.py").is_file():
        pytest.skip(f"the acceptance programs are not at {ACCEPTANCE}")
    url = f"{nats.url}/{service_name('calculator')}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [sys.executable, str(ACCEPTANCE / "calc_cara_server.py"), str(schema), url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == url
        client = subprocess.run(
            [sys.executable, str(ACCEPTANCE / "calc_cara_client.py"), str(schema), url],
            capture_output=True, text=True, env=env, timeout=120)
        assert client.returncode == 0, client.stdout + client.stderr
        assert client.stdout.split() == [
            w for step in ("literal", "operators", "pipelining", "functions", "callback")
            for w in (step, "PASS")]
    finally:
        server.kill()
        server.wait()


# -------------------------------------------------------------- several worker processes

async def _throughput(url: str, seconds: float, rounds: int, lanes: int,
                      want_pids: int) -> tuple[float, set[int]]:
    """Calls/s of ``burn(rounds)`` over ``lanes`` clients (each with two calls in flight),
    clients added until ``want_pids`` workers each have at least one."""
    work = work_interfaces()["Work"]
    clients: list[Client] = []
    pids: set[int] = set()
    try:
        while len(clients) < lanes or len(pids) < want_pids:
            if len(clients) > 40:
                raise AssertionError(f"the queue group used only {pids}")
            client = Client(lease=5)
            client.connect(url)
            await client.start()
            clients.append(client)
            pids.add(await client.bootstrap(work).pid())
        done = 0
        deadline = time.monotonic() + seconds

        async def lane(client: Client) -> None:
            nonlocal done
            proxy = client.bootstrap(work)
            while time.monotonic() < deadline:
                await proxy.burn(rounds)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*[lane(c) for c in clients for _ in range(2)])
        return done / (time.monotonic() - start), pids
    finally:
        for client in clients:
            await client.stop()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_scaling_with_worker_processes(nats: NatsServer) -> None:
    """A CPU-bound method served by 1, then 2 worker processes behind one service.

    With two free cores, two workers give 1.6x one worker's throughput or more: asserted with
    CARA_LONG=1 (longer runs, on a machine that is otherwise idle). The default run may share a
    busy machine, where fair sharing caps the ratio whatever the transport does (one other
    CPU-bound process on two cores: 1.33x at most), so it asserts what the transport decides:
    both workers serve in parallel, and the calls served per worker CPU-second do not drop
    with two (nothing serializes them). The figures are printed (``-s``)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("scaling needs two CPUs")
    seconds = 8.0 if LONG else 2.0
    rounds = 60_000  # a few milliseconds of CPU per call
    url = f"{nats.url}/{service_name('scale')}"
    rates, per_cpu = [], []
    for n in (1, 2):
        with workers(url, n, lease=10) as started:
            before = [_cpu_seconds(w.pid) for w in started]
            rate, pids = run(_throughput(url, seconds, rounds, lanes=4, want_pids=n))
            cpu = [_cpu_seconds(w.pid) - b for w, b in zip(started, before, strict=True)]
            assert pids == {w.pid for w in started}
            rates.append(rate)
            per_cpu.append(rate * seconds / sum(cpu) if sum(cpu) else 0.0)
            print(f"\n{n} worker(s): {rate:.0f} burn({rounds}) calls/s; worker CPU seconds "
                  f"{', '.join(f'{c:.2f}' for c in cpu)} in {seconds:g} s "
                  f"({per_cpu[-1]:.0f} calls per CPU-second)")
            if n == 2 and sum(cpu):
                assert min(cpu) > 0.3 * max(cpu), f"one worker idled: {cpu}"
    ratio = rates[1] / rates[0]
    print(f"2 workers / 1 worker: {ratio:.2f}x throughput, "
          f"{per_cpu[1] / per_cpu[0] if per_cpu[0] else 0:.2f}x per CPU-second")
    if per_cpu[0]:
        assert per_cpu[1] >= 0.8 * per_cpu[0], per_cpu
    if LONG:
        assert ratio >= 1.6, rates


def test_failover_when_a_worker_is_killed_under_load(nats: NatsServer) -> None:
    """Eight (or more) clients call the service in a loop, re-bootstrapping after Disconnected;
    one of two workers is SIGKILLed. Calls are at-most-once: those in flight on the dead worker
    fail with Disconnected (nothing is retried behind the caller's back), capabilities pinned to
    it fail within the lease, and bootstrap calls keep succeeding on the survivor."""
    work = work_interfaces()
    url = f"{nats.url}/{service_name('failover')}"
    lease = 2.0

    async def main(victim: Any, survivor: Any) -> None:
        clients: list[Client] = []
        pinned: list[tuple[Any, int]] = []
        # Clients until each worker has two (the queue group picks at random).
        while len(clients) < 8 or min(sum(p == w.pid for _, p in pinned)
                                      for w in (victim, survivor)) < 2:
            assert len(clients) < 40, "the queue group used one worker only"
            client = Client(lease=lease)
            client.connect(url)
            await client.start()
            clients.append(client)
            cap = await client.bootstrap(work["Work"]).pin()
            pinned.append((cap, await cap.pid()))
        on_victim = [cap for cap, pid in pinned if pid == victim.pid]
        ok_after: list[int] = []
        errors: list[tuple[float, BaseException]] = []
        killed_at = 0.0

        async def load(client: Client) -> None:
            while not killed_at or time.monotonic() < killed_at + lease + 0.7:
                try:
                    pid = await client.bootstrap(work["Work"]).burn(2000)
                except Disconnected as exc:
                    errors.append((time.monotonic(), exc))
                    continue
                if killed_at and time.monotonic() > killed_at + lease:
                    ok_after.append(pid)

        async def kill() -> None:
            nonlocal killed_at
            await asyncio.sleep(0.8)
            killed_at = time.monotonic()
            victim.kill()

        await asyncio.gather(kill(), *[load(c) for c in clients])
        assert ok_after and set(ok_after) == {survivor.pid}, "the survivor serves everyone"
        assert all(isinstance(e, Disconnected) for _, e in errors)
        assert all(killed_at <= t <= killed_at + lease for t, _ in errors), \
            [t - killed_at for t, _ in errors]
        for cap in on_victim:
            with pytest.raises(Disconnected):
                await cap.pid()
        for cap, pid in pinned:
            if pid == survivor.pid:
                assert await cap.pid() == survivor.pid
        for client in clients:
            await client.stop()

    with workers(url, 2, lease=lease) as (a, b):
        run(main(a, b))


def test_importing_cara_transports_imports_no_nats() -> None:
    code = ("import sys, cara.transports; from cara.transports import Server, Client; "
            "Server().bind('tcp://127.0.0.1:0'); "
            "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
    assert out.stdout.strip() == "[]"


NO_CHECK = "```python no-check (needs nats-server; tests/transports/test_nats.py runs it)"


def test_the_examples_of_docs_nats_md(nats: NatsServer, tmp_path: Path) -> None:
    """docs/nats.md's examples need a nats-server, so the docs test skips them: run them here,
    against this test's server, with the docs runner."""
    page = (REPO / "docs" / "nats.md").read_text()
    assert page.count(NO_CHECK) >= 3
    page = page.replace(NO_CHECK, "```python").replace("nats://127.0.0.1:4222", nats.url)
    copy = tmp_path / "nats.md"
    copy.write_text(page)
    env = dict(os.environ, CARA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "support" / "docs_runner.py"),
                           str(copy)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


@contextlib.contextmanager
def _nats_cluster(n: int = 3) -> Iterator[list[NatsServer]]:
    """``n`` nats-servers routed into one cluster on loopback."""
    from tests.transports.nats_support import free_port, require_nats

    require_nats()
    routes = [free_port() for _ in range(n)]
    urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
    nodes: list[NatsServer] = []
    try:
        for i, route in enumerate(routes):
            nodes.append(NatsServer(
                f"server_name: n{i}\ncluster {{ name: c\n listen: 127.0.0.1:{route}\n"
                f" routes: [{urls}] }}"))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_killing_a_node_of_a_nats_cluster_under_load() -> None:
    """Three routed nats-servers; two workers on node 1 and 2, clients on node 0 calling in a
    loop. Node 1 is killed: its worker reconnects to another node (nats-py learned them from
    the cluster) and joins the queue group again; the calls that were in flight through it fail
    with Disconnected, and the clients' next bootstraps keep succeeding. (CARA_LONG=1: 5 s.)"""
    if not LONG:
        pytest.skip("CARA_LONG=1 runs it: kills a node of a 3-node NATS cluster under load")
    work = work_interfaces()
    lease = 2.0
    with _nats_cluster() as nodes:
        service = service_name("cluster")
        with workers(f"{nodes[1].url}/{service}", 1, lease=lease) as (w1,), \
                workers(f"{nodes[2].url}/{service}", 1, lease=lease) as (w2,):

            async def main() -> None:
                url = f"{nodes[0].url}/{service}"
                clients = []
                for _ in range(6):
                    client = Client(lease=lease)
                    client.connect(url)
                    await client.start()
                    clients.append(client)
                served: dict[str, set[int]] = {"before": set(), "after": set()}
                errors: list[BaseException] = []
                killed_at = 0.0

                async def load(client: Client) -> None:
                    while not killed_at or time.monotonic() < killed_at + 3:
                        try:
                            pid = await client.bootstrap(work["Work"]).burn(1000)
                        except Disconnected as exc:
                            errors.append(exc)
                            await asyncio.sleep(0.05)
                            continue
                        if not killed_at:
                            served["before"].add(pid)
                        elif time.monotonic() > killed_at + 1.5:
                            served["after"].add(pid)

                async def kill() -> None:
                    nonlocal killed_at
                    await eventually(lambda: len(served["before"]) == 2, timeout=10,
                                     what="both workers serving")
                    nodes[1].process.kill()
                    killed_at = time.monotonic()

                await asyncio.gather(kill(), *[load(c) for c in clients])
                assert served["before"] == {w1.pid, w2.pid}
                assert served["after"], "calls succeed after the node died"
                assert all(isinstance(e, Disconnected) for e in errors)
                for client in clients:
                    await client.stop()

            run(main(), timeout=60)
            assert w1.process.poll() is None and w2.process.poll() is None


def test_publishes_run_at_once_and_a_waiting_one_is_resumed() -> None:
    """nats-py's ``publish`` is a coroutine that nearly never waits: the transport runs it at
    once, and hands the rest of one that does wait (a full buffer) to a task."""
    from cara.transports.nats_transport import _start

    async def main() -> None:
        events: list[tuple[str, int]] = []
        failures: list[str] = []
        gate = asyncio.get_running_loop().create_future()

        async def publish(i: int, wait: bool) -> None:
            events.append(("start", i))
            if wait:
                await gate
            events.append(("end", i))

        _start(publish(1, True), failures.append)
        _start(publish(2, False), failures.append)
        assert events == [("start", 1), ("start", 2), ("end", 2)]
        gate.set_result(None)
        await eventually(lambda: len(events) == 4, what="the waiting publish to finish")
        assert events[3] == ("end", 1) and not failures

        async def broken() -> None:
            await asyncio.sleep(0)
            raise OSError("gone")

        _start(broken(), failures.append)
        await eventually(lambda: bool(failures), what="the failure reported")
        assert failures == ["a NATS publish failed: OSError: gone"]
        with pytest.raises(OSError, match="at once"):
            _start(_raises_now(), failures.append)

    run(main())


async def _raises_now() -> None:
    raise OSError("at once")


def test_a_session_one_side_forgot_is_dropped_on_the_other(nats: NatsServer) -> None:
    """When a worker no longer knows a session (its lease ran out there while the client was
    cut off, say), the client learns it: from its next call, or from its next heartbeat."""
    I = ifaces()

    async def main() -> None:
        async with serving((I["Calc"], CalcImpl()), url=f"{nats.url}/{service_name()}",
                           lease=1.0) as server:
            for via_heartbeat in (False, True):
                client = Client(lease=1.0)
                client.connect(server.endpoints[0])
                async with client:
                    calc = client.bootstrap(I["Calc"])
                    assert await calc.add(1, 2) == 3
                    (node,) = server._nats._nodes  # forget it, as an expired lease does
                    (session,) = node.sessions.values()
                    node.forget(session)
                    start = time.monotonic()
                    if via_heartbeat:
                        await eventually(lambda c=client: c.stats()["connections"] == 0,
                                         what="the client told by the heartbeat's answer")
                        assert time.monotonic() - start < 1.0
                    with pytest.raises(Disconnected, match="does not know this connection"):
                        await calc.add(1, 2)
                    assert await client.bootstrap(I["Calc"]).add(2, 2) == 4  # a new session

    run(main())


def test_the_blocking_client_on_nats(nats: NatsServer) -> None:
    import threading

    import cara

    I = ifaces()
    url = f"{nats.url}/{service_name('sync')}"
    ready, done = threading.Event(), threading.Event()

    async def serve() -> None:
        async with serving((I["Calc"], CalcImpl()), url=url, lease=LEASE):
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=lambda: run(serve()))
    thread.start()
    try:
        assert ready.wait(30)
        with cara.connect_sync(url, lease=LEASE) as client:
            calc = client.bootstrap(I["Calc"])
            assert calc.add(2, 3) == 5
            assert calc.callBack(lambda v: v * 10, 4) == 40
    finally:
        done.set()
        thread.join(30)
