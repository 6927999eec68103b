"""A node says at INFO when it built a snapshot and when it installed one its leader sent,
with the snapshot's id and the last log index it covers: both are lines of an operator's
timeline (the log purged up to a build; a follower that fell behind the purged log caught up
by a snapshot). Neither was logged above DEBUG."""

from __future__ import annotations

import logging

import pytest

from openraft_py import SnapshotPolicy
from openraft_py.testing.cluster import Cluster

from ..checks import LogRecords, until
from .helpers import snap_config, write

pytestmark = pytest.mark.timeout(15)


async def test_a_snapshot_built_and_one_installed_are_logged_once_each_at_info() -> None:
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20)), seed=2)
    with LogRecords("openraft_py.core", logging.INFO) as records:
        try:
            await c.start({1, 2, 3})
            leader = await c.wait_for_leader()
            first = await write(c, leader, 0, 5)
            await c.wait_applied(first)
            lagger = min(set(c.nodes) - {leader})
            c.router.isolate(lagger)
            for k in range(1, 6):
                last = await write(c, leader, 10 * k, 10 * k + 10)
            await c.nodes[leader].wait(5).purged(first + 1, "the leader purged past the lagger")
            snap = c.nodes[leader].metrics.snapshot
            assert snap is not None
            built = records.lines(logging.INFO, f"node {leader}: built snapshot ")
            assert built, [r.getMessage() for r in records.records]
            assert any(f"(up to log index {snap.index}, term " in line for line in built), built
            c.router.heal()
            await c.nodes[lagger].wait(5).applied_index_at_least(last, "the lagger caught up")
            text = f"node {lagger}: installed the leader's snapshot "
            await until(lambda: records.lines(logging.INFO, text) != [], "the lagger's install line")
            [installed] = records.lines(logging.INFO, text)
            assert "(up to log index " in installed, installed
        finally:
            await c.shutdown()
