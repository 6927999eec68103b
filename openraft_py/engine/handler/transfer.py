"""Leader transfer (thesis 3.10), the whole protocol in one place.

Leader side, on the fields ``Leader.transfer_to`` / ``transfer_sent`` / ``transfer_deadline``
/ ``lease_disabled``::

    transfer_leader(to) ──> start: writes and membership changes refused (ForwardToLeader
        │                   naming ``to``), lease reads refused while it hands over,
        │                   a heartbeat round to learn where ``to`` is
        v
        │── target_unreachable: the network refused a request to ``to`` ──> writes again
        │   (before the notice)                                             (and lease reads)
        v
    maybe_send: once ``to`` matches our last log id and answered a request sent since the
        │       start ──> SendTransferLeader to every voter; lease reads off for the
        │       rest of the term (``lease_disabled``)
        │
        ├── a new leader appears: this one steps down on its greater vote
        └── expire (tick): no new leader after 2 election timeouts ──> writes again
                                                 (lease reads too, unless a notice went out)

A target that went down (crashed, cut off) less than ``election_timeout_max`` before the
transfer passes ``start``'s check; it never answers the start's heartbeat round, so it is
never sent the notice, and the first request to it the network refuses (``errors.
Unreachable``: connection refused, the node is gone) gives the transfer up, within about a
heartbeat interval: writes were refused, redirected to the dead node, for two election
timeouts. Only before the notice: a target told to take over may hold the notice unread (a
paused process) and act on it later, which the rules of ``notice_is_stale`` make safe only
for a transfer that lasts two election timeouts. A target that answers late (``Timeout``)
is waited for.

``start`` does nothing for this node itself, unless it is handing over: then
``ForwardToLeader`` naming the target, as a write gets. It refuses a target that is not a
voter or answered none of this leader's requests sent within ``election_timeout_max``
(``ValueError``), and any transfer while a
``change_membership`` of this leader is in progress, until its joint config commits
(``InProgress``): handed over mid-change, the new leader would finish the joint config
keeping the removed voters as learners, whatever the caller's ``retain``.

A leader removed from the voters by a committed config hands over at once
(``hand_over_as_removed``): it steps down and names the most up-to-date remaining voter.

Follower side, on ``Engine.transfer_from``: ``handle_transfer_leader`` takes the notice from
our leader: its messages no longer count as leader contact (``FollowingHandler.accept_leader``)
and we grant its successor at once (``VoteHandler.handle_vote_req`` sees
``req.transfer_from``); the target itself elects at once with ``transfer_from`` set. A new
vote forgets the notice (``VoteHandler.update_vote``), and so does a request of that leader
two ``election_timeout_max`` after we took it (``notice_expired``: the transfer has expired,
the leader takes writes again, and counts as alive again). A notice read too late to act on
(``notice_is_stale``: it may have waited through a silence of that leader of
``election_timeout_max`` or more, or the leader appended entries after sending it) is
ignored: the transfer may have expired.

The queries other handlers ask (``is_handing_over``, ``redirect_target``,
``announced_handover``) are functions of
the role data, here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import InProgress
from ...types import NodeId, TransferLeaderRequest, Vote
from ..command import AbandonWrites, SendTransferLeader
from .base import Handler

if TYPE_CHECKING:
    from ..engine import Engine
    from ..leader import Leader


def is_handing_over(leader: Leader) -> bool:
    """Whether ``leader`` is transferring leadership (it takes no writes meanwhile)."""
    return leader.transfer_to is not None


def redirect_target(leader: Leader) -> NodeId | None:
    """Where a leader sends leader-only requests while handing over: the target (``None``
    when not handing over)."""
    return leader.transfer_to


def announced_handover(eng: Engine, vote: Vote) -> bool:
    """Whether leader ``vote`` told this node it hands over: its messages then are no
    leader contact (stickiness does not hold its successor off)."""
    return eng.transfer_from is not None and eng.transfer_from == vote


class TransferHandler(Handler):
    """Leader transfer, on the leader that hands over and on the nodes told about it."""

    __slots__ = ()

    # -- leader side -----------------------------------------------------------------------------

    def start(self, leader: Leader, to: NodeId, now: float) -> None:
        """Hand leadership to voter ``to``; see ``Engine.transfer_leader``."""
        st = self.state
        if to == st.id:
            if is_handing_over(leader):
                # It is handing leadership over: naming itself did nothing, and the caller
                # was told this node leads while the target took over. Refused as a write
                # is, naming the target, where the caller can ask again.
                raise self.eng.forward_to_leader()
            return
        if not st.effective_membership().is_voter(to):
            raise ValueError(f"cannot transfer leadership to node {to}: it is not a voter")
        if leader.change_tx is not None or st.membership.effective.membership.is_joint():
            # Handed over mid-change, the change's caller got ForwardToLeader, and the new
            # leader finished the joint config keeping the removed voters as learners (it
            # cannot know the caller's ``retain``): a voter asked to leave stayed. A joint
            # config this leader inherited (no caller) is finished once it commits: the final
            # config appended after the notice left the target with a shorter log than the
            # leader's, so it lost its election or took the notice for a stale one.
            pending = st.membership.effective.log_id
            raise InProgress(
                pending,
                f"cannot transfer leadership to node {to} while a membership change is in progress "
                f"(entry {pending!r}); transfer once it has committed (the change_membership call that made it "
                "returns then; one this leader was elected with commits with its first entries)",
            )
        timeout = self.eng.config.election_timeout_max
        if now - max(leader.ack_at.get(to, -1.0), leader.elected_at) > timeout:
            # A target that is down: writes were refused (redirected to it) for two election
            # timeouts, and lease reads stayed off for the rest of the term, for nothing.
            raise ValueError(
                f"cannot transfer leadership to node {to}: it answered none of this leader's requests "
                f"sent in the last {timeout:g} ms (election_timeout_max): is it down or cut off?"
            )
        leader.transfer_to = to
        leader.transfer_sent = False
        # Lease reads are refused while it hands over (``is_handing_over``), and for the
        # rest of the term once a notice went out (``maybe_send``: ``lease_disabled``).
        leader.transfer_deadline = now + 2 * self.eng.config.election_timeout_max
        leader.transfer_started_at = now
        self.eng.leader_handler(leader).heartbeat(now)
        self.maybe_send(leader)

    def maybe_send(self, leader: Leader) -> None:
        """Send the TransferLeader once the target holds this leader's whole log and has
        answered a request sent since the transfer started (the start's heartbeat round:
        one round trip), so that a target that went down just before is never told to take
        over, and a refused request to it gives the transfer up (``target_unreachable``)."""
        to = leader.transfer_to
        if to is None or leader.transfer_sent:
            return
        st = self.state
        if leader.progress.as_dict().get(to, -1) < st.last_index():
            return
        if leader.ack_at.get(to, -1.0) < leader.transfer_started_at:
            return
        leader.transfer_sent = True
        # The voters told may grant the target (or any candidate) at once, whatever they
        # acknowledged: no lease for the rest of the term, whatever becomes of the transfer.
        leader.lease_disabled = True
        req = TransferLeaderRequest(leader.vote, to, st.last_log_id())
        self.output.append(SendTransferLeader(req, self.eng.vote_handler().voter_targets()))

    def expire(self, leader: Leader, now: float) -> None:
        """Give up a transfer whose deadline passed with no new leader: take writes again.
        Lease reads too, unless a notice went out this term (``lease_disabled``): followers
        told of the handover no longer count us as alive. A transfer whose notice never went
        out (the target never caught up, or answered nothing since the start) told no one,
        and its lease is what it was: lease reads stayed refused for the rest of the term
        (hours, for a stable leader) after a transfer nobody heard of."""
        if leader.transfer_to is not None and now > leader.transfer_deadline:
            leader.transfer_to = None

    def target_unreachable(self, leader: Leader) -> None:
        """The network said the transfer's target cannot be reached (a request to it was
        refused: ``Unreachable.refused``): unless it was sent the notice, give the transfer
        up at once and take writes again, as ``expire`` does two election timeouts after
        the start. A target that crashed or was cut off less than ``election_timeout_max``
        before the transfer passes ``start``'s check, and is never sent the notice
        (``maybe_send``): it would never take over, and writes stayed refused, redirected to
        it, until the deadline. A target that was sent the notice may hold it unread and
        act on it later (``notice_is_stale`` lets it within a transfer's two election
        timeouts): the deadline stands. A target that only answers late (``Timeout``) is
        waited for. Given up before the notice, the transfer told no follower: lease reads
        are served again (as after ``expire``), unless an earlier notice of this term went out."""
        if not leader.transfer_sent:
            leader.transfer_to = None

    def hand_over_as_removed(self, leader: Leader) -> None:
        """``leader`` was removed from the voters by a committed config: step down and ask the
        most up-to-date remaining voter to elect itself at once (no election timeout)."""
        st = self.state
        eng = self.eng
        m = st.effective_membership()
        best: tuple[int, NodeId] | None = None
        progress = leader.progress.as_dict()
        for nid in sorted(m.voter_ids()):
            idx = progress.get(nid, -1)
            if best is None or idx > best[0]:
                best = (idx, nid)
        vote = leader.vote
        eng.vote_handler().become_following(eng.now)
        if best is not None:
            # Name what the target is known to hold: entries after it may not have reached
            # anyone (we stopped replicating), and the target only elects itself if it
            # holds the named log id.
            req = TransferLeaderRequest(vote, best[1], st.log_id_at(best[0]))
            self.output.append(SendTransferLeader(req, eng.vote_handler().voter_targets()))
        if st.id not in m.nodes:
            # No longer replicated to: entries not committed yet never reach us as committed.
            self.output.append(AbandonWrites(st.committed_index()))

    # -- follower side ---------------------------------------------------------------------------

    def notice_is_stale(self, req: TransferLeaderRequest, now: float) -> bool:
        """Whether the notice ``req`` from our leader comes too late to act on: the transfer
        it announces may have expired (the leader gives up after two election timeouts and
        takes writes again), and a target that campaigned on it then deposed a leader that
        had resumed (a target paused, by SIGSTOP or a long event-loop stall, reads the
        notice when it wakes up). Stale when:

        - this node has heard nothing from that leader for ``election_timeout_max`` or
          more (``Engine.leader_heard_at``), or a request of that leader ended such a
          silence less than ``election_timeout_max`` ago (``Engine.silence_ended_at``): the
          notice may have waited all that time, and the requests of that leader it took
          since may be as old (a paused process reads what waited in its socket buffers
          first). The transfer expires after two such timeouts, so a shorter silence (a
          stall of the event loop past the election timeout) cannot have outlived it, and
          the notice is acted on. Not with elections off (``enable_tick``,
          ``enable_elect``): nothing expires then;
        - this node holds an entry the leader appended after sending the notice (its last
          log id is past ``req.last_log_id``): a leader handing over appends nothing, so it
          has taken writes again. Not for a leader that left the voters
          (``hand_over_as_removed``): it names what the target is known to hold, which may
          be less than the target holds.

        A fresh notice reaches a target that hears from its leader every heartbeat interval,
        so neither holds for it. The notice carries no time of its own (no wire change)."""
        eng = self.eng
        config = eng.config
        quiet = config.election_timeout_max
        if config.enable_tick and config.enable_elect and (
            now - eng.leader_heard_at >= quiet or now - eng.silence_ended_at < quiet
        ):
            return True
        st = self.state
        last = st.last_log_id()
        sent = req.last_log_id
        return (
            sent is not None
            and last is not None
            and last > sent
            and st.effective_membership().is_voter(req.from_leader.leader_id.node_id)
        )

    def notice_expired(self, now: float) -> bool:
        """Whether the transfer our leader announced (``Engine.transfer_from``) has expired by
        ``now``; if so, forget the notice, so that the leader's requests count as leader
        contact again (``FollowingHandler.accept_leader``) and leader stickiness holds.

        The leader gives up two ``election_timeout_max`` after it started the transfer
        (``expire``), which was before this node took the notice (``Engine.
        transfer_heard_at``): by two ``election_timeout_max`` after that, a leader still
        sending to us takes writes again. Without the notice forgotten, this node granted
        any candidate its vote (and its pre-vote) for the rest of the term, while it heard
        from a live leader every heartbeat interval: a node cut off for a while and back
        deposed it. The transfer's own target is not held off meanwhile: its vote request
        names the leader that handed over (``VoteHandler.handle_vote_req``). Not with ticks
        off (``Config.enable_tick``): the leader's transfer expires only on a tick."""
        eng = self.eng
        config = eng.config
        if not config.enable_tick or now - eng.transfer_heard_at < 2 * config.election_timeout_max:
            return False
        eng.transfer_from = None
        return True

    def handle_transfer_leader(self, req: TransferLeaderRequest, now: float) -> None:
        """The notice that leader ``req.from_leader`` hands over to ``req.to``; see
        ``Engine.handle_transfer_leader``."""
        st = self.state
        eng = self.eng
        if req.from_leader != st.vote or eng.leader is not None or self.notice_is_stale(req, now):
            return
        eng.leader_seen_at = -1e18
        eng.transfer_from = req.from_leader
        eng.transfer_heard_at = now
        if req.to == st.id and st.is_voter() and st.has_log_id(req.last_log_id):
            last = st.last_log_id()
            if req.last_log_id is None or (last is not None and last >= req.last_log_id):
                eng.vote_handler().elect(now, transfer_from=req.from_leader)
