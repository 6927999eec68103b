"""Elections: ``elect``, ``handle_vote_req``, ``handle_vote_resp``, ``become_leader``.

Thesis 3.4 with Openraft's ``Vote``: a node grants a request iff the request's vote is ``>=``
its own under the partial order and the candidate's log is at least as up to date (§5.4.1);
the new vote is durable before the grant leaves (the ``Respond`` waits on the vote's IO).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..types import BLANK, Entry, LogId, Vote, VoteRequest, VoteResponse
from ..validation import MAX_TERM
from .faults import EngineFault
from .command import Replicate, Respond, SendVote
from .leader import Candidate, Leader

if TYPE_CHECKING:
    from .engine import Engine


class VoteHandler:
    """Election handlers, mixed into ``Engine``."""

    def pre_vote(self: Engine, now: float) -> None:
        """Ask the voters whether they would vote for this node in the next term, without
        raising the term or persisting anything (thesis 9.6); a quorum of yes starts the
        real election."""
        st = self.state
        self.now = now
        if st.vote.term >= MAX_TERM:
            # No term after MAX_TERM (docs/design/bad-input.md): this node never campaigns.
            self.reset_election_timer(now)
            return
        vote = Vote.new(st.vote.term + 1, st.id)
        self.pre_candidate = Candidate(vote, st.effective_membership(), now)
        self.reset_election_timer(now)
        targets = self.voter_targets()
        if targets:
            self.output.append(SendVote(VoteRequest(vote, st.last_log_id(), pre_vote=True), targets))
        self.pre_vote_granted(st.id)

    def pre_vote_granted(self: Engine, node_id: int) -> None:
        """Count a pre-vote grant; on a quorum of every config, run the real election."""
        pc = self.pre_candidate
        if pc is not None and pc.grant(node_id):
            self.pre_candidate = None
            self.elect(self.now)

    def elect(self: Engine, now: float, transfer_from: Vote | None = None, above_term: int = 0) -> None:
        """Become a candidate: vote for self in the next term, persist it, ask every voter.
        This node's own grant counts once its vote is durable. A learner never campaigns.
        ``transfer_from``: the leader that handed leadership to us (see ``VoteRequest``).
        ``above_term``: campaign in a term greater than this one too (a leader re-electing
        itself above a non-voter's vote, ``handle_higher_vote``; the caller keeps it below
        ``MAX_TERM``)."""
        st = self.state
        self.now = now
        if not st.is_voter():
            return
        if st.vote.term >= MAX_TERM:
            # No term after MAX_TERM (docs/design/bad-input.md): this node never campaigns.
            self.reset_election_timer(now)
            return
        self.pre_candidate = None
        if self.leader is not None:
            self.become_following(now)
        vote = Vote.new(max(st.vote.term, above_term) + 1, st.id)
        self.update_vote(vote)
        self.candidate = Candidate(vote, st.effective_membership(), now)
        self.set_server_state()
        self.reset_election_timer(now)
        targets = self.voter_targets()
        if targets:
            req = VoteRequest(vote, st.last_log_id(), transfer_from=transfer_from)
            self.output.append(SendVote(req, targets, when=st.io.vote_io))
        if st.io.flushed >= st.io.vote_io:
            self.candidate_granted(st.id)

    def log_is_up_to_date(self: Engine, last_log_id: LogId | None) -> bool:
        """§5.4.1: the candidate's log is at least as up to date as ours."""
        mine = self.state.last_log_id()
        if self.injected_faults and EngineFault.GRANT_WITHOUT_LOG_CHECK in self.injected_faults:
            return True
        return mine is None or (last_log_id is not None and last_log_id >= mine)

    def handle_vote_req(self: Engine, req: VoteRequest, tx: Any, now: float) -> None:
        """Answer a vote request with ``Respond(tx, VoteResponse)``.

        Rejected when: a known leader is alive here (leader stickiness, thesis 4.2.3: it
        heard from its leader less than ``election_timeout_min`` ago), the candidate's log is
        behind, or the request's vote is not ``>=`` ours. A grant is sent only once the vote
        is durable.
        """
        st = self.state
        self.now = now
        c = self.config
        mine = st.vote
        sticky = (
            mine.committed
            and req.vote.leader_id != mine.leader_id
            and req.transfer_from != mine
            and (
                self.leader is not None
                and self.leader.transfer_to is None
                and now - max(self.leader.quorum_acked_at(now), self.leader.elected_at) < c.election_timeout_min
                or self.leader is None
                and now - self.leader_seen_at < c.election_timeout_min
            )
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
            if self.leader is not None or self.candidate is not None:
                self.become_following(now)
            self.reset_election_timer(now)
        when = st.io.vote_io
        if self.injected_faults and EngineFault.REPLY_BEFORE_VOTE_PERSISTED in self.injected_faults:
            when = None
        self.output.append(Respond(tx, VoteResponse(st.vote, True, st.last_log_id()), when=when))

    def handle_vote_resp(self: Engine, target: int, resp: VoteResponse, now: float) -> None:
        """Count a vote response. A higher vote in it ends the election (we adopt it)."""
        st = self.state
        self.now = now
        if resp.vote.is_gt(st.vote) and (not resp.pre_vote or resp.vote.term > st.vote.term):
            self.update_vote(resp.vote)
            self.become_following(now)
            return
        if resp.pre_vote:
            if resp.vote_granted:
                self.pre_vote_granted(target)
            return
        cand = self.candidate
        if cand is None or not resp.vote_granted or resp.vote != cand.vote:
            return
        self.candidate_granted(target)

    def candidate_granted(self: Engine, node_id: int) -> None:
        """Count ``node_id``'s grant of our candidacy; win on a quorum of every config."""
        cand = self.candidate
        if cand is None:
            return
        if cand.grant(node_id):
            self.become_leader(self.now)

    def become_leader(self: Engine, now: float) -> None:
        """Won the election: commit the vote, append the blank entry, start replication."""
        st = self.state
        cand = self.candidate
        assert cand is not None
        self.candidate = None
        vote = Vote(cand.vote.leader_id, True)
        self.update_vote(vote)
        leader = Leader(vote, st.id, st.effective_membership(), now)
        # NB: the grants do not count as acks (``ack_at``): a voter's grant leaves its vote
        # uncommitted, so leader stickiness does not stop it from granting a higher-term
        # candidate a moment later; a grant confirms no lease. ``elected_at`` covers
        # check-quorum until the first heartbeat round is acked.
        leader.elected_at = now
        self.leader = leader
        self.set_server_state()
        flushed = st.io.flushed_log_id
        leader.progress.update(st.id, -1 if flushed is None else flushed.index)
        # Track and replicate to every member, and to nodes a pending change removes.
        self.refresh_replication()
        last = st.last_log_id()
        noop = Entry(LogId(vote.term, 0 if last is None else last.index + 1), BLANK)
        leader.noop_log_id = noop.log_id
        self.append_local([noop])
        self.output.append(Replicate(noop.log_id, st.committed))

