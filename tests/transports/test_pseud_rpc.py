"""cara RPC on pseud 1.0.1: real pseud servers and clients on real ZeroMQ sockets (loopback TCP on
a free port, or ipc:// in a temporary directory), interfaces compiled by the reference compiler
(``capnp``) and built by cara's runtime. Nothing is mocked.

The seed's example (cara 0.10.3's README, modernised to asyncio) is the first test; the others
cover what the original lacked: name clashes, error types, releases, cancellation, timeouts,
calls from the server to a client by routing id, and robustness against bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pseud = pytest.importorskip(
    "pseud", reason="pseud is not installed (pip install 'cara[pseud]': pseud==1.0.1, pyzmq)")
zmq = pytest.importorskip("zmq", reason="pyzmq is not installed (pip install pyzmq)")

from cara import cara_pseud  # noqa: E402
from cara.rpc import Disconnected, Failed, Unimplemented  # noqa: E402
from tests.support.reference import reference_request, require_capnp  # noqa: E402
from tests.transports.support import SleepImpl, run  # noqa: E402

# The seed's my_ifaces.capnp with the id and ordinals Cap'n Proto requires, plus interfaces for
# the other tests. Shout.echo has the same name as SimpleEcho.echo on purpose.
MY_IFACES = """
@0xa7c5e3d1b2f40981;

interface SimpleEcho {
    echo @0 (text :Text) -> (text :Text);
}

interface BackAndForth {
    interface Callback {
        callback @0 (callback :Callback) -> (result :Text);
    }
    callMeMaybe @0 (callback :Callback) -> ();
    otherFunc @1 () -> ();
}

interface Shout {
    echo @0 (text :Text) -> (text :Text);
}

interface Left {
    name @0 () -> (v :Text);
}

interface Right {
    name @0 () -> (v :Text);
}

interface Both extends(Left, Right) {
    call @0 (value :Int64) -> (result :Int64);
}

interface Worker {
    fail @0 (kind :Text, message :Text) -> ();
    sleep @1 (seconds :Float64) -> (done :Bool);
    askClient @2 (text :Text) -> (text :Text);
}
"""


_modules: dict[str, Any] = {}


def ifaces() -> Any:
    """The runtime module of MY_IFACES (reference compiler's nodes, cara's runtime classes)."""
    if "m" not in _modules:
        require_capnp()
        from cara.runtime import build_module

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "my_ifaces.capnp").write_text(MY_IFACES)
            request = reference_request(["my_ifaces.capnp"], cwd=tmp)
        _modules["m"] = build_module(request, register=False)
    return _modules["m"]


def endpoint(rpc: Any) -> str:
    raw = rpc.socket.getsockopt(zmq.LAST_ENDPOINT)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@contextlib.asynccontextmanager
async def pseud_pair(url: str = "tcp://127.0.0.1:*", *, timeout: float = 5,
                     name: bytes = b"service") -> AsyncIterator[tuple[Any, Any]]:
    """A set-up pseud server and client, connected; both stopped afterwards."""
    server = pseud.Server(name, timeout=timeout)
    server.bind(url)
    cara_pseud.setup_server(server)
    await server.start()
    client = pseud.Client(name, timeout=timeout)
    client.connect(endpoint(server))
    cara_pseud.setup_client(client)
    await client.start()
    try:
        yield server, client
    finally:
        await client.stop()
        await server.stop()


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "it") -> None:
    """Wait until ``check()`` holds (releases and cancellations travel asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gc.collect()
        await asyncio.sleep(0.02)


def tables_empty(rpc: Any, bootstrap: bool = False) -> bool:
    """No capabilities, questions or answers left (but the bootstrap capability's one export
    and one import when ``bootstrap``: a proxy of it is still held)."""
    s = cara_pseud.stats(rpc)
    held = 1 if bootstrap else 0
    return s["questions"] == s["answers"] == 0 and (
        (s["exports"], s["imports"]) in ((held, 0), (0, held)))


class WorkerImpl(SleepImpl):
    def fail(self, kind: str, message: str) -> None:
        class Mine(Exception):
            pass

        raise {"ValueError": ValueError, "KeyError": KeyError, "Mine": Mine}[kind](message)

    async def askClient(self, text: str) -> str:
        # A server-to-client call: the calling client's SimpleEcho, reached by its routing id.
        peer = cara_pseud.current_peer()
        assert peer is not None
        routing_id, user_id = peer
        assert user_id == b""  # the noop security plugin: no user ids
        echo = cara_pseud.bootstrap(_server_of_test, ifaces().SimpleEcho, peer=routing_id)
        return str(await echo.echo(text)) + "!"


_server_of_test: Any = None


# ------------------------------------------------------------------------------- the seed


def test_seed_example_on_asyncio_echo_class_and_callbacks_both_ways() -> None:
    """The seed's README example: SimpleEcho by a function, BackAndForth by a class whose
    interface is inferred, callMeMaybe with a client callback that the server calls with a lambda
    that the client calls back; afterwards every capability is released on both sides."""
    m = ifaces()
    SimpleEcho, BackAndForth = m.SimpleEcho, m.BackAndForth
    seen: list[str] = []

    async def main() -> None:
        async with pseud_pair() as (server, client):

            @cara_pseud.register_interface(server, SimpleEcho)
            def func(text: str) -> str:
                return text

            @cara_pseud.register_interface(server)
            class Server(BackAndForth):
                async def callMeMaybe(self, callback: Any) -> None:
                    # You can even use a lambda as an interface.
                    seen.append(await callback(lambda: "internal callback"))

                def otherFunc(self) -> None:
                    seen.append("otherFunc")

            assert func.__name__ == "func" and Server.__name__ == "Server"
            echo_iface = SimpleEcho(client)
            assert await echo_iface.echo("test") == "test"
            assert isinstance(echo_iface, SimpleEcho)

            back_and_forth = BackAndForth(client)
            await back_and_forth.otherFunc()

            # A method taking a one-method interface works as a decorator; the name then holds
            # the call's future.
            @back_and_forth.callMeMaybe
            async def callback(callback: Any = None) -> str:
                result = await callback()
                assert result == "internal callback"
                return "client saw " + result

            await callback
            assert seen == ["otherFunc", "client saw internal callback"]
            stats = cara_pseud.stats(server)
            assert stats["connections"] == 1
            del callback, echo_iface, back_and_forth
            await eventually(lambda: tables_empty(server) and tables_empty(client),
                             what="every capability to be released")
            # Stopping the client tells the server, which forgets it.
        assert cara_pseud.stats(server)["connections"] == 0

    run(main())


def test_interface_of_client_is_the_servers_implementation() -> None:
    """The seed's ``SimpleEcho(client)``: the runtime asks the client (``__cara_cast__``)."""
    m = ifaces()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
            echo = m.SimpleEcho(client)
            assert isinstance(echo, m.SimpleEcho)
            assert await echo.echo("pseud shape") == "pseud shape"
            with pytest.raises(TypeError):  # a server has many clients: which one?
                m.SimpleEcho(server)

    run(main())


# ------------------------------------------------------------------------------ addressing


def test_same_method_name_in_different_interfaces_does_not_clash(tmp_path: Path) -> None:
    m = ifaces()

    class BothImpl:
        def call(self, value: int) -> int:  # `call` was the original's reserved RPC name
            return value * 2

    async def main() -> None:
        async with pseud_pair(f"ipc://{tmp_path}/s") as (server, client):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
            cara_pseud.register_interface(server, m.Shout, lambda text: text.upper())
            cara_pseud.register_interface(server, m.Left, lambda: "left")
            cara_pseud.register_interface(server, m.Right, lambda: "right")
            cara_pseud.register_interface(server, m.Both, {"name": lambda: "both",
                                                           "call": BothImpl().call})
            assert await cara_pseud.bootstrap(client, m.SimpleEcho).echo("hi") == "hi"
            assert await cara_pseud.bootstrap(client, m.Shout).echo("hi") == "HI"
            assert await cara_pseud.bootstrap(client, m.Left).name() == "left"
            assert await cara_pseud.bootstrap(client, m.Right).name() == "right"
            both = cara_pseud.bootstrap(client, m.Both)  # inherits name() from Left and Right
            assert await both[(m.Left.cara_schema.id, 0)]() == "both"
            assert await both[(m.Right.cara_schema.id, 0)]() == "both"
            assert await both.call(21) == 42

    run(main())


def test_users_own_pseud_functions_live_beside_cara() -> None:
    """A plain pseud function named like an interface method is a different thing: cara only
    uses the pseud name ``cara.rpc``, which no Cap'n Proto method can have."""
    m = ifaces()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: "cara " + text)

            @server.register_rpc(name="echo")
            def plain_echo(text: str) -> str:
                return "pseud " + text

            assert await client.echo("x") == "pseud x"
            assert await cara_pseud.bootstrap(client, m.SimpleEcho).echo("x") == "cara x"
            assert "." in cara_pseud_name() and not cara_pseud_name().startswith("_")

    run(main())


def cara_pseud_name() -> str:
    from cara.transports.pseud_transport import CARA_RPC

    return CARA_RPC


def test_server_calls_the_calling_client_by_routing_id() -> None:
    """Without a security plugin user ids are empty: the server reaches a client through
    ``server.send_to(routing id)``; the client offers SimpleEcho through register_interface."""
    global _server_of_test
    m = ifaces()

    async def main() -> None:
        global _server_of_test
        async with pseud_pair() as (server, client):
            _server_of_test = server
            cara_pseud.register_interface(server, m.Worker, WorkerImpl())
            cara_pseud.register_interface(client, m.SimpleEcho, lambda text: text * 2)
            worker = cara_pseud.bootstrap(client, m.Worker)
            assert await worker.askClient("ab") == "abab!"
            # And from outside any handler, with the routing id the server saw.
            (peer,) = server.cara_rpc.links
            assert isinstance(peer, bytes)
            echo = cara_pseud.bootstrap(server, m.SimpleEcho, peer=peer)
            assert await echo.echo("c") == "cc"
            with pytest.raises(TypeError, match="peer"):
                cara_pseud.bootstrap(server, m.SimpleEcho)  # which client? not in a handler

    try:
        run(main())
    finally:
        _server_of_test = None


def test_two_clients_each_get_their_own_tables() -> None:
    m = ifaces()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
            other = pseud.Client(b"service")
            other.connect(endpoint(server))
            cara_pseud.setup_client(other)
            await other.start()
            try:
                a = cara_pseud.bootstrap(client, m.SimpleEcho)
                b = cara_pseud.bootstrap(other, m.SimpleEcho)
                assert await asyncio.gather(a.echo("a"), b.echo("b")) == ["a", "b"]
                assert cara_pseud.stats(server)["connections"] == 2
            finally:
                await other.stop()
            await eventually(lambda: cara_pseud.stats(server)["connections"] == 1,
                             what="the stopped client to be forgotten")

    run(main())


# ----------------------------------------------------------------------------------- errors


def test_remote_errors_keep_builtin_types_and_others_are_failed() -> None:
    m = ifaces()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.Worker, WorkerImpl())
            worker = cara_pseud.bootstrap(client, m.Worker)
            with pytest.raises(ValueError, match="bad value") as info:
                await worker.fail("ValueError", "bad value")
            assert "in fail" in str(getattr(info.value, "remote_traceback", ""))
            with pytest.raises(KeyError):
                await worker.fail("KeyError", "k")
            with pytest.raises(Failed, match="Mine: custom"):
                await worker.fail("Mine", "custom")
            with pytest.raises(Unimplemented):  # nothing registered for Shout
                await cara_pseud.bootstrap(client, m.Shout).echo("x")
            assert await worker.sleep(0) is True  # still fine afterwards

    run(main())


def test_peer_without_cara_is_unimplemented() -> None:
    """A server that was never set up has no ``cara.rpc``: pseud's ServiceNotFoundError becomes
    Unimplemented, with a hint."""
    m = ifaces()

    async def main() -> None:
        server = pseud.Server(b"plain")
        server.packer = __import__("cara.transports.pseud_transport",
                                   fromlist=["Packer"]).Packer()
        server.bind("tcp://127.0.0.1:*")
        await server.start()
        client = pseud.Client(b"plain")
        client.connect(endpoint(server))
        cara_pseud.setup_client(client)
        await client.start()
        try:
            with pytest.raises(Unimplemented, match="setup_server"):
                await cara_pseud.bootstrap(client, m.SimpleEcho).echo("x")
        finally:
            await client.stop()
            await server.stop()

    run(main())


# --------------------------------------------------------------- cancellation and timeouts


def test_cancelling_a_call_cancels_the_handler() -> None:
    m = ifaces()
    impl = WorkerImpl()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.Worker, impl)
            worker = cara_pseud.bootstrap(client, m.Worker)
            call = worker.sleep(30)
            await eventually(lambda: cara_pseud.stats(server)["answers"] == 1,
                             what="the handler to start")
            call.cancel()
            await asyncio.wait_for(impl.cancelled.wait(), 5)
            await eventually(lambda: tables_empty(server, True) and tables_empty(client, True),
                             what="the tables to empty")
            assert await worker.sleep(0) is True

    run(main())


def test_pseud_timeout_fails_the_call_and_cancels_the_handler() -> None:
    m = ifaces()
    impl = WorkerImpl()

    async def main() -> None:
        async with pseud_pair(timeout=0.5) as (server, client):
            cara_pseud.register_interface(server, m.Worker, impl)
            worker = cara_pseud.bootstrap(client, m.Worker)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await worker.sleep(30)
            assert time.monotonic() - t0 < 5
            await asyncio.wait_for(impl.cancelled.wait(), 5)
            # The late reply to the timed-out pseud request must not stop the client's reader.
            await asyncio.sleep(0.2)
            assert await worker.sleep(0) is True

    run(main())


def test_stopping_the_client_fails_its_pending_calls() -> None:
    m = ifaces()
    impl = WorkerImpl()

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.Worker, impl)
            call = cara_pseud.bootstrap(client, m.Worker).sleep(30)
            await eventually(lambda: cara_pseud.stats(server)["answers"] == 1,
                             what="the handler to start")
            await client.stop()
            with pytest.raises(Disconnected):
                await call
            await asyncio.wait_for(impl.cancelled.wait(), 5)  # the server was told (ABORT)
            assert cara_pseud.stats(server)["connections"] == 0
            with pytest.raises(Disconnected):
                cara_pseud.bootstrap(client, m.Worker)

    run(main())


def test_many_concurrent_calls_with_callbacks() -> None:
    m = ifaces()

    async def main() -> None:
        async with pseud_pair() as (server, client):

            @cara_pseud.register_interface(server)
            class Impl(m.BackAndForth):
                async def callMeMaybe(self, callback: Any) -> None:
                    assert await callback(lambda: "x") == "ok"

                def otherFunc(self) -> None:
                    pass

            bf = cara_pseud.bootstrap(client, m.BackAndForth)

            async def cb(callback: Any = None) -> str:
                assert await callback() == "x"
                return "ok"

            await asyncio.gather(*[bf.callMeMaybe(cb) for _ in range(200)])
            del bf
            await eventually(lambda: tables_empty(server) and tables_empty(client),
                             what="every capability to be released")

    run(main())


# ------------------------------------------------------------------------------- robustness


def test_bad_frames_do_not_stop_the_server() -> None:
    """Garbage sent as ``cara.rpc`` by a peer that is not cara, and a malformed pseud message on
    the socket: the offender's connection is dropped, everyone else carries on."""
    m = ifaces()
    from cara.transports.pseud_transport import CARA_RPC, Packer

    async def main() -> None:
        async with pseud_pair() as (server, client):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
            rogue = pseud.Client(b"service")
            rogue.packer = Packer()
            rogue.connect(endpoint(server))
            await rogue.start()
            try:
                send = getattr(rogue.send_to(b"service"), CARA_RPC)
                assert await send(b"\x96\x00\xff garbage") is None
                assert await send(b"\xc1") is None
                with pytest.raises(TypeError):
                    await send("not bytes")
                raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
                raw.connect(endpoint(server))
                await raw.send_multipart([b"", b"junk", b"more junk", b"x", b"y"])
                await raw.send_multipart([b"", b"\x01", b"uuid", b"\x03", b"\xc1\xc1"])
                await asyncio.sleep(0.1)
                raw.close(linger=0)
            finally:
                await rogue.stop()
            assert await cara_pseud.bootstrap(client, m.SimpleEcho).echo("still") == "still"

    run(main())


def test_register_before_setup_is_a_clear_error() -> None:
    m = ifaces()

    async def main() -> None:
        server = pseud.Server(b"unset")
        with pytest.raises(TypeError, match="setup_server"):
            cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
        with pytest.raises(TypeError, match="one-method"):
            server2 = pseud.Server(b"set")
            cara_pseud.setup_server(server2)
            cara_pseud.register_interface(server2, m.BackAndForth, lambda: None)

    run(main())


def test_a_burst_right_after_connect_is_not_lost() -> None:
    """Calls sent before ZeroMQ's handshake is done meet "host unreachable"; pseud's own sender
    drops them after three tries per peer, the adapter keeps them in order and retries."""
    m = ifaces()

    async def main() -> None:
        server = pseud.Server(b"burst")
        server.bind("tcp://127.0.0.1:*")
        cara_pseud.setup_server(server)
        await server.start()
        cara_pseud.register_interface(server, m.SimpleEcho, lambda text: text)
        client = pseud.Client(b"burst")
        client.connect(endpoint(server))
        cara_pseud.setup_client(client)
        await client.start()
        try:
            echo = m.SimpleEcho(client)
            texts = [str(i) for i in range(300)]
            assert await asyncio.gather(*[echo.echo(t) for t in texts]) == texts
        finally:
            await client.stop()
            await server.stop()

    run(main())


def test_tracebacks_stay_private_when_asked() -> None:
    m = ifaces()

    async def main() -> None:
        server = pseud.Server(b"private")
        server.bind("tcp://127.0.0.1:*")
        cara_pseud.setup_server(server, send_tracebacks=False)
        await server.start()
        cara_pseud.register_interface(server, m.Worker, WorkerImpl())
        client = pseud.Client(b"private")
        client.connect(endpoint(server))
        cara_pseud.setup_client(client)
        await client.start()
        try:
            with pytest.raises(ValueError, match="secret") as info:
                await m.Worker(client).fail("ValueError", "secret")
            assert getattr(info.value, "remote_traceback", None) is None
        finally:
            await client.stop()
            await server.stop()

    run(main())


# ---------------------------------------------------------------- user ids from a security plugin

PLAIN_PLUGIN = "cara_test_plain_auth"
_plain_registered: list[bool] = []


def register_plain_plugin() -> None:
    """A pseud security plugin (pseud 1.0.1 ships none besides noop): ZeroMQ's PLAIN mechanism,
    checked by a ZAP handler, so each message carries the client's user name as User-Id, and
    the server maps user ids to routing ids as pseud's plugin interface describes."""
    if _plain_registered:
        return
    import zope.component
    import zope.interface
    from pseud.interfaces import IAuthenticationBackend, IClient, IServer
    from pseud.utils import register_auth_backend

    class Base:
        name = PLAIN_PLUGIN

        def __init__(self, rpc: Any) -> None:
            self.rpc = rpc
            self.routing_ids: dict[bytes, bytes] = {}

        async def stop(self) -> None:
            pass

        async def handle_hello(self, *args: Any) -> None:
            pass

        async def handle_authenticated(self, message: Any) -> None:
            pass

        async def handle_authentication(self, *args: Any) -> None:
            pass

        def is_authenticated(self, peer_id: bytes) -> bool:
            return True

        def save_last_work(self, message: Any) -> None:
            pass

        def get_predicate_arguments(self, peer_id: bytes) -> dict[str, Any]:
            return {}

        def register_routing_id(self, user_id: bytes, routing_id: bytes) -> None:
            self.routing_ids[user_id] = routing_id

        def get_routing_id(self, user_id: bytes) -> bytes:
            return self.routing_ids.get(user_id, user_id)

    @register_auth_backend
    @zope.interface.implementer(IAuthenticationBackend)
    @zope.component.adapter(IServer)
    class PlainServer(Base):
        def configure(self) -> None:
            self.rpc.socket.plain_server = True

    @register_auth_backend
    @zope.interface.implementer(IAuthenticationBackend)
    @zope.component.adapter(IClient)
    class PlainClient(Base):
        def configure(self) -> None:
            self.rpc.socket.plain_username = self.rpc.user_id
            self.rpc.socket.plain_password = self.rpc.password

    _plain_registered.append(True)


def test_user_ids_from_a_security_plugin_key_the_peers() -> None:
    """With a security plugin the server knows its clients by user id (the original's model):
    tables are per user, handlers see the user id, and the server reaches a client by it."""
    register_plain_plugin()
    from zmq.auth.asyncio import AsyncioAuthenticator

    m = ifaces()

    async def main() -> None:
        context = zmq.asyncio.Context()
        auth = AsyncioAuthenticator(context)
        auth.start()
        auth.configure_plain(domain="*", passwords={"alice": "secret"})
        server = pseud.Server(b"guarded", context=context, security_plugin=PLAIN_PLUGIN)
        server.bind("tcp://127.0.0.1:*")
        cara_pseud.setup_server(server)
        await server.start()
        client = pseud.Client(b"guarded", context=context, security_plugin=PLAIN_PLUGIN,
                              user_id=b"alice", password=b"secret")
        client.connect(endpoint(server))
        cara_pseud.setup_client(client)
        await client.start()
        seen: list[Any] = []

        class Impl(WorkerImpl):
            async def askClient(self, text: str) -> str:
                seen.append(cara_pseud.current_peer())
                # By user id: the plugin finds the routing id.
                echo = cara_pseud.bootstrap(server, m.SimpleEcho, peer=b"alice")
                return str(await echo.echo(text)) + "?"

        try:
            cara_pseud.register_interface(server, m.Worker, Impl())
            cara_pseud.register_interface(client, m.SimpleEcho, lambda text: text.upper())
            assert await m.Worker(client).askClient("hi") == "HI?"
            ((routing_id, user_id),) = seen
            assert user_id == b"alice" and routing_id != b"alice"
            assert list(server.cara_rpc.links) == [b"alice"]
            # The seed's callbacks, keyed by user id this time.
            bf_seen: list[str] = []

            @cara_pseud.register_interface(server)
            class Server(m.BackAndForth):
                async def callMeMaybe(self, callback: Any) -> None:
                    bf_seen.append(await callback(lambda: "internal callback"))

                def otherFunc(self) -> None:
                    pass

            async def cb(callback: Any = None) -> str:
                return "got " + await callback()

            await m.BackAndForth(client).callMeMaybe(cb)
            assert bf_seen == ["got internal callback"]
            await eventually(lambda: tables_empty(server) and tables_empty(client),
                             what="every capability to be released")
        finally:
            await client.stop()
            await server.stop()
            auth.stop()
            context.destroy(linger=0)

    run(main())
