"""Per-target replication progress (etcd-raft's ``tracker.Progress``, Openraft's
``ProgressEntry``) and the results of the requests it plans.

A leader keeps one ``ProgressEntry`` per replication target (``Leader.replication``). The
entry decides what the target is sent next; the runtime only carries it out (a
``Replicate`` or ``SendSnapshot`` command) and reports what happened as one of the result
types below, which ``Engine.handle_replication_result`` feeds back into the entry::

      ┌────────── probing: one request in flight ──────────┐
      │ success (gen current)           conflict / error   │
      v                                   ^                │
    pipelining: up to max_inflight_requests in flight ─────┘
      │ next entry purged                 ^
      v                                   │ snapshot done: next = its last index + 1
    snapshotting: one SendSnapshot in flight

- **Matched**: the follower's log matches the leader's up to ``matched`` (an index; ``-1``:
  nothing known). It only grows, unless the follower refuses a ``prev_log_id`` at or below
  it: its log lost entries it had acknowledged (its storage was lost or restored from an
  older copy), and ``matched`` starts again from nothing (the commit never moves back).
- **Next index**: the first index not yet sent in the current generation. A new entry
  starts optimistic (the leader's last index + 1, or its blank entry's).
- **Generation** (``gen``): a conflict, an error or a snapshot starts a new one; the results
  of requests of an older generation (planned on a guess that proved wrong) move only the
  matched index, never ``next_index`` or the mode. Generations are unique within a
  leadership (``Leader.new_gen``), so a target removed and added back never takes the
  results of its previous entry (``first_gen``).
- **Backing off**: after a request got no answer, nothing is sent until ``backoff_until``
  (engine clock, ms; the leader's tick ends it), then a probe goes out.
- **Acknowledged at** (``acked_at``): the send time of the newest request the target
  answered; a target silent for longer than ``Config.election_timeout_max`` (a node that
  went down) does not count as caught up for a membership change, whatever its matched index.
- **Heartbeats beside the window**: a heartbeat round that finds requests in flight (not a
  snapshot transfer) and the target's newest acknowledged request sent more than half a
  heartbeat interval ago sends a ``Heartbeat`` beside them, after ``matched``; so does one
  that finds the target backing off, if its newest acknowledged request was sent within
  ``election_timeout_max``. It takes no slot, and its answer is only an ack (with a
  ``matching`` no greater than ``matched``).

The commands and results carry the leader's ``vote`` (the session): a result for another
leadership is ignored.
"""

from __future__ import annotations

import math

from ..types import LogId, NodeId, Vote

OUTSIDE_WINDOW = 0
"""The ``gen`` of a result of a request sent outside every target's window (a
``Heartbeat``'s ``Rejected``): generations start at 1 (``Leader.new_gen``), so no
``ProgressEntry`` has it, and such a result frees no slot and changes no plan."""


class ProgressEntry:
    """What the leader knows of, and has in flight to, one replication target.

    Invariants: ``0 <= inflight``; nothing is planned while ``inflight`` reaches the limit
    (1 while probing, ``max_inflight_requests`` while pipelining) or while ``snapshotting`` (a
    transfer holds a slot) or backing off; ``next_index <= last log index + 1`` (hints,
    matches and snapshots all come from the leader's own log); ``first_gen <= gen``.
    """

    __slots__ = (
        "matched",
        "next_index",
        "inflight",
        "gen",
        "first_gen",
        "probing",
        "heartbeat_due",
        "snapshotting",
        "backoff_until",
        "acked_at",
    )

    def __init__(self, next_index: int, gen: int) -> None:
        self.matched = -1
        self.next_index = next_index
        # Requests planned (Replicate / SendSnapshot) and not answered yet, of any generation
        # of this entry.
        self.inflight = 0
        self.gen = gen
        self.first_gen = gen
        # One request at a time until a request of the current generation succeeded.
        self.probing = True
        # Send a request even if it carries no entry (the first probe goes out at once).
        self.heartbeat_due = True
        self.snapshotting = False
        # Nothing is sent before this time (engine clock, ms); ``None``: not backing off.
        self.backoff_until: float | None = None
        # The send time (engine clock, ms) of the newest request the target answered (a
        # match, a conflict or a snapshot it holds); -inf: it never answered this leader.
        # Invariant: earlier than any time the clock can read (a clock starting at 0 reads
        # less than ``election_timeout_max`` at first: -1 looked like an answer sent just
        # before), so ``now - acked_at`` is never a short silence for a target that never
        # answered.
        self.acked_at = -math.inf

    def restart(self, gen: int, next_index: int) -> None:
        """Start generation ``gen`` from ``next_index``, probing."""
        self.gen = gen
        self.next_index = next_index
        self.probing = True

    def __repr__(self) -> str:
        mode = "snapshotting" if self.snapshotting else "probing" if self.probing else "pipelining"
        return (
            f"ProgressEntry(matched={self.matched}, next={self.next_index}, inflight={self.inflight}, "
            f"gen={self.gen}, {mode}, heartbeat_due={self.heartbeat_due}, backoff_until={self.backoff_until})"
        )


# -- results: what the runtime reports for a Replicate / SendSnapshot ---------------------------
# Plain ``__slots__`` classes: one is made per AppendEntries response, on the hot path. Each
# ``__init__`` sets the base's fields itself: compiled, a ``super().__init__`` call cost more
# than the rest of making the object (a ``super`` object and a method lookup).


class ReplicationResult:
    """The outcome of one request to ``target`` planned by leader ``session`` in generation
    ``gen`` (the command's fields, echoed back)."""

    __slots__ = ("target", "session", "gen")

    def __init__(self, target: NodeId, session: Vote, gen: int) -> None:
        self.target = target
        self.session = session
        self.gen = gen

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for c in type(self).__mro__ for k in getattr(c, "__slots__", ()))
        return f"{type(self).__name__}({fields})"


class Matched(ReplicationResult):
    """The follower accepted an AppendEntries sent at ``sent_at`` (runtime clock, ms): its log
    matches the leader's up to ``matching``."""

    __slots__ = ("matching", "sent_at")

    def __init__(self, target: NodeId, session: Vote, gen: int, matching: LogId | None, sent_at: float) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.matching = matching
        self.sent_at = sent_at


class Conflict(ReplicationResult):
    """The follower refused an AppendEntries sent at ``sent_at``: its log does not hold the
    request's ``prev_log_id``; ``hint`` is the next index to try (fast back-off). ``start``
    is the request's first index (its ``prev_log_id`` is at ``start - 1``); ``-1``: not
    known."""

    __slots__ = ("hint", "sent_at", "start")

    def __init__(self, target: NodeId, session: Vote, gen: int, hint: int, sent_at: float, start: int = -1) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.hint = hint
        self.sent_at = sent_at
        self.start = start


class Unreachable(ReplicationResult):
    """The AppendEntries starting at ``start`` got no answer (an ``RPCError``): back off,
    then probe. ``refused``: the network's message when it said the target cannot be
    reached (``errors.Unreachable``: connection refused, the node is gone or cut off);
    ``None`` when the request only went unanswered (``Timeout``, a broken network), which a
    slow but live target also causes. A leader handing over to a target that cannot be
    reached gives the transfer up at once (``TransferHandler.target_unreachable``)."""

    __slots__ = ("start", "refused")

    def __init__(self, target: NodeId, session: Vote, gen: int, start: int, refused: str | None = None) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.start = start
        self.refused = refused


class EntriesPurged(ReplicationResult):
    """The entries from ``start`` were purged before the runtime read them: the target needs
    a snapshot."""

    __slots__ = ("start",)

    def __init__(self, target: NodeId, session: Vote, gen: int, start: int) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.start = start


class SnapshotSent(ReplicationResult):
    """A ``SendSnapshot`` ended. ``matching``: the snapshot's last log id, now held by the
    target (acknowledged at ``sent_at``); ``None``: no snapshot covered the purged log yet,
    nothing was sent (back off and try again)."""

    __slots__ = ("matching", "sent_at")

    def __init__(self, target: NodeId, session: Vote, gen: int, matching: LogId | None, sent_at: float) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.matching = matching
        self.sent_at = sent_at


class Rejected(ReplicationResult):
    """The target refused a request because it holds ``vote``, greater than (or not
    comparable with) the leader's. A greater vote may end the leadership
    (``LeaderHandler.higher_vote``); otherwise the target is backed off and probed again."""

    __slots__ = ("vote",)

    def __init__(self, target: NodeId, session: Vote, gen: int, vote: Vote) -> None:
        self.target = target
        self.session = session
        self.gen = gen
        self.vote = vote
