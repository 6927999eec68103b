"""Waiters on a predicate of the whole metrics (``Wait.metrics``) are checked together at
each change, by one callback, instead of each waking its task.

Each woke at every metrics change: a thousand pending ``wait().metrics(...)`` calls on each
node of an in-process 3-node cluster made 300 writes take 3.1-5.2 s instead of 17-37 ms (now
0.24-0.34 s: each change still calls every predicate). Now ``MetricsWatch.satisfied`` keeps
them (``PredicateWaiters``): a change reads the metrics once, calls each predicate, and wakes
the waiters whose predicate holds, or every one once the node stopped.
"""

from __future__ import annotations

import asyncio

import pytest

from integration.checks import MetricsReads, leader_after_a_write
from openraft_py import Fatal, RaftMetrics, WaitTimeout
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WAITERS = 1000
WRITES = 50


async def test_pending_predicate_waiters_are_checked_together_not_each_woken(
    steady_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One leader throughout (``steady_cluster``): its 50 writes go to the node that led at the
    # start, which under load lost its lead to a stall of ``fast_config``'s 50-100 ms timeouts
    # (ForwardToLeader, seen at load 13 on 2 cores).
    raft, base = await leader_after_a_write(steady_cluster)
    calls = 0

    def far_off(m: RaftMetrics) -> bool:
        nonlocal calls
        calls += 1
        return m.last_log_index >= base + 10**6

    far = [asyncio.ensure_future(raft.wait(None).metrics(far_off, "far")) for _ in range(WAITERS)]
    reached = [asyncio.ensure_future(raft.wait(20.0).metrics(lambda m, i=i: m.last_log_index >= base + 1 + i % WRITES,
                                                             "reached"))
               for i in range(WAITERS // 2)]
    await asyncio.sleep(0)  # every waiter reads the metrics once and sleeps
    assert calls == WAITERS

    with MetricsReads(monkeypatch) as reads:
        for i in range(WRITES):
            await raft.client_write(b"w%d" % i)
        done = await asyncio.wait_for(asyncio.gather(*reached), 10)
    assert all(m.last_log_index >= base + 1 for m in done)
    assert [m.last_log_index >= base + 1 + i % WRITES for i, m in enumerate(done)] == [True] * len(done)
    # One read per change (a few per write), not one per waiter and change: woken at every
    # change, the far waiters alone read the metrics several times a write each.
    assert reads.count < 2 * WAITERS, reads.count
    assert not any(f.done() for f in far)
    assert calls > WAITERS * WRITES, calls  # each change calls every predicate once

    await raft.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*far, return_exceptions=True), 5)
    assert all(isinstance(r, Fatal) for r in results), {type(r).__name__ for r in results}


async def test_a_predicate_that_raises_raises_in_its_caller_and_the_others_still_wait(cluster: Cluster) -> None:
    """A predicate raising at a change (checked by the watch's callback) raises in the
    caller of its ``wait().metrics`` as before, and the other waiters are unaffected."""
    raft, base = await leader_after_a_write(cluster)

    def breaks(m: RaftMetrics) -> bool:
        if m.last_log_index > base:
            raise ZeroDivisionError("a broken predicate")
        return False

    broken = asyncio.ensure_future(raft.wait(10.0).metrics(breaks, "broken"))
    other = asyncio.ensure_future(raft.wait(10.0).metrics(lambda m: m.last_log_index >= base + 2, "two more"))
    await asyncio.sleep(0)
    await raft.client_write(b"one")
    with pytest.raises(ZeroDivisionError, match="a broken predicate"):
        await asyncio.wait_for(broken, 5)
    assert not other.done()
    await raft.client_write(b"two")
    assert (await asyncio.wait_for(other, 5)).last_log_index >= base + 2


async def test_predicate_waiters_given_up_on_are_compacted_and_a_later_one_still_wakes(cluster: Cluster) -> None:
    """Waiters that time out with nothing changing are dropped by the compaction (the list
    does not grow with every one ever made), and a waiter that comes after them is still
    woken by the change it waits for."""
    raft, base = await leader_after_a_write(cluster)
    for _ in range(3):
        timed_out = [asyncio.ensure_future(raft.wait(0.01).metrics(lambda m: m.last_log_index > base + 10**6))
                     for _ in range(200)]
        results = await asyncio.gather(*timed_out, return_exceptions=True)
        assert all(isinstance(r, WaitTimeout) for r in results), results[:3]
    by_predicate = raft._core.watch._by_predicate
    assert by_predicate is not None
    assert len(by_predicate.entries) <= 2 * 200, len(by_predicate.entries)  # 600 without the compaction
    # (The log as it is now: on a busy machine an election may have appended a blank meanwhile.)
    last = raft.metrics.last_log_index
    waiter = asyncio.ensure_future(raft.wait(20.0).metrics(lambda m: m.last_log_index > last, "a write"))
    await asyncio.sleep(0)
    assert not waiter.done()
    leader = cluster.nodes[await cluster.wait_for_leader()]
    await leader.client_write(b"x")
    assert (await asyncio.wait_for(waiter, 10)).last_log_index > last
