"""When snapshots are built and what a purge deletes: ``SnapshotPolicy.logs_since_last(n)``
builds on every node as entries apply, ``never()`` builds none, ``trigger.snapshot()`` builds
one now; a purge keeps ``max_in_snapshot_log_to_keep`` entries, waits for
``purge_batch_size`` of them, and ``trigger.purge_log(upto)`` never purges past the last
snapshot."""

from __future__ import annotations

import pytest

from openraft_py import SnapshotPolicy
from openraft_py.testing.cluster import Cluster

from .helpers import snap_config, write

pytestmark = pytest.mark.timeout(15)


async def start(config: object) -> tuple[Cluster, int]:
    c = Cluster(config, seed=1)  # type: ignore[arg-type]
    await c.start({1, 2, 3})
    return c, await c.wait_for_leader()


async def test_logs_since_last_builds_on_every_node_as_entries_apply() -> None:
    c, leader = await start(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(10), max_in_snapshot_log_to_keep=1000))
    try:
        seen: dict[int, set[int]] = {n: set() for n in c.nodes}
        for k in range(4):
            last = await write(c, leader, 10 * k, 10 * k + 10)
            await c.wait_applied(last)
            for nid, r in c.nodes.items():
                # a build is due once 10 entries applied since the last: it lands soon after
                m = await r.wait(5).snapshot(last - 9, f"n{nid} snapshot >= {last - 9}")
                assert m.snapshot is not None and m.last_applied is not None
                assert m.snapshot.index <= m.last_applied.index
                seen[nid].add(m.snapshot.index)
        for nid in c.nodes:
            assert len(seen[nid]) >= 3, f"n{nid} built snapshots at {sorted(seen[nid])}: the policy did not advance"
            assert c.nodes[nid].metrics.purged is None  # 1000 kept: nothing purged
    finally:
        await c.shutdown()


async def test_never_builds_none() -> None:
    c, leader = await start(snap_config(snapshot_policy=SnapshotPolicy.never()))
    try:
        last = await write(c, leader, 0, 120)
        await c.wait_applied(last)
        for nid, r in c.nodes.items():
            assert r.metrics.snapshot is None and r.metrics.purged is None, f"n{nid}"
            assert await r.get_current_snapshot() is None
    finally:
        await c.shutdown()


async def test_trigger_snapshot_builds_one_on_that_node() -> None:
    c, leader = await start(snap_config(max_in_snapshot_log_to_keep=1000))
    try:
        last = await write(c, leader, 0, 30)
        await c.wait_applied(last)
        await c.nodes[leader].trigger.snapshot()
        m = await c.nodes[leader].wait(5).snapshot(last, "leader snapshot")
        assert m.snapshot is not None and m.snapshot.index == last
        snap = await c.nodes[leader].get_current_snapshot()
        assert snap is not None and snap.meta.last_log_id == m.snapshot
        snap.data.close()
        for nid in set(c.nodes) - {leader}:
            assert c.nodes[nid].metrics.snapshot is None, f"n{nid} built a snapshot nobody asked for"
    finally:
        await c.shutdown()


async def test_purge_keeps_max_in_snapshot_log_to_keep() -> None:
    keep = 7
    c, leader = await start(snap_config(max_in_snapshot_log_to_keep=keep))
    try:
        last = await write(c, leader, 0, 40)
        await c.wait_applied(last)
        raft = c.nodes[leader]
        await raft.trigger.snapshot()
        await raft.wait(5).snapshot(last, "snapshot")
        m = await raft.wait(5).purged(last - keep, "purged")
        assert m.purged is not None and m.purged.index == last - keep
        disk = c.disks[leader]
        assert disk.offset == last - keep + 1 and disk.offset + len(disk.entries) == last + 1
        assert len(disk.entries) == keep
    finally:
        await c.shutdown()


async def test_purge_waits_for_purge_batch_size() -> None:
    c, leader = await start(snap_config(purge_batch_size=50))
    try:
        raft = c.nodes[leader]
        first = await write(c, leader, 0, 20)
        await c.wait_applied(first)
        await raft.trigger.snapshot()
        await raft.wait(5).snapshot(first, "first snapshot")
        # fewer than 50 entries purgeable: nothing goes yet
        assert raft.metrics.purged is None and c.disks[leader].offset == 0
        second = await write(c, leader, 20, 80)
        await c.wait_applied(second)
        await raft.trigger.snapshot()
        await raft.wait(5).snapshot(second, "second snapshot")
        m = await raft.wait(5).purged(second, "purged in one batch")
        assert m.purged is not None and m.purged.index == second
    finally:
        await c.shutdown()


async def test_trigger_purge_log_never_purges_past_the_snapshot() -> None:
    c, leader = await start(snap_config(max_in_snapshot_log_to_keep=1000))
    try:
        raft = c.nodes[leader]
        s = await write(c, leader, 0, 20)
        await c.wait_applied(s)
        await raft.trigger.purge_log(s)  # no snapshot yet: nothing may go
        await raft.trigger.snapshot()
        await raft.wait(5).snapshot(s, "snapshot")
        assert raft.metrics.purged is None
        last = await write(c, leader, 20, 40)
        await c.wait_applied(last)
        await raft.trigger.purge_log(last)  # asks past the snapshot: stops at it
        m = await raft.wait(5).purged(s, "purged up to the snapshot")
        assert m.purged is not None and m.purged.index == s
        assert m.snapshot is not None and m.snapshot.index == s
        disk = c.disks[leader]
        assert disk.offset == s + 1 and disk.offset + len(disk.entries) == last + 1
        # the entries after the snapshot are still readable and the cluster keeps working
        more = await write(c, leader, 40, 45)
        await c.wait_applied(more)
        assert c.nodes[leader].metrics.purged == m.purged
    finally:
        await c.shutdown()
