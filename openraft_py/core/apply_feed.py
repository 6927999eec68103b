"""``ApplyFeed``: the hand-off of committed entries from the core to the state-machine
worker, and the clients waiting for their entries to be applied.

The core records each client write (its own ``Responder``) here when the engine assigns its log
index, or a pass's one-entry writes as one ``WriteRun``; on every new committed id it
``submit``s the entries not yet handed over, with the responders they answer, to the
worker (a run is split at the committed index). Truncations and snapshot installs fail the
writers whose entries will never be applied here (a run is cut at their index: its other
writers still wait).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine
from typing import Any

from ..errors import ForwardToLeader
from ..types import ClientWriteResponse, Entry, LogId, StoredMembership
from .log_source import LogSource
from .messages import ClientWrite, ClientWriteOne, Responder, WriteRun
from .sm_worker import StateMachineWorker, fail_waiting_after, fail_waiting_upto


class ApplyFeed:
    """What was handed to the state machine, and who waits for what is not yet.

    Invariants: ``submitted`` is the last log index handed to the worker (entries are
    handed over in index order, each once, except again after ``rewind``); ``responders``
    waits for entries after ``submitted``, ordered by first index, their ranges disjoint; no
    ``WriteRun`` here holds an entry up to ``submitted`` (``_take_upto`` splits it).
    """

    def __init__(self, log: LogSource, worker: StateMachineWorker, applied: LogId | None) -> None:
        self.log = log
        self.worker = worker
        self.submitted = -1 if applied is None else applied.index
        self.responders: deque[Responder] = deque()
        # Set by ``rewind``: the committed entries after ``submitted`` must be handed over
        # again before anything else is (the core checks it each pass).
        self.resubmit = False

    def add_writes(self, first: int, term: int, writes: list[ClientWrite | ClientWriteOne]) -> None:
        """The engine logged ``writes``' payloads, in order, from index ``first`` in
        ``term``: answer each writer when its entries are applied."""
        for w in writes:
            w.first = first
            w.term = term
            first += w.count
        self.responders.extend(writes)

    def add_run(self, first: int, term: int, writes: list[ClientWriteOne]) -> None:
        """``add_writes`` for two or more ``ClientWriteOne``s: they wait as one ``WriteRun``
        (nothing is stored on each write)."""
        self.responders.append(WriteRun(first, len(writes), term, None, False, writes))  # type: ignore[arg-type]

    def add_responder(self, tx: Any, log_id: LogId, effective: StoredMembership) -> None:
        """Answer ``tx`` when the entry ``log_id`` is applied (in index order with the
        others). An entry already handed over is answered at once with the ``effective``
        membership: it is a no-op change that applied earlier."""
        if log_id.index <= self.submitted:
            if not tx.done():
                m = effective.membership if effective.log_id == log_id else None
                tx.set_result(ClientWriteResponse(log_id, None, m))
            return
        r = Responder(log_id.index, 1, log_id.term, tx, True)
        q = self.responders
        pos = len(q)
        while pos and q[pos - 1].first > r.first:
            pos -= 1
        q.insert(pos, r)

    async def submit(self, committed: LogId) -> None:
        """Hand the entries up to ``committed`` not handed over yet to the worker, with the
        responders they complete."""
        start = self.submitted + 1
        stop = committed.index + 1
        if stop <= start:
            return
        entries = self.log.cache.get(start, stop)
        if len(entries) < stop - start:
            # The cache holds a suffix of the log: read what it lacks from storage.
            rest = await self.log.read_storage(start + len(entries), stop)
            entries = entries + rest if entries else rest
        self._hand_over(entries, committed)

    def submit_now(self, committed: LogId) -> Coroutine[Any, Any, None] | None:
        """``submit(committed)`` without a coroutine when the cache holds every entry to
        hand over (``None``: done); otherwise the coroutine ``submit`` to await (it reads
        what the cache lacks from storage)."""
        start = self.submitted + 1
        stop = committed.index + 1
        if stop <= start:
            return None
        entries = self.log.cache.get(start, stop)
        if len(entries) < stop - start:
            return self.submit(committed)
        # ``_hand_over(entries, committed)``, without its call (every node, every commit).
        last = stop - 1
        self.submitted = last
        q = self.responders
        if not q:
            rs: list[Responder] = []  # (a follower's every commit)
        elif (end := q[-1]).first + end.count <= stop:
            # Every waiting writer's entries are committed (the usual case): all at once.
            rs = list(q)
            q.clear()
        else:
            rs = self._take_upto(last)
        w = self.worker
        if w._idle and w._inline and not w._queue and w._held is None:
            # ``worker.submit(entries, rs)`` where it applies inline, without its call (every
            # node, every commit, while the state machine's ``apply`` does not suspend).
            w._apply_inline(entries, rs)
        else:
            w.submit(entries, rs)
        return None

    def _hand_over(self, entries: list[Entry], committed: LogId) -> None:
        """Hand ``entries`` (the log's, from ``submitted + 1`` to ``committed``) to the
        worker, with the responders they complete."""
        last = self.submitted = committed.index
        q = self.responders
        if q and q[-1].first + q[-1].count - 1 <= last:
            # Every waiting writer's entries are committed (the usual case): all at once.
            rs = list(q)
            q.clear()
        else:
            rs = self._take_upto(last)
        self.worker.submit(entries, rs)

    def _take_upto(self, last: int) -> list[Responder]:
        """Take the responders of entries up to ``last`` (handed over now). A run that
        goes on after ``last`` is split there: its writers up to ``last`` are answered once
        their entries are applied, not once the run's last entry is (a responder of several
        entries of one writer waits in the worker for its last)."""
        q = self.responders
        rs: list[Responder] = []
        while q and q[0].first <= last:
            r = q.popleft()
            if type(r) is WriteRun and r.first + r.count - 1 > last:
                q.appendleft(r.split_after(last))
            rs.append(r)
        return rs

    def fail_after(self, index: int, err: ForwardToLeader) -> None:
        """Entries after ``index`` were deleted, or their outcome will never be known here:
        fail their writers with ``err`` (a batch partly applied waits in the worker)."""
        fail_waiting_after(self.responders, index, err)
        self.worker.fail_after(index, err)

    def skip_to(self, last: int) -> int:
        """A snapshot up to index ``last`` is being installed: entries up to it are not
        handed over one by one (their writers fail: the snapshot may or may not hold their
        entries). Returns the previous ``submitted`` for ``rewind``."""
        before = self.submitted
        self.submitted = max(before, last)
        err = ForwardToLeader(None, None, outcome_unknown=True)
        fail_waiting_upto(self.responders, last, err)
        self.worker.fail_upto(last, err)
        return before

    def rewind(self, before: int) -> None:
        """The install that ``skip_to`` returned ``before`` for was refused: go back to
        ``before``, take back the responders of the batches the worker held, and set
        ``resubmit``."""
        self.submitted = before
        held = self.worker.resume()
        if held:
            self.responders = deque(sorted([*held, *self.responders], key=lambda r: r.first))
        self.resubmit = True

    def clear(self) -> None:
        """Forget every responder (the core fails their futures itself at teardown)."""
        self.responders.clear()
