"""The ticker's note is handled last in the core's pass, after the other notes and the
requests it took. After a stall of the node's loop (a large entry, a collection), uvloop runs
the due ticker before it reads the sockets, so the tick reached the core first: a follower
whose election timeout passed during the stall started a pre-vote round although its
leader's heartbeat was in the same pass (and a leader could step down although answers to
requests sent within the election timeout were)."""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config

from openraft_py import AppendEntriesRequest, AppendEntriesResponse, Raft
from openraft_py.core.messages import TICK
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemLogStore, MemStateMachine

from .stepped_clock import SteppedClock

pytestmark = pytest.mark.timeout(30)


async def test_a_follower_handles_its_leader_s_heartbeat_before_a_tick_of_the_same_pass() -> None:
    clock = SteppedClock()
    router = Router()
    config = fast_config()
    nodes: dict[int, Raft] = {}
    for i in (1, 2, 3):
        nodes[i] = await Raft.new(i, config, router.factory(i), MemLogStore(), MemStateMachine(),
                                  clock=clock if i == 2 else None)
        router.register(i, nodes[i])
    try:
        await nodes[1].initialize([1, 2, 3])
        await nodes[1].wait(5).current_leader(1)
        await nodes[1].client_write(b"x")
        await nodes[2].wait(5).applied_index_at_least(1)
        votes_from_2: list[object] = []
        router.add_hook(lambda rpc, source, target, req: votes_from_2.append(req)
                        if rpc == "vote" and source == 2 else None)
        follower = nodes[2]
        core = follower._core
        st = core.engine.state
        heartbeat = AppendEntriesRequest(st.vote, st.last_log_id(), [], st.committed)
        answered: asyncio.Future[AppendEntriesResponse | BaseException] = asyncio.get_running_loop().create_future()
        # The follower's loop stalled for a second: its election timeout passed. Its next
        # pass takes the ticker's note and the leader's heartbeat that waited meanwhile.
        clock.offset += 1.0
        core.notify(TICK)
        follower.submit_append_entries(heartbeat, answered.set_result)
        resp = await asyncio.wait_for(answered, 5)
        assert isinstance(resp, AppendEntriesResponse) and resp.success, resp
        for _ in range(50):  # loop turns, for a vote request the pass would have sent
            await asyncio.sleep(0)
        assert votes_from_2 == [], votes_from_2
        assert follower.metrics.current_leader == 1
    finally:
        for raft in nodes.values():
            await raft.shutdown()
