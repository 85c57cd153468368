"""Start the pycapnp peers of tests/peers/ from a test, each in a process of its own.

A peer runs with this interpreter (``sys.executable``, the venv's python with pycapnp). Its
stdout is read line by line by a thread, so a test can wait for a line with a timeout either
blocking (:meth:`Peer.line`, before or outside an event loop) or from a coroutine, under asyncio
or trio (:meth:`Peer.aline`, which leaves the loop free to serve the peer, e.g. a cara server in
the test's own loop). Its stderr goes to a temporary file and is quoted in every error.

Servers::

    with calculator_server() as srv:            # pycapnp_calculator_server.py on 127.0.0.1:0
        host, port, process = srv               # also srv.host, srv.port, srv.process
        ...                                     # connect to capnp://host:port
        assert srv.wait_live(0) == 0            # its handed-out capabilities, polled via `stats`

Clients (``run_calculator_client`` runs the sample's steps to the end; ``peer()`` starts any
script and returns at once)::

    rc, lines = await arun_calculator_client(host, port)      # from a coroutine
    assert rc == 0 and lines == [f"{s} PASS" for s in CALCULATOR_STEPS]

Leaving a ``peer()`` context closes the peer's stdin (every peer ends on end of file), then
kills it if it has not exited within 3 s. Each helper skips the test (``pytest.skip``, with the
reason) when pycapnp cannot be imported by the peer's interpreter, and the calculator helpers
also when the corpus (calculator.capnp) is missing.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import CORPUS
from tests.transports.backends import sleep as _sleep  # (asyncio's or trio's)

PEERS = Path(__file__).resolve().parent
ECHO_CAPNP = PEERS / "echo.capnp"
CALCULATOR_CAPNP = CORPUS / "capnproto-0.9.2" / "c++" / "samples" / "calculator.capnp"
#: The calculator client's steps, in the order it prints ``<step> PASS``.
CALCULATOR_STEPS = ("literal", "operators", "pipelining", "functions", "callback")
#: Seconds to wait for a line (READY, an answer) unless told otherwise.
TIMEOUT = 15.0
HOST = "127.0.0.1"


class PeerError(AssertionError):
    """A peer did not do what it should: exited, timed out, or printed something unexpected.
    The message quotes its stderr."""


@functools.cache
def pycapnp_problem() -> str | None:
    """Why a peer cannot run here (pycapnp not importable by ``sys.executable``), or None."""
    check = subprocess.run(
        [sys.executable, "-c", "import capnp"], capture_output=True, text=True, timeout=60)
    if check.returncode:
        lines = check.stderr.strip().splitlines() or ["(no message)"]
        return f"pycapnp is not importable by {sys.executable}: {lines[-1]}"
    return None


def require_pycapnp() -> None:
    """Skip the test when the peers cannot run."""
    problem = pycapnp_problem()
    if problem:
        pytest.skip(problem)


def calculator_schema() -> Path:
    """The calculator sample's schema in the corpus, or skip the test."""
    if not CALCULATOR_CAPNP.is_file():
        pytest.skip(f"the calculator sample is not at {CALCULATOR_CAPNP} (set CARA_CORPUS)")
    return CALCULATOR_CAPNP


_EOF = object()


class Peer:
    """A running peer script: its process, stdout lines, and (for a server) host and port."""

    def __init__(self, script: str, args: list[str]) -> None:
        self.script = script
        self.args = args
        self.host = HOST
        self.port = 0
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # closed in stop()
        self._stderr_text = ""
        self.process = subprocess.Popen(
            [sys.executable, str(PEERS / script), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )
        self._lines: queue.Queue[object] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"peer {script}", daemon=True)
        self._reader.start()

    def __iter__(self) -> Iterator[Any]:
        """``host, port, process = peer``."""
        return iter((self.host, self.port, self.process))

    def __repr__(self) -> str:
        return f"<Peer {self.script} pid={self.process.pid} port={self.port}>"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    @property
    def stderr(self) -> str:
        """What the peer wrote on stderr so far (all of it once stopped)."""
        if self._stderr.closed:
            return self._stderr_text
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def _error(self, what: str) -> PeerError:
        return PeerError(f"{self.script} {' '.join(self.args)}: {what}\n--- stderr ---\n"
                         f"{self.stderr[-4000:]}")

    def _take(self, item: object, timeout: float) -> str:
        if item is _EOF:
            self._lines.put(_EOF)  # later reads see the end too
            self.process.wait(timeout=5)
            raise self._error(f"exited ({self.process.returncode}) before printing a line")
        assert isinstance(item, str)
        return item

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line of stdout (blocking); PeerError on timeout or exit."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._error(f"no line within {timeout} s") from None
        return self._take(item, timeout)

    async def aline(self, timeout: float = TIMEOUT) -> str:
        """The next line of stdout, waited for without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._take(self._lines.get_nowait(), timeout)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise self._error(f"no line within {timeout} s") from None
                await _sleep(0.005)

    def send(self, command: str) -> None:
        """Write one command line on the peer's stdin."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._error(f"cannot send {command!r}: the peer has exited") from None

    @staticmethod
    def _parse_live(line: str) -> int:
        words = line.split()
        if len(words) != 2 or words[0] != "live" or not words[1].isdigit():
            raise PeerError(f"expected 'live <n>', got {line!r}")
        return int(words[1])

    def stats(self, timeout: float = TIMEOUT) -> int:
        """The peer's live capability objects (command ``stats``)."""
        self.send("stats")
        return self._parse_live(self.line(timeout))

    async def astats(self, timeout: float = TIMEOUT) -> int:
        self.send("stats")
        return self._parse_live(await self.aline(timeout))

    def wait_live(self, want: int = 0, timeout: float = TIMEOUT) -> int:
        """Poll ``stats`` until it reads ``want`` or ``timeout`` passes; return the last count
        (releases travel asynchronously, so one reading right after dropping may be early)."""
        deadline = time.monotonic() + timeout
        while (live := self.stats()) != want and time.monotonic() < deadline:
            time.sleep(0.02)
        return live

    async def await_live(self, want: int = 0, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while (live := await self.astats()) != want and time.monotonic() < deadline:
            await _sleep(0.02)
        return live

    def wait_ready(self, timeout: float = TIMEOUT) -> None:
        """Read ``READY <port>`` (a server's first line) and remember the port."""
        line = self.line(timeout)
        self.port = self._parse_ready(line)

    async def await_ready(self, timeout: float = TIMEOUT) -> None:
        self.port = self._parse_ready(await self.aline(timeout))

    def _parse_ready(self, line: str) -> int:
        words = line.split()
        if len(words) != 2 or words[0] != "READY" or not words[1].isdigit():
            raise self._error(f"expected 'READY <port>', got {line!r}")
        return int(words[1])

    def _rest(self) -> list[str]:
        lines = []
        while (item := self._lines.get()) is not _EOF:
            assert isinstance(item, str)
            lines.append(item)
        self._lines.put(_EOF)
        return lines

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, list[str]]:
        """Close stdin, wait for the exit; return (exit code, the stdout lines not yet read)."""
        self._close_stdin()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._error(f"did not exit within {timeout} s") from None
        self._reader.join(timeout=5)
        return code, self._rest()

    async def afinish(self, timeout: float = TIMEOUT) -> tuple[int, list[str]]:
        """:meth:`finish` without blocking the event loop."""
        self._close_stdin()
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise self._error(f"did not exit within {timeout} s")
            await _sleep(0.01)
        while self._reader.is_alive():
            await _sleep(0.005)
        return self.process.returncode, self._rest()

    def _close_stdin(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def stop(self) -> None:
        """End the peer: close stdin, kill it after 3 s, release the pipes."""
        self._close_stdin()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout:
            self.process.stdout.close()
        self._stderr_text = self.stderr
        self._stderr.close()


@contextlib.contextmanager
def peer(script: str, *args: str, ready: bool = False,
         timeout: float = TIMEOUT) -> Iterator[Peer]:
    """Run ``tests/peers/<script> args...``; with ``ready``, wait for ``READY <port>`` first."""
    require_pycapnp()
    p = Peer(script, list(args))
    try:
        if ready:
            p.wait_ready(timeout)
        yield p
    finally:
        p.stop()


@contextlib.asynccontextmanager
async def apeer(script: str, *args: str, ready: bool = False,
                timeout: float = TIMEOUT) -> AsyncIterator[Peer]:
    """:func:`peer` for coroutines: waits for READY without blocking the event loop."""
    require_pycapnp()
    p = Peer(script, list(args))
    try:
        if ready:
            await p.await_ready(timeout)
        yield p
    finally:
        p.stop()


def calculator_server(host: str = HOST) -> contextlib.AbstractContextManager[Peer]:
    """pycapnp_calculator_server.py on ``host`` and a free port, READY."""
    return peer("pycapnp_calculator_server.py", str(calculator_schema()), host, "0", ready=True)


def acalculator_server(host: str = HOST) -> contextlib.AbstractAsyncContextManager[Peer]:
    return apeer("pycapnp_calculator_server.py", str(calculator_schema()), host, "0", ready=True)


def echo_server(host: str = HOST) -> contextlib.AbstractContextManager[Peer]:
    """pycapnp_echo_server.py (SimpleEcho of tests/peers/echo.capnp) on a free port, READY."""
    return peer("pycapnp_echo_server.py", str(ECHO_CAPNP), host, "0", ready=True)


def aecho_server(host: str = HOST) -> contextlib.AbstractAsyncContextManager[Peer]:
    return apeer("pycapnp_echo_server.py", str(ECHO_CAPNP), host, "0", ready=True)


def run_calculator_client(host: str, port: int, *extra: str,
                          timeout: float = 60.0) -> tuple[int, list[str]]:
    """Run pycapnp_calculator_client.py against host:port to the end: (exit code, stdout lines).
    Blocking: the server must not need this thread's event loop."""
    with peer("pycapnp_calculator_client.py", str(calculator_schema()), host, str(port),
              *extra) as p:
        return p.finish(timeout)


async def arun_calculator_client(host: str, port: int, *extra: str,
                                 timeout: float = 60.0) -> tuple[int, list[str]]:
    """:func:`run_calculator_client` from a coroutine (the server may be in this loop)."""
    async with apeer("pycapnp_calculator_client.py", str(calculator_schema()), host,
                     str(port), *extra) as p:
        return await p.afinish(timeout)


def caps_peer(host: str, port: int, n: int,
              hold: bool = True) -> contextlib.AbstractContextManager[Peer]:
    """pycapnp_caps_peer.py against a calculator server at host:port (see its docstring):
    read ``held <n>``, ``send('drop')``, read ``live <n>``, then ``stats`` as needed."""
    return peer("pycapnp_caps_peer.py", str(calculator_schema()), host, str(port), str(n),
                *(["--hold"] if hold else []))


def acaps_peer(host: str, port: int, n: int,
               hold: bool = True) -> contextlib.AbstractAsyncContextManager[Peer]:
    return apeer("pycapnp_caps_peer.py", str(calculator_schema()), host, str(port), str(n),
                 *(["--hold"] if hold else []))


def figures(lines: list[str]) -> dict[str, dict[str, float]]:
    """Benchmark lines ``kind a=1 b=2`` -> {kind: {'a': 1.0, 'b': 2.0}}."""
    out = {}
    for line in lines:
        kind, *pairs = line.split()
        out[kind] = {key: float(value) for key, value in (p.split("=", 1) for p in pairs)}
    return out


async def arun_echo_client(host: str, port: int, n: int = 5000, concurrent: int = 5000,
                           timeout: float = 120.0) -> dict[str, dict[str, float]]:
    """pycapnp_echo_client.py against an echo server at host:port (which may run in this
    loop): its figures, e.g. ``['sequential']['calls_per_s']``; PeerError if it fails."""
    async with apeer("pycapnp_echo_client.py", str(ECHO_CAPNP), host, str(port), str(n),
                     str(concurrent)) as p:
        code, lines = await p.afinish(timeout)
        if code:
            raise p._error(f"exited {code}: {lines}")
    return figures(lines)
