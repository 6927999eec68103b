"""Security of the TCP transport: peers that fail the handshake (wrong cluster name, a node id
outside the membership, an unknown protocol version) or, with mutual TLS on, present no or a
wrong client certificate get no RPC delivered to ``Raft``, and the cluster keeps committing
while they try.

Every attacker sends requests with a term no real node reaches (``EVIL_TERM``): had one been
delivered, the counting wrapper on every node would have recorded it (and the cluster's
term would have jumped)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from openraft_py.errors import RPCError, Unreachable
from openraft_py.network import wire
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.types import AppendEntriesRequest, BasicNode, LogId, RPCOption, Vote, VoteRequest

from .tcp_cluster import TcpCluster, steady_tcp_config, tcp_config

pytestmark = pytest.mark.timeout(90)

EVIL_TERM = 10**12
OPT = RPCOption(hard_ttl=3.0, soft_ttl=3.0)


async def _attack(c: TcpCluster, factory: TcpNetworkFactory, claimed_id: int, rounds: int = 3) -> list[BaseException]:
    """Send EVIL_TERM vote and AppendEntries requests from ``factory`` to every node;
    return the errors (every call must fail)."""
    errors: list[BaseException] = []
    evil = Vote.new(EVIL_TERM, claimed_id, True)
    for _ in range(rounds):
        for nid, node in c.nodes.items():
            client = factory.new_client(nid, BasicNode(node.addr))
            for call in (
                client.vote(VoteRequest(evil, LogId(EVIL_TERM, 10**9)), OPT),
                client.append_entries(AppendEntriesRequest(evil, None, [], LogId(EVIL_TERM, 0)), OPT),
            ):
                try:
                    await asyncio.wait_for(call, 5)
                except RPCError as e:
                    errors.append(e)
                else:
                    raise AssertionError(f"an attacker's request to node {nid} was answered")
        await asyncio.sleep(0.05)  # let back-offs expire so the next round reconnects
    return errors


async def _while_committing(c: TcpCluster, attack: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``attack`` while a writer commits; then check the writes committed everywhere,
    nobody recorded EVIL_TERM and the leader's term did not move."""
    leader = await c.wait_for_leader(15)
    term = c.nodes[leader].raft.metrics.current_term  # type: ignore[union-attr]
    stop = asyncio.Event()
    written: list[LogId] = []

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            written.append(await c.write(f"s{i}".encode()))
            i += 1

    w = asyncio.ensure_future(writer())
    try:
        result = await attack()
    finally:
        stop.set()
        await asyncio.wait_for(w, 15)
    last = await c.write(b"after")
    await c.wait_applied(last.index, 15)
    assert len(written) > 0
    for nid, node in c.nodes.items():
        assert node.counting is not None
        assert EVIL_TERM not in node.counting.terms, f"node {nid} received an attacker's request"
        assert node.raft is not None and node.raft.metrics.current_term == term
        assert node.disk.applied_log[-1][1] == b"after"
    return result


async def test_wrong_cluster_name_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        bad = TcpNetworkFactory(1, "another-cluster", backoff_min=0.01, backoff_max=0.02)
        try:
            errors = await _while_committing(c, lambda: _attack(c, bad, claimed_id=1))
        finally:
            await bad.close()
        assert errors and all(isinstance(e, Unreachable) for e in errors)
        assert any("refused the handshake" in str(e) and "cluster name" in str(e) for e in errors)
        refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert refused and all("127.0.0.1:" in m and "wrong cluster name 'another-cluster'" in m for m in refused)
        assert all(n.server is not None and n.server.refused > 0 for n in c.nodes.values())


async def test_a_peer_refused_at_every_reconnect_is_logged_once_then_its_acceptance_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A peer of another cluster name reconnects at every back-off (about once a second with
    the defaults, for as long as it runs): its refusals are one WARNING (and one more every
    ``failure_log.REPEAT_EVERY`` seconds), not one per connection; a connection from its host
    for that node id that is accepted later ends them with one INFO."""
    caplog.set_level(logging.INFO, logger="openraft_py.network.tcp")
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        node = c.nodes[1]
        assert node.server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        bad = TcpNetworkFactory(1, "another-cluster", backoff_min=0.01, backoff_max=0.02)
        hello = VoteRequest(Vote.new(0, 1, False), None)
        try:
            client = bad.new_client(1, BasicNode(node.addr))
            while node.server.refused < 10:  # ten reconnects, each refused
                assert loop.time() < deadline, f"only {node.server.refused} refusals"
                with pytest.raises(Unreachable):
                    await asyncio.wait_for(client.vote(hello, OPT), 5)
                await asyncio.sleep(0.005)  # (calls within the back-off fail without connecting)
        finally:
            await bad.close()
        refused = [r for r in caplog.records if "refused the connection from 127.0.0.1:" in r.getMessage()]
        assert len(refused) == 1, [r.getMessage() for r in refused]
        assert refused[0].levelno == logging.WARNING
        assert "wrong cluster name 'another-cluster' (this node serves cluster 'test-cluster'" in refused[0].getMessage()
        good = TcpNetworkFactory(1, c.cluster_name)
        try:
            resp = await asyncio.wait_for(good.new_client(1, BasicNode(node.addr)).vote(hello, OPT), 5)
            assert not resp.vote_granted
        finally:
            await good.close()
        accepted = [r for r in caplog.records if "accepted node 1 from 127.0.0.1:" in r.getMessage()]
        assert len(accepted) == 1 and accepted[0].levelno == logging.INFO, [r.getMessage() for r in accepted]
        assert "after refusing 127.0.0.1" in accepted[0].getMessage()
        assert "refusals in" in accepted[0].getMessage()


async def test_node_id_outside_the_membership_is_refused() -> None:
    # (Steady elections: a node without a leader takes any sender, ``_may_connect``.)
    async with TcpCluster(steady_tcp_config()) as c:
        await c.start([1, 2, 3])
        bad = TcpNetworkFactory(42, c.cluster_name, backoff_min=0.01, backoff_max=0.02)
        try:
            errors = await _while_committing(c, lambda: _attack(c, bad, claimed_id=42))
        finally:
            await bad.close()
        assert errors and all(isinstance(e, Unreachable) and "not in the membership" in str(e) for e in errors)


async def test_a_member_id_cannot_send_another_leaders_requests() -> None:
    """Claiming member id 3 passes the handshake, but requests naming another node as the
    leader are refused per request (RemoteError) and never delivered."""
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])
        bad = TcpNetworkFactory(3, c.cluster_name)

        async def attack() -> list[BaseException]:
            errors: list[BaseException] = []
            evil = Vote.new(EVIL_TERM, 1, True)  # claims to come from 3, names 1 as leader
            for nid in (1, 2):
                client = bad.new_client(nid, BasicNode(c.nodes[nid].addr))
                try:
                    await asyncio.wait_for(client.append_entries(AppendEntriesRequest(evil, None, [], None), OPT), 5)
                except RPCError as e:
                    errors.append(e)
            return errors

        try:
            errors = await _while_committing(c, attack)
        finally:
            await bad.close()
        assert len(errors) == 2 and all("sender" in str(e) for e in errors)


async def test_unknown_protocol_version_is_refused() -> None:
    async with TcpCluster(tcp_config()) as c:
        await c.start([1, 2, 3])

        async def attack() -> list[wire.ErrorBody]:
            answers = []
            hello = bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(99, c.cluster_name, 1)))
            vote = bytes(wire.frame_message(wire.KIND_VOTE, 1, VoteRequest(Vote.new(EVIL_TERM, 1), None)))
            for node in c.nodes.values():
                # The hello alone: answered with ERR_UNSUPPORTED, then closed.
                reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
                writer.write(hello)
                data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
                writer.close()
                kind, rid, body = wire.split_payload(data[4:])
                assert (kind, rid) == (wire.KIND_ERROR, 0)
                answers.append(wire.decode_body(kind, body))
                # The hello and a request at once: closed (refused, or dropped for sending
                # before the answer), the request never delivered.
                reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
                writer.write(hello + vote)
                await asyncio.wait_for(reader.read(), 5)
                writer.close()
            return answers

        answers = await _while_committing(c, attack)
        assert len(answers) == 3
        assert all(a.code == wire.ERR_UNSUPPORTED and "version 99" in a.message for a in answers)


@pytest.mark.parametrize("client_cert", [None, "rogue-client", "no-tls"])
async def test_mtls_refuses_a_missing_or_wrong_client_certificate(
    client_cert: str | None, pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with TcpCluster(
        tcp_config(), server_ssl=pki.server_ctx(mtls=True), client_ssl=pki.client_ctx("client")
    ) as c:
        await c.start([1, 2, 3])
        ctx: ssl.SSLContext | None = None if client_cert == "no-tls" else pki.client_ctx(client_cert)
        # Claims member id 1 and the right cluster name: only the certificate is wrong.
        bad = TcpNetworkFactory(1, c.cluster_name, ssl=ctx, backoff_min=0.01, backoff_max=0.02)
        try:
            errors = await _while_committing(c, lambda: _attack(c, bad, claimed_id=1, rounds=2))
        finally:
            await bad.close()
        assert errors and all(isinstance(e, Unreachable) for e in errors)
        # Each node logged the refusals with the peer address and the TLS reason.
        refused = [r.getMessage() for r in caplog.records if "TLS refused the connection from 127.0.0.1:" in r.getMessage()]
        assert refused
        if client_cert == "rogue-client":
            assert any("CERTIFICATE_VERIFY_FAILED" in m or "certificate verify failed" in m for m in refused)
        assert all(n.server is not None and n.server.refused > 0 for n in c.nodes.values())


async def test_tls_client_must_trust_the_server_certificate(pki: Any, tmp_path: Any) -> None:
    """A client that does not trust the cluster CA refuses to talk to the server."""
    async with TcpCluster(tcp_config(), server_ssl=pki.server_ctx(mtls=False), client_ssl=pki.client_ctx(None)) as c:
        await c.start([1, 2, 3])
        await c.wait_for_leader(15)
        untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.path("rogue-ca.pem"))
        bad = TcpNetworkFactory(1, c.cluster_name, ssl=untrusting)
        try:
            with pytest.raises(Unreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await asyncio.wait_for(
                    bad.new_client(2, BasicNode(c.nodes[2].addr)).vote(VoteRequest(Vote.new(1, 1), None), OPT), 5
                )
        finally:
            await bad.close()


@pytest.mark.parametrize(
    "first, dialled, hint",
    [
        (b"HTTP/1.0 400 Bad Request\r\nServer: x\r\n", True,
         " (it sent text, 'HTTP/1.0 400 Bad Request': not an openraft-py raft port; is the address right?)"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False, " (it sent text, 'GET / HTTP/1.1': not an openraft-py node)"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", True, " (it sent text, 'SSH-2.0-OpenSSH_9.2': not an openraft-py raft port; is the address right?)"),
        (b"\x16\x03\x01\x02\x00\x01", False, " (it looks like TLS: is TLS configured on one side only?)"),
        (b"\x15\x03\x03\x00\x02\x02\x28", True, " (it looks like TLS: is TLS configured on one side only?)"),
        (b"\x00\x00\x00\x10\x01\x00", True, ""),
        (b"\xff\xff\xff\xff", False, ""),
        (b"", True, ""),
    ],
)
def test_foreign_protocol_hint(first: bytes, dialled: bool, hint: str) -> None:
    from openraft_py.network._tcp_common import foreign_protocol_hint

    assert foreign_protocol_hint(first, dialled) == hint


@pytest.mark.parametrize(
    "first, dialled, hint",
    [
        (b"\xff\xff\xff\xff\x01\x02\x03\x04\x05", False,
         " (its first bytes, b'\\xff\\xff\\xff\\xff\\x01\\x02\\x03\\x04', are no openraft-py hello: a client of "
         "another protocol, or a scanner)"),
        (b"\x7f\x00\x00\x00", True,
         " (its first bytes, b'\\x7f\\x00\\x00\\x00', are no openraft-py handshake answer: is the address right?)"),
        (b"\x16\x03\x01\x02\x00\x01", False, " (it looks like TLS: is TLS configured on one side only?)"),
        (b"GET / HTTP/1.1\r\n", False, " (it sent text, 'GET / HTTP/1.1': not an openraft-py node)"),
        (b"", False, ""),
    ],
)
def test_a_first_frame_over_the_limit_is_said_to_be_no_handshake(first: bytes, dialled: bool, hint: str) -> None:
    """Binary bytes whose first frame's length is over the frame limit (no handshake of any
    version comes near it): the WARNING quotes them as not this protocol's. It named only
    the bogus length ("frame of 4294967295 bytes exceeds max_frame_size ..."), no cause."""
    from openraft_py.network._tcp_common import foreign_protocol_hint

    assert foreign_protocol_hint(first, dialled, too_large=True) == hint


async def test_a_raft_address_that_is_not_a_raft_port_is_named_in_the_error(caplog: pytest.LogCaptureFixture) -> None:
    """A membership naming another service's port as a node's raft address (its HTTP port,
    say): the call fails with ``Unreachable`` saying what answered, and the warning too."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")

    async def http_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http_like, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    factory = TcpNetworkFactory(1, "c", backoff_min=0.01, backoff_max=0.02)
    try:
        client = factory.new_client(2, BasicNode(f"127.0.0.1:{port}"))
        with pytest.raises(Unreachable) as ei:
            await asyncio.wait_for(client.vote(VoteRequest(Vote.new(1, 1), None), OPT), 5)
        assert "'HTTP/1.0 400 Bad Request': not an openraft-py raft port" in str(ei.value), ei.value
        assert f"at 127.0.0.1:{port}" in str(ei.value)
        assert any("not an openraft-py raft port" in r.getMessage() for r in caplog.records)
    finally:
        await factory.close()
        server.close()
        await server.wait_closed()


async def test_an_http_client_on_the_raft_port_is_answered_400_and_logged_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An HTTP client given a raft port by mistake (the key-value service's API is on
    another port) is answered ``400`` with a JSON error saying what the port is, then the
    connection closes; it was closed unanswered, which left a client's write with an unknown
    outcome. Anything else that is not the protocol is still closed without an answer."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with TcpCluster(tcp_config()) as c:
        await c.start([1])
        node = c.nodes[1]
        for request in (b"GET /cluster/status HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv"):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b"\r\n")[0] == b"HTTP/1.1 400 Bad Request", answer
            assert f"content-length: {len(body)}".encode() in head.lower(), answer
            assert "openraft-py raft port" in json.loads(body)["error"], body
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed without an answer"
        writer.close()
        dropped = [r.getMessage() for r in caplog.records if "closing the connection from" in r.getMessage()]
        assert any("'GET /cluster/status HTTP/1.1': not an openraft-py node); answered HTTP 400" in m
                   for m in dropped), dropped
        await c.write(b"still serving")


async def test_a_scraper_on_the_raft_port_is_logged_once_not_at_every_scrape(caplog: pytest.LogCaptureFixture) -> None:
    """A health check or a Prometheus scrape pointed at the raft port comes back every few
    seconds for as long as it is configured so: each of its connections was a WARNING. Now
    the first is, then one every ``failure_log.REPEAT_EVERY`` seconds (or at another reason);
    each is still answered 400 and counted in ``dropped``."""
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    async with TcpCluster(tcp_config()) as c:
        await c.start([1])
        node = c.nodes[1]
        assert node.server is not None
        before = node.server.dropped
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)  # to EOF: the server closes
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer
        assert node.server.dropped - before == 10
        dropped = [r.getMessage() for r in caplog.records if "closing the connection from" in r.getMessage()]
        assert len(dropped) == 1, dropped
        assert "'GET /metrics HTTP/1.1': not an openraft-py node); answered HTTP 400 (1 refusal in" in dropped[0]


@pytest.mark.parametrize("tls_on", ["server", "client"])
async def test_tls_on_one_side_only_is_named_on_both_sides(tls_on: str, pki: Any, caplog: pytest.LogCaptureFixture) -> None:
    """TLS configured on the server only, or on the client only: the caller's ``Unreachable``
    and the server's warning both say that the other side does not speak TLS (the caller saw
    only a closed connection or ``ConnectionResetError()``, the server a bare
    ``WRONG_VERSION_NUMBER``)."""
    from openraft_py.network.tcp import TcpServer

    from .test_tcp import FakeRaft

    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", ssl=pki.server_ctx(mtls=False) if tls_on == "server" else None)
    factory = TcpNetworkFactory(1, "c", ssl=pki.client_ctx() if tls_on == "client" else None)
    if tls_on == "server":
        caller_hint = "does the server expect TLS? this node connects without"
        server_hint = "the peer does not speak TLS: is TLS configured on this node only?"
    else:
        caller_hint = "in the TLS handshake: does the server speak TLS?"
        server_hint = "it looks like TLS: is TLS configured on one side only?"
    try:
        with pytest.raises(Unreachable) as ei:
            await asyncio.wait_for(factory.new_client(2, BasicNode(server.address)).vote(VoteRequest(Vote.new(1, 1), None), OPT), 5)
        assert caller_hint in str(ei.value), ei.value
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not any(server_hint in r.getMessage() for r in caplog.records):
            assert loop.time() < deadline, [r.getMessage() for r in caplog.records]
            await asyncio.sleep(0.01)  # the server's side of the close may come a moment later; bounded
    finally:
        await factory.close()
        await server.close()
