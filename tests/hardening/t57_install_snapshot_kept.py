"""A state machine whose ``install_snapshot`` returns without installing the snapshot.

By contract, after ``install_snapshot`` the state machine's ``applied_state()`` is the
snapshot's ``(meta.last_log_id, meta.last_membership)``. One that returned without
installing (a forgotten ``await`` of the loader, an install written to a scratch copy that
was never swapped in) was taken: the node went on from the snapshot's log id with the
state of before, applying the entries after the snapshot over it, and answered reads
from that state, with nothing said. The node now asks ``applied_state()`` after the install
and stops with ``StorageError`` naming both values when they differ; the others go on.
"""

from __future__ import annotations

import asyncio
from typing import Any, BinaryIO

import pytest
from integration.snapshot.helpers import fourth_made_by, purged_then_node_4, snap_config

from openraft_py import BasicNode, Raft
from openraft_py.storage.memory import MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import SnapshotMeta

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0


class Forgets(MemStateMachine):
    """A ``MemStateMachine`` whose ``install_snapshot`` does nothing."""

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        data.read()


async def _node_4_added_until_it_stops(leader: Raft, learner: Raft) -> None:
    """Add node 4 as a learner (its catch-up is the leader's snapshot) until it stops."""
    adding = asyncio.ensure_future(leader.add_learner(4, BasicNode(""), blocking=True))
    try:
        await learner.wait(BOUND).metrics(lambda m: not m.running, "the learner stops")
    finally:
        adding.cancel()

async def test_an_install_that_leaves_the_applied_state_unchanged_stops_the_node() -> None:
    async with Cluster(snap_config(), state_machine=fourth_made_by(Forgets)) as c:
        leader, learner, _ = await purged_then_node_4(c, BOUND)
        assert isinstance(c.state_machines[4], Forgets)
        await _node_4_added_until_it_stops(leader, learner)
        error = learner.metrics.error or ""
        assert "installing snapshot" in error
        assert "install_snapshot returned, but the state machine's applied_state() is (None" in error
        assert learner.metrics.last_applied is None, "the snapshot was not taken as installed"
        assert all(c.nodes[n].metrics.running for n in (1, 2, 3))
        await asyncio.wait_for(leader.client_write(b"after"), BOUND)


class StateFailsAfterInstall(MemStateMachine):
    """A ``MemStateMachine`` that installs, and whose ``applied_state()`` then raises
    ``ValueError`` (a broken state machine: it cannot tell its state)."""

    def __init__(self, disk: Any) -> None:
        super().__init__(disk)
        self.installs = 0

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        await super().install_snapshot(meta, data)
        self.installs += 1

    async def applied_state(self) -> Any:
        if self.installs:
            raise ValueError("cannot tell")
        return await super().applied_state()


async def test_an_applied_state_that_raises_value_error_after_an_install_stops_the_node() -> None:
    """The install returned (the state machine holds the snapshot), then ``applied_state()``
    raised ``ValueError``: a failing state machine, the node stops with ``StorageError``.
    Before, the ``ValueError`` was taken for the install's refusal of the data (by contract
    the state then unchanged): the node went on from its state of before the snapshot, its
    held entries resubmitted over the installed state, and the leader sent the snapshot
    again and again."""
    async with Cluster(snap_config(), state_machine=fourth_made_by(StateFailsAfterInstall)) as c:
        leader, learner, _ = await purged_then_node_4(c, BOUND)
        lsm = c.state_machines[4]
        assert isinstance(lsm, StateFailsAfterInstall)
        await _node_4_added_until_it_stops(leader, learner)
        error = learner.metrics.error or ""
        assert "installing snapshot" in error and "cannot tell" in error, error
        assert lsm.installs == 1, "installed once, not sent and installed again"
