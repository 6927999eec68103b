"""``ReplicationCore``: the leader's replication stream to one target (a task per target).

It keeps up to ``max_inflight_requests`` AppendEntries in flight (pipelining), each carrying
up to ``max_payload_entries`` entries read from the in-memory tail of the log (storage only
on a miss). It starts optimistic (``next_index`` = the leader's last index + 1) and, while
probing, sends one request at a time; a conflict moves ``next_index`` to the follower's hint
(fast back-off) and probes again. On an RPC error it backs off for a heartbeat interval.
Every response is reported to the core as a notification; the engine decides commits.

When the entries a follower needs were purged, the stream sends the state machine's current
snapshot instead (``install_snapshot`` in chunks of ``snapshot_max_chunk_size``, one in flight,
each bounded by ``install_snapshot_timeout``). A lost chunk is sent again from the same
offset; a chunk the follower refuses (it lost what came before) restarts the transfer. Then
replication continues after the snapshot's last log id.

Commit-only updates ride on the next data request or heartbeat: the commit index matters to
followers for apply only, and the leader answers its clients itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import itertools

from ..errors import LogCompacted, RemoteError, RPCError, StorageError
from ..types import AppendEntriesRequest, InstallSnapshotRequest, LogId, NodeId, RPCOption, Vote
from . import snapshot_io
from .messages import Failed, HigherVote, Progress

_read_tokens = itertools.count(1)

if TYPE_CHECKING:
    from ..network import RaftNetwork
    from .raft_core import RaftCore

log = logging.getLogger("openraft_py.replication")


class ReplicationCore:
    """One leader's stream to ``target``.

    Invariants: ``inflight`` counts requests sent and not answered; responses to requests of
    an older ``gen`` (sent before the last conflict or error) update nothing but acks and
    matching; ``next_index`` is the first index not yet sent in the current ``gen``.
    """

    def __init__(self, core: RaftCore, target: NodeId, client: RaftNetwork, vote: Vote, next_index: int) -> None:
        self.core = core
        self.target = target
        self.client = client
        self.vote = vote
        self.next_index = next_index
        self.matching: LogId | None = None
        self.has_matching = False
        self.last_index = -1
        self.committed: LogId | None = None
        self.inflight = 0
        self.gen = 0
        self.probing = True
        self.backing_off = False
        # The first request (a probe) goes out at once.
        self.heartbeat_due = True
        self.stopped = False
        # A snapshot transfer is running (it holds the one in-flight slot).
        self.snapshotting = False
        self._waiter: asyncio.Future[None] | None = None
        cfg = core.config
        self.max_inflight = cfg.max_inflight_requests
        self.max_entries = cfg.max_payload_entries
        ttl = max(cfg.heartbeat_interval * 4, cfg.election_timeout_min) / 1000.0
        self.option = RPCOption(hard_ttl=ttl, soft_ttl=ttl / 2)

    # -- from the core -------------------------------------------------------------------------

    def update(self, last_log_id: LogId | None, committed: LogId | None) -> None:
        """The leader's log now ends at ``last_log_id``; ``committed`` is committed."""
        self.last_index = -1 if last_log_id is None else last_log_id.index
        self.committed = committed
        self._wake()

    def heartbeat(self) -> None:
        """Send a request now, even an empty one."""
        self.heartbeat_due = True
        self._wake()

    def stop(self) -> None:
        """Stop sending; answers still in flight are reported with this stream's vote and
        ignored by a core that moved on."""
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send until stopped."""
        loop = asyncio.get_running_loop()
        while not self.stopped:
            self._pump()
            if self.stopped:
                break
            w = self._waiter = loop.create_future()
            await w

    def _pump(self) -> None:
        """Send as many requests as the pipeline allows."""
        core = self.core
        eng = core.engine
        # Nothing below awaits, so the log cannot be purged further during this call.
        purged = eng.state.log_ids.purged()
        purged_index = -1 if purged is None else purged[1]
        while not self.stopped and not self.backing_off and not self.snapshotting:
            leader = eng.leader
            if leader is None or leader.vote != self.vote:
                # Our leadership ended; the core stops us too. Never read the log past here:
                # a non-leader's log may be truncated.
                self.stopped = True
                return
            limit = 1 if self.probing else self.max_inflight
            if self.inflight >= limit:
                return
            start = self.next_index
            has_data = start <= self.last_index
            if not (has_data or self.heartbeat_due):
                return
            if start <= purged_index:
                # The entries this follower needs are gone: send the snapshot instead.
                self._start_snapshot()
                return
            prev_index = start - 1
            prev = None
            if prev_index >= 0:
                prev = eng.state.log_id_at(prev_index)
                if prev is None:
                    self._back_off()
                    return
            end = min(self.last_index + 1, start + self.max_entries) if has_data else start
            self.next_index = end
            self.heartbeat_due = False
            self.inflight += 1
            core._spawn(self._send(prev, start, end, self.committed, self.gen), f"append-{self.target}")

    def _still_leader(self) -> bool:
        leader = self.core.engine.leader
        return leader is not None and leader.vote == self.vote

    async def _send(self, prev: LogId | None, start: int, end: int, committed: LogId | None, gen: int) -> None:
        core = self.core
        # The log is append-only only while we lead: check right before every read, so
        # ``prev`` and the entries come from one and the same leader log.
        if not self._still_leader():
            self.inflight -= 1
            return
        entries = core.cache.get(start, end) if end > start else []
        if len(entries) < end - start:
            token = next(_read_tokens)
            core.storage_read_started(token, start + len(entries))
            try:
                rest = await core._read_entries(start + len(entries), end)
            except Exception as e:
                if not self._still_leader():
                    self.inflight -= 1
                    return
                if isinstance(e, StorageError) and isinstance(e.__cause__, LogCompacted):
                    # Purged after this request was planned: the follower needs a snapshot.
                    self.inflight -= 1
                    if gen == self.gen:
                        self.gen += 1
                        self.next_index = start
                        self._start_snapshot()
                    self._wake()
                    return
                raise
            finally:
                core.storage_read_done(token)
            if not self._still_leader():
                self.inflight -= 1
                return
            entries = entries + rest if entries else rest
        req = AppendEntriesRequest(self.vote, prev, entries, committed)
        sent_at = core.now_ms()
        try:
            resp = await self.client.append_entries(req, self.option)
        except Exception as e:  # noqa: BLE001 - RPCError by contract; anything else is treated alike
            self.inflight -= 1
            if isinstance(e, RPCError):
                log.debug("replication %s->%s failed: %s", core.id, self.target, e)
            else:
                log.warning("replication %s->%s: the network raised %r (expected an RPCError)", core.id, self.target, e)
            if gen == self.gen:
                self._restart(start)
                self._back_off()
            self._wake()
            return
        self.inflight -= 1
        if resp.success:
            m = resp.matching
            if not self.has_matching or (m is not None and (self.matching is None or m > self.matching)):
                self.matching = m
                self.has_matching = True
            core.notify(Progress(self.target, self.vote, self.matching, sent_at, True))
            if gen == self.gen:
                self.probing = False
        elif resp.vote != self.vote and not self.vote.is_ge(resp.vote):
            core.notify(HigherVote(self.target, self.vote, resp.vote))
            self.stopped = True
        else:
            core.notify(Progress(self.target, self.vote, None, sent_at, False))
            if gen == self.gen:
                floor = self.matching.index + 1 if self.matching is not None else 0
                self.gen += 1
                self.next_index = max(resp.conflict_hint, floor)
                self.probing = True
        self._wake()

    # -- snapshot transfer ---------------------------------------------------------------------

    def _start_snapshot(self) -> None:
        if self.snapshotting or self.stopped:
            return
        self.snapshotting = True
        self.inflight += 1
        self.core._spawn(self._send_snapshot(), f"snapshot-{self.target}")

    async def _send_snapshot(self) -> None:
        core = self.core
        cfg = core.config
        try:
            snap = await core.get_current_snapshot()
        except Exception as e:  # noqa: BLE001 - the state machine failed: fatal
            self._end_snapshot()
            core.notify(Failed(StorageError("reading the current snapshot", e)))
            return
        purged = core.engine.state.purged_log_id()
        if snap is None or snap.meta.last_log_id is None or (purged is not None and snap.meta.last_log_id < purged):
            if snap is not None:
                snapshot_io.close_quietly(snap.data)
            log.warning("replication %s->%s: no snapshot covers the purged log yet", core.id, self.target)
            self._end_snapshot()
            self._back_off()
            return
        data = snap.data
        meta = snap.meta
        ttl = cfg.install_snapshot_timeout / 1000.0
        option = RPCOption(hard_ttl=ttl, soft_ttl=ttl)
        chunk = cfg.snapshot_max_chunk_size
        pause = cfg.heartbeat_interval / 1000.0
        offset = 0
        try:
            size = await snapshot_io.call(data, snapshot_io.size)
            while not self.stopped and self._still_leader():
                buf = await snapshot_io.call(data, snapshot_io.read_at, offset, chunk)
                done = offset + len(buf) >= size
                req = InstallSnapshotRequest(self.vote, meta, offset, buf, done)
                sent_at = core.now_ms()
                try:
                    async with asyncio.timeout(ttl):
                        resp = await self.client.install_snapshot(req, option)
                except RemoteError as e:
                    log.debug("snapshot %s->%s refused at %d: %s; starting over", core.id, self.target, offset, e)
                    offset = 0
                    await core.clock.sleep(pause)
                    continue
                except (RPCError, TimeoutError) as e:
                    log.debug("snapshot %s->%s chunk at %d failed: %s; resending", core.id, self.target, offset, e)
                    await core.clock.sleep(pause)
                    continue
                if resp.vote != self.vote and not self.vote.is_ge(resp.vote):
                    core.notify(HigherVote(self.target, self.vote, resp.vote))
                    self.stopped = True
                    return
                if not done:
                    core.notify(Progress(self.target, self.vote, None, sent_at, False))
                    offset += len(buf)
                    continue
                m = meta.last_log_id
                if self.matching is None or m > self.matching:
                    self.matching = m
                self.has_matching = True
                core.notify(Progress(self.target, self.vote, self.matching, sent_at, True))
                self.gen += 1
                self.next_index = m.index + 1
                self.probing = True
                self.heartbeat_due = True
                return
        finally:
            snapshot_io.close_quietly(data)
            self._end_snapshot()

    def _end_snapshot(self) -> None:
        if self.snapshotting:
            self.snapshotting = False
            self.inflight -= 1
            self._wake()

    def _restart(self, failed_start: int) -> None:
        """Resend from the first index not known to match (after a failed request)."""
        self.gen += 1
        if self.has_matching:
            self.next_index = 0 if self.matching is None else self.matching.index + 1
        else:
            self.next_index = failed_start
        self.probing = True

    def _back_off(self) -> None:
        """Pause sending for one heartbeat interval."""
        if self.backing_off:
            return
        self.backing_off = True
        self.core._spawn(self._back_off_wait(), f"backoff-{self.target}")

    async def _back_off_wait(self) -> None:
        await self.core.clock.sleep(self.core.config.heartbeat_interval / 1000.0)
        self.backing_off = False
        self.heartbeat_due = True
        self._wake()

