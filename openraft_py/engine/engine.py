"""``Engine``: the sans-IO Raft state machine. Events in, ``Command`` values out.

This module holds the engine's data (``RaftState``, the role, follower and snapshot
bookkeeping) and its public entry points. Each entry point hands the work to the handler of
its concern (``handler/``: vote, following, leader, replication, membership, transfer,
snapshot, log), an object that holds references to the engine's state. See
``handler/__init__.py`` for the map and ``docs/design/engine-runtime.md``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from ..config import Config
from ..errors import ApiError, ForwardToLeader
from ..types import (
    AppendEntriesRequest,
    BasicNode,
    EntryPayload,
    InstallSnapshotRequest,
    LogId,
    Membership,
    NodeId,
    ReadPolicy,
    SnapshotMeta,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from .command import Command, Respond
from .faults import NO_FAULTS, EngineFault, inject
from .handler.following import FollowingHandler
from .handler.leader import LeaderHandler
from .handler.log import LogHandler
from .handler.membership import MembershipHandler
from .handler.replication import ReplicationHandler
from .handler.snapshot import SnapshotHandler
from .handler.transfer import TransferHandler, is_handing_over, redirect_target
from .handler.vote import VoteHandler
from .leader import Candidate, Leader
from .progress import ReplicationResult
from .state import RaftState


class Engine:
    """The Raft protocol for one node, with no IO and no clock.

    Time enters only as the ``now`` argument (milliseconds, monotonic, from the runtime's
    clock); randomness only from ``rng``. Given the same calls, an engine emits the same
    commands. Handlers append to ``output``; the runtime drains it with ``take_commands()``.

    The role is data: ``leader`` is set iff this node is an established leader;
    ``candidate`` iff an election of its own is in progress. Both ``None`` means follower or
    learner (``state.server_state`` says which).
    """

    def __init__(self, config: Config, state: RaftState, rng: random.Random, now: float = 0.0) -> None:
        self.config = config
        self.state = state
        self.rng = rng
        # Invariant: the same list for the engine's lifetime (handlers hold it).
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
        # Whether this node's election timer fired since it last heard from the leader of
        # its vote (``on_election_timeout``; cleared by ``accept_leader`` and by a new vote):
        # it then names no leader (``current_leader``). A node that starts with a committed
        # vote counts that leader as heard from, as for ``leader_seen_at``.
        # Invariant: ``False`` on a leader (its election changed the vote; its ticks never
        # time out an election).
        self.leader_lost: bool = False
        # When this node last accepted a request of the leader of its vote (whether or not
        # it announced a handover), and when such a request last ended a silence of that
        # leader of ``election_timeout_max`` or more (``accept_leader``): the node was
        # paused, stalled or cut off that long, and what it reads next may have waited all
        # that time, the leader's older requests first (a stale TransferLeader notice,
        # ``TransferHandler.notice_is_stale``). A node that starts with a committed vote
        # counts its leader as heard from, as for ``leader_seen_at``. -1e18: never.
        self.leader_heard_at: float = now if state.vote.committed else -1e18
        self.silence_ended_at: float = -1e18
        # The leader vote that told us it is handing over (TransferLeader): its messages no
        # longer count as "leader seen", so we may grant the new candidate at once.
        # Invariant: ``None`` or our current vote (``update_vote`` clears it). See transfer.py.
        self.transfer_from: Vote | None = None
        # When this node took that notice (``TransferHandler.handle_transfer_leader``): two
        # ``election_timeout_max`` later the transfer has expired, and the leader's requests
        # count as "leader seen" again (``TransferHandler.notice_expired``). -1e18: never.
        self.transfer_heard_at: float = -1e18
        self.snapshot_building = False
        # ``SnapshotPolicy.logs_since_last`` (None: never), read on every apply report.
        self.snapshot_every: int | None = config.snapshot_policy.logs_since_last_n
        self.snapshot_installing: SnapshotMeta | None = None
        # A built snapshot past the applied log id known so far (its apply report is late).
        self.snapshot_unreported: LogId | None = None
        # The last applied log id when ``trigger.snapshot()`` came while a build was running:
        # another build starts when that one ends, unless it covers this (see ``built``).
        self.snapshot_wanted: LogId | None = None
        # Pacing of policy builds (``Config.snapshot_pacing``): when the running build (or the
        # last one) started, and the earliest ``now`` at which the policy may start another:
        # the last build's end plus ``snapshot_pacing`` times its duration. A build reads the
        # whole state, so without this the policy would start one after another as soon as
        # each is due, and a large state would keep every node building all the time.
        self.snapshot_pacing: float = config.snapshot_pacing
        self.snapshot_build_started: float = now
        self.snapshot_next_due: float = -1e18
        self.election_deadline: float = 0.0
        self.now = now
        # TEST ONLY: the bug switches on (``faults.inject``); empty in production, where each
        # check costs one truth test of this empty frozenset.
        self.injected_faults: frozenset[EngineFault] = NO_FAULTS
        # The handlers that act for no particular role, made once: they hold only ``self``,
        # ``state`` and ``output``, which live as long as the engine. The leader's handlers
        # are made for the ``Leader`` they act for, and reused while it leads.
        self._leader_h: LeaderHandler | None = None
        self._replication_h: ReplicationHandler | None = None
        self._membership_h: MembershipHandler | None = None
        self._vote = VoteHandler(self)
        self._log = LogHandler(self)
        self._following = FollowingHandler(self)
        self._snapshot = SnapshotHandler(self)
        self._transfer = TransferHandler(self)
        self._vote.become_following(now)

    @property
    def faults(self) -> frozenset[EngineFault]:
        """TEST ONLY: the bug switches on. Assigning names or members (``eng.faults =
        {"apply_before_commit"}``) is kept for older callers and means
        ``faults.inject(eng, ...)``, which new code should call."""
        return self.injected_faults

    @faults.setter
    def faults(self, value: Iterable[EngineFault | str]) -> None:
        inject(self, value)

    # -- handlers (the map: handler/__init__.py). The leader's take the ``Leader`` they act
    # for (``self.leader``; a leader-only request gets it from writable_leader()) and are
    # never handed out for another one, so none acts for a leadership that ended.

    def vote_handler(self) -> VoteHandler:
        """Elections, the vote, role transitions (``handler/vote.py``)."""
        return self._vote

    def log_handler(self) -> LogHandler:
        """Log writes, commit, IO bookkeeping (``handler/log.py``)."""
        return self._log

    def following_handler(self) -> FollowingHandler:
        """Requests from a leader (``handler/following.py``)."""
        return self._following

    def snapshot_handler(self) -> SnapshotHandler:
        """Snapshot build, purge, install (``handler/snapshot.py``)."""
        return self._snapshot

    def transfer_handler(self) -> TransferHandler:
        """Leader transfer, both sides (``handler/transfer.py``)."""
        return self._transfer

    def leader_handler(self, leader: Leader) -> LeaderHandler:
        """Writes, reads, ticks of ``leader`` (``handler/leader.py``)."""
        h = self._leader_h
        if h is None or h.leader is not leader:
            h = self._leader_h = LeaderHandler(self, leader)
        return h

    def replication_handler(self, leader: Leader) -> ReplicationHandler:
        """Targets, acks, commit of ``leader`` (``handler/replication.py``)."""
        h = self._replication_h
        if h is None or h.leader is not leader:
            h = self._replication_h = ReplicationHandler(self, leader)
        return h

    def membership_handler(self, leader: Leader) -> MembershipHandler:
        """Membership changes of ``leader`` (``handler/membership.py``)."""
        h = self._membership_h
        if h is None or h.leader is not leader:
            h = self._membership_h = MembershipHandler(self, leader)
        return h

    def writable_leader(self) -> Leader:
        """The ``Leader`` if this node leads and takes writes; raises ``ForwardToLeader``
        otherwise (also while it hands leadership over: then naming the target)."""
        leader = self.leader
        if leader is None or is_handing_over(leader):
            raise self.forward_to_leader()
        return leader

    # -- output, time, role ------------------------------------------------------------------

    def take_commands(self) -> list[Command]:
        """Return and clear the commands emitted so far (``output`` stays the same list).
        A leader first plans the replication requests its targets are due
        (``ReplicationHandler.send``): after all the events before this call, so one request
        carries every entry they appended."""
        leader = self.leader
        if leader is not None and leader.send_due:
            self.replication_handler(leader).send()
        out = self.output
        if not out:
            return []
        taken = out[:]
        del out[:]
        return taken

    def reset_election_timer(self, now: float) -> None:
        """Pick a new random election deadline after ``now``."""
        c = self.config
        lo = c.election_timeout_min
        # ``rng.uniform(lo, hi)`` as that method computes it (the same draws for a seed),
        # without its Python frame: every accepted AppendEntries resets the timer.
        self.election_deadline = now + (lo + (c.election_timeout_max - lo) * self.rng.random())

    def handle_tick(self, now: float) -> None:
        """Advance the clock: leaders send heartbeats and check quorum contact; followers and
        candidates start an election when their deadline passed; a snapshot build the policy's
        pacing held back starts once its time has come."""
        self.now = now
        leader = self.leader
        if leader is not None:
            self.leader_handler(leader).tick(now)
        elif self.config.enable_elect and now >= self.election_deadline:
            self._vote.on_election_timeout(now)
        if self.snapshot_every is not None and not self.snapshot_building and now >= self.snapshot_next_due:
            # A build the pacing held back starts here if no apply report comes to start it.
            self._snapshot.maybe_build()

    def current_leader(self) -> NodeId | None:
        """The established leader this node knows of, if any: itself while it leads; the
        leader of its committed vote while it hears from that leader. None once its election
        timer fired without a request from that leader (``leader_lost``: it started a
        pre-vote round or an election, or, a learner, would have), until a leader is heard
        from again or it adopts another vote; none while its vote is a candidate's; none
        for a committed vote naming this node while it is not leading (it restarted, or
        stepped down)."""
        v = self.state.vote
        if not v.committed:
            return None
        lid = v.leader_id.node_id
        if self.leader is None and (lid == self.state.id or self.leader_lost):
            return None
        return lid

    def forward_to_leader(self) -> ForwardToLeader:
        """The error for a leader-only request arriving here (on a leader handing over: the
        transfer target)."""
        leader = self.leader
        lid = self.current_leader() if leader is None or not is_handing_over(leader) else redirect_target(leader)
        node = None if lid is None else self.state.effective_membership().nodes.get(lid)
        return ForwardToLeader(lid, node)

    # -- storage IO --------------------------------------------------------------------------

    def handle_io_flushed(self, io: int) -> None:
        """Every storage write numbered ``<= io`` is durable."""
        st = self.state
        if io <= st.io.flushed:
            return
        vote_flushed = self._log.mark_flushed(io)
        if (
            vote_flushed
            and self.candidate is not None
            and st.io.flushed_vote == self.candidate.vote
            and self._vote.may_grant_self(self.now)
        ):
            self._vote.count_grant(st.id)
        leader = self.leader
        if leader is not None:
            self.replication_handler(leader).update_self_flushed()
            if self.leader is leader and leader.reads:
                self.leader_handler(leader).check_reads()

    def handle_applied(self, applied: LogId | None) -> None:
        """The state machine applied every entry up to ``applied``."""
        self._snapshot.on_applied(applied)

    # -- elections ---------------------------------------------------------------------------

    def initialize(self, membership: Membership, now: float) -> None:
        """Start a new cluster: append ``membership`` as the first entry ``LogId(0, 0)``.

        Raises ``NotAllowed`` unless the node is pristine (no log, no vote) and
        ``NotInMembers`` unless this node is a voter of ``membership``. If this node is the
        only voter it elects itself at once; otherwise it starts an election right away too,
        so a freshly initialized cluster needs no timeout to get a leader.
        """
        self._vote.initialize(membership, now)

    def pre_vote(self, now: float) -> None:
        """Ask the voters whether they would vote for this node in the next term, without
        raising the term or persisting anything (thesis 9.6); a quorum of yes starts the
        real election."""
        self._vote.pre_vote(now)

    def elect(self, now: float, transfer_from: Vote | None = None, above_term: int = 0) -> None:
        """Become a candidate: vote for self in the next term, persist it, ask every voter.
        This node's own grant counts once its vote is durable, and not while it heard from an
        established leader within ``election_timeout_min`` (``VoteHandler.may_grant_self``:
        leader stickiness; that leader's lease may count on this node). A learner never
        campaigns.
        ``transfer_from``: the leader that handed leadership to us (see ``VoteRequest``).
        ``above_term``: campaign in a term greater than this one too (a leader re-electing
        itself above a non-voter's vote, ``handle_higher_vote``; the caller keeps it below
        ``MAX_TERM``)."""
        self._vote.elect(now, transfer_from, above_term)

    def handle_vote_req(self, req: VoteRequest, tx: Any, now: float) -> None:
        """Answer a vote request with ``Respond(tx, VoteResponse)``.

        Rejected when: a known leader is alive here (leader stickiness, thesis 4.2.3: it
        heard from its leader less than ``election_timeout_min`` ago), the candidate's log is
        behind, or the request's vote is not ``>=`` ours. A grant is sent only once the vote
        is durable.
        """
        self._vote.handle_vote_req(req, tx, now)

    def handle_vote_resp(self, target: int, resp: VoteResponse, now: float) -> None:
        """Count a vote response. A higher vote in it ends the election (we adopt it)."""
        self._vote.handle_vote_resp(target, resp, now)

    # -- following a leader ------------------------------------------------------------------

    def handle_append_entries(self, req: AppendEntriesRequest, tx: Any, now: float) -> None:
        """Handle an AppendEntries (or heartbeat) from a leader; reply via ``Respond(tx)``."""
        self.now = now
        self._following.append_entries(req, tx, now)

    def handle_install_snapshot(self, req: InstallSnapshotRequest, tx: Any, now: float) -> None:
        """A chunk of a leader's snapshot. A stale leader is refused; otherwise we follow it
        and the runtime writes the chunk (``ReceiveSnapshotChunk``) once the adopted vote is
        durable."""
        self.now = now
        self._snapshot.receive_chunk(req, tx, now)

    def handle_snapshot_received(self, meta: SnapshotMeta, data: Any, tx: Any) -> None:
        """Every chunk arrived: install it unless we already have what it covers."""
        self._snapshot.received(meta, data, tx)

    def handle_snapshot_installed(self, meta: SnapshotMeta, tx: Any) -> None:
        """The state machine holds the snapshot ``meta``: make the log agree, advance
        committed/applied/snapshot, and answer the leader once that is durable."""
        self._snapshot.installed(meta, tx)

    def handle_snapshot_refused(self, meta: SnapshotMeta, tx: Any, err: ApiError) -> None:
        """The state machine refused the snapshot ``meta`` (its state is unchanged): end the
        install and answer the leader with ``err``; the leader sends it again later."""
        self._snapshot.refused(meta, tx, err)

    # -- leading -----------------------------------------------------------------------------

    def client_write(self, payloads: list[EntryPayload]) -> LogId:
        """Append one entry per payload, in order; return the first new log id (the others
        follow at consecutive indexes). Raises ``ForwardToLeader`` on a non-leader and on a
        leader handing over."""
        return self.leader_handler(self.writable_leader()).client_write(payloads)

    def handle_replication_progress(
        self, target: int, session: Vote, matching: LogId | None, sent_at: float
    ) -> None:
        """A follower acknowledged a request sent at ``sent_at`` by leader ``session``; its
        log matches ours up to ``matching`` (``None``: only an ack). For acks outside the
        request window (a snapshot chunk's); the outcome of a ``Replicate`` or
        ``SendSnapshot`` goes to ``handle_replication_result``, which acks as well."""
        leader = self.leader
        if leader is None or session != leader.vote:
            return
        self.replication_handler(leader).handle_progress(target, matching, sent_at)

    def handle_replication_result(self, result: ReplicationResult) -> None:
        """The runtime's report on a ``Replicate`` or ``SendSnapshot`` this node planned as
        leader ``result.session`` (ignored for any other leadership): frees its slot in the
        target's window and moves the target's progress (``handler/replication.py``)."""
        leader = self.leader
        if leader is None or result.session != leader.vote:
            return
        self.replication_handler(leader).handle_result(result)

    def handle_higher_vote(self, target: int, session: Vote, vote: Vote) -> None:
        """A replication target rejected leader ``session`` because it holds the greater
        ``vote``: adopt it and follow, unless it is a non-voter's uncommitted vote, which
        cannot depose this leader; the leader then re-elects itself above it
        (``LeaderHandler.higher_vote``, ``docs/design/joint-consensus.md`` "Removed voters")."""
        leader = self.leader
        if leader is None or session != leader.vote:
            return
        self.leader_handler(leader).higher_vote(target, vote)

    def leader_heartbeat(self, now: float) -> None:
        """Send a heartbeat round now (a no-op unless leading)."""
        leader = self.leader
        if leader is not None:
            self.leader_handler(leader).heartbeat(now)

    def handle_read(self, tx: Any, policy: ReadPolicy, now: float) -> None:
        """Start a linearizable read; answer ``tx`` with the read log id (the caller waits
        until it is applied) or an error.

        - ``READ_INDEX``: read_log_id = max(blank entry of this term, committed), confirmed
          by a quorum ack of a heartbeat sent after this call.
        - ``LEASE_READ``: answered at once while a quorum acked within the lease; refused
          with ``QuorumNotEnough`` once this leader started handing over.

        Either is answered only once read_log_id is committed (on a new leader: its blank
        entry); a leader that steps down first fails the read with ``ForwardToLeader``.
        """
        self.now = now
        leader = self.leader
        if leader is None:
            self.output.append(Respond(tx, self.forward_to_leader()))
            return
        self.leader_handler(leader).read(tx, policy, now)

    # -- membership and leader transfer ------------------------------------------------------

    def change_membership(self, voters: Iterable[NodeId], retain: bool, tx: Any, allow_lagging: bool = False) -> None:
        """Change the voters to exactly ``voters`` by joint consensus; ``tx`` is answered with
        the ``ClientWriteResponse`` of the final uniform config once it is applied here.

        ``retain``: removed voters stay as learners (else they leave the cluster). Raises
        ``ForwardToLeader``, ``InProgress``, ``EmptyMembership``, ``LearnerNotFound``, or
        ``LearnerIsLagging`` when a majority of ``voters`` has not caught up with this leader
        (unless ``allow_lagging``). A request that changes nothing is answered with the
        current membership at once. On a leader elected less than ``election_timeout_max``
        ago, a refusal that may be premature says so: ``LearnerIsLagging.unheard`` (nodes not
        heard from yet) or ``InProgress.wait_ms > 0`` (an inherited change, about to commit),
        both with ``wait_ms``; the caller may ask again later (``Raft`` does). Nothing is held
        here: the engine answers each call at once.
        """
        self.membership_handler(self.writable_leader()).change_membership(voters, retain, tx, allow_lagging)

    def add_learner(self, node_id: NodeId, node: BasicNode, tx: Any) -> LogId:
        """Add ``node_id`` as a learner (it receives the log, does not vote); ``tx`` is
        answered with the ``ClientWriteResponse`` of its membership entry once applied. A node
        already in the membership with the same address is not re-added: ``tx`` gets the
        current membership entry. Returns that entry's log id. Raises ``ForwardToLeader`` or
        ``InProgress``."""
        return self.membership_handler(self.writable_leader()).add_learner(node_id, node, tx)

    def remove_learners(self, ids: Iterable[NodeId], tx: Any) -> LogId:
        """Remove the learners ``ids`` from the membership: one entry with the same voter
        configs and the nodes without them (the voters do not change: no joint phase).
        ``tx`` is answered with the ``ClientWriteResponse`` of that entry once applied. The
        leader keeps replicating to them until the entry commits (so that they learn it),
        then stops. No id at all: ``tx`` gets the current membership entry, nothing is
        appended. Returns the entry's log id. Raises, before anything is appended,
        ``ForwardToLeader``, ``LearnerNotFound`` for an id that is not a member,
        ``NotALearner`` for a voter of any config of the effective membership, and
        ``InProgress`` while another membership change is not committed."""
        return self.membership_handler(self.writable_leader()).remove_learners(ids, tx)

    def transfer_leader(self, to: NodeId, now: float) -> None:
        """Hand leadership to voter ``to``: stop taking writes, wait until ``to`` holds the
        whole log, then tell every voter. Gives up (and resumes writes) when no new leader
        appeared within two election timeouts. Raises ``ForwardToLeader`` on a non-leader,
        ``ValueError`` when ``to`` is not a voter or answered none of this leader's requests
        sent within ``election_timeout_max``, and ``InProgress`` while a ``change_membership``
        of this leader waits for its joint config to commit. Transferring to this node does nothing,
        unless it is handing over (a transfer started, not given up yet): then ``ForwardToLeader``
        naming the target."""
        self.now = now
        leader = self.leader
        if leader is None:
            raise self.forward_to_leader()
        self._transfer.start(leader, to, now)

    def handle_transfer_leader(self, req: TransferLeaderRequest, now: float) -> None:
        """The leader ``req.from_leader`` hands over to ``req.to``. If that is our leader, we
        stop treating it as alive (we may grant votes at once); if we are ``req.to`` and hold
        its log, we start an election now."""
        self.now = now
        self._transfer.handle_transfer_leader(req, now)

    # -- snapshots and purging ---------------------------------------------------------------

    def trigger_snapshot(self) -> bool:
        """Build a snapshot now, or once the one being built ends if that one does not cover
        every entry applied by now; return whether one was started now."""
        return self._snapshot.trigger()

    def handle_snapshot_built(self, meta: SnapshotMeta | None) -> None:
        """A build finished (``meta`` ``None``: it failed or built nothing)."""
        self._snapshot.built(meta)

    def trigger_purge_log(self, upto: int) -> LogId | None:
        """Purge entries up to index ``upto``, but never past the last snapshot; return the
        new last purged log id (``None`` when nothing could be purged)."""
        return self._snapshot.trigger_purge(upto)

    def describe(self) -> str:
        """A one-line summary for traces and golden files."""
        st = self.state
        return (
            f"n{st.id} {st.server_state.value} vote={st.vote!r} last={st.last_log_id()!r} "
            f"committed={st.committed!r} applied={st.applied!r} io={st.io.flushed}/{st.io.submitted}"
        )
