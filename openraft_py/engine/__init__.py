"""The sans-IO Raft engine: events in, commands out.

::

      handle_tick(now)          ┌──────────────────────────┐
      handle_vote_req/resp ───> │          Engine          │ ───> [Command, ...]
      handle_append_entries     │  RaftState (vote, log    │      SaveVote AppendEntries
      handle_io_flushed(io)     │  ids, committed, member- │      TruncateLog SendVote
      handle_replication_*      │  ship, io), Leader /     │      StartReplication Replicate
      client_write / read       │  Candidate               │      Heartbeat Respond ...
                                └──────────────────────────┘

No asyncio, no clock, no sockets, no storage: time arrives as ``now`` (ms), randomness from
an injected ``random.Random``, and every effect leaves as a ``Command`` that the runtime
(``openraft_py.core``) executes. A command may wait on a storage write (``when``): durability
ordering is data. See ``docs/design/engine-runtime.md``.
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
