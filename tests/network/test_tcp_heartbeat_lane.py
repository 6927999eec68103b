"""Heartbeats on a connection of their own (``TcpClient.heartbeat``, ``_Peer.heartbeat_lane``):
a heartbeat is answered while the target reads nothing more of the replication's connection.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, Entry, LogId, Normal, Vote

from .test_tcp import OPT, FakeRaft, _pair, _until

pytestmark = pytest.mark.timeout(60)

V1 = Vote.new(3, 1, True)


async def test_a_heartbeat_is_answered_while_the_replication_connection_is_not_read() -> None:
    """The target handles one request of a connection at a time (``max_inflight=1``) and holds
    a request carrying entries: it reads nothing more of that connection. A heartbeat goes
    on the second connection, which the leader's first AppendEntries through a fast path
    started, and is answered; a request on the first connection waits."""
    raft = FakeRaft()
    release = asyncio.Event()

    async def append(req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.entries:
            await release.wait()
        return AppendEntriesResponse(req.vote, True, req.prev_log_id)

    raft.behaviour["append_entries"] = append
    raft, server, factory, client = await _pair(raft, max_inflight=1)
    try:
        hb = AppendEntriesRequest(V1, None, [], None)
        assert (await asyncio.wait_for(client.append_entries(hb, OPT), 5)).success  # the first connection
        assert server.connections == 1, "a plain call (a vote, an answer) opens no heartbeat connection"
        # The replication's fast path (a leader's) starts the heartbeats' connection.
        assert (await asyncio.wait_for(client.send_append_entries(hb, OPT), 5)).success
        lane = client._peer.heartbeats
        await asyncio.wait_for(_until(lambda: lane.conn is not None and server.connections == 2), 5)
        held = asyncio.ensure_future(
            client.append_entries(AppendEntriesRequest(V1, None, [Entry(LogId(3, 1), Normal(b"x"))], None), OPT)
        )
        await asyncio.wait_for(_until(lambda: len(raft.received) == 3), 5)
        behind = asyncio.ensure_future(client.append_entries(hb, OPT))
        answer = await asyncio.wait_for(client.heartbeat(hb, OPT), 5)
        assert answer.success and not behind.done() and not held.done()
        release.set()
        assert (await asyncio.wait_for(held, 5)).success and (await asyncio.wait_for(behind, 5)).success
    finally:
        await server.close()
        await factory.close()
