"""Durable storage on RocksDB (via ``rocksdict``): ``RocksLogStore`` and ``RocksStateMachine``.

Both stores own a directory; open one path with one store object at a time (RocksDB holds a
lock on it until ``close()``)::

    log = RocksLogStore("/var/lib/app/n1/log")
    sm = RocksStateMachine("/var/lib/app/n1/sm")
    raft = await Raft.new(1, config, network, log, sm)
    ...
    await raft.shutdown()
    await log.aclose(); await sm.aclose()

On-disk layout of the log store (one RocksDB, raw bytes keys and values):

- column family ``entries``: key ``encode_index_key(index)`` (8 bytes, big-endian, so keys sort
  like indexes), value the ``_core`` codec record ``(term, index, kind, payload)``: Blank is
  kind 0 with an empty payload, Normal kind 1 with the data, Membership kind 2 with the
  msgspec-msgpack encoding of the ``Membership`` struct.
- column family ``meta`` (msgspec-msgpack values): ``format`` (the marker
  ``{"format": "openraft-py-log", "version": 1}``, written when the store is created and
  checked on every open), ``ackmark`` (present: the store has an ``OPENRAFT-ACKED`` file),
  ``vote``, ``committed``, ``purged`` (the last purged log id).
- the file ``OPENRAFT-ACKED`` (outside RocksDB, in the same directory): the acknowledged mark,
  see "Corruption" below.

Durability design of ``RocksLogStore`` (``sync=True``):

- Every mutation (append, vote, committed, truncate, purge) is queued, in call order, to ONE
  writer thread: vote / committed / truncate / purge as a ``WriteBatch`` built on the loop, an
  append as its entries (the writer thread encodes them and builds the ``WriteBatch``, so the
  loop's cost of a large append is a few dictionary updates).
- The writer takes everything queued (a *group*), writes every batch with ``sync=False`` and
  then makes the whole group durable with ONE durability step; appends that arrive meanwhile
  wait in the queue and share the next one (group commit). Only then are the group's
  ``IOFlushed`` callbacks called (from the writer thread; ``IOFlushed`` hops to the loop) and
  the awaiting coroutines woken. Between two writes of a large group the writer briefly releases
  the GIL (``_GIL_SLICE``), so the loop never waits for a whole group.
- The durability step (``fsync_mode``):

  ``"wal"`` (the default; Linux only): ``os.fsync`` of the WAL file(s) ``<path>/<n>.log``,
  outside rocksdict. The reason: rocksdict keeps the GIL during ``write(sync=True)`` including
  its fsync, which stalls the event loop for the whole fsync. ``os.fsync`` releases the GIL.
  Why it is equivalent to RocksDB's own sync: with ``manual_wal_flush=false`` (RocksDB's
  default, which rocksdict cannot change; checked in the ``OPTIONS`` file at open) RocksDB
  hands every WAL record to the OS with ``write()`` before ``DB::Write`` returns, so after the
  ``sync=False`` writes the group's records are in the page cache of the WAL file(s) and an
  fsync of those files makes them durable. The step fsyncs every WAL numbered at least the
  newest one fsynced before (a memtable switch during the group may have started a new WAL;
  RocksDB never writes to an older WAL again, so those are complete and already synced), and
  fsyncs the directory whenever a WAL newer than any seen before appeared (its directory
  entry). A WAL deleted in between is skipped: RocksDB deletes a WAL only once all the data it
  holds is in SST files that are synced and recorded in the synced MANIFEST (RocksDB wiki,
  "Write Ahead Log": a WAL is deleted/archived once all its data is persisted to SST files;
  and with several column families, as here, its flush syncs the closed WALs first:
  ``needs_to_sync_closed_wals`` in ``DBImpl::FlushMemTableToOutputFile``).
  Assumptions checked at open, else the store uses ``"rocksdb"`` (``store.fsync_mode`` says
  which is in effect): Linux, ``manual_wal_flush=false``, ``recycle_log_file_num=0`` (fresh
  WAL files, numbered in order), a WAL file present. If a group finds no WAL file it syncs
  through RocksDB (``flush_wal(True)``) instead.

  ``"rocksdb"``: the group's last batch is written with ``sync=True`` (RocksDB's WAL is
  sequential and a sync write fsyncs every WAL byte written before it). Portable, but holds the
  GIL for the fsync (the loop stalls for it).

- ``append`` returns as soon as its entries are queued. Until the writer has written them, the
  entries stay in an in-memory map ``_pending`` (index -> Entry) that readers consult first, so
  they are readable at once. Invariant: ``_pending`` holds exactly the not-yet-written entries
  of the current log; they are a contiguous suffix of it, and every entry below the smallest
  pending index is in RocksDB (it is removed from ``_pending`` only after its write returned).
- ``truncate_after`` / ``purge`` update the in-memory view (``_last``, ``_purged``,
  ``_pending``) at once and return when their batch is durable. A purge's batch deletes the
  entries with a range delete and records the last purged id atomically.
- What a crash leaves: the WAL is replayed up to a record a crash cut off at its very end (a
  write that was in progress; never acknowledged, since it was not yet durable), and each
  batch is atomic, so the reopened store holds the effect of a prefix of the calls, in order,
  and at least every call that was acknowledged (callback called / coroutine returned). An
  append whose callback was not called may or may not survive; it is never half present.
  *Process crash* (SIGKILL, an exception): every write that returned is in the OS page cache
  and survives, whatever the mode (``tests/process/test_rocks_crash.py`` checks this with
  seeded SIGKILLs). *Power loss / kernel crash*: what was acknowledged survives because it was
  fsynced first (plus the directory entry of a new WAL); this depends on the disk honouring
  fsync and is not exercised by the test suite (it would need a fault-injecting block device).

With ``sync=False`` nothing is fsynced: writes survive a process crash (they are in the OS page
cache) but not a machine crash. For tests and benchmarks. (After a machine crash such a store
may refuse to open: its acknowledged mark then reports the lost writes, see below.)

Corruption: "either every acknowledged write is there, or ``StorageError``" (both stores):

- WAL recovery mode ``TolerateCorruptedTailRecords`` with paranoid checks (``_db_options``):
  the open fails on a checksum mismatch, a bad record length or an unknown record type
  anywhere in a WAL, and drops only a record cut off at the end of a WAL file. RocksDB's
  default (point-in-time recovery) stopped the replay at the first bad record without an error,
  which is how one flipped bit in the middle of the WAL silently took hundreds of acknowledged
  entries; ``SkipAnyCorruptedRecords`` would leave holes; ``AbsoluteConsistency`` refuses the
  cut-off tail any crash during a write may leave (a node could then not restart after a power
  loss).
- RocksDB cannot tell a tail cut off by a crash from a damaged record that merely looks cut off
  (e.g. a flipped length field in the last 32 KiB block of a WAL: everything after it is
  dropped as "torn"). The acknowledged mark closes that gap end to end: after each group is
  durable, and before it is acknowledged, the writer records RocksDB's sequence number of the
  group's last write in ``OPENRAFT-ACKED`` (one 28-byte ``pwrite`` per group, no fsync; two
  checksummed slots written alternately, so a torn write of the file leaves the previous mark).
  The open checks ``latest_sequence_number() >= mark``: if RocksDB recovered fewer writes than
  were acknowledged, for whatever reason (a damaged WAL, a lost or truncated WAL file), it
  raises ``StorageError`` ("acknowledged writes are missing"). The mark never runs ahead of the
  durable data (it is written after the fsync), so it cannot refuse a store that lost only
  unacknowledged writes; a mark not yet written back when the power failed is older, which only
  weakens the check for the last moments before the failure (``close()`` fsyncs it).
  The state machine records its mark at its durable points (snapshot build, snapshot install,
  close): its ``apply`` writes are not fsynced by design (Raft re-applies them from the log).
- ``atomic_flush`` (log store): column families are flushed together, so an older WAL is live
  only while its flush runs; otherwise an old WAL holding a few ``meta`` records could stay live
  for long, and a damaged tail there would not show in the newest sequence number.
- A damaged SST file or MANIFEST fails the open (paranoid checks) or the read (block
  checksums); every such failure surfaces as ``StorageError`` naming the path.

Foreign databases: a directory is used only if it is empty (then created) or holds our
database. Unless it holds our ``OPENRAFT-ACKED`` file, the database is first opened read-only
(a read-write open writes: a new WAL, MANIFEST, OPTIONS file) and refused unless it has our
column families and format marker; rocksdict's ``rocksdict-config.json``, which even a
read-only open rewrites, is put back as it was. A store created before the mark existed is
upgraded at its first open (file, then ``ackmark``). A creation that crashed before its marker
was written is recognised by the mark file of generation 0 and an empty database.

Closing: ``close()`` always releases the RocksDB lock (the same path can be opened again at
once, also in the same process): it closes every handle even when RocksDB's flush or close
fails (e.g. after a failed write), drops the writer's references, and clears the frames of a
failed write's traceback (a frame holding a column family handle keeps RocksDB open for as
long as someone keeps the error); it then raises ``StorageError`` naming the path, never a raw
rocksdict exception.

Event-loop latency (application-level knobs, process-wide, so the library never sets them):
the store's own loop work per append is small, but any thread holding the GIL delays the
loop by up to ``sys.getswitchinterval()`` (5 ms; lowering it, e.g. to 1 ms, bounds that),
and at hundreds of thousands of appended entries per second CPython's cyclic garbage
collector runs full collections over the whole heap every few hundred milliseconds (each
``Entry`` is a GC-tracked object); ``gc.freeze()`` after start-up (and larger
``gc.set_threshold`` values) shortens or spaces those pauses. ``bench/storage.py --app-tuning``
shows the effect.

``RocksStateMachine`` keeps the key-value model of ``MemStateMachine`` (same commands and
responses) in one column family ``sm``: data keys are ``b"d" + key`` and the applied log id,
the stored membership and the format marker are ``b"m..."`` keys, so one RocksDB snapshot is a
consistent image of data and meta together. Each ``apply`` batch is one ``WriteBatch``
(``sync=False``: the log is the durable record, a restarted node re-applies from it; the state
is always a prefix of the applied batches). Snapshots are files under ``<path>/snapshots``,
made durable (and preceded by a WAL sync of the state they cover) before they become current.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec
from rocksdict import AccessType, DBRecoveryMode, Options, Rdict, WriteBatch, WriteOptions

from .._core import (
    KIND_BLANK,
    KIND_MEMBERSHIP,
    KIND_NORMAL,
    FrameReader,
    decode_entries,
    encode_entries,
    encode_frame,
    encode_index_key,
)
from ..errors import LogCompacted, StorageError
from ..types import (
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
from . import IOFlushed
from .memory import KV_PREFIX, KvCas, KvDelete, KvGet, KvSet, decode_kv

__all__ = ["RocksLogStore", "RocksLogReader", "RocksStateMachine", "LOG_FORMAT", "SM_FORMAT"]

LOG_FORMAT = {"format": "openraft-py-log", "version": 1}
"""The marker a ``RocksLogStore`` writes in its ``meta`` column family on creation."""

SM_FORMAT = {"format": "openraft-py-kv-sm", "version": 1}
"""The marker a ``RocksStateMachine`` writes on creation."""

INLINE_READ_MAX = 64
"""Reads of at most this many entries from RocksDB run on the event-loop thread (a short
range read, mostly from the memtable / block cache); larger ones run in a worker thread over a
RocksDB snapshot."""

_END_KEY = b"\xff" * 9  # sorts after every 8-byte index key
_ENTRIES_CF = "entries"
_META_CF = "meta"
_K_FORMAT = b"format"
_K_VOTE = b"vote"
_K_COMMITTED = b"committed"
_K_PURGED = b"purged"
_K_ACKMARK = b"ackmark"  # present: the store has an OPENRAFT-ACKED file (see _AckMark)

_enc = msgspec.msgpack.Encoder()
_dec_vote = msgspec.msgpack.Decoder(Vote)
_dec_logid = msgspec.msgpack.Decoder(LogId | None)
_dec_membership = msgspec.msgpack.Decoder(Membership)
_dec_stored = msgspec.msgpack.Decoder(StoredMembership)
_dec_any = msgspec.msgpack.Decoder()


# -- helpers ------------------------------------------------------------------------------------


def _db_options(create: bool, *, atomic_flush: bool = False) -> Options:
    """Options of every database of this module. The WAL recovery mode is
    ``TolerateCorruptedTailRecords`` with paranoid checks: at open RocksDB replays the WAL and
    fails (``Corruption: ...``) on a checksum mismatch, a bad record length or an unknown record
    anywhere, dropping only a record that is cut off at the very end of a WAL file (a write a
    crash interrupted). RocksDB's default, point-in-time recovery, silently stops the replay at
    the first bad record instead (everything after it is gone, without an error), and
    ``SkipAnyCorruptedRecords`` silently leaves holes; ``AbsoluteConsistency`` refuses even the
    cut-off tail every crash during a write may leave, so a node could not restart after a
    power loss. A tail cut off by corruption rather than by a crash looks the same to RocksDB;
    the store's acknowledged mark (``_AckMark``) tells the two apart."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    opts.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    opts.set_paranoid_checks(True)
    if atomic_flush:
        # Flush every column family together: a WAL then stays live only while its flush
        # runs (otherwise an old WAL holding a few meta records could live for a long time,
        # and a tail cut off there would not show in the newest sequence number).
        opts.set_atomic_flush(True)
    return opts


def _write_options(sync: bool) -> WriteOptions:
    wo = WriteOptions()
    wo.sync = sync
    return wo


_ROCKSDICT_CONFIG = "rocksdict-config.json"

ACK_FILE = "OPENRAFT-ACKED"
"""The file (in the RocksDB directory) holding the acknowledged mark; see ``_AckMark``."""

_ACK_MAGIC = b"ORPYACK1"
_ACK_SLOT = struct.Struct("<8sQQ")  # magic, generation, acknowledged sequence number; + crc32
_ACK_SLOT_SIZE = _ACK_SLOT.size + 4
_ACK_OFFSETS = (0, 512)  # two slots in different disk sectors: a torn write spoils one at most


def _ack_slot(generation: int, seqno: int) -> bytes:
    body = _ACK_SLOT.pack(_ACK_MAGIC, generation, seqno)
    return body + zlib.crc32(body).to_bytes(4, "little")


class _AckMark:
    """The end-to-end check that no acknowledged write was lost: the RocksDB sequence number
    of the last write acknowledged to a caller, kept in ``<db>/OPENRAFT-ACKED``.

    Every RocksDB write gets the next sequence number, and after a reopen
    ``latest_sequence_number()`` is the number of the last write recovered. The writer records
    the number of its group's last write after the group is durable and before it acknowledges
    it (one ``pwrite`` of 28 bytes per group, no fsync); the open checks that the database
    recovered at least that far. Whatever made RocksDB drop acknowledged writes (a corrupted
    record that looked like a cut-off tail, a lost WAL file), the recovered number is then
    smaller and the open raises ``StorageError`` instead of serving a shortened log.

    The file has two slots (offsets 0 and 512: different disk sectors), each ``magic,
    generation, seqno, crc32``, written alternately; the valid slot with the higher generation
    counts, so a write torn by a power loss leaves the previous mark. The mark is recorded only
    after the writes it covers are durable, so even a stale mark (not yet written back after a
    power loss) never claims more than the disk holds: it can only make the check weaker (down
    to the mark last written back; ``close()`` fsyncs it), never raise for writes that were not
    acknowledged. A file whose slots are both invalid is corruption (``StorageError``).
    """

    __slots__ = ("path", "_fd", "generation", "seqno", "_lock")

    def __init__(self, path: str, fd: int, generation: int, seqno: int) -> None:
        self.path = path
        self._fd = fd
        self.generation = generation
        self.seqno = seqno
        self._lock = threading.Lock()  # the state machine records from several threads

    @staticmethod
    def read(db_path: str, what: str) -> tuple[int, int] | None:
        """``(generation, seqno)`` of the mark in ``db_path``, ``None`` when there is no
        file; ``StorageError`` when it is present but unreadable or has no valid slot."""
        path = os.path.join(db_path, ACK_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read(_ACK_OFFSETS[-1] + _ACK_SLOT_SIZE)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"opening {what} at {db_path!r}: reading {ACK_FILE}", e) from e
        best: tuple[int, int] | None = None
        for off in _ACK_OFFSETS:
            slot = raw[off:off + _ACK_SLOT_SIZE]
            if len(slot) != _ACK_SLOT_SIZE or zlib.crc32(slot[:-4]).to_bytes(4, "little") != slot[-4:]:
                continue
            magic, generation, seqno = _ACK_SLOT.unpack(slot[:-4])
            if magic == _ACK_MAGIC and (best is None or generation > best[0]):
                best = (generation, seqno)
        if best is None:
            raise StorageError(
                f"opening {what} at {db_path!r}",
                ValueError(f"{ACK_FILE} is corrupted (no valid slot): the acknowledged writes cannot be checked"),
            )
        return best

    @classmethod
    def open(cls, db_path: str, generation: int, seqno: int) -> _AckMark:
        """Open the existing file for recording (the mark read is ``generation, seqno``)."""
        path = os.path.join(db_path, ACK_FILE)
        return cls(path, os.open(path, os.O_RDWR), generation, seqno)

    @classmethod
    def create(cls, db_path: str, seqno: int) -> _AckMark:
        """Write a new file holding ``seqno`` in both slots, durably (file and directory)."""
        path = os.path.join(db_path, ACK_FILE)
        tmp = path + ".tmp"
        data = bytearray(_ACK_OFFSETS[-1] + _ACK_SLOT_SIZE)
        for off in _ACK_OFFSETS:
            data[off:off + _ACK_SLOT_SIZE] = _ack_slot(0, seqno)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        _fsync_dir(db_path)
        return cls(path, fd, 0, seqno)

    def record(self, seqno: int) -> None:
        """Every write up to ``seqno`` is durable (for the log store with ``sync=False``:
        written to the OS); record it, in the slot not holding the current mark. A ``seqno``
        not beyond the mark is a no-op (no system call)."""
        if seqno <= self.seqno:
            return
        with self._lock:
            if seqno <= self.seqno:
                return
            generation = self.generation + 1
            os.pwrite(self._fd, _ack_slot(generation, seqno), _ACK_OFFSETS[generation & 1])
            self.generation = generation
            self.seqno = seqno

    def sync(self) -> None:
        """fsync the file (at a clean close, so the mark survives a power loss)."""
        with self._lock:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file descriptor; idempotent."""
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _check_recovered(db: Rdict, mark: tuple[int, int], path: str, what: str) -> None:
    """``StorageError`` when the database recovered fewer writes than were acknowledged."""
    recovered = db.latest_sequence_number()
    if recovered < mark[1]:
        raise StorageError(
            f"opening {what} at {path!r}",
            RuntimeError(
                f"acknowledged writes are missing: writes up to sequence number {mark[1]} were "
                f"acknowledged ({ACK_FILE}) but the database recovered only up to {recovered} "
                f"(a corrupted or lost write-ahead log; RocksDB dropped what it took for a torn tail)"
            ),
        )


def _open_error(path: str, what: str, e: BaseException) -> StorageError:
    """A ``StorageError`` for a RocksDB open that failed with ``e``, saying what is wrong."""
    msg = str(e)
    if msg.startswith("Corruption"):
        try:
            wals = ", ".join(f"{n:06d}.log" for n in _wal_numbers(path)) or "none"
        except OSError:
            wals = "unknown"
        return StorageError(
            f"opening {what} at {path!r}: the database is corrupted (RocksDB refused to recover "
            f"it: a damaged write-ahead log record or file; write-ahead logs: {wals})",
            e,
        )
    if "lock" in msg.lower():
        return StorageError(f"opening {what} at {path!r}: the database is in use (its LOCK is held)", e)
    return StorageError(f"opening {what} at {path!r}", e)


def _is_empty(cf: Rdict) -> bool:
    return next(iter(cf.keys()), None) is None


def _open_db(
    path: str,
    cfs: tuple[str, ...],
    marker_cf: str,
    marker_key: bytes,
    flag_key: bytes,
    marker: dict[str, Any],
    what: str,
    *,
    atomic_flush: bool = False,
) -> tuple[Rdict, _AckMark]:
    """Open (or create) our RocksDB at ``path`` with the column families ``cfs``; return it
    with its acknowledged mark (``_AckMark``), checked.

    Ours means: the format ``marker`` at ``marker_key`` in ``marker_cf``. ``flag_key`` (in the
    same column family, written in the same batch as the marker) says the database has an
    ``OPENRAFT-ACKED`` file that must be there. Raises ``StorageError`` naming ``path`` and what
    is wrong when ``path`` is a plain file, not a RocksDB, corrupted (RocksDB refuses to
    recover it, or it recovered fewer writes than were acknowledged), in use, or not ours.

    A database that is not ours is never written to: unless the directory holds our
    ``OPENRAFT-ACKED`` file, the database is first opened read-only and its marker checked
    (a read-write open alone writes: a new WAL, MANIFEST and OPTIONS file, flushed memtables).
    A store created by an earlier version (marker, no flag) gets its file now. A creation
    that crashed before the marker was written is recognised by the file with generation 0
    and an empty database; without the file, a database without a marker is foreign.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise StorageError(f"opening {what} at {path!r}", NotADirectoryError(f"{path} is not a directory"))
    # Empty, or holding only our mark file (a creation that stopped before RocksDB's files).
    fresh = not os.path.exists(path) or not set(os.listdir(path)) - {ACK_FILE, ACK_FILE + ".tmp"}
    mark: _AckMark | None = None
    cf_opts = {cf: Options(raw_mode=True) for cf in cfs}
    if fresh:
        try:
            os.makedirs(path, exist_ok=True)
            mark = _AckMark.create(path, 0)  # first: it identifies the database as ours
        except OSError as e:
            raise StorageError(f"creating {what} at {path!r}", e) from e
        found: tuple[int, int] | None = (0, 0)
    else:
        found = _AckMark.read(path, what)
        try:
            present = set(Rdict.list_cf(path))
        except Exception as e:
            raise StorageError(f"opening {what} at {path!r}: not a readable RocksDB database", e) from e
        missing = [cf for cf in cfs if cf not in present]
        if missing:
            raise StorageError(
                f"opening {what} at {path!r}",
                ValueError(f"foreign database: column families {missing} missing (found {sorted(present)})"),
            )
        if found is None:
            _check_foreign_read_only(path, cfs, marker_cf, marker_key, flag_key, marker, what)
    try:
        db = Rdict(path, _db_options(fresh, atomic_flush=atomic_flush), column_families=cf_opts)
    except Exception as e:
        if mark is not None:
            mark.close()
        raise _open_error(path, what, e) from e

    def setup() -> _AckMark:
        # A function of its own: on an error, its frame (holding column family handles, which
        # keep RocksDB open) is cleared with the traceback's.
        if found is not None:
            _check_recovered(db, found, path, what)
        new_mark = mark
        mcf = db.get_column_family(marker_cf)
        try:
            raw = mcf.get(marker_key)
            if raw is None:
                if found is None or found[0] != 0 or not all(_is_empty(db.get_column_family(cf)) for cf in cfs):
                    raise StorageError(
                        f"opening {what} at {path!r}",
                        ValueError("foreign or damaged database: format marker missing"),
                    )
                # Our creation (fresh now, or one that crashed before this write).
                wb = WriteBatch(raw_mode=True)
                h = db.get_column_family_handle(marker_cf)
                wb.put(marker_key, _enc.encode(marker), h)
                wb.put(flag_key, b"\x01", h)
                db.write(wb, _write_options(True))
            else:
                _check_marker(raw, marker, path, what)
                if found is None:
                    if mcf.get(flag_key) is not None:
                        raise StorageError(
                            f"opening {what} at {path!r}",
                            FileNotFoundError(f"{ACK_FILE} is missing: the acknowledged writes cannot be checked"),
                        )
                    # A store of an earlier version: from now on it has the file.
                    new_mark = _AckMark.create(path, db.latest_sequence_number())
                    mcf.put(flag_key, b"\x01", _write_options(True))
                elif mcf.get(flag_key) is None:
                    # The file was written but not yet the flag when an upgrade crashed.
                    mcf.put(flag_key, b"\x01", _write_options(True))
        finally:
            mcf.close()
        if new_mark is None:
            assert found is not None
            new_mark = _AckMark.open(path, *found)
        new_mark.record(db.latest_sequence_number())  # the writes above were synced
        return new_mark

    try:
        mark = setup()
    except BaseException as e:
        _clear_frames(e)
        _release_db(db)
        del db
        if mark is not None:
            mark.close()
        if isinstance(e, StorageError):
            raise
        raise StorageError(f"opening {what} at {path!r}", e) from e
    return db, mark


def _check_foreign_read_only(
    path: str, cfs: tuple[str, ...], marker_cf: str, marker_key: bytes, flag_key: bytes, marker: dict[str, Any], what: str
) -> None:
    """Open ``path`` read-only and raise ``StorageError`` unless it holds our format
    ``marker``. Nothing is written: RocksDB writes nothing in read-only mode, and rocksdict's
    own ``rocksdict-config.json`` (which every rocksdict open writes) is put back as it was."""
    config = os.path.join(path, _ROCKSDICT_CONFIG)
    try:
        st = os.stat(config)
        with open(config, "rb") as f:
            saved: tuple[bytes, int, int] | None = (f.read(), st.st_atime_ns, st.st_mtime_ns)
    except FileNotFoundError:
        saved = None
    except OSError as e:
        raise StorageError(f"opening {what} at {path!r}", e) from e
    try:
        try:
            ro = Rdict(path, _db_options(False), column_families={cf: Options(raw_mode=True) for cf in cfs},
                       access_type=AccessType.read_only())
        except Exception as e:
            raise _open_error(path, what, e) from e
        try:
            mcf = ro.get_column_family(marker_cf)
            raw = mcf.get(marker_key)
            mcf.close()
            del mcf
        except Exception as e:
            _release_db(ro)
            raise StorageError(f"opening {what} at {path!r}", e) from e
        _release_db(ro)
        del ro
    finally:
        _restore_config(config, saved)
    if raw is None:
        raise StorageError(f"opening {what} at {path!r}", ValueError("foreign database: no format marker"))
    _check_marker(raw, marker, path, what)


def _restore_config(config: str, saved: tuple[bytes, int, int] | None) -> None:
    """Put rocksdict's config file back as ``saved`` (``None``: there was none)."""
    try:
        if saved is None:
            os.unlink(config)
            return
        with open(config, "rb") as f:
            same = f.read() == saved[0]
        if not same:
            with open(config, "wb") as f:
                f.write(saved[0])
        os.utime(config, ns=(saved[1], saved[2]))
    except FileNotFoundError:
        pass


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def _clear_frames(e: BaseException) -> None:
    """Clear the locals of the finished frames of ``e``'s traceback (and of its causes): a
    frame holding a column family handle keeps RocksDB open, and its LOCK taken, for as long
    as the exception lives (e.g. kept as a node's fatal error)."""
    exc: BaseException | None = e
    seen = 0
    while exc is not None and seen < 8:
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            # Never a generator's or coroutine's frame: clearing a suspended one finalizes it
            # (an exception raised in a caller's coroutine carries that coroutine's frames).
            if not frame.f_code.co_flags & _GENERATOR_FLAGS:
                try:
                    frame.clear()
                except RuntimeError:
                    pass  # still executing
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
        seen += 1


def _release_db(db: Rdict) -> None:
    """Close ``db`` ignoring errors (the caller reports its own)."""
    try:
        db.close()
    except Exception:  # noqa: BLE001
        pass


def _check_marker(found: bytes | None, marker: dict[str, Any], path: str, what: str) -> None:
    try:
        value = None if found is None else _dec_any.decode(found)
    except msgspec.DecodeError as e:
        raise StorageError(f"opening {what} at {path!r}", ValueError(f"corrupted format marker {found!r}")) from e
    if value != marker:
        raise StorageError(
            f"opening {what} at {path!r}",
            ValueError(f"foreign database: format marker {value!r}, expected {marker!r}"),
        )


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``asyncio.to_thread(fn, *args)``, but an exception leaves with the locals of its
    traceback's frames cleared: a frame holding a column family handle would otherwise keep
    RocksDB open (and its LOCK taken) after ``close()``, since the exception outlives the call
    in the executor's futures."""

    def run() -> Any:
        try:
            return fn(*args)
        except BaseException as e:
            _clear_frames(e)
            raise

    return await asyncio.to_thread(run)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_entry_records(entries: list[Entry]) -> list[bytes]:
    records = []
    add = records.append
    for e in entries:
        p = e.payload
        lid = e.log_id
        t = type(p)
        if t is Normal:
            add((lid.term, lid.index, KIND_NORMAL, p.data))  # type: ignore[union-attr]
        elif t is Membership:
            add((lid.term, lid.index, KIND_MEMBERSHIP, _enc.encode(p)))
        else:
            add((lid.term, lid.index, KIND_BLANK, b""))
    return encode_entries(records)


def _decode_entry_records(blobs: list[bytes]) -> list[Entry]:
    out = []
    add = out.append
    for term, index, kind, payload in decode_entries(blobs):
        if kind == KIND_NORMAL:
            add(Entry(LogId(term, index), Normal(payload)))
        elif kind == KIND_BLANK:
            add(Entry(LogId(term, index), BLANK))
        else:
            add(Entry(LogId(term, index), _dec_membership.decode(payload)))
    return out


# -- the group-commit writer --------------------------------------------------------------------

FSYNC_MODES = ("wal", "rocksdb")
"""``fsync_mode`` values of ``RocksLogStore``; see the module docstring."""


def _read_db_options(path: str) -> dict[str, str]:
    """``key=value`` lines of the newest ``OPTIONS-<n>`` file RocksDB wrote in ``path`` (the
    options in effect), or ``{}`` when there is none."""
    best = -1
    name = None
    for n in os.listdir(path):
        if n.startswith("OPTIONS-") and n[8:].isdigit() and int(n[8:]) > best:
            best, name = int(n[8:]), n
    if name is None:
        return {}
    out: dict[str, str] = {}
    with open(os.path.join(path, name), encoding="utf-8", errors="replace") as f:
        for line in f:
            k, sep, v = line.strip().partition("=")
            if sep and k not in out:  # the DBOptions section comes first
                out[k] = v
    return out


def _wal_numbers(wal_dir: str) -> list[int]:
    """The numbers of the WAL files ``<n>.log`` in ``wal_dir``, ascending."""
    return sorted(int(n[:-4]) for n in os.listdir(wal_dir) if n.endswith(".log") and n[:-4].isdigit())


class _WalSyncer:
    """Makes the WAL writes of a RocksDB durable with ``os.fsync`` (which releases the GIL;
    rocksdict's ``sync=True`` write does not). See "fsync_mode" in the module docstring.

    ``sync()`` must be called by the (one) writing thread after its writes returned. It fsyncs
    every WAL file numbered at least the newest one the previous call fsynced (RocksDB never
    writes to a WAL again once a newer one exists, so older ones are complete and synced), skips
    those deleted meanwhile, and fsyncs the directory when a WAL newer than any seen before
    appeared (its directory entry). Returns ``False`` when no WAL file is found (the caller
    then syncs through RocksDB)."""

    __slots__ = ("wal_dir", "_from", "_dir_synced", "fsyncs")

    def __init__(self, wal_dir: str) -> None:
        self.wal_dir = wal_dir
        self._from = -1  # the newest WAL number fsynced by the last sync()
        self._dir_synced = -1  # the newest WAL number whose directory entry is known durable
        self.fsyncs = 0

    def sync(self) -> bool:
        nums = [n for n in _wal_numbers(self.wal_dir) if n >= self._from]
        if not nums:
            return False
        for n in nums:
            try:
                fd = os.open(os.path.join(self.wal_dir, f"{n:06d}.log"), os.O_RDONLY)
            except FileNotFoundError:
                # RocksDB deletes a WAL only once every memtable it holds was flushed to SST
                # files that are synced and recorded in the synced MANIFEST: nothing to do.
                continue
            try:
                os.fsync(fd)
                self.fsyncs += 1
            finally:
                os.close(fd)
        newest = nums[-1]
        if newest > self._dir_synced:
            _fsync_dir(self.wal_dir)
            self._dir_synced = newest
        self._from = newest
        return True


_GIL_SLICE = 0.0005
"""The writer thread holds the GIL (rocksdict keeps it during ``write``, encoding needs it) for
at most about this long between two writes of a group before pausing ..."""
_GIL_PAUSE = 0.0001
"""... for this long, GIL released, so the event loop gets it without waiting for the
interpreter's switch interval (5 ms by default)."""


class _GroupWriter:
    """ONE thread writing queued work in order, one durability step per group.

    ``submit(item, done)`` queues ``item``: a ``WriteBatch``, or a zero-argument callable that
    builds one in the writer thread (so the caller's loop does not pay for building it).
    ``done(error_or_None)`` is called from the writer thread once the batch (and every batch
    queued before it) is durable, or with the error. After a failed write every later batch
    fails too (the log's order could not be kept otherwise).

    Durability step (``sync=True``): with ``wal`` (a ``_WalSyncer``) every batch of the group
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

    def __init__(self, db: Rdict, sync: bool, wal: _WalSyncer | None, name: str, mark: _AckMark) -> None:
        self._db = db
        self._sync = sync
        self._wal = wal
        self._mark = mark
        self._sync_opts = _write_options(sync)
        self._nosync_opts = _write_options(False)
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
                            _clear_frames(e)
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
                    _clear_frames(e)
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
        self._db = None
        if self._failed is not None:
            _clear_frames(self._failed)  # now also the writer loop's frame (it has returned)


def _ignore_done(err: BaseException | None) -> None:
    """The ``done`` of a write nobody waits for (a failure also fails every later write, so
    it is reported there)."""


def _resolver(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], subject: str
) -> Callable[[BaseException | None], None]:
    """A writer ``done`` callback that completes ``fut`` on ``loop``'s thread; an error as a
    new ``StorageError(subject, err)`` (each waiter gets its own: the writer's error object is
    shared, and raising it would add the waiter's frames to its traceback)."""

    def settle(err: BaseException | None) -> None:
        if fut.done():
            return
        if err is None:
            fut.set_result(None)
        else:
            fut.set_exception(StorageError(subject, err))

    def done(err: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle, err)

    return done


# -- the log store ------------------------------------------------------------------------------


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
        ``INLINE_READ_MAX`` entries is read from RocksDB on the loop thread, a larger one in a
        worker thread over a RocksDB snapshot taken now (so a later truncate or purge cannot
        tear it)."""
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
        # _pending is a contiguous suffix of the log: find where it starts within the range.
        split = start
        while split < stop and split not in pending:
            split += 1
        tail = [pending[i] for i in range(split, stop)]
        if split == start:
            return tail
        n = split - start
        try:
            if n <= INLINE_READ_MAX:
                head = s._read_db(s._entries, start, split)
            else:
                view = s._entries.snapshot()
                head = await _in_thread(s._read_db, view, start, split)
        except Exception as e:  # e.g. an entry that does not decode
            raise StorageError(f"reading log [{start}, {split}) from {s.path!r}", e) from e
        if len(head) != n:
            # rocksdict's item iteration stops silently on an error: ask an iterator why.
            cause: BaseException = RuntimeError(f"got {len(head)} entries: a hole in the stored log")
            try:
                probe = s._entries.iter()
                probe.seek(encode_index_key(start + len(head)))
                probe.status()
            except Exception as e:  # noqa: BLE001 - the real cause (e.g. a corrupted SST block)
                cause = e
            raise StorageError(f"reading log [{start}, {split}) from {s.path!r}", cause) from cause
        head.extend(tail)
        return head

    async def read_vote(self) -> Vote | None:
        """The last vote saved (durably) with ``save_vote``, or ``None``."""
        return self._s._vote


class RocksLogStore(RocksLogReader):
    """A durable ``RaftLogStorage`` in the RocksDB at ``path`` (created when missing or empty).

    ``sync=True``: every acknowledged write survives a machine crash (see the module docstring
    for the group-commit design); ``sync=False``: only a process crash.

    Opening is synchronous (a few milliseconds; use ``await RocksLogStore.open(path)`` from a
    running loop to do it in a thread). Raises ``StorageError`` naming ``path`` and what is
    wrong when it is a plain file, a database that is not an openraft-py log (nothing is written
    to it then), in use, or damaged: RocksDB finds a corrupted WAL record or file, or it
    recovered fewer writes than were acknowledged (see "Corruption" in the module docstring).
    Use the store from one event loop; ``close()`` / ``aclose()`` / ``async with`` flush
    everything queued and always release the database lock (``StorageError`` if RocksDB could
    not close cleanly). Every failed write reaches its caller as ``StorageError``.
    """

    __slots__ = (
        "path", "sync", "fsync_mode", "_db", "_entries", "_entries_h", "_meta_h", "_writer", "_vote",
        "_committed", "_purged", "_last", "_pending", "_closed", "_mark",
    )

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, fsync_mode: str = "wal") -> None:
        super().__init__(self)
        if fsync_mode not in FSYNC_MODES:
            raise ValueError(f"fsync_mode must be one of {FSYNC_MODES}, not {fsync_mode!r}")
        self.path = os.fspath(path)
        self.sync = sync
        self._closed = True
        db, mark = _open_db(
            self.path, (_ENTRIES_CF, _META_CF), _META_CF, _K_FORMAT, _K_ACKMARK, LOG_FORMAT, "log store", atomic_flush=True
        )

        def load() -> tuple[Vote | None, LogId | None, LogId | None, LogId | None]:
            # Its own frame: cleared on an error (see _open_db).
            meta = db.get_column_family(_META_CF)
            try:
                vote = self._load(meta, _K_VOTE, _dec_vote)
                committed = self._load(meta, _K_COMMITTED, _dec_logid)
                purged = self._load(meta, _K_PURGED, _dec_logid)
            finally:
                meta.close()
            it = db.get_column_family(_ENTRIES_CF).iter()
            it.seek_to_last()
            last_stored = _decode_entry_records([it.value()])[0].log_id if it.valid() else None
            it.status()  # raises if the seek stopped on an error (a corrupted file), not at the end
            return vote, committed, purged, last_stored

        try:
            self._vote, self._committed, self._purged, last_stored = load()
            self._entries = db.get_column_family(_ENTRIES_CF)
            self._entries_h = db.get_column_family_handle(_ENTRIES_CF)
            self._meta_h = db.get_column_family_handle(_META_CF)
        except BaseException as e:
            _clear_frames(e)
            for name in ("_entries", "_entries_h", "_meta_h"):
                if hasattr(self, name):
                    delattr(self, name)
            _release_db(db)
            del db
            mark.close()
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"opening log store at {self.path!r}", e) from e
        self._db = db
        # The in-memory view: the log as submitted (what readers see).
        self._last: LogId | None = (
            last_stored if last_stored is not None and (self._purged is None or last_stored > self._purged)
            else self._purged
        )
        self._pending: dict[int, Entry] = {}
        wal = self._wal_syncer() if sync and fsync_mode == "wal" else None
        self.fsync_mode = "wal" if wal is not None else "rocksdb"
        self._mark = mark
        self._writer = _GroupWriter(db, sync, wal, f"rocks-log-writer:{self.path}", mark)
        self._closed = False

    def _wal_syncer(self) -> _WalSyncer | None:
        """A ``_WalSyncer`` for this database, or ``None`` when its assumptions do not hold
        (then the store syncs through RocksDB): Linux, the options RocksDB runs with (its
        newest ``OPTIONS`` file) say the WAL is written to the OS on every write
        (``manual_wal_flush=false``) into fresh files (``recycle_log_file_num=0``), and a WAL
        file is present."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            opts = _read_db_options(self.path)
            if opts.get("manual_wal_flush") != "false" or opts.get("recycle_log_file_num") != "0":
                return None
            wal_dir = opts.get("wal_dir", "").strip().strip('"') or os.path.abspath(self.path)
            if not os.path.isabs(wal_dir):
                return None
            if not _wal_numbers(wal_dir):
                return None
        except OSError:
            return None
        return _WalSyncer(wal_dir)

    @staticmethod
    def _load(meta: Rdict, key: bytes, dec: msgspec.msgpack.Decoder) -> Any:
        raw = meta.get(key)
        return None if raw is None else dec.decode(raw)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, sync: bool = True, fsync_mode: str = "wal") -> RocksLogStore:
        """Open the store in a worker thread (does not block the running loop)."""
        return await asyncio.to_thread(cls, path, sync=sync, fsync_mode=fsync_mode)

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"using log store at {self.path!r}", RuntimeError("the store is closed"))

    def _read_db(self, view: Any, start: int, stop: int) -> list[Entry]:
        """Entries ``[start, stop)`` from RocksDB (``view``: the CF or a snapshot of it)."""
        blobs = [v for _, v in itertools.islice(view.items(from_key=encode_index_key(start)), stop - start)]
        entries = _decode_entry_records(blobs)
        # Keep only a gap-free run starting at ``start`` (a hole shows up as a short result).
        for i, e in enumerate(entries):
            if e.log_id.index != start + i:
                return entries[:i]
        return entries

    async def _submit_and_wait(self, batch: WriteBatch, what: str) -> None:
        """Queue ``batch``; return once durable, or raise ``StorageError`` (``what`` says
        which call failed)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._writer.submit(batch, _resolver(loop, fut, f"{what} in log store {self.path!r}"))
        await fut

    def _release_written(self, entries: list[Entry]) -> None:
        """On the loop: ``entries`` are in RocksDB; drop those still pending (not replaced by a
        truncate and re-append meanwhile)."""
        pending = self._pending
        for e in entries:
            i = e.log_id.index
            if pending.get(i) is e:
                del pending[i]

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
        wb.put(_K_VOTE, _enc.encode(vote), self._meta_h)
        await self._submit_and_wait(wb, "saving the vote")
        self._vote = vote

    async def read_vote(self) -> Vote | None:
        """The last vote saved with ``save_vote`` (durable), or ``None``."""
        return self._vote

    async def save_committed(self, committed: LogId | None) -> None:
        """Queue the committed log id for the writer and return at once (the contract does
        not ask for durability: it becomes durable with the next group commit; a group holding
        only such writes is not fsynced).

        The write is queued behind every append submitted before it, so the saved id never
        becomes durable ahead of the entries it covers. A failure here fails the writer, so
        the next append or save reports it (as ``StorageError``).
        """
        self._check_open()
        wb = WriteBatch(raw_mode=True)
        wb.put(_K_COMMITTED, _enc.encode(committed), self._meta_h)
        self._writer.submit(wb, _ignore_done, durable=False)
        self._committed = committed

    async def read_committed(self) -> LogId | None:
        """The last saved committed log id, or ``None``."""
        return self._committed

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """Queue ``entries`` for the writer; returns once they are readable (at once).

        ``callback.io_completed`` is called from the writer thread when they are durable (with
        the error if the write failed). Raises ``ValueError`` (log and callback untouched) when
        the batch does not continue the log without a hole or its indexes are not consecutive.
        Cost on the loop: O(len(entries)) dictionary updates (the in-memory view); encoding
        the entries and building the ``WriteBatch`` happen in the writer thread.
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

        def build() -> WriteBatch:
            # Writer thread: encoding and batch building are off the loop.
            wb = WriteBatch(raw_mode=True)
            put = wb.put
            for e, blob in zip(owned, _encode_entry_records(owned)):
                put(encode_index_key(e.log_id.index), blob, h)
            return wb

        pending = self._pending
        for e in owned:
            pending[e.log_id.index] = e
        self._last = owned[-1].log_id
        loop = asyncio.get_running_loop()

        def done(err: BaseException | None) -> None:
            # Writer thread. Order: release the pending copies, then report durability.
            if err is None:
                loop.call_soon_threadsafe(self._release_written, owned)
            callback.io_completed(None if err is None else StorageError(f"appending to {self.path!r}", err))

        try:
            self._writer.submit(build, done)
        except RuntimeError:
            for e in owned:
                pending.pop(e.log_id.index, None)
            self._last = last
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
        wb.delete_range(encode_index_key(keep_to + 1), _END_KEY, self._entries_h)
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
        wb.put(_K_PURGED, _enc.encode(log_id), self._meta_h)
        await self._submit_and_wait(wb, "purging")

    def get_log_reader(self) -> RocksLogReader:
        """A new reader sharing this store's view; usable concurrently (same loop)."""
        return RocksLogReader(self)

    # -- lifecycle

    @property
    def groups_written(self) -> int:
        """How many write groups (fsyncs with ``sync=True``) the writer has done."""
        return self._writer.groups

    def close(self) -> None:
        """Write everything queued (durably), stop the writer thread and close the database,
        releasing its lock. Blocks until done (at most one group write); idempotent. Prefer
        ``await aclose()`` on a running loop.

        The lock is released whatever happens (also after a failed write: the same path can
        be opened again at once, in this process too). Raises ``StorageError`` (naming the
        path, the cause chained) when RocksDB could not flush or close cleanly, e.g. after a
        failed write; the store is closed then all the same, and what was acknowledged is on
        disk (the next open checks it)."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        try:
            self._writer.close()
        except Exception as e:  # noqa: BLE001 - reported below; the database is closed anyway
            errors.append(e)
        for close in (self._entries.close, self._db.close):
            try:
                close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        del close
        del self._entries, self._entries_h, self._meta_h, self._db
        # Column-family handles held by dead frames (e.g. a traceback cycle) keep RocksDB
        # open and its LOCK taken: collect them so the path can be reopened at once.
        gc.collect()
        mark = self._mark
        try:
            if not errors:
                mark.sync()  # everything is flushed: the mark may survive a power loss too
        except OSError as e:
            errors.append(e)
        finally:
            mark.close()
        if errors:
            for e in errors:
                _clear_frames(e)
            raise StorageError(f"closing log store at {self.path!r}", errors[0]) from errors[0]

    async def aclose(self) -> None:
        """``close()`` in a worker thread; callbacks of the last writes still reach the loop."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> RocksLogStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RocksLogStore({self.path!r}, purged={self._purged!r}, last={self._last!r}, closed={self._closed})"


# -- the state machine --------------------------------------------------------------------------

_SM_CF = "sm"
_DATA = b"d"  # data keys: b"d" + utf-8 key; values: utf-8 value
_DATA_END = b"e"
_M_FORMAT = b"mformat"
_M_APPLIED = b"mapplied"
_M_MEMBERSHIP = b"mmembership"
_M_ACKMARK = b"mackmark"  # present: the database has an OPENRAFT-ACKED file (see _AckMark)

SNAPSHOT_MAGIC = b"ORPYKV1\n"
"""The first bytes of a ``RocksStateMachine`` snapshot file. Then length-prefixed frames
(``_core`` ``encode_frame``), each a msgpack ``[tag, body]``: ``["h", [last_applied,
membership]]`` first, ``["d", [[key, value], ...]]`` chunks, and ``["e", pair_count]`` last
(so a truncated file is detected)."""

SNAPSHOT_CHUNK_BYTES = 256 * 1024
"""Approximate size of one data frame of a snapshot (bounds the memory of build/install)."""

_MAX_FRAME = 64 * 1024 * 1024


class _SnapRecord(msgspec.Struct):
    """What ``<path>/snapshots/current.meta`` holds."""

    meta: SnapshotMeta
    file: str


_dec_snaprec = msgspec.msgpack.Decoder(_SnapRecord)


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` durably and atomically (temp file, fsync, rename, dir fsync)."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="tmp-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(d)


class _RocksSnapshotBuilder:
    """A ``SnapshotBuilder`` of a ``RocksStateMachine``."""

    __slots__ = ("_sm",)

    def __init__(self, sm: RocksStateMachine) -> None:
        self._sm = sm

    async def build_snapshot(self) -> Snapshot:
        """Take a RocksDB snapshot now (a consistent image of one applied batch boundary) and
        stream it into a snapshot file in a worker thread; see ``RocksStateMachine``."""
        sm = self._sm
        sm._check_open()
        # ONE iterator is the image: RocksDB reads an iterator created without an explicit
        # snapshot from an implicit snapshot taken at its creation (pinned until it is
        # dropped; re-seeking keeps it), and each apply batch is one WriteBatch, so the
        # image is the state after some apply batch. NB: not ``cf.snapshot().items()``:
        # rocksdict (0.3.x) sets the snapshot on a copy of the read options and iterates
        # the live data (only ``snapshot[key]`` honours it), which let a build read data
        # newer than its meta.
        view = sm._cf.iter()
        return await _in_thread(sm._build_from, view)


class RocksStateMachine:
    """A durable key-value ``RaftStateMachine`` under the directory ``path`` (created when
    missing): the same commands and responses as ``MemStateMachine`` (``KvSet`` / ``KvDelete``
    / ``KvCas`` / ``KvGet`` from ``encode_kv``; other data is an opaque no-op answering
    ``None``).

    Layout: ``<path>/db`` (RocksDB, column family ``sm``) and ``<path>/snapshots`` (the current
    snapshot file ``<id>.snap`` and ``current.meta``).

    Durability:

    - ``apply``: data, last applied log id and stored membership go in ONE ``WriteBatch``
      (atomic), written without fsync in a worker thread. After a crash the state is the one
      after some earlier apply batch (never a torn batch); Raft re-applies the rest from the
      log, which is durable up to the commit.
    - ``build_snapshot``: the image is one RocksDB iterator created between two apply
      batches (its implicit snapshot is a point-in-time view; meta and data are read through
      it alone), streamed to a temporary file in a worker thread (apply keeps running and
      never waits for the build), fsynced; the WAL
      is synced too (so the state the snapshot covers can not be lost once the log is purged
      up to it), then the file is renamed into place and ``current.meta`` replaced atomically.
      A crash before that rename leaves the previous snapshot current.
    - ``install_snapshot``: one synced ``WriteBatch`` deletes the old data range and writes the
      new data, applied id and membership (atomic: a crash leaves the old state or the new
      one), then the snapshot file becomes current as above. A crash between the two leaves the
      new state with the previous snapshot current (still consistent: it is older).

    Opening raises ``StorageError`` naming ``path`` when it is a plain file, a non-empty
    directory without ``db``, a foreign database (nothing is written to it), or a damaged one
    (a corrupted WAL record or file, or fewer writes recovered than its last durable point:
    see "Corruption" in the module docstring). ``close()`` / ``aclose()`` / ``async with``
    always release the database lock (``StorageError`` if RocksDB could not close cleanly).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._closed = True
        what = "state machine"
        if os.path.exists(self.path):
            if not os.path.isdir(self.path):
                raise StorageError(f"opening {what} at {self.path!r}", NotADirectoryError(f"{self.path} is not a directory"))
            if os.listdir(self.path) and not os.path.isdir(os.path.join(self.path, "db")):
                raise StorageError(
                    f"opening {what} at {self.path!r}",
                    ValueError(f"foreign directory: no 'db' inside (found {sorted(os.listdir(self.path))[:10]})"),
                )
        self._snapdir = os.path.join(self.path, "snapshots")
        db, mark = _open_db(os.path.join(self.path, "db"), (_SM_CF,), _SM_CF, _M_FORMAT, _M_ACKMARK, SM_FORMAT, what)

        def load() -> tuple[LogId | None, StoredMembership]:
            # Its own frame: cleared on an error (see _open_db).
            cf = db.get_column_family(_SM_CF)
            try:
                raw = cf.get(_M_APPLIED)
                applied = None if raw is None else _dec_logid.decode(raw)
                raw = cf.get(_M_MEMBERSHIP)
                membership = EMPTY_STORED_MEMBERSHIP if raw is None else _dec_stored.decode(raw)
            finally:
                cf.close()
            return applied, membership

        try:
            self._applied, self._membership = load()
            os.makedirs(self._snapdir, exist_ok=True)
            self._current: _SnapRecord | None = self._load_current()
        except BaseException as e:
            _clear_frames(e)
            _release_db(db)
            del db
            mark.close()
            if isinstance(e, StorageError):
                raise
            raise StorageError(f"opening {what} at {self.path!r}", e) from e
        self._db = db
        self._mark = mark
        self._cf = db.get_column_family(_SM_CF)
        self._h = db.get_column_family_handle(_SM_CF)
        self._nosync = _write_options(False)
        self._sync = _write_options(True)
        self._snap_lock = threading.Lock()  # guards _current and the files of snapshots/
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> RocksStateMachine:
        """Open the state machine in a worker thread."""
        return await asyncio.to_thread(cls, path)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"using state machine at {self.path!r}", RuntimeError("closed"))

    def _load_current(self) -> _SnapRecord | None:
        """Read ``current.meta`` and delete leftovers (temporary and superseded files)."""
        rec: _SnapRecord | None = None
        meta_path = os.path.join(self._snapdir, "current.meta")
        if os.path.exists(meta_path):
            with open(meta_path, "rb") as f:
                rec = _dec_snaprec.decode(f.read())
            if not os.path.exists(os.path.join(self._snapdir, rec.file)):
                raise StorageError(f"opening state machine at {self.path!r}", FileNotFoundError(f"snapshot file {rec.file} missing"))
        for name in os.listdir(self._snapdir):
            if name != "current.meta" and (rec is None or name != rec.file):
                os.unlink(os.path.join(self._snapdir, name))
        return rec

    # -- RaftStateMachine

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)`` (after a reopen: as stored)."""
        return self._applied, self._membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries`` in a worker thread as ONE atomic ``WriteBatch`` (data + last
        applied + membership); one response per entry (see ``MemStateMachine``)."""
        self._check_open()
        if not entries:
            return []
        return await _in_thread(self._apply_sync, entries)

    def _apply_sync(self, entries: list[Entry]) -> list[Any]:
        cf, h = self._cf, self._h
        wb = WriteBatch(raw_mode=True)
        overlay: dict[str, str | None] = {}  # this batch's writes, read before RocksDB

        def get(key: str) -> str | None:
            if key in overlay:
                return overlay[key]
            raw = cf.get(_DATA + key.encode())
            return None if raw is None else raw.decode()

        def put(key: str, value: str) -> None:
            overlay[key] = value
            wb.put(_DATA + key.encode(), value.encode(), h)

        membership = self._membership
        out: list[Any] = []
        for entry in entries:
            p = entry.payload
            t = type(p)
            if t is Normal:
                data = p.data  # type: ignore[union-attr]
                cmd = decode_kv(data) if data[:1] == KV_PREFIX else None
                tc = type(cmd)
                if tc is KvSet:
                    prev = get(cmd.key)  # type: ignore[union-attr]
                    put(cmd.key, cmd.value)  # type: ignore[union-attr]
                    out.append(prev)
                elif tc is KvGet:
                    out.append(get(cmd.key))  # type: ignore[union-attr]
                elif tc is KvDelete:
                    prev = get(cmd.key)  # type: ignore[union-attr]
                    overlay[cmd.key] = None  # type: ignore[union-attr]
                    wb.delete(_DATA + cmd.key.encode(), h)  # type: ignore[union-attr]
                    out.append(prev)
                elif tc is KvCas:
                    cur = get(cmd.key)  # type: ignore[union-attr]
                    if cur == cmd.expected:  # type: ignore[union-attr]
                        put(cmd.key, cmd.value)  # type: ignore[union-attr]
                        out.append((True, cmd.value))  # type: ignore[union-attr]
                    else:
                        out.append((False, cur))
                else:
                    out.append(None)
            else:
                if t is Membership:
                    membership = StoredMembership(entry.log_id, p)  # type: ignore[arg-type]
                out.append(None)
        last = entries[-1].log_id
        wb.put(_M_APPLIED, _enc.encode(last), h)
        if membership is not self._membership:
            wb.put(_M_MEMBERSHIP, _enc.encode(membership), h)
        self._db.write(wb, self._nosync)
        self._applied = last
        self._membership = membership
        return out

    def get_snapshot_builder(self) -> _RocksSnapshotBuilder:
        """A builder; ``build_snapshot`` does not block ``apply`` (see the class docstring)."""
        return _RocksSnapshotBuilder(self)

    def _build_from(self, view: Any) -> Snapshot:
        """Worker thread: stream the iterator ``view`` (one point-in-time image: its meta
        and data are read through it alone) into a snapshot file and make it current.
        ``apply`` keeps writing meanwhile."""
        meta_raw: dict[bytes, bytes] = {}
        view.seek(b"m")
        while view.valid():
            k = view.key()
            if k[:1] != b"m":
                break
            meta_raw[k] = view.value()
            view.next()
        last = None if _M_APPLIED not in meta_raw else _dec_logid.decode(meta_raw[_M_APPLIED])
        membership = (
            EMPTY_STORED_MEMBERSHIP if _M_MEMBERSHIP not in meta_raw else _dec_stored.decode(meta_raw[_M_MEMBERSHIP])
        )
        where = "none" if last is None else f"{last.term}-{last.index}"
        meta = SnapshotMeta(last, membership, f"{where}-{uuid.uuid4().hex[:12]}")
        fd, tmp = tempfile.mkstemp(dir=self._snapdir, prefix="build-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(SNAPSHOT_MAGIC)
                f.write(encode_frame(_enc.encode(("h", (last, membership)))))
                chunk: list[tuple[bytes, bytes]] = []
                size = count = 0
                view.seek(_DATA)
                valid, key, value, step = view.valid, view.key, view.value, view.next
                while valid():
                    k = key()
                    if k[:1] != _DATA:
                        break
                    v = value()
                    step()
                    chunk.append((k[1:], v))
                    size += len(k) + len(v)
                    count += 1
                    if size >= SNAPSHOT_CHUNK_BYTES:
                        f.write(encode_frame(_enc.encode(("d", chunk))))
                        chunk, size = [], 0
                view.status()  # raises if the iteration stopped on an error, not at the end
                if chunk:
                    f.write(encode_frame(_enc.encode(("d", chunk))))
                f.write(encode_frame(_enc.encode(("e", count))))
                f.flush()
                os.fsync(f.fileno())
            del view
            # The state this snapshot covers must be durable before the snapshot lets the log
            # be purged up to it (apply writes without fsync).
            seqno = self._db.latest_sequence_number()
            self._db.flush_wal(True)
            self._mark.record(seqno)
            return self._make_current(meta, tmp)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _make_current(self, meta: SnapshotMeta, tmp: str) -> Snapshot:
        """Rename the fsynced file ``tmp`` to ``<id>.snap`` and make it current unless the
        current one is newer; return the snapshot over a fresh read handle."""
        name = f"{meta.snapshot_id}.snap"
        final = os.path.join(self._snapdir, name)
        with self._snap_lock:
            os.replace(tmp, final)
            f = open(final, "rb")
            cur = self._current
            newer = cur is None or cur.meta.last_log_id is None or (
                meta.last_log_id is not None and meta.last_log_id >= cur.meta.last_log_id
            )
            if newer:
                _atomic_write(os.path.join(self._snapdir, "current.meta"), _enc.encode(_SnapRecord(meta, name)))
                self._current = _SnapRecord(meta, name)
                if cur is not None and cur.file != name:
                    os.unlink(os.path.join(self._snapdir, cur.file))  # open readers keep their data
            else:
                os.unlink(final)  # an older image than the current one: hand it out, keep none
        return Snapshot(meta, f)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty temporary file under ``<path>/snapshots`` (``w+b``). It becomes the
        current snapshot file when installed; otherwise it is deleted at the next open."""
        self._check_open()
        return tempfile.NamedTemporaryFile(  # type: ignore[return-value]
            mode="w+b", dir=self._snapdir, prefix="recv-", suffix=".tmp", delete=False
        )

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the whole state with the snapshot in ``data`` atomically (in a worker
        thread). Raises ``ValueError`` (state unchanged) when ``data`` is not a complete
        ``RocksStateMachine`` snapshot."""
        self._check_open()
        await _in_thread(self._install_sync, meta, data)

    def _install_sync(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        wb = WriteBatch(raw_mode=True)
        try:
            self._install_into(wb, meta, data)
        except BaseException:
            wb.clear()
            raise

    def _install_into(self, wb: WriteBatch, meta: SnapshotMeta, data: BinaryIO) -> None:
        h = self._h
        wb.delete_range(_DATA, _DATA_END, h)
        data.seek(0)
        if data.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            raise ValueError(f"not a RocksStateMachine snapshot ({meta.snapshot_id}): bad magic")
        reader = FrameReader(_MAX_FRAME)
        seen_header = False
        ended = False
        count = 0
        try:
            while True:
                buf = data.read(SNAPSHOT_CHUNK_BYTES)
                if not buf:
                    break
                for frame in reader.feed(buf):
                    if ended:
                        raise ValueError("data after the end frame")
                    tag, body = _dec_any.decode(frame)
                    if tag == "h":
                        seen_header = True
                    elif tag == "d" and seen_header:
                        for k, v in body:
                            wb.put(_DATA + k, v, h)
                            count += 1
                    elif tag == "e" and seen_header:
                        if body != count:
                            raise ValueError(f"end frame says {body} pairs, read {count}")
                        ended = True
                    else:
                        raise ValueError(f"unexpected frame {tag!r}")
        except (msgspec.DecodeError, TypeError) as e:
            raise ValueError(f"not a RocksStateMachine snapshot ({meta.snapshot_id}): {e}") from e
        except ValueError as e:
            raise ValueError(f"not a RocksStateMachine snapshot ({meta.snapshot_id}): {e}") from e
        if not ended or reader.buffered():
            raise ValueError(f"not a RocksStateMachine snapshot ({meta.snapshot_id}): truncated")
        wb.put(_M_APPLIED, _enc.encode(meta.last_log_id), h)
        wb.put(_M_MEMBERSHIP, _enc.encode(meta.last_membership), h)
        seqno = self._db.latest_sequence_number()  # every write up to here precedes ours ...
        self._db.write(wb, self._sync)
        self._mark.record(seqno)  # ... in the WAL, so the sync write made them durable too
        self._applied = meta.last_log_id
        self._membership = meta.last_membership
        # Keep the received file as the current snapshot (or a durable copy of ``data``).
        name = getattr(data, "name", None)
        if isinstance(name, str) and os.path.dirname(os.path.abspath(name)) == os.path.abspath(self._snapdir):
            data.flush()
            os.fsync(data.fileno())
            tmp = name
        else:
            fd, tmp = tempfile.mkstemp(dir=self._snapdir, prefix="copy-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                data.seek(0)
                shutil.copyfileobj(data, f, SNAPSHOT_CHUNK_BYTES)
                f.flush()
                os.fsync(f.fileno())
        self._make_current(meta, tmp).data.close()

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed (also across restarts), over a fresh read
        handle positioned at 0, or ``None``."""
        self._check_open()
        return await asyncio.to_thread(self._open_current)

    def _open_current(self) -> Snapshot | None:
        with self._snap_lock:
            cur = self._current
            if cur is None:
                return None
            return Snapshot(cur.meta, open(os.path.join(self._snapdir, cur.file), "rb"))

    # -- reading the data (for applications and tests)

    def get(self, key: str) -> str | None:
        """The value of ``key`` as applied so far (a point read), or ``None``. Raises
        ``StorageError`` when RocksDB cannot read it (e.g. a damaged file)."""
        self._check_open()
        try:
            raw = self._cf.get(_DATA + key.encode())
        except Exception as e:
            raise StorageError(f"reading {key!r} from state machine at {self.path!r}", e) from e
        return None if raw is None else raw.decode()

    @property
    def data(self) -> dict[str, str]:
        """A copy of the whole key-value data (a full scan: for tests and small states).
        Raises ``StorageError`` when the scan stops on an error (e.g. a damaged file) rather
        than returning part of the data."""
        self._check_open()
        out: dict[str, str] = {}
        try:
            it = self._cf.iter()
            it.seek(_DATA)
            while it.valid():
                k = it.key()
                if k[:1] != _DATA:
                    break
                out[k[1:].decode()] = it.value().decode()
                it.next()
            it.status()  # the scan stopped at the end, not on an error
        except Exception as e:
            raise StorageError(f"reading the data of state machine at {self.path!r}", e) from e
        finally:
            it = None
        return out

    # -- lifecycle

    def close(self) -> None:
        """Flush and close the database, releasing its lock; idempotent. Call it when no
        ``apply`` / snapshot build is running (after ``Raft.shutdown``).

        The lock is released whatever happens (the same path can be opened again at once, in
        this process too); raises ``StorageError`` (naming the path, the cause chained) when
        RocksDB could not flush or close cleanly. The state machine is closed all the same."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        mark = self._mark
        try:
            seqno = self._db.latest_sequence_number()
            self._db.flush_wal(True)
            mark.record(seqno)
        except Exception as e:  # noqa: BLE001 - reported below; the database is closed anyway
            errors.append(e)
        for close in (self._cf.close, self._db.close):
            try:
                close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        del close
        del self._cf, self._h, self._db
        gc.collect()  # see RocksLogStore.close
        try:
            if not errors:
                mark.sync()
        except OSError as e:
            errors.append(e)
        finally:
            mark.close()
        if errors:
            for e in errors:
                _clear_frames(e)
            raise StorageError(f"closing state machine at {self.path!r}", errors[0]) from errors[0]

    async def aclose(self) -> None:
        """``close()`` in a worker thread."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> RocksStateMachine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RocksStateMachine({self.path!r}, applied={self._applied!r}, closed={self._closed})"
