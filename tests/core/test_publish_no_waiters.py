"""A node's metrics publisher, after each pass of its core, calls
``MetricsWatch.release_index_waiters`` only while an ``at_least`` or ``role_changed`` waiter
is there to release (``MetricsWatch.index_waited``): with none, the common case, four calls a
1-writer write of a 3-node cluster found nothing to do. A waiter is still released."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from openraft_py import Config, SnapshotPolicy
from openraft_py.metrics import MetricsWatch
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def release_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    release = MetricsWatch.release_index_waiters

    def counted(self: MetricsWatch) -> None:
        calls[0] += 1
        release(self)

    monkeypatch.setattr(MetricsWatch, "release_index_waiters", counted)
    yield calls


async def test_writes_with_no_index_waiter_release_nothing(release_calls: list[int]) -> None:
    config = Config(
        snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
    )
    async with Cluster(config) as c:
        await c.start({1, 2, 3})
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        await leader.client_write(b"warm")
        before = release_calls[0]
        for _ in range(20):
            await leader.client_write(b"w")
        made = release_calls[0] - before
        assert made == 0, f"{made} calls of release_index_waiters for 20 writes with no index waiter"
        # A waiter for an index not reached yet is released by the write that reaches it.
        applied = leader.metrics.last_applied
        assert applied is not None
        waiter = asyncio.ensure_future(leader.wait(5).applied_index_at_least(applied.index + 2, "two more"))
        await asyncio.sleep(0)
        await leader.client_write(b"a")
        await leader.client_write(b"b")
        await asyncio.wait_for(waiter, 5)
