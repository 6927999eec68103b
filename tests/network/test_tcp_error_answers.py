"""The TCP server answers every error as the wire can carry it, and answers an error when
its ``RaftServer`` returns something else than the RPC's response.

An error message holding a lone surrogate (a path decoded with ``surrogateescape`` in a
storage error, a state machine's message) could not be encoded (msgspec refuses it): the
request went unanswered, the peer waited for its timeout (``Timeout`` instead of the error)
and the server logged a traceback. A handshake refusal longer than ``wire.MAX_MESSAGE_LEN``
(a ``peer_id_of_cert`` that raises with a long message) was sent whole, and the client
could not decode it ("malformed data" instead of the refusal).

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from openraft_py.errors import ApiError, RemoteError, StorageError, Unreachable
from openraft_py.network import wire
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.types import (
    AppendEntriesRequest,
    BasicNode,
    InstallSnapshotRequest,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)

from .test_tcp import OPT, V1, FakeRaft, _pair
from .test_wire import META

pytestmark = pytest.mark.timeout(60)


async def test_an_error_message_with_a_lone_surrogate_is_answered_escaped(caplog: pytest.LogCaptureFixture) -> None:
    raft = FakeRaft()

    async def refuse(req: Any) -> Any:
        raise ValueError("cannot read /data/\udcff/x")

    async def stopped(req: Any) -> Any:
        raise StorageError("opening log store at /data/\udcfe")

    raft.behaviour["vote"] = refuse
    raft.behaviour["install_snapshot"] = stopped
    raft, server, factory, client = await _pair(raft)
    try:
        with pytest.raises(RemoteError, match=r"ValueError: cannot read /data/\\udcff/x"):
            await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)
        with pytest.raises(Unreachable, match=r"/data/\\udcfe"):
            await asyncio.wait_for(client.install_snapshot(InstallSnapshotRequest(V1, META, 0, b"x", True), OPT), 5)
        assert server.dropped == 0 and server.connections == 1
        assert not [r for r in caplog.records if "UnicodeEncodeError" in r.getMessage() or r.exc_info]
    finally:
        await server.close()
        await factory.close()


async def test_an_error_message_longer_than_the_wire_allows_is_cut(pki: Any) -> None:
    raft = FakeRaft()

    async def refuse(req: Any) -> Any:
        raise ValueError("é" * (2 * wire.MAX_MESSAGE_LEN))

    raft.behaviour["vote"] = refuse

    def binding(cert: Any) -> int:
        raise RuntimeError("x" * (2 * wire.MAX_MESSAGE_LEN))

    server = await TcpServer.start(raft, "127.0.0.1", 0, "c", pki.server_ctx(mtls=True), peer_id_of_cert=binding)
    _, plain, plain_factory, plain_client = await _pair(raft)  # the request path, without TLS
    factory = TcpNetworkFactory(1, "c", ssl=pki.client_ctx("client"), backoff_min=0.01, backoff_max=0.05, seed=1)
    try:
        with pytest.raises(RemoteError) as info:
            await asyncio.wait_for(plain_client.vote(VoteRequest(V1, None), OPT), 5)
        assert "ValueError: éé" in str(info.value) and len(str(info.value)) < wire.MAX_MESSAGE_LEN + 100
        # The handshake refusal names its reason (cut), not "malformed data".
        with pytest.raises(Unreachable, match="refused the handshake: peer_id_of_cert failed"):
            await asyncio.wait_for(factory.new_client(2, BasicNode(server.address)).vote(VoteRequest(V1, None), OPT), 5)
        assert server.refused == 1
    finally:
        await server.close()
        await plain.close()
        await factory.close()
        await plain_factory.close()


class _SubmittingRaft(FakeRaft):
    """A ``RaftServer`` with ``submit_append_entries`` whose reply is ``answer``."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Any) -> Any:
        asyncio.get_running_loop().call_soon(reply, self.answer)
        return asyncio.get_running_loop().create_future()  # a handle with cancel()


async def test_a_handler_returning_something_else_than_its_response_is_answered_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A RaftServer's bug: the request used to go unanswered (the peer got Timeout) with
    # "Task exception was never retrieved" logged, or a wrong Struct was sent as the answer.
    raft = FakeRaft()

    async def returns(value: Any) -> Any:
        return value

    raft, server, factory, client = await _pair(raft)
    vote = VoteRequest(V1, None)
    try:
        for value in (None, object(), {"vote": 1}):
            raft.behaviour["vote"] = lambda req, v=value: returns(v)
            with pytest.raises(RemoteError, match=f"the node's vote returned {type(value).__name__}, not a VoteResponse"):
                await asyncio.wait_for(client.vote(vote, OPT), 5)
        raft.behaviour["install_snapshot"] = lambda req: returns(VoteResponse(V1, True, None))
        with pytest.raises(RemoteError, match="install_snapshot returned VoteResponse, not an InstallSnapshotResponse"):
            await asyncio.wait_for(client.install_snapshot(InstallSnapshotRequest(V1, META, 0, b"x", True), OPT), 5)
        raft.handle_transfer_leader = lambda req: returns(True)  # type: ignore[method-assign]
        with pytest.raises(RemoteError, match="handle_transfer_leader returned bool, not None"):
            await asyncio.wait_for(client.transfer_leader(TransferLeaderRequest(V1, 2, None), OPT), 5)
        assert server.connections == 1 and server.dropped == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 5 and all("127.0.0.1:" in m for m in errors), errors
    finally:
        await server.close()
        await factory.close()
    _, server, factory, client = await _pair(_SubmittingRaft(None))
    try:
        with pytest.raises(RemoteError, match="append_entries returned NoneType, not an AppendEntriesResponse"):
            await asyncio.wait_for(client.append_entries(AppendEntriesRequest(V1, None, [], None), OPT), 5)
    finally:
        await server.close()
        await factory.close()


async def test_a_refusal_the_node_makes_by_design_is_not_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The node's ``install_snapshot`` refuses a chunk that continues nothing it holds (it
    restarted in the middle of a transfer) with an ``ApiError``: the leader starts over and
    says so at INFO, and a snapshot its state machine refuses the node logs itself, once per
    snapshot. The server logged each at WARNING ("install_snapshot from node 1 failed"),
    at every resend; now at DEBUG. Anything else a handler raises is still a WARNING."""
    caplog.set_level(logging.DEBUG, logger="openraft_py.network")
    raft = FakeRaft()

    async def not_continued(req: Any) -> Any:
        raise ApiError(f"snapshot s1: chunk at offset {req.offset} but nothing received")

    async def broken(req: Any) -> Any:
        raise KeyError("a bug")

    raft.behaviour["install_snapshot"] = not_continued
    raft, server, factory, client = await _pair(raft)
    try:
        for _ in range(3):
            with pytest.raises(RemoteError, match="ApiError: snapshot s1: chunk at offset 512 but nothing received"):
                await asyncio.wait_for(client.install_snapshot(InstallSnapshotRequest(V1, META, 512, b"x", False), OPT), 5)
        said = [r for r in caplog.records if "install_snapshot from node 1 failed" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.DEBUG] * 3, [(r.levelname, r.getMessage()) for r in said]
        raft.behaviour["install_snapshot"] = broken
        with pytest.raises(RemoteError, match="KeyError"):
            await asyncio.wait_for(client.install_snapshot(InstallSnapshotRequest(V1, META, 0, b"x", True), OPT), 5)
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "install_snapshot from node 1 failed: KeyError" in warned[0], warned
    finally:
        await server.close()
        await factory.close()
