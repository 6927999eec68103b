"""``GET /metrics`` parses as Prometheus text and agrees with the node's state; structured
logs carry node id, term and state on every line."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

import openraft_py
from openraft_py._core import USING_EXTENSIONS
from openraft_py.kv.logs import configure_logging
from openraft_py.kv.node import KvNode

from .kv_helpers import KvCluster, url

pytestmark = pytest.mark.timeout(60)


async def scrape(c: KvCluster, node: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` of one scrape."""
    assert c.session is not None
    async with c.session.get(url(node, "/metrics")) as r:  # type: ignore[arg-type]
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return m[name][tuple(sorted(labels.items()))]


async def test_metrics_parse_and_match_the_state(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = cluster.session
    assert s is not None
    for i in range(10):
        async with s.put(url(leader, f"/kv/k{i}"), data="v") as r:
            assert r.status == 200
    async with s.post(url(leader, "/kv/k0/cas"), json={"expected": "v", "value": "w"}) as r:
        assert r.status == 200
    for c in ("linearizable", "lease", "local"):
        async with s.get(url(leader, f"/kv/k1?consistency={c}")) as r:
            assert r.status == 200
    async with s.get(url(leader, "/nope")) as r:
        assert r.status == 404
    for method in ("PROPFIND", "MKCOL", "LOCK"):  # other methods share one label value
        async with s.request(method, url(leader, "/kv/k1")) as r:
            assert r.status == 405
    index = leader.raft.metrics.last_log_index  # type: ignore[union-attr]
    await cluster.wait_applied(index)
    await leader.raft.wait(5).metrics(  # type: ignore[union-attr]
        lambda m: m.replication is not None and all(v >= index for v in m.replication.values()), "replicated")
    m = await scrape(cluster, leader)
    rm = leader.raft.metrics  # type: ignore[union-attr]
    assert one(m, "openraft_node_id") == leader.id
    assert one(m, "openraft_build_info", version=openraft_py.__version__,
               extensions="true" if USING_EXTENSIONS else "false") == 1
    assert one(m, "openraft_running") == 1
    assert one(m, "openraft_term") == rm.current_term
    assert one(m, "openraft_state", state="Leader") == 1 and one(m, "openraft_state", state="Follower") == 0
    assert one(m, "openraft_leader_id") == leader.id
    assert one(m, "openraft_last_log_index") == index
    assert one(m, "openraft_committed_index") == index
    assert one(m, "openraft_applied_index") == index
    assert one(m, "openraft_snapshot_index") == -1 and one(m, "openraft_purged_index") == -1
    assert one(m, "openraft_voters") == 3 and one(m, "openraft_learners") == 0
    for f in cluster.followers(leader):
        assert one(m, "openraft_replication_matched_index", peer=str(f.id)) == index
        assert one(m, "openraft_replication_lag", peer=str(f.id)) == 0
    assert one(m, "openraft_kv_write_seconds_count", op="put") == 10
    assert one(m, "openraft_kv_write_seconds_count", op="cas") == 1
    assert one(m, "openraft_kv_write_seconds_bucket", op="put", le="+Inf") == 10
    assert one(m, "openraft_kv_write_seconds_sum", op="put") > 0
    for c in ("linearizable", "lease", "local"):
        assert one(m, "openraft_kv_read_seconds_count", consistency=c) == 1
    assert one(m, "openraft_kv_http_requests_total", route="/kv/{key}", method="PUT", status="200") == 10
    assert one(m, "openraft_kv_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert one(m, "openraft_kv_http_requests_total", route="unmatched", method="other", status="405") == 3
    # a follower's view
    f = cluster.followers(leader)[0]
    fm = await scrape(cluster, f)
    assert one(fm, "openraft_state", state="Follower") == 1
    assert one(fm, "openraft_leader_id") == leader.id
    assert one(fm, "openraft_applied_index") == index
    assert "openraft_replication_lag" not in fm  # a follower replicates to nobody


async def test_rpc_errors_counted_per_peer(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    down = cluster.followers(leader)[0]
    await down.stop()
    up = [n for n in cluster.nodes.values() if n is not down]

    async def errors_towards_down() -> tuple[float, set[str], set[str]]:
        """Summed over the running nodes (whichever leads or campaigns sends to ``down``)."""
        total, kinds, rpcs = 0.0, set(), set()
        for n in up:
            m = await scrape(cluster, n)
            for labels, v in m.get("openraft_rpc_errors_total", {}).items():
                d = dict(labels)
                if d["peer"] == str(down.id):
                    total += v
                    kinds.add(d["error"])
                    rpcs.add(d["rpc"])
        return total, kinds, rpcs

    for _ in range(100):  # heartbeats to the stopped peer fail within a few RPC timeouts
        if (await errors_towards_down())[0] > 0:
            break
        for n in up:
            await n.raft.trigger.heartbeat()  # type: ignore[union-attr]  # a no-op unless it leads
        await asyncio.sleep(0.05)
    total, kinds, rpcs = await errors_towards_down()
    assert total > 0
    assert kinds <= {"Unreachable", "Timeout"}
    assert rpcs <= {"append_entries", "vote"}
    # the cluster still commits with the other two
    new_leader = await cluster.wait_leader(among=[n.id for n in up])
    s = cluster.session
    assert s is not None
    async with s.put(url(new_leader, "/kv/x"), data="y") as r:
        assert r.status == 200, await r.text()


async def test_a_peer_that_left_the_membership_loses_its_error_series_and_last_error(cluster: KvCluster) -> None:
    """``openraft_rpc_errors_total{peer}`` and ``KvNode.last_rpc_error`` were kept for every
    peer the node ever had, removed ones included."""
    leader = await cluster.wait_leader()
    down = cluster.followers(leader)[0]
    await down.stop()
    up = [n for n in cluster.nodes.values() if n is not down]
    peer = str(down.id)

    async def series_towards_down(n: KvNode) -> int:
        m = await scrape(cluster, n)
        return sum(1 for labels in m.get("openraft_rpc_errors_total", {}) if dict(labels)["peer"] == peer)

    for _ in range(100):  # heartbeats to the stopped peer fail within a few RPC timeouts
        if down.id in leader.last_rpc_error and await series_towards_down(leader) > 0:
            break
        await leader.raft.trigger.heartbeat()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
    assert down.id in leader.last_rpc_error and await series_towards_down(leader) > 0
    await leader.change_members([n.id for n in up], retain=False)
    for _ in range(100):  # the removal commits, then each node forgets the peer
        if all(down.id not in n.last_rpc_error for n in up) and all([await series_towards_down(n) == 0 for n in up]):
            break
        await asyncio.sleep(0.05)
    for n in up:
        assert down.id not in n.last_rpc_error, n.id
        assert await series_towards_down(n) == 0, n.id
    # Nothing sent to it since (a call made before that fails now is not counted either).
    s = cluster.session
    assert s is not None
    async with s.put(url(leader, "/kv/x"), data="y") as r:
        assert r.status == 200, await r.text()
    await leader.raft.trigger.heartbeat()  # type: ignore[union-attr]
    assert await series_towards_down(leader) == 0 and down.id not in leader.last_rpc_error


class _Metrics:
    def __init__(self) -> None:
        from openraft_py.types import ServerState

        self.id = 7
        self.current_term = 4
        self.state = ServerState.FOLLOWER


def test_json_logs_carry_node_term_state() -> None:
    buf = io.StringIO()
    source_value: list[object] = [None]
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("json", "info", lambda: source_value[0], node_id=7, stream=buf)
        logging.getLogger("x.y").info("before %s", "start")
        source_value[0] = _Metrics()
        logging.getLogger("x.y").warning("after")
        logging.getLogger("x.y").debug("not shown")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["node_id"] == 7 and lines[0]["term"] is None and lines[0]["state"] is None
    assert lines[0]["msg"] == "before start" and lines[0]["level"] == "INFO" and lines[0]["logger"] == "x.y"
    assert lines[1]["node_id"] == 7 and lines[1]["term"] == 4 and lines[1]["state"] == "Follower"
    assert lines[1]["ts"].endswith("Z")


def test_text_logs_carry_node_term_state() -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("text", "DEBUG", _Metrics, stream=buf)
        logging.getLogger("x").debug("hello")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert "[n7 T4 Follower] x: hello" in buf.getvalue()
    with pytest.raises(ValueError):
        configure_logging("xml", "INFO", _Metrics, stream=buf)
    with pytest.raises(ValueError):
        configure_logging("text", "LOUD", _Metrics, stream=buf)


def test_text_logs_write_control_characters_as_escapes() -> None:
    """A text log line is one line: what a message quotes from a request (an HTTP path,
    which the client percent-encodes as it likes: ``%0A`` is a newline) could start a line
    of its own that read as another node's record, or drive the terminal (``\\x1b``). A
    traceback still follows on lines of its own."""
    buf = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("text", "INFO", _Metrics, stream=buf)
        logging.getLogger("x").info("PUT %s: cut short", "/kv/a\n2026-12-05T00:00:00.000Z ERROR [n9 T9 Leader] forged\r\x1b[2J\tend")
        try:
            raise ValueError("first\nsecond")
        except ValueError:
            logging.getLogger("x").exception("failed on\nline two")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith(
        "[n7 T4 Follower] x: PUT /kv/a\\n2026-12-05T00:00:00.000Z ERROR [n9 T9 Leader] forged\\r\\x1b[2J\tend: cut short")
    assert lines[1].endswith("[n7 T4 Follower] x: failed on\\nline two")
    assert lines[2] == "Traceback (most recent call last):" and lines[-2:] == ["ValueError: first", "second"]
    assert all(not line.startswith("2026-12-05T00:00:00.000Z") for line in lines)


async def test_a_request_path_cannot_forge_a_log_line(cluster: KvCluster) -> None:
    """A PUT whose body is cut short is logged with its (decoded) path: ``%0A`` in it made
    the rest of the path a line of its own, shaped as the client liked."""
    buf = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    leader = await cluster.wait_leader()
    try:
        configure_logging("text", "INFO", lambda: leader.raft.metrics if leader.raft else None, stream=buf)
        host, port = leader.opts.http_addr.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"PUT /kv/a%0A2026-12-05T00:00:00.000Z%20ERROR%20forged HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\nabc")
        await writer.drain()
        writer.close()
        for _ in range(500):  # the server notices the cut and logs it
            if "could not be read" in buf.getvalue():
                break
            await asyncio.sleep(0.01)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    [line] = [ln for ln in buf.getvalue().splitlines() if "PUT /kv/a" in ln]
    assert "PUT /kv/a\\n2026-12-05T00:00:00.000Z ERROR forged: the request body could not be read" in line
    assert not any(ln.startswith("2026-12-05T00:00:00.000Z") for ln in buf.getvalue().splitlines())
