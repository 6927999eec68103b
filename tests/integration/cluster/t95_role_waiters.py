"""Waiters on a node's role (``Wait.state``, ``current_leader``, ``voter_ids``) sleep until
the role changes, not until the next change of the metrics.

Each woke at every metrics change, so a write woke each of them several times: a thousand
pending ``wait().state(...)`` calls on each node of an in-process 3-node cluster made 300
writes take 1.5-1.9 s instead of about 15 ms. Now they are kept by the role they saw
(``MetricsWatch.role_changed``) and woken when the node's state, vote, effective membership
or known leader changes, or when it stops.
"""

from __future__ import annotations

import asyncio

import pytest

from integration.checks import MetricsReads
from openraft_py import Fatal, ServerState
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WAITERS = 1000
WRITES = 50


async def test_pending_role_waiters_are_not_woken_by_writes_but_by_a_role_change(
    steady_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (steady_cluster: the role changes by a leader transfer, which under load expired in
    # a stall of the shared loop with 50-100 ms timeouts: the waiters waited out their 10 s.)
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    to = next(i for i in (1, 2, 3) if i != leader)
    raft = cluster.nodes[leader]
    await raft.client_write(b"first")
    far = [asyncio.ensure_future(raft.wait(None).state(ServerState.LEARNER)) for _ in range(WAITERS // 4)]
    far += [asyncio.ensure_future(raft.wait(None).current_leader(99)) for _ in range(WAITERS // 4)]
    far += [asyncio.ensure_future(raft.wait(None).voter_ids({7, 8})) for _ in range(WAITERS // 4)]
    stepped_down = [asyncio.ensure_future(raft.wait(20.0).state(ServerState.FOLLOWER))
                    for _ in range(WAITERS // 8)]
    new_leader = [asyncio.ensure_future(raft.wait(20.0).current_leader(to)) for _ in range(WAITERS // 8)]
    await asyncio.sleep(0)  # every waiter reads the metrics once and sleeps

    with MetricsReads(monkeypatch) as reads:
        for i in range(WRITES):
            await raft.client_write(b"w%d" % i)
        # Woken at every change, each waiter read the metrics several times a write.
        assert reads.count < WAITERS // 10, reads.count
        assert not any(f.done() for f in far + stepped_down + new_leader)

        # A role change wakes them: those it satisfies return, the others sleep again.
        await raft.trigger.transfer_leader(to)
        done = await asyncio.wait_for(asyncio.gather(*stepped_down, *new_leader), 10)
    assert all(m.state == ServerState.FOLLOWER for m in done[: len(stepped_down)])
    assert all(m.current_leader == to for m in done[len(stepped_down):])
    assert not any(f.done() for f in far)

    await raft.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*far, return_exceptions=True), 5)
    assert all(isinstance(r, Fatal) for r in results), {type(r).__name__ for r in results}


async def test_role_waiters_given_up_on_are_compacted_and_a_later_one_still_wakes(steady_cluster: Cluster) -> None:
    """Waiters that time out while the role stays the same are dropped by the compaction
    (the groups do not grow with every one ever made), and a waiter that comes after them is
    still woken by the change it waits for."""
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    to = next(i for i in (1, 2, 3) if i != leader)
    raft = cluster.nodes[leader]
    for _ in range(3):
        timed_out = [asyncio.ensure_future(raft.wait(0.01).current_leader(99)) for _ in range(200)]
        results = await asyncio.gather(*timed_out, return_exceptions=True)
        assert all(type(r).__name__ == "WaitTimeout" for r in results), results[:3]
    by_role = raft._core.watch._by_role
    assert by_role is not None
    kept = sum(len(futs) for _, futs in by_role.groups)
    assert kept <= 2 * 200, kept  # 600 without the compaction
    waiter = asyncio.ensure_future(raft.wait(20.0).current_leader(to))
    await asyncio.sleep(0)
    assert not waiter.done()
    await raft.trigger.transfer_leader(to)
    assert (await asyncio.wait_for(waiter, 10)).current_leader == to
