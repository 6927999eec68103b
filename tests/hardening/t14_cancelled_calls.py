"""A caller cancelled in a call (a timeout around it, ``task.cancel()``, Ctrl-C under
``asyncio.run``) gives up its wait, not the work the node took in (docs/concepts.md
"Cancelled calls"): a started write may still commit and apply everywhere, a membership
change goes through both of its phases, a learner being waited for stays added. The node keeps
serving and keeps no record of the cancelled calls."""

from __future__ import annotations

import asyncio

import pytest
from integration.checks import fast_config, leader_after_a_write, until

from openraft_py import BasicNode, ReadPolicy
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)


async def test_a_cancelled_write_may_still_commit_and_the_node_goes_on() -> None:
    async with Cluster(fast_config()) as c:
        raft, first = await leader_after_a_write(c)
        write = asyncio.ensure_future(raft.client_write(b"cancelled"))
        await asyncio.sleep(0)  # started: its payload is with the node
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        read = asyncio.ensure_future(raft.ensure_linearizable(ReadPolicy.READ_INDEX))
        await asyncio.sleep(0)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        after = await raft.client_write(b"after")
        assert after.log_id.index == first + 2  # the cancelled write was logged before it
        for disk in c.disks.values():
            await until(lambda disk=disk: [d for _, d in disk.applied_log][-2:] == [b"cancelled", b"after"],
                        "every node applies the cancelled write, then the next")
        assert not raft._core._callers  # nothing of the cancelled calls is kept


async def test_a_cancelled_membership_change_goes_through_both_phases() -> None:
    async with Cluster(fast_config()) as c:
        raft, _ = await leader_after_a_write(c)
        learner = await c.add_node(4)  # not a member yet
        c.router.isolate(4)  # it cannot catch up: add_learner waits
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode("")))  # blocking: waits for catch-up
        await until(lambda: 4 in raft.metrics.membership_config.membership.learner_ids(), "node 4 is a learner")
        adding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await adding
        c.router.heal()
        target = raft.metrics.last_log_index
        await learner.wait(10).applied_index_at_least(target)  # still a learner, caught up
        changing = asyncio.ensure_future(raft.change_membership({1, 2, 4}))
        await raft.wait(5).metrics(lambda m: m.membership_config.membership.is_joint(), "the joint config")
        changing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await changing
        await until(
            lambda: all(n.metrics.membership_config.membership.configs == (frozenset({1, 2, 4}),)
                        and n.metrics.last_applied is not None
                        and n.metrics.last_applied.index >= n.metrics.membership_config.log_id.index  # type: ignore[union-attr]
                        for i, n in c.nodes.items() if i != 3),
            "the final config is applied on every remaining member",
        )
        await raft.client_write(b"after")
