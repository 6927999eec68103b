"""A leader's one-entry writes logged in one pass wait as one ``WriteRun``
(``core/messages.py``); here, in a cluster, the cases where a run is not answered whole by
its apply: a run a new leader's log truncates on the old leader fails every writer with
``ForwardToLeader`` (none hangs, the node goes on and catches up), and a run pending when
the node shuts down fails every writer with ``Stopped``. (The unit cases, a run cut by a
commit, a truncation or a snapshot inside it: ``tests/core/test_write_runs.py``.)"""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import ForwardToLeader, Stopped
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(60)

BOUND = 10.0
RUN = 8


async def _logged_run(c: Cluster, leader: int) -> list[asyncio.Future[object]]:
    """``RUN`` writes sent to the cut-off ``leader`` in one loop turn (taken as one run),
    once logged there."""
    raft = c.nodes[leader]
    last = raft.metrics.last_log_index
    writes = [asyncio.ensure_future(raft.client_write(b"run%d" % i)) for i in range(RUN)]
    await asyncio.wait_for(raft.wait(BOUND).log_index_at_least(last + RUN), BOUND)
    assert not any(w.done() for w in writes)
    runs = [(type(r).__name__, r.count) for r in raft._core.feed.responders]
    assert runs == [("WriteRun", RUN)], runs
    return writes


async def test_a_run_truncated_by_a_new_leader_fails_every_writer() -> None:
    c = Cluster(fast_config(), seed=73)
    try:
        await c.start({1, 2, 3})
        old = await c.wait_for_leader()
        await c.nodes[old].client_write(b"ok")
        c.router.isolate(old)
        writes = await _logged_run(c, old)
        others = [n for n in (1, 2, 3) if n != old]
        new = await c.wait_for_leader(timeout=BOUND, among=others)
        resp = await asyncio.wait_for(c.nodes[new].client_write(b"after"), BOUND)
        c.router.heal()
        for w in writes:
            with pytest.raises(ForwardToLeader):
                await asyncio.wait_for(w, BOUND)
        raft = c.nodes[old]
        await asyncio.wait_for(raft.wait(BOUND).applied_index_at_least(resp.log_id.index), BOUND)
    finally:
        await c.shutdown()


async def test_a_pending_run_fails_every_writer_at_shutdown() -> None:
    c = Cluster(fast_config(), seed=74)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await c.nodes[leader].client_write(b"ok")
        c.router.isolate(leader)
        writes = await _logged_run(c, leader)
        await asyncio.wait_for(c.nodes[leader].shutdown(), BOUND)
        for w in writes:
            with pytest.raises(Stopped):
                await asyncio.wait_for(w, BOUND)
    finally:
        await c.shutdown()
