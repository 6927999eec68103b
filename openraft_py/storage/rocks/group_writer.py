"""The group-commit writer: ONE thread that writes the log store's batches in order and makes
each group of them durable with one step (``GroupWriter``). The design, its invariants and
the latency knobs: "Group commit" in ``docs/design/durability.md``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rocksdict import Rdict, WriteBatch

from .ackmark import AckMark
from .db import clear_frames, write_options
from .wal import WalSyncer

__all__ = ["GroupWriter", "ignore_done"]

_GIL_SLICE = 0.0005
"""The writer thread holds the GIL (rocksdict keeps it during ``write``, encoding needs it) for
at most about this long between two writes of a group before pausing ..."""
_GIL_PAUSE = 0.0001
"""... for this long, GIL released, so the event loop gets it without waiting for the
interpreter's switch interval (5 ms by default)."""


class GroupWriter:
    """ONE thread writing queued work in order, one durability step per group.

    ``submit(item, done)`` queues ``item``: a ``WriteBatch``, or a zero-argument callable that
    builds one in the writer thread (so the caller's loop does not pay for building it).
    ``done(error_or_None)`` is called from the writer thread once the batch (and every batch
    queued before it) is durable, or with the error. After a failed write every later batch
    fails too (the log's order could not be kept otherwise).

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
    """

    def __init__(self, db: Rdict, sync: bool, wal: WalSyncer | None, name: str, mark: AckMark) -> None:
        self._db = db
        self._sync = sync
        self._wal = wal
        self._mark = mark
        self._sync_opts = write_options(sync)
        self._nosync_opts = write_options(False)
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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any, done: Callable[[BaseException | None], None], durable: bool = True) -> None:
        """Queue ``item``; ``done`` is called once it is durable (``durable=False``: once it
        is written; durable with a later group, see the class docstring)."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the store is closed")
            self._queue.append((item, done))
            if durable:
                self._durable_queued += 1
                self._cond.notify()
            # A write that needs no durability does not wake the thread: it waits for the next
            # durable write (or close()), so it costs no thread wake-up of its own (0.1-0.5 ms
            # of the submitting loop's time on a loaded 2-core VM, measured).

    def _write_group(self, group: list[tuple[Any, Callable[[BaseException | None], None]]], durable: bool) -> None:
        db = self._db
        if not durable and self._sync:
            # Only writes that need no durability: no fsync, and no mark (see the class
            # docstring); the next durable group, or close(), syncs them.
            nosync = self._nosync_opts
            for item, _ in group:
                db.write(item if isinstance(item, WriteBatch) else item(), nosync)
            self._unsynced = True
            return
        wal = self._wal if self._sync else None
        nosync = self._nosync_opts
        last = len(group) - 1
        clock = time.perf_counter
        held_since = clock()
        for i, (item, _) in enumerate(group):
            batch = item if isinstance(item, WriteBatch) else item()
            if wal is None and i == last:
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
        # Durable (or, with sync=False, written to the OS) up to here: record it before the
        # group is acknowledged.
        self._unsynced = False
        self._mark.record(db.latest_sequence_number())

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
                durable = self._durable_queued > 0
                self._durable_queued = 0
            err: BaseException | None = self._failed
            if err is None:
                try:
                    self._write_group(group, durable)
                    if durable or not self._sync:
                        self.groups += 1
                    else:
                        self.lazy_groups += 1
                except BaseException as e:  # noqa: BLE001 - reported to every waiter
                    clear_frames(e)
                    err = self._failed = e
            for _, done in group:
                try:
                    done(err)
                except Exception:  # noqa: BLE001 - e.g. the waiter's loop is closed
                    pass
            del group

    def close(self) -> None:
        """Write everything queued, then stop the thread (blocks until it has) and drop the
        database (a reference left here would keep RocksDB open if its own close fails)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._wal is not None:
            self._wal.close()
        del self._db
        if self._failed is not None:
            clear_frames(self._failed)  # now also the writer loop's frame (it has returned)


def ignore_done(err: BaseException | None) -> None:
    """The ``done`` of a write nobody waits for (a failure also fails every later write, so
    it is reported there)."""
