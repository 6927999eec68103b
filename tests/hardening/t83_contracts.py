"""Three contract gaps.

1. A blocking ``add_learner`` whose entry committed, cut short by the leader stepping down
   while it waited for the learner to catch up, raised ``ForwardToLeader`` with
   ``outcome_unknown=False``, which says the call "did not and will not take effect": the
   learner was in the membership all the same. So did a ``change_membership`` whose joint
   config committed and whose final entry the next leader replaced (it finishes the change
   itself). Now the error says the change committed (``ForwardToLeader.committed_log_id``,
   the entry that made it).
2. ``TcpServer.start`` served a ``Raft`` already shut down; now ``ValueError``.
3. A node whose own ``TcpNetworkFactory`` was closed under it logged its failed vote
   requests at DEBUG only; now it says so at WARNING, once (peers down stay at DEBUG).
4. The stand-in future of 1 left its error unread when the caller had given up first, and
   the loop reported it as never retrieved (found by the simulator, seed 70234, 5 nodes).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import cast

import pytest
from integration.checks import entry_at, fast_config

from openraft_py import BasicNode, Entry, ForwardToLeader, LogId, Membership, Raft, Unreachable
from openraft_py.core.raft_core import _change_committed
from openraft_py.errors import Stopped
from openraft_py.network.tcp import TcpNetworkFactory, TcpServer
from openraft_py.storage import MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.testing.proc_cluster import free_port

pytestmark = pytest.mark.timeout(30)


async def _until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond()`` until it holds, ``what`` naming it in the timeout's error (bounded by
    ``timeout`` seconds: a condition wait, not a fixed sleep)."""
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def test_blocking_add_learner_cut_short_after_commit_says_the_change_committed() -> None:
    async with Cluster(fast_config(), seed=83) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await raft.client_write(b"settle")
        # Node 4 never runs: the entry adding it commits on the voters, and the call then
        # waits for a learner that cannot catch up.
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode("n4"), blocking=True))

        def committed() -> bool:
            m = raft.metrics
            entry = m.membership_config.log_id
            return (4 in m.membership_config.membership.nodes and entry is not None
                    and m.committed is not None and m.committed.index >= entry.index)

        await _until("the entry adding node 4 committed", committed)
        entry = raft.metrics.membership_config.log_id
        assert not adding.done(), "a learner that never runs caught up"
        other = min({1, 2, 3} - {leader})
        await raft.trigger.transfer_leader(other)
        with pytest.raises(ForwardToLeader) as ei:
            await asyncio.wait_for(adding, 10)
        e = ei.value
        assert e.committed_log_id == entry, (e, e.committed_log_id, entry)
        assert not e.outcome_unknown, "the outcome is known: the change committed"
        assert "committed" in str(e), str(e)



async def test_change_membership_whose_final_entry_is_replaced_after_the_joint_committed() -> None:
    """The joint entry of a ``change_membership`` committed, then its final entry, never
    replicated, was replaced by the next leader's (which finishes the change itself): the
    call raised ``ForwardToLeader`` with ``outcome_unknown=False`` ("did not and will not
    take effect"), although the new voters are in force. Now with ``committed_log_id``, the
    joint entry's log id."""
    async with Cluster(fast_config(), seed=84) as c:
        await c.start({1, 2, 3})
        old = await c.wait_for_leader()
        await c.nodes[old].client_write(b"settle")
        await c.add_node(4)
        await c.nodes[old].add_learner(4, BasicNode(), blocking=True)
        a, b = sorted({1, 2, 3} - {old})
        new = {old, a, 4}

        def final_entry(req: object) -> bool:
            return any(type(e.payload) is Membership and not e.payload.is_joint()
                       and e.payload.configs[0] == new for e in getattr(req, "entries", ()))

        async def hold_final(rpc: str, source: int, target: int, req: object) -> None:
            if rpc == "append_entries" and source == old and final_entry(req):
                raise Unreachable("held by the test: the final entry never leaves the old leader")

        c.router.add_hook(hold_final)
        raft = c.nodes[old]
        changing = asyncio.ensure_future(raft.change_membership(new))

        def final_appended() -> bool:
            ms = raft.metrics.membership_config
            return not ms.membership.is_joint() and ms.membership.configs[0] == new

        await _until("the joint entry committed and the final one appended", final_appended)
        final = raft.metrics.membership_config.log_id
        assert final is not None
        held = [cast(Entry, entry_at(c.disks[old], i)) for i in range(final.index - 1, 0, -1)]
        joint = next(e.log_id for e in held if type(e.payload) is Membership and e.payload.is_joint())
        c.router.isolate(old)
        await _until("another leader", lambda: any(c.nodes[n].is_leader() for n in (a, b, 4)))
        c.router.clear_hooks()
        c.router.heal()
        with pytest.raises(ForwardToLeader) as ei:
            await asyncio.wait_for(changing, 10)
        e = ei.value
        assert e.committed_log_id == joint, (e, e.committed_log_id, joint)
        assert not e.outcome_unknown


# -- 2. TcpServer.start refuses a Raft that has stopped ------------------------------------------


async def test_tcp_server_refuses_a_raft_that_was_shut_down() -> None:
    """``TcpServer.start`` took a ``Raft`` already shut down: it listened, and every peer's
    request got an error (``Unreachable`` on their side), with nothing said here."""
    factory = TcpNetworkFactory(1, "c83")
    raft = await Raft.new(1, fast_config(), factory, MemLogStore(), MemStateMachine())
    await raft.shutdown()
    try:
        with pytest.raises(ValueError, match=r"raft .*has stopped"):
            await TcpServer.start(raft, "127.0.0.1", 0, "c83")
    finally:
        await factory.close()


# -- 3. a node whose own network factory was closed under it says so, once -----------------------


async def _campaigning_tcp_node(port2: int) -> tuple[Raft, TcpNetworkFactory]:
    """Node 1 on a ``TcpNetworkFactory``, initialized with node 2 (nothing listens at
    ``port2``): it campaigns, and every vote request fails."""
    factory = TcpNetworkFactory(1, "c83")
    raft = await Raft.new(1, fast_config(), factory, MemLogStore(), MemStateMachine())
    await raft.initialize({1: BasicNode("127.0.0.1:1"), 2: BasicNode(f"127.0.0.1:{port2}")})
    return raft, factory


def _failed_votes(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if "vote request to 2 failed" in r.getMessage())


def _closed_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "network factory" in r.getMessage() and "closed" in r.getMessage()]


async def test_a_node_whose_factory_was_closed_under_it_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="openraft_py")
    raft, factory = await _campaigning_tcp_node(free_port())
    try:
        await factory.close()  # (under the running node: a mistake)
        start = _failed_votes(caplog)
        await _until("three vote requests failed on the closed factory", lambda: _failed_votes(caplog) >= start + 3)
        warned = _closed_warnings(caplog)
        assert len(warned) == 1, warned  # said once, not per request
        assert "node 1" in warned[0] and "close()" in warned[0], warned[0]
    finally:
        await raft.shutdown()


async def test_a_peer_simply_down_stays_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="openraft_py")
    raft, factory = await _campaigning_tcp_node(free_port())
    try:
        await _until("three vote requests failed", lambda: _failed_votes(caplog) >= 3)
        assert not _closed_warnings(caplog)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "vote request" in r.getMessage()]
    finally:
        await raft.shutdown()
        await factory.close()


def test_kv_members_change_committed_then_no_leader_is_not_said_nothing_done() -> None:
    """The kv service's 503 for a ``POST /cluster/members`` whose joint config committed
    before its leader stepped down (``committed_log_id``), on a stopping node with no leader
    known: it said ``"stopping": true`` (nothing done, send it elsewhere), and the add-learner
    text. Now it says the change committed."""
    import json

    from aiohttp.test_utils import make_mocked_request

    from openraft_py.kv.http_api import _map_error
    from openraft_py.kv.node import LearnerInForward
    from openraft_py.types import LogId

    class _Stopping:
        id = 1
        accepting = False
        raft = None  # (no membership to say a node is outside of: ``_outside_the_membership``)

        def leader(self, hint: object = None) -> tuple[None, None]:
            return None, None

        def initialized(self) -> bool:
            return True

        def raft_stopped(self) -> bool:
            return False

    req = make_mocked_request("POST", "/cluster/members")
    e = ForwardToLeader(None, None, committed_log_id=LogId(1, 5))
    r = _map_error(_Stopping(), req, e)  # type: ignore[arg-type]
    body = json.loads(cast(bytes, r.body))
    assert r.status == 503 and "stopping" not in body and body["leader_id"] is None, body
    assert "the change committed" in body["error"] and "learner" not in body["error"], body
    r = _map_error(_Stopping(), req, LearnerInForward(ForwardToLeader(None, None, committed_log_id=LogId(1, 5))))  # type: ignore[arg-type]
    body = json.loads(cast(bytes, r.body))
    assert "stopping" not in body and "the learner is in the membership" in body["error"], body
    r = _map_error(_Stopping(), req, ForwardToLeader(None, None))  # type: ignore[arg-type]
    assert json.loads(cast(bytes, r.body)).get("stopping") is True  # nothing done: said so


async def test_a_change_whose_caller_gave_up_leaves_no_unretrieved_error() -> None:
    """The stand-in future of a committed change (``_change_committed``) failed after its
    caller gave up (a timeout cancelled ``tx``; then the node shut down): its error was never
    retrieved, and the loop reported "Future exception was never retrieved" (simulator seed
    70234, 5 nodes)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        tx: asyncio.Future[object] = loop.create_future()
        inner = _change_committed(tx, LogId(3, 7))
        tx.cancel()  # the caller gave up
        inner.set_exception(Stopped("raft node has been shut down"))
        await asyncio.sleep(0)  # the done callback runs
        await asyncio.sleep(0)
        del inner
        gc.collect()
    finally:
        loop.set_exception_handler(old)
    assert not reported, reported
