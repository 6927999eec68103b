"""``remove_learners``: a learner leaves the membership in one entry (no joint phase), live or
dead; the leader stops sending to it once that entry commits (its replication leaves the
metrics); a removed learner holds the entry that removed it, never campaigns, and can be
added back later; refusals leave the log as it was."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from openraft_py import BasicNode, ForwardToLeader, LearnerNotFound, NotALearner, ServerState, Unreachable
from openraft_py.testing.cluster import Cluster

from ..snapshot.helpers import snap_config, write
from ._util import RpcCounter, add_learners, settled_leader

pytestmark = pytest.mark.timeout(30)


class SentTo:
    """Router hook: the AppendEntries requests sent to each node (delivered or not)."""

    def __init__(self, c: Cluster) -> None:
        self.counts: dict[int, int] = {}
        c.router.add_hook(self._hook)

    def _hook(self, rpc: str, source: int, target: int, req: Any) -> None:
        if rpc == "append_entries":
            self.counts[target] = self.counts.get(target, 0) + 1


async def test_remove_a_live_and_a_dead_learner(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await add_learners(cluster, leader, {4, 5})
    await cluster.crash(5)  # its machine died
    sent = SentTo(cluster)
    counter = RpcCounter(cluster)
    await counter.rounds(leader, 2, 3)
    assert sent.counts.get(5, 0) > 0, "the leader sends to the dead learner until it is removed"

    resp = await raft.remove_learners([4, 5])
    m = resp.membership
    assert m is not None and m.voter_ids() == {1, 2, 3} and m.learner_ids() == set()
    assert not m.is_joint() and set(m.nodes) == {1, 2, 3}
    # The live learner holds the entry that removed it, and stays out: it never campaigns.
    m4 = await cluster.nodes[4].wait(5.0).metrics(
        lambda x: x.membership_config.log_id == resp.log_id, "n4 holds the entry removing it")
    assert m4.state == ServerState.LEARNER
    await raft.wait(5.0).metrics(lambda x: x.replication is not None and set(x.replication) == {1, 2, 3},
                                 "the leader's replication series are the voters'")

    # The leader sends nothing more to either: count heartbeat rounds to a voter.
    before = dict(sent.counts)
    await counter.rounds(leader, 2, 10)
    assert sent.counts.get(4, 0) == before.get(4, 0), "the leader still sends to removed learner 4"
    assert sent.counts.get(5, 0) == before.get(5, 0), "the leader still sends to removed learner 5"
    assert cluster.router.rpc_count("vote", source=4) == 0, "the removed learner campaigned"
    w = await raft.client_write(b"after")
    assert w.log_id.index > resp.log_id.index
    assert cluster.leader() == leader

    # Added back later (the node kept its data): it catches up again.
    back = await raft.add_learner(4, BasicNode(), blocking=True)
    assert back.membership is not None and back.membership.learner_ids() == {4}
    await cluster.nodes[4].wait(5.0).applied_index_at_least(w.log_id.index, "n4 caught up again")


async def test_refusals_log_nothing(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    await add_learners(cluster, leader, {4})
    last = raft.metrics.last_log_index
    with pytest.raises(NotALearner, match="change_membership"):
        await raft.remove_learners([2])
    with pytest.raises(LearnerNotFound, match="not a member"):
        await raft.remove_learners([4, 9])
    with pytest.raises(TypeError):
        await raft.remove_learners(4)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await raft.remove_learners(["4"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="twice"):
        await raft.remove_learners([4, 4])
    with pytest.raises(ValueError):
        await raft.remove_learners([-1])
    follower = next(n for n in (1, 2, 3) if n != leader)
    with pytest.raises(ForwardToLeader):
        await cluster.nodes[follower].remove_learners([4])
    same = await raft.remove_learners([])
    assert same.membership is not None and same.membership.learner_ids() == {4}
    assert raft.metrics.last_log_index == last, "a refused (or empty) call logged something"
    assert set(raft.metrics.membership_config.membership.nodes) == {1, 2, 3, 4}


async def test_remove_a_learner_while_it_receives_a_snapshot() -> None:
    """A learner that needs a snapshot (the leader's log is purged) is removed while a chunk
    to it is held on the way: the entry commits without it, the leader drops the transfer
    (no further chunk is sent, the node keeps running and taking writes), and the chunk held
    back, delivered afterwards, changes nothing on the leader."""
    c = Cluster(snap_config(snapshot_max_chunk_size=64), seed=5)
    try:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 100)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")

        held = asyncio.Event()
        release = asyncio.Event()
        chunks: list[int] = []

        async def hook(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "install_snapshot" and target == 4:
                chunks.append(req.offset)
                if len(chunks) == 2:  # the second chunk: a transfer under way
                    held.set()
                    await release.wait()

        c.router.add_hook(hook)
        await c.add_node(4)
        await raft.add_learner(4, BasicNode(), blocking=False)
        await asyncio.wait_for(held.wait(), 5)
        resp = await raft.remove_learners([4])
        assert resp.membership is not None and 4 not in resp.membership.nodes
        await raft.wait(5).metrics(lambda m: m.replication is not None and 4 not in m.replication,
                                   "no replication to node 4")
        sent = len(chunks)
        release.set()
        w = await raft.client_write(b"after")
        await c.wait_applied(w.log_id.index, ids=[1, 2, 3])
        counter = RpcCounter(c)
        await counter.rounds(leader, next(n for n in (1, 2, 3) if n != leader), 5)
        assert len(chunks) == sent, "the leader went on sending the snapshot to the removed learner"
        m = raft.metrics
        assert m.running and m.state == ServerState.LEADER, m.describe()
    finally:
        await c.shutdown()


async def test_a_removed_node_says_so_in_its_log(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A learner (or a voter) that learns it was removed logs one WARNING saying so, and so
    does a removed node restarted; a node catching up from an empty log, which goes by the
    memberships from before it was added, does not."""

    caplog.set_level(logging.INFO, logger="openraft_py.core")

    def removed_lines(nid: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "openraft_py.core"
                and r.levelno == logging.WARNING and r.getMessage().startswith(f"node {nid}: ")
                and "does not name this node" in r.getMessage()]

    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    raft = cluster.nodes[leader]
    for i in range(5):
        await raft.client_write(f"w{i}".encode())
    await add_learners(cluster, leader, {4, 5})
    assert removed_lines(4) == [] and removed_lines(5) == [], "a node catching up was said to be removed"
    resp = await raft.remove_learners([4])
    await cluster.nodes[4].wait(5.0).metrics(lambda m: m.membership_config.log_id == resp.log_id, "n4 removed")
    assert removed_lines(4) == [f"node 4: the membership at log index {resp.log_id.index} does not name this node: "
                                "it was removed from the cluster, and gets nothing more from the leader unless a "
                                "later entry adds it again (stop it, or add it again as a learner)"]
    voter = next(n for n in (1, 2, 3) if n != leader)
    await raft.change_membership({1, 2, 3} - {voter}, retain=True)  # (a voter leaves as a learner first)
    resp = await raft.remove_learners([voter])
    await cluster.nodes[voter].wait(5.0).metrics(lambda m: m.membership_config.log_id == resp.log_id, "removed")
    assert len(removed_lines(voter)) == 1
    await cluster.restart(4)
    deadline = asyncio.get_running_loop().time() + 5
    while len(removed_lines(4)) < 2:  # (logged at the restarted node's first round of commands)
        assert asyncio.get_running_loop().time() < deadline, "a removed node restarted does not say so"
        await asyncio.sleep(0.01)
    assert len(removed_lines(4)) == 2
    assert removed_lines(5) == [] and removed_lines(leader) == []


async def test_a_learner_restarted_before_the_entry_adding_it_is_not_said_removed(
        caplog: pytest.LogCaptureFixture) -> None:
    """A learner that installed a snapshot from before it was added, then stopped before the
    entry adding it reached it (here: every AppendEntries carrying that entry fails), starts
    again going by the snapshot's membership, which does not name it. It was not removed:
    it is still catching up, and the start's WARNING must not say "it was removed from the
    cluster" as if it were certain; it says that either may be the case. The leader then
    brings it the entry adding it, and it goes on as a learner."""
    caplog.set_level(logging.INFO, logger="openraft_py.core")
    c = Cluster(snap_config(), seed=7)
    try:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 20)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")
        blocked = True

        def hook(rpc: str, source: int, target: int, req: Any) -> None:
            if blocked and rpc == "append_entries" and target == 4 and any(e.log_id.index > last for e in req.entries):
                raise Unreachable("held back by the test: the entry adding node 4")

        c.router.add_hook(hook)
        await c.add_node(4)
        added = await raft.add_learner(4, BasicNode(), blocking=False)
        assert added.log_id.index > last
        await c.nodes[4].wait(5).snapshot(raft.metrics.snapshot, "n4 installed the leader's snapshot")
        assert 4 not in c.nodes[4].metrics.membership_config.membership.nodes
        await c.crash(4)
        caplog.clear()
        await c.restart(4)
        deadline = asyncio.get_running_loop().time() + 5

        def unnamed() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "openraft_py.core"
                    and r.levelno == logging.WARNING and r.getMessage().startswith("node 4: ")
                    and "does not name this node" in r.getMessage()]

        while not unnamed():  # (logged at the restarted node's first round of commands)
            assert asyncio.get_running_loop().time() < deadline, "the restarted learner says nothing"
            await asyncio.sleep(0.01)
        [line] = unnamed()
        assert "it was removed from the cluster, and gets nothing more" not in line, line
        assert "or it was added after that entry and is still catching up" in line, line
        blocked = False
        await c.nodes[4].wait(5).metrics(lambda m: 4 in m.membership_config.membership.nodes,
                                         "n4 received the entry adding it")
        assert len(unnamed()) == 1
    finally:
        await c.shutdown()
