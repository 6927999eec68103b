"""Waiters for an applied index (``Wait.applied_index_at_least`` and the read wait of
``ensure_linearizable``) sleep until their index is applied, not until the next change.

Each waited on every metrics change: each of a write's changes woke every one of them, so a
thousand pending waiters made 300 writes take a second instead of 17 ms, and ten thousand
took 13 s. Now they are kept by index (``MetricsWatch.applied_at_least``) and woken once
their index is applied or the node stops.
"""

from __future__ import annotations

import asyncio

import pytest

from integration.checks import MetricsReads, leader_after_a_write
from openraft_py import Fatal, WaitTimeout
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WAITERS = 1000
WRITES = 50


async def test_pending_applied_waiters_are_not_woken_by_every_write(
    steady_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One leader throughout (steady_cluster): its writes below must not meet ForwardToLeader
    # when a loaded machine stalls the shared loop past fast_config's election timeout.
    raft, base = await leader_after_a_write(steady_cluster)
    # WAITERS waiters, half of them for an index the writes below reach, half for one they
    # do not; a few give up early (their futures must not disturb the others).
    reached = [asyncio.ensure_future(raft.wait(20.0).applied_index_at_least(base + 1 + i % WRITES))
               for i in range(WAITERS // 2)]
    far = [asyncio.ensure_future(raft.wait(None).applied_index_at_least(base + 10**6)) for _ in range(WAITERS // 2)]
    for _ in range(3):
        with pytest.raises(WaitTimeout):
            await raft.wait(0.01).applied_index_at_least(base + 10**6)

    with MetricsReads(monkeypatch) as reads:
        for i in range(WRITES):
            await raft.client_write(b"w%d" % i)
        done = await asyncio.wait_for(asyncio.gather(*reached), 10)
    assert all(m.last_applied is not None and m.last_applied.index > base for m in done)
    # Each waiter reads the metrics when its index is applied, and once when it starts
    # over at a change that did not reach it: about WAITERS / 2 reads. Woken at every change,
    # the far waiters alone read them WRITES times each.
    assert reads.count < 3 * WAITERS, reads.count
    assert not any(f.done() for f in far)

    # A linearizable read whose index is not applied yet waits the same way, and works.
    assert await raft.ensure_linearizable() is not None

    await raft.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*far, return_exceptions=True), 5)
    assert all(isinstance(r, Fatal) for r in results), {type(r).__name__ for r in results}
