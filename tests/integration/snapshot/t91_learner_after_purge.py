"""A learner added after the log was purged cannot get the purged entries by append: it
receives the leader's snapshot, catches up to the leader's state, then gets later writes by
AppendEntries."""

from __future__ import annotations

import pytest

from openraft_py import BasicNode
from openraft_py.testing.cluster import Cluster

from .helpers import same_state, snap_config, write

pytestmark = pytest.mark.timeout(15)


async def test_learner_added_after_purge_gets_a_snapshot_then_appends() -> None:
    c = Cluster(snap_config(), seed=1)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 50)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")
        assert c.disks[leader].offset == last + 1  # nothing left to send by append

        await c.add_node(4)
        await raft.add_learner(4, BasicNode("n4"), blocking=True)
        learner = c.nodes[4]
        m = await learner.wait(5).snapshot(last, "learner installed the snapshot")
        assert c.router.rpc_count("install_snapshot", source=leader, target=4) > 0
        applied = raft.metrics.last_applied
        assert applied is not None
        await learner.wait(5).applied_index_at_least(applied.index, "learner caught up")
        same_state(c, leader, 4)
        assert m.purged is not None and m.purged.index >= last  # the log starts after the snapshot

        snaps = c.router.rpc_count("install_snapshot")
        more = await write(c, leader, 50, 60, prefix="late")
        await learner.wait(5).applied_index_at_least(more, "learner got the later writes")
        assert c.router.rpc_count("install_snapshot") == snaps, "later writes went by snapshot, not append"
        same_state(c, leader, 4)
        assert c.state_machines[4].data["late59"] == "59"
    finally:
        await c.shutdown()
