"""The TCP transport passes the network conformance suite (openraft_py.testing.suite.network)
on loopback: plain and with mutual TLS, serving the suite's server as a node is served
(through ``submit_append_entries``) and as a plain ``RaftServer``; so does the key-value
service's network factory over it (``KvNetworkFactory``: membership addresses in its JSON,
every ``RPCError`` counted).

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from openraft_py.kv.nodes import KvNetworkFactory, NodeAddrs
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.testing import NetworkHandle, SuiteServer, run_network_suite
from openraft_py.testing.suite.network import SOURCE
from openraft_py.types import BasicNode

from .test_network_suite import assert_passed

pytestmark = pytest.mark.timeout(120)


class _PlainServer:
    """The suite's server as a ``RaftServer`` without the optional fast paths (``Raft``'s
    ``start_append_entries`` and ``submit_append_entries``): the TCP server's other path."""

    def __init__(self, server: SuiteServer) -> None:
        self.server = server
        self.metrics = server.metrics
        self.append_entries = server.append_entries
        self.vote = server.vote
        self.install_snapshot = server.install_snapshot
        self.handle_transfer_leader = server.handle_transfer_leader


def tcp_builder(
    server_ssl: Any = None, client_ssl: Any = None, *, plain: bool = False, kv_errors: list[Any] | None = None
) -> Any:
    """Serves the suite's server with ``TcpServer`` on a loopback port; ``stop_target`` closes
    it, ``start_target`` serves it again on the same port. With ``kv_errors``, node 1's
    factory is a ``KvNetworkFactory`` over the TCP one, reporting its errors there."""

    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        served: Any = _PlainServer(server) if plain else server
        listening = [await TcpServer.start(served, "127.0.0.1", 0, "suite", server_ssl)]
        port = listening[0].port
        factory: Any = TcpNetworkFactory(SOURCE, "suite", client_ssl, backoff_min=0.01, backoff_max=0.1, seed=1)
        node = BasicNode(f"127.0.0.1:{port}")
        if kv_errors is not None:
            factory = KvNetworkFactory(factory, on_rpc_error=lambda target, rpc, e: kv_errors.append((target, rpc, e)))
            node = BasicNode(msgspec.json.encode(NodeAddrs(node.addr, "127.0.0.1:1")).decode())

        async def stop() -> None:
            await listening[0].close()

        async def start() -> None:
            listening[0] = await TcpServer.start(served, "127.0.0.1", port, "suite", server_ssl)

        try:
            yield NetworkHandle(factory, node, stop_target=stop, start_target=start, close=factory.close)
        finally:
            await factory.close()
            await listening[0].close()

    return builder


@pytest.mark.parametrize("plain", [False, True], ids=["node-like", "plain-server"])
async def test_tcp_passes(plain: bool) -> None:
    assert_passed(await run_network_suite(tcp_builder(plain=plain)), set())


async def test_tcp_with_mutual_tls_passes(pki: Any) -> None:
    assert_passed(await run_network_suite(tcp_builder(pki.server_ctx(mtls=True), pki.client_ctx("client"))), set())


async def test_the_kv_network_factory_passes() -> None:
    errors: list[Any] = []
    assert_passed(await run_network_suite(tcp_builder(kv_errors=errors)), set())
    # Its per-peer error counters heard of the errors the suite made, all of node 2's.
    assert {(t, rpc) for t, rpc, _ in errors} >= {(2, rpc) for rpc in ("append_entries", "vote", "install_snapshot", "transfer_leader")}
