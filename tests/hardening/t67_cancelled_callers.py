"""A caller cancelled in a call of the node ends cancelled at once, and leaves nothing behind
(docs/concepts.md, "Cancelled calls"):

- ``shutdown()`` cancelled (a timeout around it) while a task of the node takes its time to
  end, a state machine call finishing in its worker thread (``in_thread``, as the RocksDB
  stores do): the caller waited for that task (``asyncio.gather``, which holds a cancelled
  caller until every task it gathers has ended), up to ``CANCELLED_THREAD_WAIT`` (30 s), and
  cancelled the task again. The node stops all the same, and a later ``shutdown()`` waits
  for it to end.
- ``get_current_snapshot()`` cancelled while the state machine opens the snapshot, or in the
  loop turn its answer came: the snapshot's ``data``, which the caller would have closed,
  was left open for nobody.
"""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

import pytest
from integration.checks import fast_config, until

from openraft_py import Raft, ServerState, Snapshot, SnapshotMeta
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


class OpensSnapshotSlowly(MemStateMachine):
    """A state machine whose ``get_current_snapshot`` waits for ``gate`` (a slow disk) and
    records the file of each snapshot it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False  # (not at the node's start, which reads the current snapshot)
        self.gate = asyncio.Event()
        self.opening = asyncio.Event()
        self.handed: list[io.BytesIO] = []

    async def get_current_snapshot(self) -> Snapshot | None:
        if not self.slow:
            return await super().get_current_snapshot()
        self.opening.set()
        await self.gate.wait()
        data = io.BytesIO(b"state")
        self.handed.append(data)
        applied, membership = await self.applied_state()
        return Snapshot(SnapshotMeta(applied, membership, "s-1"), data)


async def test_a_cancelled_get_current_snapshot_closes_the_snapshot_nobody_takes() -> None:
    sm = OpensSnapshotSlowly()
    raft = await leader_node(sm)
    sm.slow = True
    try:
        # Cancelled while the state machine opens it: closed once it comes.
        getting = asyncio.ensure_future(raft.get_current_snapshot())
        async with asyncio.timeout(BOUND):
            await sm.opening.wait()
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getting
        sm.gate.set()
        await until(lambda: len(sm.handed) == 1, "the state machine handed the snapshot out")
        await until(lambda: sm.handed[0].closed, "the snapshot nobody takes is closed", timeout=BOUND)

        # Cancelled in the loop turn its answer came: the caller ends cancelled, and the
        # snapshot is closed.
        sm.gate.clear()
        sm.opening.clear()
        getting = asyncio.ensure_future(raft.get_current_snapshot())
        async with asyncio.timeout(BOUND):
            await sm.opening.wait()
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()

        def cancel_when_answered() -> None:
            # Polled at each loop turn: the worker hands the snapshot out and answers the
            # call in one step of its task, and the caller resumes in a later turn.
            if len(sm.handed) == 2:
                getting.cancel()  # before the caller resumed: its answer is there already
                answered.set_result(None)
            else:
                loop.call_soon(cancel_when_answered)

        sm.gate.set()
        loop.call_soon(cancel_when_answered)
        async with asyncio.timeout(BOUND):
            await answered
        with pytest.raises(asyncio.CancelledError):
            await getting
        assert sm.handed[1].closed, "the snapshot answered as its caller was cancelled was left open"

        # The node goes on: a later call gets a snapshot, open for its caller to read.
        sm.gate.set()
        snap = await raft.get_current_snapshot()
        assert snap is not None and not snap.data.closed
        snap.data.close()
        await raft.client_write(b"after")
    finally:
        sm.gate.set()
        await raft.shutdown()


class AppliesSlowly(MemStateMachine):
    """Holds the apply of ``b"slow"`` until ``gate`` (it suspends: the worker's task runs it),
    and counts the calls of ``get_current_snapshot`` once ``counting``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.applying = asyncio.Event()
        self.counting = False
        self.opened = 0

    async def apply(self, entries: list[Entry]) -> list[Any]:
        if any(isinstance(e.payload, Normal) and e.payload.data == b"slow" for e in entries):
            self.applying.set()
            await self.gate.wait()
        return await super().apply(entries)

    async def get_current_snapshot(self) -> Snapshot | None:
        if self.counting:
            self.opened += 1
        return await super().get_current_snapshot()


async def test_a_get_current_snapshot_cancelled_while_queued_opens_no_snapshot() -> None:
    """Cancelled while queued behind an apply (a replication stream stopped while its
    snapshot waited for the worker): the state machine is not asked to open a snapshot for
    nobody (``RocksStateMachine`` reads the whole file to check it, about 2 s per GB)."""
    sm = AppliesSlowly()
    raft = await leader_node(sm)
    try:
        sm.counting = True
        write = asyncio.ensure_future(raft.client_write(b"slow"))
        async with asyncio.timeout(BOUND):
            await sm.applying.wait()
        getting = asyncio.ensure_future(raft.get_current_snapshot())
        await asyncio.sleep(0)
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getting
        sm.gate.set()
        async with asyncio.timeout(BOUND):
            await write
            snap = await raft.get_current_snapshot()  # queued after the cancelled one: it ran by now
        if snap is not None:
            snap.data.close()
        assert sm.opened == 1, f"the state machine opened {sm.opened - 1} snapshot(s) for a cancelled caller"
    finally:
        sm.gate.set()
        await raft.shutdown()
