"""``RocksLogStore``: the durable ``RaftLogStorage`` on RocksDB, and its ``RocksLogReader``.

Mutations go, in call order, to ONE group-commit writer thread (``group_writer.py``);
``append`` returns once its entries are readable (they wait in ``_pending`` until durable) and
reports durability through its ``IOFlushed``. The format: ``log_format.py``; the durability
design: ``docs/design/durability.md``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, Self, cast

import msgspec
from rocksdict import Rdict, WriteBatch

from ..._core import encode_index_key, normal_data_bytes
from ...errors import LogCompacted, StorageError
from ...types import Entry, LogId, LogState, NodeId, Normal, Vote
from ...validation import MAX_TERM
from .. import IOFlushed
from .damage import damaged, damaged_read, is_rocksdb_corruption
from .db import (
    BoundedIter,
    CloseOnce,
    StoreCalls,
    byte_pieces,
    clear_frames,
    close_after_calls,
    close_collected,
    close_step,
    column_family_holds_data,
    corruption_error,
    database_use,
    drop_handles,
    finish_close,
    in_thread,
    open_db,
    raise_interrupt,
    release_db,
    store_path,
)
from .group_writer import GroupWriter, ignore_done
from .log_format import (
    END_KEY,
    ENTRIES_CF,
    K_ACKMARK,
    K_COMMITTED,
    K_FORMAT,
    K_OWNER,
    K_PURGED,
    K_VOTE,
    LOG_FORMAT,
    META_CF,
    check_stored_run,
    decode_entry_records,
    decode_stored_entry,
    put_entries,
)
from .owner import decode_owner, owner_to_record
from .wal import wal_syncer_for

__all__ = [
    "FSYNC_MODES",
    "INLINE_READ_MAX",
    "INLINE_READ_MAX_BYTES",
    "READ_PIECE_MAX_BYTES",
    "WRITE_AFTER_SENDS_MAX",
    "WRITE_NOW_MAX",
    "WRITE_NOW_MAX_BYTES",
    "WRITE_NOW_MAX_UNSYNCED",
    "RocksLogReader",
    "RocksLogStore",
    "log_store_use",
]

FSYNC_MODES = ("wal", "rocksdb")
"""``fsync_mode`` values of ``RocksLogStore``: ``"wal"`` (fsync the WAL files outside
rocksdict, the default on Linux) or ``"rocksdb"`` (RocksDB's own sync write); see "The
durability step" in ``docs/design/durability.md``."""

INLINE_READ_MAX = 64
"""Reads of at most this many entries (and ``INLINE_READ_MAX_BYTES``) from RocksDB run on the
event-loop thread (a short range read, mostly from the memtable / block cache); larger ones
run in a worker thread, over an iterator created at the call (a point-in-time image)."""

INLINE_READ_MAX_BYTES = 256 * 1024
"""A read on the event loop's thread (``INLINE_READ_MAX``) whose stored records add up to more
than this many bytes is given to a worker thread after all (the loop stops reading at the
first record past this many, and decodes nothing): a read of 64 entries of 64 kB held a
leader's loop for 7-17 ms while it sent them to a follower catching up."""

READ_PIECE_MAX_BYTES = 1024 * 1024
"""A read in the worker thread takes this many bytes of stored records at a time (or one
larger record), copied out of RocksDB and decoded, and releases the GIL between two. The
copy and the decode hold the GIL (rocksdict, and one ``_core`` call for the decode), so one
read of a leader's batch of 300 entries of 64 kB (19.7 MB, for a follower catching up) held
its event loop: the decode alone was one call of 10-37 ms, and a 1 ms timer on an otherwise
idle loop fired 51 ms late (5.5 ms in pieces)."""

WRITE_NOW_MAX = 512
"""An append of at most this many entries may take the writer's fast path (``GroupWriter.
write_now``): written on the event loop while the writer thread is idle, its fsync handed to
the kernel, no thread hop (``docs/design/durability.md``, "The loop's fast path"). A write of
64 entries takes ~20-40 us, one of 512 small entries ~0.3 ms; larger ones stay in the writer
thread. (At 64 until the fifteenth round of ``docs/design/performance.md``: at 256 writers
over TCP the thread's path cost the nodes 8-14% more CPU per write.)"""

WRITE_NOW_MAX_UNSYNCED = 1024
"""``WRITE_NOW_MAX`` for a store with ``sync=False``: with no fsync to wait for, the fast path
is the whole write, and a thread hop would cost more than the write (256 entries of ~60 bytes:
~0.1 ms)."""

WRITE_AFTER_SENDS_MAX = 16
"""A leader's append (``IOFlushed.sends_first``) of at most this many entries on the fast path
is written after its AppendEntries leave, a few loop passes later, not before them
(``GroupWriter.write_now(defer_write=True)``): the followers get the entries one RocksDB
write sooner, and the leader's own write overlaps their round trip. Larger appends are
written at once (only their fsync waits for the sends). See ``docs/design/performance.md``,
twenty-seventh round."""

WRITE_NOW_MAX_BYTES = 512 * 1024
"""An append whose payloads add up to more than this many bytes never takes the fast path, so
the event loop is never held by a large write."""

WRITE_PIECE_MAX_BYTES = 1024 * 1024
"""The writer thread writes an append whose payloads add up to more than this many bytes as
consecutive RocksDB writes of at most this many (or of one larger entry), each encoded just
before it is written, the GIL released between two (``GroupWriter``: a callable may build
several batches). rocksdict holds the GIL through a write, so one write of a follower's 8 MB
AppendEntries (the default ``max_payload_bytes``) held its event loop for all of it: about 11
ms of CPU, 40-110 ms on a busy 2-core machine. The pieces are one group: made durable by one
step, the append acknowledged once after the last; a crash can leave a prefix of the append's
entries (never a hole), which was never acknowledged."""

_enc = msgspec.msgpack.Encoder()
_dec_vote = msgspec.msgpack.Decoder(Vote)
_dec_logid = msgspec.msgpack.Decoder(LogId | None)
_dec_any = msgspec.msgpack.Decoder()


def _checked_entries(blobs: list[bytes], index: int, prev_term: int) -> list[Entry] | None:
    """The entries of the stored values ``blobs`` (one batch decode), which must be the
    records of the indexes ``index``, ``index + 1``, ... with terms from ``prev_term`` on,
    never decreasing, at most ``MAX_TERM``; ``None`` when anything is amiss there (a record
    that does not decode, a hole, a term out of order), for the caller to look at again with
    the keys (``check_stored_run``)."""
    try:
        entries = decode_entry_records(blobs)
    except (ValueError, msgspec.DecodeError):  # CodecError is a ValueError
        return None
    for e in entries:
        lid = e.log_id
        term = lid.term
        if lid.index != index or term < prev_term:
            return None
        prev_term = term
        index += 1
    # Terms never decrease: the last one bounds them all by MAX_TERM.
    if prev_term > MAX_TERM:
        return None
    return entries


def _read_entries(image: BoundedIter, start: int) -> list[Entry]:
    """The entries of ``image`` from index ``start`` to its bound: the gap-free run starting at
    ``start`` (a hole in the stored log shows as a short result). Raises when the scan stops
    on an error (e.g. a damaged file), and ``ValueError`` naming the entry when a record is
    damaged: it does not decode, or holds another index than its key, a term above
    ``MAX_TERM`` or below the entry before it (``log_format.decode_stored_entry``). Closes
    ``image``. Runs in a worker thread.

    Read and decoded ``READ_PIECE_MAX_BYTES`` of stored values at a time, the GIL released
    (``time.sleep(0)``) between two pieces (see there). The usual read is one batch decode and
    one pass per piece; anything amiss there (a hole included) is looked at again with the
    keys, over the whole range (``check_stored_run``)."""
    try:
        key = encode_index_key(start)
        image.seek(key)
        out: list[Entry] = []
        while True:
            blobs, end = image.values_upto(READ_PIECE_MAX_BYTES)
            entries = _checked_entries(blobs, start + len(out), out[-1].log_id.term if out else 0)
            if entries is None:
                return check_stored_run(image.keys(key), image.values(key), start)
            if out:
                out.extend(entries)
            else:
                out = entries
            if end:
                return out
            time.sleep(0)  # the loop's thread takes the GIL now if it waits for it
    finally:
        image.close()


def _read_entries_inline(image: BoundedIter, start: int) -> list[Entry] | None:
    """``_read_entries(image, start)`` on the event loop's thread, or ``None`` (nothing
    decoded, ``image`` left open) once the stored values add up to more than
    ``INLINE_READ_MAX_BYTES``: the caller reads the range in a worker thread then. Closes
    ``image`` otherwise (also on an error)."""
    handed = False
    try:
        key = encode_index_key(start)
        image.seek(key)
        blobs, end = image.values_upto(INLINE_READ_MAX_BYTES + 1)
        if not end or sum(map(len, blobs)) > INLINE_READ_MAX_BYTES:
            handed = True
            return None
        entries = _checked_entries(blobs, start, 0)
        return check_stored_run(image.keys(key), blobs, start) if entries is None else entries
    finally:
        if not handed:
            image.close()


def _close_image(image: BoundedIter, start: int) -> None:
    """The ``refused`` of a read in a worker thread (``StoreCalls.run``): release its image."""
    image.close()


def _short_read_cause(entries_cf: Rdict, index: int, got: int) -> BaseException:
    """Why a read found only ``got`` entries: the error an iterator seeking to ``index``
    reports (e.g. a corrupted SST block), else a hole in the stored log."""
    probe = entries_cf.iter()
    try:
        probe.seek(encode_index_key(index))
        probe.status()
    except Exception as e:  # noqa: BLE001 - the real cause
        return e
    finally:
        del probe  # the iterator keeps RocksDB open; a kept error must not hold it
    return RuntimeError(f"no entry at index {index} (got {got} entries): a hole in the stored log")


class RocksLogReader:
    """A ``RaftLogReader`` over a ``RocksLogStore``; see ``RaftLogReader`` for the contract.

    Shares the store's in-memory view (the not-yet-written entries and the log bounds), so it
    sees every appended entry at once. Usable concurrently with the store and other readers
    from the store's event loop.
    """

    __slots__ = ("_s",)

    def __init__(self, store: RocksLogStore) -> None:
        self._s = store

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries with ``start <= index < stop``. Raises ``LogCompacted`` when ``start``
        is at or below the last purged index.

        Cost: O(stop - start). Entries not yet written come from memory; a range of at most
        ``INLINE_READ_MAX`` entries and ``INLINE_READ_MAX_BYTES`` is read from RocksDB on the
        loop thread, a larger one in a worker thread, ``READ_PIECE_MAX_BYTES`` at a time with
        the GIL released between two; either way through a RocksDB iterator created at the
        call, a point-in-time image (so a truncate or purge written meanwhile cannot tear it)."""
        s = self._s
        s._check_open()
        purged = s._purged
        if purged is not None and start <= purged.index:
            raise LogCompacted(f"entries [{start}, {stop}) requested but the log is purged up to {purged!r}")
        start = max(start, 0)
        last = s._last
        stop = min(stop, 0 if last is None else last.index + 1)
        if stop <= start:
            return []
        pending = s._pending
        # An entry waits in _pending from its append until it is durable; every other entry
        # of the log is in RocksDB. Usually _pending is a suffix of the log: find where it
        # starts within the range.
        split = start
        while split < stop and split not in pending:
            split += 1
        try:
            tail = [pending[i] for i in range(split, stop)]
        except KeyError:
            # A later append became durable before an earlier one (the writer's fast path
            # hands each fsync to the kernel; the thread makes its own groups durable).
            return await self._read_runs(start, stop)
        if split == start:
            return tail
        # The iterator is the image of the log as of this call (RocksDB pins an implicit
        # snapshot when it is created: ``_read_stored`` makes it before its first await), so
        # a truncate or purge written while a large read runs in its thread cannot tear it.
        # NB: not ``cf.snapshot()``: rocksdict (0.3.x) iterates a snapshot's live data.
        head = await self._read_stored(start, split, None)
        head.extend(tail)
        return head

    async def _read_runs(self, start: int, stop: int) -> list[Entry]:
        """``[start, stop)`` when ``_pending`` has holes: each run of it is taken from
        ``_pending`` or read from RocksDB. Both are taken now, before the first wait: the
        pending entries are copied (a write completing meanwhile drops them) and every stored
        run's image is made (no write of this store can come between two of them). Counted
        by the store's ``StoreCalls`` until done: its images pin the database, so a close
        waits for it (each read after the close began is refused, its image released)."""
        s = self._s
        pending = s._pending
        parts: list[list[Entry] | tuple[int, int, BoundedIter]] = []
        handed = 0  # parts[:handed] are done or being read: their images are the reads' own

        def release() -> None:
            # (A close in this thread, this call suspended under it: see ``StoreCalls.hold``.)
            for part in parts[handed:]:
                if not isinstance(part, list):
                    part[2].close()

        with s._calls.hold("reading the log", release):
            try:
                i = start
                while i < stop:
                    stored = i not in pending
                    j = i + 1
                    while j < stop and (j not in pending) == stored:
                        j += 1
                    if stored:
                        parts.append((i, j, BoundedIter(s._entries, encode_index_key(j))))
                    else:
                        parts.append([pending[k] for k in range(i, j)])
                    i = j
                out: list[Entry] = []
                for part in parts:
                    handed += 1
                    if isinstance(part, list):
                        out.extend(part)
                    else:
                        out.extend(await self._read_stored(*part))
                return out
            finally:
                # Only the images no read was given: one read in a worker thread may still be
                # scanning its own (when this call is cancelled), and closing it would free the
                # read options its scan uses (``BoundedIter``).
                for part in parts[handed:]:
                    if not isinstance(part, list):
                        part[2].close()

    async def _read_stored(self, start: int, stop: int, image: BoundedIter | None) -> list[Entry]:
        """The entries ``[start, stop)`` from ``image`` (bounded at ``stop``; ``None``: one
        made now), which must hold all of them: in this thread up to ``INLINE_READ_MAX``
        entries and ``INLINE_READ_MAX_BYTES``, else in a worker thread
        (``READ_PIECE_MAX_BYTES`` at a time). Raises ``StorageError`` on a short or failed
        read.

        What touches RocksDB in this thread (making the image, a read of a few entries, the
        look for why a read came back short) is counted by the store's ``StoreCalls``
        (``enter``), as the read in a worker thread is: a reader on another thread's loop
        had RocksDB closed under it by a ``close()`` in another thread."""
        s = self._s
        try:
            token = s._calls.enter("reading the log")  # (refused for a read of ``_read_runs`` after an earlier one's wait)
        except StorageError:
            if image is not None:
                image.close()
            raise
        handed = False  # (``token`` goes to the read in a worker thread, which leaves it)
        try:
            try:
                if image is None:
                    image = BoundedIter(s._entries, encode_index_key(stop))
                got = _read_entries_inline(image, start) if stop - start <= INLINE_READ_MAX else None
            except Exception as e:  # e.g. an entry that does not decode
                raise self._read_error(start, stop, e) from e
            if got is not None:
                return self._whole(start, stop, got)
            handed = True
        finally:
            if not handed:
                s._calls.leave(token)
        try:
            # Invariant: the image is counted from its making to its release; ``run`` takes
            # ``token`` over (a close in another thread between the two closed RocksDB with
            # the image alive, its lock held after the close).
            got = await s._calls.run(_read_entries, image, start, refused=_close_image, taking=token)
        except Exception as e:
            raise self._read_error(start, stop, e) from e
        finally:
            del image  # _read_entries closed it; if the thread still runs, it owns it
        if len(got) == stop - start:
            return got
        token = s._calls.enter("reading the log")  # (refused once the close began: the database may be closed)
        try:
            return self._whole(start, stop, got)
        finally:
            s._calls.leave(token)

    def _whole(self, start: int, stop: int, got: list[Entry]) -> list[Entry]:
        """``got``, the entries read of ``[start, stop)``, if none is missing; else the
        ``StorageError`` saying why (counted by the caller)."""
        s = self._s
        if len(got) != stop - start:
            if s._calls.abandoned:
                # Given up by the close past ``CLOSE_CALLS_WAIT``, RocksDB closed under it:
                # short for that (and the closed database tells no more).
                raise s._calls.closed_error()
            cause = _short_read_cause(s._entries, start + len(got), len(got))
            raise StorageError(f"reading log [{start}, {stop}) from {s.path!r}", cause) from cause
        return got

    def _read_error(self, start: int, stop: int, e: Exception) -> StorageError:
        """The ``StorageError`` of a read of ``[start, stop)`` that failed with ``e``."""
        subject = f"reading log [{start}, {stop}) from {self._s.path!r}"
        if is_rocksdb_corruption(e):  # a damaged block the open did not read
            return damaged_read(subject, e)
        return StorageError(subject, e)

    async def read_vote(self) -> Vote | None:
        """The last vote saved (durably) with ``save_vote``, or ``None``."""
        return self._s._vote


class RocksLogStore(RocksLogReader):
    """A durable ``RaftLogStorage`` in the RocksDB at ``path`` (created when missing or empty).

    ``sync=True``: every acknowledged write survives a machine crash (see ``docs/design/durability.md``
    for the group-commit design); ``sync=False``: only a process crash. Anything else (``None``,
    ``0``, ``"false"``) is a ``TypeError``, and ``fsync_mode`` other than one of
    ``FSYNC_MODES`` a ``ValueError``, before anything is opened.

    Opening is synchronous (a few milliseconds; use ``await RocksLogStore.open(path)`` from a
    running loop to do it in a thread). Raises ``StorageError`` naming ``path`` and what is
    wrong when it is a plain file, a database that is not an openraft-py log (nothing is written
    to it then), in use, or damaged: RocksDB finds a corrupted WAL record or file, or it
    recovered fewer writes than were acknowledged (see "Corruption" in ``docs/design/durability.md``).
    ``check_owner`` records, at the first start of a node on it, whose log it is (``owner``), and
    ``Raft.new`` then refuses the store to another node or cluster (``StoreOwnerMismatch``).
    Use the store from one event loop; ``close()`` / ``aclose()`` / ``async with`` flush
    everything queued and always release the database lock (``StorageError`` if RocksDB could
    not close cleanly). A store collected unclosed is closed then, with a ``ResourceWarning``
    naming its path (``__del__``). Every failed write reaches its caller as ``StorageError``.
    """

    __slots__ = (
        "path", "sync", "fsync_mode", "_db", "_entries", "_entries_h", "_meta_h", "_writer", "_vote",
        "_committed", "_committed_unsaved", "_purged", "_last", "_pending", "_closed", "_close_once", "_mark", "_owner",
        "_calls",
    )

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, fsync_mode: str = "wal") -> None:
        super().__init__(self)
        if type(sync) is not bool:
            # Checked before the open: RocksDB's write options refused it after the database
            # was opened, and the store, never made, kept its lock until the process ended.
            raise TypeError(f"sync must be True or False, got {type(sync).__name__} {sync!r}")
        if fsync_mode not in FSYNC_MODES:
            raise ValueError(f"fsync_mode must be one of {FSYNC_MODES}, not {fsync_mode!r}")
        self.path = store_path(path, "log store")
        self.sync = sync
        self._closed = True
        self._close_once = CloseOnce()  # (``close()``: the first closes, the others wait for it)
        # The entries' table files are not compressed: a log's entries are deleted soon after
        # they are written (purged after a snapshot), and compressing each flushed memtable was
        # a measurable part of a write (db._cf_options).
        db, mark = open_db(
            self.path, (ENTRIES_CF, META_CF), META_CF, K_FORMAT, K_ACKMARK, LOG_FORMAT, "log store", atomic_flush=True,
            uncompressed_cfs=(ENTRIES_CF,),
        )

        def load() -> tuple[Vote | None, LogId | None, LogId | None, LogId | None]:
            # Its own frame: cleared on an error (see open_db).
            meta = db.get_column_family(META_CF)
            try:
                vote = self._load(meta, K_VOTE, _dec_vote)
                committed = self._load(meta, K_COMMITTED, _dec_logid)
                purged = self._load(meta, K_PURGED, _dec_logid)
                raw_owner = meta.get(K_OWNER)
                self._owner = None if raw_owner is None else decode_owner(K_OWNER, raw_owner)
            finally:
                meta.close()
            it = db.get_column_family(ENTRIES_CF).iter()
            it.seek_to_last()
            last_stored = decode_stored_entry(it.key(), it.value()).log_id if it.valid() else None
            it.status()  # raises if the seek stopped on an error (a corrupted file), not at the end
            if last_stored is not None:
                # The log starts right after the purged entries: a first entry past that means
                # the entries in between are lost (reading them would fail much later).
                it.seek_to_first()
                first = decode_stored_entry(it.key(), it.value()).log_id.index if it.valid() else None
                it.status()
                expected = 0 if purged is None else purged.index + 1
                if first is not None and first > expected:
                    raise damaged(self.path, "log store", "entries are missing at its start", ValueError(
                        f"entries [{expected}, {first}) are missing: the first stored entry is {first}, "
                        f"but the log {'starts at 0' if purged is None else f'is purged only up to {purged.index}'}"
                    ))
            return vote, committed, purged, last_stored

        try:
            self._vote, self._committed, self._purged, last_stored = load()
            self._entries = db.get_column_family(ENTRIES_CF)
            self._entries_h = db.get_column_family_handle(ENTRIES_CF)
            self._meta_h = db.get_column_family_handle(META_CF)
        except BaseException as e:
            clear_frames(e)
            for name in ("_entries", "_entries_h", "_meta_h"):
                if hasattr(self, name):
                    delattr(self, name)
            release_db(db)
            del db
            mark.close()
            if isinstance(e, StorageError):
                raise
            if is_rocksdb_corruption(e):  # a damaged table file the reads above met
                raise corruption_error(self.path, "log store", e) from e
            raise StorageError(f"opening log store at {self.path!r}", e) from e
        self._db = db
        # The in-memory view: the log as submitted (what readers see).
        self._last: LogId | None = (
            last_stored if last_stored is not None and (self._purged is None or last_stored > self._purged)
            else self._purged
        )
        self._pending: dict[int, Entry] = {}
        wal = wal_syncer_for(self.path) if sync and fsync_mode == "wal" else None
        self.fsync_mode = "wal" if wal is not None else "rocksdb"
        self._mark = mark
        self._writer = GroupWriter(db, sync, wal, f"rocks-log-writer:{self.path}", mark)
        # ``save_committed`` called since the committed id was last put in a write's batch.
        self._committed_unsaved = False
        # The reads running in worker threads, which ``close()`` waits for (``StoreCalls``).
        self._calls = StoreCalls("log store", self.path, "the store is closed")
        self._closed = False

    @staticmethod
    def _load(meta: Rdict, key: bytes, dec: msgspec.msgpack.Decoder[Any]) -> Any:
        """The value of the meta ``key``, or ``None``; ``ValueError`` naming the key when it
        does not decode."""
        raw = meta.get(key)
        if raw is None:
            return None
        try:
            return dec.decode(raw)
        except msgspec.DecodeError as e:
            raise ValueError(f"the stored {key.decode()!r} does not decode: {e}") from e

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, sync: bool = True, fsync_mode: str = "wal") -> Self:
        """Open the store in a worker thread (does not block the running loop).

        A caller cancelled meanwhile (a timeout around the start, Ctrl-C, a failing sibling
        task) raises its ``CancelledError`` once the thread has ended, with the store it
        opened closed again (``in_thread``'s ``discard``): the store was left open for
        nobody, its writer thread running and RocksDB's lock held for as long as the process
        lived, so every later open of the path in the process failed with "the database is
        in use (its LOCK is held)"."""
        opening = functools.partial(cls, path, sync=sync, fsync_mode=fsync_mode)
        return await in_thread(opening, discard=cls.close)

    # -- internals

    def _check_open(self) -> None:
        if self._closed or self._calls.closing:
            raise self._calls.closed_error()

    async def _submit_and_wait(self, batch: WriteBatch, what: str) -> None:
        """Queue ``batch``; return once durable, or raise ``StorageError`` (``what`` says
        which call failed). Each waiter gets its own ``StorageError`` around the writer's
        error (that object is shared: raising it would add this waiter's frames to it)."""
        written: Future[None] = Future()
        subject = f"{what} in log store {self.path!r}"

        def done(err: BaseException | None) -> None:  # writer thread
            if err is None:
                written.set_result(None)
            else:
                written.set_exception(StorageError(subject, err))

        self._writer.submit(batch, done)
        await asyncio.wrap_future(written)

    def _written(self, entries: list[Entry], callback: IOFlushed) -> None:
        """On the loop: ``entries`` are durable in RocksDB. Drop those still pending (not
        replaced by a truncate and re-append meanwhile), then report it to ``callback``."""
        pending = self._pending
        head = entries[0]
        tail = entries[-1]
        first = head.log_id.index
        last = tail.log_id.index
        if pending.get(first) is head and pending.get(last) is tail:
            # Both ends still pending, so all of ``entries`` is (their indexes are
            # consecutive; a purge drops a prefix of the log, a truncate a suffix).
            if len(pending) == len(entries):
                pending.clear()  # nothing else pending: the usual case
            else:
                for i in range(first, last + 1):
                    del pending[i]
        else:
            for e in entries:
                i = e.log_id.index
                if pending.get(i) is e:
                    del pending[i]
        callback.io_completed(None)

    # -- RaftLogStorage

    async def get_log_state(self) -> LogState:
        """``LogState(last_purged_log_id, last_log_id)`` of the log as submitted (after a
        reopen: as durable)."""
        self._check_open()
        return LogState(self._purged, self._last)

    async def save_vote(self, vote: Vote) -> None:
        """Persist ``vote``; returns when durable (ordered after every earlier call)."""
        self._check_open()
        wb = WriteBatch(raw_mode=True)
        wb.put(K_VOTE, _enc.encode(vote), self._meta_h)
        self._put_committed(wb)
        await self._submit_and_wait(wb, "saving the vote")
        self._vote = vote

    async def read_vote(self) -> Vote | None:
        """The last vote saved with ``save_vote`` (durable), or ``None``."""
        return self._vote

    @property
    def owner(self) -> tuple[NodeId, str] | None:
        """``(node_id, cluster_name)`` of the node whose log this is (``check_owner``), or
        ``None`` for a store no node has started on yet (or made by an earlier version)."""
        o = self._owner
        return None if o is None else (o.node_id, o.cluster_name)

    async def check_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Make sure this store is node ``node_id``'s of cluster ``cluster_name``.
        ``Raft.new`` calls it before it reads anything else from the store (the optional
        method of ``RaftLogStorage``).

        A store with no owner record (new, or made by an earlier version: adopted) gets one
        for ``node_id`` and ``cluster_name``, durably, before this returns. A store recorded
        for another node id or cluster name raises ``StoreOwnerMismatch`` and is left as it
        was: nothing is written. ``TypeError``/``ValueError`` for a ``node_id`` that is no
        node id or a ``cluster_name`` that is not a ``str`` or is empty."""
        self._check_open()
        subject = f"opening log store at {self.path!r} for node {node_id}"
        record = owner_to_record(self._owner, node_id, cluster_name, subject, "log store")
        if record is None:
            return
        wb = WriteBatch(raw_mode=True)
        wb.put(K_OWNER, _enc.encode(record), self._meta_h)
        # Taken now: a second call while this one waits (two nodes started at once on one
        # store object) must find it, not record its own node over it.
        self._owner = record
        try:
            await self._submit_and_wait(wb, "recording the owner")
        except BaseException:
            self._owner = None
            raise

    async def replace_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as this store's owner, over whatever
        was recorded, durably before this returns. For an offline tool on a stopped node's
        store only (``openraft_py.recovery.replace_owners``: a forced recovery gives the
        survivor a new cluster name); ``TypeError``/``ValueError`` as ``check_owner``."""
        self._check_open()
        record = owner_to_record(None, node_id, cluster_name, "", "log store")
        assert record is not None
        wb = WriteBatch(raw_mode=True)
        wb.put(K_OWNER, _enc.encode(record), self._meta_h)
        previous, self._owner = self._owner, record
        try:
            await self._submit_and_wait(wb, "recording the owner")
        except BaseException:
            self._owner = previous
            raise

    async def save_committed(self, committed: LogId | None) -> None:
        """Record the committed log id and return at once: it is written with the store's
        next write (an append, truncate, purge or vote, in that write's batch) or at
        ``close()``, never by itself (the contract does not ask for durability, and a write
        of its own would cost every commit a RocksDB write on the event loop).

        Written in a later batch than every append submitted before it, the saved id never
        becomes durable ahead of the entries it covers. Until that write a crash loses it
        and a reopen reads the one saved before (restart then applies from there: the
        state machine's own applied id bounds it from below)."""
        self._check_open()
        self._committed = committed
        self._committed_unsaved = True

    async def read_committed(self) -> LogId | None:
        """The last saved committed log id, or ``None``."""
        return self._committed

    def _take_committed(self) -> bytes | None:
        """The committed id for the batch of the write being made (encoded), or ``None``
        when no ``save_committed`` came since the last one carried it; the caller puts it in
        that batch (``_put_committed``, or ``build`` in ``append``)."""
        if not self._committed_unsaved:
            return None
        self._committed_unsaved = False
        return _enc.encode(self._committed)

    def _put_committed(self, wb: WriteBatch) -> None:
        """Add the committed id to ``wb`` if it waits to be written."""
        committed = self._take_committed()
        if committed is not None:
            wb.put(K_COMMITTED, committed, self._meta_h)

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """Queue ``entries`` for the writer; returns once they are readable (at once).

        ``callback.io_completed`` is called on the loop when they are durable, or from the
        writer thread with the error if the write failed. Raises ``ValueError`` (log and callback untouched) when
        the batch does not continue the log without a hole or its indexes are not consecutive.
        Cost on the loop: O(len(entries)) dictionary updates (the in-memory view); encoding
        the entries and building the ``WriteBatch`` happen in the writer thread, except for an
        append of at most ``WRITE_NOW_MAX`` entries (``WRITE_NOW_MAX_UNSYNCED`` with
        ``sync=False``) and ``WRITE_NOW_MAX_BYTES`` payload bytes on the writer's fast path
        (written here, fsynced by the kernel; with ``sync=False`` done once written, and
        ``callback`` called before ``append`` returns; ``GroupWriter.write_now``). With
        ``callback.sends_first`` an append of at most ``WRITE_AFTER_SENDS_MAX`` entries on that
        path is written a few loop passes later, after the caller's sends, not in this call.
        The writer thread writes an append of more than ``WRITE_PIECE_MAX_BYTES`` in pieces
        (see there): a crash before ``callback`` may leave a prefix of its entries.
        """
        self._check_open()
        if not entries:
            callback.io_completed(None)
            return
        first = entries[0].log_id.index
        last = self._last
        expected = 0 if last is None else last.index + 1
        if first != expected:
            raise ValueError(
                f"append must continue the log without a hole: the first entry is "
                f"{entries[0].log_id!r} but the next index is {expected}"
            )
        if entries[-1].log_id.index - first != len(entries) - 1:
            raise ValueError(
                f"append needs consecutive indexes: {len(entries)} entries span "
                f"{entries[0].log_id!r}..{entries[-1].log_id!r}"
            )
        owned = list(entries)
        h = self._entries_h
        committed = self._take_committed()
        meta_h = self._meta_h

        def build() -> WriteBatch:
            # Writer thread: encoding and batch building are off the loop.
            wb = WriteBatch(raw_mode=True)
            put_entries(wb, h, owned)
            if committed is not None:
                wb.put(K_COMMITTED, committed, meta_h)
            return wb

        def build_pieces() -> Iterator[WriteBatch]:
            # Writer thread, an append of many entries or more than WRITE_NOW_MAX_BYTES:
            # WRITE_PIECE_MAX_BYTES at a time, each written before the next is encoded. One
            # of many small entries (a follower's batch at many writers) is one batch, with no
            # walk over its entries here: the writer holds the GIL meanwhile.
            if normal_data_bytes(owned, Normal) <= WRITE_PIECE_MAX_BYTES:
                yield build()
                return
            pieces = byte_pieces(owned, WRITE_PIECE_MAX_BYTES)
            for k, piece in enumerate(pieces):
                wb = WriteBatch(raw_mode=True)
                put_entries(wb, h, piece)
                if committed is not None and k == len(pieces) - 1:
                    wb.put(K_COMMITTED, committed, meta_h)
                yield wb

        pending = self._pending
        pending.update(zip(range(first, first + len(owned)), owned))  # (indexes checked consecutive above)
        self._last = owned[-1].log_id
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def done(err: BaseException | None) -> None:
            # The writer thread, or the loop (the fast path's completion). From the thread a
            # success is reported on the loop in ONE hop (one wake-up of the loop, and the
            # writer thread's GIL time stays short): release the pending copies, then report
            # durability (``IOFlushed`` calls its function at once there). On the loop it is
            # reported here: a ``call_soon_threadsafe`` would cost an eventfd write, a poll,
            # a read and one more loop pass before the node learns of it.
            if err is None:
                if threading.get_ident() == loop_thread:
                    self._written(owned, callback)
                else:
                    loop.call_soon_threadsafe(self._written, owned, callback)
            else:
                callback.io_completed(StorageError(f"appending to {self.path!r}", err))

        try:
            # The payload limit counts normal entries' data only: a membership entry is small
            # (the replication byte budget, ``core.replication.payload_bytes``, counts it).
            if len(owned) > (WRITE_NOW_MAX if self.sync else WRITE_NOW_MAX_UNSYNCED):
                self._writer.submit(build_pieces, done)
            elif normal_data_bytes(owned, Normal) > WRITE_NOW_MAX_BYTES:
                self._writer.submit(build_pieces, done)
            elif not self._writer.write_now(
                build, done, defer_sync=callback.sends_first,
                defer_write=callback.sends_first and len(owned) <= WRITE_AFTER_SENDS_MAX, loop=loop,
            ):
                self._writer.submit(build, done)
        except RuntimeError:
            for e in owned:
                pending.pop(e.log_id.index, None)
            self._last = last
            self._committed_unsaved = self._committed_unsaved or committed is not None
            raise

    async def truncate_after(self, log_id: LogId | None) -> None:
        """Delete every entry after ``log_id`` (every non-purged one for ``None``) with one
        range delete; returns when durable."""
        self._check_open()
        floor = -1 if self._purged is None else self._purged.index
        keep_to = max(-1 if log_id is None else log_id.index, floor)
        last = self._last
        if last is not None and keep_to < last.index:
            pending = self._pending
            for i in range(keep_to + 1, last.index + 1):
                pending.pop(i, None)
            # keep_to > floor implies it is log_id's index (so log_id is an entry we keep).
            self._last = self._purged if keep_to == floor else log_id
        wb = WriteBatch(raw_mode=True)
        wb.delete_range(encode_index_key(keep_to + 1), END_KEY, self._entries_h)
        self._put_committed(wb)
        await self._submit_and_wait(wb, "truncating")

    async def purge(self, log_id: LogId) -> None:
        """Delete every entry up to ``log_id`` (a range delete) and record ``log_id`` as the
        last purged, atomically; returns when durable. No-op when not beyond the last purged."""
        self._check_open()
        if self._purged is not None and log_id.index <= self._purged.index:
            return
        pending = self._pending
        lo = 0 if self._purged is None else self._purged.index + 1
        if pending:
            for i in range(max(lo, min(pending)), log_id.index + 1):
                pending.pop(i, None)
        self._purged = log_id
        if self._last is None or self._last.index <= log_id.index:
            self._last = log_id
            pending.clear()
        wb = WriteBatch(raw_mode=True)
        wb.delete_range(encode_index_key(0), encode_index_key(log_id.index + 1), self._entries_h)
        wb.put(K_PURGED, _enc.encode(log_id), self._meta_h)
        self._put_committed(wb)
        await self._submit_and_wait(wb, "purging")

    def get_log_reader(self) -> RocksLogReader:
        """A new reader sharing this store's view; usable concurrently (same loop)."""
        return RocksLogReader(self)

    # -- lifecycle

    @property
    def groups_written(self) -> int:
        """How many durability steps (fsyncs with ``sync=True``) the writer has done: its
        thread's groups plus the appends made durable on its fast path."""
        return self._writer.groups + self._writer.fast_writes

    def close(self) -> None:
        """Write everything queued (durably), stop the writer thread and close the database,
        releasing its lock. Blocks until done (at most one group write); idempotent. Prefer
        ``await aclose()`` on a running loop. Meant for after ``Raft.shutdown`` returned,
        when no call of the node runs any more.

        A read of this store still running in a worker thread (a large
        ``try_get_log_entries``: its caller was cancelled, or another task closes the store
        under it) is waited for first, up to ``CLOSE_CALLS_WAIT`` seconds (``StoreCalls``);
        every call made once the close began raises ``StorageError`` ("the store is
        closed"). A read still running past that bound (a disk that never answers) is logged
        at WARNING naming the path, RocksDB is closed under it (it then fails with
        ``StorageError``), and this raises ``StorageError``: RocksDB's lock stays held until
        that read ends. (Appends, truncates and purges are the writer thread's, which the
        close drains and joins.) A read of a few entries on another thread's loop is waited
        for likewise. An exception raised during that wait (``KeyboardInterrupt``: Ctrl-C)
        ends it as the bound does: the close completes, then raises that exception; so does
        one raised during the close's own steps (the writer's drain, waited for once more).

        Otherwise the lock is released whatever happens (also after a failed write: the same
        path can be opened again at once, in this process too). Raises ``StorageError``
        (naming the path, the cause chained) when RocksDB could not flush or close cleanly,
        e.g. after a failed write; the store is closed then all the same, and what was
        acknowledged is on disk (the next open checks it).

        A ``close()`` called while this one runs in another thread returns once this one
        has ended (``CloseOnce``; at once in a thread this one may wait for: the writer
        thread, which it joins, or one with a read of the store counted); a later one
        returns at once."""
        # (A second close returns once the first has ended, but in a thread it may wait for.)
        self._close_once.run(self._close_first, wait=self._second_close_waits())

    def _close_first(self) -> None:
        """The first ``close()``'s steps."""
        if not self._closed:  # (closed: never opened)
            self._closed = True
            close_after_calls(self._calls, self._close_db)

    def _second_close_waits(self) -> bool:
        """Whether a ``close()`` in this thread, not the first, waits for the first to end:
        not in a thread the first may wait for (the writer thread, which it joins; one with
        a call of the store counted) nor in a store never opened."""
        here = threading.get_ident()
        writer = getattr(self, "_writer", None)
        calls = getattr(self, "_calls", None)
        return (writer is not None and writer._thread.ident != here and calls is not None
                and not calls.counts_thread(here))

    def _close_db(self, errors: list[BaseException]) -> None:
        """``close()`` once no read of another thread runs (or they were given up):
        ``errors`` so far."""
        # Each step runs whatever an earlier one raised (``close_step``: Ctrl-C is raised
        # once RocksDB is closed).
        interrupts: list[BaseException] = []
        if self._committed_unsaved:
            # Written, synced and covered by the acknowledged mark by the writer's close.
            close_step(self._submit_committed, errors, interrupts)
        before = len(interrupts)
        if not close_step(self._writer.close, errors, interrupts) and len(interrupts) > before:
            # Interrupted while the writer drained: it is waited for once more (what was
            # queued is written and synced, its thread joined; RocksDB closed under it made
            # those writes fail); a second interrupt gives it up (the close is not clean then:
            # the acknowledged mark is not synced).
            if not close_step(self._writer.close, errors, interrupts) and len(interrupts) > before + 1:
                errors.append(RuntimeError("the close was interrupted twice while the writer thread drained "
                                           "its queue: RocksDB is closed under it"))
        for close in (self._entries.close, self._db.close):
            close_step(close, errors, interrupts)
        del close
        handles = [self._entries, self._entries_h, self._meta_h, self._db]
        del self._entries, self._entries_h, self._meta_h, self._db
        try:
            # A handle held elsewhere (e.g. by a dead frame in a traceback cycle) keeps RocksDB
            # open and its LOCK taken: drop_handles collects those, so the path can be reopened
            # at once.
            drop_handles(handles)
            finish_close(self._mark, errors, f"closing log store at {self.path!r}")
        finally:
            raise_interrupt(interrupts)

    def _submit_committed(self) -> None:
        """The committed id not saved yet, queued for the writer (``close``)."""
        wb = WriteBatch(raw_mode=True)
        self._put_committed(wb)
        self._writer.submit(wb, ignore_done, durable=False)

    async def aclose(self) -> None:
        """``close()`` in a worker thread (after the writer's fast path, which lives on this
        loop, has finished); callbacks of the last writes still reach the loop. Every call
        made from now on raises ``StorageError`` ("the store is closed"); the reads still
        running in worker threads are waited for (see ``close()``).

        A cancelled caller (a timeout around the cleanup, a second Ctrl-C) raises its
        ``CancelledError`` once the store is closed all the same: the close was left
        undone when the cancel came while the fast path finished, and, during ``close()``,
        the caller went on while the thread still closed, so an open of the same path right
        after found RocksDB's lock still held."""
        self._calls.begin_close()
        try:
            if not self._closed:
                await self._writer.close_fast()
        finally:
            await in_thread(self.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        """A store collected unclosed is closed then (as ``close()``: what was queued is
        written and synced, the committed id saved, the writer thread stopped, RocksDB's lock
        released), with a ``ResourceWarning`` naming its path (``close_collected``).

        The close runs in the collecting thread, except where it could wait for that
        thread itself: in the writer thread (which the close joins), or while another
        thread's loop runs the writer's fast path (the close waits for that loop); a
        short-lived thread closes it then, so a finalizer never blocks on itself."""
        if getattr(self, "_closed", True):
            return  # closed, or never opened (its open failed)
        if sys.is_finalizing():
            return  # the interpreter is exiting: its threads are stopped, a close could wait for good
        writer = self._writer
        here = threading.get_ident()
        fast_loop = writer._reader_loop
        if here == writer._thread.ident or (
            fast_loop is not None and fast_loop.is_running() and writer._reader_thread != here
        ):
            closer = threading.Thread(
                target=close_collected, args=("log store", self.path, self.close),
                name=f"rocks-log-closer:{self.path}", daemon=True,
            )
            closer.start()
            return
        close_collected("log store", self.path, self.close)

    def __repr__(self) -> str:
        return f"RocksLogStore({self.path!r}, purged={self._purged!r}, last={self._last!r}, closed={self._closed})"


def log_store_use(path: str | os.PathLike[str]) -> list[str]:
    """What the log store at ``path`` holds beyond what its creation and a node's first start
    write there (the format marker of this ``LOG_FORMAT``, the acknowledged-mark flag, the
    owner record): each named in a few words ("a vote", "log entries", "a committed log id",
    "a purged log id", "the meta key 'x'", ...). ``[]``: nothing else, or a creation killed
    part way (a database that does not open read-only and holds no table file nor any written
    WAL: ``holds_writes``), or no ``path``. A database that does not open read-only but holds
    writes, or is not a log store's, is named so.

    Read in a read-only open (``db.read_only``: nothing is written, RocksDB's lock is not
    taken), for a start that clears what a first start killed part way left
    (``openraft_py.kv.node.check_first_start_leftover``): no first start ever saved a vote, an
    entry, a committed or purged log id (its node never reached a peer). Blocking."""
    where = store_path(path, "log store")
    if not os.path.isdir(where):
        return [] if not os.path.lexists(where) else ["not a directory"]
    allowed = {"default", ENTRIES_CF, META_CF}
    known_meta = {K_FORMAT, K_ACKMARK, K_OWNER}

    def look(db: Rdict, present: set[str]) -> list[str]:
        found: list[str] = [f"the column family {cf!r}" for cf in sorted(present - allowed)]
        found += ["log entries" if cf == ENTRIES_CF else f"data in the column family {cf!r}"
                  for cf in sorted(present - {META_CF}) if column_family_holds_data(db, cf)]
        meta = db.get_column_family(META_CF)
        try:
            raw = meta.get(K_FORMAT)
            if raw is not None and _dec_any.decode(raw) != LOG_FORMAT:
                found.append(f"another format ({_dec_any.decode(raw)!r})")
            for key, what, dec in ((K_VOTE, "a vote", _dec_vote), (K_COMMITTED, "a committed log id", _dec_logid),
                                   (K_PURGED, "a purged log id", _dec_logid)):
                raw = meta.get(key)
                if raw is not None and (key == K_VOTE or dec.decode(raw) is not None):
                    found.append(what)
            for key in cast(Iterator[bytes], meta.keys()):  # (raw mode)
                if key not in known_meta and key not in (K_VOTE, K_COMMITTED, K_PURGED):
                    found.append(f"the meta key {key!r}")
        finally:
            meta.close()
        return found

    return database_use(where, "log store", {ENTRIES_CF, META_CF}, look)
