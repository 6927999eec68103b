"""Boot recovery: the engine's starting state rebuilt from a node's storage.

``restore_state`` is what ``Raft.new`` runs before the engine exists (and what the store
conformance checks in ``openraft_py.testing.suite.restore`` call). In order:

1. read the vote, the log's bounds, the saved committed id and the state machine's applied
   id, membership and current snapshot's last log id (from its meta alone when the state
   machine has ``get_current_snapshot_meta``: a start reads no snapshot data); a snapshot
   past what is applied is a broken store;
2. repair the log: if it does not hold the applied id, discard it up to the applied id. Two
   ways to get there: a snapshot was installed and a crash came before the log was fixed
   (the log's entries past what it shares with the snapshot cannot be committed ones), or a
   leader applied entries a quorum of followers held before its own copy was durable and a
   crash lost that copy (every entry the log still holds is applied). The purged range
   must stay covered by a snapshot, so when the current one is older than the applied id
   one is built first. A state machine behind the log's purged id is refused: it lost its
   state, and the entries it would need are gone. When no snapshot covers the purged log
   (its file was removed), one is built;
3. scan the log once: the term-change keys of ``LogIndex``, the membership entries, and the
   in-memory tail for the entry cache;
4. clamp committed: never past the log's last entry (a store that lost an unflushed tail the
   cluster still holds), never before what is applied;
5. split the memberships: the newest one at or below committed is the committed one (the
   state machine's own when the log has none newer), the rest are uncommitted.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, TypeVar

from .._core import EntryCache, LogIndex, normal_data_bytes
from ..engine import MembershipState, RaftState
from ..errors import StorageError
from ..storage import current_snapshot_meta_of
from ..types import (
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    LogState,
    Membership,
    NodeId,
    Normal,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
    Vote,
)
from . import snapshot_io
from .log_source import CACHE_MAX_BYTES, CACHE_MAX_ENTRIES, entry_list

if TYPE_CHECKING:
    from ..storage import RaftLogStorage, RaftStateMachine

__all__ = ["restore_state"]

log = logging.getLogger("openraft_py.core.restore")

T = TypeVar("T")

READ_CHUNK = 4096
"""At most this many entries are read from the log store per call while scanning the log at
start (``_scan_log``)."""

READ_CHUNK_BYTES = 8 * 1024 * 1024
"""The scan's reads are sized so that one holds about this many bytes of entry data: each
read asks for as many entries as fit in it at the average size of the entries of the read
before (at least one, at most ``READ_CHUNK``; the first asks for ``READ_FIRST``), so a read
right after a run of small entries may hold up to ``READ_CHUNK`` large ones. A read of
4096 entries whatever their size held 256 MiB of a log of 64 KiB values at once (a start
peaked at 1.4 GB of memory), 16 GiB of one of 4 MiB values (``Config.max_entry_bytes``)."""

SCAN_INFO_ENTRIES = 100_000
"""A scan of more entries than this says at INFO that it starts and when it is done (a log of
1,000,000 entries of 100 bytes takes 1.4-2.3 s on a loaded 2-core machine)."""

SCAN_PROGRESS_SECONDS = 10.0
"""While the scan runs, it says at INFO how far it is every this many seconds (a log of large
entries may take long with fewer than ``SCAN_INFO_ENTRIES``)."""

READ_FIRST = 16
"""Entries of the scan's first read, before any size is known (at most 64 MiB of entries of
``Config.max_entry_bytes``' default 4 MiB)."""


async def restore_state(
    node_id: NodeId, log_store: RaftLogStorage, state_machine: RaftStateMachine
) -> tuple[RaftState, EntryCache]:
    """Rebuild node ``node_id``'s engine state from its storage (vote, log ids, committed,
    applied, snapshot, memberships) and an entry cache holding the tail of its log (at most
    ``CACHE_MAX_ENTRIES // 2`` entries). May repair the log first (step 2 of the module
    docstring). Raises ``StorageError`` for a store whose state is inconsistent (a snapshot
    past its applied id, a state machine behind the purged log, a hole in the log) or a store
    method that returned a value of another type than its contract says; whatever the
    stores raise passes through."""
    vote = _expect(await log_store.read_vote(), Vote, "the log store's read_vote") or Vote.new(0, 0)
    committed = _expect(await log_store.read_committed(), LogId, "the log store's read_committed")
    applied_state = await state_machine.applied_state()
    if not (isinstance(applied_state, tuple) and len(applied_state) == 2):
        raise _unexpected(applied_state, "the state machine's applied_state", "a (LogId or None, StoredMembership) pair")
    applied = _expect(applied_state[0], LogId, "the state machine's applied_state (its applied log id)")
    sm_membership = applied_state[1]
    if sm_membership is not None and not isinstance(sm_membership, StoredMembership):
        raise _unexpected(sm_membership, "the state machine's applied_state (its membership)", "a StoredMembership")
    snapshot, snapshot_membership = await _current_snapshot_ids(state_machine)
    if snapshot is not None and (applied is None or snapshot > applied):
        raise StorageError(f"node {node_id}: the state machine's snapshot {snapshot!r} is past its applied {applied!r}")
    sm_membership_id = None if sm_membership is None else sm_membership.log_id
    if snapshot_membership is not None and (sm_membership_id is None or sm_membership_id < snapshot_membership):
        raise StorageError(
            f"node {node_id}: the state machine's applied_state reports the membership of {sm_membership_id!r}, "
            f"older than the one its own current snapshot holds (of {snapshot_membership!r}): it lost the "
            f"membership it applied. {_KEEP_MEMBERSHIP}"
        )
    log_state, snapshot = await _repair_log(node_id, log_store, state_machine, applied, snapshot)
    _check_not_behind_purged(node_id, applied, log_state.last_purged_log_id)
    snapshot = await _cover_purged(node_id, state_machine, snapshot, log_state.last_purged_log_id)
    log_ids, memberships, cache = await _scan_log(node_id, log_store, log_state)
    committed = _clamp_committed(node_id, committed, applied, log_state.last_log_id)
    committed_m = sm_membership if sm_membership is not None else EMPTY_STORED_MEMBERSHIP
    ms = _split_memberships(committed_m, memberships, committed)
    state = RaftState(node_id, vote, log_ids, committed, ms, applied=applied, snapshot=snapshot)
    return state, cache


_KEEP_MEMBERSHIP = (
    "A state machine keeps, durably and with its applied log id, the StoredMembership of the "
    "last Membership entry it applied (or of the snapshot it installed: meta.last_membership), "
    "and applied_state returns it (docs/guides/storage.md, 'A state machine')"
)


async def _current_snapshot_ids(state_machine: RaftStateMachine) -> tuple[LogId | None, LogId | None]:
    """The last log id of the state machine's current snapshot (``None``: none, or one of
    nothing) and the log id of the membership its meta holds (``None`` likewise). From its optional ``get_current_snapshot_meta`` when it has one
    (``current_snapshot_meta_of``), which reads no snapshot data; else from
    ``get_current_snapshot``, whose file is closed unread. Either result is checked: a value
    of another type raises ``StorageError`` naming the method (it failed with an
    ``AttributeError`` about ``meta`` or ``data`` that named no store). Whether the
    snapshot's data is intact is not checked here: it is when the data is read (sent to a
    follower, see ``RaftStateMachine.get_current_snapshot_meta``)."""
    read_meta = current_snapshot_meta_of(state_machine)
    if read_meta is not None:
        what = "the state machine's get_current_snapshot_meta"
        pending = read_meta()
        if not inspect.isawaitable(pending):
            raise _unexpected(pending, what, "an awaitable (declare it async def)")
        meta = _expect(await pending, SnapshotMeta, what)
    else:
        what = "the state machine's get_current_snapshot"
        snap = await state_machine.get_current_snapshot()
        if snap is None:
            return None, None
        if not isinstance(snap, Snapshot):
            raise _unexpected(snap, what, "a Snapshot or None")
        close = getattr(snap.data, "close", None)
        if callable(close):
            close()
        meta = snap.meta
        if not isinstance(meta, SnapshotMeta):
            raise _unexpected(meta, f"{what} (its meta)", "a SnapshotMeta")
    if meta is None:
        return None, None
    last = _expect(meta.last_log_id, LogId, f"{what} (its meta's last_log_id)")
    membership = meta.last_membership
    if not isinstance(membership, StoredMembership):
        raise _unexpected(membership, f"{what} (its meta's last_membership)", "a StoredMembership")
    return last, _expect(membership.log_id, LogId, f"{what} (its meta's last_membership.log_id)")


def _unexpected(value: object, what: str, expected: str) -> StorageError:
    """The error for a store method ``what`` that returned ``value`` instead of ``expected``."""
    return StorageError(f"{what} returned {type(value).__name__} {value!r:.80}, expected {expected}")


def _expect(value: T | None, cls: type[T], what: str) -> T | None:
    """``value`` if it is a ``cls`` or ``None``; otherwise ``StorageError`` naming ``what``
    (the method that returned it). Checked once, at start: a value of another type (a
    tuple for a vote) failed later with an ``AttributeError`` that named no store."""
    if value is None or isinstance(value, cls):
        return value
    raise _unexpected(value, what, f"a {cls.__name__} or None")


def _check_not_behind_purged(node_id: NodeId, applied: LogId | None, purged: LogId | None) -> None:
    """Raise ``StorageError`` when the state machine has applied less than the log purged.

    A log is purged only up to a snapshot, and a snapshot only of what the state machine
    applied (durably: a snapshot build makes its state durable), so a state machine behind
    the purged id lost its state: reset or removed (a state machine kept in memory over a
    durable log, its files deleted). The entries it would need were discarded, and Raft never
    sends a snapshot to a node whose log matches: the node would start, then stop at its
    first apply with a ``LogCompacted`` error that names neither store."""
    if purged is None or (applied is not None and applied.index >= purged.index):
        return
    raise StorageError(
        f"node {node_id}: the state machine has applied {'nothing' if applied is None else f'up to {applied!r}'} "
        f"but the log is purged up to {purged!r}: the entries between are gone, so the state machine "
        "cannot catch up (it lost its state: its data was removed or reset, or it does not keep it across "
        "restarts). Restore the state machine's data, or start the node on empty storage under a new node id"
    )


async def _cover_purged(
    node_id: NodeId, state_machine: RaftStateMachine, snapshot: LogId | None, purged: LogId | None
) -> LogId | None:
    """The snapshot's id, after building one if none covers the purged log (its file was
    removed, or the state machine does not keep its snapshots across restarts; the state
    machine has applied at least the purged id, ``_check_not_behind_purged``). Without it,
    the node as leader could never bring a follower behind the purged id up to date: it
    warned "no snapshot covers the purged log yet" at every attempt, for good."""
    if purged is None or (snapshot is not None and snapshot.index >= purged.index):
        return snapshot
    log.warning("node %s: no snapshot covers the purged log (up to %r); building one", node_id, purged)
    built = await _build_snapshot(state_machine, f"building a snapshot to cover the purged log (up to {purged!r})")
    if built is None or built.index < purged.index:
        raise StorageError(f"node {node_id}: a snapshot built to cover the purged log (up to {purged!r}) is of {built!r}")
    return built


async def _build_snapshot(state_machine: RaftStateMachine, subject: str) -> LogId | None:
    """Build a snapshot with the state machine's builder and return its last log id (its
    file closed unread). ``StorageError`` about ``subject`` when the builder raises or
    returns something other than a ``Snapshot`` with a ``SnapshotMeta``, naming the method
    and what it returned, as a build of the running node does (``Snapshots.build``): it was
    an ``AttributeError`` about ``.data`` or ``.close`` that named no plug-in."""
    try:
        snap = await snapshot_io.build_snapshot(state_machine)
        snapshot_io.check_snapshot(snap, "SnapshotBuilder.build_snapshot")
    except Exception as e:
        raise StorageError(subject, e) from e
    snapshot_io.close_quietly(snap.data)
    return _expect(snap.meta.last_log_id, LogId, "SnapshotBuilder.build_snapshot (its meta's last_log_id)")


async def _repair_log(
    node_id: NodeId, log_store: RaftLogStorage, state_machine: RaftStateMachine, applied: LogId | None, snapshot: LogId | None
) -> tuple[LogState, LogId | None]:
    """The log's state and the snapshot's id, after discarding the log up to ``applied`` if
    it does not hold that id. The log's purged id never passes the snapshot: when the
    snapshot is older than ``applied`` (or there is none), one is built first (so a crash
    between the two steps leaves a log that still needs the repair, never a purged range
    without a snapshot covering it; a follower needing those entries gets the snapshot)."""
    log_state = await log_store.get_log_state()
    if not isinstance(log_state, LogState):
        raise _unexpected(log_state, "the log store's get_log_state", "a LogState")
    if applied is None or await _log_holds(log_store, log_state, applied):
        return log_state, snapshot
    # Either a snapshot was installed but the log was not fixed before a crash (the log's
    # entries after what it has in common with the snapshot cannot be committed ones), or
    # the log lost an unflushed tail its leader had already applied (all it holds is applied).
    log.warning("node %s: the log does not hold the applied %r; discarding it up to there", node_id, applied)
    if snapshot is None or snapshot < applied:
        built = await _build_snapshot(state_machine, f"building a snapshot at applied {applied!r}")
        if built != applied:
            raise StorageError(f"node {node_id}: a snapshot built at applied {applied!r} is of {built!r}")
        snapshot = applied
        log.warning("node %s: built a snapshot of %r to cover the discarded log", node_id, applied)
    await log_store.truncate_after(log_state.last_purged_log_id)
    await log_store.purge(applied)
    return await log_store.get_log_state(), snapshot


async def _log_holds(log_store: RaftLogStorage, log_state: LogState, log_id: LogId) -> bool:
    """Whether the log holds ``log_id``, or purged past it (purged entries were committed)."""
    purged = log_state.last_purged_log_id
    if purged is not None and log_id.index <= purged.index:
        return True
    last = log_state.last_log_id
    if last is None or log_id.index > last.index:
        return False
    entries = entry_list(
        await log_store.get_log_reader().try_get_log_entries(log_id.index, log_id.index + 1),
        log_id.index,
        log_id.index + 1,
        items=False,
    )
    if not entries:
        return False
    e = entries[0]
    if not isinstance(e, Entry) or e.log_id.index != log_id.index:
        # Not an answer: the repair would discard the log on the word of a broken read.
        got = f"entry {e.log_id!r}" if isinstance(e, Entry) else f"{type(e).__name__} {e!r:.80}"
        raise StorageError(f"reading log [{log_id.index}, {log_id.index + 1}): the log store returned {got}")
    return e.log_id == log_id


async def _scan_log(
    node_id: NodeId, log_store: RaftLogStorage, log_state: LogState
) -> tuple[LogIndex, list[StoredMembership], EntryCache]:
    """Read the whole log once: its ``LogIndex``, its membership entries in log order, and a
    cache of its tail. Every entry is read and its index checked (a store that lost entries
    or reads back others is refused: ``StorageError``), in reads of about
    ``READ_CHUNK_BYTES`` of data each (``_next_read_size``), so the scan holds about that much
    of the log at a time whatever its length, while its entries' sizes stay alike (each read
    is sized from the one before it: the first read after a run of small entries may still
    hold up to ``READ_CHUNK`` large ones). A long scan says
    so at INFO (``SCAN_INFO_ENTRIES``, ``SCAN_PROGRESS_SECONDS``): the node answers nobody
    until it is done."""
    purged = log_state.last_purged_log_id
    last = log_state.last_log_id
    start = 0 if purged is None else purged.index + 1
    stop = 0 if last is None else last.index + 1
    reader = log_store.get_log_reader()
    # (term, first index of that term), one per term change.
    keys: list[tuple[int, int]] = []
    memberships: list[StoredMembership] = []
    cache = EntryCache()
    cache_from = max(start, stop - CACHE_MAX_ENTRIES // 2)
    cached_bytes = 0
    want = READ_FIRST
    lo = start
    began = time.monotonic()
    next_progress = began + SCAN_PROGRESS_SECONDS
    told = stop - start > SCAN_INFO_ENTRIES
    if told:
        log.info(
            "node %s: reading its log at start (entries %d to %d, %d entries) to check it and find its "
            "terms and memberships; it answers no request until this is done",
            node_id, start, stop - 1, stop - start,
        )
    while lo < stop:
        hi = min(stop, lo + want)
        entries = entry_list(await reader.try_get_log_entries(lo, hi), lo, hi, items=False)
        if len(entries) != hi - lo:
            raise StorageError(f"reading log [{lo}, {hi}): got {len(entries)} entries (a hole in the log?)")
        for i, e in enumerate(entries, lo):
            lid = e.log_id if isinstance(e, Entry) else None
            if lid is None or lid.index != i:
                # A store that returns other entries (out of order, repeated, shifted by
                # one) would give the node a log it does not hold: it stalled, or discarded
                # its log, without an error.
                what = f"entry {lid!r}" if lid is not None else f"{type(e).__name__} {e!r:.80}"
                raise StorageError(f"reading log [{lo}, {hi}): the log store returned {what} at index {i}")
            if not keys or keys[-1][0] != lid.term:
                keys.append((lid.term, lid.index))
            if type(e.payload) is Membership:
                memberships.append(StoredMembership(lid, e.payload))
        if hi > cache_from:
            tail = entries[max(0, cache_from - lo) :]
            cache.append(tail[0].log_id.index, tail)
            cached_bytes += normal_data_bytes(tail, Normal)
            if cached_bytes > CACHE_MAX_BYTES // 2:
                # (as many bytes as the running node keeps: ``RaftCore._maybe_evict_cache``)
                cached_bytes = _keep_newest_bytes(cache, CACHE_MAX_BYTES // 2)
        want = _next_read_size(hi - lo, normal_data_bytes(entries, Normal))
        lo = hi
        now = time.monotonic()
        if now >= next_progress and lo < stop:
            log.info(
                "node %s: reading its log at start: %d of %d entries read in %.1f s",
                node_id, lo - start, stop - start, now - began,
            )
            next_progress = now + SCAN_PROGRESS_SECONDS
            told = True
    if told:
        log.info("node %s: read its log of %d entries at start in %.1f s", node_id, stop - start, time.monotonic() - began)
    log_ids = LogIndex(None if purged is None else (purged.term, purged.index), keys, -1 if last is None else last.index)
    return log_ids, memberships, cache


def _next_read_size(count: int, data_bytes: int) -> int:
    """Entries for the scan's next read after one of ``count`` entries holding ``data_bytes``
    bytes of ``Normal`` data: as many as fit in ``READ_CHUNK_BYTES`` at that average size,
    between 1 and ``READ_CHUNK``."""
    if data_bytes <= 0:
        return READ_CHUNK
    return max(1, min(READ_CHUNK, READ_CHUNK_BYTES * count // data_bytes))


def _keep_newest_bytes(cache: EntryCache, budget: int) -> int:
    """Evict the oldest entries of ``cache`` until the data of the rest fits in ``budget``
    bytes; return the data bytes kept."""
    entries = cache.get(cache.first_index(), cache.last_index() + 1)
    kept = 0
    i = len(entries)
    while i > 0:
        p = entries[i - 1].payload
        size = len(p.data) if type(p) is Normal else 0
        if kept + size > budget:
            break
        kept += size
        i -= 1
    if i > 0:
        cache.evict_upto(entries[i - 1].log_id.index)
    return kept


def _clamp_committed(
    node_id: NodeId, committed: LogId | None, applied: LogId | None, last: LogId | None
) -> LogId | None:
    """The saved committed id, at most the log's last id and at least the applied id."""
    if committed is not None and (last is None or committed.index > last.index):
        # The store kept a committed id past its own log (it lost an unflushed tail that the
        # rest of the cluster holds). Those entries come back by replication.
        log.warning("node %s: saved committed %r is past the last log id %r; using the log", node_id, committed, last)
        committed = last
    if applied is not None and (committed is None or applied > committed):
        committed = applied
    return committed


def _split_memberships(
    base: StoredMembership, in_log: list[StoredMembership], committed: LogId | None
) -> MembershipState:
    """The membership state: the newest of ``base`` (the state machine's membership) and
    the log's membership entries at or below ``committed`` is the committed one; the log's
    entries past ``committed`` are uncommitted, in log order."""
    ci = -1 if committed is None else committed.index
    committed_m = base
    ms = MembershipState(base)
    for sm in in_log:
        assert sm.log_id is not None
        if sm.log_id.index <= ci:
            if committed_m.log_id is None or sm.log_id > committed_m.log_id:
                committed_m = sm
        else:
            ms.uncommitted.append(sm)
    ms.committed = committed_m
    return ms
