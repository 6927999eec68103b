"""Well-formed requests with hostile values on a live node's raft port, while its cluster
commits.

A peer that passed the handshake as a member (here: claiming the leader's own id, at the
leader's own vote, the strongest position a broken or impersonating peer can take without
a higher term) sends AppendEntries whose entries contradict the follower's committed ones:
a broken peer's (a leader whose disk was restored from an old copy) or an attacker's. The
follower refuses each (an error answer, ``ERR_INVALID``) and keeps its committed entries
and its place in the cluster; it used to stop (``Panicked``: "refusing to truncate
committed entries"), so one such frame took a voter out of the cluster for good.

The requests are drawn with a seeded generator (the seed is printed on failure; set
``HOSTILE_SEED`` to replay one).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest

from openraft_py.network import wire
from openraft_py.types import AppendEntriesRequest, Entry, LogId, Normal, ServerState

from .tcp_cluster import TcpCluster, tcp_config

pytestmark = pytest.mark.timeout(90)


async def _connect(port: int, claim: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``port`` that passed the handshake claiming member ``claim``."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "test-cluster", claim))))
    head = await asyncio.wait_for(r.readexactly(4), 5)
    ack = await asyncio.wait_for(r.readexactly(int.from_bytes(head, "big")), 5)
    assert wire.split_payload(ack)[0] == wire.KIND_HELLO_ACK
    return r, w


async def _call(r: asyncio.StreamReader, w: asyncio.StreamWriter, rid: int, req: AppendEntriesRequest) -> Any:
    """Send ``req`` as request ``rid``; its answer (kind, decoded body)."""
    w.write(bytes(wire.frame_message(wire.KIND_APPEND_ENTRIES, rid, req)))
    head = await asyncio.wait_for(r.readexactly(4), 5)
    kind, got, body = wire.split_payload(await asyncio.wait_for(r.readexactly(int.from_bytes(head, "big")), 5))
    assert got == rid
    return kind, wire.decode_body(kind, body)


async def test_entries_contradicting_committed_ones_are_refused_and_the_follower_serves_on() -> None:
    seed = int(os.environ.get("HOSTILE_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_for_leader(15)
        # A log of several terms: writes under three leaders in turn.
        for turn in range(3):
            for i in range(4):
                await c.write(b"w%d-%d" % (turn, i))
            if turn < 2:
                nxt = leader % 3 + 1
                await c.nodes[leader].raft.trigger.transfer_leader(nxt)  # type: ignore[union-attr]
                await c.nodes[nxt].raft.wait(15).metrics(  # type: ignore[union-attr]
                    lambda m: m.state == ServerState.LEADER, f"node {nxt} leads")
                leader = await c.wait_for_leader(15)
        fid = min(n for n in c.nodes if n != leader)
        follower = c.nodes[fid]
        assert follower.raft is not None
        last = await c.write(b"settled")
        await c.wait_applied(last.index)
        committed = follower.raft.metrics.committed
        assert committed is not None
        held = {e.log_id.index: e.log_id for e in follower.disk.entries}
        lvote = c.nodes[leader].raft.metrics.vote  # type: ignore[union-attr]
        r, w = await _connect(follower.port, leader)
        refused = taken = 0
        try:
            for k in range(40):
                # prev: an entry the follower holds (committed); then 1-4 entries up to the
                # committed index, at least one with another term than the one held there.
                start = rng.randrange(0, committed.index)
                prev = held[start]
                n = rng.randint(1, min(4, committed.index - start))
                entries = []
                term = prev.term
                for index in range(start + 1, start + 1 + n):
                    term = rng.randint(term, lvote.leader_id.term)  # never backwards, never past the vote
                    entries.append(Entry(LogId(term, index), Normal(b"evil")))
                lc = rng.choice([None, committed, LogId(lvote.leader_id.term, 10**9)])
                kind, body = await _call(r, w, 100 + k, AppendEntriesRequest(lvote, prev, entries, lc))
                if all(e.log_id == held[e.log_id.index] for e in entries):
                    taken += 1  # entries it holds: a resend, answered as one (seed {seed})
                    assert kind == wire.KIND_APPEND_ENTRIES_RESP and body.success, (seed, k, body)
                    continue
                refused += 1
                assert kind == wire.KIND_ERROR and body.code == wire.ERR_INVALID, (seed, k, kind, body)
                assert "committed" in body.message, (seed, body.message)
        finally:
            w.close()
        assert refused, f"seed {seed}: no request contradicted a committed entry"
        # The follower runs, holds what it held, and the cluster commits through it.
        m = follower.raft.metrics
        assert m.running and m.state == ServerState.FOLLOWER, (seed, m.describe())
        assert {e.log_id.index: e.log_id for e in follower.disk.entries if e.log_id.index <= committed.index} == {
            i: lid for i, lid in held.items() if i <= committed.index}, seed
        after = await c.write(b"after")
        await c.wait_applied(after.index)
        logs = [[(e.log_id, e.payload) for e in n.disk.entries] for n in c.nodes.values()]
        assert logs[0] == logs[1] == logs[2], seed
        assert all(n.raft is not None and n.raft.metrics.running for n in c.nodes.values())
        print(f"\nseed {seed}: {refused} requests contradicting committed entries refused, {taken} resends taken")
