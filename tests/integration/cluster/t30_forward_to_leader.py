"""Leader-only calls on a follower raise ``ForwardToLeader`` naming the leader; shutdown
makes later calls raise ``Stopped``."""

from __future__ import annotations

import pytest

from openraft_py import BasicNode, ForwardToLeader, ReadPolicy, Stopped
from openraft_py.errors import Fatal
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(10)


async def _cluster_with_addrs(c: Cluster) -> int:
    await c.start({1, 2, 3}, initialize=False)
    await c.nodes[1].initialize({i: BasicNode(f"127.0.0.1:2200{i}") for i in (1, 2, 3)})
    leader = await c.wait_for_leader(timeout=2.0)
    await c.wait_applied(1)
    return leader


@pytest.mark.parametrize("policy", [ReadPolicy.READ_INDEX, ReadPolicy.LEASE_READ], ids=str)
async def test_follower_forwards_to_leader(cluster: Cluster, policy: ReadPolicy) -> None:
    leader = await _cluster_with_addrs(cluster)
    for nid in set(cluster.nodes) - {leader}:
        f = cluster.nodes[nid]
        with pytest.raises(ForwardToLeader) as ei:
            await f.client_write(b"x")
        assert ei.value.leader_id == leader
        assert ei.value.leader_node == BasicNode(f"127.0.0.1:2200{leader}")
        with pytest.raises(ForwardToLeader) as ei:
            await f.client_write_many([b"a", b"b"])
        assert ei.value.leader_id == leader
        with pytest.raises(ForwardToLeader) as ei:
            await f.ensure_linearizable(policy)
        assert ei.value.leader_id == leader
        assert ei.value.leader_node == BasicNode(f"127.0.0.1:2200{leader}")
    # Nothing was written by the refused calls.
    assert all(not d.applied_log for d in cluster.disks.values())


async def test_shutdown_makes_later_calls_raise_stopped(cluster: Cluster) -> None:
    await cluster.start({1})
    await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[1]
    await raft.client_write(b"before")
    await raft.shutdown()
    await raft.shutdown()  # idempotent
    with pytest.raises(Stopped):
        await raft.client_write(b"after")
    with pytest.raises(Stopped):
        await raft.client_write_many([b"after"])
    with pytest.raises(Stopped):
        await raft.ensure_linearizable()
    with pytest.raises(Stopped):
        await raft.initialize({1})
    with pytest.raises(Stopped):
        await raft.trigger.elect()
    assert not raft.metrics.running
    with pytest.raises(Fatal):
        await raft.wait(1.0).applied_index_at_least(100)
    cluster.nodes.pop(1)


async def test_async_with_shuts_down(cluster: Cluster) -> None:
    await cluster.start({1})
    raft = cluster.nodes.pop(1)
    async with raft:
        await raft.wait(2.0).applied_index_at_least(1)
    with pytest.raises(Stopped):
        await raft.client_write(b"after")


async def test_async_with_refuses_a_node_that_stopped(cluster: Cluster) -> None:
    """Entering ``async with`` on a node that was shut down raises its ``Stopped``, as every
    other call on it does, and runs nothing of the block."""
    await cluster.start({1})
    raft = cluster.nodes.pop(1)
    await raft.shutdown()
    ran = False
    with pytest.raises(Stopped):
        async with raft:
            ran = True
    assert not ran

