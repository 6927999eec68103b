"""``TaskSet``: a task that raises is reported once; a cancelled one is not; ``close``
cancels what is left, waits for it, and reports nothing more. ``GiveUpAfter``: a bound that
expires one loop pass after its deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from openraft_py.core.tasks import GiveUpAfter, TaskSet

pytestmark = pytest.mark.timeout(10)


async def test_a_failing_task_is_reported_and_forgotten() -> None:
    failures: list[BaseException] = []
    ts = TaskSet("raft-1", failures.append)

    async def boom() -> None:
        raise OSError("disk")

    t = ts.spawn(boom(), "boom")
    assert t.get_name() == "raft-1-boom"
    await asyncio.gather(t, return_exceptions=True)
    await asyncio.sleep(0)
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    assert len(ts) == 0


async def test_cancelled_and_finished_tasks_are_not_reported() -> None:
    failures: list[BaseException] = []
    ts = TaskSet("raft-1", failures.append)

    async def ok() -> int:
        return 1

    t1 = ts.spawn(ok(), "ok")
    t2 = ts.spawn(asyncio.sleep(60), "sleep")
    await t1
    t2.cancel()
    await asyncio.gather(t2, return_exceptions=True)
    await asyncio.sleep(0)
    assert failures == [] and len(ts) == 0


async def test_close_cancels_waits_and_reports_nothing() -> None:
    failures: list[BaseException] = []
    ts = TaskSet("raft-1", failures.append)
    ended: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("stubborn")
            raise RuntimeError("failing while cancelled")

    ts.spawn(stubborn(), "a")
    ts.spawn(asyncio.sleep(60), "b")
    await asyncio.sleep(0)
    await ts.close()
    assert ended == ["stubborn"]
    assert failures == [] and len(ts) == 0


async def test_a_task_spawned_while_closing_is_cancelled_and_waited_for() -> None:
    """A task spawned once the set is closing (by a task ending on its cancellation, a done
    callback of the stopped node) would run on after the node stopped, over its stores:
    it is cancelled at once, its body unrun, and ``close`` waits for it too."""
    ts = TaskSet("raft-1", lambda e: None)
    ran: list[str] = []
    late: list[asyncio.Task[None]] = []

    async def body() -> None:
        ran.append("late")

    async def spawns_when_cancelled() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            late.append(ts.spawn(body(), "late"))

    ts.spawn(spawns_when_cancelled(), "first")
    await asyncio.sleep(0)
    await ts.close()
    assert late and late[0].done(), "close returned before the task spawned while it closed ended"
    assert late[0].cancelled() and ran == [], "a task spawned while closing ran"
    assert len(ts) == 0


async def test_on_empty_is_called_when_the_last_task_ended() -> None:
    ts = TaskSet("raft-1", lambda e: None)
    calls: list[int] = []
    ts.on_empty = lambda: calls.append(len(ts))
    t1 = ts.spawn(asyncio.sleep(60), "a")
    t2 = ts.spawn(asyncio.sleep(60), "b")
    assert ts.names() == ["raft-1-a", "raft-1-b"]
    t1.cancel()
    await asyncio.gather(t1, return_exceptions=True)
    await asyncio.sleep(0)
    assert calls == [] and ts.names() == ["raft-1-b"]
    t2.cancel()
    await asyncio.gather(t2, return_exceptions=True)
    await asyncio.sleep(0)
    assert calls == [0]


async def test_a_cancelled_close_raises_at_once_and_cancels_no_task_again() -> None:
    """``close`` cancelled (``Raft.shutdown()`` under a timeout) while a task takes its time
    to end (a call finishing in a worker thread): the caller's ``CancelledError`` is raised
    at once, and the task is neither cancelled again nor waited for. (``asyncio.gather``
    held the cancelled caller until the task ended, and cancelled it a second time.) Its
    failure, once it ends, is retrieved, not reported."""
    failures: list[BaseException] = []
    ts = TaskSet("raft-1", failures.append)
    gate = asyncio.Event()
    cancels: list[int] = []

    async def finishing() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels.append(1)
            while not gate.is_set():
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    cancels.append(1)  # cancelled again: it still finishes first
            raise RuntimeError("failing while cancelled") from None

    t = ts.spawn(finishing(), "finishing")
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(ts.close())
    try:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert cancels == [1] and not closing.done()
        closing.cancel()
        done, _ = await asyncio.wait({closing}, timeout=1.0)
        assert closing in done, "the cancelled close waited for the task to end"
        assert closing.cancelled()
        assert cancels == [1], "the task was cancelled again"
        assert not t.done() and len(ts) == 1
    finally:
        gate.set()  # (also when it fails: the task ends, and so does the test)
    async with asyncio.timeout(1.0):
        await ts.close()
    assert t.done() and len(ts) == 0 and failures == []


async def test_give_up_after_expires_a_block_that_gets_no_answer() -> None:
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        async with GiveUpAfter(0.05):
            await asyncio.Event().wait()
    assert 0.04 <= time.monotonic() - began < 2.0
    # A block that ends in time is left alone, its timer too: past its deadline nothing
    # cancels the task, and no callback of the bound fails in the loop.
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        bound = GiveUpAfter(0.05)
        async with bound:
            await asyncio.sleep(0)
        assert bound._handle is None, "the deadline timer of a block that ended is still armed"
        await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(None)
    assert errors == []


async def test_give_up_after_takes_what_became_ready_in_the_pass_of_its_deadline() -> None:
    """After a stall past both deadlines, the inner (earlier) one's outcome wins."""

    async def bounded(own: float) -> str:
        try:
            async with asyncio.timeout(own):  # the network's own timeout
                await asyncio.Event().wait()
        except TimeoutError:
            return "the network's own timeout"
        return "unreachable"

    async def call() -> str:
        async with GiveUpAfter(0.1):
            return await bounded(0.05)

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)  # both timers are set
    time.sleep(0.3)  # the loop stalls past both deadlines
    assert await task == "the network's own timeout"
