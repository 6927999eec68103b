"""``Cluster`` used the wrong way: an unknown node waited on, a wait with nothing running, a
timeout that is not a number of seconds. Each gets a clear error instead of a bare
``KeyError``, asyncio's "Set of Tasks/Futures is empty" or a wait that never ends."""

from __future__ import annotations

import asyncio
import math

import pytest

from openraft_py import BasicNode, Config, WaitTimeout
from openraft_py.testing import Cluster


async def test_wait_applied_of_a_node_that_is_not_running_names_it() -> None:
    async with Cluster(Config(), seed=4) as c:
        await c.start({1, 2, 3})
        with pytest.raises(ValueError, match=r"node 9 is not running \(running: \[1, 2, 3\]\)"):
            await c.wait_applied(1, ids=[1, 9])
        assert set(c.nodes) == {1, 2, 3}


async def test_waiting_for_a_leader_with_nothing_running_times_out_clearly() -> None:
    async with Cluster(Config(), seed=5) as c:
        with pytest.raises(WaitTimeout, match=r"no leader in the cluster within 0\.2s: no node of it is running"):
            await asyncio.wait_for(c.wait_for_leader(timeout=0.2), 5)
        await c.start({1, 2, 3})
        with pytest.raises(WaitTimeout, match=r"among \[8, 9\] within 0\.2s: no node of it is running"):
            await asyncio.wait_for(c.wait_for_leader(timeout=0.2, among={8, 9}), 5)
        # Nodes that start while the wait runs are found.
        await c.shutdown()
        waiter = asyncio.ensure_future(c.wait_for_leader(timeout=10.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        for nid in (1, 2, 3):
            await c.restart(nid)
        assert await asyncio.wait_for(waiter, 15) in {1, 2, 3}


async def test_wait_for_leader_refuses_a_timeout_that_is_not_a_number_of_seconds() -> None:
    # timeout=nan never expired: with no leader to find, the wait went on for good.
    async with Cluster(Config(), seed=6) as c:
        await c.start({1, 2, 3})
        for bad, err in ((math.nan, ValueError), (math.inf, ValueError), (-1.0, ValueError),
                         ("5", TypeError), (None, TypeError)):
            with pytest.raises(err, match="timeout"):
                await asyncio.wait_for(c.wait_for_leader(timeout=bad), 5)  # type: ignore[arg-type]
        assert await c.wait_for_leader(timeout=5) in {1, 2, 3}


async def test_wait_for_leader_reads_a_generator_of_ids_once() -> None:
    """``among`` given as a generator (``n for n in c.nodes if n != old``) was read again at
    every check: empty from the second on, so a wait not answered at once timed out saying
    "no leader among [] ...: no node of it is running" with the nodes running and a leader
    elected among them meanwhile."""
    async with Cluster(Config(), seed=7) as c:
        await c.start({1, 2, 3, 4, 5})  # no leader yet: the first check finds none
        lid = await asyncio.wait_for(c.wait_for_leader(timeout=10.0, among=(n for n in range(1, 6))), 15)
        assert lid in {1, 2, 3, 4, 5}
        with pytest.raises(WaitTimeout, match=r"no leader among \[8, 9\] within 0\.2s: no node of it is running"):
            await asyncio.wait_for(c.wait_for_leader(timeout=0.2, among=(n for n in (8, 9))), 5)


async def test_a_node_id_that_is_not_one_is_refused_before_anything_starts() -> None:
    """``add_node("5")`` failed with "unsupported operand type(s) for +: 'int' and 'str'" (the
    node's seed, computed from its id before ``Raft.new`` checked it), having made a disk
    for node ``"5"``; ``start([1, 1, 2])`` started node 1, then failed on it as running
    already. Now the ids are checked first, and nothing is made or started."""
    async with Cluster(Config(), seed=8) as c:
        with pytest.raises(TypeError, match=r"^node id must be an int, got str '5'$"):
            await c.add_node("5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^node id must be within \[0, \d+\], got -1$"):
            await c.add_node(-1)
        with pytest.raises(TypeError, match=r"^node id must be an int, got str 'a'$"):
            await c.start({1, "a"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^node id must be an int, got bool True$"):
            await c.start([True])
        with pytest.raises(ValueError, match=r"^start was given node ids \[1\] more than once$"):
            await c.start([1, 1, 2])
        assert (c.nodes, c.disks) == ({}, {})
        await c.start([3, 1, 2])
        assert await c.wait_for_leader(timeout=5) in {1, 2, 3}


async def test_starting_more_nodes_initialized_beside_a_running_cluster_is_refused() -> None:
    """``start({4})`` (``initialize`` is on by default) after ``start({1, 2, 3})``
    initialized node 4 alone: a second cluster of one voter on the same router, its own
    leader, which ``wait_for_leader`` then waited out (the nodes named two leaders). Now it
    is refused, nothing started; ``initialize=False`` starts the node to add."""
    async with Cluster(Config(), seed=9) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=5)
        with pytest.raises(ValueError, match=r"^the cluster's nodes \[1, 2, 3\] run already: initializing \[4\] "
                                             r"would make another cluster of them; start\(\.\.\., initialize=False\)"):
            await c.start({4})
        assert sorted(c.nodes) == [1, 2, 3]
        await c.start({4}, initialize=False)
        await c.nodes[leader].ensure_linearizable()  # the leader's first entry committed
        await c.nodes[leader].add_learner(4, BasicNode())
        await c.nodes[leader].change_membership({1, 2, 3, 4})
        assert await c.wait_for_leader(timeout=5) == leader
    # Nodes that run but were never initialized are no cluster yet: start initializes them all.
    async with Cluster(Config(), seed=10) as c:
        await c.start({1, 2}, initialize=False)
        await c.start({3})
        assert await c.wait_for_leader(timeout=5, among={3}) == 3


async def test_wait_for_leader_among_no_node_is_refused_at_once() -> None:
    """``among=set()`` (a filter that left nothing) waited out the whole timeout and then
    said no node of it was running."""
    async with Cluster(Config(), seed=8) as c:
        await c.start({1, 2, 3})
        with pytest.raises(ValueError, match=r"among=\.\.\.\) names no node"):
            await asyncio.wait_for(c.wait_for_leader(timeout=30, among=set()), 5)
        with pytest.raises(ValueError, match="names no node"):
            await asyncio.wait_for(c.wait_for_leader(timeout=30, among=(n for n in ())), 5)
