"""``change_membership`` on a leader just elected (or just handed leadership), before it
heard from its followers: it waits for their first answers and then decides, instead of
refusing with ``LearnerIsLagging`` ("replication unknown") followers that are up to date;
and it, ``add_learner`` too, waits for a membership it inherited (``initialize``'s first one)
to commit with its blank entry instead of refusing with ``InProgress``.
A node that stays silent is still refused, once the new leader's window
(``election_timeout_max`` from its election) has passed, and a call cancelled while it waits
logs nothing.

The router delays every AppendEntries (not the votes), so a leader's first answers come a
round trip of at least ``2 * DELAY_MS`` after its election: the call lands inside that window
every time."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import BasicNode, Config, LearnerIsLagging, ServerState
from openraft_py.testing.cluster import Cluster
from openraft_py.testing.sim import VirtualTimeLoop

from ._util import RpcCounter, add_learners, settled_leader, steady_config

pytestmark = pytest.mark.timeout(20)

DELAY_MS = 60.0


def slow_replication(c: Cluster) -> None:
    """Every AppendEntries request and response (both lanes) takes ``DELAY_MS`` to
    ``1.5 * DELAY_MS``; votes and TransferLeader notices are not delayed."""
    for rpc in ("append_entries", "heartbeat"):
        c.router.set_delay(DELAY_MS, 1.5 * DELAY_MS, rpc=rpc)


def config() -> Config:
    # Round trips of 120-180 ms: well inside an election timeout, so the leader keeps leading.
    return steady_config(election_timeout_min=500, election_timeout_max=1000, heartbeat_interval=50)


async def test_a_change_right_after_the_first_election_waits_for_the_followers() -> None:
    """The CI case: ``initialize``, the leader elected, ``change_membership`` at once. The
    leader had no answer from 2 or 3 yet and refused ``LearnerIsLagging([2, 3])``."""
    async with Cluster(config(), seed=87) as c:
        slow_replication(c)
        await c.start({1, 2, 3, 4, 5})
        raft = c.nodes[1]  # initialize elects the node it runs on
        await raft.wait(5.0).state(ServerState.LEADER, "n1 leads")
        assert all(v < 0 for nid, v in (raft.metrics.replication or {}).items() if nid != 1), (
            "the leader heard from a follower already: the window this test is about closed")
        resp = await raft.change_membership({1, 2, 3})
        assert resp.membership is not None and resp.membership.configs == (frozenset({1, 2, 3}),)
        assert c.leader() == 1


async def test_add_learner_right_after_the_first_election_waits_for_the_first_membership() -> None:
    """``initialize``, then ``add_learner`` at once: the first membership (entry 0-0) was not
    committed yet (it commits with the leader's blank entry, a round trip away), and the
    call failed with ``InProgress``."""
    async with Cluster(config(), seed=91) as c:
        slow_replication(c)
        await c.start({1, 2, 3})
        await c.add_node(4)
        raft = c.nodes[1]
        await raft.wait(5.0).state(ServerState.LEADER, "n1 leads")
        assert raft.metrics.committed is None, "the first membership committed already: the window closed"
        resp = await raft.add_learner(4, BasicNode(), blocking=True)
        assert resp.membership is not None and 4 in resp.membership.learner_ids()


async def test_a_change_right_after_a_leader_transfer_waits_for_the_followers() -> None:
    """A leader handed leadership to ``new``; ``new`` changes the voters as soon as it leads."""
    async with Cluster(config(), seed=88) as c:
        await c.start({1, 2, 3, 4, 5})
        old = await settled_leader(c)
        new = min({1, 2, 3, 4, 5} - {old})
        gone = max({1, 2, 3, 4, 5} - {old, new})
        slow_replication(c)
        await c.nodes[old].trigger.transfer_leader(new)
        raft = c.nodes[new]
        await raft.wait(5.0).state(ServerState.LEADER, f"n{new} leads")
        voters = {1, 2, 3, 4, 5} - {gone}
        resp = await raft.change_membership(voters)
        assert resp.membership is not None and resp.membership.configs == (frozenset(voters),)


async def test_a_new_leader_still_refuses_a_change_counting_on_a_node_that_is_down() -> None:
    """Learner 4 caught up, then went down; the leader hands leadership over, and the new
    leader is asked at once to make ``{new, 4}`` the voters. It waits out its window for 4's
    first answer (none comes) and refuses, logging nothing, still leading."""
    async with Cluster(config(), seed=89) as c:
        await c.start({1, 2, 3})
        old = await settled_leader(c)
        await add_learners(c, old, {4})
        await c.crash(4)
        new = min({1, 2, 3} - {old})
        await c.nodes[old].trigger.transfer_leader(new)
        raft = c.nodes[new]
        await raft.wait(5.0).state(ServerState.LEADER, f"n{new} leads")
        with pytest.raises(LearnerIsLagging) as ei:
            await raft.change_membership({new, 4})
        assert ei.value.node_ids == [4] and ei.value.unheard == []
        last = raft.metrics.last_log_index
        await raft.client_write(b"still taking writes")
        assert raft.metrics.last_log_index == last + 1, "a refused change appended an entry"
        assert raft.metrics.membership_config.membership.voter_ids() == {1, 2, 3}
        assert c.leader() == new


async def test_a_change_cancelled_while_a_new_leader_waits_logs_nothing() -> None:
    """The same refusal, cancelled while the new leader waits for 4: nothing is logged, then
    or later (the change is not held anywhere to be appended once 4 answers)."""
    cfg = config()
    async with Cluster(cfg, seed=90) as c:
        await c.start({1, 2, 3})
        old = await settled_leader(c)
        await add_learners(c, old, {4})
        await c.crash(4)
        new = min({1, 2, 3} - {old})
        other = max({1, 2, 3} - {old, new})
        counter = RpcCounter(c)
        await c.nodes[old].trigger.transfer_leader(new)
        raft = c.nodes[new]
        await raft.wait(5.0).state(ServerState.LEADER, f"n{new} leads")
        last = raft.metrics.last_log_index
        change = asyncio.ensure_future(raft.change_membership({new, 4}))
        await counter.rounds(new, other, 1)  # one request: far less than the window
        assert not change.done(), "the new leader answered before its window passed"
        change.cancel()
        with pytest.raises(asyncio.CancelledError):
            await change
        # Heartbeat rounds as a clock: past the window, 4 back and caught up.
        await counter.rounds(new, other, cfg.election_timeout_max // cfg.heartbeat_interval + 2)
        await c.add_node(4)
        resp = await raft.client_write(b"after")
        await c.nodes[4].wait(5.0).applied_index_at_least(resp.log_id.index, "n4 caught up")
        assert resp.log_id.index == last + 1, "the cancelled change appended an entry"
        assert raft.metrics.membership_config.membership.voter_ids() == {1, 2, 3}


class FastClock:
    """A node's clock running ``rate`` times as fast as the loop's (a ``Clock`` of the user's
    need not be the loop's): ``now()`` is the loop's time times ``rate``, and ``sleep(s)``
    lasts ``s / rate`` of the loop's seconds."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def now(self) -> float:
        return asyncio.get_running_loop().time() * self.rate

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.rate)


def test_a_new_leader_waits_out_its_window_on_its_own_clock() -> None:
    """The wait for a node's first answer is bounded by the leader's window, counted on the
    node's clock (the one ``wait_ms`` is in), not the loop's: with clocks 4 times as fast as
    the loop's, the refusal came after ``election_timeout_max`` of the loop's time, 4 times
    the window. Run in virtual time: the loop's time is exact, whatever the machine's load."""
    rate = 4.0
    cfg = config()
    loop = VirtualTimeLoop()

    async def refused_after() -> float:
        async with Cluster(cfg, seed=92, clock=lambda nid: FastClock(rate)) as c:
            await c.start({1, 2, 3})
            old = await settled_leader(c)
            await add_learners(c, old, {4})
            await c.crash(4)
            new = min({1, 2, 3} - {old})
            await c.nodes[old].trigger.transfer_leader(new)
            raft = c.nodes[new]
            await raft.wait(5.0).state(ServerState.LEADER, f"n{new} leads")
            t0 = loop.time()
            with pytest.raises(LearnerIsLagging) as ei:
                await raft.change_membership({new, 4})
            assert ei.value.node_ids == [4] and ei.value.unheard == []
            return loop.time() - t0

    try:
        took = loop.run_until_complete(refused_after())
    finally:
        loop.close()
    window = cfg.election_timeout_max / 1000.0 / rate  # the loop's seconds
    assert took <= window + cfg.heartbeat_interval / 1000.0 / rate, (
        f"refused after {took:.3f} s of the loop's time, the window is {window:.3f} s (clock rate {rate})")
