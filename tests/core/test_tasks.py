"""``TaskSet``: a task that raises is reported once; a cancelled one is not; ``close``
cancels what is left, waits for it, and reports nothing more."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.core.tasks import TaskSet

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
