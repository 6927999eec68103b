"""A snapshot chunk whose snapshot id is longer than the wire carries (``wire.MAX_ADDR_LEN``,
1024 characters; the state machine names its snapshots) is refused by the TCP client with
``NetworkError`` saying so, nothing sent: it was sent, the target's server closed the
connection as malformed, and the sender got "Unreachable: connection closed", as did every
other call in flight on the connection (the leader's heartbeats to that follower among
them), at each resend of the chunk. So is a snapshot id that is not a ``str``.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.errors import NetworkError
from openraft_py.network import wire
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.testing import SuiteServer
from openraft_py.testing.suite.network import OPTION, V, sample_request
from openraft_py.types import (
    EMPTY_STORED_MEMBERSHIP,
    BasicNode,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    SnapshotMeta,
    VoteResponse,
)

pytestmark = pytest.mark.timeout(60)


def _chunk(snapshot_id: str) -> InstallSnapshotRequest:
    return InstallSnapshotRequest(V, SnapshotMeta(LogId(5, 100), EMPTY_STORED_MEMBERSHIP, snapshot_id), 0, b"data", True)


async def test_a_snapshot_id_longer_than_the_wire_carries_is_refused_before_sending() -> None:
    served = SuiteServer()
    server = await TcpServer.start(served, "127.0.0.1", 0, "c")
    factory = TcpNetworkFactory(1, "c")
    client = factory.new_client(2, BasicNode(server.address))
    gate = served.gate()

    async def held(req: Any) -> VoteResponse:
        await gate.wait()
        return VoteResponse(req.vote, True, None)

    try:
        served.answers["vote"] = held
        in_flight = asyncio.ensure_future(client.vote(sample_request("vote"), OPTION))
        await served.wait_received(1)
        with pytest.raises(NetworkError, match=r"a snapshot id of 1025 characters: the TCP transport carries at most 1024"):
            await asyncio.wait_for(client.install_snapshot(_chunk("é" * (wire.MAX_ADDR_LEN + 1)), OPTION), 5)
        with pytest.raises(NetworkError, match=r"its snapshot id is a int 7, not a str"):
            await asyncio.wait_for(client.install_snapshot(_chunk(7), OPTION), 5)  # type: ignore[arg-type]
        assert served.of("install_snapshot") == []
        # The longest id the wire carries goes through; the call in flight is not disturbed.
        resp = await asyncio.wait_for(client.install_snapshot(_chunk("é" * wire.MAX_ADDR_LEN), OPTION), 5)
        assert resp == InstallSnapshotResponse(V)
        gate.set()
        assert (await asyncio.wait_for(in_flight, 5)).vote_granted
        assert server.dropped == 0
    finally:
        gate.set()
        await factory.close()
        await server.close()
