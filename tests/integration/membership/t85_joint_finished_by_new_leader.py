"""A leader that dies after its joint config ``[C_old, C_new]`` committed but before anyone
received its ``[C_new]`` entry: the next leader inherits the joint config and appends
``[C_new]`` itself, so the change completes without the client asking again; the old leader
rejoins and its unreplicated ``[C_new]`` entry is replaced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import Membership, Stopped, Unreachable
from openraft_py.testing.cluster import Cluster

from ..checks import check_applied_prefix, check_log_matching
from ._util import add_learners, any_leader, membership_entries, settled_leader, steady_config, wait_uniform

pytestmark = pytest.mark.timeout(20)


async def test_new_leader_finishes_an_inherited_joint_config() -> None:
    async with Cluster(steady_config(), seed=85) as c:
        await c.start({1, 2, 3})
        leader = await settled_leader(c)
        await add_learners(c, leader, {4, 5})
        target = frozenset({1, 2, 3, 4, 5})
        raft = c.nodes[leader]

        def hold_final(rpc: str, source: int, target_id: int, req: Any) -> None:
            # The old leader's [C_new] entry reaches nobody.
            if rpc == "append_entries" and source == leader:
                for e in req.entries:
                    if type(e.payload) is Membership and e.payload.configs == (target,):
                        raise Unreachable("test: the final config entry is held back")

        c.router.add_hook(hold_final)
        joint_index = raft.metrics.last_log_index + 1
        # Not awaited to the end: the leader dies before [C_new] can commit.
        change = asyncio.ensure_future(raft.change_membership(set(target)))
        await raft.wait(3.0).metrics(
            lambda m: m.committed is not None and m.committed.index >= joint_index and m.last_log_index > joint_index,
            "joint entry committed and the final one appended",
        )
        final_old = membership_entries(c, leader)[-1]
        assert final_old[1].configs == (target,) and final_old[0].index == joint_index + 1
        await c.crash(leader)
        with pytest.raises(Stopped):
            await asyncio.wait_for(change, timeout=3.0)
        c.router.clear_hooks()

        others = set(target) - {leader}
        new = await any_leader(c, others, timeout=3.0)
        for nid in sorted(others):
            await wait_uniform(c, nid, target)
        lid, m = membership_entries(c, new)[-1]
        assert m.configs == (target,)
        assert lid.term == c.nodes[new].metrics.current_term, "the final config was appended by the new leader"
        # Writes go on; the old leader rejoins with the final config.
        resp = await c.nodes[new].client_write(b"after")
        await c.restart(leader)
        await wait_uniform(c, leader, target)  # the old leader rejoins with the final config
        await c.wait_applied(resp.log_id.index, timeout=3.0)
        assert membership_entries(c, leader)[-1][0] == lid, "the old leader's unreplicated [C_new] was replaced"
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)
