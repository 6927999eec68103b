"""A learner whose install takes longer than the leader waits for a chunk's answer
(``Config.install_snapshot_timeout``; a large state, e.g. 0.6 s for 300,000 keys of
``RocksStateMachine`` against 200 ms by default) receives the snapshot once. The leader resends
the last chunk after each timeout; each resend gets the install's answer. That resend was
refused ("chunk at offset N but nothing received"), the leader logged the refusal at WARNING
and sent the whole snapshot again, whose file then stayed on the learner's disk."""

from __future__ import annotations

import asyncio
import logging
from typing import BinaryIO

import pytest

from openraft_py import BasicNode
from openraft_py.storage.memory import MemDisk, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import SnapshotMeta

from .helpers import same_state, snap_config, write

pytestmark = pytest.mark.timeout(30)

INSTALL_SECONDS = 0.5
"""How long each install takes: ten of the leader's chunk timeouts below."""

STEADY = dict(election_timeout_min=1000, election_timeout_max=2000, heartbeat_interval=50)
"""Elections of 1-2 s, for the tests that need no election timeout shorter than the install:
with ``fast_config``'s 100 ms a loaded machine's stall of the one loop made the leader step
down (no quorum acknowledged it in time) during ``add_learner``, which then failed."""


class SlowInstall(MemStateMachine):
    """``MemStateMachine`` whose installs take ``INSTALL_SECONDS``; counts the transfers it
    began to receive."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.receives = 0

    async def begin_receiving_snapshot(self) -> BinaryIO:
        self.receives += 1
        return await super().begin_receiving_snapshot()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        await asyncio.sleep(INSTALL_SECONDS)
        await super().install_snapshot(meta, data)


async def test_a_learner_slower_to_install_than_the_chunk_timeout_receives_the_snapshot_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = snap_config(install_snapshot_timeout=50, snapshot_max_chunk_size=512, **STEADY)
    c = Cluster(cfg, seed=3, state_machine=SlowInstall)
    try:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        last = await write(c, leader, 0, 200)
        await c.wait_applied(last)
        await raft.trigger.snapshot()
        await raft.wait(5).purged(last, "leader purged its log")

        caplog.set_level(logging.DEBUG, logger="openraft_py")
        await c.add_node(4)
        await raft.add_learner(4, BasicNode("n4"), blocking=True)
        learner = c.nodes[4]
        await learner.wait(5).snapshot(last, "learner installed the snapshot")
        applied = raft.metrics.last_applied
        assert applied is not None
        await learner.wait(5).applied_index_at_least(applied.index, "learner caught up")
        same_state(c, leader, 4)
        sm4 = c.state_machines[4]
        assert isinstance(sm4, SlowInstall)
        # The leader did resend the last chunk while the learner installed (the case here) ...
        resends = [r for r in caplog.records if "failed" in r.getMessage() and "resending" in r.getMessage()]
        assert resends, "the install was not slower than the chunk timeout: the test checks nothing"
        # ... and never started over: one transfer, no refusal.
        refusals = [r.getMessage() for r in caplog.records if "starting over" in r.getMessage()]
        assert refusals == []
        assert sm4.receives == 1, f"the learner began to receive {sm4.receives} transfers"
    finally:
        await c.shutdown()


async def _add_slow_learner(c: Cluster) -> int:
    """Start a cluster of three with ``SlowInstall`` state machines, snapshot and purge the
    leader's log, add node 4 as a learner (it catches up from the snapshot); the leader."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    raft = c.nodes[leader]
    last = await write(c, leader, 0, 200)
    await c.wait_applied(last)
    await raft.trigger.snapshot()
    await raft.wait(5).purged(last, "leader purged its log")
    await c.add_node(4)
    await raft.add_learner(4, BasicNode("n4"), blocking=True)
    await c.nodes[4].wait(5).snapshot(last, "learner installed the snapshot")
    return leader


async def test_an_install_longer_than_the_election_timeout_is_not_logged_as_a_failing_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The learner takes ``INSTALL_SECONDS`` (five of ``election_timeout_max``) to install
    the snapshot, as a large state does: the leader's resends of the last chunk time out
    meanwhile. That is no failure of the learner: nothing at WARNING. They were counted as
    its failures, so every such install logged "replication to node 4: TimeoutError: no
    answer to the chunk at N" at WARNING, as for a node that is down."""
    caplog.set_level(logging.DEBUG, logger="openraft_py")
    c = Cluster(snap_config(install_snapshot_timeout=50, snapshot_max_chunk_size=512), seed=3, state_machine=SlowInstall)
    try:
        await _add_slow_learner(c)
        resends = [r for r in caplog.records if "failed" in r.getMessage() and "resending" in r.getMessage()]
        assert resends, "the install was not slower than the chunk timeout: the test checks nothing"
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warned == []
    finally:
        await c.shutdown()


async def test_an_install_unanswered_for_longer_than_the_bound_is_said_at_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last chunk unanswered for longer than ``INSTALL_WAIT_WARN_AFTER`` (lowered here
    to a fifth of the install) is said at WARNING, naming the snapshot and the two likely
    causes, and at INFO once the install is answered."""
    from openraft_py.core import replication

    monkeypatch.setattr(replication, "INSTALL_WAIT_WARN_AFTER", INSTALL_SECONDS / 5)
    caplog.set_level(logging.DEBUG, logger="openraft_py")
    cfg = snap_config(install_snapshot_timeout=50, snapshot_max_chunk_size=512, **STEADY)
    c = Cluster(cfg, seed=3, state_machine=SlowInstall)
    try:
        leader = await _add_slow_learner(c)
        mine = [r for r in caplog.records if r.getMessage().startswith(f"node {leader}: replication to node 4:")]
        said = [(r.levelno, r.getMessage()) for r in mine]
        assert [lv for lv, _ in said] == [logging.WARNING, logging.INFO], said
        assert "no answer to the last chunk of snapshot" in said[0][1]
        assert "still installing it, or is cut off" in said[0][1]
        assert "the snapshot is installed" in said[1][1]
    finally:
        await c.shutdown()
