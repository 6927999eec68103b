"""Every 503 a node answers while it stops or once its Raft has stopped, for a request it did
nothing of, says ``"stopping": true`` (the extra field ``KvClient`` reads to send the request
to the next endpoint, a write too): reads (local, linearizable, lease), the status, and
writes and membership calls that came after the node's Raft had stopped.

Only the refusal of a request that arrived once the stop began said so (``_refused_at_once``).
A read in flight when the node stopped, or any read of a node whose Raft stopped on its own
(a full disk), got a bare 503 "the node has stopped: Stopped: ..."; a write that came after
the Raft had stopped got ``"outcome_unknown": true``, so ``KvClient`` reported an unknown
outcome (the command line's exit 3) where nothing was done and the next node could take it.
A write in flight when the Raft stopped still says ``"outcome_unknown": true`` (its entry may
have been appended, and committed by the others)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from openraft_py import errors as E
from openraft_py.kv.client import KvClient, Outcome

from .kv_helpers import KvCluster, url

pytestmark = pytest.mark.timeout(60)


class _StoppingNode:
    """What ``_map_error`` reads of a node, whose stop has begun (or whose Raft stopped)."""

    id = 1
    raft = None  # (no membership to say a node is outside of: ``_outside_the_membership``)

    def __init__(self, accepting: bool, raft_stopped: bool) -> None:
        self.accepting = accepting
        self._raft_stopped = raft_stopped

        class _O:
            http_addr = "127.0.0.1:28001"

        self.opts = _O()

    def leader(self, hint: Any = None) -> tuple[int | None, str | None]:
        return None, None

    def initialized(self) -> bool:
        return True

    def stopped_on_its_own(self) -> bool:
        return False

    def raft_stopped(self) -> bool:
        return self._raft_stopped


def _answer(node: _StoppingNode, method: str, path: str, e: BaseException, stopped_before: bool = False) -> Any:
    from aiohttp.test_utils import make_mocked_request

    from openraft_py.kv.http_api import _map_error

    r = _map_error(node, make_mocked_request(method, path), e, stopped_before)  # type: ignore[arg-type]
    assert r.status == 503, (method, path, e, r.status)
    return json.loads(r.body)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [E.Stopped(), E.QuorumNotEnough("no quorum"), E.Timeout("t"), E.WaitTimeout("w"),
                                   E.ForwardToLeader(None, None)],
                         ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("path", ["/kv/k?consistency=linearizable", "/kv/k?consistency=lease", "/cluster/status"])
def test_a_read_answered_503_by_a_stopping_node_says_stopping(error: BaseException, path: str) -> None:
    for node in (_StoppingNode(accepting=False, raft_stopped=False), _StoppingNode(accepting=True, raft_stopped=True)):
        body = _answer(node, "GET", path, error)
        assert body.get("stopping") is True and not body.get("outcome_unknown"), (node.accepting, body)


def test_a_read_of_a_running_node_answered_503_does_not_say_stopping() -> None:
    node = _StoppingNode(accepting=True, raft_stopped=False)
    for error in (E.QuorumNotEnough("no quorum"), E.ForwardToLeader(None, None)):
        assert "stopping" not in _answer(node, "GET", "/kv/k", error)


@pytest.mark.parametrize("method,path", [("PUT", "/kv/k"), ("DELETE", "/kv/k"), ("POST", "/kv/k/cas"),
                                         ("POST", "/cluster/members"), ("POST", "/cluster/learners")])
def test_a_write_that_came_after_the_raft_stopped_says_nothing_was_done(method: str, path: str) -> None:
    node = _StoppingNode(accepting=True, raft_stopped=True)
    body = _answer(node, method, path, E.Stopped(), stopped_before=True)
    assert body.get("stopping") is True and body.get("outcome_unknown") is False, body
    # In flight when the Raft stopped: its entry may have been appended.
    body = _answer(node, method, path, E.Stopped(), stopped_before=False)
    assert body.get("outcome_unknown") is True and "stopping" not in body, body
    # Unknown for any other reason (no quorum while the node stops): not a plain refusal.
    body = _answer(_StoppingNode(accepting=False, raft_stopped=False), method, path, E.QuorumNotEnough("q"))
    assert "stopping" not in body and body.get("outcome_unknown") is not False, body


def test_a_write_refused_for_no_leader_by_a_stopping_node_says_stopping() -> None:
    body = _answer(_StoppingNode(accepting=False, raft_stopped=False), "PUT", "/kv/k", E.ForwardToLeader(None, None))
    assert body.get("stopping") is True and "outcome_unknown" not in body and body.get("leader_id") is None, body


async def test_a_node_whose_raft_stopped_answers_stopping_and_a_write_goes_to_the_next_node(cluster: KvCluster) -> None:
    """A follower whose Raft stopped while its HTTP API still serves (as after a storage
    failure): a linearizable read and a write say ``"stopping": true`` and nothing done, and
    ``KvClient`` takes the write to the next endpoint (it reported an unknown outcome)."""
    leader = await cluster.wait_leader()
    node = cluster.followers(leader)[0]
    assert cluster.session is not None and node.raft is not None
    await asyncio.wait_for(node.raft.shutdown(), 10)
    for method, path in (("GET", "/kv/k"), ("GET", "/kv/k?consistency=lease"), ("PUT", "/kv/k")):
        async with asyncio.timeout(5), cluster.session.request(method, url(node, path), data=b"v") as resp:
            body = await resp.json()
        assert resp.status == 503 and body.get("stopping") is True, (method, path, resp.status, body)
        assert not body.get("outcome_unknown"), (method, path, body)
    async with KvClient([node.opts.http_addr, leader.opts.http_addr], deadline=10.0) as kv:
        r = await kv.put("k", "v")
    assert r.outcome is Outcome.OK and r.node == leader.opts.http_addr, r
