"""The HTTP/JSON API of DESIGN §8 against in-process nodes on loopback ports: every path, the
redirect rule, 503 without a leader, membership changes and leader transfer over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import urllib.parse

import aiohttp
import msgspec
import pytest
import yarl

from openraft_py import BasicNode, ForwardToLeader, NodeId, RaftMetrics
from openraft_py.kv import cli
from openraft_py.kv import node as node_module
from openraft_py.kv.node import Conflict, KvNode
from openraft_py.kv.nodes import NodeAddrs, node_of

from .kv_helpers import STABLE_TIMEOUTS, KvCluster, free_port, members_of, node_options, until_true, url

pytestmark = pytest.mark.timeout(60)


def sess(c: KvCluster) -> aiohttp.ClientSession:
    assert c.session is not None
    return c.session


async def _a_leader(c: KvCluster) -> tuple[KvNode, aiohttp.ClientSession, dict[NodeId, NodeAddrs], int | None]:
    """Start ``c`` as a one-node cluster: its leader, the HTTP session, and the leader's
    members and last log index now (a refused call must leave both as they are)."""
    await c.start(1)
    leader = await c.wait_leader()
    assert leader.raft is not None
    return leader, sess(c), leader.nodes(), leader.raft.metrics.last_log_index


async def test_put_get_delete_cas_on_the_leader(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = sess(cluster)
    async with s.put(url(leader, "/kv/alpha"), data="one") as r:
        assert r.status == 200
        put = await r.json()
        assert set(put) == {"index"} and isinstance(put["index"], int)
    for consistency in ("", "?consistency=linearizable", "?consistency=lease", "?consistency=local"):
        async with s.get(url(leader, "/kv/alpha" + consistency)) as r:
            assert r.status == 200
            assert await r.text() == "one"
    async with s.get(url(leader, "/kv/missing")) as r:
        assert r.status == 404
        assert "error" in await r.json()
    # cas: mismatch leaves the value, match replaces it, null expected means absent
    async with s.post(url(leader, "/kv/alpha/cas"), json={"expected": "zero", "value": "two"}) as r:
        assert r.status == 200 and await r.json() == {"ok": False, "current": "one"}
    async with s.post(url(leader, "/kv/alpha/cas"), json={"expected": "one", "value": "two"}) as r:
        assert await r.json() == {"ok": True, "current": "two"}
    async with s.post(url(leader, "/kv/fresh/cas"), json={"expected": None, "value": "new"}) as r:
        assert await r.json() == {"ok": True, "current": "new"}
    # cas with value null deletes iff the value matches
    async with s.post(url(leader, "/kv/fresh/cas"), json={"expected": "other", "value": None}) as r:
        assert await r.json() == {"ok": False, "current": "new"}
    async with s.post(url(leader, "/kv/fresh/cas"), json={"expected": "new", "value": None}) as r:
        assert await r.json() == {"ok": True, "current": None}
    async with s.get(url(leader, "/kv/fresh")) as r:
        assert r.status == 404
    async with s.delete(url(leader, "/kv/alpha")) as r:
        assert r.status == 200
        d = await r.json()
        assert set(d) == {"index"} and d["index"] > put["index"]
    async with s.get(url(leader, "/kv/alpha")) as r:
        assert r.status == 404
    # a key with a slash (percent-encoded), unicode, an empty value
    async with s.put(url(leader, "/kv/a%2Fb%20%C3%A9"), data="") as r:
        assert r.status == 200
    async with s.get(url(leader, "/kv/a%2Fb%20%C3%A9")) as r:
        assert r.status == 200 and await r.text() == ""
    assert leader.sm is not None and leader.sm.get("a/b é") == ""
    # every node applied the same state
    await cluster.wait_applied(leader.raft.metrics.last_log_index)  # type: ignore[union-attr]
    datas = [n.sm.data for n in cluster.nodes.values()]  # type: ignore[union-attr]
    assert datas[0] == datas[1] == datas[2] == {"a/b é": ""}


async def test_status_on_every_node(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = sess(cluster)
    for n in cluster.nodes.values():
        async with s.get(url(n, "/cluster/status")) as r:
            assert r.status == 200
            st = await r.json()
        for field in ("id", "state", "term", "leader_id", "last_log_index", "committed_index",
                      "applied_index", "voters", "learners"):
            assert field in st
        assert st["id"] == n.id
        assert st["state"] == ("Leader" if n is leader else "Follower")
        assert st["leader_id"] == leader.id
        assert st["leader_http_addr"] == leader.opts.http_addr
        assert st["voters"] == [1, 2, 3] and st["learners"] == []
        assert st["configs"] == [[1, 2, 3]] and st["joint"] is False
        assert st["term"] >= 1 and isinstance(st["last_log_index"], int)
        assert st["nodes"]["2"] == members_of([cluster.nodes[2]])["2"]


async def test_follower_redirects_writes_and_non_local_reads(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = sess(cluster)
    f = cluster.followers(leader)[0]
    requests = [
        ("PUT", "/kv/k1", {"data": "v"}),
        ("DELETE", "/kv/k1", {}),
        ("POST", "/kv/k1/cas", {"json": {"expected": None, "value": "x"}}),
        ("GET", "/kv/k1", {}),
        ("GET", "/kv/k1?consistency=linearizable", {}),
        ("GET", "/kv/k1?consistency=lease", {}),
        ("POST", "/cluster/members", {"json": {"voters": [1, 2, 3], "retain": False}}),
        ("POST", "/cluster/transfer", {"json": {"to": f.id}}),
        ("POST", "/cluster/learners", {"json": {"id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}}),
    ]
    for method, path, kw in requests:
        async with s.request(method, url(f, path), allow_redirects=False, **kw) as r:
            assert r.status == 307, (method, path, r.status, await r.text())
            assert r.headers["Location"] == url(leader, path)
            assert await r.json() == {"leader_id": leader.id, "leader_http_addr": leader.opts.http_addr}
    assert "k1" not in leader.sm.data  # type: ignore[union-attr]
    # a client following the redirect writes through the follower's address
    async with s.put(url(f, "/kv/k2"), data="via-follower") as r:
        assert r.status == 200
        assert [h.status for h in r.history] == [307]
        index = (await r.json())["index"]
    # local reads are served by the follower itself once it applied the write
    await f.raft.wait(5).applied_index_at_least(index, "applied")  # type: ignore[union-attr]
    async with s.get(url(f, "/kv/k2?consistency=local"), allow_redirects=False) as r:
        assert r.status == 200 and await r.text() == "via-follower"
    async with s.get(url(f, "/kv/k2")) as r:  # linearizable, redirect followed
        assert r.status == 200 and await r.text() == "via-follower"


async def test_no_leader_gives_503() -> None:
    c = KvCluster()
    try:
        await c.start(1, init=False)
        n = c.nodes[1]
        s = sess(c)
        for method, path, kw in [
            ("PUT", "/kv/k", {"data": "v"}),
            ("DELETE", "/kv/k", {}),
            ("POST", "/kv/k/cas", {"json": {"expected": None, "value": "v"}}),
            ("GET", "/kv/k", {}),
            ("GET", "/kv/k?consistency=lease", {}),
            ("POST", "/cluster/members", {"json": {"voters": [1]}}),
            ("POST", "/cluster/transfer", {"json": {"to": 1}}),
            ("POST", "/cluster/learners", {"json": {"id": 2, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}}),
            ("DELETE", "/cluster/learners/2", {}),
        ]:
            async with s.request(method, url(n, path), allow_redirects=False, **kw) as r:
                assert r.status == 503, (method, path, r.status)
                body = await r.json()
                assert body["error"] and body["leader_id"] is None
                # never initialized: the answer says what to do (it said "retry later", which
                # never helps: the clients retried until their deadline, then said that)
                assert "node 1 is not in a cluster yet" in body["error"] and "cluster init" in body["error"], body
                # ... and safely for a member started again on an empty data directory (its
                # data lost), which answers the same: an init would start a second cluster.
                assert ("If this node was a member of a running cluster (its data directory lost or new), do not "
                        "init it, which would start a second cluster: its leader reaches it if it is still a member; "
                        "otherwise add it back with 'openraft-py cluster add-learner'") in body["error"], body
                assert body["initialized"] is False, body  # for clients: no use retrying this node
        async with s.get(url(n, "/kv/k?consistency=local")) as r:
            assert r.status == 404  # a local read needs no leader
        async with s.get(url(n, "/cluster/status")) as r:
            st = await r.json()
            assert st["leader_id"] is None and st["voters"] == []
        # init that does not include this node is refused; the right one works, a second 409s
        async with s.post(url(n, "/cluster/init"), json={"members": {"7": {"raft_addr": "127.0.0.1:1",
                                                                           "http_addr": "127.0.0.1:2"}}}) as r:
            assert r.status == 400
        async with s.post(url(n, "/cluster/init"), json={"members": members_of([n])}) as r:
            assert r.status == 200 and await r.json() == {"members": [1]}
        await n.raft.wait(5).state(n.raft.metrics.state.__class__.LEADER, "leads")  # type: ignore[union-attr]
        async with s.post(url(n, "/cluster/init"), json={"members": members_of([n])}) as r:
            assert r.status == 409
        async with s.put(url(n, "/kv/k"), data="v") as r:
            assert r.status == 200
    finally:
        await c.close()


async def test_a_follower_whose_leader_is_gone_gives_503_not_a_redirect_to_it(cluster: KvCluster) -> None:
    # The leader and the other follower stop: no quorum, no new leader. The follower left
    # redirected every write to the stopped leader for as long as that lasted.
    leader = await cluster.wait_leader()
    alone, other = cluster.followers(leader)
    await leader.stop()
    await other.stop()
    await alone.raft.wait(10).current_leader(None)  # type: ignore[union-attr]  # one election timeout
    async with sess(cluster).put(url(alone, "/kv/k"), data="v", allow_redirects=False) as r:
        assert r.status == 503, (r.status, await r.text())
        assert await r.json() == {"error": "no leader is known; retry later", "leader_id": None}


async def test_a_leader_that_removed_itself_says_so_in_its_503(cluster: KvCluster) -> None:
    """A leader that removed itself from the voters (``retain`` false) is in no membership
    and hears from no leader again: its 503 said "no leader is known; retry later", which no
    retry there ever mends. It says it is not in the membership it holds, naming the voters
    (the documented fields unchanged: ``error`` and ``leader_id``)."""
    leader = await cluster.wait_leader()
    assert leader.raft is not None
    others = sorted(n.id for n in cluster.followers(leader))
    s = sess(cluster)
    async with s.post(url(leader, "/cluster/members"), json={"voters": others, "retain": False}) as r:
        assert r.status == 200, await r.text()
    await leader.raft.wait(10).metrics(
        lambda m: leader.id not in m.membership_config.membership.nodes and m.current_leader is None,
        "the old leader is out of its membership, and knows no leader")
    async with s.put(url(leader, "/kv/k"), data="v", allow_redirects=False) as r:
        assert r.status == 503, (r.status, await r.text())
        body = await r.json()
    assert set(body) == {"error", "leader_id"} and body["leader_id"] is None, body
    index = leader.raft.metrics.membership_config.log_id.index  # type: ignore[union-attr]
    assert body["error"] == (
        f"no leader is known: node {leader.id} is not in the membership it holds (log index {index}: voters "
        f"{others}): it was removed from the cluster (send requests to those voters), or was added after that entry "
        "and is still catching up (retry later)"), body


async def test_a_leader_outside_the_membership_is_named_so_in_a_503(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the commit of a leader's own removal and the next election, a follower still
    names that leader, whose HTTP address the membership no longer holds: its 503 said "the
    HTTP address of leader 1 is unknown", as if the membership had lost an address. It says
    that leader is not in the membership (``leader_id`` still names it). (The window lasts
    an election: made here with a ``ForwardToLeader`` naming a node outside the membership.)"""
    leader = await cluster.wait_leader()
    assert leader.raft is not None
    gone = 9
    voters = sorted(cluster.nodes)

    async def forward(key: str, value: str) -> int:
        raise ForwardToLeader(gone, None)

    monkeypatch.setattr(leader, "put", forward)
    async with sess(cluster).put(url(leader, "/kv/k"), data="v", allow_redirects=False) as r:
        assert r.status == 503, (r.status, await r.text())
        body = await r.json()
    index = leader.raft.metrics.membership_config.log_id.index  # type: ignore[union-attr]
    assert body == {"error": f"leader {gone} is not in the membership this node holds (log index {index}: voters "
                             f"{voters}): it removed itself, and those voters elect the next leader, or this node has "
                             "yet to receive the entry adding it; retry later",
                    "leader_id": gone}, body


async def test_learner_membership_and_transfer_over_http(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = sess(cluster)
    for i in range(20):
        async with s.put(url(leader, f"/kv/pre{i}"), data=str(i)) as r:
            assert r.status == 200
    n4: KvNode = await cluster.start_node(4)
    f = cluster.followers(leader)[0]
    body = {"id": 4, "raft_addr": n4.opts.raft_addr, "http_addr": n4.opts.http_addr}
    async with s.post(url(f, "/cluster/learners"), json=body) as r:  # via a redirect
        assert r.status == 200, await r.text()
        index = (await r.json())["index"]
    assert n4.raft is not None and n4.raft.metrics.last_log_index >= index  # holds the log on the answer
    await n4.raft.wait(5).applied_index_at_least(index, "learner applied")
    assert n4.sm is not None and n4.sm.get("pre19") == "19"
    async with s.post(url(leader, "/cluster/members"), json={"voters": [1, 2, 3, 4], "retain": False}) as r:
        assert r.status == 200, await r.text()
        res = await r.json()
        assert res["voters"] == [1, 2, 3, 4] and res["learners"] == []
    async with s.get(url(n4, "/cluster/status")) as r:
        st = await r.json()
    assert st["voters"] == [1, 2, 3, 4] and st["leader_http_addr"] == leader.opts.http_addr
    # hand leadership to node 4, then write through the new leader
    async with s.post(url(leader, "/cluster/transfer"), json={"to": 4}) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"leader_id": 4}
    async with s.put(url(leader, "/kv/after"), data="transfer") as r:  # redirected to node 4
        assert r.status == 200 and r.history and r.history[0].headers["Location"].startswith(url(n4, ""))
    # back to three voters (node 4 leaves; it hands leadership over first)
    async with s.post(url(n4, "/cluster/members"), json={"voters": [1, 2, 3], "retain": False}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["voters"] == [1, 2, 3]
    new_leader = await cluster.wait_leader(among=[1, 2, 3])
    async with s.put(url(new_leader, "/kv/final"), data="x") as r:
        assert r.status == 200
    async with s.get(url(new_leader, "/kv/after")) as r:
        assert await r.text() == "transfer"


async def test_every_key_within_max_key_bytes_is_served(cluster: KvCluster) -> None:
    """A key of up to ``MAX_KEY_BYTES`` UTF-8 bytes is taken whatever its characters. Each
    byte of a non-ASCII or reserved character is three in the request line (``%C3%A9``), and
    such keys used to get aiohttp's plain-text 400 "Got more than 8190 bytes" (and a logged
    traceback) from 2731 bytes on. A longer key still gets the service's JSON 400."""
    from openraft_py.kv.client import KvClient
    from openraft_py.kv.node import MAX_KEY_BYTES

    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    keys = ["\u00e9" * (MAX_KEY_BYTES // 2), "\U0001f600" * (MAX_KEY_BYTES // 4), "/" * MAX_KEY_BYTES,
            "%" * (MAX_KEY_BYTES - 1) + "?"]
    async with KvClient([f.opts.http_addr], deadline=10) as c:  # through a follower: the redirect too
        for i, key in enumerate(keys):
            assert len(key.encode()) <= MAX_KEY_BYTES
            r = await c.put(key, f"v{i}")
            assert r.ok and r.status == 200, r.error
            r = await c.get(key)
            assert r.ok and r.value == f"v{i}", r.error
            r = await c.cas(key, f"v{i}", None)
            assert r.ok and r.json() == {"ok": True, "current": None}, r.error
    # (KvClient refuses a longer key before sending it: sent as another client would.)
    quoted_key = urllib.parse.quote("\u00e9" * (MAX_KEY_BYTES // 2 + 1), safe="")
    async with sess(cluster).put(yarl.URL(url(leader, f"/kv/{quoted_key}"), encoded=True), data=b"v") as resp:
        assert resp.status == 400 and (await resp.json())["error"] == f"the key is longer than {MAX_KEY_BYTES} bytes"


async def test_init_with_two_members_at_one_address_is_400_and_the_node_stays_new() -> None:
    """``{"1": {"raft_addr": A}, "2": {"raft_addr": A}}`` (a copy-paste slip) was taken: node 1
    then dialled itself as node 2, and the two-voter cluster never elected a leader."""
    c = KvCluster()
    try:
        await c.start(2, init=False)
        s = sess(c)
        n1, n2 = c.nodes[1], c.nodes[2]
        good = members_of([n1, n2])
        for kind in ("raft_addr", "http_addr"):
            bad = {k: dict(v) for k, v in good.items()}
            bad["2"][kind] = bad["1"][kind]
            async with s.post(url(n1, "/cluster/init"), json={"members": bad}) as r:
                error = (await r.json())["error"]
                assert r.status == 400, error
                assert f"member 2's {kind} {good['1'][kind]!r} is also member 1's {kind}" in error, error
        assert n1.raft is not None and n1.raft.metrics.last_log_index < 0  # still new: init works
        async with s.post(url(n1, "/cluster/init"), json={"members": good}) as r:
            assert r.status == 200, await r.text()
        await c.wait_leader(timeout=10)
    finally:
        await c.close()


async def test_a_learner_at_a_member_s_address_spelled_as_a_name_is_409() -> None:
    """``POST /cluster/learners`` with ``raft_addr`` ``localhost:P``, where P is the raft
    port of member 1 at ``127.0.0.1:P`` (a typo in the port): the addresses differ as
    strings, so it was taken; the leader's replication reached node 1, whose handshake
    answered as node 1, and the call waited out ``learner_timeout`` (60 s). The name's
    addresses are compared with the members' IP addresses: 409, nothing done."""
    c = KvCluster()
    try:
        leader, s, before, last = await _a_leader(c)
        for kind in ("raft_addr", "http_addr"):
            theirs = getattr(leader.opts, kind)
            body = {"id": 4, "raft_addr": f"localhost:{theirs.rpartition(':')[2]}", "http_addr": f"127.0.0.1:{free_port()}"}
            async with asyncio.timeout(10), s.post(url(leader, "/cluster/learners"), json=body) as r:
                error = (await r.json())["error"]
                assert r.status == 409, (r.status, error)
            assert error.startswith(f"raft_addr {body['raft_addr']!r} is node 1's {kind} {theirs!r} ('localhost' "
                                    "resolves to 127.0.0.1): each node needs addresses of its own"), error
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
    finally:
        await c.close()


async def test_init_with_a_member_whose_raft_host_does_not_resolve_is_400_and_the_node_stays_new() -> None:
    """A member of ``POST /cluster/init`` whose raft host does not resolve (a typo) was taken:
    the node initialized a cluster it could never reach a quorum of, for good (init is
    refused once a node is not new; only ``force-recover`` undoes it). The node resolves the
    other members' names first: 400 naming the member's address, nothing done."""
    c = KvCluster()
    try:
        await c.start(2, init=False)
        s = sess(c)
        n1, n2 = c.nodes[1], c.nodes[2]
        good = members_of([n1, n2])
        bad = {**good, "3": {"raft_addr": "no-such-host.invalid:21003", "http_addr": f"127.0.0.1:{free_port()}"}}
        async with asyncio.timeout(10), s.post(url(n1, "/cluster/init"), json={"members": bad}) as r:
            error = (await r.json())["error"]
            assert r.status == 400, error
        assert error.startswith("ValueError: member 3's raft_addr 'no-such-host.invalid:21003': the host "
                                "'no-such-host.invalid' does not resolve on node 1"), error
        assert n1.raft is not None and n1.raft.metrics.last_log_index < 0  # still new: init works
        # Member 2 at member 1's raft address, spelled as a name: the same address.
        n1_port = n1.opts.raft_addr.rpartition(":")[2]
        bad = {**good, "2": {"raft_addr": f"localhost:{n1_port}", "http_addr": n2.opts.http_addr}}
        async with asyncio.timeout(10), s.post(url(n1, "/cluster/init"), json={"members": bad}) as r:
            error = (await r.json())["error"]
            assert r.status == 400, error
        assert error == (f"ValueError: member 2's raft_addr 'localhost:{n1_port}' is also member 1's raft_addr "
                         f"{n1.opts.raft_addr!r} ('localhost' resolves to 127.0.0.1): each member needs addresses of "
                         "its own"), error
        assert n1.raft.metrics.last_log_index < 0
        port = n2.opts.raft_addr.rpartition(":")[2]
        good["2"]["raft_addr"] = f"localhost:{port}"  # (a name that resolves is taken)
        async with s.post(url(n1, "/cluster/init"), json={"members": good}) as r:
            assert r.status == 200, await r.text()
        await c.wait_leader(timeout=10)
    finally:
        await c.close()


async def test_transfer_to_a_non_voter_is_400(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    s = sess(cluster)
    async with s.post(url(leader, "/cluster/transfer"), json={"to": 42}) as r:
        assert r.status == 400 and "error" in await r.json()
    async with s.post(url(leader, "/cluster/members"), json={"voters": [1, 2, 42]}) as r:
        assert r.status == 400, await r.text()
        error = (await r.json())["error"]
        assert error.startswith("LearnerNotFound: node 42 is not a learner: add it first (openraft-py cluster "
                                "add-learner --id 42"), error  # (the library's hint names add_learner)
    assert (await asyncio.wait_for(cluster.wait_leader(), 5)) is leader


async def test_adding_a_voter_as_a_learner_is_409_and_changes_nothing(cluster: KvCluster) -> None:
    """``POST /cluster/learners`` with the id of a voter (a typo, or a replaced machine's id)
    is refused with 409 before anything is logged. It used to answer 200 ("added as a
    learner") and write the new addresses into the voter's membership entry: the leader then
    replicated to the wrong address and the voter was cut off, with every redirect to it
    broken. A follower still answers with the redirect; re-adding a learner is accepted."""
    leader = await cluster.wait_leader()
    s = sess(cluster)
    f = cluster.followers(leader)[0]
    assert leader.raft is not None
    before = leader.nodes()
    last = leader.raft.metrics.last_log_index
    for nid in (f.id, leader.id):
        body = {"id": nid, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 409, error
            assert f"node {nid} is a voter" in error, error
            assert f"To move voter {nid} to other addresses, make it a learner first" in error, error
        async with s.post(url(f, "/cluster/learners"), json=body, allow_redirects=False) as r:
            assert r.status == 307  # the leader decides
    assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
    # a learner (here, node 4 added twice with the same addresses) is added as before
    n4 = await cluster.start_node(4)
    body = {"id": 4, "raft_addr": n4.opts.raft_addr, "http_addr": n4.opts.http_addr}
    for _ in range(2):
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 200, await r.text()
    async with s.put(url(f, "/kv/k"), data="v") as r:  # the redirect to the leader still works
        assert r.status == 200, await r.text()


async def test_a_learner_whose_raft_host_does_not_resolve_is_refused_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``POST /cluster/learners`` with a ``raft_addr`` whose host does not resolve (a typo)
    added the learner and answered 503 only when ``learner_timeout`` (60 s) ran out; the
    learner stayed in the membership, unreachable. The leader resolves it first (in a thread,
    bounded): a name that does not exist is a 400 naming the address at once, a resolver that
    does not answer in time a 503, and nothing is done either way; a name that resolves
    (``localhost``) is taken."""
    c = KvCluster()
    try:
        leader, s, before, last = await _a_leader(c)
        bad = "no-such-host.invalid:21001"  # (RFC 6761: a name under .invalid never resolves)
        body = {"id": 4, "raft_addr": bad, "http_addr": f"127.0.0.1:{free_port()}"}
        async with asyncio.timeout(10), s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 400, (r.status, error)
        assert error.startswith(f"ValueError: raft_addr {bad!r}: the host 'no-such-host.invalid' does not resolve on "
                                "node 1 (Name or service not known)"), error
        assert "nothing was done" in error, error
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
        # An IPv6 address with a zone (an interface) that does not exist: taken for an IP
        # address, it was added as well.
        body["raft_addr"] = "[fe80::1%no-such-interface]:21001"
        async with asyncio.timeout(10), s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 400, (r.status, error)
        assert "the host 'fe80::1%no-such-interface' does not resolve on node 1" in error, error
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before

        release = asyncio.Event()

        async def hangs(host: str, port: int) -> list[tuple[int, str]]:
            await release.wait()
            return [(socket.AF_INET, "127.0.0.1")]

        monkeypatch.setattr(node_module, "RESOLVE_TIMEOUT", 0.3)
        monkeypatch.setattr(node_module, "resolve", hangs)
        body["raft_addr"] = "slow.example:21001"
        async with asyncio.timeout(10), s.post(url(leader, "/cluster/learners"), json=body) as r:
            answer = await r.json()
            error = answer["error"]
            assert r.status == 503, (r.status, error)
        assert "resolving 'slow.example' took more than 0.3s" in error and "nothing was done" in error, error
        # Said in the JSON too, for clients: not the 503 of a bound that ran out with the
        # learner added (``KvClient`` reads it as a refusal; ``cluster add-learner`` exits 1).
        assert answer.get("outcome_unknown") is False, answer
        assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
        # Resolutions that hang hold at most MAX_RESOLVING threads (slots), whatever the
        # requests: an init of thousands of names did not resolve them all at once.
        monkeypatch.setattr(leader, "_resolve_slots", asyncio.Semaphore(2))
        started: list[str] = []

        async def counted(host: str, port: int) -> list[tuple[int, str]]:
            started.append(host)
            return await hangs(host, port)

        monkeypatch.setattr(node_module, "resolve", counted)
        addrs = [(f"a{i}", f"n{i}.example:1") for i in range(50)]
        with pytest.raises(node_module.ServiceUnavailable, match=r"took more than 0\.3s"):
            await leader._check_resolve(addrs)
        assert len(started) == 2, started
        release.set()
        await until_true("the slots are free", lambda: not leader._resolving, timeout=5)
        await leader._check_resolve(addrs[:3])  # (the fake resolver answers at once now)
        monkeypatch.undo()

        n2 = await c.start_node(2)
        port = n2.opts.raft_addr.rpartition(":")[2]
        body = {"id": 2, "raft_addr": f"localhost:{port}", "http_addr": n2.opts.http_addr}
        async with asyncio.timeout(20), s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 200, await r.text()
        assert leader.nodes()[2].raft == f"localhost:{port}"
    finally:
        await c.close()


async def test_a_voter_moves_to_new_addresses_as_the_409_says(cluster: KvCluster,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Moving a voter to other ports, as the 409 to ``POST /cluster/learners`` with its id and
    the guide say: it leaves the voters as a learner (``retain``), restarts on its data at the
    new addresses, is added again with them and joins the voters again; it holds every write
    and the leader sends to it at its new address. (The 409 used to say only that a voter's
    machine is replaced by a new node id, and the guide had no way to move a voter.)
    Restarted on the new addresses before the membership has them, it warns once that it is
    recorded at others (it said nothing: only the leader's 'unreachable' at the old ones)."""
    leader = await cluster.wait_leader()
    s = sess(cluster)
    moving = cluster.followers(leader)[0]
    others = sorted(i for i in cluster.nodes if i != moving.id)
    new_addrs = {"raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}
    async with s.post(url(leader, "/cluster/learners"), json={"id": moving.id, **new_addrs}) as r:
        assert r.status == 409 and "make it a learner first" in (await r.json())["error"]
    async with s.put(url(leader, "/kv/before"), data="1") as r:
        assert r.status == 200, await r.text()
    async with s.post(url(leader, "/cluster/members"), json={"voters": others, "retain": True}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["learners"] == [moving.id]
    await moving.stop()
    moved = KvNode(msgspec.structs.replace(moving.opts, **new_addrs))
    with caplog.at_level(logging.WARNING, logger="openraft_py.kv.node"):
        await moved.start()
    warned = [r.getMessage() for r in caplog.records if "records this node at other addresses" in r.getMessage()]
    assert len(warned) == 1, warned
    assert (f"--raft-addr {new_addrs['raft_addr']} (recorded: {moving.opts.raft_addr}); "
            f"--http-addr {new_addrs['http_addr']} (recorded: {moving.opts.http_addr})") in warned[0], warned
    cluster.nodes[moving.id] = moved
    async with s.put(url(leader, "/kv/while"), data="2") as r:
        assert r.status == 200, await r.text()
    async with s.post(url(leader, "/cluster/learners"), json={"id": moving.id, **new_addrs}) as r:
        assert r.status == 200, await r.text()
    async with s.post(url(leader, "/cluster/members"), json={"voters": sorted(cluster.nodes)}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["voters"] == sorted(cluster.nodes)
    async with s.put(url(leader, "/kv/after"), data="3") as r:
        assert r.status == 200, await r.text()
    assert leader.nodes()[moving.id] == NodeAddrs(new_addrs["raft_addr"], new_addrs["http_addr"])
    assert leader.raft is not None
    await cluster.wait_applied(leader.raft.metrics.last_log_index)
    assert moved.sm is not None and [moved.sm.get(k) for k in ("before", "while", "after")] == ["1", "2", "3"]
    caplog.clear()  # restarted where the membership records it: no warning
    await moved.stop()
    with caplog.at_level(logging.WARNING, logger="openraft_py.kv.node"):
        cluster.nodes[moving.id] = again = KvNode(moved.opts)
        await again.start()
    assert not [r for r in caplog.records if "records this node at other addresses" in r.getMessage()]


async def test_delete_cluster_learner_removes_it_and_frees_its_addresses(cluster: KvCluster) -> None:
    """``POST /cluster/members`` without a learner keeps it, with ``retain`` or not;
    ``DELETE /cluster/learners/{id}`` removes it (200 with the membership), whether its node
    runs or is gone; its addresses are then free for another node. Not a member is 404, a
    voter 409 (saying how a voter leaves), a malformed id 400, a follower redirects; none
    of these logs anything. There was no way to remove a learner whose node was gone."""
    leader = await cluster.wait_leader()
    assert leader.raft is not None
    s = sess(cluster)
    n4 = await cluster.start_node(4)
    addrs4 = {"raft_addr": n4.opts.raft_addr, "http_addr": n4.opts.http_addr}
    async with s.post(url(leader, "/cluster/learners"), json={"id": 4, **addrs4}) as r:
        assert r.status == 200, await r.text()
    for retain in (False, True):
        async with s.post(url(leader, "/cluster/members"), json={"voters": [1, 2, 3], "retain": retain}) as r:
            assert r.status == 200 and (await r.json())["learners"] == [4], await r.text()

    last = leader.raft.metrics.last_log_index
    f = cluster.followers(leader)[0]
    for path, status, needle in (
        ("/cluster/learners/9", 404, "node 9 is not a member of the cluster (the members are 1, 2, 3, 4)"),
        (f"/cluster/learners/{f.id}", 409, "cluster members --voters"),
        ("/cluster/learners/x", 400, "learner id 'x' is not a decimal node id"),
        ("/cluster/learners/-1", 400, "is not a decimal node id"),
        ("/cluster/learners/%EF%BC%94", 400, "is not a decimal node id"),  # a full-width 4
        ("/cluster/learners/99999999999999999999999", 400, "learner id"),
    ):
        async with s.delete(url(leader, path)) as r:
            body = await r.json()
            assert r.status == status and needle in body["error"], (path, r.status, body)
    async with s.delete(url(f, "/cluster/learners/4"), allow_redirects=False) as r:
        assert r.status == 307 and r.headers["Location"] == url(leader, "/cluster/learners/4"), await r.text()
    assert leader.raft.metrics.last_log_index == last, "a refused removal logged something"

    # Its node gone for good, it is removed all the same.
    await n4.stop()
    del cluster.nodes[4]
    async with s.put(url(leader, "/kv/x"), data="y") as r:  # (sent to node 4 too: its errors are counted)
        assert r.status == 200, await r.text()
    async with s.get(url(leader, "/metrics")) as r:
        assert 'openraft_replication_lag{peer="4"}' in await r.text()
    async with s.delete(url(f, "/cluster/learners/4")) as r:  # via the redirect
        body = await r.json()
        assert r.status == 200 and body["voters"] == [1, 2, 3] and body["learners"] == [], body
        assert isinstance(body["index"], int) and body["index"] > last
    assert 4 not in leader.nodes()
    await leader.raft.wait(5).metrics(lambda m: m.replication is not None and 4 not in m.replication,
                                      "no replication to node 4")
    async with s.get(url(leader, "/metrics")) as r:  # its per-peer series are gone
        assert 'peer="4"' not in await r.text()
    async with s.delete(url(leader, "/cluster/learners/4")) as r:
        assert r.status == 404, await r.text()
    # Its addresses are free: node 5 may take them.
    opts5 = msgspec.structs.replace(node_options(5, cluster.root, raft_config=STABLE_TIMEOUTS),
                                    raft_addr=addrs4["raft_addr"], http_addr=addrs4["http_addr"])
    cluster.nodes[5] = n5 = KvNode(opts5)
    await n5.start()
    async with s.post(url(leader, "/cluster/learners"), json={"id": 5, **addrs4}) as r:
        assert r.status == 200, await r.text()
    assert leader.nodes()[5] == NodeAddrs(n5.opts.raft_addr, n5.opts.http_addr)


async def test_a_learner_at_another_members_address_is_409_and_changes_nothing(cluster: KvCluster) -> None:
    """``POST /cluster/learners`` with a raft or HTTP address another member has (a copied
    line, a wrong port) is refused with 409 before anything is logged. It used to be added:
    the leader's replication to it reached that member, whose transport answered as the
    other node, so the learner never caught up (503 after ``learner_timeout``), and a
    redirect to it would have reached that member. Both addresses the same is a 400. The
    same learner added again, or moved to addresses of its own, is accepted."""
    leader = await cluster.wait_leader()
    s = sess(cluster)
    f = cluster.followers(leader)[0]
    assert leader.raft is not None and f.raft is not None
    before = leader.nodes()
    last = leader.raft.metrics.last_log_index
    fresh = f"127.0.0.1:{free_port()}"
    for raft_addr, http_addr, named in (
        (f.opts.raft_addr, fresh, f"raft_addr {f.opts.raft_addr!r} is node {f.id}'s raft_addr"),
        (fresh, f.opts.http_addr, f"http_addr {f.opts.http_addr!r} is node {f.id}'s http_addr"),
        (leader.opts.http_addr, fresh, f"raft_addr {leader.opts.http_addr!r} is node {leader.id}'s http_addr"),
    ):
        body = {"id": 4, "raft_addr": raft_addr, "http_addr": http_addr}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 409, error
            assert named in error, error
    async with s.post(url(leader, "/cluster/learners"), json={"id": 4, "raft_addr": fresh, "http_addr": fresh}) as r:
        error = (await r.json())["error"]
        assert r.status == 400, error
        assert "raft_addr and http_addr are both" in error, error
    assert leader.raft.metrics.last_log_index == last and leader.nodes() == before
    # node 4 added, added again, then moved (restarted on new ports): each is accepted
    n4 = await cluster.start_node(4)
    for _ in range(2):
        body = {"id": 4, "raft_addr": n4.opts.raft_addr, "http_addr": n4.opts.http_addr}
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            assert r.status == 200, await r.text()
    await n4.stop()
    del cluster.nodes[4]
    n4 = await cluster.start_node(4)  # the same data directory, new ports
    body = {"id": 4, "raft_addr": n4.opts.raft_addr, "http_addr": n4.opts.http_addr}
    async with s.post(url(leader, "/cluster/learners"), json=body) as r:
        assert r.status == 200, await r.text()
    assert leader.nodes()[4] == NodeAddrs(n4.opts.raft_addr, n4.opts.http_addr)
    # ... and node 5 may not take node 4's addresses
    body = {"id": 5, "raft_addr": n4.opts.raft_addr, "http_addr": f"127.0.0.1:{free_port()}"}
    async with s.post(url(leader, "/cluster/learners"), json=body) as r:
        assert r.status == 409, await r.text()
        assert "is node 4's raft_addr" in (await r.json())["error"]


async def test_cli_add_learner_of_a_node_not_running_says_it_was_added(capsys: pytest.CaptureFixture[str]) -> None:
    """``openraft-py cluster add-learner`` for a node that is not running at the address
    given exits 1 saying the learner was added but has not caught up, whether the leader's
    503 came first (its ``learner_timeout``) or the client's ``--timeout`` ran out. It said
    "outcome unknown (it may or may not have been applied)" and exited 3, though the
    membership held the learner."""
    c = KvCluster()
    try:
        await c.start(3, learner_timeout=3.0)
        leader = await c.wait_leader()
        endpoints = ",".join(n.opts.http_addr for n in c.nodes.values())
        for nid, timeout in ((4, "10"), (5, "1")):  # the leader's 503 first; the client's timeout first
            raft_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            code = await asyncio.to_thread(cli.main, ["cluster", "add-learner", "--endpoints", endpoints, "--id",
                                                      str(nid), "--raft-addr", raft_addr, "--http-addr", http_addr,
                                                      "--timeout", timeout])
            err = capsys.readouterr().err
            assert code == 1, (nid, code, err)
            assert f"n{nid} was added as a learner but has not caught up" in err, err
            assert f"is it running at {raft_addr}?" in err and "outcome unknown" not in err, err
            assert f"if the id was wrong, remove it with 'cluster remove-learner --id {nid}'" in err, err
            assert err.count("\n") == 1, err
            assert leader.nodes()[nid] == NodeAddrs(raft_addr, http_addr)
    finally:
        await c.close()


async def test_an_add_learner_waiting_for_a_learner_removed_meanwhile_is_409(cluster: KvCluster) -> None:
    """``POST /cluster/learners`` waits until the learner caught up; a ``DELETE`` of it
    meanwhile ends that wait at once with 409 (the cluster's state changed under it), not
    a 400 as if the request were malformed."""
    leader = await cluster.wait_leader()
    assert leader.raft is not None
    await leader.raft.ensure_linearizable()
    s = sess(cluster)
    body = {"id": 4, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}
    adding = asyncio.ensure_future(s.post(url(leader, "/cluster/learners"), json=body))
    try:
        def added(m: RaftMetrics) -> bool:  # (committed: a removal before that is refused with InProgress)
            lid = m.membership_config.log_id
            return (4 in m.membership_config.membership.nodes and lid is not None and m.committed is not None
                    and m.committed.index >= lid.index)

        await leader.raft.wait(5).metrics(added, "node 4 added, its entry committed")
        async with s.delete(url(leader, "/cluster/learners/4")) as r:
            assert r.status == 200, await r.text()
        r = await asyncio.wait_for(adding, 5)
        async with r:
            error = (await r.json())["error"]
            assert r.status == 409, error
            assert "node 4 was removed from the membership" in error and "add it again" in error, error
    finally:
        adding.cancel()


async def test_cli_remove_learner(cluster: KvCluster, capsys: pytest.CaptureFixture[str]) -> None:
    """``openraft-py cluster remove-learner --id N``: exit 0 printing the membership once the
    learner left (asked of a follower: the redirect is followed); exit 1 in one line when
    the id is not a member or is a voter (nothing done)."""
    leader = await cluster.wait_leader()
    f = cluster.followers(leader)[0]
    raft_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    assert leader.raft is not None
    await leader.raft.ensure_linearizable()  # its first entry committed: it takes membership changes
    # node 4 is not running: added without waiting for it to catch up
    await leader.raft.add_learner(4, node_of(raft_addr, http_addr), blocking=False)
    assert 4 in leader.nodes()

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["cluster", "remove-learner", "--endpoints", f.opts.http_addr, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await asyncio.to_thread(run, "--id", "4")
    assert code == 0 and err == "", (code, out, err)
    lines = out.splitlines()
    assert lines[0].startswith("n4 removed (log index ") and lines[1:] == ["voters: 1,2,3", "learners: -"], out
    assert 4 not in leader.nodes()
    for nid, needle in (("4", "HTTP 404"), ("7", "node 7 is not a member"), (str(f.id), "HTTP 409")):
        code, out, err = await asyncio.to_thread(run, "--id", nid, "--timeout", "5")
        assert code == 1 and out == "" and err.count("\n") == 1, (nid, code, out, err)
        assert f"remove-learner {nid} failed" in err and needle in err, err


async def test_a_request_waiting_when_the_node_is_stopped_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request still waiting when the node is asked to stop (here an add-learner waiting
    for a learner that is not running) gets 503 "the node has stopped", logged at INFO: the
    stop was asked for. It was an ERROR, at every orderly stop with such a request."""
    caplog.set_level(logging.INFO, logger="openraft_py.kv.http_api")
    c = KvCluster()
    try:
        await c.start(1, learner_timeout=30.0)
        leader = await c.wait_leader()
        body = {"id": 4, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}

        async def add() -> tuple[int, str]:
            async with sess(c).post(url(leader, "/cluster/learners"), json=body) as r:
                return r.status, (await r.json())["error"]

        waiting = asyncio.ensure_future(add())
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while leader.inflight == 0:  # the request reached the node and waits
            assert loop.time() < end and not waiting.done()
            await asyncio.sleep(0.01)
        await leader.stop()
        status, error = await asyncio.wait_for(waiting, 10)
        assert status == 503 and error.startswith("the node has stopped"), (status, error)
    finally:
        await c.close()
    mine = [r for r in caplog.records if r.name == "openraft_py.kv.http_api"]
    assert not [r for r in mine if r.levelno >= logging.WARNING], [r.getMessage() for r in mine]
    assert any("the node has stopped" in r.getMessage() for r in mine), [r.getMessage() for r in mine]


async def test_add_learner_without_a_quorum_says_the_learner_is_not_added(capsys: pytest.CaptureFixture[str]) -> None:
    """With most voters down, the membership entry adding a learner cannot commit: the
    leader's 503 says the node is not added yet and asks whether a majority runs (it said
    the node "was added as a learner but did not catch up"), and ``cluster add-learner``
    reports the outcome as unknown (exit 3), not as a learner added."""
    c = KvCluster()
    try:
        await c.start(3, learner_timeout=1.0)
        leader = await c.wait_leader()
        for f in c.followers(leader):
            await f.stop()
        raft_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        code = await asyncio.to_thread(cli.main, ["cluster", "add-learner", "--endpoints", leader.opts.http_addr,
                                                  "--id", "4", "--raft-addr", raft_addr, "--http-addr", http_addr,
                                                  "--timeout", "10"])
        err = capsys.readouterr().err
        assert code == 3, (code, err)
        assert "node 4 is not added yet: the membership entry adding it did not commit" in err, err
        assert "was added as a learner" not in err, err
    finally:
        await c.close()


async def test_promoting_learners_that_never_caught_up_is_409() -> None:
    """Learners 4 and 5 were added but never started: making {1, 4, 5} the voters would
    leave no majority able to commit (the cluster would stall), so the leader answers 409
    (``LearnerIsLagging``) and logs nothing. ``allow_lagging`` is a known field; with a
    majority caught up ({1, 2, 3, 4}) the change goes through."""
    c = KvCluster()
    try:
        await c.start(3, learner_timeout=0.3)
        leader = await c.wait_leader()
        s = sess(c)
        for nid in (4, 5):
            body = {"id": nid, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}
            async with s.post(url(leader, "/cluster/learners"), json=body) as r:
                assert r.status == 503, await r.text()  # added, but not caught up within learner_timeout
        assert leader.raft is not None
        last = leader.raft.metrics.last_log_index
        async with s.post(url(leader, "/cluster/members"), json={"voters": [1, 4, 5], "allow_lagging": False}) as r:
            error = (await r.json())["error"]
            assert r.status == 409, error
            assert error.startswith("LearnerIsLagging: nodes [4, 5] ") and "allow_lagging" in error, error
        assert leader.raft.metrics.last_log_index == last
        async with s.post(url(leader, "/cluster/members"), json={"voters": [1, 2, 3, 4], "allow_lagging": False}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["voters"] == [1, 2, 3, 4]
        async with s.put(url(leader, "/kv/k"), data="v") as r:
            assert r.status == 200
    finally:
        await c.close()


async def test_stop_is_bounded_with_a_write_stuck_without_quorum(cluster: KvCluster) -> None:
    leader = await cluster.wait_leader()
    for f in cluster.followers(leader):
        await f.stop()
    s = sess(cluster)

    async def stuck_put() -> tuple[int, str] | str:
        try:
            async with s.put(url(leader, "/kv/stuck"), data="v") as r:
                return r.status, (await r.json())["error"]
        except aiohttp.ClientError as e:
            return type(e).__name__

    task = asyncio.ensure_future(stuck_put())
    await asyncio.sleep(0.3)
    assert not task.done()  # no quorum: the write cannot commit
    # a client with a connection open before the stop (one connection: it is reused)
    kept = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=5))
    try:
        async with kept.get(url(leader, "/cluster/status")) as r:
            assert r.status == 200
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stopping = asyncio.ensure_future(leader.stop())
        await asyncio.sleep(0.2)  # within the grace the stuck write is given
        # the idle connection was answered 408 and closed by the stop at once (the client saw
        # it closed before it used it again), and a new connection is refused: nothing was sent
        with pytest.raises(aiohttp.ClientConnectorError):
            async with kept.get(url(leader, "/cluster/status")):
                pass
    finally:
        await kept.close()
    await asyncio.wait_for(stopping, 15)
    assert loop.time() - t0 < 10
    # the write waiting for a quorum gets a definite "stopped" answer, never an acknowledgement
    status, error = await asyncio.wait_for(task, 5)  # type: ignore[misc]
    assert status == 503 and "stopped" in error



async def test_a_transfer_that_another_one_overtook_is_a_conflict_at_once(cluster: KvCluster) -> None:
    """Two transfers asked of the leader at once, to different voters: one of them takes
    over (the first, if its target was already caught up and told at once; else the later
    one, which replaced it). The other caller is told at once that another node took over
    (``Conflict``, answered 409), where it used to wait out four election timeouts (8 s
    here) for a node that would never lead and get 503, which the CLI reports as an
    unknown outcome."""
    leader = await cluster.wait_leader()
    a, b = cluster.followers(leader)
    results = await asyncio.wait_for(
        asyncio.gather(leader.transfer(a.id), leader.transfer(b.id), return_exceptions=True), 6.0
    )
    won = [n for n, r in zip((a, b), results, strict=True) if r == n.id]
    assert len(won) == 1, results
    winner = won[0]
    loser, lost = next((n, r) for n, r in zip((a, b), results, strict=True) if n is not winner)
    assert isinstance(lost, Conflict), lost
    assert f"node {winner.id} took over, not node {loser.id}" in str(lost)


async def test_a_transfer_to_the_leader_itself_while_it_hands_over_names_the_target(cluster: KvCluster) -> None:
    """A transfer to the leader's own id while it hands leadership to another voter (a
    ``cluster transfer --to 1`` after a ``--to 2`` on leader 1) answered 200 ``{"leader_id":
    1}`` at once, and node 2 took over a moment later: the caller was told the wrong node
    leads. Now ``ForwardToLeader`` naming the target (a 307 to it over HTTP), as a write."""
    leader = await cluster.wait_leader()
    a, _ = cluster.followers(leader)
    assert leader.raft is not None
    await leader.raft.trigger.transfer_leader(a.id)
    with pytest.raises(ForwardToLeader) as ei:
        await leader.transfer(leader.id)
    assert ei.value.leader_id == a.id
    await leader.raft.wait(10).current_leader(a.id, f"n{a.id} leads")


async def test_a_transfer_the_leader_gave_up_says_that_it_still_leads(
        cluster: KvCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target never takes over (here it ignores the notice, as a node that died right
    after it would): the leader gives the transfer up after two election timeouts and takes
    writes again. The 503 said only "node 2 did not take over within 8.0s", which the command
    line reports as an unknown outcome; it now says that the leader still leads and takes
    writes again, and where to look for why."""
    from openraft_py.kv import rejoin

    leader = await cluster.wait_leader()
    a, _ = cluster.followers(leader)
    handle = rejoin.GuardedRaft.handle_transfer_leader

    async def deaf_target(self: rejoin.GuardedRaft, req: object) -> None:
        if self.guard.node_id != a.id:
            await handle(self, req)  # type: ignore[arg-type]

    monkeypatch.setattr(rejoin.GuardedRaft, "handle_transfer_leader", deaf_target)
    assert leader.raft is not None
    term = leader.raft.metrics.current_term
    async with sess(cluster).post(url(leader, "/cluster/transfer"), json={"to": a.id}) as r:
        assert r.status == 503
        error = (await r.json())["error"]
    assert re.fullmatch(
        rf"ServiceUnavailable: node {a.id} did not take over: node {leader.id} gave the transfer up after "
        rf"(\d+\.\d)s and still leads \(term {term}\), taking writes again \(a transfer is given up at once when "
        rf"node {a.id} cannot be reached before it is told to take over, and after 4000 ms, 2 x "
        rf"election_timeout_max, when no new leader came of it; node {leader.id}'s log says why: is node {a.id} "
        rf"down, cut off, catching up, or far behind\?\)", error), error
    # Answered once the leader gave up (4 s), not at the end of the wait's bound (8 s).
    after = float(re.search(r"after (\d+\.\d)s", error).group(1))  # type: ignore[union-attr]
    assert 4.0 <= after < 8.0, error
    async with sess(cluster).put(url(leader, "/kv/after"), data="taken") as r:
        assert r.status == 200, await r.text()


async def test_a_transfer_to_a_node_that_just_stopped_is_503_at_once(cluster: KvCluster) -> None:
    """The target stopped a moment before (it answered the leader within election_timeout_max,
    so the transfer is taken): its connections are refused, the leader gives the transfer up
    within about a heartbeat interval, and the call answers 503 saying so then. It refused
    writes for two election timeouts (4 s here) and answered after four (8 s)."""
    leader = await cluster.wait_leader()
    a, _ = cluster.followers(leader)
    assert leader.raft is not None
    term = leader.raft.metrics.current_term
    await a.stop()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with sess(cluster).post(url(leader, "/cluster/transfer"), json={"to": a.id}) as r:
        assert r.status == 503
        error = (await r.json())["error"]
    took = loop.time() - t0
    assert error.startswith(
        f"ServiceUnavailable: node {a.id} did not take over: node {leader.id} gave the transfer up after "), error
    assert f"and still leads (term {term}), taking writes again" in error
    assert took < leader.raft.config.election_timeout_max / 1000.0, f"answered after {took:.1f}s"
    async with sess(cluster).put(url(leader, "/kv/after"), data="taken") as r:
        assert r.status == 200, await r.text()


async def test_a_port_with_a_leading_zero_is_refused_given_and_matched_stored(
    cluster: KvCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """``127.0.0.1:021001`` and ``127.0.0.1:21001`` are one port, but were compared as
    strings: ``POST /cluster/learners`` took a second node at a member's port written with a
    leading zero. A given port with one is refused (400, saying how to write it); a member
    an earlier release stored with one (here put in through the library, which the service
    does not check) keeps working: its learner catches up, restarting it on the port as
    written now warns of no move, and another node given its port is refused (409)."""
    leader = await cluster.wait_leader()
    assert leader.raft is not None
    await leader.raft.ensure_linearizable()
    s = sess(cluster)
    rport, hport = free_port(), free_port()
    padded = {"raft_addr": f"127.0.0.1:0{rport}", "http_addr": f"127.0.0.1:0{hport}"}
    async with s.post(url(leader, "/cluster/learners"), json={"id": 4, **padded}) as r:
        error = (await r.json())["error"]
        assert r.status == 400 and f"has a leading zero: write the port as {rport}" in error, (r.status, error)
    assert 4 not in leader.nodes()
    old = BasicNode(json.dumps({"raft": padded["raft_addr"], "http": padded["http_addr"]}))
    await leader.raft.add_learner(4, old, blocking=False)  # as an earlier release stored it
    with caplog.at_level(logging.WARNING, logger="openraft_py.kv.node"):
        opts = node_options(4, cluster.root, raft_config=STABLE_TIMEOUTS)
        n4 = KvNode(msgspec.structs.replace(opts, raft_addr=f"127.0.0.1:{rport}", http_addr=f"127.0.0.1:{hport}"))
        cluster.nodes[4] = n4
        await n4.start()
    assert not [r for r in caplog.records if "records this node at other addresses" in r.getMessage()]
    async with s.put(url(leader, "/kv/k"), data="v") as r:
        assert r.status == 200, await r.text()
    await cluster.wait_applied(leader.raft.metrics.last_log_index)
    assert n4.sm is not None and n4.sm.get("k") == "v"
    for kind in ("raft_addr", "http_addr"):
        body = {"id": 5, "raft_addr": f"127.0.0.1:{free_port()}", "http_addr": f"127.0.0.1:{free_port()}"}
        body[kind] = f"127.0.0.1:{rport if kind == 'raft_addr' else hport}"
        async with s.post(url(leader, "/cluster/learners"), json=body) as r:
            error = (await r.json())["error"]
            assert r.status == 409 and f"is node 4's {kind}" in error, (r.status, error)
    assert 5 not in leader.nodes()
