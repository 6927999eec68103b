"""The engine's handlers: one object per concern, borrowing the engine's state.

``Engine`` (``engine.py``) holds the data and the public entry points; each entry point picks
the handler for its concern and calls one method on it. A handler holds references to what
it works on (``eng``, ``state``, ``output``, and for the leader's handlers the
``Leader``), the way Openraft's ``engine/handler/*`` borrow ``&mut Engine`` fields, so every
dependency between concerns is a visible ``eng.<x>_handler().<method>()`` call instead of a
name in one shared namespace. The handlers that act for no particular role are made once
with the engine; the leader's are made for the ``Leader`` they act for (and reused while it
leads), so none acts for a leadership that ended::

    Engine entry point            handler (module)                  role it needs
    ------------------            ----------------                  -------------
    elect, pre_vote, handle_vote_*  VoteHandler        vote.py        any
    handle_append_entries,          FollowingHandler   following.py   any (it follows)
      handle_install_snapshot
    client_write, handle_read,      LeaderHandler      leader.py      Leader
      handle_higher_vote, tick
    handle_replication_result,      ReplicationHandler replication.py Leader
      handle_replication_progress,
      take_commands (plans requests)
    change_membership, add_learner  MembershipHandler  membership.py  Leader
    transfer_leader,                TransferHandler    transfer.py    Leader / follower
      handle_transfer_leader
    trigger_snapshot, handle_snapshot_*, trigger_purge_log
                                    SnapshotHandler    snapshot.py    any
    handle_io_flushed (and every log write of the others)
                                    LogHandler         log.py         any

Who calls whom (each arrow is a call through ``eng.<x>_handler()``)::

    Following-, Vote-, Leader-,      LogHandler.append / truncate / commit_to
    Membership-, SnapshotHandler ──> (a membership changed) ──> ReplicationHandler.refresh,
                                                                try_commit
    FollowingHandler.accept_leader ──> VoteHandler.update_vote, become_following
    ReplicationHandler.handle_result ──> handle_progress ──> try_commit ──> LogHandler.commit_to
                                 │                        │           └──> MembershipHandler.after_commit
                                 │                        ├──> TransferHandler.maybe_send (target caught up)
                                 │                        └──> LeaderHandler.check_reads
                                 └──> LeaderHandler.higher_vote (Rejected)
    MembershipHandler.after_commit ──> TransferHandler.hand_over_as_removed
                                          ──> VoteHandler.become_following
    LeaderHandler.tick ──> ReplicationHandler.expire_backoffs; TransferHandler.expire;
                           VoteHandler.become_following (no quorum)
    LeaderHandler.client_write / heartbeat ──> ReplicationHandler.replicate / heartbeat
    Engine.take_commands ──> ReplicationHandler.send (when the leader has requests due)

``ReplicationHandler`` owns per-target progress (``engine/progress.py``: next index, the
inflight window, probing, snapshot-needed, back-off): ``send`` plans the per-target
``Replicate`` / ``SendSnapshot`` commands, ``handle_result`` consumes what the runtime reports.
"""

from .base import Handler, LeadingHandler

__all__ = ["Handler", "LeadingHandler"]
