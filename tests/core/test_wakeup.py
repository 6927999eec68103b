"""``Wakeup``: every waiter wakes at the next ``wake()``; a cancelled waiter affects no other
waiter and no later one; a ``wake()`` nobody waits for is not remembered; waiters that give
up without a wake-up do not pile up."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.wakeup import Wakeup

pytestmark = pytest.mark.timeout(10)


async def test_wake_completes_every_waiter() -> None:
    w = Wakeup()
    futs = [w.wait() for _ in range(5)]
    assert not any(f.done() for f in futs)
    w.wake()
    assert all(f.done() and f.result() is None for f in futs)


async def test_each_wait_is_a_future_of_its_own() -> None:
    w = Wakeup()
    a, b = w.wait(), w.wait()
    assert a is not b


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    w = Wakeup()
    first, second, third = w.wait(), w.wait(), w.wait()
    first.cancel()
    second.cancel()
    assert not third.done()
    w.wake()
    assert third.result() is None
    # Later waiters are unaffected too.
    later = w.wait()
    assert not later.done()
    w.wake()
    assert later.result() is None


async def test_a_task_timing_out_does_not_wake_others() -> None:
    w = Wakeup()
    woke: list[str] = []

    async def patient() -> None:
        await w.wait()
        woke.append("patient")

    t = asyncio.ensure_future(patient())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await w.wait()
    await asyncio.sleep(0)
    assert not t.done() and woke == []
    w.wake()
    await t
    assert woke == ["patient"]


async def test_a_wake_without_waiters_is_not_remembered() -> None:
    w = Wakeup()
    w.wake()
    f = w.wait()
    await asyncio.sleep(0)
    assert not f.done()
    w.wake()
    assert f.done()


async def test_waiters_that_give_up_do_not_pile_up() -> None:
    w = Wakeup()
    keep = w.wait()
    for _ in range(10_000):
        w.wait().cancel()
    # Compaction keeps the record near the number still waiting (one).
    assert len(w._more) < 200
    assert not keep.done()
    w.wake()
    assert keep.done()


async def test_the_slot_is_reused_after_its_waiter_gave_up() -> None:
    w = Wakeup()
    w.wait().cancel()
    f = w.wait()
    w.wake()
    assert f.result() is None


async def test_waiting_says_whether_a_waiter_may_be_pending() -> None:
    w = Wakeup()
    assert not w.waiting()
    f1 = w.wait()
    assert w.waiting()
    w.wake()
    assert f1.done() and not w.waiting()
    f2, f3 = w.wait(), w.wait()
    f2.cancel()
    assert w.waiting()  # f3 still waits
    f3.cancel()
    w.wake()
    assert not w.waiting()
