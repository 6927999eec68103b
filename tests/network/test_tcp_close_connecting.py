"""``TcpNetworkFactory.close()`` and ``forget(target)`` end at once the calls waiting for a
connection being made (its handshake unanswered): they waited for the attempt to give up
(``connect_timeout``), then raised "no handshake answer", and the attempt's socket stayed
open as long.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.testing.suite.network import sample_request
from openraft_py.types import BasicNode, RPCOption

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[asyncio.Event]]]:
    """A listener that accepts connections and never answers; each connection's event is
    set when the client closes it."""
    closed: list[asyncio.Event] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ev = asyncio.Event()
        closed.append(ev)
        while await reader.read(4096):
            pass
        ev.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], closed
    finally:
        server.close()


async def _wait_for(cond: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["close", "forget"])
async def test_closing_ends_the_calls_waiting_for_a_connection(
    silent_server: tuple[int, list[asyncio.Event]], how: str
) -> None:
    port, closed = silent_server
    factory = TcpNetworkFactory(1, "c", connect_timeout=10.0)
    client = factory.new_client(2, BasicNode(f"127.0.0.1:{port}"))
    try:
        calls = [asyncio.ensure_future(client.vote(sample_request("vote", i), RPCOption(hard_ttl=20.0))) for i in range(3)]
        await _wait_for(lambda: len(closed) == 1, 5)  # connected; the hello goes unanswered
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if how == "close":
            await factory.close()
            why = "the network factory is closed"
        else:
            factory.forget(2)
            why = "node 2 left the membership"
        for call in calls:
            with pytest.raises(Unreachable, match=why):
                await asyncio.wait_for(call, 2)
        assert loop.time() - t0 < 1.0
        await asyncio.wait_for(closed[0].wait(), 2)  # the attempt's socket is closed too
        assert len(closed) == 1
    finally:
        await factory.close()
