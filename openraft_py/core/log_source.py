"""``LogSource``: where the node's tasks read log entries from (the in-memory tail of the
log, else the log store), and the record of storage reads in flight that a purge waits for.

``RaftCore`` owns it and is the only writer of the cache (append, truncate, evict, clear);
the state-machine hand-off and the replication streams read through it. A replication
stream reads only while its leader's log is append-only, so what it reads is never
truncated under it; purges are the one deletion it can race with, hence the tracking.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

from .._core import EntryCache
from ..errors import Panicked, StorageError
from ..types import Entry, NodeId
from ..wakeup import Wakeup
from .tasks import stray_cancel

if TYPE_CHECKING:
    from ..storage import RaftLogReader

# Keep at most this many recent entries in memory for replication and apply (a boot fills
# the cache with half of it).
CACHE_MAX_ENTRIES = 65536

# ... and at most about this many bytes of their data (``Normal`` payloads): when the
# entries appended since the last count pass it, the oldest applied ones are dropped until
# the newest fit in half of it. 65536 entries of 1 MiB values would be 64 GiB.
CACHE_MAX_BYTES = 64 * 1024 * 1024


READ_CALL = "RaftLogReader.try_get_log_entries"
"""The plug-in method the errors of ``entry_list`` name."""


def entry_list(got: object, start: int, stop: int, items: bool = True) -> list[Entry]:
    """``got``, what a log reader's ``try_get_log_entries(start, stop)`` returned, as a
    list: itself when it is a list, a new one of a tuple's items. Raises ``StorageError``
    (its cause a ``TypeError`` naming ``READ_CALL``, what it returned and what it should
    return) for anything else, or for a list holding something that is not an ``Entry``.
    Checked here, before anything reads an entry: a generator, a string or a list of dicts
    stopped the node with ``Panicked`` "a task failed" and a bare ``TypeError`` or
    ``AttributeError`` that named no plug-in. ``items=False`` leaves the items to the
    caller (the start's scan checks each one's index and type itself). (The entries'
    indexes are checked by the callers.)"""
    if type(got) is not list:
        if not isinstance(got, (list, tuple)):
            raise StorageError(
                f"reading log entries [{start}, {stop})",
                TypeError(f"{READ_CALL} returned {type(got).__name__} {got!r:.80}, expected a list of Entry"),
            )
        got = list(got)
    for e in got if items else ():
        if not isinstance(e, Entry):
            raise StorageError(
                f"reading log entries [{start}, {stop})",
                TypeError(
                    f"{READ_CALL} returned a list holding {type(e).__name__} {e!r:.80}, expected a list of Entry"
                ),
            )
    return got


class LogSource:
    """The entry cache plus a log reader, for one node.

    Invariant: ``_reads`` maps the token of every storage read in progress to the first index
    it reads; ``purge_allowed`` waits until no entry of them is at or below the purge point.
    """

    def __init__(self, node_id: NodeId, cache: EntryCache, reader: RaftLogReader) -> None:
        self.node_id = node_id
        # The in-memory tail: a run of consecutive entries ending at or before the log's
        # last entry (written by ``RaftCore`` only).
        self.cache = cache
        self.reader = reader
        self._reads: dict[int, int] = {}
        self._tokens = itertools.count(1)
        self._read_done = Wakeup()

    def cached(self, start: int, stop: int) -> list[Entry]:
        """The entries ``[start, k)`` for the largest ``k <= stop`` the cache holds from
        ``start`` on (``[]`` if it does not hold ``start``). Never awaits: the hot path of
        replication and apply."""
        return self.cache.get(start, stop) if stop > start else []

    async def read(self, start: int, stop: int) -> list[Entry]:
        """Exactly the entries ``[start, stop)``: from the cache, the rest from storage (a
        purge waits until that read ends). Raises ``StorageError`` whose ``__cause__`` is
        the store's error (``LogCompacted`` if purged meanwhile) or, for an answer that is
        not a list of ``Entry``, a ``TypeError`` naming the method (``entry_list``);
        ``Panicked`` if the store returns the wrong number of entries, or a first or last
        entry of another index."""
        entries = self.cached(start, stop)
        if len(entries) == stop - start:
            return entries
        rest = await self.read_storage(start + len(entries), stop)
        return entries + rest if entries else rest

    async def read_storage(self, start: int, stop: int) -> list[Entry]:
        """The entries ``[start, stop)`` from the log store, bypassing the cache; tracked as
        a read in flight while it runs. Errors as for ``read``."""
        token = self.begin_read(start)
        try:
            try:
                entries = await self.reader.try_get_log_entries(start, stop)
            except Exception as e:
                raise StorageError(f"reading log entries [{start}, {stop})", e) from e
            except asyncio.CancelledError as e:
                stray = stray_cancel("the log reader's try_get_log_entries", e)
                if stray is None:
                    raise
                raise StorageError(f"reading log entries [{start}, {stop})", stray) from stray
        finally:
            self.end_read(token)
        entries = entry_list(entries, start, stop)
        n = len(entries)
        if n != stop - start:
            raise Panicked(f"node {self.node_id}: log store returned {len(entries)} entries for [{start}, {stop})")
        if n and (entries[0].log_id.index != start or entries[-1].log_id.index != stop - 1):
            # (Cheap: the ends only. Entries of other indexes would be replicated or
            # applied in place of these.)
            raise Panicked(
                f"node {self.node_id}: log store returned entries {entries[0].log_id!r}..{entries[-1].log_id!r} "
                f"for [{start}, {stop})"
            )
        return entries

    def begin_read(self, start: int) -> int:
        """Record a storage read from index ``start`` in flight (purges at or past it wait)
        and return its token for ``end_read``. ``read_storage`` does this itself."""
        token = next(self._tokens)
        self._reads[token] = start
        return token

    def end_read(self, token: int) -> None:
        """The read recorded under ``token`` ended (a second call does nothing)."""
        if self._reads.pop(token, None) is not None:
            self._read_done.wake()

    async def purge_allowed(self, upto: int) -> None:
        """Return once no storage read in flight reads an index ``<= upto``. Only reads in
        flight are waited for: keeping new reads off the purged range is the caller's job
        (the engine's purged log id, checked before every read)."""
        while any(start <= upto for start in self._reads.values()):
            await self._read_done.wait()
