"""A state machine whose ``begin_receiving_snapshot`` returns something the node cannot write
a snapshot into: its node stops with ``StorageError`` naming the method and what it returned,
and the leader goes on.

The contract (``RaftStateMachine.begin_receiving_snapshot``) is a writable binary file object.
``None`` (a forgotten ``return``), a text file or a closed file stopped the node at the first
chunk with what the write hit ("AttributeError: 'NoneType' object has no attribute 'seek'",
"TypeError: string argument expected, got 'bytes'", "ValueError: I/O operation on closed
file."), naming neither the method nor the contract; a plug-in's other wrong answers
(``apply``, ``build_snapshot``, ``get_current_snapshot``) already said both (``t50_plugins``).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from openraft_py import BasicNode, Config, Raft, ServerState, SnapshotPolicy
from openraft_py.network.router import Router
from openraft_py.storage import MemLogStore, MemStateMachine

pytestmark = pytest.mark.timeout(60)


def _closed() -> io.BytesIO:
    f = io.BytesIO()
    f.close()
    return f


class OddReceiver(MemStateMachine):
    """A state machine whose ``begin_receiving_snapshot`` returns ``self.odd()``."""

    def __init__(self, odd: Any) -> None:
        super().__init__()
        self.odd = odd

    async def begin_receiving_snapshot(self) -> Any:
        return self.odd()


@pytest.mark.parametrize(("odd", "got"), [
    (lambda: None, "NoneType None"),
    (io.StringIO, "a text file (StringIO)"),
    (_closed, "a closed file (BytesIO)"),
    (lambda: b"", "bytes b''"),
], ids=["none", "text-file", "closed-file", "bytes"])
async def test_a_receiving_file_the_node_cannot_write_stops_its_node_naming_it(odd: Any, got: str) -> None:
    router = Router()
    config = Config(cluster_name="t76", snapshot_policy=SnapshotPolicy.never())
    leader = await Raft.new(1, config, router.factory(1), MemLogStore(), MemStateMachine())
    learner = await Raft.new(2, config, router.factory(2), MemLogStore(), OddReceiver(odd))
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
        m = await learner.wait(timeout=10).metrics(lambda m: not m.running, "n2 stopped")
        assert m.error is not None
        assert m.error == ("storage error while beginning to receive a snapshot: TypeError: "
                           f"begin_receiving_snapshot returned {got}, expected a writable binary file object"), m.error
        # The leader goes on: it commits alone.
        await leader.client_write(b"y")
        assert leader.metrics.running and leader.is_leader()
    finally:
        await learner.shutdown()
        await leader.shutdown()


class _WriteOnly:
    """A receiving file with what the node calls on one (``write``, ``seek``, ``truncate``,
    ``close``: ``RaftStateMachine.begin_receiving_snapshot``) and no ``read``: its state
    machine's ``install_snapshot`` reads what was written from ``buf``."""

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


class WriteOnlyReceiver(MemStateMachine):
    """Receives snapshots into a ``_WriteOnly`` and installs from its buffer."""

    async def begin_receiving_snapshot(self) -> Any:
        return _WriteOnly()

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        data.buf.seek(0)
        await super().install_snapshot(meta, data.buf)


async def test_a_receiving_file_with_the_methods_the_contract_names_is_taken() -> None:
    """The contract names ``write``, ``seek``, ``truncate`` and ``close``: a file object with
    those and no ``read`` is written into and installed (the check refused it for ``read``,
    which the node never calls on it, stopping the node)."""
    router = Router()
    config = Config(cluster_name="t76", snapshot_policy=SnapshotPolicy.never())
    leader = await Raft.new(1, config, router.factory(1), MemLogStore(), MemStateMachine())
    learner = await Raft.new(2, config, router.factory(2), MemLogStore(), WriteOnlyReceiver())
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
        m = await learner.wait(timeout=10).metrics(
            lambda m: not m.running or (m.snapshot is not None and m.snapshot.index >= index), "n2 installed it")
        assert m.running, m.error
    finally:
        await learner.shutdown()
        await leader.shutdown()
