"""A follower cut off while the leader writes past the purge point catches up by snapshot
once the network heals, then by append. The nodes say so at INFO: the leader when it built a
snapshot, the follower when it installed the leader's, each with the snapshot's id and the
last log index it covers (lines of an operator's timeline; neither was logged above DEBUG)."""

from __future__ import annotations

import logging

import pytest

from openraft_py import SnapshotPolicy
from openraft_py.testing.cluster import Cluster

from ..checks import LogRecords, check_log_matching, until
from .helpers import same_state, snap_config, write

pytestmark = pytest.mark.timeout(15)


async def test_isolated_follower_catches_up_by_snapshot() -> None:
    c = Cluster(snap_config(snapshot_policy=SnapshotPolicy.logs_since_last(20)), seed=2)
    with LogRecords("openraft_py.core", logging.INFO) as records:
        try:
            await c.start({1, 2, 3})
            leader = await c.wait_for_leader()
            first = await write(c, leader, 0, 5)
            await c.wait_applied(first)
            lagger = min(set(c.nodes) - {leader})
            c.router.isolate(lagger)
            last = first
            for k in range(1, 6):
                last = await write(c, leader, 10 * k, 10 * k + 10)
            others = set(c.nodes) - {lagger}
            await c.wait_applied(last, ids=others)
            # the leader purged past what the lagger holds
            m = await c.nodes[leader].wait(5).purged(first + 1, "leader purged past the lagger")
            assert m.purged is not None
            assert c.nodes[lagger].metrics.last_log_index < m.purged.index
            snap = c.nodes[leader].metrics.snapshot
            assert snap is not None
            built = records.lines(logging.INFO, f"node {leader}: built snapshot ")
            assert built, [r.getMessage() for r in records.records]
            assert any(f"(up to log index {snap.index}, term " in line for line in built), built
            c.router.reset_counters()

            c.router.heal()
            await c.wait_for_leader()
            leader = c.leader()
            assert leader is not None
            applied = c.nodes[leader].metrics.last_applied
            assert applied is not None
            await c.nodes[lagger].wait(5).applied_index_at_least(applied.index, "lagger caught up")
            assert c.router.rpc_count("install_snapshot", target=lagger) > 0
            assert c.nodes[lagger].metrics.snapshot is not None
            text = f"node {lagger}: installed the leader's snapshot "
            await until(lambda: records.lines(logging.INFO, text) != [], "the lagger's install line")
            [installed] = records.lines(logging.INFO, text)
            assert "(up to log index " in installed, installed
            same_state(c, leader, lagger)

            more = await write(c, leader, 100, 105)
            await c.wait_applied(more)
            same_state(c, leader, lagger)
            check_log_matching(c.disks)
        finally:
            await c.shutdown()
