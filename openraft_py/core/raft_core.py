"""``RaftCore``: one asyncio task per node that feeds the engine and runs its commands.

It drains two queues in batches: ``RaftMsg`` (API calls from the ``Raft`` handle) and
notifications (storage IO completions, RPC replies, applied reports, ticks). All the client
writes found in one drain become one engine call and one log append (batching). Then it runs
the commands the engine emitted; a command whose ``when`` condition is unmet (a storage write
not yet durable) is postponed until it holds. See ``docs/design/engine-runtime.md``.

The other jobs of the runtime are objects it owns, each in its own module: ``LogSource``
(entry cache + log reader), ``TaskSet`` (child tasks), ``ApplyFeed`` (hand-off to the
state-machine worker), ``Snapshots``, ``metrics_view``; a child task gets those and
``notify``, not the core (the "Seams" section of the design note).

No caller ever hangs: every future a caller awaits is taken in through ``send_msg`` or
``get_current_snapshot`` and recorded, a client write's in the queue and then in its
``Responder`` (its own, or the ``WriteRun`` of its pass: the apply feed's or the worker's)
until it is answered, every other in
``_callers``; whatever stops the node (shutdown, a storage error, a bug inside an engine
call) ends in ``_teardown``, which fails every one still pending with the node's ``Fatal``
error, and every later call fails at once with the same error. See
``docs/design/bad-input.md``. (Writes are not in ``_callers``: a list that kept each
write's future until the next compaction made them outlive the young GC generation, which
cost a quarter of the CPU of a write at 256 writers.)
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Container
from types import CoroutineType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from .._core import EntryCache, normal_data_bytes
from ..config import Config
from ..engine import (
    AbandonWrites,
    AppendEntries,
    BuildSnapshot,
    Command,
    Engine,
    Heartbeat,
    InstallSnapshot,
    Matched,
    PurgeLog,
    ReceiveSnapshotChunk,
    Replicate,
    ReplicationResult,
    Respond,
    RespondOnApply,
    SaveCommittedAndApply,
    SaveVote,
    SendSnapshot,
    SendTransferLeader,
    SendVote,
    StartReplication,
    StopReplication,
    TruncateLog,
)
from ..errors import ApiError, Fatal, ForwardToLeader, Panicked, RPCError, Stopped, StorageError, Unreachable
from ..failure_log import FailureLog
from ..metrics import MetricsWatch, RaftMetrics, RoleKey
from ..storage import IOFlushed, durable_append_of
from ..types import (
    Entry,
    EntryPayload,
    LeaderId,
    LogId,
    NodeId,
    Normal,
    RPCOption,
    ServerState,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)
from ..validation import shown
from ..wakeup import Resumed, Wakeup, send_none
from . import metrics_view, snapshot_io
from .apply_feed import ApplyFeed
from .calling_out import CallingOut
from .clock import Clock, seconds_reader
from .guest import hosting, run_as
from .log_source import CACHE_MAX_BYTES, CACHE_MAX_ENTRIES, LogSource
from .messages import (
    TICK,
    AppendEntriesCall,
    Applied,
    ClientWrite,
    ClientWriteOne,
    EngineCall,
    Failed,
    IOCompleted,
    Progress,
    SnapshotBuilt,
    SnapshotInstalled,
    SnapshotRefused,
    Tick,
    VoteReply,
    answer,
    responder_futures,
)
from .replication import BROKEN_NETWORK_WARN_MS, ReplicationCore, ReplicationEnv, breach_log
from .sm_worker import StateMachineWorker
from .snapshots import Snapshots
from .tasks import GiveUpAfter, TaskSet, stray_cancel
from .vote_writer import VoteWriter

if TYPE_CHECKING:
    from ..engine.leader import Leader
    from ..network import RaftNetwork, RaftNetworkFactory
    from ..storage import RaftLogStorage, RaftStateMachine

log = logging.getLogger("openraft_py.core")

# The command types that carry ``when`` (the io number that must be durable first).
_WAITING: frozenset[type[Any]] = frozenset(t for t in get_args(Command) if "when" in t.__struct_fields__)

_IO_ADVANCED = object()
"""Note: writes became durable (counted already by ``_on_log_flushed``): tell the engine."""

# The record of callers' futures is compacted (answered ones dropped) when it reaches this
# size, or twice the number still pending after the last compaction.
CALLERS_COMPACT_MIN = 1024

# Seconds between the checks, once a node stopped, of its tasks that have not ended: each
# names them at WARNING and cancels them again (``RaftCore._stuck_tasks``). A cancelled
# RocksDB call waits for its worker thread up to ``CANCELLED_THREAD_WAIT`` (30 s).
STUCK_TASKS_WARN_S = 10.0
# The longest period between two of those checks: it doubles after each (a task that never
# ends was named every 10 s for as long as the process ran), as ``FailureLog`` repeats.
STUCK_TASKS_WARN_MAX_S = 300.0


def _data_bytes(entry: Entry) -> int:
    """The data bytes of ``entry``: its ``Normal`` payload's length, else 0."""
    p = entry.payload
    return len(p.data) if type(p) is Normal else 0


def _cached_bytes(cache: EntryCache) -> int:
    """The data bytes of every entry in ``cache``."""
    if not len(cache):
        return 0
    return normal_data_bytes(cache.get(cache.first_index(), cache.last_index() + 1), Normal)


def _log_store_cancel(method: str, e: asyncio.CancelledError, subject: str) -> StorageError | None:
    """In an ``except CancelledError`` around the log store's ``method``: ``None`` when the
    core is being cancelled (``e`` must go on), else the ``StorageError`` for ``subject``."""
    stray = stray_cancel(f"the log store's {method}", e)
    if stray is None:
        return None
    err = StorageError(subject, stray)
    err.__cause__ = stray
    return err


# The methods every ``RaftNetwork`` has (its optional ones are looked up where used).
_CLIENT_METHODS = ("append_entries", "vote", "install_snapshot", "transfer_leader")


def _change_committed(tx: asyncio.Future[Any], committed: LogId) -> asyncio.Future[Any]:
    """A future to answer in place of ``tx``, the caller of a change whose entry
    ``committed`` has committed (``RespondOnApply.committed``): its outcome goes on to
    ``tx``, but a ``ForwardToLeader`` (the change's last entry replaced by another leader's,
    or its fate unknown here) as one with ``committed_log_id=committed``: the change took
    effect, only the wait for its last entry was cut short."""
    inner: asyncio.Future[Any] = tx.get_loop().create_future()

    def done(f: asyncio.Future[Any]) -> None:
        # The error is read first, whatever happens to it: read, it is not reported as
        # "never retrieved" once ``inner`` is freed (the caller may have given up).
        e = None if f.cancelled() else f.exception()
        if tx.done():
            return  # the caller gave up
        if f.cancelled():
            tx.cancel()
            return
        if e is None:
            tx.set_result(f.result())
        elif isinstance(e, ForwardToLeader):
            tx.set_exception(ForwardToLeader(e.leader_id, e.leader_node, committed_log_id=committed))
        else:
            tx.set_exception(e)

    inner.add_done_callback(done)
    return inner


def not_a_client(made: object) -> str | None:
    """What ``made`` (a network factory's ``new_client`` result) lacks to be a network client
    (``RaftNetwork``): ``None`` when it has every method of ``_CLIENT_METHODS``, else a
    sentence naming the first missing one, or the error looking it up raised (a proxy's
    ``__getattr__`` raising other than ``AttributeError`` went out of ``RaftCore.client``
    and stopped the leader with ``Panicked``)."""
    for m in _CLIENT_METHODS:
        try:
            method = getattr(made, m, None)
        except Exception as e:  # noqa: BLE001 - the factory's fault is this target's, not the node's
            return f"{shown(made)}, which is not a network client (RaftNetwork): looking up its {m} raised {e!r}"
        if not callable(method):
            return f"{shown(made)}, which is not a network client (RaftNetwork): it has no method {m}"
    return None


def drop_not_a_client(made: object) -> None:
    """Let go of ``made``, a ``new_client`` result refused by ``not_a_client``, so that
    nothing of it runs on or is logged later: a coroutine (an ``async`` helper's result) is
    closed (no "never awaited" warning); a task or future (``asyncio.ensure_future`` of one)
    is cancelled, and its exception retrieved once it ends (no "exception was never
    retrieved" when it is collected, whether it failed already or fails as it is
    cancelled). A refused task was left running, for good if it never ended."""
    if inspect.iscoroutine(made):
        made.close()
    elif isinstance(made, asyncio.Future):
        made.cancel()
        made.add_done_callback(_retrieve_any)


def _close_snapshot(snap: object) -> None:
    """Close the ``data`` of ``snap``, a ``get_current_snapshot`` result nobody takes (its
    caller was cancelled); nothing for ``None`` or a value without ``data``."""
    try:
        data = getattr(snap, "data", None)
    except Exception:  # noqa: BLE001 - not a snapshot: nothing of it to close
        return
    if data is not None:
        snapshot_io.close_quietly(data)


def _retrieve_any(fut: asyncio.Future[Any]) -> None:
    """Retrieve the exception of ``fut`` (ended), if it has one, so that asyncio logs none."""
    if not fut.cancelled():
        fut.exception()


# Seconds between two requests of a replication channel's client from the network factory
# while the factory cannot make one (``RaftCore._retry_client``): the channel retries at every
# heartbeat, and a factory may be slow (it must not do IO, but may look an address up).
NO_CLIENT_RETRY_S = 1.0


class _NoClient:
    """The client to a target the network factory could not make one for: every call raises
    ``Unreachable`` naming why (``why``: the factory's error, or what it returned instead of a
    client); replication backs off and tries again. ``retry``, if given, is called first (at
    each call): ``RaftCore._retry_client``, which asks the factory again and, once it makes a
    client, gives it to the replication channel that holds this stand-in."""

    def __init__(self, target: NodeId, node: Any, why: str, retry: Callable[[_NoClient], None] | None = None) -> None:
        self.why = f"no network client to node {target} at {node!r}: {why}"
        self._retry = retry
        # The clock (``RaftCore``'s, in seconds) before which ``retry`` asks nothing again.
        self.retry_at = 0.0

    def _unreachable(self) -> Unreachable:
        if self._retry is not None:
            self._retry(self)
        return Unreachable(self.why)

    async def append_entries(self, req: Any, option: RPCOption) -> Any:
        raise self._unreachable()

    async def vote(self, req: Any, option: RPCOption) -> Any:
        raise self._unreachable()

    async def install_snapshot(self, req: Any, option: RPCOption) -> Any:
        raise self._unreachable()

    async def transfer_leader(self, req: Any, option: RPCOption) -> None:
        raise self._unreachable()


async def _raising(e: BaseException) -> None:
    """Raise ``e`` where this is awaited: a guest pass's exception, on its node's own task."""
    raise e


def _retrieve(task: asyncio.Task[None]) -> None:
    """The core task's exception (only ``KeyboardInterrupt`` or ``SystemExit`` end it with
    one: ``RaftCore._run``) went on out of the event loop already, and the node's fatal error
    says it: retrieved here, so that asyncio does not log it again when the task is collected."""
    if not task.cancelled():
        task.exception()


class RaftCore:
    """The runtime of one node. Only ``RaftCore`` calls the engine and the log store."""

    # Set by ``start`` (on the loop): the node's loop and the id of the thread running it.
    _loop: asyncio.AbstractEventLoop
    _loop_thread: int

    def __init__(
        self,
        config: Config,
        engine: Engine,
        network: RaftNetworkFactory,
        log_store: RaftLogStorage,
        state_machine: RaftStateMachine,
        clock: Clock,
        cache: EntryCache,
    ) -> None:
        self.config = config
        self.engine = engine
        self.id: NodeId = engine.state.id
        # The engine state's membership and IO parts, read after every round of commands
        # (``_commands_now``, ``_forget_clients_of_left_nodes``). A ``RaftState`` keeps both
        # objects for its life (it changes their fields, never replaces them), and so does
        # the engine its state: held here, each pass skips two attribute reads of the
        # engine's compiled types per use, reads Python does not specialise (the
        # thirty-eighth round of docs/design/performance.md).
        self._membership_state = engine.state.membership
        self._io_state = engine.state.io
        # What the log says of the node's leadership (``_save_vote``, ``_send_votes``): each
        # leader it comes to know at INFO, and its own election rounds while none is known
        # through a ``FailureLog`` (at WARNING once they have gone on for an election timeout,
        # then every ``REPEAT_EVERY`` seconds). Nothing of it was logged: a node cut off from
        # its cluster for an hour, or a new leader after a crash, left no line above DEBUG.
        self._no_leader = FailureLog(log, f"node {self.id}", after=config.election_timeout_max / 1000.0,
                                     unit="election round")
        # The same for a learner, which runs no election rounds: its election timeouts
        # without a leader (``_learner_timed_out``).
        self._no_leader_learner = FailureLog(log, f"node {self.id}", after=config.election_timeout_max / 1000.0,
                                             unit="election timeout")
        self._logged_leader: LeaderId | None = None
        self.network = network
        self.log_store = log_store
        # The store's synchronous append, when it offers one (``storage.durable_append_of``).
        self._append_durable = durable_append_of(log_store)
        self.clock = clock
        # ``clock.now`` as one call: ``start`` sets it to ``seconds_reader(clock)`` (for the
        # default ``LoopClock``, the loop's time source itself: no Python frame per read).
        self._read_clock: Callable[[], float] = clock.now
        # The seams handed to the child tasks instead of the core: where log entries are
        # read from, the task set, and ``notify`` (see docs/design/engine-runtime.md).
        self.cache = cache
        # The data bytes of the cached entries, as of the last count plus every append
        # since (evictions are not subtracted: an upper bound), and the bound past which
        # ``_maybe_evict_cache`` counts again and evicts (``CACHE_MAX_BYTES``).
        self._cache_bytes = _cached_bytes(cache)
        self._cache_bytes_limit = CACHE_MAX_BYTES
        # The node's other tasks now inside a plug-in call (a replication stream's storage
        # read, ``save_vote``, ``build_snapshot``), which ``Raft`` consults before a call
        # that could wait for the very task it is made on (``calling_out``).
        self.calling_out: CallingOut = {}
        self.log = LogSource(self.id, cache, log_store.get_log_reader())
        self.tasks = TaskSet(f"raft-{self.id}", self._task_failed)
        self.votes = VoteWriter(log_store, self.tasks, self.notify, self.calling_out)
        self._msgs: deque[Any] = deque()
        # How many of ``_msgs`` are not ``ClientWriteOne``s (``send_msg`` counts them;
        # ``Raft.client_write`` queues only those). While it is 0 a pass takes the whole
        # queue as one batch of writes, without a look at each message.
        self._other_msgs = 0
        self._notes: deque[Any] = deque()
        # Wakes the core task when either queue gets an item (or at shutdown).
        self._wakeup = Wakeup()
        self._postponed: list[Command] = []
        self._io_done: set[int] = set()
        self._io_contiguous = 0
        self._saved_committed: LogId | None = None
        # The replication channels of this leader, one per target (``StartReplication``).
        self._streams: dict[NodeId, ReplicationCore] = {}
        self._replication_env = ReplicationEnv(
            self.id, config, clock, self.log, self.get_current_snapshot, self.tasks.spawn, self.notify,
            snapshot_last=lambda: engine.state.snapshot,
            calling_out=self.calling_out,
        )
        # The network client of each target, with the ``BasicNode`` it was made for: a target
        # whose node (address) changed in the membership gets a new one (``client``).
        self._clients: dict[NodeId, tuple[Any, RaftNetwork]] = {}
        # Per target the factory made no client of: why, and when it was last said at
        # WARNING (``now_ms``; ``_no_client_warning``). Dropped once it makes one.
        self._no_client_warned: dict[NodeId, tuple[str, float]] = {}
        # The contract breaches of the network's vote calls, per target (``breach_log``).
        self._vote_breaches: dict[NodeId, FailureLog] = {}
        # A network factory that says it is closed (``TcpNetworkFactory.closed``: its close()
        # ran while this node runs) fails every request of this node: said at WARNING once,
        # then every ``REPEAT_EVERY`` seconds (``_rpc_failed``), not per request. A peer
        # that is down stays at DEBUG: normal during faults.
        self._factory_closed = FailureLog(log, f"node {self.id}", unit="failed request")
        # The committed and effective memberships ``_forget_clients_of_left_nodes`` last saw.
        self._clients_memberships: tuple[StoredMembership | None, StoredMembership | None] = (None, None)
        self.sm_worker = StateMachineWorker(self.notify, state_machine, config.max_apply_batch, self._on_applied)
        self.feed = ApplyFeed(self.log, self.sm_worker, engine.state.applied)
        self.snapshots = Snapshots(self.id, engine, self.sm_worker, self.feed, self.notify, self.calling_out)
        self.fatal: Fatal | None = None
        # ``fatal``'s traceback when it stopped the node (``_set_fatal``; ``None`` for a
        # ``Stopped`` made here). Invariant: every later raise of ``fatal`` (``raise_fatal``,
        # the watch's waiters) starts from it, so it never holds an earlier raise's frames.
        self.fatal_tb: TracebackType | None = None
        self.watch = MetricsWatch(
            self._build_metrics,
            self._applied_index,
            log_index=self._log_index,
            snapshot_index=self._snapshot_index,
            purged_index=self._purged_index,
            role=self._role,
        )
        self.metrics = metrics_view.Publisher(engine, self.watch)
        self._stopping = False
        # Whether ``_run`` began (a task cancelled before its first step never runs its
        # coroutine, so ``_run``'s ``finally`` never tears down) and whether ``_teardown`` ran.
        self._started = False
        self._torn_down = False
        self._running_commands = False
        self._handlers = self._command_handlers()
        self.task: asyncio.Task[None] | None = None
        # What ``call_when_ended`` was given and has not called yet (the node has not ended).
        self._when_ended: list[Callable[[], None]] = []
        # Once stopped, while a task of the node has not ended: the next ``_stuck_tasks``.
        self._stuck_timer: asyncio.TimerHandle | None = None
        self._stuck_period = STUCK_TASKS_WARN_S  # (the timer's current period)
        # The core task was destroyed pending (``GeneratorExit``: the node collected, or its
        # loop closed): its tasks go with it and none will ever end, so no stuck-task timer.
        # Armed, the loop's timer held the collected node alive again and said at WARNING,
        # ``STUCK_TASKS_WARN_S`` later, that its core task "has not ended".
        self._destroyed = False
        self._stopped_at = 0.0
        self.tasks.on_empty = self._maybe_ended
        # The state machine worker's task (``start``). With ``task``, the two tasks a call of
        # the ``Raft`` handle that waits for apply must not come from (``Raft._not_own_task``):
        # ``apply`` runs on them, one batch at a time.
        self.sm_task: asyncio.Task[None] | None = None
        # Whether ``task`` is parked: suspended in ``_run`` on ``_wakeup`` for work, where it
        # runs no code of its own nor any plug-in's. Set just before that wait and cleared
        # as soon as it returns (however it ends), so it is never true while the task runs or
        # is suspended anywhere else (in a log store method, in an ``apply`` running inline).
        # While it and the worker's ``_idle`` are both true, neither of the node's own tasks
        # is the running task, and ``Raft``'s own-task check skips the task lookup.
        self.parked = False
        # Guest passes (``core.guest``). ``_guests``: the parked nodes this node's running
        # pass handed a request to, queued by the router's hand-over instead of being woken:
        # this node's task runs their passes (``pass_as_guest``) once its own pass returns,
        # or wakes them if it raised. ``guest_queued``: this node is in another node's
        # ``_guests`` (its task neither woken nor run yet). ``_handed``: what this node's
        # task must await before anything else, the rest of a guest pass that must wait
        # (or one that raises what the guest pass raised); set only while the task is parked.
        self._guests: list[RaftCore] = []
        self.guest_queued = False
        self._handed: Awaitable[None] | None = None
        # Passes of this node run as a guest so far (for tests and diagnostics).
        self.guest_passes = 0
        # The context the core task runs in, and a guest pass with it; ``None`` when the
        # loop's task factory made the task (``start``): then no pass runs as a guest.
        self._context: contextvars.Context | None = contextvars.copy_context()
        # Every future a caller awaits (see the module docstring), as the keys of a dict
        # (insertion-ordered, O(1) removal). A caller that awaits its own future drops it
        # as soon as it is answered (``untrack``): a failed call's exception carries the
        # traceback of the caller's frames (it is re-raised through them), and the future
        # kept it, with every object of those frames (an HTTP request, a snapshot chunk),
        # until the next compaction. Others (the futures and ``Reply``s of AppendEntries
        # handed to a transport) are dropped in amortized O(1) by ``_track``.
        self._callers: dict[Any, None] = {}
        self._callers_limit = CALLERS_COMPACT_MIN

    # -- queues --------------------------------------------------------------------------------

    def send_msg(self, msg: Any) -> None:
        """Queue an API call (``ClientWrite``, ``EngineCall`` or ``AppendEntriesCall``). Its
        ``tx`` is answered exactly once: with the result, the call's error, or the node's
        ``Fatal`` error if the node stops first (also when it has stopped already).
        ``Raft.client_write`` inlines this for its ``ClientWrite`` while the node runs."""
        if self.fatal is not None:
            self._fail_msg(msg, self.fatal.with_traceback(self.fatal_tb))  # (see ``raise_fatal``)
            return
        t = type(msg)
        if t is not ClientWriteOne:
            if t is not ClientWrite:
                # ``_track(msg.tx)``, without its call (every AppendEntries a follower takes).
                cs = self._callers
                cs[msg.tx] = None
                if len(cs) >= self._callers_limit:
                    self._track(msg.tx)  # compacts
            self._other_msgs += 1
        self._msgs.append(msg)
        self._wakeup.wake()

    def notify(self, note: Any) -> None:
        """Queue a notification."""
        self._notes.append(note)
        self._wakeup.wake()

    def _track(self, fut: Any) -> None:
        """Record a caller's future (or ``Reply``) so teardown can fail it."""
        cs = self._callers
        cs[fut] = None
        if len(cs) >= self._callers_limit:
            cs = self._callers = {f: None for f in cs if not f.done()}
            self._callers_limit = max(CALLERS_COMPACT_MIN, 2 * len(cs))

    def untrack(self, fut: Any) -> None:
        """Forget ``fut``, recorded by ``send_msg``: its caller has its answer (or gave up).
        Called by every caller that awaits its own future, once it is done with it."""
        self._callers.pop(fut, None)

    def now_ms(self) -> float:
        """The engine's clock: monotonic milliseconds."""
        return self._read_clock() * 1000.0

    # -- main loop -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the core, state machine and timer tasks."""
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._read_clock = seconds_reader(self.clock)
        if loop.get_task_factory() is None:
            self.task = loop.create_task(self._run(), name=f"raft-core-{self.id}", context=self._context)
        else:
            # A task factory of the application's may take no ``context`` (one written as
            # ``factory(loop, coro)``, the only form before Python 3.11, raised ``TypeError``
            # here), or take it and drop it: the task runs in a context unknown here, and
            # this node's passes never run as a guest (``_run_guests`` wakes its task).
            self._context = None
            self.task = loop.create_task(self._run(), name=f"raft-core-{self.id}")
        self.task.add_done_callback(_retrieve)
        self.task.add_done_callback(self._core_task_done)
        self.sm_task = self.tasks.spawn(self.sm_worker.run(), "sm-worker")
        if self.config.enable_tick:
            self.tasks.spawn(self._ticker(), "ticker")

    async def _run(self) -> None:
        self._started = True
        try:
            # Apply what was committed but not applied before a restart.
            committed = self.engine.state.committed
            if committed is not None:
                await self.feed.submit(committed)
            while True:
                handed = self._handed
                if handed is not None:
                    # The rest of a pass run as a guest (``pass_as_guest``), before any other,
                    # stopping or not: on this node's own task the pass would be awaiting it.
                    self._handed = None
                    await handed
                    continue
                if self._stopping:
                    break
                if not self._msgs and not self._notes:
                    self.parked = True
                    try:
                        await self._wakeup.wait()
                    except asyncio.CancelledError as e:
                        if self._handed is None:
                            raise
                        self._cancel_handed(e)
                    finally:
                        self.parked = False
                    continue
                # One pass, with no coroutine of its own unless a step of it must wait.
                hosting.core = self
                try:
                    pending = self._pass()
                except BaseException:
                    hosting.core = None
                    if self._guests:
                        self._wake_guests()
                    raise
                hosting.core = None
                if self._guests:
                    self._run_guests()
                    if pending is None and self.watch.predicates_due():
                        # The guests' answers may be queued: a pass now, in this task step,
                        # would change the metrics again before the loop checks them against
                        # the ``wait().metrics`` predicates (a joint config never seen).
                        await asyncio.sleep(0)
                if pending is not None:
                    await pending
        except asyncio.CancelledError as e:
            stray = stray_cancel("a call in the raft core's task", e)
            if stray is not None:
                # Not a shutdown: a plug-in let out a CancelledError of its own (the log
                # store calls say which one; this is for any other).
                err = Panicked(f"node {self.id}: {stray}")
                err.__cause__ = stray
                self._set_fatal(err)
            elif not self._stopping:
                self._set_fatal(Stopped("raft core task was cancelled"))
        except Fatal as e:
            self._set_fatal(e)
        except (KeyboardInterrupt, SystemExit) as e:
            # Ctrl-C landing in this task (the default SIGINT handler, or asyncio.run's at
            # a second Ctrl-C, raises it wherever the loop's thread is), or a plug-in's
            # sys.exit(): the node stops, and the exception goes on out of the event loop
            # (asyncio re-raises these out of run_until_complete) to end the program, as it
            # does from any other task. Swallowed, it left the program running with a
            # Panicked node ("raft core failed ... please report it").
            log.warning("node %s: stopping: %s raised in the raft core task", self.id, type(e).__name__)
            self._set_fatal(Stopped(f"node {self.id} stopped: {type(e).__name__} raised in the raft core task"))
            raise
        except GeneratorExit:
            # The task was destroyed pending, its coroutine closed: its event loop was closed
            # under it, or the node was dropped without ``shutdown()`` and collected (asyncio
            # logs "Task was destroyed but it is pending!"). Not a failure of the core: it
            # was logged as one ("raft core failed", a traceback, ``Panicked``). Its other
            # tasks are destroyed with it: no stuck-task timer (``_destroyed``).
            self._destroyed = True
            self._set_fatal(Stopped(f"node {self.id} stopped: its task was destroyed (its event loop was closed, "
                                    "or the node was dropped without shutdown())"))
            raise
        except BaseException as e:
            log.exception("node %s: raft core failed", self.id)
            err = Panicked(f"node {self.id}: raft core failed: {type(e).__name__}: {e}")
            err.__cause__ = e
            self._set_fatal(err)
        finally:
            self._teardown()

    def _pass(self) -> Awaitable[None] | None:
        """One pass of the core: the notes, then the calls (``_take_calls``), then the tick
        (``_tick``), then the engine's commands until it emits no more, then the metrics.
        Run without a coroutine: ``None`` once the pass is done, or, when a step must wait
        (a command's IO that suspends or must be awaited, the state machine's entries to be
        handed over again after a refused install), the awaitable that does the rest of the
        pass, which the core's task awaits before it starts another (a pass is never
        interleaved with another). A 1-writer write takes four passes over the three nodes
        of a cluster, each a coroutine or two less this way (docs/design/performance.md,
        the forty-eighth round)."""
        eng = self.engine
        now = self._read_clock() * 1000.0  # ``now_ms()``
        if now < eng.now:
            self._clock_went_back(now)
        eng.now = now
        tick = False
        if self._notes:
            notes = self._notes
            self._notes = deque()
            for n in notes:
                if type(n) is Matched:
                    # ``_handle_note``'s first case, without its call: a leader's every answer.
                    eng.handle_replication_result(n)
                elif n is TICK:
                    # Handled last in the pass (below): see ``_tick``.
                    tick = True
                else:
                    self._handle_note(n, now)
        if self.feed.resubmit:
            return self._pass_resubmitting(tick)
        if self._msgs:
            # ``_take_calls(now)``, without its call (a leader's every write, a follower's
            # every request).
            msgs = self._msgs
            self._msgs = deque()
            if self._other_msgs:
                self._other_msgs = 0
                if len(msgs) == 1 and type(m := msgs[0]) is AppendEntriesCall:
                    # ``_handle_msgs`` -> ``_handle_call`` for a queue of one AppendEntries,
                    # without their calls (a follower's every request at 1 writer). Nothing
                    # goes back to the queue if it raises, as there.
                    tx = m.tx
                    if not tx.done():
                        try:
                            eng.handle_append_entries(m.req, tx, now)
                        except ApiError as e:
                            if not tx.done():
                                tx.set_exception(e)
                else:
                    self._handle_msgs(msgs, now)
            else:
                writes: list[ClientWrite | ClientWriteOne] = list(msgs)
                try:
                    self._handle_writes(writes, True)
                except BaseException:
                    self._msgs.extendleft(reversed(writes))
                    raise
        if tick:
            self._tick(now)
        pending = self._commands_now(None)
        if pending is not None:
            return self._finish_pass(pending)
        self.metrics.publish()
        return None

    def _cancel_handed(self, e: asyncio.CancelledError) -> None:
        """This task was cancelled (``e``) after a guest pass handed it the rest of that pass
        (``_handed``) and before it took it: the cancellation is made again (the count
        ``cancel()`` raised taken back first, so that it is still one), to land where the
        rest first waits, as it does on this node's own task. It is meant for that rest: a
        plug-in's ``asyncio.timeout()`` that expired meanwhile (the plug-in takes its
        ``TimeoutError``: the node stopped instead), or a shutdown (the rest, a plug-in's
        call among it, ends: it was dropped, its call left suspended for good)."""
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
        task.cancel(e.args[0] if e.args else None)

    def _run_guests(self) -> None:
        """Run the pass of each node queued in ``_guests`` as a guest on this node's task
        (``pass_as_guest``), or wake its task when it can no longer run as one (it is not
        parked any more, was handed a rest, stops, its task was made by the loop's task
        factory: ``start``, or its metrics changed in a guest pass of this task step and its
        ``wait().metrics`` waiters were not checked yet: ``MetricsWatch.predicates_due``)."""
        guests = self._guests
        self._guests = []
        host = self.task
        for i, g in enumerate(guests):
            g.guest_queued = False
            try:
                if (host is not None and g.parked and g._handed is None and not g._stopping and g.fatal is None
                        and g.task is not None and g._context is not None and g._loop is self._loop
                        and not g.watch.predicates_due()):
                    g.pass_as_guest(host)
                else:
                    g._wakeup.wake()
            except BaseException:
                # (``pass_as_guest`` hands on what a pass raises: this is what raised around
                # it, a ``KeyboardInterrupt`` from a signal, say.) This guest and those not
                # reached are woken: nothing else would wake them, their requests left in
                # their queues (a spurious wake-up finds nothing to do).
                self._guests = guests[i:]
                self._wake_guests()
                raise

    def _wake_guests(self) -> None:
        """Wake the task of each node queued in ``_guests``: this node's pass raised, and
        this node stops without running theirs."""
        guests = self._guests
        self._guests = []
        for g in guests:
            g.guest_queued = False
            g._wakeup.wake()

    def pass_as_guest(self, host: asyncio.Task[Any]) -> None:
        """Run one pass of this parked node on ``host`` (another node's core task, the
        running one) as if on this node's own task (``core.guest.run_as``: its task is the
        current task, in its context). The rest of a pass that must wait, or the exception
        the pass raised, is handed to this node's task (``_handed``) and the task woken: it
        awaits or raises it before any other pass, so this node, never the host, stops for
        what its own pass or plug-ins raise."""
        task = self.task
        context = self._context
        assert task is not None and context is not None and self._loop is not None
        self.guest_passes += 1
        self.parked = False
        try:
            pending = run_as(self._loop, host, task, context, self._pass)
        except BaseException as e:  # noqa: BLE001 - raised again on this node's own task
            pending = _raising(e)
        finally:
            # Still suspended on its wake-up: parked again (``_handed`` keeps passes apart).
            self.parked = True
        if pending is not None:
            self._handed = pending
            self._wakeup.wake()
        elif self._msgs or self._notes:
            # Queued during the pass (a note to itself): its own task takes them.
            self._wakeup.wake()

    async def _pass_resubmitting(self, tick: bool) -> None:
        """The rest of a pass (``_pass``) that must first hand the committed entries to the
        state machine again (``ApplyFeed.resubmit``: after a refused install), before
        anything can queue another install."""
        eng = self.engine
        self.feed.resubmit = False
        committed = eng.state.committed
        now = eng.now
        if committed is not None:
            await self.feed.submit(committed)
            # Read the clock again: what arrived during the await must not be handled
            # at an earlier time (a follower's ``leader_seen_at`` would start before the
            # request it notes arrived, and its stickiness end before the leader's lease
            # does; docs/design/reads.md).
            now = self._read_clock() * 1000.0
            if now < eng.now:
                self._clock_went_back(now)
            eng.now = now
        if self._msgs:
            self._take_calls(now)
        if tick:
            self._tick(now)
        await self._run_commands()
        self.metrics.publish()

    async def _finish_pass(self, pending: tuple[Awaitable[None], list[Command]]) -> None:
        """The rest of a pass whose commands stopped at one that must be awaited
        (``pending``, from ``_commands_now``)."""
        await self._await_commands(pending)
        self.metrics.publish()

    def _take_calls(self, now: float) -> None:
        """Handle the queued API calls (``_msgs``): a batch of writes, or each call in order
        (``_handle_msgs``) when others are among them."""
        msgs = self._msgs
        self._msgs = deque()
        if self._other_msgs:
            self._other_msgs = 0
            self._handle_msgs(msgs, now)
        else:
            # ``client_write``s only (the steady state of a busy leader): one batch.
            writes: list[ClientWrite | ClientWriteOne] = list(msgs)
            try:
                self._handle_writes(writes, True)
            except BaseException:
                # The node stops: the writes go back to the queue, where teardown
                # answers them (answering one twice is a no-op).
                self._msgs.extendleft(reversed(writes))
                raise

    def _clock_went_back(self, now: float) -> None:
        """The node's clock read ``now`` (ms), earlier than a time it read before
        (``Engine.now``): raise ``Fatal``, which stops the node.

        Every interval of the node is measured on this clock, which must be monotonic
        (``core.clock.Clock``; ``check_clock`` sees one reading only). A wall clock stepped
        back (NTP, an operator) froze the node's time: a leader cut off from the others
        went on serving lease reads, and on taking writes, for as long as the step, while
        the others elected a leader and committed writes those reads missed (a 5 s step:
        stale lease reads for 5 s)."""
        raise Fatal(
            f"node {self.id}: its clock went back {self.engine.now - now:.3f} ms (Clock.now() read "
            f"{now / 1000.0:.6f} s after {self.engine.now / 1000.0:.6f} s): the clock given to Raft.new must be "
            "monotonic (time.monotonic, or time.clock_gettime(time.CLOCK_BOOTTIME)), never the wall clock: with "
            "its time going back, a leader's lease outlasts its followers' leader stickiness and lease reads can "
            "be stale"
        )

    def _handle_msgs(self, msgs: deque[Any], now: float) -> None:
        """Handle ``msgs`` in order: each run of consecutive writes (``ClientWrite``,
        ``ClientWriteOne``) as one batch, every other call by itself."""
        writes: list[ClientWrite | ClientWriteOne] = []
        try:
            while msgs:
                m = msgs.popleft()
                t = type(m)
                if t is ClientWriteOne or t is ClientWrite:
                    writes.append(m)
                    continue
                if writes:
                    self._handle_writes(writes)
                    writes = []
                self._handle_call(m, now)
            if writes:
                self._handle_writes(writes)
        except BaseException:
            # The node stops: the writes not handled go back to the queue, where
            # teardown answers them (they are in no ``Responder`` yet).
            self._msgs.extendleft(reversed([*writes, *msgs]))
            raise

    def _tick(self, now: float) -> None:
        """The ticker's note, handled after everything else the pass took (the other notes,
        the requests and calls): a timing decision (a follower's election timeout, a
        leader's check-quorum) then sees what arrived meanwhile. After a stall of its loop
        (a large entry, a collection), uvloop runs the due ticker before it reads the
        sockets, so the tick came first: a follower whose leader's heartbeat waited in the
        same pass started a pre-vote round, and a leader stepped down although answers to
        requests sent within the election timeout were in the pass."""
        eng = self.engine
        deadline = eng.election_deadline
        leader = eng.leader
        handing_to = None if leader is None else leader.transfer_to
        eng.handle_tick(now)
        if eng.election_deadline != deadline and eng.leader_lost:
            self._learner_timed_out()
        if handing_to is not None and leader is not None and eng.leader is leader and leader.transfer_to is None:
            self._log_transfer_given_up(leader, handing_to, now)
        self.snapshots.expire(now)

    def write_redirect(self) -> ForwardToLeader | None:
        """The ``ForwardToLeader`` the engine refuses a leader-only call (a write, a
        membership change) with if it came now (``Engine.writable_leader``): this node
        does not lead (its metrics may not say so yet), or hands leadership over (naming
        the target); ``None`` while it takes them. For the handle's refusals of calls made
        from inside a plug-in call (``Raft._not_holding_up``): such a call never waits, so
        it gets this answer, not the ``RuntimeError`` of one that would wait for good."""
        eng = self.engine
        leader = eng.leader
        if leader is not None and leader.transfer_to is None:
            return None
        return eng.forward_to_leader()

    def start_transfer(self, to: NodeId, now: float) -> None:
        """``Trigger.transfer_leader(to)`` in the core: ``Engine.transfer_leader`` (its
        errors reach the caller), then one INFO line saying this leader hands over (none
        when naming itself did nothing). Writes were refused for the hand-over, and for two
        election timeouts when it failed, with no line saying why."""
        eng = self.engine
        eng.transfer_leader(to, now)
        leader = eng.leader
        if leader is not None and to != self.id and leader.transfer_to == to:
            log.info("node %s: hands leadership over to node %s (term %s): writes are refused, redirected to it, "
                     "until it leads, for at most %s ms (2 x election_timeout_max)", self.id, to, leader.vote.leader_id.term,
                     2 * self.config.election_timeout_max)

    def _log_transfer_given_up(self, leader: Leader, to: NodeId, now: float, refused: str | None = None) -> None:
        """Log at WARNING that ``leader`` (still this node's leadership) gave up its transfer to
        ``to`` at ``now`` and why, as far as it knows: the network said ``to`` cannot be
        reached (``refused``, its message: given up at once), or, after two election
        timeouts with no new leader, the target never held its whole log, or it was told to
        take over and no leader came of it. Once per transfer."""
        last = self.engine.state.last_index()
        started = leader.transfer_started_at
        # A notice sent (this transfer's or an earlier one's this term) keeps lease reads off.
        lease = ("lease reads stay off for the rest of the term: the voters told of a hand-over may vote for "
                 "another node at once" if leader.lease_disabled else "and lease reads: no follower was told of it")
        if refused is not None:
            log.warning("node %s: gave up handing leadership over to node %s after %.0f ms (term %s): node %s cannot "
                        "be reached (%s): is it down or cut off?; it takes writes again (%s)", self.id, to,
                        max(0.0, now - started), leader.vote.leader_id.term, to, refused, lease)
            return
        matched = leader.progress.as_dict().get(to, -1)
        if leader.transfer_sent:
            why = (f"node {to} held this leader's whole log and was told to take over, but no new leader came of it "
                   f"(is node {to} down or cut off? its own log says if it declined to campaign)")
        elif matched >= last and leader.ack_at.get(to, -1.0) < started:
            # (It was told nothing: the notice waits for an answer to a request sent since
            # the start. Its log was not the reason: it held this leader's whole log.)
            why = (f"node {to} answered none of this leader's requests sent since the transfer started, so it was "
                   f"not told to take over (is node {to} paused, overloaded or cut off? its requests went unanswered)")
        else:
            held = f"up to log index {matched}" if matched >= 0 else "none of it as far as this leader knows"
            why = (f"node {to} never held this leader's whole log (it ends at index {last}; node {to} holds {held}): "
                   f"too far behind to catch up in time, or cut off?")
        log.warning("node %s: gave up handing leadership over to node %s after %s ms (term %s): %s; "
                    "it takes writes again (%s)", self.id, to, 2 * self.config.election_timeout_max,
                    leader.vote.leader_id.term, why, lease)

    def _handle_note(self, n: Any, now: float) -> None:
        eng = self.engine
        t = type(n)
        if t is Matched:
            eng.handle_replication_result(n)
        elif t is Progress:
            if n.has_matching:
                eng.handle_replication_progress(n.target, n.session, n.matching, n.sent_at)
            else:
                eng.handle_replication_progress(n.target, n.session, None, n.sent_at)
        elif t is IOCompleted:
            if n.error is not None:
                raise StorageError(f"flushing storage write #{n.io}", n.error)
            self._io_completed(n.io)
        elif n is _IO_ADVANCED:
            self.engine.handle_io_flushed(self._io_contiguous)
        elif t is Applied:
            eng.handle_applied(n.log_id)
            self._maybe_evict_cache()
        elif t is SnapshotBuilt:
            self._log_snapshot("built", n.meta)
            eng.handle_snapshot_built(n.meta)
        elif t is SnapshotInstalled:
            self._log_snapshot("installed the leader's", n.meta)
            eng.handle_snapshot_installed(n.meta, n.tx)
        elif t is SnapshotRefused:
            self.snapshots.refused(n)
        elif t is Tick:
            self._tick(now)
        elif t is VoteReply:
            eng.handle_vote_resp(n.target, n.resp, now)
        elif isinstance(n, ReplicationResult):
            leader = eng.leader
            handing_to = None if leader is None else leader.transfer_to
            eng.handle_replication_result(n)
            if handing_to is not None and leader is not None and eng.leader is leader and leader.transfer_to is None:
                # (Only ``Unreachable.refused`` ends a transfer here.)
                self._log_transfer_given_up(leader, handing_to, now, getattr(n, "refused", None))
        elif t is Failed:
            if isinstance(n.error, Fatal):
                raise n.error
            err = Panicked(f"node {self.id}: a task failed: {type(n.error).__name__}: {n.error}")
            err.__cause__ = n.error
            raise err
        else:
            raise Panicked(f"unknown notification {n!r}")

    def _handle_writes(self, writes: list[ClientWrite | ClientWriteOne], all_one: bool = False) -> None:
        """Log the payloads of ``writes`` (``all_one``: every write is a ``ClientWriteOne``)
        and queue each write to be answered once its entries are applied."""
        payloads: list[EntryPayload]
        if all_one:
            # (One write, a 1-writer leader's every pass: no comprehension.)
            payloads = [writes[0].payload] if len(writes) == 1 else [w.payload for w in writes]  # type: ignore[union-attr]
        else:
            payloads = []
            for w in writes:
                if type(w) is ClientWriteOne:
                    payloads.append(w.payload)
                else:
                    payloads.extend(w.payloads)  # type: ignore[union-attr]
        try:
            first = self.engine.client_write(payloads)
        except ApiError as e:
            for w in writes:
                if not w.tx.done():
                    w.tx.set_exception(e)
            return
        if all_one and len(writes) > 1:
            # (A busy leader's every pass: one ``WriteRun``, nothing stored on each write.)
            self.feed.add_run(first.index, first.term, writes)  # type: ignore[arg-type]
        else:
            self.feed.add_writes(first.index, first.term, writes)

    def _handle_call(self, m: EngineCall | AppendEntriesCall, now: float) -> None:
        """Run one engine call (an ``AppendEntriesCall`` is a call of
        ``Engine.handle_append_entries``). An ``ApiError`` refuses this call only (the
        engine checks before it changes anything). Any other exception escapes: the engine
        may be left half-way through a change, so the node stops with ``Panicked`` (in
        ``_run``) and teardown answers this caller, like every other, with that error."""
        if m.tx.done():
            # The caller gave up (cancelled, timed out) before the call ran: as if the
            # request was lost. (Answering a cancelled future would raise.)
            return
        try:
            if isinstance(m, AppendEntriesCall):
                self.engine.handle_append_entries(m.req, m.tx, now)
            else:
                m.fn(self.engine, m.tx, now)
        except ApiError as e:
            if not m.tx.done():
                m.tx.set_exception(e)

    # -- commands ------------------------------------------------------------------------------

    async def _run_commands(self) -> None:
        """Run the engine's commands until it emits no more (running one may make the
        engine emit others: a flush completing while commands run is handled at once).
        Each command runs the method ``_handlers`` maps its type to, unless it waits for a
        storage write that is not durable yet (postponed: it runs in a later round, once
        the write is). A method doing IO returns what to await, or ``None`` when it is done
        (a command without IO, or whose IO completed without suspending, costs no
        coroutine). ``_pass`` runs them without this coroutine (``_commands_now``)."""
        pending = self._commands_now(None)
        if pending is not None:
            await self._await_commands(pending)

    def _commands_now(self, rest: list[Command] | None) -> tuple[Awaitable[None], list[Command]] | None:
        """``_run_commands`` without a coroutine, up to the first command whose method
        returns an awaitable: then that awaitable and the commands of its round after it,
        for ``_await_commands`` to await and go on with (``_running_commands`` stays set
        meanwhile, as while ``_run_commands`` awaits); ``None`` when the engine emits no
        more. ``rest``: what such a round left, run before the engine's next commands."""
        eng = self.engine
        handlers = self._handlers
        io_state = self._io_state
        postponed = self._postponed
        self._running_commands = True
        try:
            while True:
                if rest is not None:
                    cmds = rest
                    rest = None
                else:
                    cmds = eng.take_commands()
                    if postponed:
                        # One pass over the postponed commands (each has a ``when``: it
                        # waited for a write): those now durable run first, in their order.
                        flushed = io_state.flushed
                        ready: list[Command] = []
                        waiting: list[Command] = []
                        for c in postponed:
                            if (c.when or 0) <= flushed:  # type: ignore[union-attr]  # every postponed command has it
                                ready.append(c)
                            else:
                                waiting.append(c)
                        if ready:
                            postponed = self._postponed = waiting
                            cmds = ready + cmds
                    if not cmds:
                        # ``_forget_clients_of_left_nodes``'s own first test, without its
                        # call while neither membership changed (every pass but a few).
                        ms = self._membership_state
                        seen_committed, seen_effective = self._clients_memberships
                        if ms.committed is not seen_committed or ms.effective is not seen_effective:
                            self._forget_clients_of_left_nodes()
                        if self._no_leader.failing or self._no_leader_learner.failing:
                            self._log_leader_again()
                        self._running_commands = False
                        return None
                for i, c in enumerate(cmds):
                    t = type(c)
                    if t in _WAITING:
                        # Postponed while the write it waits for is not durable yet.
                        when = c.when  # type: ignore[union-attr]  # every type in _WAITING has it
                        if when is not None and when > io_state.flushed:
                            postponed.append(c)
                            continue
                    # The two commands of a write that need no method of their own run
                    # without its call (``_respond``: a follower's every answer;
                    # ``_replicate``: a leader's request to each target).
                    if t is Respond:
                        answer(c.tx, c.value)  # type: ignore[union-attr]
                        continue
                    if t is Replicate:
                        self._streams[c.target].replicate(c)  # type: ignore[union-attr, arg-type]
                        continue
                    handler = handlers.get(t)
                    if handler is None:
                        raise Panicked(f"unknown command {c!r}")
                    pending = handler(c)
                    if pending is not None:
                        return pending, cmds[i + 1 :]
        except BaseException:
            self._running_commands = False
            raise

    async def _await_commands(self, pending: tuple[Awaitable[None], list[Command]] | None) -> None:
        """Await what ``_commands_now`` returned, and go on running commands the same way,
        until the engine emits no more."""
        try:
            while pending is not None:
                aw, rest = pending
                await aw
                pending = self._commands_now(rest)
        finally:
            self._running_commands = False

    def _command_handlers(self) -> dict[type[Any], Callable[[Any], Awaitable[None] | None]]:
        """One method per command type, each taking that type. A method that does IO is a
        coroutine function: what it returns is awaited."""
        return {
            Respond: self._respond,
            AppendEntries: self._append_entries,
            Replicate: self._replicate,
            Heartbeat: self._heartbeat,
            SaveCommittedAndApply: self._save_committed_and_apply,
            SaveVote: self._save_vote,
            TruncateLog: self._truncate_log,
            PurgeLog: self._purge_log,
            SendVote: self._send_votes,
            StartReplication: self._start_replication,
            StopReplication: self._stop_replication,
            SendSnapshot: self._send_snapshot,
            RespondOnApply: self._respond_on_apply,
            AbandonWrites: self._abandon_writes,
            BuildSnapshot: self._build_snapshot,
            ReceiveSnapshotChunk: self._receive_chunk,
            InstallSnapshot: self._install_snapshot,
            SendTransferLeader: self._send_transfer_leaders,
        }

    def _respond(self, c: Respond) -> None:
        answer(c.tx, c.value)

    def _replicate(self, c: Replicate) -> None:
        self._streams[c.target].replicate(c)

    def _heartbeat(self, c: Heartbeat) -> None:
        self._streams[c.target].heartbeat(c)

    def _send_snapshot(self, c: SendSnapshot) -> None:
        self._streams[c.target].send_snapshot(c)

    def _save_vote(self, c: SaveVote) -> None:
        self.votes.save(c.vote, c.io)
        vote = c.vote
        if vote.committed and vote.leader_id != self._logged_leader:
            self._log_leader(vote.leader_id)

    def _log_leader(self, leader_id: LeaderId) -> None:
        """Log at INFO that ``leader_id`` leads (this node or another): once per leader, with
        the election rounds this node ran without one, if they were logged."""
        self._logged_leader = leader_id
        term, leader = leader_id.term, leader_id.node_id
        what = f"leads term {term}" if leader == self.id else f"follows node {leader}, the leader of term {term}"
        if not self._no_leader_cleared(what):
            log.info("node %s: %s", self.id, what)

    def _no_leader_cleared(self, what: str) -> bool:
        """A leader is known (``what`` says which): end the streak of election rounds or of
        a learner's election timeouts without one; whether that logged (at INFO, saying
        ``what``, if the streak was logged at WARNING)."""
        now = self.clock.now()
        rounds = self._no_leader.cleared(now, what)
        timeouts = self._no_leader_learner.cleared(now, what)
        return rounds or timeouts

    def _learner_timed_out(self) -> None:
        """The election timer of this node, a learner, ran out: it heard from no leader for
        an election timeout. It never campaigns, so no election round says so
        (``_send_votes``): logged through ``_no_leader_learner`` as those are. Not for a
        voter (its rounds are logged), nor for a node outside its membership (a new node
        waiting to be added or initialized, or one removed)."""
        st = self.engine.state
        m = st.effective_membership()
        if st.id in m.nodes and not m.is_voter(st.id):
            self._no_leader_learner.failed(
                self.clock.now(), "learner", "no leader: a learner, it heard from none for an election timeout")

    def _log_leader_again(self) -> None:
        """After a round of commands, while this node's election rounds (or a learner's
        election timeouts) go on without a leader (``_no_leader``, ``_no_leader_learner``
        failing): once it names a leader again that ``_save_vote`` did not log (the leader
        it had, heard from again in the same term: a pre-vote round saves no vote), end
        them with one INFO if they were logged at WARNING."""
        eng = self.engine
        if eng.current_leader() is None:
            return
        leader_id = eng.state.vote.leader_id
        if leader_id != self._logged_leader:  # not logged since this node started
            self._log_leader(leader_id)
        else:
            self._no_leader_cleared(f"follows node {leader_id.node_id} again, the leader of term {leader_id.term}")

    def _send_votes(self, c: SendVote) -> None:
        req = c.req
        rounds = "a pre-vote round" if req.pre_vote else "an election"
        if req.transfer_from is not None:
            rounds += f" (leadership handed over by node {req.transfer_from.leader_id.node_id})"
        self._no_leader.failed(
            self.clock.now(), "election", f"no leader: started {rounds} for term {req.vote.leader_id.term}")
        for target, node in c.targets.items():
            self.tasks.spawn(self._send_vote(target, node, c.req), "vote")

    def _stop_replication(self, c: StopReplication) -> None:
        self._stop_streams()
        self._log_step_down()

    def _log_step_down(self) -> None:
        """Log at INFO that this node no longer leads (``StopReplication`` is emitted then
        only), and why, as its state after the pass tells: a newer vote, no longer a voter,
        or no quorum heard from (check quorum)."""
        led = self._logged_leader
        vote = self.engine.state.vote.leader_id
        term = led.term if led is not None and led.node_id == self.id else vote.term
        if vote.node_id != self.id or vote.term != term:
            why = f"it saw node {vote.node_id}'s term {vote.term}"
        elif self.id not in self.engine.state.membership.effective.membership.voter_ids():
            why = "it is no longer a voter"
        else:
            why = (f"no quorum acknowledged it within election_timeout_max ({self.config.election_timeout_max} ms): "
                   "is it cut off from most voters?")
        self._logged_leader = None
        log.info("node %s: no longer leads term %s: %s", self.id, term, why)

    def _respond_on_apply(self, c: RespondOnApply) -> None:
        tx = c.tx if c.committed is None else _change_committed(c.tx, c.committed)
        self.feed.add_responder(tx, c.log_id, self.engine.state.membership.effective)

    def _abandon_writes(self, c: AbandonWrites) -> None:
        self.feed.fail_after(c.after, ForwardToLeader(None, None, outcome_unknown=True))

    def _build_snapshot(self, c: BuildSnapshot) -> None:
        self.tasks.spawn(self.snapshots.build(), "build-snapshot")

    def _receive_chunk(self, c: ReceiveSnapshotChunk) -> Awaitable[None]:
        return self.snapshots.receive_chunk(c.req, c.tx)

    def _install_snapshot(self, c: InstallSnapshot) -> None:
        self.snapshots.install(c.meta, c.data, c.tx)

    def _send_transfer_leaders(self, c: SendTransferLeader) -> None:
        for target, node in c.targets.items():
            self.tasks.spawn(self._send_transfer_leader(target, node, c.req), "transfer-leader")

    def _append_entries(self, c: AppendEntries) -> Awaitable[None] | None:
        """Put the entries in the cache (a gap before them clears it) and hand them to the
        log store: to its ``append_durable`` when it offers one (IO ``c.io`` is durable on
        return), otherwise to its ``append``, whose flush callback reports IO ``c.io``
        durable (the coroutine returned)."""
        entries = c.entries
        io = c.io
        first = entries[0].log_id.index
        cache = self.cache
        if len(cache) and cache.last_index() + 1 != first:
            cache.clear()
        cache.append(first, entries)
        self._cache_bytes += normal_data_bytes(entries, Normal)
        append_durable = self._append_durable
        if append_durable is None:
            return self._append_with_callback(entries, io)
        try:
            append_durable(entries)
        except Exception as e:
            raise StorageError(f"appending {entries[0].log_id!r}..{entries[-1].log_id!r}", e) from e
        # Commands are running, so the engine is idle: told at once (as ``_on_log_flushed``).
        if io == self._io_contiguous + 1 and not self._io_done:
            # ``_advance_io(io)`` when every earlier write is durable (the usual case), without its call.
            self._io_contiguous = io
            self.engine.handle_io_flushed(io)
        else:
            self.engine.handle_io_flushed(self._advance_io(io))
        return None

    async def _append_with_callback(self, entries: list[Entry], io: int) -> None:
        # A leader replicates these entries in this same pass: the store may let the sends
        # go first (``IOFlushed.sends_first``). No loop given: ``_log_flushed`` hops to the
        # loop itself, comparing thread ids (3.11's ``get_running_loop``, which IOFlushed
        # would call, costs a getpid system call).
        leading = self.engine.leader is not None
        cb = IOFlushed(
            lambda err: self._log_flushed(io, err),
            None,
            leading,
            on_dropped=lambda: self._append_dropped(io, entries[0].log_id, entries[-1].log_id),
        )
        try:
            await self.log_store.append(entries, cb)
        except Exception as e:
            raise StorageError(f"appending {entries[0].log_id!r}..{entries[-1].log_id!r}", e) from e
        except asyncio.CancelledError as e:
            err = _log_store_cancel("append", e, f"appending {entries[0].log_id!r}..{entries[-1].log_id!r}")
            if err is None:
                raise
            raise err from None

    def _save_committed_and_apply(self, c: SaveCommittedAndApply) -> Awaitable[None] | None:
        """Persist ``c.committed`` and hand the entries up to it to the state machine: here
        and now (``None``) when the log store's ``save_committed`` completes without
        suspending (``send_none``: ``MemLogStore``'s, every node's every commit) and the
        entries are cached; otherwise the coroutine that finishes it."""
        committed = c.committed
        # Postponed commands may run after a later one: never save a lower value.
        if self._saved_committed is not None and committed <= self._saved_committed:
            return None
        self._saved_committed = committed
        saving = self.log_store.save_committed(committed)
        if type(saving) is not CoroutineType:
            # (Not a coroutine: a method whose kind ``Raft.new`` could not tell, returning
            # some other awaitable.)
            return self._finish_save_committed(saving, committed)
        try:
            done, yielded = send_none(saving)
        except Exception as e:
            raise StorageError(f"saving committed {committed!r}", e) from e
        except asyncio.CancelledError as e:
            err = _log_store_cancel("save_committed", e, f"saving committed {committed!r}")
            if err is None:
                raise
            raise err from None
        if not done:
            # It suspended, yielding ``yielded`` to this task: continued there.
            return self._finish_save_committed(Resumed(saving, yielded), committed)
        return self.feed.submit_now(committed)

    async def _finish_save_committed(self, saving: Awaitable[None], committed: LogId) -> None:
        """``_save_committed_and_apply``'s rest when ``saving`` (the log store's
        ``save_committed(committed)``, or what is left of it) must be awaited."""
        try:
            await saving
        except Exception as e:
            raise StorageError(f"saving committed {committed!r}", e) from e
        except asyncio.CancelledError as e:
            err = _log_store_cancel("save_committed", e, f"saving committed {committed!r}")
            if err is None:
                raise
            raise err from None
        await self.feed.submit(committed)

    async def _truncate_log(self, c: TruncateLog) -> None:
        """Delete the entries after ``c.after`` (cache, waiting writers, then storage)."""
        after = c.after
        idx = -1 if after is None else after.index
        self.cache.truncate_after(idx)
        # Their writers lost.
        self.feed.fail_after(idx, self.engine.forward_to_leader())
        try:
            await self.log_store.truncate_after(after)
        except Exception as e:
            raise StorageError(f"truncating after {after!r}", e) from e
        except asyncio.CancelledError as e:
            err = _log_store_cancel("truncate_after", e, f"truncating after {after!r}")
            if err is None:
                raise
            raise err from None
        self._io_completed(c.io)

    async def _purge_log(self, c: PurgeLog) -> None:
        """Delete the entries up to ``c.upto``, once no log read covers them."""
        upto = c.upto
        self.cache.evict_upto(upto.index)
        # Never delete entries a replication stream is reading right now.
        await self.log.purge_allowed(upto.index)
        try:
            await self.log_store.purge(upto)
        except Exception as e:
            raise StorageError(f"purging up to {upto!r}", e) from e
        except asyncio.CancelledError as e:
            err = _log_store_cancel("purge", e, f"purging up to {upto!r}")
            if err is None:
                raise
            raise err from None
        self._io_completed(c.io)

    def _log_flushed(self, io: int, err: BaseException | None) -> None:
        """A log store's ``IOFlushed`` callback, from any thread: ``_on_log_flushed`` on
        the loop's thread; nothing once that loop is closed (a store's thread completing an
        append after the node was shut down)."""
        if threading.get_ident() == self._loop_thread:
            self._on_log_flushed(io, err)
            return
        try:
            self._loop.call_soon_threadsafe(self._on_log_flushed, io, err)
        except RuntimeError:
            # The loop is closed: the node was shut down and nothing waits for this write.
            # Raising would raise in the store's own thread (its writer, which may then end).
            if not self._loop.is_closed():
                raise

    def _append_dropped(self, io: int, first: LogId, last: LogId) -> None:
        """The ``IOFlushed`` of append ``io`` (entries ``first..last``) was garbage-collected
        uncalled, from any thread: the store let go of it, so the node would never learn that
        these entries are durable (its writes waited for good, no error said). Reported as
        their flush failing: the node stops with a ``StorageError`` saying what to fix. (After
        a stop, nothing: a store may drop what it had not flushed when the node ended.)"""
        self._log_flushed(
            io,
            RuntimeError(
                f"the log store's append of {first!r}..{last!r} let go of its IOFlushed callback without "
                "calling it, so the node can never count these entries as durable: RaftLogStorage.append "
                "must call callback.io_completed(None) once the entries are durable (before it returns, "
                "for a store durable on return) or callback.io_completed(error) if that failed, "
                "exactly once"
            ),
        )

    def _on_log_flushed(self, io: int, err: BaseException | None) -> None:
        """A log store's ``IOFlushed`` callback, on the loop thread. While the core runs
        commands the engine is idle, so the completion is handled at once (the commands it
        causes run in the same pass). Otherwise the ``Respond`` commands waiting for writes
        that are now durable are run here and then (a follower's AppendEntries answer
        leaves from the flush callback instead of one loop pass later: a ``Respond`` only
        waits for its ``when``, its value was decided with the request), and the engine
        learns how far writes are durable in the next pass."""
        if err is not None:
            self.notify(IOCompleted(io, err))
        elif self._running_commands:
            self.engine.handle_io_flushed(self._advance_io(io))  # ``_io_completed(io)``
        else:
            flushed = self._advance_io(io)
            if self._postponed:
                ready: list[Respond] = []
                waiting: list[Command] = []
                for c in self._postponed:
                    # (A postponed command has a ``when``: it waited for a write.)
                    if type(c) is Respond and (c.when or 0) <= flushed:
                        ready.append(c)
                    else:
                        waiting.append(c)
                if ready:
                    self._postponed = waiting
                    for r in ready:
                        answer(r.tx, r.value)
            self.notify(_IO_ADVANCED)

    def _on_applied(self, log_id: LogId) -> None:
        """The state machine applied every entry up to ``log_id`` (the worker's report).
        While the core runs commands the engine is idle, so it is told at once (an apply
        that the worker ran inline, from ``SaveCommittedAndApply``, costs no further pass);
        otherwise the report is queued. Reports may reach the engine out of order (a
        queued one after an inline one): it keeps the greatest."""
        if self._running_commands:
            self.engine.handle_applied(log_id)
            if len(self.cache) > CACHE_MAX_ENTRIES or self._cache_bytes > self._cache_bytes_limit:
                self._maybe_evict_cache()
        else:
            self.notify(Applied(log_id))

    def _io_completed(self, io: int) -> None:
        """Storage write ``io`` is durable; tell the engine how far writes are durable in
        order (writes may report out of order; the engine only sees the contiguous prefix)."""
        self.engine.handle_io_flushed(self._advance_io(io))

    def _advance_io(self, io: int) -> int:
        """Count storage write ``io`` as durable; return the greatest io up to which every
        write is durable."""
        if io == self._io_contiguous + 1 and not self._io_done:
            self._io_contiguous = io
        else:
            self._io_done.add(io)
            while self._io_contiguous + 1 in self._io_done:
                self._io_contiguous += 1
                self._io_done.discard(self._io_contiguous)
        return self._io_contiguous

    def _maybe_evict_cache(self) -> None:
        """Past ``CACHE_MAX_ENTRIES`` entries, or ``CACHE_MAX_BYTES`` of their data, drop
        the oldest cached entries: keep the newest half of either bound, and every entry
        not applied yet. The bytes were bounded by the number of entries alone: 64 KiB
        values made a node hold 6,000 of them (the log kept between snapshots), 390 MiB,
        and values of 1 MiB would have taken gigabytes."""
        cache = self.cache
        n = len(cache)
        over_bytes = self._cache_bytes > self._cache_bytes_limit
        if n <= CACHE_MAX_ENTRIES and not over_bytes:
            return
        # Keep what replication still needs when we can; never grow without bound.
        last = cache.last_index()
        upto = last - CACHE_MAX_ENTRIES // 2 if n > CACHE_MAX_ENTRIES else -1
        if over_bytes:
            entries = cache.get(cache.first_index(), last + 1)
            # The newest entries whose data fits in half the budget stay.
            kept = 0
            i = len(entries)
            budget = CACHE_MAX_BYTES // 2
            while i > 0:
                size = _data_bytes(entries[i - 1])
                if kept + size > budget:
                    break
                kept += size
                i -= 1
            upto = max(upto, last - (len(entries) - i))
        applied = self.engine.state.applied
        if applied is not None:
            upto = min(upto, applied.index)
        cache.evict_upto(upto)
        if over_bytes:
            # Counted again; count once more only after as much again was appended (an
            # apply far behind keeps more than the budget: no count at every apply).
            self._cache_bytes = _cached_bytes(cache)
            self._cache_bytes_limit = max(CACHE_MAX_BYTES, 2 * self._cache_bytes)

    # -- replication and votes -------------------------------------------------------------------

    def client(self, target: NodeId, node: Any) -> RaftNetwork:
        """The network client to ``target`` at ``node``: one per target, reused while the
        membership gives the target the same ``node``. A changed ``node`` (a member given a
        new address by ``add_learner``) gets a new client from the factory (which may close
        the old one's connections: the TCP factory does).

        If the factory's ``new_client`` raises (an address it cannot use: the node's address
        came from an ``add_learner`` call), a stand-in whose calls raise ``Unreachable`` with
        that error, not kept: the next call asks the factory again. (The exception used to
        stop the leader with ``Panicked``, and every leader after it while the membership
        held the address.) So too, with a warning naming the factory and what came back, if
        it returns something that is not a network client (``None`` from a forgotten
        ``return``, an object without ``vote``, ...): that was kept as the target's client,
        and each call of it failed later, in a replication or vote task, with an
        ``AttributeError`` that named neither the factory nor the target. What it returned
        is let go (``drop_not_a_client``: a coroutine closed, a task or future cancelled)."""
        known = self._clients.get(target)
        if known is not None and known[0] == node:
            return known[1]
        try:
            c = self.network.new_client(target, node)
        except Exception as e:  # noqa: BLE001 - the factory's failure is this target's, not the node's
            why = f"new_client raised {e!r}"
            self._no_client_warning(target, why, "node %s: the network factory's new_client(%s, %r) raised %r",
                                    self.id, target, node, e)
            return self._no_client(target, node, why)
        lacks = not_a_client(c)
        if lacks is not None:
            factory = type(self.network).__name__
            why = f"{factory}.new_client({target}, {node!r}) returned {lacks}"
            self._no_client_warning(target, why, "node %s: the network factory %s; node %s is unreachable until it "
                                    "returns one", self.id, why, target)
            drop_not_a_client(c)
            return self._no_client(target, node, why)
        if self._no_client_warned.pop(target, None) is not None:
            log.info("node %s: the network factory made a client of node %s at %r", self.id, target, node)
        elif known is not None:
            log.info("node %s: node %s is now at %r (was %r)", self.id, target, node, known[0])
        self._clients[target] = (node, c)
        return c

    def _request_client(self, target: NodeId, node: Any) -> RaftNetwork | None:
        """The client for a vote or transfer-leader request task to ``target``, started with
        the ``node`` its command named: the client of the node the effective membership
        gives ``target`` now, or ``None`` when it names ``target`` no more (the request
        belongs to a membership replaced since, and so to a campaign or leadership that is
        over: a node's membership changes only by a leader's entries or snapshot).

        A task gets its client at its first step, which may come after the core went on (a
        ``SendVote`` postponed until the vote is durable, passes run back to back): with
        ``node`` it replaced the cached client of a target moved since to a new address by
        one to the old address, and the TCP factory closed the connections of the
        replication to the new one. Invariant: ``_clients`` holds, per target, a client of
        the node the newest membership gives it."""
        current = self._membership_state.effective.membership.nodes.get(target)
        if current is None:
            log.debug("node %s: no request to %s at %r: the membership names it no more", self.id, target, node)
            return None
        return self.client(target, current)

    def _no_client_warning(self, target: NodeId, why: str, msg: str, *args: Any) -> None:
        """Log ``msg % args``, that the factory made no client of ``target`` (``why``), at
        WARNING the first time, when ``why`` changed, or ``BROKEN_NETWORK_WARN_MS`` after the
        last warning; else at DEBUG. The factory is asked again at every vote request and
        every ``NO_CLIENT_RETRY_S`` of replication (``_retry_client``): a warning each time
        would be one a campaign and one a second for as long as it fails."""
        now = self.now_ms()
        warned = self._no_client_warned.get(target)
        if warned is not None and warned[0] == why and now - warned[1] < BROKEN_NETWORK_WARN_MS:
            log.debug(msg, *args)
            return
        self._no_client_warned[target] = (why, now)
        log.warning(msg, *args)

    def _no_client(self, target: NodeId, node: Any, why: str) -> _NoClient:
        """The stand-in client of ``target`` at ``node``, the factory having made none
        (``why``): its calls ``_retry_client`` (the factory was just asked: not again
        before ``NO_CLIENT_RETRY_S``), then raise ``Unreachable``."""
        stand_in = _NoClient(target, node, why, lambda s: self._retry_client(target, node, s))
        stand_in.retry_at = self._read_clock() + NO_CLIENT_RETRY_S
        return stand_in

    def _retry_client(self, target: NodeId, node: Any, stand_in: _NoClient) -> None:
        """A call of ``stand_in`` (made as the client of ``target`` at ``node`` when the
        factory made none) is about to fail: if a replication channel sends through it, ask
        the factory again (at most every ``NO_CLIENT_RETRY_S``) and give the channel the
        client it makes. The channel kept the stand-in until the next leadership or
        membership change: with both stable, the target got nothing for good, even once the
        factory could make its client (one whose address book learns of a node a moment
        after ``add_learner``). A vote request asks the factory at each campaign anyway."""
        stream = self._streams.get(target)
        if self._stopping or stream is None or stream.client is not stand_in:
            return
        now = self._read_clock()
        if now < stand_in.retry_at:
            return
        stand_in.retry_at = now + NO_CLIENT_RETRY_S
        c = self.client(target, node)
        if not isinstance(c, _NoClient):
            stream.set_client(c)

    def _start_replication(self, c: StartReplication) -> None:
        """Close the channels of another leadership or to nodes no longer targeted; open one
        to each new target; point a channel whose target has a new address at it. Forget
        the network clients of nodes that are no target (``_forget_clients``)."""
        for target in list(self._streams):
            s = self._streams[target]
            if target not in c.targets or s.vote != c.vote:
                s.stop()
                del self._streams[target]
        self._forget_clients(c.targets)
        for target, node in c.targets.items():
            stream = self._streams.get(target)
            if stream is None:
                self._streams[target] = ReplicationCore(target, c.vote, self.client(target, node), self._replication_env)
            else:
                client = self.client(target, node)
                if client is not stream.client:
                    stream.set_client(client)

    def _forget_clients_of_left_nodes(self) -> None:
        """After a round of commands: if this node's committed or effective membership
        changed, forget the network clients of the nodes in neither (``_forget_clients``),
        whatever its role. A leader's targets are these nodes already; a follower, learner
        or candidate has clients of the voters it sent vote requests to, and kept the client
        of a voter removed since (and the TCP factory its connection) until it next became
        leader, for good if it never did."""
        ms = self._membership_state
        committed = ms.committed
        effective = ms.effective
        seen_committed, seen_effective = self._clients_memberships
        if committed is seen_committed and effective is seen_effective:
            return
        self._clients_memberships = (committed, effective)
        if effective is not seen_effective and (seen_effective is None or effective.log_id != seen_effective.log_id):
            self._log_membership(effective, seen_effective)
        if self._clients:
            self._forget_clients(committed.membership.nodes.keys() | effective.membership.nodes.keys())

    def _log_membership(self, stored: StoredMembership, before: StoredMembership | None = None) -> None:
        """Log at INFO the membership this node now goes by (a membership takes effect when
        appended): at start, and at each change, as each node learns of it. No change of
        the voters or learners was logged: an operator could not tell from the log when a
        node joined or left, nor which nodes a node counted as its voters.

        And a WARNING when that membership does not name this node, at start or when the
        one ``before`` it did (a node catching up from an empty log goes by memberships
        from before it was added: not said): it was removed (a voter by
        ``change_membership``, a learner by ``remove_learners``) and gets nothing more from
        the leader; a removed node kept running stayed idle with nothing saying why.

        At start the node cannot always tell: a learner stopped while catching up (a
        snapshot from before it was added installed, or entries from before it, and not yet
        the entry adding it) also starts with a membership that does not name it, and was
        told it "was removed from the cluster". So the WARNING of a start gives both cases."""
        if stored.log_id is None:  # (a node not initialized: no membership yet)
            return
        mem = stored.membership
        voters = " and ".join(str(sorted(c)) for c in mem.configs) or "none"
        joint = "joint " if mem.is_joint() else ""
        log.info("node %s: %smembership at log index %s: voters %s, learners %s", self.id, joint,
                 stored.log_id.index, voters, sorted(mem.learner_ids()))
        if self.id in mem.nodes:
            return
        if before is not None and (before.log_id is None or self.id not in before.membership.nodes):
            return  # (catching up from an empty log, or not named before either: nothing new to say)
        if before is not None:  # it named this node: this entry removed it
            log.warning("node %s: the membership at log index %s does not name this node: it was removed from the "
                        "cluster, and gets nothing more from the leader unless a later entry adds it again (stop it, "
                        "or add it again as a learner)", self.id, stored.log_id.index)
        else:
            log.warning("node %s: the membership at log index %s, the last this node holds, does not name this node: "
                        "either it was removed from the cluster (it then gets nothing more from the leader unless a "
                        "later entry adds it again: stop it, or add it again as a learner), or it was added after "
                        "that entry and is still catching up (its leader then sends it the entry adding it)",
                        self.id, stored.log_id.index)

    def _log_snapshot(self, what: str, meta: SnapshotMeta | None) -> None:
        """Say at INFO that this node built a snapshot, or installed one its leader sent
        (``what``), with its id and the last log index it covers: a line of the operator's
        timeline (a build, then the log purged up to it; a follower that fell behind the
        purged log caught up by a snapshot). Neither was logged above DEBUG. One line per
        snapshot, not per write."""
        if meta is None or meta.last_log_id is None:
            return
        log.info("node %s: %s snapshot %s (up to log index %s, term %s)", self.id, what, meta.snapshot_id,
                 meta.last_log_id.index, meta.last_log_id.term)

    def _forget_clients(self, targets: Container[NodeId]) -> None:
        """Drop the network client of every node not in ``targets`` (the leader's: every
        node of its committed and effective memberships but itself), and tell the factory,
        if it has the optional ``forget(target)`` (the TCP factory closes its connection).
        A node that left the membership kept its client, and the TCP factory its
        connection, for good: a cluster whose machines are replaced by new node ids over
        months held one of each for every node it ever had. A factory's ``forget`` that
        raises is logged: it must not stop the node."""
        for t in [t for t in self._no_client_warned if t not in targets]:
            del self._no_client_warned[t]
        gone = [t for t in self._clients if t not in targets]
        if not gone:
            return
        forget = getattr(self.network, "forget", None)
        for target in gone:
            del self._clients[target]
            self._vote_breaches.pop(target, None)
            if forget is None:
                continue
            try:
                forget(target)
            except Exception as e:  # noqa: BLE001 - the factory's failure must not stop the node
                log.warning("node %s: the network factory's forget(%s) raised %r", self.id, target, e)

    async def _send_vote(self, target: NodeId, node: Any, req: VoteRequest) -> None:
        timeout = self.config.election_timeout_min / 1000.0
        # A call still running after two of the longest election timeouts is given up: its
        # answer could no longer count (this node campaigned again since), and a network
        # without a timeout of its own would keep one task per election forever.
        limit = 2 * self.config.election_timeout_max / 1000.0
        try:
            client = self._request_client(target, node)
            if client is None:
                return
            async with GiveUpAfter(limit):
                resp = await client.vote(req, RPCOption(hard_ttl=timeout, soft_ttl=timeout))
        except RPCError as e:
            self._rpc_failed("vote", target, e)
            return
        except TimeoutError:
            self._vote_breach(target, "NoAnswer", f"the network did not answer within {limit:g}s (it must raise "
                                                  f"Timeout after option.hard_ttl={timeout:g}s)")
            return
        except Exception as e:  # noqa: BLE001 - a network that breaks its contract must not stop the node
            self._vote_breach(target, type(e).__name__, f"the network raised {e!r} (expected an RPCError)")
            return
        if not isinstance(resp, VoteResponse):
            # As above (the engine would fail on it, and the node with it): a lost answer.
            self._vote_breach(target, "WrongResponse", f"the network returned {type(resp).__name__} {resp!r:.80} "
                                                       "instead of VoteResponse")
            return
        breaches = self._vote_breaches.get(target)
        if breaches is not None and breaches.failing:
            breaches.cleared(self.clock.now(), "the network answers again")
        self.notify(VoteReply(target, resp))

    def _vote_breach(self, target: NodeId, kind: str, what: str) -> None:
        """Log ``what``, a contract breach of kind ``kind`` of the network's vote call to
        ``target``, through that target's breach log (``replication.BROKEN_NETWORK_WARN_MS``:
        it was one WARNING a campaign, for as long as the target could not be reached)."""
        breaches = self._vote_breaches.get(target)
        if breaches is None:
            breaches = self._vote_breaches[target] = breach_log(f"node {self.id}: vote request to {target}")
        breaches.failed(self.clock.now(), kind, what)

    async def _send_transfer_leader(self, target: NodeId, node: Any, req: TransferLeaderRequest) -> None:
        timeout = self.config.election_timeout_min / 1000.0
        client = self._request_client(target, node)
        if client is None:
            return
        try:
            async with asyncio.timeout(2 * self.config.election_timeout_max / 1000.0):  # as in _send_vote
                await client.transfer_leader(req, RPCOption(hard_ttl=timeout, soft_ttl=timeout))
        except RPCError as e:  # best effort: the election timeout is the fallback
            self._rpc_failed("transfer-leader", target, e)
        except Exception as e:  # noqa: BLE001 - as above
            log.debug("node %s: transfer-leader to %s failed: %s", self.id, target, e)

    def _rpc_failed(self, what: str, target: NodeId, e: RPCError) -> None:
        """Log the failure ``e`` of a ``what`` request to ``target``: at DEBUG (a peer down
        or cut off is normal during faults, and the election rounds are logged already),
        but through ``_factory_closed`` at WARNING when the node's own network factory says
        it is closed (``closed`` true, ``TcpNetworkFactory.closed``): then every request
        fails, whatever the peers do, and the node would go quiet. A factory without
        ``closed`` is never taken for closed (``RaftNetworkFactory``: the in-process
        ``RouterFactory`` has none, a ``Router`` having no close)."""
        log.debug("node %s: %s request to %s failed: %s", self.id, what, target, e)
        if getattr(self.network, "closed", False) is True:
            self._factory_closed.failed(
                self.clock.now(), "FactoryClosed",
                f"its network factory is closed (its close() was called while the node runs), so every request to "
                f"its peers fails ({what} to node {target}: {e}); close the factory only after Raft.shutdown(), "
                "and restart the node with a new one")

    # -- snapshots -----------------------------------------------------------------------------

    async def get_current_snapshot(self) -> Any:
        """The state machine's current snapshot (through the worker, in order with apply).
        Raises the node's ``Fatal`` error if it has stopped or stops before answering."""
        if self.fatal is not None:
            self.raise_fatal()
        fut = self.sm_worker.call(lambda sm: sm.get_current_snapshot(), _close_snapshot)
        self._track(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller gave up (a timeout around ``Raft.get_current_snapshot``, a
            # replication stream stopped): the snapshot is nobody's, its file closed. One
            # answered in the loop turn of the cancellation is here; one still to come, the
            # worker closes (``discard``). Left open, a file stayed open for each.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _close_snapshot(fut.result())
            raise
        finally:
            self.untrack(fut)  # (as in ``Raft._call``)
            del fut

    async def _ticker(self) -> None:
        interval = min(self.config.heartbeat_interval / 2.0, 10.0) / 1000.0
        while not self._stopping:
            await self.clock.sleep(interval)
            self.notify(TICK)

    # -- lifecycle -----------------------------------------------------------------------------

    def state_machine_failed(self, e: BaseException) -> None:
        """The state machine failed outside any call of the node (``RaftStateMachine.
        set_fatal_handler``; on the node's loop): stop the node with ``StorageError``."""
        if self._stopping:
            return
        err = e if isinstance(e, Fatal) else StorageError("the state machine failed", e)
        self.notify(Failed(err))

    def _task_failed(self, e: BaseException) -> None:
        """A child task raised: stop the node (unless it is stopping already)."""
        if not self._stopping:
            self.notify(Failed(e))

    def _set_fatal(self, err: Fatal) -> None:
        if self.fatal is None:
            self.fatal = err
            self.fatal_tb = err.__traceback__
            if not isinstance(err, Stopped):
                log.error("node %s stopped: %s", self.id, err)

    def raise_fatal(self) -> NoReturn:
        """Raise ``fatal`` (set: the node stopped), the same instance at every call, with
        the traceback it had when it stopped the node (``fatal_tb``). Raised as is, the one
        instance collected the frames of every raise and kept them alive: 100 calls on a
        stopped node made a traceback of 400 entries, and the 1500 waiters of a node shut
        down left each one of thousands, which the event loop's report of every waiter never
        awaited formatted whole (minutes)."""
        fatal = self.fatal
        assert fatal is not None, "the node has not stopped"
        raise fatal.with_traceback(self.fatal_tb)

    def _fail_msg(self, msg: Any, err: BaseException) -> None:
        tx = msg.tx
        if not tx.done():
            tx.set_exception(err)

    def _teardown(self) -> None:
        """The node stopped (``fatal`` says why): fail every caller still waiting, end
        every task, publish the final metrics. Each step runs even if an earlier one raises
        (the engine may be in any state after a bug). Runs once. On a closed loop (the
        core task destroyed with it) only the state and the metrics' error are set: nothing
        of the node can run any more, and failing a future, cancelling a task, waking a
        waiter each raised "Event loop is closed", logged as a failed step."""
        if self._torn_down:
            return
        self._torn_down = True
        self._stopping = True
        err = self.fatal or Stopped()
        self.fatal = err
        if self._loop.is_closed():
            try:
                self.engine.state.server_state = ServerState.SHUTDOWN
            except Exception:
                log.exception("node %s: teardown could not mark the state", self.id)
            self.watch.fatal, self.watch.fatal_tb = err, self.fatal_tb
            self.watch.dirty = True  # (rebuilt at the next read; its waiters cannot be woken)
            return
        # Every waiting caller: the futures recorded on the way in (engine calls and the
        # Respond commands, reads, snapshot chunks, get_current_snapshot), and the client
        # writes still queued or waiting in a Responder (of the feed or the worker).
        callers = [
            *self._callers,
            *(m.tx for m in self._msgs),
            *(f for r in self.feed.responders for f in responder_futures(r)),
            *(f for r in self.sm_worker.pending_responders() for f in responder_futures(r)),
        ]
        self._callers = {}
        for f in callers:
            if not f.done():
                f.set_exception(err)
        self._msgs.clear()
        self.feed.clear()
        self._postponed.clear()
        steps: list[Callable[[], None]] = [
            self._stop_streams,
            lambda: self.sm_worker.stop(err),
            self.snapshots.close,
            self._cancel_tasks,
        ]
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("node %s: teardown step failed", self.id)
        try:
            self.engine.state.server_state = ServerState.SHUTDOWN
        except Exception:
            log.exception("node %s: teardown could not mark the state", self.id)
        self.watch.fatal, self.watch.fatal_tb = err, self.fatal_tb
        self.metrics.publish(force=True)
        if self.tasks:
            self._arm_stuck_timer()

    def _arm_stuck_timer(self) -> None:
        """The node is stopping and a task of it has not ended: ``_stuck_tasks`` in
        ``STUCK_TASKS_WARN_S``, unless armed already (from ``shutdown()``, which cancelled a
        core task that has not ended, then from the teardown: one timer, one warning per
        period) or the loop is closed (a node collected with its loop). ``_maybe_ended``
        cancels it. Never for a node whose core task was destroyed (``_destroyed``)."""
        if self._stuck_timer is not None or self._destroyed or self._loop.is_closed():
            return
        self._stopped_at = self._loop.time()
        self._stuck_period = STUCK_TASKS_WARN_S
        self._stuck_timer = self._loop.call_later(STUCK_TASKS_WARN_S, self._stuck_tasks)

    def _stuck_tasks(self) -> None:
        """``STUCK_TASKS_WARN_S`` after the stop, then at a period that doubles up to
        ``STUCK_TASKS_WARN_MAX_S``, while a task of the node has not ended
        (cancelled, it runs on: a plug-in call that swallowed the ``CancelledError``, or one
        still waiting for its thread): name those tasks at WARNING and cancel them again.
        Until they end, the node's stores stay claimed (``Raft.new`` refuses them) and
        ``shutdown()`` waits; a task that swallowed one cancellation was left so for good,
        with nothing said. The core task among them (a log store call it awaits swallowed
        the cancellation of ``shutdown()``: its teardown, which cancels the others, has not
        run); the node's other tasks are cancelled again only once it was torn down."""
        self._stuck_timer = None
        names = self.running_tasks()
        if not names:
            return
        period = self._stuck_period = min(2 * self._stuck_period, STUCK_TASKS_WARN_MAX_S)
        log.warning(
            "node %s stopped %.1f s ago, but tasks of it have not ended: %s (cancelled again, and looked at again "
            "in %g s; its log store and state machine stay in use until they end: a store call that ignores its "
            "cancellation?)",
            self.id, self._loop.time() - self._stopped_at, ", ".join(names), period,
        )
        task = self.task
        if task is not None and not task.done():
            task.cancel()
        if self._torn_down:
            self.tasks.cancel_all()
        self._stuck_timer = self._loop.call_later(period, self._stuck_tasks)

    def _core_task_done(self, task: asyncio.Task[None]) -> None:
        """The core task ended (a done callback). One cancelled before its first step never
        ran ``_run``, whose ``finally`` tears down: torn down here then, so that the node's
        other tasks are cancelled all the same (they ran on over its stores: ``shutdown``
        tears down only when it is the one that cancels). Then ``_maybe_ended``."""
        if not self._torn_down:
            if self.fatal is None:
                self.fatal = Stopped("raft core task was cancelled")
            try:
                self._teardown()
            except Exception:
                log.exception("node %s: teardown failed", self.id)
        self._maybe_ended()

    def ended(self) -> bool:
        """Whether every task of the node ended: its core task and every task of its
        ``TaskSet`` (the state machine worker, snapshot builds, replication, vote writes and
        requests). Nothing of the node can call its log store or state machine any more."""
        task = self.task
        return task is not None and task.done() and not self.tasks

    def running_tasks(self) -> list[str]:
        """The names of the node's tasks that have not ended (the core task's first)."""
        task = self.task
        names = [task.get_name()] if task is not None and not task.done() else []
        return names + self.tasks.names()

    def call_when_ended(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the node ``ended()``: at once if it has, else from the done
        callback of the last of its tasks to end (before that task's other waiters resume:
        ``shutdown()`` returns after it). ``Raft.new`` releases the claim on the node's
        stores (``raft._claim_stores``) this way: a fatal stop cancels the tasks, but one
        of them may take a while to end once cancelled (a state machine call waiting for
        its worker thread), and it still runs when the core task has ended."""
        self._when_ended.append(fn)
        self._maybe_ended()

    def _maybe_ended(self) -> None:
        """Call the ``call_when_ended`` functions if the node ``ended()``."""
        if not self.ended():
            return
        if self._stuck_timer is not None:
            self._stuck_timer.cancel()
            self._stuck_timer = None
        if not self._when_ended:
            return
        fns, self._when_ended = self._when_ended, []
        for fn in fns:
            try:
                fn()
            except Exception:
                log.exception("node %s: a function called at the node's end raised", self.id)

    def _stop_streams(self) -> None:
        for s in self._streams.values():
            s.stop()
        self._streams.clear()

    def _cancel_tasks(self) -> None:
        self.tasks.cancel_all()

    async def shutdown(self) -> None:
        """Stop the node and wait until every task of it ended. Idempotent; concurrent
        calls each wait.

        A caller cancelled while it waits (a timeout around ``shutdown()``) gets its
        ``CancelledError`` (it was swallowed, and the caller went on as if not cancelled);
        the node stops all the same, its core task being cancelled already. A core task
        cancelled before its first step never runs ``_run`` (whose ``finally`` tears down):
        then the teardown runs here, at once (without it the node kept reporting
        ``running``, and every ``wait()`` on it waited for good)."""
        self._stopping = True
        if self.fatal is None:
            self.fatal = Stopped()
        self._wakeup.wake()
        task = self.task
        if task is None:
            return
        if not task.done() and not task.cancelling():
            task.cancel()
        if not self._started:
            self._teardown()
        if not task.done():
            # (Named and cancelled again if it goes on: a log store call it awaits may
            # swallow the cancellation, and then this waited for good, with nothing said.)
            self._arm_stuck_timer()
        if task is not asyncio.current_task():
            # ``asyncio.wait``, unlike ``await task``, neither cancels the core task again
            # when this caller is cancelled nor raises what the task raised.
            await asyncio.wait((task,))
        # From inside the core task (a log store calling ``shutdown``) it ends once control
        # returns to the loop: the cancel above reaches it at its next await.
        await self.tasks.close()

    # -- metrics -------------------------------------------------------------------------------

    def _applied_index(self) -> int:
        """The index of the last applied entry, -1 for none (``MetricsWatch.at_least``)."""
        applied = self.engine.state.applied
        return -1 if applied is None else applied.index

    def _log_index(self) -> int:
        """The last log index, -1 for none (``MetricsWatch.at_least``)."""
        return self.engine.state.last_index()

    def _snapshot_index(self) -> int:
        """The index of the last entry the current snapshot covers, -1 for none
        (``MetricsWatch.at_least``)."""
        snapshot = self.engine.state.snapshot
        return -1 if snapshot is None else snapshot.index

    def _purged_index(self) -> int:
        """The last purged index, -1 for none (``MetricsWatch.at_least``)."""
        purged = self.engine.state.purged_log_id()
        return -1 if purged is None else purged.index

    def _role(self) -> RoleKey:
        """The node's role now, as ``metrics.role_of`` reads it from its metrics
        (``MetricsWatch.role_changed``). A stopped node's differs (``build`` names no
        leader there), but its waiters are all woken at the stop."""
        eng = self.engine
        st = eng.state
        return (st.server_state, st.vote, st.membership.effective, eng.current_leader())

    def _build_metrics(self) -> RaftMetrics:
        """The node's metrics. On a stopped node whose engine state cannot be read any more
        (a bug broke it), the last metrics marked stopped: a waiter gets ``Fatal``, never an
        internal error."""
        try:
            return metrics_view.build(self.engine, self.fatal)
        except Exception:
            fatal = self.fatal
            watch = getattr(self, "watch", None)
            if fatal is None or watch is None:
                raise
            return metrics_view.stopped(watch.last, fatal)
