"""The client side of TLS: what ``TcpNetworkFactory`` takes as its ``ssl`` context.

A server context (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``, the mirror of
the client context ``TcpServer.start`` refuses) or something that is not an ``SSLContext``
used to be taken: every RPC then raised ``Unreachable`` ("Cannot create a client socket with
a PROTOCOL_TLS_SERVER context", or an ``AttributeError`` from inside the connect), which
replication logs at DEBUG only, so the node started and could never reach a peer.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from openraft_py.network.tcp import TcpNetworkFactory, node_id_from_cert

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


async def test_client_tls_contexts_are_taken(pki: Any) -> None:
    for ctx in (pki.client_ctx(), ssl.create_default_context(), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)):
        await TcpNetworkFactory(1, "c", ssl=ctx).close()
