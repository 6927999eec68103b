"""A learner only a snapshot can reach, and receiving files and state machines to hand it:
for the tests of what a state machine's ``begin_receiving_snapshot`` returns (t76, t77, t84,
t88)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

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


async def installs_it(cluster_name: str, state_machine: RaftStateMachine) -> None:
    """Assert that the learner of ``snapshot_only_learner`` over ``state_machine`` installs
    the leader's snapshot (and does not stop)."""
    async with snapshot_only_learner(cluster_name, state_machine) as (_, learner, index):
        m = await learner.wait(timeout=10).metrics(
            lambda m: not m.running or (m.snapshot is not None and m.snapshot.index >= index), "n2 installed it")
        assert m.running, m.error


class WriteOnlyFile:
    """A receiving file with what the node calls on one (``write``, ``seek``, ``truncate``,
    ``close``: ``RaftStateMachine.begin_receiving_snapshot``) and no ``read``: what is
    written goes to ``buf``, which ``BufferReceiver`` installs from."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, b: bytes) -> int:
        return self.buf.write(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buf.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self.buf.truncate(size)

    def close(self) -> None:
        pass


class BufferReceiver(MemStateMachine):
    """Receives snapshots into ``make()`` (a ``WriteOnlyFile``) and installs from its buffer."""

    def __init__(self, make: Callable[[], WriteOnlyFile]) -> None:
        super().__init__()
        self.make = make

    async def begin_receiving_snapshot(self) -> Any:
        return self.make()

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        data.buf.seek(0)
        await super().install_snapshot(meta, data.buf)


class RecordingReceiver(MemStateMachine):
    """A state machine whose ``begin_receiving_snapshot`` returns ``make()``, each kept in
    ``given`` (to check that the node closed what it refused)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__()
        self.make = make
        self.given: list[Any] = []

    async def begin_receiving_snapshot(self) -> Any:
        f = self.make()
        self.given.append(f)
        return f
