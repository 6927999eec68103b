"""Per-role engine state: ``Candidate`` (a vote tally) and ``Leader`` (progress and acks)."""

from __future__ import annotations

from typing import Any

from .._core import ProgressTable, is_quorum_granted
from ..types import LogId, Membership, NodeId, Vote
from .progress import ProgressEntry


def voter_configs(m: Membership) -> list[list[NodeId]]:
    """The voter ids of each config of ``m`` as sorted lists (the quorum kernel's input)."""
    return [sorted(c) for c in m.configs]


class Candidate:
    """An election in progress for ``vote``.

    Invariant: ``granted`` holds the nodes that granted exactly ``vote``; this node is in it
    only once its own vote is durable.
    """

    __slots__ = ("vote", "configs", "granted", "started_at")

    def __init__(self, vote: Vote, membership: Membership, now: float) -> None:
        self.vote = vote
        self.configs = voter_configs(membership)
        self.granted: set[NodeId] = set()
        self.started_at = now

    def grant(self, node_id: NodeId) -> bool:
        """Count ``node_id``'s grant; return whether a quorum of every config granted."""
        self.granted.add(node_id)
        return is_quorum_granted(self.granted, self.configs)


class PendingRead:
    """A read waiting for a quorum ack of a request sent at or after ``since`` (``-1``: a
    lease read, confirmed already) and for ``read_log_id`` to commit."""

    __slots__ = ("tx", "read_log_id", "since")

    def __init__(self, tx: Any, read_log_id: LogId | None, since: float) -> None:
        self.tx = tx
        self.read_log_id = read_log_id
        self.since = since


class Leader:
    """What an established leader tracks.

    - ``progress``: the highest index known to match on each voter and learner (this node's
      own entry is its flushed index); its joint quorum value is the commit candidate.
    - ``replication``: per replication target (every node but this one that receives the
      log), what it is sent next and what is in flight (``progress.ProgressEntry``); kept
      in step with the targets by ``ReplicationHandler.refresh``.
    - ``ack_at``: per voter, the send time (engine clock, ms) of the newest request it
      acknowledged; the quorum of these is the last time leadership was confirmed (leases,
      ReadIndex, stickiness). This node's own entry is "now".
    - ``heard_at``: per voter, when this leader last learned of an answer of it (the
      engine clock of the pass that handled it, however long ago its request was sent);
      the quorum of these is what check-quorum reads. Invariant: the same keys as
      ``ack_at``, and ``heard_at[n] >= ack_at[n]`` once ``n`` answered.
    - ``noop_log_id``: the blank entry this leader appended on election. Entries before it
      are committed only indirectly, once it commits (thesis 3.6.2).
    """

    __slots__ = (
        "vote",
        "node_id",
        "progress",
        "replication",
        "gens",
        "send_due",
        "configs",
        "ack_at",
        "heard_at",
        "noop_log_id",
        "reads",
        "last_heartbeat",
        "elected_at",
        "voters_changed_at",
        "acks",
        "change_tx",
        "change_retain",
        "transfer_to",
        "transfer_sent",
        "transfer_deadline",
        "transfer_started_at",
        "lease_disabled",
    )

    def __init__(self, vote: Vote, node_id: NodeId, membership: Membership, now: float) -> None:
        self.vote = vote
        self.node_id = node_id
        self.noop_log_id: LogId | None = None
        self.reads: list[PendingRead] = []
        self.last_heartbeat = now
        # When this node became leader; check-quorum gives it one election timeout from here.
        self.elected_at = now
        # When a voter this leader had no acknowledgement from joined its configs (a learner
        # made a voter; ``set_membership``): check-quorum gives it one election timeout from
        # here too, the time for the new voters to answer as voters.
        self.voters_changed_at = now
        # Counts acknowledgements received; metrics republish when it moves.
        self.acks = 0
        self.configs: list[list[NodeId]] = []
        self.progress: ProgressTable = ProgressTable([], [], node_id)
        self.replication: dict[NodeId, ProgressEntry] = {}
        # The last request generation handed out (``new_gen``); unique within this leadership.
        self.gens = 0
        # Some target may have something to send: ``Engine.take_commands`` plans the requests
        # (after every handler of the batch ran, so one request carries all new entries).
        self.send_due = False
        self.ack_at: dict[NodeId, float] = {}
        self.heard_at: dict[NodeId, float] = {}
        # A change_membership caller waiting for the final (uniform) config, and whether
        # removed voters stay as learners. A leader that inherits a joint config finishes it
        # keeping every node (``retain``): nothing is dropped that nobody asked to drop.
        self.change_tx: Any = None
        self.change_retain = True
        # Leader transfer in progress: the target, whether the TransferLeader was sent, and
        # when to give up and resume. Lease reads are refused while a transfer runs, and
        # for the rest of this term once a notice went out (``lease_disabled``): the
        # followers told stop treating this leader as alive.
        self.transfer_to: NodeId | None = None
        self.transfer_sent = False
        self.transfer_deadline = 0.0
        # When the transfer started: the notice goes out only once the target answered a
        # request sent since (``ack_at``), so a target that went down before never gets it,
        # and a refused request to it gives the transfer up at once (transfer.py).
        self.transfer_started_at = 0.0
        self.lease_disabled = False
        self.set_membership(membership, now)

    def set_membership(self, m: Membership, now: float, others: frozenset[NodeId] = frozenset()) -> None:
        """Adopt a new effective membership, keeping what is known of remaining nodes.
        ``others``: nodes outside ``m`` still replicated to (removed by a change that is not
        committed yet); they are tracked like learners."""
        old = self.progress.as_dict()
        self.configs = voter_configs(m)
        learners = sorted((m.learner_ids() | others) - m.voter_ids() - {self.node_id})
        self.progress = ProgressTable(self.configs, learners, self.node_id)
        for nid, idx in old.items():
            if idx >= 0:
                self.progress.update(nid, idx)
        voters = m.voter_ids()
        # A node newly counted toward the lease has acked nothing yet.
        acked = self.ack_at
        self.ack_at = {nid: acked.get(nid, -1.0) for nid in voters}
        heard = self.heard_at
        self.heard_at = {nid: heard.get(nid, -1.0) for nid in voters}
        if any(nid not in acked for nid in voters if nid != self.node_id):
            self.voters_changed_at = now
        if self.node_id in self.ack_at:
            self.ack_at[self.node_id] = now

    def new_gen(self) -> int:
        """A request generation no target of this leadership had before."""
        self.gens += 1
        return self.gens

    def quorum_acked_at(self, now: float) -> float:
        """The latest time by which a quorum of every config acknowledged this leader
        (``-1`` if never); this node counts as acking at ``now``. Acks are measured at
        request send time, so this is safe for leases. Reads ``ack_at`` only."""
        return self._quorum_time(self.ack_at, now)

    def quorum_heard_at(self, now: float) -> float:
        """The latest time by which this leader had heard an answer from a quorum of every
        config (``-1`` if never), measured when each answer was handled, not when its
        request left (``heard_at``); this node counts as heard at ``now``. For check-quorum
        only: an answer to a request sent long ago proves the voter follows this leader
        now, not that it did when the request left, so it extends no lease."""
        return self._quorum_time(self.heard_at, now)

    def _quorum_time(self, at: dict[NodeId, float], now: float) -> float:
        """The largest time of ``at`` reached by a majority of every config, this node
        counting as ``now``; ``-1`` if none."""
        worst = float("inf")
        me = self.node_id
        for cfg in self.configs:
            if not cfg:
                continue
            times = sorted((now if n == me else at.get(n, -1.0) for n in cfg), reverse=True)
            # The largest time acked by a majority of this config.
            worst = min(worst, times[len(times) // 2])
        if worst == float("inf") or worst < 0:
            return -1.0
        return worst
