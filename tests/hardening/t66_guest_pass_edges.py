"""Edges of guest passes (``openraft_py.core.guest``: in the in-process router's fast mode a
parked follower's pass runs on the leader's task, as if on its own): what reaches the
follower's core task between the guest pass and the moment its task takes the rest of that
pass (``RaftCore._handed``) must reach that rest, as it would on the follower's own task,
and a node started under a task factory of the application's still starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from integration.checks import until

from openraft_py import BasicNode, Config, Raft, SnapshotPolicy
from openraft_py.storage.memory import MemDisk, MemLogStore
from openraft_py.testing.cluster import Cluster
from openraft_py.types import LogId

pytestmark = pytest.mark.timeout(30)

CONFIG = Config(
    snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
)


async def _leader(c: Cluster[Any, Any]) -> Raft[Any]:
    await c.start({1, 2, 3})
    await c.nodes[1].trigger.elect()
    return c.nodes[await c.wait_for_leader(timeout=10)]


L = TypeVar("L", bound=MemLogStore)


@asynccontextmanager
async def _a_follower_with(store: type[L]) -> AsyncIterator[tuple[Cluster[Any, Any], Raft[Any], Raft[Any], L]]:
    """A 3-node cluster whose nodes' log stores are ``store``s, once its leader took a
    write: the cluster, the leader, one follower and that follower's store."""
    stores: dict[int, L] = {}

    def log_store(node: int, d: MemDisk) -> L:
        return stores.setdefault(node, store(d))

    async with Cluster(CONFIG, log_store=log_store) as c:
        leader = await _leader(c)
        await leader.client_write(b"warm")
        follower = next(n for n in c.nodes if c.nodes[n] is not leader)
        yield c, leader, c.nodes[follower], stores[follower]


class _ExpiredTimeoutLog(MemLogStore):
    """Once armed, ``save_committed`` waits for its flush under a deadline that has passed
    already (``asyncio.timeout(0)``: a budget spent), and takes the ``TimeoutError``."""

    armed = False
    timeouts = 0

    async def save_committed(self, committed: LogId | None) -> None:
        if self.armed:
            self.armed = False
            try:
                async with asyncio.timeout(0):
                    await asyncio.sleep(10)  # (the flush: its deadline is over before it ends)
            except TimeoutError:
                self.timeouts += 1
        await super().save_committed(committed)


async def test_a_timeout_expiring_in_a_followers_store_reaches_the_store_not_the_node() -> None:
    """A follower's ``save_committed`` run in a guest pass enters ``asyncio.timeout(0)`` and
    suspends: the timeout's cancellation of the follower's core task lands before that task
    took the rest of the pass. It must reach the store (as a ``TimeoutError``, which it
    takes), as it does on the follower's own task. It reached the follower's wait for work
    instead, and the follower stopped ("raft core task was cancelled")."""
    async with _a_follower_with(_ExpiredTimeoutLog) as (c, leader, raft, store):
        core = raft._core
        before = core.guest_passes
        store.armed = True
        for _ in range(3):
            await asyncio.wait_for(leader.client_write(b"w"), 10)
        await until(lambda: store.timeouts == 1 or core.fatal is not None, "the store's TimeoutError")
        assert core.fatal is None, core.fatal
        assert store.timeouts == 1
        assert core.guest_passes > before  # (the pass was a guest's)
        await asyncio.wait_for(leader.client_write(b"after"), 10)
        last = leader.metrics.last_log_index
        assert last is not None
        await asyncio.wait_for(raft.wait().log_index_at_least(last), 10)


class _StopInsideLog(MemLogStore):
    """Once armed (``stop``), ``save_committed`` has its node shut down (the future ``stop``,
    which a task awaits before calling ``shutdown()``) and waits for a flush that never ends;
    it records the task it ends on."""

    stop: asyncio.Future[None] | None = None
    ended_on: asyncio.Task[Any] | None = None

    async def save_committed(self, committed: LogId | None) -> None:
        stop = self.stop
        if stop is not None:
            self.stop = None
            stop.set_result(None)
            try:
                await asyncio.get_running_loop().create_future()  # (a flush that never ends)
            finally:
                self.ended_on = asyncio.current_task()
        await super().save_committed(committed)


async def test_a_follower_shut_down_before_it_took_the_rest_of_a_guest_pass_cancels_that_rest() -> None:
    """A follower shut down between a guest pass that must wait (its store's call suspended)
    and its task taking the rest: the shutdown's cancellation must reach that rest (the
    store's call ends, on the follower's task), as it does on the follower's own task. It
    reached the follower's wait for work instead: the rest was dropped, never awaited, the
    store's call left suspended for good (its ``finally`` never ran) and kept by the node."""
    async with _a_follower_with(_StopInsideLog) as (c, leader, raft, store):
        core = raft._core
        before = core.guest_passes
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def stopper() -> None:
            await stop
            await raft.shutdown()

        stopping = asyncio.create_task(stopper())
        store.stop = stop
        for _ in range(3):
            await asyncio.wait_for(leader.client_write(b"w"), 10)
        await asyncio.wait_for(stopping, 10)
        assert core.guest_passes > before  # (the pass was a guest's)
        assert store.ended_on is core.task, store.ended_on
        assert core._handed is None


async def test_a_node_starts_under_a_task_factory_that_takes_no_context() -> None:
    """A task factory of the application's written as ``factory(loop, coro)`` (the only form
    before Python 3.11) is called without ``context`` by ``create_task`` unless one is
    passed: a node's core task was created with the context of its guest passes, and
    ``Raft.new`` failed with ``TypeError``. Now the cluster elects and writes (its passes
    wake their own tasks)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Task[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop)
        made.append(task)
        return task

    loop.set_task_factory(factory)
    try:
        async with Cluster(CONFIG) as c:
            leader = await _leader(c)
            for _ in range(5):
                await asyncio.wait_for(leader.client_write(b"w"), 10)
            assert all(r._core.fatal is None for r in c.nodes.values())
            assert made
    finally:
        loop.set_task_factory(None)


@pytest.mark.parametrize("watched", ["leader", "follower"])
async def test_a_waiter_sees_the_joint_config_of_a_membership_change(watched: str) -> None:
    """``wait().metrics(predicate)`` completes at the first change after which the
    predicate holds: a node's joint config, between the two phases of a membership change,
    is seen by a waiter on the leader and on a follower. With the followers' passes run as
    guests, the leader ran its next pass (the joint config committed, the final one
    appended) and the followers theirs in the same task step, before the waiters' check
    (a loop callback) looked: it saw the final config only, and the waiter timed out
    (``tests/hardening/t14_cancelled_calls.py`` too)."""
    async with Cluster(CONFIG) as c:
        leader = await _leader(c)
        await leader.client_write(b"warm")
        await c.add_node(4)
        await asyncio.wait_for(leader.add_learner(4, BasicNode("")), 10)
        raft = leader if watched == "leader" else next(r for r in c.nodes.values() if r is not leader and r.id != 4)
        joint = asyncio.ensure_future(
            raft.wait(5).metrics(lambda m: m.membership_config.membership.is_joint(), "the joint config")
        )
        await asyncio.sleep(0)  # (waiting)
        await asyncio.wait_for(leader.change_membership({1, 2, 3, 4}), 10)
        m = await asyncio.wait_for(joint, 10)
        assert m.membership_config.membership.is_joint()


class _Boom(BaseException):
    """Raised around a guest pass, where ``pass_as_guest`` does not catch it."""


async def test_guests_not_reached_when_one_raises_around_its_pass_are_woken() -> None:
    """Something raised around the first guest's pass (in ``_run_guests``, outside what
    ``pass_as_guest`` hands on: a signal's ``KeyboardInterrupt``, say) stops the host; every
    follower queued on it is woken and takes what is in its queue on its own task (a request
    the stopped leader withdrew is dropped there). The guest whose pass never ran was left
    with its request queued and its task parked for good: nothing else wakes it."""
    async with Cluster(CONFIG) as c:
        leader = await _leader(c)
        await leader.client_write(b"warm")
        followers = [r for r in c.nodes.values() if r is not leader]
        raised: list[int] = []
        for f in followers:
            core = f._core
            real = core.pass_as_guest

            def boom(host: Any, core: Any = core, real: Any = real) -> None:
                if not raised:
                    raised.append(core.id)
                    raise _Boom("around a guest pass")
                real(host)

            core.pass_as_guest = boom  # type: ignore[method-assign]
        writing = asyncio.ensure_future(leader.client_write(b"w"))
        await until(lambda: leader._core.fatal is not None, "the host stopped")
        assert raised
        await until(lambda: all(not f._core._msgs and not f._core.guest_queued for f in followers),
                     "every follower took its queue")
        assert all(f._core.fatal is None for f in followers)
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
