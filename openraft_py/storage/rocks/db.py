"""Opening our RocksDB databases: the options every one runs with, the versioned format
marker and the column families that identify a database as ours, refusing foreign or damaged
ones without writing to them, and the handle hygiene that lets ``close()`` always release the
RocksDB lock (``clear_frames``, ``release_db``, ``in_thread``).

See "Corruption" and "Foreign databases" in ``docs/design/durability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import fcntl
import gc
import inspect
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    DBCompressionType,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from ...errors import StorageError
from ...types import Entry, Normal
from .ackmark import ACK_FILE, ACK_TMP_FILE, AckMark, check_recovered
from .damage import damaged, is_rocksdb_corruption
from .files import NotRegularFile, special_file_kind
from .wal import wal_numbers

__all__ = [
    "CLOSE_CALLS_WAIT", "BoundedIter", "CloseOnce", "StoreCalls", "byte_pieces", "clear_frames", "close_after_calls", "close_collected", "close_step", "database_use", "drop_handles",
    "holds_writes", "in_thread", "open_db", "raise_interrupt", "read_only", "release_db", "store_path", "write_options",
]

T = TypeVar("T")

_get_ident = threading.get_ident

log = logging.getLogger("openraft_py.storage.rocks")

_enc = msgspec.msgpack.Encoder()
_dec_any = msgspec.msgpack.Decoder()


INFO_LOG_MAX_BYTES = 4 * 1024 * 1024
"""The size at which RocksDB starts a new info log (``LOG``) of a database, renaming the
full one ``LOG.old.<time>``."""

INFO_LOG_KEEP = 10
"""How many info log files (``LOG`` and ``LOG.old.*``) RocksDB keeps in a database's
directory; it deletes older ones. With ``INFO_LOG_MAX_BYTES``, at most 40 MiB per database."""


def byte_pieces(entries: list[Entry], limit: int) -> list[list[Entry]]:
    """``entries`` cut into consecutive runs whose normal payloads' data add up to at most
    ``limit`` bytes each, or of one larger entry (other payloads count 0): how a large apply
    batch or append is written, a RocksDB write per run, since rocksdict holds the GIL through
    a write."""
    out: list[list[Entry]] = []
    start = 0
    size = 0
    for i, e in enumerate(entries):
        p = e.payload
        n = len(p.data) if type(p) is Normal else 0
        if size and size + n > limit:
            out.append(entries[start:i])
            start = i
            size = 0
        size += n
    out.append(entries[start:])
    return out


def _db_options(create: bool, *, atomic_flush: bool = False) -> Options:
    """Options of every database of this package. The WAL recovery mode is
    ``TolerateCorruptedTailRecords`` with paranoid checks: at open RocksDB replays the WAL and
    fails (``Corruption: ...``) on a checksum mismatch, a bad record length or an unknown record
    anywhere, dropping only a record that is cut off at the very end of a WAL file (a write a
    crash interrupted). RocksDB's default, point-in-time recovery, silently stops the replay at
    the first bad record instead (everything after it is gone, without an error), and
    ``SkipAnyCorruptedRecords`` silently leaves holes; ``AbsoluteConsistency`` refuses even the
    cut-off tail every crash during a write may leave, so a node could not restart after a
    power loss. A tail cut off by corruption rather than by a crash looks the same to RocksDB;
    the store's acknowledged mark (``AckMark``) tells the two apart.

    RocksDB's info log is bounded (``INFO_LOG_MAX_BYTES``, ``INFO_LOG_KEEP``): by default it
    never starts a new ``LOG`` while the database is open (its statistics, every ten
    minutes, made it grow by about 1 MiB a day per database, for good) and keeps the
    ``LOG.old.*`` that every open leaves, up to a thousand of them."""
    opts = Options(raw_mode=True)
    opts.set_max_log_file_size(INFO_LOG_MAX_BYTES)
    opts.set_keep_log_file_num(INFO_LOG_KEEP)
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


POINT_LOOKUP_BLOOM_BITS = 10
"""Bloom filter bits per key of a column family opened for point lookups (about 1% false
positives)."""

POINT_LOOKUP_MEMTABLE_BLOOM_RATIO = 0.02
"""The memtable's bloom filter of such a column family, as a share of its write buffer (64 MiB
by default: 1.3 MiB per memtable, about 10 bits per key for entries of 60-100 bytes)."""


def _cf_options(point_lookups: bool, compressed: bool = True) -> Options:
    """Options of one column family. ``point_lookups``: it is read mostly by ``get`` of single
    keys, often absent (a state machine reading a key's previous value before it sets it):
    whole-key bloom filters in its table files and in its memtable, so a miss skips each file
    and the memtable's skip list instead of searching them (measured on 1.5 million absent
    keys: 0.7-1.1 us per miss without, 0.34-0.40 us with). A database opened before keeps its
    files as they are; files written from then on get the filters.

    ``compressed=False``: the table files RocksDB writes from now on (flushes, compactions)
    are not compressed (RocksDB's default is Snappy). For data that is soon deleted, like a
    log's entries, the compression of every flushed memtable is work for nothing (see
    "Fifty-first round" in ``docs/design/performance.md``). Every table file records its own
    compression, so files written with Snappy before still read, and a release that
    compressed reads these."""
    opts = Options(raw_mode=True)
    if not compressed:
        opts.set_compression_type(DBCompressionType.none())
    if point_lookups:
        table = BlockBasedOptions()
        table.set_bloom_filter(POINT_LOOKUP_BLOOM_BITS, False)
        opts.set_block_based_table_factory(table)
        opts.set_memtable_whole_key_filtering(True)
        opts.set_memtable_prefix_bloom_ratio(POINT_LOOKUP_MEMTABLE_BLOOM_RATIO)
    return opts


def table_file_options(point_lookups: bool) -> Options:
    """Options for an ``SstFileWriter`` making a table file to ingest into a column family
    opened with ``point_lookups`` (see ``_cf_options``): the file gets the same filters as the
    files RocksDB writes there."""
    return _cf_options(point_lookups)


def write_options(sync: bool) -> WriteOptions:
    """``WriteOptions`` with ``sync`` set (``True``: the write fsyncs the WAL, holding the GIL)."""
    wo = WriteOptions()
    wo.sync = sync
    return wo

_ROCKSDICT_CONFIG = "rocksdict-config.json"


class BoundedIter:
    """A RocksDB iterator over ``cf`` that ends by itself before the key ``upper``
    (``ReadOptions.set_iterate_upper_bound``). Created now: RocksDB pins an implicit snapshot
    when an iterator is made, so every ``scan`` reads the same point-in-time image, from any
    thread.

    NB: it holds its ``ReadOptions``: rocksdict's iterator does not keep them alive, and a
    bound freed under the iterator reads as garbage (seen: an empty scan). Keep this object,
    not a bare iterator, for as long as the scan runs; its owner calls ``close()`` when done
    (also on an error: the iterator keeps RocksDB open, and a frame kept by an exception's
    traceback may still hold this object, but then not the iterator)."""

    __slots__ = ("_opts", "_it")

    def __init__(self, cf: Rdict, upper: bytes) -> None:
        self._opts = ReadOptions()
        self._opts.set_iterate_upper_bound(upper)
        self._it = cf.iter(self._opts)

    def values(self, start: bytes) -> list[bytes]:
        """Every value from the key ``start`` to the bound, in key order. Raises when the scan
        stops on an error (e.g. a damaged file) rather than at the bound."""
        it = self._it
        it.seek(start)
        out: list[bytes] = []
        add, valid, value, step = out.append, it.valid, it.value, it.next
        while valid():
            add(value())
            step()
        it.status()
        return out

    def seek(self, start: bytes) -> None:
        """Position the scan of ``values_upto`` at the key ``start``."""
        self._it.seek(start)

    def values_upto(self, max_bytes: int) -> tuple[list[bytes], bool]:
        """The next values from the scan's position (``seek``) on, in key order: until they
        add up to ``max_bytes`` or more (so at least one, if any is left) or the bound is
        reached; and whether it was (nothing is left). Raises when the scan stops on an error
        rather than at the bound."""
        it = self._it
        out: list[bytes] = []
        add, valid, value, step = out.append, it.valid, it.value, it.next
        size = 0
        while valid():
            v = value()
            add(v)
            step()
            size += len(v)
            if size >= max_bytes:
                if valid():
                    return out, False
                break
        it.status()
        return out, True

    def keys(self, start: bytes) -> list[bytes]:
        """Every key from ``start`` to the bound, in key order (the keys of what ``values``
        returns from the same ``start``: the image does not change). Raises as ``values``."""
        it = self._it
        it.seek(start)
        out: list[bytes] = []
        while it.valid():
            out.append(it.key())
            it.next()
        it.status()
        return out

    def scan(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` from the key ``start`` to the bound, in key order, streamed. Raises
        when the scan stops on an error rather than at the bound. (The generator keeps no
        reference to the iterator of its own: ``close()`` releases it.)"""
        self._it.seek(start)
        while self._it.valid():
            k, v = self._it.key(), self._it.value()
            self._it.next()
            yield k, v
        self._it.status()

    def close(self) -> None:
        """Release the iterator (and then its read options); idempotent. Using the object
        afterwards raises ``AttributeError``."""
        if hasattr(self, "_it"):
            del self._it
            del self._opts


def store_path(path: object, what: str) -> str:
    """The directory of a store (``what``: "log store", "state machine") as a ``str``:
    ``path`` is a ``str`` or an ``os.PathLike`` of one. ``TypeError`` for anything else
    (``bytes`` too: the store joins ``str`` names to it), ``StorageError`` for an empty path,
    which named the current directory: a state machine made its ``db`` and ``snapshots`` in
    it, past the check that refuses a directory of other files; and for a path holding a NUL
    character, which no file system takes."""
    try:
        text = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise TypeError(f"{what} path must be a str or an os.PathLike of one, got {type(path).__name__} {path!r}")
    if not text:
        raise StorageError(f"opening {what} at ''", ValueError("the path is empty (give the directory of the store)"))
    if "\x00" in text:  # (the file system calls refused it with a bare "embedded null byte")
        raise StorageError(f"opening {what} at {text!r}", ValueError("the path holds a NUL character"))
    return text


def _open_error(path: str, what: str, e: BaseException) -> StorageError:
    """A ``StorageError`` for a RocksDB open that failed with ``e``, saying what is wrong."""
    msg = str(e)
    if is_rocksdb_corruption(e):
        return corruption_error(path, what, e)
    if "lock" in msg.lower():
        return StorageError(f"opening {what} at {path!r}: the database is in use (its LOCK is held)", e)
    return StorageError(f"opening {what} at {path!r}", e)


def corruption_error(path: str, what: str, e: BaseException) -> StorageError:
    """The ``damaged`` error for RocksDB's report ``e`` of damaged data (``is_rocksdb_corruption``)
    in the database at ``path``, met opening or reading it: the file RocksDB names is a table
    file, the MANIFEST or a write-ahead log; the WALs present are listed (one missing is a
    lost one)."""
    try:
        wals = ", ".join(f"{n:06d}.log" for n in wal_numbers(path)) or "none"
    except OSError:
        wals = "unknown"
    return damaged(path, what, f"RocksDB found a damaged or missing file, named below; write-ahead logs: {wals}", e)


def _other_stores_families(present: set[str], cfs: tuple[str, ...]) -> bool:
    """Whether a database whose column families are ``present`` is another store's than the
    one of column families ``cfs``: it has column families besides RocksDB's ``default``,
    and none of them is one of ``cfs``. (A damaged MANIFEST reads as ``default`` alone.)"""
    others = present - {"default"}
    return bool(others) and not others & set(cfs)


def _is_empty(cf: Rdict) -> bool:
    return next(iter(cf.keys()), None) is None


def column_family_holds_data(db: Rdict, cf: str) -> bool:
    """Whether the column family ``cf`` of ``db`` holds any key (an error of its iterator is
    raised, not taken for empty)."""
    it = db.get_column_family(cf).iter()
    try:
        it.seek_to_first()
        held = bool(it.valid())
        it.status()
        return held
    finally:
        del it


def open_db(
    path: str,
    cfs: tuple[str, ...],
    marker_cf: str,
    marker_key: bytes,
    flag_key: bytes,
    marker: dict[str, Any],
    what: str,
    *,
    atomic_flush: bool = False,
    point_lookup_cfs: tuple[str, ...] = (),
    uncompressed_cfs: tuple[str, ...] = (),
) -> tuple[Rdict, AckMark]:
    """Open (or create) our RocksDB at ``path`` with the column families ``cfs``; return it
    with its acknowledged mark (``AckMark``), checked.

    Ours means: the format ``marker`` at ``marker_key`` in ``marker_cf``. ``flag_key`` (in the
    same column family, written in the same batch as the marker) says the database has an
    ``OPENRAFT-ACKED`` file that must be there. Raises ``StorageError`` naming ``path`` and what
    is wrong when ``path`` is a plain file, not a RocksDB, corrupted (RocksDB refuses to
    recover it, or it recovered fewer writes than were acknowledged), in use, or not ours.

    A database that is not ours, or of another format version, is never written to: the
    database is first opened read-only and its marker read (a read-write open alone writes: a
    new WAL, MANIFEST and OPTIONS file, flushed memtables); a marker of another version is
    refused naming both versions, and without our ``OPENRAFT-ACKED`` file a missing one too.
    A store created by an earlier version (marker, no flag) gets its file now. A creation
    that crashed before the marker was written is recognised by the file with generation 0
    and an empty database; without the file, a database without a marker is foreign.

    ``point_lookup_cfs``: the column families (of ``cfs``) read mostly by single-key ``get``,
    often of absent keys; they get bloom filters (see ``_cf_options``). ``uncompressed_cfs``:
    the column families whose table files are written without compression (data deleted
    soon after it is written; see ``_cf_options``).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise StorageError(f"opening {what} at {path!r}", NotADirectoryError(f"{path} is not a directory"))
    # The whole open holds an flock on the directory: two processes opening a new directory at
    # once both took it for fresh, and the second one's new mark file replaced the first's
    # (which went on recording into the replaced file: its acknowledged writes were no longer
    # checked at the next open). The loser now finds it in use; RocksDB's LOCK guards the rest.
    try:
        os.makedirs(path, exist_ok=True)
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StorageError(f"opening {what} at {path!r}", e) from e
    try:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(
                f"opening {what} at {path!r}: the database is in use (another process is opening it)"
            ) from None
        return _open_db_locked(path, cfs, marker_cf, marker_key, flag_key, marker, what,
                               atomic_flush=atomic_flush, point_lookup_cfs=point_lookup_cfs,
                               uncompressed_cfs=uncompressed_cfs)
    finally:
        os.close(dir_fd)  # releases the flock


def _open_db_locked(
    path: str,
    cfs: tuple[str, ...],
    marker_cf: str,
    marker_key: bytes,
    flag_key: bytes,
    marker: dict[str, Any],
    what: str,
    *,
    atomic_flush: bool,
    point_lookup_cfs: tuple[str, ...],
    uncompressed_cfs: tuple[str, ...],
) -> tuple[Rdict, AckMark]:
    """``open_db`` once it holds the directory's flock."""
    _refuse_special_files(path, what)
    # Empty, or holding only our mark file (a creation that stopped before RocksDB's files).
    fresh = not os.path.exists(path) or not set(os.listdir(path)) - {ACK_FILE, ACK_TMP_FILE}
    mark: AckMark | None = None
    cf_opts = {cf: _cf_options(cf in point_lookup_cfs, cf not in uncompressed_cfs) for cf in cfs}
    if fresh:
        try:
            os.makedirs(path, exist_ok=True)
            mark = AckMark.create(path, 0)  # first: it identifies the database as ours
        except OSError as e:
            raise StorageError(f"creating {what} at {path!r}", e) from e
        found: tuple[int, int] | None = (0, 0)
    else:
        found = AckMark.read(path, what)
        if _creation_interrupted(path, found):
            # Created again: RocksDB makes what it had not made yet (CURRENT, a column family).
            fresh = True
            if not os.path.exists(os.path.join(path, "CURRENT")):
                # RocksDB refuses to make a new database beside a WAL file; these are empty.
                try:
                    for n in wal_numbers(path):
                        os.unlink(os.path.join(path, f"{n:06d}.log"))
                except OSError as e:
                    raise StorageError(f"creating {what} at {path!r}", e) from e
        else:
            try:
                present = set(Rdict.list_cf(path))
            except Exception as e:
                if found is not None and (is_rocksdb_corruption(e) or "No such file or directory" in str(e)):
                    # Ours (it holds our mark file), with CURRENT or the MANIFEST it names
                    # damaged or gone (other I/O errors, e.g. a permission, are not damage).
                    raise damaged(path, what, "RocksDB cannot read its CURRENT or MANIFEST file, named below", e) from e
                raise StorageError(f"opening {what} at {path!r}: not a readable RocksDB database", e) from e
            missing = [cf for cf in cfs if cf not in present]
            if missing:
                why = f"column families {missing} missing (found {sorted(present)})"
                if found is not None and _other_stores_families(present, cfs):
                    # Our mark file is there, and column families none of which is this
                    # store's: another store of ours (a state machine's database opened as a
                    # log). Not damaged: calling it so told the user to replace the node.
                    raise StorageError(f"opening {what} at {path!r}", ValueError(
                        f"not a {what} database: {why}: another openraft-py store's database (is the path right?)"))
                if found is not None:
                    # Our mark file is there and no column family of another store: ours with
                    # its MANIFEST damaged (an all-zero MANIFEST reads as a database with only
                    # the default column family).
                    why = f"not a {what} database: {why}, though it holds our {ACK_FILE}: its MANIFEST file is damaged"
                    raise damaged(path, what, "its MANIFEST file names none of the store's column families",
                                  ValueError(why))
                raise StorageError(f"opening {what} at {path!r}", ValueError(f"foreign database: {why}"))
            # The marker is read in a read-only open first, also in a database of ours: a
            # read-write open writes (a new WAL, MANIFEST and OPTIONS file, the WAL flushed),
            # and one of another format version (a newer release's, after a downgrade) must be
            # refused untouched. The read-write open also fails on what a newer format may
            # add (a column family: "Column families not opened"), naming no version.
            raw = _read_marker_read_only(path, cfs, marker_cf, marker_key, what)
            if found is None:
                if raw is None:
                    raise StorageError(f"opening {what} at {path!r}", ValueError("foreign database: no format marker"))
                _check_marker(raw, marker, path, what)
            elif raw is not None:
                _check_marker(raw, marker, path, what)
    try:
        # RocksDB refuses a second open of a database in the same process by its LOCK file's
        # name (the lock itself, fcntl's, is the process's: it does not conflict with itself).
        # The canonical path makes every spelling of the directory one name: given as
        # "db/", "./db" or through a symlink, it was opened a second time, two writers on one
        # database.
        db = Rdict(os.path.realpath(path), _db_options(fresh, atomic_flush=atomic_flush), column_families=cf_opts)
    except Exception as e:
        if mark is not None:
            mark.close()
        raise _open_error(path, what, e) from e

    def setup() -> AckMark:
        # A function of its own: on an error, its frame (holding column family handles, which
        # keep RocksDB open) is cleared with the traceback's.
        if found is not None:
            check_recovered(db, found, path, what)
        new_mark = mark
        mcf = db.get_column_family(marker_cf)
        try:
            raw = mcf.get(marker_key)
            if raw is None:
                if found is None:  # (refused by the read-only look above already; kept for safety)
                    raise StorageError(f"opening {what} at {path!r}", ValueError("foreign database: no format marker"))
                if found[0] != 0 or not all(_is_empty(db.get_column_family(cf)) for cf in cfs):
                    # Ours (our mark file is there, and the database is not our creation's):
                    # the marker, written when the store was created, was lost, as by a
                    # MANIFEST cut short that no longer records the table file holding it
                    # (the writes after it replayed from a newer WAL). It was "foreign or
                    # damaged database: format marker missing", without what to do.
                    raise damaged(path, what, f"its format marker is missing, though it holds our {ACK_FILE}: a table "
                                  "file or the MANIFEST recording it is damaged or lost",
                                  ValueError("format marker missing"))
                # Our creation (fresh now, or one that crashed before this write).
                wb = WriteBatch(raw_mode=True)
                h = db.get_column_family_handle(marker_cf)
                wb.put(marker_key, _enc.encode(marker), h)
                wb.put(flag_key, b"\x01", h)
                db.write(wb, write_options(True))
            else:
                _check_marker(raw, marker, path, what)
                if found is None:
                    if mcf.get(flag_key) is not None:
                        raise damaged(
                            path, what, f"{ACK_FILE} is missing",
                            FileNotFoundError(f"{ACK_FILE} is missing: the acknowledged writes cannot be checked"),
                        )
                    # A store of an earlier version: from now on it has the file.
                    new_mark = AckMark.create(path, db.latest_sequence_number())
                    mcf.put(flag_key, b"\x01", write_options(True))
                elif mcf.get(flag_key) is None:
                    # The file was written but not yet the flag when an upgrade crashed.
                    mcf.put(flag_key, b"\x01", write_options(True))
        finally:
            mcf.close()
        if new_mark is None:
            assert found is not None
            new_mark = AckMark.open(path, *found)
        new_mark.record(db.latest_sequence_number())  # the writes above were synced
        return new_mark

    try:
        mark = setup()
    except BaseException as e:
        clear_frames(e)
        release_db(db)
        del db
        if mark is not None:
            mark.close()
        if isinstance(e, StorageError):
            raise
        raise StorageError(f"opening {what} at {path!r}", e) from e
    return db, mark


def _refuse_special_files(path: str, what: str) -> None:
    """``StorageError`` (``damaged``) naming the first entry of the database directory
    ``path`` that is a named pipe, a socket or a device: RocksDB (``CURRENT``, a MANIFEST,
    a WAL ...), rocksdict (``rocksdict-config.json``) or the mark (``OPENRAFT-ACKED``) would
    read it, and a named pipe blocked that read, and the node's start, for good (SIGTERM did
    not end it). The file it replaced is gone: the database is damaged. One ``lstat`` per
    entry (a few dozen); a missing ``path`` passes (it is made). (``StorageError`` is no
    ``OSError``: the ``except`` below does not take it.)"""
    try:
        with os.scandir(path) as it:
            for e in it:
                kind = special_file_kind(e.stat(follow_symlinks=False).st_mode)
                if kind is not None:
                    raise damaged(path, what, f"{e.name} is {kind}, not a file of the database",
                                  NotRegularFile(errno.EINVAL, f"it is {kind}", e.path))
    except OSError:  # (missing: it is made; or it cannot be listed: the open names why, as before)
        return


def _creation_interrupted(path: str, found: tuple[int, int] | None) -> bool:
    """Whether our creation of the database at ``path`` stopped before anything was written to
    it: the mark is still the creation's ``(0, 0)`` (the first open records the marker's
    write), and no table file nor any WAL record exists. A process killed while RocksDB was
    creating its files leaves such a directory: no ``CURRENT`` yet, or a column family not
    created yet. It was refused at every later open ("not a readable RocksDB database", "column
    families missing"), so the node could never start again. A database holding anything (a
    table file, a non-empty WAL) is never taken for one."""
    return found == (0, 0) and not holds_writes(path)


def holds_writes(path: str) -> bool:
    """Whether the RocksDB directory ``path`` holds anything written to the database: a table
    file (``*.sst``) or a write-ahead log that is not empty (``<number>.log``). A creation
    killed part way (no ``CURRENT`` yet, a column family not made yet) leaves neither: RocksDB
    writes its first record only once the open made them all. ``False`` when ``path`` is
    missing. Blocking."""
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.endswith(".sst"):
                    return True
                if e.name.endswith(".log") and e.name[:-4].isdigit() and e.stat().st_size > 0:
                    return True
    except FileNotFoundError:
        return False
    return False


def database_use(path: str, what: str, required: set[str], look: Callable[[Rdict, set[str]], list[str]]) -> list[str]:
    """What the RocksDB at ``path`` holds beyond what a store's creation writes, as ``look(db,
    column families)`` names it in a read-only open (``read_only``) of every column family; the
    store's ``required`` column families must be there. A database that does not open (no
    ``CURRENT``, a damaged MANIFEST), lacks a required column family, or fails the read-only
    open is a creation killed part way when it holds no write (``holds_writes``: ``[]``), and
    is named so otherwise. ``what``: the store ("log store", ...). Blocking."""
    try:
        present = set(Rdict.list_cf(path))
    except Exception as e:  # noqa: BLE001 - no CURRENT, a damaged MANIFEST: whether it holds writes says
        return [f"a database that does not open ({e})"] if holds_writes(path) else []
    if not required <= present:
        if not holds_writes(path):
            return []  # (killed before RocksDB made its column families)
        return [f"a database of other column families ({', '.join(sorted(present))})"]
    try:
        return read_only(path, tuple(sorted(present)), what, lambda db: look(db, present))
    except StorageError as e:
        return [f"a database that does not open read-only ({e})"] if holds_writes(path) else []


def _read_marker_read_only(path: str, cfs: tuple[str, ...], marker_cf: str, marker_key: bytes, what: str) -> bytes | None:
    """The format marker of the database at ``path`` (``None``: it has none), read in a
    read-only open (``read_only``) of the column families ``cfs`` only (a read-only open may
    leave others out: those a newer format added)."""

    def marker(ro: Rdict) -> bytes | None:
        mcf = ro.get_column_family(marker_cf)
        try:
            raw: bytes | None = mcf.get(marker_key)
        finally:
            mcf.close()
        return raw

    return read_only(path, cfs, what, marker)


def read_only(path: str, cfs: tuple[str, ...], what: str, read: Callable[[Rdict], T]) -> T:
    """``read(db)``, ``db`` the RocksDB at ``path`` opened read-only (raw mode) with the
    column families ``cfs``, closed again before this returns. Nothing is written: RocksDB
    writes nothing in read-only mode (its WAL is replayed into memory), takes no ``LOCK``,
    and rocksdict's own ``rocksdict-config.json`` (which every rocksdict open writes) is put
    back as it was. ``StorageError`` naming ``path`` (``what``: "log store", ...) when the open
    or ``read`` fails (``corruption_error`` for damaged data), or when the config file cannot
    be put back (a read-only file system, a directory of another user's files: naming the
    file and why). Blocking."""
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
            out = read(ro)
        except Exception as e:
            clear_frames(e)  # (``read``'s frames may hold column family handles)
            release_db(ro)
            if is_rocksdb_corruption(e):
                raise corruption_error(path, what, e) from e
            raise StorageError(f"opening {what} at {path!r}", e) from e
        release_db(ro)
        del ro
    except BaseException:
        with contextlib.suppress(OSError):  # the open's own error says more
            _restore_config(config, saved)
        raise
    try:
        _restore_config(config, saved)
    except OSError as e:
        raise StorageError(f"opening {what} at {path!r}", e) from e
    return out


def _restore_config(config: str, saved: tuple[bytes, int, int] | None) -> None:
    """Put rocksdict's config file back as ``saved`` (``None``: there was none). Raises
    ``OSError`` naming ``config`` when it cannot: the file system is read-only (``EROFS``,
    also when the kernel remounted it so after an I/O error), or the file is another
    user's (``EPERM``: only its owner sets its times). Those came as a bare "[Errno 30]
    Read-only file system" or "[Errno 1] Operation not permitted", naming no file and no
    store (``os.utime`` names none)."""
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
    except OSError as e:
        raise OSError(e.errno, f"putting rocksdict's config file back after the read-only open failed: "
                               f"{e.strerror or e}", config) from e


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def close_step(step: Callable[[], object], errors: list[BaseException], interrupts: list[BaseException]) -> bool:
    """Run ``step`` of a store's ``close()``; whether it completed. An ``Exception`` goes to
    ``errors`` (the close reports it once it has completed), anything else to ``interrupts``
    (``KeyboardInterrupt``: Ctrl-C during a sync close, seconds long on a slow disk; raised
    once the close has completed, ``raise_interrupt``): either way the close goes on to
    release RocksDB. (Escaping the close, an interrupt left RocksDB open with the store
    marked closed: a later ``close()`` did nothing, and the path stayed "in use".)"""
    try:
        step()
        return True
    except Exception as e:  # noqa: BLE001 - reported by the close
        errors.append(e)
    except BaseException as e:  # noqa: BLE001 - raised by the close, once it has completed
        interrupts.append(e)
    return False


class CloseOnce:
    """Which ``close()`` of a store is its first, the one that closes it (``claim``), and
    the wait of any other for that one to end (``end``).

    A second ``close()`` called while the first still runs in another thread (waiting for
    the store's calls, draining the writer, syncing the WAL) returns once the first has
    ended: it returned at once, RocksDB still open, and its caller's open of the same path
    right after was refused as "in use". One in the first close's own thread (a close
    reentered from its steps), or in a thread the first may wait for (``claim(wait=False)``:
    one with a call of the store counted, ``StoreCalls.counts_thread``, or the log store's
    writer thread, which the close joins), returns at once: waiting, it held up the first
    close (each waited for the other, the first up to ``CLOSE_CALLS_WAIT``). Thread-safe."""

    __slots__ = ("_lock", "_ended", "_first")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = threading.Event()
        # Invariant: the ident of the thread running the first close, set once (``None``:
        # no close yet); ``_ended`` is set once that close has returned or raised.
        self._first: int | None = None

    def claim(self, wait: bool = True) -> bool:
        """Whether the calling ``close()`` is the store's first: it closes the store, then
        calls ``end`` (in a ``finally``). Otherwise ``False`` once the first has ended (at
        once from the first's own thread, or unless ``wait``: the caller's thread is one the
        first may wait for)."""
        here = threading.get_ident()
        with self._lock:
            first = self._first
            if first is None:
                self._first = here
                return True
        if wait and here != first:
            self._ended.wait()
        return False

    def end(self) -> None:
        """The first ``close()`` has ended (returned or raised): the others return."""
        self._ended.set()

    def run(self, close: Callable[[], None], wait: bool = True) -> None:
        """``close()`` (the store's own steps) if the calling ``close()`` is the store's first
        (``claim``), then ``end``; otherwise return as ``claim`` says."""
        if not self.claim(wait):
            return
        try:
            close()
        finally:
            self.end()


def close_after_calls(calls: StoreCalls, close_db: Callable[[list[BaseException]], None]) -> None:
    """A store's sync ``close()`` once its calls of other threads have ended: wait for them
    (``calls.wait_idle``, bounded), then ``close_db(errors so far)``, the store's own steps.
    An exception raised during the wait (``KeyboardInterrupt``: Ctrl-C) gives those calls up
    (``calls.give_up``) and closes all the same, then is raised (it wins over a failed close,
    chained to it): escaping before the close, it left RocksDB open with the store marked
    closed."""
    try:
        abandoned = calls.wait_idle()
    except BaseException as interrupt:  # noqa: BLE001 - raised again below, once the store is closed
        gave_up = calls.give_up(f"when the close's wait was interrupted ({type(interrupt).__name__})")
        try:
            close_db([gave_up] if gave_up is not None else [])
        finally:
            raise interrupt  # (the interrupt wins over a failed close, chained to it)
    close_db([abandoned] if abandoned is not None else [])


def raise_interrupt(interrupts: list[BaseException]) -> None:
    """Raise the first of ``interrupts`` (``close_step``), if any: the close has completed.
    In a ``finally``: it wins over the close's own ``StorageError``, chained to it."""
    if interrupts:
        raise interrupts[0]


def finish_close(mark: AckMark, errors: list[BaseException], what: str) -> None:
    """The last step of closing a store whose database is closed: fsync ``mark`` when the
    close went cleanly (everything is flushed, so the mark may survive a power loss too),
    close it, and raise ``StorageError(what, first error)`` if anything failed, the frames of
    every error cleared (see ``clear_frames``)."""
    try:
        if not errors:
            mark.sync()
    except OSError as e:
        errors.append(e)
    finally:
        mark.close()
    if errors:
        for err in errors:
            clear_frames(err)
        raise StorageError(what, errors[0]) from errors[0]


def clear_frames(e: BaseException) -> None:
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


def release_db(db: Rdict) -> None:
    """Close ``db`` ignoring errors (the caller reports its own)."""
    try:
        db.close()
    except Exception:  # noqa: BLE001
        pass


def drop_handles(handles: list[Any]) -> None:
    """Drop the last references to a closed database's handles (the ``Rdict`` and its
    column family handles), emptying ``handles``, so RocksDB closes and frees its LOCK now.

    ``handles`` must be the caller's only reference to each. A handle nobody else holds is
    freed as it is dropped here; only when something else still holds one (typically a
    dead frame in a traceback cycle) does this run a full garbage collection, which takes
    the GIL for as long as it walks every object of the process (110 ms with 127k objects
    in a test process, measured)."""
    held = False
    while handles:
        handle = handles.pop()
        # References now: ``handle`` and ``getrefcount``'s argument, unless held elsewhere.
        if sys.getrefcount(handle) > 2:
            held = True
        del handle
    if held:
        gc.collect()


def close_collected(what: str, path: str, close: Callable[[], None]) -> None:
    """From a store's ``__del__``: close a store that is being collected unclosed (``close``:
    its ``close()``), then warn with a ``ResourceWarning`` naming ``what`` and ``path``, as
    Python's own files do. A failure of the close is logged, never raised (a finalizer has
    nobody to raise to); the warning comes last, so the store is closed even when warnings
    are errors (``-W error``: the warning then reaches ``sys.unraisablehook``)."""
    try:
        close()
    except Exception:
        log.exception("closing the %s at %r, collected unclosed", what, path)
    warnings.warn(
        f"unclosed {what} at {path!r}: it was collected without close() or aclose() and closed then; "
        "close it (or use 'async with') when done with it",
        ResourceWarning,
        stacklevel=2,
    )


def _check_marker(found: bytes | None, marker: dict[str, Any], path: str, what: str) -> None:
    """``StorageError`` unless ``found`` (a stored format marker) is ``marker``. A marker of
    the same format and another version names both versions: a newer one is a newer
    release's data (a downgrade), which this release cannot read; an older one a release's
    that this one does not convert."""
    try:
        value = None if found is None else _dec_any.decode(found)
    except msgspec.DecodeError as e:
        raise StorageError(f"opening {what} at {path!r}", ValueError(f"corrupted format marker {found!r}")) from e
    if value == marker:
        return
    version = value.get("version") if isinstance(value, dict) and value.get("format") == marker["format"] else None
    if type(version) is int:
        supported = marker["version"]
        if version > supported:
            why = (f"{what} format version {version}, written by a newer version of openraft-py; this version "
                   f"reads format version {supported} only: run the newer version on it (a downgrade is refused, "
                   "and nothing was written)")
        else:
            why = (f"{what} format version {version}, of an older version of openraft-py that this version does "
                   f"not convert; it reads format version {supported}: see the changelog for the upgrade path")
        raise StorageError(f"opening {what} at {path!r}", ValueError(why))
    raise StorageError(
        f"opening {what} at {path!r}",
        ValueError(f"foreign database: format marker {value!r}, expected {marker!r}"),
    )


CANCELLED_THREAD_WAIT = 30.0
"""Seconds a cancelled ``in_thread`` caller waits for its thread to end."""


async def in_thread(
    fn: Callable[..., T], *args: Any, discard: Callable[[T], object] | None = None,
    dropped: Callable[[], object] | None = None,
) -> T:
    """``asyncio.to_thread(fn, *args)``, but an exception leaves with the locals of its
    traceback's frames cleared: a frame holding a column family handle would otherwise keep
    RocksDB open (and its LOCK taken) after ``close()``, since the exception outlives the call
    in the executor's futures.

    A cancelled caller (the node shutting down) raises its ``CancelledError`` only once the
    thread has ended, or after ``CANCELLED_THREAD_WAIT`` seconds (logged at WARNING): a
    thread cannot be stopped, and it used to run on after ``Raft.shutdown()`` returned, so
    the store's ``close()`` came while it still read or wrote (a snapshot build, an apply
    batch, a log read), and RocksDB stayed open in it: a store reopened at once (an
    in-process restart) was refused as "in use". The bound keeps a thread stuck for good (a
    disk that never answers) from holding up the shutdown for good.

    ``discard``: called on the loop with what ``fn`` returned when its caller was cancelled,
    once the thread has ended, to release what nobody will take (a snapshot's open file, a
    store opened for nobody). A thread that ended within the bound has it called before the
    caller's ``CancelledError`` is raised, so what it held is released by then (a store's
    RocksDB lock: a caller that opens the same path again at once finds it free).

    ``dropped``: called on the loop when the executor dropped the call before it started (an
    executor shut down with ``cancel_futures=True``; the caller gets ``CancelledError``):
    ``fn`` never runs, so nothing it would have done at its end (``StoreCalls``' count) is
    done unless ``dropped`` does it."""

    def run() -> T:
        try:
            return fn(*args)
        except BaseException as e:
            clear_frames(e)
            raise

    # As ``asyncio.to_thread``, but the executor's future itself: no task of its own that
    # could be cancelled while the thread runs.
    fut = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, run)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        end = loop.time() + CANCELLED_THREAD_WAIT
        while not fut.done() and loop.time() < end:
            try:
                await asyncio.wait((fut,), timeout=end - loop.time())
            except asyncio.CancelledError:
                continue  # cancelled again: the thread still runs
        if fut.done():
            _drop_outcome(fut, discard, dropped)
        else:
            log.warning("a storage worker thread (%s) still runs %gs after its caller was cancelled; going on "
                        "without it", getattr(fn, "__qualname__", fn), CANCELLED_THREAD_WAIT)
            fut.add_done_callback(lambda f: _drop_outcome(f, discard, dropped))
        raise


def _drop_outcome(
    fut: asyncio.Future[Any], discard: Callable[[Any], object] | None = None,
    dropped: Callable[[], object] | None = None,
) -> None:
    """Retrieve the outcome of a call whose caller was cancelled (nobody wants it); what it
    returned goes to ``discard``, if given (a failure there is logged). A call its executor
    dropped unstarted (``fut`` cancelled: a running call cannot be) goes to ``dropped``."""
    if fut.cancelled():
        if dropped is not None:
            dropped()
        return
    if fut.exception() is not None or discard is None:
        return
    try:
        discard(fut.result())
    except Exception:
        log.exception("discarding the result of a storage call whose caller was cancelled")




CLOSE_CALLS_WAIT = 30.0
"""Seconds a store's ``close()`` waits for its own calls still running in worker threads
(``StoreCalls``) before it closes RocksDB under them."""


_Queued = tuple[asyncio.AbstractEventLoop, Callable[..., object] | None, tuple[Any, ...]]
"""What ``StoreCalls`` keeps of a call queued for a worker thread: its event loop, its
``refused`` and its arguments."""


QUEUED_POLL = 0.1
"""Seconds between two looks of a waiting ``close()`` for calls queued on a loop that has
closed or stopped meanwhile (``StoreCalls.wait_idle``): nothing notifies the wait of a
loop's close or stop."""


class _Formatted:
    """A log message argument that knows whether a handler has formatted it (logging
    formats a record's message lazily, in each handler that writes it): the record reached a
    handler, so a caller must not log it a second time."""

    __slots__ = ("text", "formatted")

    def __init__(self, text: str) -> None:
        self.text = text
        self.formatted = False

    def __str__(self) -> str:
        self.formatted = True
        return self.text


class StoreCalls:
    """The calls of one store that run in worker threads, or on their caller's thread, which
    the store's ``close()`` waits for before it closes RocksDB.

    A thread cannot be stopped: when the caller of such a call is cancelled (a
    ``Raft.shutdown()`` that was cancelled itself, a plug-in's timeout) or another task
    closes the store meanwhile, the thread runs on. The store was closed under it: the
    thread then failed with an ``AttributeError`` of the closed store (an apply or a
    snapshot build lost), and ``close()`` returned with RocksDB's lock still held (the
    call's iterator pins the database), so an open of the same path right after was refused
    as "in use".

    Contract:

    - ``run(fn, *args)`` is ``in_thread(fn, *args)`` with the call counted from now (queued)
      until ``fn`` has returned in its thread, or the executor dropped it unstarted (shut
      down with ``cancel_futures=True``: ``fn`` never runs, the caller gets
      ``CancelledError``; else every later close waited for it in vain, the whole
      ``CLOSE_CALLS_WAIT``, and raised). Once ``begin_close()`` was called, a call not
      started yet is refused: ``fn`` is not called (``refused(*args)`` is, to release what
      the arguments hold, as for a call the executor refused or dropped) and the caller
      gets ``StorageError`` "<what> at <path>: closed", as the store's other calls do.
      A call still queued when its event loop is closed, or stopped (not running: a
      ``run_until_complete`` that returned with the call's task pending), is given up by the
      close at once, or within ``QUEUED_POLL`` of the loop's stop (the loop cannot learn
      that its executor dropped it, or not until it runs again): ``refused(*args)`` is
      called then, and the call, should its executor still start it, is refused. (Nothing
      queued runs once the close began, so the close need not wait for such a call: on a
      running loop it waits, as the call is refused there soon.)
    - ``enter(name)`` / ``leave(token)``: count a call the caller runs on its own thread
      (a synchronous read: the state machine's ``get`` and ``data``, which any thread may
      call; a log read of a few entries on its caller's loop), refused as ``run`` once the
      close began. One lock and two dict operations each.
    - ``hold()``: a context manager counting the caller's own work on the loop across its
      awaits (e.g. iterators made for several reads in turn), refused as ``run`` once the
      close began. A close in the same thread (``close()`` called on the loop, the work
      suspended under it) cannot wait for it: it calls the hold's ``release`` instead, so
      that what the work holds (its images) does not keep RocksDB's lock after the close.
    - ``wait_idle()`` (from ``close()``; it calls ``begin_close()`` too) blocks until no
      counted call runs, except those of the calling thread (a finalizer may close the store
      in a thread of its own call: it must not wait for itself), at most
      ``CLOSE_CALLS_WAIT`` seconds. Past that (a thread stuck for good: a disk that never
      answers) it gives the calls up, logged at WARNING naming the path, and returns the
      error the close reports (``None``: none left). The store then closes RocksDB under
      them: each fails with ``StorageError`` naming the path (rocksdict refuses a closed
      database: no crash, nothing written after the close), and RocksDB's lock stays held
      until the last one has ended. An exception raised in the wait (``KeyboardInterrupt``:
      Ctrl-C during a sync ``close()``) ends it as the bound does; the close calls
      ``give_up`` then, completes, and raises that exception (a store left marked closed
      with RocksDB open did nothing at a later close, its lock held for good).

    Thread-safe. Holds no reference to its store (a store collected unclosed is closed by its
    ``__del__``)."""

    __slots__ = ("_what", "_path", "_closed_why", "_lock", "_cond", "_calls", "_releases", "_next", "closing",
                 "_abandoned", "_warned")

    def __init__(self, what: str, path: str, closed_why: str) -> None:
        self._what = what
        self._path = path
        self._closed_why = closed_why
        # ``_lock`` is ``_cond``'s, taken as it is where nothing waits (``with`` on a C lock:
        # no Python frame per call, ``enter``/``leave`` being on the reads' fast path).
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # Invariant: every call counted and not finished: token -> (thread ident running it,
        # ``None`` while it is queued; its name; while queued, ``(its loop, refused, args)``
        # for a close to give it up with when the loop has closed, else ``None``).
        self._calls: dict[int, tuple[int | None, str, _Queued | None]] = {}
        # The ``release`` of each ``hold`` that has one, by token (a subset of ``_calls``).
        self._releases: dict[int, Callable[[], object]] = {}
        self._next = 0
        # ``begin_close()`` was called: the store takes no new call. (A plain attribute, read
        # by the stores' every call; set under ``_cond``.) Invariant: a waiter on ``_cond``
        # (``wait_idle``) exists only once it is set, so ``_leave`` notifies only then.
        self.closing = False
        # ``wait_idle`` gave up on a call: calls finishing from now on ran under a close.
        self._abandoned = False
        # ``give_up`` logged its WARNING (a handler had the record), or is logging it now: a
        # later ``give_up`` of the same close (after an interrupt, ``close_after_calls``)
        # returns its error without logging it again. Set back when an interrupt came
        # before any handler had the record (``_warn_once``).
        self._warned = False

    @property
    def abandoned(self) -> bool:
        """Whether ``wait_idle`` gave calls up: RocksDB is closed (or being closed) under the
        calls still running, whose reads may come back short or fail for that alone."""
        return self._abandoned

    def closed_error(self) -> StorageError:
        """The ``StorageError`` of a call refused because the store is closed (or closing)."""
        return StorageError(f"using {self._what} at {self._path!r}", RuntimeError(self._closed_why))

    def begin_close(self) -> None:
        """From now on every new call is refused (``closed_error``). Idempotent."""
        with self._cond:
            self.closing = True

    def _enter(self, name: str, ident: int | None, release: Callable[[], object] | None = None,
               queued: _Queued | None = None) -> int:
        with self._cond:
            if self.closing:
                raise self.closed_error()
            token = self._next
            self._next += 1
            self._calls[token] = (ident, name, queued)
            if release is not None:
                self._releases[token] = release
            return token

    def _leave(self, token: int) -> None:
        with self._lock:
            del self._calls[token]
            if self.closing:
                self._cond.notify_all()

    def enter(self, name: str) -> int:
        """Count the call ``name`` the caller runs now on its own thread, until ``leave``
        with the token returned; ``closed_error`` (nothing counted) once the close began.
        The caller leaves in a ``finally``."""
        with self._lock:
            if self.closing:
                raise self.closed_error()
            token = self._next
            self._next = token + 1
            self._calls[token] = (_get_ident(), name, None)
        return token

    leave = _leave
    """The call of a token ``enter`` returned has ended."""

    @contextlib.contextmanager
    def hold(self, name: str, release: Callable[[], object] | None = None) -> Iterator[None]:
        """Count the caller's own work (``name``) until the block ends; ``closed_error`` at
        once when the close began. ``release``: called by a close in this same thread (a
        ``close()`` on the loop, under the block suspended at an await) that cannot wait
        for the block, once the other threads' calls have ended, to release what the work
        holds that pins the database (its images not being read); the work, resumed after
        the close, must take it as released (it finds ``closing`` set)."""
        token = self._enter(name, threading.get_ident(), release)
        try:
            yield
        finally:
            with self._cond:
                self._releases.pop(token, None)
                self._leave(token)

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        discard: Callable[[T], object] | None = None,
        refused: Callable[..., object] | None = None,
        taking: int | None = None,
    ) -> T:
        """``in_thread(fn, *args, discard=discard)``, counted (see the class docstring).
        ``taking``: a token of ``enter`` whose count this call takes over (what its caller
        made of the store on its own thread, e.g. an image, goes to ``fn``): left once this
        call is counted, or once it is refused and ``refused(*args)`` has run, so a close
        never finds the two uncounted between them (it closed RocksDB with the image alive,
        RocksDB's lock held after the close)."""
        name = getattr(fn, "__qualname__", None) or repr(fn)
        try:
            token = self._enter(name, None, queued=(asyncio.get_running_loop(), refused, args))
        except StorageError:
            try:
                if refused is not None:
                    refused(*args)
            finally:
                if taking is not None:
                    self._leave(taking)
            raise
        if taking is not None:
            self._leave(taking)

        def call(*a: Any) -> T:
            with self._cond:
                given_up = token not in self._calls  # (by a close, its loop closed: refused already)
                if not given_up:
                    self._calls[token] = (threading.get_ident(), name, None)
                go = not self.closing
            if given_up:
                raise self.closed_error()
            try:
                if not go:
                    if refused is not None:
                        refused(*a)
                    raise self.closed_error()
                try:
                    return fn(*a)
                except Exception as e:
                    if self._abandoned and not isinstance(e, StorageError):
                        raise StorageError(
                            f"{name} in {self._what} at {self._path!r}: the store was closed while the call still ran "
                            "in its worker thread", e) from e
                    raise
            finally:
                self._leave(token)

        call.__qualname__ = name
        try:
            # ``dropped``: the executor dropped ``call`` unstarted (shut down with
            # ``cancel_futures``), so it never leaves by itself.
            return await in_thread(call, *args, discard=discard, dropped=lambda: self._unstarted(token, refused, args))
        except asyncio.CancelledError:
            raise  # (``call`` leaves when it ends, or ``dropped`` when it never starts)
        except BaseException:
            # Done: ``call`` has left, unless the executor refused it (the loop is closing).
            self._unstarted(token, refused, args)
            raise

    def _unstarted(self, token: int, refused: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
        """A call that never reached a thread (the executor refused it, or dropped it before
        it started: ``call`` never runs; or it is queued on a loop that closed) leaves the
        count, and ``refused(*args)`` releases what its arguments hold (an image pins the
        database until it is released; left to the garbage collector, the lock stayed held
        after the close). Nothing for a call that started: it leaves by itself. Any thread."""
        with self._cond:
            if token not in self._calls or self._calls[token][0] is not None:
                return
            self._leave(token)
        if refused is not None:
            try:
                refused(*args)
            except Exception:  # (in a callback, the caller's error path or a close: logged, not raised)
                log.exception("releasing the arguments of a call of %s at %r that never ran", self._what, self._path)

    def _give_up_orphans(self) -> None:
        """Give up the calls still queued on a loop that has closed or is not running
        (``_unstarted``): the loop cannot learn that its executor dropped one (a closed loop
        never, a stopped one not before it runs again: the close waited ``CLOSE_CALLS_WAIT``
        for it, then raised), and one its executor still starts is refused (``call``), as
        every call that starts once the close began is. Under ``_cond``, which it releases
        meanwhile."""
        orphans = [(t, q) for t, (ident, _, q) in self._calls.items()
                   if ident is None and q is not None and (q[0].is_closed() or not q[0].is_running())]
        if orphans:
            self._cond.release()
            try:
                for token, (_, refused, args) in orphans:
                    self._unstarted(token, refused, args)
            finally:
                self._cond.acquire()

    def wait_idle(self) -> RuntimeError | None:
        """Block until no counted call runs except the calling thread's own, at most
        ``CLOSE_CALLS_WAIT`` seconds (and take no new call from now on), then ``give_up``.
        Calls queued on a loop that has closed or stopped are given up at once
        (``_give_up_orphans``).
        An exception raised in the wait (``KeyboardInterrupt``) leaves it: the caller
        calls ``give_up`` (see the class docstring)."""
        here = threading.get_ident()
        deadline = time.monotonic() + CLOSE_CALLS_WAIT
        with self._cond:
            self.closing = True
            while True:
                self._give_up_orphans()
                if not self._others(here) or (rest := deadline - time.monotonic()) <= 0:
                    break
                self._cond.wait(min(rest, QUEUED_POLL))
        return self.give_up(f"{CLOSE_CALLS_WAIT:g}s after the close began")

    def counts_thread(self, ident: int) -> bool:
        """Whether a call of the thread ``ident`` is counted (running there: ``enter``,
        ``hold``, a call of ``run`` in its worker thread). Thread-safe."""
        with self._lock:
            return any(t == ident for t, _, _ in self._calls.values())

    def _others(self, here: int) -> list[str]:
        """The names of the counted calls not of the thread ``here``. Under ``_cond``."""
        return [name for ident, name, _ in self._calls.values() if ident != here]

    def _take_release(self, token: int) -> Callable[[], object] | None:
        """The ``release`` of the hold ``token``, taken out of the count (each is called at
        most once); ``None`` when it was taken already, or its hold has ended."""
        with self._cond:
            return self._releases.pop(token, None)

    def _release_all(self, tokens: list[int]) -> None:
        """Call the ``release`` of each hold of ``tokens`` (this thread's) not released yet.
        An ``Exception`` of one is logged; anything else (``KeyboardInterrupt``: Ctrl-C in a
        sync close), raised by one or arriving between two, is raised once every other has
        been called. (It ended the loop: the holds after it were never released, their
        images pinned the database, and RocksDB's lock stayed held after the close.)"""
        interrupt: BaseException | None = None
        while True:
            try:
                for token in tokens:  # (again after an interrupt: the taken ones are skipped)
                    try:
                        release = self._take_release(token)
                        if release is not None:
                            release()
                    except Exception:  # (the close goes on; the work fails when it resumes)
                        log.exception("closing %s at %r: releasing what a call of this thread holds",
                                      self._what, self._path)
                break
            except BaseException as e:  # noqa: BLE001 - raised below, once every hold is released
                interrupt = interrupt or e
        if interrupt is not None:
            raise interrupt

    def give_up(self, when: str) -> RuntimeError | None:
        """Take no new call, give up the calls of other threads still counted, and call the
        ``release`` of the calling thread's own holds (``hold``). ``None`` when no call of
        another thread is left; otherwise the calls are returned as the error the close
        reports (``when``: when they were given up, for the message), and logged at WARNING,
        naming the store's path, by the first ``give_up`` that gets that far (once per
        store). An interrupt (``KeyboardInterrupt``) in a ``release``, or in the logging, is
        raised once every release has been called (``_release_all``); the caller
        (``close_after_calls``) calls ``give_up`` again then, which calls no release twice
        and logs no WARNING twice (an interrupt while the record was written logged it a
        second time), and logs the WARNING an interrupt kept from every handler
        (``_warn_once``: marked logged before the call, it was lost for good)."""
        here = threading.get_ident()
        with self._cond:
            self.closing = True
            left = self._others(here)
            own = [t for t in self._releases if self._calls[t][0] == here]
            if left:
                self._abandoned = True
        # This thread's own holds cannot end before the close returns: what they hold goes
        # now (else RocksDB's lock stayed held after the close).
        self._release_all(own)
        if not left:
            return None
        why = (f"{len(left)} call(s) of the store ({', '.join(left)}) still ran in worker threads {when}: RocksDB is "
               "closed under them (they fail with StorageError), and its lock stays held until they end")
        self._warn_once(why)
        return RuntimeError(why)

    def _warn_once(self, why: str) -> None:
        """Log ``why`` at WARNING, naming the store, once per store: not again once a handler
        has had the record, and not lost to an interrupt (``KeyboardInterrupt``) raised
        before any had it (between the claim and the call, or in the logging machinery before
        a handler formats it): the claim is given back then, and the caller's retried
        ``give_up`` logs it. An interrupt raised once a handler formatted the record (while it
        is written) keeps the claim: a second copy of a record already (partly) written is
        what the retry must not add."""
        message = _Formatted(why)
        claimed = False
        try:
            with self._cond:
                # (``claimed`` first: an interrupt between the two stores leaves nothing claimed.)
                claimed = not self._warned
                self._warned = True
            if claimed:
                log.warning("closing %s at %r: %s", self._what, self._path, message)
        except BaseException:  # (raised again at once)
            if claimed and not message.formatted:
                with self._cond:
                    self._warned = False
            raise

