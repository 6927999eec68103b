"""A ReadIndex read is confirmed only by acknowledgements of requests the leader sent at or
after the time the read arrived (docs/design/reads.md). The node's default clock read
uvloop's ``loop.time()``, the monotonic clock in whole milliseconds: a heartbeat sent earlier
in the same millisecond as the read counted as sent after it. A leader cut off from every
other node right after a heartbeat round was answered then answered most ReadIndex reads made
within that millisecond (36 of 40 here) from acknowledgements older than the reads; during a
leadership transfer, when the followers grant the target at once, such a read can miss the
new leader's first write. The clock now measures at full resolution on every loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
from event_loops import LOOPS

from openraft_py import ReadPolicy
from openraft_py.core.clock import LoopClock, loop_time_source
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config

pytestmark = pytest.mark.timeout(30)

ROUNDS = 40


@pytest.mark.parametrize("new_loop", list(LOOPS.values()), ids=list(LOOPS))
def test_read_index_on_a_leader_cut_off_just_after_an_answered_round_is_not_answered(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # Heartbeats and elections off: the only requests are the ReadIndex rounds.
    cfg = fast_config(
        enable_heartbeat=False, enable_elect=False, election_timeout_min=1000, election_timeout_max=2000,
        heartbeat_interval=5,  # (also the back-off of a stream to an unreachable node)
    )

    async def run() -> int:
        async with Cluster(cfg, seed=72) as c:
            await c.start({1, 2, 3})
            leader = await c.wait_for_leader(timeout=5)
            raft = c.nodes[leader]
            await raft.client_write(b"x")
            answered = 0
            for _ in range(ROUNDS):
                c.router.heal()
                await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.READ_INDEX), 5)  # a round answered
                c.router.isolate(leader)  # nothing sent from now on reaches anyone
                try:
                    await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.READ_INDEX), 0.02)
                    answered += 1
                except TimeoutError:
                    pass  # waits for an acknowledgement that cannot come (until check-quorum)
            return answered

    with asyncio.Runner(loop_factory=new_loop) as runner:
        answered = runner.run(run())
    assert answered == 0, f"{answered} of {ROUNDS} ReadIndex reads answered by a leader cut off from every node"


@pytest.mark.parametrize("new_loop", list(LOOPS.values()), ids=list(LOOPS))
def test_the_default_clock_measures_below_a_millisecond(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def samples() -> set[float]:
        # For 3 ms of this thread's CPU time, not of the wall clock: on a loaded machine the
        # process was taken off the CPU after one sample for longer than 3 ms of wall time,
        # and the test saw one time. Wall time may then pass much faster than CPU time, so a
        # clock of 1 ms steps may give many times here too: its smallest step is what tells.
        clock = LoopClock()
        seen = set()
        end = time.thread_time() + 0.003
        while time.thread_time() < end:
            seen.add(clock.now())
        return seen

    with asyncio.Runner(loop_factory=new_loop) as runner:
        seen = runner.run(samples())
    assert len(seen) > 10, f"the default clock gave {len(seen)} distinct times in 3 ms: {sorted(seen)}"
    times = sorted(seen)
    step = min(b - a for a, b in itertools.pairwise(times))
    assert step < 0.0005, f"the default clock's smallest step was {step * 1000:.3f} ms: {times[:20]}"


def test_a_loop_with_its_own_time_keeps_it() -> None:
    class Virtual(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 42.0

    loop = Virtual()
    try:
        assert loop_time_source(loop)() == 42.0
    finally:
        loop.close()
