"""A member that moves to another address: ``add_learner(node_id, BasicNode(new_addr))`` of an
existing member records the new address, and every node then sends to it there, the leader's
replication and a later candidate's vote requests alike (the core asks the network factory for
a new client when a target's ``BasicNode`` changes)."""

from __future__ import annotations

import pytest

from openraft_py.types import BasicNode, ServerState

from .tcp_cluster import TcpCluster, tcp_config

pytestmark = pytest.mark.timeout(90)


async def test_a_voter_readdressed_by_add_learner_is_replicated_to_and_asked_for_votes_at_its_new_address() -> None:
    async with TcpCluster(tcp_config()) as cluster:
        await cluster.start([1, 2, 3])
        leader = await cluster.wait_for_leader()
        moved = max(nid for nid in (1, 2, 3) if nid != leader)
        other = 6 - leader - moved
        await cluster.write(b"before")
        old_addr = cluster.nodes[moved].addr

        # The node comes back on another port with its disk: its old address is closed.
        await cluster.stop_node(moved)
        cluster.nodes[moved].port = 0
        await cluster.start_node(moved)
        new_addr = cluster.nodes[moved].addr
        assert new_addr != old_addr
        lraft = cluster.nodes[leader].raft
        assert lraft is not None
        resp = await lraft.add_learner(moved, BasicNode(new_addr))
        m = resp.membership
        assert m is not None and m.nodes[moved] == BasicNode(new_addr)
        assert m.is_voter(moved), "a voter given a new address stays a voter"

        lid = await cluster.write(b"after")
        mraft = cluster.nodes[moved].raft
        assert mraft is not None
        await mraft.wait(10).applied_index_at_least(lid.index, "the moved node applied the write")

        # Without the old leader, the other two must elect one: each asks the other for its
        # vote, the moved node at its new address.
        await cluster.stop_node(leader)
        new_leader = await cluster.wait_for_leader(15)
        assert new_leader in (moved, other)
        nraft = cluster.nodes[new_leader].raft
        assert nraft is not None and nraft.metrics.state == ServerState.LEADER
        lid = await cluster.write(b"with two")
        for nid in (moved, other):
            r = cluster.nodes[nid].raft
            assert r is not None
            await r.wait(10).applied_index_at_least(lid.index, f"n{nid} applied the write of two nodes")
