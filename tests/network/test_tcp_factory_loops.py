"""A ``TcpNetworkFactory`` kept across event loops (created before ``asyncio.run``, or kept
from one ``asyncio.run`` to the next: a node restarted in the process, a test fixture outliving
a test's loop). Its connections stayed bound to the first loop: on the next, every RPC failed
("Event loop is closed", "The future belongs to a different loop", a coroutine never awaited)
and a cluster restarted so could not elect a leader. Now the factory starts afresh on the new
loop once the old one has ended, and refuses, saying so, to serve a second loop while the first
still runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from event_loops import LOOPS

from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import BasicNode, VoteRequest

from .test_tcp import OPT, V1, FakeRaft

pytestmark = pytest.mark.timeout(60)



@pytest.mark.parametrize("new_loop", list(LOOPS.values()), ids=list(LOOPS))
def test_a_factory_kept_across_event_loops_reaches_its_peer_on_each(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.05, seed=1)
    port = 0

    async def one_vote() -> None:
        nonlocal port
        server = await TcpServer.start(FakeRaft(), "127.0.0.1", port, "c")  # the same address each time
        port = server.port
        try:
            client = factory.new_client(2, BasicNode(server.address))
            assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        finally:
            await server.close()

    for _ in range(3):
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(one_vote())
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(factory.close())


def test_a_factory_in_use_on_a_running_loop_refuses_another() -> None:
    factory = TcpNetworkFactory(1, "c")
    first = asyncio.new_event_loop()
    thread = threading.Thread(target=first.run_forever)
    thread.start()
    try:

        async def client() -> None:
            factory.new_client(2, BasicNode("127.0.0.1:9"))

        asyncio.run_coroutine_threadsafe(client(), first).result(5)
        with pytest.raises(RuntimeError, match="in use on another event loop that runs"):
            asyncio.run(client())
        asyncio.run_coroutine_threadsafe(factory.close(), first).result(5)
    finally:
        first.call_soon_threadsafe(first.stop)
        thread.join(5)
        first.close()


# Deliberate: the first loop ends with the server and the factory open, and a close in a later
# loop can only drop their connections, leaving the sockets to the garbage collector (see
# TcpServer._close_after_loop): those are unclosed when collected. As an error, uvloop's warning
# of its own transports unclosed at the first loop's end also made that loop's close() hang.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("new_loop", list(LOOPS.values()), ids=list(LOOPS))
def test_server_and_factory_close_in_a_later_loop_after_theirs_ended(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A cleanup that runs in a later loop (the first ended without closing them): both
    closes return, the port is free again, and the factory's later calls raise
    ``Unreachable``. Both raised "Event loop is closed", and the port stayed taken."""
    kept: dict[str, Any] = {}

    async def serve_and_call() -> None:
        server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c")
        factory = TcpNetworkFactory(1, "c")
        client = factory.new_client(2, BasicNode(server.address))
        assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
        kept.update(server=server, factory=factory, client=client)

    async def clean_up() -> None:
        await asyncio.wait_for(kept["server"].close(), 5)
        await asyncio.wait_for(kept["server"].close(), 5)  # idempotent
        await asyncio.wait_for(kept["factory"].close(), 5)

    async def call_again() -> None:
        client = kept["factory"].new_client(2, BasicNode(kept["server"].address))
        with pytest.raises(Unreachable):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(serve_and_call())
    async def serve_again() -> None:  # on the same port
        await (await TcpServer.start(FakeRaft(), "127.0.0.1", kept["server"].port, "c")).close()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(clean_up())
        runner.run(call_again())
        runner.run(serve_again())
