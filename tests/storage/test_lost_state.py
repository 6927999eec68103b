"""A node whose state machine lost its state after the log was purged (its directory removed,
or a state machine that keeps nothing across restarts over a durable log) is refused by
``Raft.new`` with a ``StorageError`` saying so. It used to start, then stop at its first apply
with a ``LogCompacted`` error naming neither store (``serve`` logged "serving" and then exited
1); the log is left as it was. One that lost only its snapshot files gets a new snapshot at
start, so it can still bring a node behind its purged log up to date."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, Raft, StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.storage.rocks import RocksLogStore

pytestmark = pytest.mark.timeout(30)


async def _run_and_purge(root: Path) -> int:
    """A one-node cluster on RocksDB stores under ``root``: five writes, a snapshot, the log
    purged up to it. Returns the purged index."""
    log, sm = await RocksLogStore.open(root / "log"), await RocksStateMachine.open(root / "sm")
    router = Router(seed=7)
    raft = await Raft.new(1, fast_config(), router.factory(1), log, sm, seed=7)
    try:
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(10).current_leader(1, "elected")
        for i in range(5):
            await raft.client_write(encode_kv(KvSet(f"k{i}", "v")))
        applied = raft.metrics.last_applied
        assert applied is not None
        await raft.trigger.snapshot()
        await raft.wait(10).snapshot(applied, "snapshot built")
        await raft.trigger.purge_log(applied.index)
        await raft.wait(10).purged(applied, "log purged")
    finally:
        await raft.shutdown()
        await log.aclose()
        await sm.aclose()
    return applied.index


@pytest.mark.parametrize("how", ["directory removed", "kept in memory"])
async def test_a_state_machine_behind_the_purged_log_is_refused_at_start(tmp_path: Path, how: str) -> None:
    purged = await _run_and_purge(tmp_path)
    log = await RocksLogStore.open(tmp_path / "log")
    if how == "directory removed":
        shutil.rmtree(tmp_path / "sm")
        sm: RocksStateMachine | MemStateMachine = await RocksStateMachine.open(tmp_path / "sm")
    else:
        sm = MemStateMachine()
    try:
        before = await log.get_log_state()
        with pytest.raises(StorageError, match=rf"node 1: the state machine has applied nothing but the log is "
                                               rf"purged up to \d+-{purged}: .* cannot catch up"):
            await Raft.new(1, fast_config(), Router().factory(1), log, sm)
        assert await log.get_log_state() == before, "the refused start changed the log"
    finally:
        await log.aclose()
        if isinstance(sm, RocksStateMachine):
            await sm.aclose()


@pytest.mark.parametrize("removed", ["snapshots", "snapshots/current.meta"])
async def test_a_purged_log_without_a_snapshot_gets_one_at_start(tmp_path: Path, removed: str) -> None:
    """The state machine's snapshot files removed (``current.meta`` alone takes the snapshot
    file with it: the open deletes files it does not name) while its log is purged: the
    node, as leader, could never bring a learner behind the purged id up to date ("no
    snapshot covers the purged log yet" at every attempt, for good). Now the start builds a
    snapshot of the applied state first, and the learner catches up."""
    purged = await _run_and_purge(tmp_path)
    target = tmp_path / "sm" / removed
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    log, sm = await RocksLogStore.open(tmp_path / "log"), await RocksStateMachine.open(tmp_path / "sm")
    router = Router(seed=8)
    raft = await Raft.new(1, fast_config(), router.factory(1), log, sm, seed=8)
    learner = None
    learner_sm = await RocksStateMachine.open(tmp_path / "learner")
    try:
        router.register(1, raft)
        assert raft.metrics.snapshot is not None and raft.metrics.snapshot.index >= purged
        await raft.wait(10).current_leader(1, "elected")
        learner = await Raft.new(2, fast_config(), router.factory(2), MemLogStore(), learner_sm, seed=8)
        router.register(2, learner)
        await asyncio.wait_for(raft.add_learner(2, BasicNode(""), blocking=True), 10)
        m = await learner.wait(10).applied_index_at_least(purged, "the learner caught up")
        assert m.snapshot is not None and m.snapshot.index >= purged
    finally:
        if learner is not None:
            await learner.shutdown()
        await learner_sm.aclose()
        await raft.shutdown()
        await log.aclose()
        await sm.aclose()
