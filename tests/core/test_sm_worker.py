"""``StateMachineWorker``'s inline fast path: while its task is idle, a batch whose
``apply`` returns without suspending is applied, answered and reported before ``submit``
returns; an ``apply`` that suspends is finished by the worker's task (and later batches
go through the task, in order); an inline failure stops the worker as a failure in its
task does; nothing runs inline past a queued or running call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.core.messages import Failed
from openraft_py.core.sm_worker import Responder, StateMachineWorker
from openraft_py.errors import StorageError
from openraft_py.types import Blank, ClientWriteResponse, Entry, LogId, Membership, Normal

pytestmark = pytest.mark.timeout(10)

TERM = 1


def entries(first: int, n: int) -> list[Entry]:
    return [Entry(LogId(TERM, i), Normal(b"%d" % i)) for i in range(first, first + n)]


class SM:
    """Answers each entry with its index. ``gate``, when set, is awaited by the next
    ``apply`` (it is cleared once used); ``fail`` makes ``apply`` raise."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def apply(self, batch: list[Entry]) -> list[Any]:
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        if self.fail:
            raise OSError("apply failed")
        self.batches.append([e.log_id.index for e in batch])
        return [e.log_id.index for e in batch]

    async def get_current_snapshot(self) -> None:
        return None


class Harness:
    def __init__(self, max_batch: int = 16, sm: SM | None = None) -> None:
        self.sm = SM() if sm is None else sm
        self.notes: list[Any] = []
        self.applied: list[int] = []
        self.worker = StateMachineWorker(self.notes.append, self.sm, max_batch, lambda i: self.applied.append(i.index))  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker's task and let it reach its wait."""
        self.task = asyncio.ensure_future(self.worker.run())
        for _ in range(3):
            await asyncio.sleep(0)

    def writer(self, first: int, count: int) -> tuple[Responder, asyncio.Future[Any]]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return Responder(first, count, TERM, fut, count == 1), fut

    async def stop(self) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def test_apply_that_does_not_suspend_completes_inside_submit() -> None:
    h = Harness(max_batch=2)
    await h.start()
    r, fut = h.writer(1, 5)
    h.worker.submit(entries(1, 5), [r])
    # No await since submit: applied in chunks of max_batch, answered, reported.
    assert h.sm.batches == [[1, 2], [3, 4], [5]]
    assert h.applied == [2, 4, 5]
    assert fut.done()
    assert [x.data for x in fut.result()] == [1, 2, 3, 4, 5]
    assert all(type(x) is ClientWriteResponse for x in fut.result())
    assert h.notes == []
    await h.stop()


async def test_apply_that_suspends_is_finished_by_the_task_and_later_batches_follow_it() -> None:
    h = Harness(max_batch=2)
    await h.start()
    gate = h.sm.gate = asyncio.Event()
    r1, f1 = h.writer(1, 3)
    h.worker.submit(entries(1, 3), [r1])
    r2, f2 = h.writer(4, 1)
    h.worker.submit(entries(4, 1), [r2])
    await asyncio.sleep(0)
    assert h.applied == [] and not f1.done() and not f2.done()
    gate.set()
    res1 = await asyncio.wait_for(f1, 5)
    res2 = await asyncio.wait_for(f2, 5)
    assert [x.data for x in res1] == [1, 2, 3] and res2.data == 4
    assert h.sm.batches == [[1, 2], [3], [4]]
    assert h.applied == [2, 3, 4]
    # The state machine awaited once: later batches stay on the worker's task.
    r3, f3 = h.writer(5, 1)
    h.worker.submit(entries(5, 1), [r3])
    assert not f3.done()
    assert (await asyncio.wait_for(f3, 5)).data == 5
    await h.stop()


async def test_inline_failure_stops_the_worker_like_a_failure_in_its_task() -> None:
    h = Harness()
    await h.start()
    h.sm.fail = True
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert len(h.notes) == 1 and type(h.notes[0]) is Failed
    err = h.notes[0].error
    assert isinstance(err, StorageError) and "apply failed" in str(err.__cause__)
    assert h.applied == [] and not fut.done()
    assert h.task is not None
    await asyncio.wait_for(h.task, 5)
    with pytest.raises(StorageError):
        await asyncio.wait_for(h.worker.call(lambda sm: sm.get_current_snapshot()), 5)


class WrongResultSM(SM):
    """``SM`` whose ``apply`` returns ``result`` instead of its list of responses."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    async def apply(self, batch: list[Entry]) -> Any:
        await super().apply(batch)
        return self.result


@pytest.mark.parametrize("result", [None, 5, iter([1]), "x"], ids=["None", "int", "iterator", "str"])
@pytest.mark.parametrize("suspends", [False, True], ids=["inline", "task"])
async def test_apply_that_returns_no_list_stops_the_worker_with_a_clear_error(result: Any, suspends: bool) -> None:
    """``apply`` returning ``None`` (a forgotten ``return``) was taken for "no responses":
    the worker went on and the client waiting for the entry was never answered; a value
    without ``len`` escaped as a bare ``TypeError`` (the core failed with ``Panicked``).
    Now both stop the worker with a ``StorageError`` that says what ``apply`` returned."""
    h = Harness(sm=WrongResultSM(result))
    await h.start()
    if suspends:
        h.sm.gate = gate = asyncio.Event()
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    if suspends:
        gate.set()
    assert h.task is not None
    await asyncio.wait_for(h.task, 5)
    assert len(h.notes) == 1 and type(h.notes[0]) is Failed
    err = h.notes[0].error
    assert isinstance(err, StorageError) and isinstance(err.__cause__, TypeError)
    assert f"state machine apply returned {type(result).__name__}" in str(err)
    assert "expected a list of one response per entry (1 entries)" in str(err)
    assert h.applied == [] and not fut.done()  # the core fails the writer with the node's error
    assert r in h.worker.pending_responders()


async def test_apply_may_return_a_tuple() -> None:
    h = Harness(sm=WrongResultSM((7,)))
    await h.start()
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert fut.result().data == 7 and h.applied == [1]
    await h.stop()
    assert h.notes == []


async def _stray_cancel() -> None:
    """Raise ``CancelledError`` the way a library does with a future it cancelled itself:
    the awaiting task is not being cancelled."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut


class CancelsSM(SM):
    """``SM`` whose next ``apply`` raises a stray ``CancelledError`` (after suspending once
    if ``suspend``)."""

    def __init__(self, suspend: bool) -> None:
        super().__init__()
        self.suspend = suspend

    async def apply(self, batch: list[Entry]) -> list[Any]:
        if self.suspend:
            await asyncio.sleep(0)
        await _stray_cancel()
        return await super().apply(batch)


@pytest.mark.parametrize("suspend", [False, True], ids=["inline", "task"])
async def test_a_stray_cancelled_error_from_apply_stops_the_worker_with_a_storage_error(suspend: bool) -> None:
    """Inline, it escaped into the core's task (the node stopped as if shut down, with no
    error); in the worker's task, it ended the worker as if the node were stopping, and the
    node ran on applying nothing. Now it is a failed ``apply`` like any other."""
    h = Harness(sm=CancelsSM(suspend))
    await h.start()
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert h.task is not None
    await asyncio.wait_for(h.task, 5)
    assert not h.task.cancelled()
    assert len(h.notes) == 1 and type(h.notes[0]) is Failed
    err = h.notes[0].error
    assert isinstance(err, StorageError)
    assert "the state machine's apply raised CancelledError (its task was not being cancelled)" in str(err)
    assert isinstance(err.__cause__.__cause__, asyncio.CancelledError)  # type: ignore[union-attr]


async def test_a_stray_cancelled_error_from_a_call_fails_that_call_only() -> None:
    h = Harness()
    await h.start()

    async def snapshot(sm: Any) -> None:
        await _stray_cancel()

    with pytest.raises(RuntimeError, match="raised CancelledError"):
        await asyncio.wait_for(h.worker.call(snapshot), 5)
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert (await asyncio.wait_for(fut, 5)).data == 1  # the worker goes on
    await h.stop()
    assert h.notes == []


async def test_a_cancelled_worker_still_ends_as_cancelled() -> None:
    h = Harness()
    await h.start()
    h.sm.gate = asyncio.Event()
    h.worker.submit(entries(1, 1), [])
    assert h.task is not None
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(h.task, 5)
    assert h.notes == []


async def test_no_inline_apply_behind_a_queued_call() -> None:
    h = Harness()
    await h.start()
    order: list[str] = []
    release = asyncio.Event()

    async def op(sm: Any) -> None:
        order.append("op")
        await release.wait()

    done = h.worker.call(op)
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert h.applied == []
    for _ in range(3):
        await asyncio.sleep(0)
    assert order == ["op"] and h.applied == []
    release.set()
    await asyncio.wait_for(done, 5)
    assert (await asyncio.wait_for(fut, 5)).data == 1
    assert h.applied == [1]
    await h.stop()


async def test_not_inline_before_the_task_waits() -> None:
    h = Harness()
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])
    assert h.applied == [] and not fut.done()
    await h.start()
    assert (await asyncio.wait_for(fut, 5)).data == 1
    await h.stop()


async def test_one_entry_writers_get_their_shape_and_a_replaced_entry_fails() -> None:
    """A one-entry writer gets the response itself (``single``) or a list of one
    (``client_write_many``); an entry whose term is not the writer's was replaced by another
    leader's, and the write is reported lost (not ``outcome_unknown``: nothing of it applied)."""
    from openraft_py.errors import ForwardToLeader

    h = Harness()
    await h.start()
    loop = asyncio.get_running_loop()
    single: asyncio.Future[Any] = loop.create_future()
    many: asyncio.Future[Any] = loop.create_future()
    lost: asyncio.Future[Any] = loop.create_future()
    rs = [Responder(1, 1, TERM, single, True), Responder(2, 1, TERM, many, False), Responder(3, 1, TERM + 1, lost, True)]
    h.worker.submit(entries(1, 3), rs)
    assert single.result().data == 1
    assert [x.data for x in many.result()] == [2]
    err = lost.exception()
    assert isinstance(err, ForwardToLeader) and not err.outcome_unknown
    await h.stop()


class QuietSM(SM):
    """``SM`` with ``apply_without_responses``, which records its batches apart."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet: list[list[int]] = []

    async def apply_without_responses(self, batch: list[Entry]) -> None:
        self.quiet.append([e.log_id.index for e in batch])


class OverridesApplyOnly(QuietSM):
    """Overrides ``apply`` but inherits ``apply_without_responses``: the inherited one
    would bypass this ``apply``, so the worker must not use it."""

    async def apply(self, batch: list[Entry]) -> list[Any]:
        return await super().apply(batch)


async def test_batches_no_responder_waits_on_are_applied_without_responses() -> None:
    sm = QuietSM()
    h = Harness(4, sm)
    await h.start()
    h.worker.submit(entries(1, 6), [])  # a follower's: no responder
    assert sm.quiet == [[1, 2, 3, 4], [5, 6]] and sm.batches == []
    assert h.applied == [4, 6]
    r, fut = h.writer(7, 2)
    h.worker.submit(entries(7, 3), [r])  # a client waits on 7-8: answered by apply
    assert sm.batches == [[7, 8, 9]]
    assert [c.log_id.index for c in fut.result()] == [7, 8] and [c.data for c in fut.result()] == [7, 8]
    h.worker.submit(entries(10, 1), [])
    assert sm.quiet[-1] == [10] and h.applied[-1] == 10
    await h.stop()
    assert h.notes == []


async def test_what_apply_without_responses_returns_is_not_read() -> None:
    class ReturnsSomething(QuietSM):
        async def apply_without_responses(self, batch: list[Entry]) -> Any:
            await super().apply_without_responses(batch)
            return 5

    sm = ReturnsSomething()
    h = Harness(4, sm)
    await h.start()
    h.worker.submit(entries(1, 2), [])
    assert sm.quiet == [[1, 2]] and h.applied == [2]
    await h.stop()
    assert h.notes == []


async def test_apply_without_responses_in_the_worker_task_when_apply_suspends() -> None:
    """Through the worker's task too (after an inline ``apply`` suspended)."""
    sm = QuietSM()
    h = Harness(8, sm)
    await h.start()
    gate = asyncio.Event()
    h.sm.gate = gate
    r, fut = h.writer(1, 1)
    h.worker.submit(entries(1, 1), [r])  # suspends: the task finishes it
    h.worker.submit(entries(2, 2), [])
    gate.set()
    await asyncio.wait_for(fut, 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert sm.batches == [[1]] and sm.quiet == [[2, 3]] and h.applied == [1, 3]
    await h.stop()


async def test_inherited_apply_without_responses_does_not_bypass_an_overriding_apply() -> None:
    sm = OverridesApplyOnly()
    h = Harness(4, sm)
    await h.start()
    h.worker.submit(entries(1, 3), [])
    assert sm.batches == [[1, 2, 3]] and sm.quiet == []
    await h.stop()


async def test_a_cancelled_writer_does_not_stop_the_others_being_answered() -> None:
    """One responder per entry (the busy leader's case): a writer that gave up (its future
    cancelled) is skipped, the writers after it are answered."""
    h = Harness()
    await h.start()
    pairs = [h.writer(i, 1) for i in range(1, 5)]
    pairs[1][1].cancel()
    h.worker.submit(entries(1, 4), [r for r, _ in pairs])
    assert pairs[1][1].cancelled()
    assert [f.result().data for i, (_, f) in enumerate(pairs) if i != 1] == [1, 3, 4]
    assert h.applied == [4] and h.notes == []
    await h.stop()


def _expected(r: Responder, log: dict[int, Entry]) -> Any:
    """What ``r`` must get once its entries are applied (the SM answers each entry with its
    index): the responses (the first alone if ``single``), or ``ForwardToLeader`` naming
    whether an earlier entry of its batch was its own when one was replaced."""
    from openraft_py.errors import ForwardToLeader

    out = []
    for k in range(r.first, r.first + r.count):
        e = log[k]
        if e.log_id.term != r.term:
            return ForwardToLeader(None, None, outcome_unknown=k > r.first)
        p = e.payload
        out.append(ClientWriteResponse(e.log_id, k, p if isinstance(p, Membership) else None))
    return out[0] if r.single else out


@pytest.mark.parametrize("seed", range(40))
async def test_answers_match_the_model_for_any_mix_of_responders(seed: int) -> None:
    """Random logs and responders, applied in random chunks: blank and membership entries,
    several responders waiting on one membership entry, multi-entry writers (whole or as a
    list), writers whose entries another leader replaced, cancelled writers. Every writer
    gets what the model says, whichever way the worker resolves a chunk."""
    import random

    from openraft_py.errors import ForwardToLeader

    rng = random.Random(seed)
    h = Harness(max_batch=rng.choice([1, 3, 8, 64]))
    await h.start()
    loop = asyncio.get_running_loop()
    members = Membership.new([{1, 2, 3}], None)
    log: dict[int, Entry] = {}
    rs: list[Responder] = []
    i = 1
    while i <= 200:
        kind = rng.random()
        term = rng.choice([TERM, TERM, TERM, TERM + 1])  # the entry applied may not be the writer's
        if kind < 0.1:
            log[i] = Entry(LogId(term, i), Blank())
            i += 1
        elif kind < 0.2:
            log[i] = Entry(LogId(TERM, i), members)
            for _ in range(rng.choice([1, 1, 2, 3])):
                rs.append(Responder(i, 1, TERM, loop.create_future(), True))
            i += 1
        else:
            count = rng.choice([1, 1, 1, 1, 2, 5])
            rs.append(Responder(i, count, TERM, loop.create_future(), count == 1 or rng.random() < 0.5))
            for k in range(i, i + count):
                log[k] = Entry(LogId(term if k == i + count - 1 else TERM, k), Normal(b"%d" % k))
            i += count
    for r in rs:
        if rng.random() < 0.05:
            r.tx.cancel()
    last = max(log)
    start = 1
    pending = list(rs)
    while start <= last:
        stop = min(last, start + rng.choice([0, 1, 4, 30, 100]))
        handed = [r for r in pending if r.first <= stop]
        pending = pending[len(handed) :]
        h.worker.submit([log[k] for k in range(start, stop + 1)], handed)
        start = stop + 1
    for r in rs:
        assert r.tx.done(), f"seed {seed}: responder {r.first}+{r.count} not answered"
        if r.tx.cancelled():
            continue
        want = _expected(r, log)
        if isinstance(want, ForwardToLeader):
            err = r.tx.exception()
            assert isinstance(err, ForwardToLeader), f"seed {seed}: {r.first}+{r.count} got {r.tx.result()!r}"
            assert err.outcome_unknown == want.outcome_unknown, f"seed {seed}: {r.first}+{r.count}"
        else:
            assert r.tx.result() == want, f"seed {seed}: {r.first}+{r.count}"
    assert h.notes == [] and h.applied[-1] == last
    await h.stop()


async def test_a_responder_handed_over_after_its_entry_applied_is_failed_as_unknown() -> None:
    """Its entry left the buffer before the responder arrived, so whether it was its own
    cannot be told: ``ForwardToLeader`` with ``outcome_unknown``, even when the chunk has
    as many entries as there are responders."""
    from openraft_py.errors import ForwardToLeader

    h = Harness()
    await h.start()
    h.worker.submit(entries(1, 1), [])
    late, late_fut = h.writer(1, 1)
    on_time, on_time_fut = h.writer(3, 1)
    h.worker.submit([Entry(LogId(TERM, 2), Blank()), *entries(3, 1)], [late, on_time])
    err = late_fut.exception()
    assert isinstance(err, ForwardToLeader) and err.outcome_unknown
    assert on_time_fut.result().data == 3
    await h.stop()
