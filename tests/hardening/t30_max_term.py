"""Terms at the top of the accepted range (``MAX_TERM``, ``openraft_py.validation``): the
compiled and the pure build behave the same. A node campaigns up to ``MAX_TERM`` and a leader
of ``MAX_TERM`` commits; a node whose term is ``MAX_TERM`` never campaigns (``term + 1``
would leave the range), so a cluster pushed there by a faulty peer keeps its leader but
elects no new one (``docs/design/bad-input.md``)."""

from __future__ import annotations

import asyncio

import pytest
from engine.helpers import make_engine

from openraft_py import MAX_TERM, AppendEntriesRequest, ServerState, Vote, WaitTimeout
from openraft_py.engine.command import SendVote
from openraft_py.testing.cluster import Cluster

from .bad_input_helpers import BOUND, assert_healthy, last_log_id, leader_and_follower, three

__all__ = ["three"]

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("pre_vote", [False, True], ids=["elect", "pre_vote"])
def test_engine_at_max_term_does_not_campaign(pre_vote: bool) -> None:
    eng = make_engine(id=1, vote=(MAX_TERM, 2, True))
    eng.take_commands()
    if pre_vote:
        eng.pre_vote(1000.0)
    else:
        eng.elect(1000.0)
    assert eng.state.vote == Vote.new(MAX_TERM, 2, True), "the vote changed"
    assert eng.candidate is None and eng.pre_candidate is None
    assert not [c for c in eng.take_commands() if isinstance(c, SendVote)]
    assert eng.election_deadline > 1000.0, "the election timer was not restarted"


def test_engine_one_below_max_term_campaigns_to_max_term() -> None:
    eng = make_engine(id=1, vote=(MAX_TERM - 1, 2, True))
    eng.elect(1000.0)
    assert eng.state.vote == Vote.new(MAX_TERM, 1)
    assert eng.candidate is not None


async def push_cluster_to(c: Cluster, term: int) -> None:
    """Make every follower adopt a committed vote of ``term`` naming the current leader (a
    well-formed heartbeat a faulty peer could send); the leader learns it from their
    rejections and steps down."""
    leader, _ = leader_and_follower(c)
    forged = Vote.new(term, leader.id, True)
    for nid, r in c.nodes.items():
        if nid != leader.id:
            resp = await asyncio.wait_for(r.append_entries(AppendEntriesRequest(forged, last_log_id(r), [], None)), BOUND)
            assert resp.success


async def wait_leader_at(c: Cluster, term: int) -> int:
    """Wait until every node follows (or is) an established leader of ``term``; its id."""
    for nid, r in c.nodes.items():
        await r.wait(5.0).metrics(
            lambda m: m.current_term == term and m.vote.committed and m.current_leader is not None,
            f"n{nid} follows a leader of term {term}",
        )
    return await c.wait_for_leader(timeout=5.0)


async def test_a_cluster_elects_a_leader_at_max_term_and_commits(three: Cluster) -> None:
    await push_cluster_to(three, MAX_TERM - 1)
    leader = await wait_leader_at(three, MAX_TERM)
    # Someone campaigned from MAX_TERM - 1 (the forged leader id names a node that is not
    # leading at that term, so nobody follows it for long).
    assert three.nodes[leader].metrics.current_term == MAX_TERM
    await assert_healthy(three)
    for i in range(10):
        await three.nodes[leader].client_write(f"m{i}".encode())
    await assert_healthy(three, b"after-max")
    for r in three.nodes.values():
        assert r.metrics.current_term == MAX_TERM


async def test_a_node_at_max_term_does_not_campaign_and_the_leader_keeps_leading(three: Cluster) -> None:
    await push_cluster_to(three, MAX_TERM - 1)
    leader = await wait_leader_at(three, MAX_TERM)
    assert three.nodes[leader].metrics.current_term == MAX_TERM
    follower = next(r for nid, r in three.nodes.items() if nid != leader)
    await asyncio.wait_for(follower.trigger.elect(), BOUND)
    with pytest.raises(WaitTimeout):
        await follower.wait(0.3).state(ServerState.CANDIDATE, "a node at MAX_TERM campaigned")
    assert follower.metrics.current_term == MAX_TERM
    assert three.leader() == leader
    await assert_healthy(three)


async def test_without_a_leader_at_max_term_nodes_stay_up_without_campaigning(three: Cluster) -> None:
    """The documented limit: once every node's term is ``MAX_TERM`` and the leader is gone,
    nobody campaigns. Nodes stay up (no overflow in either build) and refuse nothing else."""
    await push_cluster_to(three, MAX_TERM - 1)
    leader = await wait_leader_at(three, MAX_TERM)
    await three.crash(leader)
    for r in three.nodes.values():
        with pytest.raises(WaitTimeout):
            await r.wait(0.4).state(ServerState.CANDIDATE, "a node at MAX_TERM campaigned")
        assert r.metrics.running and r.metrics.current_term == MAX_TERM
