"""A node on a loop with an eager task factory (Python 3.12+,
``loop.set_task_factory(asyncio.eager_task_factory)``, which an application may set for
speed): a task runs inside ``create_task`` until it first suspends. The node's vote writer
kept a task that had already ended as the one running, so every later vote waited for good:
a single node became leader and never committed anything, a cluster never elected one (no
error, nothing logged). Now a cluster elects, writes, reads, changes its membership and shuts
down under it."""

from __future__ import annotations

import asyncio
import sys

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, ReadPolicy
from openraft_py.testing.cluster import Cluster

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"),
]


@pytest.mark.parametrize("voters", [{1}, {1, 2, 3}])
async def test_a_cluster_runs_under_an_eager_task_factory(voters: set[int]) -> None:
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    try:
        async with Cluster(fast_config()) as c:
            await c.start(voters)
            leader = c.nodes[await c.wait_for_leader(timeout=5.0)]
            first = await asyncio.wait_for(leader.client_write(b"x"), 5)
            assert await asyncio.wait_for(leader.ensure_linearizable(ReadPolicy.READ_INDEX), 5) == first.log_id
            await c.add_node(4)
            await asyncio.wait_for(leader.add_learner(4, BasicNode("")), 5)
            await asyncio.wait_for(leader.change_membership({*voters, 4}), 5)
            await asyncio.wait_for(leader.client_write(b"y"), 5)
    finally:
        loop.set_task_factory(None)
