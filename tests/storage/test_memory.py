"""MemLogStore, MemStateMachine and NoopStateMachine against the storage contract."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest

from openraft_py.errors import LogCompacted, StorageError
from openraft_py.storage import (
    IOFlushed,
    KvCas,
    KvDelete,
    KvGet,
    KvSet,
    MemDisk,
    MemLogStore,
    MemStateMachine,
    NoopStateMachine,
    decode_kv,
    encode_kv,
)
from openraft_py.types import (
    BLANK,
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    LogState,
    Membership,
    Normal,
    SnapshotMeta,
    StoredMembership,
    Vote,
)

pytestmark = pytest.mark.timeout(10)


def blank(term: int, index: int) -> Entry:
    return Entry(LogId(term, index), BLANK)


def normal(term: int, index: int, data: bytes) -> Entry:
    return Entry(LogId(term, index), Normal(data))


def ents(start: int, stop: int, term: int = 1) -> list[Entry]:
    return [blank(term, i) for i in range(start, stop)]


class Flushes:
    """Collects IOFlushed completions."""

    def __init__(self) -> None:
        self.results: list[BaseException | None] = []

    def cb(self) -> IOFlushed:
        return IOFlushed(self.results.append)


async def append(store: MemLogStore, entries: list[Entry]) -> None:
    f = Flushes()
    await store.append(entries, f.cb())
    assert f.results == [None]


# -- IOFlushed ---------------------------------------------------------------------------------


def test_io_flushed_called_once() -> None:
    got: list[BaseException | None] = []
    cb = IOFlushed(got.append)
    assert not cb.done
    cb.io_completed()
    assert got == [None] and cb.done
    with pytest.raises(RuntimeError, match="more than once"):
        cb.io_completed()
    err = OSError("disk full")
    IOFlushed(got.append).io_completed(err)
    assert got == [None, err]


async def test_io_flushed_forwards_from_foreign_thread() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[BaseException | None, int]] = loop.create_future()
    cb = IOFlushed(lambda e: done.set_result((e, threading.get_ident())), loop)
    t = threading.Thread(target=cb.io_completed)
    t.start()
    t.join()
    err, thread_id = await asyncio.wait_for(done, 2)
    assert err is None
    assert thread_id == threading.get_ident()  # ran on the loop's thread


async def test_io_flushed_same_loop_runs_inline() -> None:
    got: list[BaseException | None] = []
    IOFlushed(got.append, asyncio.get_running_loop()).io_completed(None)
    assert got == [None]


# -- MemLogStore -------------------------------------------------------------------------------


async def test_pristine_log() -> None:
    s = MemLogStore()
    assert await s.get_log_state() == LogState(None, None)
    assert await s.read_vote() is None
    assert await s.read_committed() is None
    assert await s.try_get_log_entries(0, 10) == []


async def test_append_and_read() -> None:
    s = MemLogStore()
    await append(s, ents(0, 5))
    await append(s, ents(5, 8, term=2))
    assert await s.get_log_state() == LogState(None, LogId(2, 7))
    got = await s.try_get_log_entries(2, 6)
    assert [e.log_id for e in got] == [LogId(1, 2), LogId(1, 3), LogId(1, 4), LogId(2, 5)]
    # Fewer only when the log ends; empty for an empty or inverted range.
    assert [e.log_id.index for e in await s.try_get_log_entries(6, 100)] == [6, 7]
    assert await s.try_get_log_entries(8, 10) == []
    assert await s.try_get_log_entries(4, 4) == []
    assert await s.try_get_log_entries(5, 3) == []


async def test_returned_list_is_callers() -> None:
    s = MemLogStore()
    await append(s, ents(0, 3))
    got = await s.try_get_log_entries(0, 3)
    got.clear()
    assert len(await s.try_get_log_entries(0, 3)) == 3


async def test_append_empty_completes() -> None:
    s = MemLogStore()
    await append(s, [])
    assert await s.get_log_state() == LogState(None, None)


async def test_append_rejects_hole_and_overlap() -> None:
    s = MemLogStore()
    f = Flushes()
    with pytest.raises(ValueError, match="without a hole"):
        await s.append(ents(1, 3), f.cb())  # a pristine log starts at 0
    await append(s, ents(0, 3))
    with pytest.raises(ValueError, match="next index is 3"):
        await s.append(ents(4, 5), f.cb())
    with pytest.raises(ValueError, match="without a hole"):
        await s.append(ents(2, 5), f.cb())  # overlap: truncate first
    with pytest.raises(ValueError, match="consecutive"):
        await s.append([blank(1, 3), blank(1, 5)], f.cb())
    assert f.results == []  # the callback is not called on a rejected append
    assert await s.get_log_state() == LogState(None, LogId(1, 2))


async def test_truncate_after() -> None:
    s = MemLogStore()
    await append(s, ents(0, 10))
    await s.truncate_after(LogId(1, 5))
    assert await s.get_log_state() == LogState(None, LogId(1, 5))
    assert len(await s.try_get_log_entries(0, 100)) == 6
    await s.truncate_after(LogId(1, 7))  # beyond the end: no-op
    assert await s.get_log_state() == LogState(None, LogId(1, 5))
    await append(s, ents(6, 8, term=3))  # continues after the truncation point
    assert await s.get_log_state() == LogState(None, LogId(3, 7))
    await s.truncate_after(None)
    assert await s.get_log_state() == LogState(None, None)
    await append(s, ents(0, 1))


async def test_purge() -> None:
    s = MemLogStore()
    await append(s, ents(0, 10))
    await s.purge(LogId(1, 4))
    assert await s.get_log_state() == LogState(LogId(1, 4), LogId(1, 9))
    with pytest.raises(LogCompacted):
        await s.try_get_log_entries(4, 6)
    with pytest.raises(LogCompacted):
        await s.try_get_log_entries(0, 6)
    assert [e.log_id.index for e in await s.try_get_log_entries(5, 7)] == [5, 6]
    await s.purge(LogId(1, 2))  # not beyond the last purged: no-op
    assert await s.get_log_state() == LogState(LogId(1, 4), LogId(1, 9))


async def test_purge_everything_and_beyond() -> None:
    s = MemLogStore()
    await append(s, ents(0, 5))
    await s.purge(LogId(1, 4))
    # Empty after purge: last_log_id == last_purged_log_id.
    assert await s.get_log_state() == LogState(LogId(1, 4), LogId(1, 4))
    assert await s.try_get_log_entries(5, 10) == []
    # Purge beyond the end (after installing a snapshot): appends continue after it.
    await s.purge(LogId(3, 20))
    assert await s.get_log_state() == LogState(LogId(3, 20), LogId(3, 20))
    with pytest.raises(ValueError):
        await s.append(ents(5, 6), Flushes().cb())
    await append(s, ents(21, 23, term=4))
    assert await s.get_log_state() == LogState(LogId(3, 20), LogId(4, 22))
    with pytest.raises(LogCompacted):
        await s.try_get_log_entries(20, 22)


async def test_truncate_after_purge_keeps_purged() -> None:
    s = MemLogStore()
    await append(s, ents(0, 10))
    await s.purge(LogId(1, 4))
    await s.truncate_after(LogId(1, 2))  # below the purge point: deletes every kept entry
    assert await s.get_log_state() == LogState(LogId(1, 4), LogId(1, 4))
    await s.truncate_after(None)
    assert await s.get_log_state() == LogState(LogId(1, 4), LogId(1, 4))
    await append(s, ents(5, 6, term=2))


async def test_vote_and_committed() -> None:
    s = MemLogStore()
    v = Vote.new(3, 2)
    await s.save_vote(v)
    assert await s.read_vote() == v
    await s.save_vote(Vote.new(3, 2, committed=True))
    assert await s.read_vote() == Vote.new(3, 2, committed=True)
    await s.save_committed(LogId(3, 9))
    assert await s.read_committed() == LogId(3, 9)
    await s.save_committed(None)
    assert await s.read_committed() is None


async def test_reader_is_independent_and_live() -> None:
    s = MemLogStore()
    r = s.get_log_reader()
    assert r is not s.get_log_reader()
    await append(s, ents(0, 3))
    assert len(await r.try_get_log_entries(0, 10)) == 3
    await s.save_vote(Vote.new(1, 1))
    assert await r.read_vote() == Vote.new(1, 1)
    await s.purge(LogId(1, 0))
    with pytest.raises(LogCompacted):
        await r.try_get_log_entries(0, 2)


async def test_log_restart_over_same_disk() -> None:
    disk = MemDisk()
    s = MemLogStore(disk)
    await append(s, ents(0, 8))
    await s.purge(LogId(1, 2))
    await s.save_vote(Vote.new(2, 1, committed=True))
    await s.save_committed(LogId(1, 6))
    del s
    s2 = MemLogStore(disk)
    assert s2.disk is disk
    assert await s2.get_log_state() == LogState(LogId(1, 2), LogId(1, 7))
    assert await s2.read_vote() == Vote.new(2, 1, committed=True)
    assert await s2.read_committed() == LogId(1, 6)
    assert [e.log_id.index for e in await s2.try_get_log_entries(3, 8)] == [3, 4, 5, 6, 7]
    await append(s2, ents(8, 9))


async def test_append_large_batches_fast() -> None:
    # Benchmark store: many batches must not degrade (O(batch) append, slice reads).
    s = MemLogStore()
    batch = 1000
    for b in range(200):
        await append(s, ents(b * batch, (b + 1) * batch))
    assert (await s.get_log_state()).last_log_id == LogId(1, 199_999)
    got = await s.try_get_log_entries(150_000, 150_300)
    assert got[0].log_id.index == 150_000 and len(got) == 300


# -- KV commands --------------------------------------------------------------------------------


def test_kv_encoding_round_trip() -> None:
    for cmd in (KvSet("a", "1"), KvDelete("a"), KvCas("a", None, "2"), KvGet("a")):
        assert decode_kv(encode_kv(cmd)) == cmd
    assert decode_kv(b"") is None
    assert decode_kv(b"hello") is None
    assert decode_kv(encode_kv(KvGet("a"))[:-1]) is None  # truncated body: opaque


# -- MemStateMachine ----------------------------------------------------------------------------


def kv_entry(index: int, cmd: object, term: int = 1) -> Entry:
    return normal(term, index, encode_kv(cmd))  # type: ignore[arg-type]


async def test_sm_fresh() -> None:
    sm = MemStateMachine()
    assert await sm.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
    assert await sm.get_current_snapshot() is None


async def test_sm_kv_commands_and_responses() -> None:
    sm = MemStateMachine()
    m = Membership.new([{1, 2, 3}])
    entries = [
        Entry(LogId(0, 0), m),
        blank(1, 1),
        kv_entry(2, KvSet("a", "1")),
        kv_entry(3, KvSet("a", "2")),
        kv_entry(4, KvGet("a")),
        kv_entry(5, KvCas("a", "1", "x")),
        kv_entry(6, KvCas("a", "2", "3")),
        kv_entry(7, KvCas("b", None, "new")),
        kv_entry(8, KvDelete("a")),
        kv_entry(9, KvDelete("a")),
        kv_entry(10, KvGet("a")),
        normal(1, 11, b"opaque payload"),
        normal(1, 12, b""),
    ]
    resps = await sm.apply(entries)
    assert resps == [
        None,
        None,
        None,
        "1",
        "2",
        (False, "2"),
        (True, "3"),
        (True, "new"),
        "3",
        None,
        None,
        None,
        None,
    ]
    assert sm.data == {"b": "new"}
    assert await sm.applied_state() == (LogId(1, 12), StoredMembership(LogId(0, 0), m))
    # Every Normal entry is recorded, opaque ones included.
    assert [lid.index for lid, _ in sm.applied_log] == list(range(2, 13))
    assert sm.applied_log[-2] == (LogId(1, 11), b"opaque payload")


async def test_sm_applies_runs_of_sets_through_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs of sets between other entries go to ``apply_kv_sets`` (the compiled kernel
    in a compiled build), with the same responses, data and records as the general path."""
    import openraft_py.storage.memory as memory

    taken: list[tuple[int, int]] = []
    kernel = memory.apply_kv_sets

    def spy(kv, entries, start, normal_type, responses, applied_log):  # type: ignore[no-untyped-def]
        stop = kernel(kv, entries, start, normal_type, responses, applied_log)
        taken.append((start, stop))
        return stop

    monkeypatch.setattr(memory, "apply_kv_sets", spy)
    entries = [kv_entry(1, KvSet("a", "1")), kv_entry(2, KvSet("b", "2")), kv_entry(3, KvGet("a")),
               kv_entry(4, KvSet("a", "3")), blank(1, 5), kv_entry(6, KvSet("c", "4"))]
    sm = MemStateMachine()
    assert await sm.apply(entries) == [None, None, "1", "1", None, None]
    assert taken == [(0, 2), (3, 4), (5, 6)]  # the get and the blank by the general path
    assert sm.data == {"a": "3", "b": "2", "c": "4"}
    assert [lid.index for lid, _ in sm.applied_log] == [1, 2, 3, 4, 6]
    assert await sm.applied_state() == (LogId(1, 6), EMPTY_STORED_MEMBERSHIP)
    taken.clear()
    quiet = MemStateMachine(record_applied=False)
    await quiet.apply_without_responses(entries)
    assert taken == [(0, 2), (3, 4), (5, 6)]
    assert quiet.data == sm.data and quiet.applied_log == []


async def test_sm_membership_entries_update_stored_membership() -> None:
    sm = MemStateMachine()
    m1 = Membership.new([{1}])
    m2 = Membership.new([{1}, {1, 2, 3}])
    assert await sm.apply([Entry(LogId(0, 0), m1)]) == [None]
    assert (await sm.applied_state())[1] == StoredMembership(LogId(0, 0), m1)
    await sm.apply([blank(1, 1), Entry(LogId(1, 2), m2), blank(1, 3)])
    assert await sm.applied_state() == (LogId(1, 3), StoredMembership(LogId(1, 2), m2))
    assert await sm.apply([]) == []
    assert (await sm.applied_state())[0] == LogId(1, 3)


async def test_sm_record_applied_off() -> None:
    sm = MemStateMachine(record_applied=False)
    await sm.apply([kv_entry(0, KvSet("k", "v")), normal(1, 1, b"x")])
    assert sm.applied_log == []
    assert sm.data == {"k": "v"}


async def test_sm_snapshot_build_and_install() -> None:
    src = MemStateMachine()
    m = Membership.new([{1, 2}])
    await src.apply([Entry(LogId(0, 0), m)] + [kv_entry(i, KvSet(f"k{i}", str(i))) for i in range(1, 6)])
    snap = await src.get_snapshot_builder().build_snapshot()
    assert snap.meta.last_log_id == LogId(1, 5)
    assert snap.meta.last_membership == StoredMembership(LogId(0, 0), m)
    assert snap.data.tell() == 0
    # The built snapshot becomes the current one; each call gives a fresh readable file.
    cur = await src.get_current_snapshot()
    assert cur is not None and cur.meta == snap.meta
    body = cur.data.read()
    cur2 = await src.get_current_snapshot()
    assert cur2 is not None and cur2.data.read() == body
    # Applying more does not change the built snapshot.
    await src.apply([kv_entry(6, KvSet("late", "x"))])

    dst = MemStateMachine()
    await dst.apply([kv_entry(0, KvSet("old", "gone"))])
    f = await dst.begin_receiving_snapshot()
    f.write(snap.data.read())  # leaves the position at the end: install reads from 0
    await dst.install_snapshot(snap.meta, f)
    assert dst.data == {f"k{i}": str(i) for i in range(1, 6)}
    assert await dst.applied_state() == (LogId(1, 5), StoredMembership(LogId(0, 0), m))
    assert dst.applied_log == src.applied_log[:-1]  # the record comes with the snapshot
    got = await dst.get_current_snapshot()
    assert got is not None and got.meta == snap.meta and got.data.read() == body
    # Continue applying after the snapshot.
    assert await dst.apply([kv_entry(6, KvSet("late", "x"))]) == [None]
    assert dst.data == src.data and dst.applied_log == src.applied_log


async def test_sm_install_garbage_keeps_state() -> None:
    sm = MemStateMachine()
    await sm.apply([kv_entry(0, KvSet("a", "1"))])
    snap = await sm.get_snapshot_builder().build_snapshot()
    f = await sm.begin_receiving_snapshot()
    f.write(b"not a snapshot")
    with pytest.raises(ValueError, match="not a MemStateMachine snapshot"):
        await sm.install_snapshot(snap.meta, f)
    assert sm.data == {"a": "1"}
    assert await sm.applied_state() == (LogId(1, 0), EMPTY_STORED_MEMBERSHIP)


def _damaged(body: bytes, how: str) -> bytes:
    """``body`` (a built snapshot: 14-byte header, then its data) spoiled as ``how`` says."""
    raw = bytearray(body)
    if how == "bit-in-value":
        raw[raw.index(b"value0050") + 6] ^= 0x01  # still decodes: value0150
    elif how == "bit-in-checksum":
        raw[12] ^= 0x80
    elif how == "bit-in-length":
        raw[8] ^= 0x40  # 16 KiB more than there are
    elif how == "format":
        raw[1] = 7
    elif how == "cut":
        del raw[-3:]
    elif how == "cut-in-header":
        del raw[9:]
    elif how == "appended":
        raw += b"\x00"
    return bytes(raw)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("bit-in-value", r"checksum mismatch: the data is damaged \(CRC-32 [0-9a-f]{8}, its header says [0-9a-f]{8}\)"),
        ("bit-in-checksum", "checksum mismatch: the data is damaged"),
        ("bit-in-length", r"truncated: (\d+) bytes of data, its header says \d+"),
        ("format", r"snapshot format 7 is not one this version reads \(2\)"),
        ("cut", r"truncated: \d+ bytes of data, its header says \d+"),
        ("cut-in-header", "truncated: 9 bytes, less than its 14-byte header"),
        ("appended", r"1 bytes after the end of its data \(\d+ bytes\)"),
    ],
    ids=["bit-in-value", "bit-in-checksum", "bit-in-length", "format", "cut", "cut-in-header", "appended"],
)
async def test_sm_damaged_or_cut_snapshot_is_refused_state_unchanged(how: str, error: str) -> None:
    """A snapshot whose bytes were spoiled on their way (one bit flipped, cut short, a byte
    added) is refused with ``ValueError`` saying what is wrong, and the state (data, applied,
    current snapshot) is unchanged. A flipped bit inside a value used to be installed: the
    key then held another value than on the leader."""
    src = MemStateMachine()
    await src.apply([kv_entry(i, KvSet(f"k{i}", f"value{i:04d}")) for i in range(1, 100)])
    snap = await src.get_snapshot_builder().build_snapshot()
    body = snap.data.read()

    dst = MemStateMachine()
    await dst.apply([kv_entry(0, KvSet("mine", "1"))])
    mine = await dst.get_snapshot_builder().build_snapshot()
    f = await dst.begin_receiving_snapshot()
    f.write(_damaged(body, how))
    with pytest.raises(ValueError, match=f"not a MemStateMachine snapshot \\({snap.meta.snapshot_id}\\): {error}"):
        await dst.install_snapshot(snap.meta, f)
    assert dst.data == {"mine": "1"}
    assert await dst.applied_state() == (LogId(1, 0), EMPTY_STORED_MEMBERSHIP)
    cur = await dst.get_current_snapshot()
    assert cur is not None and cur.meta == mine.meta
    # The intact bytes install.
    await dst.install_snapshot(snap.meta, snap.data)
    assert dst.data == src.data and dst.data["k50"] == "value0050"


async def test_sm_every_spoiled_byte_is_refused() -> None:
    """Any one byte of a snapshot changed (header or data) is refused, never installed."""
    src = MemStateMachine()
    m = Membership.new([{1, 2}])
    await src.apply([Entry(LogId(0, 0), m)] + [kv_entry(i, KvSet(f"k{i}", f"v{i}")) for i in range(1, 20)])
    snap = await src.get_snapshot_builder().build_snapshot()
    body = snap.data.read()
    for at in range(len(body)):
        raw = bytearray(body)
        raw[at] ^= 0x40
        with pytest.raises(ValueError, match="not a MemStateMachine snapshot"):
            await MemStateMachine().install_snapshot(snap.meta, io.BytesIO(bytes(raw)))


async def test_sm_snapshot_of_the_first_format_is_still_installed() -> None:
    """A snapshot from an earlier version (the msgpack body alone, no header) installs, so a
    node catches up from a leader not upgraded yet."""
    from openraft_py.storage.memory import _encode_snapshot_body

    m = StoredMembership(LogId(0, 0), Membership.new([{1}]))
    log = [(LogId(1, 1), encode_kv(KvSet("a", "1")))]
    old = _encode_snapshot_body({"a": "1"}, LogId(1, 1), m, log, 1)
    assert old[:1] == b"\x94"
    sm = MemStateMachine()
    await sm.install_snapshot(SnapshotMeta(LogId(1, 1), m, "old"), io.BytesIO(old))
    assert sm.data == {"a": "1"} and sm.applied_log == log
    # Built again here, it has the header.
    snap = await sm.get_snapshot_builder().build_snapshot()
    assert snap.data.read()[:2] == b"\xc1\x02"


def _first_format(**change: object) -> tuple[SnapshotMeta, bytes, dict[str, str]]:
    """A snapshot of the first format (no header, no checksum: the msgpack body alone) of 30
    keys, its meta and its data; ``change`` replaces what its body holds (``kv``, ``last``,
    ``membership``, ``log``) but not its meta."""
    from openraft_py.storage.memory import _encode_snapshot_body

    m = StoredMembership(LogId(1, 0), Membership.new([{1, 2, 3}]))
    kv = {f"key{i:03d}": f"value{i:04d}" for i in range(30)}
    log = [(LogId(1, i), encode_kv(KvSet(f"key{i - 1:03d}", f"value{i - 1:04d}"))) for i in range(1, 31)]
    parts: dict[str, object] = {"kv": kv, "last": LogId(1, 30), "membership": m, "log": log, **change}
    plog = parts["log"]
    assert isinstance(plog, list)
    body = _encode_snapshot_body(parts["kv"], parts["last"], parts["membership"], plog, len(plog))  # type: ignore[arg-type]
    assert body[:1] == b"\x94"
    return SnapshotMeta(LogId(1, 30), m, "old"), body, kv


@pytest.mark.parametrize(("change", "error"), [
    ({"last": LogId(1, 29)}, r"its data was applied up to 1-29, but its meta says 1-30: the data is damaged or "
                             r"another snapshot's"),
    ({"last": None}, "its data was applied up to None, but its meta says 1-30"),
    ({"membership": StoredMembership(LogId(1, 0), Membership.new([{1, 2}]))},
     "its data's membership .* is not its meta's .*: the data is damaged or another snapshot's"),
    ({"log": [(LogId(1, 2), b"a"), (LogId(1, 2), b"b")]},
     r"its applied entry 1 \(1-2\) is out of log order: it must come after the one before it \(1-2\) and at most "
     r"at the last applied 1-30: the data is damaged"),
    ({"log": [(LogId(1, 3), b"a"), (LogId(0, 4), b"b")]}, r"its applied entry 1 \(0-4\) is out of log order"),
    ({"log": [(LogId(1, 3), b"a"), (LogId(1, 31), b"b")]}, r"its applied entry 1 \(1-31\) is out of log order"),
    ({"log": [(LogId(5, 3), b"a")]}, r"its applied entry 0 \(5-3\) is out of log order: it must come at most at "
                                     r"the last applied 1-30"),
], ids=["last-applied", "last-applied-none", "membership", "log-repeated", "log-term-down", "log-past-last",
        "log-term-past-last"])
async def test_sm_first_format_snapshot_that_disagrees_with_its_meta_is_refused(change: dict[str, object],
                                                                               error: str) -> None:
    """A snapshot of the first format has no checksum, and was installed unchecked: a body
    holding another last applied log id or membership than its meta (damaged, or another
    snapshot's data under this meta), or an applied record out of log order, was installed,
    the record then disagreeing with the leader's. Now refused with ``ValueError`` saying
    what disagrees, the state unchanged."""
    meta, body, _ = _first_format(**change)
    sm = MemStateMachine()
    await sm.apply([kv_entry(0, KvSet("mine", "1"))])
    with pytest.raises(ValueError, match=f"not a MemStateMachine snapshot \\(old\\): {error}"):
        await sm.install_snapshot(meta, io.BytesIO(body))
    assert sm.data == {"mine": "1"} and await sm.applied_state() == (LogId(1, 0), EMPTY_STORED_MEMBERSHIP)
    assert (await sm.get_current_snapshot()) is None


async def test_sm_first_format_snapshot_with_a_key_damaged_into_another_is_refused() -> None:
    """A flipped bit that turns a key of a first-format snapshot into another of its keys
    (``key001`` into ``key003``) decodes: the key was silently dropped. The map's count says
    how many keys it holds, so such a snapshot is refused."""
    meta, body, kv = _first_format()
    raw = bytearray(body)
    at = raw.index(b"key001") + 5
    raw[at] ^= 0x01 ^ 0x03  # (two bits: '1' -> '3')
    with pytest.raises(ValueError, match=r"its data holds 1 repeated keys: the data is damaged"):
        await MemStateMachine().install_snapshot(meta, io.BytesIO(bytes(raw)))
    sm = MemStateMachine()
    await sm.install_snapshot(meta, io.BytesIO(body))  # intact, it installs
    assert sm.data == kv


async def test_sm_volatile_restart_over_a_damaged_snapshot_is_a_storage_error() -> None:
    """A volatile state machine restarting over a disk whose snapshot is damaged raises
    ``StorageError`` naming the snapshot (it would have restored wrong data)."""
    disk = MemDisk()
    sm = MemStateMachine(disk, volatile=True)
    await sm.apply([kv_entry(i, KvSet(f"k{i}", f"value{i:04d}")) for i in range(1, 100)])
    snap = await sm.get_snapshot_builder().build_snapshot()
    assert disk.snapshot is not None
    disk.snapshot = (disk.snapshot[0], _damaged(disk.snapshot[1], "bit-in-value"))
    with pytest.raises(StorageError, match=f"restoring MemStateMachine from its snapshot {snap.meta.snapshot_id}: "
                       "ValueError: checksum mismatch"):
        MemStateMachine(disk, volatile=True)


async def test_sm_snapshot_ids_unique() -> None:
    sm = MemStateMachine()
    await sm.apply([blank(1, 0)])
    a = await sm.get_snapshot_builder().build_snapshot()
    b = await sm.get_snapshot_builder().build_snapshot()
    assert a.meta.snapshot_id != b.meta.snapshot_id
    empty = await MemStateMachine().get_snapshot_builder().build_snapshot()
    assert empty.meta.last_log_id is None


async def test_sm_restart_keeps_state() -> None:
    disk = MemDisk()
    sm = MemStateMachine(disk)
    m = Membership.new([{1}])
    await sm.apply([Entry(LogId(0, 0), m), kv_entry(1, KvSet("a", "1"))])
    snap = await sm.get_snapshot_builder().build_snapshot()
    await sm.apply([kv_entry(2, KvSet("b", "2"))])
    del sm
    sm2 = MemStateMachine(disk)
    assert sm2.data == {"a": "1", "b": "2"}
    assert await sm2.applied_state() == (LogId(1, 2), StoredMembership(LogId(0, 0), m))
    assert [lid.index for lid, _ in sm2.applied_log] == [1, 2]
    cur = await sm2.get_current_snapshot()
    assert cur is not None and cur.meta == snap.meta


async def test_log_and_sm_share_one_disk() -> None:
    disk = MemDisk()
    log, sm = MemLogStore(disk), MemStateMachine(disk)
    await append(log, [kv_entry(0, KvSet("a", "1"))])
    await sm.apply(await log.try_get_log_entries(0, 1))
    log2, sm2 = MemLogStore(disk), MemStateMachine(disk)
    assert (await log2.get_log_state()).last_log_id == LogId(1, 0)
    assert sm2.data == {"a": "1"}


# -- NoopStateMachine ---------------------------------------------------------------------------


async def test_noop_state_machine() -> None:
    disk = MemDisk()
    sm = NoopStateMachine(disk)
    assert await sm.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
    m = Membership.new([{1, 2}])
    resps = await sm.apply([Entry(LogId(0, 0), m), blank(1, 1), kv_entry(2, KvSet("a", "1")), normal(1, 3, b"x")])
    assert resps == [None, None, None, None]
    assert await sm.applied_state() == (LogId(1, 3), StoredMembership(LogId(0, 0), m))
    assert await sm.apply([]) == []
    assert disk.kv == {} and disk.applied_log == []

    assert await sm.get_current_snapshot() is None
    snap = await sm.get_snapshot_builder().build_snapshot()
    assert snap.meta.last_log_id == LogId(1, 3) and snap.data.read() == b""

    other = NoopStateMachine()
    f = await other.begin_receiving_snapshot()
    await other.install_snapshot(snap.meta, f)
    assert await other.applied_state() == (LogId(1, 3), StoredMembership(LogId(0, 0), m))
    cur = await other.get_current_snapshot()
    assert cur is not None and cur.meta == snap.meta and cur.data.read() == b""

    # Restart over the same disk.
    assert await NoopStateMachine(disk).applied_state() == (LogId(1, 3), StoredMembership(LogId(0, 0), m))


# -- MemStateMachine snapshots: piecewise encoding, copy-on-write, volatile restart ---------------


@pytest.mark.parametrize("n", [0, 1, 15, 16, 4096, 4097, 70000])
def test_piecewise_snapshot_encoding_is_byte_identical(n: int) -> None:
    from openraft_py.storage.memory import _encode_snapshot_body, _KvSnapshotData, _snap_encoder

    kv = {f"k{i}": str(i) * (i % 5) for i in range(n)}
    log = [(LogId(1, i), b"d%d" % i) for i in range(n + 3)]
    m = StoredMembership(LogId(0, 0), Membership.new([{1}]))
    for last in (None, LogId(2, n)):
        one_shot = _snap_encoder.encode(_KvSnapshotData(kv, last, m, log[:n]))
        assert _encode_snapshot_body(kv, last, m, log, n) == one_shot


async def test_sm_build_is_copy_on_write_and_consistent_while_apply_runs() -> None:
    """A build freezes the data and serializes it in a thread; applies keep landing (sets
    and deletes, of keys old and new) and read their own writes; the snapshot is the state
    at its meta exactly; afterwards the data is everything applied."""
    src = MemStateMachine()
    await src.apply([kv_entry(i, KvSet(f"k{i}", "v")) for i in range(20000)])
    build = asyncio.ensure_future(src.get_snapshot_builder().build_snapshot())
    await asyncio.sleep(0)  # the build has frozen the data and is encoding it in pieces
    assert src.disk.kv_overlay is not None
    i = 20000
    assert await src.apply([kv_entry(i, KvDelete("k0"))]) == ["v"]
    assert await src.apply([kv_entry(i + 1, KvSet("k1", "w")), kv_entry(i + 2, KvGet("k1"))]) == ["v", "w"]
    assert await src.apply([kv_entry(i + 3, KvDelete("k0")), kv_entry(i + 4, KvSet("new", "n"))]) == [None, None]
    assert await src.apply([kv_entry(i + 5, KvCas("new", "n", "n2")), kv_entry(i + 6, KvGet("k0"))]) == [(True, "n2"), None]
    during = src.data  # a merged copy while frozen
    assert "k0" not in during and during["k1"] == "w" and during["new"] == "n2"
    snap = await build
    assert src.disk.kv_overlay is None
    assert snap.meta.last_log_id == LogId(1, 19999)
    dst = MemStateMachine()
    await dst.install_snapshot(snap.meta, snap.data)
    assert dst.data == {f"k{i}": "v" for i in range(20000)}
    assert len(dst.applied_log) == 20000
    assert src.data == during and src.data is src.disk.kv


async def test_sm_install_during_build_wins() -> None:
    """An install landing while a build serializes replaces the data; the build's older
    image never becomes current and its overlay is not merged into the new data."""
    donor = MemStateMachine()
    await donor.apply([kv_entry(i, KvSet("d", str(i))) for i in range(50)])
    newer = await donor.get_snapshot_builder().build_snapshot()
    sm = MemStateMachine()
    await sm.apply([kv_entry(i, KvSet(f"k{i}", "v")) for i in range(20000)])
    build = asyncio.ensure_future(sm.get_snapshot_builder().build_snapshot())
    await asyncio.sleep(0)
    await sm.apply([kv_entry(20000, KvSet("x", "1"))])
    # LogId(1, 49) < LogId(1, 19999): give the donor's snapshot a higher term to be newer
    meta = newer.meta.__class__(LogId(2, 20005), newer.meta.last_membership, "newer")
    await sm.install_snapshot(meta, newer.data)
    old = await build
    assert old.meta.last_log_id == LogId(1, 19999)
    assert sm.data == {"d": "49"}
    cur = await sm.get_current_snapshot()
    assert cur is not None and cur.meta == meta


async def test_sm_volatile_restarts_from_snapshot_only() -> None:
    disk = MemDisk()
    sm = MemStateMachine(disk, volatile=True)
    m = Membership.new([{1}])
    await sm.apply([Entry(LogId(0, 0), m), kv_entry(1, KvSet("a", "1"))])
    snap = await sm.get_snapshot_builder().build_snapshot()
    await sm.apply([kv_entry(2, KvSet("b", "2"))])
    sm2 = MemStateMachine(disk, volatile=True)  # restart: what was applied after the snapshot is gone
    assert sm2.data == {"a": "1"}
    assert await sm2.applied_state() == (LogId(1, 1), StoredMembership(LogId(0, 0), m))
    assert [lid.index for lid, _ in sm2.applied_log] == [1]
    cur = await sm2.get_current_snapshot()
    assert cur is not None and cur.meta == snap.meta
    # no snapshot at all: empty
    fresh = MemDisk()
    await MemStateMachine(fresh, volatile=True).apply([kv_entry(0, KvSet("z", "1"))])
    sm3 = MemStateMachine(fresh, volatile=True)
    assert sm3.data == {} and await sm3.applied_state() == (None, EMPTY_STORED_MEMBERSHIP)
