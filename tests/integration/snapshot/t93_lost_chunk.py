"""A snapshot sent in several chunks survives a lost chunk: a chunk whose request is lost is
sent again from the same offset, and one that was delivered but whose response was lost is
sent again too (the follower takes a repeated chunk); the transfer completes and the
follower's data equals the leader's."""

from __future__ import annotations

from typing import Any

import pytest

from openraft_py import BasicNode, InstallSnapshotRequest, Timeout, Unreachable
from openraft_py.testing.cluster import Cluster

from .helpers import same_state, snap_config, write

pytestmark = pytest.mark.timeout(15)

CHUNK = 512


async def purged_leader_and_learner(c: Cluster) -> tuple[int, int]:
    """A 3-node cluster whose leader purged a log big enough for several chunks; return the
    leader and the snapshot's size in bytes."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    last = await write(c, leader, 0, 200)
    await c.wait_applied(last)
    await c.nodes[leader].trigger.snapshot()
    await c.nodes[leader].wait(5).purged(last, "purged")
    snap = await c.nodes[leader].get_current_snapshot()
    assert snap is not None
    size = len(snap.data.read())
    snap.data.close()
    assert size > 4 * CHUNK, "the snapshot should take several chunks"
    return leader, size


@pytest.mark.parametrize("lose", ["request", "response"])
async def test_a_lost_chunk_is_resent_and_the_transfer_completes(lose: str) -> None:
    # Elections are not what this tests: timeouts of 1-2 s keep one leader through a stall of
    # a loaded machine (with 50-100 ms, a re-election before add_learner failed it once).
    cfg = snap_config(snapshot_max_chunk_size=CHUNK, install_snapshot_timeout=100,
                      election_timeout_min=1000, election_timeout_max=2000)
    c = Cluster(cfg, seed=3)
    try:
        leader, size = await purged_leader_and_learner(c)
        offsets: list[int] = []
        lost: list[int] = []

        async def hook(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc != "install_snapshot" or target != 4:
                return
            assert isinstance(req, InstallSnapshotRequest)
            offsets.append(req.offset)
            if len(offsets) == 2 and not lost:  # the 2nd chunk, once
                lost.append(req.offset)
                if lose == "request":
                    raise Unreachable("test: chunk request lost")
                await c.nodes[target].install_snapshot(req)  # delivered and handled...
                raise Timeout("test: chunk response lost")  # ...but the answer never comes back

        c.router.add_hook(hook)
        await c.add_node(4)
        await c.nodes[leader].add_learner(4, BasicNode("n4"), blocking=True)
        leader_applied = c.nodes[leader].metrics.last_applied
        assert leader_applied is not None
        await c.nodes[4].wait(5).applied_index_at_least(leader_applied.index, "learner caught up")
        assert lost == [CHUNK], f"chunk offsets sent: {offsets}"
        # the lost chunk went again from the same offset, and the transfer went on from there
        k = offsets.index(CHUNK)
        assert offsets[k + 1] == CHUNK, f"chunk offsets sent: {offsets}"
        assert offsets[-1] + CHUNK >= size and offsets.count(0) == 1, f"chunk offsets sent: {offsets}"
        same_state(c, leader, 4)
        more = await write(c, leader, 500, 510)
        await c.nodes[4].wait(5).applied_index_at_least(more, "learner gets appends after")
        same_state(c, leader, 4)
    finally:
        c.router.clear_hooks()
        await c.shutdown()
