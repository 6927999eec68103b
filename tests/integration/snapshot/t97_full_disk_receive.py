"""A learner whose disk is full while it receives a snapshot: it stops with a
``StorageError`` naming the file it could not write and "No space left on device"; the
leader and the other voters keep committing.

The write's ``OSError`` names no file (the kernel's ``write`` on a descriptor never does):
the node said "storage error while writing snapshot 1-199-...: OSError: [Errno 28] No space
left on device", so the operator could not tell which disk was full."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from openraft_py import BasicNode, Snapshot
from openraft_py.storage.memory import MemStateMachine
from openraft_py.testing.cluster import Cluster

from .helpers import snap_config, write

pytestmark = pytest.mark.timeout(30)


class _FullDiskFile(io.FileIO):
    """A real file (``name`` is its path) on a disk that is full: every write fails as the
    kernel's does, naming no file."""

    def write(self, b: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDiskFiles(MemStateMachine):
    """``MemStateMachine`` receiving snapshots into files of a full disk (under ``DIR``)."""

    DIR: Path

    async def begin_receiving_snapshot(self) -> BinaryIO:
        return _FullDiskFile(str(self.DIR / "recv-1.tmp"), "w+")  # type: ignore[return-value]


async def test_a_learner_whose_disk_is_full_stops_naming_the_snapshot_file(tmp_path: Path) -> None:
    full: list[bool] = []  # nodes started once it holds True get the full disk

    class FullDisk(_FullDiskFiles):
        DIR = tmp_path

    c = Cluster(snap_config(), seed=5, state_machine=lambda disk: FullDisk(disk) if full else MemStateMachine(disk))
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 50)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")

        full.append(True)
        await c.add_node(4)
        await raft.add_learner(4, BasicNode("n4"), blocking=False)
        m = await c.nodes[4].wait(10).metrics(lambda m: not m.running, "the learner stopped")
        assert m.error is not None
        assert "No space left on device" in m.error, m.error
        assert str(tmp_path / "recv-1.tmp") in m.error, m.error

        # The cluster goes on without it.
        more = await write(c, leader, 50, 60)
        await raft.wait(5).applied_index_at_least(more, "the leader commits without the learner")
    finally:
        await c.shutdown()


class _UnreadableFile(io.FileIO):
    """A real file on a failing disk: every read fails as the kernel's does (``EIO``),
    naming no file."""

    def read(self, size: int = -1) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


async def test_a_leader_whose_snapshot_file_cannot_be_read_stops_naming_it(tmp_path: Path) -> None:
    """The leader sends a snapshot to a new learner; its file's sectors fail (``EIO``): the
    leader stops with a ``StorageError`` naming the file ("reading snapshot X '<path>' at
    0"; it named no file), and the other two elect a leader that keeps committing."""
    path = tmp_path / "current.snap"
    path.write_bytes(b"x" * 100)
    failing: list[bool] = []  # the snapshot's file fails once it holds True

    class FailingDisk(MemStateMachine):
        async def get_current_snapshot(self) -> Snapshot | None:
            snap = await super().get_current_snapshot()
            if snap is None or not failing:
                return snap
            snap.data.close()
            return Snapshot(snap.meta, _UnreadableFile(str(path), "r"))  # type: ignore[arg-type]

    c = Cluster(snap_config(), seed=7, state_machine=FailingDisk)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 50)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")

        failing.append(True)
        await c.add_node(4)
        await raft.add_learner(4, BasicNode("n4"), blocking=False)
        m = await raft.wait(10).metrics(lambda m: not m.running, "the leader stopped")
        assert m.error is not None
        assert "Input/output error" in m.error and str(path) in m.error, m.error
        failing.clear()  # (the next leader's disk is sound: it sends n4 its snapshot)

        others = [nid for nid in (1, 2, 3) if nid != leader]
        new = await c.wait_for_leader(10, among=others)
        await c.nodes[new].client_write(b"after")
    finally:
        await c.shutdown()
