"""The state-machine worker: one task per node that applies committed entries in order and
answers the clients that wrote them.

Applying runs here, not in ``RaftCore``, so a slow ``apply`` delays neither appends nor
replication. Clients are answered straight from this task (no hop back through the core).

The inline fast path: while the worker's task is idle, ``submit`` starts ``apply`` on the
caller's task (the core's) and, if it returns without suspending, finishes the batch there:
the responders are answered and ``applied`` reported with no wake-up of this task and no
loop turn. An ``apply`` that suspends is continued by this task, and from then on every
batch goes through the task (a state machine that awaits in ``apply`` keeps its own task).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._core import find_payload
from ..errors import ForwardToLeader, Stopped, StorageError
from ..types import ClientWriteResponse, Entry, LogId, Membership
from ..validation import shown as _shown
from ..wakeup import Resumed, Wakeup, send_none
from .messages import Applied, Failed, Responder, WriteRun
from .tasks import stray_cancel

if TYPE_CHECKING:
    from ..storage import RaftStateMachine

__all__ = ["Responder", "StateMachineWorker"]


def fail_waiting_after(rs: deque[Responder], index: int, err: BaseException) -> None:
    """Fail, with ``err``, the writers of the responders ``rs`` (ordered by ``first``,
    disjoint) whose entries lie after ``index``, and drop them; a ``WriteRun`` across
    ``index`` keeps its writes up to it."""
    while rs and rs[-1].first + rs[-1].count - 1 > index:
        r = rs.pop()
        if type(r) is not WriteRun:
            r.fail(err)
        elif r.cut_after(index, err):  # (it failed its writes after ``index``, or all)
            rs.append(r)  # its writes up to ``index`` stay
            break


def fail_waiting_upto(rs: deque[Responder], index: int, err: BaseException) -> None:
    """Fail, with ``err``, the writers of the responders ``rs`` (ordered by ``first``,
    disjoint) whose entries lie up to ``index``, and drop them; a ``WriteRun`` across
    ``index`` keeps its writes after it."""
    while rs and rs[0].first <= index:
        r = rs.popleft()
        if type(r) is not WriteRun:
            r.fail(err)
        elif r.cut_upto(index, err):  # (it failed its writes up to ``index``, or all)
            rs.appendleft(r)  # its writes after ``index`` stay
            break


def _answer_one(r: Responder, e: Entry, result: Any) -> None:
    """Answer ``r``, the responder of the one entry ``e``, now applied with ``result``: with
    the response (in a list unless ``r.single``), or with ``ForwardToLeader`` if another
    leader's entry replaced the one ``r`` wrote (the write did not take effect)."""
    tx = r.tx
    if tx.done():
        return
    log_id = e.log_id
    if log_id.term != r.term:
        r.fail(ForwardToLeader(None, None, outcome_unknown=False))
        return
    p = e.payload
    one = ClientWriteResponse(log_id, result, p if type(p) is Membership else None)
    tx.set_result(one if r.single else [one])


def _answer_run(r: WriteRun, entries: list[Entry], results: list[Any], lo: int) -> None:
    """Answer the writers of the run ``r``, whose entries are ``entries[lo : lo + r.count]``,
    applied with the ``results`` at the same positions: each with its response, or, from the
    first entry another leader's replaced on, with ``ForwardToLeader`` (that write and every
    later one of the run did not take effect; the earlier ones did)."""
    term = r.term
    hi = lo + r.count
    writes = r.writes
    if entries[lo].log_id.term == term and entries[hi - 1].log_id.term == term:
        # Terms never decrease along a log: every entry between is of ``term`` too (ours).
        if lo == 0 and hi == len(entries):
            es, vs = entries, results
        else:
            es, vs = entries[lo:hi], results[lo:hi]
        for w, e, v in zip(writes, es, vs):
            try:
                w.tx.set_result(ClientWriteResponse(e.log_id, v, None))
            except asyncio.InvalidStateError:
                pass  # the caller gave up (its future was cancelled)
        return
    for k in range(r.count):
        e = entries[lo + k]
        if e.log_id.term != term:
            # Replaced by a later leader's entry: so is every entry after it (log matching;
            # a committed entry is in every later leader's log, so its term is above ours).
            err = ForwardToLeader(None, None, outcome_unknown=False)
            for w in writes[k:]:
                w.fail(err)
            return
        tx = writes[k].tx
        if not tx.done():
            tx.set_result(ClientWriteResponse(e.log_id, results[lo + k], None))


def _answer_at(r: Responder, entries: list[Entry], results: list[Any], lo: int) -> None:
    """Answer ``r``, whose entries are all applied: ``entries[lo : lo + r.count]``, with the
    ``results`` at the same positions."""
    if type(r) is WriteRun:
        _answer_run(r, entries, results, lo)
        return
    tx = r.tx
    if tx.done():
        return
    count = r.count
    if count == 1:
        # One entry (every client_write): no list to build.
        _answer_one(r, entries[lo], results[lo])
        return
    out: list[ClientWriteResponse] = []
    for k in range(lo, lo + count):
        e = entries[k]
        if e.log_id.term != r.term:
            # Our entry was replaced by another leader's: the write is lost. If an earlier
            # entry of the batch was ours, that part took effect (by log matching, nothing
            # after a replaced entry is ours).
            r.fail(ForwardToLeader(None, None, outcome_unknown=k > lo))
            return
        p = e.payload
        out.append(ClientWriteResponse(e.log_id, results[k], p if type(p) is Membership else None))
    tx.set_result(out[0] if r.single else out)


class _Op:
    """A call to run on the state machine in queue order: ``fn(sm)`` is awaited and its
    result (or exception) goes to ``fut``. A result ``fut`` can no longer take (done
    already: its caller was cancelled, or the worker ended meanwhile) goes to ``discard``,
    when given, which releases what nobody will (a snapshot's open file)."""

    __slots__ = ("fn", "fut", "discard")

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        fut: asyncio.Future[Any],
        discard: Callable[[Any], None] | None = None,
    ) -> None:
        self.fn = fn
        self.fut = fut
        self.discard = discard


class _Started(Resumed):
    """An ``apply`` that ``submit`` started inline and that suspended: the worker's task
    continues ``coro`` (which last yielded ``yielded``; ``wakeup.Resumed``) and finishes
    ``chunk`` with what it returns."""

    __slots__ = ("chunk",)

    def __init__(self, coro: Coroutine[Any, Any, list[Any] | None], yielded: Any, chunk: list[Entry]) -> None:
        super().__init__(coro, yielded)
        self.chunk = chunk


def _defined_by(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO whose body defines ``name``."""
    return next((k for k in cls.__mro__ if name in k.__dict__), None)


def _apply_without_responses(sm: Any) -> Callable[[list[Entry]], Coroutine[Any, Any, None]] | None:
    """``sm``'s optional ``apply_without_responses`` (see ``RaftStateMachine``), when it can
    stand in for ``sm.apply``: a coroutine function defined by the class that defines
    ``apply`` or by a subclass of it. A subclass overriding only ``apply`` (to add commands,
    say) would have its own ``apply`` bypassed by an inherited one: it gets ``apply`` always."""
    quiet = getattr(sm, "apply_without_responses", None)
    if quiet is None or not inspect.iscoroutinefunction(quiet):
        return None
    cls = type(sm)
    quiet_owner = _defined_by(cls, "apply_without_responses")
    if quiet_owner is None:  # set on the instance itself: meant for it
        return quiet  # type: ignore[no-any-return]
    apply_owner = _defined_by(cls, "apply")
    if apply_owner is None or not issubclass(quiet_owner, apply_owner):
        return None
    return quiet  # type: ignore[no-any-return]


class StateMachineWorker:
    """Applies batches submitted by ``RaftCore`` and resolves their responders.

    Invariants: ``_buf_entries``/``_buf_results`` hold the applied entries (and results) from
    index ``_buf_start`` on, kept only while some responder still needs them. Once the worker
    ended (stopped, or an ``apply`` failed), every queued and later ``call`` fails with the
    reason (``_ended``): no caller waits on a worker that will never run again. After a
    refused snapshot install the worker holds the entry batches queued behind it
    (``_held``) until the core calls ``resume``: they continue the refused snapshot, not
    what the state machine holds.
    """

    def __init__(
        self,
        notify: Callable[[Any], None],
        sm: RaftStateMachine,
        max_batch: int,
        applied: Callable[[LogId], None] | None = None,
    ) -> None:
        """``notify`` queues a notification to the core (``Failed`` when ``apply`` fails);
        ``applied(log_id)`` reports each applied batch (default: ``notify(Applied(log_id))``);
        ``sm`` is used by one call at a time, in queue order; ``apply`` gets at most
        ``max_batch`` entries at a time."""
        self.notify = notify
        self.applied: Callable[[LogId], None] = applied if applied is not None else lambda i: notify(Applied(i))
        self.sm = sm
        self.max_batch = max_batch
        self._queue: deque[tuple[list[Entry], list[Responder]] | _Op | _Started] = deque()
        self._wakeup = Wakeup()
        # The task waits for work (nothing queued, nothing running): ``submit`` may apply
        # on the caller's task. ``_inline`` is false once an inline ``apply`` suspended.
        # True only while the task is suspended on ``_wakeup`` in ``run`` (running no code):
        # ``Raft``'s own-task check reads it with ``RaftCore.parked``.
        self._idle = False
        self._inline = inspect.iscoroutinefunction(sm.apply)
        # Whether an ``apply`` runs inline now (``_apply_inline``, on the caller's task: the
        # core's), until it first suspends or returns: a call of the ``Raft`` handle it makes
        # then comes from the core's task and is still answered (``Raft._call``).
        self.applying_inline = False
        self._apply_quiet = _apply_without_responses(sm)
        # Whether the last ``_apply`` called ``apply_without_responses`` (its result is not
        # read). One chunk is applied at a time, and ``_finish`` follows its ``_apply``.
        self._quiet = False
        self._responders: deque[Responder] = deque()
        self._buf_start = 0
        self._buf_entries: list[Entry] = []
        self._buf_results: list[Any] = []
        self._stopped = False
        self._ended: BaseException | None = None
        self._current: _Op | None = None
        self._held: list[tuple[list[Entry], list[Responder]]] | None = None

    def submit(self, entries: list[Entry], responders: list[Responder]) -> None:
        """Apply ``entries`` (consecutive, continuing what was submitted before) after
        everything queued so far, and answer ``responders`` as their entries are applied.
        If the worker is idle and ``apply`` completes without suspending, that happens
        before ``submit`` returns (``applied`` is then called from here)."""
        if self._idle and self._inline and entries and not self._queue and self._held is None:
            self._apply_inline(entries, responders)
            return
        self._queue.append((entries, responders))
        self._wakeup.wake()

    def _apply_inline(self, entries: list[Entry], responders: list[Responder]) -> None:
        """Apply ``entries`` on the caller's task, chunk by chunk, while ``apply`` returns
        without suspending; a chunk whose ``apply`` suspends, and the chunks after it, go to
        the worker's task (at the head of its queue, which is empty)."""
        if responders:
            self._responders.extend(responders)
        n = len(entries)
        step = self.max_batch
        for i in range(0, n, step):
            chunk = entries[i : i + step] if n > step else entries
            # ``self._apply(chunk)``, without its call (each node, each committed batch;
            # ``apply`` gets a copy of ``chunk``, which is read after it: see ``_apply``).
            quiet = self._apply_quiet
            coro: Coroutine[Any, Any, list[Any] | None]
            if quiet is not None and not self._responders:
                self._quiet = True
                coro = quiet(chunk.copy())
            else:
                self._quiet = False
                coro = self.sm.apply(chunk.copy())
            self.applying_inline = True
            try:
                # (``coro.send(None)``, without the ``StopIteration`` of an apply that returns.)
                done, value = send_none(coro)
            except Exception as e:  # noqa: BLE001 - any failure of the user's state machine is fatal
                self._fail(e)
                return
            except asyncio.CancelledError as e:
                stray = stray_cancel("the state machine's apply", e)
                if stray is None:
                    raise
                self._fail(stray)
                return
            finally:
                self.applying_inline = False
            if done:
                # ``_finish(chunk, value)`` without its call when nothing is wrong (each
                # node, each committed batch): a quiet apply, or a list of one result per entry.
                if self._quiet:
                    self.applied(chunk[-1].log_id)
                elif type(value) is list and len(value) == len(chunk):
                    if self._responders:
                        self._resolve(chunk, value)
                    self.applied(chunk[-1].log_id)
                elif not self._finish(chunk, value):
                    return
                continue
            # It suspended: the worker's task continues it, and applies every later batch.
            self._inline = False
            self._queue.append(_Started(coro, value, chunk))
            if i + step < n:
                self._queue.append((entries[i + step :], []))
            self._wakeup.wake()
            return

    def _apply(self, chunk: list[Entry]) -> Coroutine[Any, Any, list[Any] | None]:
        """The state machine's ``apply(chunk)``, or its ``apply_without_responses(chunk)``
        when it has one and no responder waits (responders are queued in index order, so
        none waiting now means none of ``chunk``'s results would be read: a follower's
        batches, or a leader's entries of an earlier term).

        Either gets a copy of ``chunk``, its own to keep or change: the worker reads
        ``chunk`` after the call (its last log id, its entries for the responders), and an
        ``apply`` that consumed its list (``pop(0)``), cleared or reversed it stopped the
        node with "apply returned 22 responses for 0 entries", or made it take the batch's
        first entry for its last and apply nothing more, silently (a copy of the list's
        pointers: about 1 us for a batch of 256 entries)."""
        quiet = self._apply_quiet
        if quiet is not None and not self._responders:
            self._quiet = True
            return quiet(chunk.copy())
        self._quiet = False
        return self.sm.apply(chunk.copy())

    def _finish(self, chunk: list[Entry], results: list[Any] | None) -> bool:
        """``chunk`` was applied with ``results``: answer the responders it completes and
        report it. What ``apply_without_responses`` returned is not read. False (and the
        node stops with ``StorageError``) if ``apply`` broke its contract: ``results`` is not
        a list (or tuple) of one response per entry of ``chunk``. (``None`` from ``apply``
        used to be taken for "no responses": the node went on and its clients waiting for
        those entries were never answered.)"""
        if self._quiet:
            self.applied(chunk[-1].log_id)
            return True
        if type(results) is not list and not isinstance(results, (list, tuple)):
            self._fail(
                TypeError(
                    f"state machine apply returned {type(results).__name__} {results!r:.80}, "
                    f"expected a list of one response per entry ({len(chunk)} entries)"
                )
            )
            return False
        if len(results) != len(chunk):
            self._fail(RuntimeError(f"state machine apply returned {len(results)} responses for {len(chunk)} entries"))
            return False
        if self._responders:
            self._resolve(chunk, results)
        self.applied(chunk[-1].log_id)
        return True

    def _fail(self, e: BaseException) -> None:
        """``apply`` failed on the caller's task: end the worker and stop the node, as a
        failure in the worker's task does."""
        err = StorageError("applying entries to the state machine", e)
        err.__cause__ = e
        self._stopped = True
        self._end(err)
        self._wakeup.wake()
        self.notify(Failed(err))

    def waiting_for_work(self) -> bool:
        """Whether the task waits for work with nothing queued: a ``call`` made now runs
        next, behind no ``apply`` (``Snapshots.receive_chunk``)."""
        return self._idle and not self._queue

    def call(
        self, fn: Callable[[Any], Awaitable[Any]], discard: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        """Run ``fn(state_machine)`` after everything queued so far (the state machine is
        only ever used from this task, one call at a time); return a future of its result.
        An exception from ``fn`` goes to the future and does not stop the worker. A result
        that comes once the future is done (cancelled by its awaiter) goes to ``discard``
        (when given; it must not raise)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._ended is not None:
            fut.set_exception(self._ended)
            return fut
        self._queue.append(_Op(fn, fut, discard))
        self._wakeup.wake()
        return fut

    def install_snapshot(self, meta: Any, data: Any) -> asyncio.Future[Any]:
        """Queue ``state_machine.install_snapshot(meta, data)`` after everything queued so
        far; return a future of its completion. Applied entries buffered for responders are
        dropped: what follows the snapshot does not continue them.

        If the install raises (the state machine keeps its previous state, by contract), the
        entry batches queued behind it are held, not applied, until ``resume``.

        Once it returns, the state machine's ``applied_state()`` must be the snapshot's
        ``(meta.last_log_id, meta.last_membership)`` (the contract): otherwise the install
        fails with ``RuntimeError`` (not a ``ValueError``: the node stops with
        ``StorageError``, its state machine cannot be trusted). An install that returned
        without installing was taken, and the node went on from the snapshot's log id over
        the state of before, answering reads from it."""

        async def install(sm: Any) -> None:
            try:
                await sm.install_snapshot(meta, data)
                try:
                    state = await sm.applied_state()
                except Exception as e:
                    # Not the install's refusal (a ``ValueError`` says the data was refused,
                    # the state unchanged): the install returned, the state machine holds
                    # the snapshot, and cannot tell its state. Taken for a refusal, the node
                    # went on from its state of before, over the installed one.
                    raise RuntimeError(
                        f"install_snapshot returned, then the state machine's applied_state() raised {e!r}"
                    ) from e
                if (
                    not isinstance(state, tuple)
                    or len(state) != 2
                    or state[0] != meta.last_log_id
                    or state[1] != meta.last_membership
                ):
                    raise RuntimeError(
                        f"install_snapshot returned, but the state machine's applied_state() is "
                        f"{_shown(state)}, not the snapshot's ({meta.last_log_id!r}, {meta.last_membership!r}): "
                        "after an install it must be the snapshot's last log id and membership "
                        "(RaftStateMachine.install_snapshot)"
                    )
            except BaseException:
                self._held = []
                raise
            self._buf_entries = []
            self._buf_results = []

        return self.call(install)

    def resume(self) -> list[Responder]:
        """After a refused install: drop the entry batches held or still queued (they were
        submitted to follow the snapshot) and return their responders, in order, for the
        core to hand over again with the entries resubmitted from what was applied."""
        out: list[Responder] = []
        for _, rs in self._held or ():
            out.extend(rs)
        self._held = None
        keep: deque[tuple[list[Entry], list[Responder]] | _Op | _Started] = deque()
        for item in self._queue:
            if type(item) is tuple:
                out.extend(item[1])
            else:
                keep.append(item)
        self._queue = keep
        return out

    def fail_upto(self, index: int, err: BaseException) -> None:
        """Entries up to ``index`` will never be applied one by one (a snapshot replaced
        them): fail the responders waiting for any of them."""
        fail_waiting_upto(self._responders, index, err)
        for item in self._batches():
            for r in item[1]:
                if r.first <= index:
                    if type(r) is WriteRun:
                        r.cut_upto(index, err)
                    else:
                        r.fail(err)

    def stop(self, err: BaseException | None = None) -> None:
        """Stop after the current apply; queued and later ``call``s fail with ``err``
        (default ``Stopped``) at once; pending responders are failed by the core."""
        self._stopped = True
        self._end(err if err is not None else Stopped())
        self.submit([], [])

    def _end(self, err: BaseException) -> None:
        """The worker will run nothing more: fail every queued call (and the running one,
        which is being cancelled) with ``err``; later calls fail at once."""
        if self._ended is None:
            self._ended = err
        ops = [item for item in self._queue if isinstance(item, _Op)]
        if self._current is not None:
            ops.insert(0, self._current)
            self._current = None
        self._queue = deque(item for item in self._queue if not isinstance(item, _Op))
        for op in ops:
            if not op.fut.done():
                op.fut.set_exception(self._ended)

    def _batches(self) -> list[tuple[list[Entry], list[Responder]]]:
        """The entry batches queued or held, not yet applied."""
        out = [item for item in self._queue if type(item) is tuple]
        if self._held:
            out = self._held + out
        return out

    def fail_after(self, index: int, err: BaseException) -> None:
        """The log was truncated after ``index``: fail the responders waiting for an entry
        beyond it (only a batch partly applied can be here)."""
        fail_waiting_after(self._responders, index, err)
        for item in self._batches():
            for r in item[1]:
                if r.first + r.count - 1 > index:
                    if type(r) is WriteRun:
                        r.cut_after(index, err)
                    else:
                        r.fail(err)

    def pending_responders(self) -> list[Responder]:
        """Responders not answered yet (queued, held or waiting in the buffer; a
        ``WriteRun`` stands for its writers: ``messages.responder_futures``)."""
        out = list(self._responders)
        for item in self._batches():
            out.extend(item[1])
        return out

    async def run(self) -> None:
        """Apply until stopped; a failing ``apply`` stops the node. However it ends, every
        queued call fails (``_end``)."""
        try:
            while not self._stopped:
                if not self._queue:
                    self._idle = True
                    try:
                        await self._wakeup.wait()
                    finally:
                        self._idle = False
                    continue
                item = self._queue.popleft()
                if isinstance(item, _Op):
                    await self._run_op(item)
                    continue
                if isinstance(item, _Started):
                    if not self._finish(item.chunk, await item):
                        return
                    continue
                if self._held is not None:
                    self._held.append(item)
                    continue
                entries, responders = item
                if responders:
                    self._responders.extend(responders)
                if not entries:
                    continue
                for i in range(0, len(entries), self.max_batch):
                    chunk = entries[i : i + self.max_batch] if len(entries) > self.max_batch else entries
                    if not self._finish(chunk, await self._apply(chunk)):
                        return
        except asyncio.CancelledError as e:
            stray = stray_cancel("the state machine's apply", e)
            if stray is None:
                # The core calls ``stop(err)`` before cancelling: ``err`` is kept, not this.
                self._end(Stopped())
                raise
            err = StorageError("applying entries to the state machine", stray)
            err.__cause__ = stray
            self._end(err)
            self.notify(Failed(err))
        except Exception as e:  # noqa: BLE001 - any failure of the user's state machine is fatal
            err = StorageError("applying entries to the state machine", e)
            err.__cause__ = e
            self._end(err)
            self.notify(Failed(err))
        finally:
            self._end(Stopped())

    async def _run_op(self, op: _Op) -> None:
        if op.fut.done():
            # Its caller gave up while it was queued (a replication stream stopped): nothing
            # is opened for nobody (``get_current_snapshot`` may read a whole file to check it).
            return
        self._current = op
        try:
            result = await op.fn(self.sm)
        except asyncio.CancelledError as e:
            stray = stray_cancel("the state machine's get_current_snapshot, begin_receiving_snapshot or install_snapshot", e)
            if stray is None:
                raise
            if not op.fut.done():
                op.fut.set_exception(stray)  # as any exception of ``fn``: the worker goes on
            return
        except BaseException as e:  # noqa: BLE001 - the caller decides what a failure means
            if not op.fut.done():
                op.fut.set_exception(e)
            return
        finally:
            self._current = None
        if not op.fut.done():
            op.fut.set_result(result)
        elif op.discard is not None:
            op.discard(result)  # nobody takes it: its caller gave up, or the worker ended

    def _resolve(self, entries: list[Entry], results: list[Any]) -> None:
        """Answer every responder whose entries are now all applied."""
        rs = self._responders
        start = entries[0].log_id.index
        last = entries[-1].log_id.index
        if (
            not self._buf_entries
            and len(rs) == len(entries)
            and rs[0].first == start
            and rs[-1].first == last
            and rs[-1].count == 1
            and find_payload(entries, Membership) < 0
        ):
            # The steady state of a leader with one writer at a time: one responder per
            # entry, in order (the responders are disjoint and ordered by ``first``, each of
            # at least one entry, so ``len(entries)`` of them from ``start`` to ``last`` hold
            # one entry each). Without a membership entry in ``entries`` every responder is a
            # client write (or a run of one write, cut from a longer one).
            for r, e, v in zip(rs, entries, results):
                log_id = e.log_id
                if log_id.term == r.term and r.single:
                    try:
                        r.tx.set_result(ClientWriteResponse(log_id, v, None))
                    except asyncio.InvalidStateError:
                        pass  # the caller gave up (its future was cancelled)
                elif type(r) is WriteRun:
                    _answer_run(r, entries, results, log_id.index - start)
                else:
                    _answer_one(r, e, v)
            rs.clear()
            return
        if not self._buf_entries and rs[0].first >= start and (end := rs[-1]).first + end.count - 1 <= last:
            # Every waiting responder's entries are in ``entries`` (the steady state of a busy
            # leader: runs of writes, ``WriteRun``): answered from them, with no buffer.
            for r in rs:
                _answer_at(r, entries, results, r.first - start)
            rs.clear()
            return
        if not self._buf_entries:
            self._buf_start = start
            self._buf_entries = list(entries)
            self._buf_results = list(results)
        else:
            self._buf_entries.extend(entries)
            self._buf_results.extend(results)
        start = self._buf_start
        buf_entries = self._buf_entries
        buf_results = self._buf_results
        while rs:
            r = rs[0]
            if r.first + r.count - 1 > last:
                break
            rs.popleft()
            lo = r.first - start
            if lo < 0:
                # Applied before the buffer began (cannot be told apart any more).
                r.fail(ForwardToLeader(None, None, outcome_unknown=True))
                continue
            _answer_at(r, buf_entries, buf_results, lo)
        if not rs:
            self._buf_entries = []
            self._buf_results = []
        else:
            drop = rs[0].first - start
            if drop > 4096:
                del self._buf_entries[:drop]
                del self._buf_results[:drop]
                self._buf_start += drop
