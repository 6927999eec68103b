"""Crashes and restarts over the nodes' disks: a new leader after a leader crash without
losing an acknowledged write; a restarted follower catches up; a full-cluster restart keeps
every acknowledged write and re-elects."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import ClientWriteResponse, Stopped
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching, holds, write_on_leader

pytestmark = pytest.mark.timeout(20)


async def _write(c: Cluster, prefix: str, n: int) -> list[tuple[ClientWriteResponse, bytes]]:
    """``n`` writes, each on whichever node leads then (``write_on_leader``): under load the
    50-100 ms election timeouts of ``fast_config`` pass now and then without a heartbeat, and
    a write sent to the node that led when the test began was refused (``ForwardToLeader``:
    "not the leader, and no leader is known", seen once at load 13 on 2 cores)."""
    out = []
    for i in range(n):
        data = f"{prefix}-{i}".encode()
        out.append((await write_on_leader(c, data), data))
    return out


def _assert_all_applied(c: Cluster, acked: list[tuple[ClientWriteResponse, bytes]]) -> None:
    for nid, disk in c.disks.items():
        applied = dict(disk.applied_log)
        for resp, data in acked:
            assert applied.get(resp.log_id) == data, f"n{nid} lost acknowledged write {resp.log_id!r} {data!r}"
    check_log_matching(c.disks)
    check_applied_prefix(c.disks)


@pytest.mark.parametrize("n", [3, 5], ids=lambda n: f"{n}nodes")
async def test_leader_crash_elects_new_leader_and_keeps_writes(cluster: Cluster, n: int) -> None:
    ids = set(range(1, n + 1))
    await cluster.start(ids)
    acked = await _write(cluster, "a", 20)
    old = await cluster.wait_for_leader(timeout=2.0)  # the leader now, which the crash takes down
    old_term = cluster.nodes[old].metrics.current_term
    await cluster.crash(old)
    new = await cluster.wait_for_leader(timeout=3.0)
    assert new != old and cluster.nodes[new].metrics.current_term > old_term
    # Every acknowledged write is in the new leader's log (leader completeness).
    for resp, data in acked:
        assert holds(cluster.disks[new], resp.log_id, data)
    acked += await _write(cluster, "b", 20)
    await cluster.restart(old)
    last = acked[-1][0].log_id.index
    await cluster.wait_applied(last, timeout=3.0)
    await cluster.wait_for_leader(timeout=3.0)  # the restarted node follows the others' leader
    _assert_all_applied(cluster, acked)


async def test_restarted_follower_catches_up(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    acked = await _write(cluster, "a", 10)
    leader = await cluster.wait_for_leader(timeout=2.0)
    follower = min(set(cluster.nodes) - {leader})
    await cluster.nodes[follower].wait(2.0).applied_index_at_least(acked[-1][0].log_id.index)
    await cluster.crash(follower)
    acked += await _write(cluster, "b", 50)
    assert len(cluster.disks[follower].applied_log) == 10
    raft = await cluster.restart(follower)
    await raft.wait(3.0).applied_index_at_least(acked[-1][0].log_id.index, "restarted follower caught up")
    await cluster.wait_for_leader(timeout=2.0)  # the restarted follower follows the others' leader
    await cluster.wait_applied(acked[-1][0].log_id.index)
    _assert_all_applied(cluster, acked)


@pytest.mark.parametrize("n", [1, 3, 5], ids=lambda n: f"{n}nodes")
async def test_full_cluster_restart_keeps_writes_and_reelects(cluster: Cluster, n: int) -> None:
    ids = set(range(1, n + 1))
    await cluster.start(ids)
    acked = await _write(cluster, "a", 15)
    # Crash right after the acks: followers may not have applied everything yet.
    for nid in sorted(ids):
        await cluster.crash(nid)
    for nid in sorted(ids):
        await cluster.restart(nid)
    acked += await _write(cluster, "b", 5)
    await cluster.wait_applied(acked[-1][0].log_id.index, timeout=3.0)
    _assert_all_applied(cluster, acked)
    # No duplicates: each write applied exactly once.
    datas = [d for _, d in cluster.disks[await cluster.wait_for_leader(timeout=3.0)].applied_log]
    assert len(datas) == len(set(datas)) == 20


async def test_pending_write_fails_with_stopped_on_shutdown(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    for nid in set(cluster.nodes) - {leader}:
        cluster.router.isolate(nid)
    pending = asyncio.ensure_future(cluster.nodes[leader].client_write(b"never"))
    await cluster.nodes[leader].wait(2.0).log_index_at_least(2, "write appended")
    assert not pending.done()
    await cluster.crash(leader)
    with pytest.raises(Stopped):
        await pending
