"""A snapshot built while the node installs a leader's snapshot.

A build runs concurrently with apply and with an install (by contract). A builder that
takes its image once the install has returned, but before the node has handled the
install's report, returns a snapshot at the installed snapshot's last log id: an entry
the node's log does not hold yet and past what the engine knows to be committed. The
check of a built snapshot's last log id (``snapshot_io.check_built_meta``) took that for
a builder that wrote wrong numbers, and the node stopped with ``StorageError``
("building a snapshot ... which this node has not applied"), its state machine correct.
Now the last log id of the snapshot being installed is accepted too: the node adopts the
built snapshot once the install's report arrived, as for an apply whose report is late.
"""

from __future__ import annotations

import asyncio
from typing import Any, BinaryIO

import pytest
from integration.snapshot.helpers import fourth_made_by, purged_then_node_4, snap_config

from openraft_py import BasicNode
from openraft_py.storage.memory import NoopStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Snapshot, SnapshotMeta

pytestmark = pytest.mark.timeout(30)

BOUND = 5.0


class BuildsAfterInstall(NoopStateMachine):
    """A ``NoopStateMachine`` whose builder takes its image only once an install returned
    (``installed``), and builds without waiting (its image is small): in the loop pass
    after the install, before the node handled the install's report."""

    def __init__(self, disk: Any) -> None:
        super().__init__(disk)
        self.installed = asyncio.Event()
        self.building = asyncio.Event()

    async def install_snapshot(self, meta: SnapshotMeta, data: BinaryIO) -> None:
        await super().install_snapshot(meta, data)
        self.installed.set()

    def get_snapshot_builder(self) -> Any:
        inner = super().get_snapshot_builder()
        sm = self

        class Builder:
            async def build_snapshot(self) -> Snapshot:
                sm.building.set()
                await sm.installed.wait()
                return await inner.build_snapshot()  # (no wait: NoopStateMachine's is sync)

        return Builder()


async def test_a_snapshot_built_from_the_state_an_install_just_left_is_adopted() -> None:
    async with Cluster(snap_config(), state_machine=fourth_made_by(BuildsAfterInstall)) as c:
        leader, learner, last = await purged_then_node_4(c, BOUND)
        lsm = c.state_machines[4]
        assert isinstance(lsm, BuildsAfterInstall)
        await learner.trigger.snapshot()  # its build waits for the install
        await asyncio.wait_for(lsm.building.wait(), BOUND)
        await asyncio.wait_for(leader.add_learner(4, BasicNode(""), blocking=True), BOUND)
        m = await learner.wait(BOUND).metrics(
            lambda m: not m.running or (m.snapshot is not None and m.snapshot.index >= last), "the build adopted"
        )
        assert m.running, m.error
        assert m.snapshot is not None and m.snapshot.index >= last
        assert m.last_applied is not None and m.last_applied.index >= last
