"""``TcpNetworkFactory`` refuses wrong arguments at the call, naming the argument, as
``TcpServer.start`` does (tests/network/test_tcp_server_args.py); ``Raft.new`` refuses a
factory made for another node, and ``TcpServer.start`` a ``node_id`` that is not its node's.

Each of these used to be taken, and the node then never reached a peer: a float or ``bool``
node id or a ``bytes`` cluster name made every peer close the connection on a malformed
hello ("Expected `int`, got `float`", logged by the peers only), a float ``max_frame_size``
failed every connection, ``connect_timeout=nan`` never made a connection on uvloop and
``connect_timeout=inf`` waited for good for a server that accepted the connection and never
answered the handshake. A ``str`` node id or timeout, or an ``int`` cluster name, raised a
bare ``TypeError`` that named no argument ("'<=' not supported between instances of 'int'
and 'str'", "object of type 'int' has no len()").

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from openraft_py import Config
from openraft_py.network.tcp import MAX_BACKOFF, MAX_SECONDS, TcpNetworkFactory, parse_addr
from openraft_py.raft import Raft
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.types import BasicNode

from .tcp_cluster import TcpCluster, tcp_config

pytestmark = pytest.mark.timeout(60)

SECONDS = ("connect_timeout", "backoff_min", "backoff_max")

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    *[({name: v}, TypeError, f"{name} must be a number") for name in SECONDS for v in ("1", None, True)],
    *[({name: v}, ValueError, f"{name} must be finite") for name in SECONDS for v in (math.nan, math.inf, -math.inf)],
    *[({name: v}, ValueError, f"{name} must be above 0") for name in SECONDS for v in (0, -1.5)],
    ({"backoff_min": 2.0, "backoff_max": 1.0}, ValueError, "backoff_min=2.0 must be at most backoff_max=1.0"),
    # (1e12 was taken: a peer that failed once was never tried again)
    *[({"backoff_max": v}, ValueError, f"backoff_max must be at most {MAX_BACKOFF:g} seconds (MAX_BACKOFF")
      for v in (MAX_BACKOFF * 2, 1e12)],
    # (1e12 was taken: a connect or handshake that hung held every later call to its peer)
    *[({"connect_timeout": v}, ValueError, f"connect_timeout must be above 0 and at most {MAX_SECONDS:g} seconds "
                                           "(MAX_SECONDS") for v in (MAX_SECONDS * 1.5, 1e12, 1e300)],
    ({"backoff_min": 1e12}, ValueError, "backoff_min=1000000000000.0 must be at most backoff_max=1.0"),
    *[({"max_frame_size": v}, TypeError, "max_frame_size must be an int") for v in (1e9, 100.5, "100", None, True)],
    ({"max_frame_size": 63}, ValueError, "max_frame_size must be at least 64"),
    ({"cluster_name": 5}, TypeError, "cluster_name must be a str, got int 5"),
    ({"cluster_name": b"c"}, TypeError, "cluster_name must be a str, got bytes"),
    ({"cluster_name": "c" * 257}, ValueError, "cluster_name longer than 256"),
    # (as Config.cluster_name and serve: "" was taken)
    ({"cluster_name": ""}, ValueError, "cluster_name must be a non-empty string"),
    # (a frame's length is a u32: 2**70 was taken)
    *[({"max_frame_size": v}, ValueError, "max_frame_size must be at most 4294967295") for v in (2**32, 2**70)],
    ({"node_id": 1.5}, TypeError, "node_id must be an int, got float 1.5"),
    ({"node_id": True}, TypeError, "node_id must be an int, got bool True"),
    ({"node_id": "1"}, TypeError, "node_id must be an int, got str '1'"),
    ({"node_id": -1}, ValueError, "node_id must be within"),
    ({"node_id": 2**63}, ValueError, "node_id must be within"),
]


@pytest.mark.parametrize(("kw", "error", "message"), BAD, ids=[repr(b[0])[:50] for b in BAD])
async def test_wrong_arguments_are_refused_naming_them(kw: dict[str, Any], error: type[Exception], message: str) -> None:
    kw = dict(kw)
    node_id = kw.pop("node_id", 1)
    cluster_name = kw.pop("cluster_name", "c")
    with pytest.raises(error) as info:
        factory = TcpNetworkFactory(node_id, cluster_name, **kw)
        await factory.close()
    assert message in str(info.value)


async def test_right_arguments_of_every_kind_are_accepted() -> None:
    factory = TcpNetworkFactory(
        0, "c", connect_timeout=2, backoff_min=0.5, backoff_max=0.5, max_frame_size=64, seed=3,
    )  # fmt: skip
    try:
        assert (factory.node_id, factory.cluster_name, factory.max_frame_size) == (0, "c", 64)
        assert TcpNetworkFactory(0, "c", max_frame_size=2**32 - 1).max_frame_size == 2**32 - 1
        assert (factory.connect_timeout, factory.backoff_min, factory.backoff_max) == (2.0, 0.5, 0.5)
        assert type(factory.connect_timeout) is float
        longest = TcpNetworkFactory(0, "c", backoff_min=MAX_BACKOFF, backoff_max=MAX_BACKOFF,
                                    connect_timeout=MAX_SECONDS)
        assert (longest.backoff_min, longest.backoff_max) == (MAX_BACKOFF, MAX_BACKOFF)
        assert longest.connect_timeout == MAX_SECONDS
        await longest.close()
    finally:
        await factory.close()


async def test_raft_new_refuses_a_factory_of_another_node() -> None:
    """A ``TcpNetworkFactory`` made for node 2 given to node 1: its peers refuse every request
    whose sender is not the handshake's ("refused vote from node 2: it names node 1 as its
    leader", logged by the peers only), so node 1 never won an election. ``Raft.new``
    refuses it before anything is read; the factory of the node's own id is taken."""
    disk = MemDisk()
    factory = TcpNetworkFactory(2, "c")
    try:
        with pytest.raises(ValueError, match=r"network_factory speaks for node 2 \(its node_id\), not node 1"):
            await Raft.new(1, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
        assert disk.vote is None and not disk.entries
        raft = await Raft.new(2, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
        await raft.shutdown()
    finally:
        await factory.close()


async def test_raft_new_refuses_a_closed_factory() -> None:
    """A node restarted in-process on the factory its first run closed (the shutdown order of
    the getting-started guide: node, server, factory): every RPC of the new node failed with
    "the network factory is closed", logged at DEBUG only, and the node never reached a peer
    (a cluster restarted so never elected a leader). ``Raft.new`` refuses a closed factory
    before anything is read; a new factory of the same node is taken."""
    disk = MemDisk()
    factory = TcpNetworkFactory(1, "c")
    first = await Raft.new(1, Config(cluster_name="c"), factory, MemLogStore(disk), MemStateMachine(disk))
    await first.shutdown()
    await factory.close()
    assert factory.closed
    with pytest.raises(ValueError, match=r"network_factory .* is closed"):
        await Raft.new(1, Config(cluster_name="c"), factory, MemLogStore(disk), MemStateMachine(disk))
    async with TcpNetworkFactory(1, "c") as again:
        assert not again.closed
        raft = await Raft.new(1, Config(cluster_name="c"), again, MemLogStore(disk), MemStateMachine(disk))
        await raft.shutdown()


async def test_tcp_server_start_refuses_a_node_id_that_is_not_the_raft_s() -> None:
    """``TcpServer.start(raft, ..., node_id=7)`` for node 2: every peer that dialled it got a
    handshake answer from "node 7" and closed the connection ("the node at ... is node 7"),
    so node 2 was unreachable. Its own id, or none, is taken."""
    from openraft_py.network.tcp import TcpServer

    disk = MemDisk()
    factory = TcpNetworkFactory(2, "c")
    raft = await Raft.new(2, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
    try:
        with pytest.raises(ValueError, match=r"node_id=7 is not the id of the node served, 2"):
            await TcpServer.start(raft, "127.0.0.1", 0, "c", node_id=7)
        for node_id in (2, None):
            server = await TcpServer.start(raft, "127.0.0.1", 0, "c", node_id=node_id)
            assert server.node_id == 2
            await server.close()
    finally:
        await raft.shutdown()
        await factory.close()


async def test_tcp_server_start_refuses_a_cluster_name_that_is_not_the_factory_s() -> None:
    """``TcpServer.start(raft, ..., "prod")`` for a node whose ``TcpNetworkFactory`` says
    ``"staging"``: its peers dial with their factories' name, so the server refused every
    one of them ("wrong cluster name 'staging'", a WARNING in the log only) and the node
    was never reached. Refused at the call, naming both; the factory's own name is taken
    (an empty name is refused by both, as by ``Config``)."""
    from openraft_py.network.tcp import TcpServer

    for factory_name, other in (("staging", "prod"), ("prod", "staging")):
        disk = MemDisk()
        factory = TcpNetworkFactory(2, factory_name)
        raft = await Raft.new(2, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
        try:
            with pytest.raises(ValueError, match=rf"cluster_name='{other}' is not the cluster name of the node's "
                                                 rf"network factory, '{factory_name}'"):
                await TcpServer.start(raft, "127.0.0.1", 0, other)
            server = await TcpServer.start(raft, "127.0.0.1", 0, factory_name)
            assert server.cluster_name == factory_name
            await server.close()
        finally:
            await raft.shutdown()
            await factory.close()


async def test_new_client_refuses_a_node_that_is_not_a_basic_node_naming_it() -> None:
    """``new_client(2, "x")``: a ``str`` for the node failed with "'str' object has no
    attribute 'addr'", naming no argument; a ``str`` target was taken."""
    factory = TcpNetworkFactory(1, "c")
    try:
        with pytest.raises(TypeError, match=r"^node must be a BasicNode, got str 'x'$"):
            factory.new_client(2, "x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^node\.addr must be a str, got int$"):
            factory.new_client(2, BasicNode(5))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^target must be an int, got str '2'$"):
            factory.new_client("2", BasicNode("127.0.0.1:1"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^target must be within"):
            factory.new_client(-1, BasicNode("127.0.0.1:1"))
        assert not factory._peers  # nothing was made for the refused calls
        assert factory.new_client(2, BasicNode("127.0.0.1:1")).target == 2
    finally:
        await factory.close()


@pytest.mark.parametrize("addr", ["", "127.0.0.1", "h:", ":1", "h:port", "h:70000"])
async def test_add_learner_and_initialize_refuse_an_address_tcp_cannot_dial(addr: str) -> None:
    """``add_learner(4, BasicNode(""))`` on a node of the TCP transport was committed: a
    learner no RPC could reach (each raised ``Unreachable``), and a blocking call waited
    for good. The factory's ``check_node`` refuses an address that is not ``"host:port"``
    in ``add_learner`` and ``initialize`` before anything is logged: with it, a list of ids
    (each member at ``""``) is refused too. The in-process ``Router``, whose addresses mean
    nothing, still takes any (tests/hardening)."""
    disk = MemDisk()
    factory = TcpNetworkFactory(1, "c")
    raft = await Raft.new(1, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
    try:
        for members in ({1: BasicNode(addr)}, [1], {1: BasicNode("127.0.0.1:1"), 2: BasicNode(addr)}):
            if members == [1] and addr != "":
                continue  # (the same case for every addr)
            bad = 2 if 2 in members else 1
            with pytest.raises(ValueError, match=rf"^node {bad}'s addr '{addr}' is not an address the TCP "
                                                 r"transport can dial: .*\(give BasicNode\(\"host:port\"\)\)$"):
                await raft.initialize(members)
        assert disk.vote is None and not disk.entries  # nothing was logged or voted
        await raft.initialize({1: BasicNode("127.0.0.1:1")})
        await raft.wait(timeout=5).current_leader(1)
        await raft.wait(timeout=5).applied_index_at_least(raft.metrics.last_log_index)
        last = raft.metrics.last_log_index
        with pytest.raises(ValueError, match=rf"^node 4's addr '{addr}' is not an address the TCP transport can dial"):
            await raft.add_learner(4, BasicNode(addr), blocking=False)
        assert raft.metrics.last_log_index == last and 4 not in raft.metrics.membership_config.membership.nodes
        resp = await raft.add_learner(4, BasicNode("127.0.0.1:2"), blocking=False)
        assert resp.log_id.index == last + 1
    finally:
        await raft.shutdown()
        await factory.close()


async def test_initialize_and_add_learner_refuse_a_port_with_a_leading_zero() -> None:
    """``BasicNode("127.0.0.1:021001")`` was taken (the transport dials port 21001), and a
    membership compares addresses as written, so it and ``127.0.0.1:21001`` were two
    members' addresses. ``check_node`` refuses a given port with a leading zero, saying how
    to write it, before anything is logged."""
    disk = MemDisk()
    factory = TcpNetworkFactory(1, "c")
    raft = await Raft.new(1, Config(), factory, MemLogStore(disk), MemStateMachine(disk))
    try:
        with pytest.raises(ValueError, match=r"^node 1's addr '127\.0\.0\.1:021001' is not an address the TCP "
                                             r"transport can dial: the port '021001' in '127\.0\.0\.1:021001' has "
                                             r"a leading zero: write the port as 21001 "):
            await raft.initialize({1: BasicNode("127.0.0.1:021001")})
        assert disk.vote is None and not disk.entries
        await raft.initialize({1: BasicNode("127.0.0.1:21001")})
        await raft.wait(timeout=5).current_leader(1)
        await raft.wait(timeout=5).applied_index_at_least(raft.metrics.last_log_index)
        with pytest.raises(ValueError, match=r"write the port as 21002 "):
            await raft.add_learner(2, BasicNode("127.0.0.1:0021002"), blocking=False)
        assert 2 not in raft.metrics.membership_config.membership.nodes
    finally:
        await raft.shutdown()
        await factory.close()


async def test_a_stored_membership_with_a_leading_zero_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """A membership written by an earlier release, which took ``127.0.0.1:0<port>``, is read
    back as it is: the nodes restart on it, elect a leader and replicate (the refusal is of
    addresses given, never of those stored)."""
    async with TcpCluster(tcp_config()) as cluster:
        for nid in (1, 2, 3):
            await cluster.start_node(nid)
        first = cluster.nodes[1].raft
        assert first is not None
        with monkeypatch.context() as m:  # the earlier release's check: parse_addr only
            m.setattr(TcpNetworkFactory, "check_node", lambda self, target, node: parse_addr(node.addr))
            await first.initialize({nid: BasicNode(f"127.0.0.1:0{n.port}") for nid, n in cluster.nodes.items()})
        before = await cluster.write(b"before")
        await cluster.wait_applied(before.index)
        for nid in (1, 2, 3):
            await cluster.stop_node(nid)
        for nid in (1, 2, 3):
            await cluster.start_node(nid)
        after = await cluster.write(b"after")
        await cluster.wait_applied(after.index)
        for r in cluster.running().values():
            nodes = r.metrics.membership_config.membership.nodes
            assert {n.addr for n in nodes.values()} == {f"127.0.0.1:0{n.port}" for n in cluster.nodes.values()}
