"""A node whose state machine lost its state after the log was purged (its directory removed,
or a state machine that keeps nothing across restarts over a durable log) is refused by
``Raft.new`` with a ``StorageError`` saying so. It used to start, then stop at its first apply
with a ``LogCompacted`` error naming neither store (``serve`` logged "serving" and then exited
1); the log is left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from integration.checks import fast_config

from openraft_py import Raft, StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.memory import MemStateMachine
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
