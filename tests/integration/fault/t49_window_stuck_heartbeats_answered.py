"""A follower that answers the leader's heartbeats (the router's heartbeat lane) while every
AppendEntries carrying entries to it times out: an entry that outlasts the replication
deadline at each resend, or a replication connection that carries nothing while the
heartbeat connection works.

The cluster goes on: the follower hears from its leader and does not campaign, the leader
keeps its leadership (check-quorum counts the heartbeats' answers) and commits through the
other follower. The follower gets none of the entries, and the leader says so at WARNING
once that has gone on for an election timeout, as for a follower that is down: each
heartbeat's answer ended the window's failure streak unlogged, and nothing above DEBUG said
that the follower got nothing. Once its requests get through it catches up, and the leader
says it recovered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from integration.checks import LogRecords, until
from openraft_py.errors import Timeout
from openraft_py.testing.cluster import Cluster
from openraft_py.types import NodeId

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with LogRecords("openraft_py.replication", logging.DEBUG) as handler:
        yield handler


async def test_a_follower_that_answers_heartbeats_only_is_said_and_catches_up(
    steady_cluster: Cluster, records: LogRecords
) -> None:
    # Election timeouts of 300-600 ms (``steady_cluster``): the test checks that nobody
    # campaigns while the heartbeats are answered, and with fast_config's 50-100 ms a stall
    # of the loaded machine's shared loop let a follower's timer run out between two of them.
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    leader_id = await cluster.wait_for_leader(timeout=5.0)
    leader = cluster.nodes[leader_id]
    await leader.client_write(b"before")
    stuck = min(n for n in (1, 2, 3) if n != leader_id)
    term = leader.metrics.vote.term
    deadline = leader.config.election_timeout_min / 1000.0  # (the replication deadline's order)
    votes: list[NodeId] = []

    async def hook(rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
        if rpc == "vote":
            votes.append(source)
        elif rpc == "append_entries" and target == stuck and req.entries:
            await asyncio.sleep(deadline)
            raise Timeout(f"node {target}: no answer within {deadline}s")

    cluster.router.add_hook(hook)
    subject = f"node {leader_id}: replication to node {stuck}"
    written = []
    while not records.lines(logging.WARNING, subject):
        assert len(written) < 200, "no WARNING about the follower that gets no entries"
        written.append(await asyncio.wait_for(leader.client_write(b"w%d" % len(written)), 5.0))
        await asyncio.sleep(0.005)
    [warning] = records.lines(logging.WARNING, subject)
    assert "Timeout" in warning and "failures in" in warning, warning
    assert cluster.router.rpc_count("heartbeat", source=leader_id, target=stuck) > 0, "no heartbeat beside the window"
    assert votes == [], f"node {votes[0]} campaigned"
    assert leader.metrics.vote.term == term and cluster.leader() == leader_id
    last = written[-1].log_id.index
    assert cluster.nodes[stuck].metrics.last_log_index is None or cluster.nodes[stuck].metrics.last_log_index < last
    cluster.router.clear_hooks()
    await cluster.nodes[stuck].wait(10.0).applied_index_at_least(last, "the stuck follower catches up")
    await until(lambda: records.lines(logging.INFO, subject) != [], "the recovery line")
    assert "recovered" in records.lines(logging.INFO, subject)[0]
    assert len(records.lines(logging.WARNING, subject)) == 1
