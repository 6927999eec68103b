"""Snapshots and log compaction (thesis 5.1-5.4).

- Build: when ``SnapshotPolicy`` says so (or on ``trigger.snapshot()``), one build at a time,
  in the background (``BuildSnapshot``); ``built`` records it. A trigger during a build
  starts another when it ends, unless that one covers what was applied at the trigger.
  The policy is paced (``Config.snapshot_pacing``): after a build that took ``d`` ms it starts none for
  ``snapshot_pacing * d`` ms, so building takes a bounded share of the node's time however
  large the state grows; ``trigger.snapshot()`` is not paced.
- Purge: after a snapshot, entries up to ``snapshot - max_in_snapshot_log_to_keep`` go, once
  at least ``purge_batch_size`` of them can. Only entries a snapshot covers are purged:
  ``purged <= snapshot <= applied``.
- Install: a follower receives a leader's snapshot chunk by chunk (the runtime writes the
  chunks), then ``received`` hands it to the state machine (``InstallSnapshot``) and
  ``installed`` fixes the log: it keeps the entries after the snapshot when the log holds the
  snapshot's last log id, else drops every uncommitted entry; then purges up to the snapshot.
  The leader is answered only once that is durable, so its ``matching`` is true on disk.
  Until the install succeeded nothing of the log, committed or applied changed, so a snapshot
  the state machine refuses (``refused``) only ends the install and answers the leader with
  the error.
"""

from __future__ import annotations

from typing import Any

from ...errors import ApiError
from ...types import InstallSnapshotRequest, InstallSnapshotResponse, LogId, SnapshotMeta
from ..command import BuildSnapshot, InstallSnapshot, ReceiveSnapshotChunk, Respond, SaveCommittedAndApply
from .base import Handler


class SnapshotHandler(Handler):
    """Snapshot building, purging and installing, for every role."""

    __slots__ = ()

    # -- building ----------------------------------------------------------------------------

    def on_applied(self, applied: LogId | None) -> None:
        """The state machine applied every entry up to ``applied``: adopt a snapshot whose
        report waited for it, and build one if the policy says so."""
        st = self.state
        eng = self.eng
        if applied is not None and (st.applied is None or applied > st.applied):
            st.applied = applied
            pending = eng.snapshot_unreported
            if pending is not None and pending <= applied:
                eng.snapshot_unreported = None
                self.adopt(pending)
            if eng.snapshot_every is not None:
                self.maybe_build()

    def maybe_build(self) -> None:
        """Start a build if the policy says one is due, none is running, no leader's snapshot
        is being installed and the pacing allows one (``eng.now`` at or past
        ``snapshot_next_due``).

        During an install the runtime reports ``Applied(last)`` before ``SnapshotInstalled``:
        counted against the node's older (or no) snapshot, those entries made the policy
        build a snapshot of the very state being installed (a learner added to a cluster of
        350 MB wrote a second 354 MB file at once). The install becomes the snapshot."""
        eng = self.eng
        every = eng.snapshot_every
        if every is None or eng.snapshot_building or eng.snapshot_installing is not None or eng.now < eng.snapshot_next_due:
            return
        st = self.state
        if st.applied is None:
            return
        snap = -1 if st.snapshot is None else st.snapshot.index
        if st.applied.index - snap >= every:
            self._start()

    def trigger(self) -> bool:
        """Build a snapshot now; while one is being built, record what is applied now
        (``snapshot_wanted``) so that ``built`` starts another if that one does not cover it.
        Return whether one was started now. (A trigger during a build was dropped: a caller
        waiting for a snapshot of its last write waited in vain once writes stopped.)"""
        eng = self.eng
        if eng.snapshot_building:
            applied = self.state.applied
            if applied is not None and (eng.snapshot_wanted is None or applied > eng.snapshot_wanted):
                eng.snapshot_wanted = applied
            return False
        self._start()
        return True

    def _start(self) -> None:
        eng = self.eng
        eng.snapshot_building = True
        eng.snapshot_build_started = eng.now
        self.output.append(BuildSnapshot())

    def built(self, meta: SnapshotMeta | None) -> None:
        """A build finished (``meta`` ``None``: it failed or built nothing). The policy's next
        build is due no sooner than ``snapshot_pacing`` times this one's duration from now."""
        eng = self.eng
        eng.snapshot_building = False
        took = eng.now - eng.snapshot_build_started
        eng.snapshot_next_due = eng.now + eng.snapshot_pacing * (took if took > 0 else 0.0)
        wanted = eng.snapshot_wanted
        if wanted is not None:
            # A trigger came during this build: build again (not paced) unless it covered
            # what was applied then.
            eng.snapshot_wanted = None
            if meta is None or meta.last_log_id is None or meta.last_log_id < wanted:
                self._start()
        if meta is None or meta.last_log_id is None:
            return
        st = self.state
        last = meta.last_log_id
        if st.applied is None or last > st.applied:
            # The builder saw an apply whose report has not arrived yet: adopt the snapshot
            # once it has (``snapshot <= applied``).
            eng.snapshot_unreported = last
            return
        self.adopt(last)

    def adopt(self, last: LogId) -> None:
        """Record a built snapshot covering up to ``last`` (``<= applied``) and purge."""
        st = self.state
        if st.snapshot is None or last > st.snapshot:
            st.snapshot = last
        self.maybe_purge()

    # -- purging -----------------------------------------------------------------------------

    def maybe_purge(self) -> None:
        """Purge what the policy allows: up to ``snapshot - max_in_snapshot_log_to_keep``, in
        batches of at least ``purge_batch_size`` entries."""
        st = self.state
        if st.snapshot is None:
            return
        upto = st.snapshot.index - self.eng.config.max_in_snapshot_log_to_keep
        purged = st.purged_log_id()
        have = -1 if purged is None else purged.index
        if upto - have >= self.eng.config.purge_batch_size:
            log_id = st.log_id_at(upto)
            if log_id is not None:
                self.eng.log_handler().purge(log_id)

    def trigger_purge(self, upto: int) -> LogId | None:
        """Purge entries up to index ``upto``, but never past the last snapshot; return the
        new last purged log id (``None`` when nothing could be purged)."""
        st = self.state
        if st.snapshot is None:
            return None
        index = min(upto, st.snapshot.index)
        purged = st.purged_log_id()
        if purged is not None and index <= purged.index:
            return None
        log_id = st.log_id_at(index)
        if log_id is None:
            return None
        self.eng.log_handler().purge(log_id)
        return log_id

    # -- receiving -----------------------------------------------------------------------------

    def receive_chunk(self, req: InstallSnapshotRequest, tx: Any, now: float) -> None:
        """A chunk of a leader's snapshot. A stale leader is refused; otherwise we follow it
        and the runtime writes the chunk (``ReceiveSnapshotChunk``) once the adopted vote is
        durable."""
        st = self.state
        if not self.eng.following_handler().accept_leader(req.vote, now):
            self.output.append(Respond(tx, InstallSnapshotResponse(st.vote)))
            return
        self.output.append(ReceiveSnapshotChunk(req, tx, when=st.io.vote_io))

    def received(self, meta: SnapshotMeta, data: Any, tx: Any) -> None:
        """Every chunk arrived: install it unless we already have what it covers."""
        st = self.state
        eng = self.eng
        last = meta.last_log_id
        if last is None or (st.committed is not None and last <= st.committed):
            # Committed entries match the leader's: we hold everything the snapshot covers.
            self.output.append(Respond(tx, InstallSnapshotResponse(st.vote)))
            return
        if eng.snapshot_installing is not None:
            self.output.append(Respond(tx, ApiError(f"node {st.id}: another snapshot is being installed")))
            return
        eng.snapshot_installing = meta
        self.output.append(InstallSnapshot(meta, data, tx))

    def installed(self, meta: SnapshotMeta, tx: Any) -> None:
        """The state machine holds the snapshot ``meta``: make the log agree, advance
        committed/applied/snapshot, and answer the leader once that is durable."""
        st = self.state
        self.eng.snapshot_installing = None
        log = self.eng.log_handler()
        last = meta.last_log_id
        assert last is not None
        if not (st.has_log_id(last) and st.last_index() >= last.index):
            # Entries after what is committed may conflict with the leader's: drop them.
            if st.last_index() > st.committed_index():
                log.truncate(st.committed_index())
        purged = st.purged_log_id()
        if purged is None or last.index > purged.index:
            log.purge(last)
        if st.committed is None or last > st.committed:
            st.committed = last
            self.output.append(SaveCommittedAndApply(last))
        st.membership.install_snapshot(meta.last_membership, last.index)
        if st.applied is None or last > st.applied:
            st.applied = last
        if st.snapshot is None or last > st.snapshot:
            st.snapshot = last
        log.membership_changed()
        self.output.append(Respond(tx, InstallSnapshotResponse(st.vote), when=st.io.submitted))

    def refused(self, meta: SnapshotMeta, tx: Any, err: ApiError) -> None:
        """The state machine refused the snapshot ``meta`` (its state is unchanged): end the
        install and answer the leader with ``err``. The log, committed and applied were not
        changed for this snapshot, so there is nothing to undo; the leader sends it again
        later."""
        self.eng.snapshot_installing = None
        self.output.append(Respond(tx, err))
