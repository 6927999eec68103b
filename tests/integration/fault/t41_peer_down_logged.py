"""What the leader logs while a follower is down: one WARNING once the requests to it have
failed for an election timeout (not one per retry), and one INFO when it answers again
(``openraft_py.failure_log.FailureLog``). The failures were logged at DEBUG only: a peer down
for an hour left nothing in the leader's log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest

from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(20)


class _Records(logging.Handler):
    """Keeps every record of the ``openraft_py.replication`` logger, DEBUG included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int, text: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level and text in r.getMessage()]


@pytest.fixture
def records() -> Iterator[_Records]:
    logger = logging.getLogger("openraft_py.replication")
    handler = _Records()
    saved = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


async def _until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_follower_down_is_one_warning_and_its_return_one_info(cluster: Cluster, records: _Records) -> None:
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    down = min(n for n in (1, 2, 3) if n != leader)
    await cluster.crash(down)
    subject = f"node {leader}: replication to node {down}"
    failed = f"replication {leader}->{down} failed"
    # Many retries, each at DEBUG: well past the election timeout after which it is said.
    await _until(lambda: len(records.lines(logging.DEBUG, failed)) >= 40, "40 failed requests to the stopped node")
    warnings = records.lines(logging.WARNING, subject)
    assert len(warnings) == 1, warnings
    assert "Unreachable" in warnings[0] and "failures in" in warnings[0], warnings[0]
    assert records.lines(logging.INFO, subject) == []
    await cluster.restart(down)
    await _until(lambda: records.lines(logging.INFO, subject) != [], "the recovery line")
    [recovered] = records.lines(logging.INFO, subject)
    assert "recovered" in recovered, recovered
    assert len(records.lines(logging.WARNING, subject)) == 1
    await cluster.nodes[leader].client_write(b"after")  # (the cluster goes on as before)
    assert len(records.lines(logging.INFO, subject)) == 1
