"""The log-store conformance suite: checks any ``RaftLogStorage`` against its contract.

Run it from your own tests (see ``base`` for the builder contract)::

    from openraft_py.testing import run_log_storage_suite

    async def test_my_store(tmp_path):
        @contextlib.asynccontextmanager
        async def builder():
            tmp_path_i = tmp_path / uuid.uuid4().hex
            log, sm = MyLogStore(tmp_path_i), MemStateMachine()
            try:
                yield log, sm
            finally:
                log.close()

        await run_log_storage_suite(builder)   # raises SuiteFailure naming every failed check

The checks follow Openraft's ``testing/log/suite.rs``: initial state, vote and committed,
reads over every half-open range, purge, truncate, append (holes and overlaps refused, the
flush callback, entries of every payload kind read back equal, the caller's list not
kept), readers, what a restart keeps (the log, the vote, each write right after it was
made, the purged log id with its term, also of an empty log), the optional owner record
(``check_owner``: skipped for a store without it), and (in ``restore``) the start-up state
the runtime restores from the store.
Every check starts from an empty store; most fill it with ``LOG``: normal entries 0..=10 of
term 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar

from ...errors import LogCompacted, StoreOwnerMismatch
from ...types import BasicNode, Entry, LogId, LogState, Membership, Normal, Vote
from . import restore
from .base import (
    Builder,
    CheckFn,
    CheckOutcome,
    CheckRegistry,
    CheckSkipped,
    StoreHandle,
    Suite,
    append,
    blank,
    ents,
    expect,
    ids,
    normal,
    read_all,
)

__all__ = ["LogStoreSuite", "run_log_storage_suite"]

_reg = CheckRegistry()
check = _reg.check

LAST = 10
"""The last index of the standard log (``ents(0, LAST + 1)``)."""


async def _fill(h: StoreHandle, stop: int = LAST + 1) -> None:
    await append(h.log_store, ents(0, stop))


def _lid(index: int, term: int = 1) -> LogId:
    return LogId(term, index)


# -- initial state --------------------------------------------------------------------------


@check
async def initial_log_state_empty(h: StoreHandle) -> None:
    """A fresh store has ``LogState(None, None)``."""
    expect(await h.log_store.get_log_state(), LogState(None, None), "get_log_state() of a fresh store")


@check
async def initial_vote_none(h: StoreHandle) -> None:
    """A fresh store has no vote, through the store and through a reader."""
    expect(await h.log_store.read_vote(), None, "read_vote() of a fresh store")
    expect(await h.log_store.get_log_reader().read_vote(), None, "reader.read_vote() of a fresh store")


@check
async def initial_committed_none(h: StoreHandle) -> None:
    """A fresh store has no committed log id."""
    expect(await h.log_store.read_committed(), None, "read_committed() of a fresh store")


@check
async def initial_no_entries(h: StoreHandle) -> None:
    """A fresh store returns no entries (and does not raise ``LogCompacted``)."""
    expect(await h.log_store.try_get_log_entries(0, 10), [], "try_get_log_entries(0, 10) of a fresh store")


# -- vote and committed ---------------------------------------------------------------------


@check
async def save_vote_then_read(h: StoreHandle) -> None:
    """``read_vote`` returns what ``save_vote`` stored."""
    v = Vote.new(1, 2)
    await h.log_store.save_vote(v)
    expect(await h.log_store.read_vote(), v, "read_vote() after save_vote")


@check
async def save_vote_overwrite(h: StoreHandle) -> None:
    """A second ``save_vote`` replaces the first (also a committed vote of the same term)."""
    await h.log_store.save_vote(Vote.new(1, 2))
    await h.log_store.save_vote(Vote.new(3, 4))
    expect(await h.log_store.read_vote(), Vote.new(3, 4), "read_vote() after two saves")
    await h.log_store.save_vote(Vote.new(3, 4, committed=True))
    expect(await h.log_store.read_vote(), Vote.new(3, 4, committed=True), "read_vote() after committing")


@check
async def save_vote_reader_sees_it(h: StoreHandle) -> None:
    """A reader (made before or after the save) reads the saved vote."""
    before = h.log_store.get_log_reader()
    await h.log_store.save_vote(Vote.new(5, 1))
    expect(await before.read_vote(), Vote.new(5, 1), "read_vote() of a reader made before the save")
    expect(await h.log_store.get_log_reader().read_vote(), Vote.new(5, 1), "read_vote() of a new reader")


@check
async def save_committed_then_read(h: StoreHandle) -> None:
    """``read_committed`` returns what was saved (or ``None``: persisting it is optional)."""
    await _fill(h)
    await h.log_store.save_committed(_lid(3))
    got = await h.log_store.read_committed()
    if got not in (_lid(3), None):
        raise AssertionError(f"read_committed() after save_committed(1-3): expected 1-3 or None, got {got!r}")


@check
async def save_committed_overwrite(h: StoreHandle) -> None:
    """A later ``save_committed`` replaces the earlier one."""
    await _fill(h)
    await h.log_store.save_committed(_lid(3))
    await h.log_store.save_committed(_lid(7))
    got = await h.log_store.read_committed()
    if got not in (_lid(7), None):
        raise AssertionError(f"read_committed() after saving 1-3 then 1-7: expected 1-7 or None, got {got!r}")


# -- reads ----------------------------------------------------------------------------------


@check
async def get_log_entries_full(h: StoreHandle) -> None:
    """``try_get_log_entries(0, LAST + 1)`` returns every entry, equal to what was appended."""
    await _fill(h)
    expect(await h.log_store.try_get_log_entries(0, LAST + 1), ents(0, LAST + 1), "entries [0, 11)")


@check
async def get_log_entries_every_range(h: StoreHandle) -> None:
    """Every half-open range ``[a, b)`` with ``0 <= a, b <= LAST + 3`` returns exactly the
    held entries of that range (empty when ``b <= a``, cut at the last entry)."""
    await _fill(h)
    reader = h.log_store.get_log_reader()
    for a in range(0, LAST + 4):
        for b in range(0, LAST + 4):
            want = ids(ents(a, min(b, LAST + 1))) if b > a else []
            expect(ids(await reader.try_get_log_entries(a, b)), want, f"try_get_log_entries({a}, {b})")


@check
async def get_log_entries_empty_range(h: StoreHandle) -> None:
    """``stop <= start`` gives ``[]``."""
    await _fill(h)
    expect(await h.log_store.try_get_log_entries(5, 5), [], "try_get_log_entries(5, 5)")
    expect(await h.log_store.try_get_log_entries(6, 2), [], "try_get_log_entries(6, 2)")


@check
async def get_log_entries_beyond_last(h: StoreHandle) -> None:
    """A range past the last entry returns only what exists, or nothing."""
    await _fill(h)
    expect(ids(await h.log_store.try_get_log_entries(8, 100)), ids(ents(8, LAST + 1)), "try_get_log_entries(8, 100)")
    expect(await h.log_store.try_get_log_entries(LAST + 1, 100), [], "try_get_log_entries(11, 100)")


@check
async def get_log_entries_after_purge_raises_log_compacted(h: StoreHandle) -> None:
    """A range starting at or before the last purged index raises ``LogCompacted``."""
    await _fill(h)
    await h.log_store.purge(_lid(4))
    for start in (0, 3, 4):
        try:
            got = await h.log_store.try_get_log_entries(start, 8)
        except LogCompacted:
            continue
        raise AssertionError(f"try_get_log_entries({start}, 8) after purge(1-4): expected LogCompacted, got {ids(got)!r}")
    expect(ids(await h.log_store.try_get_log_entries(5, 8)), ids(ents(5, 8)), "try_get_log_entries(5, 8) after purge(1-4)")


@check
async def returned_list_not_mutated(h: StoreHandle) -> None:
    """A returned list stays as it was after later appends, truncates and purges."""
    await _fill(h, 6)
    got = await h.log_store.try_get_log_entries(0, 6)
    await append(h.log_store, ents(6, 9))
    await h.log_store.truncate_after(_lid(2))
    await h.log_store.purge(_lid(1))
    expect(ids(got), ids(ents(0, 6)), "an earlier result of try_get_log_entries(0, 6)")


# -- log state ------------------------------------------------------------------------------


@check
async def log_state_after_append(h: StoreHandle) -> None:
    """After appends, ``last_log_id`` is the last entry's id; nothing is purged."""
    await _fill(h)
    expect(await h.log_store.get_log_state(), LogState(None, _lid(LAST)), "get_log_state() after appending 0..=10")
    await append(h.log_store, [normal(2, LAST + 1)])
    expect(await h.log_store.get_log_state(), LogState(None, LogId(2, LAST + 1)), "get_log_state() after appending 2-11")


@check
async def log_state_after_purge(h: StoreHandle) -> None:
    """After ``purge(1-5)``: ``LogState(1-5, 1-10)``."""
    await _fill(h)
    await h.log_store.purge(_lid(5))
    expect(await h.log_store.get_log_state(), LogState(_lid(5), _lid(LAST)), "get_log_state() after purge(1-5)")


@check
async def log_state_after_purge_all(h: StoreHandle) -> None:
    """Purging the last entry leaves ``last_log_id == last_purged_log_id``."""
    await _fill(h)
    await h.log_store.purge(_lid(LAST))
    expect(await h.log_store.get_log_state(), LogState(_lid(LAST), _lid(LAST)), "get_log_state() after purge(1-10)")


@check
async def log_state_after_truncate(h: StoreHandle) -> None:
    """After ``truncate_after(1-6)`` the last log id is 1-6."""
    await _fill(h)
    await h.log_store.truncate_after(_lid(6))
    expect(await h.log_store.get_log_state(), LogState(None, _lid(6)), "get_log_state() after truncate_after(1-6)")


# -- purge ----------------------------------------------------------------------------------


async def _check_purged(h: StoreHandle, upto: int) -> None:
    """The store holds ``upto+1 ..= max(LAST, upto)`` with ``upto`` remembered as purged."""
    st = await h.log_store.get_log_state()
    last = _lid(max(LAST, upto))
    expect(st, LogState(_lid(upto), last), f"get_log_state() after purge(1-{upto})")
    expect(ids(await read_all(h.log_store)), ids(ents(upto + 1, LAST + 1)), f"entries after purge(1-{upto})")
    try:
        await h.log_store.try_get_log_entries(upto, upto + 1)
    except LogCompacted:
        pass
    else:
        raise AssertionError(f"try_get_log_entries({upto}, {upto + 1}) after purge(1-{upto}): expected LogCompacted")
    # The log continues right after: the next append starts at max(LAST, upto) + 1.
    nxt = last.index + 1
    await append(h.log_store, [normal(2, nxt)])
    expect(ids(await h.log_store.try_get_log_entries(nxt, nxt + 1)), [LogId(2, nxt)], f"append at {nxt} after purge(1-{upto})")


@check
async def purge_upto_0(h: StoreHandle) -> None:
    """``purge(1-0)`` deletes only entry 0 and remembers 1-0."""
    await _fill(h)
    await h.log_store.purge(_lid(0))
    await _check_purged(h, 0)


@check
async def purge_upto_5(h: StoreHandle) -> None:
    """``purge(1-5)`` deletes 0..=5, keeps 6..=10, remembers 1-5."""
    await _fill(h)
    await h.log_store.purge(_lid(5))
    await _check_purged(h, 5)


@check
async def purge_upto_20(h: StoreHandle) -> None:
    """``purge(1-20)`` past the last entry (after a snapshot install) empties the log, and
    ``last_log_id`` becomes 1-20; the next append is at 21."""
    await _fill(h)
    await h.log_store.purge(_lid(20))
    await _check_purged(h, 20)


@check
async def purge_twice_and_not_backwards(h: StoreHandle) -> None:
    """Purging in steps works; a purge not beyond the last purged one is a no-op."""
    await _fill(h)
    await h.log_store.purge(_lid(3))
    await h.log_store.purge(_lid(5))
    await h.log_store.purge(_lid(2))
    await _check_purged(h, 5)


@check
async def purge_empty_log(h: StoreHandle) -> None:
    """Purging a pristine log (after installing a snapshot) makes appends start after it."""
    await h.log_store.purge(_lid(7, term=2))
    expect(await h.log_store.get_log_state(), LogState(LogId(2, 7), LogId(2, 7)), "get_log_state() after purge(2-7) of an empty log")
    await append(h.log_store, [normal(2, 8)])
    expect(await h.log_store.get_log_state(), LogState(LogId(2, 7), LogId(2, 8)), "get_log_state() after appending 2-8")


# -- truncate -------------------------------------------------------------------------------


async def _check_truncated(h: StoreHandle, after: int | None, keep_stop: int) -> None:
    await h.log_store.truncate_after(None if after is None else _lid(after))
    what = f"truncate_after({'None' if after is None else f'1-{after}'})"
    expect(ids(await read_all(h.log_store)), ids(ents(0, keep_stop)), f"entries after {what}")
    expect(await h.log_store.try_get_log_entries(keep_stop, LAST + 5), [], f"entries from {keep_stop} after {what}")
    last = _lid(keep_stop - 1) if keep_stop > 0 else None
    expect(await h.log_store.get_log_state(), LogState(None, last), f"get_log_state() after {what}")


@check
async def truncate_after_0(h: StoreHandle) -> None:
    """``truncate_after(1-0)`` keeps only entry 0."""
    await _fill(h)
    await _check_truncated(h, 0, 1)


@check
async def truncate_after_5(h: StoreHandle) -> None:
    """``truncate_after(1-5)`` keeps 0..=5."""
    await _fill(h)
    await _check_truncated(h, 5, 6)


@check
async def truncate_after_11(h: StoreHandle) -> None:
    """``truncate_after(1-11)`` past the last entry changes nothing."""
    await _fill(h)
    await _check_truncated(h, 11, LAST + 1)


@check
async def truncate_after_none(h: StoreHandle) -> None:
    """``truncate_after(None)`` deletes every entry."""
    await _fill(h)
    await _check_truncated(h, None, 0)


@check
async def truncate_after_none_keeps_purged(h: StoreHandle) -> None:
    """After ``purge(1-4)``, ``truncate_after(None)`` deletes 5..=10 and keeps 1-4 purged:
    ``LogState(1-4, 1-4)``."""
    await _fill(h)
    await h.log_store.purge(_lid(4))
    await h.log_store.truncate_after(None)
    expect(await h.log_store.get_log_state(), LogState(_lid(4), _lid(4)), "get_log_state() after purge(1-4), truncate_after(None)")
    expect(await h.log_store.try_get_log_entries(5, LAST + 1), [], "entries [5, 11) after truncating everything")


@check
async def truncate_then_append(h: StoreHandle) -> None:
    """After ``truncate_after(1-5)`` the log continues at 6 with new terms (a follower
    replacing conflicting entries)."""
    await _fill(h)
    await h.log_store.truncate_after(_lid(5))
    await append(h.log_store, ents(6, 9, term=2))
    expect(ids(await read_all(h.log_store)), ids(ents(0, 6) + ents(6, 9, term=2)), "entries after truncate and append")
    expect(await h.log_store.get_log_state(), LogState(None, LogId(2, 8)), "get_log_state() after truncate and append")


# -- append ---------------------------------------------------------------------------------


@check
async def append_single(h: StoreHandle) -> None:
    """Appending one entry at a time builds the log."""
    for i in range(3):
        await append(h.log_store, [normal(1, i)])
    expect(await read_all(h.log_store), ents(0, 3), "entries after three single appends")


@check
async def append_batch(h: StoreHandle) -> None:
    """Batches append in order; payloads come back equal."""
    await append(h.log_store, ents(0, 4))
    await append(h.log_store, ents(4, 9, term=2))
    expect(await read_all(h.log_store), ents(0, 4) + ents(4, 9, term=2), "entries after two batches")


@check
async def append_does_not_keep_the_list(h: StoreHandle) -> None:
    """The store takes ownership of the appended entries, not of the list: the caller
    refilling the list after ``append`` returned changes nothing the store holds."""
    from .base import RecordingFlushed

    for start, stop in ((0, 5), (5, 8)):
        batch = ents(start, stop)
        cb = RecordingFlushed()
        await h.log_store.append(batch, cb)
        await cb.wait()
        batch[:] = [normal(9, 0)]
        expect(ids(await read_all(h.log_store)), ids(ents(0, stop)), f"entries after appending {start}..={stop - 1} and refilling the list")


@check
async def append_hole_refused(h: StoreHandle) -> None:
    """An append leaving a hole raises ``ValueError``; the log is unchanged and the
    callback is not called. Also for a pristine log not starting at 0."""
    from .base import RecordingFlushed

    for prefill, bad in ((0, 1), (5, 7)):
        if prefill:
            await _fill(h, prefill)
        cb = RecordingFlushed()
        try:
            await h.log_store.append([normal(1, bad)], cb)
        except ValueError:
            pass
        else:
            raise AssertionError(f"append at index {bad} after {prefill} entries: expected ValueError")
        await asyncio.sleep(0.01)
        expect(cb.calls, 0, f"io_completed calls after the refused append at {bad}")
        expect(ids(await read_all(h.log_store)), ids(ents(0, prefill)), f"entries after the refused append at {bad}")


@check
async def append_overlap_refused(h: StoreHandle) -> None:
    """An append at an index the log holds or purged (not its next one) raises
    ``ValueError``; the log is unchanged and the callback is not called. (A store that
    writes such entries over the ones it holds, an ``INSERT OR REPLACE`` keyed by index,
    leaves a log whose later entries do not follow them: the node truncates first.)"""
    from .base import RecordingFlushed

    await _fill(h, 5)
    for bad, purged in ((3, None), (0, None), (4, _lid(4)), (2, _lid(4))):
        if purged is not None:
            await h.log_store.purge(purged)
        held = await read_all(h.log_store)
        what = f"append of 2-{bad} to the log 1-0..=1-4" + ("" if purged is None else f" purged up to {purged!r}")
        cb = RecordingFlushed()
        try:
            await h.log_store.append([normal(2, bad)], cb)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{what}: expected ValueError")
        await asyncio.sleep(0.01)
        expect(cb.calls, 0, f"io_completed calls after the refused {what}")
        expect(ids(await read_all(h.log_store)), ids(held), f"entries after the refused {what}")
        expect(
            await h.log_store.get_log_state(),
            LogState(purged, _lid(4)),
            f"get_log_state() after the refused {what}",
        )


@check
async def append_callback_called_once(h: StoreHandle) -> None:
    """``io_completed(None)`` is called exactly once per append (also for an empty one)."""
    cbs = [await append(h.log_store, ents(0, 3)), await append(h.log_store, []), await append(h.log_store, ents(3, 4))]
    await asyncio.sleep(0.05)
    expect([cb.calls for cb in cbs], [1, 1, 1], "io_completed calls per append")
    expect([cb.errors for cb in cbs], [[None]] * 3, "io_completed errors per append")


@check
async def append_readable_on_return(h: StoreHandle) -> None:
    """Entries are readable as soon as ``append`` returns, before the flush is awaited."""
    from .base import RecordingFlushed

    cb = RecordingFlushed()
    await h.log_store.append(ents(0, 5), cb)
    expect(ids(await h.log_store.get_log_reader().try_get_log_entries(0, 5)), ids(ents(0, 5)), "entries right after append returned")
    await cb.wait()


def _every_payload_kind() -> list[Entry]:
    """Entries 0..=6 of every payload kind, each as a store could spoil it in its encoding:
    a joint membership with a learner and addresses (one not ASCII), a blank entry, empty
    data, every byte value (not UTF-8), 256 KiB of data, a membership whose learner has no
    address, and data of a later term."""
    nodes = {1: BasicNode("10.0.0.1:5001"), 2: BasicNode("10.0.0.2:5001"), 4: BasicNode("[::1]:5004"), 9: BasicNode("nœud-9:5009")}
    return [
        Entry(LogId(1, 0), Membership.new([{1, 2}, {1, 4}], nodes)),
        blank(1, 1),
        normal(1, 2, b""),
        normal(1, 3, bytes(range(256))),
        normal(1, 4, bytes(range(256)) * 1024),
        Entry(LogId(1, 5), Membership.new([{1}], {2: BasicNode()})),
        normal(3, 6, b"\x00later term\xff"),
    ]


def _expect_entries(got: list[Entry], want: list[Entry], what: str) -> None:
    """Raise ``AssertionError`` naming the first entry of ``got`` that differs from
    ``want``'s, and how: for data, the first byte that differs (an entry's repr shows 16
    bytes); for a membership, its voter sets and nodes (its repr shows no address)."""
    expect(ids(got), ids(want), f"log ids of the entries {what}")
    for g, w in zip(got, want):
        if g == w:
            continue
        where = f"entry {w.log_id!r} {what}"
        if type(g.payload) is Normal and type(w.payload) is Normal:
            a, b = w.payload.data, g.payload.data
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise AssertionError(
                f"{where}: the data differs from byte {at} on: expected {len(a)} bytes, {a[at : at + 8]!r}... "
                f"there, got {len(b)} bytes, {b[at : at + 8]!r}..."
            )
        if type(g.payload) is Membership and type(w.payload) is Membership:
            expect((g.payload.configs, g.payload.nodes), (w.payload.configs, w.payload.nodes), f"{where}: the membership's voter sets and nodes")
        expect(g, w, where)


@check
async def append_every_payload_kind(h: StoreHandle) -> None:
    """Entries of every payload kind read back equal: memberships with their learners and
    addresses, blank entries, empty, binary and large data; also through a reader and, with
    ``reopen``, after a restart."""
    log = _every_payload_kind()
    await append(h.log_store, log)
    _expect_entries(await h.log_store.try_get_log_entries(0, len(log)), log, "read back")
    _expect_entries(await h.log_store.get_log_reader().try_get_log_entries(0, len(log)), log, "read back by a reader")
    if h.reopen is not None:
        await h.restart()
        _expect_entries(await h.log_store.try_get_log_entries(0, len(log)), log, "read back after reopen")
        expect(await h.log_store.get_log_state(), LogState(None, LogId(3, 6)), "get_log_state() after reopen")


# -- readers --------------------------------------------------------------------------------


@check
async def reader_sees_new_entries(h: StoreHandle) -> None:
    """A reader made before appends, truncates and purges sees their effects."""
    reader = h.log_store.get_log_reader()
    await _fill(h)
    expect(ids(await reader.try_get_log_entries(0, LAST + 1)), ids(ents(0, LAST + 1)), "reader after append")
    await h.log_store.truncate_after(_lid(7))
    expect(ids(await reader.try_get_log_entries(0, LAST + 1)), ids(ents(0, 8)), "reader after truncate_after(1-7)")
    await h.log_store.purge(_lid(2))
    expect(ids(await reader.try_get_log_entries(3, LAST + 1)), ids(ents(3, 8)), "reader after purge(1-2)")


@check
async def independent_readers(h: StoreHandle) -> None:
    """Several readers read concurrently, each getting its own complete result."""
    await _fill(h)
    readers = [h.log_store.get_log_reader() for _ in range(4)]
    ranges = [(0, 11), (2, 5), (5, 11), (9, 20)]
    got = await asyncio.gather(*(r.try_get_log_entries(a, b) for r, (a, b) in zip(readers, ranges)))
    for (a, b), g in zip(ranges, got):
        expect(ids(g), ids(ents(a, min(b, LAST + 1))), f"concurrent reader [{a}, {b})")


# -- restart ------------------------------------------------------------------------------


@check
async def reopen_keeps_log(h: StoreHandle) -> None:
    """After a restart (``reopen``) the vote, entries and purge are still there (skipped
    without ``reopen``)."""
    await _fill(h)
    await h.log_store.save_vote(Vote.new(2, 1, committed=True))
    await h.log_store.purge(_lid(3))
    await h.log_store.truncate_after(_lid(8))
    await h.log_store.save_committed(_lid(6))
    await h.restart()
    expect(await h.log_store.read_vote(), Vote.new(2, 1, committed=True), "read_vote() after reopen")
    expect(await h.log_store.get_log_state(), LogState(_lid(3), _lid(8)), "get_log_state() after reopen")
    expect(await read_all(h.log_store), ents(4, 9), "entries after reopen")
    got = await h.log_store.read_committed()
    if got not in (_lid(6), None):
        raise AssertionError(f"read_committed() after reopen: expected 1-6 or None, got {got!r}")
    await append(h.log_store, ents(9, 11))
    expect(ids(await read_all(h.log_store)), ids(ents(4, 11)), "entries after reopen and append")


@check
async def reopen_right_after_each_write(h: StoreHandle) -> None:
    """Each write is durable once it says so: a restart (``reopen``) right after an append
    (its callback called), a ``save_vote``, a ``truncate_after`` or a ``purge``, with no
    other write after it, finds it (a write left in a transaction that only the next write
    commits fails here; skipped without ``reopen``)."""
    await _fill(h, 6)
    await h.restart()
    expect(ids(await read_all(h.log_store)), ids(ents(0, 6)), "entries after appending 0..=5 and reopen")
    await h.log_store.save_vote(Vote.new(4, 2, committed=True))
    await h.restart()
    expect(await h.log_store.read_vote(), Vote.new(4, 2, committed=True), "read_vote() after save_vote and reopen")
    expect(await h.log_store.get_log_reader().read_vote(), Vote.new(4, 2, committed=True), "reader.read_vote() after save_vote and reopen")
    await h.log_store.truncate_after(_lid(4))
    await h.restart()
    expect(await h.log_store.get_log_state(), LogState(None, _lid(4)), "get_log_state() after truncate_after(1-4) and reopen")
    await h.log_store.purge(_lid(2))
    await h.restart()
    expect(await h.log_store.get_log_state(), LogState(_lid(2), _lid(4)), "get_log_state() after purge(1-2) and reopen")
    expect(ids(await read_all(h.log_store)), ids(ents(3, 5)), "entries after purge(1-2) and reopen")


@check
async def reopen_keeps_the_purged_log_id(h: StoreHandle) -> None:
    """The last purged log id survives a restart (``reopen``) with its own term, also when
    no entry is left: entries 0..=4 of term 1 and 5..=10 of term 3, ``purge(1-4)``; then
    ``truncate_after(None)``; then ``purge(3-15)`` past the end (a snapshot installed): each
    followed by a restart. The log continues after it (skipped without ``reopen``)."""
    await append(h.log_store, ents(0, 5) + ents(5, LAST + 1, term=3))
    await h.log_store.purge(_lid(4))
    await h.restart()
    expect(await h.log_store.get_log_state(), LogState(_lid(4), LogId(3, LAST)), "get_log_state() after purge(1-4) and reopen")
    await h.log_store.truncate_after(None)
    await h.restart()
    expect(await h.log_store.get_log_state(), LogState(_lid(4), _lid(4)), "get_log_state() after purge(1-4), truncate_after(None) and reopen")
    await h.log_store.purge(LogId(3, 15))
    await h.restart()
    expect(await h.log_store.get_log_state(), LogState(LogId(3, 15), LogId(3, 15)), "get_log_state() after purge(3-15) past the end and reopen")
    await append(h.log_store, [normal(3, 16)])
    expect(ids(await read_all(h.log_store)), [LogId(3, 16)], "entries after appending 3-16")


# -- the optional owner record (``check_owner``) ------------------------------------------


def _check_owner_of(h: StoreHandle) -> Callable[[int, str], Awaitable[None]]:
    """The store's ``check_owner``; ``CheckSkipped`` for a store without it (it is optional)."""
    fn = getattr(h.log_store, "check_owner", None)
    if fn is None:
        raise CheckSkipped("the log store has no check_owner() (optional)")
    return fn  # type: ignore[no-any-return]


async def _expect_owner_refused(h: StoreHandle, node_id: int, cluster_name: str, what: str) -> None:
    try:
        await _check_owner_of(h)(node_id, cluster_name)
    except StoreOwnerMismatch:
        return
    raise AssertionError(f"check_owner({node_id}, {cluster_name!r}) {what}: returned, expected StoreOwnerMismatch")


@check
async def owner_recorded_then_checked(h: StoreHandle) -> None:
    """``check_owner(1, "c")`` on a fresh store records the owner; the same call again
    passes; another node id or cluster name raises ``StoreOwnerMismatch`` and changes nothing;
    after a restart (``reopen``) the record is still there (skipped without
    ``check_owner``; the restart part without ``reopen``)."""
    check_owner = _check_owner_of(h)
    await check_owner(1, "c")
    await check_owner(1, "c")
    await append(h.log_store, ents(0, 3))
    await h.log_store.save_vote(Vote.new(2, 1))
    await _expect_owner_refused(h, 2, "c", "of a store recorded for node 1 of 'c'")
    await _expect_owner_refused(h, 1, "d", "of a store recorded for node 1 of 'c'")
    expect(await h.log_store.get_log_state(), LogState(None, _lid(2)), "get_log_state() after a refused check_owner")
    expect(await h.log_store.read_vote(), Vote.new(2, 1), "read_vote() after a refused check_owner")
    await h.restart()
    await _expect_owner_refused(h, 2, "c", "after a restart of a store recorded for node 1 of 'c'")
    await _check_owner_of(h)(1, "c")


@check
async def owner_adopted_by_the_first_check(h: StoreHandle) -> None:
    """A store that holds a log and a vote but no owner (written before the store had
    ``check_owner``) is adopted by the first ``check_owner``, its log and vote kept (skipped
    without ``check_owner``)."""
    await append(h.log_store, ents(0, LAST + 1))
    await h.log_store.save_vote(Vote.new(2, 1))
    await _check_owner_of(h)(3, "c")
    expect(ids(await read_all(h.log_store)), ids(ents(0, LAST + 1)), "entries after check_owner adopted the store")
    expect(await h.log_store.read_vote(), Vote.new(2, 1), "read_vote() after check_owner adopted the store")
    await _expect_owner_refused(h, 1, "c", "of a store adopted by node 3 of 'c'")


class LogStoreSuite(Suite):
    """Every log-store check, then the start-up checks of ``restore``."""

    name = "LogStoreSuite"
    checks: ClassVar[dict[str, CheckFn]] = {**_reg.checks, **restore.registry.checks}


async def run_log_storage_suite(
    builder: Builder, *, only: Iterable[str] | None = None, raise_on_failure: bool = True, timeout: float | None = 10.0
) -> list[CheckOutcome]:
    """``LogStoreSuite.run_all(builder, ...)``: run the log-store checks and return the
    report; raises ``SuiteFailure`` naming every failed check."""
    return await LogStoreSuite.run_all(builder, only=only, raise_on_failure=raise_on_failure, timeout=timeout)
