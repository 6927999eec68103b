"""What the engine asks the runtime to do: ``Command`` values, never callbacks.

Every command is a frozen msgspec ``Struct`` named as an imperative noun. Storage commands
(``SaveVote``, ``AppendEntries``, ``TruncateLog``, ``PurgeLog``) carry ``io``: the sequence
number the engine assigned to that write. Storage writes are submitted in ``io`` order and
reported back with ``Engine.handle_io_flushed(io)``.

A command that must not happen before some write is durable carries ``when``: the ``io``
sequence number that must be flushed first (``None``: run at once). ``RaftCore`` postpones such
a command until ``flushed_io >= when``. Durability ordering is data, not control flow (see
``docs/design/io-ordering.md``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..types import BasicNode, Entry, LogId, NodeId, SnapshotMeta, TransferLeaderRequest, Vote, VoteRequest


class SaveVote(msgspec.Struct, frozen=True):
    """Persist ``vote`` (IO number ``io``)."""

    vote: Vote
    io: int


class AppendEntries(msgspec.Struct, frozen=True):
    """Append ``entries`` to the log store (IO number ``io``). They continue the log."""

    entries: list[Entry]
    io: int


class TruncateLog(msgspec.Struct, frozen=True):
    """Delete every entry after ``after`` (all non-purged entries when ``None``)."""

    after: LogId | None
    io: int


class PurgeLog(msgspec.Struct, frozen=True):
    """Delete every entry up to and including ``upto``."""

    upto: LogId
    io: int


class SaveCommittedAndApply(msgspec.Struct, frozen=True):
    """Persist ``committed`` and apply every entry up to it to the state machine.

    ``when``: the entries must be flushed locally before they are applied.
    """

    committed: LogId
    when: int | None = None


class SendVote(msgspec.Struct, frozen=True):
    """Send ``req`` to every node in ``targets`` once the candidate's vote is durable."""

    req: VoteRequest
    targets: dict[NodeId, BasicNode]
    when: int | None = None


class StartReplication(msgspec.Struct, frozen=True):
    """Open a replication channel to each of ``targets`` for the leader ``vote`` (closing any
    channel of another vote; channels to nodes not in ``targets`` close). A channel carries
    out ``Replicate`` and ``SendSnapshot`` for its target and reports their results; it
    decides nothing."""

    vote: Vote
    targets: dict[NodeId, BasicNode]


class StopReplication(msgspec.Struct, frozen=True):
    """Close every replication channel (this node is no longer the leader); results of
    requests in flight are not reported. Must run before any later command: a channel reads
    the leader's log, which may change from here on."""


class Replicate(msgspec.Struct, frozen=True):
    """Send ``target`` one AppendEntries of the leader's entries ``[start, end)`` (none when
    ``start == end``: a heartbeat or a probe) after ``prev`` (the log id at ``start - 1``),
    with ``committed``. ``gen``: the target's request generation, echoed in the result
    (``engine.progress``). The entries are in the leader's log (or purged since: report
    ``EntriesPurged``)."""

    target: NodeId
    gen: int
    prev: LogId | None
    start: int
    end: int
    committed: LogId | None


class Heartbeat(msgspec.Struct, frozen=True):
    """Send ``target`` an AppendEntries without entries now, beside its replication window
    (not in it: the window is full, e.g. one probe carrying a multi-megabyte entry that takes
    longer than the replication deadline to be answered). ``prev`` is the log id at the
    index the target acknowledged matching (``None`` when it acknowledged nothing or that
    entry is purged here): the target holds it durably, so the answer never vouches for more
    than it holds. Report the answer as a ``Progress`` ack sent at the time it was handed to
    the network (its matching only when it succeeded), a greater vote as a ``Rejected`` with
    ``gen`` ``OUTSIDE_WINDOW``; report nothing when it fails (the window's own requests say
    that). The target hears from its leader (its election timer restarts) and the leader
    from it (check-quorum, leases) while the window waits."""

    target: NodeId
    prev: LogId | None
    committed: LogId | None


class SendSnapshot(msgspec.Struct, frozen=True):
    """Send ``target`` the state machine's current snapshot: the entries it needs are purged
    up to ``purged``. A snapshot that does not reach ``purged`` is not sent (the target
    would need another one at once). Report ``SnapshotSent`` with ``gen``."""

    target: NodeId
    gen: int
    purged: LogId


class Respond(msgspec.Struct, frozen=True):
    """Send ``value`` to the waiting caller ``tx`` (an opaque responder the engine never
    touches), once IO ``when`` is flushed. ``value`` may be an exception instance."""

    tx: Any
    value: Any
    when: int | None = None


class RespondOnApply(msgspec.Struct, frozen=True):
    """Answer ``tx`` with the ``ClientWriteResponse`` of the entry ``log_id`` once it is
    applied (with ``ForwardToLeader`` if that entry is replaced by another leader's). Used for
    entries the engine appends itself: membership changes and learners.

    ``committed``: an earlier entry of the same call that has committed (a
    ``change_membership``'s joint config, when ``log_id`` is its final one), or ``None``.
    Invariant: ``committed < log_id``. The change took effect then whatever becomes of
    ``log_id`` (the next leader finishes a committed joint config), so a ``ForwardToLeader``
    for ``tx`` carries it as ``committed_log_id``, never "did not take effect"."""

    tx: Any
    log_id: LogId
    committed: LogId | None = None


class AbandonWrites(msgspec.Struct, frozen=True):
    """Entries after ``after`` may never be applied on this node (it left the cluster and
    gets no more entries): answer their writers with ``ForwardToLeader`` (outcome unknown)."""

    after: int


class BuildSnapshot(msgspec.Struct, frozen=True):
    """Build a snapshot of the state machine in the background; report it with
    ``Engine.handle_snapshot_built``."""


class ReceiveSnapshotChunk(msgspec.Struct, frozen=True):
    """Write the chunk ``req`` into the snapshot being received, once IO ``when`` (the vote
    adopted from ``req``) is durable. On the last chunk, hand the whole snapshot to
    ``Engine.handle_snapshot_received``; otherwise answer ``tx``."""

    req: Any
    tx: Any
    when: int | None = None


class InstallSnapshot(msgspec.Struct, frozen=True):
    """Replace the state machine's state with the received snapshot ``data`` (a file from
    ``begin_receiving_snapshot``); report it with ``Engine.handle_snapshot_installed``, which
    then answers ``tx``. Entries up to ``meta.last_log_id`` are never applied after this."""

    meta: SnapshotMeta
    data: Any
    tx: Any


class SendTransferLeader(msgspec.Struct, frozen=True):
    """Send ``req`` to every node in ``targets`` (best effort, no reply expected)."""

    req: TransferLeaderRequest
    targets: dict[NodeId, BasicNode]


Command = (
    SaveVote
    | AppendEntries
    | TruncateLog
    | PurgeLog
    | SaveCommittedAndApply
    | SendVote
    | StartReplication
    | StopReplication
    | Replicate
    | Heartbeat
    | SendSnapshot
    | Respond
    | RespondOnApply
    | AbandonWrites
    | BuildSnapshot
    | ReceiveSnapshotChunk
    | InstallSnapshot
    | SendTransferLeader
)
"""Everything the engine may emit."""
