"""A follower's pass run as a guest on the leader's task (``openraft_py.core.guest``: the
in-process router's fast mode) runs as if on the follower's own task: its plug-ins see the
follower's core task as the current task and run in its context, and what they raise or
wait for stays with the follower, never the leader."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from openraft_py import Config, Raft, SnapshotPolicy
from openraft_py.errors import StorageError
from openraft_py.storage.memory import MemDisk, MemLogStore, NoopStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry, LogId

pytestmark = pytest.mark.timeout(30)

CONFIG = Config(
    snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
)

_NODE: contextvars.ContextVar[int] = contextvars.ContextVar("t65_node")


class _Seen:
    """What each node's plug-ins saw: the current task, and the context variable they set."""

    def __init__(self) -> None:
        self.nodes: dict[int, Raft[Any]] = {}
        self.tasks: dict[int, set[asyncio.Task[Any] | None]] = {}
        self.foreign: list[tuple[int, int]] = []  # (node, value of another node seen in its context)

    def saw(self, node: int) -> None:
        self.tasks.setdefault(node, set()).add(asyncio.current_task())
        other = _NODE.get(node)
        if other != node:
            self.foreign.append((node, other))
        _NODE.set(node)


class _WatchedSM(NoopStateMachine):
    def __init__(self, disk: MemDisk, seen: _Seen, node: int) -> None:
        super().__init__(disk)
        self._seen = seen
        self._node = node

    async def apply(self, entries: list[Entry]) -> list[Any]:
        self._seen.saw(self._node)
        return await super().apply(entries)


class _WatchedLog(MemLogStore):
    def __init__(self, disk: MemDisk, seen: _Seen, node: int) -> None:
        super().__init__(disk)
        self._seen = seen
        self._node = node

    append = MemLogStore.append  # (with append_durable in the class: the node calls that)

    def append_durable(self, entries: list[Entry]) -> None:
        self._seen.saw(self._node)
        super().append_durable(entries)


async def _leader(c: Cluster[Any, Any]) -> Raft[Any]:
    await c.start({1, 2, 3})
    await c.nodes[1].trigger.elect()
    return c.nodes[await c.wait_for_leader(timeout=10)]


async def test_a_followers_plugins_see_its_own_task_and_context() -> None:
    """Each node's log store and state machine, over 30 steady writes, saw only that node's
    core task as the current task (the state machine's inline apply runs on it), and each
    ran in its own node's context: a context variable one node's plug-in sets is never seen
    by another node's. Run on the leader's task without switching, a follower's plug-ins
    saw the leader's task and set the variable in the leader's context."""
    seen = _Seen()
    disks: dict[int, MemDisk] = {}

    def disk(node: int) -> MemDisk:
        return disks.setdefault(node, MemDisk())

    def sm(d: MemDisk) -> _WatchedSM:
        node = next(n for n, x in disks.items() if x is d)
        return _WatchedSM(d, seen, node)

    async with Cluster(
        CONFIG, disk=disk, state_machine=sm, log_store=lambda node, d: _WatchedLog(d, seen, node)
    ) as c:
        leader = await _leader(c)
        await leader.client_write(b"warm")
        seen.tasks.clear()
        seen.foreign.clear()
        for _ in range(30):
            await leader.client_write(b"w")
        last = leader.metrics.last_log_index
        assert last is not None
        for raft in c.nodes.values():
            # (No tick, no heartbeat: a follower learns a commit from the next request.)
            await asyncio.wait_for(raft.wait().applied_index_at_least(last if raft is leader else last - 1), 10)
        for node, raft in c.nodes.items():
            assert seen.tasks.get(node) == {raft._core.task}, (node, seen.tasks.get(node), raft._core.task)
        assert not seen.foreign, f"(node, another node's value in its context): {seen.foreign[:5]}"
        assert c.nodes[2]._core.guest_passes > 0 and c.nodes[3]._core.guest_passes > 0


class _FailingLog(MemLogStore):
    """Fails its append once ``fail`` is set."""

    fail = False
    append = MemLogStore.append

    def append_durable(self, entries: list[Entry]) -> None:
        if self.fail:
            raise OSError("t65: the disk is gone")
        super().append_durable(entries)


async def test_a_follower_store_failing_in_a_guest_pass_stops_that_follower_only() -> None:
    stores: dict[int, _FailingLog] = {}

    def log_store(node: int, d: MemDisk) -> _FailingLog:
        return stores.setdefault(node, _FailingLog(d))

    async with Cluster(CONFIG, log_store=log_store) as c:
        leader = await _leader(c)
        await leader.client_write(b"warm")
        follower = next(n for n in c.nodes if c.nodes[n] is not leader)
        before = c.nodes[follower]._core.guest_passes
        stores[follower].fail = True
        for _ in range(10):
            await asyncio.wait_for(leader.client_write(b"w"), 10)
        core = c.nodes[follower]._core
        await asyncio.wait_for(asyncio.shield(core.task), 10)  # type: ignore[arg-type]
        assert isinstance(core.fatal, StorageError), core.fatal
        assert "t65: the disk is gone" in repr(core.fatal.__cause__) or "t65" in str(core.fatal)
        assert core.guest_passes > before  # (the failing pass was a guest's)
        assert leader._core.fatal is None and leader.metrics.state.name == "LEADER"


class _SlowCommitLog(MemLogStore):
    """``save_committed`` suspends (a loop turn) every time: the rest of a follower's pass
    goes to its own task."""

    async def save_committed(self, committed: LogId | None) -> None:
        await asyncio.sleep(0)
        await super().save_committed(committed)


async def test_the_rest_of_a_guest_pass_goes_on_on_the_followers_task() -> None:
    async with Cluster(CONFIG, log_store=lambda node, d: _SlowCommitLog(d)) as c:
        leader = await _leader(c)
        for _ in range(20):
            await asyncio.wait_for(leader.client_write(b"w"), 10)
        last = leader.metrics.last_log_index
        assert last is not None
        for raft in c.nodes.values():
            # (No tick, no heartbeat: a follower learns a commit from the next request.)
            await asyncio.wait_for(raft.wait().applied_index_at_least(last if raft is leader else last - 1), 10)
            assert raft._core.fatal is None
            assert raft is leader or raft._core.guest_passes >= 19, raft._core.guest_passes


async def test_each_follower_pass_of_a_steady_write_is_a_guest_pass() -> None:
    """A steady 1-writer write runs each follower's pass as a guest on the leader's task:
    two guest passes a write (the task resumptions are counted in
    ``tests/core/test_write_path_calls.py``)."""
    async with Cluster(CONFIG) as c:
        leader = await _leader(c)
        for _ in range(5):
            await leader.client_write(b"warm")
        before = {n: r._core.guest_passes for n, r in c.nodes.items()}
        for _ in range(40):
            await leader.client_write(b"w")
        after = {n: r._core.guest_passes - before[n] for n, r in c.nodes.items()}
        assert sorted(after.values()) == [0, 40, 40], after
