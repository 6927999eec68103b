"""Guest passes: a parked node's core pass run by the task of the node that handed it a
request, as if on the parked node's own task.

In the in-process router's fast mode (``RouterClient._submit_direct``) a leader's pass hands
each follower its AppendEntries by a plain call (``Raft._submit_append_entries_mapped``).
Waking the follower's core task for it costs a future, a loop callback and a task step per
request, and the leader's task another for the answers: three of the five wake-ups of a
1-writer write (docs/design/performance.md, the sixty-first and sixty-fifth rounds). Instead,
while the leader's pass runs (``hosting.core``), a parked follower is queued on the leader
(``RaftCore._guests``), and once the leader's pass returns, the leader's task runs the
follower's pass itself (``RaftCore.pass_as_guest``); the followers' answers are then in the
leader's queue before its task would have gone back to the loop.

What the follower's own task guaranteed is kept:

- **Its task is the current task.** ``run_as`` makes the follower's core task the loop's
  current task for the pass (``asyncio.current_task()`` names it) and runs it in that task's
  context (``contextvars``). A plug-in that enters ``asyncio.timeout()`` binds it to its own
  node's task, never to the leader's: a timeout that expires cancels its own node only.
  ``Raft``'s own-task checks see the follower's task, as they would on its task.
- **Passes never interleave.** A guest pass runs only while the follower's task is parked
  (``RaftCore.parked``: suspended in ``_run`` on its wake-up, in no pass) and nothing was
  handed to it; the rest of a pass that must wait, or what the pass raised, is handed to
  the follower's task (``RaftCore._handed``), which awaits or raises it before any other
  pass. A failing follower store stops that follower, through its own ``_run``.

Only the fast mode of the in-process router takes this path: the TCP server and the
simulator (whose hooks keep the router out of its fast mode) wake the follower's task as
before, and so does a node whose core task the loop's task factory made (``RaftCore.start``:
the factory may not take the task's context). Without the interpreter's task-switch
functions (``asyncio.tasks._enter_task`` and ``_leave_task``, CPython 3.11-3.13) every
request wakes its follower's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .raft_core import RaftCore

__all__ = ["AVAILABLE", "Hosting", "hosting", "run_as"]

T = TypeVar("T")

_enter_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None
_leave_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None] | None
try:
    from asyncio.tasks import _enter_task, _leave_task
except ImportError:  # pragma: no cover - not on the CPython versions supported
    _enter_task = _leave_task = None

AVAILABLE = _enter_task is not None and _leave_task is not None
"""Whether guest passes can run here (the task-switch functions exist)."""


class Hosting:
    """Which node's core pass is running on its task, if any (one per process: a node's
    ``_run`` sets ``core`` for the synchronous part of each pass and clears it after)."""

    __slots__ = ("core",)

    def __init__(self) -> None:
        # The ``RaftCore`` whose pass is running right now, or ``None``. Set only while that
        # pass runs synchronously on its own task, so a reader on that task (the router's
        # hand-over) sees it, and never after the pass returned or raised.
        self.core: RaftCore | None = None


hosting = Hosting()


def run_as(
    loop: asyncio.AbstractEventLoop,
    host: asyncio.Task[Any],
    task: asyncio.Task[Any],
    context: Context,
    fn: Callable[[], T],
) -> T:
    """Call ``fn()`` from ``host`` (the loop's current task) with ``task`` as the loop's
    current task and in ``context``; ``host`` is current again when it returns or raises.
    ``task`` must be suspended (not running) and ``context`` entered nowhere."""
    assert _enter_task is not None and _leave_task is not None
    _leave_task(loop, host)
    try:
        _enter_task(loop, task)
    except BaseException:
        _enter_task(loop, host)
        raise
    try:
        return context.run(fn)
    finally:
        _leave_task(loop, task)
        _enter_task(loop, host)
