"""``TcpServer.start`` refuses wrong arguments at the call, naming the argument.

Each of these used to be accepted and to fail far from the mistake, or silently:
``handshake_timeout=nan`` raised inside every accepted connection on uvloop (no peer could
connect) and fired at once on asyncio, ``idle_timeout=nan`` raised a bare "cannot convert
float NaN to integer" on uvloop; ``node_id="x"`` made every client fail to decode the
handshake answer, ``ssl="yes"`` raised in every accepted connection, a float
``max_frame_size`` failed every handshake (the client was told the server might expect
TLS), a non-str ``cluster_name`` refused every peer for a "wrong cluster name"; port 70000
listened on port 4464 on uvloop, and port 1.5 on port 1 on asyncio.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from typing import Any

import pytest

from openraft_py.network import wire
from openraft_py.network.tcp import MAX_CONNECTIONS, MAX_FRAME_RATE, MAX_INFLIGHT, MAX_SECONDS, TcpServer
from openraft_py.types import Vote, VoteRequest

from .test_tcp import FakeRaft, _until

pytestmark = pytest.mark.timeout(60)

SECONDS = ("idle_timeout", "handshake_timeout", "frame_timeout", "min_frame_rate", "membership_check_interval")
COUNTS = {"max_frame_size": 64, "max_inflight": 1, "max_connections": 1}

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    *[({name: v}, TypeError, f"{name} must be a number") for name in SECONDS + ("drain_timeout",) for v in ("5", None, True)],
    *[({name: v}, ValueError, f"{name} must be finite") for name in SECONDS + ("drain_timeout",) for v in (math.nan, math.inf, -math.inf)],
    *[({name: v}, ValueError, f"{name} must be above 0") for name in SECONDS for v in (0, -1.5)],
    ({"drain_timeout": -0.5}, ValueError, "drain_timeout must be at least 0"),
    # (``max_connections=None`` is its default: ``tcp_connection_limit()``)
    *[({name: v}, TypeError, f"{name} must be an int") for name in COUNTS for v in (1e9, 100.5, "100", None, True)
      if not (name == "max_connections" and v is None)],
    *[({name: low - 1}, ValueError, f"{name} must be at least {low}") for name, low in COUNTS.items()],
    # (10**12 was taken: bounds that bound nothing)
    *[({name: v}, ValueError, f"{name} must be at most {high} ({const})")
      for name, high, const in (("max_inflight", MAX_INFLIGHT, "MAX_INFLIGHT"),
                                ("max_connections", MAX_CONNECTIONS, "MAX_CONNECTIONS"))
      for v in (high + 1, 10**12)],
    # (1e12 and 1e300 were taken: a handshake, a stalled frame, a close's drain waited for
    # good, a removed node was served for good)
    *[({name: v}, ValueError, f"{name} must be {'at least' if name == 'drain_timeout' else 'above'} 0 and at most "
                              f"{MAX_SECONDS:g} seconds (MAX_SECONDS")
      for name in ("idle_timeout", "handshake_timeout", "frame_timeout", "membership_check_interval", "drain_timeout")
      for v in (MAX_SECONDS * 1.5, 1e12, 1e300)],
    # (the bound in full: it was printed "4.29497e+09", neither the number nor the constant's value)
    *[({"min_frame_rate": v}, ValueError, "min_frame_rate must be above 0 and at most 4294967295 bytes per second "
                                          "(MAX_FRAME_RATE") for v in (MAX_FRAME_RATE * 2, 1e300)],
    ({"cluster_name": 5}, TypeError, "cluster_name must be a str"),
    ({"cluster_name": b"c"}, TypeError, "cluster_name must be a str"),
    ({"cluster_name": "c" * 257}, ValueError, "cluster_name longer than 256"),
    # (as Config.cluster_name and serve: "" was taken)
    ({"cluster_name": ""}, ValueError, "cluster_name must be a non-empty string"),
    # (a frame's length is a u32: 2**70 was taken)
    *[({"max_frame_size": v}, ValueError, "max_frame_size must be at most 4294967295") for v in (2**32, 2**70)],
    ({"node_id": "x"}, TypeError, "node_id must be an int"),
    ({"node_id": -1}, ValueError, "node_id must be within"),
    ({"node_id": True}, TypeError, "node_id must be an int"),
    ({"ssl": "yes"}, TypeError, "ssl must be an ssl.SSLContext"),
    ({"yield_after_answer": "no"}, TypeError, "yield_after_answer must be a bool"),
    ({"yield_after_answer": 0}, TypeError, "yield_after_answer must be a bool"),
    ({"peer_id_of_cert": 3, "ssl": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)}, TypeError, "peer_id_of_cert must be callable"),
    ({"host": None}, TypeError, "host must be a str"),
    ({"host": 5}, TypeError, "host must be a str"),
    ({"port": 70000}, ValueError, "port must be within [0, 65535]"),
    ({"port": -1}, ValueError, "port must be at least 0"),
    ({"port": 1.5}, TypeError, "port must be an int"),
    ({"port": "0"}, TypeError, "port must be an int"),
    ({"port": True}, TypeError, "port must be an int"),
]


@pytest.mark.parametrize(("kw", "error", "message"), BAD, ids=[f"{k}={v!r}"[:40] for k, v in (next(iter(b[0].items())) for b in BAD)])
async def test_wrong_arguments_are_refused_naming_them(kw: dict[str, Any], error: type[Exception], message: str) -> None:
    kw = dict(kw)
    host = kw.pop("host", "127.0.0.1")
    port = kw.pop("port", 0)
    cluster_name = kw.pop("cluster_name", "c")
    with pytest.raises(error) as info:
        server = await TcpServer.start(FakeRaft(), host, port, cluster_name, **kw)
        await server.close()
    assert message in str(info.value)


async def test_right_arguments_of_every_kind_are_accepted() -> None:
    server = await TcpServer.start(
        FakeRaft(), "127.0.0.1", 0, "c", node_id=7, idle_timeout=1, handshake_timeout=0.5, frame_timeout=2,
        min_frame_rate=100, drain_timeout=0, membership_check_interval=0.05, max_frame_size=64, max_inflight=1,
        max_connections=1, yield_after_answer=False,
    )  # fmt: skip
    try:
        assert (server.idle_timeout, server.handshake_timeout, server.frame_timeout) == (1.0, 0.5, 2.0)
        assert (server.min_frame_rate, server.drain_timeout, server.node_id) == (100.0, 0.0, 7)
        assert server.port > 0
    finally:
        await server.close()
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", max_inflight=MAX_INFLIGHT,
                                   max_connections=MAX_CONNECTIONS, idle_timeout=MAX_SECONDS,
                                   handshake_timeout=MAX_SECONDS, frame_timeout=MAX_SECONDS,
                                   membership_check_interval=MAX_SECONDS, drain_timeout=MAX_SECONDS,
                                   min_frame_rate=MAX_FRAME_RATE)
    try:
        assert (server.max_inflight, server.max_connections) == (MAX_INFLIGHT, MAX_CONNECTIONS)
        assert (server.idle_timeout, server.drain_timeout, server.min_frame_rate) == (
            MAX_SECONDS, MAX_SECONDS, MAX_FRAME_RATE)
    finally:
        await server.close()


async def test_what_is_served_must_be_a_node() -> None:
    # Raft.new(...) without await (a coroutine), the class itself, None with a node_id: each
    # used to be taken (with node_id given) and every request to fail in the handler.
    async def not_awaited() -> FakeRaft:
        return FakeRaft()

    pending = not_awaited()
    with pytest.raises(TypeError, match=r"raft is a coroutine: await Raft.new\(...\)"):
        await TcpServer.start(pending, "127.0.0.1", 0, "c", node_id=2)
    await pending  # (awaited here, so no warning)
    with pytest.raises(TypeError, match="got the class FakeRaft itself"):
        await TcpServer.start(FakeRaft, "127.0.0.1", 0, "c", node_id=2)
    with pytest.raises(TypeError, match="NoneType has no method append_entries"):
        await TcpServer.start(None, "127.0.0.1", 0, "c", node_id=2)

    class NoMetrics:
        async def append_entries(self, req: Any) -> Any: ...
        async def vote(self, req: Any) -> Any: ...
        async def install_snapshot(self, req: Any) -> Any: ...
        async def handle_transfer_leader(self, req: Any) -> None: ...

    with pytest.raises(TypeError, match="NoMetrics has none"):
        await TcpServer.start(NoMetrics(), "127.0.0.1", 0, "c", node_id=2)


async def test_a_client_tls_context_is_refused() -> None:
    # ssl.create_default_context() makes a client context: every accepted connection failed
    # to start TLS and went on in plain TCP.
    with pytest.raises(ValueError, match="ssl is a client context"):
        await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", ssl.create_default_context())


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mutual tls"])
async def test_a_server_tls_context_without_a_certificate_is_refused(mtls: bool, pki: Any) -> None:
    """A server context on which ``load_cert_chain`` was never called was taken, and every
    connection was then refused in its TLS handshake ("no shared cipher", a hint in the log
    only): the node started and no peer could reach it. Now ``start`` refuses it, saying so;
    the same context with a certificate (and a mutual-TLS one, which the check's probe, with
    no client certificate, does not satisfy) starts."""
    bare = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if mtls:
        bare.load_verify_locations(pki.path("ca.pem"))
        bare.verify_mode = ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match=r"ssl has no certificate to present \(call its load_cert_chain"):
        await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", bare)
    with pytest.raises(ValueError, match="no certificate to present"):
        await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    server = await TcpServer.start(FakeRaft(), "127.0.0.1", 0, "c", pki.server_ctx(mtls=mtls))
    await server.close()


class _BrokenContext(ssl.SSLContext):
    """A server context on which TLS cannot start (as a client context could not)."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
        raise ssl.SSLError("cannot start TLS here")


async def test_a_connection_on_which_tls_cannot_start_is_closed_never_served_in_plain_tcp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raft = FakeRaft()
    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", _BrokenContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        hello = wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "c", 1))
        vote = wire.frame_message(wire.KIND_VOTE, 1, VoteRequest(Vote.new(3, 1, True), None))
        writer.write(bytes(hello))  # a blind sender: the hello, then (once it is read) a request
        await asyncio.wait_for(_until(lambda: server.dropped or any(c.sender is not None for c in server._conns)), 5)
        writer.write(bytes(vote))
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionError:
            pass
        writer.close()
        assert raft.received == [] and server.delivered == 0 and server.dropped == 1
        assert any("TLS cannot start on it" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    finally:
        await server.close()
