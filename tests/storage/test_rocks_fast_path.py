"""The log store writer's fast path (``GroupWriter.write_now``): a small append made while the
writer thread is idle is written on the event loop and its fsync handed to the kernel (Linux
native AIO). Asserted: it is taken, nothing fsyncs on the loop's thread, every acknowledged
write survives a reopen (its acknowledged mark included), a new WAL is fsynced, a failed
write or fsync fails the store (and still releases its lock), and ``close()`` finishes the
writes in flight. With ``sync=False`` the fast path is the write alone: made on the loop,
refused (and left to the thread) rather than stalled, done before ``append`` returns. Large
appends never take either."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openraft_py.errors import StorageError
from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks.aio import AioFsync
from openraft_py.storage.rocks.log_store import WRITE_AFTER_SENDS_MAX, WRITE_NOW_MAX
from openraft_py.types import Entry, LogId, Normal, Vote

pytestmark = [pytest.mark.timeout(60)]


def _aio_available() -> bool:
    try:
        AioFsync(1).close()
    except OSError:
        return False
    return True


needs_aio = pytest.mark.skipif(not _aio_available(), reason="needs Linux native AIO")


def ent(i: int) -> Entry:
    return Entry(LogId(1, i), Normal(b"v%d" % i))


async def writer_idle(store: RocksLogStore) -> None:
    """Until the writer thread is idle. It reports a group durable before it marks itself
    idle, so a write made right after a thread-path write may still find it busy, and take
    its path instead of the fast path (on a loaded machine, measured: 1 run in 3)."""
    writer = store._writer
    for _ in range(5000):
        with writer._cond:
            if not writer._busy and not writer._queue:
                return
        await asyncio.sleep(0.001)
    raise AssertionError("the writer thread stayed busy for 5 s")


async def append(store: RocksLogStore, first: int, n: int = 1) -> asyncio.Future[BaseException | None]:
    """A leader's append (``sends_first``: the fsync is handed over a few passes later), made
    once the writer thread is idle (so the fast path is open to it)."""
    await writer_idle(store)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append([ent(i) for i in range(first, first + n)], IOFlushed(done.set_result, loop, sends_first=True))
    return done


@needs_aio
async def test_small_appends_take_the_fast_path_and_survive_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)

    path = tmp_path / "log"
    store = RocksLogStore(path)  # (opening fsyncs on the caller's thread: not an append's)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    try:
        for i in range(40):
            assert await asyncio.wait_for(await append(store, i), 10) is None
            if i == 20:
                await store.save_vote(Vote.new(3, 1))  # the thread's path, in between
            if i % 5 == 0:
                await store.save_committed(LogId(1, i))
        assert store._writer.fast_writes >= 35  # the first append (no WAL listed yet) and the vote go through the thread
        assert loop_thread not in fsync_threads  # no fsync on the loop's thread
    finally:
        await store.aclose()
    reopened = RocksLogStore(path)  # also checks the acknowledged mark against what RocksDB recovered
    try:
        got = await reopened.try_get_log_entries(0, 40)
        assert [e.log_id.index for e in got] == list(range(40))
        assert await reopened.read_vote() == Vote.new(3, 1)
        assert await reopened.read_committed() == LogId(1, 35)
    finally:
        reopened.close()


@needs_aio
async def test_fast_path_fsyncs_the_new_wal_after_a_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a memtable flush RocksDB writes to a new WAL: the first append after it goes to
    the thread (the directory watch reported the new file), and every later fast-path fsync
    is of the new WAL."""
    submitted: list[str] = []
    real_submit = AioFsync.submit

    def recording_submit(self: AioFsync, fd: int, token: int) -> bool:
        submitted.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_submit(self, fd, token)

    monkeypatch.setattr(AioFsync, "submit", recording_submit)
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        for i in range(5):
            assert await asyncio.wait_for(await append(store, i), 10) is None
        old = {n for n in os.listdir(path) if n.endswith(".log")}
        assert set(submitted) <= old and submitted
        store._entries.flush()  # a new WAL
        new = {n for n in os.listdir(path) if n.endswith(".log")} - old
        assert len(new) == 1
        submitted.clear()
        for i in range(5, 15):
            assert await asyncio.wait_for(await append(store, i), 10) is None
        assert submitted and set(submitted) == new, submitted
    finally:
        await store.aclose()
    reopened = RocksLogStore(path)
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 15)] == list(range(15))
    finally:
        reopened.close()


class _FailingWrites:
    """Wraps the writer's database: every ``write`` after the first ``ok`` ones raises."""

    def __init__(self, inner: Any, ok: int) -> None:
        self._inner = inner
        self._ok = ok

    def write(self, batch: Any, opts: Any) -> None:
        if self._ok <= 0:
            raise Exception("IO error: injected")
        self._ok -= 1
        self._inner.write(batch, opts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@needs_aio
async def test_failed_fast_path_write_fails_the_store_and_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "log"
    store = RocksLogStore(path)
    for i in range(3):
        assert await asyncio.wait_for(await append(store, i), 10) is None
    assert store._writer.fast_writes >= 2
    store._writer._db = _FailingWrites(store._writer._db, 0)
    err = await asyncio.wait_for(await append(store, 3), 10)
    assert isinstance(err, StorageError)
    with pytest.raises(StorageError):
        await asyncio.wait_for(store.save_vote(Vote.new(1, 1)), 10)  # the writer stays failed
    store._writer._db = store._writer._db._inner
    try:
        await store.aclose()
    except StorageError:
        pass
    reopened = RocksLogStore(path)  # the lock was released
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 3)] == [0, 1, 2]
    finally:
        reopened.close()


@needs_aio
async def test_failed_fast_path_fsync_fails_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RocksLogStore(tmp_path / "log")
    try:
        for i in range(3):
            assert await asyncio.wait_for(await append(store, i), 10) is None
        real_reap = AioFsync.reap

        def failing_reap(self: AioFsync) -> list[tuple[int, OSError | None]]:
            return [(token, OSError(5, "fsync: injected EIO")) for token, _ in real_reap(self)]

        monkeypatch.setattr(AioFsync, "reap", failing_reap)
        err = await asyncio.wait_for(await append(store, 3), 10)
        assert isinstance(err, StorageError) and "EIO" in str(err.__cause__ or err)
        monkeypatch.setattr(AioFsync, "reap", real_reap)
        err2 = await asyncio.wait_for(await append(store, 4), 10)
        assert isinstance(err2, StorageError)  # every later write fails
    finally:
        try:
            await store.aclose()
        except StorageError:
            pass


@needs_aio
@pytest.mark.parametrize("path", ["fast path", "thread"])
async def test_a_failed_fsync_names_the_wal_file_and_the_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """An fsync of the WAL failing with EIO (the kernel's AIO completion, or ``os.fsync`` in
    the writer thread) reaches the append as ``StorageError`` naming the WAL file and the
    errno (it named neither file: "OSError: [Errno 5] Input/output error")."""
    store = RocksLogStore(tmp_path / "log")
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None
        if path == "fast path":
            real_reap = AioFsync.reap
            monkeypatch.setattr(
                AioFsync, "reap", lambda self: [(t, OSError(errno.EIO, os.strerror(errno.EIO))) for t, _ in real_reap(self)]
            )
            done = await append(store, 1)
        else:

            def failing_fsync(fd: int) -> None:
                raise OSError(errno.EIO, os.strerror(errno.EIO))

            monkeypatch.setattr(os, "fsync", failing_fsync)
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            # Too large for the fast path: the thread writes it and fsyncs the WAL.
            await store.append([ent(i) for i in range(1, 2 + WRITE_NOW_MAX)], IOFlushed(done.set_result, loop))
        err = await asyncio.wait_for(done, 10)
        monkeypatch.undo()
        assert isinstance(err, StorageError)
        cause = err.__cause__ or err.cause
        assert isinstance(cause, OSError) and cause.errno == errno.EIO, repr(cause)
        assert cause.filename is not None and cause.filename.startswith(str(tmp_path / "log" / "0"))
        assert cause.filename.endswith(".log") and cause.filename in str(err), str(err)
        assert "[Errno 5]" in str(err) and "fsync of the write-ahead log failed" in str(err), str(err)
    finally:
        try:
            await store.aclose()
        except StorageError:
            pass


@needs_aio
async def test_an_fsync_that_succeeds_after_a_failed_one_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "fsyncgate" rule: after a failed fsync the kernel may have dropped the pages it
    could not write, so a later fsync of the WAL can succeed without them on disk. Two
    fast-path writes whose fsyncs are in flight together, the first failing with EIO and
    the second succeeding: the second is not acknowledged either, and the mark stays."""
    store = RocksLogStore(tmp_path / "log")
    try:
        for i in range(3):
            assert await asyncio.wait_for(await append(store, i), 10) is None
        mark_before = store._writer._mark.seqno
        real_reap = AioFsync.reap
        completed: list[tuple[int, OSError | None]] = []
        handed: list[bool] = []

        def first_fails(self: AioFsync) -> list[tuple[int, OSError | None]]:
            # Held until both requests completed, then handed over in write order, once (as
            # a reap returns each completion once): the first one failed, the second one
            # succeeded.
            completed.extend(real_reap(self))
            if len(completed) < 2 or handed:
                return []
            handed.append(True)
            (first, _), *rest = sorted(completed, key=lambda c: c[0])
            return [(first, OSError(errno.EIO, "fsync: injected EIO")), *rest]

        monkeypatch.setattr(AioFsync, "reap", first_fails)
        fast_before = store._writer.fast_writes
        first = await append(store, 3)
        second = await append(store, 4)
        err1 = await asyncio.wait_for(first, 10)
        err2 = await asyncio.wait_for(second, 10)
        assert len(completed) == 2  # both fsyncs were in flight together
        assert isinstance(err1, StorageError) and "EIO" in str(err1)
        assert isinstance(err2, StorageError) and "EIO" in str(err2)  # its own fsync succeeded
        assert store._writer.fast_writes == fast_before
        assert store._writer._mark.seqno == mark_before
    finally:
        try:
            await store.aclose()
        except StorageError:
            pass


@needs_aio
async def test_a_group_made_durable_while_a_fast_path_fsync_fails_is_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread makes a group durable while a fast-path write's fsync, in flight
    in the kernel, fails: the group's own fsync succeeding afterwards proves nothing (the
    "fsyncgate" rule), so it fails with the fast path's error."""
    from openraft_py.storage.rocks.wal import WalSyncer

    store = RocksLogStore(tmp_path / "log")
    try:
        for i in range(3):
            assert await asyncio.wait_for(await append(store, i), 10) is None
        fast_failed = threading.Event()
        real_reap = AioFsync.reap
        real_sync = WalSyncer.sync

        def failing_reap(self: AioFsync) -> list[tuple[int, OSError | None]]:
            got = [(token, OSError(errno.EIO, "fsync: injected EIO")) for token, _ in real_reap(self)]
            if got:
                loop.call_soon(fast_failed.set)  # once the failure was taken in
            return got

        def sync_after_the_failure(self: WalSyncer) -> bool:
            assert fast_failed.wait(10)
            return real_sync(self)

        loop = asyncio.get_running_loop()
        monkeypatch.setattr(AioFsync, "reap", failing_reap)
        monkeypatch.setattr(WalSyncer, "sync", sync_after_the_failure)
        fast = await append(store, 3)  # written on the loop, its fsync handed to the kernel
        big: asyncio.Future[BaseException | None] = loop.create_future()
        # Too large for the fast path: the thread writes it.
        await store.append([ent(i) for i in range(4, 5 + WRITE_NOW_MAX)], IOFlushed(big.set_result, loop))
        assert isinstance(await asyncio.wait_for(fast, 10), StorageError)
        err = await asyncio.wait_for(big, 10)
        assert isinstance(err, StorageError) and "EIO" in str(err)
    finally:
        try:
            await store.aclose()
        except StorageError:
            pass


@needs_aio
async def test_close_finishes_the_fast_path_writes_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "log"
    store = RocksLogStore(path)
    assert await asyncio.wait_for(await append(store, 0), 10) is None
    pending = [await append(store, i) for i in range(1, 6)]
    # A leader's small appends: waiting to be written on the loop, written with their fsyncs
    # not handed to the kernel yet, or in flight there.
    assert store._writer._deferred or store._writer._written or store._writer._fast
    store.close()  # on the loop's thread: waits for them
    for _ in range(3):
        await asyncio.sleep(0)
    assert all(f.done() and f.result() is None for f in pending)
    reopened = RocksLogStore(path)
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 6)] == list(range(6))
    finally:
        reopened.close()


@needs_aio
async def test_fast_path_submits_the_fsync_after_the_work_its_pass_scheduled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel worker that runs a fast-path fsync preempts the submitting thread, so the
    fsync is handed over only after what the write's loop pass scheduled, and what that
    scheduled in turn (on a leader: its replication sender's step, then the transport's
    end-of-pass write of the AppendEntries), has run."""
    store = RocksLogStore(tmp_path / "log")
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None  # the first lists the WAL
        events: list[str] = []
        real_submit = AioFsync.submit

        def recording_submit(self: AioFsync, fd: int, token: int) -> bool:
            events.append("fsync submitted")
            return real_submit(self, fd, token)

        monkeypatch.setattr(AioFsync, "submit", recording_submit)
        loop = asyncio.get_running_loop()
        fast_before = store._writer.fast_writes
        done = await append(store, 1)
        loop.call_soon(lambda: loop.call_soon(events.append, "frame written"))
        assert events == []  # written, and nothing handed to the kernel yet
        assert await asyncio.wait_for(done, 10) is None
        assert events == ["frame written", "fsync submitted"]
        assert store._writer.fast_writes == fast_before + 1
    finally:
        await store.aclose()


def _kernel_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AioFsync, "submit", lambda self, fd, token: False)  # e.g. its queue is full


def _out_of_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dup(fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "dup", no_dup)  # the descriptor of its own a waiting write takes


@needs_aio
@pytest.mark.parametrize("fault", [_kernel_refuses, _out_of_descriptors], ids=["kernel refuses", "out of descriptors"])
async def test_fast_path_write_it_cannot_hand_over_is_made_durable_by_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Callable[[pytest.MonkeyPatch], None]
) -> None:
    """A write made on the loop whose fsync cannot go to the kernel (the request refused, or
    no descriptor of its own for it) gets the writer thread's durability step; the store
    goes on, and everything survives a reopen."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None
        fault(monkeypatch)
        groups_before = store._writer.groups
        assert await asyncio.wait_for(await append(store, 1), 10) is None
        assert store._writer.groups == groups_before + 1  # the thread's durability step
        monkeypatch.undo()
        assert await asyncio.wait_for(await append(store, 2), 10) is None
    finally:
        await store.aclose()
    reopened = RocksLogStore(path)
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 3)] == [0, 1, 2]
    finally:
        reopened.close()


@needs_aio
async def test_close_before_the_fsync_was_handed_over_makes_the_write_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` right after a fast-path write, before the loop passes that would hand its
    fsync to the kernel: the write is still made durable and acknowledged, even when the
    kernel refuses the request then (the writer thread has already ended: fsynced in close)."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    assert await asyncio.wait_for(await append(store, 0), 10) is None
    monkeypatch.setattr(AioFsync, "submit", lambda self, fd, token: False)
    n = WRITE_AFTER_SENDS_MAX + 1  # written at once (a small one would wait to be written)
    pending = await append(store, 1, n)
    assert store._writer._written and not store._writer._deferred  # written, not handed over yet
    store.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert pending.done() and pending.result() is None
    monkeypatch.undo()
    reopened = RocksLogStore(path)  # the acknowledged mark must match what RocksDB recovered
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, n + 1)] == list(range(n + 1))
    finally:
        reopened.close()


@needs_aio
@pytest.mark.parametrize("how", ["close", "aclose"])
async def test_close_before_a_small_append_was_written_makes_it_durable(tmp_path: Path, how: str) -> None:
    """A leader's small append still waiting to be written (``close()`` or ``aclose()`` in
    the same loop pass): closing writes it, makes it durable and acknowledges it."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    assert await asyncio.wait_for(await append(store, 0), 10) is None
    pending = [await append(store, 1), await append(store, 2, 3)]
    writer = store._writer
    assert len(writer._deferred) == 2  # nothing of them written yet
    fast0, groups0 = writer.fast_writes, writer.groups
    if how == "close":
        store.close()  # the thread writes them
    else:
        await store.aclose()  # ``close_fast`` writes them on the loop, fsyncs with the kernel
    # (From the thread, the acknowledgements reach this loop through ``call_soon_threadsafe``.)
    assert await asyncio.wait_for(asyncio.gather(*pending), 10) == [None, None]
    if how == "aclose":
        assert writer.fast_writes == fast0 + 2 and writer.groups == groups0
    else:
        assert writer.groups > groups0
    reopened = RocksLogStore(path)
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 5)] == [0, 1, 2, 3, 4]
    finally:
        reopened.close()


@needs_aio
async def test_fast_path_completion_reaches_the_callback_without_a_thread_hop(tmp_path: Path) -> None:
    """A fast-path write completes on the loop, so its durability is reported there and then:
    no ``call_soon_threadsafe`` (an eventfd write, a poll and a read, one more loop pass) and
    the entries it wrote are released from the store's pending view."""
    loop = asyncio.get_running_loop()
    hops: list[Any] = []
    real = loop.call_soon_threadsafe

    def recording(cb: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        hops.append(cb)
        return real(cb, *args, **kw)

    store = RocksLogStore(tmp_path / "log")
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None  # (may take the thread: no WAL listed yet)
        fast0 = store._writer.fast_writes
        loop.call_soon_threadsafe = recording  # type: ignore[method-assign]
        try:
            for i in range(1, 11):
                assert await asyncio.wait_for(await append(store, i), 10) is None
                assert i not in store._pending
        finally:
            del loop.call_soon_threadsafe
        assert store._writer.fast_writes - fast0 == 10
        assert not [cb for cb in hops if getattr(cb, "__name__", "") == "_written"]
    finally:
        await store.aclose()


@needs_aio
async def test_the_fsync_waits_a_few_passes_only_when_the_caller_sends_first(tmp_path: Path) -> None:
    """``IOFlushed.sends_first`` (a leader, which replicates the entries in the same pass):
    the fast path hands the fsync to the kernel a few loop passes after the write. Without
    it (a follower, which answers only once durable) the fsync is handed over at once."""
    loop = asyncio.get_running_loop()
    store = RocksLogStore(tmp_path / "log")
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None  # (may take the thread)
        writer = store._writer
        big = WRITE_AFTER_SENDS_MAX + 1
        first = 1
        # (entries, sends_first): a follower's append; a leader's large one, written at once
        # with its fsync waiting; a leader's small one, waiting whole; a follower's again.
        for n, sends_first in ((1, False), (big, True), (1, True), (1, False)):
            done: asyncio.Future[BaseException | None] = loop.create_future()
            await writer_idle(store)
            await store.append(ents(first, n), IOFlushed(done.set_result, loop, sends_first=sends_first))
            first += n
            assert len(writer._written) == (1 if sends_first and n == big else 0)
            assert len(writer._deferred) == (1 if sends_first and n == 1 else 0)
            assert await asyncio.wait_for(done, 10) is None
        assert writer.fast_writes >= 4 and writer.deferred_writes == 1
    finally:
        await store.aclose()


@needs_aio
async def test_a_leaders_small_append_is_written_after_its_sends(tmp_path: Path) -> None:
    """A leader's append of at most ``WRITE_AFTER_SENDS_MAX`` entries is written only after
    what its loop pass scheduled, and what that scheduled in turn (the AppendEntries' frames),
    has run; its entries are readable meanwhile, and it is acknowledged once durable."""
    loop = asyncio.get_running_loop()
    store = RocksLogStore(tmp_path / "log")
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None
        writer = store._writer
        seq0 = writer._db.latest_sequence_number()
        seen: list[int] = []
        done = await append(store, 1, WRITE_AFTER_SENDS_MAX)
        loop.call_soon(lambda: loop.call_soon(lambda: seen.append(writer._db.latest_sequence_number())))
        assert writer._db.latest_sequence_number() == seq0  # not written in append
        got = await store.try_get_log_entries(1, 1 + WRITE_AFTER_SENDS_MAX)  # the pending view
        assert [e.log_id.index for e in got] == list(range(1, 1 + WRITE_AFTER_SENDS_MAX))
        assert await asyncio.wait_for(done, 10) is None
        assert seen == [seq0]  # the "frames" went first
        assert writer._db.latest_sequence_number() > seq0
        assert writer.deferred_writes >= 1 and not writer._deferred
    finally:
        await store.aclose()


async def _then_large_append(store: RocksLogStore) -> list[int]:
    n = WRITE_NOW_MAX + 1  # the thread's path
    await store.append(ents(2, n), IOFlushed(lambda err: None))
    return list(range(2 + n))


async def _then_truncate(store: RocksLogStore) -> list[int]:
    await store.truncate_after(LogId(1, 0))  # removes the small append's entry 1
    return [0]


async def _then_follower_append(store: RocksLogStore) -> list[int]:
    await store.append(ents(2, 2), IOFlushed(lambda err: None))  # written at once, no deferral
    return [0, 1, 2, 3]


@needs_aio
@pytest.mark.parametrize("then", [_then_large_append, _then_truncate, _then_follower_append],
                         ids=["large append", "truncate", "follower append"])
async def test_writes_given_while_a_small_append_waits_keep_call_order(
    tmp_path: Path, then: Callable[[RocksLogStore], Any]
) -> None:
    """Whatever the writer is given while a leader's small append waits to be written (the
    thread's path, a truncation, an append written at once) is written after it: RocksDB
    receives the batches in call order, and a reopen reads the log the calls made."""
    path = tmp_path / "log"
    store = RocksLogStore(path)
    try:
        assert await asyncio.wait_for(await append(store, 0), 10) is None
        writer = store._writer
        order: list[int] = []
        real_write = writer._write_built

        def recording_write(build: Callable[[], Any]) -> BaseException | None:
            batch = build()
            order.append(batch.len())
            return real_write(lambda: batch)

        writer._write_built = recording_write  # type: ignore[method-assign]
        small = await append(store, 1)
        assert len(writer._deferred) == 1
        expected = await then(store)
        assert await asyncio.wait_for(small, 10) is None
        if then is _then_follower_append:
            assert order == [1, 2]  # the waiting batch first, then the follower's
        await store.save_vote(Vote.new(2, 1))  # a durable write after everything
    finally:
        await store.aclose()
    reopened = RocksLogStore(path)
    try:
        got = await reopened.try_get_log_entries(0, 1000)
        assert [e.log_id.index for e in got] == expected
    finally:
        reopened.close()


# -- sync=False: the fast path is the write alone -----------------------------------------------


class _RecordingWrites:
    """Wraps the writer's database: records each ``write``'s thread and ``no_slowdown``;
    ``refuse_no_wait``: a write with ``no_slowdown`` raises, as RocksDB refuses one it would
    stall."""

    def __init__(self, inner: Any, *, refuse_no_wait: bool = False) -> None:
        self._inner = inner
        self.refuse_no_wait = refuse_no_wait
        self.writes: list[tuple[int, bool]] = []

    def write(self, batch: Any, opts: Any) -> None:
        self.writes.append((threading.get_ident(), bool(opts.no_slowdown)))
        if self.refuse_no_wait and opts.no_slowdown:
            raise Exception("Result incomplete: Write stall")
        self._inner.write(batch, opts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def ents(first: int, n: int, size: int = 8) -> list[Entry]:
    return [Entry(LogId(1, i), Normal(b"v" * size)) for i in range(first, first + n)]


async def idle_append(store: RocksLogStore, entries: list[Entry]) -> tuple[asyncio.Future[BaseException | None], bool]:
    """Append ``entries`` once the writer thread is idle (so a fast path is open to it);
    whether ``append`` had called back by the time it returned."""
    await writer_idle(store)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()
    # With the loop: a failure reported from the writer thread reaches this loop's thread.
    await store.append(entries, IOFlushed(done.set_result, loop, sends_first=True))
    return done, done.done()


async def test_unsynced_appends_are_written_on_the_loop_and_survive_reopen(tmp_path: Path) -> None:
    """With ``sync=False`` an append of up to ``WRITE_NOW_MAX_UNSYNCED`` entries is written on
    the loop's thread (no thread hop), refused rather than stalled (``no_slowdown``), and done
    before ``append`` returns; a reopen finds every entry."""
    from openraft_py.storage.rocks import log_store

    path = tmp_path / "log"
    store = RocksLogStore(path, sync=False)
    rec = _RecordingWrites(store._writer._db)
    store._writer._db = rec
    try:
        for k in range(8):
            size = log_store.WRITE_NOW_MAX_UNSYNCED if k == 7 else 256
            done, at_once = await idle_append(store, ents(k * 256, size))
            assert at_once and done.result() is None
        assert not store._pending
        assert store._writer.fast_writes == 8 and store._writer.groups == 0
        assert store.groups_written == 8
        assert rec.writes == [(threading.get_ident(), True)] * 8
    finally:
        store._writer._db = rec._inner
        await store.aclose()
    reopened = RocksLogStore(path, sync=False)  # also checks the acknowledged mark against what RocksDB recovered
    try:
        last = 7 * 256 + log_store.WRITE_NOW_MAX_UNSYNCED
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, last)] == list(range(last))
    finally:
        reopened.close()


async def test_unsynced_append_refused_on_the_loop_is_written_by_the_thread(tmp_path: Path) -> None:
    """A write RocksDB refuses on the loop (it would stall) is written by the thread, with the
    usual options; the store goes on, and everything survives a reopen."""
    path = tmp_path / "log"
    store = RocksLogStore(path, sync=False)
    rec = _RecordingWrites(store._writer._db, refuse_no_wait=True)
    store._writer._db = rec
    try:
        done, at_once = await idle_append(store, ents(0, 256))
        assert not at_once
        assert await asyncio.wait_for(done, 10) is None
        assert [no_wait for _, no_wait in rec.writes] == [True, False]
        assert rec.writes[1][0] != threading.get_ident()  # the thread
        assert store._writer.groups == 1 and store._writer.fast_writes == 0
        rec.refuse_no_wait = False
        done, at_once = await idle_append(store, ents(256, 10))
        assert at_once and done.result() is None
        await store.save_vote(Vote.new(2, 1))
    finally:
        store._writer._db = rec._inner
        await store.aclose()
    reopened = RocksLogStore(path, sync=False)
    try:
        assert [e.log_id.index for e in await reopened.try_get_log_entries(0, 266)] == list(range(266))
        assert await reopened.read_vote() == Vote.new(2, 1)
    finally:
        reopened.close()


async def test_failed_unsynced_write_fails_the_store(tmp_path: Path) -> None:
    """A write that fails on the loop is tried once more by the thread, where the failure is
    reported and fails the store, as any failed write does."""
    store = RocksLogStore(tmp_path / "log", sync=False)
    real = store._writer._db
    rec = _RecordingWrites(_FailingWrites(real, 0))
    store._writer._db = rec
    try:
        done, _ = await idle_append(store, ents(0, 4))
        assert isinstance(await asyncio.wait_for(done, 10), StorageError)
        assert [no_wait for _, no_wait in rec.writes] == [True, False]  # the loop, then the thread
        with pytest.raises(StorageError):
            await asyncio.wait_for(store.save_vote(Vote.new(1, 1)), 10)
    finally:
        store._writer._db = real
        try:
            await store.aclose()
        except StorageError:
            pass


@pytest.mark.parametrize("sync", [False, pytest.param(True, marks=needs_aio)], ids=["sync=False", "sync=True"])
async def test_large_appends_stay_off_the_loop(tmp_path: Path, sync: bool) -> None:
    """An append over the fast path's entry count or ``WRITE_NOW_MAX_BYTES`` goes to the
    thread, so a large write never holds the loop."""
    from openraft_py.storage.rocks import log_store

    store = RocksLogStore(tmp_path / "log", sync=sync)
    try:
        assert await asyncio.wait_for((await idle_append(store, ents(0, 1)))[0], 10) is None  # (the first lists the WAL)
        max_n = log_store.WRITE_NOW_MAX if sync else log_store.WRITE_NOW_MAX_UNSYNCED
        big = log_store.WRITE_NOW_MAX_BYTES // 2 + 1
        nxt = 1
        for batch in (ents(nxt, max_n + 1), ents(nxt + max_n + 1, 2, size=big)):
            fast, groups = store._writer.fast_writes, store._writer.groups
            done, _ = await idle_append(store, batch)
            assert await asyncio.wait_for(done, 10) is None
            assert (store._writer.fast_writes, store._writer.groups) == (fast, groups + 1)
        fast = store._writer.fast_writes
        done, _ = await idle_append(store, ents(max_n + 4, 2, size=big - 1))  # at the limit: fast
        assert await asyncio.wait_for(done, 10) is None
        assert store._writer.fast_writes == fast + 1
    finally:
        await store.aclose()
