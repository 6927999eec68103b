"""A pass's one-entry writes wait as one ``WriteRun``, and every writer of a run is answered
as if it waited alone: a commit inside a run answers the writers up to it (not once the
run's last entry commits); a truncation fails the writers after its index, a snapshot
those up to its own, the others stay; an entry replaced by another leader's fails its writer
and every later one of the run (the write did not take effect), the earlier ones succeed;
a writer who gave up does not stop the others being answered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py._core import EntryCache
from openraft_py.core.apply_feed import ApplyFeed
from openraft_py.core.log_source import LogSource
from openraft_py.core.messages import ClientWriteOne, WriteRun, responder_futures
from openraft_py.core.sm_worker import StateMachineWorker
from openraft_py.errors import ForwardToLeader
from openraft_py.types import Entry, LogId, Normal

pytestmark = pytest.mark.timeout(10)


class SM:
    """Answers each entry with its index; ``gate``, when set, is awaited by the next
    ``apply`` (and cleared)."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None

    async def apply(self, batch: list[Entry]) -> list[Any]:
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        return [e.log_id.index for e in batch]


class Reader:
    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        raise AssertionError("every entry is in the cache")


def log(terms: dict[int, int], upto: int) -> list[Entry]:
    """Entries 1..``upto`` of term 1, except the indexes ``terms`` gives another term."""
    return [Entry(LogId(terms.get(i, 1), i), Normal(b"%d" % i)) for i in range(1, upto + 1)]


class Node:
    """An apply feed over a real worker whose task runs, and a log in the cache."""

    def __init__(self, entries: list[Entry], max_batch: int = 64) -> None:
        cache = EntryCache()
        cache.append(1, entries)
        self.sm = SM()
        self.applied: list[int] = []
        self.worker = StateMachineWorker(lambda n: None, self.sm, max_batch, lambda i: self.applied.append(i.index))  # type: ignore[arg-type]
        self.feed = ApplyFeed(LogSource(1, cache, Reader()), self.worker, LogId(1, 0))  # type: ignore[arg-type]
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.worker.run())
        await asyncio.wait_for(self._idle(), 5)

    async def _idle(self) -> None:
        while not self.worker._idle:
            await asyncio.sleep(0)

    def commit(self, index: int) -> None:
        assert self.feed.submit_now(LogId(1, index)) is None

    async def stop(self) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def writes(n: int) -> list[ClientWriteOne]:
    loop = asyncio.get_running_loop()
    return [ClientWriteOne(0, 1, 0, loop.create_future(), True, Normal(b"w%d" % k)) for k in range(n)]


def answered(ws: list[ClientWriteOne]) -> list[Any]:
    """Per writer: the index its response names, the class name of its error, or ``None``."""
    out: list[Any] = []
    for w in ws:
        if not w.tx.done():
            out.append(None)
        elif w.tx.cancelled():
            out.append("cancelled")
        elif w.tx.exception() is not None:
            e = w.tx.exception()
            out.append(f"{type(e).__name__}{'?' if getattr(e, 'outcome_unknown', False) else ''}")
        else:
            r = w.tx.result()
            assert r.data == r.log_id.index  # the response of its own entry
            out.append(r.log_id.index)
    return out


async def test_a_commit_inside_a_run_answers_its_writers_up_to_it() -> None:
    n = Node(log({}, 8))
    await n.start()
    ws = writes(5)
    n.feed.add_run(2, 1, ws)  # entries 2..6
    n.commit(4)
    assert answered(ws) == [2, 3, 4, None, None]
    assert [(r.first, r.count) for r in n.feed.responders] == [(5, 2)]
    n.commit(6)
    assert answered(ws) == [2, 3, 4, 5, 6]
    await n.stop()


async def test_a_truncation_inside_a_run_fails_its_writers_after_the_index_only() -> None:
    n = Node(log({}, 8))
    await n.start()
    ws = writes(4)
    n.feed.add_run(2, 1, ws)  # entries 2..5
    n.feed.fail_after(3, ForwardToLeader(None, None, outcome_unknown=True))
    assert answered(ws) == [None, None, "ForwardToLeader?", "ForwardToLeader?"]
    n.commit(5)  # (entries 4 and 5 are another write's now)
    assert answered(ws) == [2, 3, "ForwardToLeader?", "ForwardToLeader?"]
    await n.stop()


async def test_a_truncation_inside_a_run_the_worker_holds_fails_its_tail_only() -> None:
    n = Node(log({}, 8))
    await n.start()
    n.sm.gate = gate = asyncio.Event()
    n.commit(1)  # its apply waits on the gate: the next batch queues behind it
    ws = writes(4)
    n.feed.add_run(2, 1, ws)
    n.commit(5)
    assert n.feed.responders == deque_of()
    n.feed.fail_after(3, ForwardToLeader(None, None, outcome_unknown=True))
    gate.set()
    await asyncio.wait_for(asyncio.wait([w.tx for w in ws[:2]]), 5)
    assert answered(ws) == [2, 3, "ForwardToLeader?", "ForwardToLeader?"]
    await n.stop()


async def test_a_snapshot_inside_a_run_fails_its_writers_up_to_it_only() -> None:
    n = Node(log({}, 8))
    await n.start()
    ws = writes(4)
    n.feed.add_run(3, 1, ws)  # entries 3..6
    before = n.feed.skip_to(4)
    assert before == 0
    assert answered(ws) == ["ForwardToLeader?", "ForwardToLeader?", None, None]
    assert [(r.first, r.count) for r in n.feed.responders] == [(5, 2)]
    n.commit(6)
    assert answered(ws) == ["ForwardToLeader?", "ForwardToLeader?", 5, 6]
    await n.stop()


async def test_a_snapshot_inside_a_run_the_worker_holds_fails_its_head_only() -> None:
    n = Node(log({}, 8))
    await n.start()
    n.sm.gate = gate = asyncio.Event()
    n.commit(1)  # its apply waits on the gate: the next batch queues behind it
    ws = writes(4)
    n.feed.add_run(2, 1, ws)  # entries 2..5
    n.commit(5)
    n.feed.skip_to(3)
    assert answered(ws) == ["ForwardToLeader?", "ForwardToLeader?", None, None]
    gate.set()
    await asyncio.wait_for(asyncio.wait([w.tx for w in ws[2:]]), 5)
    assert answered(ws) == ["ForwardToLeader?", "ForwardToLeader?", 4, 5]
    await n.stop()


async def test_a_run_whose_tail_another_leader_replaced() -> None:
    # Entries 4 and 5 are term 2's: the run's writes of term 1 there did not take effect.
    n = Node(log({4: 2, 5: 2}, 8))
    await n.start()
    ws = writes(4)
    n.feed.add_run(2, 1, ws)  # entries 2..5, written in term 1
    n.commit(5)
    assert answered(ws) == [2, 3, "ForwardToLeader", "ForwardToLeader"]
    await n.stop()


async def test_a_run_applied_in_several_chunks_and_a_writer_who_gave_up() -> None:
    n = Node(log({}, 12), max_batch=3)
    await n.start()
    ws = writes(9)
    ws[4].tx.cancel()
    n.feed.add_run(2, 1, ws)  # entries 2..10, applied 3 at a time from 1
    n.commit(10)
    assert answered(ws) == [2, 3, 4, 5, "cancelled", 7, 8, 9, 10]
    assert n.applied == [3, 6, 9, 10]
    await n.stop()


async def test_a_run_around_a_membership_responder_and_every_future_of_a_run() -> None:
    n = Node(log({}, 8))
    await n.start()
    a, b = writes(2), writes(2)
    n.feed.add_run(1, 1, a)
    loop = asyncio.get_running_loop()
    change: asyncio.Future[Any] = loop.create_future()
    from openraft_py.types import EMPTY_STORED_MEMBERSHIP

    n.feed.add_run(4, 1, b)
    n.feed.add_responder(change, LogId(1, 3), EMPTY_STORED_MEMBERSHIP)
    assert [r.first for r in n.feed.responders] == [1, 3, 4]
    run = n.feed.responders[0]
    assert type(run) is WriteRun and responder_futures(run) == [w.tx for w in a]
    n.commit(5)
    assert answered(a + b) == [1, 2, 4, 5] and change.result().log_id == LogId(1, 3)
    await n.stop()


def deque_of(*rs: Any) -> Any:
    from collections import deque

    return deque(rs)
