"""``TaskSet``: the background tasks of one node (state-machine worker, ticker, replication
streams and their requests, vote requests, snapshot builds), started and ended in one place.

A task that fails while the set is open is reported through ``on_failure`` (the core turns
it into a ``Failed`` notification and stops the node); a cancelled task, or one that fails
after ``close`` began, is not reported. Once the set is closing, a task spawned is cancelled
at once: nothing of a stopped node may start to run over its stores. ``on_empty`` is called
each time the last task of the set ended (the node's stores are released once its core task
and every task of the set ended: ``RaftCore.call_when_ended``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class TaskSet:
    """Spawns named tasks, keeps them until they end, and cancels what is left on close.

    Invariant: ``_tasks`` holds every spawned task whose done callback has not run yet, in
    spawn order (a dict, not a set, so cancelling is deterministic under a simulator); once
    ``closing``, every task in it has been cancelled.
    """

    def __init__(self, prefix: str, on_failure: Callable[[BaseException], None]) -> None:
        """``prefix`` starts every task's name; ``on_failure(exc)`` is called on the loop for
        a task that raised (not for a cancelled one, nor once ``closing``)."""
        self.prefix = prefix
        self.on_failure = on_failure
        self.closing = False
        self._tasks: dict[asyncio.Task[Any], None] = {}
        # Called (from a task's done callback) whenever the last task of the set ended.
        self.on_empty: Callable[[], None] | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task named ``<prefix>-<name>`` and return it; cancelled at once
        once the set is closing (its body does not run, unless an eager task factory ran it
        up to its first suspension already)."""
        t = asyncio.get_running_loop().create_task(coro, name=f"{self.prefix}-{name}")
        self._tasks[t] = None
        t.add_done_callback(self._done)
        if self.closing:
            t.cancel()
        return t

    def _done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.pop(t, None)
        if not t.cancelled():
            # Retrieved also once closing (``close`` does not): nobody else looks at it.
            e = t.exception()
            if e is not None and not self.closing:
                self.on_failure(e)
        if not self._tasks and self.on_empty is not None:
            self.on_empty()

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        """The names of the tasks still running, in spawn order."""
        return [t.get_name() for t in self._tasks]

    def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Stop reporting failures and cancel every task still running; return them."""
        self.closing = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        return tasks

    async def close(self) -> None:
        """``cancel_all`` and wait until every task ended, also one spawned meanwhile
        (cancelled at once: ``spawn``); their results are dropped (``_done``).

        A caller cancelled while it waits (a timeout around ``Raft.shutdown()``) raises its
        ``CancelledError`` at once, and the tasks, cancelled already, are left to end on
        their own: ``asyncio.wait``, not ``asyncio.gather``, which cancelled each task again
        and held its cancelled caller until every one had ended (a state machine call
        finishing in its worker thread: up to ``storage.rocks.db.CANCELLED_THREAD_WAIT``)."""
        tasks = self.cancel_all()
        while tasks:
            await asyncio.wait(tasks)
            tasks = list(self._tasks)


def stray_cancel(who: str, e: asyncio.CancelledError) -> RuntimeError | None:
    """Called in an ``except CancelledError`` around a call of a plug-in (a store, the state
    machine, the network): ``None`` when the running task is being cancelled
    (``Task.cancelling()``: the node is stopping, the error must go on); otherwise ``who``
    raised it on its own (a future it cancelled itself), and this is the error to report in
    its place (the ``CancelledError`` as its cause). Let through, such an error ended a task
    of the node as if the node were stopping."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        return None
    err = RuntimeError(f"{who} raised CancelledError (its task was not being cancelled)")
    err.__cause__ = e
    return err


class GiveUpAfter:
    """``async with GiveUpAfter(delay):`` bounds the block as ``asyncio.timeout(delay)``
    does (``TimeoutError`` when it expires), except that it expires one loop pass after its
    deadline, not in the pass that reaches it. What became ready in that pass is taken first:
    a network's own ``Timeout``, due earlier (at ``option.hard_ttl``), after a stall of the
    event loop (a plug-in's long synchronous call) that ran past both deadlines. The loop
    ran both timers in one pass, and the bound used to win: the node warned that the
    network "did not answer ... it must raise Timeout after hard_ttl", blaming a network
    (the TCP transport's own included) that had kept its contract.

    Invariant: ``_handle`` is the pending deadline timer while the block runs (``None``
    once it fired); it only reschedules ``_bound``, which is entered meanwhile.
    """

    __slots__ = ("_delay", "_bound", "_handle", "_loop")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._bound = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> GiveUpAfter:
        loop = self._loop = asyncio.get_running_loop()
        await self._bound.__aenter__()
        self._handle = loop.call_at(loop.time() + self._delay, self._expire)
        return self

    def _expire(self) -> None:
        """The deadline passed: expire the bound in the next loop pass (``reschedule`` to
        now queues its expiry with ``call_soon``, behind what this pass made ready)."""
        self._handle = None
        assert self._loop is not None
        self._bound.reschedule(self._loop.time())

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> None:
        handle = self._handle
        if handle is not None:
            handle.cancel()
            self._handle = None
        # (``asyncio.Timeout.__aexit__`` suppresses nothing: it returns ``None``, or raises
        # ``TimeoutError`` in place of the cancellation it caused.)
        await self._bound.__aexit__(et, e, tb)
