"""The TCP client's ``submit_append_entries`` (``RaftNetwork``'s optional callback method):
connected, the request is sent at the call and ``reply`` is called exactly once, from the
connection's callbacks, with the response or the error ``append_entries`` would raise
(``RemoteError``, ``Timeout``, ``Unreachable`` on a lost connection); not connected, nothing
is sent and ``None`` is returned; a cancelled handle is never answered; a request that cannot
be framed raises ``NetworkError`` at the call.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from openraft_py.errors import NetworkError, RemoteError, Timeout, Unreachable
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, Entry, LogId, Normal, RPCOption

from .test_tcp import V1, FakeRaft, _pair

pytestmark = pytest.mark.timeout(60)

OPT = RPCOption(hard_ttl=5.0, soft_ttl=5.0)


def ae(i: int | None) -> AppendEntriesRequest:
    return AppendEntriesRequest(V1, None if i is None else LogId(3, i), [], None)


class Replies:
    """A ``reply`` callback recording what it is called with; ``wait(n)`` until ``n`` came."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self._more = asyncio.Event()

    def __call__(self, result: Any) -> None:
        self.got.append(result)
        self._more.set()

    async def wait(self, n: int) -> list[Any]:
        while len(self.got) < n:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), 5)
        return self.got


async def connected(client: Any) -> None:
    """Open the client's connection (``submit_append_entries`` never connects)."""
    await asyncio.wait_for(client.append_entries(ae(None), OPT), 5)


async def test_not_connected_returns_none_and_sends_nothing() -> None:
    raft, server, factory, client = await _pair()
    try:
        replies = Replies()
        assert client.submit_append_entries(ae(1), OPT, replies) is None
        await asyncio.sleep(0.05)
        assert raft.received == [] and replies.got == []
    finally:
        await server.close()
        await factory.close()


async def test_connected_the_reply_gets_each_answer_once() -> None:
    raft, server, factory, client = await _pair()
    try:
        await connected(client)
        replies = Replies()
        handles = [client.submit_append_entries(ae(i), OPT, replies) for i in range(1, 6)]
        assert all(h is not None for h in handles)
        got = await replies.wait(5)
        await asyncio.sleep(0.05)
        assert len(replies.got) == 5  # once each, nothing more
        assert sorted(r.matching.index for r in got) == [1, 2, 3, 4, 5]
        assert all(isinstance(r, AppendEntriesResponse) and r.success for r in got)
        assert [req.prev_log_id.index for name, req in raft.received[1:]] == [1, 2, 3, 4, 5]  # sent in call order
    finally:
        await server.close()
        await factory.close()


async def test_a_handler_error_is_a_remote_error() -> None:
    raft = FakeRaft()

    async def fail(req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.prev_log_id is not None:
            raise ValueError("disk on fire")
        return AppendEntriesResponse(req.vote, True, None)

    raft.behaviour["append_entries"] = fail
    _, server, factory, client = await _pair(raft)
    try:
        await connected(client)
        replies = Replies()
        assert client.submit_append_entries(ae(1), OPT, replies) is not None
        (err,) = await replies.wait(1)
        assert isinstance(err, RemoteError) and "disk on fire" in str(err)
    finally:
        await server.close()
        await factory.close()


@asynccontextmanager
async def stuck_server(drain_timeout: float) -> AsyncIterator[tuple[Any, Any, FakeRaft]]:
    """A server that answers only the connecting heartbeat (no ``prev_log_id``) and never
    another AppendEntries, and a connected client to it: ``(server, client, raft)``."""
    raft = FakeRaft()
    never = asyncio.Event()

    async def stuck(req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.prev_log_id is None:
            return AppendEntriesResponse(req.vote, True, None)
        await never.wait()
        raise AssertionError("unreachable")

    raft.behaviour["append_entries"] = stuck
    _, server, factory, client = await _pair(raft, drain_timeout=drain_timeout)
    try:
        await connected(client)
        yield server, client, raft
    finally:
        never.set()
        await server.close()
        await factory.close()


async def test_no_answer_is_a_timeout_at_the_deadline_and_a_cancelled_handle_is_not_answered() -> None:
    loop = asyncio.get_running_loop()
    async with stuck_server(drain_timeout=0.1) as (server, client, _):
        replies, withdrawn = Replies(), Replies()
        t0 = loop.time()
        short = RPCOption(hard_ttl=0.2, soft_ttl=0.1)
        assert client.submit_append_entries(ae(1), short, replies) is not None
        handle = client.submit_append_entries(ae(2), short, withdrawn)
        assert handle is not None and handle.cancel()
        (err,) = await replies.wait(1)
        assert isinstance(err, Timeout)
        assert 0.15 <= loop.time() - t0 < 3.0
        await asyncio.sleep(0.3)  # past the withdrawn one's deadline too: still nothing
        assert withdrawn.got == []


async def test_a_lost_connection_answers_unreachable() -> None:
    async with stuck_server(drain_timeout=0.05) as (server, client, raft):
        replies = Replies()
        assert client.submit_append_entries(ae(1), OPT, replies) is not None
        while len(raft.received) < 2:  # the server holds it (bounded by the test's timeout)
            await asyncio.sleep(0.002)
        await server.close()  # drops the connection with the request unanswered
        (err,) = await replies.wait(1)
        assert isinstance(err, Unreachable)
        # Disconnected now: the next request is not taken.
        assert client.submit_append_entries(ae(2), OPT, Replies()) is None


async def test_a_request_too_large_to_frame_raises_at_the_call() -> None:
    raft, server, factory, client = await _pair()
    try:
        await connected(client)
        big = Entry(LogId(3, 1), Normal(b"x" * (factory.max_frame_size + 1)))
        replies = Replies()
        with pytest.raises(NetworkError):
            client.submit_append_entries(AppendEntriesRequest(V1, None, [big], None), OPT, replies)
        await asyncio.sleep(0.05)
        assert replies.got == []
        # The connection still serves.
        assert client.submit_append_entries(ae(1), OPT, replies) is not None
        await replies.wait(1)
    finally:
        await server.close()
        await factory.close()
