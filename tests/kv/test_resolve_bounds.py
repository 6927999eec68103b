"""The bounds of ``KvNode._check_resolve`` (the raft host names ``init`` and ``add_learner``
resolve first): what a stop in the middle of resolutions leaves behind."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from openraft_py import NodeId
from openraft_py.kv import node as node_module
from openraft_py.kv.node import KvNode
from openraft_py.kv.nodes import NodeAddrs
from openraft_py.validation import MAX_MEMBERS

from .kv_helpers import KvCluster, free_port, until_true, url

pytestmark = pytest.mark.timeout(20)


async def test_a_stop_during_resolutions_starts_no_more_and_the_request_ends_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``init`` naming more hosts than ``MAX_RESOLVING`` whose resolver hangs, and the
    node stopped meanwhile: ``stop`` cancelled the resolutions running, which freed their
    slots, and the names waiting for one were resolved then, each in a new thread, after
    the stop had begun (with a resolver that hangs, ``MAX_RESOLVING`` more threads held for
    its whole timeout), and the request waited out ``RESOLVE_TIMEOUT`` before its 503. Now
    no resolution starts once the stop began, and the request answers 503 at once."""
    started: list[str] = []

    async def hangs(host: str, port: int) -> list[tuple[int, str]]:
        started.append(host)
        await asyncio.Event().wait()  # (a resolver that never answers)
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(node_module, "resolve", hangs)
    monkeypatch.setattr(node_module, "RESOLVE_TIMEOUT", 12.0)
    c = KvCluster()
    try:
        await c.start(1, init=False)
        n1 = c.nodes[1]
        assert c.session is not None
        members = {"1": {"raft_addr": n1.opts.raft_addr, "http_addr": n1.opts.http_addr}}
        for i in range(2, 2 + 3 * node_module.MAX_RESOLVING):
            members[str(i)] = {"raft_addr": f"n{i}.example:{20000 + i}", "http_addr": f"h{i}.example:{21000 + i}"}

        async def init() -> tuple[int, str]:
            async with c.session.post(url(n1, "/cluster/init"), json={"members": members}) as r:  # type: ignore[union-attr]
                return r.status, await r.text()

        request = asyncio.ensure_future(init())
        await until_true("the slots are taken", lambda: len(started) == node_module.MAX_RESOLVING, timeout=5)
        t0 = time.monotonic()
        await asyncio.wait_for(n1.stop(), 10)
        try:
            status, text = await asyncio.wait_for(request, 5)
        except (aiohttp.ClientError, TimeoutError) as e:
            status, text = -1, f"(no answer: {e!r})"
        took = time.monotonic() - t0
        assert len(started) == node_module.MAX_RESOLVING, f"{len(started) - node_module.MAX_RESOLVING} resolutions " \
                                                          "started after the stop began"
        assert not n1._resolving, n1._resolving
        assert took < 5, f"the stop and the request took {took:.1f}s (status {status}: {text})"
        assert status == 503 and "node 1 is stopping" in text and "nothing was done" in text, (status, text)
        # Said in the JSON too: a refusal (``KvClient``'s FAIL, ``cluster init`` exit 1), not
        # a bare 503, which a client reads as an unknown outcome.
        assert json.loads(text).get("outcome_unknown") is False, text
    finally:
        await c.close()


async def _a_leader_and_a_new_node(
        c: KvCluster) -> tuple[KvNode, KvNode, aiohttp.ClientSession, dict[NodeId, NodeAddrs], int | None]:
    """Start ``c``'s node 1 (a one-node cluster, ``learner_timeout`` 8 s) and a node 2 not
    initialized: the leader, the new node, the cluster's HTTP session, and the leader's
    members and last log index now (a refused call must leave both as they are)."""
    await c.start(1, learner_timeout=8.0)
    new = await c.start_node(2)
    leader = await c.wait_leader(among=[1])
    s = c.session
    assert s is not None and leader.raft is not None
    return leader, new, s, leader.nodes(), leader.raft.metrics.last_log_index


async def _longest_stall(work: asyncio.Future[tuple[int, str]]) -> float:
    """The longest time (s) the event loop ran code without running a 10 ms ticker while
    ``work`` ran, as CPU time of the loop's thread: on a loaded machine the wall-clock gap
    also holds the time the OS ran other processes (0.78 s under ``make test``'s load for
    about 0.05 s of work), which no code of the node can shorten."""
    longest, last = 0.0, time.thread_time()
    while not work.done():
        await asyncio.sleep(0.01)
        now = time.thread_time()
        longest, last = max(longest, now - last), now
    return longest


async def test_an_init_of_many_members_does_not_block_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /cluster/init`` with ``MAX_MEMBERS`` (1024) members (about 90 KB, a tenth of
    ``max_body``): the addresses were compared two by two (``same_addr``, and on a new node
    once more each raft host name's IP addresses with the others' addresses:
    ``_check_members_apart``), about 2 million comparisons each, seconds in which the
    event loop ran nothing else:
    the leader of a running cluster, which answers such a request 409, sent no heartbeat
    meanwhile. Each check is one pass now, and the answer (409 on the leader; 400 on a new
    node, the last member's raft host name resolving to member 1's address) comes at once."""
    async def fake_resolve(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, "127.0.0.1" if host == "last.example" else f"10.{port >> 8 & 255}.{port & 255}.1")]

    monkeypatch.setattr(node_module, "resolve", fake_resolve)
    c = KvCluster()
    try:
        await c.start(1)
        new = await c.start_node(2)
        leader = await c.wait_leader(among=[1])
        assert c.session is not None
        for node, status in ((leader, 409), (new, 400)):
            members = {str(node.id): {"raft_addr": node.opts.raft_addr, "http_addr": node.opts.http_addr}}
            others = [i for i in range(1, MAX_MEMBERS + 1) if i != node.id]
            for i in others:
                members[str(i)] = {"raft_addr": f"n{i}.example:{20000 + i}", "http_addr": f"h{i}.example:{30000 + i}"}
            port = node.opts.raft_addr.rpartition(":")[2]
            members[str(others[-1])]["raft_addr"] = f"last.example:{port}"

            async def init(node: node_module.KvNode = node, members: dict[str, dict[str, str]] = members
                           ) -> tuple[int, str]:
                async with c.session.post(url(node, "/cluster/init"), json={"members": members}) as r:  # type: ignore[union-attr]
                    return r.status, await r.text()

            request = asyncio.ensure_future(init())
            stall = await asyncio.wait_for(_longest_stall(request), 15)
            got, text = await request
            assert got == status, (got, text)
            assert stall < 0.5, f"the event loop ran {stall:.2f}s of CPU in one go (node {node.id}: {got} {text[:200]})"
        assert new.raft is not None and new.raft.metrics.last_log_index < 0  # (nothing done)
    finally:
        await c.close()


async def test_a_raft_address_at_a_member_s_ip_address_written_otherwise_is_refused() -> None:
    """A learner's or a member's raft address written with another spelling of a member's
    IP address at its port (``[::ffff:127.0.0.1]:P``, the IPv4-mapped form, which reaches
    ``127.0.0.1:P``; ``[0:0:0:0:0:0:0:1]:P`` for ``[::1]:P``): the strings differ, and an IP
    address is not resolved, so it was taken. The learner was replicated to that member,
    which answered as itself: the call waited out ``learner_timeout`` and left it in the
    membership; ``init`` made a cluster that could never elect a leader. The IP addresses
    are compared as a resolved name's are: 409 (``init``: 400), nothing done."""
    c = KvCluster()
    try:
        leader, new, s, before, last = await _a_leader_and_a_new_node(c)
        port = leader.opts.raft_addr.rpartition(":")[2]
        mapped = f"[::ffff:{leader.opts.raft_addr.rpartition(':')[0]}]:{port}"
        body = {"id": 4, "raft_addr": mapped, "http_addr": f"127.0.0.1:{free_port()}"}
        async with asyncio.timeout(5), s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 409, (r.status, error)
        assert error.startswith(f"raft_addr {mapped!r} is node 1's raft_addr {leader.opts.raft_addr!r} "
                                "('::ffff:127.0.0.1' and 127.0.0.1 are one IP address): each node needs addresses of "
                                "its own"), error
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before

        members = {"2": {"raft_addr": new.opts.raft_addr, "http_addr": new.opts.http_addr},
                   "3": {"raft_addr": f"[::ffff:127.0.0.1]:{new.opts.raft_addr.rpartition(':')[2]}",
                         "http_addr": f"127.0.0.1:{free_port()}"}}
        async with asyncio.timeout(5), s.post(url(new, "/cluster/init"), json={"members": members}) as r:
            error = (await r.json())["error"]
            assert r.status == 400, (r.status, error)
        assert error == (f"ValueError: member 2's raft_addr {new.opts.raft_addr!r} is also member 3's raft_addr "
                         f"{members['3']['raft_addr']!r} ('127.0.0.1' and ::ffff:127.0.0.1 are one IP address): each "
                         "member needs addresses of its own"), error
        assert new.raft is not None and new.raft.metrics.last_log_index < 0
    finally:
        await c.close()


async def test_add_learner_checks_the_membership_as_it_is_once_the_name_resolved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /cluster/learners`` checks the id and the addresses against the membership,
    then resolves the raft host name, then adds the learner. What changed in the membership
    while the name resolved (up to ``RESOLVE_TIMEOUT``) went unchecked: node 2, a voter by
    then, was "added as a learner" with new addresses, written into its voter entry (which
    cut it off), and node 3 added with the HTTP address node 2 took meanwhile was added (its
    redirects went to node 2). The checks run again once the name resolved: 409."""
    releases = {"again.example": asyncio.Event(), "third.example": asyncio.Event()}

    async def slow(host: str, port: int) -> list[tuple[int, str]]:
        await releases[host].wait()
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(node_module, "resolve", slow)
    c = KvCluster()
    try:
        await c.start(1, learner_timeout=3.0)
        leader = await c.wait_leader()
        n2 = await c.start_node(2)
        s = c.session
        assert s is not None and leader.raft is not None

        async def post(path: str, body: dict[str, object]) -> tuple[int, str]:
            async with s.post(url(leader, path), json=body) as r:  # type: ignore[union-attr]
                return r.status, await r.text()

        again = asyncio.ensure_future(post("/cluster/learners", {"id": 2, "raft_addr": "again.example:2",
                                                                 "http_addr": f"127.0.0.1:{free_port()}"}))
        third = asyncio.ensure_future(post("/cluster/learners", {"id": 3, "raft_addr": "third.example:1",
                                                                 "http_addr": n2.opts.http_addr}))
        await until_true("both resolve", lambda: len(leader._resolving) == 2, timeout=5)
        # Meanwhile node 2 is added (at IP addresses: not resolved) and made a voter.
        status, text = await post("/cluster/learners", {"id": 2, "raft_addr": n2.opts.raft_addr,
                                                        "http_addr": n2.opts.http_addr})
        assert status == 200, text
        status, text = await post("/cluster/members", {"voters": [1, 2]})
        assert status == 200, text
        nodes = leader.nodes()
        releases["again.example"].set()
        status, text = await asyncio.wait_for(again, 10)
        assert status == 409 and "node 2 is a voter" in text, (status, text)
        assert leader.nodes() == nodes
        releases["third.example"].set()
        status, text = await asyncio.wait_for(third, 10)
        assert status == 409 and f"http_addr {n2.opts.http_addr!r} is node 2's http_addr" in text, (status, text)
        assert leader.nodes() == nodes
    finally:
        await c.close()


async def test_a_raft_address_that_reaches_the_node_s_own_http_address_is_400() -> None:
    """A learner's ``raft_addr`` ``localhost:P`` (or ``[::ffff:127.0.0.1]:P``) with its
    ``http_addr`` ``127.0.0.1:P``, and a member of ``init`` so: the one port twice, which
    the comparison of the strings let through (a node listens on two ports). The leader's
    replication reached the learner's HTTP port, and the call waited out
    ``learner_timeout``. A 400 as for the two strings the same, nothing done."""
    c = KvCluster()
    try:
        leader, new, s, before, last = await _a_leader_and_a_new_node(c)
        port = free_port()
        for raft_addr in (f"localhost:{port}", f"[::ffff:127.0.0.1]:{port}"):
            body = {"id": 4, "raft_addr": raft_addr, "http_addr": f"127.0.0.1:{port}"}
            async with asyncio.timeout(5), s.post(url(leader, "/cluster/learners"), json=body) as r:
                error = (await r.json())["error"]
                assert r.status == 400, (r.status, error)
            assert error.startswith(f"ValueError: raft_addr {raft_addr!r} and http_addr '127.0.0.1:{port}' are one "
                                    "address"), error
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
        members = {"2": {"raft_addr": new.opts.raft_addr, "http_addr": new.opts.http_addr},
                   "3": {"raft_addr": f"localhost:{port}", "http_addr": f"127.0.0.1:{port}"}}
        async with asyncio.timeout(5), s.post(url(new, "/cluster/init"), json={"members": members}) as r:
            error = (await r.json())["error"]
            assert r.status == 400, (r.status, error)
        assert error.startswith(f"ValueError: member 3's raft_addr 'localhost:{port}' and http_addr "
                                f"'127.0.0.1:{port}' are one address"), error
        assert new.raft is not None and new.raft.metrics.last_log_index < 0
    finally:
        await c.close()
