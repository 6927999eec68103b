"""Openraft 0.8's single-object storage, and the ``Adaptor`` that splits it.

Openraft 0.8 stores the log, the vote and the state machine behind one trait,
``RaftStorage``. ``Adaptor(storage)`` turns such an object into the ``(log_store,
state_machine)`` pair ``Raft.new`` takes::

    log_store, state_machine = Adaptor(MemRaftStorage())
    raft = await Raft.new(1, config, network, log_store, state_machine)

Semantics the adaptor adds or relies on:

- **Durable on return.** Every write of a ``RaftStorage`` is durable when its coroutine
  returns. The adaptor's ``append`` therefore calls ``callback.io_completed(None)`` right
  after ``append_to_log`` returns (no group commit: use ``RaftLogStorage`` directly for that).
  If ``append_to_log`` raises, the exception propagates and the callback is not called (the
  node stops with a ``StorageError``).
- **Holes.** The adaptor refuses an append that does not continue the log with
  ``ValueError`` before calling ``append_to_log``.
- **Truncation.** ``truncate_after(log_id)`` becomes ``delete_conflict_logs_since(x)`` where
  ``x`` is the id of the first entry after ``log_id`` (read from the log); nothing is called
  when there is no such entry.
- **Concurrency.** The log half is called from RaftCore's task and the state-machine half
  from the state-machine worker task, so calls of the two halves interleave (never in
  parallel threads). Readers call ``try_get_log_entries`` / ``read_vote`` concurrently too.
"""

from __future__ import annotations

from typing import IO, Any, BinaryIO, Protocol

from ..types import Entry, LogId, LogState, Snapshot, SnapshotMeta, StoredMembership, Vote
from ..validation import check_implements, check_method_kinds
from . import IOFlushed
from .memory import MemDisk, MemLogStore, MemStateMachine

__all__ = ["Adaptor", "AdaptedLogStore", "AdaptedStateMachine", "MemRaftStorage", "RaftStorage"]


class RaftStorage(Protocol):
    """Log, vote and state machine in one object (Openraft 0.8). Every write is durable on
    return. Conventions (half-open ranges, no holes, ``LogCompacted``) are those of
    ``openraft_py.storage``."""

    async def get_log_state(self) -> LogState:
        """``LogState(last_purged_log_id, last_log_id)`` as ``RaftLogStorage.get_log_state``."""
        ...

    async def save_vote(self, vote: Vote) -> None:
        """Persist ``vote``, replacing the previous one."""
        ...

    async def read_vote(self) -> Vote | None:
        """The saved vote, or ``None``."""
        ...

    async def save_committed(self, committed: LogId | None) -> None:
        """Remember the committed log id (optional: may be a no-op)."""
        ...

    async def read_committed(self) -> LogId | None:
        """The saved committed log id, or ``None``."""
        ...

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries ``[start, stop)`` as ``RaftLogReader.try_get_log_entries`` (raises
        ``LogCompacted`` for a purged start). May be called concurrently with other calls."""
        ...

    async def append_to_log(self, entries: list[Entry]) -> None:
        """Append ``entries``, which continue the log (the adaptor checks it)."""
        ...

    async def delete_conflict_logs_since(self, log_id: LogId) -> None:
        """Delete every entry with ``index >= log_id.index``."""
        ...

    async def purge_logs_upto(self, log_id: LogId) -> None:
        """Delete every entry with ``index <= log_id.index``; remember ``log_id`` as last
        purged (may be beyond the last entry; not beyond the last purged one: no-op)."""
        ...

    async def last_applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        ...

    async def apply_to_state_machine(self, entries: list[Entry]) -> list[Any]:
        """Apply committed ``entries``; one response per entry as ``RaftStateMachine.apply``."""
        ...

    async def build_snapshot(self) -> Snapshot:
        """Build a snapshot of the applied state and make it the current one."""
        ...

    async def begin_receiving_snapshot(self) -> IO[bytes]:
        """A new, empty, writable binary file for an incoming snapshot (any binary file
        object, as ``RaftStateMachine.begin_receiving_snapshot``)."""
        ...

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the state with the snapshot in ``data`` (``ValueError`` if not one)."""
        ...

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last built or installed snapshot (fresh readable file), or ``None``."""
        ...


class AdaptedLogStore:
    """The ``RaftLogStorage`` half of an ``Adaptor`` (also its own ``RaftLogReader``)."""

    __slots__ = ("storage",)

    def __init__(self, storage: RaftStorage) -> None:
        self.storage = storage

    async def get_log_state(self) -> LogState:
        """Delegates to ``storage.get_log_state``."""
        return await self.storage.get_log_state()

    async def save_vote(self, vote: Vote) -> None:
        """Delegates to ``storage.save_vote``."""
        await self.storage.save_vote(vote)

    async def read_vote(self) -> Vote | None:
        """Delegates to ``storage.read_vote``."""
        return await self.storage.read_vote()

    async def save_committed(self, committed: LogId | None) -> None:
        """Delegates to ``storage.save_committed``."""
        await self.storage.save_committed(committed)

    async def read_committed(self) -> LogId | None:
        """Delegates to ``storage.read_committed``."""
        return await self.storage.read_committed()

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """Delegates to ``storage.try_get_log_entries`` (a copy of its list)."""
        return list(await self.storage.try_get_log_entries(start, stop))

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """``append_to_log`` then ``callback.io_completed(None)``; ``ValueError`` (nothing
        called) when ``entries`` do not continue the log or are not consecutive."""
        if entries:
            st = await self.storage.get_log_state()
            expected = 0 if st.last_log_id is None else st.last_log_id.index + 1
            first = entries[0].log_id.index
            if first != expected or entries[-1].log_id.index - first != len(entries) - 1:
                raise ValueError(
                    f"append must continue the log with consecutive indexes: got "
                    f"{entries[0].log_id!r}..{entries[-1].log_id!r}, the next index is {expected}"
                )
            await self.storage.append_to_log(list(entries))
        callback.io_completed(None)

    async def truncate_after(self, log_id: LogId | None) -> None:
        """``delete_conflict_logs_since`` the first entry after ``log_id``, if any."""
        if log_id is None:
            purged = (await self.storage.get_log_state()).last_purged_log_id
            first = 0 if purged is None else purged.index + 1
        else:
            first = log_id.index + 1
        nxt = await self.storage.try_get_log_entries(first, first + 1)
        if nxt:
            await self.storage.delete_conflict_logs_since(nxt[0].log_id)

    async def purge(self, log_id: LogId) -> None:
        """Delegates to ``storage.purge_logs_upto``."""
        await self.storage.purge_logs_upto(log_id)

    def get_log_reader(self) -> AdaptedLogStore:
        """A reader over the same storage (reads delegate to it)."""
        return AdaptedLogStore(self.storage)

    def __repr__(self) -> str:
        return f"AdaptedLogStore({self.storage!r})"


class _Builder:
    """The ``SnapshotBuilder`` of an ``AdaptedStateMachine``."""

    __slots__ = ("storage",)

    def __init__(self, storage: RaftStorage) -> None:
        self.storage = storage

    async def build_snapshot(self) -> Snapshot:
        """Delegates to ``storage.build_snapshot``."""
        return await self.storage.build_snapshot()


class AdaptedStateMachine:
    """The ``RaftStateMachine`` half of an ``Adaptor``."""

    __slots__ = ("storage",)

    def __init__(self, storage: RaftStorage) -> None:
        self.storage = storage

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """Delegates to ``storage.last_applied_state``."""
        return await self.storage.last_applied_state()

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Delegates to ``storage.apply_to_state_machine``."""
        if not entries:
            return []
        return await self.storage.apply_to_state_machine(entries)

    async def begin_receiving_snapshot(self) -> IO[bytes]:
        """Delegates to ``storage.begin_receiving_snapshot``."""
        return await self.storage.begin_receiving_snapshot()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Delegates to ``storage.install_snapshot``."""
        await self.storage.install_snapshot(meta, data)

    async def get_current_snapshot(self) -> Snapshot | None:
        """Delegates to ``storage.get_current_snapshot``."""
        return await self.storage.get_current_snapshot()

    def get_snapshot_builder(self) -> _Builder:
        """A builder calling ``storage.build_snapshot``."""
        return _Builder(self.storage)

    def __repr__(self) -> str:
        return f"AdaptedStateMachine({self.storage!r})"


_RAFT_STORAGE_METHODS = tuple(name for name, value in vars(RaftStorage).items()
                              if callable(value) and not name.startswith("_"))
"""The methods of ``RaftStorage``."""


def Adaptor(storage: RaftStorage) -> tuple[AdaptedLogStore, AdaptedStateMachine]:  # noqa: N802
    """Split a v0.8 ``RaftStorage`` into the ``(log_store, state_machine)`` pair ``Raft.new``
    takes (see the module docstring for the semantics). ``TypeError`` naming the missing
    methods unless ``storage`` implements ``RaftStorage`` (a wrong object would otherwise
    pass ``Raft.new``'s check, the adapters having every method, and fail as a storage error),
    and naming the method when one of them is a plain ``def`` (every one is ``async def``:
    the adapters await what it returns, and the node stopped at its first call)."""
    check_implements(storage, "Adaptor's storage", "RaftStorage", _RAFT_STORAGE_METHODS)
    check_method_kinds(storage, "Adaptor's storage", _RAFT_STORAGE_METHODS)
    return AdaptedLogStore(storage), AdaptedStateMachine(storage)


class MemRaftStorage:
    """An in-memory ``RaftStorage`` (the v0.8 reference implementation) over ``disk`` (a new
    ``MemDisk`` when ``None``).

    The log and vote live in ``disk``'s log fields; the state machine is ``MemStateMachine``'s
    key-value model over the same disk, so its snapshots are interchangeable with
    ``MemStateMachine``'s. A new object over the same disk models a restart.
    """

    def __init__(self, disk: MemDisk | None = None) -> None:
        self.disk = disk if disk is not None else MemDisk()
        self._log = MemLogStore(self.disk)
        self._sm = MemStateMachine(self.disk)

    @property
    def data(self) -> dict[str, str]:
        """The key-value data (do not modify)."""
        return self._sm.data

    # -- log -----------------------------------------------------------------------------------

    async def get_log_state(self) -> LogState:
        """``LogState(last_purged_log_id, last_log_id)``."""
        return await self._log.get_log_state()

    async def save_vote(self, vote: Vote) -> None:
        """Store ``vote``."""
        self.disk.vote = vote

    async def read_vote(self) -> Vote | None:
        """The saved vote, or ``None``."""
        return self.disk.vote

    async def save_committed(self, committed: LogId | None) -> None:
        """Store the committed log id."""
        self.disk.committed = committed

    async def read_committed(self) -> LogId | None:
        """The saved committed log id, or ``None``."""
        return self.disk.committed

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries ``[start, stop)``; ``LogCompacted`` for a purged start."""
        return await self._log.try_get_log_entries(start, stop)

    async def append_to_log(self, entries: list[Entry]) -> None:
        """Append ``entries`` (``ValueError`` on a hole)."""
        done = IOFlushed(lambda _e: None)
        await self._log.append(entries, done)

    async def delete_conflict_logs_since(self, log_id: LogId) -> None:
        """Delete the entries with ``index >= log_id.index``."""
        disk = self.disk
        del disk.entries[max(0, log_id.index - disk.offset) :]

    async def purge_logs_upto(self, log_id: LogId) -> None:
        """Delete the entries up to ``log_id`` and remember it as last purged."""
        await self._log.purge(log_id)

    # -- state machine -------------------------------------------------------------------------

    async def last_applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``."""
        return await self._sm.applied_state()

    async def apply_to_state_machine(self, entries: list[Entry]) -> list[Any]:
        """Apply ``entries`` to the key-value state."""
        return await self._sm.apply(entries)

    async def build_snapshot(self) -> Snapshot:
        """Build (and keep as current) a snapshot of the key-value state."""
        return await self._sm.get_snapshot_builder().build_snapshot()

    async def begin_receiving_snapshot(self) -> BinaryIO:
        """A new empty ``io.BytesIO``."""
        return await self._sm.begin_receiving_snapshot()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the state with the snapshot in ``data``."""
        await self._sm.install_snapshot(meta, data)

    async def get_current_snapshot(self) -> Snapshot | None:
        """The current snapshot, or ``None``."""
        return await self._sm.get_current_snapshot()

    def __repr__(self) -> str:
        return f"MemRaftStorage({self.disk!r})"
