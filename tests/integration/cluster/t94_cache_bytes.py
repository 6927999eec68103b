"""The in-memory cache of recent log entries is bounded in bytes as well as in entries
(``CACHE_MAX_BYTES``): it was bounded by the number of entries alone (65,536), so large
values filled memory: with the default snapshot policy a node held the 6,000 entries kept
between snapshots, 64 KiB values each made it 375 MiB, and 1 MiB values gigabytes. Entries
dropped from the cache are read from the log store when needed (a learner catching up). A
restarted node fills its cache from its log within the same budget."""

from __future__ import annotations

import pytest

from openraft_py import BasicNode
from openraft_py.core import raft_core, restore
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(20)

BUDGET = 256 * 1024
VALUE = 8 * 1024


def _cached_data_bytes(cluster: Cluster, nid: int) -> int:
    cache = cluster.nodes[nid]._core.cache
    if not len(cache):
        return 0
    return sum(len(e.payload.data) for e in cache.get(cache.first_index(), cache.last_index() + 1)
               if hasattr(e.payload, "data"))


async def test_the_entry_cache_stays_within_its_byte_budget(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_core, "CACHE_MAX_BYTES", BUDGET)
    monkeypatch.setattr(restore, "CACHE_MAX_BYTES", BUDGET)
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    raft = cluster.nodes[leader]
    for i in range(20):  # 200 values of 8 KiB: 1.6 MiB, six times the budget
        resps = await raft.client_write_many([b"%03d" % i + bytes(VALUE) for _ in range(10)])
    last = resps[-1].log_id.index
    await cluster.wait_applied(last)
    await raft.client_write(b"one more")  # (an apply after the last count)
    await cluster.wait_applied(last + 1)
    for nid in (1, 2, 3):
        held = _cached_data_bytes(cluster, nid)
        assert held <= BUDGET, f"node {nid} caches {held} bytes of entry data"
    # A node restarted over its log fills its cache within the budget too.
    follower = min({1, 2, 3} - {leader})
    await cluster.restart(follower)
    held = _cached_data_bytes(cluster, follower)
    assert 0 < held <= BUDGET // 2, f"node {follower} caches {held} bytes of entry data at start"
    # A new learner gets the whole log, read back from the store.
    await cluster.add_node(4)
    await raft.add_learner(4, BasicNode(""), blocking=True)
    await cluster.wait_applied(last + 2, ids=[4])
    assert cluster.disks[4].applied_log == cluster.disks[leader].applied_log
