"""Many in-process cluster lifecycles in one process leave nothing behind (docs/design/soak.md):
a 3-node router cluster is created, used (writes, a snapshot, a learner added, made a voter
and removed again, the leader crashed) and shut down, over and over, as a test suite does.
After each round no node of it is reachable, and the event loop's tasks, the threads and
the open file descriptors are what they were before the first: a count that grows per
cycle is a leak (a module-level cache or registry, a task or thread never ended, a store
never closed). Counts, not RSS, which the allocator makes noisy."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from pathlib import Path

import pytest

from openraft_py import BasicNode, Raft
from openraft_py.config import SnapshotPolicy
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.memory import KvSet, encode_kv
from openraft_py.storage.rocks.log_store import RocksLogStore
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config, on_leader, write_on_leader

pytestmark = pytest.mark.timeout(120)


_EXECUTOR_THREADS = ("asyncio_", "uvloop_")
"""Name prefixes of the event loop's default executor's workers: it starts them as work comes,
up to its ``max_workers``, and keeps them (the RocksDB stores' calls run there), so their
number may rise once under a busier cycle without growing per cycle."""


def _counts() -> tuple[int, int, int]:
    """The running loop's tasks, the threads (but the loop's default executor's) and the open
    file descriptors."""
    threads = [t for t in threading.enumerate() if not t.name.startswith(_EXECUTOR_THREADS)]
    return len(asyncio.all_tasks()), len(threads), len(os.listdir("/proc/self/fd"))


async def _one_lifecycle(seed: int, rocks: Path | None, nodes: list[weakref.ref[Raft]]) -> None:
    config = fast_config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=30,
                         snapshot_policy=SnapshotPolicy.never())
    cluster = Cluster(config, seed=seed)
    stores: list[RocksLogStore | RocksStateMachine] = []
    if rocks is not None:
        plain_add = cluster.add_node

        async def add_node(node_id: int) -> Raft:
            log = await RocksLogStore.open(rocks / f"c{seed}" / f"n{node_id}" / "log", sync=False)
            sm = await RocksStateMachine.open(rocks / f"c{seed}" / f"n{node_id}" / "sm")
            stores.extend((log, sm))
            cluster._log_store_factory = lambda _nid, _disk: log
            cluster._sm_factory = lambda _disk: sm
            return await plain_add(node_id)

        cluster.add_node = add_node  # type: ignore[method-assign]
    try:
        await cluster.start({1, 2, 3})
        # Each call on whichever node leads then (``on_leader``): on a loaded machine an
        # election timeout of 150-300 ms passes now and then without a heartbeat, and a
        # call on the first leader failed with ForwardToLeader.
        for k in range(5):
            await write_on_leader(cluster, encode_kv(KvSet(f"k{k}", "v")))
        node = cluster.nodes[await cluster.wait_for_leader(10)]
        # What the snapshot covers at least (not the last log index: an entry a new leader
        # appended since may not be applied yet, and no snapshot would cover it).
        applied = node.metrics.last_applied
        assert applied is not None
        await node.trigger.snapshot()
        await node.wait(10).snapshot(applied)
        await cluster.add_node(4)
        voters = {1, 2, 3}  # (node 4 knows no leader until it is a learner)
        await on_leader(cluster, lambda raft: raft.add_learner(4, BasicNode("n4")), among=voters)
        await on_leader(cluster, lambda raft: raft.change_membership({1, 2, 3, 4}), among=voters)
        await on_leader(cluster, lambda raft: raft.change_membership({1, 2, 3}), among=voters)
        await cluster.crash(4)
        nodes.extend(weakref.ref(r) for r in cluster.nodes.values())
        await cluster.crash(await cluster.wait_for_leader(10))
        await cluster.wait_for_leader(10)
    finally:
        await cluster.shutdown()
        for store in stores:
            await store.aclose()


@pytest.mark.parametrize("storage", ["memory", "rocksdb"])
async def test_cluster_lifecycles_leave_nothing_behind(storage: str, tmp_path: Path) -> None:
    rocks = tmp_path if storage == "rocksdb" else None
    nodes: list[weakref.ref[Raft]] = []
    await _one_lifecycle(0, rocks, nodes)  # first use: imports, module-level set-up
    gc.collect()
    before = _counts()
    cycles = 12 if rocks is None else 6
    for seed in range(1, cycles + 1):
        await _one_lifecycle(seed, rocks, nodes)
    gc.collect()
    assert _counts() == before, f"(tasks, threads, fds) before {before}, after {cycles} cycles {_counts()}"
    alive = [r for r in nodes if r() is not None]
    assert not alive, f"{len(alive)} of {len(nodes)} shut-down nodes are still reachable"
