"""A storage completion or RPC that arrives after a node shut down is ignored (it used to
raise ``InvalidStateError`` into the caller: the core's wake-up future was resolved twice)."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import Config
from openraft_py.core.messages import IOCompleted
from openraft_py.errors import Stopped
from openraft_py.testing import Cluster

pytestmark = pytest.mark.timeout(10)


async def test_notify_and_calls_after_shutdown_are_harmless() -> None:
    async with Cluster(Config(), seed=3) as c:
        await c.start({1})
        await c.wait_for_leader()
        raft = c.nodes[1]
        await raft.wait(2.0).applied_index_at_least(1)
        await asyncio.sleep(0)  # let the core go idle (waiting on its wake-up future)
        await c.crash(1)
        raft._core.notify(IOCompleted(10**6, None))  # a late storage completion
        with pytest.raises(Stopped):
            await raft.client_write(b"late")
