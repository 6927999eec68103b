"""``raft.wait(...).metrics(predicate)`` given an ``async def`` predicate, or one that returns
an awaitable (``lambda m: check(m)`` over an ``async def check``): an easy slip in an asyncio
service, whose checks are coroutines.

The coroutine the predicate returned is truthy, so the condition was taken as holding at once:
the wait returned the current metrics before anything it waited for happened (a test went on
as if the node had caught up), and the coroutine was dropped unawaited (a ``RuntimeWarning``
at collection, far from the call). Now an ``async def`` predicate (a ``functools.partial`` of
one too) raises ``TypeError`` before waiting, and a predicate whose result is awaitable
raises ``TypeError`` in the waiter, naming what it returned, its coroutine closed; the node is
unharmed."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import RaftMetrics
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


async def _far_ahead(m: RaftMetrics) -> bool:
    return m.last_log_index >= 10**6  # never, in these tests


async def test_an_async_predicate_is_refused_before_waiting() -> None:
    async with Cluster(fast_config(), seed=5) as c:
        await c.start({1})
        leader = c.nodes[await c.wait_for_leader()]
        for predicate in (_far_ahead, functools.partial(_far_ahead)):
            with pytest.raises(TypeError, match="async def"):
                await leader.wait(timeout=2.0).metrics(predicate, "far ahead")  # type: ignore[arg-type]
        resp = await asyncio.wait_for(leader.client_write(b"x"), 10.0)
        assert resp.log_id.index == leader.metrics.last_log_index


@pytest.mark.parametrize("holds_now", [True, False])
async def test_a_predicate_returning_an_awaitable_raises_in_the_waiter(holds_now: bool) -> None:
    made: list[Coroutine[Any, Any, bool]] = []

    def returns_a_coroutine(m: RaftMetrics) -> Any:
        cr = _far_ahead(m)
        made.append(cr)
        return cr

    async with Cluster(fast_config(), seed=6) as c:
        await c.start({1})
        leader = c.nodes[await c.wait_for_leader()]
        wait = leader.wait(timeout=2.0).metrics(returns_a_coroutine, "far ahead")
        if holds_now:
            with pytest.raises(TypeError, match="coroutine"):
                await wait
        else:
            # Checked again at each change: a write makes one while the waiter waits.
            task = asyncio.ensure_future(wait)
            await asyncio.sleep(0)
            await asyncio.wait_for(leader.client_write(b"x"), 10.0)
            with pytest.raises(TypeError, match="coroutine"):
                await asyncio.wait_for(task, 10.0)
        assert made and all(cr.cr_frame is None for cr in made), "a coroutine of the predicate was left unclosed"
        resp = await asyncio.wait_for(leader.client_write(b"y"), 10.0)
        await leader.wait(timeout=10.0).metrics(lambda m: m.last_applied == resp.log_id, "applied y")
