"""``RaftMetrics`` (a snapshot of a node's state) and ``Wait`` (await a condition on it)."""

from __future__ import annotations

import asyncio
import heapq
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import msgspec

from .errors import Fatal, WaitTimeout
from .types import LogId, NodeId, ServerState, StoredMembership, Vote, _ReadOnlyDict, _struct_repr
from .validation import check_index, check_node_id, check_seconds, check_voters, shown
from .wakeup import Wakeup

__all__ = ["RaftMetrics", "ReadOnlyReplication", "Wait"]

# A heap of index waiters (``IndexWaiters``) is compacted (futures done before their index was
# reached dropped) when it reaches this size, or twice the number left after the last compaction.
_COMPACT_MIN = 64


class ReadOnlyReplication(_ReadOnlyDict[NodeId, int]):
    """``RaftMetrics.replication``: a ``dict`` that refuses every change with ``TypeError``.

    The metrics a program reads are the node's own current metrics, shared by every reader
    (``raft.metrics``, what a ``raft.wait(...)`` condition returns, the key-value service's
    Prometheus registry): changing ``replication`` in place (``m.replication.pop(m.id)`` to
    keep the followers) changed what all of them saw until the node's next change. Make a
    dict of your own instead: ``dict(m.replication)`` (``m.replication.copy()`` and
    ``m.replication | {...}`` also make a plain ``dict`` when run, but type checkers see a
    read-only ``Mapping``, which has neither). Reading, comparing (with a plain ``dict``
    too), pickling, copying and encoding (msgspec: a JSON object, a msgpack map) work as for
    a ``dict``.

    ``dict``'s methods called unbound on it (``dict.__setitem__(m.replication, k, v)``) are
    not refused (``_ReadOnlyDict``): they change what every reader of that metrics value
    sees, until the node's next change builds a new one from the leader's progress, which
    they never reach; never call them on it."""

    __slots__ = ()
    _REFUSED = (
        "RaftMetrics.replication is read-only (every reader of the node's metrics shares it): "
        "make a dict of your own, e.g. dict(m.replication)"
    )


class RaftMetrics(msgspec.Struct, frozen=True):
    """What a node reports about itself; a new value is published on every change.

    ``replication`` is set on a leader only: the matched log index of every target (-1 when
    nothing is known to match yet). It is read-only, as the whole value is: every reader of
    the node's current metrics gets the same object, the node's own waits included. In a
    node's metrics it is a ``ReadOnlyReplication``, a ``dict`` that refuses every change with
    ``TypeError`` (a ``RaftMetrics`` a program makes or decodes keeps the mapping it was
    given: it is the program's own); type checkers see a ``Mapping``, so ``mypy --strict``
    refuses ``m.replication.pop(m.id)`` before it runs. Make a dict of your own
    (``dict(m.replication)``) to change.

    ``current_leader`` is the leader this node knows of: itself while it leads; the
    established leader of its vote while it hears from it. ``None`` once an election
    timeout went by without a request from that leader (the node then starts a pre-vote
    round or an election, or, a learner, just waits) until a leader is heard from again
    or it learns of a newer one; ``None`` while its vote is a candidate's, and on a stopped
    node that led. With ``Config.enable_elect`` off the node keeps naming the last leader it
    heard from.
    """

    id: NodeId
    state: ServerState
    current_term: int
    vote: Vote
    last_log_index: int
    last_applied: LogId | None
    committed: LogId | None
    current_leader: NodeId | None
    membership_config: StoredMembership
    purged: LogId | None = None
    snapshot: LogId | None = None
    replication: Mapping[NodeId, int] | None = None
    last_quorum_acked: float | None = None
    running: bool = True
    error: str | None = None

    __repr__ = _struct_repr

    def describe(self) -> str:
        """A one-line summary: ``n1 Leader T3 last=10 committed=3-10 applied=3-10``."""
        return (
            f"n{self.id} {self.state.value} T{self.current_term} last={self.last_log_index} "
            f"committed={self.committed!r} applied={self.last_applied!r} leader={self.current_leader}"
        )


class IndexWaiters:
    """Waiters for one index of a node (applied, last log, snapshot, purged) to reach a value:
    a heap of ``(index, n, future)``, ``n`` making the entries unique, released by comparing
    its top with the node's index (``index()``, read without building the metrics). So the
    changes that do not reach a waiter's index do not wake it: a thousand waiters cost a
    write nothing (woken at every change, each of a write's changes woke every one of them).

    Invariant: every pending future handed out by ``add`` is in the heap. One given up on (a
    timeout) stays until its index is reached or a compaction drops it (at ``_COMPACT_MIN``
    entries, or twice the number left after the last one)."""

    __slots__ = ("index", "heap", "_n", "_limit")

    def __init__(self, index: Callable[[], int]) -> None:
        self.index = index
        """The node's index now (-1: none)."""
        self.heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._n = 0
        self._limit = _COMPACT_MIN

    def add(self, index: int) -> asyncio.Future[None]:
        """A future of the caller's own that ``release`` completes once the node's index is
        at least ``index``. Cancelling it affects no other waiter."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heap = self.heap
        heapq.heappush(heap, (index, self._n, fut))
        self._n += 1
        if len(heap) >= self._limit:
            heap = self.heap = [w for w in heap if not w[2].done()]
            heapq.heapify(heap)
            self._limit = max(_COMPACT_MIN, 2 * len(heap))
        return fut

    def pending(self) -> bool:
        """Whether a future handed out may still wait (kept in the heap)."""
        return bool(self.heap)

    def release(self, every: bool) -> None:
        """Complete the futures whose index the node reached (every one if ``every``, or
        when its index cannot be read: each waiter then reads the metrics and decides)."""
        heap = self.heap
        reached: float = math.inf
        if not every:
            try:
                reached = self.index()
            except Exception:  # noqa: BLE001 - a broken state: let every waiter look
                reached = math.inf
        while heap and heap[0][0] <= reached:
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_result(None)


RoleKey = tuple[ServerState, Vote, StoredMembership, NodeId | None]
"""A node's role: its state, vote, effective membership and the leader it knows of."""


def role_of(m: RaftMetrics) -> RoleKey:
    """The role of the node whose metrics are ``m`` (``RoleWaiters``)."""
    return (m.state, m.vote, m.membership_config, m.current_leader)


class RoleWaiters:
    """Waiters for a node's role (``RoleKey``: state, vote, effective membership, known
    leader) to differ from the one they last saw, released by comparing it with the node's
    role now (``role()``, read without building the metrics). So the changes of a write
    (log, commit, apply) do not wake them: ``Wait.state``, ``current_leader`` and
    ``voter_ids`` depend on nothing else, and a thousand of them made every write wake each
    one several times.

    ``groups`` keeps the futures by the role their waiter saw: nearly always one group (a
    list, not a dict: a membership holds a dict and cannot be hashed). Invariant: every
    pending future handed out by ``add`` is in a group. One given up on (a timeout) stays
    until the role changes or a compaction drops it (at ``_COMPACT_MIN`` futures, or twice
    the number left after the last one)."""

    __slots__ = ("role", "groups", "_count", "_limit")

    def __init__(self, role: Callable[[], RoleKey]) -> None:
        self.role = role
        """The node's role now."""
        self.groups: list[tuple[RoleKey, list[asyncio.Future[None]]]] = []
        self._count = 0
        self._limit = _COMPACT_MIN

    def add(self, seen: RoleKey) -> asyncio.Future[None]:
        """A future of the caller's own that ``release`` completes once the node's role is
        not ``seen`` (at the next release, if it is not already). Cancelling it affects no
        other waiter."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for role, futs in self.groups:
            if role == seen:
                futs.append(fut)
                break
        else:
            self.groups.append((seen, [fut]))
        self._count += 1
        if self._count >= self._limit:
            kept = [(role, [f for f in futs if not f.done()]) for role, futs in self.groups]
            self.groups = [(role, futs) for role, futs in kept if futs]
            self._count = sum(len(futs) for _, futs in self.groups)
            self._limit = max(_COMPACT_MIN, 2 * self._count)
        return fut

    def pending(self) -> bool:
        """Whether a future handed out may still wait."""
        return bool(self.groups)

    def release(self, every: bool) -> None:
        """Complete the futures of every role other than the node's (every one if
        ``every``, or when its role cannot be read: each waiter then reads the metrics)."""
        groups = self.groups
        now: RoleKey | None = None
        if not every:
            try:
                now = self.role()
            except Exception:  # noqa: BLE001 - a broken state: let every waiter look
                now = None
        if now is not None and len(groups) == 1 and groups[0][0] == now:
            return  # the common case: the role did not change
        self.groups = [(role, futs) for role, futs in groups if now is not None and role == now]
        for role, futs in groups:
            if now is not None and role == now:
                continue
            self._count -= len(futs)
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)


class PredicateWaiters:
    """Waiters of ``Wait.metrics``: each a predicate of the whole metrics and a future of its
    own, checked together at each change by one callback (on one future of the watch's
    ``changed``), which completes a future with the metrics its predicate held for. So a
    change costs one callback and a call of each predicate, not a wake-up of every waiting
    task: woken at every change, a thousand pending ``wait().metrics(...)`` calls on each
    node of an in-process 3-node cluster made 300 writes take 3.1-5.2 s instead of 17-37 ms
(0.24-0.34 s now: each change still calls every predicate).

    A future completes with ``None`` (its waiter then reads the metrics and calls its
    predicate itself) when the node stopped, its metrics cannot be built, or the predicate
    raised (so that it raises in its caller's task, as it did). Invariant: every pending
    future handed out by ``add`` is in ``entries`` and, while there is one, a callback is
    armed. One given up on (a timeout) stays until the next change or a compaction drops it
    (at ``_COMPACT_MIN`` entries, or twice the number left after the last one)."""

    __slots__ = ("watch", "entries", "_armed", "_changed", "_limit")

    def __init__(self, watch: MetricsWatch) -> None:
        self.watch = watch
        self.entries: list[tuple[Callable[[RaftMetrics], bool], asyncio.Future[RaftMetrics | None]]] = []
        self._armed = False
        # The watch's ``changed`` future the callback is armed on (while ``_armed``).
        self._changed: asyncio.Future[None] | None = None
        self._limit = _COMPACT_MIN

    def add(self, predicate: Callable[[RaftMetrics], bool]) -> asyncio.Future[RaftMetrics | None]:
        """A future of the caller's own that completes at the first change after which
        ``predicate(metrics)`` holds (with those metrics), or raises, or the node has stopped
        (``None``). Cancelling it affects no other waiter."""
        fut: asyncio.Future[RaftMetrics | None] = asyncio.get_running_loop().create_future()
        entries = self.entries
        entries.append((predicate, fut))
        if len(entries) >= self._limit:
            entries = self.entries = [e for e in entries if not e[1].done()]
            self._limit = max(_COMPACT_MIN, 2 * len(entries))
        if not self._armed:
            self._arm()
        return fut

    def _arm(self) -> None:
        self._armed = True
        changed = self._changed = self.watch.changed()
        changed.add_done_callback(self._check)

    def due(self) -> bool:
        """Whether the metrics changed and the waiters were not checked yet (``_check`` is
        scheduled, not run): a change made before it runs hides the state they may wait for."""
        changed = self._changed
        return self._armed and changed is not None and changed.done()

    def _check(self, _changed: asyncio.Future[None]) -> None:
        """At a change: complete the futures whose predicate holds now."""
        self._armed = False
        entries = [e for e in self.entries if not e[1].done()]
        self.entries = []
        if not entries:
            return
        try:
            m = self.watch.current
        except Exception:  # noqa: BLE001 - a broken state: let every waiter look
            m = None
        keep = []
        for predicate, fut in entries:
            if fut.done():  # (a predicate may cancel another waiter)
                continue
            if m is None or not m.running or self.watch.fatal is not None:
                fut.set_result(None)
                continue
            try:
                held = predicate(m)
            except Exception:  # noqa: BLE001 - its waiter calls it again, and it raises there
                fut.set_result(None)
                continue
            if held:
                fut.set_result(m)
            else:
                keep.append((predicate, fut))
        self.entries = keep + self.entries  # (+ any added by a predicate meanwhile)
        if self.entries and not self._armed:
            self._arm()


class MetricsWatch:
    """Holds a node's metrics and wakes waiters when they change.

    Building a ``RaftMetrics`` costs microseconds and the state changes several times per
    write, so the value is built lazily: ``mark_changed()`` only flags it, and ``current``
    rebuilds it from the node's state when flagged.

    The getters (each the node's index now, -1 for none, read without building the
    metrics) key the waiters of ``at_least``: ``applied_index`` (the last applied entry),
    ``log_index`` (the last log entry), ``snapshot_index`` and ``purged_index``. Without
    one, ``at_least`` of that kind falls back to ``changed``. ``role`` (the node's
    ``RoleKey`` now) keys the waiters of ``role_changed`` likewise.
    """

    def __init__(
        self,
        build: Callable[[], RaftMetrics],
        applied_index: Callable[[], int] | None = None,
        *,
        log_index: Callable[[], int] | None = None,
        snapshot_index: Callable[[], int] | None = None,
        purged_index: Callable[[], int] | None = None,
        role: Callable[[], RoleKey] | None = None,
    ) -> None:
        self._build = build
        getters = {"applied": applied_index, "log": log_index, "snapshot": snapshot_index, "purged": purged_index}
        self._keyed: dict[str, IndexWaiters] = {k: IndexWaiters(g) for k, g in getters.items() if g is not None}
        self._by_role = None if role is None else RoleWaiters(role)
        self.index_waited: list[IndexWaiters | RoleWaiters] = []
        """The waiter sets with waiters (``release_index_waiters`` looks at these only: none,
        the common case, costs a change one test). Read-only outside this class, and the
        same list for the watch's life (changed in place): a ``Publisher`` holds it and
        calls ``release_index_waiters`` only while it is not empty."""
        self._current = build()
        self.dirty = False
        """Whether the state changed since the metrics were last built (read-only outside
        this class)."""
        self.waiters = Wakeup()
        """Wakes the waiters at each change (read-only outside this class: ``waiters.first
        is None`` means nobody waits)."""
        # The error that stopped the node, set by its core before the last change: a
        # waiter raises it (``Fatal`` naming the metrics' ``error`` when unset).
        self.fatal: BaseException | None = None
        # ``fatal``'s traceback when it stopped the node: a waiter raises ``fatal`` with it,
        # so that the one instance does not collect every waiter's frames (``RaftCore.raise_fatal``).
        self.fatal_tb: TracebackType | None = None
        self._by_predicate: PredicateWaiters | None = None

    @property
    def current(self) -> RaftMetrics:
        """The metrics as of now."""
        if self.dirty:
            self.dirty = False
            self._current = self._build()
        return self._current

    @property
    def last(self) -> RaftMetrics:
        """The metrics built last, without rebuilding (what a node whose state cannot be
        read any more last reported)."""
        return self._current

    def waited_on(self) -> bool:
        """Whether a waiter may be waiting for the next change."""
        return self.waiters.waiting()

    def mark_changed(self) -> None:
        """The node's state changed: rebuild on the next read and wake every waiter (those
        of ``at_least`` once their index is reached)."""
        self.dirty = True
        self.waiters.wake()
        if self.index_waited:
            self.release_index_waiters()

    def changed(self) -> asyncio.Future[None]:
        """A future of the caller's own that completes at the next change. Cancelling
        it (a waiter that times out or is cancelled) affects no other waiter
        (``openraft_py.wakeup.Wakeup``)."""
        return self.waiters.wait()

    def at_least(self, kind: str, index: int) -> asyncio.Future[None]:
        """A future of the caller's own that completes at the first change at which the
        node's index of ``kind`` (``"applied"``, ``"log"``, ``"snapshot"``, ``"purged"``) is
        at least ``index``, or at which the node has stopped (``fatal`` set). Unlike
        ``changed``, the other changes do not wake it (``IndexWaiters``). Cancelling it
        affects no other waiter. Without the getter of ``kind``: ``changed()``."""
        keyed = self._keyed.get(kind)
        if keyed is None:
            return self.changed()
        if not keyed.pending():
            self.index_waited.append(keyed)
        return keyed.add(index)

    def role_changed(self, seen: RaftMetrics) -> asyncio.Future[None]:
        """A future of the caller's own that completes at the first change at which the
        node's role (``RoleKey``: state, vote, effective membership, known leader) differs
        from the one in ``seen``, the metrics the caller last looked at, or at which the node
        has stopped. The other changes do not wake it (``RoleWaiters``). Without the ``role``
        getter: ``changed()``."""
        by_role = self._by_role
        if by_role is None:
            return self.changed()
        if not by_role.pending():
            self.index_waited.append(by_role)
        return by_role.add(role_of(seen))

    def satisfied(self, predicate: Callable[[RaftMetrics], bool]) -> asyncio.Future[RaftMetrics | None]:
        """A future of the caller's own that completes at the first change after which
        ``predicate(metrics)`` holds, with those metrics, or with ``None`` once the node has
        stopped or ``predicate`` raised (``PredicateWaiters``). Cancelling it affects no
        other waiter."""
        by_predicate = self._by_predicate
        if by_predicate is None:
            by_predicate = self._by_predicate = PredicateWaiters(self)
        return by_predicate.add(predicate)

    def predicates_due(self) -> bool:
        """Whether ``satisfied`` waiters have a change to be checked against (``due``): the
        node's core runs no further pass before the loop runs that check (``RaftCore._run``,
        ``_run_guests``), or a state they wait for, left again in the same task step, was
        never seen (a membership change's joint config)."""
        by_predicate = self._by_predicate
        return by_predicate is not None and by_predicate.due()

    def applied_at_least(self, index: int) -> asyncio.Future[None]:
        """``at_least("applied", index)``: what a linearizable read waits on."""
        return self.at_least("applied", index)

    def release_index_waiters(self) -> None:
        """Complete the ``at_least`` futures whose index the node reached and the
        ``role_changed`` futures whose role it left (every one once the node stopped).
        Called at each change, also by a publisher that skips ``mark_changed`` (the metrics
        already marked, no ``changed`` waiter)."""
        waited = self.index_waited
        if not waited:
            return
        every = self.fatal is not None
        for keyed in waited:
            keyed.release(every)
        if not all(keyed.pending() for keyed in waited):
            waited[:] = [keyed for keyed in waited if keyed.pending()]  # (in place: see ``index_waited``)


def _plain_predicate(predicate: Callable[[RaftMetrics], Any]) -> Callable[[RaftMetrics], Any]:
    """``predicate``, raising ``TypeError`` where it returns an awaitable (a ``lambda`` over an
    ``async def``), the coroutine closed: taken for a true value, it ended the wait at once."""

    def checked(m: RaftMetrics) -> Any:
        held = predicate(m)
        if inspect.isawaitable(held):
            if inspect.iscoroutine(held):
                held.close()  # never awaited: no "was never awaited" warning at collection
            raise TypeError(
                f"the predicate of wait().metrics returned {shown(held)}, an awaitable: it must return "
                "a bool, computed from the metrics without awaiting"
            )
        return held

    return checked


class Wait:
    """Await conditions on a node's metrics, each bounded by ``timeout`` seconds.

    Every method returns the metrics that satisfied the condition, or raises
    ``WaitTimeout`` naming the condition (``msg``) and the last metrics seen, or the node's
    ``Fatal`` error (``Stopped``, ``StorageError``, ``Panicked``) as soon as the node stops
    (also if it had stopped already). Obtain one with
    ``raft.wait(timeout=2.0)``.

    ``timeout`` is a finite number of seconds ``>= 0`` (``0``: check once), or ``None`` for
    no bound. Anything else is refused at once: ``TypeError`` for a non-number (a ``bool``
    included), ``ValueError`` for NaN, infinity or a negative value. The methods check their
    arguments the same way before waiting (``TypeError``: a state that is not a
    ``ServerState``, a leader that is not a node id or ``None``, an index that is not an
    ``int`` (``ValueError`` outside ``[0, MAX_INDEX]``), voters that are not an iterable of node ids, a predicate that is not callable or is an
    ``async def``, a ``msg`` that is not a ``str``), so a wrong argument never waits out the timeout.

    Awaited on one of the node's own tasks (from inside its state machine's ``apply`` or its
    log store), every condition that does not hold already raises ``RuntimeError`` at once,
    after its arguments are checked (``refuse``, ``Raft._not_own_task``): the metrics change
    only as those tasks go on, so the wait would hold up the very task that moves them (for
    good with no ``timeout``). There, read ``raft.metrics``. A condition that holds when it is
    awaited returns the metrics at once, there too. On the node's other tasks, inside a
    plug-in call, only the conditions that could never hold there are refused
    (``Raft._refuse_wait``).
    """

    def __init__(
        self,
        watch: MetricsWatch,
        timeout: float | None,
        refuse: Callable[[str, object], asyncio.Future[None] | None] | None = None,
    ) -> None:
        """``refuse(what, arg)``, when given, is called as a condition ``what``
        (``"wait().state"``, say) that does not hold yet starts waiting, with what it waits
        for (``arg``: the index of an index condition, the state of ``state``, the node id
        of ``current_leader``, else ``None``), and raises to refuse it (``Raft.wait`` passes its own-task checks).
        It may return a future, which the wait cancels once it ends (``Raft`` records the
        task inside a plug-in call as awaiting it meanwhile)."""
        self._watch = watch
        self._timeout = check_timeout(timeout)
        self._refuse = refuse

    async def metrics(self, predicate: Callable[[RaftMetrics], bool], msg: str = "condition") -> RaftMetrics:
        """Wait until ``predicate(metrics)`` holds.

        ``predicate`` is a plain function, called at each change of the metrics: an ``async
        def`` one raises ``TypeError`` before waiting, and one that returns an awaitable
        raises ``TypeError`` in the waiter (``_plain_predicate``): its coroutine is truthy,
        so the wait returned at once, before the condition held."""
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__} {shown(predicate)}")
        if inspect.iscoroutinefunction(predicate):
            raise TypeError(
                f"predicate must be a plain function of the metrics, got async def {shown(predicate)}: "
                "its coroutine is not a bool (compute the condition from the metrics without awaiting)"
            )
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        watch = self._watch
        checked = _plain_predicate(predicate)
        return await self._until("metrics", checked, msg, lambda _seen: watch.satisfied(checked))

    async def _until(
        self,
        what: str,
        predicate: Callable[[RaftMetrics], bool],
        msg: str,
        woken: Callable[[RaftMetrics], asyncio.Future[Any]],
        arg: object = None,
    ) -> RaftMetrics:
        """``metrics``, sleeping on ``woken(seen)`` between checks (``seen``: the metrics
        that did not satisfy ``predicate``): a future that completes at the next change that
        may satisfy ``predicate``, and at the node's stop; with the metrics that satisfied
        ``predicate`` when it checked them itself (``MetricsWatch.satisfied``), else ``None``.
        ``what``: the condition's method, and ``arg`` what it waits for, for the own-task
        refusal (``refuse``), which is not made when ``predicate`` holds already:
        then the call returns the metrics at once, as it would on any task."""
        watch = self._watch
        m = watch.current
        if predicate(m):
            return m
        ended = None if self._refuse is None else self._refuse(f"wait().{what}", arg)
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    if not m.running:
                        if watch.fatal is not None:
                            raise watch.fatal.with_traceback(watch.fatal_tb)
                        raise Fatal(f"node {m.id} stopped while waiting for {msg}: {m.error or 'shut down'}")
                    held = await woken(m)
                    if held is not None:
                        return held  # type: ignore[no-any-return]
                    m = watch.current
                    if predicate(m):
                        return m
        except TimeoutError:
            raise WaitTimeout(
                f"timeout after {self._timeout}s waiting for {msg}; last metrics: {watch.current.describe()}"
            ) from None
        finally:
            if ended is not None:
                ended.cancel()  # the wait ended: its task awaits no commit any more

    async def state(self, state: ServerState, msg: str = "") -> RaftMetrics:
        """Wait until the node is in ``state``."""
        if type(state) is not ServerState:
            raise TypeError(f"state must be a ServerState, got {type(state).__name__} {shown(state)}")
        return await self._role_until("state", lambda m: m.state == state, msg or f"state {state.value}", state)

    async def current_leader(self, leader_id: NodeId | None, msg: str = "") -> RaftMetrics:
        """Wait until the node knows ``leader_id`` as the leader (``None``: knows none)."""
        if leader_id is not None:
            leader_id = check_node_id(leader_id, "leader_id")
        return await self._role_until(
            "current_leader", lambda m: m.current_leader == leader_id, msg or f"leader {leader_id}", leader_id
        )

    async def log_index_at_least(self, index: int, msg: str = "") -> RaftMetrics:
        """Wait until the last log index is ``>= index``."""
        check_index(index, "index")
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        return await self._until(
            "log_index_at_least",
            lambda m: m.last_log_index >= index,
            msg or f"log index >= {index}",
            lambda _seen: self._watch.at_least("log", index),
            index,
        )

    async def applied_index_at_least(self, index: int, msg: str = "") -> RaftMetrics:
        """Wait until the last applied index is ``>= index``."""
        check_index(index, "index")
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        return await self._until(
            "applied_index_at_least",
            lambda m: m.last_applied is not None and m.last_applied.index >= index,
            msg or f"applied index >= {index}",
            lambda _seen: self._watch.at_least("applied", index),
            index,
        )

    async def snapshot(self, log_id: LogId | int, msg: str = "") -> RaftMetrics:
        """Wait until the node holds a snapshot covering ``log_id``.

        ``log_id`` is a ``LogId`` or a bare log index. The condition is
        ``metrics.snapshot is not None and metrics.snapshot.index >= index``: a snapshot
        built later, covering more entries, satisfies it too, and only the index is compared
        (the term of ``log_id`` is not checked). Returns the metrics that satisfied it;
        raises ``WaitTimeout`` after ``timeout`` seconds, ``Fatal`` if the node stops first.
        """
        index = _index_of(log_id)
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        return await self._until(
            "snapshot",
            lambda m: m.snapshot is not None and m.snapshot.index >= index,
            msg or f"snapshot index >= {index}",
            lambda _seen: self._watch.at_least("snapshot", index),
            index,
        )

    async def purged(self, log_id: LogId | int, msg: str = "") -> RaftMetrics:
        """Wait until the node purged its log up to ``log_id`` (inclusive).

        ``log_id`` is a ``LogId`` or a bare log index. The condition is
        ``metrics.purged is not None and metrics.purged.index >= index``: purging further
        satisfies it too, and only the index is compared. Returns the metrics that satisfied
        it; raises ``WaitTimeout`` after ``timeout`` seconds, ``Fatal`` if the node stops
        first.
        """
        index = _index_of(log_id)
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        return await self._until(
            "purged",
            lambda m: m.purged is not None and m.purged.index >= index,
            msg or f"purged index >= {index}",
            lambda _seen: self._watch.at_least("purged", index),
            index,
        )

    async def voter_ids(self, ids: Iterable[NodeId], msg: str = "") -> RaftMetrics:
        """Wait until the effective membership's voters are exactly ``ids`` (an iterable of
        node ids, none twice: ``ValueError`` otherwise, as for ``Raft.change_membership``;
        a ``frozenset`` such as ``Membership.voter_ids()`` or a list too, which the
        annotation ``set[NodeId]`` refused under ``mypy --strict``)."""
        want = check_voters(ids)
        return await self._role_until(
            "voter_ids",
            lambda m: set(m.membership_config.membership.voter_ids()) == want,
            msg or f"voters {sorted(want)}",
        )

    async def _role_until(
        self, what: str, predicate: Callable[[RaftMetrics], bool], msg: str, arg: object = None
    ) -> RaftMetrics:
        """``_until`` of a ``predicate`` of the node's role alone (state, vote, membership,
        known leader: ``RoleKey``), woken only when the role changes; ``arg`` as for
        ``_until``."""
        if not isinstance(msg, str):
            raise TypeError(f"msg must be a str, got {type(msg).__name__} {shown(msg)}")
        return await self._until(what, predicate, msg, self._watch.role_changed, arg)


def check_timeout(timeout: float | None) -> float | None:
    """Return ``timeout`` (seconds) if it is ``None`` or a finite real number ``>= 0``;
    raise ``TypeError`` for a non-number (``bool`` included) and ``ValueError`` for NaN,
    infinity or a negative number (``validation.check_seconds``)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__} {shown(timeout)}")
    return check_seconds(timeout, "timeout", zero_ok=True)


def _index_of(log_id: LogId | int) -> int:
    """The log index of ``log_id`` (a ``LogId`` or already an index)."""
    if isinstance(log_id, LogId):
        return log_id.index
    if isinstance(log_id, int) and not isinstance(log_id, bool):
        return log_id
    raise TypeError(f"expected a LogId or an int index, got {shown(log_id)}")
