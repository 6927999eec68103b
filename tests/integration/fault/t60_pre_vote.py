"""Pre-vote (thesis 9.6): a node cut off from the cluster that comes back does not raise the
cluster's term or depose a healthy leader; without pre-vote it does (so the test can fail)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.testing.cluster import Cluster

from ..checks import fast_config


async def _isolate_and_rejoin(pre_vote: bool) -> tuple[int, int, int, int]:
    """Isolate a follower until it tried to get elected 3 times, heal, and return (leader
    before, term before, leader after, term after) once the rejoined node follows again."""
    c = Cluster(fast_config(enable_pre_vote=pre_vote), seed=7)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=5)
        # Every node holds the membership (is a voter) before one is cut off.
        first = await c.nodes[leader].client_write(b"before")
        await c.wait_applied(first.log_id.index, timeout=5)
        term = c.nodes[leader].metrics.current_term
        lonely = next(n for n in sorted(c.nodes) if n != leader)
        attempts = asyncio.Event()
        sent: list[Any] = []

        def count(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "vote" and source == lonely:
                sent.append(req)
                # Requests go to both peers; 3 rounds of them.
                if len(sent) >= 6:
                    attempts.set()

        c.router.add_hook(count)
        c.router.isolate(lonely)
        await asyncio.wait_for(attempts.wait(), timeout=10)
        c.router.heal()
        c.router.clear_hooks()
        # Settled: one leader that every node follows, and a write commits everywhere.
        after = await c.wait_for_leader(timeout=10)
        resp = await c.nodes[after].client_write(b"after heal")
        await c.wait_applied(resp.log_id.index, timeout=10)
        after = await c.wait_for_leader(timeout=10)
        return leader, term, after, c.nodes[after].metrics.current_term
    finally:
        await c.shutdown()


@pytest.mark.timeout(30)
async def test_rejoining_node_with_pre_vote_does_not_disrupt_the_leader() -> None:
    leader, term, after, term_after = await _isolate_and_rejoin(pre_vote=True)
    assert (after, term_after) == (leader, term), "pre-vote: the healthy leader keeps its term"


@pytest.mark.timeout(30)
async def test_rejoining_node_without_pre_vote_raises_the_term() -> None:
    leader, term, after, term_after = await _isolate_and_rejoin(pre_vote=False)
    assert term_after > term, "without pre-vote the rejoining node's inflated term deposes the leader"
