"""A state machine may receive a snapshot into any binary file: ``RaftStateMachine.
begin_receiving_snapshot`` returns ``IO[bytes]``. It returned ``BinaryIO``, which
``tempfile.SpooledTemporaryFile`` and ``NamedTemporaryFile`` are not to type checkers: a
state machine that received into one (it works when run: the node only writes, seeks,
truncates and closes the file) could not satisfy the protocol under ``mypy --strict``,
whether it declared ``IO[bytes]`` (refused at ``Raft.new``) or ``BinaryIO`` (refused at its
``return``).

The type check needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

import pytest

from openraft_py import BasicNode, Config, SnapshotMeta
from openraft_py.storage import KvSet, MemDisk, MemStateMachine, encode_kv
from openraft_py.testing import Cluster

from .test_must_not_type_check import mypy_strict_errors

pytestmark = pytest.mark.timeout(300)

SPOOLED_STATE_MACHINE = '''
import tempfile
from typing import IO

from openraft_py import Config, Entry, LogId, Raft, RaftStateMachine, Snapshot, SnapshotMeta, StoredMembership
from openraft_py.network.router import Router
from openraft_py.storage import EMPTY_STORED_MEMBERSHIP, MemLogStore


class SpooledStateMachine:
    def __init__(self) -> None:
        self.applied: LogId | None = None
        self.membership = EMPTY_STORED_MEMBERSHIP
        self.state = b""

    async def applied_state(self) -> tuple[LogId | None, StoredMembership]:
        return self.applied, self.membership

    async def apply(self, entries: list[Entry]) -> list[object]:
        if entries:
            self.applied = entries[-1].log_id
        return [None for _ in entries]

    async def begin_receiving_snapshot(self) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=1 << 20)

    async def install_snapshot(self, meta: SnapshotMeta, data: IO[bytes]) -> None:
        data.seek(0)
        self.state = data.read()
        self.applied, self.membership = meta.last_log_id, meta.last_membership

    async def get_current_snapshot(self) -> Snapshot | None:
        return None

    def get_snapshot_builder(self) -> "NamedFileBuilder":
        return NamedFileBuilder(self)


class NamedFileBuilder:
    def __init__(self, sm: SpooledStateMachine) -> None:
        self.sm = sm

    async def build_snapshot(self) -> Snapshot:
        f = tempfile.NamedTemporaryFile()
        f.write(self.sm.state)
        f.seek(0)
        return Snapshot(SnapshotMeta(self.sm.applied, self.sm.membership, "s-1"), f)


async def start() -> Raft:
    sm: RaftStateMachine = SpooledStateMachine()
    return await Raft.new(1, Config(), Router().factory(1), MemLogStore(), sm)
'''


def test_a_state_machine_receiving_into_a_temporary_file_type_checks(tmp_path: Path, mypy_cache: Path) -> None:
    assert mypy_strict_errors(SPOOLED_STATE_MACHINE, tmp_path, mypy_cache) == []


class _SpooledMemStateMachine(MemStateMachine):
    """``MemStateMachine`` receiving snapshots into a ``SpooledTemporaryFile``."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.files: list[IO[bytes]] = []

    async def begin_receiving_snapshot(self) -> IO[bytes]:  # type: ignore[override]
        f = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        self.files.append(f)
        return f

    async def install_snapshot(self, meta: SnapshotMeta, data: IO[bytes]) -> None:  # type: ignore[override]
        await super().install_snapshot(meta, data)  # type: ignore[arg-type]


async def test_a_learner_catches_up_by_a_snapshot_received_into_a_spooled_file() -> None:
    """What the protocol now types is what runs: the node writes the leader's snapshot into
    the ``SpooledTemporaryFile`` and the state machine installs it."""
    async with Cluster(Config(), seed=3, state_machine=_SpooledMemStateMachine) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader()]
        last = None
        for i in range(20):
            last = (await leader.client_write(encode_kv(KvSet(f"k{i}", f"v{i}")))).log_id
        assert last is not None
        await leader.trigger.snapshot()
        await leader.wait(10.0).snapshot(last.index, "the leader built a snapshot")
        await leader.trigger.purge_log(last.index)
        await leader.wait(10.0).purged(last.index, "the leader purged its log")
        await c.add_node(4)
        await leader.add_learner(4, BasicNode("n4"), blocking=True)
        learner = c.state_machines[4]
        assert learner.files, "node 4 caught up without receiving a snapshot"
        assert learner.data["k19"] == "v19"
