"""A node's metrics publisher, after each pass of its core, calls
``MetricsWatch.release_index_waiters`` only while an ``at_least`` or ``role_changed`` waiter
is there to release (``MetricsWatch.index_waited``): with none, the common case, four calls a
1-writer write of a 3-node cluster found nothing to do. A waiter is still released."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.metrics import MetricsWatch

from .steady import count_calls, steady_leader

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def release_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return count_calls(monkeypatch, MetricsWatch, "release_index_waiters")


async def test_writes_with_no_index_waiter_release_nothing(release_calls: list[int]) -> None:
    async with steady_leader() as leader:
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
