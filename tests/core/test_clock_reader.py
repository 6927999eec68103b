"""The core and its replication channels read the default clock (``LoopClock``) through the
time source it resolved (``seconds_reader``), with no Python call of ``LoopClock.now`` per
read: a 1-writer write read it eight times (a pass of each node, and each follower's request
and answer on the leader). A clock of the user's, or a ``LoopClock`` subclass, is still read
through its own ``now``."""

from __future__ import annotations

import asyncio
import time

import pytest

from openraft_py.core.clock import LoopClock, loop_time_source, seconds_reader

from .steady import count_calls, steady_leader

pytestmark = pytest.mark.timeout(30)


class _OwnClock:
    def now(self) -> float:
        return 7.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ShiftedLoopClock(LoopClock):
    def now(self) -> float:
        return super().now() + 100.0


async def test_a_loop_clock_is_read_through_its_time_source() -> None:
    clock = LoopClock()
    read = seconds_reader(clock)
    assert read == loop_time_source(asyncio.get_running_loop())  # (a bound ``loop.time`` is a new object at each access)
    assert abs(read() - clock.now()) < 1.0


async def test_any_other_clock_is_read_through_its_own_now() -> None:
    own = _OwnClock()
    assert seconds_reader(own)() == 7.0
    shifted = _ShiftedLoopClock()
    read = seconds_reader(shifted)
    assert read() - time.monotonic() > 99.0  # the subclass's ``now``, not the loop's time


@pytest.fixture
def loop_clock_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return count_calls(monkeypatch, LoopClock, "now")


async def test_writes_make_no_call_of_loop_clock_now(loop_clock_calls: list[int]) -> None:
    async with steady_leader() as leader:
        before = loop_clock_calls[0]
        for _ in range(50):
            await leader.client_write(b"w")
        made = loop_clock_calls[0] - before
    assert made == 0, f"{made} calls of LoopClock.now for 50 writes"
