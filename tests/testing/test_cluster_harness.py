"""``openraft_py.testing.Cluster`` refuses calls in the wrong order with a ``ValueError``
naming the node, before it starts or stops anything."""

from __future__ import annotations

import pytest

from openraft_py import Config
from openraft_py.testing import Cluster

pytestmark = pytest.mark.timeout(30)


async def test_a_running_node_is_not_started_twice() -> None:
    """``start`` or ``add_node`` of a running node is refused (a second node over the same
    disk was started, the first kept running unreachable and was never shut down; ``start``
    then failed in ``initialize`` with ``NotAllowed``); ``restart`` still stops it first."""
    async with Cluster(Config(), seed=3) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        first = dict(c.nodes)
        with pytest.raises(ValueError, match=r"^nodes \[1, 2, 3\] are running already; crash\(\) or restart\(\) them$"):
            await c.start({1, 2, 3})
        with pytest.raises(ValueError, match=r"^node 2 is running already; crash\(\) or restart\(\) it$"):
            await c.add_node(2)
        assert c.nodes == first and all(r.metrics.running for r in first.values())
        restarted = await c.restart(leader)
        assert restarted is not first[leader] and not first[leader].metrics.running
        await c.wait_for_leader()


async def test_crash_of_a_node_that_is_not_running_names_it() -> None:
    """``crash`` of a node never started, or crashed already, is a ``ValueError`` naming it
    and the running nodes (a bare ``KeyError``); ``start`` of no ids is a ``ValueError`` (an
    ``IndexError``)."""
    async with Cluster(Config(), seed=4) as c:
        with pytest.raises(ValueError, match=r"^start needs at least one node id$"):
            await c.start(set())
        await c.start({1, 2, 3})
        await c.wait_for_leader()
        with pytest.raises(ValueError, match=r"^node 9 is not running \(running: \[1, 2, 3\]\)$"):
            await c.crash(9)
        await c.crash(2)
        with pytest.raises(ValueError, match=r"^node 2 is not running \(running: \[1, 3\]\)$"):
            await c.crash(2)
        await c.restart(2)
        assert sorted(c.nodes) == [1, 2, 3]


async def test_restart_of_a_node_that_never_ran_is_refused() -> None:
    """``restart(99)`` of an id that never ran in the cluster started a new, empty node,
    where the call says "start again over its disk": a test meaning to restart a node with
    a typo in its id went on with a node that had nothing. Refused now, naming the nodes
    that have a disk, and nothing is started; a crashed node still restarts over its disk."""
    async with Cluster(Config(), seed=5) as c:
        await c.start({1, 2, 3})
        await c.wait_for_leader()
        with pytest.raises(ValueError, match=r"^node 99 never ran in this cluster: it has no disk to start again over "
                                             r"\(nodes with a disk: \[1, 2, 3\]\); add_node\(99\) starts a new node$"):
            await c.restart(99)
        with pytest.raises(TypeError, match=r"^node id must be an int, got str '1'$"):
            await c.restart("1")  # type: ignore[arg-type]
        assert sorted(c.nodes) == [1, 2, 3] and sorted(c.disks) == [1, 2, 3]
        await c.crash(3)
        await c.restart(3)
        assert sorted(c.nodes) == [1, 2, 3]
