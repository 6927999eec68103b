"""A node whose log was purged restarts from its snapshot plus the rest of its log: with a
volatile state machine (``MemStateMachine(volatile=True)``: a restart keeps only the
snapshot, as a state machine living in memory would) it comes back with the same data, the
same applied and last log ids, and keeps working; so does the whole cluster restarted."""

from __future__ import annotations

import pytest

from openraft_py.storage.memory import MemStateMachine
from openraft_py.testing.cluster import Cluster

from .helpers import same_state, snap_config, write

pytestmark = pytest.mark.timeout(15)


def volatile_cluster(seed: int) -> Cluster:
    return Cluster(snap_config(max_in_snapshot_log_to_keep=3), seed=seed, state_machine=lambda d: MemStateMachine(d, volatile=True))


async def purge_everywhere(c: Cluster, leader: int, last: int) -> None:
    for nid, r in c.nodes.items():
        await r.trigger.snapshot()
        await r.wait(5).purged(last - 3, f"n{nid} purged")


async def test_node_restarts_from_snapshot_and_rest_of_log() -> None:
    c = volatile_cluster(4)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        s = await write(c, leader, 0, 40)
        await c.wait_applied(s)
        await purge_everywhere(c, leader, s)
        last = await write(c, leader, 40, 50)  # after the snapshot: only in the log
        await c.wait_applied(last)
        node = min(set(c.nodes) - {leader})
        before = c.nodes[node].metrics
        data_before = dict(c.state_machines[node].data)
        log_before = list(c.state_machines[node].applied_log)

        await c.crash(node)
        disk = c.disks[node]
        assert disk.snapshot is not None and disk.snapshot[0].last_log_id is not None
        assert disk.snapshot[0].last_log_id.index == s and disk.offset == s - 3 + 1
        r = await c.restart(node)
        # the state machine started at the snapshot; the committed log after it is re-applied
        m = await r.wait(5).applied_index_at_least(last, "restarted node re-applied its log")
        assert m.last_applied == before.last_applied and m.last_log_index == before.last_log_index
        assert m.snapshot == before.snapshot and m.purged == before.purged
        assert c.state_machines[node].data == data_before
        assert c.state_machines[node].applied_log == log_before

        more = await write(c, leader, 50, 55)
        await c.wait_applied(more)
        same_state(c, leader, node)
    finally:
        await c.shutdown()


async def test_whole_cluster_restarts_from_snapshots() -> None:
    c = volatile_cluster(5)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        s = await write(c, leader, 0, 40)
        await c.wait_applied(s)
        await purge_everywhere(c, leader, s)
        last = await write(c, leader, 40, 45)
        await c.wait_applied(last)
        want = dict(c.state_machines[leader].data)
        before = {nid: r.metrics for nid, r in c.nodes.items()}

        for nid in sorted(c.nodes):
            await c.crash(nid)
        for nid in sorted(before):
            await c.add_node(nid)
        leader = await c.wait_for_leader()
        # the new leader commits a blank entry of its term: everything before is applied
        for nid, r in c.nodes.items():
            m = await r.wait(5).applied_index_at_least(last, f"n{nid} re-applied")
            assert m.snapshot == before[nid].snapshot and m.purged == before[nid].purged
            assert c.state_machines[nid].data == want, f"n{nid}"
        more = await write(c, leader, 100, 110)
        await c.wait_applied(more)
        for nid in c.nodes:
            same_state(c, leader, nid)
        assert c.state_machines[leader].data["k100"] == "100" and c.state_machines[leader].data["k0"] == "0"
    finally:
        await c.shutdown()
