"""The router's fast-mode ``submit_append_entries`` (``RouterClient._submit_direct``) and
the mapping of the target's errors: a ``Raft`` target gets the channel's own ``reply`` and
an error mapper its ``Reply`` consults only when an exception is set (no wrapper called on
the success path); any other server with a ``submit_append_entries`` gets a wrapped reply.
Either way a stopped target (``Fatal``) reaches the caller as ``Unreachable`` and another
error as ``RemoteError``, as ``append_entries`` reports them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from openraft_py.core.messages import Reply
from openraft_py.errors import RemoteError, Stopped, Unreachable
from openraft_py.network import Router
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, BasicNode, RPCOption, Vote

pytestmark = pytest.mark.timeout(10)

V = Vote.new(1, 1)
HEARTBEAT = AppendEntriesRequest(V, None, [], None)


class MappedServer:
    """A server offering the router's mapped hand-over, as ``Raft`` does: it records the
    callback and the mapper it is given and answers through a ``Reply`` built from them."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.fns: list[Callable[[Any], None]] = []

    def _submit_append_entries_mapped(
        self, req: AppendEntriesRequest, reply: Callable[[Any], None], map_error: Callable[[BaseException], BaseException]
    ) -> Reply:
        self.fns.append(reply)
        r = Reply(reply, map_error)
        self.replies.append(r)
        return r

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> Reply:
        raise AssertionError("the router must take the mapped hand-over when it is offered")


class PlainServer:
    """A server with only the public ``submit_append_entries``."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> Reply:
        r = Reply(reply)
        self.replies.append(r)
        return r


def _client(server: Any) -> Any:
    router = Router(wire=False)
    router.register(2, server)
    return router.factory(1).new_client(2, BasicNode("n2"))


def test_a_raft_target_gets_the_channels_own_reply_and_maps_only_errors() -> None:
    server = MappedServer()
    c = _client(server)
    got: list[Any] = []
    for _ in range(3):
        assert c.submit_append_entries(HEARTBEAT, RPCOption(), got.append) is not None
    assert server.fns == [got.append] * 3  # the channel's own callback, no wrapper
    resp = AppendEntriesResponse(V, True, None)
    server.replies[0].set_result(resp)
    server.replies[1].set_exception(Stopped())
    server.replies[2].set_exception(KeyError("boom"))
    assert got[0] is resp
    assert isinstance(got[1], Unreachable) and "node 2 has stopped" in str(got[1])
    assert isinstance(got[2], RemoteError) and got[2].target == 2


def test_a_plain_server_still_gets_its_errors_mapped() -> None:
    for err, kind in ((Stopped(), Unreachable), (KeyError("boom"), RemoteError)):
        server = PlainServer()
        got: list[Any] = []
        assert _client(server).submit_append_entries(HEARTBEAT, RPCOption(), got.append) is not None
        server.replies[0].set_exception(err)
        assert len(got) == 1 and isinstance(got[0], kind)
