"""The sans-IO Raft engine: events in, commands out.

::

      handle_tick(now)          ┌─ Engine (engine.py) ─────────────────────┐
      handle_vote_req/resp ───> │ RaftState (vote, log ids, committed,     │ ───> [Command, ...]
      handle_append_entries     │   membership, io); role: Leader |        │      SaveVote
      handle_io_flushed(io)     │   Candidate | None (leader.py)           │      AppendEntries
      handle_replication_*      │                                          │      TruncateLog
      client_write / read       │ entry point ──> the handler of its       │      SendVote
      change_membership         │   concern, over state/output (handler/): │      StartReplication
      transfer_leader           │   vote  following  leader  replication   │      Replicate
      handle_snapshot_*         │   membership  transfer  snapshot  log    │      Heartbeat
      trigger_*                 └──────────────────────────────────────────┘      Respond ...

No asyncio, no clock, no sockets, no storage: time arrives as ``now`` (ms), randomness from
an injected ``random.Random``, and every effect leaves as a ``Command`` that the runtime
(``openraft_py.core``) executes. A command may wait on a storage write (``when``): durability
ordering is data. Each concern is one handler module (``handler/__init__.py`` has the map of
who calls whom); leader transfer, both sides, is ``handler/transfer.py``. The test-only bug
switches are ``faults.py`` (``faults.inject``). See ``docs/design/engine-runtime.md``.
"""

from .command import (
    AbandonWrites,
    AppendEntries,
    BuildSnapshot,
    Command,
    InstallSnapshot,
    ReceiveSnapshotChunk,
    RespondOnApply,
    SendTransferLeader,
    Heartbeat,
    PurgeLog,
    Replicate,
    Respond,
    SaveCommittedAndApply,
    SaveVote,
    SendVote,
    StartReplication,
    StopReplication,
    TruncateLog,
)
from .engine import Engine
from .faults import EngineFault
from .leader import Candidate, Leader
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
    "Engine",
    "EngineFault",
    "Heartbeat",
    "IOState",
    "Leader",
    "MembershipState",
    "PurgeLog",
    "RaftState",
    "Replicate",
    "Respond",
    "SaveCommittedAndApply",
    "SaveVote",
    "SendVote",
    "StartReplication",
    "StopReplication",
    "TruncateLog",
]
