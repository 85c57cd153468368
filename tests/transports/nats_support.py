"""NATS pieces for the transport tests: a ``nats-server`` of the test's own on loopback, and
worker processes serving a service (tests/transports/nats_worker.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cara.transports.nats_transport import nats_problem

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "nats_worker.py"
_services = itertools.count()


def require_nats() -> None:
    """Skip the test, with the reason, when nats-server or nats-py is missing."""
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not on PATH (apt-get install nats-server; .ci/run does)")
    problem = nats_problem()
    if problem:
        pytest.skip(problem)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_name(prefix: str = "svc") -> str:
    """A service name no other test of this run uses."""
    return f"{prefix}{os.getpid()}n{next(_services)}"


class NatsServer:
    """A running ``nats-server`` process (``url``: ``nats://127.0.0.1:port``)."""

    def __init__(self, config: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="cara-nats-")
        conf = Path(self._dir.name) / "nats.conf"
        conf.write_text(f"listen: 127.0.0.1:{self.port}\n{config}\n")
        self._log = open(Path(self._dir.name) / "log", "w+")  # closed in stop()
        self.process = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 0.5):
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                log = self._log.read()
                self.stop()
                raise RuntimeError(f"nats-server did not start: {log[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self._dir.cleanup()


@contextlib.contextmanager
def nats_server(config: str = "") -> Iterator[NatsServer]:
    require_nats()
    server = NatsServer(config)
    try:
        yield server
    finally:
        server.stop()


class Worker:
    """tests/transports/nats_worker.py serving ``url`` in a process of its own; ``pid`` once it
    printed READY."""

    def __init__(self, url: str, lease: float = 2.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(lease)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self._lines.get(timeout=60)
        if line != "READY":
            raise RuntimeError(f"the worker did not start ({line!r}): {self.stderr()}")
        self.pid = self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)

    def stats(self) -> dict[str, int]:
        """The worker's ``server.stats()``, asked on its stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        line = self._lines.get(timeout=30)
        if line is None:
            raise RuntimeError(f"the worker is gone: {self.stderr()}")
        stats: dict[str, int] = json.loads(line)
        return stats

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stderr.close()


@contextlib.contextmanager
def workers(url: str, n: int, lease: float = 2.0) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(n):
            started.append(Worker(url, lease))
        yield started
    finally:
        for w in started:
            w.stop()
