"""When snapshots are built and what a purge deletes: ``SnapshotPolicy.logs_since_last(n)``
builds on every node as entries apply (paced by ``Config.snapshot_pacing``), ``never()`` builds none, ``trigger.snapshot()`` builds
one now; a purge keeps ``max_in_snapshot_log_to_keep`` entries, waits for
``purge_batch_size`` of them, and ``trigger.purge_log(upto)`` never purges past the last
snapshot."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from openraft_py import SnapshotPolicy
from openraft_py.storage.memory import KvSet, MemDisk, MemStateMachine, encode_kv
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
    # Election timeouts of 300-600 ms: every write goes through the leader elected first,
    # and with fast_config's 50-100 ms a stall of the loaded machine's loop elected another.
    c, leader = await start(snap_config(purge_batch_size=50, election_timeout_min=300, election_timeout_max=600))
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


# -- pacing (``Config.snapshot_pacing``) -------------------------------------------------------

BUILD_S = 0.08  # how long each build of ``SlowBuilds`` takes


class SlowBuilds(MemStateMachine):
    """A ``MemStateMachine`` whose builds take ``BUILD_S`` (a large state's build, without the
    data), recording when each one ran: ``(start, end)`` on the loop's clock."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.builds: list[tuple[float, float]] = []

    def get_snapshot_builder(self) -> Any:
        inner = super().get_snapshot_builder()
        sm = self

        class Builder:
            async def build_snapshot(self) -> Any:
                loop = asyncio.get_running_loop()
                start = loop.time()
                await asyncio.sleep(BUILD_S)
                snap = await inner.build_snapshot()
                sm.builds.append((start, loop.time()))
                return snap

        return Builder()


async def builds_under_steady_writes(pacing: float, builds: int) -> list[tuple[float, float]]:
    """The leader's first ``builds`` policy builds while one writer writes without pause
    (``logs_since_last(5)``: a build is due again long before the last one ends)."""
    cfg = snap_config(
        snapshot_policy=SnapshotPolicy.logs_since_last(5), snapshot_pacing=pacing, max_in_snapshot_log_to_keep=1000,
        election_timeout_min=500, election_timeout_max=1000, heartbeat_interval=50,
    )
    c = Cluster(cfg, seed=3, state_machine=SlowBuilds)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        sm = c.state_machines[leader]
        assert isinstance(sm, SlowBuilds)
        raft = c.nodes[leader]
        n = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while len(sm.builds) < builds:
            assert loop.time() < deadline, f"only {len(sm.builds)} builds in 10 s of writes"
            await raft.client_write(encode_kv(KvSet(f"k{n}", str(n))))
            n += 1
        return sm.builds[:builds]
    finally:
        await c.shutdown()


def gaps(builds: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(time from a build's end to the next one's start, that build's duration)``."""
    return [(nxt[0] - cur[1], cur[1] - cur[0]) for cur, nxt in itertools.pairwise(builds)]


async def test_pacing_waits_a_multiple_of_the_last_build_before_the_next() -> None:
    pairs = gaps(await builds_under_steady_writes(pacing=3.0, builds=4))
    for gap, took in pairs:
        # The engine measures a build from the core's pass that started it to the pass that
        # saw it finish: at least the build itself, so the next one waits at least 3 x that.
        assert gap >= 2.9 * took, f"a build {gap * 1000:.0f} ms after one of {took * 1000:.0f} ms: {pairs}"


async def test_without_pacing_a_due_build_starts_right_after_the_last() -> None:
    pairs = gaps(await builds_under_steady_writes(pacing=0.0, builds=4))
    assert all(gap < took for gap, took in pairs), f"(gap, duration) pairs: {pairs}"


class ImageFirstSlowBuilds(MemStateMachine):
    """A ``MemStateMachine`` whose builds take the image at once, then ``BUILD_S * 4`` more
    (a large state's build: what it holds was decided when it began)."""

    def get_snapshot_builder(self) -> Any:
        inner = super().get_snapshot_builder()

        class Builder:
            async def build_snapshot(self) -> Any:
                snap = await inner.build_snapshot()
                await asyncio.sleep(BUILD_S * 4)
                return snap

        return Builder()


async def test_a_trigger_during_a_build_gets_a_snapshot_of_what_was_applied_then() -> None:
    """``trigger.snapshot()`` while a build runs (the policy's, or another trigger's) builds
    again when it ends: the pattern of the guide, trigger then wait for a snapshot of the last
    write, timed out when a build had begun before that write and no more writes came."""
    c = Cluster(snap_config(max_in_snapshot_log_to_keep=1000), seed=1, state_machine=ImageFirstSlowBuilds)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        first = await write(c, leader, 0, 10)
        await c.wait_applied(first)
        await raft.trigger.snapshot()  # begins a build of 10 keys
        last = await write(c, leader, 10, 20)
        await c.wait_applied(last, ids=[leader])
        assert raft.metrics.snapshot is None, "the first build ended already: the test checks nothing"
        await raft.trigger.snapshot()
        m = await raft.wait(5).snapshot(last, "a snapshot of the last write")
        assert m.snapshot is not None and m.snapshot.index >= last
    finally:
        await c.shutdown()
