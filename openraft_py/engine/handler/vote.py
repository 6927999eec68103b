"""Elections and the vote: pre-vote, ``elect``, vote requests and responses, and the role
transitions they cause (``become_leader``, ``become_following``).

Thesis 3.4 with Openraft's ``Vote``: a node grants a request iff the request's vote is ``>=``
its own under the partial order and the candidate's log is at least as up to date (§5.4.1);
the new vote is durable before the grant leaves (the ``Respond`` waits on the vote's IO).
A node that heard from a live leader less than ``election_timeout_min`` ago refuses other
candidates (leader stickiness, thesis 4.2.3) unless that leader announced a handover
(``transfer.py``).
"""

from __future__ import annotations

from typing import Any

from ...errors import ForwardToLeader, NotAllowed, NotInMembers, Panicked
from ...types import (
    BLANK,
    BasicNode,
    Entry,
    LogId,
    Membership,
    NodeId,
    ServerState,
    Vote,
    VoteRequest,
    VoteResponse,
)
from ...validation import MAX_TERM
from ..command import Respond, SaveVote, SendVote, StopReplication
from ..faults import EngineFault
from ..leader import Candidate, Leader
from .base import Handler
from .transfer import is_handing_over


class VoteHandler(Handler):
    """Election handlers and role transitions, for every role."""

    __slots__ = ()

    # -- the vote ------------------------------------------------------------------------------

    def update_vote(self, vote: Vote) -> None:
        """Adopt ``vote`` (which must be >= the current one) and persist it. A leader whose
        vote is replaced steps down; a candidate of another vote gives up."""
        st = self.state
        eng = self.eng
        if vote == st.vote:
            return
        if not vote.is_ge(st.vote):
            raise Panicked(f"node {st.id}: vote may not go backward: {st.vote!r} -> {vote!r}")
        st.vote = vote
        eng.transfer_from = None  # a handover notice is about the vote we held (transfer.py)
        eng.leader_lost = False  # the timer fired for the vote we held (current_leader)
        io = eng.log_handler().next_io()
        st.io.pending.append((io, None, vote))
        st.io.vote_io = io
        self.output.append(SaveVote(vote, io))
        if eng.leader is not None and eng.leader.vote != vote:
            self.become_following(eng.now)
        if eng.candidate is not None and eng.candidate.vote != vote:
            eng.candidate = None
            self.set_server_state()

    # -- campaigning ---------------------------------------------------------------------------

    def voter_targets(self) -> dict[NodeId, BasicNode]:
        """The other voters of the effective membership (who is asked for votes)."""
        st = self.state
        m = st.effective_membership()
        return {nid: n for nid, n in m.nodes.items() if nid != st.id and m.is_voter(nid)}

    def on_election_timeout(self, now: float) -> None:
        """The election deadline passed on a node that is not leading: it heard from no
        leader for its election timeout, and names none (``Engine.current_leader``) until
        one is heard from or it adopts another vote."""
        st = self.state
        self.eng.leader_lost = True
        if not st.is_voter():
            # A learner, or a voter that appended a membership removing it: it never
            # campaigns (its timer only keeps running).
            self.eng.reset_election_timer(now)
        elif self.eng.config.enable_pre_vote or st.is_leaving():
            # A voter being removed asks first, even with pre-vote off: if it missed the
            # final [C_new] it cannot win, and must not raise its term trying.
            self.pre_vote(now)
        else:
            self.elect(now)

    def initialize(self, membership: Membership, now: float) -> None:
        """Append ``membership`` as the first entry and campaign; see ``Engine.initialize``."""
        st = self.state
        self.eng.now = now
        last = st.last_log_id()
        if last is not None or st.vote.term != 0:
            raise NotAllowed(last, st.vote)
        if not membership.is_voter(st.id):
            raise NotInMembers(st.id, membership.voter_ids())
        self.eng.log_handler().append([Entry(LogId(0, 0), membership)])
        self.set_server_state()
        self.elect(now)

    def pre_vote(self, now: float) -> None:
        """Ask the voters whether they would vote for this node in the next term, without
        raising the term or persisting anything (thesis 9.6); a quorum of yes starts the
        real election."""
        st = self.state
        eng = self.eng
        eng.now = now
        if st.vote.term >= MAX_TERM:
            # No term after MAX_TERM (docs/design/bad-input.md): this node never campaigns.
            eng.reset_election_timer(now)
            return
        vote = Vote.new(st.vote.term + 1, st.id)
        eng.pre_candidate = Candidate(vote, st.effective_membership(), now)
        eng.reset_election_timer(now)
        targets = self.voter_targets()
        if targets:
            self.output.append(SendVote(VoteRequest(vote, st.last_log_id(), pre_vote=True), targets))
        self.count_pre_vote_grant(st.id)

    def count_pre_vote_grant(self, node_id: int) -> None:
        """Count a pre-vote grant; on a quorum of every config, run the real election."""
        eng = self.eng
        pc = eng.pre_candidate
        if pc is not None and pc.grant(node_id):
            eng.pre_candidate = None
            self.elect(eng.now)

    def elect(self, now: float, transfer_from: Vote | None = None, above_term: int = 0) -> None:
        """Become a candidate: vote for self in the next term (above ``above_term`` too),
        persist it, ask every voter. See ``Engine.elect``."""
        st = self.state
        eng = self.eng
        eng.now = now
        if not st.is_voter():
            return
        if st.vote.term >= MAX_TERM:
            # No term after MAX_TERM (docs/design/bad-input.md): this node never campaigns.
            eng.reset_election_timer(now)
            return
        eng.pre_candidate = None
        if eng.leader is not None:
            self.become_following(now)
        vote = Vote.new(max(st.vote.term, above_term) + 1, st.id)
        self.update_vote(vote)
        eng.candidate = Candidate(vote, st.effective_membership(), now)
        self.set_server_state()
        eng.reset_election_timer(now)
        targets = self.voter_targets()
        if targets:
            req = VoteRequest(vote, st.last_log_id(), transfer_from=transfer_from)
            self.output.append(SendVote(req, targets, when=st.io.vote_io))
        if st.io.flushed >= st.io.vote_io and self.may_grant_self(now):
            self.count_grant(st.id)

    def may_grant_self(self, now: float) -> bool:
        """Whether this candidate may count its own vote now: not while it heard from an
        established leader within ``election_timeout_min`` (``leader_seen_at``). Leader
        stickiness holds for its own vote as for any other (``handle_vote_req``): that
        leader may count this node's ack in a lease that is still running, and a vote
        counted now could elect a leader that commits writes the lease reads miss
        (reads.md). Its election timer only fires once that time is over; a
        ``trigger.elect()`` within it wins only through the other voters' grants, or in
        the next campaign."""
        return now - self.eng.leader_seen_at >= self.eng.config.election_timeout_min

    # -- answering -----------------------------------------------------------------------------

    def log_is_up_to_date(self, last_log_id: LogId | None) -> bool:
        """§5.4.1: the candidate's log is at least as up to date as ours."""
        mine = self.state.last_log_id()
        faults = self.eng.injected_faults
        if faults and EngineFault.GRANT_WITHOUT_LOG_CHECK in faults:
            return True
        return mine is None or (last_log_id is not None and last_log_id >= mine)

    def leader_is_alive(self, now: float) -> bool:
        """Whether this node counts its leader as alive (leader stickiness): it leads and a
        quorum acked it, or it follows and heard from its leader, within
        ``election_timeout_min``. A leader handing over is not alive (``transfer.py``)."""
        eng = self.eng
        leader = eng.leader
        timeout = self.eng.config.election_timeout_min
        if leader is not None:
            acked = max(leader.quorum_acked_at(now), leader.elected_at, leader.voters_changed_at)
            return not is_handing_over(leader) and now - acked < timeout
        return now - eng.leader_seen_at < timeout

    def handle_vote_req(self, req: VoteRequest, tx: Any, now: float) -> None:
        """Answer a vote request with ``Respond(tx, VoteResponse)``. See
        ``Engine.handle_vote_req``."""
        st = self.state
        eng = self.eng
        eng.now = now
        mine = st.vote
        # Sticky whatever our vote is now: a node told to campaign (``trigger.elect``) right
        # after it acked its leader holds an uncommitted vote of its own, and may still be
        # in that leader's lease (``leader_seen_at`` is only ever set from an established
        # leader, so it is old unless that happened). Even toward the candidate whose vote
        # we hold: we may have adopted it from that candidate's refusal of our own
        # candidacy (``handle_vote_resp``), without granting it; a vote we did grant was
        # granted once the lease was over, and only a leader of that vote or a greater one
        # restarts it (then refusing that candidate's late vote request changes nothing).
        sticky = (
            req.transfer_from != mine  # our leader handed over to this candidate
            and self.leader_is_alive(now)
        )
        if req.pre_vote:
            # Would we vote for it in its next term? Answer without changing anything.
            would = (
                not sticky
                and self.log_is_up_to_date(req.last_log_id)
                and (req.vote.term > mine.term or req.vote.is_ge(mine))
            )
            self.output.append(Respond(tx, VoteResponse(st.vote, would, st.last_log_id(), pre_vote=True)))
            return
        if sticky or not self.log_is_up_to_date(req.last_log_id) or not req.vote.is_ge(mine):
            self.output.append(Respond(tx, VoteResponse(st.vote, False, st.last_log_id())))
            return
        if req.vote != mine:
            self.update_vote(req.vote)
            if eng.leader is not None or eng.candidate is not None:
                self.become_following(now)
            eng.reset_election_timer(now)
        when: int | None = st.io.vote_io
        faults = eng.injected_faults
        if faults and EngineFault.REPLY_BEFORE_VOTE_PERSISTED in faults:
            when = None
        self.output.append(Respond(tx, VoteResponse(st.vote, True, st.last_log_id()), when=when))

    def handle_vote_resp(self, target: int, resp: VoteResponse, now: float) -> None:
        """Count a vote response. A higher vote in it ends the election (we adopt it)."""
        st = self.state
        eng = self.eng
        eng.now = now
        if resp.vote.is_gt(st.vote) and (not resp.pre_vote or resp.vote.term > st.vote.term):
            self.update_vote(resp.vote)
            self.become_following(now)
            return
        if resp.pre_vote:
            if resp.vote_granted:
                self.count_pre_vote_grant(target)
            return
        cand = eng.candidate
        if cand is None or not resp.vote_granted or resp.vote != cand.vote:
            return
        self.count_grant(target)

    # -- role transitions ----------------------------------------------------------------------

    def set_server_state(self) -> None:
        """Derive the server state from the role and the effective membership."""
        st = self.state
        eng = self.eng
        if eng.leader is not None:
            st.server_state = ServerState.LEADER
        elif eng.candidate is not None:
            st.server_state = ServerState.CANDIDATE
        elif st.is_voter():
            st.server_state = ServerState.FOLLOWER
        else:
            st.server_state = ServerState.LEARNER

    def count_grant(self, node_id: int) -> None:
        """Count ``node_id``'s grant of our candidacy; win on a quorum of every config."""
        cand = self.eng.candidate
        if cand is None:
            return
        if cand.grant(node_id):
            self.become_leader(self.eng.now)

    def become_leader(self, now: float) -> None:
        """Won the election: commit the vote, append the blank entry, start replication."""
        st = self.state
        eng = self.eng
        cand = eng.candidate
        assert cand is not None
        eng.candidate = None
        vote = Vote(cand.vote.leader_id, True)
        self.update_vote(vote)
        leader = Leader(vote, st.id, st.effective_membership(), now)
        # NB: the grants do not count as acks (``ack_at``): a voter's grant leaves its vote
        # uncommitted, so leader stickiness does not stop it from granting a higher-term
        # candidate a moment later; a grant confirms no lease. ``elected_at`` covers
        # check-quorum until the first heartbeat round is acked.
        leader.elected_at = now
        eng.leader = leader
        self.set_server_state()
        flushed = st.io.flushed_log_id
        leader.progress.update(st.id, -1 if flushed is None else flushed.index)
        # Track and replicate to every member, and to nodes a pending change removes.
        rh = eng.replication_handler(leader)
        rh.refresh()
        last = st.last_log_id()
        noop = Entry(LogId(vote.term, 0 if last is None else last.index + 1), BLANK)
        leader.noop_log_id = noop.log_id
        eng.log_handler().append([noop])
        rh.replicate()

    def become_following(self, now: float) -> None:
        """Drop any leader or candidate role; become a follower (voter) or learner. A leader
        stops its replication streams and fails its waiting reads and membership change (the
        change with ``outcome_unknown``: its joint entry was appended, and may commit under
        the next leader, which then completes the change). Its waiting writes are not failed
        here: each is answered once this node learns whether its entry commits."""
        eng = self.eng
        leader = eng.leader
        if leader is not None:
            self.output.append(StopReplication())
            eng.leader = None
            # The leader this node follows now, when it knows one (it adopted that leader's
            # committed vote: stepping down for its AppendEntries), so a caller goes there.
            stepped_down = eng.forward_to_leader()
            for r in leader.reads:
                self.output.append(Respond(r.tx, stepped_down))
            if leader.change_tx is not None:
                self.output.append(Respond(
                    leader.change_tx,
                    ForwardToLeader(stepped_down.leader_id, stepped_down.leader_node, outcome_unknown=True),
                ))
        eng.candidate = None
        eng.pre_candidate = None
        self.set_server_state()
        eng.reset_election_timer(now)
