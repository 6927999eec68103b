"""A node started on an empty data directory votes only once it holds what the cluster committed.

A voter whose data directory was lost (a replaced disk, ``rm -rf``) and that is started again
under the same id has forgotten its vote and every entry it acknowledged. If it voted at
once, its empty log would make any candidate look up to date, and a committed write could
be lost::

    W commits on {1, 2} while 3 is cut off; 2's directory is wiped and 2 restarts;
    1 is cut off; 3 (without W) asks 2 for its vote: granted, 3 leads, W is gone.

The node cannot tell, from its empty directory, a wiped voter from a new node (and ``serve``
is given no list of peers to ask). So every node that ``serve`` starts on an empty data
directory starts *catching up* (``CatchUpGuard``), recorded in ``<data-dir>/catching-up.json``
so that a restart does not end it:

- it grants no vote and no pre-vote, except to a candidate whose log is the initial
  membership alone (last log index 0: the first election of a cluster being initialized,
  where every voter but one is new and must vote), and to the candidate its last grant went
  to (recorded before the answer leaves) asking again with the log it had then, or with
  that log followed by entries of that vote's term, those of a leader elected with it: its
  blank entry, then the writes it took (``CatchUpGuard.continues``: a new cluster's first
  leader, elected past term 1 or with votes not all recorded, lost before it committed);
- it asks no one for a vote (its vote requests are not sent): it cannot lead;
- it takes entries and snapshots from a leader as any follower does. The first
  AppendEntries whose leader has committed an entry of its own term gives the *target*: the
  leader's committed index then (that leader holds every entry committed before, so the
  target covers every write acknowledged before the node came back). A leader of the first
  term gives it at once (``FIRST_TERM``): nothing was committed before it, so a new
  cluster's nodes end catching up with their first AppendEntries (they held up every
  election after the first leader was lost before it committed, and for good: each
  candidate's log was past the initial membership, and no node caught up). A vote the node
  grants in the first election (term 1, a candidate holding the initial membership alone)
  ends it too, before the answer leaves: only a new cluster's first election asks for one,
  so the node is new and nothing was committed (a first leader lost before its first
  AppendEntries reached anyone was refused by all the others otherwise). Once the node's own
  committed index reaches the target, it has every such entry; the record is removed and
  the node votes again as any voter.

A node that ``POST /cluster/init`` initializes stops catching up at once (it starts a new
cluster): its record is removed before ``initialize`` writes the first membership
(``KvNode.init``), so a node killed in between is not left initialized and catching up, which
no election could end (the other members, new, hold no membership to campaign with). Abstaining is always safe in Raft; what it costs is availability: a cluster that
needs the node's vote (3 voters, one down, one wiped) elects no leader until the node that
is down comes back. That is the point: the other choice may lose acknowledged writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec

from ..failure_log import FailureLog
from ..metrics import RaftMetrics
from ..network.tcp import ServedRaft
from ..storage.rocks.files import replace_durably
from ..types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    NodeId,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from ..validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM
from .identity import DataDirMismatch, NoRecordFile, read_record_file

__all__ = ["CATCHING_UP_FILE", "FIRST_TERM", "CatchUpGuard", "CatchingUp", "GrantedVote", "GuardedRaft"]

FIRST_TERM = 1
"""The term of a cluster's first leader: terms start at 0, where no node leads, and only an
election raises one. A leader of this term is the only one the cluster ever had (a forced
recovery starts a later term), so its committed index is every commit there was, even
before it committed an entry of its own (a later leader's may lag its predecessors')."""

log = logging.getLogger("openraft_py.kv")

CATCHING_UP_FILE = "catching-up.json"
"""The record, in the data directory, of a node that is catching up (``CatchUpGuard``)."""


class GrantedVote(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """The last vote (not a pre-vote) a node catching up granted: of ``term``, to
    ``candidate``, whose last log id was then ``last_log`` (``CatchUpGuard.continues``)."""

    term: int
    candidate: NodeId
    last_log: LogId | None


class CatchingUp(msgspec.Struct, forbid_unknown_fields=True):
    """The record: ``target`` is the committed index the node must reach before it votes
    (``None`` until a leader that committed in its own term has told it); ``granted``, the
    last vote it granted while catching up (``None``: none, or a record of an older
    version)."""

    target: int | None = None
    granted: GrantedVote | None = None


def _check_ranges(rec: CatchingUp) -> None:
    """``msgspec.DecodeError`` unless ``rec``'s numbers are ones a node writes: the target
    ``None``, ``-1`` (nothing committed) or a log index; a granted vote's term, candidate
    and last log id in their ranges. A record with others is damaged: a target below ``-1``
    read as caught up (``caught_up``: ``t < 0``), and the node voted at once."""
    if rec.target is not None and not -1 <= rec.target <= MAX_INDEX:
        raise msgspec.DecodeError(f"its target {rec.target} is no committed index (-1 to 2**62 - 1), so the record "
                                  "is damaged")
    g = rec.granted
    if g is None:
        return
    last = g.last_log
    if not (0 <= g.term <= MAX_TERM and 0 <= g.candidate <= MAX_NODE_ID
            and (last is None or (0 <= last.term <= MAX_TERM and 0 <= last.index <= MAX_INDEX))):
        raise msgspec.DecodeError(f"its granted vote {msgspec.json.encode(g).decode()} is out of range (term, "
                                  "candidate id, last log id), so the record is damaged")


def _encode(target: int | None, granted: GrantedVote | None) -> bytes:
    """The record's bytes: ``{"target": ...}``, with ``"granted"`` only when there is one (a
    record without it reads as before)."""
    rec: dict[str, object] = {"target": target}
    if granted is not None:
        rec["granted"] = granted
    return msgspec.json.encode(rec) + b"\n"


class CatchUpGuard:
    """Whether the node of ``data_dir`` is catching up (see the module docstring), and the
    record of it. ``active``: catching up (it neither votes nor campaigns); ``target``: the
    committed index that ends it, once known. Built by ``load``."""

    def __init__(self, data_dir: Path, node_id: NodeId, active: bool, target: int | None,
                 granted: GrantedVote | None = None) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self.active = active
        self.target = target
        self.granted = granted
        """The last vote granted while catching up (``continues``), as recorded."""
        self._refused = 0  # vote requests refused since the start
        self._refusals = FailureLog(log, f"node {node_id}", unit="refused vote request")
        """Logs the refusals: one WARNING, again every 5 minutes while they go on."""

    @classmethod
    def load(cls, data_dir: Path, node_id: NodeId, new: bool) -> CatchUpGuard:
        """The guard of ``data_dir``: a ``new`` directory (empty at this start) gets its record
        now, durably (before the node can answer anything); otherwise the record left by an
        earlier start, if any. ``DataDirMismatch`` for a record that cannot be read, also one
        that is no file (a directory, a link to nothing or to itself). Blocking: call it in a
        worker thread."""
        path = data_dir / CATCHING_UP_FILE
        if new:
            replace_durably(str(path), _encode(None, None))
            return cls(data_dir, node_id, True, None)
        try:
            # (A directory or a dangling link there is a record that cannot be read, not
            # none: taken for none, the node voted at once while still catching up.)
            raw = read_record_file(path)
            if raw is None:
                return cls(data_dir, node_id, False, None)
            rec = msgspec.json.decode(raw, type=CatchingUp)
            _check_ranges(rec)
        except (NoRecordFile, msgspec.DecodeError) as e:
            raise DataDirMismatch(
                f"{path} is not a readable record ({e}): it says node {node_id} started on an empty data directory "
                f"and has not caught up with its cluster yet; restore it, or write {{}} into it (the node then "
                "catches up again before it votes)"
            ) from None
        return cls(data_dir, node_id, True, rec.target, rec.granted)

    def may_vote_for(self, req: VoteRequest, vote: Vote | None = None) -> bool:
        """Whether the node may answer ``req`` as any voter would: it is not catching up,
        the candidate's log is the initial membership alone (a cluster's first election), or
        the request continues the vote the node holds (``continues``; ``vote``: the node's
        vote now)."""
        return (not self.active or req.last_log_id is None or req.last_log_id.index == 0
                or (vote is not None and self.continues(req, vote)))

    def continues(self, req: VoteRequest, vote: Vote) -> bool:
        """Whether ``req`` comes from the candidate the node's ``vote`` went to while catching
        up (``granted``: the vote is that grant, or that candidate's leadership it heard of
        since), with the log it had then, or with a last log id of the vote's term past it:
        that log followed by what a leader of that term elected with it appends (its blank
        entry, then the client writes it takes), and nothing of a later term.

        Every grant of a node catching up goes back, through this rule, to one it made since
        its directory was last emptied (the record goes with it) to a candidate holding the
        initial membership alone. Outside the gap of that exception (a candidate holding it
        alone after a leader existed, ``docs/design/kv-service.md``), no leader existed
        then: the node had acknowledged no entry before it was emptied, it forgot nothing
        that counted, and it answers from then on as a voter that lost nothing (the engine
        still compares the logs), so Raft's own argument holds. In the gap, the exception
        already lets a candidate lacking committed entries win; this rule lets the one
        candidate through again, its log grown by entries of that vote's term alone.
        Without this rule, a new cluster's first leader of a term past ``FIRST_TERM`` (its
        first election failed: ``learn_first_vote`` does not apply) lost before it committed
        (its first AppendEntries reached no one, or too few, or only nodes whose answers
        were lost) was refused by the other nodes for good: its log holds its blank entry,
        and a client write it took after it, and they do not campaign. Likewise a node
        restarted between its vote in the first election and the end of its catching up."""
        g = self.granted
        if g is None or vote.leader_id.term != g.term or vote.leader_id.node_id != g.candidate:
            return False
        if req.vote.leader_id.node_id != g.candidate or req.vote.term < g.term:
            return False
        last = req.last_log_id
        if last == g.last_log:
            return True
        # A leader elected with the granted log writes its entries after it, from ``first``
        # on; an entry of the vote's term at or below the granted log's end is another
        # leader's of that term (elected without this vote): refused.
        first = 0 if g.last_log is None else g.last_log.index + 1
        return last is not None and last.term == g.term and last.index >= first

    def learn_grant(self, req: VoteRequest, resp: VoteResponse) -> bool:
        """Take ``req`` as the last vote granted (``granted``) if it is a vote (not a
        pre-vote) the node granted; whether it did (the caller records it, unless another
        write of the record is under way: a restart then forgets it, and ``continues``,
        which wants the node's vote to be this grant, refuses that candidate: never more)."""
        if not resp.vote_granted or req.pre_vote:
            return False
        self.granted = GrantedVote(req.vote.term, req.vote.leader_id.node_id, req.last_log_id)
        return True

    def refusal(self, req: VoteRequest, metrics: RaftMetrics) -> VoteResponse:
        """The answer to a vote request the node may not grant: not granted, with the node's
        vote as it is (a candidate adopts it only if it is higher: as from any voter)."""
        self._refused += 1
        self._refusals.failed(
            asyncio.get_running_loop().time(), "catching up",
            f"refused the {'pre-vote' if req.pre_vote else 'vote request'} of node {req.vote.leader_id.node_id} "
            f"(term {req.vote.term}, last log {req.last_log_id!r}): this node started on an empty data directory "
            f"and has not caught up with the cluster yet ({self.describe(metrics)}), and votes only once it holds "
            "every entry the cluster committed (its lost data may have held some that the candidate lacks). If the "
            "cluster cannot elect a leader without this node and you know the candidates hold every acknowledged "
            f"write (a two-node cluster whose other node kept its data), stop this node, remove "
            f"{self.data_dir / CATCHING_UP_FILE} and start it again")
        return VoteResponse(metrics.vote, False, None, req.pre_vote)

    def ended(self, now: float) -> None:
        """The catching up ended: ends the refusals' streak in the log."""
        self._refusals.cleared(now, "votes again")

    def describe(self, metrics: RaftMetrics) -> str:
        """How far the node is: ``committed index 3 of 57`` or ``no leader heard from yet``."""
        committed = metrics.committed.index if metrics.committed is not None else -1
        if self.target is None:
            return f"committed index {committed}, no leader that committed in its term heard from yet"
        return f"committed index {committed} of {self.target}"

    def campaign_refusal(self) -> str | None:
        """Why the node may not ask for votes now (its vote requests are not sent), or ``None``."""
        if not self.active:
            return None
        return (f"node {self.node_id} does not campaign: it started on an empty data directory and has not caught "
                "up with the cluster yet")

    def learn_target(self, req: AppendEntriesRequest) -> bool:
        """Take the target from ``req`` if it is the first from a leader that committed an
        entry of its own term (its committed index then covers every earlier commit), or
        from a leader of the first term (``FIRST_TERM``: no leader came before it, so its
        committed index, ``-1`` for none, is every commit there was); whether it did (the
        caller records it)."""
        lc = req.leader_commit
        if self.target is not None:
            return False
        if lc is not None and lc.term == req.vote.term:
            self.target = lc.index
        elif req.vote.term == FIRST_TERM:
            self.target = -1 if lc is None else lc.index
        else:
            return False
        return True

    def learn_first_vote(self, req: VoteRequest, resp: VoteResponse) -> bool:
        """Take the target ``-1`` (nothing committed) if the node granted ``req``, a vote
        (not a pre-vote) of the first term (``FIRST_TERM``) for a candidate whose log is the
        initial membership alone; whether it did (the caller records it).

        Only a cluster's first election asks for such a vote: only an initialized node holds
        a membership without a leader's entries, and any other node that can campaign holds
        a vote of term 1 or later (a leader's entries came with it; a forced recovery writes
        a later term and an entry past 0), so it asks in term 2 or later. The initialized
        node sends its term-1 requests before it can lead, so nothing was committed when
        this one was sent; and the transport delivers a request only on the connection it
        was written to (no resend), so a node wiped since does not receive it. The node
        forgot nothing that counted, and its vote, now durable, is its own: from here it
        remembers all it did, as any voter. (A second cluster initialized with this node's
        id, address and cluster name would end it too, as its first leader's AppendEntries
        already did.) Without this, a first leader lost before its first AppendEntries
        reached anyone (it crashed, or campaigned again) was refused by every other node (its
        log holds its term's first entry, past the initial membership), none of which
        campaigns while catching up: no leader, for good."""
        if self.target is not None or not resp.vote_granted or req.pre_vote or req.vote.term != FIRST_TERM:
            return False
        if req.last_log_id is not None and req.last_log_id.index > 0:
            return False
        self.target = -1
        return True

    def caught_up(self, metrics: RaftMetrics) -> bool:
        """Whether the node's committed index reached the target."""
        t = self.target
        return t is not None and (t < 0 or (metrics.committed is not None and metrics.committed.index >= t))

    def caught_up_by(self, req: AppendEntriesRequest, resp: AppendEntriesResponse) -> bool:
        """Whether the node holds the target committed once ``req`` was answered ``resp``:
        its log matches the leader's up to ``resp.matching``, and the leader committed up to
        ``req.leader_commit``. Ends the catching up with the request that taught the target,
        without waiting for the metrics of it (or for the next heartbeat)."""
        lc = req.leader_commit
        t = self.target
        if t is None or not resp.success:
            return False
        return t < 0 or (resp.matching is not None and lc is not None and min(lc.index, resp.matching.index) >= t)

    def save(self) -> None:
        """Write the record with the target, durably. Blocking: call it in a worker thread."""
        replace_durably(str(self.data_dir / CATCHING_UP_FILE), _encode(self.target, self.granted))

    def remove(self) -> None:
        """Remove the record, durably (the directory is fsynced). Blocking: call it in a
        worker thread."""
        try:
            os.unlink(self.data_dir / CATCHING_UP_FILE)
        except FileNotFoundError:
            pass
        fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class GuardedRaft:
    """What the node's ``TcpServer`` serves: its ``Raft``, with the vote requests a catching-up
    node may not grant refused (``CatchUpGuard``), and each AppendEntries and snapshot
    watched for the end of the catching up. A node that is not catching up costs one
    attribute test per request."""

    def __init__(self, raft: ServedRaft, guard: CatchUpGuard) -> None:
        self.raft = raft
        self.guard = guard
        self._writing = False  # a record update is being written (one at a time)

    @property
    def metrics(self) -> RaftMetrics:
        """The node's metrics."""
        return self.raft.metrics

    def append_entries(self, req: AppendEntriesRequest) -> Coroutine[Any, Any, AppendEntriesResponse]:
        """``Raft.append_entries``; while catching up, then looks for the target and its end."""
        if not self.guard.active:
            return self.raft.append_entries(req)
        return self._append_catching_up(req)

    async def _append_catching_up(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        resp = await self.raft.append_entries(req)
        learned = self.guard.learn_target(req)
        await self._progress(learned, self.guard.caught_up_by(req, resp))
        return resp

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        """``Raft.install_snapshot``; while catching up, then looks for its end."""
        resp = await self.raft.install_snapshot(req)
        if self.guard.active:
            await self._progress(False)
        return resp

    async def vote(self, req: VoteRequest) -> VoteResponse:
        """``Raft.vote``, unless the node is catching up and the candidate's log is past the
        initial membership, and the request does not continue the node's last grant
        (``CatchUpGuard.continues``): then refused (``CatchUpGuard.refusal``). A vote granted
        while catching up is recorded (``CatchUpGuard.learn_grant``), and one granted in the
        first election ends the catching up (``CatchUpGuard.learn_first_vote``), before the
        answer leaves (``Raft.vote`` returns once the vote is durable)."""
        g = self.guard
        if not g.may_vote_for(req, self.raft.metrics.vote):
            return g.refusal(req, self.raft.metrics)
        resp = await self.raft.vote(req)
        if g.active:
            first = g.learn_first_vote(req, resp)
            granted = g.learn_grant(req, resp)
            await self._progress(granted or first, keep=granted)
        return resp

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        """``Raft.handle_transfer_leader``; ignored while catching up: the node could not
        win (its vote requests are not sent, ``CatchUpGuard.campaign_refusal``), and the
        election would only raise its term, which deposes the leader once it hears of it.
        The leader's transfer expires and it takes writes again."""
        if self.guard.active:
            log.info("node %s: ignored the leadership transfer of node %s to node %s: this node is catching up "
                     "with the cluster (%s) and does not campaign", self.guard.node_id,
                     req.from_leader.leader_id.node_id, req.to, self.guard.describe(self.raft.metrics))
            return
        await self.raft.handle_transfer_leader(req)

    async def _progress(self, learned: bool, reached: bool = False, keep: bool = False) -> None:
        """Record a target (or a grant) just learned; end the catching up once the node
        reached it (``reached``: a request's answer showed it). ``keep``: record what was
        learned even then, before the record is removed (a grant: a node stopped between the
        two still holds it when it starts again, ``CatchUpGuard.continues``)."""
        g = self.guard
        if self._writing or not g.active:
            return
        self._writing = True
        try:
            if reached or g.caught_up(self.raft.metrics):
                if keep:
                    await asyncio.to_thread(g.save)
                await asyncio.to_thread(g.remove)
                g.active = False
                g.ended(asyncio.get_running_loop().time())
                if g.target is not None and g.target < 0:
                    log.info("node %s: caught up with the cluster: a new cluster's first term, nothing committed "
                             "before it: it may vote now", g.node_id)
                else:
                    log.info("node %s: caught up with the cluster (it holds committed index %s, the cluster's when "
                             "this node started on an empty data directory): it may vote now", g.node_id, g.target)
            elif learned:
                await asyncio.to_thread(g.save)
        finally:
            self._writing = False
