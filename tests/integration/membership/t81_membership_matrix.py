"""``change_membership`` over a matrix of voter changes (grow, shrink, replace every voter)
while writers keep writing: the writes keep flowing during the change and none that was
acknowledged is lost; every final member ends with exactly the target voters and a leader
among them; removed nodes leave the membership and stop being replicated to, or, with
``retain=True``, stay on as learners that keep receiving the log."""

from __future__ import annotations

import pytest

from openraft_py import ServerState
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching
from ._util import (
    RpcCounter,
    Writer,
    add_learners,
    any_leader,
    assert_acked_applied,
    membership_entries,
    metrics_changed,
    now,
    settled_leader,
    steady_config,
    wait_uniform,
)

pytestmark = pytest.mark.timeout(20)

CASES = [
    ({1}, {1, 2, 3}),
    ({1, 2, 3}, {1, 2, 3, 4, 5}),
    ({1, 2, 3, 4, 5}, {1, 2, 3}),
    ({1, 2, 3}, {4, 5, 6}),
]


def _params() -> list[object]:
    out: list[object] = []
    for i, (old, new) in enumerate(CASES):
        name = "{" + ",".join(map(str, sorted(old))) + "}->{" + ",".join(map(str, sorted(new))) + "}"
        out.append(pytest.param(old, new, False, i, id=name))
        if old - new:
            out.append(pytest.param(old, new, True, i, id=name + "-retain"))
    return out


async def _writes_after(writer: Writer, t: float, n: int, c: Cluster, timeout: float = 5.0) -> None:
    """Wait until the writers got ``n`` acks after loop time ``t``."""
    deadline = now() + timeout
    while sum(1 for _, _, at in writer.acked if at > t) < n:
        assert now() < deadline, f"writes stalled: {[r.metrics.describe() for r in c.nodes.values()]}"
        await metrics_changed(c)


@pytest.mark.parametrize(("old", "new", "retain", "case"), _params())
async def test_change_membership_under_writes(old: set[int], new: set[int], retain: bool, case: int) -> None:
    removed = old - new
    final = new | (removed if retain else set())
    async with Cluster(steady_config(), seed=810 + case * 2 + retain) as c:
        await c.start(old)
        leader = await settled_leader(c)
        await add_learners(c, leader, new - old)

        writer = Writer(c, tasks=3, tick_ms=1)
        try:
            await _writes_after(writer, 0.0, 5, c)
            # A little latency on every message, so the change spans several round trips
            # and the writers get writes in while it is under way.
            c.router.set_delay(2, 4)
            t0 = now()
            resp = await c.nodes[leader].change_membership(new, retain=retain)
            t1 = now()
            c.router.heal()
            await _writes_after(writer, t1, 5, c)
        finally:
            await writer.stop()

        # The response is the final uniform config's entry.
        entries = membership_entries(c, leader)
        final_lid, final_m = entries[-1]
        assert final_lid == resp.log_id and final_m.configs == (frozenset(new),)
        assert resp.membership == final_m
        joint_lid, joint_m = entries[-2]
        assert joint_m.configs == (frozenset(old), frozenset(new)), f"expected the joint config, got {joint_m!r}"

        # Writes flowed during the change: acks arrived while it ran, and writes were
        # appended between the joint and the final entry.
        during = writer.acked_between(t0, t1)
        assert during >= 1, f"no write acknowledged during the change ({t1 - t0:.4f}s)"
        between = [lid for lid, _, _ in writer.acked if joint_lid.index < lid.index < final_lid.index]
        assert between, f"no acknowledged write between the joint {joint_lid!r} and final {final_lid!r} entries: {[(lid, round((t - t0) * 1000, 2)) for lid, _, t in writer.acked]} t1={(t1 - t0) * 1000:.2f}"

        # Every final member: the target voters, retained nodes as learners, a leader among
        # the new voters, and every acknowledged write applied.
        lead = await any_leader(c, new, timeout=3.0)
        for nid in sorted(final):
            m = await wait_uniform(c, nid, new)
            mem = m.membership_config.membership
            assert not mem.is_joint()
            assert set(mem.learner_ids()) == (removed if retain else set()), f"n{nid}: {mem!r}"
        for nid in sorted(removed):
            st = c.nodes[nid].metrics.state
            assert st != ServerState.LEADER, f"removed n{nid} still leads"
            if retain:
                await c.nodes[nid].wait(3.0).state(ServerState.LEARNER, f"retained n{nid} is a learner")
        last = max(lid.index for lid, _, _ in writer.acked)
        await c.wait_applied(last, timeout=5.0, ids=final)
        assert_acked_applied(c, writer.acked, final)
        check_log_matching({n: c.disks[n] for n in final})
        check_applied_prefix({n: c.disks[n] for n in final})

        # Replication to removed nodes has stopped; retained learners still get heartbeats.
        # Clock: AppendEntries to a remaining voter (from whoever leads by then).
        counter = RpcCounter(c)
        other = next(n for n in sorted(new) if n != lead)

        def replicated_to(nid: int) -> int:
            return c.router.rpc_count("append_entries", target=nid) + c.router.rpc_count("install_snapshot", target=nid)

        await counter.rounds(None, other, 1)  # whatever was in flight at the change landed
        sent = {n: replicated_to(n) for n in removed}
        await counter.rounds(None, other, 10)
        lead = await any_leader(c, new, timeout=3.0)
        for nid in sorted(removed):
            now_sent = replicated_to(nid)
            if retain:
                assert now_sent > sent[nid], f"retained learner n{nid} no longer replicated to"
            else:
                assert now_sent == sent[nid], f"removed n{nid} still replicated to: {sent[nid]} -> {now_sent}"
                assert nid not in c.nodes[lead].metrics.membership_config.membership.nodes
                assert nid not in (c.nodes[lead].metrics.replication or {})
