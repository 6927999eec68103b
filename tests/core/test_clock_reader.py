"""The core and its replication channels read the default clock (``LoopClock``) through the
time source it resolved (``seconds_reader``), with no Python call of ``LoopClock.now`` per
read: a 1-writer write read it eight times (a pass of each node, and each follower's request
and answer on the leader). A clock of the user's, or a ``LoopClock`` subclass, is still read
through its own ``now``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from openraft_py import Config, SnapshotPolicy
from openraft_py.core.clock import LoopClock, loop_time_source, seconds_reader
from openraft_py.testing.cluster import Cluster

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
def loop_clock_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    now = LoopClock.now

    def counted(self: LoopClock) -> float:
        calls[0] += 1
        return now(self)

    monkeypatch.setattr(LoopClock, "now", counted)
    yield calls


async def test_writes_make_no_call_of_loop_clock_now(loop_clock_calls: list[int]) -> None:
    config = Config(
        snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
    )
    async with Cluster(config) as c:
        await c.start({1, 2, 3})
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        await leader.client_write(b"warm")
        before = loop_clock_calls[0]
        for _ in range(50):
            await leader.client_write(b"w")
        made = loop_clock_calls[0] - before
    assert made == 0, f"{made} calls of LoopClock.now for 50 writes"
