"""The network client cache follows the newest membership only.

``RaftCore.client(target, node)`` keeps one client per target, made for the ``BasicNode`` the
membership gave it, and asks the factory for a new one when the node changes (a member given
a new address by ``add_learner``; the TCP factory then closes the connections to the old
address). A vote request task (or a transfer-leader one) gets its client at its first step,
with the node of the membership under which it was started: a task started before the move
and run after it (its ``SendVote`` postponed until the vote was durable, or a task that
first runs after the core went on) replaced the target's client with one to the old address,
and the TCP factory closed the connections of the leader's replication to the new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config, record_new_clients

from openraft_py import BasicNode, Vote
from openraft_py.testing.cluster import Cluster
from openraft_py.types import TransferLeaderRequest, VoteRequest

pytestmark = pytest.mark.timeout(30)

BOUND = 5.0


async def _tasks_end(core: Any, name: str) -> None:
    """Wait until the core has no task named ``...-<name>`` left."""
    async with asyncio.timeout(BOUND):
        while any(n.endswith(f"-{name}") for n in core.tasks.names()):
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("rpc", ["vote", "transfer-leader"])
async def test_a_late_request_task_does_not_bring_back_the_old_address(rpc: str) -> None:
    made: list[tuple[int, int, BasicNode]] = []  # (source, target, node) of every new client
    async with Cluster(fast_config(), seed=64) as c:
        record_new_clients(c, made)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        core = raft._core
        target = next(n for n in (1, 2, 3) if n != leader)
        old = core.engine.state.membership.effective.membership.nodes[target]
        moved = BasicNode("moved:1")
        resp = await asyncio.wait_for(raft.add_learner(target, moved, blocking=True), BOUND)
        assert resp.membership is not None and resp.membership.nodes[target] == moved
        stream_client = core._streams[target].client
        assert core._clients[target] == (moved, stream_client)

        # A request task started under the membership before the move (as ``_send_votes`` and
        # ``_send_transfer_leaders`` start them, with the node their command named) runs now.
        vote = core.engine.state.vote
        last = core.engine.state.last_log_id()
        if rpc == "vote":
            core.tasks.spawn(core._send_vote(target, old, VoteRequest(vote, last)), rpc)
        else:
            # (from an older leadership: the target ignores it and does not campaign)
            stale = Vote.new(vote.leader_id.term - 1, leader, True)
            core.tasks.spawn(core._send_transfer_leader(target, old, TransferLeaderRequest(stale, target, last)), rpc)
        await _tasks_end(core, rpc)

        assert (leader, target, old) not in made[made.index((leader, target, moved)):], \
            "a client to the old address was made after the move"
        assert core._clients[target] == (moved, stream_client), \
            f"the client cache holds {core._clients[target][0]!r} for node {target}, moved to {moved!r}"
        assert core._streams[target].client is stream_client
        w = await asyncio.wait_for(raft.client_write(b"after"), BOUND)
        await c.wait_applied(w.log_id.index, timeout=BOUND, ids=[target])
