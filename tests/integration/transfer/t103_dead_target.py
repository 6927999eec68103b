"""A leadership transfer to a target that went down a moment before (crashed, or cut off,
less than ``election_timeout_max`` ago, so ``transfer_leader`` takes it): it never answers
the transfer's heartbeat round, so it is never sent the notice, and the first request to it
the network refuses (``errors.Unreachable``) gives the transfer up: the leader takes writes
again at once. It refused them, redirecting them to the dead node, for two election
timeouts. A target that is only slow (its answers come late, or a request to it times out)
is still handed leadership."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from openraft_py import ForwardToLeader, ReadPolicy, ServerState
from openraft_py.errors import Timeout
from openraft_py.testing.cluster import Cluster

from ..checks import LogRecords, fast_config

pytestmark = pytest.mark.timeout(30)

WRITE_BOUND = 2.0


def now_ms() -> float:
    """The engine's clock: the loop's, in milliseconds."""
    return asyncio.get_running_loop().time() * 1000.0


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Election timeouts of 150-300 ms, heartbeats every 15 ms: a transfer that waits for its
    deadline refuses writes for 600 ms; a stall of the shared loop on a loaded machine does
    not start an election."""
    c = Cluster(fast_config(election_timeout_min=150, election_timeout_max=300), seed=1)
    try:
        yield c
    finally:
        await c.shutdown()


async def write_when_taken(c: Cluster, leader: int, to: int) -> tuple[int, float]:
    """Write on ``leader`` until it takes the write (each refusal names ``to``); return the
    refusals and the time (ms) the write was taken."""
    refused = 0
    async with asyncio.timeout(5):
        while True:
            try:
                await asyncio.wait_for(c.nodes[leader].client_write(b"after"), timeout=WRITE_BOUND)
                return refused, now_ms()
            except ForwardToLeader as e:
                assert e.leader_id == to, "a write refused during the transfer names its target"
                refused += 1
                await asyncio.sleep(0.002)


@pytest.mark.parametrize("behind", [False, True], ids=["holding-the-whole-log", "missing-a-write"])
async def test_transfer_to_a_target_that_just_crashed_gives_up_at_once(cluster: Cluster, behind: bool) -> None:
    """Holding the whole log or missing a write, the target answers nothing since the start,
    so it is never sent the notice. Writes were refused for 600 ms (two election timeouts);
    now the leader gives up on the first refused request to the target, within about a
    heartbeat interval (15 ms), logs why at WARNING, and serves lease reads again (no one
    was told of the hand-over)."""
    c = cluster
    timeout_max = c.config.election_timeout_max
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader(timeout=5)
    raft = c.nodes[leader]
    last = (await asyncio.wait_for(raft.client_write(b"everyone has this"), timeout=WRITE_BOUND)).log_id.index
    await c.wait_applied(last, timeout=5)
    to = max(set(c.nodes) - {leader})
    crash = asyncio.ensure_future(c.crash(to))
    await asyncio.sleep(0)  # it is gone from the network (the crash's first step); shutting down
    if behind:
        await asyncio.wait_for(raft.client_write(b"the target misses this"), timeout=WRITE_BOUND)
    with LogRecords("openraft_py.core", logging.WARNING) as records:
        t0 = now_ms()
        # Taken: node `to` answered requests sent within election_timeout_max.
        await raft.trigger.transfer_leader(to)
        _, taken = await write_when_taken(c, leader, to)
    await crash
    resumed = taken - t0
    assert resumed < timeout_max, f"writes resumed {resumed:.0f} ms after the transfer to a crashed node"
    (gave_up,) = records.lines(logging.WARNING, "gave up handing leadership over")
    assert gave_up.startswith(f"node {leader}: gave up handing leadership over to node {to} after "), gave_up
    assert f": node {to} cannot be reached (" in gave_up and "node " + str(to) + " is not registered" in gave_up
    assert gave_up.endswith("): is it down or cut off?; it takes writes again (and lease reads: no follower was told "
                            "of it)"), gave_up
    assert raft.metrics.state is ServerState.LEADER and c.leader() == leader
    # Never sent the notice (it answered nothing since the start), nor was anyone: the
    # lease stands. It stayed refused for the rest of the term.
    assert await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.LEASE_READ), timeout=2) is not None
    assert await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.READ_INDEX), timeout=2) is not None


async def test_transfer_to_a_target_cut_off_just_before_gives_up_at_once(cluster: Cluster) -> None:
    """Cut off (the network refuses: isolated) rather than crashed: the same."""
    c = cluster
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader(timeout=5)
    raft = c.nodes[leader]
    await asyncio.wait_for(raft.client_write(b"settle"), timeout=WRITE_BOUND)
    to = max(set(c.nodes) - {leader})
    c.router.isolate(to)
    t0 = now_ms()
    await raft.trigger.transfer_leader(to)
    _, taken = await write_when_taken(c, leader, to)
    assert taken - t0 < c.config.election_timeout_max
    c.router.heal()
    assert c.leader() == leader


async def test_a_slow_target_is_still_handed_leadership(cluster: Cluster) -> None:
    """Every request to the target waits 40 ms (over two heartbeat intervals) and one
    AppendEntries to it times out during the transfer: it is live, only slow. The
    transfer is not given up: the target leads."""
    c = cluster
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader(timeout=5)
    raft = c.nodes[leader]
    await asyncio.wait_for(raft.client_write(b"settle"), timeout=WRITE_BOUND)
    to = max(set(c.nodes) - {leader})
    timed_out = 0
    transferring = False

    async def slow(rpc: str, source: int, target: int, req: object) -> None:
        nonlocal timed_out
        if target != to:
            return
        if transferring and rpc == "append_entries" and timed_out == 0:
            timed_out += 1
            raise Timeout(f"{rpc} {source} -> {target}: no answer in time")
        await asyncio.sleep(0.04)

    c.router.add_hook(slow)
    # The target misses this write for a while: the transfer waits for it to catch up.
    await asyncio.wait_for(raft.client_write(b"the target gets this late"), timeout=WRITE_BOUND)
    transferring = True
    with LogRecords("openraft_py.core", logging.WARNING) as records:
        await raft.trigger.transfer_leader(to)
        await raft.wait(5.0).current_leader(to, f"n{to} leads")
    assert timed_out == 1, "no request to the target timed out during the transfer"
    assert not records.lines(logging.WARNING, "gave up handing leadership over")
    c.router.clear_hooks()
