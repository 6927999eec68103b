"""A joint config ``[C_old, C_new]`` commits only with a quorum of both configs: with the
new voters cut off (or the old ones), the joint entry is appended and replicated to whoever
is reachable but stays uncommitted and ``change_membership`` does not return; once the
network heals it commits, the leader appends ``C_new`` and the change completes."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import Membership
from openraft_py.testing.cluster import Cluster

from ..checks import entry_at, fast_config
from ._util import RpcCounter, add_learners, settled_leader, wait_uniform

pytestmark = pytest.mark.timeout(20)

# Long election timeouts (check-quorum steps a leader down after election_timeout_max without
# a quorum of every config) and frequent heartbeats: the stalled change is observed for
# OBSERVED_ROUNDS heartbeat rounds, far less than an election timeout. Pre-vote keeps the
# cut-off nodes from raising their terms meanwhile.
CFG = fast_config(election_timeout_min=400, election_timeout_max=800, heartbeat_interval=20, enable_pre_vote=True)
OBSERVED_ROUNDS = 5


@pytest.mark.parametrize("cut", ["new", "old"], ids=["new-voters-cut", "old-voters-cut"])
async def test_joint_config_needs_a_quorum_of_both_configs(cut: str) -> None:
    async with Cluster(CFG, seed=83 + (cut == "old")) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4, 5})
        old_others = sorted({1, 2, 3} - {leader})
        target = {leader, 4, 5}
        # Cut the two nodes that only one of the configs has (each from every node, so
        # they cannot elect each other either); watch the heartbeats to a reachable one.
        cut_off = [4, 5] if cut == "new" else old_others
        watch = old_others[0] if cut == "new" else 4
        for nid in cut_off:
            c.router.isolate(nid)
        counter = RpcCounter(c)
        raft = c.nodes[leader]
        joint_index = raft.metrics.last_log_index + 1

        change = asyncio.ensure_future(raft.change_membership(target))
        try:
            await raft.wait(2.0).log_index_at_least(joint_index, "joint entry appended")
            e = entry_at(c.disks[leader], joint_index)
            assert e is not None and type(e.payload) is Membership
            assert e.payload.configs == (frozenset({1, 2, 3}), frozenset(target))
            # The reachable side holds it, yet it does not commit.
            await c.nodes[watch].wait(2.0).log_index_at_least(joint_index, f"n{watch} holds the joint entry")
            await counter.rounds(leader, watch, OBSERVED_ROUNDS)
            m = raft.metrics
            assert raft.is_leader(), m.describe()
            assert m.committed is not None and m.committed.index < joint_index, (
                f"joint entry committed without a quorum of C_{cut}: {m.describe()}"
            )
            assert not change.done(), "change_membership returned while the joint entry is uncommitted"
            assert c.nodes[watch].metrics.committed.index < joint_index

            c.router.heal()
            resp = await asyncio.wait_for(change, timeout=3.0)
        finally:
            if not change.done():
                change.cancel()
        assert resp.log_id.index > joint_index
        assert resp.membership is not None and resp.membership.configs == (frozenset(target),)
        for nid in sorted(target):
            await wait_uniform(c, nid, target)
        await c.wait_applied(resp.log_id.index, timeout=3.0, ids=target)
