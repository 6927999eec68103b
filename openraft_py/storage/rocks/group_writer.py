"""The group-commit writer: ONE thread that writes the log store's batches in order and makes
each group of them durable with one step (``GroupWriter``). The design, its invariants and
the latency knobs: "Group commit" in ``docs/design/durability.md``."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from rocksdict import Rdict, WriteBatch

from .ackmark import AckMark
from .aio import AioFsync
from .db import clear_frames, write_options
from .wal import WalSyncer, wal_fsync_error

__all__ = ["GroupWriter", "ignore_done"]

_GIL_SLICE = 0.0005
"""The writer thread holds the GIL (rocksdict keeps it during ``write``, encoding needs it) for
at most about this long between two writes of a group before pausing ..."""
_GIL_PAUSE = 0.0001
"""... for this long, GIL released, so the event loop gets it without waiting for the
interpreter's switch interval (5 ms by default)."""
_SUBMIT_AFTER_PASSES = 3
"""The loop's fast path hands a write's fsync to the kernel this many loop passes after the
write (``call_soon`` chained) when the caller sends first (``write_now(defer_sync=True)``: a
leader's append), not at once: the kernel worker that runs the fsync is queued
on the submitting CPU and preempts the loop's thread there, so submitting at once delays
whatever the current pass scheduled. On a leader that is its AppendEntries: the transport
writes the frames at the end of the pass after the one that queued them, and they are queued
in the core's pass itself (a network with ``send_append_entries``) or one pass later (by
the replication sender's step). Measured in ``bench/tcp.py`` (1 writer): the leader's
AppendEntries left 160-230 us after the client's call with the fsync submitted at once, 80
us after it with this; see ``docs/design/performance.md``, sixth round."""


class GroupWriter:
    """ONE thread writing queued work in order, one durability step per group.

    ``submit(item, done)`` queues ``item``: a ``WriteBatch``, or a zero-argument callable that
    builds one in the writer thread (so the caller's loop does not pay for building it), or an
    iterable of several, written in order, each built just before its write, the GIL released
    between two (a large append; ``WRITE_PIECE_MAX_BYTES`` in ``log_store.py``).
    ``done(error_or_None)`` is called from the writer thread once the batch (and every batch
    queued before it) is durable, or with the error. After a failed write every later batch
    fails too (the log's order could not be kept otherwise), also one whose own durability
    step succeeded after a failed fsync (``_check_not_failed``).

    Durability step (``sync=True``): with ``wal`` (a ``WalSyncer``) every batch of the group
    is written with ``sync=False`` and then the WAL files are fsynced outside RocksDB; without
    it, the last batch is written with ``sync=True`` (RocksDB fsyncs the WAL holding the GIL).
    Then the sequence number of the group's last write is recorded in ``mark`` (one ``pwrite``),
    before any ``done`` is called.

    ``submit(..., durable=False)`` queues a write that needs no durability of its own (the
    committed log id: ``save_committed``) without waking the thread: it is written with the
    next durable group, in queue order, or at ``close()``. A group made only of such writes
    (possible when one was queued while the thread was busy) is written without the
    durability step and without recording the mark (it would claim more than the disk
    holds); the next durable group (one WAL, written in order) or ``close()`` syncs it. So a
    commit-index update never costs a round an fsync or a thread wake-up of its own.

    A failed write's exception reaches ``done`` with the locals of its traceback's frames
    cleared (they hold the database and column family handles, which would keep RocksDB open,
    and its LOCK taken, for as long as someone keeps the error).

    The loop's fast path (``write_now``, with ``wal`` and Linux native AIO): while the thread is
    idle with nothing queued, the caller's thread (the event loop) writes the batch itself and
    hands the fsync of the newest WAL to the kernel (``AioFsync``); the completion wakes the
    loop, which records the mark and calls ``done``: no thread hop either way. A batch given
    with ``defer_write`` waits a few loop passes before it is written; anything given
    meanwhile is written after it. With ``sync=False`` the fast path is the write alone: made on the loop, refused rather than
    stalled, done before ``write_now`` returns. See "The loop's fast path" in
    ``docs/design/durability.md`` for why order and durability are kept.
    """

    def __init__(self, db: Rdict, sync: bool, wal: WalSyncer | None, name: str, mark: AckMark) -> None:
        self._db = db
        self._sync = sync
        self._wal = wal
        self._mark = mark
        self._sync_opts = write_options(sync)
        self._nosync_opts = write_options(False)
        # The fast path's write with ``sync=False``: refused instead of stalled (see
        # ``_write_now_unsynced``).
        self._no_wait_opts = write_options(False)
        self._no_wait_opts.no_slowdown = True
        self._cond = threading.Condition()
        self._queue: list[tuple[Any, Callable[[BaseException | None], None]]] = []
        # How many writes queued in ``_queue`` need the durability step.
        self._durable_queued = 0
        # Writes since the last durability step (lazy groups): ``close()`` syncs them.
        self._unsynced = False
        self._closing = False
        self._failed: BaseException | None = None
        self.groups = 0  # number of groups written with the durability step (for tests and benchmarks)
        self.lazy_groups = 0  # groups of non-durable writes only (no durability step)
        self.fallbacks = 0  # groups synced through RocksDB because no WAL file was found
        # The thread has taken a group and not finished it (its dones called): the loop's
        # fast path stays off meanwhile (the WAL syncer is the thread's then).
        self._busy = False
        self._aio: AioFsync | None = None
        if sync and wal is not None:
            try:
                self._aio = AioFsync()
            except OSError:
                pass  # no native AIO: every write goes through the thread
        # Fast-path writes whose fsync is with the kernel: token -> (sequence number, done,
        # the WAL file's path).
        self._fast: dict[int, tuple[int, Callable[[BaseException | None], None], str]] = {}
        self._next_token = 0
        # Fast-path writes written and not yet handed to the kernel, in write order:
        # (token, a duplicate of the WAL descriptor the write went to, sequence number, done,
        # the WAL file's path: a failed fsync names it).
        # Each one is handed over (or given to the thread) by ``_submit_written``, which a
        # chain of loop passes calls, and ``close_fast``/``_close_aio`` before they wait.
        self._written: list[tuple[int, int, int, Callable[[BaseException | None], None], str]] = []
        # Fast-path writes accepted with ``defer_write`` and not written yet, in call order:
        # (build, done). ``_write_deferred`` writes them ``_SUBMIT_AFTER_PASSES`` loop passes
        # later, or before anything the writer is given meanwhile (``submit``, another
        # ``write_now``, the closes), so batches still reach RocksDB in call order.
        self._deferred: list[tuple[Callable[[], WriteBatch], Callable[[BaseException | None], None]]] = []
        self._fast_closed = False
        self._reader_loop: asyncio.AbstractEventLoop | None = None  # watching the AIO eventfd
        self._reader_thread: int | None = None  # the thread running ``_reader_loop``
        self._drained: asyncio.Future[None] | None = None
        self.deferred_writes = 0  # fast-path writes accepted with ``defer_write`` (for tests and benchmarks)
        self.fast_writes = 0  # writes made durable (sync=False: written) by the fast path (for tests and benchmarks)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any, done: Callable[[BaseException | None], None], durable: bool = True) -> None:
        """Queue ``item``; ``done`` is called once it is durable (``durable=False``: once it
        is written; durable with a later group, see the class docstring)."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the store is closed")
            if self._deferred:
                # Written before ``item`` (call order); on the loop's own thread only.
                self._write_deferred(to_thread=threading.get_ident() != self._reader_thread)
            self._queue.append((item, done))
            if durable:
                self._durable_queued += 1
                self._cond.notify()
            # A write that needs no durability does not wake the thread: it waits for the next
            # durable write (or close()), so it costs no thread wake-up of its own (0.1-0.5 ms
            # of the submitting loop's time on a loaded 2-core VM, measured).

    def write_now(
        self,
        build: Callable[[], WriteBatch],
        done: Callable[[BaseException | None], None],
        durable: bool = True,
        defer_sync: bool = True,
        defer_write: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> bool:
        """From the event loop: if the fast path is available and the thread is idle with
        nothing queued, write ``build()`` now, here, and (``durable``) queue its durability
        step with the kernel; ``done(error_or_None)`` is called from this loop once it is
        durable (``durable=False``: before this returns; durable with a later step, as with
        ``submit``). Returns ``False`` (nothing done: use ``submit``) otherwise. For small
        batches only: the write runs on the caller's thread (no fsync there).

        ``defer_sync``: the fsync is handed to the kernel ``_SUBMIT_AFTER_PASSES`` loop
        passes later (what the caller sends in this pass leaves first); otherwise now.

        ``defer_write`` (``durable`` only): the write waits as well. The batch is accepted
        now and written, its fsync handed to the kernel at once after it,
        ``_SUBMIT_AFTER_PASSES`` loop passes later, so what the caller sends in this pass
        leaves before the write takes the loop (a leader's small append). Anything the writer
        is given meanwhile is written after it.

        With ``sync=False`` there is no durability step: the batch is done once written, and
        ``done`` is called before this returns (``_write_now_unsynced``).

        ``loop``: the running loop, if the caller has it at hand (else it is looked up); the
        fast path runs on it (``_watch_from``)."""
        if not self._sync:
            return self._write_now_unsynced(build, done)
        aio = self._aio
        if aio is None:
            return False
        if loop is None:
            loop = asyncio.get_running_loop()
        if loop is not self._reader_loop and not self._watch_from(loop, aio):
            return False
        deferring = defer_write and durable
        with self._cond:
            if self._deferred and not deferring:
                self._write_deferred()  # written before this batch: call order
            if not self._fast_available():
                return False
            if deferring:
                self._deferred.append((build, done))
                self.deferred_writes += 1
                first = len(self._deferred) == 1
            else:
                # ``first``: no submission is scheduled yet for ``_written``.
                first = self._write_fast(build, done, durable) and len(self._written) == 1
        if deferring:
            if first:
                loop.call_soon(self._after_passes, _SUBMIT_AFTER_PASSES - 1, self._write_deferred)
        elif not defer_sync:
            self._submit_written()  # (with any deferred before it, in write order)
        elif first:
            loop.call_soon(self._after_passes, _SUBMIT_AFTER_PASSES - 1, self._submit_written)
        return True

    def _watch_from(self, loop: asyncio.AbstractEventLoop, aio: AioFsync) -> bool:
        """Make ``loop`` (running, on this thread) the loop of the fast path: the one that
        watches the AIO eventfd (``_reap``) and runs the deferred steps. ``False`` while
        another loop that runs has it (the caller's write goes to the thread then).

        The first fast-path write binds its loop. A store kept across loops (one
        ``asyncio.run`` after another, a test fixture outliving a test's loop) moves to the
        caller's loop once the bound one has ended (closed, or not running). It stayed bound
        to the first: on the next loop each append either failed ("Event loop is closed":
        the node stopped with a ``StorageError``) or, its fsync's completion left to the
        ended loop, never completed (the node waited for good). What the ended loop left
        undone is done here: the deferred writes are written and every fsync not yet handed
        to the kernel is (before the caller's write, so in call order), and completions that
        arrived meanwhile are reaped once ``loop`` sees the eventfd readable."""
        old = self._reader_loop
        if old is not None:
            if old.is_running():
                return False
            if not old.is_closed():
                old.remove_reader(aio.efd)
        self._reader_loop = loop
        self._reader_thread = threading.get_ident()
        loop.add_reader(aio.efd, self._reap)
        if old is not None:
            self._write_deferred()
        return True

    def _fast_available(self) -> bool:
        """Under the lock: whether the loop may write now (the thread idle with nothing
        queued, the fast path open, nothing failed, the WAL syncer ready)."""
        wal = self._wal
        return not (
            self._queue or self._busy or self._closing or self._fast_closed or self._failed is not None
            or wal is None or not wal.ready
        )

    def _write_fast(self, build: Callable[[], WriteBatch], done: Callable[[BaseException | None], None],
                    durable: bool) -> bool:
        """Under the lock, the fast path available: write ``build()`` here. ``True`` when its
        fsync waits in ``_written`` for ``_submit_written``; otherwise ``done`` has been called
        (a failed write, which fails the writer; ``durable=False``) or the thread's next
        durability step covers it."""
        err = self._write_built(build)
        if err is not None:
            # Drop the traceback: its frames' ``f_back`` chain reaches the loop's callers
            # (``append``, with the batch builder and its column family handle), which
            # would keep RocksDB open and its LOCK taken for as long as the error lives.
            err = err.with_traceback(None)
            self._failed = err
            done(err)
            return False
        if not durable:
            self._unsynced = True  # the next durability step (or close()) covers it
            done(None)
            return False
        # Only now (the write returned): a WAL it started is seen by the watch.
        wal = self._wal
        assert wal is not None  # (the fast path is available)
        fd = wal.current_fd()
        if fd < 0:
            # A new WAL may exist: the thread's durability step (which lists the WAL
            # directory) covers this write.
            self._to_thread(done)
            return False
        # A descriptor of our own: the syncer may close its descriptor (and the number
        # be reused) before the fsync is submitted; this one stays the WAL that holds
        # this write.
        try:
            own = os.dup(fd)
        except OSError:  # e.g. out of descriptors: the thread's step covers the write
            self._to_thread(done)
            return False
        self._written.append((self._next_token, own, self._db.latest_sequence_number(), done, wal.fd_path))
        self._next_token += 1
        return True

    def _write_deferred(self, to_thread: bool = False) -> None:
        """Write the deferred batches (``write_now(defer_write=True)``) here, in order, and
        hand their fsyncs to the kernel. Once the fast path cannot take one (the thread got
        work, a write failed, or ``to_thread``: not on the loop), it and the rest go to the
        thread's queue as they are, still in order (a failure then fails them there)."""
        with self._cond:
            deferred, self._deferred = self._deferred, []
            for i, (build, done) in enumerate(deferred):
                if to_thread or not self._fast_available():
                    self._queue.extend(deferred[i:])
                    self._durable_queued += len(deferred) - i
                    self._cond.notify()
                    break
                self._write_fast(build, done, True)
        if not to_thread:
            self._submit_written()

    def _write_now_unsynced(self, build: Callable[[], WriteBatch], done: Callable[[BaseException | None], None]) -> bool:
        """``write_now`` of a store with ``sync=False``: while the thread is idle with nothing
        queued, write ``build()`` here, record the mark and call ``done``. The write does not
        wait: RocksDB refuses one it would stall (``no_slowdown``: too many memtables or level-0
        files), and then, or on any other failure of the write, nothing is written and this
        returns ``False``: the thread writes it (waiting for the stall there, or failing the
        store with the error). A batch is atomic, so a refused one can be written again."""
        with self._cond:
            if self._queue or self._busy or self._closing or self._fast_closed or self._failed is not None:
                return False
            try:
                self._db.write(build(), self._no_wait_opts)
            except Exception:  # noqa: BLE001 - the thread tries again and reports a real failure
                return False
            err: BaseException | None = None
            try:
                # Written to the OS: recorded before the write is acknowledged, as the thread does.
                self._mark.record(self._db.latest_sequence_number())
                self.fast_writes += 1
            except Exception as e:  # noqa: BLE001 - reported to the waiter; the writer fails
                err = self._failed = e.with_traceback(None)  # its frames reach the loop's (see write_now)
        done(err)
        return True

    def _to_thread(self, done: Callable[[BaseException | None], None]) -> None:
        """Under the lock: queue a durability step only (the write is made) to the thread."""
        self._queue.append((None, done))
        self._durable_queued += 1
        self._cond.notify()

    def _after_passes(self, passes: int, fn: Callable[[], None]) -> None:
        """On the loop: ``fn()`` after ``passes`` more loop passes (``call_soon`` chained); at
        once when the loop no longer watches the fast path (``close_fast`` ran)."""
        if passes > 0 and self._reader_loop is not None:
            self._reader_loop.call_soon(self._after_passes, passes - 1, fn)
        else:
            fn()

    def _submit_written(self, thread_gone: bool = False) -> None:
        """Hand the fsync of every write in ``_written`` to the kernel, in write order; one
        the kernel refuses (e.g. its queue is full) gets the thread's durability step, or
        (``thread_gone``: at ``close()``, after the thread ended) an ``os.fsync`` here."""
        aio = self._aio
        refused: list[tuple[int, int, Callable[[BaseException | None], None], str]] = []
        with self._cond:
            written, self._written = self._written, []
            for token, fd, seq, done, path in written:
                if aio is not None and aio.submit(fd, token):
                    self._fast[token] = (seq, done, path)
                    os.close(fd)  # a queued request holds its own reference to the file
                elif thread_gone:
                    refused.append((fd, seq, done, path))
                else:
                    os.close(fd)
                    self._to_thread(done)
        for fd, seq, done, path in refused:
            err: BaseException | None = None
            try:
                os.fsync(fd)
            except OSError as e:
                err = wal_fsync_error(e, path)
            finally:
                os.close(fd)
            self._finish_write(seq, done, err)

    def _check_not_failed(self) -> BaseException | None:
        """After a durability step that succeeded: the error of an earlier failed write or
        fsync of the store, if any (``None``: the step's success can be trusted).

        The "fsyncgate" rule: after a failed fsync, the kernel may have dropped the dirty
        pages it could not write (marked clean, the error reported once), so a later fsync of
        the same file succeeds without the lost data being on disk. A write whose own fsync
        succeeded after another one failed, or while it was failing (fast-path fsyncs run
        in the kernel while the thread makes a group durable), is therefore not known to
        be durable: it is never acknowledged, and the mark is not moved for it."""
        with self._cond:
            return self._failed

    def _write_built(self, build: Callable[[], WriteBatch]) -> BaseException | None:
        """Write ``build()`` (no sync); the error if it failed."""
        try:
            self._db.write(build(), self._nosync_opts)
        except BaseException as e:  # noqa: BLE001 - fails the writer, as in the thread
            return e
        return None

    def _reap(self) -> None:
        """On the loop, when the AIO eventfd is readable: finish the completed fast-path writes."""
        aio = self._aio
        if aio is None:
            return
        for token, err in aio.reap():
            self._finish_fast(token, err)
        if self._drained is not None and not aio.inflight and not self._drained.done():
            self._drained.set_result(None)

    def _finish_fast(self, token: int, err: BaseException | None) -> None:
        """The kernel's fsync request ``token`` completed (with ``err``, named after the WAL
        file)."""
        seq, done, path = self._fast.pop(token)
        if isinstance(err, OSError):
            err = wal_fsync_error(err, path)
        self._finish_write(seq, done, err)

    def _finish_write(self, seq: int, done: Callable[[BaseException | None], None], err: BaseException | None) -> None:
        """A fast-path write is durable up to ``seq`` (or failed with ``err``): record the
        mark, then acknowledge it. Once any write or fsync of the store failed, a later
        fsync's success proves nothing (see ``_check_not_failed``): the write fails with
        that error."""
        if err is None:
            err = self._check_not_failed()
        if err is None:
            try:
                # Durable up to ``seq``: recorded before the write is acknowledged.
                self._mark.record(seq)
                self.fast_writes += 1
            except BaseException as e:  # noqa: BLE001 - reported to the waiter
                err = e.with_traceback(None)  # its frames reach the loop's (see write_now)
        if err is not None:
            with self._cond:
                if self._failed is None:
                    self._failed = err
        try:
            done(err)
        except Exception:  # noqa: BLE001 - e.g. the waiter's loop is closed
            pass

    async def close_fast(self) -> None:
        """On the loop: end the fast path; return once its writes in flight are finished
        (their ``done`` called) and the loop no longer watches the AIO eventfd. The watch of
        a loop that has ended moves to this one first (``_watch_from``): its completions
        would never be reaped, and this waited for good."""
        aio = self._aio
        loop = asyncio.get_running_loop()
        if aio is not None and self._reader_loop is not None and self._reader_loop is not loop:
            self._watch_from(loop, aio)
        with self._cond:
            if self._deferred:
                self._write_deferred()  # before the fast path closes
            self._fast_closed = True
        if aio is None:
            return
        self._submit_written()
        # Completions a reap interrupted (Ctrl-C) took and kept are returned by the next
        # reap, but the loop reaps only when the eventfd is readable, and that reap had read
        # it: with nothing left in the kernel to make it readable again, this waited for
        # good. Reaped here first; from then on every completion kept is reaped by the loop.
        self._reap()
        while aio.inflight:
            self._drained = loop.create_future()
            await self._drained
        self._drained = None
        if self._reader_loop is not None:
            self._reader_loop.remove_reader(aio.efd)
            self._reader_loop = None
            self._reader_thread = None

    def _close_aio(self) -> None:
        """At ``close()``: stop watching the eventfd (on its loop), wait for the fast-path
        writes still in flight and finish them, free the AIO context."""
        aio = self._aio
        if aio is None:
            return
        with self._cond:
            self._fast_closed = True
        loop = self._reader_loop
        if loop is not None:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop and loop.is_running():
                asyncio.run_coroutine_threadsafe(self.close_fast(), loop).result()
            elif self._reader_loop is not None:
                try:
                    loop.remove_reader(aio.efd)
                except Exception:  # noqa: BLE001 - a closed loop watches nothing any more
                    pass
                self._reader_loop = None
                self._reader_thread = None
        self._submit_written(thread_gone=True)  # none left unless close_fast did not run
        for token, err in aio.close():
            self._finish_fast(token, err)
        # Once ``aio.close()`` has returned every completion, a write still in ``_fast`` is
        # one whose completion a close interrupted (Ctrl-C) had taken and not finished: it
        # was returned once, to that run, and is gone. Whether its fsync succeeded is
        # unknown, so it fails (as a failed fsync: ``_failed``), never left unanswered.
        for token in list(self._fast):
            self._finish_fast(token, OSError(errno.EINTR, "the completion of its fsync was lost to an interrupted "
                                             "close: whether it is durable is unknown"))
        self._aio = None

    def _write_group(
        self, group: list[tuple[Any, Callable[[BaseException | None], None]]], durable: bool
    ) -> BaseException | None:
        """Write ``group`` and make it durable (``durable``; see the class docstring). Raises
        what a write or the durability step raised; returns the error of a fast-path write
        that failed meanwhile (the step's success is not trusted then: ``_check_not_failed``),
        else ``None``."""
        db = self._db
        if not durable and self._sync:
            # Only writes that need no durability: no fsync, and no mark (see the class
            # docstring); the next durable group, or close(), syncs them.
            nosync = self._nosync_opts
            for item, _ in group:
                if item is not None:
                    self._write_item(item, nosync)
            self._unsynced = True
            return None
        wal = self._wal if self._sync else None
        nosync = self._nosync_opts
        last = len(group) - 1
        clock = time.perf_counter
        held_since = clock()
        for i, (item, _) in enumerate(group):
            if item is None:
                # The loop's fast path wrote it already; only its durability step is ours.
                if wal is None and i == last:
                    db.flush_wal(True)
                continue
            batch = item if isinstance(item, WriteBatch) else item()
            if not isinstance(batch, WriteBatch):
                # Several batches (a large append), written in order, the GIL released
                # between two; the group's durability step covers them all (with
                # ``sync=False`` there is none: no WAL sync, as for one batch).
                self._write_pieces(batch, nosync)
                if wal is None and i == last and self._sync:
                    db.flush_wal(True)
            elif wal is None and i == last:
                # The last write's sync covers every earlier WAL write of the group.
                db.write(batch, self._sync_opts)
            else:
                db.write(batch, nosync)
            if i != last and clock() - held_since > _GIL_SLICE:
                time.sleep(_GIL_PAUSE)
                held_since = clock()
        if wal is not None and not wal.sync():
            self.fallbacks += 1
            db.flush_wal(True)  # no WAL file where expected: let RocksDB sync it
        failed = self._check_not_failed()  # a fast-path fsync failed meanwhile
        if failed is not None:
            return failed
        # Durable (or, with sync=False, written to the OS) up to here: record it before the
        # group is acknowledged.
        self._unsynced = False
        self._mark.record(db.latest_sequence_number())
        return None

    def _write_item(self, item: Any, opts: Any) -> None:
        """Writer thread: write the queued ``item`` (a ``WriteBatch``, or a callable building
        one or an iterable of several) with ``opts``."""
        batch = item if isinstance(item, WriteBatch) else item()
        if isinstance(batch, WriteBatch):
            self._db.write(batch, opts)
        else:
            self._write_pieces(batch, opts)

    def _write_pieces(self, batches: Iterable[WriteBatch], opts: Any) -> None:
        """Writer thread: write each of ``batches`` (built one at a time) with ``opts``,
        pausing ``_GIL_PAUSE`` with the GIL released between two, so the event loop takes it
        at once: rocksdict holds it through each write."""
        for k, batch in enumerate(batches):
            if k:
                time.sleep(_GIL_PAUSE)
            self._db.write(batch, opts)

    def _sync_unsynced(self) -> None:
        """At close: make the writes of trailing lazy groups durable and record the mark."""
        db = self._db
        if self._wal is None or not self._wal.sync():
            db.flush_wal(True)
        self._unsynced = False
        self._mark.record(db.latest_sequence_number())

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    if self._unsynced and self._failed is None:
                        try:
                            self._sync_unsynced()
                        except BaseException as e:  # noqa: BLE001 - close() reports it
                            clear_frames(e)
                            self._failed = e
                    return  # closing and drained
                group, self._queue = self._queue, []
                self._busy = True
                durable = self._durable_queued > 0
                self._durable_queued = 0
            err: BaseException | None = self._failed
            if err is None:
                try:
                    # (An error returned: a fast-path fsync failed meanwhile, so this
                    # group's durability is not known: it fails with that error.)
                    err = self._write_group(group, durable)
                    if err is None and (durable or not self._sync):
                        self.groups += 1
                    elif err is None:
                        self.lazy_groups += 1
                except BaseException as e:  # noqa: BLE001 - reported to every waiter
                    clear_frames(e)
                    err = self._failed = e
            for _, done in group:
                try:
                    done(err)
                except Exception:  # noqa: BLE001 - e.g. the waiter's loop is closed
                    pass
            # (Never empty.) The last ``done`` too: a closure over its store, it kept a store
            # its program dropped alive (so never closed) while this thread waited.
            del group, done

    def close(self) -> None:
        """Write everything queued, then stop the thread (blocks until it has) and drop the
        database (a reference left here would keep RocksDB open if its own close fails).

        Idempotent, and safe to call again after a close that raised or was interrupted
        (``KeyboardInterrupt``; the log store's close calls it again then): each step is
        one a second run finds done (the thread joined, the AIO context and the WAL syncer
        closed, the database dropped) or completes. A retry after the database was dropped
        raised ``AttributeError``."""
        with self._cond:
            if self._deferred:
                # Not written yet (``close_fast`` did not run): the thread writes them.
                self._write_deferred(to_thread=True)
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._close_aio()
        if self._wal is not None:
            self._wal.close()
        # Dropped in one step (no bytecode between the lookup and the removal, so an
        # interrupt cannot split them): a retried close finds it gone, and drops nothing.
        self.__dict__.pop("_db", None)
        if self._failed is not None:
            clear_frames(self._failed)  # now also the writer loop's frame (it has returned)


def ignore_done(err: BaseException | None) -> None:
    """The ``done`` of a write nobody waits for (a failure also fails every later write, so
    it is reported there)."""
