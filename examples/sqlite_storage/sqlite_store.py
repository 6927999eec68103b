"""A Raft log store and a key-value state machine on SQLite (stdlib ``sqlite3``).

Copy this file to give your application durable storage without RocksDB. It implements the
two storage protocols of ``openraft_py.storage``:

- ``SqliteLogStore`` (a ``RaftLogStorage``): the log, the vote, the committed log id and the
  last purged log id, in one database file (``log.db``).
- ``SqliteStateMachine`` (a ``RaftStateMachine``): a string key-value map driven by JSON
  commands (``set_command`` / ``delete_command``), with its applied state and its current
  snapshot, in another database file (``state.db``).

Durability
----------

Both databases run in WAL mode with ``synchronous=FULL``: every ``COMMIT`` fsyncs the
write-ahead log before it returns, so a committed transaction survives a power loss. (With
``synchronous=NORMAL`` a WAL commit is only written, not synced, and may be lost: a lost vote
can elect two leaders in one term and a lost log entry can un-commit an acknowledged write,
so the log store must not use it.) The directory holding the files is fsynced once after they
are created, and so is the parent of each directory ``open_node_storage`` creates, so the
files and their directories survive a crash.

Every method that the contract calls "durable on return" commits before returning.
``append`` commits too and then calls ``IOFlushed.io_completed(None)`` from its worker
thread (``IOFlushed`` hands the call to the event loop): the entries are readable and durable
when ``append`` returns. Raft batches the entries of many client writes into one ``append``,
so one fsync covers a whole batch.

The state machine commits each ``apply`` batch, so its applied state never goes back after a
restart. That matters: Raft purges log entries once a snapshot covers them, and a state
machine that forgot applies it had made could need entries the log no longer holds.

One owner
---------

Each store object holds an exclusive ``flock`` on ``<database>.lock`` while it is open: a
second open of the same files (a node started twice) is refused instead of two nodes writing
one vote and one log.

Checksums
---------

SQLite checks the structure of its file but not the bytes of a row: a bit flipped on the disk
inside an entry or a value is read back as it is. Every row therefore carries a ``crc`` column,
the CRC-32 of its other columns (``_row_crc``), checked whenever the row is read: a damaged row
raises ``CorruptRow`` (an ``sqlite3.DatabaseError``) naming the file and the row, and the node
stops (``StorageError``) instead of applying, replicating or voting from damaged data. The
format is ``PRAGMA user_version`` ``FORMAT``; a database of another format (an earlier version
of this file, without checksums) is refused at open.

Threads
-------

``sqlite3`` calls block, so none runs on the event loop. Each store object owns one worker
thread (a single-thread executor) and one connection used only by it: calls queue on that
thread in the order they were made, which also gives ``try_get_log_entries`` a view that
includes every ``append`` that returned before it. A snapshot build runs on a thread of its
own with its own connection, inside one read transaction: WAL's snapshot isolation gives it
a consistent image of one applied point while ``apply`` keeps committing.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import sqlite3
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import msgspec

from openraft_py import (
    Entry,
    IOFlushed,
    LogCompacted,
    LogId,
    LogState,
    Membership,
    Normal,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
    StoreOwnerMismatch,
    Vote,
)
from openraft_py.storage import EMPTY_STORED_MEMBERSHIP

__all__ = [
    "EMPTY_MEMBERSHIP",
    "FORMAT",
    "CorruptRow",
    "SqliteLogReader",
    "SqliteLogStore",
    "SqliteStateMachine",
    "delete_command",
    "open_node_storage",
    "set_command",
]

T = TypeVar("T")

EMPTY_MEMBERSHIP = EMPTY_STORED_MEMBERSHIP
"""The stored membership of a fresh state machine (what the storage contract calls
``EMPTY_STORED_MEMBERSHIP``)."""

_entry_decoder = msgspec.msgpack.Decoder(Entry)
_vote_decoder = msgspec.msgpack.Decoder(Vote)
_log_id_decoder = msgspec.msgpack.Decoder(LogId)
_membership_decoder = msgspec.msgpack.Decoder(StoredMembership)
_owner_decoder = msgspec.msgpack.Decoder(tuple[int, str])
_encode = msgspec.msgpack.encode


def _connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with ``synchronous=FULL`` (see the module docstring).

    ``isolation_level=None``: no implicit transactions; every write below opens its own
    ``BEGIN IMMEDIATE`` and ends it with ``COMMIT``. The connection is made, used and closed on
    one thread (``sqlite3``'s default ``check_same_thread`` enforces it).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
    except BaseException:
        conn.close()
        raise
    return conn


def _fsync_dir(path: Path) -> None:
    """fsync the directory ``path`` so the files created in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FORMAT = 1
"""The databases' format (their ``PRAGMA user_version``): 1 = every row has a ``crc`` column.
A database made before checksums (format 0, with tables) is refused at open."""


class CorruptRow(sqlite3.DatabaseError):
    """A row read back does not match its checksum: the file was damaged on disk."""


def _row_crc(*values: object) -> int:
    """The CRC-32 of a row's values (every column but ``crc``, in table order)."""
    return zlib.crc32(_encode(values))


def _checked(row: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """``row`` without its last column, its ``crc``; ``CorruptRow`` naming ``what`` unless the
    crc matches the other columns."""
    *values, crc = row
    if _row_crc(*values) != crc:
        raise CorruptRow(f"{what} does not match its checksum: the file is damaged")
    return tuple(values)


def _lock(path: Path) -> int:
    """An exclusive ``flock`` on ``<path>.lock`` (created if missing): the open file, which
    holds the lock until it is closed. ``sqlite3.DatabaseError`` if another store object, in
    this process or another, holds it: SQLite itself lets two writers share a database, and
    two nodes on one node's files would overwrite each other's vote and log.

    (A file of its own: closing any descriptor of the database file would drop the POSIX
    locks SQLite holds on it.)"""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise sqlite3.DatabaseError(
            f"it is in use: another store has it open, in this process or another ({lock_path} is locked)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Worker:
    """One thread and one connection: ``run(fn)`` runs ``fn(conn)`` on that thread.

    Calls run one at a time, in the order ``run`` was called. The database is this object's
    alone while it is open (``_lock``).
    """

    def __init__(self, path: Path, schema: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.name}")
        self._conn: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._path = path
        self._schema = schema

    def _open(self) -> None:
        lock = _lock(self._path)
        try:
            self._open_locked()
        except BaseException:
            os.close(lock)
            raise
        self._lock = lock

    def _open_locked(self) -> None:
        created = not self._path.exists()
        conn = _connect(self._path)
        try:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables == 0:  # a new database (or one whose creation did not commit)
                conn.executescript(f"BEGIN IMMEDIATE; {self._schema}; PRAGMA user_version = {FORMAT}; COMMIT;")
            else:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version != FORMAT:
                    raise sqlite3.DatabaseError(
                        f"its format is {version}, not {FORMAT} (a database of an earlier sqlite_store.py, "
                        "without row checksums, or of another program)"
                    )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if created:
            _fsync_dir(self._path.parent)

    async def start(self) -> None:
        """Open the database (creating it and its tables when missing). A file that is not
        an SQLite database (or cannot be opened), or one another store has open, raises
        ``sqlite3.DatabaseError`` naming its path, and leaves no thread or connection behind."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open)
        except BaseException as e:
            await self.close()
            if isinstance(e, sqlite3.Error):
                raise sqlite3.DatabaseError(f"cannot open {self._path}: {e}") from e
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` on the worker thread; its exception is raised here (a ``CorruptRow``
        with the file's path)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"{self._path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, conn)
        except CorruptRow as e:
            raise CorruptRow(f"{self._path}: {e}") from None

    async def close(self) -> None:
        """Close the connection, release the lock and stop the thread (after the calls
        already queued). Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)
        self._executor.shutdown(wait=False)


# -- the log store ---------------------------------------------------------------------------

_LOG_SCHEMA = """
CREATE TABLE log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL, crc INTEGER NOT NULL)
"""
# Invariants of log.db:
# - ``log`` holds exactly the indexes last_purged.index + 1 ..= last log index (0 .. when
#   nothing was purged): no holes. ``entry`` is the msgpack of the whole ``Entry``.
# - ``meta`` holds at most the keys 'vote', 'committed' and 'last_purged' (msgpack values).
# - every row's ``crc`` is ``_row_crc`` of its other columns.


def _get_meta(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT key, value, crc FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(_checked(row, f"the {key} record")[1])


def _put_meta(conn: sqlite3.Connection, key: str, value: bytes) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value, crc) VALUES (?, ?, ?)", (key, value, _row_crc(key, value)))


def _entry_of(row: tuple[Any, ...]) -> Entry:
    """The ``Entry`` of a ``(idx, entry, crc)`` row of ``log``, checked."""
    _, blob = _checked(row, f"log entry {row[0]}")
    return _entry_decoder.decode(blob)


def _last_purged(conn: sqlite3.Connection) -> LogId | None:
    raw = _get_meta(conn, "last_purged")
    return None if raw is None else _log_id_decoder.decode(raw)


def _read_entries(conn: sqlite3.Connection, start: int, stop: int) -> list[Entry]:
    purged = _last_purged(conn)
    if purged is not None and start <= purged.index:
        raise LogCompacted(f"entries [{start}, {stop}) requested but the log is purged up to {purged!r}")
    if stop <= start:
        return []
    rows = conn.execute("SELECT idx, entry, crc FROM log WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop))
    return [_entry_of(row) for row in rows]


def _read_vote(conn: sqlite3.Connection) -> Vote | None:
    raw = _get_meta(conn, "vote")
    return None if raw is None else _vote_decoder.decode(raw)


class _Write:
    """``with _Write(conn):`` runs the block in one ``BEGIN IMMEDIATE`` .. ``COMMIT``
    transaction. ``COMMIT`` is the fsync. If the block or the ``COMMIT`` raises, the
    transaction is rolled back and that error is raised: no transaction is left open (whose
    rows, not durable, later reads would see, and whose ``BEGIN`` the next write would fail).

    SQLite rolls a transaction back by itself on some errors (``SQLITE_FULL``: "database or
    disk is full", ``SQLITE_IOERR``): then no ``ROLLBACK`` is sent, whose own error ("cannot
    rollback - no transaction is active") would hide the one that says what happened."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()  # then the block's exception propagates

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


class SqliteLogReader:
    """A ``RaftLogReader`` over a ``SqliteLogStore``'s database (shares its worker, so it
    sees every write that returned before a read was made)."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries with ``start <= index < stop``; ``LogCompacted`` when ``start`` is at
        or below the last purged index."""
        return await self._worker.run(lambda conn: _read_entries(conn, start, stop))

    async def read_vote(self) -> Vote | None:
        """The saved vote, or ``None``."""
        return await self._worker.run(_read_vote)


class SqliteLogStore(SqliteLogReader):
    """A durable ``RaftLogStorage`` in the SQLite file ``path``; open it with
    ``await SqliteLogStore.open(path)`` and ``await store.close()`` it after the node shut
    down. See ``openraft_py.storage.RaftLogStorage`` for each method's contract and the
    module docstring for durability and threads."""

    @classmethod
    async def open(cls, path: Path) -> SqliteLogStore:
        """Open (or create) the log database at ``path``."""
        worker = _Worker(path, _LOG_SCHEMA)
        await worker.start()
        return cls(worker)

    async def close(self) -> None:
        """Close the database. Idempotent."""
        await self._worker.close()

    async def get_log_state(self) -> LogState:
        """``LogState(last purged, last log id)``; the last log id is the last purged one
        when the log holds no entry."""

        def read(conn: sqlite3.Connection) -> LogState:
            purged = _last_purged(conn)
            row = conn.execute("SELECT idx, entry, crc FROM log ORDER BY idx DESC LIMIT 1").fetchone()
            last = purged if row is None else _entry_of(row).log_id
            return LogState(purged, last)

        return await self._worker.run(read)

    async def save_vote(self, vote: Vote) -> None:
        """Store ``vote``; durable on return (one committed transaction)."""

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                _put_meta(conn, "vote", _encode(vote))

        await self._worker.run(write)

    async def check_owner(self, node_id: int, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as this log's owner at the first start
        on it (durable on return); ``StoreOwnerMismatch``, nothing written, when another
        node or cluster is recorded. ``Raft.new`` calls it before it reads anything else: a
        node started on another node's files would run with that node's vote and log."""

        def check(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                raw = _get_meta(conn, "owner")
                if raw is None:
                    _put_meta(conn, "owner", _encode((node_id, cluster_name)))
                    return
                owner_id, owner_cluster = _owner_decoder.decode(raw)
                if (owner_id, owner_cluster) != (node_id, cluster_name):
                    raise StoreOwnerMismatch(f"starting node {node_id} on {self._worker._path}", owner_id,
                                             owner_cluster, node_id, cluster_name)

        await self._worker.run(check)

    async def replace_owner(self, node_id: int, cluster_name: str) -> None:
        """Record node ``node_id`` of ``cluster_name`` as the owner over any other (durable on
        return): for an offline forced recovery that renames the cluster."""

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                _put_meta(conn, "owner", _encode((node_id, cluster_name)))

        await self._worker.run(write)

    async def save_committed(self, committed: LogId | None) -> None:
        """Store the committed log id (durable on return, though the contract does not ask)."""

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                if committed is None:
                    conn.execute("DELETE FROM meta WHERE key = 'committed'")
                else:
                    _put_meta(conn, "committed", _encode(committed))

        await self._worker.run(write)

    async def read_committed(self) -> LogId | None:
        """The saved committed log id, or ``None``."""

        def read(conn: sqlite3.Connection) -> LogId | None:
            raw = _get_meta(conn, "committed")
            return None if raw is None else _log_id_decoder.decode(raw)

        return await self._worker.run(read)

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """Append ``entries`` in one transaction, then report them durable.

        ``ValueError`` (nothing written, ``callback`` not called) unless they continue the
        log: the first index is the next one and the indexes are consecutive.
        """
        if not entries:
            callback.io_completed(None)
            return
        first, last = entries[0].log_id.index, entries[-1].log_id.index
        if last - first != len(entries) - 1:
            raise ValueError(f"append needs consecutive indexes, got {entries[0].log_id!r}..{entries[-1].log_id!r}")
        rows = []
        for e in entries:
            blob = _encode(e)
            rows.append((e.log_id.index, blob, _row_crc(e.log_id.index, blob)))

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                row = conn.execute("SELECT max(idx) FROM log").fetchone()
                if row[0] is not None:
                    expected = row[0] + 1
                else:
                    purged = _last_purged(conn)
                    expected = 0 if purged is None else purged.index + 1
                if first != expected:
                    raise ValueError(
                        f"append must continue the log: first entry {entries[0].log_id!r}, next index {expected}"
                    )
                conn.executemany("INSERT INTO log (idx, entry, crc) VALUES (?, ?, ?)", rows)
            # COMMIT returned: the entries are durable. io_completed hands over to the loop.
            callback.io_completed(None)

        await self._worker.run(write)

    async def truncate_after(self, log_id: LogId | None) -> None:
        """Delete the entries after ``log_id`` (every entry for ``None``); durable on
        return. Purged entries are gone already, so the last purged id stays."""
        keep_upto = -1 if log_id is None else log_id.index

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                conn.execute("DELETE FROM log WHERE idx > ?", (keep_upto,))

        await self._worker.run(write)

    async def purge(self, log_id: LogId) -> None:
        """Delete the entries up to ``log_id`` and remember it as the last purged (one
        transaction); a no-op unless it is beyond the last purged. Durable on return."""

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                purged = _last_purged(conn)
                if purged is not None and log_id.index <= purged.index:
                    return
                conn.execute("DELETE FROM log WHERE idx <= ?", (log_id.index,))
                _put_meta(conn, "last_purged", _encode(log_id))

        await self._worker.run(write)

    def get_log_reader(self) -> SqliteLogReader:
        """A reader over the same database."""
        return SqliteLogReader(self._worker)


# -- the state machine -------------------------------------------------------------------------

_SM_SCHEMA = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE applied (
    id INTEGER PRIMARY KEY CHECK (id = 0), log_id BLOB, membership BLOB NOT NULL, crc INTEGER NOT NULL
);
CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 0), meta BLOB NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL)
"""
# Invariants of state.db:
# - ``kv`` is the application state after applying every entry up to ``applied.log_id``.
# - ``applied`` has at most one row (none for a fresh state machine): the last applied log id
#   (msgpack, NULL for none) and the last applied membership (msgpack ``StoredMembership``).
# - ``snapshot`` has at most one row: the current snapshot's meta (msgpack ``SnapshotMeta``)
#   and its data; its ``last_log_id`` never goes backwards.
# - every row's ``crc`` is ``_row_crc`` of its other columns.

_SNAPSHOT_MAGIC = b"sqlite-kv-snapshot/1\n"
"""The first bytes of every snapshot this state machine makes; anything else is refused."""

_meta_decoder = msgspec.msgpack.Decoder(SnapshotMeta)
_snapshot_body_decoder = msgspec.msgpack.Decoder(dict[str, str])


def _is_text(value: object) -> bool:
    """True for a ``str`` SQLite can store: JSON may carry lone surrogates (``"\\ud800"``),
    which have no UTF-8 form."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(name: str, value: object) -> None:
    """``TypeError`` / ``ValueError`` naming ``name`` unless ``value`` is storable text."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not _is_text(value):
        raise ValueError(f"{name} must be encodable as UTF-8 (it holds a lone surrogate): {value!r}")


def set_command(key: str, value: str) -> bytes:
    """The entry data that sets ``key`` to ``value``; the response is the previous value.
    ``TypeError`` / ``ValueError`` for a key or value that is not storable text."""
    _check_text("key", key)
    _check_text("value", value)
    return json.dumps({"op": "set", "key": key, "value": value}).encode()


def delete_command(key: str) -> bytes:
    """The entry data that deletes ``key``; the response is the previous value.
    ``TypeError`` / ``ValueError`` for a key that is not storable text."""
    _check_text("key", key)
    return json.dumps({"op": "delete", "key": key}).encode()


def _apply_command(conn: sqlite3.Connection, data: bytes) -> str | None:
    """Apply one command inside the caller's transaction; return the previous value.

    Data that is not a command of ``set_command`` / ``delete_command`` (not JSON, another
    ``op``, a ``key`` or ``value`` that is not a string, a missing field) is applied as a no-op
    (response ``None``): a committed entry can never be refused, and an exception here would
    stop every node that applies the entry, the whole cluster.
    """
    try:
        cmd = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(cmd, dict) or not _is_text(cmd.get("key")):
        return None
    op, key, value = cmd.get("op"), cmd["key"], cmd.get("value")
    if not (op == "delete" or (op == "set" and _is_text(value))):
        return None
    prev = _kv_get(conn, key)
    if op == "set":
        conn.execute("INSERT OR REPLACE INTO kv (key, value, crc) VALUES (?, ?, ?)", (key, value, _row_crc(key, value)))
    else:
        conn.execute("DELETE FROM kv WHERE key = ?", (key,))
    return prev


def _kv_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT key, value, crc FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(_checked(row, f"the row of key {key!r}")[1])


def _kv_items(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT key, value, crc FROM kv")
    return {str(k): str(v) for k, v in (_checked(row, f"the row of key {row[0]!r}") for row in rows)}


def _applied_state(conn: sqlite3.Connection) -> tuple[LogId | None, StoredMembership]:
    row = conn.execute("SELECT id, log_id, membership, crc FROM applied WHERE id = 0").fetchone()
    if row is None:
        return None, EMPTY_MEMBERSHIP
    _, log_id, membership = _checked(row, "the applied state")
    last = None if log_id is None else _log_id_decoder.decode(log_id)
    return last, _membership_decoder.decode(membership)


def _set_applied(conn: sqlite3.Connection, last: LogId | None, membership: StoredMembership) -> None:
    values = (0, None if last is None else _encode(last), _encode(membership))
    conn.execute(
        "INSERT OR REPLACE INTO applied (id, log_id, membership, crc) VALUES (?, ?, ?, ?)", (*values, _row_crc(*values))
    )


def _current_snapshot(conn: sqlite3.Connection) -> tuple[SnapshotMeta, bytes] | None:
    row = conn.execute("SELECT id, meta, data, crc FROM snapshot WHERE id = 0").fetchone()
    if row is None:
        return None
    _, meta, data = _checked(row, "the current snapshot")
    return _meta_decoder.decode(meta), bytes(data)


def _current_snapshot_meta(conn: sqlite3.Connection) -> SnapshotMeta | None:
    """The current snapshot's meta alone: its data is not read (nor is the row's checksum
    checked, which covers the data too: ``get_current_snapshot`` checks it)."""
    row = conn.execute("SELECT meta FROM snapshot WHERE id = 0").fetchone()
    return None if row is None else _meta_decoder.decode(row[0])


def _put_snapshot(conn: sqlite3.Connection, meta: SnapshotMeta, data: bytes) -> None:
    values = (0, _encode(meta), data)
    conn.execute(
        "INSERT OR REPLACE INTO snapshot (id, meta, data, crc) VALUES (?, ?, ?, ?)", (*values, _row_crc(*values))
    )


def _decode_snapshot(data: bytes) -> dict[str, str]:
    """The key-value map in snapshot ``data``; ``ValueError`` if it is not one of ours."""
    if not data.startswith(_SNAPSHOT_MAGIC):
        raise ValueError("not a sqlite-kv snapshot (bad magic)")
    try:
        return _snapshot_body_decoder.decode(data[len(_SNAPSHOT_MAGIC) :])
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise ValueError(f"corrupt sqlite-kv snapshot: {e}") from e


class _Builder:
    """A ``SnapshotBuilder`` for one snapshot of a ``SqliteStateMachine``."""

    def __init__(self, sm: SqliteStateMachine) -> None:
        self._sm = sm

    async def build_snapshot(self) -> Snapshot:
        """Read a consistent image on a thread of its own, then make it current."""
        return await self._sm._build_snapshot()


class SqliteStateMachine:
    """A durable key-value ``RaftStateMachine`` in the SQLite file ``path``; open it with
    ``await SqliteStateMachine.open(path)``, ``await sm.close()`` it after the node shut
    down. See ``openraft_py.storage.RaftStateMachine`` for each method's contract.

    ``Normal`` entries carry ``set_command`` / ``delete_command`` data (response: the
    previous value, ``str | None``). Snapshots are ``_SNAPSHOT_MAGIC`` followed by the msgpack
    of the whole map, kept in the database (fine for states of some megabytes; a large state
    would stream a file instead).
    """

    def __init__(self, path: Path, worker: _Worker) -> None:
        self._path = path
        self._worker = worker

    @classmethod
    async def open(cls, path: Path) -> SqliteStateMachine:
        """Open (or create) the state database at ``path``."""
        worker = _Worker(path, _SM_SCHEMA)
        await worker.start()
        return cls(path, worker)

    async def close(self) -> None:
        """Close the database. Idempotent."""
        await self._worker.close()

    async def get(self, key: str) -> str | None:
        """The value of ``key`` in the local state (not a linearizable read by itself: call
        ``Raft.ensure_linearizable`` on the leader first)."""

        return await self._worker.run(lambda conn: _kv_get(conn, key))

    async def items(self) -> dict[str, str]:
        """The whole local key-value map."""
        return await self._worker.run(_kv_items)

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``, as committed."""
        return await self._worker.run(_applied_state)

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries`` in one transaction (durable on return); one response each."""
        if not entries:
            return []

        def write(conn: sqlite3.Connection) -> list[Any]:
            responses: list[Any] = []
            with _Write(conn):
                _, membership = _applied_state(conn)
                for entry in entries:
                    payload = entry.payload
                    if isinstance(payload, Normal):
                        responses.append(_apply_command(conn, payload.data))
                    else:
                        if isinstance(payload, Membership):
                            membership = StoredMembership(entry.log_id, payload)
                        responses.append(None)
                _set_applied(conn, entries[-1].log_id, membership)
            return responses

        return await self._worker.run(write)

    def get_snapshot_builder(self) -> _Builder:
        """A builder; its build runs concurrently with ``apply``."""
        return _Builder(self)

    async def _build_snapshot(self) -> Snapshot:
        path = self._path

        def read_image() -> tuple[LogId | None, StoredMembership, bytes]:
            # Its own connection and thread: one read transaction is one consistent point
            # (WAL snapshot isolation), however many applies commit meanwhile.
            conn = _connect(path)
            try:
                conn.execute("BEGIN")
                last, membership = _applied_state(conn)
                kv = _kv_items(conn)
                conn.execute("COMMIT")
            finally:
                conn.close()
            return last, membership, _SNAPSHOT_MAGIC + _encode(kv)

        try:
            last, membership, data = await asyncio.to_thread(read_image)
        except CorruptRow as e:
            raise CorruptRow(f"{path}: {e}") from None
        where = "none" if last is None else f"{last.term}-{last.index}"
        meta = SnapshotMeta(last, membership, f"{where}-{uuid.uuid4().hex[:12]}")

        def store(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                cur = _current_snapshot(conn)
                newer = (
                    cur is not None and cur[0].last_log_id is not None and (last is None or last < cur[0].last_log_id)
                )
                if not newer:  # never replace a newer snapshot (one installed meanwhile)
                    _put_snapshot(conn, meta, data)

        await self._worker.run(store)
        return Snapshot(meta, io.BytesIO(data))

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty in-memory file for the chunks of a snapshot being received."""
        return io.BytesIO()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the whole state with the snapshot in ``data``, in one transaction.
        ``ValueError`` (state unchanged) if ``data`` is not one of this state machine's
        snapshots."""
        data.seek(0)
        raw = data.read()
        kv = _decode_snapshot(raw)  # before touching anything

        def write(conn: sqlite3.Connection) -> None:
            with _Write(conn):
                conn.execute("DELETE FROM kv")
                rows = ((k, v, _row_crc(k, v)) for k, v in kv.items())
                conn.executemany("INSERT INTO kv (key, value, crc) VALUES (?, ?, ?)", rows)
                _set_applied(conn, meta.last_log_id, meta.last_membership)
                _put_snapshot(conn, meta, raw)

        await self._worker.run(write)

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed (a fresh in-memory file), or ``None``."""
        cur = await self._worker.run(_current_snapshot)
        return None if cur is None else Snapshot(cur[0], io.BytesIO(cur[1]))

    async def get_current_snapshot_meta(self) -> SnapshotMeta | None:
        """The meta of the snapshot ``get_current_snapshot`` returns, or ``None``, without
        reading its data (the optional method of ``RaftStateMachine``: ``Raft.new`` reads
        this at start instead of the whole snapshot row)."""
        return await self._worker.run(_current_snapshot_meta)


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing the parent of each directory
    created: a new directory's entry in its parent must survive a crash as the files in it
    do (the databases' own fsync of ``directory`` does not make ``directory`` itself
    durable, and a node whose directory vanished would come back with no vote and no log)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


async def open_node_storage(directory: Path) -> tuple[SqliteLogStore, SqliteStateMachine]:
    """The log store and state machine of one node, in ``directory`` (created if missing,
    durably: see ``_make_dirs``): ``log.db`` and ``state.db``."""
    with ThreadPoolExecutor(max_workers=1) as once:  # its thread ends with the block
        await asyncio.get_running_loop().run_in_executor(once, _make_dirs, directory)
    log = await SqliteLogStore.open(directory / "log.db")
    try:
        sm = await SqliteStateMachine.open(directory / "state.db")
    except BaseException:
        await log.close()
        raise
    return log, sm
