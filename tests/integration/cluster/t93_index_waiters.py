"""Waiters for a log, snapshot or purged index (``Wait.log_index_at_least``, ``snapshot``,
``purged``) sleep until their index is reached, not until the next change, as the applied
index waiters do (t92).

Each woke at every metrics change: a thousand pending ``log_index_at_least`` waiters on each
node of an in-process 3-node cluster made 300 writes take 1.6-2.2 s instead of 30 ms. Now
they are kept by index (``MetricsWatch.at_least``) and woken once it is reached or the node
stops.
"""

from __future__ import annotations

import asyncio

import pytest

from integration.checks import MetricsReads, leader_after_a_write
from openraft_py import Fatal
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WAITERS = 1000
WRITES = 50


async def test_pending_index_waiters_are_not_woken_by_every_write(
    steady_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One leader throughout (``steady_cluster``): its 50 writes go to the node that led at the
    # start, which under load lost its lead to a stall of ``fast_config``'s 50-100 ms timeouts
    # (ForwardToLeader, seen at load 10 on 2 cores; t92 and t96 likewise).
    raft, base = await leader_after_a_write(steady_cluster)
    reached = [asyncio.ensure_future(raft.wait(20.0).log_index_at_least(base + 1 + i % WRITES))
               for i in range(WAITERS // 2)]
    far = [asyncio.ensure_future(raft.wait(None).log_index_at_least(base + 10**6)) for _ in range(WAITERS // 4)]
    far += [asyncio.ensure_future(raft.wait(None).snapshot(base + 10**6)) for _ in range(WAITERS // 8)]
    far += [asyncio.ensure_future(raft.wait(None).purged(base + 10**6)) for _ in range(WAITERS // 8)]
    await asyncio.sleep(0)  # every waiter reads the metrics once and sleeps

    with MetricsReads(monkeypatch) as reads:
        for i in range(WRITES):
            await raft.client_write(b"w%d" % i)
        done = await asyncio.wait_for(asyncio.gather(*reached), 10)
    assert all(m.last_log_index > base for m in done)
    # Each reached waiter reads the metrics once when its index is appended: about WAITERS /
    # 2 reads. Woken at every change, the far waiters alone read them several times a write.
    assert reads.count < 3 * WAITERS, reads.count
    assert not any(f.done() for f in far)

    await raft.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*far, return_exceptions=True), 5)
    assert all(isinstance(r, Fatal) for r in results), {type(r).__name__ for r in results}
