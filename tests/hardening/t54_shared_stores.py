"""A log store or state machine given to a second node while a node of the process runs on it.

One state machine object given to every node of an in-process cluster (made once, outside
the loop that starts the nodes) was taken: each entry was applied to it once per node, so
its state and every response were wrong, with nothing said. ``Raft.new`` on the stores of
a node still running (an in-process restart that forgot ``shutdown()``) was taken too: two
nodes of one id, each with its own engine over one log, both leaders. ``Raft.new`` now
refuses, before anything is read or written, a log store or state machine that a running
node of this process was started on, with ``ValueError`` naming the role, the object and
the node; once that node ended (``shutdown()``, or a stop of its own), the object may be
used again. One object serving as both stores of one node is fine.

The same holds for what the library's stores keep their state in: new ``MemLogStore(disk)``
and ``MemStateMachine(disk)`` over the ``MemDisk`` of a node still running (an in-process
restart that forgot ``shutdown()``, the way ``Cluster.restart`` models one), and one
``RaftStorage`` wrapped by ``Adaptor`` again for another node, were taken: new objects, so the
check above did not see them, and two engines ran over one log.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import Adaptor, Raft, StorageError
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.storage.v08 import MemRaftStorage
from openraft_py.testing.cluster import Cluster
from openraft_py.types import Entry, Normal

pytestmark = pytest.mark.timeout(30)

BOUND = 2.0


async def lone_leader(router: Router, store: Any, sm: Any) -> Raft:
    """Node 1 on ``store`` and ``sm``, registered on ``router``, leading a one-voter cluster
    (shut down if it could not be made to lead)."""
    first = await Raft.new(1, fast_config(), router.factory(1), store, sm)
    router.register(1, first)
    try:
        await first.initialize({1})
        await first.wait(BOUND).current_leader(1, "n1 leads")
    except BaseException:
        await asyncio.wait_for(first.shutdown(), BOUND)
        raise
    return first


async def restarts_keeping_its_log(router: Router, store: Any, sm: Any, written: Any) -> None:
    """Node 1 starts again on ``store`` and ``sm`` (an in-process restart once the first run
    ended), leads, and writes past ``written``, the first run's write."""
    again = await Raft.new(1, fast_config(), router.factory(1), store, sm)
    router.register(1, again)
    try:
        await again.wait(BOUND).current_leader(1, "n1 leads again")
        resp = await asyncio.wait_for(again.client_write(b"after"), BOUND)
        assert resp.log_id.index > written.log_id.index, "the log of the first run is kept"
    finally:
        await again.shutdown()


async def test_one_state_machine_for_every_node_is_refused_at_the_second_node() -> None:
    sm = MemStateMachine()
    async with Cluster(fast_config(), state_machine=lambda disk: sm) as c:
        with pytest.raises(ValueError) as info:
            await c.start({1, 2, 3})
        assert set(c.nodes) == {1}, "the first node took it; the second did not start"
        text = str(info.value)
        assert "state_machine MemStateMachine" in text
        assert "node 1 of this process runs on it" in text
        assert "give node 2 one of its own" in text


async def test_a_second_node_on_the_stores_of_a_running_node_is_refused_until_it_ends() -> None:
    router = Router(seed=3)
    disk = MemDisk()
    store, sm = MemLogStore(disk), MemStateMachine(disk)
    first = await lone_leader(router, store, sm)
    try:
        written = await first.client_write(b"before")
        for log_store, state_machine, role in [
            (store, MemStateMachine(), "log_store"),
            (MemLogStore(), sm, "state_machine"),
        ]:
            with pytest.raises(ValueError) as info:
                await Raft.new(1, fast_config(), router.factory(1), log_store, state_machine)
            assert f"{role} Mem" in str(info.value)
            assert "node 1 of this process runs on it" in str(info.value)
            assert "shut node 1 down first" in str(info.value)
        assert first.metrics.running and first.is_leader()
    finally:
        router.unregister(1)
        await first.shutdown()
    # Ended: the same objects start the node again (an in-process restart).
    await restarts_keeping_its_log(router, store, sm, written)


async def test_new_stores_over_the_disk_of_a_running_node_are_refused_until_it_ends() -> None:
    router = Router(seed=5)
    disk = MemDisk()
    first = await lone_leader(router, MemLogStore(disk), MemStateMachine(disk))
    try:
        written = await first.client_write(b"before")
        for log_store, state_machine in [
            (MemLogStore(disk), MemStateMachine(disk)),  # a restart without shutdown()
            (MemLogStore(disk), MemStateMachine()),
            (MemLogStore(), MemStateMachine(disk)),
        ]:
            with pytest.raises(ValueError) as info:
                await Raft.new(1, fast_config(), router.factory(1), log_store, state_machine)
            assert "MemDisk" in str(info.value) and "node 1 of this process runs on it" in str(info.value)
        assert first.metrics.running and first.is_leader()
        assert disk.vote is not None and disk.vote.leader_id.node_id == 1
    finally:
        router.unregister(1)
        await first.shutdown()
    # Ended: new objects over the same disk start the node again (an in-process restart).
    await restarts_keeping_its_log(router, MemLogStore(disk), MemStateMachine(disk), written)


async def test_one_raft_storage_behind_two_adaptors_is_refused() -> None:
    router = Router(seed=6)
    storage = MemRaftStorage()
    first = await lone_leader(router, *Adaptor(storage))
    try:
        for node_id in (2, 1):  # another node; node 1 again without shutdown()
            with pytest.raises(ValueError) as info:
                await Raft.new(node_id, fast_config(), router.factory(node_id), *Adaptor(storage))
            assert "MemRaftStorage" in str(info.value) and "node 1 of this process runs on it" in str(info.value)
        await asyncio.wait_for(first.client_write(b"x"), BOUND)
    finally:
        router.unregister(1)
        await first.shutdown()
    again = await Raft.new(1, fast_config(), router.factory(1), *Adaptor(storage))
    await again.shutdown()


async def test_stores_of_a_node_that_stopped_on_its_own_may_be_used_again() -> None:
    class Fails(MemStateMachine):
        async def apply(self, entries: list[Entry]) -> list[Any]:
            if any(isinstance(e.payload, Normal) and e.payload.data == b"fail" for e in entries):
                raise OSError("disk gone")
            return await super().apply(entries)

    router = Router(seed=4)
    disk = MemDisk()
    store = MemLogStore(disk)
    first = await Raft.new(1, fast_config(), router.factory(1), store, Fails(disk))
    router.register(1, first)
    await first.initialize({1})
    await first.wait(BOUND).current_leader(1, "n1 leads")
    with pytest.raises(StorageError):
        await asyncio.wait_for(first.client_write(b"fail"), BOUND)
    await first.wait(BOUND).metrics(lambda m: not m.running, "n1 stopped")
    router.unregister(1)
    # No shutdown(): a node that stopped on its own runs on nothing any more.
    again = await Raft.new(1, fast_config(), router.factory(1), store, MemStateMachine(disk))
    await again.shutdown()
    await first.shutdown()


async def test_one_object_as_both_stores_of_one_node_is_taken() -> None:
    class Both(MemLogStore):
        """A log store that is its own state machine (delegating to one)."""

        def __init__(self, disk: MemDisk) -> None:
            super().__init__(disk)
            self.sm = MemStateMachine(disk)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sm, name)

    both = Both(MemDisk())
    for name in (
        "applied_state",
        "apply",
        "begin_receiving_snapshot",
        "install_snapshot",
        "get_current_snapshot",
        "get_snapshot_builder",
    ):
        setattr(both, name, getattr(both.sm, name))
    router = Router(seed=5)
    raft = await Raft.new(1, fast_config(), router.factory(1), both, both)  # type: ignore[arg-type]
    await raft.shutdown()


async def test_a_failed_start_leaves_its_stores_free() -> None:
    class Unreadable(MemLogStore):
        async def read_committed(self) -> Any:
            raise OSError("unreadable")

    router = Router(seed=6)
    disk = MemDisk()
    store, sm = Unreadable(disk), MemStateMachine(disk)
    with pytest.raises(StorageError):
        await Raft.new(1, fast_config(), router.factory(1), store, sm)
    raft = await Raft.new(1, fast_config(), router.factory(1), MemLogStore(disk), sm)
    await raft.shutdown()


def test_stores_of_a_node_whose_loop_was_closed_under_it_may_be_used_again(caplog: pytest.LogCaptureFixture) -> None:
    """A node whose loop was closed with its tasks pending (``run_until_complete``, then
    ``close()``, no ``shutdown()``) can run no more: its stores are taken over. Its core
    task, destroyed pending once collected, is closed (``GeneratorExit``): that was logged
    as an internal failure ("raft core failed", with its traceback, and "stopped: ...
    raft core failed: GeneratorExit") and its teardown's steps failed, each logged with
    "Event loop is closed"; the node now stops without a word of its own (asyncio says
    "Task was destroyed but it is pending!")."""
    import gc

    disk = MemDisk()
    store, sm = MemLogStore(disk), MemStateMachine(disk)

    async def start() -> Raft:
        raft = await Raft.new(1, fast_config(), Router(seed=7).factory(1), store, sm)
        await raft.initialize({1})
        await raft.wait(BOUND).current_leader(1, "n1 leads")
        return raft

    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(start())
    finally:
        loop.close()  # the node's tasks are left pending
    assert first.metrics.running
    del first
    gc.collect()
    ours = [r for r in caplog.records if r.name.startswith("openraft_py") and r.levelno >= 30]
    assert not ours, "\n".join(f"{r.levelname} {r.getMessage()}" for r in ours)

    async def again() -> None:
        raft = await Raft.new(1, fast_config(), Router(seed=8).factory(1), store, sm)
        await raft.wait(BOUND).current_leader(1, "n1 leads again")
        await raft.shutdown()

    asyncio.run(again())


async def start_and_drop(config: Any, router: Router, store: MemLogStore, sm: MemStateMachine) -> None:
    """Start node 1 on ``store`` and ``sm``, then drop it without ``shutdown()`` and collect
    it (its pending tasks destroyed); fails if it could not be collected."""
    import gc
    import weakref

    raft = await Raft.new(1, config, router.factory(1), store, sm)
    await asyncio.sleep(0)  # its tasks started and wait
    core = weakref.ref(raft._core)
    del raft
    for _ in range(5):
        if core() is None:
            break
        gc.collect()
        await asyncio.sleep(0)
    assert core() is None, "the node was not collected (the test needs it gone)"


async def test_the_stores_of_a_node_collected_without_a_shutdown_may_be_used_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node dropped without ``shutdown()`` and garbage-collected (no ticker holds it: its
    tasks, pending, are destroyed; asyncio logs "Task was destroyed but it is pending!"):
    none of its tasks can run any more, so its stores may serve a new node. Before, the
    claim was left for as long as the loop ran: every later ``Raft.new`` on those stores
    was refused, saying the node "runs on it", and the stores were never freed."""

    config = fast_config(enable_tick=False)
    router = Router(seed=5)
    disk = MemDisk()
    store, sm = MemLogStore(disk), MemStateMachine(disk)
    await start_and_drop(config, router, store, sm)
    failed = [r.getMessage() for r in caplog.records if r.name.startswith("openraft_py") and r.levelno >= 40]
    assert not failed, f"an internal failure was logged for a node dropped without shutdown(): {failed}"
    again = await Raft.new(1, config, router.factory(1), store, sm)
    await again.shutdown()


async def test_a_node_collected_without_a_shutdown_leaves_no_stuck_task_timer() -> None:
    """A node dropped without ``shutdown()`` and collected tears down from its core task's
    ``GeneratorExit``: its tasks are destroyed with it and none of them will ever end. That
    teardown armed the stuck-task timer (``RaftCore._stuck_tasks``): the loop's timer held
    the collected node alive again, and ``STUCK_TASKS_WARN_S`` (10 s) later it said at
    WARNING that the node's core task "has not ended" (a store call ignoring its
    cancellation?), naming a task nothing could end."""

    from openraft_py.core.raft_core import RaftCore

    def stuck_timers() -> list[asyncio.TimerHandle]:
        scheduled: list[asyncio.TimerHandle] = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
        return [
            h
            for h in scheduled
            if not h.cancelled() and getattr(h._callback, "__func__", None) is RaftCore._stuck_tasks  # type: ignore[attr-defined]
        ]

    disk = MemDisk()
    await start_and_drop(fast_config(enable_tick=False), Router(seed=6), MemLogStore(disk), MemStateMachine(disk))
    assert not stuck_timers(), "a collected node armed the stuck-task timer (it warns in 10 s, naming its core task)"


class Lingers(MemStateMachine):
    """A state machine whose ``apply`` of ``b"hold"`` and whose snapshot build wait for good
    (``running`` set when one started); cancelled, each waits for ``let_go`` before it ends
    (as a call running in a worker thread does: ``in_thread`` raises only once its thread
    ended). ``fail(e)`` stops the node through its fatal handler (``set_fatal_handler``)."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.running = asyncio.Event()
        self.let_go = asyncio.Event()
        self.ended = asyncio.Event()
        self.handler: Any = None

    def set_fatal_handler(self, handler: Any) -> None:
        self.handler = handler

    async def linger(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            await self.let_go.wait()
            raise
        finally:
            self.ended.set()

    async def apply(self, entries: list[Entry]) -> list[Any]:
        if any(isinstance(e.payload, Normal) and e.payload.data == b"hold" for e in entries):
            await self.linger()
        return await super().apply(entries)

    def get_snapshot_builder(self) -> Any:
        sm = self

        class Builder:
            async def build_snapshot(self) -> Any:
                await sm.linger()

        return Builder()


async def start_again(store: MemLogStore, sm: MemStateMachine, router: Router) -> Raft:
    """``Raft.new`` on ``store`` and ``sm``, tried again while refused as in use (the old
    node's last task ends a loop step after its call did), at most ``BOUND`` seconds."""
    async with asyncio.timeout(BOUND):
        while True:
            try:
                return await Raft.new(1, fast_config(), router.factory(1), store, sm)
            except ValueError:
                await asyncio.sleep(0.005)


@pytest.mark.parametrize("busy", ["apply", "build_snapshot"])
async def test_the_stores_of_a_stopped_node_stay_claimed_while_its_tasks_still_run(busy: str) -> None:
    """A node that stops on its own (its state machine failed) while its state machine worker
    is in ``apply``, or a snapshot build runs, cancels them; a call that takes a while to end
    once cancelled (a worker thread it waits for) still runs when the core's task has ended.
    The stores were released with the core's task: a new node started on them at once ran
    beside the old node's apply or build. They are now released once every task of the node
    ended; until then ``Raft.new`` refuses them, naming the tasks."""
    router = Router(seed=9)
    disk = MemDisk()
    store, sm = MemLogStore(disk), Lingers(disk)
    first = await lone_leader(router, store, sm)
    try:
        await asyncio.wait_for(first.client_write(b"before"), BOUND)
        held = None
        if busy == "apply":
            held = asyncio.ensure_future(first.client_write(b"hold"))
        else:
            await first.trigger.snapshot()
        await asyncio.wait_for(sm.running.wait(), BOUND)
        sm.handler(OSError("disk gone"))
        await first.wait(BOUND).metrics(lambda m: not m.running, "n1 stopped")
        if held is not None:
            with pytest.raises(StorageError):
                await asyncio.wait_for(held, BOUND)
        assert not sm.ended.is_set(), f"the {busy} call ended (the test needs it running)"
        with pytest.raises(ValueError) as info:
            await Raft.new(1, fast_config(), router.factory(1), store, sm)
        text = str(info.value)
        assert "log_store MemLogStore" in text, text
        assert "node 1 of this process stopped" in text, text
        name = "sm-worker" if busy == "apply" else "build-snapshot"
        assert f"raft-1-{name}" in text, text
        assert "await raft.shutdown()" in text, text
        sm.let_go.set()
        await asyncio.wait_for(sm.ended.wait(), BOUND)
        router.unregister(1)
        # No shutdown(): once the last task ended, the stores are free.
        again = await start_again(store, sm, router)
        await again.shutdown()
    finally:
        sm.let_go.set()
        await first.shutdown()


async def test_a_core_task_cancelled_before_its_first_step_ends_every_task_of_the_node() -> None:
    """A core task cancelled before its first step (by anything but ``shutdown()``, which
    tears down itself) never runs ``_run``, whose ``finally`` tears the node down: its state
    machine worker and ticker ran on, and the node said ``running`` for good. Torn down from
    the core task's end now: every task of the node ends, and its stores are free."""
    router = Router(seed=10)
    disk = MemDisk()
    store, sm = MemLogStore(disk), MemStateMachine(disk)
    first = await Raft.new(1, fast_config(), router.factory(1), store, sm)
    core = first._core
    assert core.task is not None
    core.task.cancel()  # before its first step: Raft.new does not yield after starting it
    await first.wait(BOUND).metrics(lambda m: not m.running, "n1 stopped")
    async with asyncio.timeout(BOUND):
        while not core.ended():
            await asyncio.sleep(0.005)
    again = await start_again(store, sm, router)
    await again.shutdown()
    await first.shutdown()


async def hold_swallowing_one_cancel(entries: list[Entry], running: asyncio.Event) -> None:
    """If ``entries`` hold ``b"hold"``: set ``running`` and wait for good, swallowing the
    first cancellation (and waiting again: only a second cancel ends it)."""
    if any(isinstance(e.payload, Normal) and e.payload.data == b"hold" for e in entries):
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.Event().wait()


class SwallowsOneCancel(MemStateMachine):
    """A state machine whose ``apply`` of ``b"hold"`` waits for good and swallows the first
    cancellation (and waits again): a plug-in bug, or one finishing its write its own way."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.running = asyncio.Event()
        self.handler: Any = None

    def set_fatal_handler(self, handler: Any) -> None:
        self.handler = handler

    async def apply(self, entries: list[Entry]) -> list[Any]:
        await hold_swallowing_one_cancel(entries, self.running)
        return await super().apply(entries)


async def stopped_while_applying(router: Router, sm_cls: Any) -> tuple[Raft, MemLogStore, Any]:
    """Node 1 of a one-voter cluster on ``router``, its state machine an ``sm_cls`` (with
    ``running`` and ``handler``), stopped by a fatal ``OSError`` while its ``apply`` of
    ``b"hold"`` runs (the write failed with ``StorageError``). The caller shuts it down."""
    disk = MemDisk()
    store, sm = MemLogStore(disk), sm_cls(disk)
    first = await lone_leader(router, store, sm)
    try:
        held = asyncio.ensure_future(first.client_write(b"hold"))
        await asyncio.wait_for(sm.running.wait(), BOUND)
        sm.handler(OSError("disk gone"))
        with pytest.raises(StorageError):
            await asyncio.wait_for(held, BOUND)
    except BaseException:
        await asyncio.wait_for(first.shutdown(), BOUND)
        raise
    return first, store, sm


async def test_a_task_that_does_not_end_when_cancelled_is_cancelled_again_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A task of a stopped node that swallowed its cancellation kept the node's stores
    claimed (and ``shutdown()`` waiting) for good, with nothing said. Every
    ``STUCK_TASKS_WARN_S`` until the node ended, the core names the tasks left at WARNING
    and cancels them again."""
    from openraft_py.core import raft_core

    monkeypatch.setattr(raft_core, "STUCK_TASKS_WARN_S", 0.05)
    router = Router(seed=11)
    first, store, sm = await stopped_while_applying(router, SwallowsOneCancel)
    try:
        router.unregister(1)
        again = await start_again(store, sm, router)
        await again.shutdown()
        assert "raft-1-sm-worker" in caplog.text and "have not ended" in caplog.text, caplog.text
    finally:
        await asyncio.wait_for(first.shutdown(), BOUND)


class AppendSwallowsOneCancel(MemLogStore):
    """A log store whose ``append`` of ``b"hold"`` waits for good and swallows the first
    cancellation (and waits again): the node's core task awaits it."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.running = asyncio.Event()

    async def append(self, entries: list[Entry], callback: Any) -> None:
        await hold_swallowing_one_cancel(entries, self.running)
        await super().append(entries, callback)


async def test_a_core_task_that_does_not_end_at_shutdown_is_cancelled_again_and_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``shutdown()`` cancels the core task; a log store call that swallowed the
    cancellation kept it running, so ``shutdown()`` waited for good, the stores claimed,
    with nothing said: the tasks of a stopped node were named and cancelled again every
    ``STUCK_TASKS_WARN_S`` only once the core task had ended (from its teardown). The core
    task is now among them, from the ``shutdown()`` that cancelled it."""
    from openraft_py.core import raft_core

    monkeypatch.setattr(raft_core, "STUCK_TASKS_WARN_S", 0.05)
    router = Router(seed=12)
    disk = MemDisk()
    store, sm = AppendSwallowsOneCancel(disk), MemStateMachine(disk)
    first = await lone_leader(router, store, sm)
    held = None
    try:
        held = asyncio.ensure_future(first.client_write(b"hold"))
        await asyncio.wait_for(store.running.wait(), BOUND)
        await asyncio.wait_for(first.shutdown(), BOUND)
        assert first._core.ended()
        assert "raft-core-1" in caplog.text and "have not ended" in caplog.text, caplog.text
        router.unregister(1)
        again = await Raft.new(1, fast_config(), router.factory(1), store, sm)
        await again.shutdown()
    finally:
        if held is not None:
            held.cancel()
        core = first._core
        if core.task is not None and not core.task.done():  # (the test failed: end it)
            core.task.cancel()
            await asyncio.wait_for(first.shutdown(), BOUND)


class SwallowsEveryCancel(SwallowsOneCancel):
    """A state machine whose ``apply`` of ``b"hold"`` swallows every cancellation until
    ``let_go`` is set."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.let_go = asyncio.Event()

    async def apply(self, entries: list[Entry]) -> list[Any]:
        if any(isinstance(e.payload, Normal) and e.payload.data == b"hold" for e in entries):
            self.running.set()
            while not self.let_go.is_set():
                try:
                    await self.let_go.wait()
                except asyncio.CancelledError:
                    pass
        return await super().apply(entries)


async def test_a_task_that_never_ends_is_named_less_and_less_often(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A task of a stopped node that ignores every cancellation was named at WARNING every
    ``STUCK_TASKS_WARN_S`` (10 s) for as long as the process ran: 360 warnings an hour. The
    period now doubles after each, up to ``STUCK_TASKS_WARN_MAX_S`` (as the network's
    failure logs repeat every 300 s), each warning saying when the next look comes."""
    import re

    from openraft_py.core import raft_core

    monkeypatch.setattr(raft_core, "STUCK_TASKS_WARN_S", 0.01)
    monkeypatch.setattr(raft_core, "STUCK_TASKS_WARN_MAX_S", 0.04, raising=False)
    router = Router(seed=13)
    first, store, sm = await stopped_while_applying(router, SwallowsEveryCancel)
    try:

        def warned() -> list[str]:
            return [r.getMessage() for r in caplog.records if "have not ended" in r.getMessage()]

        async with asyncio.timeout(BOUND):
            while len(warned()) < 4:
                await asyncio.sleep(0.005)
        periods = [re.search(r"looked at again in ([\d.]+) s", w) for w in warned()[:4]]
        assert all(periods), warned()[:4]
        assert [float(m.group(1)) for m in periods if m] == [0.02, 0.04, 0.04, 0.04], warned()[:4]
    finally:
        sm.let_go.set()
        await asyncio.wait_for(first.shutdown(), BOUND)
