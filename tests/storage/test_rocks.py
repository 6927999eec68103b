"""RocksLogStore and RocksStateMachine: the storage contract on RocksDB, reopen, corrupted
and foreign databases, and that the event loop is not blocked while appending."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest

from openraft_py.errors import LogCompacted, StorageError
from openraft_py.kv.rocks_snapshot import read_snapshot_pairs, write_snapshot
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import IOFlushed, KvCas, KvDelete, KvGet, KvSet, encode_kv
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks.damage import DAMAGED_ADVICE
from openraft_py.storage.rocks.group_writer import GroupWriter
from openraft_py.types import (
    BLANK,
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    LogState,
    Membership,
    Normal,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
    Vote,
)

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def normal(term: int, index: int, data: bytes | None = None) -> Entry:
    return Entry(LogId(term, index), Normal(data if data is not None else b"d%d" % index))


def entries(term: int, lo: int, hi: int) -> list[Entry]:
    return [normal(term, i) for i in range(lo, hi)]


async def append_durable(store: RocksLogStore, batch: list[Entry]) -> None:
    """Append and wait for the durability callback."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append(batch, IOFlushed(lambda e: fut.set_result(e), loop))
    assert await asyncio.wait_for(fut, 5) is None


# -- log store ----------------------------------------------------------------------------------


async def test_append_read_and_log_state(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.get_log_state() == LogState(None, None)
        mem = Membership.new([{1, 2, 3}])
        batch = [Entry(LogId(0, 0), mem), Entry(LogId(1, 1), BLANK), *entries(1, 2, 10)]
        await append_durable(s, batch)
        assert await s.get_log_state() == LogState(None, LogId(1, 9))
        assert await s.try_get_log_entries(0, 100) == batch
        assert await s.try_get_log_entries(3, 5) == batch[3:5]
        assert await s.try_get_log_entries(5, 5) == []
        r = s.get_log_reader()
        assert await r.try_get_log_entries(0, 10) == batch


async def test_readable_before_durable_and_callback_once(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log") as s:
        loop = asyncio.get_running_loop()
        calls: list[tuple[BaseException | None, bool]] = []
        futs = []
        for k in range(5):
            fut = loop.create_future()
            futs.append(fut)

            def fn(e: BaseException | None, fut=fut) -> None:
                calls.append((e, threading_is_loop()))
                fut.set_result(None)

            await s.append(entries(1, k * 10, k * 10 + 10), IOFlushed(fn, loop))
            # Readable at once, before the callback.
            assert len(await s.try_get_log_entries(0, 1000)) == (k + 1) * 10
        await asyncio.gather(*futs)
        assert [c[0] for c in calls] == [None] * 5
        assert all(c[1] for c in calls)  # IOFlushed hopped to the loop thread
        assert await s.try_get_log_entries(0, 50) == entries(1, 0, 50)
        assert not s._pending


@pytest.mark.parametrize(
    "case",
    ["alone", "with a later batch", "tail replaced", "tail truncated", "head purged", "all gone"],
)
async def test_a_written_batch_leaves_exactly_its_own_entries_pending(tmp_path: Path, case: str) -> None:
    """Once a batch is durable its entries stop being held in memory, except those a truncate
    replaced meanwhile (the re-appended ones are not durable yet); whatever a purge or a
    truncate already dropped stays dropped, and later batches stay pending."""
    async with RocksLogStore(tmp_path / "log") as s:
        batch = entries(1, 0, 10)
        later = entries(1, 10, 20)
        newer = entries(2, 6, 12)
        held: dict[int, Entry] = {e.log_id.index: e for e in batch}
        want: dict[int, Entry] = {}
        if case == "with a later batch":
            held.update((e.log_id.index, e) for e in later)
            want = {e.log_id.index: e for e in later}
        elif case == "tail replaced":
            held = {i: e for i, e in held.items() if i < 6} | {e.log_id.index: e for e in newer}
            want = {e.log_id.index: e for e in newer}
        elif case == "tail truncated":
            held = {i: e for i, e in held.items() if i < 7}
        elif case == "head purged":
            held = {i: e for i, e in held.items() if i > 3}
        elif case == "all gone":
            held = {}
        s._pending = dict(held)
        reported: list[BaseException | None] = []
        s._written(batch, IOFlushed(reported.append))
        assert s._pending == want
        assert all(s._pending[i] is e for i, e in want.items())
        assert reported == [None]


def threading_is_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


async def test_hole_refused(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log") as s:
        await append_durable(s, entries(1, 0, 3))
        called = []
        with pytest.raises(ValueError, match="hole"):
            await s.append(entries(1, 5, 6), IOFlushed(lambda e: called.append(e)))
        with pytest.raises(ValueError, match="consecutive"):
            await s.append([normal(1, 3), normal(1, 5)], IOFlushed(lambda e: called.append(e)))
        assert called == []
        assert await s.get_log_state() == LogState(None, LogId(1, 2))


async def test_truncate_and_reappend(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log") as s:
        await s.append(entries(1, 0, 10), IOFlushed(lambda e: None))  # not awaited: pending
        await s.truncate_after(LogId(1, 4))
        assert await s.get_log_state() == LogState(None, LogId(1, 4))
        await append_durable(s, entries(2, 5, 8))
        assert await s.try_get_log_entries(0, 100) == entries(1, 0, 5) + entries(2, 5, 8)
        await s.truncate_after(None)
        assert await s.get_log_state() == LogState(None, None)
        assert await s.try_get_log_entries(0, 100) == []
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.get_log_state() == LogState(None, None)


async def test_purge_and_log_compacted(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log") as s:
        await append_durable(s, entries(1, 0, 20))
        await s.purge(LogId(1, 9))
        assert await s.get_log_state() == LogState(LogId(1, 9), LogId(1, 19))
        with pytest.raises(LogCompacted):
            await s.try_get_log_entries(5, 15)
        assert await s.try_get_log_entries(10, 12) == entries(1, 10, 12)
        await s.purge(LogId(1, 5))  # not beyond: no-op
        assert await s.get_log_state() == LogState(LogId(1, 9), LogId(1, 19))
        # Truncating never touches purged entries.
        await s.truncate_after(LogId(1, 3))
        assert await s.get_log_state() == LogState(LogId(1, 9), LogId(1, 9))
        await append_durable(s, entries(1, 10, 15))
        # Purge beyond the last entry (after a snapshot install).
        await s.purge(LogId(3, 100))
        assert await s.get_log_state() == LogState(LogId(3, 100), LogId(3, 100))
        with pytest.raises(ValueError):
            await s.append([normal(3, 100)], IOFlushed(lambda e: None))
        await append_durable(s, [normal(3, 101)])
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.get_log_state() == LogState(LogId(3, 100), LogId(3, 101))
        assert await s.try_get_log_entries(101, 102) == [normal(3, 101)]


async def test_vote_committed_and_reopen(tmp_path: Path) -> None:
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        assert await s.read_vote() is None and await s.read_committed() is None
        await s.save_vote(Vote.new(2, 1))
        await s.save_vote(Vote.new(3, 2, committed=True))
        await s.save_committed(LogId(3, 40))
        await append_durable(s, entries(3, 0, 50))
        assert await s.get_log_reader().read_vote() == Vote.new(3, 2, committed=True)
    async with RocksLogStore(p) as s:
        assert await s.read_vote() == Vote.new(3, 2, committed=True)
        assert await s.read_committed() == LogId(3, 40)
        assert await s.get_log_state() == LogState(None, LogId(3, 49))
        assert await s.try_get_log_entries(0, 50) == entries(3, 0, 50)


async def test_large_read_goes_to_thread_and_is_consistent(tmp_path: Path) -> None:
    async with RocksLogStore(tmp_path / "log", sync=False) as s:
        await append_durable(s, entries(1, 0, 3000))
        await s.append(entries(1, 3000, 3100), IOFlushed(lambda e: None))
        got = await s.get_log_reader().try_get_log_entries(0, 3100)
        assert got == entries(1, 0, 3100)


async def test_large_read_is_an_image_of_the_log_at_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that goes to a worker thread returns the log as it was when it was called,
    even when a purge and a truncate are made durable before the thread reads."""
    from openraft_py.storage.rocks import db

    real = db.StoreCalls.run
    reached, release = asyncio.Event(), asyncio.Event()

    async def held_run(calls: db.StoreCalls, fn: Any, *args: Any, **kw: Any) -> Any:
        reached.set()
        await release.wait()
        return await real(calls, fn, *args, **kw)

    monkeypatch.setattr(db.StoreCalls, "run", held_run)
    async with RocksLogStore(tmp_path / "log") as s:
        await append_durable(s, entries(1, 0, 300))
        read = asyncio.create_task(s.get_log_reader().try_get_log_entries(100, 300))
        await asyncio.wait_for(reached.wait(), 5)
        await s.purge(LogId(1, 149))
        await s.truncate_after(LogId(1, 249))
        await append_durable(s, entries(2, 250, 300))
        release.set()
        assert await asyncio.wait_for(read, 10) == entries(1, 100, 300)
        assert await s.try_get_log_entries(150, 300) == entries(1, 150, 250) + entries(2, 250, 300)


async def test_closed_store_refuses(tmp_path: Path) -> None:
    s = RocksLogStore(tmp_path / "log")
    await s.aclose()
    await s.aclose()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await s.get_log_state()
    # The lock was released: the path opens again.
    RocksLogStore(tmp_path / "log").close()


async def test_event_loop_not_blocked_while_appending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The durability step must not hold the event loop. A slow disk is simulated (every
    ``os.fsync`` takes 40 ms more, GIL released like a real fsync). Asserted on where and in
    which order things happen, not on durations: no fsync runs on the loop's thread, and the
    loop keeps ticking while fsyncs are in progress (a ticker's count moves between the start
    and the end of most fsyncs; a store that blocked the loop for its fsync would see it move
    during none)."""
    real_fsync = os.fsync
    loop_thread = threading.get_ident()
    ticks = 0
    appending = False
    # (the fsync ran on the loop's thread, ticks counted while it ran), per fsync while appending
    fsyncs: list[tuple[bool, int]] = []

    def slow_fsync(fd: int) -> None:
        before = ticks
        time.sleep(0.04)
        real_fsync(fd)
        if appending:
            fsyncs.append((threading.get_ident() == loop_thread, ticks - before))

    monkeypatch.setattr(os, "fsync", slow_fsync)
    # The writer thread's path (the loop's fast path, which hands its fsync to the kernel and
    # never calls os.fsync, has its own tests in test_rocks_fast_path.py).
    monkeypatch.setattr(GroupWriter, "write_now", lambda *a, **k: False)
    async with RocksLogStore(tmp_path / "log") as s:
        assert s.fsync_mode == "wal"
        loop = asyncio.get_running_loop()
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        appending = True
        nxt = 0
        pending: list[asyncio.Future[None]] = []
        while len(fsyncs) < 12 and nxt < 64 * 100_000:
            fut = loop.create_future()
            await s.append(entries(1, nxt, nxt + 64), IOFlushed(lambda e, f=fut: f.set_result(None), loop))
            nxt += 64
            pending.append(fut)
            if len(pending) >= 16:
                await asyncio.wait_for(pending.pop(0), 10)
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*pending), 10)
        appending = False
        stop = True
        await t
        assert len(fsyncs) >= 12, f"only {len(fsyncs)} fsyncs for {nxt} entries"
        on_loop = sum(1 for in_loop, _ in fsyncs if in_loop)
        assert on_loop == 0, f"{on_loop} of {len(fsyncs)} fsyncs ran on the event loop's thread"
        ticked = sum(1 for _, n in fsyncs if n > 0)
        assert ticked >= len(fsyncs) // 2, (
            f"the loop ticked during only {ticked} of {len(fsyncs)} fsyncs (ticks per fsync: {[n for _, n in fsyncs]})"
        )
        assert s._writer._wal is not None and s._writer._wal.fsyncs >= s.groups_written > 0
        assert s.groups_written < nxt // 64  # group commit shared some fsyncs


async def test_fsync_mode_rocksdb_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fsync_mode="rocksdb"`` syncs through RocksDB; in ``"wal"`` mode a group that finds no
    WAL file falls back to RocksDB's own WAL sync; both stay correct across a reopen."""
    with pytest.raises(ValueError):
        RocksLogStore(tmp_path / "x", fsync_mode="nope")
    async with RocksLogStore(tmp_path / "a", fsync_mode="rocksdb") as s:
        assert s.fsync_mode == "rocksdb" and s._writer._wal is None
        await append_durable(s, entries(1, 0, 10))
    async with RocksLogStore(tmp_path / "b") as s:
        assert s.fsync_mode == "wal"
        monkeypatch.setattr("openraft_py.storage.rocks.wal.wal_numbers", lambda d: [])
        await append_durable(s, entries(1, 0, 10))
        assert s._writer.fallbacks >= 1
    for name in ("a", "b"):
        async with RocksLogStore(tmp_path / name) as s:
            assert await s.try_get_log_entries(0, 100) == entries(1, 0, 10)


@pytest.mark.parametrize("sync", [None, 0, 1, "false", "no", 1.5])
async def test_a_sync_that_is_not_a_bool_is_refused_before_the_open(tmp_path: Path, sync: Any) -> None:
    """``sync`` must be ``True`` or ``False``: anything else was refused by RocksDB's write
    options after the database was opened ("argument 'sync': 'NoneType' object cannot be
    cast as 'bool'"), and the store, never made, kept the database's lock: every later open
    of the directory in the process, with ``sync=True`` too, failed with "the database is in
    use (its LOCK is held)"."""
    with pytest.raises(TypeError, match=rf"sync must be True or False, got {type(sync).__name__} {sync!r}"):
        RocksLogStore(tmp_path / "log", sync=sync)
    with pytest.raises(TypeError, match="sync must be True or False"):
        await RocksLogStore.open(tmp_path / "log", sync=sync)
    async with await RocksLogStore.open(tmp_path / "log") as s:  # the directory is free
        await append_durable(s, entries(1, 0, 3))
        assert s.sync is True


@pytest.mark.parametrize("store", [RocksLogStore, RocksStateMachine])
def test_an_empty_or_bytes_path_is_refused_and_nothing_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Any
) -> None:
    """An empty path named the current directory: ``RocksStateMachine("")`` made its ``db``
    and ``snapshots`` there, in a directory of other files that the check for a foreign
    directory refuses when it is named (``"."``). A ``bytes`` path made the directory, then
    failed with "Can't mix strings and bytes in path components"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("someone else's file")
    with pytest.raises(StorageError, match="the path is empty"):
        store("")
    with pytest.raises(TypeError, match=r"path must be a str or an os\.PathLike of one, got bytes"):
        store(bytes(tmp_path / "store"))
    with pytest.raises(TypeError, match=r"path must be a str or an os\.PathLike of one, got NoneType"):
        store(None)
    # A NUL character failed with the file system's bare "embedded null byte", naming no store.
    with pytest.raises(StorageError, match=r"opening (log store|state machine) at 'a\\x00b'.*NUL character"):
        store("a\x00b")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


# -- corrupted / foreign databases --------------------------------------------------------------


def _spellings(tmp_path: Path, path: Path) -> list[str]:
    """Other names of the directory ``path``: with a trailing slash, through ``.``, through a
    symlink."""
    link = tmp_path / f"link-to-{path.name}"
    link.symlink_to(path, target_is_directory=True)
    return [f"{path}/", str(path.parent / "." / path.name), str(link)]


async def test_a_log_store_open_under_another_name_of_its_directory_is_refused(tmp_path: Path) -> None:
    """RocksDB tells a second open in the same process by the name of its LOCK file (the
    fcntl lock is the process's own): a store opened again as ``log/``, ``./log`` or through a
    symlink was a second writer on the same database. Now it is "in use" like the same
    spelling; the open store is unaffected, and once it is closed any spelling opens."""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, entries(1, 0, 3))
        for other in _spellings(tmp_path, p):
            with pytest.raises(StorageError, match="the database is in use"):
                RocksLogStore(other)
        await append_durable(s, entries(1, 3, 6))
        assert await s.try_get_log_entries(0, 6) == entries(1, 0, 6)
    async with RocksLogStore(tmp_path / f"link-to-{p.name}") as s:
        assert await s.try_get_log_entries(0, 6) == entries(1, 0, 6)


async def test_a_state_machine_open_under_another_name_of_its_directory_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([Entry(LogId(1, 1), Normal(encode_kv(KvSet("k", "v"))))])
        for other in _spellings(tmp_path, p):
            with pytest.raises(StorageError, match="the database is in use"):
                RocksStateMachine(other)
        assert sm.data == {"k": "v"}
    async with RocksStateMachine(f"{p}/") as sm:
        assert sm.data == {"k": "v"}


def test_plain_file_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"hello")
    for cls in (RocksLogStore, RocksStateMachine):
        with pytest.raises(StorageError) as ei:
            cls(f)
        assert str(f) in str(ei.value)
    assert f.read_bytes() == b"hello"


def test_foreign_rocksdb_refused(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    p = tmp_path / "foreign"
    db = Rdict(str(p), Options(raw_mode=True))
    db[b"k"] = b"v"
    db.close()
    del db
    before = sorted(os.listdir(p))
    with pytest.raises(StorageError, match="foreign") as ei:
        RocksLogStore(p)
    assert str(p) in str(ei.value)
    assert sorted(os.listdir(p)) == before
    # A state machine path is not a log store path, and vice versa.
    RocksStateMachine(tmp_path / "sm").close()
    with pytest.raises(StorageError, match="foreign"):
        RocksLogStore(tmp_path / "sm")
    RocksLogStore(tmp_path / "log").close()
    with pytest.raises(StorageError, match="foreign"):
        RocksStateMachine(tmp_path / "log")


def test_wrong_marker_refused(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    p = tmp_path / "log"
    RocksLogStore(p).close()
    db = Rdict(str(p), Options(raw_mode=True), column_families={"entries": Options(raw_mode=True), "meta": Options(raw_mode=True)})
    meta = db.get_column_family("meta")
    meta[b"format"] = b"\x81\xa6format\xa5other"
    meta.close()
    db.close()
    del meta, db
    with pytest.raises(StorageError, match="format marker"):
        RocksLogStore(p)


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> SHA-256 of its bytes)."""
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*")) if f.is_file()
    }


@pytest.mark.parametrize("store", ["log", "sm"])
@pytest.mark.parametrize("version, says", [
    (2, "format version 2, written by a newer version of openraft-py; this version reads format version 1 only"),
    (0, "format version 0, of an older version of openraft-py that this version does not convert; it reads "
        "format version 1"),
])
def test_a_store_of_another_format_version_is_refused_untouched(
    tmp_path: Path, store: str, version: int, says: str
) -> None:
    """A store whose format marker has another version (a newer release's data, after a
    downgrade; simulated by rewriting the marker, and adding a column family as a new format
    may) is refused naming the version found and the version read, and not a byte of its
    directory changes: it was opened read-write before the marker was checked (a new WAL,
    MANIFEST and OPTIONS file; the old WAL removed) and called a "foreign database", and
    with the new column family the open failed with "Column families not opened", naming no
    version."""
    import msgspec
    from rocksdict import Options, Rdict

    from openraft_py.kv.rocks_state_machine import SM_FORMAT
    from openraft_py.storage.rocks.log_format import LOG_FORMAT

    if store == "log":
        RocksLogStore(tmp_path / "log").close()
        db_path, cfs, key, marker, what = tmp_path / "log", ["entries", "meta"], b"format", LOG_FORMAT, "log store"
    else:
        RocksStateMachine(tmp_path / "sm").close()
        db_path, cfs, key, marker, what = tmp_path / "sm" / "db", ["sm"], b"mformat", SM_FORMAT, "state machine"
    opts = Options(raw_mode=True)
    opts.create_missing_column_families(True)
    db = Rdict(str(db_path), opts, column_families={cf: Options(raw_mode=True) for cf in cfs + ["added"]})
    cf = db.get_column_family(cfs[-1])
    cf[key] = msgspec.msgpack.encode({**marker, "version": version})
    cf.close()
    db.close()
    del cf, db
    before = _tree_digest(tmp_path)
    with pytest.raises(StorageError, match=f"opening {what} at .*: ValueError: {what} {says}"):
        if store == "log":
            RocksLogStore(tmp_path / "log")
        else:
            RocksStateMachine(tmp_path / "sm")
    assert _tree_digest(tmp_path) == before


def test_corrupted_db_refused(tmp_path: Path) -> None:
    p = tmp_path / "log"
    RocksLogStore(p).close()
    for name in os.listdir(p):
        if name.startswith("MANIFEST") or name == "CURRENT":
            (p / name).write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(StorageError) as ei:
        RocksLogStore(p)
    assert str(p) in str(ei.value)
    # A directory of random files is not a database either.
    q = tmp_path / "junk"
    q.mkdir()
    (q / "x").write_bytes(b"junk")
    with pytest.raises(StorageError):
        RocksLogStore(q)
    assert (q / "x").read_bytes() == b"junk"


# -- state machine ------------------------------------------------------------------------------


def kv(index: int, cmd: object) -> Entry:
    return Entry(LogId(1, index), Normal(encode_kv(cmd)))  # type: ignore[arg-type]


async def test_state_machine_apply_semantics(tmp_path: Path) -> None:
    async with RocksStateMachine(tmp_path / "sm") as sm:
        assert await sm.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
        assert await sm.get_current_snapshot() is None
        mem = Membership.new([{1, 2}])
        batch = [
            Entry(LogId(1, 0), mem),
            Entry(LogId(1, 1), BLANK),
            kv(2, KvSet("a", "1")),
            kv(3, KvSet("a", "2")),
            kv(4, KvCas("a", "1", "x")),
            kv(5, KvCas("a", "2", "3")),
            kv(6, KvGet("a")),
            Entry(LogId(1, 7), Normal(b"opaque")),
            kv(8, KvDelete("a")),
            kv(9, KvCas("b", None, "new")),
        ]
        assert await sm.apply(batch) == [None, None, None, "1", (False, "2"), (True, "3"), "3", None, "3", (True, "new")]
        assert await sm.applied_state() == (LogId(1, 9), StoredMembership(LogId(1, 0), mem))
        assert sm.data == {"b": "new"}
        assert await sm.apply([kv(10, KvGet("b"))]) == ["new"]
    async with RocksStateMachine(tmp_path / "sm") as sm:
        assert await sm.applied_state() == (LogId(1, 10), StoredMembership(LogId(1, 0), mem))
        assert sm.get("b") == "new"


@pytest.mark.parametrize("set_share", [0.25, 0.9])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_state_machine_answers_like_the_memory_one(
    tmp_path: Path, seed: int, set_share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random batches of sets, deletes, compare-and-sets and gets over a few keys (so a batch
    often reads a key it wrote itself, or one an earlier batch wrote or deleted), with opaque
    and membership entries in between: every response and the final data equal
    ``MemStateMachine``'s, and ``apply_without_responses`` leaves the same data. A batch of
    more than one entry reads its keys ahead in one multi-get; the last ones are single
    entries (one get each). With mostly sets, batches start with runs of sets that the
    kernel applies (repeating keys, over values earlier batches wrote)."""
    import random

    import openraft_py.kv.rocks_state_machine as rsm
    from openraft_py.storage.memory import MemStateMachine

    by_kernel = 0
    kernel = rsm.apply_kv_sets

    def counting(kv, entries, start, normal_type, responses, applied_log, *puts):  # type: ignore[no-untyped-def]
        nonlocal by_kernel
        stop = kernel(kv, entries, start, normal_type, responses, applied_log, *puts)
        by_kernel += stop - max(start, 0)
        return stop

    monkeypatch.setattr(rsm, "apply_kv_sets", counting)
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(6)]
    values = [None, "1", "2", "3"]
    mem = MemStateMachine()
    index = 0

    def entry() -> Entry:
        nonlocal index
        index += 1
        r = rng.random()
        if r < 0.05:
            return Entry(LogId(1, index), Normal(b"opaque"))
        if r < 0.08:
            return Entry(LogId(1, index), Membership.new([{1, 2}]))
        key = rng.choice(keys)
        op = 0 if rng.random() < set_share else rng.randrange(1, 4)
        if op == 0:
            cmd: object = KvSet(key, rng.choice(values[1:]))
        elif op == 1:
            cmd = KvDelete(key)
        elif op == 2:
            cmd = KvCas(key, rng.choice(values), rng.choice(values[1:]))
        else:
            cmd = KvGet(key)
        return kv(index, cmd)

    async with RocksStateMachine(tmp_path / "sm") as sm, RocksStateMachine(tmp_path / "quiet") as quiet:
        for size in [rng.randrange(2, 40) for _ in range(30)] + [1] * 20:
            batch = [entry() for _ in range(size)]
            got, want = await sm.apply(batch), await mem.apply(batch)
            assert got == want, f"seed {seed}, batch ending at {index}"
            await quiet.apply_without_responses(batch)  # a follower's apply: the same state
        assert sm.data == mem.data == quiet.data, f"seed {seed}"
    if set_share > 0.5:
        assert by_kernel > 200, by_kernel  # most sets went through the kernel


def _cf_section(db_dir: Path, section: str) -> dict[str, str]:
    """``key=value`` lines of one section of the newest RocksDB OPTIONS file in ``db_dir``."""
    newest = max(db_dir.glob("OPTIONS-*"), key=lambda f: int(f.name.split("-")[1]))
    out: dict[str, str] = {}
    inside = False
    for line in newest.read_text().splitlines():
        if line.startswith("["):
            inside = line.strip() == section
        elif inside and "=" in line:
            k, _, v = line.strip().partition("=")
            out[k] = v
    return out


async def test_state_machine_has_bloom_filters_for_its_point_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set reads the key's previous value first, mostly of an absent key: the column family
    gets whole-key bloom filters in its table files and its memtable. A state machine created
    without them (an earlier version) opens with them and keeps its data."""
    from rocksdict import Options

    import openraft_py.storage.rocks.db as db_mod

    p = tmp_path / "sm"
    real = db_mod._cf_options
    monkeypatch.setattr(db_mod, "_cf_options", lambda point_lookups, compressed=True: Options(raw_mode=True))
    async with RocksStateMachine(p) as sm:
        await sm.apply([kv(1, KvSet("a", "1"))])
    assert _cf_section(p / "db", '[TableOptions/BlockBasedTable "sm"]')["filter_policy"] == "nullptr"
    monkeypatch.setattr(db_mod, "_cf_options", real)
    async with RocksStateMachine(p) as sm:
        assert sm.get("a") == "1"
        assert await sm.apply([kv(2, KvSet("a", "2")), kv(3, KvSet("b", "3"))]) == ["1", None]
    table = _cf_section(p / "db", '[TableOptions/BlockBasedTable "sm"]')
    cf = _cf_section(p / "db", '[CFOptions "sm"]')
    assert table["filter_policy"] == "bloomfilter" and table["whole_key_filtering"] == "true"
    assert cf["memtable_whole_key_filtering"] == "true"
    assert float(cf["memtable_prefix_bloom_size_ratio"]) == db_mod.POINT_LOOKUP_MEMTABLE_BLOOM_RATIO
    async with RocksStateMachine(p) as sm:
        assert (sm.get("a"), sm.get("b"), sm.get("c")) == ("2", "3", None)


def _table_bytes(db_dir: Path) -> int:
    """The size of every table file (``*.sst``) in ``db_dir``."""
    return sum(f.stat().st_size for f in db_dir.glob("*.sst"))


async def _append_flushed(store: RocksLogStore, batch: list[Entry]) -> None:
    """Append ``batch`` durably, then have RocksDB write the memtables to table files."""
    await append_durable(store, batch)
    store._entries.flush()  # waits for the flush (atomic: every column family)


async def test_log_entries_table_files_are_not_compressed(tmp_path: Path) -> None:
    """A log's entries are written to table files without compression (they are deleted soon
    after; compressing each flushed memtable cost every node a part of each write), a state
    machine's data still with RocksDB's default (Snappy)."""
    data = b"a" * 1000  # compresses to almost nothing
    async with RocksLogStore(tmp_path / "log") as s:
        await _append_flushed(s, [normal(1, i, data) for i in range(200)])
        assert await s.try_get_log_entries(0, 200) == [normal(1, i, data) for i in range(200)]
    assert _cf_section(tmp_path / "log", '[CFOptions "entries"]')["compression"] == "kNoCompression"
    assert _table_bytes(tmp_path / "log") >= 200 * 1000
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([kv(1, KvSet("a", "1"))])
    assert _cf_section(tmp_path / "sm" / "db", '[CFOptions "sm"]')["compression"] == "kSnappyCompression"


async def test_log_reads_entries_of_compressed_and_uncompressed_table_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log store whose entries an earlier release wrote to table files with Snappy opens
    and reads them back beside the uncompressed files written now; and an earlier release
    (every column family compressed) reads a store of this one."""
    import openraft_py.storage.rocks.db as db_mod

    real = db_mod._cf_options
    data = b"b" * 1000
    first = [normal(1, i, data) for i in range(100)]
    second = [normal(2, i, data) for i in range(100, 200)]
    p = tmp_path / "log"
    monkeypatch.setattr(db_mod, "_cf_options", lambda point_lookups, compressed=True: real(point_lookups))
    async with RocksLogStore(p) as s:  # as an earlier release: compressed
        await _append_flushed(s, first)
    assert _table_bytes(p) < 100 * 1000
    monkeypatch.setattr(db_mod, "_cf_options", real)
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 100) == first
        await _append_flushed(s, second)
        assert await s.try_get_log_entries(0, 200) == first + second
    assert _table_bytes(p) >= 100 * 1000
    monkeypatch.setattr(db_mod, "_cf_options", lambda point_lookups, compressed=True: real(point_lookups))
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 200) == first + second
        assert await s.get_log_state() == LogState(None, LogId(2, 199))


async def test_state_machine_applies_small_batches_without_suspending(tmp_path: Path) -> None:
    """On the loop, ``apply`` suspends (one loop turn) only once ``APPLY_NO_YIELD_MAX``
    entries were applied since the last turn: a small batch after a turn finishes at its
    first step (no loop turn on a write's path); a larger batch, or a caller applying in a
    loop without turns, yields one."""
    from openraft_py.kv.rocks_state_machine import APPLY_NO_YIELD_MAX

    def steps(coro: Any) -> int:
        n = 0
        try:
            while True:
                coro.send(None)
                n += 1
        except StopIteration:
            return n

    async with RocksStateMachine(tmp_path / "sm") as sm:
        i = 0

        def batch(n: int) -> list[Entry]:
            nonlocal i
            i += n
            return [kv(k, KvSet(f"k{k}", "v")) for k in range(i - n, i)]

        assert steps(sm.apply(batch(APPLY_NO_YIELD_MAX))) == 0
        assert steps(sm.apply(batch(1))) == 1  # no turn since: it yields first
        await asyncio.sleep(0)
        assert steps(sm.apply(batch(1))) == 0  # a turn passed
        await asyncio.sleep(0)
        assert steps(sm.apply(batch(APPLY_NO_YIELD_MAX + 1))) == 1
        await asyncio.sleep(0)
        # A caller applying in a loop: every APPLY_NO_YIELD_MAX entries one turn.
        assert [steps(sm.apply(batch(2))) for _ in range(APPLY_NO_YIELD_MAX)] == (
            [0] * (APPLY_NO_YIELD_MAX // 2) + [1] + [0] * (APPLY_NO_YIELD_MAX // 2 - 1)
        )
        assert await sm.applied_state() == (LogId(1, i - 1), EMPTY_STORED_MEMBERSHIP)
        assert sm.get("k0") == "v" and sm.get(f"k{i - 1}") == "v"


class _WriteLog:
    """Wraps a state machine's rocksdict database: records each ``write`` (or raises
    ``fail`` from it while set)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes = 0
        self.fail: Exception | None = None

    def write(self, wb: Any, opts: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self._inner.write(wb, opts)
        self.writes += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _sets(first: int, n: int, key: str | None = None) -> list[Entry]:
    """``n`` sets from log index ``first`` (of ``key``, or of ``k<index>`` each)."""
    return [kv(i, KvSet(key or f"k{i}", str(i))) for i in range(first, first + n)]


async def test_state_machine_answers_before_it_writes_and_reads_see_the_batch(tmp_path: Path) -> None:
    """``apply`` on the loop returns its responses with a batch of ``DEFER_WRITE_MIN_ENTRIES``
    entries not yet written: it is written ``WRITE_AFTER_PASSES`` loop passes later, or at
    once when anything reads the state first. A smaller batch, ``apply_without_responses``
    and a batch applied in the worker thread are written before they return."""
    from openraft_py.kv.rocks_state_machine import APPLY_INLINE_MAX, DEFER_WRITE_MIN_ENTRIES, WRITE_AFTER_PASSES

    n = DEFER_WRITE_MIN_ENTRIES
    async with RocksStateMachine(tmp_path / "sm") as sm:
        db = sm._db = _WriteLog(sm._db)  # type: ignore[assignment]
        out = await sm.apply(_sets(1, n, "a"))
        assert out == [None] + [str(i) for i in range(1, n)]
        assert db.writes == 0
        assert sm.get("a") == str(n) and db.writes == 1  # the read wrote it first
        assert (await sm.apply(_sets(n + 1, n, "a")))[0] == str(n)
        for _ in range(WRITE_AFTER_PASSES - 1):
            await asyncio.sleep(0)
        assert db.writes == 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert db.writes == 2  # written by itself, once the passes went by
        i = 2 * n + 1
        await sm.apply(_sets(i, n - 1))
        assert db.writes == 3  # smaller: written at once
        i += n - 1
        await sm.apply_without_responses(_sets(i, n))
        assert db.writes == 4
        i += n
        big = _sets(i, APPLY_INLINE_MAX + 1)
        assert await sm.apply(big) == [None] * len(big)  # in the worker thread
        assert db.writes == 5
        assert await sm.applied_state() == (big[-1].log_id, EMPTY_STORED_MEMBERSHIP)


class _ThreadWriteLog(_WriteLog):
    """``_WriteLog`` that also records, for each ``write``, the thread it ran on and the
    bytes of its batch."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.seen: list[tuple[int, int]] = []

    def write(self, wb: Any, opts: Any) -> None:
        self.seen.append((threading.get_ident(), wb.size_in_bytes()))
        super().write(wb, opts)


async def test_state_machine_applies_a_batch_of_large_values_off_the_loop_in_bounded_writes(tmp_path: Path) -> None:
    """A batch of a few entries whose values add up to more than ``APPLY_INLINE_MAX_BYTES``
    is applied in the worker thread, not on the event loop (the entry count alone sent three
    values of 300 kB, or 256 of 1 MB, to the loop); in the thread, a batch over
    ``APPLY_WRITE_MAX_BYTES`` is written in pieces of at most that size (rocksdict holds the GIL
    through a write, so one write of the whole batch held the loop as long), with the same
    responses, the same state and the last entry's applied id."""
    from openraft_py.kv.rocks_state_machine import APPLY_INLINE_MAX_BYTES, APPLY_WRITE_MAX_BYTES

    loop_thread = threading.get_ident()
    big = "x" * (APPLY_INLINE_MAX_BYTES // 2)
    async with RocksStateMachine(tmp_path / "sm") as sm:
        db = sm._db = _ThreadWriteLog(sm._db)  # type: ignore[assignment]
        out = await sm.apply([kv(1, KvSet("a", big)), kv(2, KvSet("b", big)), kv(3, KvSet("a", "small"))])
        assert out == [None, None, big]
        assert [t for t, _ in db.seen] != [loop_thread]
        assert len(db.seen) == 1  # under APPLY_WRITE_MAX_BYTES: one write
        assert sm.get("a") == "small" and sm.get("b") == big

        db.seen.clear()
        value = "y" * (APPLY_WRITE_MAX_BYTES // 3)  # two fit in a piece, not three
        n = 12
        batch = [kv(i, KvSet(f"k{i % 5}", value + str(i))) for i in range(4, 4 + n)]
        batch.append(kv(4 + n, KvCas("k2", value + "12", "done")))  # k2 last set in an earlier piece
        out = await sm.apply(batch)
        assert out[:5] == [None] * 5 and out[5:n] == [value + str(i) for i in range(4, 4 + n - 5)]
        assert out[n] == (True, "done")
        # Two sets a piece, then the compare-and-set (its expected value is as large) alone.
        assert len(db.seen) == n // 2 + 1 and all(t != loop_thread for t, _ in db.seen)
        assert all(size <= APPLY_WRITE_MAX_BYTES + 1024 for _, size in db.seen)
        assert await sm.applied_state() == (LogId(1, 4 + n), EMPTY_STORED_MEMBERSHIP)
        want = {f"k{i % 5}": value + str(i) for i in range(4, 4 + n)} | {"k2": "done", "b": big, "a": "small"}
        assert sm.data == want

        db.seen.clear()
        await sm.apply_without_responses([kv(i, KvSet("q", value)) for i in range(5 + n, 11 + n)])
        assert len(db.seen) == 3 and all(t != loop_thread for t, _ in db.seen)
        assert await sm.applied_state() == (LogId(1, 10 + n), EMPTY_STORED_MEMBERSHIP)
    async with RocksStateMachine(tmp_path / "sm") as sm:  # each piece carried its applied id
        assert await sm.applied_state() == (LogId(1, 10 + n), EMPTY_STORED_MEMBERSHIP)
        assert sm.get("q") == value


async def test_log_store_writes_a_large_append_in_pieces_of_bounded_bytes(tmp_path: Path) -> None:
    """An append whose payloads add up to more than ``WRITE_PIECE_MAX_BYTES`` is written by
    the writer thread as consecutive writes of at most that many bytes (rocksdict holds the
    GIL through a write: one write of a follower's 8 MB AppendEntries held its event loop as
    long); it is acknowledged once, after the last piece, and reads back whole, also after a
    reopen; the committed id saved meanwhile rides in the last piece."""
    from openraft_py.storage.rocks.log_store import WRITE_PIECE_MAX_BYTES

    loop_thread = threading.get_ident()
    size = WRITE_PIECE_MAX_BYTES // 3 + 1  # two fit in a piece, not three
    batch = [normal(1, i, bytes([65 + i]) * size) for i in range(10)]
    async with RocksLogStore(tmp_path / "log") as s:
        db = s._writer._db = _ThreadWriteLog(s._writer._db)  # type: ignore[assignment]
        await s.save_committed(LogId(1, 3))
        await append_durable(s, batch)
        assert len(db.seen) == 5 and all(t != loop_thread for t, _ in db.seen)
        assert all(n <= WRITE_PIECE_MAX_BYTES + 1024 for _, n in db.seen)
        assert await s.try_get_log_entries(0, 10) == batch
        small = entries(1, 10, 12)
        await append_durable(s, small)  # small again: one write
        assert len(db.seen) == 6
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.get_log_state() == LogState(None, LogId(1, 11))
        assert await s.try_get_log_entries(0, 12) == batch + small
        assert await s.read_committed() == LogId(1, 3)


class _FlushLog(_WriteLog):
    """``_WriteLog`` that also counts the calls of ``flush_wal(True)`` (a WAL fsync)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.synced_flushes = 0

    def flush_wal(self, sync: bool) -> None:
        self.synced_flushes += bool(sync)
        self._inner.flush_wal(sync)


async def test_an_unsynced_log_store_never_syncs_its_wal_for_a_large_append(tmp_path: Path) -> None:
    """With ``sync=False`` no append syncs the WAL, also one the writer thread writes in
    pieces (more than ``WRITE_NOW_MAX_UNSYNCED`` entries, or more than
    ``WRITE_PIECE_MAX_BYTES``): the pieces' group called ``flush_wal(True)``, an fsync
    per such append, where one batch was written without sync."""
    from openraft_py.storage.rocks.log_store import WRITE_NOW_MAX_UNSYNCED, WRITE_PIECE_MAX_BYTES

    many = WRITE_NOW_MAX_UNSYNCED + 10
    large = [normal(1, many + i, bytes([65 + i]) * (WRITE_PIECE_MAX_BYTES // 3 + 1)) for i in range(4)]
    async with RocksLogStore(tmp_path / "log", sync=False) as s:
        db = s._writer._db = _FlushLog(s._writer._db)  # type: ignore[assignment]
        await append_durable(s, entries(1, 0, many))
        await append_durable(s, large)
        assert db.writes >= 3  # the large append went in pieces
        assert db.synced_flushes == 0
        assert await s.try_get_log_entries(0, many + 4) == entries(1, 0, many) + large
    async with RocksLogStore(tmp_path / "log", sync=False) as s:
        assert await s.try_get_log_entries(0, many + 4) == entries(1, 0, many) + large


@pytest.mark.parametrize("then", ["apply", "data", "build", "install", "close"])
async def test_a_deferred_batch_is_written_before_anything_reads_or_replaces_the_state(
    tmp_path: Path, then: str
) -> None:
    """Whatever comes right after an ``apply`` whose batch still waits to be written finds
    the batch in the database: the next apply's reads, a full scan, a snapshot build's
    image, an install (which then replaces it) and a close (the reopened state has it)."""
    from openraft_py.kv.rocks_state_machine import DEFER_WRITE_MIN_ENTRIES

    n = DEFER_WRITE_MIN_ENTRIES
    first = {f"k{i}": str(i) for i in range(1, n + 1)}
    opened: list[Any] = []
    sm = RocksStateMachine(tmp_path / "sm")
    try:
        await sm.apply(_sets(1, n))
        assert sm._deferred is not None
        if then == "apply":
            assert await sm.apply([kv(n + 1, KvCas("k1", "1", "x"))]) == [(True, "x")]
            assert sm.data == {**first, "k1": "x"}
        elif then == "data":
            assert sm.data == first
        elif then == "build":
            snap = await sm.get_snapshot_builder().build_snapshot()
            opened.append(snap.data)
            assert snap.meta.last_log_id == LogId(1, n)
            assert _read_snapshot_pairs(snap.data) == first
        elif then == "install":
            async with RocksStateMachine(tmp_path / "donor") as donor:
                await donor.apply_without_responses([kv(7 * n, KvSet("z", "9"))])
                snap = await donor.get_snapshot_builder().build_snapshot()
                opened.append(snap.data)
            await sm.apply(_sets(n + 1, n))  # deferred again
            assert sm._deferred is not None
            await sm.install_snapshot(snap.meta, snap.data)
            for _ in range(10):  # the passes of the deferred write go by: nothing changes
                await asyncio.sleep(0)
            assert sm.data == {"z": "9"}
            assert await sm.applied_state() == (LogId(1, 7 * n), EMPTY_STORED_MEMBERSHIP)
        else:
            sm.close()  # no loop pass in between
            sm = RocksStateMachine(tmp_path / "sm")
            assert await sm.applied_state() == (LogId(1, n), EMPTY_STORED_MEMBERSHIP)
            assert sm.data == first
    finally:
        for f in opened:
            f.close()
        sm.close()


async def test_overlapping_applies_never_drop_a_deferred_batch(tmp_path: Path) -> None:
    """Two ``apply`` calls at once (Raft never makes them; a caller might): each yields a
    loop turn first, and the second to run writes the first one's deferred batch before it
    defers its own."""
    from openraft_py.kv.rocks_state_machine import DEFER_WRITE_MIN_ENTRIES

    n = DEFER_WRITE_MIN_ENTRIES
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply(_sets(1, n))
        await asyncio.gather(sm.apply(_sets(n + 1, n)), sm.apply(_sets(2 * n + 1, n)))
        assert sm.data == {f"k{i}": str(i) for i in range(1, 3 * n + 1)}


async def test_a_failed_deferred_write_fails_every_later_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A deferred batch whose write fails is logged when it fails, and every later call
    raises ``StorageError`` (the database lacks a batch that was answered); ``close``
    raises it too and still releases the database."""
    from openraft_py.kv.rocks_state_machine import DEFER_WRITE_MIN_ENTRIES, WRITE_AFTER_PASSES

    n = DEFER_WRITE_MIN_ENTRIES
    p = tmp_path / "sm"
    sm = RocksStateMachine(p)
    await sm.apply_without_responses([kv(1, KvSet("a", "1"))])
    db = sm._db = _WriteLog(sm._db)  # type: ignore[assignment]
    db.fail = Exception("IO error: injected")
    assert (await sm.apply(_sets(2, n, "a")))[0] == "1"
    with caplog.at_level(logging.ERROR, logger="openraft_py.kv.state_machine"):
        for _ in range(WRITE_AFTER_PASSES + 1):
            await asyncio.sleep(0)
    assert "writing an applied batch failed" in caplog.text
    db.fail = None  # the database works again: the lost batch still fails every call
    with pytest.raises(StorageError, match="writing an applied batch failed"):
        sm.get("a")
    with pytest.raises(StorageError, match="writing an applied batch failed"):
        await sm.apply([kv(n + 2, KvSet("b", "3"))])
    with pytest.raises(StorageError, match="writing an applied batch failed"):
        await sm.get_snapshot_builder().build_snapshot()
    with pytest.raises(StorageError, match="closing"):
        await asyncio.wait_for(sm.aclose(), 10)
    async with RocksStateMachine(p) as again:  # the lock was released; the batch is not there
        assert again.get("a") == "1"
        assert (await again.applied_state())[0] == LogId(1, 1)


async def test_snapshot_build_install_and_restart(tmp_path: Path) -> None:
    opened: list[Any] = []  # every snapshot file object the test gets: closed at the end

    def keep(x: T) -> T:
        if x is not None:
            opened.append(x.data if isinstance(x, Snapshot) else x)
        return x

    a = RocksStateMachine(tmp_path / "a")
    b = RocksStateMachine(tmp_path / "b")
    try:
        mem = Membership.new([{1}])
        await a.apply([Entry(LogId(1, 0), mem)] + [kv(i, KvSet(f"k{i}", "v" * 100 + str(i))) for i in range(1, 5001)])
        builder = a.get_snapshot_builder()
        build = asyncio.create_task(builder.build_snapshot())
        # apply keeps going while the snapshot is built; the snapshot stays at its point.
        await a.apply([kv(5001, KvSet("late", "x"))])
        snap = keep(await build)
        assert snap.meta.last_log_id in (LogId(1, 5000), LogId(1, 5001))
        assert snap.data.read(8) == b"ORPYKV2\n"
        cur = keep(await a.get_current_snapshot())
        assert cur is not None and cur.meta == snap.meta

        f = keep(await b.begin_receiving_snapshot())
        while chunk := cur.data.read(4096):
            f.write(chunk)
        await b.install_snapshot(cur.meta, f)
        assert await b.applied_state() == (cur.meta.last_log_id, StoredMembership(LogId(1, 0), mem))
        expected = {f"k{i}": "v" * 100 + str(i) for i in range(1, 5001)}
        if cur.meta.last_log_id == LogId(1, 5001):
            expected["late"] = "x"
        assert b.data == expected
        got = keep(await b.get_current_snapshot())
        assert got is not None and got.meta == cur.meta

        # A bad snapshot leaves the state unchanged.
        bad = keep(await b.begin_receiving_snapshot())
        bad.write(b"not a snapshot")
        with pytest.raises(ValueError):
            await b.install_snapshot(cur.meta, bad)
        truncated = keep(await b.begin_receiving_snapshot())
        cur2 = keep(await a.get_current_snapshot())
        assert cur2 is not None
        truncated.write(cur2.data.read()[:-3])
        with pytest.raises(ValueError):
            await b.install_snapshot(cur2.meta, truncated)
        assert b.data == expected
        # One damaged byte inside a value (the frames still decode): refused by the checksum.
        cur3 = keep(await a.get_current_snapshot())
        assert cur3 is not None
        raw = bytearray(cur3.data.read())
        at = raw.index(b"v" * 100 + b"2500")
        raw[at + 3] ^= 0x01
        damaged = keep(await b.begin_receiving_snapshot())
        damaged.write(bytes(raw))
        with pytest.raises(ValueError, match="checksum mismatch: the file is damaged"):
            await b.install_snapshot(cur3.meta, damaged)
        assert b.data == expected
    finally:
        for x in opened:
            x.close()
        opened.clear()
        a.close()
        b.close()
    b = RocksStateMachine(tmp_path / "b")
    try:
        assert b.data == expected
        got = keep(await b.get_current_snapshot())
        assert got is not None and got.meta == cur.meta
        assert sorted(os.listdir(tmp_path / "b" / "snapshots")) == sorted(["current.meta", f"{cur.meta.snapshot_id}.snap"])
    finally:
        for x in opened:
            x.close()
        opened.clear()
        b.close()
    a = RocksStateMachine(tmp_path / "a")
    try:
        assert (await a.applied_state())[0] == LogId(1, 5001)
        got = keep(await a.get_current_snapshot())
        assert got is not None and got.meta == snap.meta
    finally:
        for x in opened:
            x.close()
        a.close()

@pytest.mark.parametrize("magic, says", [
    (b"ORPYKV3\n", "it is of snapshot format 3 \\(ORPYKV3\\); this version of openraft-py reads formats 1 to 2: "
                   "it was written by a newer version \\(upgrade this node: followers before the leader"),
    (b"ORPYKV0\n", "it is of snapshot format 0 \\(ORPYKV0\\); this version of openraft-py reads formats 1 to 2$"),
    (b"XXPYKV3\n", "bad magic$"),
])
async def test_a_snapshot_of_another_format_is_refused_naming_the_formats(
    tmp_path: Path, magic: bytes, says: str
) -> None:
    """A snapshot of a newer format (a leader upgraded before this follower; simulated by its
    magic ``ORPYKV3``) is refused naming the format found and those read, with the state
    unchanged (it said "bad magic", as for a file that is no snapshot at all)."""
    a = RocksStateMachine(tmp_path / "a")
    b = RocksStateMachine(tmp_path / "b")
    try:
        mem = Membership.new([{1}])
        await a.apply([Entry(LogId(1, 0), mem), kv(1, KvSet("k", "v"))])
        snap = await a.get_snapshot_builder().build_snapshot()
        raw = snap.data.read()
        snap.data.close()
        f = await b.begin_receiving_snapshot()
        f.write(magic + raw[len(magic):])
        with pytest.raises(ValueError, match=f"not a RocksStateMachine snapshot \\({snap.meta.snapshot_id}\\): {says}"):
            await b.install_snapshot(snap.meta, f)
        f.close()
        assert b.data == {} and await b.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
    finally:
        a.close()
        b.close()


async def test_snapshot_build_and_install_let_the_loop_take_the_gil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both loop over every key in a worker thread: every ``GIL_SHARE_PAIRS`` pairs they
    release the GIL (``time.sleep(0)``), so a waking event loop need not wait for the
    interpreter's switch interval. (What that does to the loop: ``bench/snapshot_stall.py
    --rocks``.)"""
    import openraft_py.kv.rocks_state_machine as rsm

    pauses: list[tuple[float, str]] = []

    class Clock:
        @staticmethod
        def sleep(s: float) -> None:
            pauses.append((s, threading.current_thread().name))

    monkeypatch.setattr(rsm, "GIL_SHARE_PAIRS", 10)
    monkeypatch.setattr(rsm, "time", Clock)
    loop_thread = threading.current_thread().name
    a = RocksStateMachine(tmp_path / "a")
    b = RocksStateMachine(tmp_path / "b")
    try:
        await a.apply([kv(i, KvSet(f"k{i}", str(i))) for i in range(1, 96)])
        snap = await a.get_snapshot_builder().build_snapshot()
        snap.data.close()
        assert len(pauses) == 9 and all(s == 0 and t != loop_thread for s, t in pauses), pauses
        pauses.clear()
        cur = await a.get_current_snapshot()
        assert cur is not None
        f = await b.begin_receiving_snapshot()
        f.write(cur.data.read())
        cur.data.close()
        await b.install_snapshot(cur.meta, f)
        f.close()
        assert len(pauses) == 9 and all(s == 0 and t != loop_thread for s, t in pauses), pauses
        assert b.data == {f"k{i}": str(i) for i in range(1, 96)}
    finally:
        a.close()
        b.close()


class _WriteRecorder:
    """Stands for a state machine's database: records the size of every ``WriteBatch``
    written through it, and forwards everything."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.batches: list[int] = []

    def write(self, wb: Any, *args: Any) -> None:
        self.batches.append(wb.len())
        self.db.write(wb, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_an_install_streams_the_snapshot_and_replaces_the_whole_state(tmp_path: Path) -> None:
    """``install_snapshot`` never holds the state in one ``WriteBatch``: it was one batch of
    every pair, written with sync while holding the GIL (the event loop stood still for 1.4 s
    installing 291 MB, and the process took 290 MB more). Now a table file is written in a
    worker thread and ingested (see ``_write_install_table``): no batch is written at all.
    What the state held before is replaced exactly: keys the snapshot lacks are gone (before,
    between and after its keys), keys it holds take its values; it survives a reopen; a file
    whose keys are not in order is refused (state unchanged) and no table file is left."""
    a = RocksStateMachine(tmp_path / "a")
    b = RocksStateMachine(tmp_path / "b")
    files: list[Any] = []
    try:
        mem = Membership.new([{1}])
        await a.apply([Entry(LogId(1, 0), mem)] + [kv(i, KvSet(f"k{i:05d}", f"new{i}")) for i in range(1, 3001)])
        old = ["a", "k00005", "k00010x", "k01500", "k02999z", "z"]
        await b.apply([kv(i + 1, KvSet(key, "old")) for i, key in enumerate(old)])
        snap = await a.get_snapshot_builder().build_snapshot()
        files.append(snap.data)
        f = await b.begin_receiving_snapshot()
        files.append(f)
        f.write(snap.data.read())
        recorder = _WriteRecorder(b._db)
        b._db = recorder  # type: ignore[assignment]
        try:
            await b.install_snapshot(snap.meta, f)
        finally:
            b._db = recorder.db
        assert recorder.batches == [], f"the install wrote batches of {recorder.batches} operations"
        expected = {f"k{i:05d}": f"new{i}" for i in range(1, 3001)}
        assert b.data == expected
        assert await b.applied_state() == (LogId(1, 3000), StoredMembership(LogId(1, 0), mem))
        assert sorted(os.listdir(tmp_path / "b" / "snapshots")) == sorted(["current.meta", f"{snap.meta.snapshot_id}.snap"])

        # Keys out of order (an intact file: the checksum matches): refused, nothing changed.
        unordered = await b.begin_receiving_snapshot()
        files.append(unordered)
        write_snapshot(unordered, LogId(1, 4000), StoredMembership(LogId(1, 0), mem), [(b"x2", b"2"), (b"x1", b"1")])
        with pytest.raises(ValueError, match="the key b'x1' is not after the one before it"):
            await b.install_snapshot(SnapshotMeta(LogId(1, 4000), StoredMembership(LogId(1, 0), mem), "u"), unordered)
        assert b.data == expected
        assert sorted(os.listdir(tmp_path / "b" / "snapshots")) == sorted(["current.meta", f"{snap.meta.snapshot_id}.snap"])
    finally:
        for x in files:
            x.close()
        b.close()
    b = RocksStateMachine(tmp_path / "b")
    try:
        assert b.data == expected
        assert await b.applied_state() == (LogId(1, 3000), StoredMembership(LogId(1, 0), mem))
        # An empty snapshot empties the state.
        empty = await b.begin_receiving_snapshot()
        write_snapshot(empty, LogId(2, 5000), StoredMembership(LogId(1, 0), mem), [])
        empty.seek(0)
        await b.install_snapshot(SnapshotMeta(LogId(2, 5000), StoredMembership(LogId(1, 0), mem), "e"), empty)
        empty.close()
        assert b.data == {}
        assert (await b.applied_state())[0] == LogId(2, 5000)
    finally:
        a.close()
        b.close()


def _read_snapshot_pairs(data: Any) -> dict[str, str]:
    """The key-value pairs of a ``RocksStateMachine`` snapshot file (its frames)."""
    from openraft_py._core import FrameReader
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC, _dec_any

    data.seek(0)
    assert data.read(len(SNAPSHOT_MAGIC)) == SNAPSHOT_MAGIC
    reader = FrameReader(2**32)
    out: dict[str, str] = {}
    for frame in reader.feed(data.read()):
        tag, body = _dec_any.decode(frame)
        if tag == "d":
            for k, v in body:
                out[k.decode()] = v.decode()
    return out


async def test_snapshot_is_point_in_time_while_apply_runs(tmp_path: Path) -> None:
    """Every apply batch sets ``counter`` to its last index and adds a key; a snapshot built
    while batches keep landing holds exactly the state of its meta's applied index (no key
    or counter of a later batch), and apply batches keep completing while the build reads
    (apply never waits for the build). Repeated: a torn image shows up as a mismatch."""
    async with RocksStateMachine(tmp_path / "sm") as sm:
        # A state big enough that a build takes many apply batches' time.
        await sm.apply([kv(i, KvSet(f"base{i:06d}", "x" * 64)) for i in range(1, 20001)])
        index = 20000
        for _round in range(5):
            build = asyncio.ensure_future(sm.get_snapshot_builder().build_snapshot())
            during = 0
            while not build.done():
                index += 1
                await sm.apply([kv(index, KvSet("counter", str(index))), kv(index + 1, KvSet(f"late{index}", "y"))])
                index += 1
                during += 1
            snap = await build
            try:
                last = snap.meta.last_log_id
                assert last is not None
                pairs = _read_snapshot_pairs(snap.data)
            finally:
                snap.data.close()
            late = sorted(int(k[4:]) for k in pairs if k.startswith("late"))
            if last.index > 20000:
                # the pair of the batch ending at ``last`` is in; nothing after it
                assert pairs["counter"] == str(last.index - 1)
                assert late and late[-1] == last.index - 1
            else:
                assert "counter" not in pairs or int(pairs["counter"]) <= last.index
            assert all(i < last.index for i in late), f"a key applied after {last!r} is in its snapshot"
            assert sum(1 for k in pairs if k.startswith("base")) == 20000
            assert during > 0  # apply batches completed while the build ran


# -- corruption, close after a failure, foreign databases (issue 9) -----------------------------

WAL_BLOCK = 32 * 1024  # RocksDB's log block size; a record header is crc32c(4) length(2) type(1)


def _newest_wal(path: Path) -> Path:
    wals = [p for p in path.iterdir() if p.name.endswith(".log") and p.name[:-4].isdigit()]
    assert wals, sorted(os.listdir(path))
    return max(wals, key=lambda p: int(p.name[:-4]))


def _flip(f: Path, offset: int) -> None:
    data = bytearray(f.read_bytes())
    data[offset] ^= 0xFF
    f.write_bytes(bytes(data))


def _last_block_first_record(data: bytes) -> int:
    off = (len(data) // WAL_BLOCK) * WAL_BLOCK
    return off if off < len(data) else off - WAL_BLOCK


def _tree_state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and mtime (to prove nothing was written)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


async def _crash_image(tmp_path: Path, n: int) -> tuple[Path, int]:
    """The directory of a store that acknowledged entries ``0..n-1`` and a vote and was never
    closed (a copy taken while open: what a process crash leaves, the data only in the WAL)."""
    src = tmp_path / "live"
    s = RocksLogStore(src)
    try:
        await s.save_vote(Vote.new(3, 1))
        for lo in range(0, n, 100):
            await append_durable(s, entries(3, lo, min(n, lo + 100)))
        image = tmp_path / "image"
        shutil.copytree(src, image)
    finally:
        await s.aclose()
    return image, n - 1


async def test_damaged_wal_raises_storage_error_never_silent_loss(tmp_path: Path) -> None:
    """A crash image reopens with everything; the same image with one damaged WAL byte (a
    checksum mismatch in the middle, or a length field that makes RocksDB take the rest of the
    last block for a torn tail) raises ``StorageError`` naming the path and the problem."""
    image, last = await _crash_image(tmp_path, 2000)
    size = _newest_wal(image).stat().st_size
    assert size > 2 * WAL_BLOCK
    ok = tmp_path / "ok"
    shutil.copytree(image, ok)
    async with RocksLogStore(ok) as s:
        assert await s.try_get_log_entries(0, last + 1) == entries(3, 0, last + 1)
        assert await s.read_vote() == Vote.new(3, 1)
    cases = {
        "middle": (size // 2, "the database is damaged"),
        "torn-looking": (_last_block_first_record(_newest_wal(image).read_bytes()) + 5, "acknowledged writes are missing"),
    }
    for name, (offset, what) in cases.items():
        p = tmp_path / name
        shutil.copytree(image, p)
        _flip(_newest_wal(p), offset)
        with pytest.raises(StorageError, match=what) as ei:
            RocksLogStore(p)
        assert str(p) in str(ei.value)
        # Refused, nothing repaired: the same answer again.
        with pytest.raises(StorageError, match=what):
            RocksLogStore(p)


async def test_ack_mark_is_recorded_per_group(tmp_path: Path) -> None:
    """The acknowledged mark follows the group commit (one record per group, none per entry)
    and covers every write of the group before its callbacks run."""
    async with RocksLogStore(tmp_path / "log") as s:
        g0, gen0 = s.groups_written, s._mark.generation
        await append_durable(s, entries(1, 0, 500))
        await s.save_committed(LogId(1, 10))  # not waited for: the vote behind it is
        await s.save_vote(Vote.new(1, 1))
        assert s._mark.seqno == s._db.latest_sequence_number()
        assert 0 < s._mark.generation - gen0 <= s.groups_written - g0
    # The mark is on disk with the same number.
    from openraft_py.storage.rocks.ackmark import AckMark

    gen, seqno = AckMark.read(str(tmp_path / "log"), "log store")  # type: ignore[misc]
    assert seqno >= 500 + 2


@pytest.mark.parametrize(
    ("how", "kw"),
    [("wal", {}), ("rocksdb", {"fsync_mode": "rocksdb"}), ("unsynced", {"sync": False})],
)
@pytest.mark.parametrize("batch", [1, 600], ids=["small", "large"])
async def test_a_log_store_whose_directory_is_removed_acknowledges_nothing_more(
    tmp_path: Path, how: str, kw: dict[str, Any], batch: int
) -> None:
    """``rm -rf`` of a running store's directory: RocksDB goes on writing into files that no
    longer have a name, and every write succeeded and was acknowledged, though the next start
    would find an empty directory (a node forgetting its log and its vote). Each write after
    the removal now fails with ``StorageError`` naming the deleted mark file and ENOENT."""
    path = tmp_path / "log"
    s = RocksLogStore(path, **kw)
    try:
        await append_durable(s, entries(1, 0, 3))
        shutil.rmtree(path)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[BaseException | None] = loop.create_future()
        await s.append(entries(1, 3, 3 + batch), IOFlushed(done.set_result, loop))
        err = await asyncio.wait_for(done, 10)
        assert isinstance(err, StorageError), err
        assert "[Errno 2]" in str(err) and str(path / "OPENRAFT-ACKED") in str(err), err
        with pytest.raises(StorageError, match="was deleted while the store is open"):
            await asyncio.wait_for(s.save_vote(Vote.new(1, 1)), 10)
    finally:
        try:
            await s.aclose()
        except StorageError:
            pass


async def test_ack_mark_file_damage(tmp_path: Path) -> None:
    """One spoiled slot (a torn write) is survived; both spoiled, or the file missing from a
    store that has one, is ``StorageError``."""
    from openraft_py.storage.rocks.ackmark import ACK_FILE

    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, entries(1, 0, 10))
    mark = p / ACK_FILE
    good = mark.read_bytes()
    for slot in (0, 512):
        _flip(mark, slot + 10)
        async with RocksLogStore(p) as s:
            assert await s.try_get_log_entries(0, 10) == entries(1, 0, 10)
        mark.write_bytes(good)
    _flip(mark, 10)
    _flip(mark, 512 + 10)
    with pytest.raises(StorageError, match=ACK_FILE) as ei:
        RocksLogStore(p)
    assert str(p) in str(ei.value)
    mark.unlink()
    with pytest.raises(StorageError, match="missing"):
        RocksLogStore(p)


@pytest.mark.parametrize("version, says", [
    (b"2", "OPENRAFT-ACKED is of format version 2, written by a newer version of openraft-py; this version reads "
           "format version 1 only: run the newer version on it"),
    (b"0", "OPENRAFT-ACKED is of format version 0, written by an older version of openraft-py; this version reads "
           "format version 1 only"),
])
async def test_ack_mark_file_of_another_format_version_is_named_so(tmp_path: Path, version: bytes, says: str) -> None:
    """A mark file whose slots are of another format version (a newer release's, met after a
    downgrade: simulated by its magic ``ORPYACK2``, each slot's checksum valid) is refused
    naming the version found and the version read, and left as it was: it was called
    corrupted ("no valid slot"). One slot of another version beside a valid one is a damaged
    slot, survived as before."""
    import zlib

    from openraft_py.storage.rocks.ackmark import ACK_FILE

    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, entries(1, 0, 10))
    mark = p / ACK_FILE
    good = mark.read_bytes()
    other = bytearray(good)
    for off in (0, 512):
        other[off + 7:off + 8] = version
        other[off + 24:off + 28] = zlib.crc32(bytes(other[off:off + 24])).to_bytes(4, "little")
    mark.write_bytes(bytes(other))
    with pytest.raises(StorageError, match=f"at '{p}': ValueError: {says}"):
        RocksLogStore(p)
    assert mark.read_bytes() == bytes(other)
    mark.write_bytes(bytes(other[:512]) + good[512:])
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 10) == entries(1, 0, 10)


async def test_store_of_an_earlier_version_gets_its_mark(tmp_path: Path) -> None:
    """A log store written before the mark existed (format marker, no mark file) opens, and
    from then on has the mark."""
    import msgspec
    from rocksdict import Options, Rdict, WriteOptions

    from openraft_py._core import encode_index_key
    from openraft_py.storage.rocks.ackmark import ACK_FILE
    from openraft_py.storage.rocks.log_format import LOG_FORMAT, encode_entry_records

    p = tmp_path / "log"
    o = Options(raw_mode=True)
    o.create_if_missing(True)
    o.create_missing_column_families(True)
    db = Rdict(str(p), o, column_families={"entries": Options(raw_mode=True), "meta": Options(raw_mode=True)})
    meta, ents = db.get_column_family("meta"), db.get_column_family("entries")
    wo = WriteOptions()
    wo.sync = True
    meta.put(b"format", msgspec.msgpack.encode(LOG_FORMAT), wo)
    for e, blob in zip(entries(1, 0, 5), encode_entry_records(entries(1, 0, 5))):
        ents.put(encode_index_key(e.log_id.index), blob, wo)
    meta.close()
    ents.close()
    db.close()
    del meta, ents, db
    assert not (p / ACK_FILE).exists()
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 5) == entries(1, 0, 5)
    assert (p / ACK_FILE).exists()
    (p / ACK_FILE).unlink()
    with pytest.raises(StorageError, match="missing"):
        RocksLogStore(p)


def _foreign(path: Path, cfs: tuple[str, ...], data: bool) -> None:
    from rocksdict import Options, Rdict

    o = Options(raw_mode=True)
    o.create_if_missing(True)
    o.create_missing_column_families(True)
    db = Rdict(str(path), o, column_families={cf: Options(raw_mode=True) for cf in cfs})
    if data:
        cf = db.get_column_family(cfs[-1])
        cf[b"their key"] = b"their value"
        cf.close()
        del cf
    db.close()
    del db


@pytest.mark.parametrize("data", [False, True], ids=["empty", "with-data"])
@pytest.mark.parametrize("config", [True, False], ids=["rocksdict-config", "no-config"])
def test_foreign_database_with_our_column_families_is_never_written(tmp_path: Path, data: bool, config: bool) -> None:
    """A database of someone else that happens to have ``entries``/``meta`` (or ``sm``) column
    families, empty or not, is refused and left byte for byte as it was (also rocksdict's own
    config file, which every rocksdict open writes)."""
    log = tmp_path / "log"
    _foreign(log, ("entries", "meta"), data)
    sm = tmp_path / "sm"
    _foreign(sm / "db", ("sm",), data)
    if not config:
        (log / "rocksdict-config.json").unlink()
        (sm / "db" / "rocksdict-config.json").unlink()
    before = _tree_state(tmp_path)
    with pytest.raises(StorageError, match="foreign") as ei:
        RocksLogStore(log)
    assert str(log) in str(ei.value)
    with pytest.raises(StorageError, match="foreign") as ei:
        RocksStateMachine(sm)
    assert str(sm) in str(ei.value)
    assert _tree_state(tmp_path) == before


def test_creation_that_crashed_before_the_marker_is_ours(tmp_path: Path) -> None:
    """An empty database with our (generation 0) mark file is a creation that crashed before
    the format marker was written: it opens. Without the mark file it is foreign."""
    from openraft_py.storage.rocks.ackmark import AckMark

    p = tmp_path / "log"
    _foreign(p, ("entries", "meta"), data=False)
    AckMark.create(str(p), 0).close()
    RocksLogStore(p).close()
    RocksLogStore(p).close()  # now with its marker


class _CloseFails:
    """Wraps a rocksdict object; ``close()`` raises what rocksdict raises after a failed write
    (without closing: only dropping the last reference releases the database then)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def close(self) -> None:
        raise Exception("IO error: injected; IO error: Writer has previous error.")

    def flush_wal(self, sync: bool) -> None:
        raise Exception("IO error: injected")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_close_after_failed_write_raises_storage_error_and_releases_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed group write reports ``StorageError`` to its callback and fails later writes;
    ``close()`` then raises ``StorageError`` (not rocksdict's ``Exception``) and releases the
    lock: the same path opens again in this process with every acknowledged entry."""
    from openraft_py.storage.rocks import group_writer

    p = tmp_path / "log"
    s = RocksLogStore(p)
    await append_durable(s, entries(1, 0, 10))
    real = group_writer.GroupWriter._write_group

    def failing(self: Any, group: Any, durable: bool) -> None:
        handle = self._db.get_column_family_handle("entries")  # noqa: F841 - a handle in the frame
        raise Exception("IO error: While appending to file: injected")

    monkeypatch.setattr(group_writer.GroupWriter, "_write_group", failing)
    monkeypatch.setattr(group_writer.GroupWriter, "write_now", lambda *a, **k: False)  # the thread's path
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[BaseException | None] = loop.create_future()
    await s.append(entries(1, 10, 20), IOFlushed(lambda e: fut.set_result(e), loop))
    err = await asyncio.wait_for(fut, 5)
    assert isinstance(err, StorageError) and str(p) in str(err)
    monkeypatch.setattr(group_writer.GroupWriter, "_write_group", real)
    with pytest.raises(StorageError, match="saving the vote"):
        await asyncio.wait_for(s.save_vote(Vote.new(1, 1)), 5)  # the writer stays failed
    s._entries = _CloseFails(s._entries)  # type: ignore[assignment]
    s._db = _CloseFails(s._db)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="closing") as ei:
        await asyncio.wait_for(s.aclose(), 10)
    assert str(p) in str(ei.value)
    await s.aclose()  # idempotent, no error the second time
    async with RocksLogStore(p) as again:  # the lock was released
        assert await again.get_log_state() == LogState(None, LogId(1, 9))
        assert await again.try_get_log_entries(0, 10) == entries(1, 0, 10)
    del err, ei


async def test_state_machine_close_failure_raises_storage_error_and_releases_lock(tmp_path: Path) -> None:
    p = tmp_path / "sm"
    sm = RocksStateMachine(p)
    await sm.apply([kv(1, KvSet("a", "1"))])
    sm._cf = _CloseFails(sm._cf)  # type: ignore[assignment]
    sm._db = _CloseFails(sm._db)  # type: ignore[assignment]
    with pytest.raises(StorageError, match="closing") as ei:
        await asyncio.wait_for(sm.aclose(), 10)
    assert str(p) in str(ei.value)
    async with RocksStateMachine(p) as again:  # the lock was released
        assert again.get("a") == "1"  # written to the WAL (the OS has it), recovered at open


async def test_state_machine_records_its_sync_points(tmp_path: Path) -> None:
    """The state machine's mark advances at its durable points (snapshot build, close), so a
    WAL that lost what a snapshot covers is refused rather than silently rolled back."""
    from openraft_py.storage.rocks.ackmark import AckMark

    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([kv(i, KvSet(f"k{i}", "v")) for i in range(1, 200)])
        before = sm._mark.seqno
        snap = await sm.get_snapshot_builder().build_snapshot()
        snap.data.close()
        assert sm._mark.seqno > before
    _, seqno = AckMark.read(str(p / "db"), "state machine")  # type: ignore[misc]
    assert seqno >= 200


async def test_state_machine_damaged_wal_after_snapshot_is_refused(tmp_path: Path) -> None:
    """A state machine whose WAL lost what its last snapshot build made durable (a length
    field damaged in the last block: RocksDB drops the rest as a torn tail) is refused, not
    silently rolled back below its snapshot; the undamaged crash image opens with the data."""
    live = tmp_path / "live"
    sm = RocksStateMachine(live)
    try:
        await sm.apply([kv(i, KvSet(f"k{i}", "v" * 50)) for i in range(1, 1500)])
        snap = await sm.get_snapshot_builder().build_snapshot()
        snap.data.close()
        shutil.copytree(live, tmp_path / "ok")
        shutil.copytree(live, tmp_path / "bad")
    finally:
        await sm.aclose()
    async with RocksStateMachine(tmp_path / "ok") as good:
        assert good.get("k1499") == "v" * 50
    wal = _newest_wal(tmp_path / "bad" / "db")
    _flip(wal, _last_block_first_record(wal.read_bytes()) + 5)
    with pytest.raises(StorageError, match="acknowledged writes are missing") as ei:
        RocksStateMachine(tmp_path / "bad")
    assert str(tmp_path / "bad") in str(ei.value)


def test_creation_that_stopped_before_rocksdb_is_retried(tmp_path: Path) -> None:
    """A directory holding only our mark file (creation stopped before RocksDB wrote its
    files) is created again, not refused as unreadable."""
    from openraft_py.storage.rocks.ackmark import ACK_FILE, AckMark

    p = tmp_path / "log"
    p.mkdir()
    AckMark.create(str(p), 0).close()
    assert os.listdir(p) == [ACK_FILE]
    RocksLogStore(p).close()
    RocksLogStore(p).close()


async def test_damaged_sst_read_raises_storage_error_naming_the_corruption(tmp_path: Path) -> None:
    """Entries flushed to an SST file whose block is damaged: the read raises ``StorageError``
    with RocksDB's diagnosis (rocksdict's item iteration alone stops silently: that would look
    like a short log)."""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, [normal(1, i, b"payload-%d-" % i * 5) for i in range(3000)])
    sst = max((f for f in p.iterdir() if f.name.endswith(".sst")), key=lambda f: f.stat().st_size)
    _flip(sst, sst.stat().st_size // 3)
    async with RocksLogStore(p) as s:
        with pytest.raises(StorageError, match="Corruption") as ei:
            await asyncio.wait_for(s.try_get_log_entries(0, 3000), 10)
        assert str(p) in str(ei.value)


def _record(term: int, index: int, kind: int, payload: bytes) -> bytes:
    """An ``entries`` value as the log store writes it (``_core`` codec record)."""
    return term.to_bytes(8, "big") + index.to_bytes(8, "big") + bytes([kind]) + payload


def _tamper_entries(path: Path, put: dict[bytes, bytes], delete: tuple[bytes, ...] = (), cf_name: str = "entries") -> None:
    """Write ``put`` and delete ``delete`` in the column family ``cf_name`` of the closed log
    store at ``path``, behind its back (a bug or another program did it: RocksDB's own
    checksums are intact)."""
    from rocksdict import Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), column_families={cf: Options(raw_mode=True) for cf in ("entries", "meta")})
    cf = db.get_column_family(cf_name)
    for k, v in put.items():
        cf[k] = v
    for k in delete:
        del cf[k]
    cf.close()
    del cf
    db.close()
    del db


def _key(index: int) -> bytes:
    return index.to_bytes(8, "big")


@pytest.mark.parametrize(
    ("put", "delete", "error"),
    [
        ({_key(50): b"xx"}, (), "the record of entry 50 (key 0000000000000032) does not decode: entry record too short"),
        ({_key(50): _record(1, 50, 9, b"")}, (), "the record of entry 50 (key 0000000000000032) does not decode: unknown entry kind 9"),
        ({_key(50): _record(1, 50, 2, b"\xc1")}, (), "the record of entry 50 (key 0000000000000032) does not decode: MessagePack"),
        ({_key(50): _record(1, 52, 1, b"q")}, (), "the record of entry 50 (key 0000000000000032) holds index 52"),
        ({_key(50): _record(0, 50, 1, b"q")}, (), "the record of entry 50 holds term 0, below the term 1 of the entry before it"),
        ({}, (_key(50),), "no entry at index 50"),
    ],
    ids=["short", "kind", "membership", "index", "term-down", "hole"],
)
async def test_a_damaged_record_is_a_storage_error_naming_the_entry(
    tmp_path: Path, put: dict[bytes, bytes], delete: tuple[bytes, ...], error: str
) -> None:
    """A record of the ``entries`` column family that RocksDB reads back intact but that is
    not what the store wrote (a bug, another program): a read that covers it raises
    ``StorageError`` naming the entry, inline (at most 64 entries) and in a worker thread
    alike; it was decoded as it came (a wrong term was returned as the entry's, a record under
    another index was taken for a hole) or failed naming no entry. Reads that do not cover it
    still work."""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, [normal(1, 0), *entries(1, 1, 100)])
    _tamper_entries(p, put, delete)
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(0, 50) == [normal(1, 0), *entries(1, 1, 50)]
        for start, stop in ((45, 100), (0, 100)):  # inline, then in a worker thread
            with pytest.raises(StorageError) as ei:
                await asyncio.wait_for(s.try_get_log_entries(start, stop), 10)
            assert error in str(ei.value), str(ei.value)
            assert f"reading log [{start}, {stop}) from {str(p)!r}" in str(ei.value)


async def test_a_hole_in_the_middle_of_the_log_stops_raft_new_naming_the_store(tmp_path: Path) -> None:
    """A missing index between the first and the last entry is not looked for at the store's
    open (docs/design/durability.md: no exact check is cheap), which reports the two ends;
    ``Raft.new`` reads the whole log at start and refuses it with ``StorageError`` naming the
    store and the index, so no node starts on it."""
    from openraft_py import Config, Raft
    from openraft_py.network.router import Router
    from openraft_py.storage.memory import MemStateMachine

    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, [normal(1, 0), *entries(1, 1, 100)])
    _tamper_entries(p, {}, (_key(50),))
    async with RocksLogStore(p) as s:
        assert (await s.get_log_state()).last_log_id == LogId(1, 99)
        with pytest.raises(StorageError) as ei:
            await asyncio.wait_for(Raft.new(1, Config(), Router().factory(1), s, MemStateMachine()), 10)
        assert f"from {str(p)!r}" in str(ei.value) and "no entry at index 50" in str(ei.value), str(ei.value)


@pytest.mark.parametrize(
    ("put", "delete", "error"),
    [
        ({_key(99): _record(1, 150, 1, b"q")}, (), "the record of entry 99 (key 0000000000000063) holds index 150"),
        ({_key(99): b""}, (), "the record of entry 99 (key 0000000000000063) does not decode"),
        ({_key(99): _record(2**62, 99, 1, b"q")}, (), "the record of entry 99 holds term 4611686018427387904, above MAX_TERM"),
        ({b"zzz": b"hello"}, (), "holds a key that is no entry index: b'zzz'"),
        ({}, (_key(0), _key(1)), "entries [0, 2) are missing: the first stored entry is 2, but the log starts at 0"),
    ],
    ids=["last-index", "last-short", "last-term-max", "foreign-key", "first-missing"],
)
async def test_an_open_refuses_a_log_whose_ends_are_damaged(
    tmp_path: Path, put: dict[bytes, bytes], delete: tuple[bytes, ...], error: str
) -> None:
    """The open reads the last entry (the log's last log id) and the first: a record there that
    is not the entry its key names, a key that is no index, or a log that does not start right
    after its purged entries is refused with ``StorageError`` naming it. (The last record's
    index was taken as it came: the log claimed entries up to 150 that it does not hold.)"""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, [normal(1, 0), *entries(1, 1, 100)])
    _tamper_entries(p, put, delete)
    with pytest.raises(StorageError) as ei:
        RocksLogStore(p)
    assert error in str(ei.value), str(ei.value)
    assert f"opening log store at {str(p)!r}" in str(ei.value)


async def test_an_open_names_a_meta_value_that_does_not_decode(tmp_path: Path) -> None:
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await s.save_vote(Vote.new(1, 1, False))
    _tamper_entries(p, {b"vote": b"\xc1"}, cf_name="meta")
    with pytest.raises(StorageError, match="the stored 'vote' does not decode"):
        RocksLogStore(p)


async def test_an_open_accepts_a_log_that_starts_after_its_purged_entries(tmp_path: Path) -> None:
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, entries(1, 0, 100))
        await s.purge(LogId(1, 49))
    async with RocksLogStore(p) as s:
        assert await s.get_log_state() == LogState(LogId(1, 49), LogId(1, 99))
        assert await s.try_get_log_entries(50, 100) == entries(1, 50, 100)
        await s.purge(LogId(1, 120))  # past the last entry: nothing stored is left
    async with RocksLogStore(p) as s:
        assert await s.get_log_state() == LogState(LogId(1, 120), LogId(1, 120))
        await append_durable(s, entries(1, 121, 125))
    async with RocksLogStore(p) as s:
        assert await s.try_get_log_entries(121, 125) == entries(1, 121, 125)


async def test_save_committed_does_not_wait_for_a_sync(tmp_path: Path) -> None:
    """``save_committed`` returns while the writer is still busy (the contract asks for no
    durability), is readable at once, and becomes durable behind the appends before it."""
    import threading

    from rocksdict import WriteBatch

    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        await append_durable(s, entries(1, 0, 20))
        busy = threading.Event()

        def blocked_batch() -> WriteBatch:
            busy.wait(10)
            return WriteBatch(raw_mode=True)

        s._writer.submit(blocked_batch, lambda err: None)
        try:
            # Had it waited for its group commit, this would wait for the blocked writer.
            await asyncio.wait_for(s.save_committed(LogId(1, 19)), 2)
            assert await s.read_committed() == LogId(1, 19)
        finally:
            busy.set()
    async with RocksLogStore(p) as s:
        assert await s.read_committed() == LogId(1, 19)
        assert await s.get_log_state() == LogState(None, LogId(1, 19))


async def test_save_committed_alone_writes_nothing(tmp_path: Path) -> None:
    """``save_committed`` writes nothing by itself (no RocksDB write, no fsync, no wake-up of
    the writer): the committed id goes into the batch of the store's next write (an append,
    a vote, a truncate, a purge), synced and covered by the acknowledged mark with it, or is
    written and synced by ``close()``."""
    p = tmp_path / "log"
    async with RocksLogStore(p) as s:
        wal = s._writer._wal
        assert wal is not None
        await append_durable(s, entries(1, 0, 20))
        fsyncs0, groups0, seq0 = wal.fsyncs, s.groups_written, s._db.latest_sequence_number()
        await s.save_committed(LogId(1, 10))
        await s.save_committed(LogId(1, 12))
        await asyncio.sleep(0.05)
        assert (wal.fsyncs, s.groups_written, s._db.latest_sequence_number()) == (fsyncs0, groups0, seq0)
        assert await s.read_committed() == LogId(1, 12)
        await append_durable(s, entries(1, 20, 21))  # one batch: the entry and the committed id
        assert s.groups_written == groups0 + 1
        assert s._mark.seqno == s._db.latest_sequence_number() == seq0 + 2
        await append_durable(s, entries(1, 21, 22))  # nothing new to save: the entry alone
        assert s._db.latest_sequence_number() == seq0 + 3
        await s.save_committed(LogId(1, 15))
        await s.save_vote(Vote.new(2, 1))  # the vote's batch carries it
        assert s._mark.seqno == s._db.latest_sequence_number() == seq0 + 5
    async with RocksLogStore(p) as s:
        assert await s.read_committed() == LogId(1, 15)
        await s.save_committed(LogId(1, 20))  # the last call before close
    from openraft_py.storage.rocks.ackmark import AckMark

    _, seqno = AckMark.read(str(p), "log store")  # type: ignore[misc]
    async with RocksLogStore(p) as s:
        assert await s.read_committed() == LogId(1, 20)
        assert seqno == s._db.latest_sequence_number()  # close wrote, synced and recorded it


def test_snapshot_files_of_the_first_format_are_still_read(tmp_path: Path) -> None:
    """A file written before the checksum (``SNAPSHOT_MAGIC_V1``, end frame ``["e", count]``),
    as an older node sends it, is read; its count is still checked."""
    import io

    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC_V1, _enc, read_snapshot_pairs

    def v1(pairs: list[tuple[bytes, bytes]], count: int) -> io.BytesIO:
        f = io.BytesIO()
        f.write(SNAPSHOT_MAGIC_V1)
        f.write(encode_frame(_enc.encode(("h", (LogId(1, 2), StoredMembership(None, Membership.new([{1}])))))))
        f.write(encode_frame(_enc.encode(("d", pairs))))
        f.write(encode_frame(_enc.encode(("e", count))))
        return f

    pairs = [(b"a", b"1"), (b"b", b"2")]
    assert list(read_snapshot_pairs(v1(pairs, 2), "old")) == pairs
    with pytest.raises(ValueError, match="end frame says 3 pairs, read 2"):
        list(read_snapshot_pairs(v1(pairs, 3), "old"))


def _first_format(
    pairs: list[tuple[bytes, bytes]], chunk: int = 10, frames: list[bytes] | None = None, end: Any = None
) -> bytes:
    """A snapshot file of the first format (``SNAPSHOT_MAGIC_V1``: no checksum, end frame
    ``["e", count]``) holding ``pairs`` in data frames of ``chunk`` pairs; ``frames``: the
    frames' payloads to write instead of the data frames; ``end``: the end frame's body
    instead of the count."""
    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC_V1, _enc

    out = [SNAPSHOT_MAGIC_V1, encode_frame(_enc.encode(("h", (LogId(1, 40), EMPTY_STORED_MEMBERSHIP))))]
    if frames is None:
        frames = [_enc.encode(("d", pairs[i : i + chunk])) for i in range(0, len(pairs), chunk)]
    out += [encode_frame(f) for f in frames]
    out.append(encode_frame(_enc.encode(("e", len(pairs) if end is None else end))))
    return b"".join(out)


_V1_PAIRS = [(f"key{i:03d}".encode(), f"value{i}".encode()) for i in range(40)]


def _spoiled_first_format(how: str) -> bytes:
    from openraft_py.kv.rocks_snapshot import _enc

    good = _first_format(_V1_PAIRS)
    if how == "cut-in-data":
        return good[: len(good) // 2]
    if how == "cut-before-end":
        return good[: len(good) - len(_enc.encode(("e", 40))) - 4]
    if how == "cut-in-end":
        return good[:-1]
    if how == "bit-in-key":
        raw = bytearray(good)
        raw[raw.index(b"key017") + 5] ^= 0x01  # key017 -> key016: the key before it again
        return bytes(raw)
    if how == "bit-in-frame-length":
        raw = bytearray(good)
        at = raw.index(b"\x92\xa1d")  # the first data frame's payload; its length is before it
        raw[at - 4] ^= 0x10  # 256 MiB more
        return bytes(raw)
    if how == "bit-in-frame":
        raw = bytearray(good)
        raw[raw.index(b"\x92\xa1d")] ^= 0x01  # ["d", pairs] -> ["d", pairs, <what follows>]
        return bytes(raw)
    if how == "chunk-repeated":
        chunks = [_enc.encode(("d", _V1_PAIRS[i : i + 10])) for i in range(0, 40, 10)]
        return _first_format(_V1_PAIRS, frames=[chunks[0], chunks[1], chunks[1], chunks[2], chunks[3]])
    if how == "chunks-swapped":
        chunks = [_enc.encode(("d", _V1_PAIRS[i : i + 10])) for i in range(0, 40, 10)]
        return _first_format(_V1_PAIRS, frames=[chunks[0], chunks[2], chunks[1], chunks[3]])
    if how == "end-not-a-count":
        return _first_format(_V1_PAIRS, end="40")
    if how == "bit-in-tag":
        raw = bytearray(good)
        raw[raw.index(b"\x92\xa1d") + 2] ^= 0x40
        return bytes(raw)
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("cut-in-data", "truncated"),
        ("cut-before-end", "truncated"),
        ("cut-in-end", "truncated"),
        ("bit-in-key", r"pair 17's key b'key016' is not after the key before it, b'key016' \(keys are written in "
                       r"ascending order: the file is damaged\)"),
        ("bit-in-frame-length", "a frame's length is damaged: frame of 268435\\d+ bytes exceeds max_frame_size (\\d+) "
                                r"\(the whole file has \1 bytes\)"),
        ("bit-in-frame", "frame 2 does not decode: Input data was truncated"),
        ("chunk-repeated", "pair 20's key b'key010' is not after the key before it, b'key019'"),
        ("chunks-swapped", "pair 20's key b'key010' is not after the key before it, b'key029'"),
        ("end-not-a-count", "the end frame holds str, not a pair count"),
        ("bit-in-tag", "unexpected frame '\\$'"),
    ],
    ids=["cut-in-data", "cut-before-end", "cut-in-end", "bit-in-key", "bit-in-frame-length", "bit-in-frame",
         "chunk-repeated", "chunks-swapped", "end-not-a-count", "bit-in-tag"],
)
async def test_a_damaged_first_format_snapshot_is_refused_naming_the_damage(tmp_path: Path, how: str, error: str) -> None:
    """A file of the first format (no checksum) cut short or damaged where it can be seen (a
    key out of order, a frame that does not decode, an end frame without a count) is refused
    by ``read_snapshot_pairs``, ``check_snapshot`` and ``install_snapshot`` with
    ``ValueError`` saying what is wrong, the state unchanged. ``check_snapshot`` used to
    return ``False`` for every such file without reading it (a damaged current snapshot was
    handed out), and a damaged key was installed."""
    import io

    from openraft_py.kv.rocks_snapshot import check_snapshot, read_snapshot_pairs

    good = _first_format(_V1_PAIRS)
    assert list(read_snapshot_pairs(io.BytesIO(good), "old")) == _V1_PAIRS
    assert check_snapshot(io.BytesIO(good), "old") is False  # intact, and nothing to check it by
    bad = _spoiled_first_format(how)
    pattern = f"not a RocksStateMachine snapshot \\(old\\): {error}"
    with pytest.raises(ValueError, match=pattern):
        list(read_snapshot_pairs(io.BytesIO(bad), "old"))
    with pytest.raises(ValueError, match=pattern):
        check_snapshot(io.BytesIO(bad), "old")
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([Entry(LogId(1, 1), Normal(encode_kv(KvSet("before", "x"))))])
        meta = SnapshotMeta(LogId(1, 40), EMPTY_STORED_MEMBERSHIP, "old")
        with await sm.begin_receiving_snapshot() as f:
            f.write(bad)
            with pytest.raises(ValueError, match=pattern):
                await sm.install_snapshot(meta, f)
        assert sm.data == {"before": "x"}
        assert (await sm.applied_state())[0] == LogId(1, 1)
        with await sm.begin_receiving_snapshot() as f:
            f.write(good)
            await sm.install_snapshot(meta, f)
        assert sm.data == {k.decode(): v.decode() for k, v in _V1_PAIRS}


async def test_a_damaged_current_snapshot_of_the_first_format_is_rebuilt_not_handed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state machine whose current snapshot is a file of the first format (written by an
    earlier version) hands it out while it is intact, and rebuilds it, logged at ERROR, once
    it is damaged (cut short): it was handed out unchecked, and every follower refused it at
    every resend."""
    import logging

    from openraft_py.kv.rocks_snapshot import check_snapshot, read_snapshot_pairs

    async with RocksStateMachine(tmp_path / "a") as a:
        await a.apply([kv(i, KvSet(f"k{i:04d}", f"v{i}")) for i in range(1, 501)])
        built = await a.get_snapshot_builder().build_snapshot()
        built.data.close()
        path = tmp_path / "a" / "snapshots" / f"{built.meta.snapshot_id}.snap"
        with open(path, "rb") as f:
            pairs = list(read_snapshot_pairs(f, "x"))
        old = _first_format(pairs, chunk=100)
        path.write_bytes(old)  # as an earlier version left it
        snap = await a.get_current_snapshot()
        assert snap is not None
        with snap.data:
            assert snap.meta == built.meta and snap.data.read() == old

        path.write_bytes(old[:-7])
        caplog.set_level(logging.ERROR, logger="openraft_py.kv.state_machine")
        snap = await a.get_current_snapshot()
        assert snap is not None
        with snap.data:
            assert snap.meta.snapshot_id != built.meta.snapshot_id
            assert snap.meta.last_log_id == built.meta.last_log_id
            assert check_snapshot(snap.data, snap.meta.snapshot_id) is True  # the current format
            assert list(read_snapshot_pairs(snap.data, "y")) == pairs
        assert not path.exists(), "the damaged file is still there"
        assert any("truncated" in r.getMessage() and "building a new snapshot" in r.getMessage() for r in caplog.records)


def test_a_checksummed_end_frame_is_required_of_the_second_format() -> None:
    """A file with the current magic whose end frame has no checksum (a v1 body under a v2
    magic) is refused, as is one whose checksum covers other bytes."""
    import io

    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC, _enc, read_snapshot_pairs, write_snapshot

    f = io.BytesIO()
    f.write(SNAPSHOT_MAGIC)
    f.write(encode_frame(_enc.encode(("h", (None, StoredMembership(None, Membership.new([{1}])))))))
    f.write(encode_frame(_enc.encode(("e", 0))))
    with pytest.raises(ValueError, match="not a RocksStateMachine snapshot"):
        list(read_snapshot_pairs(f, "x"))
    good = io.BytesIO()
    assert write_snapshot(good, None, StoredMembership(None, Membership.new([{1}])), [(b"k", b"v")]) == 1
    assert list(read_snapshot_pairs(good, "x")) == [(b"k", b"v")]


@pytest.mark.parametrize("damaged", ["mapplied", "mmembership", "current.meta"])
async def test_a_state_machine_names_the_meta_value_that_does_not_decode(tmp_path: Path, damaged: str) -> None:
    from rocksdict import Options, Rdict

    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        mem = Membership.new([{1}])
        await sm.apply([Entry(LogId(1, 1), mem), Entry(LogId(1, 2), Normal(encode_kv(KvSet("k", "v"))))])
        (await sm.get_snapshot_builder().build_snapshot()).data.close()
    if damaged == "current.meta":
        (p / "snapshots" / "current.meta").write_bytes(b"\xc1")
        named = f"{p / 'snapshots' / 'current.meta'} does not decode"
    else:
        db = Rdict(str(p / "db"), Options(raw_mode=True), column_families={"sm": Options(raw_mode=True)})
        cf = db.get_column_family("sm")
        cf[damaged.encode()] = b"\xc1"
        cf.close()
        del cf
        db.close()
        del db
        named = f"the stored {damaged!r} does not decode"
    with pytest.raises(StorageError, match="opening state machine at") as ei:
        RocksStateMachine(p)
    assert named in str(ei.value), str(ei.value)


async def test_a_stored_value_that_is_not_utf8_is_a_storage_error_naming_the_key(tmp_path: Path) -> None:
    """Data the state machine never writes (a value that is not utf-8, put by another
    program): ``get`` and ``data`` raise ``StorageError`` naming the key (``get`` raised a bare
    ``UnicodeDecodeError``), and an ``apply`` that reads the key raises naming it."""
    from rocksdict import Options, Rdict

    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([Entry(LogId(1, 1), Normal(encode_kv(KvSet("k", "v"))))])
    db = Rdict(str(p / "db"), Options(raw_mode=True), column_families={"sm": Options(raw_mode=True)})
    cf = db.get_column_family("sm")
    cf[b"dk"] = b"\xff\xfe"
    cf.close()
    del cf
    db.close()
    del db
    named = "the stored value of the key 'k' is not utf-8"
    async with RocksStateMachine(p) as sm:
        with pytest.raises(StorageError, match=f"reading 'k' from state machine at .*{named}"):
            sm.get("k")
        with pytest.raises(StorageError, match=f"reading the data of state machine at .*{named}"):
            sm.data  # noqa: B018 - the property reads
        with pytest.raises(ValueError, match=named):
            await sm.apply([Entry(LogId(1, 2), Normal(encode_kv(KvCas("k", "v", "w"))))])


def _snapshot_with_chunks(chunks: list[Any]) -> Any:
    """A snapshot file of the current format, checksummed, whose data frames hold ``chunks``
    as they are (a peer wrote them: they pass the checksum)."""
    import io
    import zlib

    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC, _enc

    f = io.BytesIO()
    f.write(SNAPSHOT_MAGIC)
    crc = 0
    for frame in [("h", (LogId(1, 5), EMPTY_STORED_MEMBERSHIP)), *[("d", c) for c in chunks]]:
        payload = _enc.encode(frame)
        crc = zlib.crc32(payload, crc)
        f.write(encode_frame(payload))
    f.write(encode_frame(_enc.encode(("e", (sum(len(c) for c in chunks), crc)))))
    f.seek(0)
    return f


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        ([["k", b"v"]], "pair 0 is not two byte strings: str, bytes"),
        ([[b"k", 5]], "pair 0 is not two byte strings: bytes, int"),
        ({"ab": 1}, "data frame 2 holds dict, not a list of pairs"),
        ([[b"k", b"v", b"w"]], "pair 0 is not a \\[key, value\\] pair: list"),
        ([5], "pair 0 is not a \\[key, value\\] pair: int"),
        ([[b"k", b"v"], [b"k2", b"\xff\xfe"]], "pair 1 is not utf-8"),
        ([[b"\xc3", b"v"]], "pair 0 is not utf-8"),
    ],
    ids=["str-key", "int-value", "map", "triple", "int-pair", "value-not-utf8", "key-not-utf8"],
)
async def test_a_snapshot_whose_pairs_are_not_utf8_byte_strings_is_refused(tmp_path: Path, chunk: Any, error: str) -> None:
    """A checksummed snapshot from a peer whose data frames hold something else than pairs of
    utf-8 byte strings is refused with ``ValueError`` (the node keeps running, its state
    unchanged) instead of failing the install with a ``TypeError`` (taken for a failing
    storage: the node stopped) or installing bytes every later read of the key fails on."""
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([Entry(LogId(1, 1), Normal(encode_kv(KvSet("before", "x"))))])
        meta = SnapshotMeta(LogId(1, 5), EMPTY_STORED_MEMBERSHIP, "peer-snap")
        with pytest.raises(ValueError, match=f"not a RocksStateMachine snapshot \\(peer-snap\\): {error}"):
            await sm.install_snapshot(meta, _snapshot_with_chunks([chunk]))
        assert sm.data == {"before": "x"}
        assert (await sm.applied_state())[0] == LogId(1, 1)
        # Utf-8 that is not ascii installs as ever.
        await sm.install_snapshot(meta, _snapshot_with_chunks([[["ключ".encode(), "значение".encode()]]]))
        assert sm.data == {"ключ": "значение"}


async def test_a_snapshot_frame_nested_deeper_than_the_recursion_limit_is_refused(tmp_path: Path) -> None:
    """A checksummed snapshot whose data frame is ``["d", [[[...nil]]]]`` 5000 deep: refused
    with ``ValueError`` (``RecursionError`` escaped the reader: the install failed as if the
    storage did, which stops the node)."""
    import io
    import zlib

    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import SNAPSHOT_MAGIC, _enc

    header = _enc.encode(("h", (LogId(1, 5), EMPTY_STORED_MEMBERSHIP)))
    deep = b"\x92\xa1d" + b"\x91" * 5000 + b"\xc0"
    f = io.BytesIO()
    f.write(SNAPSHOT_MAGIC + encode_frame(header) + encode_frame(deep))
    f.write(encode_frame(_enc.encode(("e", (0, zlib.crc32(deep, zlib.crc32(header)))))))
    async with RocksStateMachine(tmp_path / "sm") as sm:
        meta = SnapshotMeta(LogId(1, 5), EMPTY_STORED_MEMBERSHIP, "deep")
        with pytest.raises(ValueError, match=r"not a RocksStateMachine snapshot \(deep\): maximum recursion depth"):
            await sm.install_snapshot(meta, f)
        assert (await sm.applied_state())[0] is None


async def test_a_damaged_current_snapshot_is_rebuilt_not_handed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The current snapshot's file is damaged on disk after it was built (one byte inside a
    value): ``get_current_snapshot`` checks it, logs the damage at ERROR and returns a snapshot
    built now from the state instead (the damaged file is gone), which another state machine
    installs with the right data."""
    import logging

    from openraft_py.kv.rocks_snapshot import check_snapshot

    async with RocksStateMachine(tmp_path / "a") as a, RocksStateMachine(tmp_path / "b") as b:
        await a.apply([kv(i, KvSet(f"k{i}", "v" * 50 + str(i))) for i in range(1, 2001)])
        built = await a.get_snapshot_builder().build_snapshot()
        built.data.close()
        path = tmp_path / "a" / "snapshots" / f"{built.meta.snapshot_id}.snap"
        raw = bytearray(path.read_bytes())
        raw[raw.index(b"v" * 50 + b"1000") + 5] ^= 0x01
        path.write_bytes(bytes(raw))
        with open(path, "rb") as f, pytest.raises(ValueError, match="checksum mismatch"):
            check_snapshot(f, built.meta.snapshot_id)

        caplog.set_level(logging.ERROR, logger="openraft_py.kv.state_machine")
        snap = await a.get_current_snapshot()
        assert snap is not None
        try:
            assert snap.meta.snapshot_id != built.meta.snapshot_id
            assert snap.meta.last_log_id == built.meta.last_log_id
            assert check_snapshot(snap.data, snap.meta.snapshot_id) is True
            assert not path.exists(), "the damaged file is still there"
            assert any("checksum mismatch" in r.getMessage() and "building a new snapshot" in r.getMessage()
                       for r in caplog.records)
            f = await b.begin_receiving_snapshot()
            snap.data.seek(0)
            f.write(snap.data.read())
            await b.install_snapshot(snap.meta, f)
            assert b.data == a.data and b.data["k1000"] == "v" * 50 + "1000"
        finally:
            snap.data.close()
        # Checked once more, the new one is handed out as it is.
        again = await a.get_current_snapshot()
        assert again is not None
        again.data.close()
        assert again.meta == snap.meta


def _replace_by(path: Path, kind: str) -> None:
    """Put a directory or a named pipe where the file ``path`` was."""
    path.unlink()
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "named pipe"])
@pytest.mark.parametrize("replaced", ["snapshot file", "current.meta"])
async def test_a_snapshot_file_that_is_not_a_file_is_refused_at_open_saying_what_to_do(
    tmp_path: Path, replaced: str, kind: str
) -> None:
    """The current snapshot's file (or ``current.meta``) replaced by a directory or a named
    pipe: the open raises ``StorageError`` naming it and what to remove (the snapshot file's
    directory was taken for the file: ``get_current_snapshot``, and so ``Raft.new``, raised a
    bare ``IsADirectoryError``; a named pipe blocked the open, or the hand-out, for good).
    Removing what it names opens the state machine with its data and no snapshot."""
    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([kv(1, KvSet("k", "v"))])
        built = await sm.get_snapshot_builder().build_snapshot()
        built.data.close()
    snap_file = p / "snapshots" / f"{built.meta.snapshot_id}.snap"
    meta_file = p / "snapshots" / "current.meta"
    _replace_by(snap_file if replaced == "snapshot file" else meta_file, kind)
    with pytest.raises(StorageError, match="opening state machine at") as ei:
        await asyncio.wait_for(RocksStateMachine.open(p), 30)
    message = str(ei.value)
    if replaced == "snapshot file":
        assert f"{snap_file} is a {kind}: remove it and {meta_file}, which names it" in message, message
    else:
        assert f"{meta_file} is a {kind}, not the file that names the current snapshot: remove it" in message, message
    for f in (snap_file, meta_file):  # what the message says to do
        if f.is_dir():
            f.rmdir()
        elif f.exists():
            f.unlink()
    async with RocksStateMachine(p) as sm:
        assert await sm.get_current_snapshot() is None
        assert sm.data == {"k": "v"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["directory", "named pipe", "missing"])
async def test_a_current_snapshot_file_replaced_while_open_is_a_storage_error_at_hand_out(
    tmp_path: Path, kind: str
) -> None:
    """The current snapshot's file replaced by a directory or a named pipe, or removed, while
    the state machine is open: ``get_current_snapshot`` raises ``StorageError`` naming the
    file and what to remove (a bare ``IsADirectoryError`` or ``FileNotFoundError``; a named
    pipe blocked it for good)."""
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([kv(1, KvSet("k", "v"))])
        built = await sm.get_snapshot_builder().build_snapshot()
        built.data.close()
        snap_file = tmp_path / "sm" / "snapshots" / f"{built.meta.snapshot_id}.snap"
        if kind == "missing":
            snap_file.unlink()
        else:
            _replace_by(snap_file, kind)
        with pytest.raises(StorageError, match="reading the current snapshot of state machine at") as ei:
            await asyncio.wait_for(sm.get_current_snapshot(), 30)
        what = "is missing" if kind == "missing" else f"is a {kind}"
        assert f"{snap_file} {what}: remove" in str(ei.value), str(ei.value)
        assert str(tmp_path / "sm" / "snapshots" / "current.meta") in str(ei.value)


def test_a_snapshot_holding_a_value_over_64_mib_is_read() -> None:
    """A value of 65 MiB (a Config with a larger ``max_entry_bytes`` lets a client write one)
    makes a data frame that large: read and checked like any other. The reader limited a frame
    to 64 MiB, so no follower could install any snapshot of such a state, and its own node took
    each for damaged and built it again every time it handed one out. A frame length past the
    end of the file is still refused at once."""
    import io

    from openraft_py.kv.rocks_snapshot import check_snapshot

    big = b"v" * (65 * 1024 * 1024)
    f = io.BytesIO()
    write_snapshot(f, LogId(1, 3), EMPTY_STORED_MEMBERSHIP, [(b"a", b"1"), (b"k", big)])
    assert check_snapshot(f, "big") is True
    assert [(k, len(v)) for k, v in read_snapshot_pairs(f, "big")] == [(b"a", 1), (b"k", len(big))]
    del big
    raw = bytearray(f.getvalue()[:100])
    raw[8] ^= 0x40  # the header frame's length: 1 GiB more than the file holds
    with pytest.raises(ValueError, match=r"a frame's length is damaged: frame of \d+ bytes exceeds max_frame_size 100 "
                       r"\(the whole file has 100 bytes\)"):
        check_snapshot(io.BytesIO(bytes(raw)), "x")


def test_check_snapshot_reads_the_checksum_not_the_pairs() -> None:
    import io

    from openraft_py.kv.rocks_snapshot import check_snapshot, write_snapshot

    f = io.BytesIO()
    write_snapshot(f, LogId(1, 3), StoredMembership(None, Membership.new([{1}])),
                   [(f"k{i}".encode(), b"v" * 300) for i in range(3000)])  # several data frames
    good = f.getvalue()
    assert check_snapshot(io.BytesIO(good), "s") is True
    for at in (len(good) // 3, len(good) // 2, len(good) - 40):
        bad = bytearray(good)
        bad[at] ^= 0x01
        with pytest.raises(ValueError, match="not a RocksStateMachine snapshot"):
            check_snapshot(io.BytesIO(bytes(bad)), "s")
    with pytest.raises(ValueError, match="truncated"):
        check_snapshot(io.BytesIO(good[:-2]), "s")
    from openraft_py._core import encode_frame
    from openraft_py.kv.rocks_snapshot import _enc

    with pytest.raises(ValueError, match="data after the end frame"):
        check_snapshot(io.BytesIO(good + encode_frame(_enc.encode(("d", [])))), "s")


@pytest.mark.parametrize(
    "sid", ["../../escaped", "a/b", "x" * 300, "bad\0id", "", ".", "..", "ключ", "-9-abc", "plain-1-2.x"]
)
async def test_a_leaders_snapshot_id_never_names_a_file_outside_the_snapshot_directory(tmp_path: Path, sid: str) -> None:
    """A snapshot id is any string a leader sends. Used as the file name as it came, ``../x``
    wrote the snapshot file outside ``snapshots/``, and an id with a ``/``, a NUL or 300
    characters failed the install after the state was replaced (with rocksdict's "this batch is
    already consumed", which stopped the node). Now a plain id names its file, any other is
    hashed; the snapshot installs, is current under its id, and is there after a reopen."""
    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([kv(1, KvSet("before", "x"))])
        f = await sm.begin_receiving_snapshot()
        write_snapshot(f, LogId(1, 5), EMPTY_STORED_MEMBERSHIP, [(b"k", b"v")])
        meta = SnapshotMeta(LogId(1, 5), EMPTY_STORED_MEMBERSHIP, sid)
        await sm.install_snapshot(meta, f)
        assert sm.data == {"k": "v"}
    assert not [n for n in os.listdir(p) if n.endswith(".snap")]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".snap")]
    files = sorted(os.listdir(p / "snapshots"))
    assert len(files) == 2 and "current.meta" in files, files
    name = next(n for n in files if n != "current.meta")
    plain = sid in ("-9-abc", "plain-1-2.x")
    assert name == (f"{sid}.snap" if plain else f"id-{hashlib.sha256(sid.encode()).hexdigest()}.snap")
    async with RocksStateMachine(p) as sm:
        snap = await sm.get_current_snapshot()
        assert snap is not None
        with snap.data:
            assert snap.meta == meta
            assert list(read_snapshot_pairs(snap.data, "x")) == [(b"k", b"v")]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ValueError("I/O operation on closed file")])
async def test_an_install_whose_file_cannot_be_kept_says_so_and_never_claims_the_state_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The state was written, then keeping the snapshot file fails: ``StorageError`` saying
    so, with the real error chained (it was rocksdict's "this batch is already consumed",
    raised by clearing the written batch), and never a ``ValueError``, which tells the node
    the state is unchanged. The state is the snapshot's, after a reopen too."""
    import io

    from openraft_py.kv import rocks_state_machine

    def fail(*args: Any) -> None:
        raise error

    p = tmp_path / "sm"
    async with RocksStateMachine(p) as sm:
        await sm.apply([kv(1, KvSet("before", "x"))])
        f = io.BytesIO()  # no file under snapshots/: it is copied
        write_snapshot(f, LogId(1, 5), EMPTY_STORED_MEMBERSHIP, [(b"k", b"v")])
        monkeypatch.setattr(rocks_state_machine.shutil, "copyfileobj", fail)
        with pytest.raises(StorageError, match="the state is installed, but its snapshot file could not be kept") as ei:
            await sm.install_snapshot(SnapshotMeta(LogId(1, 5), EMPTY_STORED_MEMBERSHIP, "s-5"), f)
        assert ei.value.__cause__ is error
        assert sm.data == {"k": "v"} and (await sm.applied_state())[0] == LogId(1, 5)
        monkeypatch.undo()
    async with RocksStateMachine(p) as sm:
        assert sm.data == {"k": "v"} and (await sm.applied_state())[0] == LogId(1, 5)
        assert await sm.get_current_snapshot() is None


async def test_received_snapshot_files_that_are_refused_or_abandoned_are_deleted(tmp_path: Path) -> None:
    """A received file the install refuses is deleted at once, one closed without an install
    (an abandoned transfer) at the next ``begin_receiving_snapshot``; one still open, and an
    installed one (now the current snapshot), stay. Each stayed until the next open, a whole
    snapshot's size each time a leader resent a snapshot the follower refused."""
    snapdir = tmp_path / "sm" / "snapshots"

    def received() -> list[str]:
        return sorted(n for n in os.listdir(snapdir) if n.startswith("recv-"))

    async with RocksStateMachine(tmp_path / "sm") as sm:
        meta = SnapshotMeta(LogId(1, 5), EMPTY_STORED_MEMBERSHIP, "s-5")
        for _ in range(3):
            f = await sm.begin_receiving_snapshot()
            f.write(b"ORPYKV2\n not a snapshot")
            with pytest.raises(ValueError, match="not a RocksStateMachine snapshot"):
                await sm.install_snapshot(meta, f)
            f.close()
        assert received() == []

        abandoned = await sm.begin_receiving_snapshot()
        abandoned.write(b"half of a snapshot")
        abandoned.close()
        assert len(received()) == 1
        live = await sm.begin_receiving_snapshot()
        assert received() == [os.path.basename(live.name)]  # the abandoned one is gone
        write_snapshot(live, LogId(1, 5), EMPTY_STORED_MEMBERSHIP, [(b"k", b"v")])
        other = await sm.begin_receiving_snapshot()  # ``live`` is open: it stays
        assert received() == sorted([os.path.basename(live.name), os.path.basename(other.name)])
        await sm.install_snapshot(meta, live)
        live.close()
        other.close()
        last = await sm.begin_receiving_snapshot()
        assert len(received()) == 1 and sorted(os.listdir(snapdir)) == sorted(["current.meta", "s-5.snap", *received()])
        assert sm.data == {"k": "v"}
        last.close()


def test_a_store_with_a_zeroed_manifest_is_called_damaged_not_foreign(tmp_path: Path) -> None:
    """An all-zero MANIFEST reads as a database with only the default column family. The store
    holds our OPENRAFT-ACKED, so it is not a foreign database (as it was called: the user was
    told they had pointed the node at someone else's data); the message names the MANIFEST.
    The state machine's database opened as a log store says "another store's database", and
    is not called damaged (it was: the advice was to replace the node)."""
    p = tmp_path / "log"
    RocksLogStore(p).close()
    for m in p.glob("MANIFEST-*"):
        m.write_bytes(b"\0" * m.stat().st_size)
    with pytest.raises(StorageError, match=r"not a log store database: column families \['entries', 'meta'\] "
                                           r"missing \(found \['default'\]\), though it holds our OPENRAFT-ACKED: "
                                           r"its MANIFEST file is damaged") as ei:
        RocksLogStore(p)
    assert "foreign" not in str(ei.value) and "the database is damaged" in str(ei.value)
    RocksStateMachine(tmp_path / "sm").close()
    with pytest.raises(StorageError, match=r"not a log store database: .* \(found \['default', 'sm'\]\): another "
                                           r"openraft-py store's database") as ei:
        RocksLogStore(tmp_path / "sm" / "db")
    assert "damaged" not in str(ei.value) and DAMAGED_ADVICE not in str(ei.value)



async def test_received_snapshot_files_that_were_given_up_are_deleted(tmp_path: Path) -> None:
    """A transfer the leader gave up (it started over with another snapshot: a leader change,
    a newer snapshot after a failed chunk) and a refused install leave a received file the
    node has closed and never uses again. Each was kept until the next open of the state
    machine, so a long-running follower could fill its disk with partial snapshots; now the
    next receive (or ``close()``) deletes it. A file still being received is kept."""
    src = RocksStateMachine(tmp_path / "a")
    sm = RocksStateMachine(tmp_path / "b")
    snapdir = tmp_path / "b" / "snapshots"

    def received() -> list[str]:
        return sorted(n for n in os.listdir(snapdir) if n.startswith("recv-"))

    try:
        await src.apply([kv(i, KvSet(f"k{i}", "v" * 100)) for i in range(1, 200)])
        (await src.get_snapshot_builder().build_snapshot()).data.close()
        cur = await src.get_current_snapshot()
        assert cur is not None
        whole = cur.data.read()
        cur.data.close()
        given_up = await sm.begin_receiving_snapshot()
        given_up.write(whole[:1000])
        given_up.close()  # the node drops it when another transfer begins
        refused = await sm.begin_receiving_snapshot()
        assert received() == [os.path.basename(refused.name)], "the given-up transfer's file is still there"
        refused.write(whole[:-3])
        with pytest.raises(ValueError):
            await sm.install_snapshot(cur.meta, refused)
        refused.close()
        ongoing = await sm.begin_receiving_snapshot()
        ongoing.write(whole[:1000])
        assert received() == [os.path.basename(ongoing.name)], "the refused install's file is still there"
        installed = await sm.begin_receiving_snapshot()
        assert received() == sorted(os.path.basename(f.name) for f in (ongoing, installed)), "an open file was deleted"
        ongoing.close()
        installed.write(whole)
        await sm.install_snapshot(cur.meta, installed)
        installed.close()
        assert sm.data == {f"k{i}": "v" * 100 for i in range(1, 200)}
        given_up = await sm.begin_receiving_snapshot()
        given_up.close()
        sm.close()
        assert received() == [], "close() left a given-up transfer's file"
        assert sorted(os.listdir(snapdir)) == sorted(["current.meta", f"{cur.meta.snapshot_id}.snap"])
    finally:
        src.close()
        sm.close()


async def test_two_opens_of_a_new_directory_at_once_leave_one_store_with_its_own_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes opening a new directory at the same moment (two ``serve`` given the same
    ``--data-dir`` by one script) both took it for a fresh one; the later one's new mark file
    replaced the earlier one's, which went on recording into the replaced file: its mark on
    disk stayed 0, so its next open no longer checked its acknowledged writes. (Seen in 4 of 8
    real process pairs.) Here the second open is held just before it writes its mark while
    the first runs whole: one of them must be refused as in use, and the store that opened
    must find its own mark on disk."""
    from openraft_py.storage.rocks.ackmark import AckMark

    p = tmp_path / "log"
    real_create = AckMark.create.__func__  # type: ignore[attr-defined]
    main = threading.current_thread()
    held, go = threading.Event(), threading.Event()

    def create(cls: type[AckMark], db_path: str, seqno: int) -> AckMark:
        if threading.current_thread() is not main:
            held.set()
            go.wait(10)
        return real_create(cls, db_path, seqno)

    monkeypatch.setattr(AckMark, "create", classmethod(create))
    late = asyncio.ensure_future(asyncio.to_thread(RocksLogStore, p))
    assert await asyncio.to_thread(held.wait, 10)
    try:
        first: RocksLogStore | StorageError = RocksLogStore(p)
    except StorageError as e:
        first = e
    finally:
        go.set()
    try:
        second: RocksLogStore | StorageError = await late
    except StorageError as e:
        second = e
    opened = [s for s in (first, second) if isinstance(s, RocksLogStore)]
    refused = [s for s in (first, second) if isinstance(s, StorageError)]
    try:
        assert len(opened) == 1 and len(refused) == 1, (first, second)
        assert "in use" in str(refused[0])
        store = opened[0]
        await append_durable(store, entries(1, 0, 3))
        found = AckMark.read(str(p), "log store")
        assert found is not None and found[1] == store._db.latest_sequence_number(), (
            f"the mark on disk is {found}, the store's writes reached {store._db.latest_sequence_number()}"
        )
    finally:
        for s in opened:
            await s.aclose()


def _interrupted_creation(path: Path, *, current: bool, data: bool = False) -> None:
    """What a process killed while a store was being created leaves (seen with real SIGKILLs,
    14 of 40 first opens): our mark file of the creation (generation 0, sequence 0) and
    RocksDB's first files, with no ``CURRENT`` yet (``current=False``) or with the database
    made but not its column families. ``data``: a write in the default column family (then it
    is not a creation that stopped before anything was written)."""
    from rocksdict import Options, Rdict

    from openraft_py.storage.rocks.ackmark import AckMark

    path.mkdir(parents=True)
    AckMark.create(str(path), 0).close()
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(str(path), opts)
    if data:
        db[b"k"] = b"v"
    db.close()
    del db
    if not current:
        (path / "CURRENT").unlink()


@pytest.mark.parametrize("current", [False, True], ids=["no CURRENT", "no column family"])
async def test_a_store_whose_creation_was_killed_is_created_again(tmp_path: Path, current: bool) -> None:
    """It was refused at every later open ("not a readable RocksDB database: ... CURRENT: No
    such file", "column families ['sm'] missing"): the node could never start again. Now the
    creation is finished; the store works and keeps what it is given."""
    _interrupted_creation(tmp_path / "log", current=current)
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.read_vote() is None and (await s.get_log_state()).last_log_id is None
        await s.save_vote(Vote.new(2, 1))
        await append_durable(s, entries(2, 0, 3))
    async with RocksLogStore(tmp_path / "log") as s:
        assert await s.read_vote() == Vote.new(2, 1)
        assert await s.try_get_log_entries(0, 3) == entries(2, 0, 3)
    _interrupted_creation(tmp_path / "sm" / "db", current=current)
    async with RocksStateMachine(tmp_path / "sm") as sm:
        assert await sm.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
        await sm.apply([kv(1, KvSet("k", "v"))])
    async with RocksStateMachine(tmp_path / "sm") as sm:
        assert sm.data == {"k": "v"}


def test_a_store_with_the_creation_mark_and_data_is_not_created_again(tmp_path: Path) -> None:
    """The creation's mark with a database that holds something (not a creation that stopped
    before any write): refused as before, nothing written."""
    p = tmp_path / "log"
    _interrupted_creation(p, current=True, data=True)
    before = _tree_state(p)
    with pytest.raises(StorageError, match="column families"):
        RocksLogStore(p)
    assert _tree_state(p) == before


async def test_a_cancelled_in_thread_call_waits_for_its_thread_but_not_for_good(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled ``in_thread`` caller raises ``CancelledError`` once its thread has ended
    (a store closed after ``Raft.shutdown()`` is then used by no thread), and, for a thread
    that does not end (a disk that never answers), after ``CANCELLED_THREAD_WAIT`` with a
    warning: the shutdown would otherwise wait for it for good."""
    import threading

    from openraft_py.storage.rocks import db

    monkeypatch.setattr(db, "CANCELLED_THREAD_WAIT", 0.2)
    release = threading.Event()
    ended = threading.Event()

    def work(wait: float) -> str:
        release.wait(wait)
        ended.set()
        return "done"

    try:
        # A thread that ends within the bound: the caller's CancelledError comes after it.
        call = asyncio.ensure_future(db.in_thread(work, 0.1))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 5)
        assert ended.is_set()
        # One that does not: the caller gives up after the bound, and says so.
        ended.clear()
        caplog.set_level(logging.WARNING, logger="openraft_py.storage.rocks")
        call = asyncio.ensure_future(db.in_thread(work, 30.0))
        await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 5)
        assert not ended.is_set()
        assert any("still runs" in r.getMessage() for r in caplog.records)
    finally:
        release.set()


@pytest.mark.parametrize("call", ["get_current_snapshot", "build_snapshot"])
async def test_a_cancelled_snapshot_call_waits_for_its_thread_and_closes_the_file(tmp_path: Path, call: str) -> None:
    """``get_current_snapshot`` ran its thread with a plain ``asyncio.to_thread``: a cancelled
    caller (the node shutting down) went on while the thread still read, so ``close()`` could
    come meanwhile, and the snapshot it opened was left to the garbage collector. Now, as the
    rest of the store (``in_thread``), the caller's ``CancelledError`` comes once the thread
    has ended, and the file the thread opened is closed (also for a cancelled build)."""
    async with RocksStateMachine(tmp_path / "sm") as sm:
        await sm.apply([kv(i, KvSet(f"k{i}", "v")) for i in range(1, 11)])
        (await sm.get_snapshot_builder().build_snapshot()).data.close()
        entered, release = threading.Event(), threading.Event()
        got: list[Any] = []
        name = "_open_current" if call == "get_current_snapshot" else "_build_from"
        real = getattr(sm, name)

        def slow(*args: Any) -> Any:
            entered.set()
            release.wait(10)
            out = real(*args)
            got.append(out[0] if isinstance(out, tuple) else out)
            return out

        setattr(sm, name, slow)
        try:
            if call == "get_current_snapshot":
                task = asyncio.ensure_future(sm.get_current_snapshot())
            else:
                task = asyncio.ensure_future(sm.get_snapshot_builder().build_snapshot())
            assert await asyncio.to_thread(entered.wait, 10)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=0.3)
            assert not done, "the cancelled call ended while its thread still ran"
        finally:
            release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert len(got) == 1 and got[0] is not None
        deadline = time.monotonic() + 5
        while not got[0].data.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert got[0].data.closed, "the snapshot the thread opened was left open"
