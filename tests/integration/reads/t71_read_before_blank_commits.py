"""A read on a brand-new leader whose blank entry has not committed yet: the read log id is
that entry, so the read is answered only once it commits. A quorum can confirm leadership
before that (a lagging follower acks catch-up requests that do not reach the entry); if the
leader is then cut off and steps down, the read fails with ``ForwardToLeader`` at the
step-down instead of waiting for the entry to be applied while the partition lasts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import ForwardToLeader, ReadPolicy, ServerState, Unreachable
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config

pytestmark = pytest.mark.timeout(30)


async def test_read_confirmed_before_the_blank_entry_commits_ends_when_the_leader_steps_down() -> None:
    cfg = fast_config(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=30, max_payload_entries=1)
    async with Cluster(cfg, seed=71) as c:
        await c.start({1, 2, 3})
        lid = await c.wait_for_leader(timeout=5)
        raft = c.nodes[lid]
        first = await raft.client_write(b"w")
        await c.wait_applied(first.log_id.index, timeout=5)
        a, b = sorted(set(c.nodes) - {lid})
        c.router.isolate(b)  # b lags: it misses the next writes
        for i in range(5):
            await raft.client_write(b"w%d" % i)
        old_term = raft.metrics.current_term
        last = raft.metrics.last_log_index
        assert last is not None
        # The leader loses its quorum and steps down; then it can reach b only, and wins the
        # next term with b's vote (its log is the longer one).
        c.router.isolate(lid)
        await raft.wait(5).metrics(lambda m: m.state != ServerState.LEADER, "stepped down")

        probes = 0

        def hold_back_the_blank_entry(rpc: str, source: int, target: int, req: Any) -> None:
            # b gets the new leader's catch-up requests, but never its blank entry: the first
            # request carrying it (the probe, which b cannot match yet) goes through, every
            # later one is lost, and b is cut off from then on, heartbeats too. (A b that
            # still answered the heartbeats, which a leader sends a target backing off that
            # answered lately, would keep the leader, as any follower that answers does: the
            # read would wait for the entry for as long as the fault lasts.)
            nonlocal probes
            if rpc not in ("append_entries", "heartbeat") or target != b or req.vote.leader_id.term <= old_term:
                return
            if req.entries and req.entries[-1].log_id.index > last:
                probes += 1
            if probes > 1:
                raise Unreachable("the new leader's blank entry is lost, and b with it")

        c.router.add_hook(hold_back_the_blank_entry)
        c.router.heal()
        c.router.isolate(a)
        await raft.wait(5).metrics(lambda m: m.state == ServerState.LEADER and m.current_term > old_term, "leads again")

        loop = asyncio.get_running_loop()
        start = loop.time()
        # b's catch-up acks confirm leadership; the blank entry never commits, and the leader
        # steps down (check quorum) once b is cut off. The read must end then.
        with pytest.raises(ForwardToLeader):
            await asyncio.wait_for(raft.ensure_linearizable(ReadPolicy.READ_INDEX), 5.0)
        assert loop.time() - start < 2.0, "the read ends at the step-down (election_timeout_max after the last ack)"
        assert c.nodes[b].metrics.last_log_index == last, "b acked the catch-up requests sent after the read"
        committed = raft.metrics.committed
        assert committed is not None and committed.index <= last, "the blank entry did not commit"

        # Once the network heals, the cluster reads again.
        c.router.clear_hooks()
        c.router.heal()
        new = await c.wait_for_leader(timeout=5)
        assert await c.nodes[new].ensure_linearizable(ReadPolicy.READ_INDEX) is not None
