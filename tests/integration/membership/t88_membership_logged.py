"""Each node logs the membership it goes by at INFO, once as it starts and once at each
change it learns of (a membership takes effect when appended): the voters and learners, and
a joint membership's two voter sets. No change of the voters or learners was logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from openraft_py.testing.cluster import Cluster

from ._util import add_learners, settled_leader

pytestmark = pytest.mark.timeout(20)


def _lines(caplog: pytest.LogCaptureFixture, node: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "openraft_py.core" and r.getMessage().startswith(f"node {node}: ") and "membership" in r.getMessage()]


async def test_every_membership_a_node_goes_by_is_logged_once(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openraft_py.core")
    await cluster.start({1, 2, 3})
    leader = await settled_leader(cluster)
    await add_learners(cluster, leader, {4})
    resp = await cluster.nodes[leader].change_membership({1, 2, 4}, retain=False)
    final = resp.log_id.index
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not all(any(f"at log index {final}:" in m for m in _lines(caplog, n)) for n in (1, 2, 4)):
        assert loop.time() < deadline, {n: _lines(caplog, n) for n in (1, 2, 3, 4)}
        await asyncio.sleep(0.01)
    for n in (1, 2):
        lines = _lines(caplog, n)
        assert lines[0].endswith(": voters [1, 2, 3], learners []"), lines
        assert lines[1].endswith(": voters [1, 2, 3], learners [4]"), lines
        assert "joint membership at log index" in lines[2] and lines[2].endswith(
            ": voters [1, 2, 3] and [1, 2, 4], learners []"), lines
        assert lines[3] == f"node {n}: membership at log index {final}: voters [1, 2, 4], learners []", lines
        assert len(lines) == 4, lines
    # The learner started with no membership (nothing said), then got the cluster's.
    assert _lines(caplog, 4)[-1] == f"node 4: membership at log index {final}: voters [1, 2, 4], learners []"
