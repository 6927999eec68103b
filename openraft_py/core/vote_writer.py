"""``VoteWriter``: persists the votes the engine saves (``SaveVote``) in a task of its own,
so a slow vote write does not stall the core; what must wait for a vote waits on its io
number, reported with ``IOCompleted`` once the write is durable.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from ..types import Vote
from .calling_out import VOTE, CallingOut, enter, leave
from .messages import Failed, IOCompleted
from .tasks import TaskSet, stray_cancel

if TYPE_CHECKING:
    from ..storage import RaftLogStorage


class VoteWriter:
    """Writes queued votes in order; of a run queued while a write was in flight only the
    newest is written, and every io number of the run completes with it.

    Invariant: ``_writing`` is true while a writer task runs (set before it is spawned,
    cleared as it ends), and false when ``_queue`` is empty and nothing is being written.
    """

    def __init__(
        self,
        log_store: RaftLogStorage,
        tasks: TaskSet,
        notify: Callable[[Any], None],
        calling_out: CallingOut | None = None,
    ) -> None:
        self.log_store = log_store
        self.tasks = tasks
        self.notify = notify
        # Where the writer task is recorded while in ``save_vote`` (``RaftCore.calling_out``).
        self.calling_out: CallingOut = {} if calling_out is None else calling_out
        self._queue: deque[tuple[Vote, int]] = deque()
        self._writing = False
        """A flag, not the task: under an eager task factory (Python 3.12+
        ``loop.set_task_factory(asyncio.eager_task_factory)``) the task runs in ``spawn`` until
        it first suspends, to its end with a store whose ``save_vote`` does not suspend, before
        ``spawn`` returns it. The task kept after it had ended blocked every later vote: the
        node waited for good for a vote never written (a leader never committed), saying
        nothing."""

    def save(self, vote: Vote, io: int) -> None:
        """Persist ``vote`` (storage write number ``io``); report ``IOCompleted(io)`` when it
        is durable, or ``Failed`` with a ``StorageError`` (the node stops)."""
        self._queue.append((vote, io))
        if not self._writing:
            self._writing = True
            self.tasks.spawn(self._write(), "vote-writer")

    async def _write(self) -> None:
        try:
            while self._queue:
                run = list(self._queue)
                self._queue.clear()
                vote = run[-1][0]
                task = enter(self.calling_out, VOTE)
                try:
                    await self.log_store.save_vote(vote)
                except Exception as e:  # noqa: BLE001 - reported: the node stops
                    self.notify(Failed(StorageError(f"saving vote {vote!r}", e)))
                    return
                except asyncio.CancelledError as e:
                    stray = stray_cancel("the log store's save_vote", e)
                    if stray is None:
                        raise
                    # (Let through, it ended this task unreported: the vote never became
                    # durable and the node waited for it for good.)
                    self.notify(Failed(StorageError(f"saving vote {vote!r}", stray)))
                    return
                finally:
                    leave(self.calling_out, task)
                for _, io in run:
                    self.notify(IOCompleted(io, None))
        finally:
            self._writing = False
