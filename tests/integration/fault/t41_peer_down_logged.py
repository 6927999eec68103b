"""What the leader logs while a follower is down: one WARNING once the requests to it have
failed for an election timeout (not one per retry), and one INFO when it answers again
(``openraft_py.failure_log.FailureLog``). The failures were logged at DEBUG only: a peer down
for an hour left nothing in the leader's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from integration.checks import LogRecords, until
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def records() -> Iterator[LogRecords]:
    with LogRecords("openraft_py.replication", logging.DEBUG) as handler:
        yield handler


async def test_a_follower_down_is_one_warning_and_its_return_one_info(steady_cluster: Cluster,
                                                                     records: LogRecords) -> None:
    # (steady_cluster: the lines counted are the leader's; under load a stall of the shared
    # loop elected node 3 with 50-100 ms timeouts, and the leader's failures stopped at 18.)
    cluster = steady_cluster
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    down = min(n for n in (1, 2, 3) if n != leader)
    await cluster.crash(down)
    subject = f"node {leader}: replication to node {down}"
    failed = f"replication {leader}->{down} failed"
    # Many retries, each at DEBUG: well past the election timeout after which it is said.
    await until(lambda: len(records.lines(logging.DEBUG, failed)) >= 40, "40 failed requests to the stopped node")
    warnings = records.lines(logging.WARNING, subject)
    assert len(warnings) == 1, warnings
    assert "Unreachable" in warnings[0] and "failures in" in warnings[0], warnings[0]
    assert records.lines(logging.INFO, subject) == []
    await cluster.restart(down)
    await until(lambda: records.lines(logging.INFO, subject) != [], "the recovery line")
    [recovered] = records.lines(logging.INFO, subject)
    assert "recovered" in recovered, recovered
    assert len(records.lines(logging.WARNING, subject)) == 1
    await cluster.nodes[leader].client_write(b"after")  # (the cluster goes on as before)
    assert len(records.lines(logging.INFO, subject)) == 1
