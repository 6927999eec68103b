"""``RocksLogStore`` and ``RocksStateMachine`` opened or closed by a caller that is cancelled
meanwhile (a timeout around an application's start or cleanup, Ctrl-C, a failing sibling in a
``TaskGroup``): the caller gets its ``CancelledError`` once the store's thread has ended, and no
store is left open for nobody. An open cancelled while RocksDB opened used to leave the store
open (the log store's writer thread running, RocksDB's lock held for as long as the process
lived: every later open of the path in the process failed with "the database is in use"), and
a cancelled ``aclose()`` returned while its thread still closed (or, cancelled while the log
store's fast path finished, never closed at all)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.types import Entry, LogId, Normal

pytestmark = pytest.mark.timeout(30)

STORES: list[type[Any]] = [RocksLogStore, RocksStateMachine]


def writer_threads(path: Path) -> list[str]:
    """The names of the log store writer threads still running for ``path``."""
    return [t.name for t in threading.enumerate() if t.name.startswith("rocks-log-writer") and str(path) in t.name]


async def reopen_and_close(store_cls: type[Any], path: Path) -> None:
    """The path opens again at once (RocksDB's lock is free), and closes."""
    store = await store_cls.open(path)
    await store.aclose()


@pytest.mark.parametrize("store_cls", STORES, ids=["log", "sm"])
async def test_an_open_cancelled_while_rocksdb_opens_closes_the_store(tmp_path: Path, store_cls: type[Any]) -> None:
    entered, release = threading.Event(), threading.Event()

    class Held(store_cls):  # type: ignore[valid-type,misc]
        """Its open waits in the worker thread until the test releases it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            entered.set()
            release.wait(10)
            super().__init__(*args, **kwargs)

    path = tmp_path / "store"
    opening = asyncio.ensure_future(Held.open(path))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        opening.cancel()
        done, _ = await asyncio.wait([opening], timeout=0.2)
        assert not done, "the cancelled open returned while its thread still opened the store"
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(opening, 10)
    assert writer_threads(path) == []
    await reopen_and_close(store_cls, path)


async def test_a_cancelled_aclose_of_the_log_store_closes_it_before_raising(tmp_path: Path) -> None:
    """Cancelled at each of its first steps (once it runs), after a write (the fast path may
    have fsyncs in flight): the store is closed when the ``CancelledError`` comes, and its
    writes are there."""
    path = tmp_path / "log"
    for index, steps in enumerate(range(1, 5)):
        store = await RocksLogStore.open(path)
        loop = asyncio.get_running_loop()
        flushed: asyncio.Future[BaseException | None] = loop.create_future()
        await store.append([Entry(LogId(1, index), Normal(b"x"))], IOFlushed(flushed.set_result, loop))
        assert await asyncio.wait_for(flushed, 10) is None
        closing = asyncio.ensure_future(store.aclose())
        for _ in range(steps):
            await asyncio.sleep(0)
        closing.cancel()
        try:
            await asyncio.wait_for(closing, 10)
        except asyncio.CancelledError:
            pass
        assert writer_threads(path) == []
        store = await RocksLogStore.open(path)
        try:
            assert (await store.get_log_state()).last_log_id == LogId(1, index)
        finally:
            await store.aclose()


async def test_a_cancelled_aclose_of_the_state_machine_closes_it_before_raising(tmp_path: Path) -> None:
    path = tmp_path / "sm"
    for steps in range(1, 4):
        sm = await RocksStateMachine.open(path)
        closing = asyncio.ensure_future(sm.aclose())
        for _ in range(steps):
            await asyncio.sleep(0)
        closing.cancel()
        try:
            await asyncio.wait_for(closing, 10)
        except asyncio.CancelledError:
            pass
        await reopen_and_close(RocksStateMachine, path)
