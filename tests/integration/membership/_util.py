"""Helpers of the membership-change tests: a settled leader, learners added on the router, a
background writer that follows the leader, heartbeat rounds counted on the router, the
check that every acknowledged write reached a node's state machine, and the event loop's
longest stall during a test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from openraft_py import BasicNode, Config, ForwardToLeader, LogId, Membership
from openraft_py.testing.cluster import Cluster

from ..checks import fast_config


def steady_config(**kw: object) -> Config:
    """``fast_config`` with election timeouts of 150-300 ms: a leader is elected at once on
    ``initialize`` either way, and these tests need one that stays leader through a change
    even on a loaded machine (a spurious election fails ``change_membership`` with
    ``ForwardToLeader``, which is right but not what they test)."""
    base: dict[str, object] = dict(election_timeout_min=150, election_timeout_max=300, heartbeat_interval=30)
    base.update(kw)
    return fast_config(**base)


class LoopStalls:
    """The longest stall of this event loop while the watch runs: a task wakes every
    ``period`` seconds and records by how much its wake-up was late. A stall of the whole
    process (a collection of a large heap, a machine loaded by other processes) delays every
    node of an in-process cluster at once, and one longer than an election timeout lets
    followers time out whatever the code does. Use as ``async with LoopStalls() as s:``;
    ``s.worst()`` in seconds, counting the time since the watcher last woke (a stall that
    has just happened)."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self._worst = 0.0
        # The monotonic clock of the watcher's last wake-up (not the loop's clock: uvloop's
        # is read once per loop iteration).
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopStalls:
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def worst(self) -> float:
        """The longest stall so far (seconds)."""
        return max(self._worst, time.monotonic() - self._last - self.period)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            t = time.monotonic()
            self._worst = max(self._worst, t - self._last - self.period)
            self._last = t


def now() -> float:
    """The loop clock (seconds): the clock the nodes run on."""
    return asyncio.get_running_loop().time()


async def metrics_changed(c: Cluster, timeout: float = 0.05) -> None:
    """Return at the next metrics change of any running node, or after ``timeout``."""
    waits = [asyncio.ensure_future(r._core.watch.changed()) for r in c.nodes.values()]
    if not waits:
        return
    _, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()


async def settled_leader(c: Cluster, timeout: float = 5.0, among: Iterable[int] | None = None) -> int:
    """The leader once every node agrees on it and its first entries (the initial membership
    and its blank entry) are committed: a write returns only after that."""
    leader = await c.wait_for_leader(timeout=timeout, among=among)
    await c.nodes[leader].client_write(b"settle")
    return leader


async def add_learners(c: Cluster, leader: int, ids: Iterable[int]) -> None:
    """Start every node of ``ids`` and add it as a learner (blocking)."""
    for nid in sorted(ids):
        if nid not in c.nodes:
            await c.add_node(nid)
        await c.nodes[leader].add_learner(nid, BasicNode(), blocking=True)


async def any_leader(c: Cluster, among: Iterable[int], timeout: float = 5.0) -> int:
    """Wait until one of ``among`` is the leader (by its own metrics); return it."""
    ids = set(among)
    deadline = now() + timeout
    while True:
        lid = c.leader()
        if lid is not None and lid in ids:
            return lid
        if now() > deadline:
            states = "; ".join(r.metrics.describe() for r in c.nodes.values())
            raise AssertionError(f"no leader among {sorted(ids)} within {timeout}s: {states}")
        await metrics_changed(c)


class Writer:
    """Background writes to whichever node leads, until ``stop()``: ``tasks`` writers each
    sending one ``client_write`` after the other, and, with ``tick_ms``, a pacer that starts
    one more write every ``tick_ms`` without waiting for the previous ones (so writes keep
    being appended even while every sequential writer waits on the same commit).

    ``acked`` holds ``(log_id, data, loop time of the ack)`` of every write that returned; a
    write refused with ``ForwardToLeader`` is retried with new data by the sequential
    writers, dropped by the pacer (it may or may not have taken effect: not counted)."""

    def __init__(self, c: Cluster, tasks: int = 3, prefix: str = "w", tick_ms: float | None = None) -> None:
        self.c = c
        self.acked: list[tuple[LogId, bytes, float]] = []
        self.refused = 0
        self._stop = False
        self._tasks = [asyncio.ensure_future(self._run(f"{prefix}{k}")) for k in range(tasks)]
        self._inflight: set[asyncio.Future[None]] = set()
        if tick_ms is not None:
            self._tasks.append(asyncio.ensure_future(self._pace(f"{prefix}p", tick_ms / 1000.0)))

    async def _one(self, lid: int, data: bytes) -> bool:
        try:
            resp = await self.c.nodes[lid].client_write(data)
        except ForwardToLeader:
            self.refused += 1
            return False
        self.acked.append((resp.log_id, data, now()))
        return True

    async def _run(self, name: str) -> None:
        c = self.c
        i = 0
        while not self._stop:
            lid = c.leader()
            if lid is None:
                await metrics_changed(c)
                continue
            i += 1
            if not await self._one(lid, f"{name}-{i}".encode()):
                await metrics_changed(c)

    async def _pace(self, name: str, period: float) -> None:
        # Load generation, not a wait for a condition: a write every ``period`` seconds.
        c = self.c
        i = 0
        while not self._stop:
            lid = c.leader()
            if lid is not None:
                i += 1
                t = asyncio.ensure_future(self._one(lid, f"{name}-{i}".encode()))
                self._inflight.add(t)
                t.add_done_callback(self._inflight.discard)
            await asyncio.sleep(period)

    def acked_between(self, t0: float, t1: float) -> int:
        """How many writes were acknowledged within ``[t0, t1]``."""
        return sum(1 for _, _, t in self.acked if t0 <= t <= t1)

    async def stop(self) -> None:
        """Stop the writers (each finishes its writes in flight); re-raise a writer's error."""
        self._stop = True
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=5.0)
        if self._inflight:
            await asyncio.wait_for(asyncio.gather(*self._inflight), timeout=5.0)


def assert_acked_applied(c: Cluster, acked: Iterable[tuple[LogId, bytes, Any]], ids: Iterable[int]) -> None:
    """Every acknowledged write is in the state machine of every node of ``ids``."""
    for nid in sorted(ids):
        applied = dict(c.state_machines[nid].applied_log)
        for log_id, data, *_ in acked:
            assert applied.get(log_id) == data, f"n{nid} lacks acknowledged write {log_id!r} {data!r}"


def membership_entries(c: Cluster, nid: int) -> list[tuple[LogId, Membership]]:
    """``(log_id, membership)`` of every membership entry in ``nid``'s log."""
    return [(e.log_id, e.payload) for e in c.disks[nid].entries if type(e.payload) is Membership]


class RpcCounter:
    """Counts AppendEntries requests ``source -> target`` as a router hook and lets a test
    wait for ``n`` more of them: heartbeat rounds as a clock that needs no sleep."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.counts: dict[tuple[int | None, int], int] = {}
        self._waiters: list[tuple[tuple[int | None, int], int, asyncio.Event]] = []
        c.router.add_hook(self._hook)

    def _hook(self, rpc: str, source: int, target: int, req: Any) -> None:
        if rpc != "append_entries":
            return
        for key in ((source, target), (None, target)):
            n = self.counts[key] = self.counts.get(key, 0) + 1
            for k, want, ev in self._waiters:
                if k == key and n >= want:
                    ev.set()

    async def rounds(self, source: int | None, target: int, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` more AppendEntries were sent ``source -> target`` (from any node
        for ``source=None``)."""
        key = (source, target)
        ev = asyncio.Event()
        entry = (key, self.counts.get(key, 0) + n, ev)
        self._waiters.append(entry)
        try:
            if self.counts.get(key, 0) >= entry[1]:
                return
            await asyncio.wait_for(ev.wait(), timeout)
        finally:
            self._waiters.remove(entry)


async def wait_uniform(c: Cluster, nid: int, voters: Iterable[int], timeout: float = 3.0) -> Any:
    """Wait until ``nid``'s effective membership is the uniform config ``voters`` (a joint
    config holding them is not enough: ``Wait.voter_ids`` would accept it); return the
    metrics."""
    want = (frozenset(voters),)
    await c.nodes[nid].wait(timeout).voter_ids(set(voters), f"n{nid} has voters {sorted(want[0])}")
    return await c.nodes[nid].wait(timeout).metrics(
        lambda m: m.membership_config.membership.configs == want, f"n{nid} has the uniform config {sorted(want[0])}"
    )


STALL_LIMIT = 0.15
"""A loop stall (seconds) past which ``run_unless_stalled`` runs a scenario once more."""


async def run_unless_stalled(scenario: Callable[[], Awaitable[None]], limit: float = STALL_LIMIT) -> None:
    """Run ``scenario``; when it fails (any ``Exception``: a moved leader fails a membership
    call with ``ForwardToLeader`` as readily as it fails an assertion) after the event loop
    stalled ``limit`` seconds or more, run it once more, and that run must pass.

    For scenarios that assert nobody held an election: an in-process cluster shares one event
    loop, so a stall of the whole process (a loaded CI machine, a collection of a large heap)
    stops heartbeats and election timers alike, and followers time out when it ends whatever
    the code does. A failure without such a stall, or a second failure, is raised with the
    run's longest stall added as a note; a rerun prints the stall that caused it."""
    for attempt in (1, 2):
        async with LoopStalls() as stalls:
            try:
                await scenario()
                return
            except Exception as e:
                stalled = stalls.worst()
                if attempt == 2 or stalled < limit:
                    e.add_note(f"the event loop's longest stall in this run: {stalled * 1000:.0f} ms")
                    raise
        print(f"the event loop stalled {stalled * 1000:.0f} ms: running the scenario again")
