"""A user plug-in that breaks its contract: the node that runs it reports a clear error (and
stops if its own state machine or storage failed), no other node stops, no caller waits
forever, and no acknowledged write is lost.

- A state machine whose ``apply`` returns something other than a list of one response per
  entry (``None`` from a forgotten ``return``): the node stops with ``StorageError`` saying
  what ``apply`` returned, and its waiting writers get that error (they used to wait
  forever: ``None`` was taken for "no responses").
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import StorageError
from openraft_py.storage.memory import MemDisk, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0


class ForgetsReturn(MemStateMachine):
    """A ``MemStateMachine`` whose ``apply`` returns ``None`` once ``broken`` is set."""

    broken = False

    async def apply(self, entries: list[Entry]) -> Any:
        out = await super().apply(entries)
        return None if ForgetsReturn.broken else out


async def test_apply_returning_none_fails_the_writer_with_a_clear_error() -> None:
    ForgetsReturn.broken = False

    def sm(disk: MemDisk) -> ForgetsReturn:
        return ForgetsReturn(disk)

    async with Cluster(fast_config(), seed=5, state_machine=sm) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"before"), BOUND)
        ForgetsReturn.broken = True
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(raft.client_write(b"lost answer"), BOUND)
        assert "state machine apply returned NoneType None" in str(info.value)
        assert "expected a list of one response per entry" in str(info.value)
        assert raft.metrics.running is False
        assert "apply returned NoneType" in (raft.metrics.error or "")
