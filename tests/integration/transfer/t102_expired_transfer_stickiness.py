"""A voter told of a leadership transfer that then expired (its target never took over)
counts its leader as alive again: leader stickiness holds, and a node cut off from the
leader for a while and back cannot depose it. The voter used to stay non-sticky for the rest
of the term, so it granted that node's pre-vote and vote, and the leader, taking writes
again, was deposed (``TransferHandler.notice_expired``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import ForwardToLeader, Unreachable
from openraft_py.testing.cluster import Cluster
from openraft_py.types import VoteRequest

from ..checks import fast_config, leader_after_a_write, until

pytestmark = pytest.mark.timeout(30)


async def test_a_voter_told_of_an_expired_transfer_does_not_help_depose_its_live_leader() -> None:
    # Stickiness lasts election_timeout_min: 300 ms, so that a stall of the shared event loop
    # under load (every node runs on it) does not let a voter miss its leader's heartbeats.
    config = fast_config(election_timeout_min=300, election_timeout_max=600)
    c = Cluster(config, seed=5)
    try:
        raft, index = await leader_after_a_write(c)
        leader = raft.id
        await c.wait_applied(index)
        term = raft.metrics.current_term
        target, other = sorted({1, 2, 3} - {leader})
        loop = asyncio.get_running_loop()
        told_at: list[float] = []  # when the notice reached the other voter
        cut = asyncio.Event()  # set while the leader's requests do not reach the target
        pre_votes: list[VoteRequest] = []  # the target's pre-vote requests to the other voter

        def hook(rpc: str, source: int, to: int, req: Any) -> None:
            if rpc == "transfer_leader":
                if to == target:  # the target never hears of it: the transfer expires
                    raise Unreachable(f"{rpc} {source} -> {to}: lost")
                told_at.append(loop.time())
            if cut.is_set() and source == leader and to == target:
                raise Unreachable(f"{rpc} {source} -> {to}: cut off")
            if rpc == "vote" and source == target and to == other and req.pre_vote:
                pre_votes.append(req)

        c.router.add_hook(hook)
        await raft.trigger.transfer_leader(target)
        # No new leader within two election timeouts: the leader takes writes again.
        deadline = loop.time() + 10.0
        while True:
            try:
                await raft.client_write(b"after the transfer expired")
                break
            except ForwardToLeader:
                assert loop.time() < deadline, "the leader still hands over"
                await asyncio.sleep(0.01)
        assert told_at, "the other voter was told of the transfer"
        # The other voter's notice is two election_timeout_max old (the transfer has expired on
        # any clock), and a few heartbeats of the leader reached it since.
        expired_at = told_at[0] + (2 * config.election_timeout_max + 3 * config.heartbeat_interval) / 1000
        await until(lambda: loop.time() >= expired_at, "the notice to expire")

        # The target is cut off from the leader: its election timer fires, and it pre-votes.
        cut.set()
        await until(lambda: len(pre_votes) >= 3 or any(n.metrics.current_term != term for n in c.nodes.values()),
                    "three pre-vote rounds of the target, or an election", timeout=15.0)
        cut.clear()
        more = await raft.client_write(b"more")
        await c.wait_applied(more.log_id.index)
        for nid, node in c.nodes.items():
            m = node.metrics
            assert m.current_term == term and m.current_leader == leader, f"n{nid}: {m.describe()}"
    finally:
        await c.shutdown()
