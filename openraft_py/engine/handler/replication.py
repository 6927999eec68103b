"""The leader's replication: who it replicates to, what each target is sent next, what
each acknowledged, and commit.

Per target, a ``ProgressEntry`` (``engine/progress.py``) decides the next request: from
``next_index``, up to ``max_payload_entries`` entries each, up to ``max_inflight_requests``
in flight while pipelining and one while probing; a ``SendSnapshot`` instead when the entries
it needs are purged. ``send`` plans them (``Engine.take_commands`` calls it once the batch of
events is handled, so one request carries every entry appended meanwhile); ``handle_result``
feeds back what the runtime reports:

    result           current generation                         any generation of the entry
    ------           ------------------                         ---------------------------
    Matched          probing ends (pipelining)                  slot freed; matched; ack
    Conflict         new gen, next = max(hint, matched + 1)     slot freed; ack
                     (prev_log_id at or below matched: the
                     follower lost entries, matched = -1)
    Unreachable      new gen from matched + 1 (or the same      slot freed; refused by
                     start), back off a heartbeat interval      the network: a transfer to
                                                                the target is given up
    EntriesPurged    new gen from the same start (a snapshot)   slot freed
    SnapshotSent     new gen after the snapshot, probe at once  slot freed; matched; ack
                     (no snapshot yet: back off)
    Rejected         back off; the greater vote may depose us   slot freed

A heartbeat round that finds requests in flight to a target that answered none sent in the
last half interval (a probe carrying a large entry that outlasts the replication deadline,
resent alone; a batch of large entries sent as parts, one round trip each) sends a
``Heartbeat`` beside the window, after the target's matched entry, ahead of what is in flight;
so does one that finds the target backing off after such a request failed, if it answered a
request sent within ``election_timeout_max`` (not one that is down). Its answer is an ack
(``handle_progress``), never a window result.

Commit rule (thesis 3.6.2, Figure 3.7): the commit candidate is the greatest index held by a
quorum of every config (``Leader.progress``); it commits only once it reaches this leader's
own blank entry, so an entry of a previous term is never committed by counting replicas, only
together with one of the current term. A commit sends nothing by itself: followers learn it
from the next request (they need it only to apply; the leader answers its clients itself).
"""

from __future__ import annotations

from ...types import BasicNode, LogId, NodeId, _log_id_index
from ..command import Heartbeat, Replicate, SendSnapshot, StartReplication
from ..faults import EngineFault
from ..progress import (
    Conflict,
    EntriesPurged,
    Matched,
    ProgressEntry,
    Rejected,
    ReplicationResult,
    SnapshotSent,
    Unreachable,
)
from .base import LeadingHandler


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
        replication channels. A remaining target keeps its ``ProgressEntry``; a new one
        starts optimistic, at this leader's blank entry if the log ends there (the first
        request carries it), else after the last entry, and probes at once."""
        leader = self.leader
        st = self.state
        targets = self.targets()
        m = st.effective_membership()
        others = frozenset(targets) - m.nodes.keys()
        leader.set_membership(m, self.eng.now, others)
        start = st.last_index() + 1
        noop = leader.noop_log_id
        if noop is not None and noop.index < start:
            start = noop.index
        old = leader.replication
        entries: dict[NodeId, ProgressEntry] = {}
        for target in targets:
            p = old.get(target)
            entries[target] = p if p is not None else ProgressEntry(start, leader.new_gen())
        leader.replication = entries
        self.output.append(StartReplication(leader.vote, targets))
        leader.send_due = True

    def replicate(self) -> None:
        """The log grew: every target may have entries to send."""
        self.leader.send_due = True

    def heartbeat(self, now: float) -> None:
        """Every target is sent a request at the next ``send``, even an empty one (unless
        one is waiting for a free slot or a back-off: it goes out then). Back-offs that ended
        by ``now`` end here too (ticks may be off: ``Config.enable_tick``)."""
        leader = self.leader
        for p in leader.replication.values():
            p.heartbeat_due = True
        self.expire_backoffs(now)
        leader.send_due = True

    def send(self) -> None:
        """Plan the requests each target is due: ``Replicate`` while its window has room and
        it lacks entries (or a heartbeat is due), ``SendSnapshot`` when the entries it needs
        are purged. A due heartbeat to a target with requests in flight (not a snapshot
        transfer) goes beside the window (``Heartbeat``), unless the target answered a
        request sent within the last half heartbeat interval (then the next request in the
        window, or the next free slot, is the heartbeat, as before); so does one to a target
        backing off that answered a request sent within ``election_timeout_max``. Called by
        ``Engine.take_commands``."""
        leader = self.leader
        leader.send_due = False
        st = self.state
        last = st.last_index()
        purged = st.log_ids.purged()
        purged_index = -1 if purged is None else purged[1]
        committed = st.committed
        cfg = self.eng.config
        max_inflight = cfg.max_inflight_requests
        max_entries = cfg.max_payload_entries
        now = self.eng.now
        stale = cfg.heartbeat_interval / 2
        out = self.output
        for target, p in leader.replication.items():
            if p.snapshotting:
                continue
            if p.backoff_until is not None:
                if p.heartbeat_due and now - p.acked_at <= cfg.election_timeout_max:
                    # A heartbeat round while the target backs off after a request that got
                    # no answer, and it answered one sent within an election timeout (the
                    # heartbeats beside a request carrying entries that outlasts the
                    # deadline at each resend): it hears from us at every round. Skipped,
                    # the round before the failure and the one after the probe's resend were
                    # up to three intervals apart, election_timeout_min by default. One a
                    # round: the round (or the back-off's end) sets heartbeat_due again.
                    p.heartbeat_due = False
                    out.append(Heartbeat(target, st.log_id_at(p.matched), committed))
                continue
            if p.heartbeat_due and p.inflight > 0 and now - p.acked_at > stale:
                # Requests are in flight and the target answered nothing sent in the last
                # half interval: the heartbeat goes beside the window (``Heartbeat``), ahead
                # of them. A request in the window would take its turn behind them: a batch
                # over ``max_payload_bytes`` goes as parts, one round trip each, and a
                # transport with one stream carries it behind their bytes. Under a flood of
                # large values, only those requests' answers reached the leader, each more
                # than an election timeout after it was sent: check-quorum deposed it.
                p.heartbeat_due = False
                out.append(Heartbeat(target, st.log_id_at(p.matched), committed))
            limit = 1 if p.probing else max_inflight
            while p.inflight < limit:
                # Invariant: start <= last + 1 (hints, matches and snapshots come from this log).
                start = p.next_index
                if start > last:
                    if not p.heartbeat_due:
                        break
                    end = start
                elif start <= purged_index:
                    # The entries this target needs are gone: send the snapshot instead.
                    purged_id = st.purged_log_id()
                    assert purged_id is not None  # start <= purged_index
                    p.gen = leader.new_gen()
                    p.snapshotting = True
                    p.inflight += 1
                    out.append(SendSnapshot(target, p.gen, purged_id))
                    break
                else:
                    end = min(last + 1, start + max_entries)
                p.next_index = end
                p.heartbeat_due = False
                p.inflight += 1
                out.append(Replicate(target, p.gen, st.log_id_at(start - 1), start, end, committed))

    def expire_backoffs(self, now: float) -> None:
        """The clock reached ``now``: targets whose back-off ended are probed again."""
        leader = self.leader
        for p in leader.replication.values():
            until = p.backoff_until
            if until is not None and now >= until:
                p.backoff_until = None
                p.heartbeat_due = True
                leader.send_due = True

    def handle_result(self, r: ReplicationResult) -> None:
        """The runtime's report on a request this leader planned (the table in the module
        docstring). Results of an older generation free their slot and report what they
        learned, but change no plan."""
        leader = self.leader
        p = leader.replication.get(r.target)
        if p is not None and r.gen >= p.first_gen:
            p.inflight -= 1
            leader.send_due = True
        else:
            p = None  # a removed target, or its previous entry: nothing is planned for it
        # The entry whose plan this result may change (it answers the current generation).
        cur = p if p is not None and r.gen == p.gen else None
        match r:
            case Matched(matching=matching, sent_at=sent_at):
                if cur is not None:
                    cur.probing = False
                self.handle_progress(r.target, matching, sent_at)
            case Conflict(hint=hint, sent_at=sent_at, start=start):
                if cur is not None:
                    if 0 < start <= cur.matched + 1:
                        # The follower does not hold the entry at ``start - 1``, which it
                        # acknowledged matching: its log lost entries (its storage was lost,
                        # or restored from an older copy, while it was down). Nothing is
                        # known of it any more; resend from its hint. (From ``matched + 1``,
                        # every probe conflicted again at once, for good: a busy loop, and
                        # the follower never caught up.)
                        cur.matched = -1
                        if r.target in leader.progress.as_dict():
                            leader.progress.reset(r.target, -1)  # the commit never moves back
                    cur.restart(leader.new_gen(), max(hint, cur.matched + 1))
                self.handle_progress(r.target, None, sent_at)
            case Unreachable(start=start, refused=refused):
                if cur is not None:
                    # Resend from the first index not known to match.
                    cur.restart(leader.new_gen(), cur.matched + 1 if cur.matched >= 0 else start)
                    self.back_off(cur)
                if refused is not None and leader.transfer_to == r.target:
                    self.eng.transfer_handler().target_unreachable(leader)
            case EntriesPurged(start=start):
                if cur is not None:
                    cur.restart(leader.new_gen(), start)
            case SnapshotSent(matching=matching, sent_at=sent_at):
                if cur is not None:
                    cur.snapshotting = False
                    if matching is None:
                        self.back_off(cur)
                    else:
                        cur.restart(leader.new_gen(), matching.index + 1)
                        cur.heartbeat_due = True
                if matching is not None:
                    self.handle_progress(r.target, matching, sent_at)
            case Rejected(vote=vote):
                if cur is not None:
                    cur.snapshotting = False
                    cur.restart(leader.new_gen(), cur.matched + 1 if cur.matched >= 0 else cur.next_index)
                    self.back_off(cur)
                self.eng.leader_handler(leader).higher_vote(r.target, vote)
            case _:
                raise TypeError(f"unknown replication result {r!r}")

    def back_off(self, p: ProgressEntry) -> None:
        """Send ``p``'s target nothing for one heartbeat interval."""
        if p.backoff_until is None:
            p.backoff_until = self.eng.now + self.eng.config.heartbeat_interval

    def update_self_flushed(self) -> None:
        """This node's own log became durable further: it counts toward the quorum."""
        flushed = self.state.io.flushed_log_id
        if flushed is not None:
            self.leader.progress.update(self.state.id, _log_id_index(flushed))
            self.try_commit()

    def handle_progress(self, target: NodeId, matching: LogId | None, sent_at: float) -> None:
        """``target`` acknowledged a request of this leader sent at ``sent_at``; its log
        matches ours up to ``matching`` (``None``: only an ack, e.g. a conflict)."""
        leader = self.leader
        eng = self.eng
        leader.acks += 1
        if target in leader.ack_at and sent_at > leader.ack_at[target]:
            leader.ack_at[target] = sent_at
        if target in leader.heard_at:
            # When the answer came (check-quorum): this pass's clock, never before the
            # request left (the clock of a pass is read once, at its start).
            heard = eng.now if eng.now > sent_at else sent_at
            if heard > leader.heard_at[target]:
                leader.heard_at[target] = heard
        p = leader.replication.get(target)
        if p is not None and sent_at > p.acked_at:
            p.acked_at = sent_at
        if matching is not None:
            index = _log_id_index(matching)
            if p is not None and index > p.matched:
                p.matched = index
            leader.progress.update(target, index)
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
        # A quorum of followers may hold entries this leader has not flushed yet: they are
        # committed all the same, and applied at once (they are readable here; restore copes
        # with a state machine ahead of a log that lost its unflushed tail).
        log = self.eng.log_handler()
        committed = log.commit_to(ci)
        if committed is not None:
            if leader.reads:
                # Reads confirmed before the blank entry committed were waiting for this.
                self.eng.leader_handler(leader).check_reads()
            # Membership follow-ups are due when a membership committed, or at this term's
            # first commit (an inherited joint config is finished then).
            if st.membership.committed is not membership_before or before < noop_index:
                self.eng.membership_handler(leader).after_commit()

