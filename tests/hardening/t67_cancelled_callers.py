"""A caller cancelled in a call of the node ends cancelled at once, and leaves nothing behind
(docs/concepts.md, "Cancelled calls"):

- ``shutdown()`` cancelled (a timeout around it) while a task of the node takes its time to
  end, a state machine call finishing in its worker thread (``in_thread``, as the RocksDB
  stores do): the caller waited for that task (``asyncio.gather``, which holds a cancelled
  caller until every task it gathers has ended), up to ``CANCELLED_THREAD_WAIT`` (30 s), and
  cancelled the task again. The node stops all the same, and a later ``shutdown()`` waits
  for it to end.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from integration.checks import fast_config, until

from openraft_py import Raft, ServerState
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.storage.rocks.db import in_thread
from openraft_py.types import Entry, Normal

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0


async def leader_node(sm: MemStateMachine) -> Raft:
    """A one-node cluster over ``sm``, leading, with one entry applied."""
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), sm)
    router.register(1, raft)
    await raft.initialize([1])
    await raft.wait(5).state(ServerState.LEADER)
    await raft.client_write(b"first")
    return raft


class AppliesInThread(MemStateMachine):
    """Applies ``b"slow"`` in a worker thread (``in_thread``) that waits for ``gate``: a
    cancelled apply ends once the thread has, as with the RocksDB state machine."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.in_thread = threading.Event()

    def _slow(self) -> None:
        self.in_thread.set()
        self.gate.wait(3 * BOUND)  # (bounded: a failing test does not leave it for good)

    async def apply(self, entries: list[Entry]) -> list[Any]:
        if any(isinstance(e.payload, Normal) and e.payload.data == b"slow" for e in entries):
            await in_thread(self._slow)
        return await super().apply(entries)


async def test_a_cancelled_shutdown_does_not_wait_for_the_tasks_still_ending() -> None:
    sm = AppliesInThread()
    raft = await leader_node(sm)
    core = raft._core
    write = asyncio.ensure_future(raft.client_write(b"slow"))
    try:
        await until(sm.in_thread.is_set, "the apply runs in its thread")
        stopping = asyncio.ensure_future(raft.shutdown())
        assert core.task is not None
        await until(core.task.done, "the core task ended: shutdown() waits for the node's other tasks")
        assert not stopping.done() and "raft-1-sm-worker" in core.running_tasks()
        stopping.cancel()
        done, _ = await asyncio.wait({stopping}, timeout=BOUND)
        assert stopping in done, "the cancelled shutdown() waited for the state machine's thread"
        assert stopping.cancelled()
        assert "raft-1-sm-worker" in core.running_tasks(), "the apply's thread has not ended"
    finally:
        sm.gate.set()
    async with asyncio.timeout(BOUND):
        await raft.shutdown()  # waits for every task of the node again
    assert core.ended()
    assert write.done()
    write.exception()  # (retrieved: the node stopped under it, or it was applied)
