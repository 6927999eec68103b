"""The leader's replication: who it replicates to, what each target acknowledged, and commit.

Commit rule (thesis 3.6.2, Figure 3.7): the commit candidate is the greatest index held by a
quorum of every config (``Leader.progress``); it commits only once it reaches this leader's
own blank entry, so an entry of a previous term is never committed by counting replicas, only
together with one of the current term.

Today a target's progress is only its matching index, and ``Replicate`` tells every stream
the log's end and the commit; the runtime's streams decide what to send. Per-target progress
records and per-target ``Replicate``/``SendSnapshot`` commands belong in this handler.
"""

from __future__ import annotations

from ...types import BasicNode, LogId, NodeId
from ..command import Replicate, StartReplication
from ..faults import EngineFault
from . import LeadingHandler


class ReplicationHandler(LeadingHandler):
    """Replication targets, follower acknowledgements and the commit, for a leader."""

    __slots__ = ()

    def targets(self) -> dict[NodeId, BasicNode]:
        """Every node but this one in the effective membership (voters and learners), and
        the nodes the committed membership still has: a removed node keeps receiving the log
        until its removal commits, so it learns it is out and does not campaign."""
        st = self.state
        out = dict(st.membership.committed.membership.nodes)
        out.update(st.effective_membership().nodes)
        out.pop(st.id, None)
        return dict(sorted(out.items()))

    def refresh(self) -> None:
        """The membership or the targets changed: update progress tracking and the set of
        replication streams."""
        targets = self.targets()
        m = self.state.effective_membership()
        others = frozenset(targets) - m.nodes.keys()
        self.leader.set_membership(m, self.eng.now, others)
        self.output.append(StartReplication(self.leader.vote, targets))

    def replicate(self) -> None:
        """The log grew or the commit moved: tell the streams (``Replicate``)."""
        st = self.state
        self.output.append(Replicate(st.last_log_id(), st.committed))

    def update_self_flushed(self) -> None:
        """This node's own log became durable further: it counts toward the quorum."""
        flushed = self.state.io.flushed_log_id
        if flushed is not None:
            self.leader.progress.update(self.state.id, flushed.index)
            self.try_commit()

    def handle_progress(self, target: NodeId, matching: LogId | None, sent_at: float) -> None:
        """``target`` acknowledged a request of this leader sent at ``sent_at``; its log
        matches ours up to ``matching`` (``None``: only an ack, e.g. a conflict)."""
        leader = self.leader
        eng = self.eng
        leader.acks += 1
        if target in leader.ack_at and sent_at > leader.ack_at[target]:
            leader.ack_at[target] = sent_at
        if matching is not None:
            leader.progress.update(target, matching.index)
            self.try_commit()
            if eng.leader is not leader:
                return
            if leader.transfer_to == target:
                eng.transfer_handler().maybe_send(leader)
        if leader.reads:
            eng.leader_handler(leader).check_reads()

    def try_commit(self) -> None:
        """Advance ``committed`` to the quorum-held index, if that includes our blank entry."""
        leader = self.leader
        if leader.noop_log_id is None or self.eng.leader is not leader:
            return
        st = self.state
        ci = leader.progress.committed()
        before = st.committed_index()
        if ci <= before:
            return
        noop_index = leader.noop_log_id.index
        if ci < noop_index:
            faults = self.eng.injected_faults
            if not (faults and EngineFault.COMMIT_PREVIOUS_TERM in faults):
                return
        membership_before = st.membership.committed
        log = self.eng.log_handler()
        # A quorum of followers may hold entries this leader has not flushed yet: apply them
        # only once they are durable here too.
        committed = log.commit_to(ci, when=log.io_covering(ci))
        if committed is not None:
            self.output.append(Replicate(st.last_log_id(), committed))
            # Membership follow-ups are due when a membership committed, or at this term's
            # first commit (an inherited joint config is finished then).
            if st.membership.committed is not membership_before or before < noop_index:
                self.eng.membership_handler(leader).after_commit()

