"""The asyncio runtime: ``RaftCore`` runs the engine's commands.

::

      Raft handle ──RaftMsg (ClientWrite, EngineCall, AppendEntriesCall)──┐
                                                      ┌─────────────────┘
                                                      v
      storage IO done, RPC replies, ticks ──────> RaftCore task ──> Engine (pure)
                     (notifications)                  │ commands
             ┌────────────────────┬───────────────────┼──────────────────────┐
             v                    v                   v                      v
      ReplicationCore       RaftLogStorage      StateMachineWorker      RaftNetwork.vote
      (sender per target)   (append, vote,      (own task: apply,       (a task per
      AppendEntries,        truncate, purge)    answer clients)          request)
      pipelined

One ``RaftCore`` task per node drains both queues in batches, feeds the engine and runs the
commands it emits, postponing those whose durability condition is unmet. See
``docs/design/engine-runtime.md``.
"""

from .clock import Clock, LoopClock
from .raft_core import RaftCore
from .replication import ReplicationCore
from .sm_worker import StateMachineWorker

__all__ = ["Clock", "LoopClock", "RaftCore", "ReplicationCore", "StateMachineWorker"]
