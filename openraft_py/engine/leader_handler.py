"""The leader side: client writes, replication progress, commit, heartbeats and reads.

Commit rule (thesis 3.6.2, Figure 3.7): the commit candidate is the greatest index held by a
quorum of every config; it commits only once it reaches this leader's own blank entry, so an
entry of a previous term is never committed by counting replicas, only together with one of
the current term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import QuorumNotEnough
from ..types import Entry, EntryPayload, LogId, ReadPolicy, Vote
from ..validation import MAX_TERM
from .faults import EngineFault
from .command import Heartbeat, Replicate, Respond
from .leader import PendingRead

if TYPE_CHECKING:
    from .engine import Engine


class LeaderHandler:
    """Leader handlers, mixed into ``Engine``."""

    def client_write(self: Engine, payloads: list[EntryPayload]) -> LogId:
        """Append one entry per payload, in order; return the first new log id (the others
        follow at consecutive indexes). Raises ``ForwardToLeader`` on a non-leader."""
        leader = self.leader
        if leader is None or leader.transfer_to is not None:
            raise self.forward_to_leader()
        st = self.state
        term = leader.vote.term
        start = st.last_index() + 1
        entries = [Entry(LogId(term, start + i), p) for i, p in enumerate(payloads)]
        self.append_local(entries)
        last = entries[-1].log_id
        self.output.append(Replicate(last, st.committed))
        return entries[0].log_id

    def leader_self_flushed(self: Engine) -> None:
        """This node's own log became durable further: it counts toward the quorum."""
        leader = self.leader
        assert leader is not None
        flushed = self.state.io.flushed_log_id
        if flushed is not None:
            leader.progress.update(self.state.id, flushed.index)
            self.leader_try_commit()

    def handle_replication_progress(
        self: Engine, target: int, session: Vote, matching: LogId | None, sent_at: float
    ) -> None:
        """A follower acknowledged a request sent at ``sent_at`` by leader ``session``; its
        log matches ours up to ``matching`` (``None``: only an ack, e.g. a conflict)."""
        leader = self.leader
        if leader is None or session != leader.vote:
            return
        leader.acks += 1
        if target in leader.ack_at and sent_at > leader.ack_at[target]:
            leader.ack_at[target] = sent_at
        if matching is not None:
            leader.progress.update(target, matching.index)
            self.leader_try_commit()
            if self.leader is None:
                return
            if leader.transfer_to == target:
                self.leader_try_transfer()
        if leader.reads:
            self.leader_check_reads()

    def handle_higher_vote(self: Engine, target: int, session: Vote, vote: Vote) -> None:
        """A replication target rejected leader ``session`` because it holds the greater
        ``vote``.

        A voter's greater vote, or any committed one (a newer leader exists), ends this
        leadership: adopt it and follow. A non-voter's *uncommitted* greater vote (its own
        campaign, typically a removed voter that missed its removal and is being added back
        as a learner, or a grant it gave) cannot have elected anyone here, so it does not
        depose this leader: the leader re-elects itself in a term above that vote instead,
        telling its followers it hands over to itself (``transfer_from``) so they grant at
        once, and the learner then accepts its entries. See ``docs/design/joint-consensus.md``,
        "Removed voters".
        """
        leader = self.leader
        if leader is None or session != leader.vote:
            return
        st = self.state
        if not vote.is_gt(st.vote):
            return
        if (
            not vote.committed
            and vote.term < MAX_TERM
            and leader.transfer_to is None  # handing over: it steps down anyway
            and st.is_voter()
            and not self.is_member_voter(target)
        ):
            self.elect(self.now, transfer_from=leader.vote, above_term=vote.term)
            return
        self.update_vote(vote)
        self.become_following(self.now)

    def is_member_voter(self: Engine, node_id: int) -> bool:
        """Whether ``node_id`` is a voter of this node's effective or committed membership
        (either config of a joint one)."""
        ms = self.state.membership
        return ms.effective.membership.is_voter(node_id) or ms.committed.membership.is_voter(node_id)

    def leader_try_commit(self: Engine) -> None:
        """Advance ``committed`` to the quorum-held index, if that includes our blank entry."""
        leader = self.leader
        if leader is None or leader.noop_log_id is None:
            return
        st = self.state
        ci = leader.progress.committed()
        before = st.committed_index()
        if ci <= before:
            return
        noop_index = leader.noop_log_id.index
        if ci < noop_index and not (
            self.injected_faults and EngineFault.COMMIT_PREVIOUS_TERM in self.injected_faults
        ):
            return
        membership_before = st.membership.committed
        # A quorum of followers may hold entries this leader has not flushed yet: apply them
        # only once they are durable here too.
        committed = self.commit_to(ci, when=self.io_covering(ci))
        if committed is not None:
            self.output.append(Replicate(st.last_log_id(), committed))
            # Membership follow-ups are due when a membership committed, or at this term's
            # first commit (an inherited joint config is finished then).
            if st.membership.committed is not membership_before or before < noop_index:
                self.leader_after_commit()

    def leader_heartbeat(self: Engine, now: float) -> None:
        """Send a heartbeat round now."""
        leader = self.leader
        if leader is None:
            return
        leader.last_heartbeat = now
        self.output.append(Heartbeat())

    def handle_read(self: Engine, tx: Any, policy: ReadPolicy, now: float) -> None:
        """Start a linearizable read; answer ``tx`` with the read log id (the caller waits
        until it is applied) or an error.

        - ``READ_INDEX``: read_log_id = max(blank entry of this term, committed), confirmed
          by a quorum ack of a heartbeat sent after this call.
        - ``LEASE_READ``: answered at once while a quorum acked within the lease.
        """
        self.now = now
        leader = self.leader
        if leader is None:
            self.output.append(Respond(tx, self.forward_to_leader()))
            return
        st = self.state
        read_log_id = leader.noop_log_id
        if st.committed is not None and (read_log_id is None or st.committed > read_log_id):
            read_log_id = st.committed
        if policy is ReadPolicy.LEASE_READ:
            acked = leader.quorum_acked_at(now)
            lease = self.config.lease_ms()
            bug = bool(self.injected_faults) and EngineFault.EXPIRED_LEASE_READ in self.injected_faults
            if leader.lease_disabled and not bug:
                self.output.append(Respond(tx, QuorumNotEnough("no lease: this leader is handing over leadership")))
            elif bug or (acked >= 0 and now - acked < lease):
                self.output.append(Respond(tx, read_log_id))
            else:
                self.output.append(
                    Respond(tx, QuorumNotEnough(f"leader lease expired: last quorum ack {now - acked:.1f} ms ago"))
                )
            return
        leader.reads.append(PendingRead(tx, read_log_id, now))
        self.leader_heartbeat(now)
        self.leader_check_reads()

    def leader_check_reads(self: Engine) -> None:
        """Answer the ReadIndex reads a quorum has confirmed."""
        leader = self.leader
        assert leader is not None
        acked = leader.quorum_acked_at(self.now)
        keep = []
        for r in leader.reads:
            if acked >= r.since:
                self.output.append(Respond(r.tx, r.read_log_id))
            else:
                keep.append(r)
        leader.reads = keep

    def handle_applied(self: Engine, applied: LogId | None) -> None:
        """The state machine applied every entry up to ``applied``."""
        st = self.state
        if applied is not None and (st.applied is None or applied > st.applied):
            st.applied = applied
            pending = self.snapshot_unreported
            if pending is not None and pending <= applied:
                self.snapshot_unreported = None
                self.adopt_snapshot(pending)
            if self.snapshot_every is not None:
                self.maybe_build_snapshot()
