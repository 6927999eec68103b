"""A node whose clock goes back (a ``clock=`` that is not monotonic: a wall clock stepped back
by NTP or an operator) stops with ``Fatal`` saying so. Every interval of the node is measured
on that clock: with its time gone back 5 s, a leader cut off from the others kept its lease
(and its leadership) for 5 s more in its own time, while the others elected a leader and
committed a write, and it went on serving lease reads of the old value (docs/design/reads.md,
"The clock assumption")."""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import Fatal, ReadPolicy, ServerState
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.testing.cluster import Cluster

from .stepped_clock import SteppedClock

pytestmark = pytest.mark.timeout(30)

STEP_BACK_S = 5.0


async def test_a_leader_whose_clock_goes_back_stops_and_serves_no_stale_lease_read() -> None:
    clocks: dict[int, SteppedClock] = {}

    def clock(node_id: int) -> SteppedClock:
        clocks[node_id] = SteppedClock()
        return clocks[node_id]

    cfg = fast_config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=30)
    async with Cluster(cfg, seed=31, clock=clock) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=5)
        raft = c.nodes[leader]
        await raft.client_write(encode_kv(KvSet("k", "old")))
        await raft.ensure_linearizable(ReadPolicy.READ_INDEX)  # a fresh lease
        clocks[leader].offset = -STEP_BACK_S
        c.router.isolate(leader)
        new = await c.wait_for_leader(timeout=5, among=set(c.nodes) - {leader})
        await c.nodes[new].client_write(encode_kv(KvSet("k", "new")))

        with pytest.raises(Fatal, match=r"its clock went back 4\d{3}\.\d{3} ms .* must be monotonic"):
            await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.LEASE_READ), 2)
        await raft.wait(2).metrics(lambda m: m.state == ServerState.SHUTDOWN, "the node stopped")
        assert "clock went back" in str(raft.metrics.error)


async def test_a_clock_that_only_moves_forward_is_taken() -> None:
    """A forward step (a stall of the loop, a suspended host's boot clock) is ordinary: the
    node runs on, and its lease has ended."""
    clocks: dict[int, SteppedClock] = {}

    def clock(node_id: int) -> SteppedClock:
        clocks[node_id] = SteppedClock()
        return clocks[node_id]

    cfg = fast_config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=30)
    async with Cluster(cfg, seed=32, clock=clock) as c:
        await c.start({1, 2, 3})
        await c.wait_for_leader(timeout=5)
        for nid in c.nodes:
            clocks[nid].offset = 1.0
        resp = await c.nodes[await c.wait_for_leader(timeout=5)].client_write(b"x")
        await c.wait_applied(resp.log_id.index, timeout=5)
        assert all(r.metrics.running for r in c.nodes.values())
