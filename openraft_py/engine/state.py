"""The engine's data: ``RaftState`` and its parts, each field with its invariant.

Log pointers (``docs/design/log-pointers.md``) always satisfy::

    purged <= snapshot <= applied <= committed <= last        flushed <= submitted

where ``None`` sorts before every ``LogId``. ``validate()`` checks them; the tests and the
simulator call it after every step.
"""

from __future__ import annotations

from collections import deque

from .._core import LogIndex
from ..errors import Panicked
from ..types import (
    EMPTY_STORED_MEMBERSHIP,
    LogId,
    Membership,
    NodeId,
    ServerState,
    StoredMembership,
    Vote,
    _log_id_index,
    _log_id_term,
)


class MembershipState:
    """The committed membership and the not yet committed ones after it.

    A membership takes effect when appended (thesis 4.1), so the *effective* one is the last
    appended: ``uncommitted[-1]`` if any, else ``committed``. Truncating the log drops the
    uncommitted ones that were cut off.

    Invariant: ``uncommitted`` log ids are strictly increasing and all greater than
    ``committed.log_id``.
    """

    __slots__ = ("committed", "uncommitted")

    def __init__(self, committed: StoredMembership = EMPTY_STORED_MEMBERSHIP) -> None:
        self.committed: StoredMembership = committed
        self.uncommitted: list[StoredMembership] = []

    @property
    def effective(self) -> StoredMembership:
        """The membership in force: the last one appended."""
        return self.uncommitted[-1] if self.uncommitted else self.committed

    def append(self, sm: StoredMembership) -> None:
        """A membership entry was appended at ``sm.log_id``."""
        self.uncommitted.append(sm)

    def commit(self, index: int) -> None:
        """Entries up to ``index`` are committed: promote the memberships among them."""
        while self.uncommitted and self.uncommitted[0].log_id.index <= index:  # type: ignore[union-attr]
            self.committed = self.uncommitted.pop(0)

    def truncate(self, after_index: int) -> None:
        """Entries after ``after_index`` were deleted: forget the memberships among them."""
        while self.uncommitted and self.uncommitted[-1].log_id.index > after_index:  # type: ignore[union-attr]
            self.uncommitted.pop()

    def install_snapshot(self, sm: StoredMembership, last_index: int) -> None:
        """A snapshot covering entries up to ``last_index`` was installed; ``sm`` is its
        membership. Memberships at or before ``last_index`` are covered by it (committed)."""
        while self.uncommitted and self.uncommitted[0].log_id.index <= last_index:  # type: ignore[union-attr]
            self.uncommitted.pop(0)
        if sm.log_id is not None and (self.committed.log_id is None or sm.log_id > self.committed.log_id):
            self.committed = sm

    def __repr__(self) -> str:
        return f"MembershipState(committed={self.committed!r}, uncommitted={self.uncommitted!r})"


class IOState:
    """Storage writes the engine submitted and how far they are flushed.

    Every write gets the next sequence number; the runtime submits them in order and reports
    completions with ``handle_io_flushed``. Invariant: ``flushed <= submitted``; ``pending``
    holds, in order, ``(io, log_id_after, vote)`` for each write not yet flushed: for a log
    write, ``log_id_after`` is the last log id the log holds once that write is done and
    ``vote`` is ``None``; for a vote write, ``vote`` is the vote written (it does not change
    the log).
    """

    __slots__ = ("submitted", "flushed", "pending", "flushed_log_id", "flushed_vote", "vote_io")

    def __init__(self, last_log_id: LogId | None, vote: Vote) -> None:
        self.submitted: int = 0
        self.flushed: int = 0
        self.pending: deque[tuple[int, LogId | None, Vote | None]] = deque()
        # Invariant: the last log id known durable (log writes apply in order).
        self.flushed_log_id: LogId | None = last_log_id
        # Invariant: the last vote known durable.
        self.flushed_vote: Vote = vote
        # The io number of the last vote write (the vote is durable once flushed >= vote_io).
        self.vote_io: int = 0


class RaftState:
    """Everything the engine knows about its node. Fields are read by the runtime (metrics)
    but only the engine writes them."""

    def __init__(
        self,
        node_id: NodeId,
        vote: Vote,
        log_ids: LogIndex,
        committed: LogId | None,
        membership: MembershipState,
        applied: LogId | None = None,
        snapshot: LogId | None = None,
    ) -> None:
        self.id: NodeId = node_id
        # Invariant: only grows under the partial order (never persisted smaller).
        self.vote: Vote = vote
        # The log's ids (not payloads). Holds (purged, last].
        self.log_ids: LogIndex = log_ids
        # Invariant: committed <= last log id; only grows.
        self.committed: LogId | None = committed
        # Invariant: applied <= committed; set from the state machine's reports.
        self.applied: LogId | None = applied
        # The last log id covered by a snapshot.
        self.snapshot: LogId | None = snapshot
        self.membership: MembershipState = membership
        self.io: IOState = IOState(self.last_log_id(), vote)
        self.server_state: ServerState = ServerState.LEARNER

    # -- log helpers ---------------------------------------------------------------------

    def last_log_id(self) -> LogId | None:
        """The last log id (the purged one when the log is empty after a purge)."""
        last = self.log_ids.last()
        return None if last is None else LogId(last[0], last[1])

    def last_index(self) -> int:
        """The last log index, -1 if none."""
        return self.log_ids.last_index()

    def log_id_at(self, index: int) -> LogId | None:
        """The log id at ``index``, or ``None`` when that index is not held (or is -1)."""
        if index < 0:
            return None
        term = self.log_ids.term_at(index)
        return None if term < 0 else LogId(term, index)

    def has_log_id(self, log_id: LogId | None) -> bool:
        """Whether the log holds ``log_id`` (``None`` is before everything: always held).
        Entries at or before the purged index are committed, so any of them matches."""
        if log_id is None:
            return True
        purged = self.log_ids.purged()
        index = _log_id_index(log_id)
        if purged is not None and index < purged[1]:
            return True
        return self.log_ids.has_log_id(_log_id_term(log_id), index)

    def purged_log_id(self) -> LogId | None:
        """The last purged log id."""
        p = self.log_ids.purged()
        return None if p is None else LogId(p[0], p[1])

    def committed_index(self) -> int:
        """The committed index, -1 if none."""
        committed = self.committed
        return -1 if committed is None else _log_id_index(committed)

    def is_voter(self) -> bool:
        """Whether this node votes in its effective membership."""
        return self.membership.effective.membership.is_voter(self.id)

    def is_leaving(self) -> bool:
        """Whether this node is a voter being removed: its effective membership is a joint
        config ``[C_old, C_new]`` and it is not a voter of ``C_new``. Such a node still votes
        (``C_old`` needs a quorum until ``[C_new]`` commits) but campaigns only through a
        pre-vote round (``docs/design/joint-consensus.md``, "Removed voters")."""
        configs = self.membership.effective.membership.configs
        return len(configs) > 1 and self.id not in configs[-1]

    # -- invariants ----------------------------------------------------------------------

    def validate(self) -> None:
        """Check the log pointer invariants; raise ``Panicked`` naming the first broken one."""

        def idx(x: LogId | None) -> int:
            return -1 if x is None else x.index

        last = self.last_log_id()
        purged = self.purged_log_id()
        checks = [
            # Purging needs a snapshot covering the purged entries, or entries already
            # applied (a snapshot is the state machine's own durable state then).
            ("purged <= snapshot or applied", idx(purged) <= max(idx(self.snapshot), idx(self.applied))),
            ("snapshot <= applied", idx(self.snapshot) <= idx(self.applied)),
            ("applied <= committed", idx(self.applied) <= idx(self.committed)),
            ("committed <= last", idx(self.committed) <= idx(last)),
            ("flushed io <= submitted io", self.io.flushed <= self.io.submitted),
        ]
        for name, ok in checks:
            if not ok:
                raise Panicked(
                    f"node {self.id}: invariant {name} broken: purged={purged!r} snapshot={self.snapshot!r} "
                    f"applied={self.applied!r} committed={self.committed!r} last={last!r} "
                    f"io={self.io.flushed}/{self.io.submitted}"
                )
        if self.committed is not None and self.log_id_at(self.committed.index) not in (None, self.committed):
            raise Panicked(f"node {self.id}: committed {self.committed!r} is not in the log")

    def effective_membership(self) -> Membership:
        """The membership in force."""
        return self.membership.effective.membership
