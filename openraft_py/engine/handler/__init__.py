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

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..command import Command
    from ..engine import Engine
    from ..leader import Leader
    from ..state import RaftState


class Handler:
    """The references every handler holds: the engine (for its role fields, ``config`` and
    the other handlers), its ``state`` and its ``output`` list, both the same object for the
    engine's lifetime. Role fields (``eng.leader``, ``eng.candidate``) and ``eng.config`` are
    read through ``eng`` at each use, never kept."""

    __slots__ = ("eng", "state", "output")

    def __init__(self, eng: Engine) -> None:
        self.eng: Engine = eng
        self.state: RaftState = eng.state
        self.output: list[Command] = eng.output


class LeadingHandler(Handler):
    """A handler of the leader role: it also holds the ``Leader`` it acts for.

    Invariant: ``leader is eng.leader`` whenever the engine hands the handler out (it makes a
    new one for a new ``Leader``); after a call that may step down
    (``VoteHandler.become_following``) a method checks ``eng.leader is leader`` before acting
    for it again.
    """

    __slots__ = ("leader",)

    def __init__(self, eng: Engine, leader: Leader) -> None:
        self.eng = eng
        self.state = eng.state
        self.output = eng.output
        self.leader: Leader = leader
