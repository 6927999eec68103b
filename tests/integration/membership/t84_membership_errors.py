"""``change_membership`` refusals: ``InProgress`` while a change is uncommitted (also for
``add_learner``), ``EmptyMembership``, ``LearnerNotFound``, ``LearnerIsLagging`` (most new
voters have not caught up), ``ForwardToLeader`` on a follower; and a request that changes nothing answers with the current membership. A refused
request changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import (
    BasicNode,
    ChangeMembershipError,
    EmptyMembership,
    ForwardToLeader,
    InProgress,
    LearnerIsLagging,
    LearnerNotFound,
)
from openraft_py.testing.cluster import Cluster

from ._util import RpcCounter, add_learners, settled_leader, steady_config, wait_uniform

pytestmark = pytest.mark.timeout(20)


async def test_second_change_while_the_first_is_uncommitted_is_in_progress() -> None:
    # Long election timeouts: the leader keeps leading while the joint entry cannot commit.
    cfg = steady_config(election_timeout_min=400, election_timeout_max=800, heartbeat_interval=20)
    async with Cluster(cfg, seed=84) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4, 5})
        raft = c.nodes[leader]
        target = {leader, 4, 5}
        c.router.isolate(4)
        c.router.isolate(5)
        joint_index = raft.metrics.last_log_index + 1
        first = asyncio.ensure_future(raft.change_membership(target))
        try:
            await raft.wait(2.0).log_index_at_least(joint_index, "joint entry appended")
            last = raft.metrics.last_log_index
            with pytest.raises(InProgress) as ei:
                await raft.change_membership({1, 2, 3})
            assert ei.value.membership_log_id is not None and ei.value.membership_log_id.index == joint_index
            assert isinstance(ei.value, ChangeMembershipError)
            await c.add_node(6)
            with pytest.raises(InProgress):
                await raft.add_learner(6, BasicNode(), blocking=False)
            assert raft.metrics.last_log_index == last, "a refused change appended an entry"
            assert not first.done()

            c.router.heal()
            resp = await asyncio.wait_for(first, timeout=3.0)
        finally:
            if not first.done():
                first.cancel()
        assert resp.membership is not None and resp.membership.configs == (frozenset(target),)
        # Once committed, the next change is accepted.
        await wait_uniform(c, leader, target)
        lead = c.leader()
        assert lead is not None
        resp2 = await c.nodes[lead].add_learner(6, BasicNode(), blocking=True)
        assert 6 in resp2.membership.learner_ids()


async def test_empty_membership_is_refused(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    last = raft.metrics.last_log_index
    with pytest.raises(EmptyMembership):
        await raft.change_membership(set())
    assert raft.metrics.last_log_index == last
    assert raft.metrics.membership_config.membership.voter_ids() == {1, 2, 3}


async def test_new_voter_must_be_a_learner_first(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await cluster.add_node(4)  # running, but not added as a learner
    last = raft.metrics.last_log_index
    with pytest.raises(LearnerNotFound) as ei:
        await raft.change_membership({1, 2, 3, 4})
    assert ei.value.node_id == 4
    assert raft.metrics.last_log_index == last
    # After add_learner the same change goes through.
    await add_learners(cluster, leader, {4})
    resp = await raft.change_membership({1, 2, 3, 4})
    assert resp.membership is not None and resp.membership.voter_ids() == {1, 2, 3, 4}


async def test_change_membership_on_a_follower_forwards_to_the_leader(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    follower = next(n for n in (1, 2, 3) if n != leader)
    with pytest.raises(ForwardToLeader) as ei:
        await cluster.nodes[follower].change_membership({leader})
    assert ei.value.leader_id == leader
    assert cluster.nodes[leader].metrics.membership_config.membership.voter_ids() == {1, 2, 3}


async def test_a_change_that_changes_nothing_returns_the_current_membership(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await add_learners(cluster, leader, {4})
    counter = RpcCounter(cluster)
    cur = raft.metrics.membership_config
    last = raft.metrics.last_log_index
    resp = await raft.change_membership({3, 2, 1})
    assert resp.log_id == cur.log_id
    assert resp.membership == cur.membership
    assert raft.metrics.last_log_index == last, "a no-op change appended an entry"
    # The learner stays a learner, and the followers still see the same membership.
    follower = next(n for n in (1, 2, 3) if n != leader)
    await counter.rounds(leader, follower, 2)
    assert cluster.nodes[follower].metrics.membership_config == cur


async def test_promoting_learners_that_never_caught_up_is_refused(cluster: Cluster) -> None:
    """Learners 4 and 5, cut off since before they were added, hold nothing: voters {leader,
    4, 5} would have no majority able to commit (and the leader, hearing from no quorum of
    them, would step down: the cluster would take no writes until they came). Refused before
    anything is logged; the cluster goes on; once they have caught up the same change passes."""
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    for nid in (4, 5):
        await cluster.add_node(nid)
        cluster.router.isolate(nid)
        await raft.add_learner(nid, BasicNode(), blocking=False)
    last = raft.metrics.last_log_index
    target = {leader, 4, 5}
    with pytest.raises(LearnerIsLagging) as ei:
        await raft.change_membership(target)
    assert ei.value.node_ids == [4, 5]
    assert isinstance(ei.value, ChangeMembershipError)
    assert raft.metrics.last_log_index == last, "a refused change appended an entry"
    await raft.client_write(b"still taking writes")
    assert cluster.leader() == leader

    cluster.router.heal()
    for nid in (4, 5):
        await raft.add_learner(nid, BasicNode(), blocking=True)  # already a learner: waits until caught up
    resp = await raft.change_membership(target)
    assert resp.membership is not None and resp.membership.configs == (frozenset(target),)


async def test_a_change_counting_on_a_learner_that_went_down_is_refused(cluster: Cluster) -> None:
    """Learner 4 caught up, then its node went down. The leader still held 4's matched index,
    so {leader, 4} counted as caught up and was appended: it could not commit, the leader,
    hearing from no quorum of {leader, 4}, stepped down, the change failed with a bare
    ``ForwardToLeader`` naming no leader, and no node could be elected (the joint config
    needs 4) until 4 came back: three running voters took no writes. Now a node silent for
    longer than ``election_timeout_max`` is lagging: refused before anything is logged; once
    4 is back and answering, the same change passes."""
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    await add_learners(cluster, leader, {4})
    raft = cluster.nodes[leader]
    follower = next(n for n in (1, 2, 3) if n != leader)
    counter = RpcCounter(cluster)
    await cluster.crash(4)
    cfg = cluster.config
    # Heartbeat rounds as a clock: more than election_timeout_max passes without 4.
    await counter.rounds(leader, follower, cfg.election_timeout_max // cfg.heartbeat_interval + 2)
    last = raft.metrics.last_log_index
    with pytest.raises(LearnerIsLagging) as ei:
        await raft.change_membership({leader, 4})
    assert ei.value.node_ids == [4]
    assert raft.metrics.last_log_index == last, "a refused change appended an entry"
    await raft.client_write(b"still taking writes")
    assert cluster.leader() == leader

    await cluster.add_node(4)  # back, over its disk
    resp = await raft.client_write(b"4 answers again")
    await cluster.nodes[4].wait(3.0).applied_index_at_least(resp.log_id.index, "n4 caught up")
    # (n4 holding the write is not the leader knowing it: its answer may still be on the way.)
    index = resp.log_id.index
    await raft.wait(3.0).metrics(lambda m: (m.replication or {}).get(4, -1) >= index, "the leader heard n4 caught up")
    resp = await raft.change_membership({leader, 4})
    assert resp.membership is not None and resp.membership.configs == (frozenset({leader, 4}),)


async def test_transfer_leader_while_a_change_is_in_progress_is_refused() -> None:
    """A leader transfer asked while the joint entry of ``change_membership(..., retain=False)``
    had not committed was carried out: the change's caller got ``ForwardToLeader`` naming no
    leader, and the new leader, which cannot know ``retain``, finished the change keeping the
    voter asked to leave as a learner (a retried change then returned at once, the node still
    in). Now refused with ``InProgress``; the change completes, and the voter leaves."""
    # Long election timeouts: the leader keeps leading while the joint entry cannot commit.
    cfg = steady_config(election_timeout_min=400, election_timeout_max=800, heartbeat_interval=20)
    async with Cluster(cfg, seed=85) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4})
        raft = c.nodes[leader]
        gone, keep = sorted({1, 2, 3} - {leader})
        target = {leader, keep, 4}
        c.router.isolate(keep)  # no majority of the new voters: the joint entry waits
        c.router.isolate(4)
        joint_index = raft.metrics.last_log_index + 1
        change = asyncio.ensure_future(raft.change_membership(target))
        try:
            await raft.wait(2.0).log_index_at_least(joint_index, "joint entry appended")
            with pytest.raises(InProgress) as ei:
                await raft.trigger.transfer_leader(gone)
            assert ei.value.membership_log_id is not None and ei.value.membership_log_id.index == joint_index
            assert not change.done()
            c.router.heal()
            resp = await asyncio.wait_for(change, timeout=3.0)
        finally:
            if not change.done():
                change.cancel()
        assert resp.membership is not None and resp.membership.configs == (frozenset(target),)
        assert gone not in resp.membership.nodes, "retain=False: the removed voter left the cluster"
        await raft.trigger.transfer_leader(keep)  # once the change returned, a transfer is taken
        await raft.wait(3.0).current_leader(keep, f"n{keep} leads")
