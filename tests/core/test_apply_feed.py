"""``ApplyFeed``: committed entries go to the worker once, in order, with the writers they
complete; an entry already handed over answers a late responder at once; truncation and a
snapshot install fail the writers whose entries will not be applied; ``rewind`` after a
refused install takes the held writers back and asks for a resubmit."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py._core import EntryCache
from openraft_py.core.apply_feed import ApplyFeed
from openraft_py.core.log_source import LogSource
from openraft_py.core.messages import ClientWrite
from openraft_py.core.sm_worker import Responder
from openraft_py.errors import ForwardToLeader
from openraft_py.types import EMPTY_STORED_MEMBERSHIP, Entry, LogId, Normal

pytestmark = pytest.mark.timeout(10)


class Worker:
    """Records what the feed hands over; ``held`` is what ``resume`` returns."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], list[int]]] = []
        self.failed_upto: list[int] = []
        self.failed_after: list[int] = []
        self.held: list[Responder] = []

    def submit(self, entries: list[Entry], rs: list[Responder]) -> None:
        self.batches.append(([e.log_id.index for e in entries], [r.first for r in rs]))

    def fail_upto(self, index: int, err: BaseException) -> None:
        self.failed_upto.append(index)

    def fail_after(self, index: int, err: BaseException) -> None:
        self.failed_after.append(index)

    def resume(self) -> list[Responder]:
        return self.held


class Reader:
    async def try_get_log_entries(self, start: int, stop: int) -> list[Entry]:
        return [Entry(LogId(1, i), Normal(b"")) for i in range(start, stop)]


def feed(applied: int | None = None) -> tuple[ApplyFeed, Worker]:
    cache = EntryCache()
    cache.append(5, [Entry(LogId(1, i), Normal(b"")) for i in range(5, 20)])
    w = Worker()
    f = ApplyFeed(LogSource(1, cache, Reader()), w, None if applied is None else LogId(1, applied))  # type: ignore[arg-type]
    return f, w


def write(loop: asyncio.AbstractEventLoop, n: int = 1) -> ClientWrite:
    return ClientWrite(0, n, 0, loop.create_future(), n == 1, [Normal(b"x")] * n)


async def test_submit_hands_each_entry_over_once_with_its_writers() -> None:
    f, w = feed()
    loop = asyncio.get_running_loop()
    f.add_writes(3, 1, [write(loop, 2), write(loop)])  # entries 3-4 and 5
    await f.submit(LogId(1, 4))
    await f.submit(LogId(1, 4))  # nothing new
    await f.submit(LogId(1, 6))
    assert w.batches == [([0, 1, 2, 3, 4], [3]), ([5, 6], [5])]
    assert f.submitted == 6


async def test_a_responder_for_an_entry_handed_over_is_answered_at_once() -> None:
    f, _ = feed(applied=4)
    loop = asyncio.get_running_loop()
    tx = loop.create_future()
    f.add_responder(tx, LogId(1, 3), EMPTY_STORED_MEMBERSHIP)
    assert tx.done() and tx.result().log_id == LogId(1, 3)
    # Later ones wait in index order.
    a, b = loop.create_future(), loop.create_future()
    f.add_responder(a, LogId(1, 9), EMPTY_STORED_MEMBERSHIP)
    f.add_responder(b, LogId(1, 7), EMPTY_STORED_MEMBERSHIP)
    assert [r.first for r in f.responders] == [7, 9]


async def test_fail_after_fails_the_writers_of_deleted_entries() -> None:
    f, w = feed()
    loop = asyncio.get_running_loop()
    ws = [write(loop) for _ in range(3)]
    f.add_writes(5, 1, ws)
    f.fail_after(5, ForwardToLeader(None, None))
    assert not ws[0].tx.done()
    assert all(isinstance(x.tx.exception(), ForwardToLeader) for x in ws[1:])
    assert w.failed_after == [5]


async def test_skip_to_and_rewind_around_a_refused_install() -> None:
    f, w = feed(applied=2)
    loop = asyncio.get_running_loop()
    ws = [write(loop) for _ in range(4)]
    f.add_writes(3, 1, ws)  # entries 3..6
    before = f.skip_to(4)
    assert before == 2 and f.submitted == 4
    assert [x.tx.done() for x in ws] == [True, True, False, False]
    assert all(x.tx.exception().outcome_unknown for x in ws[:2])  # (each error read: none is left unretrieved)
    # The install is refused; the worker held a batch whose writer waits for entry 7.
    w.held = [Responder(7, 1, 1, loop.create_future(), True)]
    f.rewind(before)
    assert f.submitted == 2 and f.resubmit
    assert [r.first for r in f.responders] == [5, 6, 7]
