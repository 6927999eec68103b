"""Storage protocols: the log store and the state machine a ``Raft`` node runs on.

A node uses two objects, both supplied by the application:

- a ``RaftLogStorage``: the vote, the committed log id and the log itself. It is called from
  RaftCore's task only. ``append`` returns as soon as the entries are *readable* and reports
  *durability* later through an ``IOFlushed`` callback, so a store can group-commit many
  appends under one fsync on a writer thread.
- a ``RaftStateMachine``: applies committed entries and builds / installs snapshots. It is
  called from the state-machine worker task only; ``SnapshotBuilder.build_snapshot`` runs in
  its own task, concurrently with ``apply``.

Conventions shared by every method here:

- Log indexes start at 0 (``Raft.initialize`` writes ``LogId(0, 0)``); "no log id" is ``None``.
- Index ranges are half-open: ``[start, stop)``.
- The log has no holes: the entries a store holds are exactly the indexes
  ``last_purged.index + 1 .. last_log.index`` (``0 ..`` when nothing was purged).
- Pointers satisfy ``last_purged <= committed <= last_log`` (see
  ``docs/design/log-pointers.md``).
- A store signals a failed read or write by raising any exception; RaftCore wraps it in
  ``openraft_py.errors.StorageError`` and stops the node (a ``Fatal`` error): a store never
  needs to retry internally. The exceptions named below are part of the contract: RaftCore
  relies on them.

``openraft_py.storage.memory`` holds the in-memory implementations (``MemLogStore``,
``MemStateMachine``, ``NoopStateMachine``) used by tests and benchmarks; they are re-exported
here. ``openraft_py.testing`` checks any implementation against this contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import IO, Any, BinaryIO, Protocol

from ..types import EMPTY_STORED_MEMBERSHIP, Entry, LogId, LogState, Snapshot, SnapshotMeta, StoredMembership, Vote

__all__ = [
    "EMPTY_STORED_MEMBERSHIP",
    "IOFlushed",
    "RaftLogReader",
    "RaftLogStorage",
    "durable_append_of",
    "current_snapshot_meta_of",
    "SnapshotBuilder",
    "RaftStateMachine",
    "MemDisk",
    "MemLogStore",
    "MemStateMachine",
    "NoopStateMachine",
    "KvSet",
    "KvDelete",
    "KvCas",
    "KvGet",
    "KvCommand",
    "encode_kv",
    "decode_kv",
]


class IOFlushed:
    """The durability callback of one ``RaftLogStorage.append``.

    The store calls ``io_completed(None)`` once the appended entries are durable, or
    ``io_completed(error)`` if making them durable failed (the node then stops with a
    ``StorageError``). It must be called **exactly once** per ``append``; a second call raises
    ``RuntimeError``.

    Threads: a store may call ``io_completed`` from the event-loop thread or from a thread of
    its own (a writer thread doing the fsync). When ``loop`` is given and the caller is not
    running inside that loop, the call is forwarded to the loop with
    ``loop.call_soon_threadsafe`` so ``fn`` always runs on the loop's thread. Without ``loop``,
    ``fn`` runs in the caller's thread and the store is responsible for thread-safety.
    (RaftCore passes no loop: its ``fn`` hops to the node's loop itself when called from
    another thread, comparing thread ids, which is cheaper than the running-loop check, and
    does nothing once that loop is closed: an append reported after the node shut down.)

    ``on_dropped``, when given, is called (with no argument, in whatever thread drops the
    last reference) if this object is garbage-collected before ``io_completed`` was called:
    the store let go of the callback without calling it, so nothing ever will (an ``append``
    that forgot ``callback.io_completed(None)``). The node passes one that stops it with a
    ``StorageError`` saying so; without it, its writes waited for good, no error said. An
    exception from ``on_dropped`` is ignored.

    ``sends_first`` is a hint for the store: the caller (a leader) sends these entries to its
    followers in the same loop turn. A store whose durability step takes the caller's CPU
    right away (the RocksDB store hands its fsync to a kernel worker queued on that CPU) may
    start it a few loop passes later, so the sends go out first; without the hint (a
    follower, which answers only once the entries are durable) it starts it at once.
    """

    __slots__ = ("_fn", "_loop", "_done", "sends_first", "_on_dropped")

    def __init__(
        self,
        fn: Callable[[BaseException | None], None],
        loop: asyncio.AbstractEventLoop | None = None,
        sends_first: bool = False,
        *,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        self._fn = fn
        self._loop = loop
        self._done = False
        self.sends_first = sends_first
        self._on_dropped = on_dropped

    def __del__(self) -> None:
        # Invariant: ``_on_dropped`` runs at most once, and only for a callback never called
        # (a called one is ``_done``); nothing can call this object any more.
        try:
            on_dropped = self._on_dropped
            if on_dropped is not None and not self._done:
                self._on_dropped = None
                on_dropped()
        except Exception:  # noqa: BLE001 - a finalizer must not raise (also: half-built objects)
            pass

    @property
    def done(self) -> bool:
        """Whether ``io_completed`` has been called."""
        return self._done

    def io_completed(self, error: BaseException | None = None) -> None:
        """Report that the append is durable (``error is None``) or failed (``error``, an
        exception instance; anything else not ``None`` is taken as a failure too, reported
        as a ``TypeError`` saying what was given).

        Raises ``RuntimeError`` when called a second time. When forwarded to another thread's
        loop, ``fn`` runs later on that loop; if that loop is closed, ``RuntimeError`` is raised
        here.
        """
        if self._done:
            raise RuntimeError("IOFlushed.io_completed() called more than once for one append")
        self._done = True
        if error is not None and not isinstance(error, BaseException):
            # Still a failure (the store meant one), said as the misuse it is: a message or an
            # exception class stopped the node with "str: disk full", "type: <class 'OSError'>".
            error = TypeError(
                f"IOFlushed.io_completed(error) takes None or an exception instance, got "
                f"{type(error).__name__} {error!r:.80} (taken as a failed write)"
            )
        loop = self._loop
        if loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._fn, error)
                return
        self._fn(error)

    def __repr__(self) -> str:
        return f"IOFlushed(done={self._done})"


class RaftLogReader(Protocol):
    """Reads the log (and the vote) without modifying it.

    Readers returned by ``RaftLogStorage.get_log_reader`` are used by replication tasks
    concurrently with the store itself and with each other.
    """

    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        """The entries with ``start <= index < stop``, in index order, without holes.

        Returns fewer entries (possibly none) only when the log ends before ``stop - 1``; an
        empty list also when ``stop <= start``. The returned list is the caller's to keep: the
        store must not mutate it later. (A tuple is taken as a list; anything else, or a list
        holding anything but ``Entry`` values, stops the node with ``StorageError`` naming
        this method.)

        Raises ``openraft_py.errors.LogCompacted`` when ``start <= last_purged_log_id.index``
        (some requested entries were purged).
        """
        ...

    async def read_vote(self) -> Vote | None:
        """The last vote saved with ``save_vote``, or ``None`` if there was none."""
        ...


class RaftLogStorage(RaftLogReader, Protocol):
    """The durable log of one node, with its vote and committed log id.

    Called from RaftCore's task only, one call at a time (calls never overlap).
    "Durable on return" means: after the coroutine returns, a crash and restart of the process
    (or machine) observes the write.

    Optional: a store whose appends are durable on return and never wait (an in-memory one)
    may also offer ``append_durable(entries)``, a plain method: ``append`` without the
    callback, raising ``ValueError`` as ``append`` does. The node then calls it instead of
    ``append``, without the coroutine and the callback (``durable_append_of``). A subclass
    that overrides ``append`` alone, or an instance whose ``append`` was replaced, keeps its
    ``append``: the offer holds only where the class that defines ``append_durable`` also
    defines the ``append`` in use (or both are set on the instance).

    Optional: ``async def check_owner(self, node_id: NodeId, cluster_name: str) -> None``.
    ``Raft.new`` calls it first, before it reads anything else from the store, with the
    node's id and cluster name (``raft.owner_cluster_name``: the network factory's
    ``cluster_name`` when it has one, else ``Config.cluster_name``). A store that has no owner recorded records this
    one, durably on return; one recorded for another node id or cluster name raises
    ``openraft_py.errors.StoreOwnerMismatch`` and writes nothing. It keeps a node from
    taking over another node's log and vote (two data directories swapped, a copied machine
    image, a store of another cluster): it could vote twice in a term, or count as a copy of
    entries it never held. ``RocksLogStore`` and ``MemLogStore`` have it; a store without it
    is used unchecked. A store with it should also offer ``async def replace_owner(self,
    node_id, cluster_name)``, which records that owner over any other, durably: the offline
    forced recovery (``openraft_py.recovery.replace_owners``) needs it to give a survivor's
    stores a new cluster name.
    """

    async def get_log_state(self) -> LogState:
        """``LogState(last_purged_log_id, last_log_id)``.

        ``last_log_id`` is the id of the last entry; when the log holds no entry it is
        ``last_purged_log_id`` (both ``None`` for a pristine log). Called at start-up, after a
        restart, so it reflects what is durable.
        """
        ...

    async def save_vote(self, vote: Vote) -> None:
        """Persist ``vote``, replacing the previous one. Durable on return."""
        ...

    async def read_vote(self) -> Vote | None:
        """The last vote saved with ``save_vote``, or ``None`` if there was none."""
        ...

    async def save_committed(self, committed: LogId | None) -> None:
        """Remember the committed log id (an optimisation: it lets a restarted node apply up to
        it before hearing from a leader). Need not be durable on return; a store may also
        not persist it at all and return ``None`` from ``read_committed``."""
        ...

    async def read_committed(self) -> LogId | None:
        """The last value given to ``save_committed`` that is still stored, or ``None``."""
        ...

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        """Append ``entries`` (consecutive indexes) to the end of the log.

        Returns once the entries are *readable* through this store and its readers. Calls
        ``callback.io_completed(None)`` exactly once when they are *durable* (before or after
        returning, from any thread), or ``callback.io_completed(error)`` if persisting failed.
        An empty ``entries`` completes the callback immediately.

        The entries must continue the log without a hole: ``entries[0].log_id.index`` equals
        ``last_log_id.index + 1`` (``0`` for a pristine log; ``last_purged.index + 1`` after a
        purge of the whole log). Raises ``ValueError`` otherwise, without changing the log and
        without calling ``callback``. The store takes ownership of the ``Entry`` objects (they
        are immutable) but not of the list.
        """
        ...

    async def truncate_after(self, log_id: LogId | None) -> None:
        """Delete every entry with ``index > log_id.index`` (conflicting entries of a follower).

        ``None`` deletes every entry that is not purged. Entries at or below the last purged
        index are never touched (they are gone already). Durable on return.
        """
        ...

    async def purge(self, log_id: LogId) -> None:
        """Delete every entry with ``index <= log_id.index`` and remember ``log_id`` as the
        last purged log id.

        Only called with entries covered by a snapshot. ``log_id`` may be beyond the last
        entry (after installing a snapshot): the log becomes empty and the next append starts
        at ``log_id.index + 1``. A ``log_id`` not greater than the current last purged one is a
        no-op. Durable on return. Afterwards ``try_get_log_entries`` raises ``LogCompacted``
        for the purged range.
        """
        ...

    def get_log_reader(self) -> RaftLogReader:
        """A new reader over this log, independent of the store object and usable
        concurrently with it (one per replication task). Plain method, not a coroutine."""
        ...


class SnapshotBuilder(Protocol):
    """Builds one snapshot of a state machine."""

    async def build_snapshot(self) -> Snapshot:
        """Build a snapshot of the state machine as of its last applied entry, make it the
        state machine's current snapshot (what ``get_current_snapshot`` returns) and return it.

        Runs concurrently with ``RaftStateMachine.apply``: the snapshot must be a consistent
        image of one applied point. ``Snapshot.data`` is a readable binary file positioned at
        0. Durable on return (for stores whose state is durable). Returning anything but a
        ``Snapshot`` with a ``SnapshotMeta`` stops the node with ``StorageError``, as raising
        does (so does such a value from ``get_current_snapshot`` when a leader sends it).
        """
        ...


class RaftStateMachine(Protocol):
    """The application state, driven by committed entries.

    Called from the state-machine worker task only, one call at a time, except the builders
    returned by ``get_snapshot_builder`` which run concurrently.

    Optional: ``async def apply_without_responses(self, entries: list[Entry]) -> None``.
    When a state machine has it, the worker calls it instead of ``apply`` for the batches
    whose responses nobody reads (no client on this node waits for them: every batch of a
    follower, and a leader's entries of earlier terms). It must leave exactly the state
    ``apply`` would, and may skip the work only the responses need (the shipped key-value
    state machines skip reading a key's previous value on a set). Not part of the protocol's
    required members: a state machine without it gets ``apply`` for every batch.

    Optional: ``async def check_owner(self, node_id: NodeId, cluster_name: str) -> None``, as
    ``RaftLogStorage.check_owner``: ``Raft.new`` calls it after the log store's, before it
    reads anything else. A state machine of another cluster made the node discard its own
    log up to that state machine's applied id (the log did not hold it), acknowledged
    entries included. ``RocksStateMachine`` has it; ``MemStateMachine`` does not (its state
    does not outlive the process, except on a ``MemDisk`` whose log store has the record).

    Optional: ``def set_fatal_handler(self, handler: Callable[[BaseException], None]) ->
    None``, a plain method. ``Raft.new`` calls it once, after ``check_owner``, with a handler
    that stops the node: a state machine that fails outside any call of the node (a write
    it deferred past the ``apply`` that answered, as ``RocksStateMachine`` does for large
    batches) calls ``handler(error)`` on the node's event loop, and the node stops with
    ``StorageError`` as for a failed call, logged once. Without it such a failure is seen
    only by the state machine's next call: a leader taking no more writes kept leading, and
    every read of the state failed meanwhile.

    Optional: ``async def get_current_snapshot_meta(self) -> SnapshotMeta | None``. The meta
    of the snapshot ``get_current_snapshot`` would return now, or ``None`` when it would
    return ``None``, without opening or reading the snapshot's data: ``Raft.new`` needs only
    the current snapshot's last log id, and ``get_current_snapshot`` may cost a read of the
    whole file (``RocksStateMachine`` checks it against its checksum: about 2 s per GB from
    disk at every start). It raises what ``get_current_snapshot`` would raise for what is
    known without the data (``RocksStateMachine``: a snapshot file that is missing or not a
    regular file). A state machine that checks the data when it is read and replaces a
    damaged snapshot then (``RocksStateMachine`` does) returns here the meta it has
    recorded; ``get_current_snapshot`` then hands out the replacement, whose last log id is
    not less: the damage is found, logged with the file's name and repaired when the
    snapshot is first used (sent to a follower), not at start. Without it, ``Raft.new`` calls
    ``get_current_snapshot`` and closes its file unread. The method is used only where it is
    defined together with the ``get_current_snapshot`` in use (``current_snapshot_meta_of``):
    by the same class or a subclass of it, set on the instance itself, or, with
    ``get_current_snapshot``, forwarded by a wrapper's ``__getattr__`` as the bound methods
    of one inner state machine whose own meta is used. So a subclass that
    overrides ``get_current_snapshot`` alone, a wrapper whose class defines its own
    ``get_current_snapshot`` and forwards the rest to an inner state machine, and an instance
    whose ``get_current_snapshot`` was replaced keep being asked ``get_current_snapshot``
    (the meta they would get describes another snapshot): such a wrapper defines its own
    ``get_current_snapshot_meta`` beside it. The shipped state machines have it; the
    conformance check ``snapshot_meta_is_the_current_snapshots`` compares it with
    ``get_current_snapshot().meta``.
    """

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        """``(last applied log id, last applied membership)``; ``(None,
        EMPTY_STORED_MEMBERSHIP)`` for a fresh state machine. After a restart, a state machine
        whose state is volatile returns what its last snapshot covers (or the fresh value)."""
        ...

    async def apply(self, entries: list[Entry]) -> list[Any]:
        """Apply committed ``entries`` (consecutive, in order, each after the last applied).

        Returns a list of one response per entry, in order: the application's answer for a
        ``Normal`` entry, ``None`` for ``Blank`` and ``Membership`` entries (anything else,
        ``None`` included, stops the node with ``StorageError``). A ``Membership`` entry sets
        the stored membership to ``StoredMembership(entry.log_id, membership)``. Records the
        last entry's log id as the last applied. An exception here is fatal for the node.
        The ``entries`` list is the state machine's own: it may keep or change it (the node
        reads a list of its own after the call).

        Every node applies the same committed entries, so an exception caused by what an entry
        says (a malformed or invalid command) stops every node that applies it: the whole
        cluster. Check commands before ``client_write``, and answer a bad one here with an
        error value (a deterministic no-op); raise only for a failure of this node itself
        (its disk).
        """
        ...

    async def begin_receiving_snapshot(self) -> IO[bytes]:
        """A new, empty, writable binary file for a snapshot being received chunk by chunk;
        it is then passed to ``install_snapshot``. Any binary file object with ``write``,
        ``seek``, ``truncate`` and ``close``: ``io.BytesIO``, a file opened ``"w+b"``,
        ``tempfile.SpooledTemporaryFile()`` or ``NamedTemporaryFile()`` (typed ``IO[bytes]``:
        it was ``BinaryIO``, which the last two are not to type checkers, so a state machine
        returning one could not satisfy this protocol under ``mypy --strict``; such a state
        machine's ``install_snapshot`` may take ``data: IO[bytes]``)."""
        ...

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        """Replace the whole state with the snapshot in ``data`` (read from its start; a file
        from ``begin_receiving_snapshot``).

        Atomic: on failure the previous state is kept, and so is the previous current
        snapshot (``get_current_snapshot``: what the node sends to followers). Afterwards
        ``applied_state()`` returns ``(meta.last_log_id, meta.last_membership)`` and
        ``get_current_snapshot()`` returns this snapshot. Raises ``ValueError`` if ``data``
        is not a snapshot of this state machine's format.
        """
        ...

    async def get_current_snapshot(self) -> Snapshot | None:
        """The last snapshot built or installed, or ``None``. Each call returns a fresh
        readable file positioned at 0 (callers may read it concurrently)."""
        ...

    def get_snapshot_builder(self) -> SnapshotBuilder:
        """A builder for one snapshot (see ``SnapshotBuilder``). Plain method."""
        ...


def durable_append_of(store: Any) -> Callable[[list[Entry]], None] | None:
    """The ``append_durable`` method ``store`` offers (see ``RaftLogStorage``), or ``None``:
    also ``None`` when ``append_durable`` is not defined where the ``append`` the store uses
    is (a subclass that delays or fails its appends, an ``append`` set on the instance): the
    same class, or both set on the instance."""
    fn: Callable[[list[Entry]], None] | None = getattr(store, "append_durable", None)
    if fn is None:
        return None
    durable_owner = _defined_by(store, "append_durable")
    return fn if durable_owner is not None and durable_owner is _defined_by(store, "append") else None


_ON_INSTANCE = object()
"""``_defined_by``'s answer for an attribute set on the instance itself."""


def _defined_by(obj: Any, name: str) -> Any:
    """Where ``obj``'s attribute ``name`` is defined: ``_ON_INSTANCE`` (in the instance's own
    ``__dict__``), else the first class of ``type(obj).__mro__`` whose namespace has it, else
    ``None`` (neither: a ``__getattr__``, or nothing, answers it). Reads neither the
    attribute nor ``obj``'s own ``__getattr__``."""
    try:
        own = object.__getattribute__(obj, "__dict__")
    except AttributeError:  # (no instance dict: __slots__, an extension type)
        own = {}
    if isinstance(own, dict) and name in own:
        return _ON_INSTANCE
    return next((k for k in type(obj).__mro__ if name in k.__dict__), None)


def current_snapshot_meta_of(sm: Any) -> Callable[[], Awaitable[SnapshotMeta | None]] | None:
    """The ``get_current_snapshot_meta`` method ``sm`` offers (see ``RaftStateMachine``), or
    ``None``: also ``None`` unless it is defined together with the ``get_current_snapshot``
    that ``sm`` uses, so that it describes that method's snapshot:

    - set on the instance itself: meant for it, used;
    - ``get_current_snapshot`` set on the instance (and the meta not): ``None``;
    - both defined by classes: used when the class that defines the meta is the one that
      defines ``get_current_snapshot`` or a subclass of it; ``None`` for a subclass that
      overrides ``get_current_snapshot`` alone (the inherited meta describes its parent's
      snapshot);
    - given by ``__getattr__`` (a wrapper forwarding to an inner state machine): used when
      ``get_current_snapshot`` is forwarded too, both as methods of the same inner object,
      and that object offers this meta itself (asked as here, so a wrapper of a wrapper
      too); ``None`` when the wrapper's class defines its own ``get_current_snapshot`` (the
      forwarded meta describes the inner's snapshot), defines the meta while forwarding
      ``get_current_snapshot``, forwards the two to different objects or as anything but
      their bound methods (a function of its own around them), or forwards to an inner
      state machine whose own meta is not used (an inner subclass overriding
      ``get_current_snapshot`` alone: the meta it inherits describes its parent's snapshot).

    ``None`` costs a start a call of ``get_current_snapshot`` (its file closed unread), never
    a wrong answer: a wrapper that hands out its own snapshot defines its own meta beside it.
    """
    fn: Callable[[], Awaitable[SnapshotMeta | None]] | None = getattr(sm, "get_current_snapshot_meta", None)
    if fn is None:
        return None
    meta_owner = _defined_by(sm, "get_current_snapshot_meta")
    if meta_owner is _ON_INSTANCE:
        return fn
    snap_owner = _defined_by(sm, "get_current_snapshot")
    if snap_owner is _ON_INSTANCE:
        return None
    if meta_owner is None or snap_owner is None:
        if meta_owner is not None or snap_owner is not None:
            return None
        # Both from ``__getattr__``: used as the object it forwards both to would use them.
        inner = getattr(fn, "__self__", None)
        snap = getattr(sm, "get_current_snapshot", None)
        if inner is None or inner is sm or getattr(snap, "__self__", None) is not inner:
            return None
        return fn if current_snapshot_meta_of(inner) == fn else None
    return fn if issubclass(meta_owner, snap_owner) else None


from .memory import (  # noqa: E402  (the memory stores import IOFlushed from here)
    KvCas,
    KvCommand,
    KvDelete,
    KvGet,
    KvSet,
    MemDisk,
    MemLogStore,
    MemStateMachine,
    NoopStateMachine,
    decode_kv,
    encode_kv,
)
from .v08 import Adaptor, MemRaftStorage, RaftStorage  # noqa: E402

__all__ += ["Adaptor", "MemRaftStorage", "RaftStorage"]
