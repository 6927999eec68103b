"""``examples/aiohttp_service``: three processes over the TCP transport serve a replicated
counter through aiohttp; followers forward writes and reads to the leader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from counter_cluster import LocalCluster
from counter_service import FORWARDED_HEADER, CounterStateMachine, incr_command

from openraft_py import RaftStateMachine
from openraft_py.storage import MemLogStore
from openraft_py.testing.suite import StoreHandle, run_state_machine_suite

from .conftest import EXAMPLES


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """Three node processes agreeing on a leader; every process is ended afterwards, also
    when the test fails."""
    c = await LocalCluster.start(tmp_path)
    try:
        yield c
    finally:
        codes = c.stop()
        assert all(p.poll() is not None for p in c.procs.values())
        assert codes == {1: 0, 2: 0, 3: 0}, f"a node did not stop cleanly: {codes}\n{c.logs()}"


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with session.request(method, url, **kw) as r:
        return r.status, await r.json()


async def test_three_processes_forward_to_the_leader(cluster: LocalCluster) -> None:
    """An increment sent to a follower is forwarded to the leader and applied once; one sent
    to the leader is served there; a linearizable read on any node gives the total; every
    node's local state converges to it."""
    leader = await cluster.wait_for_leader()
    follower = next(i for i in cluster.peers if i != leader)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        status, body = await _call(s, "POST", cluster.url(follower, "/counter/incr"), json={"by": 2})
        assert (status, body["value"], body["served_by"], body["forwarded_by"]) == (200, 2, leader, follower), body
        status, body = await _call(s, "POST", cluster.url(leader, "/counter/incr"), json={"by": 3})
        assert (status, body["value"], body["served_by"]) == (200, 5, leader) and "forwarded_by" not in body, body
        last_index = body["log_index"]
        for i in cluster.peers:
            status, body = await _call(s, "GET", cluster.url(i, "/counter"))
            assert (status, body["value"], body["served_by"]) == (200, 5, leader), (i, body)
        # Followers apply the increments too (their local, non-linearizable value).
        async with asyncio.timeout(10):
            while True:
                st = await cluster.statuses(s)
                if len(st) == 3 and all(v["last_applied"] >= last_index for v in st.values()):
                    break
                await asyncio.sleep(0.05)
        assert {i: v["local_value"] for i, v in st.items()} == {1: 5, 2: 5, 3: 5}
        # The application's own route still works.
        async with s.get(cluster.url(follower, "/")) as r:
            assert r.status == 200 and "hello" in await r.text()


async def test_no_second_hop(cluster: LocalCluster) -> None:
    """A request already forwarded once that reaches a non-leader gets 503, not another
    forward (no loops); a bad body gets 400 without reaching Raft."""
    leader = await cluster.wait_for_leader()
    follower = next(i for i in cluster.peers if i != leader)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        status, body = await _call(
            s, "POST", cluster.url(follower, "/counter/incr"), json={"by": 1}, headers={FORWARDED_HEADER: "9"}
        )
        assert status == 503 and body["served_by"] == follower, body
        status, body = await _call(s, "POST", cluster.url(follower, "/counter/incr"), data=b"not json")
        assert status == 400, body
        status, body = await _call(s, "GET", cluster.url(leader, "/counter"))
        assert (status, body["value"]) == (200, 0), body


async def test_counter_state_machine_suite() -> None:
    """The counter passes the state-machine conformance checks (the restart check is
    skipped: it lives in memory)."""

    async def view(sm: RaftStateMachine) -> int:
        assert isinstance(sm, CounterStateMachine)
        return sm.value

    async def builder() -> StoreHandle:
        return StoreHandle(MemLogStore(), CounterStateMachine(), normal_data=lambda i: incr_command(i), state_view=view)

    report = await run_state_machine_suite(builder)
    assert len(report) == 20 and [o.name for o in report if not o.ok] == []
    assert [o.name for o in report if o.skipped] == ["reopen_keeps_applied_state"]


def test_main_runs() -> None:
    """``python examples/aiohttp_service/main.py`` runs the demo: every node reads 5."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "aiohttp_service" / "main.py")], capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("'value': 5") == 4 and "exit codes {1: 0, 2: 0, 3: 0}" in out.stdout, out.stdout
