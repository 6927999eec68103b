"""``ReplicationCore`` under ``Config.max_payload_bytes``: a planned batch whose payloads add
up to more goes as several requests in a row (each the longest prefix within the budget, a
larger entry alone), every part but the last reported as a ``Progress`` with its matching;
a channel hands its requests to the network in plan order, also behind a batch sent in
parts or a storage read (``core/replication.py``, "Byte budget" and "Order").

The network is a fake that records every request and answers it when the test says so, so
each test sees exactly what went out and when.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from openraft_py.config import Config
from openraft_py.core import replication
from openraft_py.core.clock import LoopClock
from openraft_py.core.messages import Progress
from openraft_py.core.replication import ReplicationCore, ReplicationEnv, fitting_prefix, payload_bytes
from openraft_py.engine import Conflict, EntriesPurged, Matched, Replicate, Unreachable
from openraft_py.errors import LogCompacted, StorageError
from openraft_py.errors import Unreachable as UnreachableError
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    Blank,
    Entry,
    LeaderId,
    LogId,
    Membership,
    Normal,
    Vote,
)

pytestmark = pytest.mark.timeout(10)

L1 = Vote(LeaderId(1, 1), True)


def lid(term: int, index: int) -> LogId:
    return LogId(term, index)

BUDGET = 100


def entry(index: int, size: int) -> Entry:
    return Entry(LogId(1, index), Normal(b"x" * size))


class FakeLog:
    """Entries 1..N of given payload sizes; those in ``uncached`` are read from "storage",
    which waits for ``storage_ready``."""

    def __init__(self, sizes: list[int], uncached: set[int] | None = None) -> None:
        self.entries = {i + 1: entry(i + 1, s) for i, s in enumerate(sizes)}
        self.uncached = uncached or set()
        self.storage_ready = asyncio.Event()
        self.reads: list[tuple[int, int]] = []  # (start, stop) of each storage read
        self.purged_from: int | None = None  # reads of this index or later: LogCompacted

    def cached(self, start: int, stop: int) -> list[Entry]:
        out = []
        for i in range(start, stop):
            if i in self.uncached:
                break
            out.append(self.entries[i])
        return out

    async def read(self, start: int, stop: int) -> list[Entry]:
        await self.storage_ready.wait()
        self.reads.append((start, stop))
        if self.purged_from is not None and stop > self.purged_from:
            cause = LogCompacted(f"purged up to {stop - 1}")
            raise StorageError(f"reading log entries [{start}, {stop})", cause) from cause
        return [self.entries[i] for i in range(start, stop)]


class FakeNetwork:
    """Records each request in the order it was handed over; each waits for ``answer``."""

    def __init__(self) -> None:
        self.sent: list[AppendEntriesRequest] = []
        self.pending: list[asyncio.Future[AppendEntriesResponse]] = []
        self.arrived = asyncio.Event()

    async def append_entries(self, req: AppendEntriesRequest, option: Any = None) -> AppendEntriesResponse:
        self.sent.append(req)
        fut: asyncio.Future[AppendEntriesResponse] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.arrived.set()
        return await fut

    async def wait_sent(self, n: int) -> None:
        while len(self.sent) < n:
            self.arrived.clear()
            await self.arrived.wait()

    def answer(self, i: int, *, success: bool = True, error: Exception | None = None) -> None:
        """Answer request ``i``: success (matching its last entry, or prev), a conflict, or
        ``error`` raised to the caller."""
        req = self.sent[i]
        if error is not None:
            self.pending[i].set_exception(error)
            return
        matching = req.entries[-1].log_id if req.entries else req.prev_log_id
        if success:
            self.pending[i].set_result(AppendEntriesResponse(L1, True, matching))
        else:
            self.pending[i].set_result(AppendEntriesResponse(L1, False, None, 0))


class Harness:
    def __init__(self, sizes: list[int], *, uncached: set[int] | None = None, budget: int = BUDGET) -> None:
        self.log = FakeLog(sizes, uncached)
        self.net = FakeNetwork()
        self.notes: list[Any] = []
        self.noted = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        config = Config(max_payload_bytes=budget, max_entry_bytes=budget)
        env = ReplicationEnv(1, config, LoopClock(), self.log, self._no_snapshot, self._spawn, self._notify)
        self.core = ReplicationCore(2, L1, self.net, env)  # type: ignore[arg-type]

    async def _no_snapshot(self) -> None:
        return None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(t)
        return t

    def _notify(self, note: Any) -> None:
        self.notes.append(note)
        self.noted.set()

    async def wait_notes(self, n: int) -> None:
        while len(self.notes) < n:
            self.noted.clear()
            await self.noted.wait()

    def replicate(self, start: int, end: int, gen: int = 1) -> None:
        prev = lid(1, start - 1) if start > 1 else None
        self.core.replicate(Replicate(2, gen, prev, start, end, lid(1, 0)))

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # let ready tasks reach their next await (no time passes)

    def sent_ranges(self) -> list[tuple[int, int]]:
        """``(first index, count)`` of each request handed over."""
        return [(r.entries[0].log_id.index if r.entries else -1, len(r.entries)) for r in self.net.sent]


def describe(note: Any) -> str:
    """``Progress 1-3`` / ``Matched 1-6`` / ``Conflict`` / ``Unreachable@4``: what a note says."""
    if isinstance(note, Progress):
        return f"Progress {note.matching!r}"
    if isinstance(note, Matched):
        return f"Matched {note.matching!r}"
    if isinstance(note, Unreachable):
        return f"Unreachable@{note.start}"
    return type(note).__name__


# -- the budget arithmetic ------------------------------------------------------------------------


def test_payload_bytes_counts_data_membership_encoding_and_blank_as_zero() -> None:
    m = Membership.new([{1, 2}], None)
    es = [entry(1, 10), Entry(LogId(1, 2), Blank()), Entry(LogId(1, 3), m), entry(4, 5)]
    assert payload_bytes(es) == 15 + len(msgspec.msgpack.encode(m))
    assert payload_bytes([entry(1, 10), entry(2, 20)]) == 30
    assert payload_bytes([]) == 0


@pytest.mark.parametrize(
    ("sizes", "want"),
    [
        ([10, 20, 30], 3),  # 60 <= 100: all
        ([50, 50, 1], 2),  # exactly the budget, then over
        ([60, 50], 1),
        ([150, 1], 1),  # larger than the budget on its own: alone
        ([0, 0, 150], 2),  # blanks fit; the large one waits for its own request
        ([100], 1),
    ],
)
def test_fitting_prefix(sizes: list[int], want: int) -> None:
    es = [entry(i + 1, s) for i, s in enumerate(sizes)]
    assert fitting_prefix(es, BUDGET) == want


# -- one planned batch, several requests -----------------------------------------------------------


async def test_a_batch_within_the_budget_is_one_request() -> None:
    h = Harness([40, 60])
    h.replicate(1, 3)
    await h.net.wait_sent(1)
    h.net.answer(0)
    await h.wait_notes(1)
    assert h.sent_ranges() == [(1, 2)]
    assert [describe(n) for n in h.notes] == ["Matched 1-2"]


async def test_a_batch_over_the_budget_goes_in_parts_each_after_the_previous_matched() -> None:
    h = Harness([60, 30, 20, 150, 10, 10])  # parts: [1,2] 90, [3] 20 (+150 > 100), [4] alone, [5,6]
    h.replicate(1, 7)
    await h.net.wait_sent(1)
    await h.settle()
    assert h.sent_ranges() == [(1, 2)], "the next part waits for this one's answer"
    for i, want in enumerate([(3, 1), (4, 1), (5, 2)], start=1):
        h.net.answer(i - 1)
        await h.net.wait_sent(i + 1)
        assert h.sent_ranges()[i] == want
        assert h.net.sent[i].prev_log_id == h.net.sent[i - 1].entries[-1].log_id, "each part follows the last"
    h.net.answer(3)
    await h.wait_notes(4)
    assert [describe(n) for n in h.notes] == ["Progress 1-2", "Progress 1-3", "Progress 1-4", "Matched 1-6"], (
        "each part's match moves the target on; only the last answers the Replicate (frees its slot)"
    )
    assert all(r.leader_commit == lid(1, 0) for r in h.net.sent)
    assert all(payload_bytes(r.entries) <= BUDGET or len(r.entries) == 1 for r in h.net.sent)


async def test_a_part_that_gets_no_answer_ends_the_replicate_as_unreachable_from_that_part() -> None:
    h = Harness([60, 60, 60])
    h.replicate(1, 4)
    await h.net.wait_sent(1)
    h.net.answer(0)
    await h.net.wait_sent(2)
    h.net.answer(1, error=UnreachableError("down"))
    await h.wait_notes(2)
    await h.settle()
    assert h.sent_ranges() == [(1, 1), (2, 1)], "nothing more is sent after a failed part"
    assert [describe(n) for n in h.notes] == ["Progress 1-1", "Unreachable@2"]


async def test_a_refused_part_ends_the_replicate_as_a_conflict() -> None:
    h = Harness([60, 60])
    h.replicate(1, 3)
    await h.net.wait_sent(1)
    h.net.answer(0, success=False)
    await h.wait_notes(1)
    await h.settle()
    assert h.sent_ranges() == [(1, 1)]
    assert isinstance(h.notes[0], Conflict) and len(h.notes) == 1


async def test_a_stopped_channel_sends_no_further_part_and_reports_nothing() -> None:
    h = Harness([60, 60])
    h.replicate(1, 3)
    await h.net.wait_sent(1)
    h.core.stop()
    h.net.answer(0)
    await asyncio.gather(*h.tasks)
    assert h.sent_ranges() == [(1, 1)] and h.notes == []


# -- order across planned batches ------------------------------------------------------------------


async def test_a_later_batch_waits_until_the_split_batch_handed_over_its_last_part() -> None:
    h = Harness([60, 60, 60, 5, 5])
    h.replicate(1, 4)  # three parts
    h.replicate(4, 6)  # planned right after, pipelined
    await h.net.wait_sent(1)
    await h.settle()
    assert h.sent_ranges() == [(1, 1)], "the pipelined batch may not overtake the parts before it"
    h.net.answer(0)
    await h.net.wait_sent(2)
    h.net.answer(1)
    await h.net.wait_sent(4)
    assert h.sent_ranges() == [(1, 1), (2, 1), (3, 1), (4, 2)], (
        "the last part and the next batch are both in flight: pipelining resumes"
    )
    h.net.answer(3)
    h.net.answer(2)
    await h.wait_notes(4)
    assert [describe(n) for n in h.notes] == ["Progress 1-1", "Progress 1-2", "Matched 1-5", "Matched 1-3"]


async def test_a_later_batch_waits_for_an_earlier_one_reading_storage() -> None:
    h = Harness([5, 5, 5, 5], uncached={1, 2})
    h.replicate(1, 3)  # not cached: reads storage
    h.replicate(3, 5)  # cached
    await h.settle()
    assert h.net.sent == [], "the cached batch waits behind the storage read"
    h.log.storage_ready.set()
    await h.net.wait_sent(2)
    assert h.sent_ranges() == [(1, 2), (3, 2)]
    h.net.answer(0)
    h.net.answer(1)
    await h.wait_notes(2)


async def test_a_failed_earlier_batch_still_lets_the_next_one_go() -> None:
    h = Harness([60, 60, 5])
    h.replicate(1, 3)
    h.replicate(3, 4)
    await h.net.wait_sent(1)
    h.net.answer(0, error=UnreachableError("down"))
    await h.net.wait_sent(2)
    assert h.sent_ranges() == [(1, 1), (3, 1)], "the turn passes on an early exit"
    h.net.answer(1)
    await h.wait_notes(2)
    assert [describe(n) for n in h.notes] == ["Unreachable@1", "Matched 1-3"]


async def test_single_entry_larger_than_the_budget_is_one_request() -> None:
    h = Harness([500])
    h.replicate(1, 2)
    await h.net.wait_sent(1)
    h.net.answer(0)
    await h.wait_notes(1)
    assert h.sent_ranges() == [(1, 1)] and [describe(n) for n in h.notes] == ["Matched 1-1"]



# -- reading an uncached batch as its parts go ---------------------------------------------------


async def answer_until_matched(h: Harness) -> None:
    """Answer every request as it is handed over until the ``Replicate``'s own result comes."""
    i = 0
    while not any(isinstance(n, (Matched, EntriesPurged)) for n in h.notes):
        if len(h.net.sent) > i:
            h.net.answer(i)
            i += 1
        await h.settle()


FIRST = 8  # replication.READ_FIRST_ENTRIES (stated here: the test holds the contract)


def test_the_first_read_of_an_uncached_batch_is_the_stated_one() -> None:
    assert getattr(replication, "READ_FIRST_ENTRIES", None) == FIRST


@pytest.mark.parametrize("size", [10, 30, 100], ids=["small", "a third", "a budget"])
async def test_an_uncached_batch_is_read_about_one_budget_at_a_time(size: int) -> None:
    """A batch of 60 entries (20 budgets of data at 10 bytes each) that is not cached is read
    as its parts go: no read takes more than ``READ_FIRST_ENTRIES`` (8) entries or about one
    budget (it was read whole, 60 entries, in one read); the requests and the reports are
    those of the same batch read from the cache."""
    sizes = [size] * 60
    cached = Harness(sizes)
    cached.replicate(1, 61)
    await answer_until_matched(cached)
    h = Harness(sizes, uncached=set(range(1, 61)))
    h.log.storage_ready.set()
    h.replicate(1, 61)
    await answer_until_matched(h)
    assert h.sent_ranges() == cached.sent_ranges()
    assert [describe(n) for n in h.notes] == [describe(n) for n in cached.notes]
    assert all(r.prev_log_id == (lid(1, r.entries[0].log_id.index - 1) if r.entries[0].log_id.index > 1 else None)
               for r in h.net.sent)
    assert [i for r in h.net.sent for i in (e.log_id.index for e in r.entries)] == list(range(1, 61))
    assert h.log.reads[0] == (1, 1 + FIRST)
    assert all(stop - start <= max(FIRST, BUDGET // size) for start, stop in h.log.reads), h.log.reads


async def test_entries_purged_before_a_later_read_of_a_batch_end_it_from_the_first_not_sent() -> None:
    """A purge between two reads of one batch (after a part was sent): ``EntriesPurged``
    from the first entry not sent (the engine sends a snapshot then), nothing more sent."""
    h = Harness([10] * 60, uncached=set(range(1, 61)))
    h.log.storage_ready.set()
    h.log.purged_from = 25
    h.replicate(1, 61)
    await answer_until_matched(h)
    await h.settle()
    sent = h.sent_ranges()
    assert sent and sent[0] == (1, 10)
    first_not_sent = sent[-1][0] + sent[-1][1]
    assert isinstance(h.notes[-1], EntriesPurged) and h.notes[-1].start == first_not_sent, h.notes
    assert [describe(n) for n in h.notes[:-1]] == [f"Progress 1-{r[0] + r[1] - 1}" for r in sent]


async def test_a_channel_stopped_during_a_read_of_a_batch_reads_the_log_no_more() -> None:
    """A channel stopped while the first read of an uncached batch waits (its leader stepped
    down) reads nothing more once that read returns, and sends and reports nothing: its
    next read of the batch came before any check, so a log truncated meanwhile (the new
    leader's entries replacing the old one's) made that read short, which the entry source
    raises as ``Panicked``, stopping the node."""
    from openraft_py.errors import Panicked

    h = Harness([10] * 60, uncached=set(range(1, 61)))

    async def read_or_panic(start: int, stop: int) -> list[Entry]:
        # The log as of the call (a store's read is an image taken then); a range the log
        # no longer holds whole: Panicked, as ``LogSource.read`` raises for a short read.
        image = [h.log.entries.get(i) for i in range(start, stop)]
        await h.log.storage_ready.wait()
        h.log.reads.append((start, stop))
        if None in image:
            raise Panicked(f"log store returned fewer entries for [{start}, {stop})")
        return [e for e in image if e is not None]

    h.log.read = read_or_panic  # type: ignore[method-assign]
    h.replicate(1, 61)
    await h.settle()
    assert h.log.reads == [] and len(h.tasks) == 1  # the first read waits for storage_ready
    h.core.stop()
    for i in range(4, 61):  # truncated after entry 3, as a follower now
        del h.log.entries[i]
    h.log.storage_ready.set()
    await asyncio.wait_for(asyncio.gather(*h.tasks), 5)
    assert h.log.reads == [(1, 1 + FIRST)]
    assert h.net.sent == [] and h.notes == []
