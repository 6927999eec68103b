"""A snapshot transfer to a follower that is cut off is resent until it gets through. When the
leader builds a newer snapshot meanwhile (and purges its log up to it), the resends carry the
newer one: the follower installs one snapshot when the network heals. It was sent the older
one first (the one the transfer opened with), then, the log after it being gone, the newer
one: every byte of the state twice (a CI run of t92 saw two installs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import Config, LogId
from openraft_py.testing.cluster import Cluster

from .helpers import snap_config, write

pytestmark = pytest.mark.timeout(20)


def _config() -> Config:
    # Elections are not what this tests: timeouts of 1-2 s keep one leader through a stall
    # of a loaded machine.
    return snap_config(election_timeout_min=1000, election_timeout_max=2000)


async def test_resends_to_a_cut_off_follower_carry_the_newest_snapshot() -> None:
    async with Cluster(_config(), seed=98) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await c.wait_applied(await write(c, leader, 0, 5))
        lagger = min(set(c.nodes) - {leader})
        # The snapshot of every install_snapshot request to the lagger, and whether it was
        # sent while the lagger was cut off.
        sent: list[tuple[LogId | None, bool]] = []
        attempted = asyncio.Event()
        cut_off = True

        def hook(rpc: str, source: int, target: int, req: Any) -> None:
            if rpc == "install_snapshot" and target == lagger:
                sent.append((req.meta.last_log_id, cut_off))
                attempted.set()

        c.router.add_hook(hook)
        c.router.isolate(lagger)

        async def snapshot_after(lo: int) -> LogId:
            """Write 10 more keys, snapshot and purge the leader's log up to them."""
            last = await write(c, leader, lo, lo + 10)
            await raft.trigger.snapshot()
            m = await raft.wait(5).purged(last, f"leader purged up to {last}")
            assert m.snapshot is not None
            return m.snapshot

        old = await snapshot_after(100)
        # The leader tries to send the old snapshot to the lagger (it cannot: cut off).
        await asyncio.wait_for(attempted.wait(), 5)
        assert {s for s, _ in sent} == {old}
        new = await snapshot_after(200)
        assert new > old

        cut_off = False
        c.router.heal()
        await c.nodes[lagger].wait(5).snapshot(new, "the lagger installed the newest snapshot")
        delivered = [s for s, cut in sent if not cut]
        assert delivered and set(delivered) == {new}, f"sent {old!r} after {new!r} was built: {sent}"
        m = await raft.wait(5).metrics(lambda m: (m.replication or {}).get(lagger, -1) >= new.index, "lagger matched")
        assert m.snapshot == new
