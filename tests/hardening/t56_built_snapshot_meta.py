"""A snapshot builder whose snapshot names a last log id the node never applied.

A builder that writes its meta from the wrong numbers (the current term instead of the last
applied entry's, an index past what was applied) was taken at its word: the node recorded a
snapshot of ``0-21`` beside an applied ``1-21`` (``purged <= snapshot <= applied`` broken),
or, for an index past the log, kept waiting to adopt it. Such a snapshot, sent to a follower,
would be installed as a state the leader's log does not continue. The node now checks a
built snapshot's last log id against its own log (held there, or purged, and at most
committed) and stops with ``StorageError`` naming the builder and both log ids; the other
nodes go on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import LogId, StorageError
from openraft_py.storage.memory import MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Snapshot, SnapshotMeta

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0


def wrong(how: str, last: LogId) -> LogId:
    if how == "term":
        return LogId(last.term + 5, last.index)  # a term the entry at that index does not have
    if how == "term_below":
        return LogId(0, last.index)
    return LogId(last.term, last.index + 1000)  # past the log


class WrongMeta(MemStateMachine):
    """A ``MemStateMachine`` whose builder, once ``how`` is set, returns its snapshot under a
    last log id changed by ``wrong(how, ...)``."""

    how: str | None = None

    def get_snapshot_builder(self) -> Any:
        inner = super().get_snapshot_builder()

        class Builder:
            async def build_snapshot(self) -> Snapshot:
                snap = await inner.build_snapshot()
                m = snap.meta
                if WrongMeta.how is None or m.last_log_id is None:
                    return snap
                bad = wrong(WrongMeta.how, m.last_log_id)
                return Snapshot(SnapshotMeta(bad, m.last_membership, m.snapshot_id), snap.data)

        return Builder()


@pytest.mark.parametrize("how", ["term", "term_below", "index"])
async def test_a_built_snapshot_of_a_log_id_the_node_did_not_apply_stops_the_node(how: str) -> None:
    WrongMeta.how = None
    async with Cluster(fast_config(), state_machine=lambda disk: WrongMeta(disk)) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader()]
        for i in range(5):
            await asyncio.wait_for(leader.client_write(b"x%d" % i), BOUND)
        applied = leader.metrics.last_applied
        assert applied is not None
        WrongMeta.how = how
        await leader.trigger.snapshot()
        await leader.wait(BOUND).metrics(lambda m: not m.running, "the leader stops")
        error = leader.metrics.error or ""
        assert "building a snapshot" in error
        assert f"SnapshotBuilder.build_snapshot returned a snapshot of last log id {wrong(how, applied)!r}" in error
        assert leader.metrics.snapshot is None, "the snapshot was not recorded"
        with pytest.raises(StorageError):
            await leader.client_write(b"after")
        others = [raft for nid, raft in c.nodes.items() if raft is not leader]
        assert all(raft.metrics.running for raft in others)


async def test_a_correct_build_raced_by_applies_is_still_taken() -> None:
    """A builder that saw applies whose reports had not arrived yet (its last log id past the
    node's ``applied``, within what is committed) is adopted as before."""
    WrongMeta.how = None
    async with Cluster(fast_config(), state_machine=lambda disk: WrongMeta(disk)) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader()]
        await asyncio.wait_for(leader.client_write(b"first"), BOUND)
        writes = [asyncio.ensure_future(leader.client_write(b"x%d" % i)) for i in range(50)]
        await leader.trigger.snapshot()
        await asyncio.wait_for(asyncio.gather(*writes), BOUND)
        await leader.wait(BOUND).metrics(lambda m: m.snapshot is not None, "a snapshot is recorded")
        assert leader.metrics.running
