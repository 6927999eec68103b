"""A learner only a snapshot can reach: for the tests of what a state machine's
``begin_receiving_snapshot`` returns (t76, t77)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from openraft_py import BasicNode, Config, Raft, ServerState, SnapshotPolicy
from openraft_py.network.router import Router
from openraft_py.storage import MemLogStore, MemStateMachine, RaftStateMachine


@asynccontextmanager
async def snapshot_only_learner(cluster_name: str, state_machine: RaftStateMachine) -> AsyncIterator[tuple[Raft, Raft, int]]:
    """Leader n1, its log purged up to a snapshot of its one write, and learner n2 over
    ``state_machine``, added without waiting: ``(leader, learner, the snapshot's index)``.
    Both nodes are shut down on the way out."""
    router = Router()
    config = Config(cluster_name=cluster_name, snapshot_policy=SnapshotPolicy.never())
    leader = await Raft.new(1, config, router.factory(1), MemLogStore(), MemStateMachine())
    learner = await Raft.new(2, config, router.factory(2), MemLogStore(), state_machine)
    router.register(1, leader)
    router.register(2, learner)
    try:
        await leader.initialize({1: BasicNode("1")})
        await leader.wait(timeout=10).state(ServerState.LEADER, "n1 leads")
        index = (await leader.client_write(b"x")).log_id.index
        await leader.trigger.snapshot()
        await leader.wait(timeout=10).snapshot(index, "n1 built a snapshot")
        await leader.trigger.purge_log(index)
        await leader.wait(timeout=10).purged(index, "n1 purged its log")
        await leader.add_learner(2, BasicNode("2"), blocking=False)  # (only a snapshot can reach n2)
        yield leader, learner, index
    finally:
        await learner.shutdown()
        await leader.shutdown()
