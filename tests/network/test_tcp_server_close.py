"""``TcpServer.close()`` cancelled by its caller (a timeout around it shorter than the drain,
Ctrl-C in an application's cleanup) or called twice at once: a cancelled close left the
connections open and their requests running, and every later ``close()`` returned at once,
doing nothing (the peers stayed connected to a server that was closed); a second, concurrent
``close()`` returned while the first still drained. Now a cancelled close aborts what is left
at once, and every ``close()`` returns once the server is closed.

And ``TcpServer.start`` cancelled at each of its steps leaves nothing listening: cancelled in
the loop pass asyncio's ``create_server`` yields after it starts serving, the listening
socket stayed open for nobody, and the port could not be taken again while the loop ran."""

from __future__ import annotations

import asyncio
import gc
import select
import socket
import warnings
from typing import Any

import pytest

from openraft_py.network.tcp import TcpServer
from openraft_py.types import AppendEntriesRequest

from .test_tcp import OPT, V1, FakeRaft, _free_port, _pair, _until, _vote_until_answered

pytestmark = pytest.mark.timeout(30)


async def _server_with_a_request_that_never_ends() -> tuple[Any, Any, Any, asyncio.Future[Any]]:
    """A server whose node never answers the one AppendEntries sent to it (in flight)."""
    raft = FakeRaft()
    started = asyncio.Event()

    async def forever(req: AppendEntriesRequest) -> None:
        started.set()
        await asyncio.Event().wait()

    raft.behaviour["append_entries"] = forever
    _, server, factory, client = await _pair(raft, drain_timeout=1.0)
    call = asyncio.ensure_future(client.append_entries(AppendEntriesRequest(V1, None, [], None), OPT))
    await asyncio.wait_for(started.wait(), 5)
    return server, factory, client, call


async def test_a_cancelled_close_still_closes_every_connection() -> None:
    server, factory, _, call = await _server_with_a_request_that_never_ends()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(server.close(), 0.1)  # the drain would take drain_timeout
        assert server.connections == 0
        # The peer sees its connection end (its request fails), and does not reconnect.
        await asyncio.wait_for(_until(lambda: not factory.connected(2)), 5)
        assert call.done()
        await asyncio.wait_for(server.close(), 5)  # idempotent
    finally:
        call.cancel()
        await server.close()
        await factory.close()


async def test_a_concurrent_close_returns_once_the_server_is_closed() -> None:
    server, factory, _, call = await _server_with_a_request_that_never_ends()
    try:
        first = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.05)  # the first is draining
        await asyncio.wait_for(server.close(), 5)
        assert first.done()
        assert server.connections == 0
        await first
    finally:
        call.cancel()
        await server.close()
        await factory.close()


async def test_a_cancelled_start_leaves_nothing_listening() -> None:
    for steps in range(8):
        port = _free_port()
        starting = asyncio.ensure_future(TcpServer.start(FakeRaft(), "127.0.0.1", port, "c"))
        for _ in range(steps):
            await asyncio.sleep(0)
        starting.cancel()
        try:
            await (await starting).close()  # it had started before the cancel
        except asyncio.CancelledError:
            pass
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))  # free again (asyncio's server binds without SO_REUSEPORT)
        finally:
            probe.close()


async def test_a_connection_whose_protocol_cannot_be_made_is_closed_and_the_port_listens_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A protocol factory that raises (a ``MemoryError`` making the connection's state) costs
    that connection only, logged once: uvloop's listener stopped for good after it (it left
    the listener the accepted connection), every later connection waiting in the listen
    queue unanswered while ``is_serving()`` stayed true, so the node looked alive and
    accepted nothing."""
    from openraft_py.network import _tcp_server

    real = _tcp_server._ServerConnection
    calls = 0

    def flaky(server: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("no memory for the connection")
        return real(server)

    raft, server, factory, client = await _pair()
    try:
        monkeypatch.setattr(_tcp_server, "_ServerConnection", flaky)
        host, port = server.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the node
        writer.close()
        # The port listens on: a client's request gets through on a new connection.
        answer = await asyncio.wait_for(_vote_until_answered(client), 10)
        assert answer is not None and calls >= 2
        warned = [r.getMessage() for r in caplog.records if "could not be set up" in r.getMessage()]
        assert len(warned) == 1 and "MemoryError" in warned[0], warned
    finally:
        await server.close()
        await factory.close()


async def test_a_connection_accepted_in_the_loop_pass_of_the_close_is_closed_not_leaked() -> None:
    """A connection the listener accepted just before ``close()`` ran, in the same loop pass:
    asyncio's selector loop makes the connection's transport one pass after accepting it, and
    when the listener was closed in between (``Server.close``) that failed (an
    ``AssertionError`` in ``Server._attach``, which the loop swallows): the accepted socket
    was left to the garbage collector, unclosed (a ``ResourceWarning``; under load it failed
    a test's teardown now and then). The close now stops accepting, lets the accepted ones
    be made (closed at once), then closes the listener."""
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c")
    listener = server._server.sockets[0]
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        # Until the kernel has the connection ready for the listener's accept().
        assert select.select([listener.fileno()], [], [], 5)[0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # This step runs before the loop's poll, which sees the listener ready: the next
            # step is queued before the accept's callback runs, and so runs before the task
            # that callback makes to set the connection up, in the same pass. So the close
            # below begins between the accept and the making of the transport.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await server.close()  # (not in a task of its own: that would start a pass later)
            client.setblocking(False)
            # The node closed it (it was left open until the collector finalized it).
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(client, 1), 5) == b""
            gc.collect()
        leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaked, leaked
    finally:
        client.close()
        await server.close()


async def test_a_close_cancelled_while_it_stops_accepting_stops_watching_accept_errors() -> None:
    """``close()`` cancelled in the loop pass it gives the accepted connections
    (``stop_accepting``): the listener is closed, and its accept errors are no longer
    watched (the loop's exception handler is the one of before the server). Before, the
    watch was left: the loop's handler stayed wrapped for good, and the closed port's
    descriptor number, reused by the next socket, stayed attributed to this server."""
    from openraft_py.network import accept_errors

    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    _, server, factory, _ = await _pair()
    try:
        assert loop.get_exception_handler() is not before  # (watched while it listens)
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0)  # the close ran up to its first wait: stop_accepting's loop pass
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert not server._server.is_serving()
        assert loop.get_exception_handler() is before
        assert accept_errors._filters.get(loop) is None
    finally:
        await server.close()
        await factory.close()
