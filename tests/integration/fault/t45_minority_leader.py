"""A leader cut off in a minority cannot commit; after healing its uncommitted entries are
overwritten and its client sees the write fail."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import ForwardToLeader, ServerState
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, entry_at, holds

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize("n", [3, 5], ids=lambda n: f"{n}nodes")
async def test_minority_leader_cannot_commit_and_is_overwritten(cluster: Cluster, n: int) -> None:
    ids = set(range(1, n + 1))
    await cluster.start(ids)
    old = await cluster.wait_for_leader(timeout=2.0)
    base = await cluster.nodes[old].client_write(b"base")
    await cluster.wait_applied(base.log_id.index)

    # The old leader keeps one follower (5 nodes) or none (3 nodes): a minority.
    others = sorted(ids - {old})
    minority = {old} | ({others[0]} if n == 5 else set())
    majority = ids - minority
    cluster.router.partition(minority, majority)

    stale = [asyncio.ensure_future(cluster.nodes[old].client_write(f"stale-{i}".encode())) for i in range(3)]
    await cluster.nodes[old].wait(2.0).log_index_at_least(base.log_id.index + 3, "stale entries appended")
    stale_ids = [entry_at(cluster.disks[old], base.log_id.index + 1 + i).log_id for i in range(3)]  # type: ignore[union-attr]

    new = await cluster.wait_for_leader(timeout=3.0, among=majority)
    fresh = [await cluster.nodes[new].client_write(f"fresh-{i}".encode()) for i in range(5)]
    # Still cut off: nothing of the stale writes committed or completed.
    assert not any(t.done() for t in stale)
    old_m = cluster.nodes[old].metrics
    assert old_m.committed is not None and old_m.committed.index < stale_ids[0].index
    assert old_m.last_applied is not None and old_m.last_applied.index <= base.log_id.index

    cluster.router.heal()
    await cluster.nodes[old].wait(3.0).state(ServerState.FOLLOWER, "old leader steps down")
    await cluster.wait_applied(fresh[-1].log_id.index, timeout=3.0)
    for t in stale:
        with pytest.raises(ForwardToLeader) as ei:
            await asyncio.wait_for(t, 3.0)
        assert not ei.value.outcome_unknown, "a replaced entry is a definite failure"
    assert await cluster.wait_for_leader(timeout=3.0) == new

    # The stale entries are gone from every disk and were never applied anywhere.
    for nid, disk in cluster.disks.items():
        for sid in stale_ids:
            e = entry_at(disk, sid.index)
            assert e is None or e.log_id != sid, f"n{nid} still holds stale entry {sid!r}"  # type: ignore[attr-defined]
        assert not any(d.startswith(b"stale") for _, d in disk.applied_log), f"n{nid} applied a stale write"
        for i, r in enumerate(fresh):
            assert holds(disk, r.log_id, f"fresh-{i}".encode())
    check_log_matching(cluster.disks)
    check_applied_prefix(cluster.disks)
