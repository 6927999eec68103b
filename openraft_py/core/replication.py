"""``ReplicationCore``: the IO of a leader's replication channel to one target.

The engine decides what a target is sent (``engine/progress.py``); this module only does
it. Given a ``Replicate`` it reads the entries ``[start, end)`` (from the in-memory tail of
the log, storage on a miss) and sends one AppendEntries; given a ``SendSnapshot`` it streams
the state machine's current snapshot in chunks. Each channel has one long-lived sender task
that carries out one ``Replicate`` at a time; a ``Replicate`` that arrives while the sender
is busy (the engine pipelines) runs as a task of its own, so the engine's pipelining window
is still the only bound on what is in flight. (The sender saves, per request, the creation
of a task and its done callback: the 1-writer path sends two requests per write.) With a
network that has the optional ``send_append_entries`` (``RaftNetwork``), a request for the
idle sender whose entries are cached and fit one request is handed to the network by
``replicate`` itself, in the core's pass, and the sender only awaits its answer: the request
leaves one task step earlier. With a network that has the optional ``submit_append_entries``,
such a request (for the idle sender or pipelined behind others, once its turn has come) is
handed over with a callback that reports the answer, and no task awaits it at all. Every
outcome goes back to the core as a notification, the engine's ``ReplicationResult`` types:

    AppendEntries answered: success        Matched(matching, sent_at)
                            conflict       Conflict(hint, sent_at)
                            greater vote   Rejected(vote)
    no answer (RPCError)                   Unreachable(start, refused: the message of
                                           an errors.Unreachable, else None)
    entries purged before the read         EntriesPurged(start)
    snapshot transferred / none usable     SnapshotSent(last log id / None, sent_at)

plus a ``Progress`` ack (no matching) for every snapshot chunk but the last, which keeps
the leader's lease fresh during a long transfer.

Heartbeats beside the window. Given a ``Heartbeat`` (the engine's heartbeat round found
requests in flight to a target that answered none sent lately: a request carrying a
multi-megabyte entry that outlasts the replication deadline, resent alone; a batch of large
entries sent as parts, one round trip each) the channel sends an AppendEntries without
entries at once, outside the turns below (it carries no entries, and its ``prev_log_id`` is
one the target acknowledged): through the network's optional ``heartbeat`` when it has one
(TCP: a connection of its own, so that it does not wait behind the window's bytes), else
handed to ``submit_append_entries`` when the network has it and can take it now, else in a
task of its own. Its answer is a
``Progress`` ack of its send time (with the matching the target gave, at most that
``prev_log_id``), a greater vote a ``Rejected`` of generation ``OUTSIDE_WINDOW``; a failure
reports nothing. It frees no slot of the window and changes no plan.

Byte budget. One AppendEntries carries at most ``Config.max_payload_bytes`` payload bytes
(``payload_bytes``), except that an entry larger than that on its own goes alone. The
engine plans ``[start, end)`` by entry count only (it never sees the payloads of entries it
did not write), so a planned batch that adds up to more is sent here as several requests in
a row: each the longest prefix of what is left that fits, sent once the one before it
matched, which is reported as a ``Progress`` with its matching (the target's matched index
and the commit move on; the request's slot stays taken). The last part's answer is the
``Replicate``'s result as above; a part that fails ends the ``Replicate`` with that part's
result (``Unreachable`` names that part's start). A batch that is not all in the entry
cache is read as its parts go, about one budget at a time (``READ_FIRST_ENTRIES``), not
whole; entries found purged by a later read end the ``Replicate`` with ``EntriesPurged`` from
the first entry not sent. ``docs/design/engine-runtime.md``, "Byte budget", argues the choice.

Order. A follower accepts a request only right after what it holds, so a channel hands its
requests to the network in plan order: each ``Replicate`` takes a turn when the core runs
it (``_planned``) and sends its first request only once every earlier one of the channel has
handed over its last (``_issued``). This holds back a request behind an earlier one that is
reading storage or sending a split batch part by part, instead of letting it overtake and
be refused. (The network sends a request before ``append_entries`` first suspends, as the
TCP client and the router do, so handing over is calling it.)

Deadlines. Each AppendEntries is handed over with an ``RPCOption`` whose ``hard_ttl`` is the
base deadline, ``max(4 * heartbeat_interval, election_timeout_min)``, plus the time its payload
bytes and those of the channel's requests ahead of it (handed over and not settled:
``_inflight_bytes``) take at ``Config.replication_min_rate`` (``_option``). A request carries
its bytes behind those on one connection, so a fixed deadline made every request of a window
larger than the link carries within it time out and be sent again, behind the bytes of the
ones that had timed out: on a slow link the target never caught up. A request with no
payload and nothing ahead (heartbeats) keeps the base deadline, and so does one with bytes
in flight that take at most 1% of it at that rate (``free_bytes``).

A request is settled when it is answered or fails, except one given up for want of an
answer in time (``Timeout``, or ``NoAnswer``): its bytes may still be in the link, ahead of
the resend that follows, and stay counted (``_given_up``) until an answer to a request
handed over after it shows the target read past them, the connection is gone (a request
fails with ``errors.Unreachable``, but for one saying ``connection_kept``, or
``set_client``), or as long again as its bytes (and
those ahead of it) take at the rate has passed since it was given up (``_failed``).
Settled at once, they were not counted: after a stall of a link that carries the rate, the
resend got the deadline of a request with nothing ahead and timed out behind them, and so
did the next ones, each carrying the same entries again (4 resends after a stall as long as
the request's time at the rate); on a link at 80% of the rate the target never caught up.
The time bound keeps a target that reads nothing (frozen, cut off without a reset) from
lengthening the deadlines without end: its resends' deadlines stay at about the base plus
twice their bytes' time, and every one still fails.

Within a snapshot transfer the channel retries by itself: a lost chunk is sent again from
the same offset after a heartbeat interval; a chunk the follower refuses (it lost what came
before) restarts the transfer from offset 0. A refused first chunk (the follower's state
machine busy applying or installing) is asked for again with an empty chunk, the data sent
once one is taken (``_transfer``). A resend from offset 0 (nothing of the
snapshot taken yet) sends the node's newest snapshot instead when one was built since the
transfer began (a target cut off while the leader snapshots and purges gets one snapshot
when it comes back, not the old one and then the new), unless the last chunk went
unanswered in time (the target may be installing it). Each chunk is bounded by
``install_snapshot_timeout`` plus the time its bytes and those ahead of it take at
``Config.replication_min_rate``: ahead, as for the window's requests, are the chunks (and
requests) given up whose bytes may still be on the way, and the window's requests not
settled. A chunk resent after a timeout counted its own bytes only: on a link a little
slower than the rate every chunk timed out once and then at each resend, behind the bytes
of the copy before, and the transfer never ended.

Once ``stop()`` ran (``StopReplication``, or ``StartReplication`` for another leadership or
without this target) nothing more is read or reported: the leader's log may be truncated
from then on, and ``RaftCore`` runs commands in order, so a stop always precedes any
truncation; the sender task ends. A channel reads no engine state.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .._core import find_payload, normal_data_bytes
from ..config import Config
from ..engine import (
    OUTSIDE_WINDOW,
    Conflict,
    EntriesPurged,
    Heartbeat,
    Matched,
    Rejected,
    Replicate,
    ReplicationResult,
    SendSnapshot,
    SnapshotSent,
    Unreachable,
)
from ..errors import LogCompacted, RemoteError, RPCError, StorageError, Timeout
from ..errors import Unreachable as UnreachableError
from ..failure_log import FailureLog
from ..types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    NodeId,
    Normal,
    RPCOption,
    SnapshotMeta,
    Vote,
)
from ..validation import shown
from ..wakeup import Wakeup
from . import snapshot_io
from .calling_out import READ, CallingOut, enter, leave
from .clock import Clock, seconds_reader
from .messages import Failed, Progress
from .tasks import GiveUpAfter, stray_cancel

if TYPE_CHECKING:
    from ..network import RaftNetwork
    from ..types import Snapshot

log = logging.getLogger("openraft_py.replication")

_GONE: Any = object()
"""What ``_submitted.pop`` gives for a request not (or no longer) handed over."""

BROKEN_NETWORK_WARN_MS = 10_000.0
"""A replication channel, and a node's vote requests to one target, log the network's
contract breaches (an exception that is not an ``RPCError``, a value that is not the
response, an answer that never came) through a ``FailureLog``: at WARNING at the first, at
once when the breach changes, at most once per this many milliseconds while it goes on (with
how many there were), and at INFO once a call succeeds again. Each is a failed call,
retried: a network that raised ``OSError`` for a peer that is down (instead of
``Unreachable``) logged a WARNING each time, 20 a second per replication target, and one per
election per voter."""

INSTALL_WAIT_WARN_AFTER = 30.0
"""Seconds the last chunk of a snapshot may go unanswered in time (each resend timed out)
before the replication channel says so at WARNING. The target answers that chunk once its
state machine has installed the snapshot, which for a large state takes longer than the
chunk's deadline (``Config.install_snapshot_timeout`` plus its bytes at
``Config.replication_min_rate``) and ``election_timeout_max`` (about 1 s for 200 MB of
``RocksStateMachine``, docs/guides/snapshots.md): those timeouts were counted as the
target's failures, so every such install logged a WARNING "replication to node N:
TimeoutError: no answer to the chunk ..." (and an INFO "recovered"), as for a node that is
down. A target that is cut off or frozen during the install is said after this long; one
that refuses the connection (``Unreachable``, a process that is gone) at once, as before."""


READ_FIRST_ENTRIES = 8
"""A planned batch that is not all in the entry cache is read (cache, then the log store) as
the byte budget goes, not at once: first this many entries, then as many as the rest of
``Config.max_payload_bytes`` holds at the average payload size read so far, until their
payloads reach the budget or the batch ends; the rest of the batch is read once what is
held has been sent (``ReplicationCore._read_budget``). A batch is planned by entry count
(``max_payload_entries``, 300), and was read whole: 300 entries of 1 MB, 300 MB on the
leader for a learner catching up, of which one request carries 8 MB (4 MB entries, the
largest ``max_entry_bytes`` allows by default: 1.2 GB per target catching up). The sizes of
entries not read yet are unknown: where they grow within a batch (small entries, then large
ones) one read can still take more than the budget, at most the rest of the batch (as
before)."""


def breach_log(subject: str) -> FailureLog:
    """The ``FailureLog`` of a network's contract breaches toward one target (see
    ``BROKEN_NETWORK_WARN_MS``); ``subject`` names the calls (``"replication 1->3"``)."""
    return FailureLog(log, subject, every=BROKEN_NETWORK_WARN_MS / 1000.0, unit="failed call")


def payload_bytes(entries: list[Entry]) -> int:
    """The payload bytes of ``entries`` against ``Config.max_payload_bytes``: ``len(data)``
    of each normal entry, the msgpack size of each membership entry, 0 for a blank one."""
    total = normal_data_bytes(entries, Normal)
    k = find_payload(entries, Membership)
    while k >= 0:
        total += len(msgspec.msgpack.encode(entries[k].payload))
        k = find_payload(entries, Membership, k + 1)
    return total


def _entry_bytes(e: Entry) -> int:
    p = e.payload
    if type(p) is Normal:
        return len(p.data)
    if type(p) is Membership:
        return len(msgspec.msgpack.encode(p))
    return 0


def fitting_prefix(entries: list[Entry], budget: int) -> int:
    """How many of ``entries`` the next request carries: the longest prefix whose payload
    bytes are at most ``budget``, and at least one entry (a larger one goes alone)."""
    total = 0
    for i, e in enumerate(entries):
        total += _entry_bytes(e)
        if total > budget:
            return max(i, 1)
    return len(entries)


class _Call(msgspec.Struct):
    """An AppendEntries handed to the network by ``ReplicationCore._start_now``: the
    awaitable of its answer, or the error the network raised at once; sent at ``sent_at``,
    carrying ``nbytes`` payload bytes (counted in the channel's ``_inflight_bytes``), the
    channel's ``seq``-th request handed over, with deadline ``ttl`` (seconds)."""

    answer: Awaitable[AppendEntriesResponse] | None
    error: Exception | None
    sent_at: float
    nbytes: int
    seq: int
    ttl: float


def _abandon(call: _Call) -> None:
    """Drop a started request nobody will await: a future is cancelled (so no unretrieved
    exception is logged); any other awaitable with a ``close()`` method is closed (a
    coroutine, which has not run; the ``Router``'s answer)."""
    answer = call.answer
    if isinstance(answer, asyncio.Future):
        answer.cancel()
        return
    close = getattr(answer, "close", None)
    if callable(close):
        close()


class WrongResponse(TypeError):
    """What a ``RaftNetwork`` call returned is not the response type of its RPC (a bug of
    the network): the call counts as failed, as if the network had raised this."""


class NoAnswer(Exception):
    """A ``RaftNetwork.append_entries`` call that did not return within twice its
    ``hard_ttl`` (a bug of the network, which must raise ``Timeout`` after one): given up,
    the request counts as lost."""


class StrayCancel(Exception):
    """A ``RaftNetwork`` call raised ``CancelledError`` while its task was not being
    cancelled (the network cancelled a future of its own, e.g. on a lost connection): the
    call counts as failed. Let through, it ended the task without a result, and the request
    stayed in flight for good: that target was sent nothing more."""


def _stray_cancel(rpc: str, e: asyncio.CancelledError) -> StrayCancel | None:
    """Called in an ``except CancelledError``: the error to report instead when the task is
    not being cancelled, ``None`` when it is (shutdown, stop: ``e`` must go on); see
    ``tasks.stray_cancel``."""
    cause = stray_cancel(f"the network's {rpc}", e)
    if cause is None:
        return None
    err = StrayCancel(str(cause))
    err.__cause__ = e
    return err


def _answered(result: ReplicationResult | Progress) -> bool:
    """Whether ``result`` came with an answer of the target (a failure, or a snapshot not
    sent because none covers the purged log, did not)."""
    if isinstance(result, (Unreachable, EntriesPurged)):
        return False
    return not (isinstance(result, SnapshotSent) and result.matching is None)


def _not_a_response(got: object, expected: type) -> Exception:
    """The error for a network call that returned ``got`` instead of an ``expected``: an
    exception ``got`` is itself (a ``submit_append_entries`` reply may be one); anything
    else a ``WrongResponse`` naming both."""
    if isinstance(got, Exception):
        return got
    return WrongResponse(f"the network returned {type(got).__name__} {got!r:.80} instead of {expected.__name__}")


def _submit_of(client: Any, node_id: NodeId, target: NodeId) -> Callable[..., Any] | None:
    """``client``'s optional ``submit_append_entries`` (see ``RaftNetwork``), or ``None``:
    also when it is a coroutine function, logged at WARNING. An ``async def`` one cannot hand
    the request over before it returns, and returns a coroutine instead of a handle or
    ``None``: nothing would run it, so the request would never be sent nor its answer come
    (a stopped channel's ``cancel()`` on it stopped the node). The channel then uses
    ``append_entries`` (and ``send_append_entries``)."""
    submit = getattr(client, "submit_append_entries", None)
    if submit is not None and inspect.iscoroutinefunction(submit):
        log.warning(
            "replication %s->%s: the network client's submit_append_entries is a coroutine function (async def); "
            "it must be a plain method that hands the request over and returns a handle or None: not used",
            node_id, target,
        )
        return None
    return submit


def _heartbeat_of(client: Any) -> Callable[[AppendEntriesRequest, RPCOption], Awaitable[AppendEntriesResponse]] | None:
    """``client``'s optional ``heartbeat`` (see ``RaftNetwork``), or ``None``."""
    call = getattr(client, "heartbeat", None)
    return call if callable(call) else None


class EntrySource(Protocol):
    """Where a channel reads entries (``core.log_source.LogSource``)."""

    def cached(self, start: int, stop: int) -> list[Entry]:
        """The cached prefix of ``[start, stop)``, without awaiting."""
        ...

    async def read(self, start: int, stop: int) -> list[Entry]:
        """Exactly ``[start, stop)``; a purged range raises ``StorageError`` caused by
        ``LogCompacted``."""
        ...


def _no_snapshot_known() -> LogId | None:
    """``ReplicationEnv.snapshot_last`` when none is given: no newer snapshot is ever known."""
    return None


class ReplicationEnv:
    """What every replication channel of one node may use (made once by ``RaftCore``).

    - ``entries``: the log's entries; ``snapshot()``: the state machine's current snapshot.
    - ``snapshot_last()``: the last log id the node's newest snapshot covers, as the engine
      knows it (no call to the state machine: cheap); ``None`` when there is none (or, with
      no such accessor given, always: a transfer then keeps the snapshot it opened).
    - ``spawn(coro, name)``: run a task of the node (a failure stops the node).
    - ``notify(note)``: queue a notification for the core.
    - ``clock``: sleeps and the send time of requests (``now_ms``).
    - ``calling_out``: where a channel's task is recorded while it reads entries, which may
      call the log store's reader, which may call the node back (``RaftCore.calling_out``).
    """

    __slots__ = (
        "node_id",
        "config",
        "clock",
        "entries",
        "snapshot",
        "snapshot_last",
        "spawn",
        "notify",
        "calling_out",
        "option",
        "base_ttl",
        "min_rate",
        "free_bytes",
        "_sized_key",
        "_sized",
        "_read_clock",
    )

    def __init__(
        self,
        node_id: NodeId,
        config: Config,
        clock: Clock,
        entries: EntrySource,
        snapshot: Callable[[], Awaitable[Snapshot | None]],
        spawn: Callable[[Coroutine[Any, Any, None], str], Any],
        notify: Callable[[Any], None],
        snapshot_last: Callable[[], LogId | None] | None = None,
        calling_out: CallingOut | None = None,
    ) -> None:
        self.node_id = node_id
        self.calling_out: CallingOut = {} if calling_out is None else calling_out
        self.config = config
        self.clock = clock
        self.entries = entries
        self.snapshot = snapshot
        self.snapshot_last: Callable[[], LogId | None] = snapshot_last or _no_snapshot_known
        self.spawn = spawn
        self.notify = notify
        ttl = max(config.heartbeat_interval * 4, config.election_timeout_min) / 1000.0
        # The base deadline (seconds) of one AppendEntries, and its option: that of a
        # request with no payload bytes and none ahead of it (heartbeats).
        # ``ReplicationCore._option`` adds the bytes' time at ``min_rate`` (bytes/s).
        self.base_ttl = ttl
        self.min_rate = float(config.replication_min_rate)
        self.option = RPCOption(hard_ttl=ttl, soft_ttl=ttl / 2)
        # Bytes in flight whose time at ``min_rate`` is at most 1% of the base deadline
        # (2,097 at the defaults): a request with no more keeps the base deadline, the shared
        # option (``ReplicationCore._option``), shorter than its exact one by at most that
        # 1%. A leader's small writes made an ``RPCOption`` per request otherwise.
        self.free_bytes = int(self.min_rate * ttl / 100)
        # The last batch ``batch_bytes`` sized: (first, last log id) and its payload bytes.
        self._sized_key: tuple[LogId, LogId] | None = None
        self._sized = 0
        # ``seconds_reader(clock)``, made at the first ``now_ms`` (on the running loop).
        self._read_clock: Callable[[], float] | None = None

    def batch_bytes(self, entries: list[Entry]) -> int:
        """``payload_bytes(entries)`` of a non-empty batch, remembered for the last one: every
        target of a leader is usually sent the same batch in a row. Two batches with the
        same first and last log id hold the same entries (a log id names one entry, and a log
        that keeps an entry keeps every entry before it), so the key is exact. One entry (a
        1-writer leader's every request) is sized directly, with no key to build."""
        if len(entries) == 1:
            return _entry_bytes(entries[0])
        key = (entries[0].log_id, entries[-1].log_id)
        if key != self._sized_key:
            self._sized = payload_bytes(entries)
            self._sized_key = key
        return self._sized

    def now_ms(self) -> float:
        """The runtime clock in milliseconds (the engine's ``now``)."""
        read = self._read_clock
        if read is None:
            read = self._read_clock = seconds_reader(self.clock)
        return read() * 1000.0


class ReplicationCore:
    """The channel of leader ``vote`` to ``target``: carries out the engine's ``Replicate``
    and ``SendSnapshot`` for that target and reports their results.

    Invariants: once ``stopped``, no task or callback of this channel reads the log or
    reports anything. ``_issued <= _planned``; the ``Replicate``s of turns ``< _issued`` have
    handed every request to the network, and only the task of turn ``_issued`` (or the
    core's pass: ``_submit_now`` for a request in turn, ``_start_now`` for the idle sender)
    may hand one over.
    ``_next`` is set only while the sender task is started and waits in ``_wakeup`` with
    nothing to do (``_idle``); the sender clears it when it takes it.
    """

    __slots__ = (
        "target",
        "vote",
        "client",
        "env",
        "stopped",
        "_planned",
        "_issued",
        "_turn",
        "_idle",
        "_next",
        "_wakeup",
        "_started",
        "_send_now",
        "_submit",
        "_heartbeat_call",
        "_submitted",
        "_replied_twice",
        "_next_call",
        "_inflight_bytes",
        "_handed",
        "_given_up",
        "_refused_snapshot",
        "_not_taken",
        "_matched",
        "_matched_at",
        "_breaches",
        "_beat_breaches",
        "_down",
        "_installing",
    )

    def __init__(self, target: NodeId, vote: Vote, client: RaftNetwork, env: ReplicationEnv) -> None:
        self.target = target
        self.vote = vote
        self.client = client
        self.env = env
        self.stopped = False
        self._planned = 0  # turns given out: one per Replicate, in the order the core ran them
        self._issued = 0  # the turn whose task may hand its requests to the network now
        self._turn = Wakeup()  # woken when _issued moves
        # The id of the last snapshot the target refused (its refusal was logged at WARNING:
        # once per snapshot, not at every resend).
        self._refused_snapshot: str | None = None
        # The last refusal of a chunk logged at INFO (snapshot id and error): one that the
        # target gives again at each resend (its state machine busy for a while: every
        # heartbeat interval) is said at DEBUG.
        self._not_taken: tuple[str, str] | None = None
        # The greatest index the target acknowledged matching (as the engine's
        # ``ProgressEntry.matched``), and when this channel learned it (the clock of
        # ``sent_at``, read as the acknowledgement was reported: no earlier than its
        # arrival). A ``prev_log_id`` at or below it refused in answer to a request sent
        # after that proves the target lost entries; an earlier request's refusal may only
        # be older than the acknowledgement (requests and answers can be reordered).
        self._matched = -1
        self._matched_at = math.inf
        # The contract breaches of the network toward the target (``_warn_broken``).
        self._breaches = breach_log(f"replication {env.node_id}->{target}")
        # The contract breaches of the network's ``heartbeat`` (its own calls: a heartbeat
        # lane that breaks while the window works, or the other way round, is said apart).
        self._beat_breaches = breach_log(f"replication {env.node_id}->{target}, heartbeats")
        # The target's failed requests (``RPCError``s): logged at WARNING once they have
        # gone on for an election timeout, then every ``REPEAT_EVERY`` seconds, and at INFO
        # once it answers again. They were logged at DEBUG only: a peer down for an hour, or
        # one refusing this node's connections, left nothing in the leader's log.
        self._down = FailureLog(log, f"node {env.node_id}: replication to node {target}",
                                after=env.config.election_timeout_max / 1000.0)
        # The last chunk of a snapshot unanswered in time: the target is installing it (or
        # is cut off): see ``INSTALL_WAIT_WARN_AFTER``.
        self._installing = FailureLog(log, f"node {env.node_id}: replication to node {target}",
                                      after=INSTALL_WAIT_WARN_AFTER)
        # The sender task (started by the first ``replicate``) waits for work.
        self._idle = False
        # The request (its turn, and its call if already started) handed to the idle
        # sender, not taken yet.
        self._next: tuple[Replicate, int, _Call | None] | None = None
        self._wakeup = Wakeup()
        self._started = False
        # The network's optional ``send_append_entries`` (see ``RaftNetwork``): with it, a
        # request for the idle sender is handed to the network from the core's pass.
        self._send_now: Callable[[AppendEntriesRequest, RPCOption], Awaitable[AppendEntriesResponse]] | None = (
            getattr(client, "send_append_entries", None)
        )
        # The network's optional ``submit_append_entries`` (see ``RaftNetwork``): with it,
        # such a request is handed over from the core's pass with a callback that reports
        # its answer, and no task awaits it.
        self._submit: Callable[..., Any] | None = _submit_of(client, env.node_id, target)
        # The network's optional ``heartbeat`` (see ``RaftNetwork``): the heartbeats beside
        # the window go through it, not behind the window's requests.
        self._heartbeat_call = _heartbeat_of(client)
        # The requests handed over by ``_submit_now`` and not answered yet, by a number of
        # this channel: their handles (``None`` while the call that hands one over runs).
        # ``stop()`` cancels them.
        self._submitted: dict[int, Any] = {}
        # Whether the network called a ``submit_append_entries`` reply more than once (a
        # breach of its contract, ignored in ``_answered``): warned of once, then at DEBUG.
        self._replied_twice = False
        self._next_call = 0
        # The payload bytes of this channel's AppendEntries (and snapshot chunks) handed to
        # the network and not settled yet (answered, failed, or given up and not released). Invariant: the sum
        # of ``nbytes`` of every ``_option(nbytes)`` not yet matched by ``_settled(nbytes)``
        # (or ``_answer_came``, ``_failed``), plus the bytes of ``_given_up``; never below 0.
        # A request's deadline counts them as ahead of it (``_option``).
        self._inflight_bytes = 0
        # How many requests this channel has handed over (the window's AppendEntries and
        # snapshot chunks): the number of the last one (its ``seq``; heartbeats are not
        # numbered: on TCP they go on a connection of their own).
        self._handed = 0
        # The requests given up for want of an answer in time (``Timeout``, ``NoAnswer``, a
        # snapshot chunk's ``TimeoutError``),
        # whose bytes may still be on their way to the target, ahead of anything sent
        # after them: ``(seq, nbytes, release_at)``, ``release_at`` on ``env.clock``
        # (seconds). Their bytes stay in ``_inflight_bytes`` until released (``_failed``).
        self._given_up: list[tuple[int, int, float]] = []

    def set_client(self, client: RaftNetwork) -> None:
        """Send through ``client`` from now on (the target has a new address). Requests in
        flight on the old client finish there: answered, or failed and then resent (the TCP
        factory closes the old connection, so they fail at once)."""
        self.client = client
        self._release_given_up(self._handed + 1)  # a new connection: nothing is ahead there
        self._send_now = getattr(client, "send_append_entries", None)
        self._submit = _submit_of(client, self.env.node_id, self.target)
        self._heartbeat_call = _heartbeat_of(client)

    def replicate(self, c: Replicate) -> None:
        """Send the AppendEntries ``c`` describes (as several requests if its entries exceed
        ``Config.max_payload_bytes``), after those planned before it: here, with the
        network's ``submit_append_entries`` when it can take it now (``_submit_now``); else
        by the sender task if it is idle, else (a pipelined request) in a task of its own."""
        turn = self._planned
        self._planned = turn + 1
        if self._submit is not None and self._submit_now(c, turn):
            return
        if self._idle:
            self._idle = False
            self._next = (c, turn, self._start_now(c, turn))
            self._wakeup.wake()
        elif not self._started:
            self._started = True
            self.env.spawn(self._sender(c, turn), f"append-{self.target}")
        else:
            self.env.spawn(self._send(c, turn), f"append-{self.target}")

    def heartbeat(self, c: Heartbeat) -> None:
        """Send the AppendEntries without entries ``c`` describes now, beside the window, not
        in turn (it carries no entries and its ``prev_log_id`` is one the target
        acknowledged, so it cannot be refused for overtaking a request). With the network's
        optional ``heartbeat`` (``RaftNetwork``: for TCP, a connection of its own, where it
        waits behind none of the window's requests), through it, in a task of its own;
        otherwise handed to the network's ``submit_append_entries`` when it can take it now,
        its answer reported from the callback (for TCP, the connection's read callback:
        queued for the core before a tick that comes in the same loop pass, as the window's
        answers are), else in a task of its own. Every call is bounded as every call of the
        channel (``_call_append_entries``). ``_heartbeat_result`` says what the answer
        reports."""
        if self.stopped:
            return
        req = AppendEntriesRequest(self.vote, c.prev, [], c.committed)
        env = self.env
        if self._heartbeat_call is not None:
            env.spawn(self._send_heartbeat(req), f"heartbeat-{self.target}")
            return
        submit = self._submit
        if submit is not None:
            key = self._next_call
            self._next_call = key + 1
            submitted = self._submitted
            submitted[key] = None  # (the answer may come before the call returns)
            try:
                handle = submit(req, env.option, partial(self._heartbeat_answered, key, env.now_ms()))
            except Exception as e:  # noqa: BLE001 - a failed heartbeat: nothing more (see _heartbeat_result)
                submitted.pop(key, None)
                log.debug("replication %s->%s: heartbeat failed: %r", env.node_id, self.target, e)
                return
            if handle is not None:
                if key in submitted:
                    submitted[key] = handle
                return
            submitted.pop(key, None)  # not connected: the task connects first
        env.spawn(self._send_heartbeat(req), f"heartbeat-{self.target}")

    def _reply_again(self, key: int, result: object) -> None:
        """Log a reply the network called for request ``key`` after its first (ignored):
        at WARNING the first time on this channel, then at DEBUG."""
        level = logging.DEBUG if self._replied_twice else logging.WARNING
        self._replied_twice = True
        log.log(
            level,
            "replication %s->%s: the network called the reply of request %d more than once (now with %s); "
            "submit_append_entries must call it exactly once: ignored",
            self.env.node_id, self.target, key, shown(result),
        )

    def _heartbeat_answered(self, key: int, sent_at: float, result: AppendEntriesResponse | Exception) -> None:
        """The answer to heartbeat ``key`` handed over by ``heartbeat``, sent at
        ``sent_at``."""
        self._submitted.pop(key, None)
        self._heartbeat_result(sent_at, result)

    async def _send_heartbeat(self, req: AppendEntriesRequest) -> None:
        """Send the heartbeat ``req`` through the network's ``heartbeat`` if it has one,
        else ``append_entries``, and report its answer."""
        if self.stopped:
            return
        sent_at = self.env.now_ms()
        try:
            resp: AppendEntriesResponse | Exception = await self._call_append_entries(req, self._heartbeat_call)
        except Exception as e:  # noqa: BLE001 - any failure: see _heartbeat_result
            resp = e
        self._heartbeat_result(sent_at, resp)

    def _heartbeat_result(self, sent_at: float, result: object) -> None:
        """Report the answer ``result`` to a heartbeat sent at ``sent_at``: a success as a
        ``Progress`` ack of its send time, with its matching (the part of ``prev_log_id``
        durable on the target: never more than the leader knows it holds), a greater vote
        as a ``Rejected`` of generation ``OUTSIDE_WINDOW`` (no slot is freed), any other
        refusal as a ``Progress`` ack without a matching (the target follows this leader;
        what it lost is the window's requests' to find). A failure is not reported: an
        ``RPCError`` is logged at DEBUG, a contract breach of the network (not a response,
        another exception) through ``_beat_breaches`` (WARNING, as the window's, and INFO
        once a heartbeat is answered again); the window's own requests report
        the target's state, and the next round sends another heartbeat. Nothing once the
        channel stopped."""
        if self.stopped:
            return
        target = self.target
        breaches = self._beat_breaches
        if not isinstance(result, AppendEntriesResponse):
            err = result if isinstance(result, Exception) else _not_a_response(result, AppendEntriesResponse)
            if isinstance(err, RPCError):
                log.debug("replication %s->%s: heartbeat failed: %r", self.env.node_id, target, err)
            elif isinstance(err, (WrongResponse, NoAnswer, StrayCancel)):
                breaches.failed(self.env.clock.now(), type(err).__name__, str(err))
            else:
                breaches.failed(self.env.clock.now(), type(err).__name__,
                                f"the network's heartbeat raised {err!r} (expected an RPCError)")
            return
        if breaches.failing:
            breaches.cleared(self.env.clock.now(), "the network answers heartbeats again")
        vote = self.vote
        if result.success:
            note: Progress | Rejected = Progress(target, vote, result.matching, sent_at, result.matching is not None)
            matching = result.matching
            if matching is not None and matching.index > self._matched:
                self._matched = matching.index
                self._matched_at = self.env.now_ms()
        elif result.vote != vote and not vote.is_ge(result.vote):
            note = Rejected(target, vote, OUTSIDE_WINDOW, result.vote)
        else:
            note = Progress(target, vote, None, sent_at, False)
        # Not ``_report``: a heartbeat's answer ends none of the window's failure streaks
        # (``_down``, ``_breaches``). A target that answers every heartbeat while every
        # request carrying entries fails (an entry that outlasts the replication deadline at
        # each resend) gets none of its entries: it is said at WARNING as a target that is
        # down. Each heartbeat's answer ended the streak unlogged, a heartbeat interval
        # being shorter than the election timeout a streak must last.
        self.env.notify(note)

    def send_snapshot(self, c: SendSnapshot) -> None:
        """Transfer the current snapshot, in a task of its own."""
        self.env.spawn(self._send_snapshot(c), f"snapshot-{self.target}")

    def stop(self) -> None:
        """Stop: requests in flight end without reading the log again or reporting (those
        handed over with a callback are withdrawn), and the sender task ends. A request
        started for the idle sender that it has not taken yet is dropped here
        (``_abandon``): the node's teardown cancels the sender right after this call, before
        it runs again, and the request's coroutine was left never awaited, its future's
        error never retrieved (both logged by asyncio)."""
        self.stopped = True
        self._wakeup.wake()
        nxt = self._next
        if nxt is not None and nxt[2] is not None:
            self._next = None
            _abandon(nxt[2])
        submitted, self._submitted = self._submitted, {}
        for handle in submitted.values():
            if handle is not None:
                try:
                    handle.cancel()
                except Exception as e:  # noqa: BLE001 - the network's handle: its failure must not stop the node
                    log.warning(
                        "replication %s->%s: cancel() of a handle submit_append_entries returned (%s) raised %r",
                        self.env.node_id, self.target, type(handle).__name__, e,
                    )

    def _request_now(self, c: Replicate, turn: int) -> tuple[AppendEntriesRequest, int] | None:
        """The one request of ``c`` and its payload bytes if it can be handed over from the
        core's pass: ``c``'s turn has come, the channel runs, its entries are cached and fit
        one request; otherwise ``None`` (the sender does it)."""
        if self._issued != turn or self.stopped:
            return None
        env = self.env
        n = c.end - c.start
        if not n:
            return AppendEntriesRequest(self.vote, c.prev, [], c.committed), 0
        entries = env.entries.cached(c.start, c.end)
        if len(entries) < n:
            return None
        if n == 1:
            # (``batch_bytes`` sizes one entry so, without its call: a 1-writer leader's every
            # request; and ``_entry_bytes`` of a ``Normal`` without its call.)
            p = entries[0].payload
            nbytes = len(p.data) if type(p) is Normal else _entry_bytes(entries[0])
            return AppendEntriesRequest(self.vote, c.prev, entries, c.committed), nbytes
        nbytes = env.batch_bytes(entries)
        if nbytes > env.config.max_payload_bytes:
            return None
        return AppendEntriesRequest(self.vote, c.prev, entries, c.committed), nbytes

    def _submit_now(self, c: Replicate, turn: int) -> bool:
        """From the core's pass: hand the request of ``c`` to the network's
        ``submit_append_entries`` with a callback that reports the answer (``_answered``),
        when nothing has to come first (``c``'s turn has come, its entries are cached and fit
        one request, as in ``_start_now``). The sender task is not involved: it stays idle,
        and the answer is reported from where the network learns it (for the TCP client,
        the connection's read callback), one task step earlier than an awaited answer.
        ``False``: nothing was done (the request must wait, or the network cannot take it
        now, e.g. it is not connected): the caller goes on as without the method."""
        now = self._request_now(c, turn)
        if now is None:
            return False
        req, nbytes = now
        env = self.env
        key = self._next_call
        self._next_call = key + 1
        submitted = self._submitted
        submitted[key] = None  # (the answer may come before the call returns)
        total = self._inflight_bytes + nbytes
        if total <= env.free_bytes:
            # ``_option(nbytes)`` where it gives the shared option, without its call.
            self._inflight_bytes = total
            self._handed = seq = self._handed + 1
            option = env.option
        else:
            option = self._option(nbytes)
            seq = self._handed
        # ``env.now_ms()``, without its call once its clock reader is made.
        read = env._read_clock
        sent_at = env.now_ms() if read is None else read() * 1000.0
        try:
            handle = self._submit(req, option, partial(self._answered, key, c.gen, c.start, sent_at, nbytes, seq, option))  # type: ignore[misc]  # not None: checked by replicate
        except Exception as e:  # noqa: BLE001 - as in _send: the target is unreachable
            submitted.pop(key, None)
            self._settled(nbytes)
            self._pass_turn(turn)
            self._unreachable(e, c.gen, c.start)
            return True
        if handle is None:
            submitted.pop(key, None)
            self._settled(nbytes)
            return False
        if key in submitted:
            submitted[key] = handle
        if self._issued == turn:  # ``_pass_turn(turn)``, without its call
            self._issued = turn + 1
            if self._turn.first is not None:  # (a later turn waits)
                self._turn.wake()
        return True

    def _answered(
        self, key: int, gen: int, start: int, sent_at: float, nbytes: int, seq: int, option: RPCOption,
        result: AppendEntriesResponse | Exception,
    ) -> None:
        """The answer to request ``key`` handed over by ``_submit_now`` (generation ``gen``,
        entries from ``start``, sent at ``sent_at``, ``nbytes`` payload bytes, the channel's
        ``seq``-th request, with ``option``): reported as ``_send`` reports it. A reply
        the network calls again for the same request (its contract: exactly once) is
        ignored: its bytes were taken off the count already, and taking them off twice made
        the count negative and every later deadline too short."""
        if self._submitted.pop(key, _GONE) is _GONE:
            if not self.stopped:  # (``stop`` forgets every request handed over)
                self._reply_again(key, result)
            return
        if isinstance(result, AppendEntriesResponse):
            self._inflight_bytes -= nbytes  # ``_answer_came(nbytes, seq)``
            if self._given_up:
                self._release_given_up(seq)
        else:
            self._failed(nbytes, seq, option.hard_ttl - self.env.base_ttl, result)
        if self.stopped:
            return
        if isinstance(result, AppendEntriesResponse):
            if result.success:
                matched = Matched(self.target, self.vote, gen, result.matching, sent_at)
                if self._down.failing or self._breaches.failing or self._installing.failing:
                    self._report(matched)  # (it clears them)
                    return
                # ``_report(matched)`` while nothing is failing, without its call (and
                # ``env.now_ms()``'s once its clock reader is made): a leader's every answer.
                matching = matched.matching
                if matching is not None and matching.index > self._matched:
                    self._matched = matching.index
                    env = self.env
                    read = env._read_clock
                    self._matched_at = env.now_ms() if read is None else read() * 1000.0
                self.env.notify(matched)
            else:
                self._report_refusal(result, gen, sent_at, start)
        else:
            self._unreachable(_not_a_response(result, AppendEntriesResponse), gen, start)

    def _start_now(self, c: Replicate, turn: int) -> _Call | None:
        """From the core's pass, for the idle sender: hand the request of ``c`` to the
        network now (``send_append_entries``), when the network can take it without the
        sender's task and nothing has to come first: ``c``'s turn has come, its entries are
        cached and fit one request. The sender then only awaits the answer: the request
        leaves at the end of this loop pass instead of after the sender's next step (on a
        loaded loop, other callbacks can run in between: an answer from another target, a
        flush callback). ``None``: the sender does it all."""
        send = self._send_now
        if send is None:
            return None
        now = self._request_now(c, turn)
        if now is None:
            return None
        req, nbytes = now
        env = self.env
        self._issued = turn + 1
        if self._turn.first is not None:  # (a later turn waits)
            self._turn.wake()
        sent_at = env.clock.now() * 1000.0  # ``env.now_ms()``
        option = self._option(nbytes)
        seq = self._handed
        try:
            return _Call(send(req, option), None, sent_at, nbytes, seq, option.hard_ttl)
        except Exception as e:  # noqa: BLE001 - reported by the sender, as a failed call
            return _Call(None, e, sent_at, nbytes, seq, option.hard_ttl)

    async def _sender(self, first: Replicate, turn: int) -> None:
        """The long-lived sender: send ``first`` (planned as ``turn``), then each request
        ``replicate`` hands over while this task is idle, until the channel stops."""
        await self._send(first, turn)
        while not self.stopped:
            nxt = self._next
            if nxt is None:
                self._idle = True
                await self._wakeup.wait()
                continue
            self._next = None
            c, turn, call = nxt
            if call is None:
                await self._send(c, turn)
            else:
                await self._finish(c, call)
        self._idle = False
        nxt = self._next
        if nxt is not None and nxt[2] is not None:
            # Stopped before taking a started request: its answer is not wanted.
            self._next = None
            _abandon(nxt[2])

    def _report(self, result: ReplicationResult | Progress) -> None:
        if not self.stopped:
            if isinstance(result, (Matched, SnapshotSent, Progress)):
                matching = result.matching
                if matching is not None and matching.index > self._matched:
                    self._matched = matching.index
                    self._matched_at = self.env.now_ms()
            if (self._down.failing or self._breaches.failing or self._installing.failing) and _answered(result):
                now = self.env.clock.now()
                self._down.cleared(now)
                self._breaches.cleared(now, "the network answers again")
                self._installing.cleared(now, "the snapshot is installed")
            self.env.notify(result)

    def _pass_turn(self, turn: int) -> None:
        """Turn ``turn`` handed over its last request (or ended): the next one may send."""
        if self._issued == turn:
            self._issued = turn + 1
            if self._turn.first is not None:  # (a later turn waits)
                self._turn.wake()

    def _option(self, nbytes: int) -> RPCOption:
        """The ``RPCOption`` of an AppendEntries carrying ``nbytes`` payload bytes that is
        handed to the network now, and counts them in flight until they are settled
        (``_answer_came``, ``_failed``, ``_settled``); the request is the channel's
        ``_handed``-th (read it after the call).

        Its deadline is ``env.base_ttl`` plus the time its bytes and those of the requests
        ahead of it (``_inflight_bytes``: on one connection, the target reads them first;
        those of requests given up and not released included) take at
        ``Config.replication_min_rate``: a slow link that still carries that rate completes
        the window, however many bytes it holds, while a request with nothing ahead and no
        payload keeps the base deadline (the shared ``env.option``), and so does one with no
        more than ``env.free_bytes`` in flight (within 1% of it)."""
        env = self.env
        self._handed += 1
        if self._given_up:
            self._expire_given_up()
        total = self._inflight_bytes + nbytes
        self._inflight_bytes = total
        if total <= env.free_bytes:
            return env.option
        ttl = env.base_ttl + total / env.min_rate
        return RPCOption(hard_ttl=ttl, soft_ttl=ttl / 2)

    def _settled(self, nbytes: int) -> None:
        """A request of ``nbytes`` payload bytes counted by ``_option`` is no longer in
        flight, and says nothing of those before it (never handed over, cancelled, a contract
        breach of the network)."""
        self._inflight_bytes -= nbytes

    def _answer_came(self, nbytes: int, seq: int) -> None:
        """The target answered the channel's ``seq``-th request (``nbytes`` payload bytes): it
        is settled, and so are the requests given up before it. The target reads one
        connection in order, so their bytes, ahead of this request's, have left the link."""
        self._inflight_bytes -= nbytes
        if self._given_up:
            self._release_given_up(seq)

    def _failed(self, nbytes: int, seq: int, keep: float, e: BaseException) -> None:
        """The channel's ``seq``-th request (``nbytes`` payload bytes) failed with ``e``;
        ``keep``: the seconds its bytes and those ahead of it take at the rate (its deadline
        less the base one).

        Given up for want of an answer in time (``Timeout``, ``NoAnswer``, the
        ``TimeoutError`` of a snapshot chunk), its bytes may still be in the link, ahead of
        the resend that follows: they stay counted in flight (``_given_up``) until an answer
        to a later request shows they left (``_answer_came``), the connection is gone
        (``errors.Unreachable``, ``set_client``), or ``keep`` more seconds have passed
        (``_expire_given_up``). Released
        at once, the resend got the deadline of a request with nothing ahead: on a link that
        had fallen behind (a stall, or a rate a little below ``replication_min_rate``) it
        timed out behind those bytes too, and so did the next, each carrying the same
        entries again, and the target might never catch up. The time bound keeps a target
        that answers nothing (frozen, cut off without a reset) from lengthening every
        deadline without end: a dead target is still found within a few deadlines.

        An answer of the target that is an error (``RemoteError``) is an answer; any other
        failure settles the request alone, and an ``errors.Unreachable`` (a connection lost
        or refused) releases the bytes given up too, unless it says the connection is kept
        (``connection_kept``: the request was not sent, but the connection still holds what
        was sent before, as the TCP client's "not taking" says; those bytes are still on
        their way)."""
        if isinstance(e, RemoteError):
            self._answer_came(nbytes, seq)
            return
        if nbytes and isinstance(e, (Timeout, NoAnswer, TimeoutError)):
            self._expire_given_up()
            self._given_up.append((seq, nbytes, self.env.clock.now() + max(0.0, keep)))
            return
        self._inflight_bytes -= nbytes
        if self._given_up and isinstance(e, UnreachableError) and not e.connection_kept:
            self._release_given_up(self._handed + 1)

    def _release_given_up(self, before: int = 0, expired_at: float = -math.inf) -> None:
        """Stop counting the bytes of the requests given up before the ``before``-th, and of
        those whose time bound (see ``_failed``) is ``expired_at`` or earlier."""
        kept = []
        for item in self._given_up:
            if item[0] < before or item[2] <= expired_at:
                self._inflight_bytes -= item[1]
            else:
                kept.append(item)
        self._given_up = kept

    def _expire_given_up(self) -> None:
        """Stop counting the bytes of the requests given up whose time bound passed."""
        self._release_given_up(expired_at=self.env.clock.now())

    async def _send(self, c: Replicate, turn: int) -> None:
        try:
            while self._issued != turn:
                await self._turn.wait()
            if self.stopped:
                return
            env = self.env
            target = self.target
            n = c.end - c.start
            entries = env.entries.cached(c.start, c.end) if n else []
            if len(entries) < n:
                try:
                    entries = await self._read_budget(c.start, c.end, env.config.max_payload_bytes, c.start)
                except StorageError as e:
                    if self.stopped:
                        return
                    if isinstance(e.__cause__, LogCompacted):
                        # Purged after this request was planned: the target needs a snapshot.
                        self._report(EntriesPurged(target, self.vote, c.gen, c.start))
                        return
                    raise
                if self.stopped:
                    return
            prev = c.prev
            start = c.start
            if len(entries) < n or (n > 1 and env.batch_bytes(entries) > env.config.max_payload_bytes):
                rest = await self._send_parts(c, entries)
                if rest is None:
                    return
                prev, start, entries = rest
            req = AppendEntriesRequest(self.vote, prev, entries, c.committed)
            nbytes = env.batch_bytes(entries) if entries else 0
            # Our turn ends: the call below hands the request over before it suspends.
            self._issued = turn + 1
            self._turn.wake()
            sent_at = env.now_ms()
            option = self._option(nbytes)
            seq = self._handed
            try:
                resp = await self._call_append_entries(req, option=option)
            except Exception as e:  # noqa: BLE001 - RPCError by contract; anything else is treated alike
                self._failed(nbytes, seq, option.hard_ttl - self.env.base_ttl, e)
                self._unreachable(e, c.gen, start)
                return
            except BaseException:
                self._settled(nbytes)
                raise
            if not isinstance(resp, AppendEntriesResponse):
                self._settled(nbytes)
                self._unreachable(_not_a_response(resp, AppendEntriesResponse), c.gen, start)
                return
            self._answer_came(nbytes, seq)
            if resp.success:
                self._report(Matched(target, self.vote, c.gen, resp.matching, sent_at))
            else:
                self._report_refusal(resp, c.gen, sent_at, start)
        finally:
            if self._issued == turn:  # an early exit (or an error) before the last request
                self._pass_turn(turn)

    async def _finish(self, c: Replicate, call: _Call) -> None:
        """Await the answer of ``c``'s request started by ``_start_now`` and report it,
        as ``_send`` does."""
        err = call.error
        if err is None:
            assert call.answer is not None  # a _Call holds one of the two
            try:
                resp = await call.answer
            except Exception as e:  # noqa: BLE001 - as in _send
                err = e
            except asyncio.CancelledError as e:
                err = _stray_cancel("send_append_entries", e)
                if err is None:
                    self._settled(call.nbytes)
                    raise
            else:
                if not isinstance(resp, AppendEntriesResponse):
                    err = _not_a_response(resp, AppendEntriesResponse)
        if err is not None:
            self._failed(call.nbytes, call.seq, call.ttl - self.env.base_ttl, err)
            self._unreachable(err, c.gen, c.start)
            return
        self._answer_came(call.nbytes, call.seq)
        if resp.success:
            self._report(Matched(self.target, self.vote, c.gen, resp.matching, call.sent_at))
        else:
            self._report_refusal(resp, c.gen, call.sent_at, c.start)

    async def _read_budget(self, start: int, end: int, budget: int, unsent: int) -> list[Entry]:
        """Entries ``[start, k)`` for some ``start < k <= end``, read from the entry source
        (cache, then storage) ``READ_FIRST_ENTRIES`` at first, then as many as the rest of
        ``budget`` holds at the average payload size read so far, until their payload bytes
        reach ``budget`` or ``end``, or the channel stopped (fewer then: the caller, which
        checks ``stopped`` after, uses none of them). Raises as ``EntrySource.read``.
        ``unsent``: the first index not handed to the target yet (the entries held before
        ``start`` included): those from there on wait for this read (``calling_out``).

        No read starts once the channel stopped (the class's invariant): its leader stepped
        down, and a log truncated since (the new leader's entries replacing its own) would
        make the next read short, which the entry source raises as ``Panicked``."""
        out: list[Entry] = []
        size = 0
        step = READ_FIRST_ENTRIES
        i = start
        # Recorded as a plug-in call in flight (the reader's, when the cache lacks entries):
        # off the hot path, which sends what the cache holds without reading on.
        env = self.env
        task = enter(env.calling_out, READ, self.target, unsent)
        try:
            while True:
                got = await env.entries.read(i, min(end, i + step))
                out.extend(got)
                i += len(got)
                size += payload_bytes(got)
                if i >= end or size >= budget or self.stopped:
                    return out
                step = max(1, (budget - size) * len(out) // max(size, 1))
        finally:
            leave(env.calling_out, task)

    async def _send_parts(self, c: Replicate, entries: list[Entry]) -> tuple[LogId | None, int, list[Entry]] | None:
        """Send the leading parts of ``c``'s entries, one request per budget, each once the
        one before matched (reported as a ``Progress``). ``entries`` is a prefix of them (all
        of them when cached): the rest is read as the parts go (``_read_budget``). Returns
        ``(prev, start, rest)``, the last part for the caller to send, or ``None`` once a part
        failed or a read found the entries purged (reported), or the channel stopped."""
        env = self.env
        budget = env.config.max_payload_bytes
        prev = c.prev
        start = c.start
        while True:
            k = fitting_prefix(entries, budget)
            if k == len(entries) and start + k < c.end:
                # What is held fits one request and more is planned: read on.
                try:
                    more = await self._read_budget(start + k, c.end, budget - payload_bytes(entries), start)
                except StorageError as e:
                    if self.stopped:
                        return None
                    if isinstance(e.__cause__, LogCompacted):
                        # Purged since the read before (a purge removes a prefix of the
                        # log: ``entries`` are gone from storage too): a snapshot then.
                        self._report(EntriesPurged(self.target, self.vote, c.gen, start))
                        return None
                    raise
                if self.stopped:
                    return None
                entries = entries + more
                continue
            if k == len(entries):
                return prev, start, entries
            part = entries[:k]
            req = AppendEntriesRequest(self.vote, prev, part, c.committed)
            nbytes = payload_bytes(part)
            sent_at = env.now_ms()
            option = self._option(nbytes)
            seq = self._handed
            try:
                resp = await self._call_append_entries(req, option=option)
            except Exception as e:  # noqa: BLE001 - as in _send
                self._failed(nbytes, seq, option.hard_ttl - self.env.base_ttl, e)
                self._unreachable(e, c.gen, start)
                return None
            except BaseException:
                self._settled(nbytes)
                raise
            if not isinstance(resp, AppendEntriesResponse):
                self._settled(nbytes)
                self._unreachable(_not_a_response(resp, AppendEntriesResponse), c.gen, start)
                return None
            self._answer_came(nbytes, seq)
            if not resp.success:
                self._report_refusal(resp, c.gen, sent_at, start)
                return None
            if self.stopped:
                return None
            self._report(Progress(self.target, self.vote, resp.matching, sent_at, True))
            prev = part[-1].log_id
            start += k
            entries = entries[k:]

    async def _call_append_entries(
        self, req: AppendEntriesRequest,
        call: Callable[[AppendEntriesRequest, RPCOption], Awaitable[AppendEntriesResponse]] | None = None,
        option: RPCOption | None = None,
    ) -> AppendEntriesResponse:
        """``client.append_entries(req, option)`` (or ``call``, the network's ``heartbeat``,
        with the same contract; ``option`` by default the base one, ``env.option``), bounded:
        a call still unanswered after
        twice ``option.hard_ttl`` (the network had to raise ``Timeout`` after one) is given up
        as lost (``NoAnswer``). Without the bound, one call that never returned (a network
        with no timeout of its own) left its request in flight for good: the engine sent
        that target nothing more, and the follower never caught up. (The calls handed over
        by the optional ``send_append_entries`` / ``submit_append_entries`` are the
        network's to bound: the fast paths take no timer.)"""
        if option is None:
            option = self.env.option
        limit = 2 * option.hard_ttl
        if call is None:
            call = self.client.append_entries
        try:
            async with GiveUpAfter(limit):
                return await call(req, option)
        except TimeoutError:
            raise NoAnswer(
                f"the network did not answer AppendEntries within {limit:g}s "
                f"(twice option.hard_ttl; it must raise Timeout after hard_ttl)"
            ) from None
        except asyncio.CancelledError as e:
            stray = _stray_cancel("append_entries", e)
            if stray is None:
                raise
            raise stray from None

    def _unreachable(self, e: Exception, gen: int, start: int) -> None:
        """The request of generation ``gen`` whose entries start at ``start`` got no answer;
        the result says so with the network's message when the network said the target
        cannot be reached (``errors.Unreachable``, not a ``Timeout``): a transfer to it is
        given up at once (``Unreachable.refused``)."""
        env = self.env
        if isinstance(e, RPCError):
            log.debug("replication %s->%s failed: %s", env.node_id, self.target, e)
            self._rpc_failed(e)
        elif isinstance(e, (WrongResponse, NoAnswer, StrayCancel)):
            self._warn_broken(type(e).__name__, str(e))
        else:
            self._warn_broken(type(e).__name__, f"the network raised {e!r} (expected an RPCError)")
        refused = str(e) if isinstance(e, UnreachableError) else None
        self._report(Unreachable(self.target, self.vote, gen, start, refused))

    def _warn_broken(self, kind: str, what: str) -> None:
        """Log ``what``, a contract breach of the network of kind ``kind`` (the call failed),
        through the target's breach log (``BROKEN_NETWORK_WARN_MS``)."""
        self._breaches.failed(self.env.clock.now(), kind, what)

    def _rpc_failed(self, e: BaseException) -> None:
        """A request to the target failed with ``e`` (an ``RPCError``, or the
        ``TimeoutError`` of a snapshot chunk): see ``_down``."""
        kind = type(e).__name__
        self._down.failed(self.env.clock.now(), kind, f"{kind}: {e}" if str(e) else kind)

    def _report_refusal(self, resp: AppendEntriesResponse, gen: int, sent_at: float, start: int) -> None:
        """The target refused the request of generation ``gen`` whose entries start at
        ``start``: a greater vote (``Rejected``) or a ``prev_log_id`` it does not hold
        (``Conflict``). One at or below what it acknowledged matching, in answer to a
        request sent after that acknowledgement arrived, means its log lost entries: logged
        at WARNING, once, and reported with ``start`` (the engine starts its progress over).
        Any other refusal is reported without it (``start=-1``): the refusal of a request
        sent earlier may have been made before the entries arrived there (a request that
        overtook the one carrying them, or an answer that overtook another), which says
        nothing of a loss."""
        if resp.vote != self.vote and not self.vote.is_ge(resp.vote):
            self._report(Rejected(self.target, self.vote, gen, resp.vote))
            return
        if not (0 < start <= self._matched + 1 and sent_at > self._matched_at):
            start = -1
        else:
            log.warning(
                "node %s: node %s no longer holds entry %d, which it had acknowledged: its log lost entries "
                "(its storage was lost, or restored from an older copy); replicating to it again from index %d",
                self.env.node_id, self.target, start - 1, resp.conflict_hint,
            )
            self._matched = -1
            self._matched_at = math.inf
        self._report(Conflict(self.target, self.vote, gen, resp.conflict_hint, sent_at, start))

    async def _send_snapshot(self, c: SendSnapshot) -> None:
        # Each pass transfers the current snapshot; a pass ends early (False) when the node
        # built a newer one while the transfer had to start over (``_transfer``).
        while not self.stopped:
            if await self._transfer(c):
                return

    def _newer_snapshot_than(self, meta: SnapshotMeta) -> bool:
        """Whether the node has a snapshot covering more than ``meta`` (built since a
        transfer of ``meta`` opened it)."""
        last = self.env.snapshot_last()
        return last is not None and (meta.last_log_id is None or last > meta.last_log_id)

    async def _transfer(self, c: SendSnapshot) -> bool:
        """Open the state machine's current snapshot and send it to the target, chunk by
        chunk, resending until it is taken; ``True`` once done (reported, or the node
        failed, or the channel stopped). ``False`` when, about to send it from its start
        again (no chunk taken yet, or the target started over; not after a last chunk that
        went unanswered in time: the target may be installing it), the node has a newer
        snapshot: the caller sends that one instead. A target cut off while the leader
        built snapshots and purged past the one this transfer opened was otherwise sent
        that one when it came back, and then, the log after it being gone, the newest:
        every byte of the state twice."""
        env = self.env
        target = self.target
        try:
            snap = await env.snapshot()
            if snap is not None:
                snapshot_io.check_snapshot(snap, "RaftStateMachine.get_current_snapshot", readable=True)
        except Exception as e:  # noqa: BLE001 - the state machine failed: fatal
            env.notify(Failed(StorageError("reading the current snapshot", e)))
            return True
        if snap is None or snap.meta.last_log_id is None or snap.meta.last_log_id < c.purged:
            if snap is not None:
                snapshot_io.close_quietly(snap.data)
            log.warning("replication %s->%s: no snapshot covers the purged log yet", env.node_id, target)
            self._report(SnapshotSent(target, self.vote, c.gen, None, 0.0))
            return True
        data = snap.data
        meta = snap.meta
        cfg = env.config
        base_ttl = cfg.install_snapshot_timeout / 1000.0
        chunk = cfg.snapshot_max_chunk_size
        pause = cfg.heartbeat_interval / 1000.0
        offset = 0
        try:
            try:
                size = await snapshot_io.call(data, snapshot_io.size)
            except Exception as e:  # noqa: BLE001 - the state machine's file failed: fatal
                env.notify(Failed(StorageError(f"reading snapshot {meta.snapshot_id}{snapshot_io.named(data)}", e)))
                return True
            sent = False  # a chunk was sent: one from offset 0 now is a resend
            # The last chunk went unanswered in time: the target may be installing this
            # snapshot (it answers once done), which a newer one would not replace.
            installing = False
            # The target refused the transfer's first chunk (its state machine busy applying
            # or installing: it takes none until free): the start is asked for with an empty
            # chunk, the data sent once one is taken. Each resend carried the whole first
            # chunk (up to ``snapshot_max_chunk_size``, 3 MiB by default) at every heartbeat
            # interval, for as long as the target stayed busy.
            probe = False
            while not self.stopped:
                if offset == 0 and sent and not installing and self._newer_snapshot_than(meta):
                    # Nothing of this snapshot is taken (the target was cut off, or started
                    # over): the newer one, rather than this one and then that one.
                    log.debug("snapshot %s->%s: %s is superseded by a newer snapshot before the target took it",
                              env.node_id, target, meta.snapshot_id)
                    return False
                probing = probe and offset == 0 and size > 0
                try:
                    if probing:
                        buf = b""
                    else:
                        # (No more than what is left: a file's read(n) may allocate n bytes first.)
                        buf = await snapshot_io.call(data, snapshot_io.read_at, offset, min(chunk, size - offset))
                        if type(buf) is not bytes:
                            buf = snapshot_io.chunk_bytes(buf)
                except Exception as e:  # noqa: BLE001 - as above (it failed the task: Panicked)
                    env.notify(Failed(StorageError(
                        f"reading snapshot {meta.snapshot_id}{snapshot_io.named(data)} at {offset}", e)))
                    return True
                done = not probing and offset + len(buf) >= size
                req = InstallSnapshotRequest(self.vote, meta, offset, buf, done)
                # The chunk's deadline: the base one plus the time its bytes and those
                # ahead of it take at the slowest link replication works over (one chunk in
                # flight; ahead: the chunks given up whose bytes may still be on the way,
                # the window's requests not settled: counted as the window's, ``_option``).
                nbytes = len(buf)
                self._handed = seq = self._handed + 1
                if self._given_up:
                    self._expire_given_up()
                self._inflight_bytes += nbytes
                keep = self._inflight_bytes / env.min_rate
                ttl = base_ttl + keep
                option = RPCOption(hard_ttl=ttl, soft_ttl=ttl)
                sent_at = env.now_ms()
                sent = True
                try:
                    try:
                        async with asyncio.timeout(ttl):
                            resp = await self.client.install_snapshot(req, option)
                    except asyncio.CancelledError as e:
                        stray = _stray_cancel("install_snapshot", e)
                        if stray is None:
                            self._settled(nbytes)
                            raise
                        raise stray from None
                    if not isinstance(resp, InstallSnapshotResponse):
                        raise _not_a_response(resp, InstallSnapshotResponse)
                except RemoteError as e:
                    self._answer_came(nbytes, seq)  # (an answer: the target read the chunk)
                    installing = False
                    if not done or snapshot_io.STATE_MACHINE_REFUSED not in str(e):
                        # Not the install's refusal (the state machine only sees the whole
                        # file): the target lost the transfer (it restarted, also after the
                        # last chunk arrived and before it answered) or is installing
                        # another snapshot. Ordinary: said at INFO. (The last chunk's was
                        # said at WARNING as a refusal of the state machine.) Said again at
                        # DEBUG while the target gives the same refusal (``_not_taken``).
                        refusal = (meta.snapshot_id, str(e))
                        again = refusal == self._not_taken
                        self._not_taken = refusal
                        log.log(logging.DEBUG if again else logging.INFO,
                                "snapshot %s %s->%s: chunk at %d not taken: %s; starting over",
                                meta.snapshot_id, env.node_id, target, offset, e)
                        probe = offset == 0
                        offset = 0
                        await env.clock.sleep(pause)
                        continue
                    # E.g. the target's state machine refused the file (damaged on this disk):
                    # said once per snapshot, since it is resent until a newer one replaces it.
                    first = meta.snapshot_id != self._refused_snapshot
                    self._refused_snapshot = meta.snapshot_id
                    log.log(logging.WARNING if first else logging.DEBUG,
                            "snapshot %s %s->%s refused at %d: %s; starting over",
                            meta.snapshot_id, env.node_id, target, offset, e)
                    offset = 0
                    await env.clock.sleep(pause)
                    continue
                except (RPCError, TimeoutError) as e:
                    self._failed(nbytes, seq, keep, e)
                    log.debug("snapshot %s->%s chunk at %d failed: %s; resending", env.node_id, target, offset, e)
                    installing = done and isinstance(e, (TimeoutError, Timeout))
                    if installing:
                        # The target answers the last chunk once it has installed the
                        # snapshot: a large state takes longer than ``ttl``. Not a failure
                        # of the target unless it goes on (``INSTALL_WAIT_WARN_AFTER``).
                        self._installing.failed(
                            env.clock.now(), "Timeout",
                            f"no answer to the last chunk of snapshot {meta.snapshot_id} (at {offset}) within "
                            f"{ttl:g}s at each resend: node {target} is still installing it, or is cut off",
                        )
                    else:
                        self._rpc_failed(e if str(e) else TimeoutError(f"no answer to the chunk at {offset} within {ttl:g}s"))
                    await env.clock.sleep(pause)
                    continue
                except Exception as e:  # noqa: BLE001 - a network that breaks its contract must not stop the node
                    self._settled(nbytes)
                    installing = False
                    what = str(e) if isinstance(e, (WrongResponse, StrayCancel)) else f"the network raised {e!r} (expected an RPCError)"
                    self._warn_broken(type(e).__name__, f"snapshot chunk at {offset}: {what}; resending")
                    await env.clock.sleep(pause)
                    continue
                self._answer_came(nbytes, seq)
                if resp.vote != self.vote and not self.vote.is_ge(resp.vote):
                    self._report(Rejected(target, self.vote, c.gen, resp.vote))
                    return True
                if not done:
                    self._report(Progress(target, self.vote, None, sent_at, False))
                    offset += len(buf)
                    if probing:
                        # The target took the start: the data from offset 0 is not a resend.
                        probe = sent = False
                    continue
                self._report(SnapshotSent(target, self.vote, c.gen, meta.last_log_id, sent_at))
                return True
            return True  # stopped
        finally:
            snapshot_io.close_quietly(data)
