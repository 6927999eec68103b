"""The core reads its clock again after the one await of its pass (the state machine feed's
resubmission after a refused snapshot install): a message that arrived during that await is
handled at a time no earlier than its arrival. Handled at the time read before the await, a
follower noted a leader as seen (``leader_seen_at``) before the request that showed it
arrived, and its stickiness, which a lease read counts on, ended early by as long as the
await lasted (docs/design/reads.md)."""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import AppendEntriesRequest, Raft, Vote
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemLogStore, MemStateMachine

from .stepped_clock import SteppedClock

pytestmark = pytest.mark.timeout(30)

STALL_MS = 1000.0


async def test_a_message_that_arrives_during_the_resubmission_is_handled_at_its_arrival() -> None:
    clock = SteppedClock()
    router = Router()
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(), MemStateMachine(), clock=clock)
    router.register(1, raft)
    try:
        await raft.initialize([1])
        await raft.wait(5).current_leader(1)
        await raft.client_write(b"x")
        core = raft._core
        term = raft.metrics.vote.term
        answered: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        arrived_at: list[float] = []

        async def stalled_submit(committed: object) -> None:
            # The resubmission takes a while; meanwhile a newer leader's heartbeat arrives.
            clock.offset += STALL_MS / 1000.0
            arrived_at.append(clock.now() * 1000.0)
            req = AppendEntriesRequest(Vote.new(term + 1, 2, True), None, [], None)
            raft.submit_append_entries(req, answered.set_result)
            await asyncio.sleep(0)

        core.feed.submit = stalled_submit  # type: ignore[method-assign]
        core.feed.resubmit = True
        if core._wakeup.first is not None:
            core._wakeup.wake()
        await asyncio.wait_for(answered, 5)
        assert core.engine.leader_seen_at >= arrived_at[0], (core.engine.leader_seen_at, arrived_at[0])
    finally:
        await raft.shutdown()
