"""The node's ``RaftMetrics`` as read from its engine (``build``), and the ``Publisher``
that tells the node's ``MetricsWatch`` when they changed: ``RaftCore`` calls ``publish``
after every pass; the watch calls ``build`` lazily, when someone reads the metrics.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..engine import Engine
from ..errors import Fatal, Stopped
from ..metrics import MetricsWatch, RaftMetrics, ReadOnlyReplication
from ..types import ServerState


def build(engine: Engine, fatal: Fatal | None) -> RaftMetrics:
    """The metrics of the node whose engine is ``engine`` (``fatal``: why it stopped, if it
    did)."""
    st = engine.state
    leader = engine.leader
    current_leader = engine.current_leader()
    if fatal is not None and current_leader == st.id:
        # A stopped node leads nothing (its engine may still hold its leadership): naming
        # itself would send clients to a node that only answers ``Fatal``.
        current_leader = None
    return RaftMetrics(
        id=st.id,
        state=st.server_state,
        current_term=st.vote.term,
        vote=st.vote,
        last_log_index=st.last_index(),
        last_applied=st.applied,
        committed=st.committed,
        current_leader=current_leader,
        membership_config=st.membership.effective,
        purged=st.purged_log_id(),
        snapshot=st.snapshot,
        replication=None if leader is None else ReadOnlyReplication(leader.progress.as_dict()),
        last_quorum_acked=None if leader is None else leader.quorum_acked_at(engine.now),
        running=fatal is None,
        error=None if fatal is None or isinstance(fatal, Stopped) else str(fatal),
    )


def stopped(last: RaftMetrics, fatal: Fatal) -> RaftMetrics:
    """``last`` marked stopped by ``fatal``: what a stopped node whose engine state cannot
    be read any more (a bug broke it) reports, so a waiter gets ``Fatal``, never an internal
    error."""
    out: RaftMetrics = msgspec.structs.replace(
        last,
        state=ServerState.SHUTDOWN,
        running=False,
        error=None if isinstance(fatal, Stopped) else str(fatal),
    )
    return out


class Publisher:
    """Marks a node's ``MetricsWatch`` changed when its engine state moved: ``publish``
    runs after every pass of the core, so it computes a cheap key, not the metrics, and only
    while someone waits for a change (otherwise it just marks the watch for a rebuild at the
    next read: 3.5% more 1-writer writes/s in-process, where a write takes four passes)."""

    def __init__(self, engine: Engine, watch: MetricsWatch) -> None:
        self.engine = engine
        self.watch = watch
        # The watch's ``waiters`` and ``index_waited``, which it keeps for its life: read at
        # every pass.
        self._waiters = watch.waiters
        self._index_waited = watch.index_waited
        # The key at the last change; ``()`` never equals a real key.
        self._key: tuple[Any, ...] = ()

    def publish(self, force: bool = False) -> None:
        """Mark the watch changed if the metrics changed since the last call (always if
        ``force``, or while nobody waits: then no key is computed and the next read
        rebuilds the metrics)."""
        watch = self.watch
        if not force and watch.dirty and self._waiters.first is None:
            # Marked already, and nobody waits (a busy node whose metrics nobody reads):
            # what the branch below would do, without its calls; but a waiter for an
            # index may be due (``MetricsWatch.at_least``).
            self._key = ()
            if self._index_waited:
                watch.release_index_waiters()
            return
        if force or not watch.waited_on():
            self._key = ()
            watch.mark_changed()
            return
        eng = self.engine
        st = eng.state
        leader = eng.leader
        # Changes whenever ``build`` would return different metrics (the leader's ``acks``
        # counts the acknowledgements that move ``replication`` and ``last_quorum_acked``).
        key = (
            st.server_state,
            st.vote,
            st.log_ids.last_index(),
            st.committed,
            st.applied,
            st.membership.effective,
            # ``current_leader`` names none once the election timer fired, at the same vote.
            eng.leader_lost,
            None if leader is None else leader.acks,
            st.snapshot,
            # Every purge is a storage write: this moves with the purged log id (and more).
            st.io.submitted,
        )
        if key != self._key:
            self._key = key
            self.watch.mark_changed()
