"""``LocalCluster.init`` goes on to the next member when the first refuses having done
nothing (stopped, or stopping), as ``openraft-py cluster init`` does (``KvClient.init``'s
next endpoints).

It sent the init to the first member only: a first node that was stopped (its HTTP port
closed) or stopping (a 503 saying ``"stopping": true``) failed the init that the others
could take, "init through n1 failed: cannot connect to ...".
"""

from __future__ import annotations

import pytest

from openraft_py.kv.client import KvClient
from openraft_py.kv.local_cluster import ClusterError, LocalCluster

pytestmark = pytest.mark.timeout(120)


async def test_init_goes_on_when_the_first_member_is_stopped() -> None:
    cluster = LocalCluster(3)
    try:
        await cluster.start()
        assert cluster.stop(1) == 0
        await cluster.init(timeout=20)  # (n1 is a voter: n2 and n3 are a majority)
        lid, _ = await cluster.wait_leader([2, 3], timeout=30)
        assert lid in (2, 3)
        async with KvClient([cluster.nodes[2].http_addr, cluster.nodes[3].http_addr]) as c:
            assert sorted((await c.status(cluster.nodes[lid].http_addr))["voters"]) == [1, 2, 3]
    finally:
        await cluster.aclose()


async def test_init_fails_naming_every_refusal_when_no_member_takes_it() -> None:
    cluster = LocalCluster(2)
    try:
        await cluster.start()
        assert cluster.stop(1) == 0 and cluster.stop(2) == 0
        with pytest.raises(ClusterError) as info:
            await cluster.init(timeout=5)
        message = str(info.value)
        assert message.startswith("init through n1, n2 failed: "), message
        for i in (1, 2):
            assert cluster.nodes[i].http_addr in message, message
    finally:
        await cluster.aclose()
