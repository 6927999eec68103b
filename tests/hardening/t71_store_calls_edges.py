"""Two edges of the count of a RocksDB store's calls that its ``close()`` waits for
(``StoreCalls`` in ``openraft_py/storage/rocks/db.py``; t68 has the main cases).

A call its executor dropped before it started: ``StoreCalls.run`` counts a call from the
moment it is queued until it has run in its worker thread. An executor shut down with
``cancel_futures=True`` (an application's own default executor, stopped as it exits) drops
the calls still queued: they never run, their callers get ``CancelledError``. The count kept
them for good: every later ``close()`` of the store waited the whole ``CLOSE_CALLS_WAIT``
(30 s) for a call that would never come, then raised ``StorageError`` saying a call "still
ran in worker threads" and that RocksDB's lock stayed held, neither of which was true. Now a
call dropped unstarted leaves the count as its executor's future completes, and what its
arguments hold is released then (a log read's image: left to the garbage collector, it
kept the lock held after the close).

A log read suspended on the loop's thread, closed under by a ``close()`` called on that
thread: a read of a range whose not-yet-durable entries have holes (``_read_runs``) makes a
RocksDB image of each stored run at once and reads them in turn, counted with
``StoreCalls.hold`` in the loop's thread. A ``close()`` on that thread cannot wait for it (the
read resumes only once the close returned), and it returned with the images of the runs not
read yet still open: they pin the database, so RocksDB's lock stayed held and an open of the
same path right after was refused as "in use", against ``close()``'s contract. Now the close
releases them (``hold``'s ``release``), and the read, resumed, fails with ``StorageError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from openraft_py import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import db, log_store
from openraft_py.storage.rocks.log_store import INLINE_READ_MAX, RocksLogStore
from openraft_py.types import Entry, LogId

from .rocks_close_helpers import BOUND, filled_log_store, kv_entries, no_collector, read_entered

pytestmark = pytest.mark.timeout(60)

WAIT = 8.0
"""``CLOSE_CALLS_WAIT`` in these tests: a close that waits for the dropped call takes that long."""





async def dropped_unstarted(make_call: Callable[[], Awaitable[Any]]) -> None:
    """Run ``make_call()`` on a one-thread default executor kept busy, then shut the executor
    down with ``cancel_futures=True``: the store's call, still queued, never runs, and its
    caller gets ``CancelledError``. The loop gets a new default executor afterwards."""
    loop = asyncio.get_running_loop()
    one = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="t71-one")
    loop.set_default_executor(one)
    started, gate = threading.Event(), threading.Event()

    def occupy() -> None:
        started.set()
        gate.wait(BOUND)

    try:
        busy = loop.run_in_executor(None, occupy)
        async with asyncio.timeout(BOUND):
            while not started.is_set():  # (the executor's one thread is taken: nothing else to await)
                await asyncio.sleep(0.01)
            call = asyncio.ensure_future(make_call())
            while one._work_queue.qsize() < 1:  # the call is queued behind ``occupy``
                await asyncio.sleep(0.01)
        one.shutdown(wait=False, cancel_futures=True)
    finally:
        gate.set()
    async with asyncio.timeout(BOUND):
        await busy
        with pytest.raises(asyncio.CancelledError):
            await call
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(thread_name_prefix="t71-next"))


def timed_close(close: Callable[[], None]) -> float:
    start = time.monotonic()
    close()  # raises StorageError when it gave a call up
    return time.monotonic() - start


async def test_a_state_machine_call_dropped_unstarted_does_not_hold_its_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", WAIT)
    sm = RocksStateMachine(tmp_path / "sm")
    with no_collector():
        try:
            await sm.apply(kv_entries(1, 11))
            await dropped_unstarted(sm.get_current_snapshot_meta)
        finally:
            took = timed_close(sm.close)
    assert took < WAIT / 2, f"close() waited {took:.1f}s for a call its executor had dropped"
    async with RocksStateMachine(tmp_path / "sm") as again:  # the lock was released
        assert (await again.applied_state())[0] == LogId(1, 10)


async def test_a_log_read_dropped_unstarted_does_not_hold_its_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", WAIT)
    store = await filled_log_store(tmp_path / "log", 4 * INLINE_READ_MAX)
    with no_collector():
        try:
            reader = store.get_log_reader()
            await dropped_unstarted(lambda: reader.try_get_log_entries(0, 4 * INLINE_READ_MAX))  # in a worker thread
        finally:
            took = timed_close(store.close)
        assert took < WAIT / 2, f"close() waited {took:.1f}s for a read its executor had dropped"
        RocksLogStore(tmp_path / "log", sync=False).close()  # the lock is free at once: the read's image was released


async def test_a_sync_close_on_the_loop_releases_the_images_of_a_read_it_cannot_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 4 * INLINE_READ_MAX
    store = await filled_log_store(tmp_path / "log", n)
    entries = kv_entries(0, n)
    try:
        # A hole: one entry in the middle is (again) waiting to be durable, as when a later
        # append became durable before an earlier one. The read takes two stored runs then,
        # the first in a worker thread, each through an image made at once.
        store._pending[n // 2] = entries[n // 2]
        inside, release = threading.Event(), threading.Event()
        first = log_store._read_entries

        def held(image: Any, start: int) -> list[Entry]:
            inside.set()
            release.wait(BOUND)
            return first(image, start)

        monkeypatch.setattr(log_store, "_read_entries", held)
        read = await read_entered(store, n, inside)
        threading.Timer(0.2, release.set).start()  # the first run's read ends while close() waits for it
        store.close()  # on the loop's thread: the read cannot resume before it returns
        RocksLogStore(tmp_path / "log", sync=False).close()  # the lock is free at once
        with pytest.raises(StorageError, match="closed"):
            async with asyncio.timeout(BOUND):
                await read
    finally:
        release.set()
        store.close()


async def test_a_read_given_up_by_the_close_that_comes_back_short_raises_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log read in its worker thread past ``CLOSE_CALLS_WAIT`` is given up by the close,
    which closes RocksDB under it. When it comes back short, the store is closed: the read
    raises ``StorageError`` "closed", not the ``AttributeError`` of looking for why it was
    short in the closed database."""
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", 0.2)
    n = 4 * INLINE_READ_MAX
    store = await filled_log_store(tmp_path / "log", n)
    inside, release = threading.Event(), threading.Event()
    try:

        def held(image: Any, start: int) -> list[Entry]:
            inside.set()
            release.wait(BOUND)
            image.close()
            return []  # short: as a read of a database closed under it finds

        monkeypatch.setattr(log_store, "_read_entries", held)
        read = await read_entered(store, n, inside)
        with pytest.raises(StorageError, match="still ran in worker threads"):
            await asyncio.get_running_loop().run_in_executor(None, store.close)
        release.set()
        with pytest.raises(StorageError, match="closed"):
            async with asyncio.timeout(BOUND):
                await read
    finally:
        release.set()
        store.close()
