"""Who may keep talking to a node over TCP: TLS client certificates bound to node ids
(``peer_id_of_cert``, ``node_id_from_cert``, ``node_uri``) on both sides of a connection,
and the server's membership re-check, which closes the open connections of a sender that
left the membership.

The cluster tests use the ``pki`` fixture's ``node-1`` .. ``node-3`` certificates, bound to
their ids in ``test-cluster``; attackers send ``EVIL_TERM`` requests that no real node's
term reaches, so a delivered one shows in the counting wrapper (``_while_committing``)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from openraft_py.errors import RPCError, Unreachable
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer, node_id_from_cert, node_uri
from openraft_py.types import BasicNode, Vote, VoteRequest, VoteResponse

from .tcp_cluster import TcpCluster, steady_tcp_config, until
from .test_tcp import FakeRaft, _Metrics
from .test_tcp_security import OPT, _attack, _while_committing

pytestmark = pytest.mark.timeout(90)

CLUSTER = "test-cluster"  # the cluster the pki fixture's node certificates are bound in


def _bound_cluster(pki: Any, *, bind: bool) -> TcpCluster:
    """Nodes 1..3 over mutual TLS, each with its own certificate; with ``bind`` every server
    and client checks the peer's certificate against its node id."""

    def ssl_of(nid: int) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return pki.server_ctx(mtls=True, cert=f"node-{nid}"), pki.client_ctx(f"node-{nid}")

    kw: dict[str, Any] = {"peer_id_of_cert": node_id_from_cert(CLUSTER)} if bind else {}
    # 1-2 s election timeouts: ``_while_committing`` checks that the leader's term did not
    # move (no attacker's request got through), and an election after a stall of the loaded
    # machine's loop moved it as well.
    return TcpCluster(steady_tcp_config(), cluster_name=CLUSTER, ssl_of=ssl_of, server_kw=kw, factory_kw=kw)




async def _pre_vote(factory: TcpNetworkFactory, target: int, addr: str, sender: int) -> VoteResponse:
    """A harmless request (a pre-vote at term 1, refused as a value by any running node)."""
    client = factory.new_client(target, BasicNode(addr))
    return await asyncio.wait_for(client.vote(VoteRequest(Vote.new(1, sender), None, pre_vote=True), OPT), 5)


# -- the node_uri convention ------------------------------------------------------------------


def _cert(*uris: str) -> dict[str, Any]:
    return {"subject": ((("commonName", "x"),),), "subjectAltName": (("DNS", "localhost"), *(("URI", u) for u in uris))}


def test_node_uri_round_trips_through_node_id_from_cert() -> None:
    assert node_uri("prod", 3) == "openraft://prod/3"
    assert node_uri("a/b c", 0) == "openraft://a%2Fb%20c/0"
    assert node_id_from_cert("prod")(_cert(node_uri("prod", 3))) == 3
    assert node_id_from_cert("a/b c")(_cert(node_uri("a/b c", 2**63 - 1))) == 2**63 - 1
    # The same id twice, and another cluster's URI beside it, still name node 3.
    assert node_id_from_cert("prod")(_cert("openraft://prod/3", "openraft://prod/3", "openraft://test/4")) == 3
    with pytest.raises(ValueError):
        node_uri("prod", -1)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (("prod", True), TypeError, "node_uri: node id must be an int, got bool True"),  # made "openraft://prod/True"
        (("prod", 1.0), TypeError, "node_uri: node id must be an int, got float 1.0"),  # made "openraft://prod/1.0"
        (("prod", "3"), TypeError, "node_uri: node id must be an int, got str '3'"),
        (("prod", 2**63), ValueError, "node_uri: node id must be within"),
        ((b"prod", 3), TypeError, "node_uri: cluster_name must be a str, got bytes b'prod'"),
    ],
)
def test_node_uri_refuses_what_names_no_node(args: tuple[Any, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        node_uri(*args)


@pytest.mark.parametrize("name", [b"prod", 5, None])
def test_node_id_from_cert_needs_a_str_cluster_name(name: Any) -> None:
    # its callable named no node in any certificate: every peer was refused
    with pytest.raises(TypeError, match="node_id_from_cert: cluster_name must be a str"):
        node_id_from_cert(name)


@pytest.mark.parametrize(
    "uris",
    [
        (),  # no URI at all
        ("openraft://other/3",),  # another cluster's node
        ("openraft://prod/3", "openraft://prod/4"),  # ambiguous
        ("openraft://prod/03",),  # not canonical
        ("openraft://prod/+3",),
        ("openraft://prod/",),
        ("openraft://prod/٣",),  # a non-ASCII digit
        (f"openraft://prod/{2**63}",),  # out of range
        ("spiffe://prod/3",),
    ],
)
def test_node_id_from_cert_names_no_node(uris: tuple[str, ...]) -> None:
    assert node_id_from_cert("prod")(_cert(*uris)) is None
    assert node_id_from_cert("prod")({}) is None


async def test_binding_needs_a_verifying_ssl_context(pki: Any) -> None:
    bind = node_id_from_cert(CLUSTER)
    with pytest.raises(ValueError, match="peer_id_of_cert"):
        await TcpServer.start(FakeRaft(), "127.0.0.1", 0, CLUSTER, peer_id_of_cert=bind)
    with pytest.raises(ValueError, match="peer_id_of_cert"):
        await TcpServer.start(FakeRaft(), "127.0.0.1", 0, CLUSTER, pki.server_ctx(mtls=False), peer_id_of_cert=bind)
    with pytest.raises(ValueError, match="peer_id_of_cert"):
        TcpNetworkFactory(1, CLUSTER, peer_id_of_cert=bind)


# -- certificates bound to node ids -------------------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "claimed", "reason"),
    [
        ("node-2", 3, "the client certificate is node 2's, not node 3's"),
        ("client", 1, "the client certificate names no node id"),  # the cluster CA's, no URI
    ],
)
async def test_a_certificate_cannot_claim_another_node_id(
    cert: str, claimed: int, reason: str, pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With binding on, the cluster (every node bound to its own certificate, both ways)
    commits, and a peer whose certificate does not name the id its hello claims is refused
    by every node; nothing it sends reaches ``Raft``."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with _bound_cluster(pki, bind=True) as c:
        await c.start([1, 2, 3])
        bad = TcpNetworkFactory(claimed, CLUSTER, ssl=pki.client_ctx(cert), backoff_min=0.01, backoff_max=0.02)
        try:
            errors = await _while_committing(c, lambda: _attack(c, bad, claimed_id=claimed, rounds=2))
        finally:
            await bad.close()
        assert errors and all(isinstance(e, Unreachable) and reason in str(e) for e in errors)
        refused = [r.getMessage() for r in caplog.records if "refused the connection from 127.0.0.1:" in r.getMessage()]
        assert refused and all(reason in m for m in refused)
        assert all(n.server is not None and n.server.refused > 0 for n in c.nodes.values())


async def test_a_client_refuses_a_server_certificate_of_another_node(pki: Any) -> None:
    """Node 1's factory dialing node 2's port as if it were node 3 closes the connection
    before the hello: the server certificate is node 2's."""
    async with _bound_cluster(pki, bind=True) as c:
        await c.start([1, 2, 3])
        await c.wait_for_leader(15)
        node2 = c.nodes[2]
        assert node2.counting is not None
        before = node2.counting.total()
        factory = TcpNetworkFactory(1, CLUSTER, ssl=pki.client_ctx("node-1"), peer_id_of_cert=node_id_from_cert(CLUSTER))
        try:
            with pytest.raises(Unreachable, match="the server certificate is node 2's, not node 3's"):
                await _pre_vote(factory, 3, node2.addr, 1)
            # The same factory reaches node 2 as node 2.
            resp = await _pre_vote(factory, 2, node2.addr, 1)
            assert not resp.vote_granted
        finally:
            await factory.close()
        assert node2.counting.total() > before


async def test_without_binding_any_cluster_certificate_may_claim_any_id(pki: Any) -> None:
    """The default (no ``peer_id_of_cert``): mutual TLS only proves a certificate of the
    cluster's CA, so node 2's certificate may speak as node 3 (as before this option)."""
    async with _bound_cluster(pki, bind=False) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_for_leader(15)
        target = c.nodes[leader]
        assert target.counting is not None
        before = target.counting.calls["vote"]
        as3 = TcpNetworkFactory(3, CLUSTER, ssl=pki.client_ctx("node-2"))
        try:
            resp = await _pre_vote(as3, leader, target.addr, 3)
        finally:
            await as3.close()
        assert not resp.vote_granted
        assert target.counting.calls["vote"] == before + 1


# -- the membership re-check -------------------------------------------------------------------


async def test_recheck_keeps_the_handshakes_exceptions() -> None:
    """The re-check applies the handshake's rule: every sender while the node has no
    membership or no leader, then members and the leader it follows; a sender that is
    neither loses its connection."""
    raft = FakeRaft(node_id=2, members=set())
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", membership_check_interval=3600)
    factories = {nid: TcpNetworkFactory(nid, "c") for nid in (1, 3, 5)}
    try:
        for nid, f in factories.items():
            await _pre_vote(f, 2, server.address, nid)
        assert server.recheck_membership() == 0  # no membership yet: everyone stays

        raft.metrics = _Metrics(2, {1, 2})
        # No leader (an election timer fired): every sender stays, as the handshake would
        # take any (a node the membership this node holds missed may be the one to update it).
        raft.metrics.vote = Vote.new(1, 5, committed=True)
        raft.metrics.current_leader = None
        assert server.recheck_membership() == 0
        # A leader that removed itself, still followed (its committed vote).
        raft.metrics.current_leader = 5
        assert server.recheck_membership() == 1
        await until(lambda: not factories[3].connected(2), "node 3's connection closed", 5)
        assert factories[1].connected(2) and factories[5].connected(2)

        raft.metrics.vote = Vote.new(2, 1, committed=True)  # node 5 is no longer followed
        raft.metrics.current_leader = 1
        assert server.recheck_membership() == 1
        await until(lambda: not factories[5].connected(2), "node 5's connection closed", 5)
        assert factories[1].connected(2)
        assert server.connections == 1
        with pytest.raises(Unreachable, match="node 3 is not in the membership"):
            await _pre_vote(factories[3], 2, server.address, 3)
    finally:
        for f in factories.values():
            await f.close()
        await server.close()


async def test_a_removed_nodes_open_connections_are_closed(caplog: pytest.LogCaptureFixture) -> None:
    """A connection speaking as follower R, opened while R is a member, is closed by the
    remaining nodes once R's removal reaches them (by the periodic re-check, well before the
    idle timeout); R's id is refused from then on and the cluster keeps committing."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with TcpCluster(steady_tcp_config()) as c:  # (a node without a leader takes any sender)
        await c.start([1, 2, 3])
        # (Not wait_for_leader: a leader just elected refused the change, having heard from
        # no follower yet.)
        leader = await c.wait_leader_ready(timeout=15)
        removed = max(nid for nid in c.nodes if nid != leader)
        rest = sorted(nid for nid in c.nodes if nid != removed)
        as_removed = TcpNetworkFactory(removed, c.cluster_name, backoff_min=0.01, backoff_max=0.02)
        try:
            for nid in rest:
                await _pre_vote(as_removed, nid, c.nodes[nid].addr, removed)
                assert as_removed.connected(nid)
            raft = c.nodes[leader].raft
            assert raft is not None
            await asyncio.wait_for(raft.change_membership(rest), 15)
            await until(
                lambda: not any(as_removed.connected(nid) for nid in rest), "the removed node's connections closed", 5
            )
            # The real node R is no longer part of the test's cluster (it may not have
            # received its own removal); the impersonator's attacks must all be refused.
            await c.stop_node(removed)
            del c.nodes[removed]
            errors = await _while_committing(c, lambda: _attack(c, as_removed, claimed_id=removed, rounds=2))
        finally:
            await as_removed.close()
        assert errors and all(isinstance(e, RPCError) and f"node {removed} is not in the membership" in str(e) for e in errors)
        closed = [r.getMessage() for r in caplog.records if f"node {removed} is no longer in the membership" in r.getMessage()]
        assert len(closed) >= len(rest) and all("closing the connection from 127.0.0.1:" in m for m in closed)
        assert all((server := c.nodes[nid].server) is not None and server.dropped >= 1 for nid in rest)


class _FakeTransport:
    def __init__(self, cert: dict[str, Any] | None) -> None:
        self.cert = cert

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.cert if name == "peercert" else default


def test_cert_mismatch_refuses_a_failing_callable_and_a_missing_certificate() -> None:
    """``peer_id_of_cert`` raising counts as naming no node (the peer is refused with the
    error in the reason), as does a connection without a verified certificate."""
    from openraft_py.network._tcp_common import cert_mismatch

    cert = {"subjectAltName": (("URI", node_uri(CLUSTER, 2)),)}

    def boom(_: Any) -> int:
        raise KeyError("subjectAltName")

    why = cert_mismatch(_FakeTransport(cert), boom, 2, "client")
    assert why is not None and "peer_id_of_cert failed on the client certificate" in why and "KeyError" in why
    assert cert_mismatch(_FakeTransport(None), node_id_from_cert(CLUSTER), 2, "server") == (
        "no verified server certificate to bind to node 2"
    )
    assert cert_mismatch(_FakeTransport(cert), node_id_from_cert(CLUSTER), 2, "client") is None
    assert "node 2's, not node 3's" in (cert_mismatch(_FakeTransport(cert), node_id_from_cert(CLUSTER), 3, "client") or "")


@pytest.mark.parametrize(
    "returned, claimed",
    [
        (True, 1),  # a predicate's answer: it bound every certificate to node 1
        (3.0, 3),  # taken as node 3
        ("3", 3),  # a common name: refused as "the certificate is node 3's, not node 3's"
        (b"3", 3),
    ],
)
def test_cert_mismatch_refuses_what_a_callable_returns_that_is_no_node_id(returned: Any, claimed: int) -> None:
    from openraft_py.network._tcp_common import cert_mismatch

    why = cert_mismatch(_FakeTransport({"subject": ()}), lambda _: returned, claimed, "client")
    assert why == (f"peer_id_of_cert returned {type(returned).__name__} {returned!r} for the client certificate, "
                   "not a node id (an int) or None")
