"""``add_learner``: a blocking add returns once the learner holds the membership entry; a
non-blocking one once the entry commits; a learner receives later writes but never votes,
campaigns or leads; re-adding is a no-op; re-adding with another address moves the member
there (every node's network client to it is made anew); a follower refuses with
``ForwardToLeader``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import BasicNode, ForwardToLeader, Membership, ServerState, WaitTimeout
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, entry_at, fast_config, record_new_clients
from ._util import RpcCounter, add_learners, assert_acked_applied, settled_leader

pytestmark = pytest.mark.timeout(20)


LEARNER_DELAY = 0.03
"""Seconds every AppendEntries to node 4 is held: the membership entry commits on the voters
long before the learner can hold it."""


def slow_link_to(c: Cluster, nid: int) -> None:
    """Hold every AppendEntries to ``nid`` for ``LEARNER_DELAY`` (fault injection)."""

    async def hook(rpc: str, source: int, target: int, req: Any) -> None:
        if rpc == "append_entries" and target == nid:
            await asyncio.sleep(LEARNER_DELAY)

    c.router.add_hook(hook)


async def test_blocking_add_returns_once_the_learner_holds_the_entry(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    for i in range(50):
        await raft.client_write(f"pre-{i}".encode())
    await cluster.add_node(4)
    slow_link_to(cluster, 4)
    resp = await raft.add_learner(4, BasicNode(), blocking=True)

    # Right at return: the learner's log holds the membership entry that adds it.
    m4 = cluster.nodes[4].metrics
    assert m4.last_log_index >= resp.log_id.index, m4.describe()
    e = entry_at(cluster.disks[4], resp.log_id.index)
    assert e is not None and e.log_id == resp.log_id and type(e.payload) is Membership
    assert e.payload.learner_ids() == {4} and e.payload.voter_ids() == {1, 2, 3}
    assert m4.membership_config.log_id == resp.log_id
    assert m4.state == ServerState.LEARNER
    # On the leader, the entry is committed and applied.
    assert raft.metrics.committed is not None and raft.metrics.committed.index >= resp.log_id.index
    assert cluster.disks[leader].membership.log_id == resp.log_id
    # Every earlier write is in the learner's log too (it is within the lag threshold).
    assert len(cluster.disks[4].entries) >= resp.log_id.index + 1


async def test_non_blocking_add_returns_after_commit(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await cluster.add_node(4)
    slow_link_to(cluster, 4)
    resp = await raft.add_learner(4, BasicNode(), blocking=False)
    m = raft.metrics
    assert m.committed is not None and m.committed.index >= resp.log_id.index, m.describe()
    # Applied on the leader's state machine: the stored membership is the new one.
    assert cluster.disks[leader].membership.log_id == resp.log_id
    assert cluster.disks[leader].membership.membership.learner_ids() == {4}
    assert resp.membership is not None and resp.membership.learner_ids() == {4}
    # It did not wait for the learner (whose link is slow).
    assert entry_at(cluster.disks[4], resp.log_id.index) is None, "non-blocking add waited for the learner"
    # The learner catches up on its own.
    await cluster.nodes[4].wait(3.0).applied_index_at_least(resp.log_id.index, "learner applied its membership")


async def test_learner_receives_writes_but_never_votes_or_leads(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    await add_learners(cluster, leader, {4})
    counter = RpcCounter(cluster)
    cluster.router.reset_counters()

    acked = []
    for i in range(10):
        data = f"a-{i}".encode()
        resp = await cluster.nodes[leader].client_write(data)
        acked.append((resp.log_id, data))
    await cluster.wait_applied(acked[-1][0].index, timeout=3.0)
    assert_acked_applied(cluster, acked, {1, 2, 3, 4})

    # Crash the leader: an election among the two other voters follows; the learner neither
    # campaigns nor is asked for a vote, and stays a learner following the new leader.
    await cluster.crash(leader)
    new = await cluster.wait_for_leader(timeout=3.0)
    assert new != 4 and new in {1, 2, 3}
    await cluster.nodes[4].wait(3.0).current_leader(new, "learner follows the new leader")
    # Let the learner's election timer expire at least once (12 heartbeat rounds are
    # longer than election_timeout_max).
    await counter.rounds(new, 4, 12)
    assert cluster.nodes[4].metrics.state == ServerState.LEARNER
    assert cluster.router.rpc_count("vote", source=4) == 0, "a learner sent a vote request"
    assert cluster.router.rpc_count("vote", target=4) == 0, "a candidate asked a learner for its vote"

    more = await cluster.nodes[new].client_write(b"after")
    await cluster.nodes[4].wait(3.0).applied_index_at_least(more.log_id.index)
    assert_acked_applied(cluster, acked + [(more.log_id, b"after")], {4})
    check_log_matching({n: cluster.disks[n] for n in cluster.nodes})
    check_applied_prefix({n: cluster.disks[n] for n in cluster.nodes})


async def test_learner_does_not_count_toward_quorum() -> None:
    """With 2 of 3 voters down, the learner is up to date but the survivor can neither stay
    leader nor get elected: the learner's ack and vote do not count, and nobody asks it."""
    async with Cluster(fast_config(enable_pre_vote=True), seed=81) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4})
        campaigns: list[int] = []
        three_rounds = asyncio.Event()

        def on_vote(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "vote":
                assert 4 not in (source, target), f"vote request {source} -> {target} involves the learner"
                if source == leader:
                    campaigns.append(target)
                    if len(campaigns) >= 6:  # 3 rounds to the 2 other voters
                        three_rounds.set()

        c.router.add_hook(on_vote)
        for nid in sorted({1, 2, 3} - {leader}):
            await c.crash(nid)
        # Check-quorum: the lone voter steps down, then keeps campaigning in vain.
        await c.nodes[leader].wait(3.0).metrics(lambda m: m.state != ServerState.LEADER, "leader steps down")
        before = c.nodes[leader].metrics.committed
        await asyncio.wait_for(three_rounds.wait(), timeout=5.0)
        assert c.leader() is None, c.nodes[leader].metrics.describe()
        assert c.nodes[4].metrics.state == ServerState.LEARNER
        assert c.nodes[leader].metrics.committed == before
        assert c.router.rpc_count("vote", target=4) == 0 and c.router.rpc_count("vote", source=4) == 0


async def test_trigger_elect_on_a_learner_does_not_campaign() -> None:
    """A learner told to elect itself must not become a candidate (Openraft ignores an
    external Elect on a non-voter). Reproduction: the leader is gone and the voters' leader
    stickiness has expired (their own timers are off), then ``trigger.elect()`` on the
    learner."""
    cfg = fast_config(enable_elect=False)
    async with Cluster(cfg, seed=82) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4})
        await c.crash(leader)
        # Wait out leader stickiness (election_timeout_min since the voters last heard the
        # leader): a time condition, so sleep until it holds.
        await asyncio.sleep(cfg.election_timeout_min * 1.5 / 1000.0)
        term = c.nodes[4].metrics.current_term
        await c.nodes[4].trigger.elect()
        m4 = c.nodes[4].metrics
        assert m4.state == ServerState.LEARNER and m4.current_term == term, f"learner campaigned: {m4.describe()}"
        with pytest.raises(WaitTimeout):
            await c.nodes[4].wait(0.3).state(ServerState.LEADER, "the learner leads")


async def test_re_adding_a_learner_is_a_no_op(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await cluster.add_node(4)
    first = await raft.add_learner(4, BasicNode(), blocking=True)
    last_before = raft.metrics.last_log_index
    again = await raft.add_learner(4, BasicNode(), blocking=True)
    assert again.log_id == first.log_id, "re-adding answers with the current membership entry"
    assert raft.metrics.last_log_index == last_before, "re-adding appended an entry"
    assert raft.metrics.membership_config.log_id == first.log_id
    # Re-adding a voter changes nothing either.
    voter = next(n for n in (1, 2, 3) if n != leader)
    again = await raft.add_learner(voter, BasicNode(), blocking=False)
    assert again.log_id == first.log_id and raft.metrics.last_log_index == last_before
    assert raft.metrics.membership_config.membership.voter_ids() == {1, 2, 3}


async def test_re_adding_a_member_with_another_address_moves_it_there(cluster: Cluster) -> None:
    made: list[tuple[int, int, BasicNode]] = []  # (source, target, node) of every new client
    record_new_clients(cluster, made)
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    voter = next(n for n in (1, 2, 3) if n != leader)
    moved = BasicNode("moved:1")
    assert (leader, voter, moved) not in made
    resp = await raft.add_learner(voter, moved, blocking=True)
    m = resp.membership
    assert m is not None and m.nodes[voter] == moved and m.voter_ids() == {1, 2, 3}, "still a voter"
    assert (leader, voter, moved) in made, "the leader's replication to the voter uses its new address"
    # A later leader sends to it at its new address too (made when it first needs a client).
    other = 6 - leader - voter
    await cluster.nodes[other].wait(5).applied_index_at_least(resp.log_id.index, "the change reached it")
    await raft.trigger.transfer_leader(other)
    await cluster.nodes[other].wait(5).state(ServerState.LEADER, "the other voter leads")
    assert (other, voter, moved) in made
    assert [n for s, t, n in made if (s, t) == (other, voter)][-1] == moved
    w = await cluster.nodes[other].client_write(b"after")
    await cluster.nodes[voter].wait(5).applied_index_at_least(w.log_id.index, "the moved voter applied it")


async def test_add_learner_on_a_follower_forwards_to_the_leader(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    follower = next(n for n in (1, 2, 3) if n != leader)
    await cluster.add_node(4)
    with pytest.raises(ForwardToLeader) as ei:
        await cluster.nodes[follower].add_learner(4, BasicNode(), blocking=True)
    assert ei.value.leader_id == leader
    assert cluster.nodes[leader].metrics.membership_config.membership.learner_ids() == frozenset()
