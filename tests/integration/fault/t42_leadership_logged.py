"""What a node logs of its leadership: each leader it comes to know, once, at INFO ("leads
term T", "follows node N, the leader of term T"); and its own election rounds while no leader
is known, through a ``FailureLog``: one WARNING once they have gone on for an election
timeout, not one per round, then one INFO naming the leader they ended with. None of it was
logged: a node cut off from its quorum for an hour, or a new leader after a crash, left no
line above DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from integration.checks import LogRecords, leader_after_a_write, until
from openraft_py import BasicNode
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with LogRecords("openraft_py.core", logging.INFO) as handler:
        yield handler


async def test_each_leader_is_logged_once_by_every_node(steady_cluster: Cluster, records: LogRecords) -> None:
    # One leader until the crash (``steady_cluster``): the lines counted are per term, and
    # with fast_config's 50-100 ms a stall of the shared loop elected another node first
    # (the writes to the first leader failed with ForwardToLeader).
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    first = await cluster.wait_for_leader(timeout=5.0)
    term = cluster.nodes[first].metrics.current_term
    await until(lambda: len(records.lines(logging.INFO, f"the leader of term {term}")) == 2, "both followers' lines")
    assert records.lines(logging.INFO, f"node {first}: leads term {term}") == [f"node {first}: leads term {term}"]
    for n in {1, 2, 3} - {first}:
        assert records.lines(logging.INFO, f"node {n}: follows node {first}, the leader of term {term}")
    for i in range(5):  # writes and heartbeats log nothing more
        await cluster.nodes[first].client_write(b"%d" % i)
    await cluster.crash(first)
    second = await cluster.wait_for_leader(timeout=5.0, among=set(cluster.nodes))
    term2 = cluster.nodes[second].metrics.current_term
    await until(lambda: records.lines(logging.INFO, f"the leader of term {term2}") != [], "the follower's line")
    assert len(records.lines(logging.INFO, f"node {second}: leads term {term2}")) == 1
    assert len(records.lines(logging.INFO, f"leads term {term}")) == 1


async def test_a_node_without_a_quorum_logs_its_elections_once_then_the_leader(
    cluster: Cluster, records: LogRecords
) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    alone, *gone = sorted({1, 2, 3} - {leader}) + [leader]
    for n in gone:
        await cluster.crash(n)
    core = cluster.nodes[alone]._core
    # Many election rounds (one per election timeout, 50-100 ms here), none of them won.
    await until(lambda: core._no_leader.count >= 20, "20 election rounds of the node left alone")
    warnings = records.lines(logging.WARNING, f"node {alone}: no leader")
    assert len(warnings) == 1, warnings
    assert "election round" in warnings[0] and "logged again every" in warnings[0], warnings[0]

    def leader_lines() -> list[str]:
        return [line for line in records.lines(logging.INFO, f"node {alone}: ")
                if line.startswith((f"node {alone}: leads term ", f"node {alone}: follows node "))]

    before = len(leader_lines())  # of the leaders it knew before the outage
    for n in gone:
        await cluster.restart(n)
    await cluster.wait_for_leader(timeout=5.0)
    # The first leader it comes to know after the outage ends its election rounds (that leader
    # may lose its term to another right after: the line is the first, not the last leader's).
    await until(lambda: len(leader_lines()) > before, "its leader line")
    line = leader_lines()[before]
    assert "election rounds in" in line, line
    assert all("election rounds in" not in later for later in leader_lines()[before + 1:]), leader_lines()
    assert len(records.lines(logging.WARNING, f"node {alone}: no leader")) == 1


async def test_a_leader_without_a_quorum_says_it_stepped_down_then_logs_its_elections_once(
    cluster: Cluster, records: LogRecords
) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    term = cluster.nodes[leader].metrics.current_term
    for n in {1, 2, 3} - {leader}:
        await cluster.crash(n)
    core = cluster.nodes[leader]._core
    await until(lambda: core._no_leader.count >= 20, "20 election rounds of the leader left alone")
    [down] = records.lines(logging.INFO, f"node {leader}: no longer leads term {term}")
    assert "no quorum acknowledged it" in down, down
    assert len(records.lines(logging.WARNING, f"node {leader}: no leader")) == 1


async def test_a_follower_cut_off_then_back_logs_the_same_leader_again(cluster: Cluster, records: LogRecords) -> None:
    # The other two keep their leader: this one's pre-vote rounds change no term, and it
    # comes back to the leader it had. Its WARNING promised a line "once it recovers", and
    # none came: no new vote was saved to say a leader was known again.
    raft, index = await leader_after_a_write(cluster)
    await cluster.wait_applied(index)  # every node holds the membership: a voter
    leader, term = raft.id, raft.metrics.current_term
    alone = min({1, 2, 3} - {leader})
    cluster.router.isolate(alone)
    core = cluster.nodes[alone]._core
    await until(lambda: core._no_leader.count >= 20, "20 election rounds of the node cut off")
    [warning] = records.lines(logging.WARNING, f"node {alone}: no leader")
    assert "pre-vote round" in warning, warning
    cluster.router.heal()
    await cluster.nodes[alone].wait(5.0).current_leader(leader)
    what = f"node {alone}: follows node {leader} again, the leader of term {term}"
    await until(lambda: records.lines(logging.INFO, what) != [], "its leader line")
    [line] = records.lines(logging.INFO, what)
    assert "election rounds in" in line, line
    assert cluster.nodes[leader].metrics.current_term == term


async def test_a_learner_cut_off_logs_it_once_then_the_leader_again(
    steady_cluster: Cluster, records: LogRecords
) -> None:
    # A learner never campaigns, so no election round said it had no leader: cut off from
    # its leader for an hour, it logged nothing.
    # One leader throughout (``steady_cluster``): the line awaited names the leader the
    # learner had; with fast_config's 50-100 ms a stall of the shared loop let the leader's
    # quorum check lapse, node 2 took term 2, and "follows node 1 again" never came.
    cluster = steady_cluster
    raft, _ = await leader_after_a_write(cluster)
    leader, term = raft.id, raft.metrics.current_term
    learner = await cluster.add_node(4)
    await raft.add_learner(4, BasicNode())
    await learner.wait(5.0).current_leader(leader)
    cluster.router.isolate(4)
    await until(lambda: records.lines(logging.WARNING, "node 4: no leader") != [], "the learner's WARNING")
    core = learner._core
    # Several election timeouts (300-600 ms each here), one WARNING.
    await until(lambda: core._no_leader_learner.count >= 8, "8 election timeouts of the learner cut off")
    [warning] = records.lines(logging.WARNING, "node 4: no leader")
    assert "a learner" in warning and "election timeouts in" in warning, warning
    cluster.router.heal()
    what = f"node 4: follows node {leader} again, the leader of term {term}"
    await until(lambda: records.lines(logging.INFO, what) != [], "its leader line")
    [line] = records.lines(logging.INFO, what)
    assert "election timeouts in" in line, line
