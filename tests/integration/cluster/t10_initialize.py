"""Initialize and first election on 1, 3 and 5 nodes; API misuse around initialize."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import ForwardToLeader, NotAllowed, NotInMembers, ServerState
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("n", [1, 3, 5], ids=lambda n: f"{n}nodes")
async def test_initialize_elects_a_leader_within_2s(cluster: Cluster, n: int) -> None:
    ids = set(range(1, n + 1))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await cluster.start(ids)
    leader = await cluster.wait_for_leader(timeout=2.0)
    assert loop.time() - t0 < 2.0
    assert leader in ids
    for nid in ids:
        await cluster.nodes[nid].wait(2.0).current_leader(leader, f"n{nid} knows leader n{leader}")
        await cluster.nodes[nid].wait(2.0).voter_ids(ids, f"n{nid} has the initial membership")
    lm = cluster.nodes[leader].metrics
    assert lm.state == ServerState.LEADER
    # The new leader's blank entry commits and is applied everywhere.
    await cluster.wait_applied(lm.last_log_index, timeout=2.0)
    followers = [cluster.nodes[i].metrics for i in ids - {leader}]
    assert all(m.state == ServerState.FOLLOWER for m in followers)
    assert all(m.current_term == lm.current_term for m in followers)


async def test_write_before_initialize_forwards_to_no_leader(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3}, initialize=False)
    with pytest.raises(ForwardToLeader) as ei:
        await cluster.nodes[1].client_write(b"early")
    assert ei.value.leader_id is None and ei.value.leader_node is None
    with pytest.raises(ForwardToLeader):
        await cluster.nodes[2].client_write_many([b"a", b"b"])
    # Nothing was written: every log is still empty.
    assert all(not d.entries for d in cluster.disks.values())


async def test_initialize_twice_is_not_allowed(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    with pytest.raises(NotAllowed) as ei:
        await cluster.nodes[1].initialize({1, 2, 3})
    assert ei.value.last_log_id is not None
    # A member that received the log is not pristine either.
    other = next(i for i in (2, 3) if i != leader) if leader != 1 else 2
    await cluster.nodes[other].wait(2.0).log_index_at_least(0)
    with pytest.raises(NotAllowed):
        await cluster.nodes[other].initialize({1, 2, 3})
    # The cluster is unharmed.
    resp = await cluster.nodes[leader].client_write(b"after")
    await cluster.wait_applied(resp.log_id.index)


async def test_initialize_without_self_is_not_in_members(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3}, initialize=False)
    with pytest.raises(NotInMembers) as ei:
        await cluster.nodes[1].initialize({2, 3})
    assert ei.value.node_id == 1
    # Nothing was written, so a correct initialize still works.
    assert not cluster.disks[1].entries and cluster.disks[1].vote is None
    await cluster.nodes[1].initialize({1, 2, 3})
    await cluster.wait_for_leader(timeout=2.0)


async def test_initialize_on_every_node_is_fine() -> None:
    async with Cluster(fast_config(), seed=3) as c:
        await c.start({1, 2, 3}, initialize=False)
        await asyncio.gather(*(c.nodes[i].initialize({1, 2, 3}) for i in (1, 2, 3)))
        leader = await c.wait_for_leader(timeout=2.0)
        resp = await c.nodes[leader].client_write(b"x")
        await c.wait_applied(resp.log_id.index)
