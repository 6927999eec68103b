"""A node that leaves the membership is forgotten by the leader: its network client is
dropped and the TCP factory closes its connection to it (``RaftNetworkFactory.forget``).
Both were kept for good: a cluster whose machines were replaced by new node ids over months
held a client, a connection state and, while the old machine ran, an open connection for
every node it ever had."""

from __future__ import annotations

import pytest

from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.types import BasicNode, RPCOption, ServerState, Vote, VoteRequest

from .tcp_cluster import TcpCluster, TcpNode, tcp_config, until

pytestmark = pytest.mark.timeout(60)


def _running(node: TcpNode) -> tuple[TcpNetworkFactory, object]:
    assert node.factory is not None and node.raft is not None
    return node.factory, node.raft


async def test_replaced_voters_are_forgotten_and_their_connections_closed() -> None:
    async with TcpCluster(tcp_config(election_timeout_min=1000, election_timeout_max=2000)) as cluster:
        await cluster.start([1, 2, 3])
        # (Not wait_for_leader: a leader just elected refused add_learner, its membership
        # entry not committed in its view yet.)
        lid = await cluster.wait_leader_ready()
        leader = cluster.nodes[lid]
        factory, _ = _running(leader)
        lraft = leader.raft
        assert lraft is not None
        voters = {1, 2, 3}
        # Replace every voter but the leader by a new node id, one after the other; the
        # replaced machines keep running.
        for new in (4, 5):
            old = min(voters - {lid})
            node = await cluster.start_node(new)
            await lraft.add_learner(new, BasicNode(node.addr))
            await until(lambda old=old: factory.connected(old), f"the leader is connected to node {old}")
            voters = (voters - {old}) | {new}
            await lraft.change_membership(voters)
            await until(lambda old=old: not factory.connected(old), f"the leader's connection to node {old} closed")
            assert cluster.nodes[old].raft is not None, "the replaced node still runs"
        assert sorted(factory._peers) == sorted(voters - {lid})
        assert sorted(lraft._core._clients) == sorted(voters - {lid})
        await cluster.write(b"after")


async def test_forget_fails_calls_of_the_forgotten_target_and_a_new_client_connects_again() -> None:
    async with TcpCluster(tcp_config()) as cluster:
        await cluster.start([1, 2, 3])
        await cluster.wait_for_leader()
        target = cluster.nodes[2]
        factory = TcpNetworkFactory(1, "test-cluster", backoff_min=0.01, backoff_max=0.02)
        try:
            old = factory.new_client(2, BasicNode(target.addr))
            req = VoteRequest(Vote.new(0, 1), None)
            option = RPCOption(hard_ttl=2.0, soft_ttl=2.0)
            await old.vote(req, option)
            assert factory.connected(2)
            factory.forget(2)
            factory.forget(2)  # twice, and an unknown target: nothing happens
            factory.forget(9)
            assert not factory.connected(2)
            with pytest.raises(Unreachable, match="node 2 left the membership"):
                await old.vote(req, option)
            await factory.new_client(2, BasicNode(target.addr)).vote(req, option)
            assert factory.connected(2)
        finally:
            await factory.close()


async def test_a_follower_forgets_the_client_of_a_removed_voter_it_sent_vote_requests_to() -> None:
    """A follower has clients of the voters it once asked for votes; it kept the client of a
    voter removed since (and the TCP factory its connection) until it next became leader."""
    async with TcpCluster(tcp_config(election_timeout_min=1000, election_timeout_max=2000)) as cluster:
        voters = {1, 2, 3, 4}
        await cluster.start(sorted(voters))
        # (Not wait_for_leader: a follower that has heard from the leader may not hold the
        # membership yet, and a node with no membership does not campaign: elect() did nothing.)
        first = await cluster.wait_leader_ready()
        # A follower campaigns, asking every voter (the others refuse while they hear from
        # their leader, or elect it: either way it ends a follower or the leader).
        follower = min(voters - {first})
        fnode = cluster.nodes[follower]
        ffactory, _ = _running(fnode)
        assert fnode.raft is not None
        fcore = fnode.raft._core
        await fnode.raft.trigger.elect()
        await until(lambda: len(fcore._clients) == 3, f"node {follower} asked every voter for its vote")
        leader = await cluster.wait_for_leader()
        if leader == follower:  # it won: hand leadership on, to be a follower again
            await fnode.raft.trigger.transfer_leader(first)
            await fnode.raft.wait(10.0).current_leader(first)
            leader = await cluster.wait_for_leader()
        removed = min(voters - {follower, leader})
        await until(lambda: ffactory.connected(removed), f"node {follower} is connected to node {removed}")
        lraft = cluster.nodes[leader].raft
        assert lraft is not None
        # At once, although the leader may be just elected (or handed leadership) and not have
        # heard from its followers yet: the call waits for their first answers (CI refused it,
        # LearnerIsLagging for [2, 4], replication unknown).
        await lraft.change_membership(voters - {removed})
        await until(lambda: not ffactory.connected(removed), f"node {follower}'s connection to node {removed} closed")
        assert sorted(fcore._clients) == sorted(voters - {follower, removed})
        assert fnode.raft.metrics.state == ServerState.FOLLOWER
        assert cluster.nodes[removed].raft is not None, "the removed node still runs"
        await cluster.write(b"after")
