"""The WAL syncer's cheap path (``WalSyncer`` with a ``DirWatch``): it keeps the newest WAL
open and lists the directory only when an entry may have been created there, and still
fsyncs every WAL a group wrote to, a new one (after a memtable switch) included; without a
working watch it lists every time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks.dirwatch import DirWatch
from openraft_py.storage.rocks.group_writer import GroupWriter
from openraft_py.storage.rocks.wal import WalSyncer
from openraft_py.types import Entry, LogId, Normal

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux (inotify, /proc)"),
]


def test_dir_watch_reports_each_new_entry_once(tmp_path: Path) -> None:
    w = DirWatch(str(tmp_path))
    assert w.active
    assert not w.changed()
    (tmp_path / "a").write_bytes(b"x")
    assert w.changed()
    assert not w.changed()  # drained
    os.rename(tmp_path / "a", tmp_path / "b")  # moved within: a new name
    assert w.changed()
    (tmp_path / "b").write_bytes(b"more")  # writing an existing file: no new entry
    assert not w.changed()
    w.close()
    assert not w.active and w.changed() and w.changed()  # no watch: always "maybe"


def test_dir_watch_gives_up_when_the_directory_goes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    w = DirWatch(str(d))
    d.rmdir()
    assert w.changed()
    assert not w.active and w.changed()
    w.close()


async def _append(store: RocksLogStore, index: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append([Entry(LogId(1, index), Normal(b"v%d" % index))], IOFlushed(done.set_result, loop))
    assert await asyncio.wait_for(done, 10) is None


def _wal_names(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".log") and n[:-4].isdigit())


async def test_a_new_wal_is_fsynced_and_listing_is_rare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends, a memtable flush (RocksDB starts a new WAL), more appends: every append after
    the switch is followed by an fsync of the new WAL file, and the directory was listed
    only around the switch."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    # The writer thread's durability step (the loop's fast path hands its fsync to the kernel:
    # its own test of a new WAL is in test_rocks_fast_path.py).
    monkeypatch.setattr(GroupWriter, "write_now", lambda *a, **k: False)
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        wal = store._writer._wal
        assert isinstance(wal, WalSyncer) and wal._watch.active
        for i in range(20):
            await _append(store, i)
        first = _wal_names(path)
        assert len(first) == 1 and synced.count(first[0]) == 20
        assert wal.listings <= 2  # the first sync (and at most one more for the open's files)
        listings = wal.listings
        # RocksDB switches to a new WAL when a memtable is flushed.
        store._entries.flush()
        second = _wal_names(path)[-1]
        assert second != first[0]
        for i in range(20, 40):
            synced.clear()
            await _append(store, i)
            assert second in synced, f"append {i} acknowledged without an fsync of {second}: {synced}"
        assert listings < wal.listings <= listings + 3
    finally:
        store.close()


async def test_without_a_watch_every_sync_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GroupWriter, "write_now", lambda *a, **k: False)  # the thread's path
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        wal = store._writer._wal
        assert wal is not None
        wal._watch.close()
        for i in range(5):
            await _append(store, i)
        assert wal.listings == 5 and wal.fsyncs >= 5
    finally:
        store.close()
