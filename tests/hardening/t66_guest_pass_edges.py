"""Edges of guest passes (``openraft_py.core.guest``: in the in-process router's fast mode a
parked follower's pass runs on the leader's task, as if on its own): what reaches the
follower's core task between the guest pass and the moment its task takes the rest of that
pass (``RaftCore._handed``) must reach that rest, as it would on the follower's own task,
and a node started under a task factory of the application's still starts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import Config, Raft, SnapshotPolicy
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

CONFIG = Config(
    snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
)


async def _leader(c: Cluster[Any, Any]) -> Raft[Any]:
    await c.start({1, 2, 3})
    await c.nodes[1].trigger.elect()
    return c.nodes[await c.wait_for_leader(timeout=10)]


async def test_a_node_starts_under_a_task_factory_that_takes_no_context() -> None:
    """A task factory of the application's written as ``factory(loop, coro)`` (the only form
    before Python 3.11) is called without ``context`` by ``create_task`` unless one is
    passed: a node's core task was created with the context of its guest passes, and
    ``Raft.new`` failed with ``TypeError``. Now the cluster elects and writes (its passes
    wake their own tasks)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    try:
        async with Cluster(CONFIG) as c:
            leader = await _leader(c)
            for _ in range(5):
                await asyncio.wait_for(leader.client_write(b"w"), 10)
            assert all(r._core.fatal is None for r in c.nodes.values())
            assert made
    finally:
        loop.set_task_factory(None)
