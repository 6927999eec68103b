"""``examples/aiohttp_service``: three processes over the TCP transport serve a replicated
counter through aiohttp; followers forward writes and reads to the leader."""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from counter_cluster import LocalCluster
from counter_service import (
    FORWARDED_HEADER,
    REQUEST_TIMEOUT,
    CounterOptions,
    CounterStateMachine,
    Peer,
    add_raft_counter,
    incr_command,
)

from openraft_py import Entry, LogId, Normal, RaftStateMachine
from openraft_py.storage import MemLogStore
from openraft_py.testing.suite import StoreHandle, run_state_machine_suite

from .conftest import EXAMPLES

MAX_BY = 2**63 - 1
"""The documented bound of an increment (the 64-bit range)."""


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


@pytest.mark.parametrize("to", ["leader", "follower"])
async def test_incr_takes_integers_only(cluster: LocalCluster, to: str) -> None:
    """An increment that is not a JSON integer within +-MAX_BY gets 400 naming the rule, from
    the leader or a follower, and changes nothing (1e999 was a 500 with a traceback in the
    node's log; 1.7 and true were counted as 1)."""
    leader = await cluster.wait_for_leader()
    node = leader if to == "leader" else next(i for i in cluster.peers if i != leader)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        for body in (
            b'{"by": 1e999}',
            b'{"by": 1.7}',
            b'{"by": true}',
            b'{"by": "2"}',
            b'{"by": null}',
            f'{{"by": {MAX_BY + 1}}}'.encode(),
            b"[1]",
            b"[" * 100_000,
        ):
            status, answer = await _call(s, "POST", cluster.url(node, "/counter/incr"), data=body)
            assert status == 400 and "an integer" in answer["error"], (body[:20], status, answer)
        status, answer = await _call(s, "POST", cluster.url(node, "/counter/incr"), json={"by": -MAX_BY})
        assert (status, answer["value"]) == (200, -MAX_BY), answer
        status, answer = await _call(s, "GET", cluster.url(leader, "/counter"))
        assert (status, answer["value"]) == (200, -MAX_BY), answer
    assert "Traceback" not in cluster.logs()


async def test_bodies_that_cannot_be_read_get_json_errors(cluster: LocalCluster) -> None:
    """On the leader and on a follower, an increment whose body its ``Content-Encoding``
    does not decode gets 400 and one over 1 MiB gets 413, both JSON, and nothing is counted:
    the first was a 500 "Server got itself in trouble" with a traceback in the node's log,
    the second a text/plain 413."""
    leader = await cluster.wait_for_leader()
    follower = next(i for i in cluster.peers if i != leader)
    # A connection per request: the node closes one whose body it did not read to the end.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=connector) as s:
        for node in (leader, follower):
            url = cluster.url(node, "/counter/incr")
            status, body = await _call(s, "POST", url, data=b'{"by": 1}', headers={"Content-Encoding": "gzip"})
            assert status == 400 and "could not be read" in body["error"] and body["served_by"] == node, body
            # Just over the limit: the node answers before reading the rest, and closes the
            # connection, which a client still sending a much larger body sees as a broken pipe.
            # (An io.BytesIO: given bytes over 1 MiB, aiohttp warns, a ResourceWarning.)
            big = io.BytesIO(b'{"by": 1, "pad": "' + b"x" * 1_048_576 + b'"}')
            status, body = await _call(s, "POST", url, data=big)
            assert status == 413 and "larger than 1048576 bytes" in body["error"], body
        status, body = await _call(s, "GET", cluster.url(leader, "/counter"))
        assert (status, body["value"]) == (200, 0), body
    assert "Traceback" not in cluster.logs()


async def test_a_leader_without_quorum_answers_in_time(tmp_path: Path) -> None:
    """The followers die: an increment sent to the leader gets 504 with ``outcome_unknown``
    within about ``REQUEST_TIMEOUT``, a read gets 503 or 504, and the leader then stops at
    once on SIGTERM with exit code 0. The increment waited for ever (Raft keeps a write of a
    leader cut off from its quorum waiting until the partition heals), and a SIGTERM took
    aiohttp's shutdown timeout of 60 s."""
    cluster = await LocalCluster.start(tmp_path)
    try:
        leader = await cluster.wait_for_leader()
        for i in cluster.peers:
            if i != leader:
                cluster.procs[i].send_signal(signal.SIGKILL)
                cluster.procs[i].wait(10)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT + 10)) as s:
            start = time.monotonic()
            status, body = await _call(s, "POST", cluster.url(leader, "/counter/incr"), json={"by": 1})
            assert time.monotonic() - start < REQUEST_TIMEOUT + 5
            assert status == 504 and body["outcome_unknown"] is True and body["served_by"] == leader, body
            status, body = await _call(s, "GET", cluster.url(leader, "/counter"))
            assert status in (503, 504) and "error" in body, body
        start = time.monotonic()
        cluster.procs[leader].send_signal(signal.SIGTERM)
        assert cluster.procs[leader].wait(15) == 0, cluster.logs()
        assert time.monotonic() - start < 10
    finally:
        cluster.stop()
    assert "Traceback" not in cluster.logs()


async def test_a_failed_start_stops_the_raft_node() -> None:
    """An application whose counter cannot start (its Raft address is in use) fails to start
    with that ``OSError``, and the Raft node it had started is stopped with it: it went on
    running in the process (its timers, its tasks), though nothing could reach it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        host, port = busy.getsockname()
        raft_addr = f"{host}:{port}"
        app = web.Application()
        node = add_raft_counter(app, CounterOptions(1, {1: Peer(raft_addr, "127.0.0.1:1")}, initialize=True))
        runner = web.AppRunner(app)
        try:
            with pytest.raises(OSError, match="address already in use"):
                await runner.setup()
            assert not node.raft.metrics.running
        finally:
            await runner.cleanup()


async def test_counter_apply_answers_none_to_malformed_entries() -> None:
    """Entry data that is not an increment by an integer applies as a no-op answering
    ``None``: an exception from ``apply`` would stop every node of the cluster."""
    sm = CounterStateMachine()
    bad = [
        b'{"op": "incr", "by": 1e999}',
        b'{"op": "incr", "by": 1.5}',
        b'{"op": "incr", "by": "3"}',
        b'{"op": "incr", "by": true}',
        b'{"op": "incr"}',
        b'{"op": "decr", "by": 1}',
        b"[" * 100_000,
        b"\xff",
        b"[1]",
        b"7",
    ]
    entries = [Entry(LogId(1, i), Normal(data)) for i, data in enumerate(bad, start=1)]
    assert await sm.apply(entries) == [None] * len(bad)
    assert sm.value == 0 and (await sm.applied_state())[0] == entries[-1].log_id
    assert await sm.apply([Entry(LogId(1, 99), Normal(incr_command(4)))]) == [4]


async def test_counter_apply_ignores_increments_past_the_bound() -> None:
    """An entry whose ``by`` is beyond +-MAX_BY applies as a no-op answering ``None``: a value
    grown past 4300 digits made every snapshot build fail (json refuses to print such an
    integer), stopping every node at its next snapshot."""
    sm = CounterStateMachine()
    huge = incr_command(int("9" * 4299))
    entries = [Entry(LogId(1, i), Normal(huge)) for i in range(1, 30)]
    entries.append(Entry(LogId(1, 30), Normal(incr_command(MAX_BY + 1))))
    assert await sm.apply(entries) == [None] * 30 and sm.value == 0
    assert await sm.apply([Entry(LogId(1, 31), Normal(incr_command(-MAX_BY)))]) == [-MAX_BY]
    snapshot = await sm.get_snapshot_builder().build_snapshot()
    assert snapshot.meta.last_log_id == LogId(1, 31) and str(-MAX_BY).encode() in snapshot.data.read()


def test_node_command_line_mistakes_are_usage_errors() -> None:
    """``main.py node`` with a malformed ``--peer`` (no HTTP address, a port that is not a
    number or out of range), a node id given twice, or an ``--id`` without its ``--peer``
    exits 2 with a usage message naming the mistake, not a traceback."""
    main = [sys.executable, str(EXAMPLES / "aiohttp_service" / "main.py"), "node", "--id", "1"]
    cases = {
        ("--peer", "1=127.0.0.1:7001"): "argument --peer",
        ("--peer", "1=127.0.0.1:x/127.0.0.1:y"): "argument --peer",
        ("--peer", "1=127.0.0.1:70001/127.0.0.1:8001"): "argument --peer",
        ("--peer", "1=127.0.0.1:7001/127.0.0.1:8001", "--peer", "1=127.0.0.1:7002/127.0.0.1:8002"): "given twice",
        ("--peer", "2=127.0.0.1:7002/127.0.0.1:8002"): "--id 1 has no --peer entry",
    }
    for extra, expected in cases.items():
        out = subprocess.run([*main, *extra], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and expected in out.stderr and "Traceback" not in out.stderr, (extra, out)


async def test_counter_state_machine_suite() -> None:
    """The counter passes the state-machine conformance checks (the two restart checks
    are skipped: it lives in memory; so is the check of the optional
    ``get_current_snapshot_meta``, which it does not have)."""

    async def view(sm: RaftStateMachine) -> int:
        assert isinstance(sm, CounterStateMachine)
        return sm.value

    async def builder() -> StoreHandle:
        return StoreHandle(MemLogStore(), CounterStateMachine(), normal_data=lambda i: incr_command(i), state_view=view)

    report = await run_state_machine_suite(builder)
    assert len(report) == 27 and [o.name for o in report if not o.ok] == []
    assert [o.name for o in report if o.skipped] == [
        "snapshot_meta_is_the_current_snapshots", "reopen_keeps_applied_state", "reopen_after_install_keeps_the_snapshot"
    ]


def test_main_runs() -> None:
    """``python examples/aiohttp_service/main.py`` runs the demo: every node reads 5."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "aiohttp_service" / "main.py")], capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("'value': 5") == 4 and "exit codes {1: 0, 2: 0, 3: 0}" in out.stdout, out.stdout
