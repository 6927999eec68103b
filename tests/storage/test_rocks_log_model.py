"""``RocksLogStore`` against a model of its log, over random sequences of the calls a Raft node
makes: a leader's small appends (which wait a few loop passes to be written), its larger ones,
a follower's appends, appends large enough for the writer thread, truncations, purges, votes
and committed ids, with a random number of loop passes between calls, in each durability mode
of the store. After each call the store's view must match the model; every append must be
acknowledged exactly once, without error; and after ``close()`` or ``aclose()`` a reopened
store must read what the model holds. A failure names its seed, which reproduces it."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from openraft_py.storage import IOFlushed
from openraft_py.storage.rocks import RocksLogStore
from openraft_py.storage.rocks.log_store import WRITE_AFTER_SENDS_MAX, WRITE_NOW_MAX
from openraft_py.types import Entry, LogId, LogState, Normal, Vote

pytestmark = [pytest.mark.timeout(120)]



class Model:
    """What the calls made so far leave in the log: the terms of the entries kept, the last
    purged and the last log id, the vote and the committed id last saved."""

    def __init__(self) -> None:
        self.terms: dict[int, int] = {}
        self.purged: LogId | None = None
        self.last: LogId | None = None
        self.vote: Vote | None = None
        self.committed: LogId | None = None

    def next_index(self) -> int:
        return 0 if self.last is None else self.last.index + 1

    def first_index(self) -> int:
        return 0 if self.purged is None else self.purged.index + 1

    def log_id(self, index: int) -> LogId:
        return LogId(self.terms[index], index)


def payload(term: int, index: int) -> bytes:
    return b"t%d-i%d" % (term, index)


async def run_sequence(path: Path, seed: int, steps: int, **store_options: Any) -> None:
    rng = random.Random(seed)
    model = Model()
    loop = asyncio.get_running_loop()
    # Each append's acknowledgement (``IOFlushed`` refuses a second one), by step.
    acks: dict[int, asyncio.Future[BaseException | None]] = {}
    term = 1
    store = RocksLogStore(path, **store_options)
    closed = False
    try:
        for step in range(steps):
            where = f"seed {seed}, step {step}"
            op = rng.choices(
                ["small", "large", "follower", "thread", "truncate", "purge", "vote", "committed"],
                weights=[30, 10, 15, 2, 6, 3, 3, 8],
            )[0]
            if op in ("small", "large", "follower", "thread"):
                n = {
                    "small": rng.randint(1, WRITE_AFTER_SENDS_MAX),
                    "large": rng.randint(WRITE_AFTER_SENDS_MAX + 1, 80),
                    "follower": rng.randint(1, 40),
                    "thread": rng.randint(WRITE_NOW_MAX + 1, WRITE_NOW_MAX + 40),
                }[op]
                first = model.next_index()
                entries = [Entry(LogId(term, i), Normal(payload(term, i))) for i in range(first, first + n)]
                ack = acks[step] = loop.create_future()
                await store.append(entries, IOFlushed(ack.set_result, loop, sends_first=op != "follower"))
                for i in range(first, first + n):
                    model.terms[i] = term
                model.last = LogId(term, first + n - 1)
            elif op == "truncate" and model.terms:
                keep = rng.randint(model.first_index() - 1, model.last.index if model.last else -1)
                if keep < model.first_index():
                    await store.truncate_after(None)
                    model.last = model.purged
                else:
                    await store.truncate_after(model.log_id(keep))
                    model.last = model.log_id(keep)
                for i in [i for i in model.terms if i > keep]:
                    del model.terms[i]
                term += 1  # the entries that follow come from a newer leader
            elif op == "purge" and model.terms:
                upto = model.log_id(rng.randint(model.first_index(), model.last.index if model.last else 0))
                await store.purge(upto)
                model.purged = upto
                for i in [i for i in model.terms if i <= upto.index]:
                    del model.terms[i]
            elif op == "vote":
                term += rng.randint(0, 1)
                model.vote = Vote.new(term, rng.randint(1, 3))
                await store.save_vote(model.vote)
            elif op == "committed" and model.terms:
                model.committed = model.log_id(rng.choice(list(model.terms)))
                await store.save_committed(model.committed)
            assert await store.get_log_state() == LogState(model.purged, model.last), where
            if rng.random() < 0.2 and model.last is not None:
                got_entries = await store.try_get_log_entries(model.first_index(), model.next_index())
                assert [(e.log_id.term, e.log_id.index) for e in got_entries] == sorted(
                    (t, i) for i, t in model.terms.items()
                ), where
            for _ in range(rng.choice([0, 0, 1, 2, 3, 5])):
                await asyncio.sleep(0)
        if rng.random() < 0.5:
            store.close()
        else:
            await store.aclose()
        closed = True
        # Closing made everything durable; acknowledgements from the writer thread reach this
        # loop through ``call_soon_threadsafe``.
        await asyncio.wait_for(asyncio.gather(*acks.values()), 10)
    finally:
        if not closed:
            await store.aclose()
    failed = {s: a.result() for s, a in acks.items() if a.result() is not None}
    assert not failed, f"seed {seed}: appends acknowledged with an error: {failed}"
    reopened = RocksLogStore(path, **store_options)
    try:
        assert await reopened.get_log_state() == LogState(model.purged, model.last), f"seed {seed}"
        got_entries = await reopened.try_get_log_entries(model.first_index(), model.next_index())
        assert [(e.log_id.term, e.log_id.index, e.payload) for e in got_entries] == [
            (t, i, Normal(payload(t, i))) for i, t in sorted(model.terms.items())
        ], f"seed {seed}"
        assert await reopened.read_vote() == model.vote, f"seed {seed}"
        assert await reopened.read_committed() == model.committed, f"seed {seed}"
    finally:
        reopened.close()


STORE_OPTIONS = {
    "wal fsync": {},
    "rocksdb fsync": {"fsync_mode": "rocksdb"},
    "no fsync": {"sync": False},
}


@pytest.mark.parametrize("options", list(STORE_OPTIONS.values()), ids=list(STORE_OPTIONS))
@pytest.mark.parametrize("seed", [1, 2, 3, 4, None], ids=["1", "2", "3", "4", "random"])
async def test_random_calls_leave_the_log_the_model_holds(
    tmp_path: Path, seed: int | None, options: dict[str, Any]
) -> None:
    if seed is None:
        seed = random.randrange(2**32)  # a new one each run; a failure names it
    print(f"seed={seed}, store options {options}")
    await run_sequence(tmp_path / "log", seed, 300, **options)


async def durable_with_a_pending_hole(store: RocksLogStore, n: int, hole: tuple[int, int]) -> list[Entry]:
    """Append entries ``[0, n)`` and wait until they are durable, then put ``range(*hole)``
    back in the store's pending view: as when a later append became durable before an
    earlier one. Returns the entries."""
    ack: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    entries = [Entry(LogId(1, i), Normal(payload(1, i))) for i in range(n)]
    await store.append(entries, IOFlushed(ack.set_result, asyncio.get_running_loop()))
    assert await asyncio.wait_for(ack, 10) is None and not store._pending
    store._pending.update((i, entries[i]) for i in range(*hole))
    return entries


@pytest.mark.parametrize("n, hole", [(10, (2, 4)), (200, (50, 60))], ids=["inline reads", "a read in a thread"])
async def test_a_read_across_entries_made_durable_out_of_order(tmp_path: Path, n: int, hole: tuple[int, int]) -> None:
    """Entries wait in the store's pending view until durable, and a later append can become
    durable before an earlier one: the pending view then has entries with durable ones after
    them. A read across them takes each run from where it is. (Set up by putting an earlier
    batch's entries back in the pending view once everything is durable.)"""
    store = RocksLogStore(tmp_path / "log")
    try:
        entries = await durable_with_a_pending_hole(store, n, hole)
        got = await store.try_get_log_entries(0, n)
        assert [e.log_id.index for e in got] == list(range(n))
        assert [e.payload for e in got] == [e.payload for e in entries]
        got = await store.try_get_log_entries(hole[0] + 1, n)  # starting inside the hole
        assert [e.log_id.index for e in got] == list(range(hole[0] + 1, n))
    finally:
        await store.aclose()


async def test_a_read_across_a_hole_cancelled_mid_read_leaves_the_threads_image_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read across a hole in the pending view, cancelled while one stored run is read in a
    worker thread: the cancelled read raises once the thread is done (``in_thread``: a store
    closed after a node's shutdown must not have a thread still reading it); the images not
    yet given to a read are closed, and the one the thread scans stays open until the thread
    is done with it (closing it would free the read options its scan uses)."""
    from openraft_py.storage.rocks import log_store

    n, hole = 300, (150, 160)  # stored [0, 150) and [160, 300): both read in a thread
    images: list[Any] = []

    class Recorded(log_store.BoundedIter):  # type: ignore[misc, name-defined]
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            images.append(self)

    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    open_when_released: list[bool] = []
    real_read = log_store._read_entries

    def held_read(image: Any, start: int) -> list[Entry]:
        try:
            started.set()
            release.wait(10)
            open_when_released.append(hasattr(image, "_it"))
            return real_read(image, start)
        finally:
            finished.set()

    store = RocksLogStore(tmp_path / "log")
    try:
        await durable_with_a_pending_hole(store, n, hole)
        monkeypatch.setattr(log_store, "BoundedIter", Recorded)
        monkeypatch.setattr(log_store, "_read_entries", held_read)
        read = asyncio.ensure_future(store.try_get_log_entries(0, n))
        assert await asyncio.to_thread(started.wait, 10)
        read.cancel()
        done, _ = await asyncio.wait({read}, timeout=0.05)
        assert not done, "the cancelled read returned while its thread still scanned"
        assert hasattr(images[0], "_it"), "the image the thread scans is left to it"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(read, 10)
        assert finished.is_set()
        assert len(images) == 2
        assert not hasattr(images[1], "_it"), "the image no read was given is closed"
        assert open_when_released == [True]
        assert not hasattr(images[0], "_it")  # the read closed its own
    finally:
        release.set()
        await store.aclose()
