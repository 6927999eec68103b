"""``Raft``: the public handle of one node.

Every method sends a message to the node's ``RaftCore`` task and awaits its answer; none
touches engine state directly. A ``Raft`` is bound to the event loop it was created on.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import sys
import weakref
from _thread import get_ident as _get_ident
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, cast

from . import validation as _v
from .config import Config, RunningConfig
from .core.calling_out import APPLIED as _APPLIED
from .core.calling_out import COMMIT as _COMMIT
from .core.calling_out import LINEARIZE as _LINEARIZE
from .core.calling_out import Out as _Out
from .core.calling_out import catch_up_refusal as _catch_up_refusal
from .core.calling_out import refusal as _refusal
from .core.calling_out import waits as _waits
from .core.clock import Clock, LoopClock, check_clock
from .core.guest import AVAILABLE as _GUESTS
from .core.guest import hosting as _hosting
from .core.messages import AppendEntriesCall, ClientWrite, ClientWriteOne, EngineCall, Reply
from .core.raft_core import RaftCore
from .core.restore import restore_state
from .engine import Engine
from .errors import EntryTooLarge, Fatal, ForwardToLeader, InProgress, LearnerIsLagging, LearnerNotFound, StorageError
from .metrics import RaftMetrics, Wait
from .storage.memory import MemLogStore, MemStateMachine, NoopStateMachine
from .storage.v08 import AdaptedLogStore, AdaptedStateMachine, MemRaftStorage
from .types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    ClientWriteResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    NodeId,
    Normal,
    ReadPolicy,
    ServerState,
    Snapshot,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)

if TYPE_CHECKING:
    from .engine import Engine as _Engine
    from .network import RaftNetworkFactory
    from .storage import RaftLogStorage, RaftStateMachine

__all__ = ["Raft", "Trigger"]

_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = asyncio.current_task
if sys.version_info < (3, 12):
    # CPython 3.11: read the C registry of each loop's running task in one dict lookup
    # (``asyncio.current_task(loop)`` is a Python function there, about 3x the cost). Not
    # on later versions, whose ``current_task`` is C (3.14 keeps the task elsewhere).
    try:
        from _asyncio import _current_tasks  # type: ignore[attr-defined]  # (not in typeshed)

        _current_task = _current_tasks.get
    except ImportError:  # no C accelerator
        pass

CHANGE_WAIT_MIN_MS = 1.0
"""The least a membership change refused by a leader just elected waits (ms of the node's
clock) before it is asked again (``Raft._bounded_until``): each wait moves the node's clock
on, so the engine's window ends after finitely many asks."""


class Trigger:
    """Admin actions that make a node act now instead of waiting for its timers."""

    def __init__(self, raft: Raft) -> None:
        self._raft = raft

    async def elect(self) -> None:
        """Start an election on this node now (it becomes a candidate, in the next term).

        Its own vote obeys leader stickiness like any other: a node that heard from its
        leader less than ``Config.election_timeout_min`` ago does not count it, since that
        leader's lease may rest on this node's acknowledgement (docs/design/reads.md). Such
        a node wins only with a quorum of the other voters' grants, or in its next
        campaign, once its election timeout passes; until that time it also refuses other
        candidates. (It counted its own vote, and granted other candidates at once: with
        one voter that no longer heard from the leader, it or that voter won at once, and
        the old leader, cut off, served lease reads that missed the new leader's
        writes.)"""

        await self._raft._act(lambda eng, now: eng.elect(now), "trigger.elect")

    async def heartbeat(self) -> None:
        """Make a leader send heartbeats to every target now (no-op on a non-leader)."""

        await self._raft._act(lambda eng, now: eng.leader_heartbeat(now), "trigger.heartbeat")

    async def snapshot(self) -> None:
        """Build a snapshot now, in the background. While one is being built, another is
        built when it ends, unless that one covers every entry applied at this call. Await
        ``raft.wait().snapshot(...)`` to see it done."""

        await self._raft._act(lambda eng, now: eng.trigger_snapshot(), "trigger.snapshot")

    async def purge_log(self, upto: int) -> None:
        """Purge the log up to index ``upto``, but never past the last snapshot (entries a
        snapshot does not cover are kept). Await ``raft.wait().purged(...)`` to see it done.
        ``TypeError``/``ValueError`` unless ``upto`` is an int in ``[0, MAX_INDEX]``."""
        upto = _v.check_index(upto, "purge_log upto")
        await self._raft._act(lambda eng, now: eng.trigger_purge_log(upto), "trigger.purge_log")

    async def transfer_leader(self, to: NodeId) -> None:
        """Hand leadership to voter ``to``: this leader stops taking writes (they get
        ``ForwardToLeader(to)``), waits until ``to`` holds its whole log, then lets ``to``
        elect itself at once. Returns when the hand-over started; await
        ``raft.wait().current_leader(to)`` for the outcome. If no new leader appears within
        two election timeouts, this leader takes writes again; at once if the network refuses
        a request to ``to`` (``Unreachable``: it went down) before ``to`` answered one sent
        since the start (only then is it told to take over). Lease reads are refused while
        it hands over, and for the rest of the term once the voters were told (they may vote
        for another node at once); a transfer given up before that leaves the lease as it
        was. Raises ``ForwardToLeader``
        on a non-leader, ``ValueError`` if ``to`` is not a voter or answered none of this
        leader's requests sent within the last ``Config.election_timeout_max`` (down or cut
        off), and ``InProgress`` while a
        ``change_membership`` on this node waits for its joint config to commit (handed over
        mid-change, the new leader would finish it keeping the removed voters as learners), or
        while a joint config it was elected with is in force (it appends the final config once
        the joint one commits); ``TypeError`` / ``ValueError`` if ``to`` is not a node id.
        Naming this leader itself does nothing (it already leads) and returns at once; but
        while it hands leadership over (a transfer started and not given up yet) it raises
        ``ForwardToLeader`` naming the target, as a write does: the target is about to lead."""
        to = _v.check_node_id(to, "transfer_leader to")
        core = self._raft._core
        await self._raft._act(lambda eng, now: core.start_transfer(to, now), "trigger.transfer_leader")


class _Claim:
    """One store's entry in ``_IN_USE``: the object (kept, so that its id is not reused
    while listed), the node's id, its event loop, and its core once made (a weak reference:
    the claim must not keep a node dropped without ``shutdown()`` from being collected)."""

    __slots__ = ("obj", "node_id", "loop", "core")

    def __init__(self, obj: object, node_id: NodeId, loop: asyncio.AbstractEventLoop) -> None:
        self.obj = obj
        self.node_id = node_id
        self.loop = loop
        self.core: weakref.ref[RaftCore] | None = None


# Every log store and state machine a node of this process runs on, by ``id``. Listed by
# ``Raft.new`` before the stores are first read, unlisted once every task of the node ended
# (``RaftCore.call_when_ended``: its core task, and the state machine worker, snapshot
# builds, replication and vote tasks, which a stop cancels but which may take a while to
# end: ``shutdown()``, a stop of its own, ``asyncio.run`` returning), when its core task is
# garbage-collected unfinished (a node dropped without ``shutdown()``), or when its start
# fails. Invariant: a listed object is a store of exactly one node, some task of which has
# not ended, unless its loop was closed with the node's tasks left pending
# (``_claim_stores`` then takes the object over: no task of that node can run any more).
_IN_USE: dict[int, _Claim] = {}


def _claim_stores(node_id: NodeId, log_store: object, state_machine: object) -> tuple[Callable[[], None], list[_Claim]]:
    """List ``log_store`` and ``state_machine`` as ``node_id``'s (``_IN_USE``) and return the
    function that unlists them, and the claims (``Raft.new`` gives them the node's core).
    ``ValueError`` (nothing listed) if either is a store of a node of this process that has
    not ended: the same state machine for every node of an in-process cluster applied each
    entry once per node, and a second node on a running node's stores (a restart without
    ``shutdown()``) ran two engines over one log, both leading; a node that stopped on its
    own but whose state machine call or snapshot build still runs (cancelled, waiting for
    its worker thread) would run beside the new node's. One object as both stores of one
    node is taken. What a library store keeps its state in is claimed with it
    (``_state_holders``): new store objects over a running node's ``MemDisk``, or over the
    ``RaftStorage`` of its ``Adaptor``, ran a second engine over the same log."""
    parts = [("log_store", log_store), ("state_machine", state_machine)]
    parts += [(f"{role}'s {type(held).__name__}", held) for role, obj in list(parts) for held in _state_holders(obj)]
    for role, obj in parts:
        held = _IN_USE.get(id(obj))
        if held is not None and held.obj is obj and not held.loop.is_closed():
            raise ValueError(f"{role} {_v.shown(obj)} is in use: {_held_by(held, node_id)}")
    loop = asyncio.get_running_loop()
    # One claim per object (one object as both stores is claimed once); ``release`` removes
    # only these very claims, not a later node's on the same objects (it may run late: from
    # the garbage collector, see ``Raft.new``).
    claims = {id(obj): _Claim(obj, node_id, loop) for _, obj in parts}
    _IN_USE.update(claims)

    def release() -> None:
        for key, claim in claims.items():
            if _IN_USE.get(key) is claim:
                del _IN_USE[key]

    return release, list(claims.values())


def _state_holders(store: object) -> list[object]:
    """The objects the library's ``store`` keeps its state in, outermost first: a
    ``MemLogStore``'s or ``MemStateMachine``'s ``MemDisk``, the ``RaftStorage`` behind an
    ``Adaptor``'s halves (and that storage's ``MemDisk`` for a ``MemRaftStorage``). Each is
    the store for ``_claim_stores``: a new object over it is the same log. Other stores'
    (a user's, a RocksDB store, whose directory RocksDB locks) are not known: none."""
    held: list[object] = []
    while True:
        if isinstance(store, (AdaptedLogStore, AdaptedStateMachine)):
            store = store.storage
        elif isinstance(store, (MemLogStore, MemStateMachine, NoopStateMachine, MemRaftStorage)):
            store = store.disk
        else:
            return held
        held.append(store)


def _held_by(held: _Claim, node_id: NodeId) -> str:
    """Why ``held``'s store cannot serve node ``node_id`` now, and what to do (``_claim_stores``)."""
    owner = held.node_id
    core = held.core() if held.core is not None else None
    if core is not None and core.fatal is not None:
        tasks = core.running_tasks()
        return (
            f"node {owner} of this process stopped ({core.fatal}), but tasks of it that may still use it have "
            f"not ended yet: {', '.join(tasks)} (a cancelled call of a store may take a while to end, waiting "
            f"for its worker thread); start node {node_id} on it once they have: await raft.shutdown() on "
            f"node {owner} returns when they have"
        )
    if owner != node_id:
        advice = (
            f"a store serves one node: give node {node_id} one of its own, or shut node {owner} down "
            "first (await raft.shutdown())"
        )
    else:
        advice = (
            f"to start node {owner} again on it, shut node {owner} down first (await raft.shutdown()): "
            "two nodes of one id over one log would both lead"
        )
    return f"node {owner} of this process runs on it; {advice}"


def owner_cluster_name(network_factory: object, config: Config) -> str:
    """The cluster name ``Raft.new`` gives the stores' ``check_owner``: the network factory's
    own ``cluster_name`` when it has a non-empty one (``TcpNetworkFactory``: the name that
    keeps two clusters apart on the wire, which every node of a cluster shares), else
    ``config.cluster_name`` (the in-process ``Router``; the key-value service sets it to
    ``--cluster-name``)."""
    name = getattr(network_factory, "cluster_name", None)
    return name if isinstance(name, str) and name else config.cluster_name


def _node_of(m: RaftMetrics, node_id: NodeId | None) -> BasicNode | None:
    """The ``BasicNode`` of ``node_id`` in the membership of metrics ``m``, or ``None`` (no
    id, or not a member): a ``ForwardToLeader``'s ``leader_node``, as the engine's names it."""
    if node_id is None:
        return None
    return m.membership_config.membership.nodes.get(node_id)


def _held_up(why: str) -> RuntimeError:
    """The error refusing a plug-in's call on its own node that would wait for good
    (``Raft._not_holding_up``): ``why``, and what to do instead."""
    return RuntimeError(
        f"{why}. Run it in a task of its own (asyncio.create_task(...)) and do not await that task from there"
    )


class Raft:
    """One Raft node. Create it with ``await Raft.new(...)``; use it as an async context
    manager or call ``shutdown()`` when done.

    All methods are coroutines unless noted, and raise ``Fatal`` (``Stopped``,
    ``StorageError``, ``Panicked``) once the node has stopped. A node belongs to the event
    loop it was created on: its methods (and ``metrics``) raise ``RuntimeError`` at once,
    before anything is logged, when called from another loop (or outside one); from another
    thread, use ``asyncio.run_coroutine_threadsafe(raft.client_write(...), loop)``. A call
    that waits for an entry to be applied (``client_write``, ``client_write_many``,
    ``ensure_linearizable``, the membership changes, ``get_current_snapshot``), and every
    condition of ``wait()`` that does not hold already (which waits for the node's metrics
    to move on; one that holds returns the metrics at once, there too), raises
    ``RuntimeError`` at once when made from inside the node's own state machine or log store
    (on the node's own tasks), where it would wait for good (``_not_own_task``).
    """

    def __init__(self, core: RaftCore) -> None:
        """Internal: use ``Raft.new``."""
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._thread = _get_ident()  # the loop's thread (``_check_loop``)
        self.id: NodeId = core.id
        self.config: RunningConfig = cast(RunningConfig, core.config)  # (Raft.new's copy)
        self.trigger = Trigger(self)

    @classmethod
    async def new(
        cls,
        node_id: NodeId,
        config: Config,
        network_factory: RaftNetworkFactory,
        log_store: RaftLogStorage,
        state_machine: RaftStateMachine,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> Self:
        """Start node ``node_id`` over its storage and network.

        Restores vote, log, committed and applied state from storage, so a restarted node
        rejoins on its own; entries committed but not applied are applied first. ``clock``
        (default: the event loop's time at full resolution, ``time.monotonic`` on uvloop,
        whose ``loop.time()`` counts whole milliseconds) and ``seed`` (the source of every random choice,
        default from ``os.urandom``) make runs reproducible under a simulator. A ``clock``
        is an object with ``now()``, monotonic time in seconds (an ``int`` or ``float``), and
        ``async sleep(seconds)`` (``core.clock.Clock``); every timer and lease of the node
        is measured on it (one that counts suspended time: ``docs/guides/reads.md``); a node
        whose clock goes back stops with ``Fatal``. Raises
        ``ConfigError`` for an invalid ``config`` or one ``network_factory`` cannot carry
        (if it has the optional ``check_config(config)`` method, e.g. a request budget
        larger than the TCP transport's frame limit), and ``StorageError`` when storage cannot
        be read; ``TypeError``/``ValueError`` if ``node_id`` is not an int in
        ``[0, MAX_NODE_ID]``, and ``TypeError`` if ``network_factory``, ``log_store`` or
        ``state_machine`` lacks a method of its protocol (a class passed instead of an
        instance, ``None``, ...) or defines one with the wrong kind (``def`` where the
        protocol has ``async def``, or the reverse: an ``async def append_durable`` had
        every append dropped unrun), or ``clock`` is not a clock (``time.monotonic`` itself, a
        ``now()`` that returns no number, a ``sleep`` that returns nothing to await:
        ``core.clock.check_clock``), and ``ValueError`` if its ``now()`` reads more than
        ``MAX_CLOCK_SECONDS`` (1e10: nanoseconds, ``time.monotonic_ns``) or below 0, before
        anything is read; ``ValueError`` if the factory
        has a ``node_id`` (``TcpNetworkFactory``, ``RouterFactory``) that is not ``node_id``,
        or says it is ``closed`` (``TcpNetworkFactory.closed``); ``TypeError`` if
        ``config`` is not a ``Config``. A log store or state
        machine with the optional ``check_owner`` (``RocksLogStore``, ``MemLogStore``,
        ``RocksStateMachine``) records at the first start on it whose it is (``node_id`` and
        the cluster name, ``owner_cluster_name``); one recorded for another node id or cluster name raises
        ``StoreOwnerMismatch`` (a ``StorageError``) before anything else is read from the
        stores or written to them. ``ValueError``, before that, if ``log_store`` or
        ``state_machine`` is an object a node of this process runs on and has not ended, or
        keeps its state where such a node's store does (the same ``MemDisk``, the same
        ``RaftStorage`` behind ``Adaptor``) (``_claim_stores``): a store serves one running
        node (shut it down first to start it again on the same objects). A node that
        stopped on its own has ended once every
        task of it did (a cancelled store call may take a while): ``await raft.shutdown()``
        on it returns then.

        The node runs on a copy of ``config``, its ``config`` attribute (a ``RunningConfig``,
        read-only: assigning a field raises ``AttributeError``): changing the object passed
        afterwards changes nothing of the running node. To run other settings, start the
        node again with them.
        """
        node_id = _v.check_node_id(node_id)
        if not isinstance(config, Config):
            raise TypeError(f"config must be a Config, got {type(config).__name__}")
        # The node's own copy, checked below: a later change to the caller's object (set after
        # the start, or made for another node sharing it) reached the running node unchecked
        # (a heartbeat_interval above the election timeout: elections every few hundred ms).
        # Read-only, as ``raft.config``: a change there reached it too.
        config = RunningConfig.of(config)
        _v.check_implements(network_factory, "network_factory", "RaftNetworkFactory", _v.NETWORK_FACTORY_METHODS)
        _v.check_implements(log_store, "log_store", "RaftLogStorage", _v.LOG_STORAGE_METHODS)
        _v.check_implements(state_machine, "state_machine", "RaftStateMachine", _v.STATE_MACHINE_METHODS)
        _v.check_method_kinds(network_factory, "network_factory", _v.NETWORK_FACTORY_METHODS)
        _v.check_method_kinds(log_store, "log_store", _v.LOG_STORAGE_METHODS)
        _v.check_method_kinds(state_machine, "state_machine", _v.STATE_MACHINE_METHODS)
        config.validate()
        check_config = getattr(network_factory, "check_config", None)
        if check_config is not None:
            check_config(config)  # a transport with limits refuses what it cannot carry
        # A transport that says which node it speaks for (``TcpNetworkFactory.node_id``,
        # ``RouterFactory.node_id``) must speak for this one: TCP peers refuse every request
        # naming another sender, so such a node never won an election (its vote requests
        # refused, logged by the peers only); on the router it sent as the other node.
        speaks_as = getattr(network_factory, "node_id", None)
        if isinstance(speaks_as, int) and not isinstance(speaks_as, bool) and speaks_as != node_id:
            raise ValueError(
                f"network_factory speaks for node {speaks_as} (its node_id), not node {node_id}: give it this "
                f"node's id, e.g. TcpNetworkFactory({node_id}, cluster_name) or router.factory({node_id})"
            )
        # A transport that says it is closed (``TcpNetworkFactory.closed``) fails every RPC:
        # a node restarted on the factory its first run closed reached no peer, silently.
        if getattr(network_factory, "closed", False) is True:
            raise ValueError(
                f"network_factory {_v.shown(network_factory)} is closed (its close() was called): give node "
                f"{node_id} a new one"
            )
        if clock is None:
            clock = LoopClock()
        else:
            check_clock(clock)
        # The optional owner check (``RaftLogStorage.check_owner``), before anything is read
        # or written: a store recorded for another node or cluster is refused.
        check_owner = getattr(log_store, "check_owner", None)
        if check_owner is not None:
            _v.check_method_kinds(log_store, "log_store", ("check_owner",))
        check_sm_owner = getattr(state_machine, "check_owner", None)
        if check_sm_owner is not None:
            _v.check_method_kinds(state_machine, "state_machine", ("check_owner",))
        set_fatal_handler = getattr(state_machine, "set_fatal_handler", None)
        if set_fatal_handler is not None and (
            not callable(set_fatal_handler) or inspect.iscoroutinefunction(set_fatal_handler)
        ):
            raise TypeError(
                "state_machine.set_fatal_handler must be a plain method (def): the node calls it once and "
                f"does not await it, got {_v.shown(set_fatal_handler)}"
            )
        owner_cluster = owner_cluster_name(network_factory, config)
        rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        release, claims = _claim_stores(node_id, log_store, state_machine)  # before the first read
        try:
            try:
                if check_owner is not None:
                    await check_owner(node_id, owner_cluster)
                if check_sm_owner is not None:
                    await check_sm_owner(node_id, owner_cluster)
                state, cache = await restore_state(node_id, log_store, state_machine)
            except Fatal:
                raise
            except Exception as e:
                raise StorageError(f"restoring node {node_id} from storage", e) from e
            engine = Engine(config, state, rng, clock.now() * 1000.0)
            core = RaftCore(config, engine, network_factory, log_store, state_machine, clock, cache)
            if set_fatal_handler is not None:
                set_fatal_handler(core.state_machine_failed)
            core.start()
        except BaseException:
            release()
            raise
        assert core.task is not None
        # Unlisted once every task of the node ended (``RaftCore.call_when_ended``: not when
        # the core task alone ends, a stop of its own leaving a cancelled store call still
        # running), or when the core task is garbage-collected unfinished (a node dropped
        # without ``shutdown()``: no task of it can run any more, and its done callbacks never
        # run). ``finalize`` runs ``release`` once, whichever comes first.
        unlist = weakref.finalize(core.task, release)
        unlist.atexit = False
        core_ref = weakref.ref(core)
        for claim in claims:
            claim.core = core_ref
        core.call_when_ended(unlist)
        return cls(core)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """``async with raft:`` shuts the node down when the block ends, however it ends.
        Entering raises the node's ``Fatal`` error if it has already stopped (shut down, or
        a storage failure), as every later call on it does: the block would not run a node."""
        self._check_loop()
        if self._core.fatal is not None:
            self._core.raise_fatal()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the node: its tasks end, pending calls fail with ``Stopped``. Returns once
        every task of the node ended. Idempotent; concurrent calls each wait. Cancelling
        the caller (a timeout around ``shutdown()``) raises its ``CancelledError`` at once,
        without waiting for the node's tasks still ending, and the node stops all the same
        (a later ``shutdown()`` waits for them). Close the node's stores only after a
        ``shutdown()`` that returned: until then, such a task may still use them."""
        self._check_loop()
        await self._core.shutdown()

    # -- internals -----------------------------------------------------------------------------

    def _check_loop(self) -> None:
        """``RuntimeError`` unless called on this node's event loop. (A call from another
        loop used to be logged and applied, and then fail in its caller with asyncio's
        "attached to a different loop".) Cheap: a thread id and ``is_running`` (one thread
        runs one loop at a time); not ``asyncio.get_running_loop()``, which makes a
        ``getpid`` system call on CPython 3.11 (170 ns measured, on every write)."""
        if _get_ident() != self._thread or not self._loop.is_running():
            if self._loop.is_closed():
                # (It said "call it from that loop", which no caller can do any more.)
                advice = (
                    "that loop is closed, and the node ended with it: start a new node with Raft.new "
                    "on the running loop, over the same storage"
                )
            else:
                advice = "call it from that loop (from another thread: asyncio.run_coroutine_threadsafe(coro, loop))"
            raise RuntimeError(
                f"node {self.id} belongs to the event loop it was created on, and this call was made "
                f"outside it (from another thread or loop); {advice}"
            )

    def _not_own_task(self, what: str) -> None:
        """``RuntimeError`` if called on this node's core task or state machine worker task:
        from inside its own state machine (``apply`` runs inline on the core task until it
        first suspends, then on the worker's) or log store. ``what`` waits for an entry to
        be applied, for the worker itself, or for the node's metrics to move on (a ``wait()``
        condition), and the node applies one batch at a time: the call would wait for the
        very ``apply`` it is awaited in. It did, for good, and the node applied nothing
        more, every client of it waiting too, with nothing logged. Cheap while both tasks
        are parked waiting for work (``RaftCore.parked``): neither is running then."""
        core = self._core
        if core.parked and core.sm_worker._idle:
            return  # both own tasks wait for work: neither is the one running (``RaftCore.parked``)
        task = _current_task(self._loop)
        if task is not None and (task is core.task or task is core.sm_task):
            raise RuntimeError(
                f"{what} was called from inside node {self.id}'s own state machine or log store (on the "
                f"node's {'core' if task is core.task else 'state machine'} task), and it waits for what that "
                "task does next: awaited there, it would wait for good. Run it in a task of its own "
                "(asyncio.create_task(...)) and do not await that task from there"
            )

    def _not_holding_up(
        self,
        what: str,
        kind: str,
        arg: object = None,
        waiting: asyncio.Future[Any] | None = None,
        leader_only: bool = False,
    ) -> None:
        """``RuntimeError`` if called on one of the node's other tasks while it is inside a
        plug-in call (a replication stream's log read, ``save_vote``, ``build_snapshot``:
        ``RaftCore.calling_out``) and ``what`` (of ``kind``, waiting for ``arg``) waits
        for what that very task would do next, or what such tasks awaiting calls of their
        own would (``calling_out.refusal`` says which calls, and why). Such a call waited
        for good. But a ``leader_only`` call (a write, a membership change) that the node
        refuses at once (``RaftCore.write_redirect``: it hands leadership over, or no
        longer leads) raises that ``ForwardToLeader`` instead: it would not wait, and its
        caller was told ``RuntimeError`` where the documented answer, the one every other
        write gets then, is ``ForwardToLeader``. Any other call from there is taken: the
        core and the worker go on meanwhile; taken, the call awaits ``waiting`` (when
        given) on that task, which is recorded there while it is not done if it waits for a
        commit (``calling_out.waits``: the calls the node's other such tasks make meanwhile
        are judged with it). Cheap while no plug-in call is in flight there: an empty dict;
        the task is looked up only otherwise."""
        out = self._calling_out_here()
        if out is None:
            return
        core = self._core
        m = core.watch.current
        why = _refusal(core.calling_out, out, kind, what, m, arg)
        if why is not None:
            redirect = core.write_redirect() if leader_only else None
            if redirect is not None:
                raise redirect
            raise _held_up(why)
        if waiting is not None:
            _waits(out, kind, waiting, m, arg)

    def _calling_out_here(self) -> _Out | None:
        """The record of the plug-in call the running task is inside, if it is one of the
        node's tasks in ``RaftCore.calling_out``; ``None`` otherwise. Cheap while no plug-in
        call is in flight (an empty dict): the task is looked up only otherwise."""
        calling_out = self._core.calling_out
        if not calling_out:
            return None
        return calling_out.get(_current_task(self._loop))  # type: ignore[arg-type]

    def _not_holding_up_catch_up(self, node_id: NodeId, node: BasicNode) -> None:
        """``RuntimeError`` if ``add_learner(node_id, node, blocking=True)`` is called from a
        log read on the replication stream to ``node_id`` where the learner cannot catch up
        without that read (``calling_out.catch_up_refusal``): the wait would hold up the
        very stream it waits for. Cheap while no plug-in call is in flight (an empty dict)."""
        out = self._calling_out_here()
        if out is None:
            return
        why = _catch_up_refusal(out, node_id, node, self.config.replication_lag_threshold, self._core.watch.current)
        if why is not None:
            raise _held_up(why)

    def _refuse_wait(self, what: str, arg: object) -> asyncio.Future[None] | None:
        """``Wait``'s refusal of a condition ``what`` (waiting for ``arg``) that does not
        hold yet: on the node's core or worker task (``_not_own_task``), or where it could
        never hold (``_not_holding_up``). Taken on a task inside a plug-in call, returns a
        future for the wait to cancel once it ends: meanwhile the task is recorded as
        awaiting it (a wait for an entry to be applied awaits its commit); else ``None``."""
        self._not_own_task(what)
        if not self._core.calling_out:
            return None
        ended: asyncio.Future[None] = self._loop.create_future()
        self._not_holding_up(what, what, arg, ended)
        return ended

    def _not_core_task(self, what: str) -> None:
        """``_not_own_task(what)`` if called on the core task, unless from an ``apply``
        running inline there (``StateMachineWorker.applying_inline``): for a call that the
        core task answers (``_call``, ``append_entries``). A log store method, which the core
        task awaits, would wait for the answer for good; an inline ``apply`` that awaits it
        suspends and goes on on the worker's task, and the core answers."""
        core = self._core
        if not core.parked and _current_task(self._loop) is core.task and not core.sm_worker.applying_inline:
            self._not_own_task(what)

    async def _call(self, fn: Callable[[_Engine, asyncio.Future[Any], float], None], what: str) -> Any:
        """Run ``fn(engine, future, now)`` in the core and return the future's result.
        ``RuntimeError`` (``_not_core_task``, naming the call ``what``) when called on the
        core's own task other than from an ``apply`` running inline there: from a log store
        method, which the core awaits, so the answer would never come (the node stopped for
        good)."""
        self._check_loop()
        self._not_core_task(what)
        core = self._core
        fut: asyncio.Future[Any] = self._loop.create_future()
        core.send_msg(EngineCall(fn, fut))
        try:
            return await fut
        finally:
            # Its exception, raised through the caller's frames, must not keep them alive
            # (nor, through this frame, itself: a cycle left to the garbage collector).
            core.untrack(fut)
            del fut

    async def _act(self, action: Callable[[_Engine, float], object], what: str) -> None:
        """Run ``action(engine, now)`` inside the core and return when it ran. ``ApiError``s
        and ``ValueError``s (a bad argument) it raises reach the caller."""

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            try:
                action(eng, now)
            except ValueError as e:
                tx.set_exception(e)
                return
            tx.set_result(None)

        await self._call(fn, what)

    async def _until(
        self, done: Callable[[RaftMetrics], bool], woken: Callable[[], asyncio.Future[None]] | None = None
    ) -> None:
        """Wait until ``done(metrics)`` holds; raise the node's fatal error if it stops
        first. ``done`` may raise to give up. ``woken``: the future to sleep on between
        checks (one that completes at the next change that may satisfy ``done``, and at the
        node's stop); every change by default."""
        watch = self._core.watch
        sleep = watch.changed if woken is None else woken
        while True:
            m = watch.current
            if done(m):
                return
            if not m.running:
                if self._core.fatal is not None:
                    self._core.raise_fatal()
                raise Fatal("node stopped")
            await sleep()

    def _change_awaits(self, same: Callable[[Membership], bool] | None) -> tuple[str, object]:
        """What a membership change waits for, as ``_not_holding_up`` takes it: a new entry
        to commit (``COMMIT``); but on a leader, for one that changes nothing in the
        effective membership (``same(membership)``), the current membership entry to be
        applied (``APPLIED`` at its index): the engine appends nothing and answers with that
        entry once applied (at once when it is)."""
        m = self._core.watch.current
        eff = m.membership_config
        if same is not None and m.state == ServerState.LEADER and eff.log_id is not None and same(eff.membership):
            return _APPLIED, eff.log_id.index
        return _COMMIT, None

    async def _change(
        self,
        fn: Callable[[_Engine, asyncio.Future[Any], float], None],
        what: str,
        same: Callable[[Membership], bool] | None = None,
    ) -> Any:
        """``_call(fn)`` for a membership change (``fn`` calls ``Engine.change_membership``,
        ``add_learner`` or ``remove_learners``), which a leader just elected may refuse only
        because it has not heard from its followers yet: ``LearnerIsLagging`` naming
        ``unheard`` nodes, or ``InProgress`` of a change it inherited, with ``wait_ms > 0``.
        Such a refusal is waited out (until the followers answered, the inherited change
        committed, this node stopped leading, or ``wait_ms`` passed) and the call asked
        again; any other outcome is the caller's. It ends: the engine's clock moves on, and
        once the leader is no longer new its refusal is final. Cancelled while it waits,
        nothing was logged. ``RuntimeError`` from inside the node's own state machine
        (``_not_own_task``): the change waits for its entry to be applied. ``same``: whether
        the change would change nothing in a membership (``_change_awaits``)."""
        self._check_loop()
        self._not_own_task(what)
        ended: asyncio.Future[None] | None = None
        if self._core.calling_out:
            # Taken on a task inside a plug-in call, the task awaits the change's commit
            # until ``ended`` is: recorded there (``_not_holding_up``), as a write is.
            ended = self._loop.create_future()
            kind, arg = self._change_awaits(same)
            self._not_holding_up(what, kind, arg, ended, leader_only=True)
        try:
            while True:
                try:
                    return await self._call(fn, what)
                except LearnerIsLagging as e:
                    if not e.unheard:
                        raise
                    await self._first_answers(e.unheard, e.wait_ms)
                except InProgress as e:
                    if e.wait_ms <= 0:
                        raise
                    await self._membership_settled(e.wait_ms)
        finally:
            if ended is not None:
                ended.cancel()

    async def _bounded_until(self, done: Callable[[RaftMetrics], bool], wait_ms: float) -> None:
        """``_until(done)``, given up silently once ``wait_ms`` ms (at least
        ``CHANGE_WAIT_MIN_MS``) passed on the node's clock (``Raft.new``'s ``clock``), the
        clock the engine counted ``wait_ms`` on; raise the node's fatal error if it stops,
        or what the clock's ``sleep`` raised. Cancelled, it leaves nothing running.

        Timed on the loop's clock, the wait did not match a ``clock`` of the user's that runs
        at another rate: one 4 times as fast as the loop's had a change wait 4 times the new
        leader's window before it was refused. The floor makes every wait move the node's
        clock on, so that the engine's next answer is nearer the window's end (a ``wait_ms``
        left over by rounding, on a loop with virtual time, would be waited in no time)."""
        clock = self._core.clock
        timer = asyncio.ensure_future(clock.sleep(max(wait_ms, CHANGE_WAIT_MIN_MS) / 1000.0))
        waiter = asyncio.ensure_future(self._until(done))
        try:
            await asyncio.wait((timer, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        for t in (waiter, timer):
            if t.done() and not t.cancelled():
                t.result()  # the node's fatal error, or the clock's

    async def _membership_settled(self, wait_ms: float) -> None:
        """Return once this leader's membership is committed and uniform (no change in
        progress), once it no longer leads, or after ``wait_ms`` ms; raise the node's fatal
        error if it stops. For a change refused by a leader just elected with ``InProgress``
        of a change it inherited."""

        def settled(m: RaftMetrics) -> bool:
            if m.state != ServerState.LEADER:
                return True  # asked again, the engine answers ForwardToLeader
            sm = m.membership_config
            committed = m.committed is not None and sm.log_id is not None and m.committed >= sm.log_id
            return committed and not sm.membership.is_joint()

        await self._bounded_until(settled, wait_ms)

    async def _first_answers(self, ids: list[NodeId], wait_ms: float) -> None:
        """Return once this leader knows the replication of one of ``ids`` (its metrics'
        ``replication`` has a matched index for it), once it no longer leads, or after
        ``wait_ms`` ms, whichever comes first; raise the node's fatal error if it stops.
        For a change refused by a leader just elected (``LearnerIsLagging.unheard``)."""

        def heard(m: RaftMetrics) -> bool:
            if m.state != ServerState.LEADER or m.replication is None:
                return True  # asked again, the engine answers ForwardToLeader
            return any(m.replication.get(nid, -1) >= 0 for nid in ids)

        await self._bounded_until(heard, wait_ms)

    # -- cluster setup -------------------------------------------------------------------------

    def _check_node_for_network(self, node_id: NodeId, node: BasicNode) -> None:
        """The network factory's optional ``check_node(node_id, node)``, which refuses an
        address it cannot dial (``TcpNetworkFactory.check_node``: an empty one, one not
        ``"host:port"``) with ``ValueError``; a factory without it (the ``Router``, whose
        addresses mean nothing) takes any."""
        check = getattr(self._core.network, "check_node", None)
        if check is not None:
            check(node_id, node)

    async def initialize(self, members: Mapping[NodeId, BasicNode] | Iterable[NodeId]) -> None:
        """Start a new cluster whose first membership is ``members`` (ids, or ids to nodes).

        Call it on one node (calling it on every node is fine too). Raises ``NotAllowed``
        if this node already has a log or a vote, and ``NotInMembers`` if it is not one of
        ``members``; ``TypeError`` if ``members`` is neither a mapping of ids to ``BasicNode``
        nor an iterable of ids, ``ValueError`` if an id is out of range, repeated, or there
        is no member (see ``openraft_py.validation.check_members``), or if the network
        factory's optional ``check_node`` refuses a member's address: ``TcpNetworkFactory``
        refuses one that is not ``"host:port"``, so with it give a mapping of ids to
        ``BasicNode("host:port")`` (a list of ids gives each member the empty address).
        """
        nodes = _v.check_members(members)
        for nid, node in nodes.items():
            self._check_node_for_network(nid, node)
        membership = Membership.new([set(nodes)], nodes)

        await self._act(lambda eng, now: eng.initialize(membership, now), "initialize")

    async def add_learner(self, node_id: NodeId, node: BasicNode, blocking: bool = True) -> ClientWriteResponse:
        """Add ``node_id`` (reachable at ``node``) as a learner: it receives the log but does
        not vote. Returns once the membership entry is committed and applied here; with
        ``blocking``, also waits until the learner is caught up: it holds that entry and is
        within ``Config.replication_lag_threshold`` entries of this leader's log.

        Adding a node that is already a member with the same ``node`` changes nothing. With
        another ``node``, the member moves there (a voter stays a voter): every node sends
        to it at the new address once it holds the entry (its network factory's
        ``new_client`` is asked again). Check the id: a wrong one cuts that member off.
        ``node.addr`` is opaque here (its meaning is the network factory's): the call does
        not compare it with other members' addresses, so check that a new learner's address
        is not another member's, whose node would receive the learner's replication.
        Raises ``ForwardToLeader`` on a non-leader (also if leadership is lost while
        waiting: before the entry commits, answered as a ``client_write`` is; after, during
        the catch-up wait, with ``committed_log_id`` set to the entry's log id: the learner
        is in, only the wait was cut short), ``InProgress`` while another membership change is not committed (a leader
        elected less than ``Config.election_timeout_max`` ago first waits, until that bound,
        for a change it inherited to commit with its first entry, as ``change_membership``
        does; cancelled during that wait, nothing is logged), and
        ``LearnerNotFound`` if, while ``blocking`` waits, a later change removes the node
        from the membership (the entry that added it is committed: only the wait ends);
        ``TypeError``/``ValueError`` (before anything is logged) unless ``node_id`` is a node
        id, ``node`` a ``BasicNode`` and ``blocking`` a bool, and ``ValueError`` if the
        network factory's optional ``check_node(node_id, node)`` refuses the address
        (``TcpNetworkFactory``: one that is not ``"host:port"``, ``""`` included: such a
        learner was never reached, and a blocking call waited for good). ``RuntimeError`` at
        once, with nothing logged, for a ``blocking`` call from a log read on the replication
        stream to ``node_id`` itself (a log store's reader) where the learner cannot catch up
        without the entries that stream sends only once the read returns
        (``_not_holding_up_catch_up``); ``blocking=False`` is taken there.
        """
        node_id = _v.check_node_id(node_id)
        _v.check_node(node)
        _v.check_bool(blocking, "blocking")
        self._check_node_for_network(node_id, node)
        if blocking:
            self._not_holding_up_catch_up(node_id, node)

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.add_learner(node_id, node, tx)

        resp: ClientWriteResponse = await self._change(fn, "add_learner", lambda mem: mem.nodes.get(node_id) == node)
        if blocking:
            threshold = self.config.replication_lag_threshold
            target = resp.log_id.index

            def caught_up(m: RaftMetrics) -> bool:
                if not m.running:
                    return False
                if m.state != ServerState.LEADER or m.replication is None:
                    # The entry adding it committed (``resp``): the change took effect, and
                    # only this wait ends (not "did not and will not take effect").
                    raise ForwardToLeader(m.current_leader, _node_of(m, m.current_leader), committed_log_id=resp.log_id)
                matched = m.replication.get(node_id)
                if matched is None:
                    # Not a replication target any more: a later change removed it, so it
                    # can never catch up (this waited for good).
                    raise LearnerNotFound(
                        node_id,
                        f"node {node_id} was removed from the membership "
                        f"({m.membership_config.membership!r}) while add_learner waited for it to catch up",
                    )
                return matched >= target and m.last_log_index - matched <= threshold

            await self._until(caught_up)
        return resp

    async def change_membership(
        self, members: Iterable[NodeId], retain: bool = False, allow_lagging: bool = False
    ) -> ClientWriteResponse:
        """Make ``members`` the voters, by joint consensus: appends ``[C_old, C_new]``, and
        once that commits, ``[C_new]``. Returns the ``ClientWriteResponse`` of the final
        entry once it is committed and applied here. Writes keep flowing meanwhile.

        Every new voter must already be a member (add it with ``add_learner`` first, else
        ``LearnerNotFound``). ``retain``: removed voters stay as learners; otherwise they
        leave the cluster and replication to them stops once the change commits. A leader
        that removes itself steps down after the change commits and hands leadership to the
        most up-to-date remaining voter. Raises ``ForwardToLeader``, ``InProgress`` (another
        change is not committed yet) and ``EmptyMembership``. A leader that steps down
        during the change answers ``ForwardToLeader`` with ``outcome_unknown=True`` before
        the joint config commits (the next leader may finish it), and with
        ``committed_log_id`` (the joint entry's log id) after: the voters change to
        ``members``, the next leader appending the final config (keeping removed voters as
        learners, as with ``retain=True``).

        A majority of ``members`` must have caught up with this leader: this node, and nodes
        whose replication is within ``Config.replication_lag_threshold`` entries of its log.
        Otherwise the call raises ``LearnerIsLagging`` before anything is logged: the joint
        config could not commit until they caught up, and the cluster would take no writes
        meanwhile. ``allow_lagging=True`` skips that check (a learner known to be about to
        catch up). A request that changes nothing returns the current membership at once.

        On a leader elected less than ``Config.election_timeout_max`` ago (right after
        ``initialize``, an election or a leader transfer), the call first waits, at most until
        that bound, for what the leader cannot know yet: the first answers of new voters it
        has not heard from, when they would make the majority, and the commit of a membership
        change it inherited (which its first entry commits). Then it decides as above; a node
        that answered nothing by then is refused as lagging, and an inherited change still not
        committed raises ``InProgress``.

        Cancelling the call once the node has taken it ends the wait only: the change goes
        through both phases (docs/concepts.md, "Cancelled calls"); cancelled during a new
        leader's wait above, nothing is logged.
        ``TypeError``/``ValueError`` (before anything is logged) unless ``members`` is an
        iterable of node ids with no id twice (``[1, 2, 2]`` is refused, not taken as
        ``{1, 2}``: the repeated id is likely a typo for another node) and ``retain`` and
        ``allow_lagging`` are bools.
        """
        voters = _v.check_voters(members)
        _v.check_bool(retain, "retain")
        _v.check_bool(allow_lagging, "allow_lagging")

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.change_membership(voters, retain, tx, allow_lagging)

        return await self._change(  # type: ignore[no-any-return]
            fn, "change_membership", lambda mem: not mem.is_joint() and mem.configs[0] == voters
        )

    async def remove_learners(self, ids: Iterable[NodeId]) -> ClientWriteResponse:
        """Remove the learners ``ids`` from the cluster: appends one membership entry with the
        same voters and the nodes without them (the voters do not change, so there is no
        joint phase). Returns the ``ClientWriteResponse`` of that entry once it is committed
        and applied here. The leader keeps replicating to the removed learners until the
        entry commits (so that a running one learns it is out: it stops expecting entries),
        then stops sending to them (a snapshot being sent is dropped) and their replication
        leaves ``RaftMetrics.replication``. A learner that is down or gone for good is
        removed the same way: nothing waits for it. A removed node can be added again later
        with ``add_learner``.

        No id at all changes nothing and returns the current membership at once (as a
        ``change_membership`` that changes nothing). Raises, before anything is logged:
        ``TypeError``/``ValueError`` unless ``ids`` is an iterable of node ids with no id
        twice; ``ForwardToLeader`` on a non-leader; ``LearnerNotFound`` for an id that is not
        a member; ``NotALearner`` for a voter of the current (or the joint) config (a voter
        leaves with ``change_membership``); ``InProgress`` while another membership change
        is not committed (a leader elected less than ``Config.election_timeout_max`` ago
        first waits, until that bound, for a change it inherited to commit with its first
        entry, as ``change_membership`` does; cancelled during that wait, nothing is logged).
        """
        learners = _v.check_learner_ids(ids)

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.remove_learners(learners, tx)

        return await self._change(fn, "remove_learners", lambda _mem: not learners)  # type: ignore[no-any-return]

    # -- writes and reads ----------------------------------------------------------------------

    async def client_write(self, data: bytes | bytearray | memoryview) -> ClientWriteResponse:
        """Replicate ``data`` as one log entry; return once it is committed and applied here,
        with what the state machine returned for it.

        Raises ``ForwardToLeader`` on a node that is not the leader. A leader that steps down
        before the entry commits keeps the call waiting until it learns the entry's fate: it
        returns if the entry commits after all; ``ForwardToLeader`` with ``outcome_unknown=False``
        if another leader's entry replaced it; with ``outcome_unknown=True`` if the node can no
        longer tell (a snapshot installed over it, the node removed from the membership); the
        node's ``Fatal`` error if it stops first. A leader cut off in a minority waits so until
        the partition heals (see docs/concepts.md). Cancelling the call (a timeout around it)
        ends the wait only: the entry may still commit and be applied everywhere.
        ``data`` must be bytes-like (``bytes``; a ``bytearray``, a ``memoryview`` or a
        subclass of ``bytes`` is copied to ``bytes``): anything else (``None``, ``str``,
        ``int``) raises ``TypeError`` before anything is logged, and a payload longer than
        ``Config.max_entry_bytes`` raises ``EntryTooLarge`` (a ``ValueError``), also before
        anything is logged. ``RuntimeError``
        at once, with nothing logged, when awaited where the entry could never commit: from
        inside the node's own state machine or log store (``_not_own_task``), or from a
        plug-in call on another of its tasks that the commit waits for (``_not_holding_up``:
        a log read on the replication stream to a node every majority holds, ``save_vote``
        on a leader every majority holds, or either where the node's other such tasks,
        awaiting writes of their own, hold back the rest of every majority); but
        ``ForwardToLeader``, as anywhere else, when the leader is handing leadership over
        (``trigger.transfer_leader``).
        """
        if _get_ident() != self._thread or not self._loop.is_running():
            self._check_loop()  # raises: not on this node's loop
        core = self._core
        if not core.parked or not core.sm_worker._idle:
            # ``_not_own_task``'s test, inlined, and made only when it can fail: while both
            # of the node's own tasks are parked waiting for work (``RaftCore.parked``), the
            # running task is neither (a write's common case, at any number of writers: the
            # writers run while the core waits for them), and the task lookup is skipped.
            task = _current_task(self._loop)
            if task is core.task or task is core.sm_task:
                self._not_own_task("client_write")  # raises: from inside its own state machine
        b = data if type(data) is bytes else _v.check_payload(data)
        if len(b) > self.config.max_entry_bytes:
            raise EntryTooLarge(len(b), self.config.max_entry_bytes)
        fut: asyncio.Future[ClientWriteResponse] = self._loop.create_future()
        if core.calling_out:
            # A plug-in call is in flight on one of the node's other tasks (rare): this may be
            # it. (After the checks of ``data``: a write taken there is recorded as awaiting
            # ``fut``, which then must be answered.)
            self._not_holding_up("client_write", _COMMIT, None, fut, leader_only=True)
        msg = ClientWriteOne(0, 1, 0, fut, True, Normal(b))
        if core.fatal is None:
            # ``RaftCore.send_msg`` inlined (every write takes this path): queue, and wake
            # the core only if it sleeps (at many writers it is mostly busy already).
            core._msgs.append(msg)
            if core._wakeup.first is not None:
                core._wakeup.wake()
        else:
            core.send_msg(msg)  # fails ``fut`` with the reason the node stopped
        return await fut

    async def client_write_many(self, datas: Iterable[bytes | bytearray | memoryview]) -> list[ClientWriteResponse]:
        """Like ``client_write`` for several payloads in one message; results in order.
        ``TypeError`` if ``datas`` is not an iterable of bytes-like payloads,
        ``EntryTooLarge`` (naming its ``position``) if one is longer than
        ``Config.max_entry_bytes``, and ``ValueError`` for more than ``MAX_WRITE_MANY``
        (``openraft_py.validation``, 2**20) payloads (an iterable is read no further than
        the one too many): then nothing of the call is logged. No payload: ``[]``
        at once (the node's ``Fatal`` error once it has stopped)."""
        self._check_loop()
        self._not_own_task("client_write_many")
        checked = _v.check_payloads(datas)
        _v.check_entry_sizes(checked, self.config.max_entry_bytes)
        payloads = [Normal(d) for d in checked]
        if not payloads:
            if self._core.fatal is not None:
                self._core.raise_fatal()  # as for any call on a stopped node (an empty batch returned [])
            return []
        fut: asyncio.Future[list[ClientWriteResponse]] = self._loop.create_future()
        # (After the checks, and past an empty batch, which waits for nothing: taken there,
        # the call is recorded as awaiting ``fut``.)
        self._not_holding_up("client_write_many", _COMMIT, None, fut, leader_only=True)
        self._core.send_msg(ClientWrite(0, len(payloads), 0, fut, False, payloads))  # type: ignore[arg-type]
        return await fut

    async def ensure_linearizable(self, policy: ReadPolicy = ReadPolicy.READ_INDEX) -> LogId | None:
        """Confirm this node is the leader and wait until its state machine reflects every
        write committed before the call; then a read of local state is linearizable.

        Returns the read log id. Raises ``ForwardToLeader`` on a non-leader and
        ``LinearizableReadError`` when leadership cannot be confirmed (for ``LEASE_READ``:
        the lease expired, or a leader just elected has none yet: no quorum answered its
        first heartbeat round; ``READ_INDEX`` waits for that answer instead, and the error
        says so); ``TypeError`` if ``policy`` is not a ``ReadPolicy``.
        """
        if type(policy) is not ReadPolicy:
            raise TypeError(f"policy must be a ReadPolicy, got {type(policy).__name__} {_v.shown(policy)}")
        self._check_loop()
        self._not_own_task("ensure_linearizable")
        ended: asyncio.Future[None] | None = None
        if self._core.calling_out:
            # Taken on a task inside a plug-in call, the task awaits the term's first entry
            # (when not committed yet) until ``ended`` is: recorded there, as a write is.
            ended = self._loop.create_future()
            self._not_holding_up("ensure_linearizable", _LINEARIZE, None, ended)

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.handle_read(tx, policy, now)

        try:
            read_log_id: LogId | None = await self._call(fn, "ensure_linearizable")
            if read_log_id is not None:
                index = read_log_id.index
                await self._until(
                    lambda m: m.last_applied is not None and m.last_applied.index >= index,
                    lambda: self._core.watch.applied_at_least(index),
                )
        finally:
            if ended is not None:
                ended.cancel()
        return read_log_id

    # -- state -------------------------------------------------------------------------------

    @property
    def metrics(self) -> RaftMetrics:
        """The latest metrics of this node. Not a coroutine, but read on the thread of the
        node's loop: ``RuntimeError`` from another thread (there, use
        ``asyncio.run_coroutine_threadsafe`` of a coroutine that reads it). On that thread it
        may also be read while the loop does not run (after ``run_until_complete`` returned,
        to see how a node ended): nothing changes the metrics then."""
        if _get_ident() != self._thread:
            self._check_loop()  # raises: not on this node's thread
        return self._core.watch.current

    def is_leader(self) -> bool:
        """Whether this node is the leader right now (not a coroutine; on the node's thread,
        as ``metrics``)."""
        return self.metrics.state == ServerState.LEADER

    def current_leader(self) -> NodeId | None:
        """The leader this node knows of, or ``None`` (not a coroutine; on the node's thread,
        as ``metrics``): ``metrics.current_leader``, which names no leader once the node went
        an election timeout without hearing from it (``RaftMetrics``)."""
        return self.metrics.current_leader

    def wait(self, timeout: float | None = None) -> Wait:
        """Conditions on this node's metrics to await, each bounded by ``timeout`` seconds
        (``None``: no bound). Example: ``await raft.wait(2.0).state(ServerState.LEADER)``.
        Not a coroutine, but it too must be called on the node's loop. Raises ``TypeError``
        for a ``timeout`` that is not a number (or ``None``) and ``ValueError`` for one that is
        negative, NaN or infinite (``Wait``). A condition awaited from inside the node's own
        state machine or log store raises ``RuntimeError`` at once (``_not_own_task``) unless
        it holds already (then it returns the metrics at once): the metrics would wait for
        the task it holds up; read ``metrics`` there instead. So does one awaited from a
        plug-in on the node's other tasks that could never hold there (``_not_holding_up``:
        a wait for apply past the commit that needs the very task it is made on, say)."""
        self._check_loop()
        return Wait(self._core.watch, timeout, self._refuse_wait)

    # -- called by a transport's server side -------------------------------------------------

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        """Handle an AppendEntries RPC from a leader. Raises ``InvalidRequest`` for a
        malformed request (``openraft_py.validation.check_append_entries``); the node
        ignores it and keeps running. ``RuntimeError`` from inside the node's own log store
        (``_not_core_task``): the core task, which answers it, awaits the store."""
        self._check_loop()
        self._not_core_task("append_entries")
        return await self.start_append_entries(req)

    def start_append_entries(self, req: AppendEntriesRequest) -> asyncio.Future[AppendEntriesResponse]:
        """``append_entries`` without a coroutine, for a transport that delivers from a
        callback or from another node's task: checks ``req`` and hands it to the node now
        (``InvalidRequest`` is raised here), and returns the future of the response, which
        fails as ``append_entries`` would. Must be called on the node's event loop.
        ``RuntimeError`` from inside the node's own log store, as ``append_entries``
        (``_not_core_task``): the core task answers the future and awaits the store, so the
        store would wait for it for good."""
        self._check_loop()
        self._not_core_task("start_append_entries")
        _v.check_append_entries(req)
        fut: asyncio.Future[AppendEntriesResponse] = self._loop.create_future()
        self._core.send_msg(AppendEntriesCall(req, fut))
        return fut

    def submit_append_entries(
        self, req: AppendEntriesRequest, reply: Callable[[AppendEntriesResponse | BaseException], None]
    ) -> Reply:
        """``append_entries`` with a callback, for a transport that writes the response
        itself: checks ``req`` and hands it to the node now (``InvalidRequest`` is raised
        here, and ``reply`` is not called), then calls ``reply`` exactly once, on the node's
        loop, with the ``AppendEntriesResponse`` or with the exception ``append_entries``
        would raise (a ``Fatal`` once the node stopped). Must be called on the node's loop.

        ``reply`` runs as soon as the response is known (inside the node's pass, or from the
        log store's flush callback when it waited for the request's entries to be durable;
        before the state machine applies what the same request committed): it must be
        quick, must not block, and must not raise (an exception is logged and dropped).
        Returns the handle: its ``cancel()`` (the connection went away) means ``reply`` is
        never called.
        ``TypeError`` (before anything happens) if ``reply`` is not callable.

        Unlike ``append_entries`` and ``start_append_entries``, taken from inside the node's
        own log store too: the call returns at once and ``reply`` is called once the core
        task goes on, so nothing waits unless the store itself waits for ``reply`` (it
        would wait for good: the core task awaits the store)."""
        if not callable(reply):
            raise TypeError(f"submit_append_entries needs a callable reply, got {type(reply).__name__}")
        self._check_loop()
        _v.check_append_entries(req)
        tx = Reply(reply)
        self._core.send_msg(AppendEntriesCall(req, tx))
        return tx

    def _submit_append_entries_mapped(
        self,
        req: AppendEntriesRequest,
        reply: Callable[[AppendEntriesResponse | BaseException], None],
        map_error: Callable[[BaseException], BaseException],
    ) -> Reply:
        """``submit_append_entries`` whose errors reach ``reply`` as ``map_error(error)``
        (the in-process router's fast mode, ``RouterClient._submit_direct``): the mapping is
        made only when there is an error, so a response reaches ``reply`` with no call in
        between. ``reply`` is the router's caller's, checked callable there."""
        if _get_ident() != self._thread or not self._loop.is_running():
            self._check_loop()  # raises: not on this node's loop (its test inlined, as in client_write)
        _v.check_append_entries(req)
        tx = Reply(reply, map_error)
        msg = AppendEntriesCall(req, tx)
        core = self._core
        if core.fatal is None:
            # ``RaftCore.send_msg`` inlined for its ``AppendEntriesCall`` while the node runs (a
            # follower's every request, as ``client_write`` inlines it for a write): the
            # reply tracked among the callers' (``_track``, compacting when the set is full),
            # counted as a message that is not a write, queued, and the core woken if it sleeps.
            callers = core._callers
            callers[tx] = None
            if len(callers) >= core._callers_limit:
                core._track(tx)  # compacts
            core._other_msgs += 1
            core._msgs.append(msg)
            if core._wakeup.first is not None and not core.guest_queued:
                # Parked: woken, or, when a node's pass on this loop is handing the request
                # over (the leader's), queued on it to run this node's pass as a guest once
                # its own returns (``core.guest``: a wake-up and a task step less for each).
                host = _hosting.core
                if (host is not None and core.parked and _GUESTS and core._handed is None and host is not core
                        and host._loop is core._loop):
                    core.guest_queued = True
                    host._guests.append(core)
                else:
                    core._wakeup.wake()
        else:
            core.send_msg(msg)  # answers ``tx`` with the reason the node stopped
        return tx

    async def vote(self, req: VoteRequest) -> VoteResponse:
        """Handle a RequestVote RPC from a candidate. Raises ``InvalidRequest`` for a
        malformed request (``openraft_py.validation.check_vote``)."""
        _v.check_vote(req)

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.handle_vote_req(req, tx, now)

        return await self._call(fn, "vote")  # type: ignore[no-any-return]

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        """Handle one chunk of a leader's snapshot (chunks arrive in order; a repeated chunk
        is accepted again). Raises ``ApiError`` for a chunk that does not continue what was
        received: the leader starts the transfer over, and ``InvalidRequest`` for a
        malformed chunk (``openraft_py.validation.check_install_snapshot``)."""
        _v.check_install_snapshot(req)

        def fn(eng: _Engine, tx: asyncio.Future[Any], now: float) -> None:
            eng.handle_install_snapshot(req, tx, now)

        return await self._call(fn, "install_snapshot")  # type: ignore[no-any-return]

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        """Handle a leader's hand-over notice (see ``Trigger.transfer_leader``). Raises
        ``InvalidRequest`` for a malformed notice
        (``openraft_py.validation.check_transfer_leader``)."""
        _v.check_transfer_leader(req)

        await self._act(lambda eng, now: eng.handle_transfer_leader(req, now), "handle_transfer_leader")

    async def get_current_snapshot(self) -> Snapshot | None:
        """The state machine's current snapshot (its ``data`` is the caller's to read and
        close), or ``None``. Cancelled, the call hands out nothing: a snapshot the state
        machine opens for it is closed. ``RuntimeError`` from inside the node's own state
        machine (``_not_own_task``): the state machine's worker hands it out."""
        self._check_loop()
        self._not_own_task("get_current_snapshot")
        return await self._core.get_current_snapshot()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Raft({self._core.watch.current.describe()})"  # from anywhere (a log, a debugger)
