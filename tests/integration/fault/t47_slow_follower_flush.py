"""A leader keeps its leadership while its followers' log flushes take longer than
``election_timeout_max`` (a multi-megabyte entry on a slow disk).

A follower answers a heartbeat at once, with the part of the leader's log it holds durably
(``FollowingHandler.append_entries``), instead of after every write it has under way: the
leader's check-quorum then hears from a quorum in time. Before, every answer waited for the
pending flush, and under the default timeouts a flush of 400 ms made the leader step down
("no quorum acknowledged it within election_timeout_max"), its writers getting errors.
"""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import Config, Entry, ServerState, SnapshotPolicy
from openraft_py.storage import IOFlushed
from openraft_py.storage.memory import MemDisk, MemLogStore
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

# Longer than the default election_timeout_max (300 ms).
FLUSH_DELAY = 0.4


class SlowFlushLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends, while ``slow`` is set, are readable at once but
    reported durable only ``FLUSH_DELAY`` seconds later (in order)."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.slow = False
        self.delayed = 0

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        if not self.slow:
            await super().append(entries, callback)
            return
        await super().append(entries, _Ignored())  # type: ignore[arg-type]
        self.delayed += 1
        asyncio.get_running_loop().call_later(FLUSH_DELAY, callback.io_completed, None)


class _Ignored:
    def io_completed(self, err: BaseException | None) -> None:
        pass


async def test_leader_stays_while_follower_flushes_take_longer_than_the_election_timeout() -> None:
    config = Config(snapshot_policy=SnapshotPolicy.never())  # the default timeouts
    c = Cluster(config, seed=5, log_store=lambda nid, disk: SlowFlushLogStore(disk))
    try:
        await c.start({1, 2, 3})
        leader_id = await c.wait_for_leader()
        leader = c.nodes[leader_id]
        await leader.client_write(b"before")
        term = leader.metrics.vote.term
        followers = [nid for nid in c.nodes if nid != leader_id]
        for nid in followers:
            c.log_stores[nid].slow = True
        stepped_down: list[str] = []

        async def watch() -> None:
            while True:
                m = leader.metrics
                if m.state is not ServerState.LEADER or m.vote.term != term:
                    stepped_down.append(m.describe())
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            for i in range(4):
                r = await asyncio.wait_for(leader.client_write(f"slow-{i}".encode()), 10.0)
                assert r.log_id.term == term
        finally:
            watcher.cancel()
        assert all(c.log_stores[nid].delayed >= 4 for nid in followers)
        assert stepped_down == [], f"the leader stepped down: {stepped_down[0]}"
        assert leader.metrics.vote.term == term and leader.metrics.state is ServerState.LEADER
    finally:
        await c.shutdown()
