"""``openraft_py.kv.client.KvClient``: redirects followed to the leader, retries within the
deadline, and the ok / fail / info classification a history checker relies on (a write that
may have reached a node is never reported as failed, nor retried)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from openraft_py.kv import cli
from openraft_py.kv.client import (
    MAX_KEY_BYTES,
    NO_CLUSTER_GRACE,
    ClientError,
    KvClient,
    Outcome,
    new_session,
    parse_endpoints,
)
from openraft_py.testing.proc_cluster import free_port

from .kv_helpers import KvCluster

pytestmark = pytest.mark.timeout(60)


def test_parse_endpoints() -> None:
    assert parse_endpoints("a:1, http://b:2/ ") == ["a:1", "b:2"]
    assert parse_endpoints("HTTP://a:1//") == ["a:1"]  # (a scheme is case-insensitive, RFC 3986)
    assert parse_endpoints(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    for bad in ("", ",", "a:1,", ",a:1", "a:1,,b:2", "a:1, ,b:2", "a", "a:", ":1", "a:0", "a:70000", "a:x", "a b:1", "user@h:1", "h\r\n:1", "::1:5"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)
    # an https:// endpoint was taken as the host "https:" (a connect error after the deadline)
    with pytest.raises(ValueError, match="plain HTTP"):
        parse_endpoints("https://127.0.0.1:8443")
    assert parse_endpoints("[::1]:5,localhost:7") == ["[::1]:5", "localhost:7"]
    # An empty item (an endpoint left out) is named, with where it is.
    with pytest.raises(ValueError, match=r"^endpoint 2 of 3 is empty \(a comma too many, or an endpoint left out\)$"):
        parse_endpoints("http://a:1/,,http://b:2")
    with pytest.raises(ValueError, match=r"^endpoint 3 of 3 is empty"):
        parse_endpoints(["a:1,b:2", " "])
    # A refused endpoint is quoted as given, not as it was cut down to.
    with pytest.raises(ValueError, match=r"^endpoint 'http://a:1/x' is not host:port$"):
        parse_endpoints("http://a:1/x")


    with pytest.raises(TypeError, match="an endpoint is a 'host:port' string, got int 123"):
        parse_endpoints([123])  # type: ignore[list-item]


async def test_a_caller_s_wrong_argument_fails_at_once_sending_nothing() -> None:
    """Checked before any attempt (the endpoint does not exist: an attempt would take the
    whole deadline to fail)."""
    async with KvClient(["127.0.0.1:1"], deadline=30) as c:
        calls: list[tuple[str, Any]] = [
            ("put", lambda: c.put("k", 5)),
            ("put", lambda: c.put("k", b"v")),
            ("cas", lambda: c.cas("k", 1, "v")),
            ("cas", lambda: c.cas("k", None, b"v")),
        ]
        for _, call in calls:
            with pytest.raises(TypeError):
                await asyncio.wait_for(call(), 2)
        with pytest.raises(ValueError, match="consistency must be one of linearizable, lease, local, got 'strong'"):
            await asyncio.wait_for(c.get("k", consistency="strong"), 2)
        for kw in ({"deadline": -1}, {"deadline": 0}, {"attempt_timeout": 0}, {"deadline": float("inf")}):
            with pytest.raises(ValueError, match=r"must be (above 0|finite)"):
                await asyncio.wait_for(c.put("k", "v", **kw), 2)
        for kw in ({"deadline": "5"}, {"attempt_timeout": True}):
            with pytest.raises(TypeError, match="must be a number"):
                await asyncio.wait_for(c.put("k", "v", **kw), 2)
        for key_call in (lambda: c.put(5, "v"), lambda: c.get(b"k"), lambda: c.delete(None), lambda: c.cas(1, None, "v")):
            with pytest.raises(TypeError, match="a key is a str"):
                await asyncio.wait_for(key_call(), 2)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            await asyncio.wait_for(c.get(""), 2)
        for bad_id, error in (("4", TypeError), (4.0, TypeError), (True, TypeError), (-1, ValueError)):
            with pytest.raises(error, match="learner id"):
                await asyncio.wait_for(c.remove_learner(bad_id), 2)  # type: ignore[arg-type]


async def test_a_large_wrong_argument_is_quoted_in_part_and_a_long_key_is_not_sent() -> None:
    """A value of 16 MiB passed as bytes (a file read in binary mode) made a TypeError
    holding its whole repr, more than 16 MiB of message; a key over ``MAX_KEY_BYTES`` went
    out and came back as the HTTP server's own 400 ("Got more than 13312 bytes when
    reading"), which names no limit. Nothing is sent either way (the endpoint does not
    exist: an attempt would take the whole deadline)."""
    big = b"v" * (16 << 20)
    async with KvClient(["127.0.0.1:1"], deadline=30) as c:
        for call in (lambda: c.put("k", big), lambda: c.cas("k", None, big), lambda: c.cas("k", big, "v"),
                     lambda: c.put(big, "v")):
            with pytest.raises(TypeError) as info:
                await asyncio.wait_for(call(), 2)  # type: ignore[arg-type]
            assert len(str(info.value)) < 200 and f"... ({16 << 20} bytes)" in str(info.value)
        for key in ("k" * (MAX_KEY_BYTES + 1), "\u20ac" * 1366):  # (1366 three-byte characters: 4098 bytes)
            for key_call in (c.put(key, "v"), c.get(key), c.delete(key), c.cas(key, None, "v")):
                with pytest.raises(ValueError, match=f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8, got") as e:
                    await asyncio.wait_for(key_call, 2)
                assert len(str(e.value)) < 200
        with pytest.raises(ValueError, match="got 4097"):
            await asyncio.wait_for(c.get("\u20ac" * 1365 + "kk"), 2)


@pytest.mark.parametrize("kw,error", [
    ({"deadline": "5"}, TypeError), ({"deadline": True}, TypeError), ({"deadline": float("nan")}, ValueError),
    ({"deadline": float("inf")}, ValueError), ({"attempt_timeout": -1}, ValueError),
    ({"connect_timeout": 0}, ValueError), ({"connect_timeout": None}, TypeError),
    ({"backoff": -1}, ValueError), ({"backoff": float("nan")}, ValueError), ({"max_backoff": -0.5}, ValueError),
    ({"backoff": "0.1"}, TypeError), ({"max_redirects": 2.5}, TypeError), ({"max_redirects": 0}, ValueError),
])
def test_the_client_s_settings_are_checked(kw: dict[str, Any], error: type[Exception]) -> None:
    """A negative ``backoff`` used to be taken: the retry loop then ran without pausing, the
    pause doubling towards minus infinity until ``OverflowError`` ended the call."""
    with pytest.raises(error, match=next(iter(kw))):
        KvClient(["127.0.0.1:1"], **kw)


def test_backoff_above_max_backoff_is_refused() -> None:
    """``backoff`` (the first pause) over ``max_backoff`` (the longest) contradicts itself:
    the first pause was ``backoff`` and the second ``max_backoff``, shorter. Refused as
    ``TcpNetworkFactory``'s ``backoff_min > backoff_max`` is; equal is fine, and so is
    ``backoff=0`` (no pause) with any ``max_backoff``."""
    with pytest.raises(ValueError, match=r"^backoff=1\.0 must be at most max_backoff=0\.5"):
        KvClient(["127.0.0.1:1"], backoff=1.0)  # (max_backoff's default is 0.5)
    with pytest.raises(ValueError, match=r"^backoff=0\.3 must be at most max_backoff=0\.2"):
        KvClient(["127.0.0.1:1"], backoff=0.3, max_backoff=0.2)
    for ok in ({"backoff": 0.5, "max_backoff": 0.5}, {"backoff": 0.0, "max_backoff": 0.0}, {"backoff": 2.0, "max_backoff": 5.0}):
        KvClient(["127.0.0.1:1"], **ok)

async def test_a_session_without_the_trace_hook_is_refused() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        with pytest.raises(ValueError, match="new_session"):
            KvClient(["127.0.0.1:1"], session=s)


async def test_writes_through_a_follower_follow_the_redirect(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    async with KvClient([follower.opts.http_addr]) as c:
        r = await c.put("a/b", "one")  # a key with a slash travels percent-encoded
        assert r.outcome is Outcome.OK and r.status == 200 and r.redirects == 1
        assert r.node == leader.opts.http_addr and c.leader == leader.opts.http_addr
        index = r.json()["index"]
        r = await c.put("a/b", "two")
        assert r.ok and r.redirects == 0 and r.json()["index"] > index  # remembered the leader
        assert (await c.get("a/b")).value == "two"
        assert (await c.get("a/b", "lease")).value == "two"
        assert (await c.get("missing")).value is None  # 404: a completed read of an absent key
        r = await c.cas("a/b", "one", "three")
        assert r.ok and r.json() == {"ok": False, "current": "two"}
        r = await c.cas("a/b", "two", None)
        assert r.ok and r.json() == {"ok": True, "current": None}
        assert (await c.delete("a/b")).ok
        # a local read is answered by the node asked, no redirect
        await cluster.wait_applied(r.json().get("index", 0) or 0)
        r = await c.get("a/b", "local", endpoint=follower.opts.http_addr, follow=False)
        assert r.ok and r.node == follower.opts.http_addr and r.redirects == 0


async def test_the_keys_dot_and_dot_dot_are_keys_like_any_other(cluster: KvCluster) -> None:
    """``.`` and ``..`` travel as ``%2E`` and ``%2E%2E`` and stay so through a redirect.
    Written as dots, the URL dropped them as dot-segments (``/kv/.`` became ``/kv/``): every
    verb failed with the router's 404 "Not Found" (``cas`` of ``.`` with a 405), though the
    service takes them. Other keys and paths are sent as before."""
    leader = await cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    async with KvClient([follower.opts.http_addr]) as c:
        for key in (".", "..", "...", "./..", "%2E"):
            c.leader = None  # every write goes through the follower's redirect
            r = await c.put(key, f"v{key}")
            assert r.ok and r.redirects == 1, (key, r)
            assert (await c.get(key)).value == f"v{key}", key
            r = await c.cas(key, f"v{key}", "w")
            assert r.ok and r.json() == {"ok": True, "current": "w"}, (key, r)
            assert (await c.get(key, "local", endpoint=follower.opts.http_addr, follow=False)).ok
        assert leader.sm is not None
        assert {k: leader.sm.get(k) for k in (".", "..", "...", "./..", "%2E")} == dict.fromkeys(
            (".", "..", "...", "./..", "%2E"), "w")
        assert (await c.delete("..")).ok and (await c.get("..")).value is None
        assert (await c.get(".")).value == "w"
        r = await c.request("GET", "/kv/a b?consistency=local")  # a path not yet encoded still is
        assert r.ok and r.value is None


async def test_bad_requests_fail_at_once_and_change_nothing(cluster: KvCluster) -> None:
    await cluster.wait_leader()
    async with KvClient([n.opts.http_addr for n in cluster.nodes.values()]) as c:
        t = time.monotonic()
        with pytest.raises(ValueError, match="consistency"):  # the client's own check
            await c.get("k", consistency="sometimes")
        r = await c.request("GET", "/kv/k?consistency=sometimes")  # the service's
        assert r.outcome is Outcome.FAIL and r.status == 400 and "consistency" in (r.error or "")
        r = await c.request("POST", "/cluster/members", json={"voters": "all"})
        assert r.outcome is Outcome.FAIL and r.status == 400 and r.retries == 0
        assert time.monotonic() - t < 5.0
        with pytest.raises(ClientError):
            r.raise_for_outcome()
        with pytest.raises(ValueError):
            _ = r.value


async def test_an_unreachable_cluster_fails_by_the_deadline() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    async with KvClient(dead, deadline=0.5) as c:
        t = time.monotonic()
        r = await asyncio.wait_for(c.put("k", "v"), 5.0)
        assert r.outcome is Outcome.FAIL and "cannot connect" in (r.error or "")
        assert r.retries >= 2  # both endpoints tried
        assert 0.4 < time.monotonic() - t < 3.0
        with pytest.raises(TimeoutError):
            await c.find_leader(timeout=0.3)


async def test_a_repeated_dead_endpoint_does_not_hide_the_next_one(cluster: KvCluster) -> None:
    """``[dead, dead, live]``: each endpoint is tried once in turn. The client moved on to the
    entry after the first occurrence of the one that failed, which was the dead one again:
    the call retried it until the deadline and never reached ``live``."""
    dead = f"127.0.0.1:{free_port()}"
    live = cluster.nodes[1].opts.http_addr
    async with KvClient([dead, f"http://{dead}/", live], deadline=5.0) as c:
        r = await asyncio.wait_for(c.put("k", "v"), 10.0)
        assert r.ok, r
        assert r.retries == 1, r
        assert c.endpoints == [dead, live]


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    """``app`` (an aiohttp application: another HTTP server than a service node) served on a
    free loopback port for the block; yields its ``host:port``."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _no_leader_503() -> Any:
    """A node's 503 between elections: no leader known, in a cluster (no ``initialized``)."""
    from aiohttp import web

    return web.json_response({"error": "no leader is known; retry later", "leader_id": None}, status=503)


def _in_no_cluster_503(nid: int) -> Any:
    """Node ``nid``'s 503 while it is in no cluster yet (``"initialized": false``)."""
    from aiohttp import web

    return web.json_response({"error": f"no leader is known: node {nid} is not in a cluster yet (initialize one "
                                       "with 'openraft-py cluster init' or POST /cluster/init, or add this node "
                                       "to one)", "leader_id": None, "initialized": False}, status=503)


async def test_a_call_ends_after_the_grace_when_every_endpoint_is_in_no_cluster() -> None:
    """A new user's first mistake: ``kv put`` to nodes started but never initialized. Each
    answers 503 "node N is not in a cluster yet (initialize one with 'openraft-py cluster
    init' ...)" with ``"initialized": false``; once every endpoint has answered so for
    ``NO_CLUSTER_GRACE`` (1 s), retrying cannot help (only an init or an add would), and the
    call ends ``FAIL`` with that answer. It retried until its deadline (10 s on the command
    line) and then said the same.
    An endpoint that is in a cluster, between elections (503 naming no leader, without
    ``initialized``), is still retried until the deadline."""
    from aiohttp import web

    def node(nid: int, initialized: bool) -> Any:
        async def refuse(request: web.Request) -> web.Response:
            return _no_leader_503() if initialized else _in_no_cluster_503(nid)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", refuse)
        return app

    async with _serving(node(1, False)) as a, _serving(node(2, False)) as b:
        async with KvClient([a, b], deadline=5.0) as c:
            for call in (c.put("k", "v"), c.get("k"), c.change_members([1, 2])):
                t = time.monotonic()
                r = await call
                took = time.monotonic() - t
                assert r.outcome is Outcome.FAIL and NO_CLUSTER_GRACE <= took < NO_CLUSTER_GRACE + 1.0, (took, r)
                assert r.status == 503 and "is not in a cluster yet" in (r.error or ""), r
        # (a deadline longer than the grace: the call must outlive the grace to show it is not cut short)
        async with _serving(node(3, True)) as d, KvClient([a, d], deadline=NO_CLUSTER_GRACE + 1.0) as c:
            t = time.monotonic()
            r = await c.put("k", "v")
            assert r.outcome is Outcome.FAIL and time.monotonic() - t > NO_CLUSTER_GRACE + 0.9, r
            assert (r.error or "").startswith("gave up after"), r


async def test_a_refused_connection_is_named_so() -> None:
    """A connection refused is said as the system says it, "Connection refused": asyncio's
    text, "Connect call failed ('127.0.0.1', 1)", did not say why (the kv-cli design quotes
    the former)."""
    dead = f"127.0.0.1:{free_port()}"
    async with KvClient([dead], deadline=0.3) as c:
        r = await asyncio.wait_for(c.put("k", "v"), 5.0)
    assert r.outcome is Outcome.FAIL and (r.error or "").endswith(f"cannot connect to {dead}: Connection refused"), r

async def test_members_just_initialized_through_another_node_are_retried_not_failed() -> None:
    """Right after ``POST /cluster/init`` to node 1 answered, nodes 2 and 3 hold no
    membership yet: they hear of the cluster with its first election and the new leader's
    first entries, a moment later, and until then answer 503 "not in a cluster yet" with
    ``"initialized": false``. A call given only their endpoints (a client of the nodes it
    runs beside, a script that initialized through node 1) is retried until they have
    heard: it failed at once, telling the user to initialize the cluster just initialized
    (backoff 0 sends the two first attempts before the election can end)."""
    from .kv_helpers import members_of, url

    c0 = KvCluster()
    try:
        for nid in (1, 2, 3):
            await c0.start_node(nid)
        c0.session = new_session()
        async with c0.session.post(url(c0.nodes[1], "/cluster/init"),
                                   json={"members": members_of(list(c0.nodes.values()))}) as r:
            assert r.status == 200, await r.text()
        eps = [c0.nodes[2].opts.http_addr, c0.nodes[3].opts.http_addr]
        async with KvClient(eps, deadline=10.0, backoff=0.0) as c:
            r = await asyncio.wait_for(c.put("k", "v"), 15.0)
        assert r.ok, r
    finally:
        await c0.close()


def _in_no_cluster_node(nid: int, until: float | None = None, then: str = "ok") -> Any:
    """A fake service node answering 503 "not in a cluster yet" (``"initialized": false``)
    until the monotonic time ``until`` (for good with ``None``), then 200 ``{"index": 1}``
    (``then="ok"``) or the 503 of a node in a cluster between elections (``"no leader"``)."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        if until is not None and time.monotonic() >= until:
            if then == "ok":
                return web.json_response({"index": 1})
            return _no_leader_503()
        return _in_no_cluster_503(nid)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def test_a_node_in_no_cluster_for_a_moment_is_retried() -> None:
    """A node that answers "not in a cluster yet" for a moment (0.3 s: a cluster initialized
    through another node, a learner being added, reach it with their first message) and
    then takes the call: the call succeeds. It failed at the first answer."""
    async with _serving(_in_no_cluster_node(1, until=time.monotonic() + 0.3)) as a:
        async with KvClient([a], deadline=5.0, backoff=0.0) as c:
            r = await asyncio.wait_for(c.put("k", "v"), 10.0)
    assert r.ok, r


async def test_an_endpoint_no_longer_in_no_cluster_is_not_counted_as_such() -> None:
    """Only each endpoint's latest answer counts: ``a`` answered "not in a cluster yet" once
    and is in a cluster since (503 naming no leader, between elections), ``b`` is in no
    cluster. Not every endpoint is in no cluster, so the call is retried until its deadline
    (it failed as soon as ``b`` had answered, counting ``a``'s first answer)."""
    async with _serving(_in_no_cluster_node(1, until=time.monotonic() + 0.05, then="no leader")) as a, \
            _serving(_in_no_cluster_node(2)) as b:
        async with KvClient([a, b], deadline=1.6, backoff=0.0, max_backoff=0.05) as c:
            t = time.monotonic()
            r = await asyncio.wait_for(c.put("k", "v"), 10.0)
    assert r.outcome is Outcome.FAIL and time.monotonic() - t > 1.5, r
    assert (r.error or "").startswith("gave up after"), r


@contextlib.contextmanager
def _listener(complete: bool) -> Iterator[str]:
    """A loopback port that never answers. ``complete``: connections are made (the kernel
    accepts them for a process that never reads them, as for a stopped one), requests are
    sent and never answered. Otherwise its queue of connections is full, so a new one is
    never made (its connection request is dropped, as a host that is down drops it)."""
    lsock = socket.socket()
    fillers: list[socket.socket] = []
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16 if complete else 0)
        port = lsock.getsockname()[1]
        if not complete:
            for _ in range(3):
                f = socket.socket()
                fillers.append(f)
                f.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    f.connect(("127.0.0.1", port))
        yield f"127.0.0.1:{port}"
    finally:
        for f in fillers:
            f.close()
        lsock.close()


async def test_a_node_that_never_completes_the_connection_is_skipped_by_writes_too(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """A connection that is never made (a host that is down) is a refusal after
    ``connect_timeout``: nothing was sent, so even a write goes on to the next endpoint.
    It was bounded by the attempt alone, and the command line's attempt is its whole
    ``--timeout``: ``kv put --endpoints DOWN,LIVE`` failed without trying LIVE."""
    live = cluster.nodes[1].opts.http_addr
    with _listener(complete=False) as down:
        async with KvClient([down, live], deadline=5.0, attempt_timeout=5.0, connect_timeout=0.5) as c:
            t = time.monotonic()
            r = await asyncio.wait_for(c.put("k", "v1"), 10.0)
            assert r.ok and r.retries == 1, r
            assert time.monotonic() - t < 3.0
        async with KvClient([down]) as c:
            r = await asyncio.wait_for(c.put("k", "v", deadline=1.0), 5.0)
        assert r.outcome is Outcome.FAIL and "within 1.0s" in (r.error or ""), r
        code = await asyncio.to_thread(cli.main, ["kv", "put", "k", "v2", "--endpoints", f"{down},{live}",
                                                  "--timeout", "6"])
        assert code == 0, capsys.readouterr().err
    async with KvClient([live]) as c:
        assert (await c.get("k")).value == "v2"


async def test_find_leader_gives_up_by_its_timeout_when_the_named_leader_never_answers(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Followers that name a leader which takes the connection and never answers (a stopped
    process): ``find_leader(timeout)`` raises by ``timeout``, naming it. It asked the named
    leader with 2 s each time, and ended only after asking through every endpoint: 6 s for
    ``timeout=0.5`` here, and ``cluster members --timeout 1`` took as long. Fake nodes
    answer the status."""
    from aiohttp import web

    runners: list[web.AppRunner] = []
    with _listener(complete=True) as stopped:
        try:
            for nid in (1, 2, 3):
                port = free_port()
                status = {"id": nid, "state": "Follower", "leader_id": 9, "leader_http_addr": stopped,
                          "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{port}"}

                async def answer(request: web.Request, status: dict[str, Any] = status) -> web.Response:
                    return web.json_response(status)

                app = web.Application()
                app.router.add_get("/cluster/status", answer)
                runners.append(web.AppRunner(app))
                await runners[-1].setup()
                await web.TCPSite(runners[-1], "127.0.0.1", port).start()
            eps = [f"127.0.0.1:{r.addresses[0][1]}" for r in runners]
            async with KvClient(eps) as c:
                t = time.monotonic()
                with pytest.raises(TimeoutError) as e:
                    await asyncio.wait_for(c.find_leader(timeout=0.5), 10.0)
                assert time.monotonic() - t < 1.5
                assert f"names n9 at {stopped}, which did not answer" in str(e.value)
            t = time.monotonic()
            code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", ",".join(eps),
                                                      "--timeout", "1"])
            assert code == 1 and time.monotonic() - t < 2.5
            assert "no leader found" in capsys.readouterr().err
        finally:
            for r in runners:
                await r.cleanup()


@pytest.mark.parametrize("complete", [True, False])
async def test_find_leader_is_not_held_up_by_endpoints_that_never_answer(
        complete: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """Two endpoints that never answer (a stopped process; or, ``complete=False``, a host
    that is down) listed before the leader: ``find_leader`` asks every endpoint at once and
    returns the leader as soon as it answers. It asked one endpoint after another, each with
    up to 2 s, so ``find_leader(timeout=2)`` gave up before reaching the leader, and
    ``cluster members --timeout 2`` over seven nodes whose first one was stopped said "no
    leader found" while the others had one. A fake node answers as the leader."""
    from aiohttp import web

    port = free_port()
    leader = f"127.0.0.1:{port}"
    status = {"id": 3, "state": "Leader", "leader_id": 3, "leader_http_addr": leader, "voters": [1, 2, 3],
              "learners": [], "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": leader}

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(status)

    app = web.Application()
    app.router.add_get("/cluster/status", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        with _listener(complete) as a, _listener(complete) as b:
            async with KvClient([a, b, leader]) as c:
                t = time.monotonic()
                assert await asyncio.wait_for(c.find_leader(timeout=2.0), 10.0) == (3, leader)
                assert time.monotonic() - t < 1.0
            t = time.monotonic()
            code = await asyncio.to_thread(cli.main, ["cluster", "members", "--endpoints", f"{a},{b},{leader}",
                                                      "--timeout", "2"])
            out = capsys.readouterr()
            assert (code, out.out) == (0, "voters: 1,2,3\nlearners: -\n"), out.err
            assert time.monotonic() - t < 2.0
    finally:
        await runner.cleanup()


async def test_no_retry_starts_too_close_to_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals until the deadline end as ``FAIL`` with the last refusal: no attempt after the
    first starts with less than ``_RETRY_MIN`` left (it could not get its answer in time, and a
    write's unanswered attempt would make the outcome unknown). The back-off pauses (jitter
    fixed: 20, 40, 80, 160 ms) end about 30 ms before the deadline."""
    from openraft_py.kv import client as client_mod

    monkeypatch.setattr(client_mod.random, "random", lambda: 0.5)
    timeouts: list[float] = []
    no_leader = b'{"error": "no leader is known", "leader_id": null}'

    async def refused(method: str, url: str, data: object, headers: object, timeout: float) -> tuple[int, dict[str, str], bytes]:
        timeouts.append(timeout)
        return 503, {}, no_leader

    async with KvClient(["127.0.0.1:1"], deadline=0.33, backoff=0.02, max_backoff=1.0) as c:
        monkeypatch.setattr(c, "_attempt", refused)
        r = await asyncio.wait_for(c.put("k", "v"), 5.0)
    assert r.outcome is Outcome.FAIL and r.status == 503 and r.retries >= 3, r
    assert len(timeouts) >= 4 and all(t >= client_mod._RETRY_MIN for t in timeouts[1:]), timeouts


async def test_a_call_that_gives_up_counts_the_attempts_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line of a call that gave up counts the attempts made: it counted the one the
    deadline stopped from starting too ("gave up after 2 attempts" after one; and
    ``retries`` one too many). A deadline over before the first attempt could start says so:
    it was "gave up after 1 attempts: no attempt made". An attempt bounded below 0.1 s names
    its bound ("within 0.03s"; it was "within 0.0s")."""
    from openraft_py.kv import client as client_mod

    made: list[float] = []

    async def refused(method: str, url: str, data: object, headers: object, timeout: float) -> tuple[int, dict[str, str], bytes]:
        made.append(timeout)
        raise client_mod._Refused("cannot connect to 127.0.0.1:1: refused")

    for deadline in (0.001, 0.3):  # one attempt (its pause outlasts the deadline); several
        made.clear()
        async with KvClient(["127.0.0.1:1"], deadline=deadline, backoff=0.02) as c:
            monkeypatch.setattr(c, "_attempt", refused)
            r = await asyncio.wait_for(c.get("k"), 5.0)
        n = len(made)
        assert r.error == f"gave up after {n} attempt{'s' if n > 1 else ''}: cannot connect to 127.0.0.1:1: refused", r
        assert r.outcome is Outcome.FAIL and r.retries == n - 1, (n, r)
    async with KvClient(["127.0.0.1:1"], deadline=1e-300) as c:
        r = await asyncio.wait_for(c.get("k"), 5.0)
    assert r.outcome is Outcome.FAIL and r.retries == 0 and r.error == (
        "no attempt made: the deadline of 1e-300s was over before the first could start"), r
    with _listener(complete=True) as hung:
        async with KvClient([hung], deadline=0.03) as c:
            r = await asyncio.wait_for(c.put("k", "v"), 5.0)
    assert r.outcome is Outcome.INFO and r.error == f"no answer from {hung} within 0.03s", r


async def test_a_node_in_no_cluster_is_a_refusal_not_retried_past_the_grace(tmp_path: object) -> None:
    """A real node, running and never initialized, answers 503 "no leader" with
    ``"initialized": false``: the only endpoint, it fails the call once it has answered so
    for ``NO_CLUSTER_GRACE`` (1 s), well before the deadline (a 503 naming no leader from a
    node in a cluster is retried until the deadline:
    ``test_a_call_ends_after_the_grace_when_every_endpoint_is_in_no_cluster``)."""
    c0 = KvCluster()
    try:
        await c0.start(1, init=False)  # running, never initialized: 503 "no leader"
        node = c0.nodes[1]
        async with KvClient([node.opts.http_addr], deadline=3.0) as c:
            t = time.monotonic()
            r = await asyncio.wait_for(c.put("k", "v"), 5.0)
            took = time.monotonic() - t
            assert r.outcome is Outcome.FAIL and r.status == 503 and r.retries >= 1, r
            assert "node 1 is not in a cluster yet" in (r.error or "") and NO_CLUSTER_GRACE <= took < 2.0, (took, r)
            st = await c.status(node.opts.http_addr)
            assert st["id"] == 1 and st["leader_id"] is None
    finally:
        await c0.close()


async def _silent_server(mode: str) -> tuple[asyncio.AbstractServer, str, list[bytes], list[asyncio.StreamWriter]]:
    """A TCP server that reads a request and then says nothing (``mode="hang"``) or closes
    the connection (``"close"``); the requests it got are collected, and the connections it
    accepted (the caller closes them: ``server.close()`` leaves accepted ones open)."""
    got: list[bytes] = []
    conns: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        data = await reader.read(65536)
        got.append(data)
        if mode == "hang":
            await reader.read()  # says nothing until the connection closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}", got, conns


@pytest.mark.parametrize("mode", ["hang", "close"])
async def test_a_write_that_reached_a_node_is_unknown_and_not_retried(mode: str) -> None:
    server, ep, got, conns = await _silent_server(mode)
    try:
        async with KvClient([ep], deadline=2.0, attempt_timeout=0.5) as c:
            r = await asyncio.wait_for(c.put("k", "v"), 5.0)
            assert r.outcome is Outcome.INFO, r
            assert r.retries == 0
            sent = len(got)
            assert sent >= 1 and got[0].startswith(b"PUT /kv/k ")
            # a read has no effect: it is retried until the deadline
            t = time.monotonic()
            r = await asyncio.wait_for(c.get("k"), 5.0)
            assert r.outcome in (Outcome.FAIL, Outcome.INFO) and r.retries >= 1
            assert time.monotonic() - t < 4.0
    finally:
        server.close()
        for w in conns:
            w.close()
        await server.wait_closed()


@pytest.mark.parametrize("resend", [False, True], ids=["no-resend", "aiohttp-resend"])
async def test_a_write_to_a_node_killed_mid_request_is_unknown(resend: bool) -> None:
    # The server reads the request and then disappears entirely. Had aiohttp resent the PUT
    # (it does so once by default), the resend would find the port closed; either way the
    # client must report "unknown", not "refused", and send the write once.
    got: list[bytes] = []
    closed = asyncio.Event()
    server: asyncio.AbstractServer | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(65536))
        assert server is not None
        server.close()  # no more connections ...
        writer.transport.abort()  # ... and this one reset
        closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ep = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    session = new_session()
    if resend:  # aiohttp's default: the headers count alone must classify the resend
        if not hasattr(session, "_retry_connection"):
            await session.close()
            server.close()
            pytest.skip("this aiohttp has no resend switch")
        session._retry_connection = True
    try:
        c = KvClient([ep], deadline=2.0, attempt_timeout=1.0, session=session)
        r = await asyncio.wait_for(c.put("k", "v"), 5.0)
        await c.close()
        assert not session.closed  # a session the client was given stays open
    finally:
        await session.close()
    assert closed.is_set() and got
    assert r.outcome is Outcome.INFO and r.retries == 0, r
    assert len(got) == 1
    if resend:
        assert "then refused" in (r.error or ""), r  # resent, to a closed port


async def test_an_endpoint_that_is_not_a_service_node_is_named_as_such() -> None:
    """Another HTTP server at an endpoint (a wrong port): its 404 is not "key absent" (a
    read reported the key absent, OK), and its non-JSON status is a ``ClientError`` (it
    escaped as a ``JSONDecodeError``: ``cluster status`` and ``cluster init`` stopped on it)."""
    from aiohttp import web

    from openraft_py.kv import cli

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>no such file</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/cluster/status", html)
    app.router.add_get("/kv/{key}", not_found)
    async with _serving(app) as ep:
        async with KvClient([ep], deadline=2) as c:
            r = await c.get("k")
            assert r.outcome is Outcome.FAIL and r.status == 404 and "no such file" in (r.error or ""), r
            with pytest.raises(ClientError, match="not a service node"):
                await c.status(ep)
        for verb in (["cluster", "status"], ["cluster", "init"]):
            code = await asyncio.to_thread(cli.main, [*verb, "--endpoints", ep, "--timeout", "2"])
            assert code == 1, verb


async def test_a_raft_port_given_as_an_endpoint_is_named_and_nothing_is_unknown(cluster: KvCluster) -> None:
    """A node's raft address given as an endpoint (the wrong one of its two ports): a write
    fails at once (``fail``, not ``info``) with the transport's answer saying what the port
    is. The transport closed such a connection unanswered, so a write was reported with an
    unknown outcome (``openraft-py kv put`` exited 3)."""
    leader = await cluster.wait_leader()
    async with KvClient([leader.opts.raft_addr], deadline=5) as c:
        r = await c.put("k", "v")
        assert r.outcome is Outcome.FAIL and r.status == 400, r
        assert "openraft-py raft port" in (r.error or "") and "--http-addr" in (r.error or ""), r
        r = await c.get("k")
        assert r.outcome is Outcome.FAIL and r.status == 400, r
    async with KvClient([leader.opts.http_addr]) as c:
        assert (await c.get("k")).value is None  # nothing was written


@pytest.mark.parametrize("given", [False, True])
async def test_a_closed_client_refuses_calls_and_opens_no_session(given: bool) -> None:
    """A call after ``close()`` raises ``RuntimeError``, sending nothing. It opened a new
    session which nothing closed ("Unclosed client session" at exit); a client given a
    session opened one for each call."""
    import gc
    import warnings

    session = new_session() if given else None
    try:
        c = KvClient(["127.0.0.1:1"], session=session, deadline=0.2)
        await c.close()
        await c.close()  # idempotent
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for call in (lambda: c.put("k", "v"), lambda: c.get("k"), lambda: c.find_leader(timeout=0.2)):
                with pytest.raises(RuntimeError, match="closed"):
                    await asyncio.wait_for(call(), 5.0)
            gc.collect()
        assert not [w for w in caught if "Unclosed" in str(w.message)], [str(w.message) for w in caught]
    finally:
        if session is not None:
            await session.close()


async def test_a_200_that_is_not_a_service_node_s_answer_to_a_write_is_not_taken_for_one(
        cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """Another HTTP server at an endpoint that answers 200 to any path (a web application):
    its 200 was an applied write (``OK``; ``kv put`` then failed on its body with a
    ``JSONDecodeError``, exit 1). A write's answer that is not the service's is now unknown
    (exit 3, naming the endpoint), and nothing was written to the cluster."""
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html>app</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    live = cluster.nodes[1].opts.http_addr
    async with _serving(app) as other:
        async with KvClient([live]) as c:
            assert (await c.put("k", "v")).ok
        async with KvClient([other], deadline=0.5) as c:
            for call in (lambda: c.put("k", "w"), lambda: c.delete("k"), lambda: c.cas("k", "v", "w")):
                r = await asyncio.wait_for(call(), 5.0)
                assert r.outcome is Outcome.INFO and r.error is not None and other in r.error, r
                assert "is it an openraft-py HTTP address?" in r.error
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["kv", "put", "k", "w", "--endpoints", other, "--timeout", "2"])
        err = capsys.readouterr().err
        assert code == 3 and "outcome unknown" in err and "JSONDecodeError" not in err, err
        async with KvClient([live]) as c:
            assert (await c.get("k")).value == "v"


async def test_a_2xx_that_is_not_a_service_node_s_value_is_not_taken_for_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A read answered 2xx by another HTTP server at an endpoint (a web application that
    answers 200 to any path with a page, or 204) was a read of that value: ``kv get`` printed
    the HTML page as the key's value and exited 0 (and failed on a 204 with "ValueError: no
    value", on a body not in UTF-8 with "UnicodeDecodeError"). A service node answers a read
    200 with the value as ``text/plain`` in UTF-8: anything else is now a ``FAIL`` naming the
    endpoint (a read: nothing was done), exit 1."""
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        if request.match_info["tail"].startswith("kv/empty"):
            return web.Response(status=204)
        if request.match_info["tail"].startswith("kv/latin"):
            return web.Response(body="café".encode("latin-1"), content_type="text/plain", charset="latin-1")
        return web.Response(text="<html>app</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    async with _serving(app) as other:
        async with KvClient([other], deadline=2.0) as c:
            for key, said in (("k", "this answer is text/html; charset=utf-8): <html>app</html>"),
                              ("empty", "this answer is of no Content-Type"),
                              ("latin", "but with a body that is not UTF-8, as a value is: caf")):
                r = await asyncio.wait_for(c.get(key), 5.0)
                assert r.outcome is Outcome.FAIL and r.error is not None, r
                assert r.error.startswith(f"{other} answered HTTP ") and said in r.error, r.error
                assert r.error.endswith("(is it an openraft-py HTTP address?)"), r.error
        for key in ("k", "empty", "latin"):
            code = await asyncio.to_thread(cli.main, ["kv", "get", key, "--endpoints", other, "--timeout", "2"])
            out = capsys.readouterr()
            assert code == 1 and out.out == "" and out.err.count("\n") == 1, (code, out)
            assert "is it an openraft-py HTTP address?" in out.err and "Error" not in out.err, out.err


_DEEP_JSON = "[" * 100_000 + "]" * 100_000
"""JSON nested far past the interpreter's recursion limit (``json.loads`` raises
``RecursionError``, not ``ValueError``)."""


@pytest.mark.parametrize("body", ["{}", '{"leader_id": "2", "index": null}', "[]", _DEEP_JSON],
                         ids=["empty-object", "wrong-types", "array", "deep"])
async def test_an_admin_call_s_2xx_that_is_not_a_service_node_s_answer_is_not_taken_for_one(
        body: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Another HTTP server at an endpoint answering 200 with JSON that is not the service's
    answer: ``cluster transfer --to 2`` printed "n2 leads" and exited 0, ``cluster
    add-learner`` "n4 added as a learner and caught up (log index None)", ``cluster members
    --voters 1,2`` "voters: " (exit 0); an array or ``null`` failed with "AttributeError:
    'list' object has no attribute 'get'", and JSON nested past the recursion limit made
    every verb fail with "RecursionError: maximum recursion depth exceeded ...", naming no
    endpoint. An admin call's 2xx must be the object the service answers (DESIGN §8): any
    other is an unknown outcome naming the endpoint (exit 3), as a write's is; and a status
    that is not one fails naming it (exit 1)."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with _serving(app) as other:
        async with KvClient([other], deadline=0.5) as c:
            for call in (lambda: c.transfer(2), lambda: c.add_learner(4, "127.0.0.1:1", "127.0.0.1:2"),
                         lambda: c.change_members([1, 2]), lambda: c.remove_learner(4),
                         lambda: c.init({1: ("127.0.0.1:1", "127.0.0.1:2")})):
                r = await asyncio.wait_for(call(), 5.0)
                assert r.outcome is Outcome.INFO and r.error is not None, r
                assert r.error.startswith(f"{other} answered HTTP 200, but not with a JSON object holding"), r.error
                assert r.error.endswith("(is it an openraft-py HTTP address?)"), r.error
        capsys.readouterr()
        for argv in (["cluster", "transfer", "--to", "2"], ["cluster", "members", "--voters", "1,2"],
                     ["cluster", "add-learner", "--id", "4", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2"],
                     ["cluster", "remove-learner", "--id", "4"]):
            code = await asyncio.to_thread(cli.main, [*argv, "--endpoints", other, "--timeout", "2"])
            out = capsys.readouterr()
            assert code == 3 and "n2 leads" not in out.out and "voters:" not in out.out, (argv, code, out)
            assert other in out.err and "Error" not in out.err, (argv, out.err)
        for argv in (["cluster", "status"], ["kv", "get", "k"]):
            code = await asyncio.to_thread(cli.main, [*argv, "--endpoints", other, "--timeout", "2"])
            out = capsys.readouterr()
            assert code == 1 and other in out.err and "Error" not in out.err, (argv, code, out)


async def test_after_a_write_s_unknown_outcome_the_next_call_starts_at_another_node(cluster: KvCluster) -> None:
    """A write sent to a node that takes it and never answers (a stopped process; here a
    port that accepts and never reads) ends unknown, and the next call starts at the next
    endpoint. It started at the same node again: the leader it remembered, or the endpoint
    it had reached, so a client that only writes got an unknown outcome for every write for
    as long as that node was stopped, a new leader serving meanwhile."""
    live = cluster.nodes[1].opts.http_addr
    with _listener(complete=True) as stopped:
        async with KvClient([stopped, live], deadline=2.0, attempt_timeout=0.5) as c:
            r = await asyncio.wait_for(c.put("k", "1"), 10.0)
            assert r.outcome is Outcome.INFO and r.node == stopped, r
            for value in ("2", "3"):
                r = await asyncio.wait_for(c.put("k", value), 10.0)
                assert r.ok, r
            c.leader = stopped  # (as learned from a redirect before the node stopped)
            r = await asyncio.wait_for(c.cas("k", "3", "4"), 10.0)
            assert r.outcome is Outcome.INFO and r.node == stopped, r
            r = await asyncio.wait_for(c.delete("k"), 10.0)
            assert r.ok, r


async def test_arguments_are_checked_before_anything_is_sent() -> None:
    """A key or value UTF-8 cannot hold (a lone surrogate, what ``os.fsdecode`` makes of a
    byte that is not UTF-8) failed deep in the call with "'utf-8' codec can't encode
    character '\\udc80'" naming neither, and in a ``cas`` body was sent and answered 400
    "JSON is malformed: invalid utf-16 surrogate pair"; the admin verbs sent what they were
    given (``transfer("2")``, ``change_members("123")`` as the voters "1", "2", "3") and
    ``init({1: "h:1"})`` failed with "too many values to unpack". Now each is refused, nothing
    sent (the endpoint here listens nowhere: a call that sent would fail, not raise)."""
    async with KvClient(["127.0.0.1:9"], deadline=0.5) as c:
        for call, err, msg in [
            (lambda: c.put("\udc80k", "v"), ValueError, r"^a key is text UTF-8 can hold, but '\\udc80k' has a lone "
                                                        r"surrogate at character 0$"),
            (lambda: c.get("k\udc80"), ValueError, "a key is text UTF-8 can hold"),
            (lambda: c.put("k", "v\udc80"), ValueError, r"^a value is text UTF-8 can hold, but 'v\\udc80' has a lone "
                                                        r"surrogate at character 1$"),
            (lambda: c.cas("k", None, "\udc80"), ValueError, "^value is text UTF-8 can hold"),
            (lambda: c.cas("k", "\udc80", None), ValueError, "^expected is text UTF-8 can hold"),
            (lambda: c.transfer("2"), TypeError, "^transfer to must be an int, got str '2'$"),  # type: ignore[arg-type]
            (lambda: c.change_members("123"), TypeError, "^voters is a sequence of node ids, got str '123'$"),
            (lambda: c.change_members([1, -2]), ValueError, r"^voter id must be within \[0, \d+\], got -2$"),
            (lambda: c.add_learner("4", "h:1", "h:2"), TypeError, "^learner id must be an int, got str '4'$"),  # type: ignore[arg-type]
            (lambda: c.add_learner(4, 5, "h:2"), TypeError, "^raft_addr is a str"),  # type: ignore[arg-type]
            (lambda: c.init({1: "h:1"}), TypeError, r"^member 1: its addresses are a \(raft_addr, http_addr\) "  # type: ignore[dict-item]
                                                    "pair of str, got str 'h:1'$"),
            (lambda: c.init({"1": ("h:1", "h:2")}), TypeError, "^member id must be an int"),  # type: ignore[dict-item]
            (lambda: c.init([(1, ("h:1", "h:2"))]), TypeError, "^members is a mapping"),  # type: ignore[arg-type]
            # (A str would be tried as one endpoint a character.)
            (lambda: c.init({1: ("h:1", "h:2")}, next_endpoints="h:3"), TypeError,
             "^next_endpoints is a sequence of str \\(host:port\\), got str 'h:3'$"),
            # Sent, and refused by the service with 400 after a round trip (or, as here, failed
            # to connect: a FAIL outcome whose error named no argument); refused at once now,
            # as Raft.initialize and Raft.change_membership refuse them.
            (lambda: c.init({}), ValueError, "^members is empty: a cluster is initialized with at least one node$"),
            (lambda: c.change_members([]), ValueError, "^voters is empty: a cluster needs at least one voter$"),
            (lambda: c.change_members([2, 1, 2, 1]), ValueError, r"^voter ids \[1, 2\] are given more than once$"),
            (lambda: c.change_members([1], retain="no"), TypeError, "^retain is a bool, got str 'no'$"),  # type: ignore[arg-type]
            (lambda: c.change_members([1], allow_lagging=1), TypeError, "^allow_lagging is a bool, got int 1$"),  # type: ignore[arg-type]
        ]:
            with pytest.raises(err, match=msg):
                await call()


@pytest.mark.parametrize("what", ["deadline", "attempt_timeout", "connect_timeout", "backoff", "max_backoff"])
@pytest.mark.parametrize("value", [86400.5, 1e12, 1e300])
async def test_a_duration_over_a_day_is_refused(what: str, value: float) -> None:
    """``KvClient``'s durations, and a call's ``deadline`` / ``attempt_timeout``, are bounded as
    the command line's ``--timeout`` is (``MAX_TIMEOUT``, a day): ``1e300`` was taken where
    ``inf`` was refused, and a call then retried a node that never answered for good."""
    message = rf"^{what} must be (above|at least) 0 and at most 86400 seconds \(a day\), got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        KvClient(["127.0.0.1:9"], **{what: value})
    if what in ("deadline", "attempt_timeout"):
        async with KvClient(["127.0.0.1:9"], deadline=0.5) as c:
            with pytest.raises(ValueError, match=message):
                await c.get("k", **{what: value})
    at_most = {"max_backoff": 86400.0} if what == "backoff" else {}  # (backoff <= max_backoff)
    async with KvClient(["127.0.0.1:9"], **{what: 86400.0, **at_most}):
        pass


def test_endpoints_that_are_none_or_huge_are_refused_in_a_short_message() -> None:
    """``parse_endpoints`` (and so ``KvClient``, ``OPENRAFT_PY_ENDPOINTS``) quoted a refused
    endpoint whole: a 1 MB one made a 1 MB ``ValueError``; and ``None`` failed with Python's
    "'NoneType' object is not iterable". Now the endpoint is quoted cut to 80 characters with
    its length, and what is neither a string nor a list of them is named."""
    huge = "x" * 1_000_000
    for given in (huge + ":1", huge, "https://" + huge, [huge]):
        with pytest.raises(ValueError, match=r"\(100000[0-9] characters\)") as refused:
            parse_endpoints(given)
        assert len(str(refused.value)) < 300
    for wrong in (None, 5, b"h:1"):
        with pytest.raises(TypeError, match=r"^endpoints are a 'host:port,...' string or a list of them, got "):
            parse_endpoints(wrong)  # type: ignore[arg-type]


async def test_a_value_over_1_mib_is_sent_without_a_resource_warning() -> None:
    """``put`` of a value over 1 MiB (a node started with a larger ``--max-body``): aiohttp
    warned "Sending a large body directly with raw bytes might lock the event loop", a
    ``ResourceWarning``, at each attempt: printed under ``python -X dev``, and raised from
    ``put`` in a program run with ``-W error::ResourceWarning``. The body is sent whole, and
    again in full when redirected (the first answer is a 307 here)."""
    import warnings

    from aiohttp import web

    value = "v" * (3 << 20)
    received: list[bytes] = []
    where: list[str] = []

    async def put(request: web.Request) -> web.Response:
        received.append(await request.read())
        if len(received) == 1:
            raise web.HTTPTemporaryRedirect(f"http://{where[0]}/kv/big")
        return web.json_response({"index": 7})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_put("/kv/{key}", put)
    async with _serving(app) as ep, KvClient([ep], deadline=20) as c:
        where.append(ep)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            r = await c.put("big", value)
    assert r.outcome is Outcome.OK and r.redirects == 1 and r.body == b'{"index": 7}', r
    assert received == [value.encode()] * 2


@contextlib.asynccontextmanager
async def _not_http_listener() -> AsyncIterator[str]:
    """A loopback listener that is no HTTP server: it greets each connection as an SSH server
    does and keeps it open; yields its ``host:port``."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        with contextlib.suppress(OSError):
            await writer.drain()
            await reader.read()  # (until the client goes)
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_that_is_not_http_fails_a_call_at_once() -> None:
    """An endpoint that answers, but not in HTTP (another program's port: SSH, a database):
    no service node is there, so nothing was done and no retry helps. A read retried it until
    its deadline (10 s on the command line) and a write ended 'outcome unknown' (exit 3),
    both with aiohttp's 'Bad status line' text over several lines. Now either fails at once
    (``FAIL``), saying that the answer is not HTTP."""
    async with _not_http_listener() as ep, KvClient([ep], deadline=5.0) as c:
        for call in (c.get("k"), c.put("k", "v"), c.status(ep)):
            started = time.monotonic()
            try:
                r = await call
            except ClientError as e:
                r = e.response
            took = time.monotonic() - started
            assert r.outcome is Outcome.FAIL and took < 1.0, (took, r)
            assert r.error is not None and "\n" not in r.error, r
            assert r.error.startswith(f"{ep} answered, but not in HTTP (is it an openraft-py HTTP address?): "
                                      "Bad status line"), r
            assert "SSH-2.0-OpenSSH_9.6" in r.error, r


@pytest.mark.parametrize("answer, reset", [
    (b"HTTP/1.1 2", False),  # killed within the status line
    (b"HTTP/1.1 200 OK\r\nContent-Type: appl", False),  # ... within the headers
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", True),  # reset within the headers
    (b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"ind", False),  # ... within the body
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ind", True),  # reset in a chunk
])
async def test_a_node_cut_off_mid_answer_leaves_a_write_unknown_never_failed(answer: bytes, reset: bool) -> None:
    """A write that reached a node whose answer was cut off (the node killed mid-answer, the
    connection reset) may have been applied: its outcome is UNKNOWN, never FAIL "answered,
    but not in HTTP" (which tells the caller nothing was done). Only a status line or headers
    that parse as no HTTP at all are that; a truncated HTTP answer is not."""

    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        writer.write(answer)
        await writer.drain()
        if reset:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()

    server = await asyncio.start_server(cut_off, "127.0.0.1", 0)
    ep = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with KvClient([ep], deadline=3.0) as c:
            try:
                r = await asyncio.wait_for(c.put("k", "v"), 10)
            except ClientError as e:
                r = e.response
        assert r.outcome is Outcome.INFO, r  # (INFO: the outcome is unknown)
        assert "not in HTTP" not in (r.error or ""), r
    finally:
        server.close()
        await server.wait_closed()


def _status_node(nid: int, pristine_until: float | None = None) -> Any:
    """A fake service node answering ``GET /cluster/status``: in no cluster (no voter, no
    learner, no leader) until ``pristine_until`` (``time.monotonic()``; ``None``: always),
    then a follower of a cluster whose leader is unknown for the moment."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        pristine = pristine_until is None or time.monotonic() < pristine_until
        return web.json_response({"id": nid, "state": "Learner" if pristine else "Follower", "leader_id": None,
                                  "leader_http_addr": None, "voters": [] if pristine else [1, 2],
                                  "learners": []})

    app = web.Application()
    app.router.add_get("/cluster/status", answer)
    return app


async def test_find_leader_fails_after_the_grace_when_every_endpoint_is_in_no_cluster(tmp_path: object) -> None:
    """Nodes started and never initialized (or added) name no leader until an init: once
    every endpoint's status has said so for ``NO_CLUSTER_GRACE``, ``find_leader`` raises
    ``NoClusterError`` (a ``TimeoutError``, as its contract has it, saying what to do)
    instead of searching its whole timeout, as the calls do (a real node here)."""
    from openraft_py.kv.client import NoClusterError

    c0 = KvCluster()
    try:
        await c0.start(1, init=False)
        async with KvClient([c0.nodes[1].opts.http_addr]) as c:
            t = time.monotonic()
            with pytest.raises(NoClusterError) as e:
                await asyncio.wait_for(c.find_leader(timeout=20.0), 30.0)
            took = time.monotonic() - t
        assert NO_CLUSTER_GRACE <= took < NO_CLUSTER_GRACE + 1.5, took
        assert isinstance(e.value, TimeoutError)
        assert "is in a cluster yet" in str(e.value) and "cluster init" in str(e.value), e.value
    finally:
        await c0.close()


async def test_find_leader_keeps_searching_while_an_endpoint_is_in_a_cluster() -> None:
    """The grace is not the end of a search that may still succeed: one endpoint in a
    cluster (between elections) among nodes in none, or nodes in none for a moment (an
    init through another node, not heard of yet) keep it going until its timeout, which
    stays a plain ``TimeoutError``."""
    from openraft_py.kv.client import NoClusterError

    async with _serving(_status_node(1)) as a, _serving(_status_node(2, pristine_until=0.0)) as b:
        async with KvClient([a, b]) as c:
            t = time.monotonic()
            with pytest.raises(TimeoutError) as e:
                await asyncio.wait_for(c.find_leader(timeout=NO_CLUSTER_GRACE + 0.8), 10.0)
            assert not isinstance(e.value, NoClusterError), e.value
            assert time.monotonic() - t >= NO_CLUSTER_GRACE + 0.7
    soon = time.monotonic() + NO_CLUSTER_GRACE * 0.6
    async with _serving(_status_node(1, soon)) as a, _serving(_status_node(2, soon)) as b:
        async with KvClient([a, b]) as c:
            with pytest.raises(TimeoutError) as e:
                await asyncio.wait_for(c.find_leader(timeout=NO_CLUSTER_GRACE + 0.8), 10.0)
            assert not isinstance(e.value, NoClusterError), e.value


def test_an_international_host_name_is_refused_naming_its_ascii_form() -> None:
    """An endpoint (or any address given) with a host name in another script than ASCII
    (``bücher.example``) was refused as "not a host name or IP address (letters, digits,
    ...)", though each of its characters is a letter. An address is put into URLs and
    headers as written, so it is written in ASCII: the error says so and gives the name's
    ASCII form (IDNA), to paste."""
    from openraft_py.kv.client import parse_endpoints

    with pytest.raises(ValueError) as info:
        parse_endpoints("http://bücher.example:28001")
    assert str(info.value) == ("endpoint 'http://bücher.example:28001': 'bücher.example' is not a host name or IP "
                               "address in ASCII: write it as 'xn--bcher-kva.example'"), str(info.value)
    assert parse_endpoints("xn--bcher-kva.example:28001") == ["xn--bcher-kva.example:28001"]
    with pytest.raises(ValueError, match=r"'bü ch' is not a host name or IP address \(letters, digits"):
        parse_endpoints("bü ch:28001")  # (no ASCII form: the message as for any other)
