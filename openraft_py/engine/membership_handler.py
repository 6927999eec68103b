"""Membership changes (thesis 4.3, joint consensus) and leader transfer (thesis 3.10).

- ``change_membership(voters)`` appends the joint config ``[C_old, C_new]``; once it commits,
  the leader appends ``[C_new]`` by itself (``leader_finish_joint``), also when it inherited a
  committed joint config from a previous leader. A membership takes effect when appended.
- ``add_learner`` appends the current configs with one more node.
- One change at a time: a change is refused with ``InProgress`` while an appended membership
  is not committed.
- A leader that is not a voter of a committed uniform config steps down and hands leadership
  to the most up-to-date voter (``TransferLeader``).
- Leader transfer: the leader stops taking writes, waits until the target holds its whole
  log, then tells every voter; they stop treating it as alive (so they grant votes) and the
  target starts an election at once.

See ``docs/design/joint-consensus.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..errors import EmptyMembership, InProgress, LearnerNotFound
from ..types import BasicNode, Entry, LogId, Membership, NodeId, TransferLeaderRequest
from .command import AbandonWrites, Replicate, RespondOnApply, SendTransferLeader

if TYPE_CHECKING:
    from .engine import Engine


class MembershipHandler:
    """Membership and leader-transfer handlers, mixed into ``Engine``."""

    def _require_leader(self: Engine) -> None:
        leader = self.leader
        if leader is None or leader.transfer_to is not None:
            raise self.forward_to_leader()

    def _require_no_change_in_progress(self: Engine) -> None:
        ms = self.state.membership
        if ms.uncommitted:
            raise InProgress(ms.uncommitted[-1].log_id)
        if ms.committed.membership.is_joint():
            # Committed joint config: the leader is about to finish it.
            raise InProgress(ms.committed.log_id)

    def append_membership(self: Engine, m: Membership) -> LogId:
        """Append ``m`` as a new entry of this leader's term and replicate it."""
        leader = self.leader
        assert leader is not None
        st = self.state
        log_id = LogId(leader.vote.term, st.last_index() + 1)
        self.append_local([Entry(log_id, m)])
        self.output.append(Replicate(log_id, st.committed))
        return log_id

    def change_membership(self: Engine, voters: Iterable[NodeId], retain: bool, tx: Any) -> None:
        """Change the voters to exactly ``voters`` by joint consensus; ``tx`` is answered with
        the ``ClientWriteResponse`` of the final uniform config once it is applied here.

        ``retain``: removed voters stay as learners (else they leave the cluster). Raises
        ``ForwardToLeader``, ``InProgress``, ``EmptyMembership`` or ``LearnerNotFound``.
        A request that changes nothing is answered with the current membership at once.
        """
        self._require_leader()
        self._require_no_change_in_progress()
        new = frozenset(voters)
        if not new:
            raise EmptyMembership()
        st = self.state
        eff = st.membership.effective
        cur = eff.membership
        for nid in sorted(new):
            if nid not in cur.nodes:
                raise LearnerNotFound(nid)
        leader = self.leader
        assert leader is not None
        if new == cur.configs[0]:  # uniform: no change is in progress
            assert eff.log_id is not None
            self.output.append(RespondOnApply(tx, eff.log_id))
            return
        leader.change_tx = tx
        leader.change_retain = retain
        self.append_membership(Membership.new([set(cur.configs[0]), set(new)], cur.nodes))

    def add_learner(self: Engine, node_id: NodeId, node: BasicNode, tx: Any) -> LogId:
        """Add ``node_id`` as a learner (it receives the log, does not vote); ``tx`` is
        answered with the ``ClientWriteResponse`` of its membership entry once applied. A node
        already in the membership with the same address is not re-added: ``tx`` gets the
        current membership entry. Returns that entry's log id."""
        self._require_leader()
        st = self.state
        eff = st.membership.effective
        cur = eff.membership
        if cur.nodes.get(node_id) == node:
            assert eff.log_id is not None
            self.output.append(RespondOnApply(tx, eff.log_id))
            return eff.log_id
        self._require_no_change_in_progress()
        nodes = dict(cur.nodes)
        nodes[node_id] = node
        log_id = self.append_membership(Membership.new([set(c) for c in cur.configs], nodes))
        self.output.append(RespondOnApply(tx, log_id))
        return log_id

    def leader_after_commit(self: Engine) -> None:
        """Something committed on the leader: finish a committed joint config, and step
        down if a committed uniform config no longer has this node as a voter."""
        leader = self.leader
        if leader is None:
            return
        st = self.state
        ms = st.membership
        if ms.uncommitted:
            return
        cur = ms.committed.membership
        if cur.is_joint():
            final = cur.configs[-1]
            nodes = dict(cur.nodes)
            if not leader.change_retain:
                removed = cur.voter_ids() - final
                for nid in removed:
                    nodes.pop(nid, None)
            log_id = self.append_membership(Membership.new([set(final)], nodes))
            if leader.change_tx is not None:
                self.output.append(RespondOnApply(leader.change_tx, log_id))
                leader.change_tx = None
            return
        if not cur.is_voter(st.id):
            self.hand_over_leadership()

    def hand_over_leadership(self: Engine) -> None:
        """This leader was removed from the voters: step down and ask the most up-to-date
        remaining voter to elect itself at once (no election timeout)."""
        leader = self.leader
        assert leader is not None
        st = self.state
        m = st.effective_membership()
        best: tuple[int, NodeId] | None = None
        progress = leader.progress.as_dict()
        for nid in sorted(m.voter_ids()):
            idx = progress.get(nid, -1)
            if best is None or idx > best[0]:
                best = (idx, nid)
        vote = leader.vote
        self.become_following(self.now)
        if best is not None:
            # Name what the target is known to hold: entries after it may not have reached
            # anyone (we stopped replicating), and the target only elects itself if it
            # holds the named log id.
            req = TransferLeaderRequest(vote, best[1], st.log_id_at(best[0]))
            self.output.append(SendTransferLeader(req, self.voter_targets()))
        if st.id not in m.nodes:
            # No longer replicated to: entries not committed yet never reach us as committed.
            self.output.append(AbandonWrites(st.committed_index()))

    # -- leader transfer -------------------------------------------------------------------

    def transfer_leader(self: Engine, to: NodeId, now: float) -> None:
        """Hand leadership to voter ``to``: stop taking writes, wait until ``to`` holds the
        whole log, then tell every voter. Gives up (and resumes writes) when no new leader
        appeared within two election timeouts. Raises ``ForwardToLeader`` on a non-leader and
        ``ValueError`` when ``to`` is not a voter."""
        self.now = now
        leader = self.leader
        if leader is None:
            raise self.forward_to_leader()
        st = self.state
        if to == st.id:
            return
        if not st.effective_membership().is_voter(to):
            raise ValueError(f"cannot transfer leadership to node {to}: it is not a voter")
        leader.transfer_to = to
        leader.transfer_sent = False
        leader.lease_disabled = True
        leader.transfer_deadline = now + 2 * self.config.election_timeout_max
        self.leader_heartbeat(now)
        self.leader_try_transfer()

    def leader_try_transfer(self: Engine) -> None:
        """Send the TransferLeader once the target holds this leader's whole log."""
        leader = self.leader
        if leader is None or leader.transfer_to is None or leader.transfer_sent:
            return
        st = self.state
        to = leader.transfer_to
        if leader.progress.as_dict().get(to, -1) < st.last_index():
            return
        leader.transfer_sent = True
        req = TransferLeaderRequest(leader.vote, to, st.last_log_id())
        self.output.append(SendTransferLeader(req, self.voter_targets()))

    def handle_transfer_leader(self: Engine, req: TransferLeaderRequest, now: float) -> None:
        """The leader ``req.from_leader`` hands over to ``req.to``. If that is our leader, we
        stop treating it as alive (we may grant votes at once); if we are ``req.to`` and hold
        its log, we start an election now."""
        self.now = now
        st = self.state
        if req.from_leader != st.vote or self.leader is not None:
            return
        self.leader_seen_at = -1e18
        self.transfer_from = req.from_leader
        if req.to == st.id and st.is_voter() and st.has_log_id(req.last_log_id):
            last = st.last_log_id()
            if req.last_log_id is None or (last is not None and last >= req.last_log_id):
                self.elect(now, transfer_from=req.from_leader)
