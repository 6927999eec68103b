"""A member that missed a membership change must still take a node the change added.

The TCP handshake refuses a node outside the membership a node holds. A node that was down
while node 4 joined holds the old membership and does not know node 4: when the only other
voter it could learn the change from is gone too, node 4 is the one node that can bring it
up to date, and a handshake refusing node 4 left the cluster without a quorum for good
(node 4 could neither replicate to it nor win its vote). A node without a leader now takes a
node outside its membership; the engine decides on its requests by vote and log, as for any
node, and a node that follows a leader still refuses it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import BasicNode

from .tcp_cluster import TcpCluster, steady_tcp_config, tcp_config, until

pytestmark = pytest.mark.timeout(90)


async def test_a_member_that_missed_a_node_joining_takes_it_when_leaderless() -> None:
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_leader_ready(timeout=15)
        stay, lagging = sorted(nid for nid in (1, 2, 3) if nid != leader)
        await c.write(b"before", timeout=15)

        # The lagging member misses node 4 joining and the old leader leaving.
        await c.stop_node(lagging)
        await c.start_node(4)
        raft = c.nodes[leader].raft
        assert raft is not None
        await asyncio.wait_for(raft.add_learner(4, BasicNode(c.nodes[4].addr)), 15)
        await asyncio.wait_for(raft.change_membership({stay, lagging, 4}), 15)
        await c.stop_node(leader)  # removed: it no longer follows the cluster
        last = await c.write(b"after the change", timeout=15)
        await c.nodes[4].raft.wait(15).applied_index_at_least(last.index, "node 4 applied the change")  # type: ignore[union-attr]

        # Only node 4 is left that knows the new membership: the old leader is gone, and so
        # is the one other node the lagging member knows.
        await c.stop_node(stay)
        await c.start_node(lagging)
        node = c.nodes[lagging]
        assert node.raft is not None
        assert 4 not in node.raft.metrics.membership_config.membership.nodes

        # Voters {stay, lagging, 4}: lagging and 4 are a quorum once they talk.
        written = await c.write(b"with the lagging member", timeout=30)
        await node.raft.wait(15).applied_index_at_least(written.index, "the lagging member applied the new write")
        assert 4 in node.raft.metrics.membership_config.membership.nodes
        assert node.server is not None
        await until(lambda: node.server is not None and node.server.connections >= 1, "node 4 connected", 5)


async def test_a_node_following_a_leader_still_refuses_a_node_outside_its_membership() -> None:
    """The leaderless exception is only that: a node that follows a leader (and the leader
    itself) refuses an id outside its membership, as before."""
    from openraft_py.errors import Unreachable
    from openraft_py.network.tcp import TcpNetworkFactory
    from openraft_py.types import Vote, VoteRequest

    async with TcpCluster(steady_tcp_config()) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_leader_ready(timeout=15)
        stranger = TcpNetworkFactory(42, c.cluster_name, backoff_min=0.01, backoff_max=0.02)
        try:
            for nid in (1, 2, 3):
                client = stranger.new_client(nid, BasicNode(c.nodes[nid].addr))
                req = VoteRequest(Vote.new(1, 42), None)
                with pytest.raises(Unreachable, match="node 42 is not in the membership"):
                    await client.vote(req)
        finally:
            await stranger.close()
        assert (await c.wait_for_leader()) == leader


async def test_with_certificates_bound_to_ids_a_leaderless_node_still_refuses_an_outside_id(pki: Any) -> None:
    """Under ``peer_id_of_cert`` the exception is off: node 4's certificate (valid, of the
    cluster's CA, its id outside the membership) is refused by the one node left running of
    three, which has no leader; it was taken, and a vote request of a high term naming a
    long log won that node's vote."""
    from openraft_py.errors import Unreachable
    from openraft_py.network.tcp import TcpNetworkFactory, node_id_from_cert
    from openraft_py.types import LogId, RPCOption, Vote, VoteRequest

    from .test_tcp_identity import CLUSTER, _bound_cluster

    async with _bound_cluster(pki, bind=True) as c:
        await c.start([1, 2, 3])
        leader = await c.wait_leader_ready(timeout=15)
        victim = min(n for n in (1, 2, 3) if n != leader)
        for nid in (1, 2, 3):
            if nid != victim:
                await c.stop_node(nid)
        raft = c.nodes[victim].raft
        assert raft is not None
        await raft.wait(15).current_leader(None, "the node left running has no leader")
        outsider = TcpNetworkFactory(4, CLUSTER, ssl=pki.client_ctx("node-4"), peer_id_of_cert=node_id_from_cert(CLUSTER))
        try:
            client = outsider.new_client(victim, BasicNode(c.nodes[victim].addr))
            lie = VoteRequest(Vote.new(10**6, 4), LogId(10**6, 10**6))
            with pytest.raises(Unreachable, match="node 4 is not in the membership"):
                await asyncio.wait_for(client.vote(lie, RPCOption(hard_ttl=3.0, soft_ttl=3.0)), 5)
        finally:
            await outsider.close()
        assert raft.metrics.vote.leader_id.node_id != 4 and raft.metrics.current_term < 10**6
