"""``wakeup.send_none`` and ``wakeup.Resumed``, with which the core runs a coroutine that
usually completes without suspending (a log store's ``save_committed``, a state machine's
``apply``) from plain code, and finishes one that did suspend in its task; and the core's
commit with a ``save_committed`` that suspends or fails (docs/design/performance.md, the
forty-eighth round)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from openraft_py import Config, SnapshotPolicy, StorageError
from openraft_py.storage.memory import MemLogStore
from openraft_py.testing.cluster import Cluster
from openraft_py.wakeup import Resumed, send_none

pytestmark = pytest.mark.timeout(30)


async def test_a_coroutine_that_returns_gives_its_value() -> None:
    async def f() -> int:
        return 7

    assert send_none(f()) == (True, 7)


async def test_a_coroutine_that_suspends_gives_what_it_yielded_and_resumed_finishes_it() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    seen: list[int] = []

    async def f() -> str:
        seen.append(await fut)
        return "done"

    coro = f()
    done, yielded = send_none(coro)
    assert not done and yielded is fut
    task = asyncio.ensure_future(Resumed(coro, yielded))
    await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(3)
    assert await task == "done"
    assert seen == [3]


async def test_what_a_coroutine_raises_propagates() -> None:
    async def f() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        send_none(f())


async def test_a_resumed_coroutine_is_cancelled_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    cleaned: list[bool] = []

    async def f() -> None:
        try:
            await fut
        finally:
            cleaned.append(True)

    coro = f()
    done, yielded = send_none(coro)
    assert not done
    task = asyncio.ensure_future(Resumed(coro, yielded))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and fut.cancelled()


class _SlowCommitStore(MemLogStore):
    """``save_committed`` suspends (a loop turn) before it saves: the core's pass finishes in
    a coroutine of its own (``RaftCore._finish_save_committed``)."""

    saved: ClassVar[list[Any]] = []

    async def save_committed(self, committed: Any) -> None:
        await asyncio.sleep(0)
        await super().save_committed(committed)
        _SlowCommitStore.saved.append(committed)


class _FailingCommitStore(MemLogStore):
    """``save_committed`` raises at once, once told to (``fail``)."""

    fail = False

    async def save_committed(self, committed: Any) -> None:
        if _FailingCommitStore.fail:
            raise OSError("disk gone")
        await super().save_committed(committed)


def _config() -> Config:
    return Config(snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000,
                  enable_tick=False)


async def test_a_save_committed_that_suspends_still_commits_and_applies() -> None:
    _SlowCommitStore.saved = []
    async with Cluster(_config(), log_store=lambda nid, disk: _SlowCommitStore(disk)) as c:
        await c.start({1, 2, 3})
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        results = [await asyncio.wait_for(leader.client_write(b"w%d" % i), 5) for i in range(20)]
        assert [r.log_id.index for r in results] == sorted(r.log_id.index for r in results)
        last = results[-1].log_id
        # (No ticks: a follower learns the last commit with the next request only.)
        for raft in c.nodes.values():
            await raft.wait(5).applied_index_at_least(last.index - (raft is not leader))
    assert last in _SlowCommitStore.saved


async def test_a_save_committed_that_raises_stops_the_node_with_a_storage_error() -> None:
    _FailingCommitStore.fail = False
    async with Cluster(_config(), log_store=lambda nid, disk: _FailingCommitStore(disk)) as c:
        await c.start({1})
        await c.nodes[1].trigger.elect()
        raft = c.nodes[await c.wait_for_leader(timeout=10)]
        await asyncio.wait_for(raft.client_write(b"before"), 5)
        _FailingCommitStore.fail = True
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(raft.client_write(b"during"), 5)
        assert "saving committed" in str(info.value) and "disk gone" in str(info.value)
        c.nodes.pop(1)


def test_the_compiled_wakeup_sends_without_stop_iteration() -> None:
    """Whichever build loaded ``wakeup``, ``send_none`` takes its path: the C one
    (``PyIter_Send``) exactly when the module is the extension."""
    from openraft_py import wakeup
    from openraft_py._compiled import loaded_compiled

    assert wakeup._COMPILED is loaded_compiled()["openraft_py.wakeup"]
