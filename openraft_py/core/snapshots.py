"""``Snapshots``: the runtime side of snapshots on one node: building one in the
background, receiving a leader's chunks into a file, installing a received snapshot through
the state-machine worker, and undoing the hand-off when the state machine refuses it.

The engine decides (``BuildSnapshot``, ``ReceiveSnapshotChunk``, ``InstallSnapshot``
commands); ``RaftCore`` calls these methods from its task, and the outcomes come back as
notifications (``SnapshotBuilt``, ``Applied`` + ``SnapshotInstalled``, ``SnapshotRefused``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..errors import ApiError, StorageError
from ..types import InstallSnapshotRequest, InstallSnapshotResponse, LeaderId, NodeId, SnapshotMeta
from . import snapshot_io
from .apply_feed import ApplyFeed
from .calling_out import BUILD, CallingOut, enter, leave
from .messages import Applied, Failed, SnapshotBuilt, SnapshotInstalled, SnapshotRefused, answer
from .sm_worker import StateMachineWorker
from .tasks import stray_cancel

log = logging.getLogger("openraft_py.core")


class _InstallAnswer:
    """Where the answer to the leader about one install goes, answered like a future (see
    ``messages.answer``): the request whose chunk completed the transfer, and every resend of
    that last chunk (``add``). An install takes longer than the leader waits for a chunk's
    answer (``Config.install_snapshot_timeout``, 200 ms by default, plus the time the chunk's
    bytes take at ``Config.replication_min_rate``) once the state is large (0.6 s for 300,000
    keys of ``RocksStateMachine``), so the leader resends the last chunk.
    That resend was refused ("chunk at offset N but nothing received"), and the leader, which
    logged that at WARNING, sent the whole snapshot again, whose file then stayed on the
    follower's disk. A resend now gets the install's answer: at once if it is known, else
    with the others when it is."""

    __slots__ = ("txs", "outcome")

    def __init__(self, tx: Any) -> None:
        self.txs: list[Any] = [tx]
        self.outcome: tuple[bool, Any] | None = None  # (is an error, value) once answered

    def refused(self) -> bool:
        """Whether the install was answered with an error (the state machine refused it)."""
        return self.outcome is not None and self.outcome[0]

    def add(self, tx: Any) -> None:
        """Answer ``tx`` too: now if the answer is known, else with the others."""
        if self.outcome is None:
            self.txs.append(tx)
        else:
            answer(tx, self.outcome[1])

    def done(self) -> bool:
        return self.outcome is not None

    def set_result(self, value: Any) -> None:
        self.outcome = (False, value)
        for tx in self.txs:
            answer(tx, value)
        self.txs.clear()

    def set_exception(self, e: BaseException) -> None:
        self.outcome = (True, e)
        for tx in self.txs:
            answer(tx, e)
        self.txs.clear()


def _drop_opening(opening: tuple[str, asyncio.Future[Any]] | None) -> None:
    """Forget ``opening`` (``Snapshots._opening``): the file, once handed out, is closed
    (a ``RocksStateMachine`` deletes it at the next receive), and a failure is retrieved
    (nobody awaits it)."""
    if opening is None:
        return

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        snapshot_io.close_quietly(fut.result())

    opening[1].add_done_callback(done)


class Snapshots:
    """Snapshot building, receiving and installing for one node.

    Invariant: ``_receiving`` is the snapshot being received from a leader (its id and the
    file its chunks go to), ``_receiving_from`` the id of the leader of its last chunk taken
    and ``_received`` how many bytes of it arrived; the next chunk must start at or before ``_received`` (a repeated
    chunk is written again).
    """

    def __init__(
        self,
        node_id: NodeId,
        engine: Engine,
        worker: StateMachineWorker,
        feed: ApplyFeed,
        notify: Callable[[Any], None],
        calling_out: CallingOut | None = None,
    ) -> None:
        self.node_id = node_id
        # Where the build task is recorded while in ``build_snapshot`` (``RaftCore.calling_out``).
        self.calling_out: CallingOut = {} if calling_out is None else calling_out
        self.engine = engine
        self.worker = worker
        self.feed = feed
        self.notify = notify
        self._receiving: tuple[str, Any] | None = None
        self._receiving_from: LeaderId | None = None
        self._received = 0
        # The snapshot whose first chunk came while the state machine worker was busy (an
        # ``apply`` running or anything queued): its id and the future of the file
        # ``begin_receiving_snapshot`` opens for it, queued on the worker then. The chunk was
        # refused (the leader sends it again after a pause); the resend takes the file once
        # the worker handed it out. The core never awaits the worker behind an ``apply``.
        self._opening: tuple[str, asyncio.Future[Any]] | None = None
        # When (the engine's clock, ms) the last copy of ``_opening``'s first chunk came, and
        # how long it is kept after that (``expire``): twice the leader's pause
        # before it asks again (``heartbeat_interval``) and the deadline of that ask (an empty
        # chunk: ``install_snapshot_timeout``). A leader that never asks again (it lost its
        # leadership, or this node was removed) left the file open until the next transfer
        # or the node's stop.
        self._opening_at = 0.0
        cfg = engine.config
        self.opening_kept_ms = 2.0 * (cfg.heartbeat_interval + cfg.install_snapshot_timeout)
        # The last snapshot handed to the state machine to install, and where its answer goes.
        self._installed: tuple[str, _InstallAnswer] | None = None
        # The last refusal logged at WARNING (snapshot id, error): the leader sends a refused
        # snapshot again after each heartbeat interval until a newer one replaces it.
        self._refusal_logged: tuple[str, str] | None = None

    async def build(self) -> None:
        """Build a snapshot (a task body: concurrently with apply, by contract); report
        ``SnapshotBuilt``, or ``Failed`` with a ``StorageError``."""
        task = enter(self.calling_out, BUILD)
        try:
            try:
                snap = await snapshot_io.build_snapshot(self.worker.sm)
            finally:
                leave(self.calling_out, task)
            snapshot_io.check_snapshot(snap, "SnapshotBuilder.build_snapshot")
            try:
                snapshot_io.check_built_meta(
                    snap.meta, self.engine.state, "SnapshotBuilder.build_snapshot", self.engine.snapshot_installing
                )
            except Exception:
                snapshot_io.close_quietly(snap.data)
                raise
        except Exception as e:  # noqa: BLE001 - reported: the node stops
            self.notify(Failed(StorageError("building a snapshot", e)))
            return
        except asyncio.CancelledError as e:
            stray = stray_cancel("SnapshotBuilder.build_snapshot", e)
            if stray is None:
                raise
            # (Let through, it ended the build unreported: the node never built another.)
            self.notify(Failed(StorageError("building a snapshot", stray)))
            return
        snapshot_io.close_quietly(snap.data)
        self.notify(SnapshotBuilt(snap.meta))

    async def receive_chunk(self, req: InstallSnapshotRequest, tx: Any) -> None:
        """Write one chunk into the snapshot being received; on the last one hand the whole
        snapshot to the engine. A chunk that does not continue the received bytes (nor
        repeat earlier ones) is refused with ``ApiError``: the leader starts over. So is the
        first chunk of a transfer while a snapshot is being installed, or while the state
        machine worker is busy (the core never waits for an install, nor for an ``apply``).
        Raises ``StorageError`` when the state machine or the file fails."""
        sid = req.meta.snapshot_id
        if self._receiving is None or self._receiving[0] != sid:
            inst = self._installed
            if req.done and inst is not None and inst[0] == sid and not inst[1].refused():
                # The last chunk again, of the snapshot installed or being installed: the
                # leader did not get the answer in time (see ``_InstallAnswer``).
                inst[1].add(tx)
                return
            if req.offset != 0:
                answer(tx, ApiError(f"snapshot {sid}: chunk at offset {req.offset} but nothing received"))
                return
            installing = self.engine.snapshot_installing
            if installing is not None:
                # Beginning to receive goes through the state machine worker, queued behind
                # the install: the core would wait for the whole install. The leader starts
                # over later (the engine would refuse the finished transfer anyway).
                answer(tx, ApiError(f"snapshot {sid}: snapshot {installing.snapshot_id} is being installed"))
                return
            # Beginning to receive goes through the worker too, after what it runs and holds
            # queued (an ``apply`` may take long, or await this node's core: a
            # ``trigger.snapshot()``). The core awaits it only when it runs at once; else it
            # is queued now, the chunk refused, and the leader's resend takes the file.
            # Awaited behind an ``apply``, the core answered nothing meanwhile, and for good
            # if that ``apply`` awaited a call the core answers (``_opening``).
            busy = not self.worker.waiting_for_work()
            opening, self._opening = self._opening, None
            self.close()
            if opening is not None and opening[0] == sid:
                fut = opening[1]  # queued for an earlier copy of this chunk
                now = fut.done()
            else:
                _drop_opening(opening)
                fut = self.worker.call(lambda sm: sm.begin_receiving_snapshot())
                now = not busy
            if not now:
                self._opening = (sid, fut)
                self._opening_at = self.engine.now
                answer(tx, ApiError(f"snapshot {sid}: the state machine is busy (applying entries)"))
                return
            try:
                f = await fut
                snapshot_io.check_receiving_file(f, "begin_receiving_snapshot")
            except Exception as e:
                raise StorageError("beginning to receive a snapshot", e) from e
            self._receiving = (sid, f)
            self._received = 0
        f = self._receiving[1]
        if req.offset > self._received:
            answer(tx, ApiError(f"snapshot {sid}: chunk at offset {req.offset} but {self._received} bytes received"))
            return
        # The leader of the chunk taken last (``expire``): the engine took its vote, so this
        # node votes for it now. A leader elected again (a new term) may resend the same
        # snapshot, continuing the transfer: it is kept for that leader.
        self._receiving_from = req.vote.leader_id
        try:
            await snapshot_io.call(f, snapshot_io.write_at, req.offset, req.data)
            self._received = max(self._received, req.offset + len(req.data))
            if req.done:
                await snapshot_io.call(f, snapshot_io.finish, self._received)
        except Exception as e:
            # (The file's name, when it has one: a write's OSError names none.)
            where = snapshot_io.named(f)
            raise StorageError(f"writing snapshot {sid}{' to' + where if where else ''}", e) from e
        if not req.done:
            answer(tx, InstallSnapshotResponse(self.engine.state.vote))
            return
        self._receiving = None
        self.engine.handle_snapshot_received(req.meta, f, tx)
        if self.engine.snapshot_installing is not req.meta:
            # Answered without an install (the node holds what it covers already, or another
            # snapshot is being installed): nothing will read the file. Closed, so that a
            # state machine may delete it (``RocksStateMachine`` does at the next receive).
            snapshot_io.close_quietly(f)

    def install(self, meta: SnapshotMeta, data: Any, tx: Any) -> None:
        """Queue the install on the state machine worker (after pending applies); then
        notify ``Applied`` and ``SnapshotInstalled``, or ``SnapshotRefused`` (see
        ``refused``); ``data`` is closed either way. Entries up to the snapshot are not
        handed to apply after this (``ApplyFeed.skip_to``), and the entry cache is cleared
        (the log after the install does not continue it)."""
        last = meta.last_log_id
        assert last is not None
        before = self.feed.skip_to(last.index)
        self.feed.log.cache.clear()
        fut = self.worker.install_snapshot(meta, data)
        to = _InstallAnswer(tx)
        self._installed = (meta.snapshot_id, to)

        def done(f: asyncio.Future[None]) -> None:
            snapshot_io.close_quietly(data)
            if f.cancelled():
                return
            e = f.exception()
            if e is not None:
                self.notify(SnapshotRefused(meta, to, before, e))
                return
            self.notify(Applied(last))
            self.notify(SnapshotInstalled(meta, to))

        fut.add_done_callback(done)

    def refused(self, n: SnapshotRefused) -> None:
        """The state machine did not install a received snapshot.

        ``ValueError`` (by the ``RaftStateMachine`` contract: the data is not a snapshot of
        its format, and its state is unchanged): refuse this install only. Nothing else
        changed for it: the engine touches the log, committed and applied only once the
        install succeeded; the apply feed goes back to where it was (``ApplyFeed.rewind``:
        the batches queued behind the install were held, not applied, and are handed over
        again); the leader gets an ``ApiError`` and starts the transfer over later. Logged
        at WARNING once per snapshot and reason, at DEBUG when it is refused again. Any
        other exception is a storage failure: raises ``StorageError`` (the node stops; the
        state machine kept its previous state and the log is untouched, so a restart is
        consistent).
        """
        sid = n.meta.snapshot_id
        if not isinstance(n.error, ValueError):
            raise StorageError(f"installing snapshot {sid}", n.error) from n.error
        # Said at WARNING once per snapshot and reason, as the leader says it (a snapshot this
        # node cannot read, one of a newer format from a leader upgraded first, is sent again
        # after every heartbeat interval: it was logged at each refusal).
        refusal = (sid, str(n.error))
        level = logging.DEBUG if refusal == self._refusal_logged else logging.WARNING
        self._refusal_logged = refusal
        log.log(level, "node %s: the state machine refused snapshot %s: %s", self.node_id, sid, n.error)
        self.feed.rewind(n.before)
        err = ApiError(f"node {self.node_id}: {snapshot_io.STATE_MACHINE_REFUSED} {sid}: {n.error}")
        err.__cause__ = n.error
        self.engine.handle_snapshot_refused(n.meta, n.tx, err)

    def expire(self, now: float) -> None:
        """At a tick (``now``: the engine's clock, ms), let go of what no leader will use:
        ``_opening`` (its file closed once the worker hands it out) if no copy of its first
        chunk came for ``opening_kept_ms`` (a later copy queues the open again); and the
        snapshot being received once the node's vote names another leader than the one
        sending it. A leader that stopped mid-transfer (it crashed, or lost its leadership)
        never sends the rest, and the next leader may send the log instead: that partial
        copy, of a snapshot that may be large, was kept open until the node's next transfer
        or its stop. Only the leader of its last chunk continues it: a leader begins a
        transfer at offset 0 (another one's chunk past that is refused once this one is
        dropped, and it starts over)."""
        opening = self._opening
        if opening is not None and now - self._opening_at > self.opening_kept_ms:
            log.debug("node %s: snapshot %s: its first chunk, refused while the state machine was busy, was not "
                      "sent again within %g ms: the file opened for it is closed",
                      self.node_id, opening[0], self.opening_kept_ms)
            self._opening = None
            _drop_opening(opening)
        receiving = self._receiving
        if receiving is not None and self.engine.state.vote.leader_id != self._receiving_from:
            log.info("node %s: snapshot %s: the transfer of leader %s ended unfinished (%d bytes received): it is "
                     "dropped", self.node_id, receiving[0], self._receiving_from, self._received)
            self._receiving = None
            snapshot_io.close_quietly(receiving[1])

    def close(self) -> None:
        """Drop the snapshot being received, if any (its file is closed), and the file
        being opened for one (``_opening``: closed once the worker hands it out)."""
        opening, self._opening = self._opening, None
        _drop_opening(opening)
        if self._receiving is not None:
            snapshot_io.close_quietly(self._receiving[1])
            self._receiving = None
