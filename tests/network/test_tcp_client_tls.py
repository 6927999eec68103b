"""The client side of TLS: what ``TcpNetworkFactory`` takes as its ``ssl`` context.

A server context (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``, the mirror of
the client context ``TcpServer.start`` refuses) or something that is not an ``SSLContext``
used to be taken: every RPC then raised ``Unreachable`` ("Cannot create a client socket with
a PROTOCOL_TLS_SERVER context", or an ``AttributeError`` from inside the connect), which
replication logs at DEBUG only, so the node started and could never reach a peer.

A server certificate the client refuses (expired, of a CA it does not trust, not naming the
host dialled) is logged at WARNING by the client, once for each new reason until a
connection succeeds: only the dialling side knows why (the server sees the connection end,
"ConnectionResetError()"), and its ``Unreachable`` reached the DEBUG log only.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer, node_id_from_cert
from openraft_py.types import BasicNode, RPCOption, Vote, VoteRequest

from .test_tcp import FakeRaft

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "ctx",
    [
        pytest.param(lambda: ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), id="create_default_context(CLIENT_AUTH)"),
        pytest.param(lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), id="PROTOCOL_TLS_SERVER"),
    ],
)
async def test_a_server_tls_context_is_refused(ctx: Any) -> None:
    with pytest.raises(ValueError, match="ssl is a server context"):
        TcpNetworkFactory(1, "c", ssl=ctx())


@pytest.mark.parametrize("bind", [False, True])
async def test_an_ssl_that_is_not_a_context_is_refused(bind: bool) -> None:
    kw: dict[str, Any] = {"peer_id_of_cert": node_id_from_cert("c")} if bind else {}
    with pytest.raises(TypeError, match=r"ssl must be an ssl\.SSLContext or None, got str 'yes'"):
        TcpNetworkFactory(1, "c", ssl="yes", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name, tls, error, match",
    [
        (5, True, TypeError, "server_hostname must be a str or None, got int 5"),  # failed every connect
        (b"localhost", True, TypeError, "server_hostname must be a str or None, got bytes"),
        # asyncio connected without checking the server's name at all
        ("", True, ValueError, "server_hostname '' would turn the host name check off; to do that, set check_hostname"),
        ("localhost", False, ValueError, "server_hostname is the name checked in the server's TLS certificate: it needs ssl"),
    ],
)
async def test_a_server_hostname_that_checks_nothing_is_refused(
    pki: Any, name: Any, tls: bool, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TcpNetworkFactory(1, "c", ssl=pki.client_ctx() if tls else None, server_hostname=name)


@pytest.mark.parametrize("bind", [3, "openraft://c/3"])
async def test_a_peer_id_of_cert_that_is_not_callable_is_refused(pki: Any, bind: Any) -> None:
    # every server was refused at connect ("'int' object is not callable")
    with pytest.raises(TypeError, match=f"peer_id_of_cert must be callable or None, got {type(bind).__name__}"):
        TcpNetworkFactory(1, "c", ssl=pki.client_ctx(), peer_id_of_cert=bind)


async def test_client_tls_contexts_are_taken(pki: Any) -> None:
    for ctx in (pki.client_ctx(), ssl.create_default_context(), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)):
        await TcpNetworkFactory(1, "c", ssl=ctx).close()


@pytest.mark.parametrize(
    "trust, hostname, why",
    [
        ("rogue-ca.pem", None, "unable to get local issuer certificate"),
        ("ca.pem", "node9.example",
         "Hostname mismatch, certificate is not valid for 'node9.example'. (it does not name 'node9.example', "
         "the host of the address dialled, or server_hostname)"),
    ],
)
async def test_a_refused_server_certificate_is_logged_once_per_reason(
    pki: Any, caplog: pytest.LogCaptureFixture, trust: str, hostname: str | None, why: str
) -> None:
    caplog.set_level(logging.WARNING, logger="openraft_py.network.tcp")
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", pki.server_ctx(mtls=False))
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.path(trust))
    f = TcpNetworkFactory(2, "c", ssl=client_ctx, server_hostname=hostname, backoff_min=0.001, backoff_max=0.001)
    try:
        client = f.new_client(1, BasicNode(server.address))
        for _ in range(3):
            with pytest.raises(Unreachable):
                await asyncio.wait_for(client.vote(VoteRequest(Vote.new(1, 2), None), RPCOption(hard_ttl=3.0)), 5)
            await asyncio.sleep(0.005)  # past the back-off: each call connects again
    finally:
        await f.close()
        await server.close()
    refused = [r.getMessage() for r in caplog.records if "refused the certificate" in r.getMessage()]
    assert refused == [f"node 2: refused the certificate of node 1 at {server.address}: {why}"], refused
    # the server, which sees the connection end, points at the client's log
    assert any("did the client refuse this node's certificate? its log says why" in r.getMessage()
               for r in caplog.records)
