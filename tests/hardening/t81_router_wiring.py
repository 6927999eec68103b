"""Wiring an in-process cluster on the ``Router`` by hand, with the mistakes of a loop
written in a hurry: a node given another node's factory (``router.factory(1)`` for every
node), a node registered under another node's id (``router.register(1, nodes[i])``), an id
of the wrong type (``"1"``), ``None`` or a class for the server.

Each was taken without a word. A node on another node's factory sent as that node: the
router's faults applied to the wrong node (``partition({1}, {2, 3})`` cut the traffic of the
node whose factory it was, not node 1's), and the two nodes shared one client per target.
A node registered under another's id received that node's requests, and the other none
(the cluster elected no second leader once node 1 was cut off); one registered under
``"1"`` received nothing, and ``unregister("1")`` crashed no node. Now ``Raft.new`` refuses a
``RouterFactory`` of another node (``RouterFactory.node_id``, as ``TcpNetworkFactory``'s),
and ``register``, ``unregister`` and ``factory`` refuse what cannot be right, with
``TypeError``/``ValueError`` naming the argument, before anything changes. So do the
``Cluster`` harness's ``crash`` and ``wait_applied`` (``crash("1")`` said "node 1 is not
running (running: [1, 2, 3])")."""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import Raft, ServerState
from openraft_py.network.router import Router
from openraft_py.storage import MemLogStore, MemStateMachine
from openraft_py.storage.memory import MemDisk
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


async def test_a_node_on_another_nodes_factory_is_refused() -> None:
    disk = MemDisk()
    with pytest.raises(ValueError, match="speaks for node 2"):
        await Raft.new(1, fast_config(), Router().factory(2), MemLogStore(disk), MemStateMachine(disk))
    assert disk.vote is None and not disk.entries, "a refused node wrote to its stores"


async def test_a_node_registered_under_another_id_is_refused() -> None:
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine())
    try:
        with pytest.raises(ValueError, match=r"is node 1, not node 2"):
            router.register(2, raft)
        assert router.rpc_count() == 0
        # Nothing was registered: node 2 is unreachable, and node 1 can still be registered.
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(timeout=10.0).state(ServerState.LEADER, "n1 leads alone")
    finally:
        await raft.shutdown()


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda r: r.register("1", object()), TypeError),
        (lambda r: r.register(-1, object()), ValueError),
        (lambda r: r.register(1, None), TypeError),
        (lambda r: r.register(1, Raft), TypeError),
        (lambda r: r.unregister("1"), TypeError),
        (lambda r: r.factory("1"), TypeError),
        (lambda r: r.factory(None), TypeError),
        (lambda r: r.factory(-1), ValueError),
        (lambda r: r.factory(True), TypeError),
    ],
)
def test_router_arguments_are_checked(call: object, error: type[Exception]) -> None:
    router = Router()
    with pytest.raises(error):
        call(router)  # type: ignore[operator]
    assert not router._servers, "a refused register changed the routes"


async def test_registered_servers_still_reach_each_other() -> None:
    """The checks take a correct wiring: three nodes elect and commit."""
    router = Router()
    nodes = {i: await Raft.new(i, fast_config(), router.factory(i), MemLogStore(), MemStateMachine()) for i in (1, 2, 3)}
    try:
        for i, raft in nodes.items():
            router.register(i, raft)
        await nodes[1].initialize({1, 2, 3})
        await nodes[1].wait(timeout=10.0).state(ServerState.LEADER, "n1 leads")
        resp = await asyncio.wait_for(nodes[1].client_write(b"x"), 10.0)
        await nodes[3].wait(timeout=10.0).applied_index_at_least(resp.log_id.index, "n3 applied")
    finally:
        for raft in nodes.values():
            await raft.shutdown()


async def test_cluster_node_ids_are_checked() -> None:
    async with Cluster(fast_config(), seed=8) as c:
        await c.start({1, 2, 3})
        with pytest.raises(TypeError, match="node id must be an int"):
            await c.crash("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="node id must be an int"):
            await c.wait_applied(1, timeout=2.0, ids=["1", 2])  # type: ignore[list-item]
        assert sorted(c.nodes) == [1, 2, 3]
        await c.crash(1)
        with pytest.raises(ValueError, match="node 1 is not running"):
            await c.crash(1)
