"""Snapshots and log compaction (thesis 5.1-5.4).

- Build: when ``SnapshotPolicy`` says so (or on ``trigger.snapshot()``), one build at a time,
  in the background (``BuildSnapshot``); ``handle_snapshot_built`` records it.
- Purge: after a snapshot, entries up to ``snapshot - max_in_snapshot_log_to_keep`` go, once
  at least ``purge_batch_size`` of them can. Only entries a snapshot covers are purged:
  ``purged <= snapshot <= applied``.
- Install: a follower receives a leader's snapshot chunk by chunk (the runtime writes the
  chunks), then ``handle_snapshot_received`` hands it to the state machine
  (``InstallSnapshot``) and ``handle_snapshot_installed`` fixes the log: it keeps the entries
  after the snapshot when the log holds the snapshot's last log id, else drops every
  uncommitted entry; then purges up to the snapshot. The leader is answered only once that is
  durable, so its ``matching`` is true on disk. Until the install succeeded nothing of the
  log, committed or applied changed, so a snapshot the state machine refuses
  (``handle_snapshot_refused``) only ends the install and answers the leader with the error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..types import InstallSnapshotRequest, InstallSnapshotResponse, LogId, SnapshotMeta
from .command import BuildSnapshot, InstallSnapshot, PurgeLog, ReceiveSnapshotChunk, Respond, SaveCommittedAndApply

if TYPE_CHECKING:
    from .engine import Engine


class SnapshotHandler:
    """Snapshot and purge handlers, mixed into ``Engine``."""

    # -- building ----------------------------------------------------------------------------

    def maybe_build_snapshot(self: Engine) -> None:
        """Start a build if the policy says one is due and none is running."""
        every = self.snapshot_every
        if every is None or self.snapshot_building:
            return
        st = self.state
        if st.applied is None:
            return
        snap = -1 if st.snapshot is None else st.snapshot.index
        if st.applied.index - snap >= every:
            self.snapshot_building = True
            self.output.append(BuildSnapshot())

    def trigger_snapshot(self: Engine) -> bool:
        """Build a snapshot now unless one is being built; return whether one was started."""
        if self.snapshot_building:
            return False
        self.snapshot_building = True
        self.output.append(BuildSnapshot())
        return True

    def handle_snapshot_built(self: Engine, meta: SnapshotMeta | None) -> None:
        """A build finished (``meta`` ``None``: it failed or built nothing)."""
        self.snapshot_building = False
        if meta is None or meta.last_log_id is None:
            return
        st = self.state
        last = meta.last_log_id
        if st.applied is None or last > st.applied:
            # The builder saw an apply whose report has not arrived yet: adopt the snapshot
            # once it has (``snapshot <= applied``).
            self.snapshot_unreported = last
            return
        self.adopt_snapshot(last)

    def adopt_snapshot(self: Engine, last: LogId) -> None:
        """Record a built snapshot covering up to ``last`` (``<= applied``) and purge."""
        st = self.state
        if st.snapshot is None or last > st.snapshot:
            st.snapshot = last
        self.maybe_purge()

    # -- purging -----------------------------------------------------------------------------

    def maybe_purge(self: Engine) -> None:
        """Purge what the policy allows: up to ``snapshot - max_in_snapshot_log_to_keep``, in
        batches of at least ``purge_batch_size`` entries."""
        st = self.state
        if st.snapshot is None:
            return
        upto = st.snapshot.index - self.config.max_in_snapshot_log_to_keep
        purged = st.purged_log_id()
        have = -1 if purged is None else purged.index
        if upto - have >= self.config.purge_batch_size:
            log_id = st.log_id_at(upto)
            if log_id is not None:
                self.purge_local(log_id)

    def trigger_purge_log(self: Engine, upto: int) -> LogId | None:
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
        self.purge_local(log_id)
        return log_id

    def purge_local(self: Engine, upto: LogId) -> None:
        """Delete the entries up to ``upto`` (which a snapshot covers, or which lie beyond the
        log after installing a snapshot) and emit ``PurgeLog``."""
        st = self.state
        st.log_ids.purge(upto.term, upto.index)
        io = self.next_io()
        st.io.pending.append((io, st.last_log_id(), None))
        self.output.append(PurgeLog(upto, io))

    # -- receiving -----------------------------------------------------------------------------

    def handle_install_snapshot(self: Engine, req: InstallSnapshotRequest, tx: Any, now: float) -> None:
        """A chunk of a leader's snapshot. A stale leader is refused; otherwise we follow it
        and the runtime writes the chunk (``ReceiveSnapshotChunk``) once the adopted vote is
        durable."""
        st = self.state
        self.now = now
        if not self.accept_leader(req.vote, now):
            self.output.append(Respond(tx, InstallSnapshotResponse(st.vote)))
            return
        self.output.append(ReceiveSnapshotChunk(req, tx, when=st.io.vote_io))

    def handle_snapshot_received(self: Engine, meta: SnapshotMeta, data: Any, tx: Any) -> None:
        """Every chunk arrived: install it unless we already have what it covers."""
        st = self.state
        last = meta.last_log_id
        if last is None or (st.committed is not None and last <= st.committed):
            # Committed entries match the leader's: we hold everything the snapshot covers.
            self.output.append(Respond(tx, InstallSnapshotResponse(st.vote)))
            return
        if self.snapshot_installing is not None:
            self.output.append(Respond(tx, ApiError(f"node {st.id}: another snapshot is being installed")))
            return
        self.snapshot_installing = meta
        self.output.append(InstallSnapshot(meta, data, tx))

    def handle_snapshot_installed(self: Engine, meta: SnapshotMeta, tx: Any) -> None:
        """The state machine holds the snapshot ``meta``: make the log agree, advance
        committed/applied/snapshot, and answer the leader once that is durable."""
        st = self.state
        self.snapshot_installing = None
        last = meta.last_log_id
        assert last is not None
        if not (st.has_log_id(last) and st.last_index() >= last.index):
            # Entries after what is committed may conflict with the leader's: drop them.
            if st.last_index() > st.committed_index():
                self.truncate_local(st.committed_index())
        purged = st.purged_log_id()
        if purged is None or last.index > purged.index:
            self.purge_local(last)
        if st.committed is None or last > st.committed:
            st.committed = last
            self.output.append(SaveCommittedAndApply(last))
        st.membership.install_snapshot(meta.last_membership, last.index)
        if st.applied is None or last > st.applied:
            st.applied = last
        if st.snapshot is None or last > st.snapshot:
            st.snapshot = last
        self.on_membership_changed()
        self.output.append(Respond(tx, InstallSnapshotResponse(st.vote), when=st.io.submitted))

    def handle_snapshot_refused(self: Engine, meta: SnapshotMeta, tx: Any, err: ApiError) -> None:
        """The state machine refused the snapshot ``meta`` (its state is unchanged): end the
        install and answer the leader with ``err``. The log, committed and applied were not
        changed for this snapshot, so there is nothing to undo; the leader sends it again
        later."""
        self.snapshot_installing = None
        self.output.append(Respond(tx, err))
