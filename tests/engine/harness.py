"""A tiny deterministic network of Engines for multi-node engine tests (no asyncio).

``Network`` plays the runtime's part for every node: it runs the commands each engine emits
(storage writes into a per-node ``{index: Entry}`` log, flushed at once or on demand with
``flush``; ``Respond`` postponed until its ``when`` is flushed), turns ``SendVote`` and
``Replicate`` into RPCs (a ``Replicate`` carries exactly what to send: the harness only reads
the entries, as ``openraft_py/core/replication.py`` does), queues them in FIFO order and
routes every reply back to ``handle_vote_resp`` / ``handle_replication_result``. What the
leader sends next is the engine's decision (``engine/progress.py``), not the harness's.

Faults: ``drop(frm, to)`` cuts one direction of a link, ``isolate(n)`` every link of a node,
``recover()`` heals everything. An AppendEntries or its answer lost on a cut link is
reported to the leader as ``Unreachable`` at once (the RPC error a real network would raise
after its timeout); the leader then backs off until a ``tick`` a heartbeat interval later. Time moves only when a test says so (``advance``, ``tick``,
``campaign``). After every step ``validate()`` checks each ``RaftState`` plus the cross-node
safety properties (one leader per term, log matching, applied prefixes agree: the shared
checks of ``openraft_py.testing.invariants``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from openraft_py.config import Config
from openraft_py.engine import (
    OUTSIDE_WINDOW,
    AppendEntries,
    Conflict,
    Engine,
    EntriesPurged,
    Heartbeat,
    Matched,
    Rejected,
    Replicate,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    SendVote,
    StartReplication,
    StopReplication,
    TruncateLog,
    Unreachable,
)
from openraft_py.testing.invariants import check_applied_agree, check_election_safety, check_log_matching
from openraft_py.types import AppendEntriesRequest, Entry, LogId, Normal, Vote

from .helpers import make_engine, membership


def payload_entry(term: int, index: int, voters: Any) -> Entry:
    """The entry every node holds at ``(term, index)`` in an initial log (log matching)."""
    if (term, index) == (0, 0):
        return Entry(LogId(0, 0), membership(voters))
    return Entry(LogId(term, index), Normal(f"t{term}i{index}".encode()))


@dataclass
class Tx:
    """Where a reply goes: ``kind`` "vote", "append" or "heartbeat", from ``frm`` back to ``to``; for an
    append, the request, the ``Replicate`` generation it was planned in and its send time."""

    kind: str
    frm: int
    to: int
    req: Any = None
    gen: int = 0
    sent_at: float = 0.0


@dataclass
class Network:
    ids: tuple[int, ...] = (1, 2, 3)
    logs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    votes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    config: Config = field(default_factory=Config)
    auto_flush: bool = True
    now: float = 0.0

    def __post_init__(self) -> None:
        voters = set(self.ids)
        self.engines: dict[int, Engine] = {}
        self.entries: dict[int, dict[int, Entry]] = {}
        for n in self.ids:
            log = self.logs.get(n, [(0, 0)])
            self.engines[n] = make_engine(
                id=n, voters=voters, log=log, vote=self.votes.get(n, (0, 0)), seed=n, config=self.config
            )
            self.entries[n] = {i: payload_entry(t, i, voters) for t, i in log}
        self.queue: deque[tuple[int, int, str, Any, Tx | None]] = deque()
        self.cut: set[tuple[int, int]] = set()
        # Per leader: the session and the targets of its open replication channels.
        self.channels: dict[int, tuple[Vote, frozenset[int]] | None] = {n: None for n in self.ids}
        self.postponed: dict[int, list[Any]] = {n: [] for n in self.ids}
        self.applied: dict[int, list[Entry]] = {n: [] for n in self.ids}
        self.responses: dict[int, list[tuple[Any, Any]]] = {n: [] for n in self.ids}
        self.leaders: dict[int, int] = {}  # term -> the node that led it (ever)
        self.process()

    # -- faults and time --------------------------------------------------------------------

    def drop(self, frm: int, to: int) -> None:
        self.cut.add((frm, to))

    def isolate(self, n: int) -> None:
        for m in self.ids:
            if m != n:
                self.cut |= {(n, m), (m, n)}

    def recover(self) -> None:
        self.cut.clear()

    def advance(self, ms: float) -> None:
        self.now += ms

    def tick(self, n: int) -> None:
        self.engines[n].handle_tick(self.now)
        self.process()

    def campaign(self, n: int) -> None:
        """Let every leader lease and stickiness window expire, then ``n`` starts an election."""
        self.advance(self.config.election_timeout_max + 1)
        self.engines[n].elect(self.now)
        self.process()

    def client_write(self, n: int, data: bytes) -> LogId:
        first = self.engines[n].client_write([Normal(data)])
        self.process()
        return first

    def flush(self, n: int) -> None:
        eng = self.engines[n]
        eng.handle_io_flushed(eng.state.io.submitted)
        self.process()

    def leader(self) -> int | None:
        """The leader of the highest term among the nodes that think they lead."""
        ls = [n for n, e in self.engines.items() if e.leader is not None]
        return max(ls, key=lambda n: self.engines[n].state.vote.term) if ls else None

    # -- running commands --------------------------------------------------------------------

    def process(self) -> None:
        """Run every node's commands until none is left; then validate."""
        busy = True
        while busy:
            busy = False
            for n, eng in self.engines.items():
                flushed = eng.state.io.flushed
                ready = [c for c in self.postponed[n] if c.when <= flushed]
                self.postponed[n] = [c for c in self.postponed[n] if c.when > flushed]
                cmds = ready + eng.take_commands()
                busy |= bool(cmds)
                for c in cmds:
                    self.run_command(n, eng, c)
        self.validate()

    def run_command(self, n: int, eng: Engine, c: Any) -> None:
        log = self.entries[n]
        t = type(c)
        if t in (Respond, SendVote, SaveCommittedAndApply) and c.when is not None and c.when > eng.state.io.flushed:
            self.postponed[n].append(c)
        elif t is SaveVote:
            self.flushed_io(n, eng, c.io)
        elif t is AppendEntries:
            assert c.entries[0].log_id.index == len(log), f"n{n}: hole or overlap appending {c.entries!r}"
            log.update((e.log_id.index, e) for e in c.entries)
            self.flushed_io(n, eng, c.io)
        elif t is TruncateLog:
            keep = -1 if c.after is None else c.after.index
            for i in [i for i in log if i > keep]:
                del log[i]
            self.flushed_io(n, eng, c.io)
        elif t is SendVote:
            for target in c.targets:
                self.send(n, target, "vote_req", c.req)
        elif t is StartReplication:
            self.channels[n] = (c.vote, frozenset(c.targets))
        elif t is StopReplication:
            self.channels[n] = None
        elif t is Replicate:
            self.replicate(n, c)
        elif t is Heartbeat:
            self.heartbeat(n, c)
        elif t is SaveCommittedAndApply:
            applied = self.applied[n]
            applied.extend(log[i] for i in range(len(applied), c.committed.index + 1))
            eng.handle_applied(c.committed)
        elif t is Respond:
            tx = c.tx
            if isinstance(tx, Tx):
                self.send(n, tx.to, tx.kind + "_resp", c.value, tx)
            else:
                self.responses[n].append((tx, c.value))
        else:
            raise AssertionError(f"unknown command {c!r}")

    def flushed_io(self, n: int, eng: Engine, io: int) -> None:
        if self.auto_flush:
            eng.handle_io_flushed(io)

    def replicate(self, n: int, c: Replicate) -> None:
        """Send what ``c`` says, reading the entries from leader ``n``'s log store."""
        ch = self.channels[n]
        assert ch is not None and c.target in ch[1], f"n{n}: {c!r} without a channel"
        session = ch[0]
        log = self.entries[n]
        if any(i not in log for i in range(c.start, c.end)):
            self.engines[n].handle_replication_result(EntriesPurged(c.target, session, c.gen, c.start))
            return
        req = AppendEntriesRequest(session, c.prev, [log[i] for i in range(c.start, c.end)], c.committed)
        # The follower answers through this ``Tx``: from the target back to ``n``.
        self.send(n, c.target, "append_req", req, Tx("append", c.target, n, req, c.gen, self.now))

    def heartbeat(self, n: int, c: Heartbeat) -> None:
        """Send the heartbeat ``c`` beside the window (its answer is an ack only)."""
        ch = self.channels[n]
        assert ch is not None and c.target in ch[1], f"n{n}: {c!r} without a channel"
        req = AppendEntriesRequest(ch[0], c.prev, [], c.committed)
        self.send(n, c.target, "append_req", req, Tx("heartbeat", c.target, n, req, OUTSIDE_WINDOW, self.now))

    # -- messages ----------------------------------------------------------------------------

    def send(self, frm: int, to: int, kind: str, msg: Any, tx: Tx | None = None) -> None:
        if (frm, to) not in self.cut:
            self.queue.append((frm, to, kind, msg, tx))
        else:
            self.lost(kind, tx)

    def lost(self, kind: str, tx: Tx | None) -> None:
        """A message was lost on a cut link: an AppendEntries or its answer fails the
        leader's RPC (``Unreachable``); other messages are just gone."""
        if tx is not None and tx.kind == "append" and kind in ("append_req", "append_resp"):
            prev = tx.req.prev_log_id
            start = 0 if prev is None else prev.index + 1
            self.engines[tx.to].handle_replication_result(Unreachable(tx.frm, tx.req.vote, tx.gen, start))

    def deliver(self, limit: int | None = None) -> int:
        """Deliver queued messages (those now sent on a cut link are lost) in FIFO order; at
        most ``limit`` of them. Returns how many were handled."""
        done = 0
        while self.queue and (limit is None or done < limit):
            frm, to, kind, msg, tx = self.queue.popleft()
            if (frm, to) in self.cut:
                self.lost(kind, tx)
                self.process()
                continue
            done += 1
            eng = self.engines[to]
            if kind == "vote_req":
                eng.handle_vote_req(msg, Tx("vote", to, frm), self.now)
            elif kind == "append_req":
                eng.handle_append_entries(msg, tx, self.now)
            elif kind == "vote_resp":
                eng.handle_vote_resp(frm, msg, self.now)
            elif kind in ("append_resp", "heartbeat_resp"):
                self.on_append_resp(to, frm, msg, tx)  # type: ignore[arg-type]
            self.process()
        return done

    def on_append_resp(self, n: int, target: int, resp: Any, tx: Tx) -> None:
        """Report leader ``n``'s AppendEntries outcome, classified as the runtime does."""
        v = tx.req.vote
        if tx.kind == "heartbeat":
            if resp.vote != v and not v.is_ge(resp.vote):
                self.engines[n].handle_replication_result(Rejected(target, v, OUTSIDE_WINDOW, resp.vote))
            else:
                matching = resp.matching if resp.success else None
                self.engines[n].handle_replication_progress(target, v, matching, tx.sent_at)
            return
        if resp.success:
            r: Any = Matched(target, v, tx.gen, resp.matching, tx.sent_at)
        elif resp.vote != v and not v.is_ge(resp.vote):
            r = Rejected(target, v, tx.gen, resp.vote)
        else:
            prev = tx.req.prev_log_id
            r = Conflict(target, v, tx.gen, resp.conflict_hint, tx.sent_at, 0 if prev is None else prev.index + 1)
        self.engines[n].handle_replication_result(r)

    def stabilize(self, max_steps: int = 10_000) -> None:
        """Deliver until no message is left."""
        self.process()
        for _ in range(max_steps):
            if not self.deliver():
                return
        raise AssertionError("network did not stabilize")

    # -- invariants --------------------------------------------------------------------------

    def validate(self) -> None:
        for n, eng in self.engines.items():
            st = eng.state
            st.validate()
            log = self.entries[n]
            assert sorted(log) == list(range(st.last_index() + 1)), f"n{n}: log store has holes"
            for i, e in log.items():
                assert st.log_id_at(i) == e.log_id, f"n{n}: engine has {st.log_id_at(i)} at {i}, store {e!r}"
            if eng.leader is not None:
                check_election_safety(self.leaders, st.vote.term, n)
        # The logs have no holes (checked above): each is held from index 0.
        check_log_matching({n: (0, [log[i] for i in range(len(log))]) for n, log in self.entries.items()})
        check_applied_agree(self.applied)
