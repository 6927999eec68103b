"""Three ``serve`` processes on loopback (RocksDB, TCP transport, HTTP API), driven only
through HTTP: init, writes through any node with redirects followed, SIGKILL the leader (a
new leader serves writes within 1 s with the default timeouts), restart the killed node from
its data directory (it catches up), no acknowledged write lost, JSON logs, graceful SIGTERM.
Every process is killed and every directory removed, also when the test fails."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import pytest

from openraft_py.testing.proc_cluster import free_port

from .serve_procs import ServeProc, init_cluster, put, serving, status, until

pytestmark = pytest.mark.timeout(90)


async def test_three_serve_processes_survive_a_leader_kill() -> None:
    root = tempfile.mkdtemp(prefix="kv-proc-")
    procs = {i: ServeProc(i, root) for i in (1, 2, 3)}
    acked: dict[str, str] = {}
    try:
        for p in procs.values():
            p.start()
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, list(procs.values()), 20)

            async def agreed_leader(ids: list[int]) -> int | None:
                sts = [await status(s, procs[i]) for i in ids]
                leaders = {st["leader_id"] for st in sts if st}
                if len(leaders) == 1 and None not in leaders and all(sts):
                    lid = leaders.pop()
                    return lid if lid in ids else None
                return None

            await until(lambda: agreed_leader([1, 2, 3]), 10, "a leader")
            # writes through every node, redirects followed; one that timed out is sent again
            # (an election under load can take one)
            for i in range(60):
                await until(lambda i=i: put(s, procs[1 + i % 3], f"k{i}", f"v{i}"), 30, f"write k{i} acknowledged")
                acked[f"k{i}"] = f"v{i}"
            leader = await until(lambda: agreed_leader([1, 2, 3]), 10, "a leader after the writes")
            async with s.get(procs[1 + (leader % 3)].url("/kv/k7")) as r:  # a follower, linearizable
                assert r.status == 200 and await r.text() == "v7"
                assert [h.status for h in r.history] == [307]
            term0 = (await status(s, procs[leader]))["term"]  # type: ignore[index]

            # SIGKILL the leader; a survivor must serve writes within 1 s
            survivors = [procs[i] for i in procs if i != leader]
            procs[leader].kill()
            t0 = time.monotonic()
            n = 0
            while True:
                target = survivors[n % 2]
                n += 1
                if await put(s, target, "after-kill", "yes", timeout=0.5) is not None:
                    took = time.monotonic() - t0
                    acked["after-kill"] = "yes"
                    break
                assert time.monotonic() - t0 < 10, "no leader served writes within 10 s"
                await asyncio.sleep(0.01)
            print(f"new leader served a write {took * 1000:.0f} ms after SIGKILL of the old leader")
            assert took < 1.0, f"a new leader served writes only {took:.3f}s after the kill"
            new_leader = await until(lambda: agreed_leader([p.id for p in survivors]), 5, "the new leader")
            assert new_leader != leader
            assert (await status(s, procs[new_leader]))["term"] > term0  # type: ignore[index]

            # concurrent writers while the old leader is down
            async def writer(w: int) -> None:
                for i in range(25):
                    key, value = f"w{w}-{i}", f"x{w}-{i}"
                    if await put(s, survivors[(w + i) % 2], key, value) is not None:
                        acked[key] = value

            await asyncio.gather(*(writer(w) for w in range(4)))
            assert len(acked) >= 61 + 90  # nearly all acknowledged with a stable leader

            # restart the old leader from its data directory: it catches up
            procs[leader].start()
            # Every acknowledged write is at or below the committed index of the survivor that
            # acknowledged it (never lowered): the higher of the two covers them all, also when
            # the leadership moved between them (new_leader, a follower now, may lag).
            survivor_sts = [await status(s, p) for p in survivors]
            assert all(survivor_sts), survivor_sts
            target_index = max(st["committed_index"] for st in survivor_sts if st)

            async def caught_up() -> bool:
                # The three agree on one leader, not necessarily new_leader: an election under
                # load (or a transfer) may move the leadership while the restarted node catches up.
                agreed = await agreed_leader([1, 2, 3])
                st = await serving(s, procs[leader])
                if not (agreed is not None and st and st["applied_index"] is not None
                        and st["applied_index"] >= target_index and st["leader_id"] == agreed
                        and st["state"] == ("Leader" if agreed == leader else "Follower")):
                    return False
                # The survivors too: the local reads below are of every node.
                sts = [await status(s, p) for p in survivors]
                return all(x and x["applied_index"] is not None and x["applied_index"] >= target_index for x in sts)

            await until(caught_up, 20, "the restarted node catching up")
            # every acknowledged write is on every node
            for p in procs.values():
                for key, value in acked.items():
                    async with s.get(p.url(f"/kv/{key}?consistency=local")) as r:
                        assert r.status == 200, (p.id, key, r.status)
                        assert await r.text() == value
            # /metrics of the restarted node
            async with s.get(procs[leader].url("/metrics")) as r:
                text = await r.text()
            from prometheus_client.parser import text_string_to_metric_families

            names = {f.name for f in text_string_to_metric_families(text)}
            assert {"openraft_term", "openraft_applied_index", "openraft_state"} <= names

        # graceful stop: exit code 0, JSON logs with node, term and state on every line
        for p in procs.values():
            p.kill(signal.SIGTERM)
        for p in procs.values():
            assert p.proc is not None
            assert await asyncio.to_thread(p.proc.wait, 20) == 0
        for p in procs.values():
            lines = p.logs()
            assert lines and all({"ts", "level", "node_id", "term", "state", "msg"} <= set(x) for x in lines)
            assert all(x["node_id"] == p.id for x in lines)
            assert any(x["msg"] == "stopped" for x in lines)
    finally:
        for p in procs.values():
            p.kill()
            if p.proc is not None:
                try:
                    p.proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
                    pass
        shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(root)


async def test_sighup_stops_serve_gracefully_unless_started_ignoring_it() -> None:
    """SIGHUP (the terminal ``serve`` ran in was closed, or a ``kill -HUP`` meant as a
    reload) stops the node as SIGTERM does: it logs why, closes its stores and exits 0. It
    ended the process at once (killed by the signal, nothing logged, a request in flight
    cut off with its outcome unknown). Started with SIGHUP ignored (``nohup``), the node
    runs on through one, and SIGTERM stops it."""
    root = tempfile.mkdtemp(prefix="kv-hup-")
    p = ServeProc(1, root)
    try:
        p.start()
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, [p])
            await until(lambda: put(s, p, "k", "v"), 30, "a write")
            p.kill(signal.SIGHUP)
            assert p.proc is not None
            assert await asyncio.to_thread(p.proc.wait, 20) == 0
            msgs = [x["msg"] for x in p.logs()]
            assert "stopping (SIGHUP)" in msgs and "stopped" in msgs, msgs

            p.start(ignore_sighup=True)
            await until(lambda: put(s, p, "k", "after a restart"), 30, "a write after the restart")
            p.kill(signal.SIGHUP)
            await until(lambda: put(s, p, "k", "after a SIGHUP"), 30, "a write after the SIGHUP")
            assert p.proc.poll() is None
            p.kill(signal.SIGTERM)
            assert await asyncio.to_thread(p.proc.wait, 20) == 0
    finally:
        p.kill()
        if p.proc is not None:
            p.proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


SNAPSHOT_EVERY_50 = ("--raft-config", '{"snapshot_policy": {"logs_since_last_n": 50}}')
"""``serve`` flags: a snapshot every 50 entries, so that a few writes open new files."""


async def _writes_through_two_snapshots(s: aiohttp.ClientSession, p: ServeProc) -> None:
    """120 writes through ``p``, each acknowledged: two snapshot builds (the second up to
    index 99), each opening new files; the node still runs and has applied them.

    The second build runs in the background after the write that triggers it, and may still
    be running at the last acknowledgement (the pure-Python build, on a loaded machine,
    showed ``snapshot_index`` 49 then): it is waited for, not assumed."""
    for i in range(120):
        assert await put(s, p, f"k{i % 10}", "v" * 100, timeout=10) is not None, f"write {i}: {p.logs()[-3:]}"
    assert p.proc is not None and p.proc.poll() is None

    async def both_snapshots_built() -> dict[str, Any] | None:
        st = await status(s, p)
        return st if st is not None and st["snapshot_index"] >= 99 and st["applied_index"] >= 120 else None

    await until(both_snapshots_built, 30, "the snapshot up to index 99 and the 120 writes applied")
    assert p.proc.poll() is None


def _close_and_remove(p: ServeProc, root: str, conns: list[asyncio.StreamWriter]) -> None:
    """Close the test's connections, kill ``p`` and remove ``root``."""
    for w in conns:
        w.close()
    p.kill()
    if p.proc is not None:
        p.proc.wait(10)
    shutil.rmtree(root, ignore_errors=True)


async def test_silent_connections_do_not_take_the_node_s_last_file_descriptors() -> None:
    """A burst of HTTP connections that send nothing (a client leaking its connections, a
    scanner) does not stop the node: it holds at most half its descriptor limit of them
    (``MAX_HTTP_CONNECTIONS``) and answers a new one 503, so its stores still open files.
    250 such connections to a ``serve`` limited to 256 descriptors made its next snapshot
    build fail ("Too many open files") and the node stopped."""
    root = tempfile.mkdtemp(prefix="kv-fds-")
    p = ServeProc(1, root)
    conns: list[asyncio.StreamWriter] = []
    try:
        p.start(extra_args=SNAPSHOT_EVERY_50, max_files=256)
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, [p])
            host, port = p.http_addr.rsplit(":", 1)
            for _ in range(250):
                conns.append((await asyncio.open_connection(host, int(port)))[1])
            await _writes_through_two_snapshots(s, p)
            async with aiohttp.ClientSession() as fresh:  # a new connection: over the limit
                async with fresh.get(p.url("/cluster/status")) as r:
                    assert r.status == 503, await r.text()
                    assert "HTTP connections, its limit" in (await r.json())["error"]
    finally:
        _close_and_remove(p, root, conns)


async def test_silent_connections_to_both_ports_under_a_low_descriptor_limit_do_not_stop_the_node() -> None:
    """Under ``ulimit -n 64`` the ports' shares of the limit (half, a quarter) did not count
    the 40 descriptors the node holds itself: 36 HTTP and 20 raft connections that sent
    nothing took its last ones, and it stopped at its first snapshot build ("Too many open
    files", within 50 writes). Its limits now count them (``http_api.connection_limits``),
    it says so at start, and the writes and snapshot builds go on."""
    root = tempfile.mkdtemp(prefix="kv-lowfds-")
    p = ServeProc(1, root)
    conns: list[asyncio.StreamWriter] = []
    try:
        p.start(extra_args=SNAPSHOT_EVERY_50, max_files=64)
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, [p])
            for addr, n in ((p.http_addr, 36), (p.raft_addr, 20)):
                host, port = addr.rsplit(":", 1)
                for _ in range(n):
                    try:
                        conns.append((await asyncio.open_connection(host, int(port)))[1])
                    except OSError:
                        pass
            await _writes_through_two_snapshots(s, p)
        warned = [r for r in p.logs() if "the limit of open files (64, ulimit -n)" in str(r.get("msg"))]
        assert len(warned) == 1, warned
    finally:
        _close_and_remove(p, root, conns)


def test_serve_refuses_a_limit_of_open_files_too_low_for_a_node() -> None:
    """``serve`` under ``ulimit -n`` below ``MIN_OPEN_FILES`` (64) says so in one line and
    exits 2: under 12 it ended in two tracebacks of uvloop setting up its loop ("Too many
    open files", then "this event loop is already running"), under 16 to 36 in another
    store error each time, and from 40 to 63 it started with a few descriptors to spare."""
    root = tempfile.mkdtemp(prefix="kv-minfds-")
    try:
        for limit in (12, 63):
            p = ServeProc(1, root)

            def low(limit: int = limit) -> None:  # in the child
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

            r = subprocess.run([sys.executable, "-m", "openraft_py.kv.server", "--id", "1", "--raft-addr", p.raft_addr,
                                "--http-addr", p.http_addr, "--data-dir", p.data_dir], capture_output=True, text=True,
                               timeout=30, preexec_fn=low)
            assert r.returncode == 2, (limit, r.returncode, r.stderr[-2000:])
            assert r.stderr.strip().splitlines() == [
                f"openraft-py serve: error: the limit of open files is {limit} (ulimit -n): a node needs at least 64 "
                "(its stores, its two ports, its peers); raise it (ulimit -n 1024)"], r.stderr
            assert not os.path.exists(p.data_dir)  # nothing made
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_silent_raft_connections_do_not_take_the_node_s_last_file_descriptors() -> None:
    """The same on the raft port: 250 connections that send no hello, each reopened soon
    after the server closes it (a stranger, a misconfigured peer), to a ``serve`` limited to
    256 descriptors. The server held up to ``max_connections`` (256) of them, so they took
    the node's last descriptors: its snapshot build failed ("Too many open files") and the
    node stopped within 50 writes. It now holds at most a quarter of the limit (64: the
    default ``TcpServer`` limit, ``tcp_connection_limit``; ``serve`` fewer, a quarter of what
    it leaves beyond the node's own descriptors: ``http_api.connection_limits``), says so
    once, and goes on."""
    root = tempfile.mkdtemp(prefix="kv-rfds-")
    p = ServeProc(1, root)
    conns: list[asyncio.StreamWriter] = []
    holding = True

    async def hold(host: str, port: int) -> None:  # one connection open at a time, never a hello
        while holding:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            conns.append(writer)
            try:
                await reader.read()  # until the server closes it
            except OSError:
                pass
            writer.close()
            await asyncio.sleep(0.2)

    holders: list[asyncio.Task[None]] = []
    try:
        p.start(extra_args=SNAPSHOT_EVERY_50, max_files=256)
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, [p])
            host, port = p.raft_addr.rsplit(":", 1)
            holders = [asyncio.create_task(hold(host, int(port))) for _ in range(250)]
            await until(lambda: _async(len(conns) >= 250), 30, "250 connections to the raft port")
            await _writes_through_two_snapshots(s, p)
        limit = [r for r in p.logs() if "too many connections (" in str(r.get("msg"))]
        assert 1 <= len(limit) <= 2, limit  # logged once for the host (FailureLog), not per connection
    finally:
        holding = False
        for t in holders:
            t.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        _close_and_remove(p, root, conns)


async def _async(value: Any) -> Any:
    return value


def test_serve_refuses_bad_flags_and_reports_start_failures() -> None:
    root = tempfile.mkdtemp(prefix="kv-proc-")
    holder = None
    try:
        base = [sys.executable, "-m", "openraft_py.kv.server", "--id", "1", "--data-dir", os.path.join(root, "n1")]
        # an unusable address: exit 2, one line on stderr
        r = subprocess.run(base + ["--raft-addr", "nope", "--http-addr", "127.0.0.1:1"], capture_output=True,
                           timeout=30)
        assert r.returncode == 2
        assert len(r.stderr.decode().strip().splitlines()) == 1 and b"raft-addr" in r.stderr
        # a missing flag: argparse's exit 2
        r = subprocess.run(base, capture_output=True, timeout=30)
        assert r.returncode == 2 and b"required" in r.stderr
        # the HTTP port taken by another socket: the node does not start, exit 1, logged
        import socket

        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        r = subprocess.run(base + ["--raft-addr", f"127.0.0.1:{free_port()}", "--http-addr", f"127.0.0.1:{taken}",
                                   "--log-format", "json"], capture_output=True, timeout=30)
        assert r.returncode == 1
        *logged, last = [x for x in r.stderr.decode().splitlines() if x.strip()]
        lines = [json.loads(x) for x in logged]
        assert any("could not start" in x["msg"] and x["level"] == "ERROR" for x in lines)
        assert last.startswith("openraft-py serve: error: the node could not start: ") and "--http-addr" in last
    finally:
        if holder is not None:
            holder.close()
        shutil.rmtree(root, ignore_errors=True)


async def test_init_cluster_names_a_node_that_exited_instead_of_waiting_for_it() -> None:
    """The helpers' own contract (``serving``): a node whose process exited (here: its HTTP
    port taken, as a port another test's node holds can be) fails the wait at once with its
    exit status and the reason from its log, not as a timeout that says nothing."""
    import socket

    root = tempfile.mkdtemp(prefix="kv-proc-")
    proc = ServeProc(1, root)
    holder = socket.socket()
    try:
        host, port = proc.http_addr.rsplit(":", 1)
        holder.bind((host, int(port)))
        holder.listen()
        proc.start()
        async with aiohttp.ClientSession() as s:
            with pytest.raises(AssertionError) as failed:
                await init_cluster(s, [proc], timeout=60)
        message = str(failed.value)
        assert message.startswith("node 1 exited with status 1"), message
        assert "--http-addr" in message and "cannot listen there" in message, message
    finally:
        holder.close()
        proc.kill()
        if proc.proc is not None:
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
