"""A leader keeps its leadership, and its followers do not campaign, while every
AppendEntries carrying entries times out (a multi-megabyte entry over TCP answered after the
replication deadline).

After a request times out, the target is probed: one request at a time, the resent entries,
which time out again. The heartbeat rounds then found the target's window full and sent
nothing, so the followers heard nothing and the leader's check-quorum no acknowledgement for
longer than ``election_timeout_max``: under the default timeouts the followers held an
election and the leader stepped down. A heartbeat now goes out beside a full window
(``ReplicationHandler.send``, the engine's ``Heartbeat`` command): it names only what the
target acknowledged, and its answer counts as an acknowledgement of this leader. It goes on
the heartbeat lane (the router's RPC ``"heartbeat"``, the TCP client's second connection),
not behind the requests carrying entries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import Config, ServerState, SnapshotPolicy
from openraft_py.errors import Timeout
from openraft_py.testing.cluster import Cluster
from openraft_py.types import AppendEntriesRequest, NodeId

pytestmark = pytest.mark.timeout(30)

# The default replication deadline (max(4 * heartbeat_interval, election_timeout_min), ms):
# a request carrying entries fails after this long, as a TCP call whose answer came too late.
DEADLINE = 0.2
# How long every request carrying entries fails so: several deadlines, and much longer than
# the default election_timeout_max (300 ms).
SLOW_FOR = 1.2


async def test_heartbeats_go_out_while_requests_carrying_entries_time_out() -> None:
    config = Config(snapshot_policy=SnapshotPolicy.never())  # the default timeouts
    c = Cluster(config, seed=7)
    try:
        await c.start({1, 2, 3})
        leader_id = await c.wait_for_leader()
        leader = c.nodes[leader_id]
        await leader.client_write(b"before")
        term = leader.metrics.vote.term
        loop = asyncio.get_running_loop()
        slow_until = loop.time() + SLOW_FOR
        timed_out: list[NodeId] = []
        heartbeats: list[NodeId] = []
        votes: list[tuple[NodeId, Any]] = []

        async def hook(rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
            if rpc == "vote":
                votes.append((source, req))
            elif rpc == "heartbeat" and source == leader_id and loop.time() < slow_until:
                assert isinstance(req, AppendEntriesRequest) and not req.entries
                heartbeats.append(target)
            elif rpc == "append_entries" and source == leader_id and loop.time() < slow_until:
                assert isinstance(req, AppendEntriesRequest)
                if not req.entries:
                    return
                await asyncio.sleep(DEADLINE)
                timed_out.append(target)
                raise Timeout(f"node {target}: no append_entries answer within {DEADLINE}s")

        c.router.add_hook(hook)
        stepped_down: list[str] = []

        async def watch() -> None:
            while True:
                for m in (n.metrics for n in c.nodes.values()):
                    if m.vote.term != term or (m.id == leader_id and m.state is not ServerState.LEADER):
                        stepped_down.append(m.describe())
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            r = await asyncio.wait_for(leader.client_write(b"slow"), 10.0)
        finally:
            watcher.cancel()
        assert r.log_id.term == term
        assert loop.time() >= slow_until, "the write committed while its requests were failing"
        followers = sorted(nid for nid in c.nodes if nid != leader_id)
        # Each follower's request with the entry was resent after failing, more than once.
        assert all(timed_out.count(nid) >= 3 for nid in followers), timed_out
        assert all(nid in heartbeats for nid in followers), heartbeats
        assert votes == [], f"a node campaigned: {votes[0]}"
        assert stepped_down == [], f"a term changed or the leader stepped down: {stepped_down[0]}"
        assert leader.metrics.state is ServerState.LEADER and leader.metrics.vote.term == term
        await c.wait_applied(r.log_id.index)
    finally:
        await c.shutdown()
