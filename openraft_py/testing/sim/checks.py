"""The simulator's checker: the Raft safety properties over the nodes' states, step after
step, built on the shared checks of ``openraft_py.testing.invariants`` plus the ones that need
the run's history (committed entries never change, nothing goes back, no double vote). See
``docs/design/simulation.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import Fatal, Stopped
from ...types import Entry, LogId, NodeId, Vote
from ..invariants import (
    Violation,
    check_compaction_order,
    check_election_safety,
    check_leader_completeness,
    check_log_matching,
)

if TYPE_CHECKING:
    from .simulation import Simulation

__all__ = ["Checker", "Violation"]


def _lane_key(rpc: str, source: NodeId, target: NodeId, req: Any) -> tuple[Any, ...]:
    """What names an AppendEntries seen by the router's hooks, the same before and after the
    wire codec decoded it (two alike in flight at once count as one)."""
    return (rpc, source, target, req.vote, req.prev_log_id, req.entries[-1].log_id if req.entries else None)


class Checker:
    """Checks the Raft safety properties over the nodes' states, step after step."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.leaders: dict[int, NodeId] = {}  # term -> leader
        # index -> (entry, term of the node that first saw it committed)
        self.committed: dict[int, tuple[Entry, int]] = {}
        self.applied: dict[int, tuple[LogId, bytes]] = {}
        self.last: dict[NodeId, tuple[int, int, int]] = {}  # boot, committed index, applied index
        self.votes: dict[NodeId, Vote] = {}
        self.applied_seen: dict[NodeId, tuple[Any, int]] = {}  # the list checked, how far
        self.membership: LogId | None = None  # the latest committed membership logged
        self.purged: dict[NodeId, int] = {}
        # (voter, term) -> the candidate it voted for, as seen on the wire: a granted vote
        # response, or a candidate's own vote request (it voted for itself).
        self.granted: dict[tuple[NodeId, int], NodeId] = {}
        self.pending: str | None = None
        # The heartbeat lane (stats only): each AppendEntries seen on the wire, by what names
        # it after decoding too (its lane, source, target, vote, prev_log_id, last log id),
        # -> the number of the request hook call that saw it leave (a request dropped on
        # the way stays here: a run's worth at most).
        self._sent_at: dict[tuple[Any, ...], int] = {}
        self._sends = 0
        # (source, target) -> the send number of the newest heartbeat handled by the target.
        self._beat_handled: dict[tuple[NodeId, NodeId], int] = {}

    def on_request(self, rpc: str, source: NodeId, target: NodeId, req: Any) -> None:
        """Router hook: a candidate asking for votes has voted for itself in that term; the
        AppendEntries of both lanes are numbered as they leave (``heartbeat_overtook``)."""
        if rpc == "vote" and not req.pre_vote:  # a pre-vote promises nothing
            self._voted(source, req.vote.term, req.vote.leader_id.node_id)
        elif rpc == "install_snapshot":
            self.sim._count("snapshot_chunk_sent" if req.offset == 0 else "snapshot_chunk_sent_later")
        elif rpc == "append_entries" or rpc == "heartbeat":
            if rpc == "heartbeat":
                self.sim._count("heartbeat_sent")
            self._sends += 1
            self._sent_at[_lane_key(rpc, source, target, req)] = self._sends

    def on_response(self, rpc: str, source: NodeId, target: NodeId, req: Any, resp: Any) -> None:
        """Router response hook: record every granted vote; count the heartbeats the target
        handled, and the requests of the window a heartbeat sent after them overtook
        (``heartbeat_overtook``: handled by the target before them)."""
        if rpc == "vote" and resp.vote_granted and not req.pre_vote:
            self._voted(target, req.vote.term, req.vote.leader_id.node_id)
        elif rpc == "append_entries" or rpc == "heartbeat":
            sent = self._sent_at.pop(_lane_key(rpc, source, target, req), None)
            if sent is None:
                return
            if rpc == "heartbeat":
                self.sim._count("heartbeat_handled")
                if sent > self._beat_handled.get((source, target), 0):
                    self._beat_handled[(source, target)] = sent
            elif self._beat_handled.get((source, target), 0) > sent:
                self.sim._count("heartbeat_overtook")

    def _voted(self, voter: NodeId, term: int, candidate: NodeId) -> None:
        prev = self.granted.setdefault((voter, term), candidate)
        if prev != candidate and self.pending is None:
            # Raised from a router hook the runtime would swallow: report at the next check.
            self.pending = f"n{voter} voted twice in term {term}: for n{prev} and for n{candidate}"
            self.sim.log(f"VIOLATION seen: {self.pending}")

    def check(self, where: str) -> None:
        """Check every property over the nodes' current states (``where`` names the step in
        the trace); raise ``Violation`` at the first one broken."""
        if self.pending is not None:
            raise Violation(self.pending)
        sim = self.sim
        c = sim.cluster
        for nid, raft in c.nodes.items():
            core = raft._core
            if core.fatal is not None and not isinstance(core.fatal, Stopped):
                raise Violation(f"node {nid} failed: {core.fatal!r}")
            eng = core.engine
            st = eng.state
            try:
                st.validate()
            except Fatal as err:
                raise Violation(str(err)) from err
            # Election safety.
            if eng.leader is not None:
                check_election_safety(self.leaders, st.vote.term, nid)
            # Monotonic per incarnation: committed, applied; the vote across restarts too.
            boot = sim.boots[nid]
            ci = st.committed_index()
            ai = -1 if st.applied is None else st.applied.index
            # Log compaction: only what a snapshot covers is purged, a snapshot covers only
            # applied entries, and only committed entries are applied.
            purged = st.purged_log_id()
            pi = -1 if purged is None else purged.index
            if pi > self.purged.get(nid, -1):
                sim._count("purge")
            self.purged[nid] = pi
            check_compaction_order(nid, purged, st.snapshot, st.applied, ci)
            old = self.last.get(nid)
            if old is not None and old[0] == boot and (ci < old[1] or ai < old[2]):
                raise Violation(f"n{nid} went back: committed {old[1]}->{ci} applied {old[2]}->{ai}")
            self.last[nid] = (boot, ci, ai)
            # A vote that was never durable may be lost by a crash (nothing depended on it);
            # a durable one never goes back, even across restarts.
            fv = st.io.flushed_vote
            v = self.votes.get(nid)
            if v is not None and not fv.is_ge(v):
                raise Violation(f"n{nid} durable vote went backward: {v!r} -> {fv!r}")
            self.votes[nid] = fv
            disk = c.disks[nid]
            # Committed entries never change.
            log = disk.entries
            off = disk.offset
            for i in range(max(off, ci - 64 if ci - 64 > 0 else 0), ci + 1):
                k = i - off
                if k < 0 or k >= len(log):
                    continue
                e = log[k]
                seen = self.committed.get(i)
                if seen is None:
                    self.committed[i] = (e, st.vote.term)
                elif seen[0] != e:
                    raise Violation(f"committed entry at {i} changed: {seen[0]!r} then {e!r} on n{nid}")
            # The same on disk: the stored snapshot covers the purged entries.
            dsnap = disk.snapshot
            dpi = -1 if disk.last_purged is None else disk.last_purged.index
            dsi = -1 if dsnap is None or dsnap[0].last_log_id is None else dsnap[0].last_log_id.index
            if dpi > dsi:
                raise Violation(f"n{nid}: the log is purged up to {dpi} on disk but the snapshot covers only {dsi}")
            # State machine safety (the applied log of Normal entries). A snapshot carries
            # the applied log: after an install it is a new list, checked from its start.
            alog = disk.applied_log
            seen_list, start = self.applied_seen.get(nid, (None, 0))
            if seen_list is not alog or start > len(alog):
                if seen_list is not None and seen_list is not alog:
                    sim._count("snapshot_installed")
                start = 0
            for lid, data in alog[start:]:
                seen2 = self.applied.get(lid.index)
                if seen2 is None:
                    self.applied[lid.index] = (lid, data)
                elif seen2 != (lid, data):
                    raise Violation(f"n{nid} applied {lid!r} {data!r} at {lid.index}, another node applied {seen2!r}")
            self.applied_seen[nid] = (alog, len(alog))
            # Note membership changes in the trace (the latest committed one any node knows).
            cm = st.membership.committed
            if cm.log_id is not None and (self.membership is None or cm.log_id > self.membership):
                if self.membership is not None:
                    sim._count("membership_change")
                self.membership = cm.log_id
                m = cm.membership
                sim.log(
                    f"membership committed at {cm.log_id!r} (seen by n{nid}): voters "
                    f"{[sorted(x) for x in m.configs]} learners {sorted(m.learner_ids())}"
                )
        self._check_logs()

    def _check_logs(self) -> None:
        c = self.sim.cluster
        logs = {nid: (d.offset, d.entries) for nid, d in c.disks.items()}
        for nid, raft in c.nodes.items():
            eng = raft._core.engine
            if eng.leader is not None:
                check_leader_completeness(nid, eng.state.vote.term, logs[nid], self.committed)
        check_log_matching(logs)
