"""Regression: one metrics waiter giving up must not break the others.

``MetricsWatch.changed()`` used to hand every waiter the same future. A waiter that timed
out (its task cancelled while awaiting it) or ``Cluster.wait_for_leader`` cancelling its
pending waits cancelled that shared future: every other waiter on the node got
``CancelledError``, and so did every new waiter until the next metrics change.
"""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import WaitTimeout
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(10)


async def test_a_timed_out_waiter_does_not_cancel_other_waiters(cluster: Cluster) -> None:
    await cluster.start({1}, initialize=False)
    raft = cluster.nodes[1]
    patient = asyncio.ensure_future(raft.wait(5.0).log_index_at_least(0, "initialized"))
    with pytest.raises(WaitTimeout):
        await raft.wait(0.05).log_index_at_least(0, "too early")
    # Nothing changed since: a new waiter must still wait, not fail.
    with pytest.raises(WaitTimeout):
        await raft.wait(0.05).log_index_at_least(0, "still too early")
    assert not patient.done()
    await raft.initialize({1})
    m = await patient
    assert m.last_log_index >= 0


async def test_wait_for_leader_does_not_cancel_other_waiters(cluster: Cluster) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=2.0)
    # wait_for_leader cancelled its pending waits; later waits on any node still work.
    for nid in (1, 2, 3):
        await cluster.nodes[nid].wait(2.0).current_leader(leader)
        await cluster.nodes[nid].wait(2.0).applied_index_at_least(1)
