"""A one-node cluster on RocksDB stores, for tests that damage what it leaves on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from integration.checks import fast_config

from openraft_py import Raft
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage.rocks import RocksLogStore


@asynccontextmanager
async def one_rocks_node(root: Path, seed: int) -> AsyncIterator[Raft]:
    """A one-node cluster on RocksDB stores under ``root`` (``root/log``, ``root/sm``),
    elected; stopped cleanly at the end (its stores then hold table files and write-ahead
    logs)."""
    log, sm = await RocksLogStore.open(root / "log"), await RocksStateMachine.open(root / "sm")
    router = Router(seed=seed)
    raft = await Raft.new(1, fast_config(), router.factory(1), log, sm, seed=seed)
    try:
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(10).current_leader(1, "elected")
        yield raft
    finally:
        await raft.shutdown()
        await log.aclose()
        await sm.aclose()
