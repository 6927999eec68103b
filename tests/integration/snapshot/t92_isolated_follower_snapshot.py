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


def snapshot_of(line: str) -> tuple[str, int]:
    """The id of the snapshot an INFO line of a build or an install names, and the last log
    index it covers ("... snapshot <id> (up to log index N, term T)")."""
    head, _, tail = line.partition(" (up to log index ")
    return head.rsplit(" ", 1)[1], int(tail.split(",")[0])


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
            # One install line per snapshot the lagger installed, the last one its current
            # snapshot's (logged as the install is reported: it may follow the catch-up).
            current = c.nodes[lagger].metrics.snapshot
            assert current is not None
            text = f"node {lagger}: installed the leader's snapshot "
            await until(lambda: [snapshot_of(s)[1] for s in records.lines(logging.INFO, text)][-1:] == [current.index],
                        "the lagger's install line of its current snapshot", timeout=5)
            installed = [snapshot_of(line) for line in records.lines(logging.INFO, text)]
            # Two are legitimate: the leader sent the snapshot it had when the lagger came
            # back, built a newer one while the lagger installed it, and purged the log
            # after the first, so the lagger could only go on from the newer one. Each is
            # one a node built, newer than the one before.
            indexes = [index for _, index in installed]
            assert indexes == sorted(set(indexes)), installed
            made = {snapshot_of(line) for line in records.lines(logging.INFO, ": built snapshot ")}
            assert set(installed) <= made, (installed, made)
            same_state(c, leader, lagger)

            more = await write(c, leader, 100, 105)
            await c.wait_applied(more)
            same_state(c, leader, lagger)
            check_log_matching(c.disks)
        finally:
            await c.shutdown()
