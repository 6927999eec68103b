"""A RocksDB store closed while one of its own calls still runs in a worker thread
(``StoreCalls`` in ``openraft_py/storage/rocks/db.py``).

A thread cannot be stopped: when the caller of a store call running in one is cancelled (a
``Raft.shutdown()`` that was cancelled itself, a plug-in's timeout) and the store is closed
meanwhile, the thread runs on. ``aclose()``/``close()`` returned at once and closed RocksDB
under it: an apply batch in its thread then failed with ``AttributeError: 'RocksStateMachine'
object has no attribute '_cf'`` (the batch lost), a snapshot build with ``... no attribute
'_db'`` after it had streamed the whole image, and a log read pinned the database, so the
close returned with RocksDB's lock still held and an open of the path right after was
refused as "in use". Now the close waits for them (bounded by ``CLOSE_CALLS_WAIT``: past it,
a WARNING and a ``StorageError`` naming the path, and the late call fails with
``StorageError``), and every call made once the close began is refused with ``StorageError``.

Each call is held in its thread by a hook until the close has had the time to end under it
(``HELD``): a close that does not wait ends within that time, and the test fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from integration.checks import until

from openraft_py import StorageError
from openraft_py.kv import rocks_state_machine as rsm
from openraft_py.kv.rocks_state_machine import APPLY_INLINE_MAX, RocksStateMachine
from openraft_py.storage.rocks import db, log_store
from openraft_py.storage.rocks.log_store import INLINE_READ_MAX, RocksLogStore
from openraft_py.types import LogId

from .rocks_close_helpers import BOUND, filled_log_store, kv_entries

pytestmark = pytest.mark.timeout(30)

HELD = 0.5
"""Seconds a held call waits (for the close to end under it) before it goes on by itself."""





class Hold:
    """Holds the first call of ``fn`` in its worker thread until ``release`` (set when the
    close ended, or by the test) or ``HELD`` seconds, and records what the call did."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.inside = threading.Event()
        self.release = threading.Event()
        self.outcome: list[str] = []
        self._first = True

    def __call__(self, *args: Any, **kw: Any) -> Any:
        if not self._first:
            return self.fn(*args, **kw)
        self._first = False
        self.inside.set()
        self.release.wait(HELD)
        try:
            out = self.fn(*args, **kw)
        except BaseException as e:
            self.outcome.append(f"raised {e!r}")
            raise
        self.outcome.append("returned")
        return out


async def close_under(store: Any, hold: Hold, call: asyncio.Future[Any]) -> None:
    """Cancel ``call`` (held in its thread by ``hold``) and close ``store``: the close must not
    end while the call runs, and a call made meanwhile is refused."""
    async with asyncio.timeout(BOUND):
        await asyncio.to_thread(hold.inside.wait)
    call.cancel()  # its thread goes on
    closing = asyncio.ensure_future(store.aclose())
    closing.add_done_callback(lambda _: hold.release.set())  # a close that did not wait lets it go on
    await until(lambda: store._closed, "the close began", timeout=BOUND)
    done, _ = await asyncio.wait({closing}, timeout=HELD / 2)
    assert not done, "aclose() ended while a call of the store still ran in its worker thread"
    with pytest.raises(StorageError, match="closed"):
        if isinstance(store, RocksLogStore):
            await store.get_log_reader().try_get_log_entries(0, 10)
        else:
            await store.apply(kv_entries(10_000, 10_001))
    hold.release.set()
    async with asyncio.timeout(BOUND):
        await closing
    with pytest.raises(asyncio.CancelledError):
        await call
    assert hold.outcome == ["returned"], f"the call in the thread: {hold.outcome}"


async def test_closing_a_state_machine_waits_for_an_apply_in_its_thread(tmp_path: Path) -> None:
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        await sm.apply(kv_entries(1, 11))
        hold = Hold(sm._apply_sync)
        sm._apply_sync = hold  # type: ignore[method-assign]
        batch = kv_entries(11, 11 + APPLY_INLINE_MAX + 50)  # applied in a worker thread
        await close_under(sm, hold, asyncio.ensure_future(sm.apply(batch)))
    finally:
        sm.close()
    # The batch was written before RocksDB closed, and the lock was released.
    async with RocksStateMachine(tmp_path / "sm") as again:
        assert (await again.applied_state())[0] == batch[-1].log_id
        assert again.get(f"k{batch[-1].log_id.index}") == f"v{batch[-1].log_id.index}"


async def test_closing_a_state_machine_waits_for_a_snapshot_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        await sm.apply(kv_entries(1, 21))
        hold = Hold(rsm.write_snapshot)
        monkeypatch.setattr(rsm, "write_snapshot", hold)
        await close_under(sm, hold, asyncio.ensure_future(sm.get_snapshot_builder().build_snapshot()))
    finally:
        sm.close()
    # The lock was released by the close (the build's image no longer pins the database), and
    # the snapshot the build made is the current one.
    async with RocksStateMachine(tmp_path / "sm") as again:
        meta = await again.get_current_snapshot_meta()
        assert meta is not None and meta.last_log_id == LogId(1, 20)


async def test_closing_a_log_store_waits_for_a_read_in_its_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await filled_log_store(tmp_path / "log", 4 * INLINE_READ_MAX)
    try:
        hold = Hold(log_store._read_entries)
        monkeypatch.setattr(log_store, "_read_entries", hold)
        read = asyncio.ensure_future(store.get_log_reader().try_get_log_entries(0, 4 * INLINE_READ_MAX))
        await close_under(store, hold, read)
    finally:
        store.close()
    # Right after the close: its lock is free (the read's image no longer pins the database).
    RocksLogStore(tmp_path / "log", sync=False).close()


async def test_a_sync_close_waits_for_a_read_in_its_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``close()`` called on the loop (not ``aclose()``) waits too: it blocks the loop until
    the read in the thread has ended, then releases the lock."""
    store = await filled_log_store(tmp_path / "log", 4 * INLINE_READ_MAX)
    hold = Hold(log_store._read_entries)
    monkeypatch.setattr(log_store, "_read_entries", hold)
    read = asyncio.ensure_future(store.get_log_reader().try_get_log_entries(0, 4 * INLINE_READ_MAX))
    async with asyncio.timeout(BOUND):
        await asyncio.to_thread(hold.inside.wait)
    store.close()  # (the hold lets the read go on after HELD)
    assert hold.outcome == ["returned"], "close() returned while the read still ran in its thread"
    RocksLogStore(tmp_path / "log", sync=False).close()  # the lock is free at once
    async with asyncio.timeout(BOUND):
        assert len(await read) == 4 * INLINE_READ_MAX


async def test_a_call_stuck_in_its_thread_does_not_hold_the_close_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``CLOSE_CALLS_WAIT`` the close gives the call up: a WARNING and a ``StorageError``
    naming the path, RocksDB closed under the call, which then fails with ``StorageError``
    (not an ``AttributeError`` of the closed store); the lock is free once it has ended."""
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", 0.2, raising=False)
    path = tmp_path / "sm"
    sm = RocksStateMachine(path)
    try:
        await sm.apply(kv_entries(1, 11))
        hold = Hold(sm._apply_sync)
        sm._apply_sync = hold  # type: ignore[method-assign]
        apply = asyncio.ensure_future(sm.apply(kv_entries(11, 11 + APPLY_INLINE_MAX + 50)))
        async with asyncio.timeout(BOUND):
            await asyncio.to_thread(hold.inside.wait)
        with caplog.at_level(logging.WARNING, logger="openraft_py.storage.rocks"):
            with pytest.raises(StorageError, match="still ran in worker threads") as closing:
                async with asyncio.timeout(BOUND):
                    await sm.aclose()
        assert str(path) in str(closing.value)
        assert any(str(path) in r.getMessage() and "_apply_pieces" in r.getMessage() for r in caplog.records), \
            caplog.text
    finally:
        hold.release.set()
    with pytest.raises(StorageError, match="closed while the call still ran") as failed:
        async with asyncio.timeout(BOUND):
            await apply
    assert str(path) in str(failed.value)
    async with RocksStateMachine(path) as again:
        assert (await again.applied_state())[0] == LogId(1, 10)


async def test_closing_a_state_machine_waits_for_a_snapshot_install(tmp_path: Path) -> None:
    async with RocksStateMachine(tmp_path / "leader") as leader:
        await leader.apply(kv_entries(1, 31))
        snap = await leader.get_snapshot_builder().build_snapshot()
        with snap.data:
            data = snap.data.read()
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        received = await sm.begin_receiving_snapshot()
        received.write(data)
        hold = Hold(sm._install_sync)
        sm._install_sync = hold  # type: ignore[method-assign]
        await close_under(sm, hold, asyncio.ensure_future(sm.install_snapshot(snap.meta, received)))
        received.close()
    finally:
        sm.close()
    async with RocksStateMachine(tmp_path / "sm") as again:
        assert (await again.applied_state())[0] == LogId(1, 30)
        assert again.get("k30") == "v30"


async def test_closing_a_state_machine_waits_for_the_snapshot_it_hands_out(tmp_path: Path) -> None:
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        await sm.apply(kv_entries(1, 11))
        (await sm.get_snapshot_builder().build_snapshot()).data.close()
        hold = Hold(sm._open_current)
        sm._open_current = hold  # type: ignore[method-assign]
        await close_under(sm, hold, asyncio.ensure_future(sm.get_current_snapshot()))
    finally:
        sm.close()
    RocksStateMachine(tmp_path / "sm").close()  # the lock is free at once
