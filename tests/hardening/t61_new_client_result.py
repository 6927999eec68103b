"""A network factory whose ``new_client`` returns something that is not a network client.

``RaftNetworkFactory.new_client`` must return a ``RaftNetwork`` (an object with
``append_entries``, ``vote``, ``install_snapshot`` and ``transfer_leader``). One that returns
``None`` (a forgotten ``return``), the factory itself, or an object lacking a method was
taken and kept as the target's client: the failure came later, at its first call, as an
``AttributeError`` about ``NoneType`` in a replication or vote task (the message named
neither the factory nor the target). ``RaftCore.client`` now checks what ``new_client``
returned, as it handles a ``new_client`` that raises: a warning names the factory, the
target and what came back; the target is unreachable (its calls raise ``Unreachable``
saying so, and replication backs off and retries as for any unreachable target), the
result is not kept (the factory is asked again when the node next needs a client of that
target: a new leadership or membership, a vote request, and at most every
``NO_CLIENT_RETRY_S`` as a leader's replication to it retries); the node keeps running.
What was returned is let go: a coroutine closed, a task (``asyncio.ensure_future`` of an
``async`` helper) cancelled and a future's exception retrieved (a refused task ran on, and a
failed future's "exception was never retrieved" came when it was collected).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode
from openraft_py.network.router import RouterFactory
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0


class NotAClient:
    """Has ``append_entries`` only: not a whole ``RaftNetwork``."""

    async def append_entries(self, req: Any, option: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("an incomplete client was used")


async def _connect() -> None:  # pragma: no cover - never awaited
    pass


class Unready:
    """A proxy whose attributes other than its own raise ``RuntimeError`` (not
    ``AttributeError``): looking a method of the client up fails."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"not connected: no {name}")


def _connecting() -> asyncio.Task[None]:
    """A task still running (``asyncio.ensure_future`` of an ``async`` helper)."""
    return asyncio.ensure_future(asyncio.sleep(3600))


def _failed() -> asyncio.Future[Any]:
    """A future that failed already."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(ConnectionRefusedError("refused"))
    return fut


# What each kind of wrong ``new_client`` returns (made anew at each call). "coroutine": a plain
# ``def new_client`` that returns an ``async`` helper's coroutine (closed by the node, so that
# no "never awaited" warning comes when it is collected); "task" and "future": a task or a
# future in its place (a task cancelled by the node, a failed future's exception retrieved, so
# that nothing runs on and asyncio logs nothing when they are collected).
RETURNS: dict[str, Any] = {
    "None": lambda: None,
    "incomplete": NotAClient,
    "str": lambda: "127.0.0.1:1",
    "coroutine": _connect,
    "unready": Unready,
    "task": _connecting,
    "future": _failed,
}


class OddFactory:
    """A network factory whose ``new_client`` returns ``returned()`` for an address ``"odd"``
    (counted in ``asked``, kept in ``made``), and the router's client otherwise."""

    def __init__(self, inner: RouterFactory, returned: Any) -> None:
        self.inner = inner
        self.returned = returned
        self.asked = 0
        self.made: list[Any] = []

    def new_client(self, target: int, node: BasicNode) -> Any:
        if node.addr == "odd":
            self.asked += 1
            made = self.returned()
            self.made.append(made)
            return made
        return self.inner.new_client(target, node)


async def until(cond: Any, what: str) -> None:
    """Wait (polling) until ``cond()`` holds, at most ``BOUND`` seconds."""
    async with asyncio.timeout(BOUND):
        while not cond():
            await asyncio.sleep(0.005)
    assert cond(), what


@pytest.mark.parametrize("returned", sorted(RETURNS))
async def test_a_new_client_that_is_not_a_client_leaves_only_that_target_unreachable(
    returned: str, caplog: pytest.LogCaptureFixture
) -> None:
    factories: dict[int, OddFactory] = {}
    async with Cluster(fast_config(), seed=59) as c:
        make = c.router.factory

        def factory(source: int) -> OddFactory:
            factories[source] = OddFactory(make(source), RETURNS[returned])
            return factories[source]

        c.router.factory = factory  # type: ignore[assignment]
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"first"), BOUND)
        with caplog.at_level(logging.WARNING, logger="openraft_py.core"):
            resp = await asyncio.wait_for(raft.add_learner(4, BasicNode("odd"), blocking=False), BOUND)
            assert resp.membership is not None and 4 in resp.membership.nodes
            await until(lambda: factories[leader].asked > 0, "the factory was asked for node 4")
            for i in range(5):
                resp = await asyncio.wait_for(raft.client_write(b"%d" % i), BOUND)
            await c.wait_applied(resp.log_id.index, timeout=BOUND)
        for nid, node in c.nodes.items():
            assert node.metrics.running, f"n{nid} stopped: {node.metrics.error}"
        warned = [r.getMessage() for r in caplog.records if "new_client" in r.getMessage()]
        assert warned, "no warning named new_client"
        assert "is not a network client" in warned[0], warned[0]
        assert "OddFactory" in warned[0] and "new_client(4, " in warned[0], warned[0]
        assert "AttributeError" not in caplog.text, "the odd client was used"
        made_by_leader = factories[leader].made
        for made in made_by_leader:
            if asyncio.iscoroutine(made):
                assert made.cr_frame is None, "the coroutine new_client returned was not closed"
        futures = [m for f in factories.values() for m in f.made if isinstance(m, asyncio.Future)]
        assert all(f.done() for f in futures), "a task new_client returned was left running"
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for f in factories.values():
            f.made.clear()
        del made_by_leader, futures
        gc.collect()
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not noise, f"asyncio logged: {noise}"


class LateFactory:
    """A network factory whose ``new_client`` for an address ``"late"`` returns ``None`` (a
    client it cannot make yet: its address book does not have the node) until ``ready`` is
    set, then the router's client; counted in ``asked``."""

    def __init__(self, inner: RouterFactory) -> None:
        self.inner = inner
        self.ready = False
        self.asked = 0

    def new_client(self, target: int, node: BasicNode) -> Any:
        if node.addr == "late":
            self.asked += 1
            if not self.ready:
                return None
        return self.inner.new_client(target, node)


async def test_a_target_without_a_client_is_asked_for_again_while_the_leader_replicates(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The factory could not make a client of node 4 when the leader started replicating to
    it: a stand-in that fails every call was given to the replication channel and kept, and
    the factory was asked again only at the next leadership or membership change. With
    both stable, node 4 got nothing for good, even once the factory could make its client.
    The leader now asks the factory again as its channel retries (at most every
    ``NO_CLIENT_RETRY_S``), warning once for as long as the factory's answer stays the same."""
    from openraft_py.core import raft_core

    monkeypatch.setattr(raft_core, "NO_CLIENT_RETRY_S", 0.02, raising=False)
    factories: dict[int, LateFactory] = {}
    async with Cluster(fast_config(), seed=61) as c:
        make = c.router.factory

        def factory(source: int) -> LateFactory:
            factories[source] = LateFactory(make(source))
            return factories[source]

        c.router.factory = factory  # type: ignore[assignment]
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await c.add_node(4)
        with caplog.at_level(logging.WARNING, logger="openraft_py.core"):
            await asyncio.wait_for(raft.add_learner(4, BasicNode("late"), blocking=False), BOUND)
            resp = await asyncio.wait_for(raft.client_write(b"x"), BOUND)
            asked = factories[leader].asked
            await until(lambda: factories[leader].asked >= asked + 5, "the factory was not asked again for node 4")
            factories[leader].ready = True
            await c.wait_applied(resp.log_id.index, timeout=BOUND, ids=[4])
        warned = [r.getMessage() for r in caplog.records if "the network factory LateFactory.new_client(4" in r.getMessage()]
        assert len(warned) == 1, f"warned {len(warned)} times of one answer:\n" + "\n".join(warned)


async def test_a_candidate_warns_once_of_a_factory_that_gives_no_client_campaign_after_campaign(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node asks the factory for a client of each voter at every campaign (the wrong
    result is not kept): it warned at each, several a second for as long as it campaigned.
    The same answer is now said at WARNING once (again after ``BROKEN_NETWORK_WARN_MS``),
    at DEBUG between."""
    factories: dict[int, OddFactory] = {}
    async with Cluster(fast_config(), seed=62) as c:
        make = c.router.factory

        def factory(source: int) -> OddFactory:
            factories[source] = OddFactory(make(source), RETURNS["None"])
            return factories[source]

        c.router.factory = factory  # type: ignore[assignment]
        # Node 2 knows node 1 at "odd": it can make no client of it, so only node 1 can win.
        await c.start({1})
        await c.wait_for_leader()
        await c.add_node(2)
        await asyncio.wait_for(c.nodes[1].add_learner(2, BasicNode("2")), BOUND)
        await asyncio.wait_for(c.nodes[1].add_learner(1, BasicNode("odd")), BOUND)
        await asyncio.wait_for(c.nodes[1].change_membership({1, 2}, retain=False), BOUND)
        await until(lambda: 1 in c.nodes[2].metrics.membership_config.membership.nodes, "n2 learned the membership")
        with caplog.at_level(logging.WARNING, logger="openraft_py.core"):
            await c.crash(1)
            await until(lambda: factories[2].asked >= 5, "n2 did not campaign")
        warned = [r.getMessage() for r in caplog.records if "the network factory OddFactory.new_client(1" in r.getMessage()]
        assert len(warned) == 1, f"warned {len(warned)} times of one answer in {factories[2].asked} campaigns"
