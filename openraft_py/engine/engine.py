"""``Engine``: the sans-IO Raft state machine. Events in, ``Command`` values out.

The handlers live in mixins, one module each (``vote_handler``, ``following_handler``,
``leader_handler``); this module holds the shared state, role transitions, storage-IO
bookkeeping and the clock-driven ``handle_tick``. See ``docs/design/engine-runtime.md``.
"""

from __future__ import annotations

import random
from typing import Iterable

from ..config import Config
from ..errors import ForwardToLeader, NotAllowed, NotInMembers, Panicked
from ..types import (
    BasicNode,
    Entry,
    LogId,
    Membership,
    NodeId,
    ServerState,
    SnapshotMeta,
    StoredMembership,
    Vote,
)
from .command import (
    AppendEntries,
    Command,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    StartReplication,
    StopReplication,
    TruncateLog,
)
from .faults import NO_FAULTS, EngineFault, inject
from .following_handler import FollowingHandler
from .leader import Candidate, Leader
from .leader_handler import LeaderHandler
from .membership_handler import MembershipHandler
from .snapshot_handler import SnapshotHandler
from .state import RaftState
from .vote_handler import VoteHandler


class Engine(VoteHandler, FollowingHandler, LeaderHandler, MembershipHandler, SnapshotHandler):
    """The Raft protocol for one node, with no IO and no clock.

    Time enters only as the ``now`` argument (milliseconds, monotonic, from the runtime's
    clock); randomness only from ``rng``. Given the same calls, an engine emits the same
    commands. Handlers append to ``output``; the runtime drains it with ``take_commands()``.

    ``leader`` is set iff this node is an established leader; ``candidate`` iff an election
    of its own is in progress. Both ``None`` means follower or learner.
    """

    def __init__(self, config: Config, state: RaftState, rng: random.Random, now: float = 0.0) -> None:
        self.config = config
        self.state = state
        self.rng = rng
        self.output: list[Command] = []
        self.leader: Leader | None = None
        self.candidate: Candidate | None = None
        # A pre-vote round in progress (thesis 9.6): the would-be vote of the next term and
        # who said they would grant it. Changes no persisted state.
        self.pre_candidate: Candidate | None = None
        # When this node last accepted an AppendEntries from an established leader. A node
        # that starts with a committed vote treats that leader as just seen: it may have
        # acked it right before a restart, and granting another candidate at once could cut
        # that leader's lease short (stale lease reads).
        self.leader_seen_at: float = now if state.vote.committed else -1e18
        # The leader vote that told us it is handing over (TransferLeader): its messages no
        # longer count as "leader seen", so we may grant the new candidate at once.
        self.transfer_from: Vote | None = None
        self.snapshot_building = False
        # ``SnapshotPolicy.logs_since_last`` (None: never), read on every apply report.
        self.snapshot_every: int | None = config.snapshot_policy.logs_since_last_n
        self.snapshot_installing: SnapshotMeta | None = None
        # A built snapshot past the applied log id known so far (its apply report is late).
        self.snapshot_unreported: LogId | None = None
        self.election_deadline: float = 0.0
        self.now = now
        # TEST ONLY: the bug switches on (``faults.inject``); empty in production, where each
        # check costs one truth test of this empty frozenset.
        self.injected_faults: frozenset[EngineFault] = NO_FAULTS
        self.become_following(now)

    @property
    def faults(self) -> frozenset[EngineFault]:
        """TEST ONLY: the bug switches on. Assigning names or members (``eng.faults =
        {"apply_before_commit"}``) is kept for older callers and means
        ``faults.inject(eng, ...)``, which new code should call."""
        return self.injected_faults

    @faults.setter
    def faults(self, value: Iterable[EngineFault | str]) -> None:
        inject(self, value)

    # -- output ----------------------------------------------------------------------------

    def take_commands(self) -> list[Command]:
        """Return and clear the commands emitted so far."""
        out = self.output
        self.output = []
        return out

    # -- time ------------------------------------------------------------------------------

    def reset_election_timer(self, now: float) -> None:
        """Pick a new random election deadline after ``now``."""
        c = self.config
        self.election_deadline = now + self.rng.uniform(c.election_timeout_min, c.election_timeout_max)

    def handle_tick(self, now: float) -> None:
        """Advance the clock: leaders send heartbeats and check quorum contact; followers and
        candidates start an election when their deadline passed."""
        self.now = now
        c = self.config
        leader = self.leader
        if leader is not None:
            if c.enable_heartbeat and now - leader.last_heartbeat >= c.heartbeat_interval:
                self.leader_heartbeat(now)
            if leader.reads:
                self.leader_check_reads()
            if leader.transfer_to is not None and now > leader.transfer_deadline:
                # No new leader appeared: take writes again (lease reads stay off).
                leader.transfer_to = None
            # Check quorum (thesis 6.2): a leader that heard from no quorum for a whole
            # election timeout steps down, so a minority leader stops taking writes.
            acked = max(leader.quorum_acked_at(now), leader.elected_at)
            if now - acked > c.election_timeout_max:
                self.become_following(now)
            return
        if c.enable_elect and now >= self.election_deadline:
            st = self.state
            if not st.is_voter():
                # A learner, or a voter that appended a membership removing it: it never
                # campaigns (its timer only keeps running).
                self.reset_election_timer(now)
            elif c.enable_pre_vote or st.is_leaving():
                # A voter being removed asks first, even with pre-vote off: if it missed the
                # final [C_new] it cannot win, and must not raise its term trying.
                self.pre_vote(now)
            else:
                self.elect(now)

    # -- storage IO bookkeeping --------------------------------------------------------------

    def next_io(self) -> int:
        """Allocate the next storage-write sequence number."""
        io = self.state.io
        io.submitted += 1
        return io.submitted

    def update_vote(self, vote: Vote) -> None:
        """Adopt ``vote`` (which must be >= the current one) and persist it. A leader whose
        vote is replaced steps down."""
        st = self.state
        if vote == st.vote:
            return
        if not vote.is_ge(st.vote):
            raise Panicked(f"node {st.id}: vote may not go backward: {st.vote!r} -> {vote!r}")
        st.vote = vote
        self.transfer_from = None
        io = self.next_io()
        st.io.pending.append((io, None, vote))
        st.io.vote_io = io
        self.output.append(SaveVote(vote, io))
        if self.leader is not None and self.leader.vote != vote:
            self.become_following(self.now)
        if self.candidate is not None and self.candidate.vote != vote:
            self.candidate = None
            self.set_server_state()

    def append_local(self, entries: list[Entry]) -> None:
        """Append ``entries`` (which continue the log) to the log: index, memberships, and an
        ``AppendEntries`` write."""
        st = self.state
        first = entries[0].log_id
        last = entries[-1].log_id
        if first.term == last.term:
            st.log_ids.append_term(first.term, first.index, len(entries))
        else:
            st.log_ids.append_many([(e.log_id.term, e.log_id.index) for e in entries])
        membership_changed = False
        for e in entries:
            p = e.payload
            if type(p) is Membership:
                st.membership.append(StoredMembership(e.log_id, p))
                membership_changed = True
        io = self.next_io()
        st.io.pending.append((io, last, None))
        self.output.append(AppendEntries(entries, io))
        if membership_changed:
            self.on_membership_changed()

    def truncate_local(self, after_index: int) -> None:
        """Delete every entry after ``after_index``. Committed entries are never deleted."""
        st = self.state
        if after_index < st.committed_index():
            raise Panicked(
                f"node {st.id}: refusing to truncate committed entries: after={after_index} "
                f"committed={st.committed!r}"
            )
        after = st.log_id_at(after_index)
        st.log_ids.truncate_after(after_index)
        before = st.membership.effective
        st.membership.truncate(after_index)
        io = self.next_io()
        st.io.pending.append((io, after, None))
        self.output.append(TruncateLog(after, io))
        if st.membership.effective is not before:
            self.on_membership_changed()

    def commit_to(self, index: int, when: int | None) -> LogId | None:
        """Advance ``committed`` to ``index`` when that is higher and held in the log:
        promote the memberships it covers and emit ``SaveCommittedAndApply`` waiting on IO
        ``when``. Returns the new committed log id, or ``None`` when nothing changed."""
        st = self.state
        if index <= st.committed_index():
            return None
        committed = st.log_id_at(index)
        if committed is None:
            return None
        st.committed = committed
        before = st.membership.committed
        st.membership.commit(index)
        self.output.append(SaveCommittedAndApply(committed, when=when))
        if st.membership.committed is not before and self.leader is not None:
            # Nodes removed by the now committed membership get no more entries.
            self.refresh_replication()
        return committed

    def io_covering(self, index: int) -> int | None:
        """The storage write after which the log is durable up to ``index``: the first
        pending log write whose resulting log reaches ``index``; ``None`` when it is
        durable already."""
        ios = self.state.io
        fl = ios.flushed_log_id
        if not ios.pending or (fl is not None and fl.index >= index):
            return None
        for io, log_id, vote in ios.pending:
            if vote is None and log_id is not None and log_id.index >= index:
                return io
        return ios.submitted

    def handle_io_flushed(self, io: int) -> None:
        """Every storage write numbered ``<= io`` is durable."""
        st = self.state
        ios = st.io
        if io <= ios.flushed:
            return
        vote_flushed = False
        pending = ios.pending
        while pending and pending[0][0] <= io:
            _, log_id, vote = pending.popleft()
            if vote is not None:
                ios.flushed_vote = vote
                vote_flushed = True
            else:
                ios.flushed_log_id = log_id
        ios.flushed = io
        if vote_flushed and self.candidate is not None and ios.flushed_vote == self.candidate.vote:
            self.candidate_granted(st.id)
        if self.leader is not None:
            self.leader_self_flushed()
            if self.leader is not None and self.leader.reads:
                self.leader_check_reads()

    # -- roles -------------------------------------------------------------------------------

    def set_server_state(self) -> None:
        """Derive the server state from the role and the effective membership."""
        st = self.state
        if self.leader is not None:
            st.server_state = ServerState.LEADER
        elif self.candidate is not None:
            st.server_state = ServerState.CANDIDATE
        elif st.is_voter():
            st.server_state = ServerState.FOLLOWER
        else:
            st.server_state = ServerState.LEARNER

    def become_following(self, now: float) -> None:
        """Drop any leader or candidate role; become a follower (voter) or learner."""
        if self.leader is not None:
            self.output.append(StopReplication())
            stepped_down = ForwardToLeader(None, None)
            for r in self.leader.reads:
                self.output.append(Respond(r.tx, stepped_down))
            if self.leader.change_tx is not None:
                self.output.append(Respond(self.leader.change_tx, stepped_down))
            self.leader = None
        self.candidate = None
        self.pre_candidate = None
        self.set_server_state()
        self.reset_election_timer(now)

    def on_membership_changed(self) -> None:
        """The effective membership changed (appended or truncated)."""
        if self.leader is not None:
            self.refresh_replication()
            self.leader_try_commit()
        self.set_server_state()

    def refresh_replication(self) -> None:
        """The leader's membership or targets changed: update progress tracking and the set
        of replication streams."""
        leader = self.leader
        assert leader is not None
        targets = self.replication_targets()
        others = frozenset(targets) - self.state.effective_membership().nodes.keys()
        leader.set_membership(self.state.effective_membership(), self.now, others)
        self.output.append(StartReplication(leader.vote, targets))

    def replication_targets(self) -> dict[NodeId, BasicNode]:
        """Every node but this one in the effective membership (voters and learners), and
        the nodes the committed membership still has: a removed node keeps receiving the log
        until its removal commits, so it learns it is out and does not campaign."""
        st = self.state
        out = dict(st.membership.committed.membership.nodes)
        out.update(st.effective_membership().nodes)
        out.pop(st.id, None)
        return dict(sorted(out.items()))

    def voter_targets(self) -> dict[NodeId, BasicNode]:
        """The other voters of the effective membership (who is asked for votes)."""
        st = self.state
        m = st.effective_membership()
        return {nid: n for nid, n in m.nodes.items() if nid != st.id and m.is_voter(nid)}

    def current_leader(self) -> NodeId | None:
        """The established leader this node knows of, if any. A committed vote naming this
        node while it is not leading (it restarted, or stepped down) names no leader."""
        v = self.state.vote
        if not v.committed:
            return None
        lid = v.leader_id.node_id
        if lid == self.state.id and self.leader is None:
            return None
        return lid

    def forward_to_leader(self) -> ForwardToLeader:
        """The error for a leader-only request arriving here (on a leader handing over: the
        transfer target)."""
        leader = self.leader
        lid = self.current_leader() if leader is None or leader.transfer_to is None else leader.transfer_to
        node = None if lid is None else self.state.effective_membership().nodes.get(lid)
        return ForwardToLeader(lid, node)

    # -- initialize --------------------------------------------------------------------------

    def initialize(self, membership: Membership, now: float) -> None:
        """Start a new cluster: append ``membership`` as the first entry ``LogId(0, 0)``.

        Raises ``NotAllowed`` unless the node is pristine (no log, no vote) and
        ``NotInMembers`` unless this node is a voter of ``membership``. If this node is the
        only voter it elects itself at once; otherwise it starts an election right away too,
        so a freshly initialized cluster needs no timeout to get a leader.
        """
        st = self.state
        self.now = now
        last = st.last_log_id()
        if last is not None or st.vote.term != 0:
            raise NotAllowed(last, st.vote)
        if not membership.is_voter(st.id):
            raise NotInMembers(st.id, membership.voter_ids())
        self.append_local([Entry(LogId(0, 0), membership)])
        self.set_server_state()
        self.elect(now)

    def describe(self) -> str:
        """A one-line summary for traces and golden files."""
        st = self.state
        return (
            f"n{st.id} {st.server_state.value} vote={st.vote!r} last={st.last_log_id()!r} "
            f"committed={st.committed!r} applied={st.applied!r} io={st.io.flushed}/{st.io.submitted}"
        )

