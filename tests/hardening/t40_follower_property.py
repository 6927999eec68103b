"""Property test: one follower driven by random valid and malformed peer requests.

A single node (id 1, elections off so it stays a follower) in the membership ``{1, 2, 3}``
receives, in a random order:

- valid AppendEntries cut from a model leader log (any ``prev``, any length, the model's
  commit), which a model leader grows, and which a new model leader of a higher term may
  rewrite after the model's committed index;
- valid votes (pre-votes too) of random terms around the node's and random last log ids;
- snapshot chunks that are not installed (``done=False``, or ``done=True`` of what is
  already committed here), in or out of order;
- every kind of malformed request (``MALFORMED_*``), which must raise ``InvalidRequest``.

After every call it checks: the call returned within ``BOUND`` (no hang); the node still
runs; the log (on the node's ``MemDisk``) has no hole and no duplicate index and its terms
never decrease; committed entries never change and the committed index never decreases; a
successful AppendEntries left the node's log equal to the model's up to ``matching``.

Hypothesis prints the failing example and a ``@reproduce_failure`` blob. Bounded to run in
well under 30 s on a busy machine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from integration.checks import fast_config

from openraft_py import (
    ApiError,
    AppendEntriesRequest,
    AppendEntriesResponse,
    Blank,
    Entry,
    InstallSnapshotRequest,
    InvalidRequest,
    LogId,
    Membership,
    Normal,
    Raft,
    SnapshotMeta,
    StoredMembership,
    Vote,
    VoteRequest,
)
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine

from .bad_input_helpers import BOUND

pytestmark = pytest.mark.timeout(120)

M3 = Membership.new([{1, 2, 3}])
FIRST = Entry(LogId(0, 0), M3)


@dataclass
class Model:
    """The model leader: its log (``entries[i]`` at index ``i``), vote and committed index.
    Invariant: entries up to ``committed`` never change."""

    entries: list[Entry] = field(default_factory=lambda: [FIRST])
    term: int = 1
    leader: int = 2
    committed: int = 0

    def vote(self) -> Vote:
        return Vote.new(self.term, self.leader, True)

    def log_id(self, index: int) -> LogId | None:
        return None if index < 0 else self.entries[index].log_id

    def grow(self, n: int) -> None:
        for _ in range(n):
            i = len(self.entries)
            self.entries.append(Entry(LogId(self.term, i), Normal(f"{self.term}-{i}".encode())))

    def new_leader(self, node_term: int, keep: float) -> None:
        """A new leader of a higher term (than the model's and the node's): it keeps the
        committed entries and maybe more, then appends its blank entry."""
        self.term = max(self.term, node_term) + 1
        self.leader = 5 - self.leader
        n = max(self.committed, int(keep * (len(self.entries) - 1))) + 1
        del self.entries[n:]
        self.entries.append(Entry(LogId(self.term, n), Blank()))

    def request(self, prev_frac: float, count: int) -> AppendEntriesRequest:
        p = int(prev_frac * len(self.entries)) - 1
        p = max(-1, min(p, len(self.entries) - 1))
        ents = self.entries[p + 1 : p + 1 + count]
        return AppendEntriesRequest(self.vote(), self.log_id(p), ents, self.log_id(self.committed))


fracs = st.floats(0, 1)
ops = st.one_of(
    st.tuples(st.just("append"), fracs, st.integers(0, 8)),
    st.tuples(st.just("grow"), st.integers(1, 6)),
    st.tuples(st.just("commit"), fracs),
    st.tuples(st.just("new_leader"), fracs),
    st.tuples(st.just("vote"), st.integers(-2, 2), fracs, st.booleans(), st.sampled_from([2, 3])),
    st.tuples(st.just("chunk"), st.sampled_from(["first", "next", "gap", "done_committed"]), st.binary(max_size=16)),
    st.tuples(st.just("bad_append"), st.integers(0, 11), fracs, st.integers(1, 6)),
    st.tuples(st.just("bad_vote"), st.integers(0, 5)),
    st.tuples(st.just("bad_chunk"), st.integers(0, 5)),
)


def malformed_append(model: Model, kind: int, prev_frac: float, count: int) -> AppendEntriesRequest:
    req = model.request(prev_frac, count)
    ents = list(req.entries)
    v = req.vote
    prev = req.prev_log_id
    if not ents:
        p = -1 if prev is None else prev.index
        ents = [Entry(LogId(model.term, p + 1), Normal(b"n"))]
    last = ents[-1].log_id
    if kind == 0:  # a repeated index
        ents.append(ents[-1])
    elif kind == 1:  # a gap
        ents.append(Entry(LogId(last.term, last.index + 2), Normal(b"g")))
    elif kind == 2:  # an index going back
        ents.append(Entry(LogId(last.term, last.index), Normal(b"b")))
    elif kind == 3:  # a term going down (or below zero)
        ents.append(Entry(LogId(last.term - 1, last.index + 1), Normal(b"d")))
    elif kind == 4:  # a term above the vote's
        ents.append(Entry(LogId(v.term + 1, last.index + 1), Normal(b"a")))
    elif kind == 5:  # a payload that is not bytes
        ents.append(Entry(LogId(last.term, last.index + 1), Normal("s")))  # type: ignore[arg-type]
    elif kind == 6:  # a term the compiled kernels could not hold
        return AppendEntriesRequest(Vote.new(2**63 - 1, v.leader_id.node_id, True), prev, ents, None)
    elif kind == 7:  # prev not a LogId
        return AppendEntriesRequest(v, (0, 0), ents, None)  # type: ignore[arg-type]
    elif kind == 8:  # a membership whose voter has no node
        ents.append(Entry(LogId(last.term, last.index + 1), Membership((frozenset({1, 9}),), dict(M3.nodes))))
    elif kind == 9:  # the first entry not right after prev
        ents = [Entry(LogId(e.log_id.term, e.log_id.index + 1), e.payload) for e in ents]
    elif kind == 10:  # leader_commit not a LogId
        return AppendEntriesRequest(v, prev, ents, 3)  # type: ignore[arg-type]
    else:  # the entries not a list
        return AppendEntriesRequest(v, prev, None, None)  # type: ignore[arg-type]
    return AppendEntriesRequest(v, prev, ents, req.leader_commit)


def malformed_vote(model: Model, kind: int) -> VoteRequest:
    v = Vote.new(model.term + 1, 3)
    last = model.entries[-1].log_id
    return [
        VoteRequest(Vote.new(model.term + 1, 3, True), last),  # a committed candidate vote
        VoteRequest(Vote.new(2**63 - 1, 3), last),
        VoteRequest(v, LogId(model.term + 2, last.index)),  # last log id above the vote's term
        VoteRequest(v, last, None),  # type: ignore[arg-type]
        VoteRequest(Vote.new(model.term + 1, -3), last),
        VoteRequest(v, (last.term, last.index)),  # type: ignore[arg-type]
    ][kind]


def malformed_chunk(model: Model, kind: int) -> InstallSnapshotRequest:
    meta = SnapshotMeta(model.log_id(model.committed), StoredMembership(LogId(0, 0), M3), "bad")
    v = model.vote()
    return [
        InstallSnapshotRequest(v, meta, -1, b"x", False),
        InstallSnapshotRequest(v, meta, 0, "x", False),  # type: ignore[arg-type]
        InstallSnapshotRequest(v, None, 0, b"x", False),  # type: ignore[arg-type]
        InstallSnapshotRequest(v, meta, 0, b"x", 1),  # type: ignore[arg-type]
        InstallSnapshotRequest(Vote.new(2**63 - 1, 2, True), meta, 0, b"x", False),
        InstallSnapshotRequest(
            v, SnapshotMeta(model.log_id(model.committed), StoredMembership(LogId(model.term + 1, 0), M3), "m"), 0, b"", False
        ),
    ][kind]


class Follower:
    """The node under test and what the checks remember across calls."""

    def __init__(self, raft: Raft, disk: MemDisk) -> None:
        self.raft = raft
        self.disk = disk
        self.committed_entries: dict[int, Entry] = {}
        self.committed_index = -1
        self.snapshot_offset = 0
        self.snapshot_id = 0

    async def call(self, method: str, req: Any, *allowed: type[BaseException]) -> Any:
        try:
            return await asyncio.wait_for(getattr(self.raft, method)(req), BOUND)
        except TimeoutError:
            raise AssertionError(f"{method}({req!r}) did not return within {BOUND}s") from None
        except allowed:
            return None

    async def refused(self, method: str, req: Any) -> None:
        try:
            await asyncio.wait_for(getattr(self.raft, method)(req), BOUND)
        except InvalidRequest:
            return
        except TimeoutError:
            raise AssertionError(f"{method}({req!r}) did not return within {BOUND}s") from None
        raise AssertionError(f"{method}({req!r}) was not refused")

    def check(self) -> None:
        m = self.raft.metrics
        assert m.running, f"the node stopped: {m.error}"
        d = self.disk
        prev_term = -1 if d.last_purged is None else d.last_purged.term
        for i, e in enumerate(d.entries):
            assert e.log_id.index == d.offset + i, f"hole or duplicate at position {i}: {d.entries!r}"
            assert e.log_id.term >= prev_term, f"term goes down at {e.log_id!r}"
            prev_term = e.log_id.term
        c = -1 if m.committed is None else m.committed.index
        assert c >= self.committed_index, f"committed went back from {self.committed_index} to {c}"
        self.committed_index = c
        for i, e in enumerate(d.entries):
            idx = d.offset + i
            if idx > c:
                break
            seen = self.committed_entries.setdefault(idx, e)
            assert seen == e, f"committed entry {idx} changed: {seen!r} -> {e!r}"

    def check_matches(self, model: Model, resp: AppendEntriesResponse) -> None:
        if not resp.success or resp.matching is None:
            return
        d = self.disk
        for idx in range(d.offset, resp.matching.index + 1):
            assert d.entries[idx - d.offset] == model.entries[idx], f"entry {idx} differs from the leader's"


async def drive(script: list[tuple[Any, ...]]) -> None:
    router = Router(seed=0)
    disk = MemDisk()
    config = fast_config(enable_elect=False)
    raft = await Raft.new(1, config, router.factory(1), MemLogStore(disk), MemStateMachine(disk), seed=1)
    router.register(1, raft)
    f = Follower(raft, disk)
    model = Model()
    model.entries.append(Entry(LogId(1, 1), Blank()))
    try:
        for op in script:
            kind = op[0]
            node_term = raft.metrics.current_term
            if kind == "append":
                resp = await f.call("append_entries", model.request(op[1], op[2]))
                event(f"append success={resp.success}")
                f.check()
                f.check_matches(model, resp)
                continue
            if kind == "grow":
                model.grow(op[1])
            elif kind == "commit":
                model.committed = max(model.committed, int(op[1] * (len(model.entries) - 1)))
            elif kind == "new_leader":
                model.new_leader(node_term, op[1])
            elif kind == "vote":
                _, delta, frac, pre, cand = op
                last = model.log_id(int(frac * len(model.entries)) - 1)
                term = max(0, node_term + delta, 0 if last is None else last.term)
                vresp = await f.call("vote", VoteRequest(Vote.new(term, cand), last, pre))
                event(f"vote pre={pre} granted={vresp.vote_granted}")
            elif kind == "chunk":
                _, how, data = op
                if how == "first":
                    f.snapshot_id += 1
                    f.snapshot_offset = 0
                off = {"first": 0, "next": f.snapshot_offset, "gap": f.snapshot_offset + 1}.get(how, f.snapshot_offset)
                committed = raft.metrics.committed
                done = how == "done_committed"
                last = committed if done else model.log_id(model.committed)
                meta = SnapshotMeta(last, StoredMembership(LogId(0, 0), M3), f"s{f.snapshot_id}")
                req = InstallSnapshotRequest(model.vote(), meta, off, data, done)
                accepted = await f.call("install_snapshot", req, ApiError) is not None
                event(f"chunk {how} accepted={accepted}")
                if accepted and how != "gap":
                    f.snapshot_offset = off + len(data)
            elif kind == "bad_append":
                await f.refused("append_entries", malformed_append(model, op[1], op[2], op[3]))
            elif kind == "bad_vote":
                await f.refused("vote", malformed_vote(model, op[1]))
            else:
                await f.refused("install_snapshot", malformed_chunk(model, op[1]))
            f.check()
        # The node still takes a whole valid log from a leader of a new term.
        model.new_leader(raft.metrics.current_term, 1.0)
        model.grow(2)
        resp = await f.call("append_entries", AppendEntriesRequest(model.vote(), None, model.entries, None))
        f.check()
        assert resp is not None and resp.success, resp
        f.check_matches(model, resp)
    finally:
        await raft.shutdown()


@settings(
    max_examples=300,
    deadline=10_000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(ops, min_size=1, max_size=40))
def test_follower_survives_random_valid_and_malformed_requests(script: list[tuple[Any, ...]]) -> None:
    asyncio.run(drive(script))
