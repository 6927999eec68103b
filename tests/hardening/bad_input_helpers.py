"""Shared by the bad-input tests (``t1x_api_arguments``, ``t2x_peer_requests``, ...): a
3-node cluster fixture and the checks every such test ends with: the refused call raised the
expected error within a bound, every node still runs, the cluster commits a write
afterwards, and the nodes' committed logs agree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from integration.checks import check_applied_prefix, check_log_matching, fast_config, write_on_leader

from openraft_py import LogId, Membership, Normal, Raft, Vote
from openraft_py.testing.cluster import Cluster

BOUND = 2.0
"""Seconds within which a refused call must return (it is refused before the core sees it,
so it returns at once; the bound only catches a hang)."""


@pytest.fixture
async def three() -> AsyncIterator[Cluster]:
    """A started 3-node cluster (``fast_config()``) with an agreed leader and one committed
    write; shut down after the test."""
    c = Cluster(fast_config(), seed=9)
    try:
        await c.start({1, 2, 3})
        # On whichever node leads when it is sent: under load the 50-100 ms election timeouts
        # pass now and then without a heartbeat, and a write to the node that led a moment
        # before failed the setup with ForwardToLeader (seen at load 13 on 2 cores).
        resp = await write_on_leader(c, b"before")
        await c.wait_applied(resp.log_id.index, timeout=5.0)
        yield c
    finally:
        await c.shutdown()


async def refused(call: Awaitable[Any], error: type[BaseException]) -> BaseException:
    """Await ``call`` (bounded by ``BOUND``) and return the ``error`` it must raise."""
    with pytest.raises(error) as info:
        await asyncio.wait_for(call, BOUND)
    return info.value


def leader_and_follower(c: Cluster) -> tuple[Raft, Raft]:
    """The current leader and one follower."""
    lid = c.leader()
    assert lid is not None
    fid = min(n for n in c.nodes if n != lid)
    return c.nodes[lid], c.nodes[fid]


def leader_vote(c: Cluster) -> Vote:
    """The current leader's (committed) vote."""
    lid = c.leader()
    assert lid is not None
    return c.nodes[lid].metrics.vote


def last_log_id(raft: Raft) -> LogId:
    """``raft``'s last log id (it has one: the cluster was initialized)."""
    last = raft._core.engine.state.last_log_id()
    assert last is not None
    return last


def logged_writes(c: Cluster) -> list[tuple[int, int]]:
    """Per node, how many ``Normal`` and ``Membership`` entries its log holds: what a refused
    call must not change (blank entries of a new leader may come and go)."""
    out = []
    for nid in sorted(c.disks):
        es = c.disks[nid].entries
        out.append((sum(type(e.payload) is Normal for e in es), sum(type(e.payload) is Membership for e in es)))
    return out


def check_committed_agree(c: Cluster) -> None:
    """Every two running nodes hold the same entries up to the smaller of their committed
    indexes (and log matching / state machine safety hold over the disks)."""
    check_log_matching(c.disks)
    check_applied_prefix(c.disks)
    ids = sorted(c.nodes)
    for a in ids:
        for b in ids:
            if a >= b:
                continue
            ca, cb = c.nodes[a].metrics.committed, c.nodes[b].metrics.committed
            if ca is None or cb is None:
                continue
            da, db = c.disks[a], c.disks[b]
            lo = max(da.offset, db.offset)
            for i in range(lo, min(ca.index, cb.index) + 1):
                ea, eb = da.entries[i - da.offset], db.entries[i - db.offset]
                assert ea == eb, f"committed logs differ at {i}: n{a} {ea!r}, n{b} {eb!r}"


async def assert_healthy(c: Cluster, write: bytes = b"after") -> None:
    """Every node runs, the cluster elects (or keeps) a leader that commits ``write`` on every
    node, and the committed logs agree."""
    for nid, r in c.nodes.items():
        assert r.metrics.running, f"n{nid} stopped: {r.metrics.error}"
    resp = await write_on_leader(c, write, timeout=5.0)
    await c.wait_applied(resp.log_id.index, timeout=5.0)
    for nid, r in c.nodes.items():
        assert r.metrics.running, f"n{nid} stopped: {r.metrics.error}"
        assert any(d == write for _, d in c.disks[nid].applied_log), f"n{nid} did not apply {write!r}"
    check_committed_agree(c)
