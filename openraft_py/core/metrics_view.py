"""The node's ``RaftMetrics`` as read from its engine, and the key that tells when they
changed. ``RaftCore`` publishes through a ``MetricsWatch``: after every pass it compares
``change_key`` with the last one and marks the watch changed; the watch calls ``build``
lazily, when someone reads the metrics.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..engine import Engine
from ..errors import Fatal, Stopped
from ..metrics import RaftMetrics
from ..types import ServerState


def build(engine: Engine, fatal: Fatal | None) -> RaftMetrics:
    """The metrics of the node whose engine is ``engine`` (``fatal``: why it stopped, if it
    did)."""
    st = engine.state
    leader = engine.leader
    return RaftMetrics(
        id=st.id,
        state=st.server_state,
        current_term=st.vote.term,
        vote=st.vote,
        last_log_index=st.last_index(),
        last_applied=st.applied,
        committed=st.committed,
        current_leader=engine.current_leader(),
        membership_config=st.membership.effective,
        purged=st.purged_log_id(),
        snapshot=st.snapshot,
        replication=None if leader is None else leader.progress.as_dict(),
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


def change_key(engine: Engine) -> tuple[Any, ...]:
    """A value that changes whenever ``build`` would return different metrics (the
    leader's ``acks`` counts the acknowledgements that move ``replication`` and
    ``last_quorum_acked``)."""
    st = engine.state
    leader = engine.leader
    return (
        st.server_state,
        st.vote,
        st.log_ids.last_index(),
        st.committed,
        st.applied,
        st.membership.effective,
        None if leader is None else leader.acks,
        st.snapshot,
        # Every purge is a storage write: this moves with the purged log id (and more).
        st.io.submitted,
    )
