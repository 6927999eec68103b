"""Admin calls that race each other on one leader: a blocking ``add_learner`` whose learner a
later ``change_membership`` removes. The waiting call ends with a clear error instead of
waiting for good, and the leader keeps serving."""

from __future__ import annotations

import asyncio

import pytest
from integration.membership._util import settled_leader, steady_config

from openraft_py import BasicNode, LearnerNotFound
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 3.0


async def test_a_blocking_add_learner_ends_when_a_later_change_removes_the_learner() -> None:
    """Node 4 never starts, so ``add_learner(4, blocking=True)`` waits for it to catch up.
    Meanwhile the operator gives up on it: 4 becomes a voter and is removed again. The wait
    could never end (4 is no longer replicated to) and went on for as long as the leader
    led; it now raises ``LearnerNotFound`` naming 4."""
    async with Cluster(steady_config(), seed=13) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        raft = c.nodes[leader]
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode("four")))
        await raft.wait(BOUND).metrics(
            lambda m: 4 in m.membership_config.membership.nodes
            and m.last_applied is not None
            and m.last_applied.index >= m.membership_config.log_id.index,  # type: ignore[union-attr]
            "4 is a learner",
        )
        assert not adding.done()
        await asyncio.wait_for(raft.change_membership({1, 2, 3, 4}, allow_lagging=True), BOUND)
        assert not adding.done(), "4 is a voter now, still a target: the wait goes on"
        await asyncio.wait_for(raft.change_membership({1, 2, 3}), BOUND)
        assert 4 not in raft.metrics.membership_config.membership.nodes
        with pytest.raises(LearnerNotFound, match="node 4 was removed from the membership") as info:
            await asyncio.wait_for(adding, BOUND)
        assert info.value.node_id == 4
        assert raft.is_leader()
        resp = await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        await c.wait_applied(resp.log_id.index)


async def test_a_blocking_add_learner_of_a_running_node_still_returns() -> None:
    """The usual case is unchanged: the learner catches up and the call returns."""
    async with Cluster(steady_config(), seed=14) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await c.add_node(4)
        resp = await asyncio.wait_for(c.nodes[leader].add_learner(4, BasicNode("four")), BOUND)
        await c.nodes[4].wait(BOUND).applied_index_at_least(resp.log_id.index)
