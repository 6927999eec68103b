"""A leadership-transfer notice that its target reads only after the transfer expired (the
target was paused: SIGSTOP, a long event-loop stall) starts no election: the leader took
writes again meanwhile, and the target follows it. The target used to campaign at once on
reading it, and an election the leader had given up on deposed it (term 1 to 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import ForwardToLeader, Unreachable
from openraft_py.core.clock import LoopClock
from openraft_py.testing.cluster import Cluster
from openraft_py.types import AppendEntriesRequest, ClientWriteResponse, TransferLeaderRequest

from ..checks import fast_config, leader_after_a_write, until

pytestmark = pytest.mark.timeout(20)


class PausableClock(LoopClock):
    """The loop's clock, whose timers freeze while paused (as a stopped process's)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = asyncio.Event()
        self.running.set()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.running.wait()


async def _write_once_taken(c: Cluster, leader: int, data: bytes, timeout: float = 5.0) -> ClientWriteResponse:
    """``data`` written on ``leader`` once it takes writes again (its transfer expired)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await c.nodes[leader].client_write(data)
        except ForwardToLeader:
            assert loop.time() < deadline, "the leader still hands over"
            await asyncio.sleep(0.01)


READS = ["notice_first", "after_a_stale_heartbeat", "after_a_tick_and_a_stale_heartbeat", "after_the_leaders_new_entries"]


@pytest.mark.parametrize("read", READS)
async def test_a_notice_read_after_the_transfer_expired_starts_no_election(read: str) -> None:
    clocks: dict[int, PausableClock] = {}

    def clock(node_id: int) -> PausableClock:
        clocks[node_id] = PausableClock()
        return clocks[node_id]

    # Timeouts four times the fast ones: on a loaded machine a 50 ms election timeout let an
    # election depose the leader before the transfer started (ForwardToLeader, 1 in 25 runs).
    c = Cluster(fast_config(election_timeout_min=200, election_timeout_max=400, heartbeat_interval=30),
                seed=3, clock=clock)
    try:
        raft, index = await leader_after_a_write(c)
        leader = raft.id
        await c.wait_applied(index)
        term = raft.metrics.current_term
        target = min({1, 2, 3} - {leader})

        # The target stops as the notice reaches it (the leader sends it once the target
        # answered the transfer's heartbeat round): its timers freeze and nothing sent to it
        # is answered; what was sent waits in its socket buffers, to be read when it
        # resumes: the transfer's notice, and the leader's heartbeats.
        notices: list[TransferLeaderRequest] = []
        heartbeats: list[AppendEntriesRequest] = []
        unread = asyncio.Event()  # set while what is sent to the target waits unread

        def paused(rpc: str, source: int, to: int, req: Any) -> None:
            if to != target:
                return
            if rpc == "transfer_leader" and not unread.is_set():
                unread.set()
                clocks[target].running.clear()
            if unread.is_set():
                if rpc == "transfer_leader":
                    notices.append(req)
                elif rpc == "append_entries" and not req.entries:
                    heartbeats.append(req)
                raise Unreachable(f"{rpc} {source} -> {to}: node {to} is paused")

        c.router.add_hook(paused)
        await raft.trigger.transfer_leader(target)
        # No new leader within two election timeouts: the leader takes writes again.
        late = await _write_once_taken(c, leader, b"after the transfer expired")
        assert len(notices) == 1 and heartbeats, "the notice and heartbeats were sent while the target was paused"
        follower = c.nodes[target]
        # What the target reads when it resumes, in one of the orders it may come in.
        if read == "notice_first":
            await follower.handle_transfer_leader(notices[0])
        elif read == "after_a_stale_heartbeat":
            await follower.append_entries(heartbeats[0])
            await follower.handle_transfer_leader(notices[0])
        elif read == "after_a_tick_and_a_stale_heartbeat":
            clocks[target].running.set()
            await until(lambda: follower.metrics.current_leader is None, "the target's timer fired")
            await follower.append_entries(heartbeats[0])
            await follower.handle_transfer_leader(notices[0])
        clocks[target].running.set()
        unread.clear()
        await follower.wait(5.0).applied_index_at_least(late.log_id.index, "the target caught up")
        if read == "after_the_leaders_new_entries":  # (another connection was read first)
            await follower.handle_transfer_leader(notices[0])

        # The target follows the leader it had: a write commits, and no node saw another term.
        more = await raft.client_write(b"more")
        await c.wait_applied(more.log_id.index)
        for nid, node in c.nodes.items():
            m = node.metrics
            assert m.current_term == term and m.current_leader == leader, f"n{nid}: {m.describe()}"
    finally:
        await c.shutdown()
