"""The leader's own duties: client writes, heartbeats and check-quorum, linearizable reads,
and a replication target's greater vote.

- ``client_write`` appends and replicates; a leader handing over refuses writes before a
  handler is made (``Engine.writable_leader``).
- ``tick``: a heartbeat round every ``heartbeat_interval``, the end of replication
  back-offs; a leader that heard from no
  quorum for a whole election timeout steps down (check quorum, thesis 6.2).
- Reads (thesis 6.4): ``READ_INDEX`` waits for a quorum ack of a heartbeat sent after the
  read arrived; ``LEASE_READ`` answers at once while a quorum acked within the lease.
"""

from __future__ import annotations

from typing import Any

from ...errors import QuorumNotEnough
from ...types import Entry, EntryPayload, LogId, NodeId, ReadPolicy, Vote
from ...validation import MAX_TERM
from ..command import Respond
from ..faults import EngineFault
from ..leader import PendingRead
from .base import LeadingHandler
from .transfer import is_handing_over

LEASE_RETRY = "read with READ_INDEX (it waits for a quorum's answer), or retry the lease read after the next heartbeat"
"""What a lease read refused for want of a quorum acknowledgement tells its caller to do."""


class LeaderHandler(LeadingHandler):
    """Handlers of an established leader."""

    __slots__ = ()

    def client_write(self, payloads: list[EntryPayload]) -> LogId:
        """Append one entry per payload, in order, and replicate; return the first new log id
        (the others follow at consecutive indexes)."""
        st = self.state
        eng = self.eng
        term = self.leader.vote.term
        start = st.last_index() + 1
        entries = [Entry(LogId(term, start + i), p) for i, p in enumerate(payloads)]
        log = eng.log_handler()
        log.append(entries)
        rh = eng.replication_handler(self.leader)
        rh.replicate()
        return entries[0].log_id

    def tick(self, now: float) -> None:
        """The clock advanced to ``now``: heartbeat, answer confirmed reads, expire a stalled
        transfer, and step down without quorum contact."""
        c = self.eng.config
        leader = self.leader
        if c.enable_heartbeat and now - leader.last_heartbeat >= c.heartbeat_interval:
            self.heartbeat(now)
        else:
            self.eng.replication_handler(leader).expire_backoffs(now)
        if leader.reads:
            self.check_reads()
        if is_handing_over(leader):
            self.eng.transfer_handler().expire(leader, now)
        # Check quorum (thesis 6.2): a leader that heard from no quorum for a whole
        # election timeout steps down, so a minority leader stops taking writes. New voters
        # get an election timeout to answer as voters (``Leader.voters_changed_at``).
        # Counted when the answers came (``quorum_heard_at``), as etcd's CheckQuorum counts
        # recent activity: by the send time of the answered requests (``quorum_acked_at``,
        # what leases read), a leader whose requests carried megabytes of entries stepped
        # down while every follower answered it, each answer more than an election timeout
        # after its request left (64 concurrent 1 MB writes, 3 nodes, default timeouts).
        heard = max(leader.quorum_heard_at(now), leader.elected_at, leader.voters_changed_at)
        if now - heard > c.election_timeout_max:
            self.eng.vote_handler().become_following(now)

    def heartbeat(self, now: float) -> None:
        """Send a heartbeat round now: a request to every target (``Replicate``, planned by
        ``ReplicationHandler.send``)."""
        self.leader.last_heartbeat = now
        self.eng.replication_handler(self.leader).heartbeat(now)

    def read(self, tx: Any, policy: ReadPolicy, now: float) -> None:
        """Start a linearizable read; see ``Engine.handle_read``."""
        leader = self.leader
        st = self.state
        read_log_id = leader.noop_log_id
        if st.committed is not None and (read_log_id is None or st.committed > read_log_id):
            read_log_id = st.committed
        if policy is ReadPolicy.LEASE_READ:
            acked = leader.quorum_acked_at(now)
            lease = self.eng.config.lease_ms()
            faults = self.eng.injected_faults
            bug = bool(faults) and EngineFault.EXPIRED_LEASE_READ in faults
            handing_over = is_handing_over(leader)
            if (handing_over or leader.lease_disabled) and not bug:
                if handing_over:
                    why = "no lease: this leader is handing over leadership"
                else:
                    # (Not "handing over": the transfer was given up, writes are taken again.)
                    why = (
                        f"no lease for the rest of term {leader.vote.term}: a leadership transfer this leader "
                        "started did not complete, and the followers it told of it may vote for another "
                        "node at once; use READ_INDEX (the lease is back with the next leader term)"
                    )
                self.output.append(Respond(tx, QuorumNotEnough(why)))
            elif bug or (acked >= 0 and now - acked < lease):
                if bug or self.is_committed(read_log_id):
                    self.output.append(Respond(tx, read_log_id))
                else:
                    # Confirmed by the lease; answered once the blank entry commits (or
                    # failed with ForwardToLeader if this leader steps down first).
                    leader.reads.append(PendingRead(tx, read_log_id, -1.0))
            elif acked < 0:
                # (Not "expired N ms ago": there is no ack time to count from.) A leader just
                # elected gets here until its first heartbeat round is answered: the message
                # says what to do, a lease read never sends anything itself.
                self.output.append(
                    Respond(tx, QuorumNotEnough(
                        "no leader lease yet: no quorum has acknowledged this leader since it was elected "
                        f"{now - leader.elected_at:.1f} ms ago (or since its voters changed); {LEASE_RETRY}"
                    ))
                )
            else:
                self.output.append(
                    Respond(tx, QuorumNotEnough(
                        f"leader lease expired: last quorum ack {now - acked:.1f} ms ago; {LEASE_RETRY}"))
                )
            return
        self.heartbeat(now)
        # Only this read is checked: every other waiting read was checked when it came and
        # is checked again at each ack, commit and tick (``check_reads``). Scanning them all
        # for each new one made n reads in one pass cost O(n**2): 10,000 ``READ_INDEX``
        # reads issued at once stalled the event loop for 1.7 s, 100,000 for 98 s.
        if leader.quorum_acked_at(now) >= now and self.is_committed(read_log_id):
            self.output.append(Respond(tx, read_log_id))
        else:
            leader.reads.append(PendingRead(tx, read_log_id, now))

    def is_committed(self, read_log_id: LogId | None) -> bool:
        """Whether ``read_log_id`` (at or after this leader's blank entry, or committed) is
        committed here."""
        return read_log_id is None or self.state.committed_index() >= read_log_id.index

    def check_reads(self) -> None:
        """Answer the waiting reads that are confirmed (a quorum acked a request sent at or
        after the read's ``since``) and whose read log id is committed.

        A new leader's read log id is its blank entry, which may commit after the quorum
        confirmed the read, or never (this leader is cut off and steps down first). The
        answer waits for the commit here, in the engine, where a step-down fails the read
        with ``ForwardToLeader``: answered at once, ``Raft.ensure_linearizable`` waited for
        the entry to be applied, and that wait did not end while the partition lasted."""
        leader = self.leader
        acked = leader.quorum_acked_at(self.eng.now)
        keep = []
        for r in leader.reads:
            if acked >= r.since and self.is_committed(r.read_log_id):
                self.output.append(Respond(r.tx, r.read_log_id))
            else:
                keep.append(r)
        leader.reads = keep

    def higher_vote(self, target: NodeId, vote: Vote) -> None:
        """Replication target ``target`` rejected this leader because it holds the greater
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
        st = self.state
        eng = self.eng
        if not vote.is_gt(st.vote):
            return
        if (
            not vote.committed
            and vote.term < MAX_TERM
            and not is_handing_over(leader)  # handing over: it steps down anyway
            and st.is_voter()
            and not self.is_member_voter(target)
        ):
            eng.vote_handler().elect(eng.now, transfer_from=leader.vote, above_term=vote.term)
            return
        vh = eng.vote_handler()
        vh.update_vote(vote)
        vh.become_following(eng.now)

    def is_member_voter(self, node_id: NodeId) -> bool:
        """Whether ``node_id`` is a voter of this node's effective or committed membership
        (either config of a joint one)."""
        ms = self.state.membership
        return ms.effective.membership.is_voter(node_id) or ms.committed.membership.is_voter(node_id)
