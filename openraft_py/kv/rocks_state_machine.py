"""``RocksStateMachine``: the key-value example's durable state machine, on RocksDB.

It applies the key-value commands of ``openraft_py.storage.memory`` (``KvSet`` /
``KvDelete`` / ``KvCas`` / ``KvGet``) with the same ``apply_kv`` as ``MemStateMachine``, so
the two answer alike. One column family ``sm`` holds data keys ``b"d" + key`` and the meta keys
``b"m..."`` (applied log id, stored membership, format marker, owner record), so one RocksDB snapshot is a
consistent image of data and meta together. An ``apply`` batch of several entries first reads
the keys of its commands in one multi-get (every command reads its key's current value; the
column family has whole-key bloom filters, so a read of an absent key is cheap, for about 1.25
bytes per key in its table files and 1.3 MiB per memtable). Each batch is then one
``WriteBatch`` written without fsync, on the event loop (``APPLY_INLINE_MAX``,
``APPLY_INLINE_MAX_BYTES``) or in a worker thread, there in pieces of at most
``APPLY_WRITE_MAX_BYTES`` (the log is the durable record: a restarted node re-applies from
it; the state is always a prefix of the applied batches). Snapshots are files under
``<path>/snapshots``, made durable (and preceded by a WAL sync of the state they cover) before
they become current.

It opens its database with the log store's machinery (``openraft_py.storage.rocks``: the
format marker, the acknowledged mark, the handle hygiene); the durability design is
``docs/design/durability.md``. ``openraft_py.kv.commands.KvStateMachine`` adds the service's
compare-and-delete on top. Importing this module imports no aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Self, cast

import msgspec
from rocksdict import IngestExternalFileOptions, Rdict, SstFileWriter, WriteBatch

from .._core import apply_kv_sets, normal_data_bytes
from ..errors import StorageError
from ..storage.memory import KvCommand, KvMap, apply_kv, apply_kv_effect, decode_kv
from ..storage.rocks.damage import damaged_read, is_rocksdb_corruption
from ..storage.rocks.db import (
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
    table_file_options,
    write_options,
)
from ..storage.rocks.files import durable_temp, naming, replace_durably
from ..storage.rocks.owner import StoreOwner, decode_owner, owner_to_record
from ..types import (
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    Membership,
    NodeId,
    Normal,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
)
from ..validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM
from .rocks_snapshot import SNAPSHOT_CHUNK_BYTES, SNAPSHOT_MAGIC, check_snapshot, read_snapshot_pairs, write_snapshot

__all__ = ["RocksStateMachine", "SM_FORMAT", "SNAPSHOT_CHUNK_BYTES", "SNAPSHOT_MAGIC", "state_machine_use"]

log = logging.getLogger("openraft_py.kv.state_machine")

_enc = msgspec.msgpack.Encoder()
_dec_logid = msgspec.msgpack.Decoder(LogId | None)
_dec_stored = msgspec.msgpack.Decoder(StoredMembership)
_dec_any = msgspec.msgpack.Decoder()

SM_FORMAT = {"format": "openraft-py-kv-sm", "version": 1}
"""The marker a ``RocksStateMachine`` writes on creation (``mformat``)."""

# The database: ONE column family, so one RocksDB snapshot is an image of data and meta
# together. Invariant: every key is a data key (range [_DATA, _DATA_END)) or a meta key
# (range [_META, _META_END)), and the meta range sorts after the data range.
_SM_CF = "sm"
_DATA = b"d"  # data keys: b"d" + utf-8 key; values: utf-8 value
_DATA_END = b"e"
_META = b"m"
_META_END = b"n"
_M_FORMAT = b"mformat"  # SM_FORMAT
_M_APPLIED = b"mapplied"  # LogId | None: the last applied
_M_MEMBERSHIP = b"mmembership"  # StoredMembership: the last applied membership
_M_ACKMARK = b"mackmark"  # present: the database has an OPENRAFT-ACKED file (see AckMark)
_M_OWNER = b"mowner"  # StoreOwner: whose state machine this is (check_owner); never in a snapshot


def _not_utf8(key: str, e: UnicodeDecodeError) -> ValueError:
    """The error for the stored value of ``key`` that is not utf-8 (this state machine writes
    only utf-8: the database was written by something else)."""
    return ValueError(f"the stored value of the key {key!r} is not utf-8: {e}")


def _stored_str(key: str, raw: bytes) -> str:
    """The stored value ``raw`` of ``key`` as a ``str``; ``ValueError`` naming the key when it is
    not utf-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise _not_utf8(key, e) from e


def _decode_meta(key: bytes, raw: bytes, dec: msgspec.msgpack.Decoder[Any]) -> Any:
    """The stored meta value ``raw`` of ``key``; ``ValueError`` naming the key when it does not
    decode."""
    try:
        return dec.decode(raw)
    except msgspec.DecodeError as e:
        raise ValueError(f"the stored {key.decode()!r} does not decode: {e}") from e


_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def _snapshot_file_name(snapshot_id: str) -> str:
    """The name of the file under ``snapshots/`` that holds the snapshot ``snapshot_id``:
    ``<id>.snap`` when the id is a plain name (letters, digits, ``_``, ``-`` and ``.``, not
    first; at most 100 characters), as every id this state machine builds is. Any other id
    (a leader's snapshot id is any string) is hashed: ``id-<sha256 of its utf-8>.snap``. The
    id was the file name as it came: ``../x`` wrote the file outside the directory, and an id
    with a ``/``, a NUL or too long failed the install after the state was replaced."""
    if _SAFE_ID.fullmatch(snapshot_id):
        return f"{snapshot_id}.snap"
    return f"id-{hashlib.sha256(snapshot_id.encode('utf-8', 'surrogatepass')).hexdigest()}.snap"


def _not_a_file(path: str) -> str | None:
    """What is at ``path`` when it is not a regular file (``"is missing"``, ``"is a
    directory"``, ...), else ``None``. Checked before an open: a named pipe would block it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is missing"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a named pipe"
    return "is not a regular file"


def _close_snapshot(snap: Snapshot | None) -> None:
    """Close the file of a snapshot nobody will read (its caller was cancelled)."""
    if snap is not None:
        snap.data.close()


class _SnapRecord(msgspec.Struct):
    """What ``<path>/snapshots/current.meta`` holds (as read: ``_read_snap_record``)."""

    meta: SnapshotMeta
    file: str


class _StoredSnapRecord(msgspec.Struct):
    """``current.meta`` as stored: the ``_SnapRecord`` fields, ``meta`` kept as its encoded
    bytes, and ``crc``, the CRC-32 of those bytes followed by ``file`` in UTF-8. A plain file
    has no checksum of its own (the database's blocks have theirs): a flipped bit that still
    decoded was taken as the truth, a snapshot index one off (a follower installing it then
    applied an entry twice, or never). ``crc`` is ``None`` in a record of an earlier version
    (checked for consistency alone: ``_record_inconsistency``); a version without the field
    ignores it."""

    meta: msgspec.Raw
    file: str
    crc: int | None = None


_dec_snaprec = msgspec.msgpack.Decoder(_SnapRecord)
_dec_stored_snaprec = msgspec.msgpack.Decoder(_StoredSnapRecord)
_dec_snapmeta = msgspec.msgpack.Decoder(SnapshotMeta)


def _snap_record_crc(meta: bytes, file: str) -> int:
    return zlib.crc32(file.encode("utf-8", "surrogatepass"), zlib.crc32(meta))


def _encode_snap_record(rec: _SnapRecord) -> bytes:
    """The bytes of ``current.meta`` naming ``rec`` (with its checksum)."""
    meta = _enc.encode(rec.meta)
    return _enc.encode(_StoredSnapRecord(msgspec.Raw(meta), rec.file, _snap_record_crc(meta, rec.file)))


def _read_snap_record(raw: bytes) -> _SnapRecord:
    """The record ``current.meta`` holds: ``msgspec.DecodeError`` if it does not decode,
    ``ValueError`` saying why if it decodes into a record that cannot have been written (its
    checksum, or one of its values, is wrong)."""
    stored = _dec_stored_snaprec.decode(raw)
    meta_raw = bytes(stored.meta)
    if stored.crc is not None and stored.crc != _snap_record_crc(meta_raw, stored.file):
        raise ValueError("its checksum does not match its content")
    rec = _SnapRecord(_dec_snapmeta.decode(meta_raw), stored.file)
    why = _record_inconsistency(rec)
    if why is not None:
        raise ValueError(why)
    return rec


def _in_bounds(lid: LogId) -> bool:
    return 0 <= lid.term <= MAX_TERM and 0 <= lid.index <= MAX_INDEX


def _record_inconsistency(rec: _SnapRecord) -> str | None:
    """What in ``rec`` no written record holds (``None`` if nothing): a log id out of bounds
    (the term -2 of a flipped ``0x01``), a membership logged after the snapshot's last entry,
    a file name other than the one its snapshot id is given (``_snapshot_file_name``; an
    earlier version named it ``<id>.snap`` whatever the id), a node id out of bounds."""
    meta = rec.meta
    last = meta.last_log_id
    if last is not None and not _in_bounds(last):
        return f"its last log id {last!r} is out of bounds"
    mlid = meta.last_membership.log_id
    if mlid is not None and (not _in_bounds(mlid) or last is None or mlid > last):
        return f"its membership's log id {mlid!r} is out of bounds or past its last log id {last!r}"
    if rec.file not in (_snapshot_file_name(meta.snapshot_id), f"{meta.snapshot_id}.snap"):
        return f"its file name {rec.file!r} is not the one of its snapshot id {meta.snapshot_id!r}"
    membership = meta.last_membership.membership
    ids = set(membership.nodes)
    for config in membership.configs:
        ids.update(config)
    if any(not 0 <= nid <= MAX_NODE_ID for nid in ids):
        return f"a node id of its membership is out of bounds: {sorted(ids)}"
    return None


GIL_SHARE_PAIRS = 1000
"""A snapshot build or install (each in a worker thread, a loop over every key in Python)
releases the GIL for a moment (``time.sleep(0)``) after this many key-value pairs, so the
event loop's thread, when it wakes, gets the GIL within a fraction of a millisecond. Without
it, the loop waited for the interpreter's switch interval (5 ms) at every wake-up while a
build ran: on the node building, each replication round took several times longer. Measured
(a 1 ms timer on the loop during a build of 300,000 keys, 6 builds each way): lag median
2.1-4.3 ms without, 0.27-0.76 ms with, the build 20-50% longer in wall time since the loop
now gets its share (``bench/snapshot_stall.py --rocks``)."""


def _data_pairs(image: BoundedIter) -> Iterator[tuple[bytes, bytes]]:
    """The data of ``image`` (the whole column family, see ``_RocksSnapshotBuilder``):
    ``(key without its prefix, value)`` in key order, sharing the GIL (``GIL_SHARE_PAIRS``).
    Raises when the scan stops on an error (e.g. a damaged file) rather than at the end of
    the data."""
    n = 0
    for k, v in image.scan(_DATA):
        if k >= _DATA_END:  # the meta range, after the data: the image's bound is its end
            return
        yield k[1:], v
        n += 1
        if n == GIL_SHARE_PAIRS:
            n = 0
            time.sleep(0)


_FLUSH_POLLS = 30_000
"""How many times (1 ms apart) an install checks whether its memtable flush is done."""


class _BatchKv:
    """The ``KvMap`` that ``apply_kv`` uses during one apply batch: reads see the batch's own
    writes first, then RocksDB; writes go into the batch (and its overlay)."""

    __slots__ = ("_cf", "_wb", "_h", "_overlay", "_read")

    def __init__(self, cf: Rdict, wb: WriteBatch, h: Any) -> None:
        self._cf = cf
        self._wb = wb
        self._h = h
        self._overlay: dict[str, str | None] = {}  # this batch's writes (None: deleted)
        # Values read ahead from RocksDB (``read_ahead``): what the database held before this
        # batch, so they are right for every key the overlay does not hold.
        self._read: dict[str, bytes | None] = {}

    def read_ahead(self, keys: list[str], data_keys: list[bytes] | None = None) -> None:
        """Read those of ``keys`` not read yet from RocksDB in one multi-get (one call and
        one sorted lookup instead of one ``get`` each). The batch is not written before its
        end, so what RocksDB holds now is what it held before the batch. ``data_keys``, when
        given, are the RocksDB keys of ``keys`` (``_DATA`` + UTF-8, item for item), used as
        they are when nothing was read yet."""
        read = self._read
        if read:
            missing = [k for k in keys if k not in read]
            data_keys = None
        else:
            missing = keys
        if missing:
            if data_keys is None:
                data_keys = [_DATA + k.encode() for k in missing]
            # Given a list, rocksdict's ``get`` is a multi-get: a list of values (or None).
            values = cast("list[bytes | None]", self._cf.get(cast("list[str | int | float | bytes | bool]", data_keys)))
            read.update(zip(missing, values))

    def apply_sets(self, entries: list[Entry], start: int, responses: list[Any] | None) -> int:
        """Apply the run of ``KvSet`` commands at ``entries[start:]`` (``apply_kv_sets``, the
        ``_core`` kernel); return where the run stops. The same writes, reads and responses
        as ``apply_kv`` (``responses`` not ``None``) or ``apply_kv_effect`` one entry at a
        time, with one ``put`` per key of the run (its last value).

        The kernel also hands over each key's RocksDB key and its value as bytes (``puts``,
        cut from the command's data): no ``str.encode`` per key here. ``puts`` lists the
        run's keys in the order ``run`` does (both keep the first set's place of a key, and
        a key's bytes are its strict UTF-8, one for one), so its keys are ``run``'s data
        keys, item for item.

        Without ``responses`` (a follower's apply) the kernel makes no ``str`` at all (its
        ``kv`` is ``None``): the run's writes reach the overlay, decoded from ``puts``, only
        when commands follow the run in this batch (the overlay is read by them alone)."""
        puts: dict[bytes, bytes] = {}
        put = self._wb.put
        h = self._h
        overlay = self._overlay
        if responses is None:
            stop = apply_kv_sets(None, entries, start, Normal, None, None, puts, _DATA)
            for data_key, value in puts.items():
                put(data_key, value, h)
            if puts and stop < len(entries):
                n = len(_DATA)
                overlay.update({k[n:].decode(): v.decode() for k, v in puts.items()})
            return stop
        run: dict[str, str] = {}
        mark = len(responses)
        stop = apply_kv_sets(run, entries, start, Normal, responses, None, puts, _DATA)
        if not run:
            return stop
        # The kernel answered from ``run`` alone: ``None`` exactly for the first set of each
        # key in the run (values are never ``None``), in the order ``run`` lists its keys.
        # Those get the value the key had before the run: the overlay's, else what
        # ``read_ahead`` read (``get`` inlined: this runs once per write on a leader).
        firsts = list(run)
        if overlay:
            self.read_ahead([k for k in firsts if k not in overlay])
        else:
            self.read_ahead(firsts, list(puts))
        read = self._read
        prev = [
            overlay[k] if k in overlay else None if (raw := read[k]) is None else _stored_str(k, raw)
            for k in firsts
        ]
        if prev.count(None) != len(prev):  # else every answer is the ``None`` already there
            it = iter(prev)
            for j in range(mark, len(responses)):
                if responses[j] is None:
                    responses[j] = next(it)
        overlay.update(run)
        for data_key, value in puts.items():
            put(data_key, value, h)
        return stop

    def get(self, key: str) -> str | None:
        overlay = self._overlay
        if key in overlay:
            return overlay[key]
        read = self._read
        raw = read[key] if key in read else self._cf.get(_DATA + key.encode())
        if raw is None:
            return None
        try:  # (inline: on every set's path)
            return raw.decode()
        except UnicodeDecodeError as e:
            raise _not_utf8(key, e) from e

    def __setitem__(self, key: str, value: str) -> None:
        self._overlay[key] = value
        self._wb.put(_DATA + key.encode(), value.encode(), self._h)

    def pop(self, key: str, default: None, /) -> str | None:
        prev = self.get(key)
        self._overlay[key] = None
        self._wb.delete(_DATA + key.encode(), self._h)
        return prev


APPLY_INLINE_MAX = 256
"""``RocksStateMachine.apply`` runs a batch of at most this many entries on the event loop
(after one loop turn) while no snapshot build runs. Applying is mostly Python work holding
the GIL (decoding, building the batch; rocksdict keeps it during ``write``), so a worker
thread barely ran it in parallel with the loop and added its hop: two thread wake-ups and
GIL hand-offs, measured at 0.1-0.16 ms of a 1-writer write's latency over TCP and 1.3-1.5 us
of CPU per write per node at 64-256 writers (``bench/tcp.py``; docs/design/performance.md).
A batch this size takes about 0.5 ms on the loop. Larger batches (a follower catching up),
and every batch while a build streams the image in its thread, go to the worker thread:
there the interpreter's switch interval bounds how long the loop waits for the GIL, and a
loop applying continuously would starve the build, which needs the GIL too."""

APPLY_INLINE_MAX_BYTES = 512 * 1024
"""... and the data of the batch's normal entries add up to at most this many bytes (as the
log store's ``WRITE_NOW_MAX_BYTES``); a larger batch goes to the worker thread whatever its
entry count. Applying is mostly copying then: about 2 ms of CPU per MB (decoding the
commands, building the batch, RocksDB's write), so a learner catching up with 64 kB values
held its loop 16-28 ms of CPU per batch (100-250 ms late on a busy 2-core machine), with 1 MB
values for up to 256 MB. Counting the bytes is one kernel call (``normal_data_bytes``): 46 ns
for a batch of one entry, 11 ns per entry for 256, against about 20 us of CPU per write over
TCP."""

APPLY_WRITE_MAX_BYTES = 1024 * 1024
"""In the worker thread, a batch whose normal entries' data add up to more than this many
bytes is applied as several consecutive batches of at most this size (or of one larger
entry), each ONE atomic ``WriteBatch`` with the applied id of its own last entry, the GIL
released between two. rocksdict holds the GIL through a ``write``, so one write of a batch
of 8 MB (8 values of 1 MB, 128 of 64 kB: a follower catching up) held the event loop for all
of it, about 17 ms of CPU (90-130 ms on a busy machine): the thread made no difference. The
responses are the same (each piece reads what the earlier ones wrote); after a crash the
state is the one after some piece, as after some earlier batch."""


WRITE_AFTER_PASSES = 6
"""``apply`` on the loop answers first and writes its batch this many loop passes later
(``call_soon`` chained). Its callers wait for the responses, not for the write: on a leader
the writers it answers submit their next commands, the Raft core appends them and the
transport sends the AppendEntries within a few passes, and RocksDB's write of the batch
(its memtable inserts, the largest part of an apply) then runs while the leader waits for
the followers instead of before. Until then the batch is the "deferred" one: every other
operation (``apply``, ``get``, ``data``, a snapshot build or install, ``close``) writes it
first, so nothing ever reads the database without it, and batches reach RocksDB in apply
order. A crash before the write loses no more than any unsynced apply batch (the log is the
durable record). Only a batch of at least ``DEFER_WRITE_MIN_ENTRIES`` entries waits.
Measured in ``bench/tcp.py`` (RocksDB state machines, fsync on; ``docs/design/performance.md``,
twenty-ninth round): at 256 writers ahead in 18 of 20 alternate pairs (three sets, medians
9-19% higher); at 1 and 64 writers, where the batches are small, no gain (behind in 6 of 10
and 3 of 4 pairs)."""

DEFER_WRITE_MIN_ENTRIES = 128
"""The smallest batch whose write ``apply`` on the loop defers (``WRITE_AFTER_PASSES``). A
smaller one is written before ``apply`` returns: its write is short, and deferred it gained
nothing measurable."""


APPLY_NO_YIELD_MAX = 32
"""``apply`` on the loop yields one loop turn first only once this many entries were applied
there since the last turn: a small batch (one per Raft core pass on a write's path) is
applied at once, while a caller applying in a loop still lets the other tasks run every
this many entries. A small batch costs about one loop callback (tens of microseconds), and
on a write's path (the leader applies, then answers its client) the turn cost more than the
apply (20-40 us in the hop trace of ``bench/tcp.py`` at 1 writer: the turn runs whatever
else is ready first)."""


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
        sm._write_deferred()  # the image holds every applied batch
        # ONE iterator is the image: RocksDB reads an iterator created without an explicit
        # snapshot from an implicit snapshot taken at its creation (pinned until it is
        # dropped; re-seeking keeps it), and each apply batch is one WriteBatch, so the
        # image is the state after some apply batch. NB: not ``cf.snapshot().items()``:
        # rocksdict (0.3.x) sets the snapshot on a copy of the read options and iterates
        # the live data (only ``snapshot[key]`` honours it), which let a build read data
        # newer than its meta. RocksDB has one upper bound per iterator: it ends the meta
        # range, the last one.
        image = BoundedIter(sm._cf, _META_END)
        sm._building += 1  # apply stays off the loop meanwhile (see APPLY_INLINE_MAX)
        try:
            return await sm._calls.run(sm._build_from, image, discard=_close_snapshot, refused=BoundedIter.close)
        finally:
            sm._building -= 1


class RocksStateMachine:
    """A durable key-value ``RaftStateMachine`` under the directory ``path`` (created when
    missing): the same commands and responses as ``MemStateMachine`` (``KvSet`` / ``KvDelete``
    / ``KvCas`` / ``KvGet`` from ``encode_kv``, applied by the one ``apply_kv``; other data is
    an opaque no-op answering ``None``).

    Layout: ``<path>/db`` (RocksDB, column family ``sm``) and ``<path>/snapshots`` (the current
    snapshot file ``<id>.snap``, see ``_snapshot_file_name``, and ``current.meta``).

    Durability:

    - ``apply``: data, last applied log id and stored membership go in ONE ``WriteBatch``
      (atomic; in the worker thread one per piece of at most ``APPLY_WRITE_MAX_BYTES``),
      written without fsync (in a worker thread; a small batch on the loop, see
      ``APPLY_INLINE_MAX``, where ``apply`` answers first and writes a large batch a few loop
      passes later, see ``WRITE_AFTER_PASSES``: anything that reads or replaces the state
      writes it first). After a crash the state is the one
      after some earlier apply batch (never a torn batch); Raft re-applies the rest from the
      log, which is durable up to the commit.
    - ``build_snapshot``: the image is one RocksDB iterator created between two apply
      batches (its implicit snapshot is a point-in-time view; meta and data are read through
      it alone), streamed to a temporary file in a worker thread (apply keeps running and
      never waits for the build), fsynced; the WAL
      is synced too (so the state the snapshot covers can not be lost once the log is purged
      up to it), then the file is renamed into place and ``current.meta`` replaced atomically.
      A crash before that rename leaves the previous snapshot current.
    - ``install_snapshot``: one table file, written in a worker thread from the received file
      (streamed: memory of one block, not of the state; see ``_write_install_table``), holds
      the new data, a deletion of every old key the snapshot lacks, the applied id and
      membership; it is ingested in one step (atomic: a crash leaves the old state or the new
      one), then the snapshot file becomes current as above. A crash between the two leaves the
      new state with the previous snapshot current (still consistent: it is older).

    Opening raises ``StorageError`` naming ``path`` when it is a plain file, a non-empty
    directory without ``db``, a foreign database (nothing is written to it), or a damaged one
    (a corrupted WAL record or file, or fewer writes recovered than its last durable point:
    see "Corruption" in ``docs/design/durability.md``), or when its current snapshot's file or
    ``snapshots/current.meta`` is not a regular file (missing, a directory, a named pipe), or
    ``current.meta`` does not decode (the message says what to remove; ``get_current_snapshot`` and ``get_current_snapshot_meta`` raise the same if that happens while
    it is open). ``close()`` / ``aclose()`` / ``async with``
    always release the database lock (``StorageError`` if RocksDB could not close cleanly); one
    collected unclosed is closed then, with a ``ResourceWarning`` naming its path (``__del__``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        what = "state machine"
        self.path = store_path(path, what)
        self._closed = True
        self._close_once = CloseOnce()  # (``close()``: the first closes, the others wait for it)
        if os.path.exists(self.path):
            if not os.path.isdir(self.path):
                raise StorageError(f"opening {what} at {self.path!r}", NotADirectoryError(f"{self.path} is not a directory"))
            db_path = os.path.join(self.path, "db")
            if os.path.lexists(db_path) and not os.path.isdir(db_path):
                # (was "foreign directory: no 'db' inside (found ['db', ...])")
                raise StorageError(f"opening {what} at {self.path!r}", NotADirectoryError(
                    f"{db_path} is not a directory (the state machine's database)"))
            found = os.listdir(self.path)
            if found == ["snapshots"] and not os.path.lexists(db_path):
                # Ours (the layout's other half), its database removed or lost: it was called
                # a "foreign directory", with no way out. Opened as it is, a new empty
                # database would sit beside a current snapshot it never built.
                raise StorageError(f"opening {what} at {self.path!r}", FileNotFoundError(
                    f"{db_path} is missing, though {os.path.join(self.path, 'snapshots')} holds the state machine's snapshots: its "
                    f"database was removed or lost. Put it back as it was; otherwise remove {self.path} as a whole: "
                    "the node then applies its log again from the start, if its log still holds it (if the log was "
                    "purged the node refuses to start, saying so: then treat it as a node that lost its disk)"))
            if found and not os.path.isdir(db_path):
                raise StorageError(
                    f"opening {what} at {self.path!r}",
                    ValueError(f"foreign directory: no 'db' inside (found {sorted(os.listdir(self.path))[:10]})"),
                )
        self._snapdir = os.path.join(self.path, "snapshots")
        # Point lookups: a set reads the key's previous value first, and a new key's read
        # misses (bloom filters make the miss cheap).
        db, mark = open_db(
            os.path.join(self.path, "db"), (_SM_CF,), _SM_CF, _M_FORMAT, _M_ACKMARK, SM_FORMAT, what, point_lookup_cfs=(_SM_CF,)
        )

        def load() -> tuple[LogId | None, StoredMembership, StoreOwner | None]:
            # Its own frame: cleared on an error (see open_db).
            cf = db.get_column_family(_SM_CF)
            try:
                raw = cf.get(_M_APPLIED)
                applied = None if raw is None else _decode_meta(_M_APPLIED, raw, _dec_logid)
                raw = cf.get(_M_MEMBERSHIP)
                membership = EMPTY_STORED_MEMBERSHIP if raw is None else _decode_meta(_M_MEMBERSHIP, raw, _dec_stored)
                raw = cf.get(_M_OWNER)
                owner = None if raw is None else decode_owner(_M_OWNER, raw)
            finally:
                cf.close()
            return applied, membership, owner

        try:
            self._applied, self._membership, self._owner = load()
            if os.path.lexists(self._snapdir) and not os.path.isdir(self._snapdir):
                # (makedirs said "FileExistsError: [Errno 17] File exists: '.../snapshots'")
                raise NotADirectoryError(f"{self._snapdir} is not a directory (the state machine's snapshots)")
            os.makedirs(self._snapdir, exist_ok=True)
            self._current: _SnapRecord | None = self._load_current()
        except BaseException as e:
            clear_frames(e)
            release_db(db)
            del db
            mark.close()
            if isinstance(e, StorageError):
                raise
            if is_rocksdb_corruption(e):  # a damaged table file the reads above met
                raise corruption_error(os.path.join(self.path, "db"), what, e) from e
            raise StorageError(f"opening {what} at {self.path!r}", e) from e
        self._db = db
        self._mark = mark
        self._cf = db.get_column_family(_SM_CF)
        self._h = db.get_column_family_handle(_SM_CF)
        self._nosync = write_options(False)
        self._table_options = table_file_options(True)  # an install's table file (see _write_install_table)
        self._ingest_options = IngestExternalFileOptions()
        self._ingest_options.set_move_files(True)  # a hard link, not a copy
        self._snap_lock = threading.Lock()  # guards _current, _receiving and the files of snapshots/
        # The files ``begin_receiving_snapshot`` handed out that were neither kept (installed)
        # nor deleted yet (see ``_drop_abandoned_receives``).
        self._receiving: set[Any] = set()
        self._building = 0  # snapshot builds streaming their image in a worker thread
        # Entries applied on the loop without a loop turn since (``_loop_turned`` resets it).
        self._unyielded = 0
        # The batch an ``apply`` on the loop left to write (``WRITE_AFTER_PASSES``), and the
        # error of one whose write failed (raised by every later operation). The lock makes
        # taking the batch and writing it one step for any thread (``aclose`` runs ``close``
        # in a worker thread; ``get`` may be called from any thread).
        self._deferred: WriteBatch | None = None
        self._deferred_error: BaseException | None = None
        self._deferred_lock = threading.Lock()
        # Stops the node when a deferred write fails (``set_fatal_handler``; ``None``: no
        # node, the failure is raised by the next call only).
        self._fatal_handler: Callable[[BaseException], None] | None = None
        # The loop the handler was given on (the node's), where a read from any thread that
        # finds the database damaged calls it (``_read_failed``).
        self._fatal_loop: asyncio.AbstractEventLoop | None = None
        # The calls running in worker threads, which ``close()`` waits for (``StoreCalls``).
        self._calls = StoreCalls("state machine", self.path, "closed")
        self._closed = False

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Self:
        """Open the state machine in a worker thread.

        A caller cancelled meanwhile raises its ``CancelledError`` once the thread has ended,
        with the state machine it opened closed again (as ``RocksLogStore.open``): it was
        left for the garbage collector, RocksDB's lock held until then."""
        return await in_thread(cls, path, discard=cls.close)

    def _check_open(self) -> None:
        if self._closed or self._calls.closing:
            raise self._calls.closed_error()

    @property
    def owner(self) -> tuple[NodeId, str] | None:
        """``(node_id, cluster_name)`` of the node whose state machine this is
        (``check_owner``), or ``None`` before a node started on it (or made by an earlier
        version)."""
        o = self._owner
        return None if o is None else (o.node_id, o.cluster_name)

    async def check_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Make sure this state machine is node ``node_id``'s of cluster ``cluster_name``
        (the optional method of ``RaftStateMachine``; ``Raft.new`` calls it before it reads
        anything else from it). With no owner recorded (new, or made by an earlier version:
        adopted) it records this one, durably (a synced write of its own key, which no
        snapshot carries). Recorded for another node id or cluster name: ``StoreOwnerMismatch``,
        nothing written (a state machine of another cluster made the node discard its own
        log up to that state machine's applied id, acknowledged entries included).
        ``TypeError``/``ValueError`` for a ``node_id`` that is no node id or a
        ``cluster_name`` that is not a ``str`` or is empty."""
        self._check_open()
        subject = f"opening state machine at {self.path!r} for node {node_id}"
        record = owner_to_record(self._owner, node_id, cluster_name, subject, "state machine")
        if record is None:
            return
        # Taken now: a second call while this one waits (two nodes started at once on one
        # state machine object) must find it, not record its own node over it.
        self._owner = record
        try:
            await self._calls.run(self._write_owner, record)
        except BaseException:
            self._owner = None
            raise

    async def replace_owner(self, node_id: NodeId, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as this state machine's owner, over
        whatever was recorded, durably before this returns. For an offline tool on a stopped
        node's state machine only (``openraft_py.recovery.replace_owners``);
        ``TypeError``/``ValueError`` as ``check_owner``."""
        self._check_open()
        record = owner_to_record(None, node_id, cluster_name, "", "state machine")
        assert record is not None
        previous, self._owner = self._owner, record
        try:
            await self._calls.run(self._write_owner, record)
        except BaseException:
            self._owner = previous
            raise

    def set_fatal_handler(self, handler: Callable[[BaseException], None]) -> None:
        """Call ``handler(error)`` (on the loop) when a write this state machine deferred
        past the ``apply`` that answered fails (``WRITE_AFTER_PASSES``), or when a read
        (``get``, ``data``) finds the database damaged (on the loop running when the handler
        was given, whatever thread read): the optional method of ``RaftStateMachine``, which
        ``Raft.new`` calls with a handler that stops the node. The latest handler given is
        the one called."""
        self._fatal_handler = handler
        try:
            self._fatal_loop = asyncio.get_running_loop()
        except RuntimeError:  # given outside a loop: the deferred writes' handler only
            self._fatal_loop = None

    def _write_owner(self, record: StoreOwner) -> None:
        """Write the owner ``record``, synced (worker thread)."""
        wb = WriteBatch(raw_mode=True)
        wb.put(_M_OWNER, _enc.encode(record), self._h)
        self._db.write(wb, write_options(True))

    def _write_deferred(self, only: WriteBatch | None = None) -> None:
        """Write the deferred batch (``WRITE_AFTER_PASSES``), if any (if it is ``only``, when
        given). Raises ``StorageError`` when that write, or an earlier deferred one, failed:
        the database then lacks a batch that was applied (and answered), so nothing may read
        or write it any more."""
        with self._deferred_lock:
            wb = self._deferred
            if wb is not None and (only is None or wb is only):
                self._deferred = None
                try:
                    self._db.write(wb, self._nosync)
                except Exception as e:  # noqa: BLE001 - kept, and raised now and by every later call
                    # Kept without its traceback: no frame of it keeps anything alive.
                    self._deferred_error = e.with_traceback(None)
            if self._deferred_error is not None:
                raise StorageError(
                    f"using state machine at {self.path!r}: writing an applied batch failed", self._deferred_error
                ) from self._deferred_error

    def _deferred_due(self, loop: asyncio.AbstractEventLoop, passes: int, wb: WriteBatch) -> None:
        """On the loop: after ``passes`` more loop passes, write ``wb`` if it is still the
        deferred batch (something may have written it already, and deferred a later one)."""
        if passes > 0:
            loop.call_soon(self._deferred_due, loop, passes - 1, wb)
            return
        if self._deferred is not wb:
            return  # written already (by a read, the next apply, an install, close)
        try:
            self._write_deferred(wb)
        except StorageError as e:
            # Every later call raises it too; the node stops now, not at its next apply (a
            # leader taking no more writes kept leading, every read failing meanwhile).
            handler = self._fatal_handler
            if handler is None:
                log.error("%s", e)
            else:
                handler(e)  # the node logs it once, as it stops

    def _load_current(self) -> _SnapRecord | None:
        """Read ``current.meta`` and delete leftovers (temporary and superseded files)."""
        rec: _SnapRecord | None = None
        opening = f"opening state machine at {self.path!r}"
        meta_path = os.path.join(self._snapdir, "current.meta")
        if os.path.exists(meta_path):
            what = _not_a_file(meta_path)
            if what is not None:
                raise StorageError(opening, ValueError(
                    f"{meta_path} {what}, not the file that names the current snapshot: remove it (a new "
                    "snapshot is built when one is needed)"))
            with open(meta_path, "rb") as f:
                raw = f.read()
            try:
                rec = _read_snap_record(raw)
            except msgspec.DecodeError as e:
                # The data is intact (it is in the database): only the record naming the
                # snapshot file is lost, and the snapshot is rebuilt from the data.
                raise ValueError(f"{meta_path} does not decode: {e}: remove {meta_path} (a new snapshot is built "
                                 "when one is needed)") from e
            except ValueError as e:  # decoded, but damaged (a flipped bit): the same remedy
                raise ValueError(f"{meta_path} is damaged: {e}: remove {meta_path} (a new snapshot is built "
                                 "when one is needed)") from e
            what = _not_a_file(os.path.join(self._snapdir, rec.file))
            if what is not None:
                raise StorageError(opening, self._current_file_error(rec.file, what))
        for name in os.listdir(self._snapdir):
            if name != "current.meta" and (rec is None or name != rec.file):
                os.unlink(os.path.join(self._snapdir, name))
        return rec

    def _current_file_error(self, file: str, what: str) -> OSError:
        """The error for the current snapshot's ``file`` (under ``snapshots/``), which ``what``
        (``_not_a_file``), saying what to do."""
        path = os.path.join(self._snapdir, file)
        meta_path = os.path.join(self._snapdir, "current.meta")
        cls = FileNotFoundError if what == "is missing" else IsADirectoryError if what == "is a directory" else OSError
        return cls(f"the current snapshot's file {path} {what}: remove "
                   f"{'it and ' if what != 'is missing' else ''}{meta_path}, which names it (a new snapshot is built "
                   "when one is needed)")

    # -- RaftStateMachine

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)`` (after a reopen: as stored)."""
        return self._applied, self._membership

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries`` as ONE atomic ``WriteBatch`` (data + last applied + membership);
        one response per entry (see ``MemStateMachine``). In a worker thread (in pieces of at
        most ``APPLY_WRITE_MAX_BYTES``, each atomic), except a batch of at most
        ``APPLY_INLINE_MAX`` entries and ``APPLY_INLINE_MAX_BYTES`` of data while no snapshot
        build runs, which is applied on the loop (see there): at once, or after one loop turn
        once ``APPLY_NO_YIELD_MAX`` entries were applied since the last turn."""
        return await self._apply(entries, apply_kv)

    async def apply_without_responses(self, entries: list[Entry]) -> None:
        """``apply`` for entries whose responses nobody reads (see ``RaftStateMachine``; a
        follower's): the same batch, without the work only the responses need (a ``KvSet``
        writes without reading the previous value: one RocksDB point read less per set)."""
        await self._apply(entries, apply_kv_effect)

    async def _apply(self, entries: list[Entry], run: Callable[[KvMap, KvCommand | None], Any]) -> list[Any]:
        self._check_open()
        self._write_deferred()
        if not entries:
            return []
        n = len(entries)
        if n <= APPLY_INLINE_MAX and not self._building and normal_data_bytes(entries, Normal) <= APPLY_INLINE_MAX_BYTES:
            if self._unyielded + n > APPLY_NO_YIELD_MAX:
                # One loop turn first, as the thread hop gave: a caller applying in a loop
                # never starves the other tasks (the Raft core, a response waiting to be sent).
                await asyncio.sleep(0)
                self._unyielded = 0
                self._check_open()
            if not self._building:
                if not self._unyielded:
                    asyncio.get_running_loop().call_soon(self._loop_turned)
                self._unyielded += n
                try:
                    out = self._apply_sync(entries, run, defer=run is apply_kv and n >= DEFER_WRITE_MIN_ENTRIES)
                except BaseException as e:
                    clear_frames(e)  # as in_thread does: no frame keeps RocksDB open
                    raise
                if self._deferred is not None:
                    loop = asyncio.get_running_loop()
                    loop.call_soon(self._deferred_due, loop, WRITE_AFTER_PASSES - 1, self._deferred)
                return out
        return await self._calls.run(self._apply_pieces, entries, run)

    def _loop_turned(self) -> None:
        self._unyielded = 0

    def _apply_pieces(self, entries: list[Entry], run: Callable[[KvMap, KvCommand | None], Any]) -> list[Any]:
        """Worker thread: apply ``entries`` as one batch, or, when their data add up to more
        than ``APPLY_WRITE_MAX_BYTES``, as consecutive batches of at most that many bytes (or
        of one larger entry; see there), releasing the GIL between two so that the event
        loop's thread takes it at once. Returns the responses of all of them, in order."""
        if normal_data_bytes(entries, Normal) <= APPLY_WRITE_MAX_BYTES:
            return self._apply_sync(entries, run)
        out: list[Any] = []
        for k, piece in enumerate(byte_pieces(entries, APPLY_WRITE_MAX_BYTES)):
            if k:
                time.sleep(0)  # the loop's thread may take the GIL (see GIL_SHARE_PAIRS)
            out += self._apply_sync(piece, run)
        return out

    def _apply_sync(
        self, entries: list[Entry], run: Callable[[KvMap, KvCommand | None], Any], defer: bool = False
    ) -> list[Any]:
        """Apply ``entries`` as one batch; with ``defer`` (on the loop, no batch deferred)
        leave the batch's write to ``_deferred_due``."""
        wb = WriteBatch(raw_mode=True)
        kv = _BatchKv(self._cf, wb, self._h)
        membership = self._membership
        out: list[Any] = []
        add = out.append
        # A leading run of sets (every write of a key-value workload) through the kernel;
        # the rest one command at a time. (With ``apply_kv_effect`` nobody reads ``out``.)
        start = kv.apply_sets(entries, 0, out if run is apply_kv else None)
        rest = entries if start == 0 else entries[start:]
        cmds = [decode_kv(p.data) if type(p := e.payload) is Normal else None for e in rest]
        if run is apply_kv and len(rest) > 1:
            # Every command reads its key's current value: read them all at once first.
            kv.read_ahead([c.key for c in cmds if c is not None])
        for entry, cmd in zip(rest, cmds):
            if cmd is not None:
                add(run(kv, cmd))
            else:  # not a command (opaque data, a blank, a membership): no change
                p = entry.payload
                if type(p) is Membership:
                    membership = StoredMembership(entry.log_id, p)
                add(None)
        h = self._h
        last = entries[-1].log_id
        wb.put(_M_APPLIED, _enc.encode(last), h)
        if membership is not self._membership:
            wb.put(_M_MEMBERSHIP, _enc.encode(membership), h)
        if defer:
            self._write_deferred()  # none, unless applies overlapped: never drop one
            self._deferred = wb
        else:
            self._db.write(wb, self._nosync)
        self._applied = last
        self._membership = membership
        return out

    def get_snapshot_builder(self) -> _RocksSnapshotBuilder:
        """A builder; ``build_snapshot`` does not block ``apply`` (see the class docstring)."""
        return _RocksSnapshotBuilder(self)

    def _build_from(self, image: BoundedIter) -> Snapshot:
        """Worker thread: stream ``image`` (one point-in-time iterator: its meta
        and data are read through it alone) into a snapshot file and make it current.
        ``apply`` keeps writing meanwhile."""
        try:
            return self._build_image(image)
        finally:
            image.close()

    def _build_image(self, image: BoundedIter) -> Snapshot:
        meta_raw = dict(image.scan(_META))  # to the image's bound: the end of the meta range
        last = None if _M_APPLIED not in meta_raw else _dec_logid.decode(meta_raw[_M_APPLIED])
        membership = (
            EMPTY_STORED_MEMBERSHIP if _M_MEMBERSHIP not in meta_raw else _dec_stored.decode(meta_raw[_M_MEMBERSHIP])
        )
        where = "none" if last is None else f"{last.term}-{last.index}"
        meta = SnapshotMeta(last, membership, f"{where}-{uuid.uuid4().hex[:12]}")
        with durable_temp(self._snapdir, prefix="build-") as tmp:
            with naming(tmp.path, "writing the snapshot"):  # (a full disk: which one)
                write_snapshot(tmp.file, last, membership, _data_pairs(image))
                tmp.sync()
            image.close()  # unpin it
            # The state this snapshot covers must be durable before the snapshot lets the log
            # be purged up to it (apply writes without fsync).
            seqno = self._db.latest_sequence_number()
            self._db.flush_wal(True)
            self._mark.record(seqno)
            return self._make_current(meta, tmp.path)

    def _make_current(self, meta: SnapshotMeta, tmp: str) -> Snapshot:
        """Rename the fsynced file ``tmp`` to ``<id>.snap`` (``_snapshot_file_name``) and make it current unless the
        current one is newer; return the snapshot over a fresh read handle."""
        name = _snapshot_file_name(meta.snapshot_id)
        final = os.path.join(self._snapdir, name)
        with self._snap_lock:
            os.replace(tmp, final)
            f = open(final, "rb")
            cur = self._current
            newer = cur is None or cur.meta.last_log_id is None or (
                meta.last_log_id is not None and meta.last_log_id >= cur.meta.last_log_id
            )
            if newer:
                replace_durably(os.path.join(self._snapdir, "current.meta"), _encode_snap_record(_SnapRecord(meta, name)))
                self._current = _SnapRecord(meta, name)
                if cur is not None and cur.file != name:
                    os.unlink(os.path.join(self._snapdir, cur.file))  # open readers keep their data
            else:
                os.unlink(final)  # an older image than the current one: hand it out, keep none
        return Snapshot(meta, f)

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty temporary file under ``<path>/snapshots`` (``w+b``). It becomes the
        current snapshot file when installed. It is deleted when ``install_snapshot`` refuses
        it, when it was closed without an install by the next ``begin_receiving_snapshot``
        or ``close()`` (an abandoned transfer), and otherwise at the next open."""
        self._check_open()
        self._drop_abandoned_receives()
        f = tempfile.NamedTemporaryFile(mode="w+b", dir=self._snapdir, prefix="recv-", suffix=".tmp", delete=False)
        with self._snap_lock:
            self._receiving.add(f)
        return f  # type: ignore[return-value]

    def _drop_abandoned_receives(self) -> None:
        """Delete the files of earlier receives that were closed without being installed (a
        transfer the leader abandoned: it changed, or started over with another snapshot).
        They stayed until the next open, each up to a whole snapshot's size."""
        with self._snap_lock:
            done = [f for f in self._receiving if f.closed]
            self._receiving.difference_update(done)
        for f in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.name)

    def _forget_received(self, data: Any, delete: bool) -> None:
        """``data`` (given to ``install_snapshot``) is done with: installed and kept, or, with
        ``delete``, refused; then it is deleted if ``begin_receiving_snapshot`` made it. Each
        refused file stayed until the next open: a follower refusing a leader's snapshot
        (which resends it after every heartbeat interval) filled its disk with copies."""
        with self._snap_lock:
            ours = data in self._receiving
            self._receiving.discard(data)
        if ours and delete:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(data.name)

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the whole state with the snapshot in ``data`` atomically (in a worker
        thread). Raises ``ValueError`` (state unchanged) when ``data`` is not a complete
        ``RocksStateMachine`` snapshot."""
        self._check_open()
        self._write_deferred()  # in apply order: the installed state replaces it
        await self._calls.run(self._install_sync, meta, data)

    def _install_sync(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        table = os.path.join(self._snapdir, f"install-{uuid.uuid4().hex[:12]}.sst")
        try:
            try:
                self._write_install_table(table, meta, data)
            except BaseException:
                self._forget_received(data, delete=True)
                raise
            seqno = self._db.latest_sequence_number()
            self._flush_memtable()
            self._db.flush_wal(True)  # every apply write up to ``seqno`` is durable ...
            # ... and the table replaces the state in one step (an ingestion is atomic and
            # durable: RocksDB syncs the file and records it in its MANIFEST), in RocksDB's
            # threads: it holds the GIL for a few milliseconds whatever the size.
            self._cf.ingest_external_file([table], self._ingest_options)
            self._mark.record(seqno)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(table)  # RocksDB moved it in (hard link) or it was not ingested
        self._applied = meta.last_log_id
        self._membership = meta.last_membership
        try:
            self._keep_installed_file(meta, data)
            self._forget_received(data, delete=False)
        except Exception as e:
            # Not a ValueError whatever it is: that would say the state is unchanged.
            raise StorageError(
                f"installing snapshot {meta.snapshot_id!r:.80} into state machine at {self.path!r}: the state is "
                "installed, but its snapshot file could not be kept",
                e,
            ) from e

    def _flush_memtable(self) -> None:
        """Worker thread: flush the column family's memtable to a table file and wait for it
        without the GIL. The ingestion that follows would flush a memtable holding any key in
        its table's range (always: the meta keys) itself, holding the GIL: 89 ms with 50 MB of
        recent applies in it."""
        self._cf.flush(False)  # makes the memtable immutable and schedules its flush
        for _ in range(_FLUSH_POLLS):  # (after that the ingestion waits for the flush itself)
            if not self._cf.property_int_value("rocksdb.num-immutable-mem-table"):
                return
            time.sleep(0.001)

    def _write_install_table(self, table: str, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Write the whole install into the new table file ``table`` (``SstFileWriter``,
        streamed: memory of one block, not of the state): every pair of the snapshot file
        ``data`` (read with every check: ``ValueError`` when it is not an intact snapshot, or
        its keys are not in ascending order), a deletion of every data key the state holds
        that the snapshot does not, and the applied id and membership of ``meta``. The file
        is fsynced; it is deleted here on an error (else by the caller, or at the next open,
        like every leftover under ``snapshots/``).

        The install was one ``WriteBatch`` of all of it: the whole state in memory (a 291 MB
        snapshot of 300,000 keys took 290 MB more RSS), and its synced write held the GIL, so
        the event loop stood still for 1.4-1.6 s (340 ms for 1,000,000 small keys)."""
        writer = SstFileWriter(self._table_options)
        writer.open(table)
        old = BoundedIter(self._cf, _DATA_END)  # the data being replaced, in key order
        try:
            n = 0

            def old_keys() -> Iterator[bytes]:
                nonlocal n
                for k, _ in old.scan(_DATA):
                    yield k
                    n += 1
                    if n >= GIL_SHARE_PAIRS:  # the loop's thread may take the GIL (see there)
                        n = 0
                        time.sleep(0)

            olds = old_keys()
            o = next(olds, None)
            prev = b""
            for k, v in read_snapshot_pairs(data, meta.snapshot_id):  # ValueError: not a snapshot
                key = _DATA + k
                if key <= prev:
                    raise ValueError(
                        f"not a RocksStateMachine snapshot ({meta.snapshot_id}): the key {k!r:.80} is not after the "
                        "one before it"
                    )
                prev = key
                while o is not None and o < key:
                    del writer[o]  # a key the snapshot does not hold
                    o = next(olds, None)
                if o == key:
                    o = next(olds, None)
                writer[key] = v
                n += 1
                if n >= GIL_SHARE_PAIRS:
                    n = 0
                    time.sleep(0)
            while o is not None:
                del writer[o]
                o = next(olds, None)
            writer[_M_APPLIED] = _enc.encode(meta.last_log_id)  # the meta keys sort after the data
            writer[_M_MEMBERSHIP] = _enc.encode(meta.last_membership)
            writer.finish()
            with open(table, "rb") as f:
                os.fsync(f.fileno())
        except BaseException:
            old.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(table)
            raise
        old.close()

    def _keep_installed_file(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Keep the received file ``data`` as the current snapshot (or a durable copy of it)."""
        name = getattr(data, "name", None)
        if isinstance(name, str) and os.path.dirname(os.path.abspath(name)) == os.path.abspath(self._snapdir):
            data.flush()
            os.fsync(data.fileno())
            self._make_current(meta, name).data.close()
            return
        with durable_temp(self._snapdir, prefix="copy-") as copy:
            data.seek(0)
            shutil.copyfileobj(data, copy.file, SNAPSHOT_CHUNK_BYTES)
            self._make_current(meta, copy.sync()).data.close()

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed (also across restarts), over a fresh read
        handle positioned at 0, or ``None``.

        Its file is checked whole first, against its checksum (``check_snapshot``: about the
        cost of reading it; files of the first format have none). A damaged file (its disk
        failed since it was written) is never handed out: it is logged at ERROR, naming the
        file, and replaced by a snapshot built now from the state, which is returned (it
        covers at least as much of the log). Otherwise a follower would refuse it at every
        resend and could not catch up from this node."""
        self._check_open()
        # in_thread: a cancelled caller (the node shutting down) waits for the thread, so
        # close() never comes while it reads; the snapshot it opened is then closed.
        snap, damage = await self._calls.run(self._open_current, discard=lambda got: _close_snapshot(got[0]))
        if damage is None:
            return snap
        log.error("state machine at %r: %s; building a new snapshot in its place", self.path, damage)
        return await self.get_snapshot_builder().build_snapshot()

    async def get_current_snapshot_meta(self) -> SnapshotMeta | None:
        """The meta of the snapshot ``get_current_snapshot`` hands out, or ``None``, without
        opening its file (the optional method of ``RaftStateMachine``: what ``Raft.new``
        reads at start, where ``get_current_snapshot`` checked the whole file, about 2 s per
        GB from disk). Raises the ``StorageError`` ``get_current_snapshot`` raises when the
        file is missing or not a regular file (one ``stat``, in a worker thread). Whether its
        data is intact is checked when it is first handed out (``get_current_snapshot``): a
        damaged file is replaced then by a snapshot built from the state, whose last log id
        is not less than this meta's."""
        self._check_open()
        return await self._calls.run(self._current_meta)

    def _current_meta(self) -> SnapshotMeta | None:
        """Worker thread: the current snapshot's meta, its file checked to be a regular file."""
        with self._snap_lock:
            cur = self._current
            if cur is None:
                return None
            self._check_current_file(cur)
            return cur.meta

    def _check_current_file(self, cur: _SnapRecord) -> None:
        """``StorageError`` unless the file of the current snapshot ``cur`` is a regular file
        (it was at the open: replaced or removed since). Called under ``_snap_lock``."""
        what = _not_a_file(os.path.join(self._snapdir, cur.file))
        if what is not None:
            e = self._current_file_error(cur.file, what)
            raise StorageError(f"reading the current snapshot of state machine at {self.path!r}", e) from None

    def _open_current(self) -> tuple[Snapshot | None, ValueError | None]:
        """Worker thread: the current snapshot, checked; or ``(None, why)`` when its file is
        damaged (``why`` names the file)."""
        with self._snap_lock:
            cur = self._current
            if cur is None:
                return None, None
            self._check_current_file(cur)
            f = open(os.path.join(self._snapdir, cur.file), "rb")
        try:
            with naming(f.name, "reading the snapshot"):  # (a bad sector's EIO names no file)
                check_snapshot(f, cur.meta.snapshot_id)
        except ValueError as e:
            f.close()
            return None, ValueError(f"its current snapshot's file {f.name} is damaged: {e}")
        except BaseException:
            f.close()
            raise
        f.seek(0)
        return Snapshot(cur.meta, f), None

    # -- reading the data (for applications and tests)

    def get(self, key: str) -> str | None:
        """The value of ``key`` as applied so far (a point read), or ``None``. Raises
        ``StorageError`` when RocksDB cannot read it (e.g. a damaged file) or the stored value
        is not utf-8 (the database was written by something else), and ``StorageError``
        ("closed") once the close began.

        Any thread may call it: counted by the state machine's ``StoreCalls`` while it runs,
        so a ``close()`` in another thread waits for it (it closed RocksDB under it)."""
        if self._closed:
            raise self._calls.closed_error()
        token = self._calls.enter("get")
        try:
            self._write_deferred()
            try:
                raw = self._cf.get(_DATA + key.encode())
                return None if raw is None else _stored_str(key, raw)
            except Exception as e:
                raise self._read_failed(f"reading {key!r} from state machine at {self.path!r}", e) from e
        finally:
            self._calls.leave(token)

    def _read_failed(self, subject: str, e: Exception) -> StorageError:
        """The ``StorageError`` for a read (``subject``) that failed with ``e``. RocksDB's
        report of damaged data (a data block of a table file, which the open did not read)
        says the database is damaged and what to do (``damaged_read``), and stops the node
        (``set_fatal_handler``): a node whose state machine lost data it applied must serve
        nothing more from it. It answered the reads of the keys in the damaged block with
        "the node has stopped" and went on serving the others as a running follower."""
        if not is_rocksdb_corruption(e):
            return StorageError(subject, e)
        err = damaged_read(subject, e)
        handler, loop = self._fatal_handler, self._fatal_loop
        if handler is not None and loop is not None and not loop.is_closed():
            # (a read may come from any thread; the handler runs on the node's loop)
            try:
                loop.call_soon_threadsafe(handler, err)
            except RuntimeError:  # the loop closed since ``is_closed``: no node to stop
                pass
        return err

    @property
    def data(self) -> dict[str, str]:
        """A copy of the whole key-value data (a full scan: for tests and small states).
        Raises ``StorageError`` when the scan stops on an error (e.g. a damaged file) rather
        than returning part of the data; ``StorageError`` ("closed") once the close began.
        Any thread may read it, counted as ``get``."""
        if self._closed:
            raise self._calls.closed_error()
        token = self._calls.enter("data")
        try:
            self._write_deferred()
            out: dict[str, str] = {}
            image = BoundedIter(self._cf, _DATA_END)
            try:
                for k, v in image.scan(_DATA):
                    try:
                        name = k[1:].decode()
                    except UnicodeDecodeError as e:
                        raise ValueError(f"a stored key is not utf-8: {k[1:]!r}") from e
                    out[name] = _stored_str(name, v)
            except Exception as e:
                raise self._read_failed(f"reading the data of state machine at {self.path!r}", e) from e
            finally:
                image.close()  # the iterator keeps RocksDB open (a kept traceback holds ``image``)
            return out
        finally:
            self._calls.leave(token)

    # -- lifecycle

    def close(self) -> None:
        """Flush and close the database, releasing its lock; idempotent. Blocks until done.
        Meant for after ``Raft.shutdown`` returned, when no call of the node runs any more.

        A call of this state machine still running in a worker thread (an ``apply`` batch,
        a snapshot build or install, a snapshot being opened: its caller was cancelled, or
        another task closes the state machine under it), or a ``get`` or ``data`` in another
        thread, is waited for first, up to ``CLOSE_CALLS_WAIT`` seconds (``StoreCalls``);
        every call made once the close began raises ``StorageError`` ("closed"). A call still
        running past that bound (a disk that never answers) is logged at WARNING naming the
        path, RocksDB is closed under it (it then fails with ``StorageError``), and this
        raises ``StorageError``: RocksDB's lock stays held until that call ends. An exception
        raised during that wait (``KeyboardInterrupt``: Ctrl-C) ends it likewise: the close
        completes, then raises that exception; so does one raised during the close's own
        steps (the WAL's fsync).

        Otherwise the lock is released whatever happens (the same path can be opened again
        at once, in this process too); raises ``StorageError`` (naming the path, the cause
        chained) when RocksDB could not flush or close cleanly. The state machine is closed
        all the same.

        A ``close()`` called while this one runs in another thread returns once this one
        has ended (``CloseOnce``; at once in a thread with a call of the state machine
        counted, which this one waits for); a later one returns at once."""
        calls = getattr(self, "_calls", None)  # (none: never opened)
        # (A second close returns once the first has ended, but in a thread the first may
        # wait for: one with a call counted.)
        self._close_once.run(self._close_first, wait=calls is not None and not calls.counts_thread(threading.get_ident()))

    def _close_first(self) -> None:
        """The first ``close()``'s steps."""
        if not self._closed:  # (closed: never opened)
            self._closed = True
            close_after_calls(self._calls, self._close_db)

    def _close_db(self, errors: list[BaseException]) -> None:
        """``close()`` once no call of another thread runs (or they were given up):
        ``errors`` so far."""
        mark = self._mark
        # Each step runs whatever an earlier one raised (``close_step``: Ctrl-C is raised
        # once RocksDB is closed; the database is closed anyway).
        interrupts: list[BaseException] = []
        close_step(self._write_deferred, errors, interrupts)
        close_step(self._sync_wal, errors, interrupts)
        # (Abandoned receives are deleted now, else kept until the next open.)
        for close in (self._cf.close, self._db.close, self._drop_abandoned_receives):
            close_step(close, errors, interrupts)
        del close
        handles = [self._cf, self._h, self._db]
        del self._cf, self._h, self._db
        try:
            drop_handles(handles)  # see RocksLogStore.close
            finish_close(mark, errors, f"closing state machine at {self.path!r}")
        finally:
            raise_interrupt(interrupts)

    def _sync_wal(self) -> None:
        """``close()``: fsync the WAL, and record its last write in the acknowledged mark."""
        seqno = self._db.latest_sequence_number()
        self._db.flush_wal(True)
        self._mark.record(seqno)

    async def aclose(self) -> None:
        """``close()`` in a worker thread (it waits for the calls still running in worker
        threads, see there); every call made from now on raises ``StorageError``
        ("closed"). A cancelled caller raises its ``CancelledError`` once the close has
        ended (``in_thread``): it went on while the thread still closed, and an open of the
        same path right after found RocksDB's lock still held."""
        self._calls.begin_close()
        await in_thread(self.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        """A state machine collected unclosed is closed then (as ``close()``: the applied
        batch it deferred written, the WAL synced, RocksDB's lock released), with a
        ``ResourceWarning`` naming its path (``close_collected``)."""
        if getattr(self, "_closed", True):
            return  # closed, or never opened (its open failed)
        if sys.is_finalizing():
            return  # the interpreter is exiting: its threads are stopped, a close could wait for good
        close_collected("state machine", self.path, self.close)

    def __repr__(self) -> str:
        return f"RocksStateMachine({self.path!r}, applied={self._applied!r}, closed={self._closed})"


def state_machine_use(path: str | os.PathLike[str]) -> list[str]:
    """What the state machine at ``path`` holds beyond what its creation and a node's first
    start write there (``db/`` with the format marker of this ``SM_FORMAT``, the
    acknowledged-mark flag and the owner record; an empty ``snapshots/``): each named in a
    few words ("applied data", "an applied log id", "a membership", "a snapshot", "the entry
    'x'", ...). ``[]``: nothing else, or a creation killed part way (a database that does not
    open read-only and holds no table file nor any written WAL: ``holds_writes``), or no
    ``path``. A database that does not open read-only but holds writes, or is not a state
    machine's, is named so.

    Read in a read-only open (``read_only``: nothing is written, RocksDB's lock is not taken;
    the leftovers of ``snapshots/`` are not removed as an open does), for a start that clears
    what a first start killed part way left (``openraft_py.kv.node.check_first_start_leftover``):
    no first start ever applied an entry or made or received a snapshot (its node never
    reached a peer). Blocking."""
    where = store_path(path, "state machine")
    if not os.path.isdir(where):
        return [] if not os.path.lexists(where) else ["not a directory"]
    found: list[str] = []
    db_path = os.path.join(where, "db")
    with os.scandir(where) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if entry.name == "snapshots" and entry.is_dir(follow_symlinks=False):
                if os.listdir(entry.path):
                    found.append("a snapshot")
            elif entry.name != "db" or not entry.is_dir(follow_symlinks=False):
                found.append(f"the entry {entry.name!r}")
    if not os.path.isdir(db_path):
        return found
    known_meta = {_M_FORMAT, _M_ACKMARK, _M_OWNER}

    def look(db: Rdict, present: set[str]) -> list[str]:
        seen: list[str] = [f"the column family {cf!r}" for cf in sorted(present - {"default", _SM_CF})]
        seen += [f"data in the column family {cf!r}" for cf in sorted(present - {_SM_CF})
                 if column_family_holds_data(db, cf)]
        sm = db.get_column_family(_SM_CF)
        try:
            raw = sm.get(_M_FORMAT)
            if raw is not None and _dec_any.decode(raw) != SM_FORMAT:
                seen.append(f"another format ({_dec_any.decode(raw)!r})")
            raw = sm.get(_M_APPLIED)
            if raw is not None and _dec_logid.decode(raw) is not None:
                seen.append("an applied log id")
            raw = sm.get(_M_MEMBERSHIP)
            if raw is not None and _dec_stored.decode(raw) != EMPTY_STORED_MEMBERSHIP:
                seen.append("a membership")
            for key in cast(Iterator[bytes], sm.keys()):  # (raw mode; data keys sort first: one is found at once)
                if key.startswith(_DATA):
                    seen.append("applied data")
                    break
                if key not in known_meta and key not in (_M_APPLIED, _M_MEMBERSHIP):
                    seen.append(f"the key {key!r}")
                    if len(seen) >= 8:
                        break
        finally:
            sm.close()
        return seen

    return found + database_use(db_path, "state machine", {_SM_CF}, look)
