"""A program written the way a user of openraft-py writes one, against the public API only.

``make lint`` type-checks it with ``mypy --strict`` (the library's own modules are followed
silently, as mypy treats an installed package): every call, attribute and exception used here
must be typed well enough for a strict user. ``test_public_api_user.py`` also runs it, so it
stays a working program.

It builds a three-node cluster on the in-process router with the in-memory stores,
initializes it, writes key-value commands, reads linearizably (read index and lease), adds a
fourth node as a learner and makes it a voter, transfers leadership, and catches the API's
errors by class; ``typed_cluster`` runs the testing ``Cluster`` and copies the metrics'
read-only parts (``replication``, a membership's ``nodes``) before changing them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from openraft_py import (
    BasicNode,
    ChangeMembershipError,
    ClientWriteResponse,
    Config,
    ForwardToLeader,
    InProgress,
    LearnerNotFound,
    LinearizableReadError,
    LogId,
    NodeId,
    NotALearner,
    Raft,
    RaftMetrics,
    ReadPolicy,
    ServerState,
    WaitTimeout,
)
from openraft_py.kv.client import KvClient, Outcome, Response
from openraft_py.network.router import Router
from openraft_py.storage import KvCas, KvSet, MemLogStore, MemStateMachine, encode_kv
from openraft_py.testing import Cluster


@dataclass
class Node:
    """One member of the demo cluster: its ``Raft`` and the state machine it applies to."""

    raft: Raft
    sm: MemStateMachine


@dataclass
class Report:
    """What the run observed (``main`` returns it; the test asserts on it)."""

    leader: NodeId = -1
    writes: list[LogId] = field(default_factory=list)
    read_value: str | None = None
    forwarded_to: NodeId | None = None
    refused_voter: NodeId | None = None
    voters: set[NodeId] = field(default_factory=set)
    not_a_learner: NodeId | None = None
    new_leader: NodeId | None = None


def addr(node_id: NodeId) -> BasicNode:
    """The address a node would listen on (the router does not use it)."""
    return BasicNode(f"127.0.0.1:{22000 + node_id}")


async def start_node(router: Router, node_id: NodeId, config: Config) -> Node:
    """Start one node on the router with fresh in-memory stores."""
    sm = MemStateMachine()
    raft = await Raft.new(node_id, config, router.factory(node_id), MemLogStore(), sm)
    router.register(node_id, raft)
    return Node(raft, sm)


async def write(raft: Raft, key: str, value: str) -> ClientWriteResponse:
    """Set ``key`` through the log; the response's ``data`` is the previous value."""
    return await raft.client_write(encode_kv(KvSet(key, value)))


async def leader_of(nodes: dict[NodeId, Node], timeout: float = 5.0) -> NodeId:
    """The node every running node names as leader, once one is elected."""
    first = next(iter(nodes.values()))
    metrics: RaftMetrics = await first.raft.wait(timeout).metrics(
        lambda m: m.current_leader is not None, "a leader is known"
    )
    leader = metrics.current_leader
    assert leader is not None
    await nodes[leader].raft.wait(timeout).state(ServerState.LEADER, f"n{leader} leads")
    return leader


async def kv_service_calls(client: KvClient) -> list[Response]:
    """Calls on the key-value service's HTTP client with the per-call options a program
    passes (not run here: it needs running ``serve`` nodes). ``mypy --strict`` checks each
    option's name and type (``CallOptions``, ``CallTimes``)."""
    done = [
        await client.put("k", "v", deadline=3.0, attempt_timeout=1.0),
        await client.get("k", "local", endpoint=client.endpoints[0], follow=False),
        await client.cas("k", "v", None, deadline=None),
        await client.init({1: ("127.0.0.1:21001", "127.0.0.1:22001")}, deadline=5.0),
        await client.change_members([1, 2, 3], retain=True, deadline=30.0),
    ]
    assert all(r.outcome in (Outcome.OK, Outcome.FAIL, Outcome.INFO) for r in done)
    return done


async def main() -> Report:
    """Run the scenario of the module docstring and report what happened."""
    report = Report()
    router = Router(seed=1)
    config = Config(cluster_name="typing-demo", election_timeout_min=150, election_timeout_max=300)
    nodes = {i: await start_node(router, i, config) for i in (1, 2, 3)}
    try:
        await nodes[1].raft.initialize({i: addr(i) for i in nodes})
        leader = report.leader = await leader_of(nodes)
        lraft = nodes[leader].raft

        for i in range(3):
            resp = await write(lraft, "counter", str(i))
            report.writes.append(resp.log_id)
        swapped = await lraft.client_write(encode_kv(KvCas("counter", "2", "3")))
        ok, current = swapped.data
        assert ok and current == "3", swapped.data

        # A linearizable read: confirm leadership, then read the local state machine.
        read_at: LogId | None = await lraft.ensure_linearizable(ReadPolicy.READ_INDEX)
        assert read_at is not None and read_at >= report.writes[-1]
        report.read_value = nodes[leader].sm.data.get("counter")
        try:
            await lraft.ensure_linearizable(ReadPolicy.LEASE_READ)
        except LinearizableReadError:
            pass  # the lease lapsed: fall back to a read-index read in a real program

        follower = next(i for i in nodes if i != leader)
        try:
            await write(nodes[follower].raft, "counter", "from a follower")
        except ForwardToLeader as e:
            report.forwarded_to = e.leader_id

        # Membership: a new voter must be a learner first.
        nodes[4] = await start_node(router, 4, config)
        try:
            await lraft.change_membership({1, 2, 3, 4})
        except LearnerNotFound as e:
            report.refused_voter = e.node_id
        await lraft.add_learner(4, addr(4))
        try:
            changed = await lraft.change_membership({1, 2, 3, 4})
        except InProgress:
            changed = await lraft.change_membership({1, 2, 3, 4})
        except ChangeMembershipError as e:
            raise RuntimeError(f"the membership change was refused: {e}") from e
        assert changed.membership is not None
        report.voters = set(changed.membership.voter_ids())
        await lraft.wait(5.0).voter_ids(changed.membership.voter_ids(), "the leader sees the new voters")
        try:  # a voter is not removed as a learner: it leaves with change_membership
            await lraft.remove_learners([4])
        except NotALearner as e:
            report.not_a_learner = e.node_id
        await nodes[4].raft.wait(5.0).applied_index_at_least(changed.log_id.index, "n4 caught up")

        # Hand leadership to node 4 and wait until everyone follows it.
        await lraft.trigger.transfer_leader(4)
        try:
            await nodes[4].raft.wait(5.0).current_leader(4, "n4 leads")
            report.new_leader = 4
        except WaitTimeout:
            report.new_leader = nodes[4].raft.current_leader()
        print(f"leader n{report.leader} -> n{report.new_leader}; voters {sorted(report.voters)}")
        print(nodes[4].raft.metrics)
    finally:
        for node in nodes.values():
            await node.raft.shutdown()
    return report


async def typed_cluster() -> tuple[str | None, dict[NodeId, int], set[NodeId]]:
    """The testing ``Cluster`` with its default stores (``Cluster[MemStateMachine,
    MemLogStore]``: a node's state machine is typed), and the metrics' read-only parts
    copied into dicts of the program's own before it changes them."""
    async with Cluster(Config(cluster_name="typing-cluster"), seed=2) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        resp = await write(c.nodes[leader], "k", "v")
        await c.wait_applied(resp.log_id.index)
        m = c.nodes[leader].metrics
        followers = dict(m.replication or {})
        followers.pop(leader, None)
        nodes = dict(m.membership_config.membership.nodes) | {4: addr(4)}
        return c.state_machines[leader].data.get("k"), followers, set(nodes)


if __name__ == "__main__":
    asyncio.run(main())
