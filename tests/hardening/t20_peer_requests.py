"""Requests from peers (``append_entries``, ``vote``, ``install_snapshot``,
``handle_transfer_leader``): a malformed one is refused with ``InvalidRequest`` at once and
the node keeps running with its log intact (``docs/design/bad-input.md``, "Peer requests").

Each case builds its request from the live cluster: ``v`` is the leader's committed vote,
``t`` its term, ``L`` the follower's last log id (so a request differs from an acceptable
one only in what the case breaks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from integration.checks import write_on_leader

from openraft_py import (
    MAX_INDEX,
    MAX_NODE_ID,
    MAX_TERM,
    AppendEntriesRequest,
    BasicNode,
    Blank,
    Entry,
    Fatal,
    InstallSnapshotRequest,
    InvalidRequest,
    LogId,
    Membership,
    Normal,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
)
from openraft_py.testing.cluster import Cluster
from openraft_py.types import EMPTY_STORED_MEMBERSHIP

from .bad_input_helpers import assert_healthy, last_log_id, leader_and_follower, leader_vote, refused, three

__all__ = ["three"]

pytestmark = pytest.mark.timeout(30)

Build = Callable[[Vote, LogId], Any]


def ae(vote: Vote, prev: Any, entries: Any, commit: Any = None) -> AppendEntriesRequest:
    return AppendEntriesRequest(vote, prev, entries, commit)


def ent(term: int, index: int, payload: Any = None) -> Entry:
    return Entry(LogId(term, index), Normal(b"x") if payload is None else payload)


def nxt(L: LogId, *offsets: int, term: int | None = None, payload: Any = None) -> list[Entry]:
    """Entries at ``L.index + o`` for each offset, of term ``term`` (default ``L.term``)."""
    t = L.term if term is None else term
    return [ent(t, L.index + o, payload) for o in offsets]


M3 = Membership.new([{1, 2, 3}])

APPEND_CASES: dict[str, Build] = {
    # issue 9: a term the compiled kernels could not hold killed every node it reached
    "vote term 2**63-1": lambda v, L: ae(Vote.new(2**63 - 1, 2, True), L, []),
    "vote term MAX_TERM+1": lambda v, L: ae(Vote.new(MAX_TERM + 1, v.leader_id.node_id, True), L, []),
    "vote term 2**64": lambda v, L: ae(Vote.new(2**64, 2, True), L, []),
    "vote term negative": lambda v, L: ae(Vote.new(-1, 2, True), L, []),
    "vote term str": lambda v, L: ae(Vote.new("5", 2, True), L, []),  # type: ignore[arg-type]
    "vote term bool": lambda v, L: ae(Vote.new(True, 2, True), L, []),
    "vote node id negative": lambda v, L: ae(Vote.new(v.term, -2, True), L, []),
    "vote node id past MAX_NODE_ID": lambda v, L: ae(Vote.new(v.term, MAX_NODE_ID + 1, True), L, []),
    "vote committed not bool": lambda v, L: ae(Vote(v.leader_id, 1), L, []),  # type: ignore[arg-type]
    "vote not a Vote": lambda v, L: ae((v.term, 2), L, []),  # type: ignore[arg-type]
    "vote leader_id a tuple": lambda v, L: ae(Vote((v.term, 2), True), L, []),  # type: ignore[arg-type]
    "prev a tuple": lambda v, L: ae(v, (L.term, L.index), []),
    "prev index past MAX_INDEX": lambda v, L: ae(v, LogId(L.term, MAX_INDEX + 1), []),
    "prev term above the vote's": lambda v, L: ae(v, LogId(v.term + 1, L.index), []),
    "leader_commit a str": lambda v, L: ae(v, L, [], "3"),
    "leader_commit index negative": lambda v, L: ae(v, L, [], LogId(L.term, -1)),
    "entries None": lambda v, L: ae(v, L, None),
    "entries a dict": lambda v, L: ae(v, L, {1: ent(L.term, L.index + 1)}),
    "entries a tuple": lambda v, L: ae(v, L, tuple(nxt(L, 1))),
    "entry not an Entry": lambda v, L: ae(v, L, [(L.term, L.index + 1)]),
    "entry log_id a tuple": lambda v, L: ae(v, L, [Entry((L.term, L.index + 1), Blank())]),  # type: ignore[arg-type]
    # issue 9: these killed the follower's core and the call never returned
    "first entry not prev+1": lambda v, L: ae(v, L, nxt(L, 2, 3)),
    "gap between entries": lambda v, L: ae(v, L, nxt(L, 1, 3)),
    "indexes decrease": lambda v, L: ae(v, L, nxt(L, 1, 2, 1)),
    "entry term below prev's": lambda v, L: ae(v, L, nxt(L, 1, term=L.term - 1)),
    # issue 9: answered success=True, and the follower's log then disagreed at a committed index
    "repeated index [L+1, L+1, L+3]": lambda v, L: ae(v, L, nxt(L, 1, 1, 3)),
    "entry terms decrease": lambda v, L: ae(v, L, [ent(v.term, L.index + 1), ent(L.term - 1, L.index + 2)]),
    "entry term above the vote's": lambda v, L: ae(v, L, nxt(L, 1, term=v.term + 1)),
    "entry index past MAX_INDEX": lambda v, L: ae(v, LogId(L.term, MAX_INDEX), nxt(LogId(L.term, MAX_INDEX), 1)),
    "first entry without prev not at 0": lambda v, L: ae(v, None, [ent(0, 1, M3)]),
    "Normal data None": lambda v, L: ae(v, L, nxt(L, 1, payload=Normal(None))),  # type: ignore[arg-type]
    "Normal data str": lambda v, L: ae(v, L, nxt(L, 1, payload=Normal("text"))),  # type: ignore[arg-type]
    "payload an int": lambda v, L: ae(v, L, nxt(L, 1, payload=5)),
    "membership voter not in nodes": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership((frozenset({1, 2, 3}),), {1: BasicNode(), 2: BasicNode()}))
    ),
    "membership config a set": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership(({1, 2, 3},), dict(M3.nodes)))  # type: ignore[arg-type]
    ),
    "membership no config": lambda v, L: ae(v, L, nxt(L, 1, payload=Membership((), dict(M3.nodes)))),
    "membership empty config": lambda v, L: ae(v, L, nxt(L, 1, payload=Membership((frozenset(),), dict(M3.nodes)))),
    "membership three configs": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership((frozenset({1}), frozenset({2}), frozenset({3})), dict(M3.nodes)))
    ),
    "membership node addr an int": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership.new([{1, 2, 3}], {1: BasicNode(5)}))  # type: ignore[arg-type]
    ),
    "membership node a str": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership((frozenset({1, 2, 3}),), {1: "a", 2: BasicNode(), 3: BasicNode()}))
    ),
    "membership node id str": lambda v, L: ae(
        v, L, nxt(L, 1, payload=Membership((frozenset({1, 2}),), {1: BasicNode(), 2: BasicNode(), "3": BasicNode()}))
    ),
}


def vr(vote: Any, last: Any, pre_vote: Any = False, transfer_from: Any = None) -> VoteRequest:
    return VoteRequest(vote, last, pre_vote, transfer_from)


VOTE_CASES: dict[str, Build] = {
    # issue 9: this term crashed the compiled kernels with OverflowError
    "term 2**63-1": lambda v, L: vr(Vote.new(2**63 - 1, 3), L),
    "term MAX_TERM+1": lambda v, L: vr(Vote.new(MAX_TERM + 1, 3), L),
    "pre-vote term MAX_TERM+1": lambda v, L: vr(Vote.new(MAX_TERM + 1, 3), L, True),
    "term negative": lambda v, L: vr(Vote.new(-1, 3), L),
    "term a float": lambda v, L: vr(Vote.new(float(v.term + 1), 3), L),  # type: ignore[arg-type]
    "candidate id negative": lambda v, L: vr(Vote.new(v.term + 1, -3), L),
    "candidate id a str": lambda v, L: vr(Vote.new(v.term + 1, "3"), L),  # type: ignore[arg-type]
    "vote committed": lambda v, L: vr(Vote.new(v.term + 1, 3, True), L),
    "vote None": lambda v, L: vr(None, L),
    "last_log_id a list": lambda v, L: vr(Vote.new(v.term + 1, 3), [L.term, L.index]),
    "last_log_id term above the vote's": lambda v, L: vr(Vote.new(v.term + 1, 3), LogId(v.term + 2, L.index)),
    "last_log_id index negative": lambda v, L: vr(Vote.new(v.term + 1, 3), LogId(L.term, -1)),
    "pre_vote None": lambda v, L: vr(Vote.new(v.term + 1, 3), L, None),
    "transfer_from a tuple": lambda v, L: vr(Vote.new(v.term + 1, 3), L, False, (v.term, 1)),
    "transfer_from term too big": lambda v, L: vr(Vote.new(v.term + 1, 3), L, False, Vote.new(2**63, 1, True)),
}


def meta(last: Any, sm: Any = EMPTY_STORED_MEMBERSHIP, sid: Any = "s-1") -> SnapshotMeta:
    return SnapshotMeta(last, sm, sid)


def isr(vote: Any, m: Any, offset: Any = 0, data: Any = b"", done: Any = False) -> InstallSnapshotRequest:
    return InstallSnapshotRequest(vote, m, offset, data, done)


SNAPSHOT_CASES: dict[str, Build] = {
    "offset negative": lambda v, L: isr(v, meta(L), -1, b"abc"),
    "offset a str": lambda v, L: isr(v, meta(L), "0", b"abc"),
    "offset past 2**63": lambda v, L: isr(v, meta(L), 2**63, b"abc"),
    "data a str": lambda v, L: isr(v, meta(L), 0, "abc"),
    "data None": lambda v, L: isr(v, meta(L), 0, None),
    "done None": lambda v, L: isr(v, meta(L), 0, b"", None),
    "vote term 2**63-1": lambda v, L: isr(Vote.new(2**63 - 1, 1, True), meta(L)),
    "meta None": lambda v, L: isr(v, None),
    "meta last_log_id a tuple": lambda v, L: isr(v, meta((L.term, L.index))),
    "meta last_log_id term above the vote's": lambda v, L: isr(v, meta(LogId(v.term + 1, L.index))),
    "meta snapshot_id an int": lambda v, L: isr(v, meta(L, sid=7)),
    "meta membership log id past last_log_id": lambda v, L: isr(
        v, meta(LogId(L.term, 0), StoredMembership(LogId(L.term, L.index), M3))
    ),
    "meta membership voter not in nodes": lambda v, L: isr(
        v, meta(L, StoredMembership(LogId(0, 0), Membership((frozenset({1, 2}),), {1: BasicNode()})))
    ),
    "meta membership not a StoredMembership": lambda v, L: isr(v, meta(L, M3)),
}

TRANSFER_CASES: dict[str, Build] = {
    "to a str": lambda v, L: TransferLeaderRequest(v, "2", L),  # type: ignore[arg-type]
    "to negative": lambda v, L: TransferLeaderRequest(v, -2, L),
    "to past MAX_NODE_ID": lambda v, L: TransferLeaderRequest(v, MAX_NODE_ID + 1, L),
    "from_leader None": lambda v, L: TransferLeaderRequest(None, 2, L),  # type: ignore[arg-type]
    "from_leader term 2**63-1": lambda v, L: TransferLeaderRequest(Vote.new(2**63 - 1, 1, True), 2, L),
    "last_log_id a tuple": lambda v, L: TransferLeaderRequest(v, 2, (L.term, L.index)),  # type: ignore[arg-type]
    "last_log_id term above from_leader's": lambda v, L: TransferLeaderRequest(v, 2, LogId(v.term + 1, L.index)),
}

ALL: list[tuple[str, str, Build]] = (
    [("append_entries", k, b) for k, b in APPEND_CASES.items()]
    + [("vote", k, b) for k, b in VOTE_CASES.items()]
    + [("install_snapshot", k, b) for k, b in SNAPSHOT_CASES.items()]
    + [("handle_transfer_leader", k, b) for k, b in TRANSFER_CASES.items()]
)


@pytest.mark.parametrize("rpc, case, build", ALL, ids=[f"{r}: {k}" for r, k, _ in ALL])
async def test_malformed_peer_request_is_refused_and_the_node_keeps_running(
    three: Cluster, rpc: str, case: str, build: Build
) -> None:
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    disk = three.disks[follower.id]
    log_before = list(disk.entries)
    vote_before = follower.metrics.vote
    err = await refused(getattr(follower, rpc)(build(v, L)), InvalidRequest)
    assert isinstance(err, InvalidRequest) and err.rpc == rpc.removeprefix("handle_") and err.reason
    # Refused before the node looked at it: no log change, no vote change.
    assert disk.entries[: len(log_before)] == log_before
    assert follower.metrics.vote.is_ge(vote_before)
    assert follower.metrics.vote.term < MAX_TERM
    await assert_healthy(three)


async def test_the_same_requests_well_formed_are_accepted(three: Cluster) -> None:
    """The cases above differ from acceptable requests only in what they break: the
    unbroken heartbeat and a continuing batch are answered success=True."""
    leader, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    resp = await follower.append_entries(ae(v, L, []))
    assert resp.success and resp.matching == L
    # A stale but well-formed request is a rejection value, not an error.
    resp = await follower.append_entries(ae(Vote.new(v.term - 1, 9, True), None, []))
    assert not resp.success
    await assert_healthy(three)


async def test_a_leader_still_replicates_to_a_follower_that_refused_garbage(three: Cluster) -> None:
    """After a storm of malformed requests at every follower, the leader's writes reach
    every node and the committed logs agree. The writes follow the leader: with
    ``fast_config``'s 50-100 ms election timeouts a stall of the shared event loop may move
    it, which is not what this test is about."""
    leader, _ = leader_and_follower(three)
    v = leader_vote(three)
    for r in three.nodes.values():
        if r is leader:
            continue
        L = last_log_id(r)
        for rpc, _, build in ALL:
            await refused(getattr(r, rpc)(build(v, L)), InvalidRequest)
    for i in range(20):
        await write_on_leader(three, f"w{i}".encode(), timeout=5.0)
    await assert_healthy(three)



@pytest.mark.parametrize("case", list(APPEND_CASES), ids=list(APPEND_CASES))
async def test_start_append_entries_refuses_at_the_call(three: Cluster, case: str) -> None:
    """``Raft.start_append_entries`` (a transport's way without a coroutine) checks the
    request as ``append_entries`` does, raising ``InvalidRequest`` before it returns."""
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    with pytest.raises(InvalidRequest):
        follower.start_append_entries(APPEND_CASES[case](v, L))
    await assert_healthy(three)


async def test_start_append_entries_answers_a_well_formed_request(three: Cluster) -> None:
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    fut = follower.start_append_entries(ae(v, L, []))
    resp = await fut
    assert resp.success and resp.matching == L


@pytest.mark.parametrize("case", list(APPEND_CASES), ids=list(APPEND_CASES))
async def test_submit_append_entries_refuses_at_the_call(three: Cluster, case: str) -> None:
    """``Raft.submit_append_entries`` (a transport's callback way) checks the request as
    ``append_entries`` does, raising ``InvalidRequest`` before it returns; the callback is
    never called."""
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    got: list[Any] = []
    with pytest.raises(InvalidRequest):
        follower.submit_append_entries(APPEND_CASES[case](v, L), got.append)
    await assert_healthy(three)
    assert got == []


async def test_submit_append_entries_answers_once_and_survives_a_failing_callback(three: Cluster) -> None:
    """A well-formed request is answered through the callback, once; a callback that
    raises is logged and dropped (the node keeps committing); a cancelled handle is never
    answered."""
    import asyncio

    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    handle = follower.submit_append_entries(ae(v, L, []), fut.set_result)
    resp = await asyncio.wait_for(fut, 5)
    assert resp.success and resp.matching == L and handle.done()

    calls: list[Any] = []

    def bad(value: Any) -> None:
        calls.append(value)
        raise RuntimeError("transport bug")

    follower.submit_append_entries(ae(v, L, []), bad)
    cancelled: list[Any] = []
    follower.submit_append_entries(ae(v, L, []), cancelled.append).cancel()
    await assert_healthy(three)
    assert len(calls) == 1 and calls[0].success and cancelled == []


async def test_submit_append_entries_refuses_a_reply_that_is_not_callable(three: Cluster) -> None:
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    for bad in (None, 3, "reply"):
        with pytest.raises(TypeError, match="callable"):
            follower.submit_append_entries(ae(v, L, []), bad)  # type: ignore[arg-type]
    await assert_healthy(three)


async def test_submit_append_entries_on_a_stopped_node_answers_at_once(three: Cluster) -> None:
    _, follower = leader_and_follower(three)
    v = leader_vote(three)
    L = last_log_id(follower)
    await follower.shutdown()
    got: list[Any] = []
    handle = follower.submit_append_entries(ae(v, L, []), got.append)
    assert handle.done() and len(got) == 1 and isinstance(got[0], Fatal)
