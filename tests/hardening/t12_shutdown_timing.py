"""``Raft.shutdown`` at awkward moments: right after ``Raft.new`` (before the node's task ever
ran), cancelled by its caller (a timeout around it, ``task.cancel()``), several at once,
from inside the node's own state machine, and while a state machine works in a thread. Each
time the node stops, whoever waits on it learns so promptly, a cancelled caller sees its
``CancelledError``, and no work of the node outlives ``shutdown()``."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from integration.checks import fast_config

from openraft_py import Raft, ServerState, Stopped
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.storage.memory import KvSet, MemLogStore, MemStateMachine, encode_kv
from openraft_py.types import Entry, Normal

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0


async def new_node(sm: Any = None) -> Raft:
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), sm or MemStateMachine())
    router.register(1, raft)
    return raft


async def leader_node(sm: Any = None) -> Raft:
    raft = await new_node(sm)
    await raft.initialize([1])
    await raft.wait(5).state(ServerState.LEADER)
    await raft.client_write(b"first")
    return raft


async def assert_stopped(raft: Raft) -> None:
    """The node reports it stopped, its waiters fail at once, and no task of it is left."""
    assert raft.metrics.running is False
    assert raft.metrics.state == ServerState.SHUTDOWN
    with pytest.raises(Stopped):
        await asyncio.wait_for(raft.wait(None).state(ServerState.LEADER), BOUND)
    with pytest.raises(Stopped):
        await asyncio.wait_for(raft.client_write(b"late"), BOUND)
    await asyncio.wait_for(raft.shutdown(), BOUND)  # idempotent, and waits for every task
    assert len(raft._core.tasks) == 0
    assert raft._core.task is not None and raft._core.task.done()


async def test_shutdown_right_after_new_stops_the_node() -> None:
    """``shutdown()`` with no await after ``Raft.new``: the node's task had not run yet. The
    node kept reporting ``running=True`` (its teardown was in that task, which never ran), so
    every ``wait()`` on it waited for good."""
    raft = await new_node()
    waiter = asyncio.ensure_future(raft.wait(None).state(ServerState.LEADER))
    await raft.shutdown()
    with pytest.raises(Stopped):
        await asyncio.wait_for(waiter, BOUND)
    await assert_stopped(raft)


@pytest.mark.parametrize("steps", [1, 2])
async def test_a_cancelled_shutdown_raises_cancelled_and_the_node_stops(steps: int) -> None:
    """Cancelling a task in ``shutdown()`` cancels it (the ``CancelledError`` was swallowed:
    the task went on as if not cancelled), and the node stops all the same."""
    raft = await leader_node()
    task = asyncio.ensure_future(raft.shutdown())
    for _ in range(steps):  # one step: the task is in ``shutdown()``
        await asyncio.sleep(0)
    assert not task.done(), "shutdown() ended before it could be cancelled"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await raft.wait(BOUND).metrics(lambda m: not m.running, "the node stops")
    await assert_stopped(raft)


async def test_a_timeout_around_shutdown_is_a_timeout() -> None:
    """``asyncio.timeout`` expiring during ``shutdown()`` raises ``TimeoutError`` (the
    cancellation it uses was swallowed, so the block went on past its deadline and the task
    stayed marked as being cancelled)."""
    raft = await leader_node()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await raft.shutdown()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await raft.wait(BOUND).metrics(lambda m: not m.running, "the node stops")
    await assert_stopped(raft)


async def test_concurrent_shutdowns_all_return() -> None:
    raft = await leader_node()
    pending = asyncio.ensure_future(raft.client_write(b"x"))
    await asyncio.wait_for(asyncio.gather(*(raft.shutdown() for _ in range(5))), BOUND)
    # The write either took effect before the node stopped or failed with Stopped.
    try:
        await asyncio.wait_for(pending, BOUND)
    except Stopped:
        pass
    await assert_stopped(raft)


class StopsOnApply(MemStateMachine):
    """Calls ``shutdown()`` on its own node when it applies ``b"stop"``."""

    raft: Raft | None = None

    async def apply(self, entries: list[Entry]) -> list[Any]:
        out = await super().apply(entries)
        for e in entries:
            if isinstance(e.payload, Normal) and e.payload.data == b"stop" and self.raft is not None:
                await self.raft.shutdown()
        return out


async def test_shutdown_from_inside_the_state_machine() -> None:
    sm = StopsOnApply()
    raft = await leader_node(sm)
    sm.raft = raft
    with pytest.raises(Stopped):
        await asyncio.wait_for(raft.client_write(b"stop"), BOUND)
    await raft.wait(BOUND).metrics(lambda m: not m.running, "the node stops")
    await assert_stopped(raft)


class SlowBuild(RocksStateMachine):
    """A ``RocksStateMachine`` on a slow disk: its snapshot build, in a worker thread, takes
    a while, and says when it started."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.building = threading.Event()

    def _build_from(self, image: Any) -> Any:
        self.building.set()
        time.sleep(0.3)  # the slow disk (in the worker thread: not a wait of the test)
        return super()._build_from(image)


async def test_a_snapshot_build_in_flight_ends_before_shutdown_returns(tmp_path: Path) -> None:
    """A node shut down while its state machine builds a snapshot in a worker thread, then
    its state machine closed and opened again at once (as an in-process restart does). The
    thread ran on after ``shutdown()`` returned, holding RocksDB open: the reopen was refused
    with StorageError "the database is in use (its LOCK is held)", and the build failed
    unseen in the closed store. ``shutdown()`` now returns once the thread ended."""
    sm = SlowBuild(tmp_path / "sm")
    try:
        raft = await leader_node(sm)
        resp = await raft.client_write_many([encode_kv(KvSet(f"k{i}", "v")) for i in range(100)])
        await raft.trigger.snapshot()
        assert await asyncio.to_thread(sm.building.wait, BOUND), "the build did not start"
        await asyncio.wait_for(raft.shutdown(), 5 * BOUND)
    finally:
        sm.close()
    again = RocksStateMachine(tmp_path / "sm")
    try:
        applied, _ = await again.applied_state()
        assert applied is not None and applied.index >= resp[-1].log_id.index
    finally:
        again.close()


class FlushesLater(MemLogStore):
    """Reports each append durable from a thread of its own, ``delay`` seconds later."""

    delay = 0.0
    threads: ClassVar[list[threading.Thread]] = []

    async def append(self, entries: list[Entry], callback: Any) -> None:
        MemLogStore.append_durable(self, entries)
        t = threading.Timer(FlushesLater.delay, callback.io_completed)
        FlushesLater.threads.append(t)
        t.start()


def test_a_flush_reported_after_the_loop_closed_raises_nothing_in_the_stores_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store's thread that reports an append durable after the node was shut down and its
    event loop closed: the callback does nothing. It raised ``RuntimeError('Event loop is
    closed')`` in the store's thread (its writer thread, which that ended)."""
    raised: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))
    FlushesLater.delay, FlushesLater.threads = 0.0, []

    async def run() -> None:
        router = Router()
        raft = await Raft.new(1, fast_config(), router.factory(1), FlushesLater(), MemStateMachine())
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(BOUND).state(ServerState.LEADER)
        await asyncio.wait_for(raft.client_write(b"flushed at once"), BOUND)
        FlushesLater.delay = 0.2
        started = len(FlushesLater.threads)
        pending = asyncio.ensure_future(raft.client_write(b"flushed after the loop closed"))
        while len(FlushesLater.threads) == started:  # its append ran: its flush is 0.2 s away
            await asyncio.sleep(0.001)
        await raft.shutdown()
        with pytest.raises(Stopped):
            await pending

    asyncio.run(run())
    for t in FlushesLater.threads:
        t.join(BOUND)
    assert raised == []
