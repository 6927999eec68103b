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


async def cancel_after(coro: Any, steps: int) -> None:
    """Run ``coro`` for ``steps`` loop turns, cancel it, and wait (10 s at most) until it has
    ended, with its ``CancelledError`` or with its own end if it came first."""
    task = asyncio.ensure_future(coro)
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await asyncio.wait_for(task, 10)
    except asyncio.CancelledError:
        pass


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
        await cancel_after(store.aclose(), steps)
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
        await cancel_after(sm.aclose(), steps)
        await reopen_and_close(RocksStateMachine, path)


# -- one store, several event loops ---------------------------------------------------------------


async def _append_and_wait(store: RocksLogStore, index: int, sends_first: bool) -> None:
    """Append entry ``index`` and wait until it is durable."""
    loop = asyncio.get_running_loop()
    flushed: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append([Entry(LogId(1, index), Normal(b"x"))], IOFlushed(flushed.set_result, loop, sends_first))
    assert await asyncio.wait_for(flushed, 10) is None


@pytest.mark.parametrize("sends_first", [False, True], ids=["follower", "leader"])
def test_a_log_store_kept_across_event_loops_goes_on_writing(tmp_path: Path, sends_first: bool) -> None:
    """A store opened once and used by one ``asyncio.run`` after another (an application
    restarting its node in the process, a test fixture outliving a test's loop). Its fast path
    stayed bound to the loop of its first write: on the next loop every append failed with
    "RuntimeError: Event loop is closed" (the node stopped with a ``StorageError``), and an
    append written but not yet fsynced when that loop ended never completed."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        for run in range(3):

            async def appends(first: int = run * 5) -> None:
                for index in range(first, first + 5):
                    await _append_and_wait(store, index, sends_first)

            asyncio.run(appends())
    finally:
        store.close()
    reopened = RocksLogStore(path)
    try:
        assert asyncio.run(reopened.get_log_state()).last_log_id == LogId(1, 14)
    finally:
        reopened.close()


@pytest.mark.parametrize("sends_first", [False, True], ids=["follower", "leader"])
def test_writes_an_ended_loop_left_pending_complete_on_the_next(tmp_path: Path, sends_first: bool) -> None:
    """A loop closed right after an append (its fsync, or with ``sends_first`` the write
    itself, still waiting for that loop's next passes): the next loop's append completes after
    it, and ``aclose()`` on another loop finishes the last one; all three are durable. The
    next append never completed (a leader's stayed queued behind the lost one), and the
    ``aclose()`` waited for good for completions only the closed loop would have reaped."""
    path = tmp_path / "log"
    store = RocksLogStore(path)

    async def append_only(index: int) -> None:
        loop = asyncio.get_running_loop()
        await store.append([Entry(LogId(1, index), Normal(b"x"))], IOFlushed(lambda e: None, loop, sends_first))

    def in_a_loop_closed_at_once(index: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(append_only(index))
        finally:
            loop.close()

    async def close() -> None:
        await asyncio.wait_for(store.aclose(), 10)

    try:
        in_a_loop_closed_at_once(0)
        asyncio.run(_append_and_wait(store, 1, sends_first))
        in_a_loop_closed_at_once(2)
        asyncio.run(close())
    finally:
        store.close()
    reopened = RocksLogStore(path)
    try:
        assert asyncio.run(reopened.get_log_state()).last_log_id == LogId(1, 2)
    finally:
        reopened.close()
