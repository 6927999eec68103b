"""Membership changes (thesis 4.3, joint consensus).

- ``change_membership(voters)`` appends the joint config ``[C_old, C_new]``; once it commits,
  the leader appends ``[C_new]`` by itself (``after_commit``), also when it inherited a
  committed joint config from a previous leader. A membership takes effect when appended.
- ``add_learner`` appends the current configs with one more node.
- ``remove_learners`` appends the current configs without some learners (no joint phase: the
  voters do not change). The leader keeps replicating to them until that entry commits (so
  that they hold it), then drops them (``ReplicationHandler.targets``).
- One change at a time: a change is refused with ``InProgress`` while an appended membership
  is not committed. On a leader elected less than ``election_timeout_max`` ago, a change it
  inherited (the previous leader's, ``initialize``'s first membership) commits with its blank
  entry: the error's ``wait_ms`` says so, and the ``Raft`` calls wait for that commit and ask
  again rather than fail.
- A change whose new voters have no majority of caught-up nodes (this leader, and nodes whose
  replication is within ``Config.replication_lag_threshold`` entries of its log and which
  answered within ``Config.election_timeout_max``) is refused with ``LearnerIsLagging``
  unless the caller allows it: that joint config could not commit. A leader elected less
  than ``election_timeout_max`` ago names in the error the nodes it has not heard from yet
  (``LearnerIsLagging.unheard``) when they would make the majority: ``Raft.change_membership``
  waits for their first answers and asks again, rather than failing a change to followers
  that are up to date but had no round trip with this leader yet.
- A leader that is not a voter of a committed uniform config steps down and hands leadership
  to the most up-to-date voter (``TransferHandler.hand_over_as_removed``).

See ``docs/design/joint-consensus.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...errors import EmptyMembership, InProgress, LearnerIsLagging, LearnerNotFound, MembershipTooLarge, NotALearner
from ...types import MAX_MEMBERSHIP_NODES, BasicNode, Entry, LogId, Membership, NodeId
from ..command import RespondOnApply
from .base import LeadingHandler


class MembershipHandler(LeadingHandler):
    """Membership changes, for a leader that takes writes (``Engine.writable_leader``)."""

    __slots__ = ()

    def _new_leader_wait_ms(self) -> float:
        """How many ms this leader is still new: ``election_timeout_max`` after its election
        (``Leader.elected_at``), the time check-quorum gives it to hear from a quorum; ``<= 0``
        once that passed."""
        return self.leader.elected_at + self.eng.config.election_timeout_max - self.eng.now

    def _require_no_change_in_progress(self) -> None:
        """Raise ``InProgress`` while an appended membership is not committed, or the
        committed one is joint (the leader is about to finish it). On a leader still new
        (``_new_leader_wait_ms``), a change it inherited (an entry of an earlier term: the
        previous leader's, or the first membership of ``initialize``), or a joint config of
        an earlier term being finished, commits with this leader's first entries without
        anyone asking: the error's ``wait_ms`` says how long this leader is still new, and
        ``Raft.change_membership`` (``add_learner``, ``remove_learners``) waits for it to
        commit and asks again. ``wait_ms`` is 0 for a change this leader appended itself
        (another caller's, refused), its joint config committed or not."""
        ms = self.state.membership
        if ms.uncommitted:
            pending = ms.uncommitted[-1].log_id
        elif ms.committed.membership.is_joint():
            # Committed joint config: the leader is about to finish it.
            pending = ms.committed.log_id
        else:
            return
        assert pending is not None  # a membership appended to the log has a log id
        wait_ms = self._new_leader_wait_ms()
        term = self.leader.vote.term
        # Inherited: the pending entry, or the committed joint config this leader finishes,
        # is of an earlier term. A joint config this leader appended itself (a caller's
        # change, its final config on the way) is not, whatever the leader's age.
        joint = ms.committed.membership.is_joint()
        inherited_joint = joint and ms.committed.log_id is not None and ms.committed.log_id.term < term
        settling = pending.term < term or inherited_joint
        raise InProgress(pending, wait_ms=wait_ms if settling and wait_ms > 0 else 0.0)

    def append_membership(self, m: Membership) -> LogId:
        """Append ``m`` as a new entry of this leader's term and replicate it."""
        st = self.state
        eng = self.eng
        log_id = LogId(self.leader.vote.term, st.last_index() + 1)
        eng.log_handler().append([Entry(log_id, m)])
        eng.replication_handler(self.leader).replicate()
        return log_id

    def _require_caught_up(self, new: frozenset[NodeId]) -> None:
        """Raise ``LearnerIsLagging`` unless a majority of ``new`` is caught up: this leader,
        and each node whose matched index is known and within
        ``Config.replication_lag_threshold`` entries of this leader's last log index, and
        which answered a request sent within the last ``Config.election_timeout_max`` ms. A
        node that went down keeps its matched index: without the second test, a change
        counting on it was appended, could not commit, and the leader, hearing from no
        quorum of the new voters, stepped down; the cluster took no writes until it came
        back.

        A leader elected less than ``election_timeout_max`` ago may not have heard from a
        live, up-to-date node yet (its first request is a round trip away). When the nodes
        whose matched index it does not know yet would make the majority, the error names
        them in ``unheard`` and says in ``wait_ms`` how long this leader is still new: a
        refusal that may be premature, which ``Raft.change_membership`` waits out (until
        one of them answers, or ``wait_ms`` passed) and asks again. After that window an
        unknown node is one that answered nothing in an election timeout (down or cut off:
        the silence test above), and the refusal stands; the bound is the one check-quorum
        gives a new leader to hear from a quorum (``Leader.elected_at``)."""
        leader = self.leader
        last = self.state.last_index()
        cfg = self.eng.config
        threshold = cfg.replication_lag_threshold
        since = self.eng.now - cfg.election_timeout_max
        wait_ms = self._new_leader_wait_ms()  # > 0: this leader is still new
        lagging: list[NodeId] = []
        unheard: list[NodeId] = []
        for nid in sorted(new):
            if nid == leader.node_id:
                continue
            p = leader.replication.get(nid)
            # matched -1: no answer from it yet; acked_at before ``since``: silent lately.
            if p is None or p.matched < 0 or last - p.matched > threshold or p.acked_at < since:
                lagging.append(nid)
                if p is not None and p.matched < 0 and wait_ms > 0:
                    unheard.append(nid)
        caught_up = len(new) - len(lagging)
        if 2 * caught_up <= len(new):
            if 2 * (caught_up + len(unheard)) > len(new):
                raise LearnerIsLagging(lagging, threshold, unheard, wait_ms)
            raise LearnerIsLagging(lagging, threshold)

    def change_membership(self, voters: Iterable[NodeId], retain: bool, tx: Any, allow_lagging: bool = False) -> None:
        """Change the voters to exactly ``voters`` by joint consensus; see
        ``Engine.change_membership``."""
        self._require_no_change_in_progress()
        new = frozenset(voters)
        if not new:
            raise EmptyMembership()
        eff = self.state.membership.effective
        cur = eff.membership
        for nid in sorted(new):
            if nid not in cur.nodes:
                raise LearnerNotFound(nid)
        if new == cur.configs[0]:  # uniform: no change is in progress
            assert eff.log_id is not None
            self.output.append(RespondOnApply(tx, eff.log_id))
            return
        if not allow_lagging:
            self._require_caught_up(new)
        self.leader.change_tx = tx
        self.leader.change_retain = retain
        self.append_membership(Membership.new([set(cur.configs[0]), set(new)], cur.nodes))

    def add_learner(self, node_id: NodeId, node: BasicNode, tx: Any) -> LogId:
        """Add ``node_id`` as a learner; see ``Engine.add_learner``."""
        eff = self.state.membership.effective
        cur = eff.membership
        if cur.nodes.get(node_id) == node:
            assert eff.log_id is not None
            self.output.append(RespondOnApply(tx, eff.log_id))
            return eff.log_id
        self._require_no_change_in_progress()
        # A membership holds at most MAX_MEMBERSHIP_NODES nodes: every decoder of one (a
        # peer's, a store's) refuses more. Only add_learner grows a membership.
        if node_id not in cur.nodes and len(cur.nodes) >= MAX_MEMBERSHIP_NODES:
            raise MembershipTooLarge(node_id, MAX_MEMBERSHIP_NODES)
        nodes = dict(cur.nodes)
        nodes[node_id] = node
        log_id = self.append_membership(Membership.new([set(c) for c in cur.configs], nodes))
        self.output.append(RespondOnApply(tx, log_id))
        return log_id

    def remove_learners(self, ids: Iterable[NodeId], tx: Any) -> LogId:
        """Remove the learners ``ids``; see ``Engine.remove_learners``."""
        eff = self.state.membership.effective
        cur = eff.membership
        gone = frozenset(ids)
        for nid in sorted(gone):
            if nid not in cur.nodes:
                raise LearnerNotFound(nid, f"node {nid} is not a member of the cluster: there is no learner {nid} "
                                           f"to remove (the members are {sorted(cur.nodes)})")
            if cur.is_voter(nid):
                raise NotALearner(nid)
        if not gone:  # nothing to remove: the current membership, as a no-op change answers
            assert eff.log_id is not None
            self.output.append(RespondOnApply(tx, eff.log_id))
            return eff.log_id
        self._require_no_change_in_progress()
        nodes = {nid: n for nid, n in cur.nodes.items() if nid not in gone}
        log_id = self.append_membership(Membership.new([set(c) for c in cur.configs], nodes))
        self.output.append(RespondOnApply(tx, log_id))
        return log_id

    def after_commit(self) -> None:
        """Something committed on the leader: finish a committed joint config, and step
        down if a committed uniform config no longer has this node as a voter."""
        leader = self.leader
        if self.eng.leader is not leader:
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
                # The joint config committed: the change takes effect whatever becomes of
                # the final entry (a next leader appends it), which the caller is told.
                self.output.append(RespondOnApply(leader.change_tx, log_id, ms.committed.log_id))
                leader.change_tx = None
            return
        if not cur.is_voter(st.id):
            self.eng.transfer_handler().hand_over_as_removed(leader)
