"""Nemeses: a seeded schedule of faults, and the task that applies and heals them.

``make_schedule(seed, duration, n, kinds)`` draws the steps up front: after a quiet gap, one
fault held for a few seconds, healed, the next gap ... until ``duration`` minus a final quiet
period. Every random choice (victims, groups, link parameters) is drawn from the seed; only the
identity of the leader (for the ``*-leader`` kinds) is resolved when the step runs, and the
resolved step is logged. The kinds:

==================  ==========================================================================
``kill``            SIGKILL a minority of random nodes; restart them when the step ends
``kill-leader``     SIGKILL the leader; restart it
``pause``           SIGSTOP a random node; SIGCONT it
``pause-leader``    SIGSTOP the leader; SIGCONT it (it must not serve stale lease reads)
``partition``       random majority / minority halves
``partition-leader``the leader (and maybe another node) in the minority
``bridge``          two halves that cannot talk, one node talking to both
``one-way``         one node's frames to every other node are discarded (it hears, cannot
                    speak), or every other node's frames to it (it speaks, cannot hear)
``flaky``           every link drops a share of frames and delays the rest
``member``          a random voter (the leader too) leaves the voters, kept as a learner or
                    removed from the cluster (``POST /cluster/members``); in half of the
                    steps the leader is SIGKILLed 0-40 ms after the change was sent (a
                    crash in the middle of joint consensus, or right after it) and restarted when the step ends;
                    the heal adds the node back (``POST /cluster/learners`` if it was removed)
                    and restores every node as a voter
``transfer``        the leader hands leadership to a random other voter
                    (``POST /cluster/transfer``)
==================  ==========================================================================

Partitions also cut the open connections of the blocked pairs in half of the steps (drawn
from the seed). ``heal_all`` ends every fault: links healed, paused nodes continued, killed
nodes restarted, every node a voter again. The ``member`` and ``transfer`` kinds need an
``Admin`` (the runner's cluster); the heal of a membership is retried until ``member_bound``
seconds, and what stopped it is logged and kept in the step (the run's convergence check, which
wants every node a voter, then fails). Clock-rate skew is out of scope (every process shares the host's clock).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .procs import NodeSet
from .proxy import ProxyNet

__all__ = ["KINDS", "Admin", "Step", "make_schedule", "Nemesis"]

KINDS = ("kill", "kill-leader", "pause", "pause-leader", "partition", "partition-leader", "bridge",
         "one-way", "flaky", "member", "transfer")

ADMIN_KINDS = ("member", "transfer")
"""The kinds that ask the cluster over HTTP (they need an ``Admin``)."""


class Admin(Protocol):
    """The cluster calls of the ``member`` and ``transfer`` kinds, sent to ``leader``
    (the leader the step resolved). Each returns a short description of the answer (``"200 ..."``, ``"409 ..."``,
    ``"no leader"``); none raises for what the cluster answered."""

    async def change_voters(self, leader: int, voters: list[int], retain: bool) -> str:
        """``POST /cluster/members`` ``{"voters": voters, "retain": retain}``."""
        ...

    async def transfer(self, leader: int, to: int) -> str:
        """``POST /cluster/transfer`` ``{"to": to}``."""
        ...

    async def restore_members(self, bound: float) -> str | None:
        """Make every node a voter again (adding back, as a learner first, a node that left
        the cluster), retrying for up to ``bound`` seconds; ``None`` once the leader's
        membership is every node as a voter, not joint, else why not."""
        ...


@dataclass
class Step:
    """One fault: starts ``at`` seconds into the run, held ``duration`` seconds. ``r`` is a
    seed-drawn number the step uses for its random choices; ``resolved`` describes what was
    actually done (filled when it runs)."""

    at: float
    kind: str
    duration: float
    r: int
    resolved: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the step."""
        return asdict(self)


def make_schedule(seed: int, duration: float, n: int, kinds: tuple[str, ...] = KINDS,
                  quiet: tuple[float, float] = (2.0, 5.0), hold: tuple[float, float] = (3.0, 8.0),
                  tail: float = 5.0) -> list[Step]:
    """The steps of a run of ``duration`` seconds over ``n`` nodes (see the module docstring);
    nothing is scheduled in the last ``tail`` seconds. Raises ``ValueError`` for a
    ``duration`` that is not a finite number (the schedule would never end)."""
    if not math.isfinite(duration):
        raise ValueError(f"duration must be a finite number of seconds, not {duration!r}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown nemesis kind(s) {sorted(unknown)}; known: {list(KINDS)}")
    if n < 3:
        kinds = tuple(k for k in kinds if k not in ("partition", "partition-leader", "bridge"))
    if n < 2:  # a single voter can neither leave the voters nor hand its leadership over
        kinds = tuple(k for k in kinds if k not in ADMIN_KINDS)
    rng = random.Random(f"nemesis-{seed}")
    steps: list[Step] = []
    t = rng.uniform(*quiet)
    while True:
        d = rng.uniform(*hold)
        if t + d > duration - tail or not kinds:
            break
        steps.append(Step(round(t, 3), rng.choice(kinds), round(d, 3), rng.randrange(2**31)))
        t += d + rng.uniform(*quiet)
    return steps


class Nemesis:
    """Applies a schedule to ``nodes`` and ``proxy``. ``leader()`` resolves the current leader
    (``None`` if none is known); ``say(line)`` prints a progress line."""

    def __init__(self, nodes: NodeSet, proxy: ProxyNet, leader: Callable[[], Awaitable[int | None]],
                 say: Callable[[str], None], t0: float, admin: Admin | None = None,
                 member_bound: float = 30.0) -> None:
        self.nodes = nodes
        self.proxy = proxy
        self.leader = leader
        self.say = say
        self.t0 = t0
        self.admin = admin
        self.member_bound = member_bound
        self.members_changed = False
        """A ``member`` step ran and the membership was not restored since."""
        self.done: list[Step] = []

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    async def run(self, steps: list[Step], stop: asyncio.Event) -> None:
        """Apply every step at its time (each healed after its duration) until done or
        ``stop`` is set; everything is healed before returning."""
        total = len(steps)
        try:
            for i, step in enumerate(steps, 1):
                if not await self._sleep_until(step.at, stop):
                    break
                await self._apply(step)
                self.done.append(step)
                self.say(f"[{self.now():7.1f}s] nemesis {i}/{total}: {step.kind} "
                         f"{_describe(step.resolved)} for {step.duration:.1f}s")
                await self._sleep_until(step.at + step.duration, stop)
                await self.heal(step)
        finally:
            await self.heal_all()

    async def _sleep_until(self, at: float, stop: asyncio.Event) -> bool:
        wait = at - self.now()
        if wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await stop.wait()
                return False
            except TimeoutError:
                pass
        return not stop.is_set()

    async def _apply(self, step: Step) -> None:
        rng = random.Random(step.r)
        ids = sorted(self.nodes.nodes)
        n = len(ids)
        minority = (n - 1) // 2
        res = step.resolved
        k = step.kind
        if k in ADMIN_KINDS and self.admin is None:
            raise ValueError(f"the {k!r} nemesis needs an Admin (the cluster's HTTP calls)")
        if k in ("kill-leader", "pause-leader", "partition-leader"):
            leader = await self.leader()
            res["leader"] = leader
            target = leader if leader is not None else rng.choice(ids)
        else:
            target = rng.choice(ids)
            if k in ADMIN_KINDS:  # (the member step's voter that leaves may be the leader)
                res["leader"] = await self.leader()
        if k in ("kill", "kill-leader"):
            victims = [target] if k == "kill-leader" else rng.sample(ids, rng.randint(1, max(1, minority)))
            for v in victims:
                self.nodes.kill(v)
            res["killed"] = victims
        elif k in ("pause", "pause-leader"):
            self.nodes.pause(target)
            res["paused"] = [target]
        elif k in ("partition", "partition-leader", "bridge"):
            order = ids[:]
            rng.shuffle(order)
            if k == "partition-leader":
                order.remove(target)
                small = [target] + order[: rng.randint(0, max(0, minority - 1))]
                groups = [small, [x for x in ids if x not in small]]
                self.proxy.partition(groups)
            elif k == "partition":
                cut = rng.randint(1, max(1, minority))
                groups = [order[:cut], order[cut:]]
                self.proxy.partition(groups)
            else:
                bridge = order[0]
                rest = order[1:]
                half = len(rest) // 2
                left, right = rest[:half], rest[half:]
                for x in left:
                    for y in right:
                        self.proxy.block(x, y)
                        self.proxy.block(y, x)
                groups = [left + [bridge], [bridge] + right]
                res["bridge"] = bridge
            res["groups"] = groups
            if rng.random() < 0.5:
                res["cut"] = sum(self.proxy.cut(a, b) for a, b in self.proxy.faulty_links() if a < b)
        elif k == "one-way":
            others = [x for x in ids if x != target]
            mute = rng.random() < 0.5
            for o in others:
                if mute:
                    self.proxy.block(target, o)
                else:
                    self.proxy.block(o, target)
            res["node"] = target
            res["direction"] = "cannot speak" if mute else "cannot hear"
        elif k == "flaky":
            drop = round(rng.uniform(0.05, 0.3), 3)
            delay = round(rng.uniform(0.0, 0.08), 3)
            for (a, b) in self.proxy.links:
                self.proxy.set_link(a, b, drop=drop, delay=delay)
            res["drop"], res["delay"] = drop, delay
        elif k == "member":
            assert self.admin is not None
            retain = rng.random() < 0.5
            kill_after = rng.uniform(0.0, 0.04) if rng.random() < 0.5 else None
            res["removed"], res["retain"] = target, retain
            leader = res["leader"]
            if leader is None:
                res["answer"] = "no leader"
                return
            self.members_changed = True
            change = asyncio.create_task(self.admin.change_voters(leader, [x for x in ids if x != target], retain))
            if kill_after is not None:
                await asyncio.sleep(kill_after)
                res["killed_after_ms"] = round(kill_after * 1000)
                res["answered_before"] = change.done()
                self.nodes.kill(leader)
                res["killed"] = [leader]
            res["answer"] = await change
        elif k == "transfer":
            assert self.admin is not None
            others = [x for x in ids if x != res["leader"]]
            to = rng.choice(others)
            res["to"] = to
            res["answer"] = "no leader" if res["leader"] is None else await self.admin.transfer(res["leader"], to)
        else:  # pragma: no cover - make_schedule refuses unknown kinds
            raise ValueError(k)

    async def heal(self, step: Step) -> None:
        """End ``step``'s fault."""
        res = step.resolved
        for v in res.get("killed", []):
            self.nodes.start(v)
        for v in res.get("paused", []):
            self.nodes.resume(v)
        if step.kind in ("partition", "partition-leader", "bridge", "one-way", "flaky"):
            self.proxy.heal()
        if step.kind == "member":
            res["restored"] = await self._restore_members()

    async def _restore_members(self) -> str:
        """Every node a voter again (see ``Admin.restore_members``): ``"ok"`` or why not
        (also said)."""
        if not self.members_changed or self.admin is None:
            return "ok"
        problem = await self.admin.restore_members(self.member_bound)
        if problem is None:
            self.members_changed = False
            return "ok"
        self.say(f"[{self.now():7.1f}s] !! the membership was not restored: {problem}")
        return problem

    async def heal_all(self) -> None:
        """End every fault: heal the links, continue paused nodes, restart killed ones, make
        every node a voter again."""
        self.proxy.heal()
        for i, node in self.nodes.nodes.items():
            if node.paused:
                self.nodes.resume(i)
            if i in self.nodes.killed_by_nemesis:
                self.nodes.start(i)
        await self._restore_members()


def _describe(res: dict[str, Any]) -> str:
    parts = []
    for k, v in res.items():
        if k == "groups":
            v = "|".join("{" + ",".join(map(str, g)) + "}" for g in v)
        parts.append(f"{k}={v}")
    return " ".join(parts)
