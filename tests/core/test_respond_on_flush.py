"""A ``Respond`` waiting for a log write runs from the log store's flush callback: when the
store reports the write durable while the core runs no commands, the runtime answers the
caller there and then (a follower's AppendEntries answer leaves without waiting for the
core's next pass), and the engine learns the durable io in its next pass. An answer never
leaves before its write is durable; a flush error still stops the node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import AppendEntriesRequest, Entry, LogId, Normal
from openraft_py.storage import IOFlushed
from openraft_py.storage.memory import MemDisk, MemLogStore
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

BOUND = 5.0


class HeldFlushLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends, while ``hold`` is set, report durability only when
    the test calls ``release()`` (from a plain loop callback, outside the core's pass)."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.hold = False
        self.held: list[IOFlushed] = []

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        if not self.hold:
            await super().append(entries, callback)
            return
        sink = _Held()
        await super().append(entries, sink)  # type: ignore[arg-type]
        self.held.append(callback)

    def release(self, err: BaseException | None = None) -> None:
        held, self.held = self.held, []
        for cb in held:
            cb.io_completed(err)


class _Held:
    def io_completed(self, err: BaseException | None) -> None:
        pass


async def _follower_with_held_flushes(c: Cluster) -> tuple[Any, HeldFlushLogStore, Any]:
    await c.start({1, 2, 3})
    leader_id = await c.wait_for_leader()
    leader = c.nodes[leader_id]
    await leader.client_write(b"ok")
    fid = next(i for i in c.nodes if i != leader_id)
    follower = c.nodes[fid]
    await asyncio.wait_for(follower.wait(BOUND).applied_index_at_least(leader.metrics.last_log_index), BOUND)
    c.router.isolate(leader_id)  # the real leader sends nothing more: the test is the leader
    store = c.log_stores[fid]
    store.hold = True
    return leader, store, follower


async def test_the_answer_leaves_from_the_flush_callback() -> None:
    c = Cluster(fast_config(), seed=3, log_store=lambda nid, disk: HeldFlushLogStore(disk))
    try:
        leader, store, follower = await _follower_with_held_flushes(c)
        last = follower._core.engine.state.last_log_id()
        vote = leader.metrics.vote
        entry = Entry(LogId(last.term, last.index + 1), Normal(b"held"))
        got: list[Any] = []
        follower.submit_append_entries(AppendEntriesRequest(vote, last, [entry], None), got.append)
        for _ in range(200):  # the follower's pass appends it; its flush is held
            if store.held:
                break
            await asyncio.sleep(0.001)
        assert store.held and got == []  # not durable yet: no answer
        for _ in range(5):
            await asyncio.sleep(0)
        assert got == []

        released: list[int] = []

        def release_and_look() -> None:
            store.release()
            released.append(len(got))  # what had been answered when the callback returned

        asyncio.get_running_loop().call_soon(release_and_look)
        await asyncio.sleep(0)
        assert released == [1]  # answered inside the flush callback, before any core pass
        assert got[0].success and got[0].matching == entry.log_id
        # The engine learns the flush too: the follower's metrics show the entry durable.
        await asyncio.wait_for(follower.wait(BOUND).log_index_at_least(entry.log_id.index), BOUND)
    finally:
        await c.shutdown()


async def test_a_flush_error_still_stops_the_node_unanswered() -> None:
    c = Cluster(fast_config(), seed=4, log_store=lambda nid, disk: HeldFlushLogStore(disk))
    try:
        leader, store, follower = await _follower_with_held_flushes(c)
        last = follower._core.engine.state.last_log_id()
        entry = Entry(LogId(last.term, last.index + 1), Normal(b"held"))
        got: list[Any] = []
        follower.submit_append_entries(AppendEntriesRequest(leader.metrics.vote, last, [entry], None), got.append)
        for _ in range(200):
            if store.held:
                break
            await asyncio.sleep(0.001)
        assert store.held
        store.release(OSError(5, "disk gone"))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.001)
        # Never a success for a write that failed: the node stopped and answered with its error.
        assert len(got) == 1 and isinstance(got[0], BaseException)
    finally:
        await c.shutdown()
