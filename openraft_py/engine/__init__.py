"""The sans-IO Raft engine: events in, commands out.

::

      handle_tick(now)          ┌─ Engine (engine.py) ─────────────────────┐
      handle_vote_req/resp ───> │ RaftState (vote, log ids, committed,     │ ───> [Command, ...]
      handle_append_entries     │   membership, io); role: Leader |        │      SaveVote
      handle_io_flushed(io)     │   Candidate | None (leader.py)           │      AppendEntries
      handle_replication_*      │   per target: ProgressEntry (progress.py)│      TruncateLog
      client_write / read       │ entry point ──> the handler of its       │      SendVote
      change_membership         │   concern, over state/output (handler/): │      StartReplication
      transfer_leader           │   vote  following  leader  replication   │      Replicate(target)
      handle_snapshot_*         │   membership  transfer  snapshot  log    │      SendSnapshot(target)
      trigger_*                 └──────────────────────────────────────────┘      Respond ...

No asyncio, no clock, no sockets, no storage: time arrives as ``now`` (ms), randomness from
an injected ``random.Random``, and every effect leaves as a ``Command`` that the runtime
(``openraft_py.core``) executes. A command may wait on a storage write (``when``): durability
ordering is data. The leader decides what each replication target is sent (next index,
pipelining window, probing, snapshot) in ``progress.py``; the runtime only sends it and
reports the result (``handle_replication_result``). Each concern is one handler module (``handler/__init__.py`` has the map of
who calls whom); leader transfer, both sides, is ``handler/transfer.py``. The test-only bug
switches are ``faults.py`` (``faults.inject``). See ``docs/design/engine-runtime.md``.
"""

from .command import (
    AbandonWrites,
    AppendEntries,
    BuildSnapshot,
    Command,
    Heartbeat,
    InstallSnapshot,
    PurgeLog,
    ReceiveSnapshotChunk,
    Replicate,
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
from .engine import Engine
from .faults import EngineFault
from .leader import Candidate, Leader
from .progress import (
    OUTSIDE_WINDOW,
    Conflict,
    EntriesPurged,
    Matched,
    ProgressEntry,
    Rejected,
    ReplicationResult,
    SnapshotSent,
    Unreachable,
)
from .state import IOState, MembershipState, RaftState

__all__ = [
    "AbandonWrites",
    "AppendEntries",
    "BuildSnapshot",
    "InstallSnapshot",
    "ReceiveSnapshotChunk",
    "RespondOnApply",
    "SendTransferLeader",
    "Candidate",
    "Command",
    "Conflict",
    "Engine",
    "EntriesPurged",
    "EngineFault",
    "Heartbeat",
    "IOState",
    "Leader",
    "Matched",
    "MembershipState",
    "OUTSIDE_WINDOW",
    "ProgressEntry",
    "PurgeLog",
    "RaftState",
    "Rejected",
    "Replicate",
    "ReplicationResult",
    "Respond",
    "SaveCommittedAndApply",
    "SaveVote",
    "SendSnapshot",
    "SnapshotSent",
    "SendVote",
    "StartReplication",
    "StopReplication",
    "TruncateLog",
    "Unreachable",
]
