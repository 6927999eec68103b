"""The state-machine conformance suite: checks any ``RaftStateMachine`` against its contract.

Run it like the log suite (see ``log_store`` and, for the builder contract, ``base``)::

    await run_state_machine_suite(builder)      # raises SuiteFailure naming failed checks

Checks: the initial applied state, ``apply`` (responses: one per entry, in the entries'
order, as applying them one at a time gives; applied state, memberships), the optional
``apply_without_responses`` against ``apply``, and snapshots: build,
``get_current_snapshot``, streaming one store's snapshot into another store's
``begin_receiving_snapshot`` file and installing it, a build right after an install, the
optional ``get_current_snapshot_meta`` against ``get_current_snapshot``, a
snapshot of a larger state (about 90 KB) sent whole, garbage refused, a build running
concurrently with ``apply``, and (with ``reopen``) what survives a restart, also one right
after an install.

``Normal`` entries carry ``handle.normal_data(i)``. Compare application state with
``handle.state_view`` when the builder gives one; otherwise the snapshot checks compare the
applied state, the snapshot meta and the snapshot bytes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from typing import IO, Any, BinaryIO, ClassVar, cast

from ...core.sm_worker import _apply_without_responses
from ...storage import current_snapshot_meta_of
from ...storage.memory import KvCas, KvCommand, KvDelete, KvGet, KvSet, encode_kv
from ...types import EMPTY_STORED_MEMBERSHIP, Entry, LogId, Membership, Normal, Snapshot, SnapshotMeta, StoredMembership
from .base import (
    Builder,
    CheckFn,
    CheckOutcome,
    CheckRegistry,
    CheckSkipped,
    StoreHandle,
    Suite,
    _default_normal_data,
    blank,
    expect,
    member,
    normal,
)

__all__ = ["StateMachineSuite", "run_state_machine_suite"]

_reg = CheckRegistry()
check = _reg.check

CHUNK = 7
"""Bytes per chunk when streaming a snapshot: small, so a store sees many writes."""


def _entries(h: StoreHandle, start: int, stop: int, term: int = 1) -> list[Entry]:
    """Entries ``[start, stop)``: a membership at 0 and 5, blank at 3, normal otherwise."""
    out: list[Entry] = []
    for i in range(start, stop):
        if i == 0:
            out.append(member(term, i, {1, 2, 3}))
        elif i == 5:
            out.append(member(term, i, {1, 2, 3, 4}))
        elif i == 3:
            out.append(blank(term, i))
        else:
            out.append(normal(term, i, h.normal_data(i)))
    return out


KV_WORKLOAD: tuple[KvCommand, ...] = (
    KvSet("b", "1"),
    KvSet("a", "2"),
    KvSet("b", "3"),
    KvDelete("a"),
    KvCas("b", "3", "4"),
    KvGet("b"),
    KvCas("b", "3", "5"),
    KvDelete("a"),
    KvSet("a", "6"),
    KvDelete("b"),
)
"""The commands of ``_workload`` with the default data (the KV model of ``MemStateMachine``):
every kind of command, over two keys and not in key order, answered with different responses
(``None, None, '1', '2', (True, '4'), '4', (False, '4'), None, None, '4'``)."""

WORKLOAD_INDEXES = (1, 2, 4, 2, 6, 1, 4, 7)
"""The ``normal_data`` indexes of ``_workload`` with a builder's own data: repeated and out of
order, so that most state machines answer them with different responses."""


def _workload(h: StoreHandle, start: int, term: int = 1) -> list[Entry]:
    """Normal entries from index ``start`` whose responses tell them apart: the commands of
    ``KV_WORKLOAD`` with the default data, else ``normal_data(i)`` for each ``i`` of
    ``WORKLOAD_INDEXES`` (the data of earlier entries again)."""
    if h.normal_data is _default_normal_data:
        datas = [encode_kv(cmd) for cmd in KV_WORKLOAD]
    else:
        datas = [h.normal_data(i) for i in WORKLOAD_INDEXES]
    return [normal(term, start + k, data) for k, data in enumerate(datas)]


def _comparable(response: Any) -> Any:
    """``response``, or its type's name when that type has no ``__eq__`` of its own (two
    equal answers would then differ); ``None`` as it is."""
    eq: Any = type(response).__eq__
    if response is not None and eq is object.__eq__:
        return f"<a {type(response).__qualname__}>"
    return response


def _stored(e: Entry) -> StoredMembership:
    assert isinstance(e.payload, Membership)
    return StoredMembership(e.log_id, e.payload)


def _read(data: IO[bytes]) -> bytes:
    data.seek(0)
    out = data.read()
    data.close()
    return out


async def _view(h: StoreHandle) -> Any:
    return await h.view()


async def _build(h: StoreHandle) -> Snapshot:
    return await h.state_machine.get_snapshot_builder().build_snapshot()


async def _stream_install(snap: Snapshot, target: StoreHandle) -> None:
    """Copy ``snap.data`` chunk by chunk into the target's receiving file; install it."""
    dst = await target.state_machine.begin_receiving_snapshot()
    snap.data.seek(0)
    while chunk := snap.data.read(CHUNK):
        dst.write(chunk)
    snap.data.close()
    try:
        # The file begin_receiving_snapshot gave (IO[bytes]), as the node passes it.
        await target.state_machine.install_snapshot(snap.meta, cast(BinaryIO, dst))
    finally:
        dst.close()


# -- initial state and apply ----------------------------------------------------------------


@check
async def sm_initial_applied_state(h: StoreHandle) -> None:
    """A fresh state machine: ``(None, EMPTY_STORED_MEMBERSHIP)``."""
    expect(await h.state_machine.applied_state(), (None, EMPTY_STORED_MEMBERSHIP), "applied_state() of a fresh state machine")


@check
async def sm_initial_no_snapshot(h: StoreHandle) -> None:
    """A fresh state machine has no current snapshot."""
    expect(await h.state_machine.get_current_snapshot(), None, "get_current_snapshot() of a fresh state machine")


@check
async def apply_single(h: StoreHandle) -> None:
    """Applying one entry at a time: one response each; applied follows."""
    for e in _entries(h, 0, 3):
        resp = await h.state_machine.apply([e])
        expect(len(resp), 1, f"number of responses to apply([{e!r}])")
        applied, _ = await h.state_machine.applied_state()
        expect(applied, e.log_id, f"applied log id after applying {e!r}")


@check
async def apply_multiple(h: StoreHandle) -> None:
    """One call with many entries returns one response per entry, in order; applied is the
    last entry's id."""
    es = _entries(h, 0, 8)
    resp = await h.state_machine.apply(es)
    expect(len(resp), len(es), "number of responses to apply(8 entries)")
    expect((await h.state_machine.applied_state())[0], LogId(1, 7), "applied log id after apply(0..=7)")


@check
async def apply_responses_in_order(h: StoreHandle) -> None:
    """One ``apply`` of many entries answers each entry as applying them one at a time (on
    another store) does: one response per entry, in the entries' order. The entries give
    different responses (``_workload``), so responses reversed, or grouped by key, differ."""
    es = _entries(h, 0, 3) + _workload(h, 3)
    batch = [_comparable(r) for r in await h.state_machine.apply(es)]
    assert h.another is not None
    async with h.another() as other:
        one_by_one = [_comparable(r) for e in es for r in await other.state_machine.apply([e])]
    expect(
        batch,
        one_by_one,
        f"responses of one apply() of {len(es)} entries, against applying them one at a time "
        f"(apply must answer each entry, in the entries' order)",
    )


@check
async def apply_responses_none_for_blank_and_membership(h: StoreHandle) -> None:
    """Blank and membership entries answer ``None``."""
    es = _entries(h, 0, 6)
    resp = await h.state_machine.apply(es)
    got = [r for e, r in zip(es, resp) if type(e.payload) is not Normal]
    expect(got, [None, None, None], "responses to the blank and membership entries")


@check
async def apply_membership_updates_stored_membership(h: StoreHandle) -> None:
    """A membership entry becomes the stored membership, with its log id."""
    es = _entries(h, 0, 3)
    await h.state_machine.apply(es)
    expect(await h.state_machine.applied_state(), (LogId(1, 2), _stored(es[0])), "applied_state() after a membership at 0")


@check
async def apply_later_membership_replaces(h: StoreHandle) -> None:
    """A later membership entry replaces the stored one; normal entries leave it alone."""
    es = _entries(h, 0, 8)
    await h.state_machine.apply(es[:6])
    await h.state_machine.apply(es[6:])
    expect(await h.state_machine.applied_state(), (LogId(1, 7), _stored(es[5])), "applied_state() after memberships at 0 and 5")


@check
async def apply_empty_list(h: StoreHandle) -> None:
    """``apply([])`` returns ``[]`` and changes nothing."""
    await h.state_machine.apply(_entries(h, 0, 2))
    before = await h.state_machine.applied_state()
    expect(await h.state_machine.apply([]), [], "apply([])")
    expect(await h.state_machine.applied_state(), before, "applied_state() after apply([])")


@check
async def apply_new_term(h: StoreHandle) -> None:
    """Entries of a later term continue the applied sequence."""
    await h.state_machine.apply(_entries(h, 0, 4))
    await h.state_machine.apply([normal(3, 4, h.normal_data(4)), blank(3, 5)])
    expect((await h.state_machine.applied_state())[0], LogId(3, 5), "applied log id after term-3 entries")


@check
async def apply_without_responses_same_state(h: StoreHandle) -> None:
    """The optional ``apply_without_responses`` (what the node calls instead of ``apply`` for
    every batch of a follower) leaves the state ``apply`` leaves: the applied log id, the
    stored membership (entries 0 and 5 are memberships) and the state (``state_view``),
    also after the entries of ``_workload`` (with the default data: sets, deletes,
    compare-and-sets and gets of keys already set). Nothing to compare for a state machine
    the node gives ``apply`` alone."""
    quiet = _apply_without_responses(h.state_machine)
    if quiet is None:
        return
    es = _entries(h, 0, 9) + _workload(h, 9)
    what = f"apply_without_responses(0..={es[-1].log_id.index})"
    await quiet(es[:4])
    await quiet(es[4:])
    assert h.another is not None
    async with h.another() as other:
        await other.state_machine.apply(es[:4])
        await other.state_machine.apply(es[4:])
        expect(
            await h.state_machine.applied_state(),
            await other.state_machine.applied_state(),
            f"applied_state() after {what}, against apply's",
        )
        expect(await _view(h), await _view(other), f"state after {what}, against apply's (state_view)")


# -- snapshots ------------------------------------------------------------------------------


@check
async def snapshot_build_meta(h: StoreHandle) -> None:
    """A built snapshot's meta is the applied state, with a non-empty id; its data is a
    readable binary file."""
    es = _entries(h, 0, 8)
    await h.state_machine.apply(es)
    snap = await _build(h)
    expect((snap.meta.last_log_id, snap.meta.last_membership), (LogId(1, 7), _stored(es[5])), "snapshot meta")
    if not snap.meta.snapshot_id:
        raise AssertionError("snapshot meta: empty snapshot_id")
    if not isinstance(_read(snap.data), bytes):
        raise AssertionError("snapshot data: read() did not return bytes")


@check
async def snapshot_build_then_current(h: StoreHandle) -> None:
    """``get_current_snapshot`` returns the last built snapshot (same meta and bytes)."""
    await h.state_machine.apply(_entries(h, 0, 4))
    snap = await _build(h)
    cur = await h.state_machine.get_current_snapshot()
    if cur is None:
        raise AssertionError("get_current_snapshot() after build_snapshot: got None")
    expect(cur.meta, snap.meta, "current snapshot meta")
    expect(_read(cur.data), _read(snap.data), "current snapshot data")


@check
async def snapshot_current_after_more_applies(h: StoreHandle) -> None:
    """Applying more entries does not change the current snapshot; building again does."""
    await h.state_machine.apply(_entries(h, 0, 4))
    first = await _build(h)
    first.data.close()
    await h.state_machine.apply(_entries(h, 4, 7))
    cur = await h.state_machine.get_current_snapshot()
    if cur is not None:
        cur.data.close()
    expect(None if cur is None else cur.meta, first.meta, "current snapshot meta after more applies")
    second = await _build(h)
    second.data.close()
    cur = await h.state_machine.get_current_snapshot()
    if cur is not None:
        cur.data.close()
    expect(None if cur is None else cur.meta.last_log_id, LogId(1, 6), "current snapshot after a second build")
    if second.meta.snapshot_id == first.meta.snapshot_id:
        raise AssertionError(f"two snapshots share the id {first.meta.snapshot_id!r}")


@check
async def snapshot_current_returns_fresh_file(h: StoreHandle) -> None:
    """Each ``get_current_snapshot`` call gives its own file positioned at 0."""
    await h.state_machine.apply(_entries(h, 0, 5))
    (await _build(h)).data.close()
    a = await h.state_machine.get_current_snapshot()
    b = await h.state_machine.get_current_snapshot()
    assert a is not None and b is not None, "get_current_snapshot() returned None after a build"
    first = a.data.read(3)
    whole = b.data.read()
    rest = a.data.read()
    a.data.close()
    b.data.close()
    expect(first + rest, whole, "bytes of two concurrently read current snapshots")


@check
async def snapshot_of_fresh_state_machine(h: StoreHandle) -> None:
    """A snapshot of a fresh state machine covers nothing and installs elsewhere."""
    snap = await _build(h)
    expect((snap.meta.last_log_id, snap.meta.last_membership), (None, EMPTY_STORED_MEMBERSHIP), "snapshot meta of a fresh state machine")
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(snap, other)
        expect(await other.state_machine.applied_state(), (None, EMPTY_STORED_MEMBERSHIP), "applied_state() after installing it")


@check
async def snapshot_install_on_another_store(h: StoreHandle) -> None:
    """A snapshot built on one store, streamed in chunks into another's receiving file and
    installed there, gives the same applied state, current snapshot and state."""
    await h.state_machine.apply(_entries(h, 0, 8))
    snap = await _build(h)
    cur0 = await h.state_machine.get_current_snapshot()
    data = _read(cur0.data) if cur0 is not None else b""
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(snap, other)
        expect(await other.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() of the target")
        cur = await other.state_machine.get_current_snapshot()
        expect(None if cur is None else cur.meta, snap.meta, "current snapshot meta of the target")
        if cur is not None:
            expect(_read(cur.data), data, "current snapshot data of the target")
        expect(await _view(other), await _view(h), "state of the target (state_view)")


@check
async def snapshot_install_replaces_state(h: StoreHandle) -> None:
    """Installing replaces whatever the target had applied, even a longer history."""
    await h.state_machine.apply(_entries(h, 0, 4))
    snap = await _build(h)
    assert h.another is not None
    async with h.another() as other:
        await other.state_machine.apply(_entries(other, 0, 9, term=2))
        await _stream_install(snap, other)
        expect(await other.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() after install")
        expect(await _view(other), await _view(h), "state after install (state_view)")


@check
async def snapshot_install_then_apply_continues(h: StoreHandle) -> None:
    """After an install, applying the next entries continues from the snapshot."""
    await h.state_machine.apply(_entries(h, 0, 4))
    snap = await _build(h)
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(snap, other)
        later = _entries(h, 4, 8)
        await other.state_machine.apply(later)
        await h.state_machine.apply(later)
        expect(await other.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() after install + apply")
        expect(await _view(other), await _view(h), "state after install + apply (state_view)")


@check
async def snapshot_build_after_install(h: StoreHandle) -> None:
    """A snapshot built right after an install, on a store that had built one before, is
    one of the installed state: its meta is the installed applied state, and installed on a
    third store it gives that state (a state machine that rebuilds only after an ``apply``
    and hands out its last build otherwise fails here)."""
    await h.state_machine.apply(_entries(h, 0, 8))
    snap = await _build(h)
    assert h.another is not None
    async with h.another() as other:
        await other.state_machine.apply(_entries(h, 0, 3))
        (await _build(other)).data.close()
        await _stream_install(snap, other)
        again = await _build(other)
        expect(
            (again.meta.last_log_id, again.meta.last_membership),
            (snap.meta.last_log_id, snap.meta.last_membership),
            "meta of a snapshot built right after an install",
        )
        async with h.another() as third:
            await _stream_install(again, third)
            expect(await third.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() after installing it elsewhere")
            expect(await _view(third), await _view(h), "state after installing it elsewhere (state_view)")


@check
async def snapshot_install_a_later_snapshot(h: StoreHandle) -> None:
    """Two snapshots of one state machine, the second built after more applies, installed
    one after the other on another: the target ends in the second one's state. (A second
    build that hands out the first one's data under the new meta, or a receiving file that
    still holds the first snapshot's bytes, fails here.)"""
    await h.state_machine.apply(_entries(h, 0, 4))
    first = await _build(h)
    await h.state_machine.apply(_entries(h, 4, 9))
    second = await _build(h)
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(first, other)
        try:
            await _stream_install(second, other)
        except Exception as e:
            raise AssertionError(
                f"install_snapshot of a second snapshot ({second.meta.snapshot_id}) after a first one: "
                f"{type(e).__name__}: {e} (does begin_receiving_snapshot return a new, empty file each time?)"
            ) from e
        expect(await other.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() after installing the second snapshot")
        cur = await other.state_machine.get_current_snapshot()
        if cur is not None:
            cur.data.close()
        expect(None if cur is None else cur.meta, second.meta, "current snapshot meta after installing the second snapshot")
        expect(
            await _view(other),
            await _view(h),
            "state after installing the second snapshot (state_view): a snapshot's data must be the state at its "
            "meta's last_log_id, and begin_receiving_snapshot must return a new, empty file",
        )


LARGER = 4000
"""The number of ``Normal`` entries of ``snapshot_of_a_larger_state``: about 90 KB of state
with the default data, more than a buffer or a fixed-size read of 64 KiB takes."""


@check
async def snapshot_of_a_larger_state(h: StoreHandle) -> None:
    """A snapshot of a larger state (``LARGER`` more entries): ``get_current_snapshot`` gives
    all of its bytes, and installed on another store they give the same applied state and
    state (a snapshot file read or written in one fixed-size piece comes out short here)."""
    await h.state_machine.apply(_entries(h, 0, 8))
    for lo in range(8, 8 + LARGER, 500):
        await h.state_machine.apply([normal(1, i, h.normal_data(i)) for i in range(lo, lo + 500)])
    snap = await _build(h)
    built = _read(snap.data)
    cur = await h.state_machine.get_current_snapshot()
    if cur is None:
        raise AssertionError("get_current_snapshot() after build_snapshot: got None")
    sent = _read(cur.data)
    expect(len(sent), len(built), "length of the current snapshot's data, against the built one's")
    expect(sent == built, True, "the current snapshot's data is the built one's")
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(Snapshot(cur.meta, io.BytesIO(sent)), other)
        expect(await other.state_machine.applied_state(), await h.state_machine.applied_state(), "applied_state() of the target")
        expect(await _view(other), await _view(h), "state of the target (state_view)")


@check
async def snapshot_install_bad_data_raises_value_error(h: StoreHandle) -> None:
    """Garbage snapshot data raises ``ValueError`` and keeps the previous state and current
    snapshot (the one the node sends to followers)."""
    await h.state_machine.apply(_entries(h, 0, 3))
    before = (await h.state_machine.applied_state(), await _view(h))
    snap = await _build(h)
    built = _read(snap.data)
    dst = await h.state_machine.begin_receiving_snapshot()
    dst.write(b"\x00not a snapshot\xff" * 3)
    meta = type(snap.meta)(LogId(1, 9), snap.meta.last_membership, "garbage-1")
    try:
        await h.state_machine.install_snapshot(meta, cast(BinaryIO, dst))
    except ValueError:
        pass
    else:
        raise AssertionError("install_snapshot(garbage): expected ValueError")
    finally:
        dst.close()
    expect((await h.state_machine.applied_state(), await _view(h)), before, "state after a refused install")
    cur = await h.state_machine.get_current_snapshot()
    expect(None if cur is None else cur.meta, snap.meta, "current snapshot meta after a refused install")
    if cur is not None:
        expect(_read(cur.data) == built, True, "the current snapshot's data after a refused install is the one built before")


@check
async def snapshot_build_concurrent_with_apply(h: StoreHandle) -> None:
    """A build running concurrently with ``apply`` is a consistent image of one applied
    point: installed elsewhere, it restores exactly its meta's applied state."""
    await h.state_machine.apply(_entries(h, 0, 3))
    builder = h.state_machine.get_snapshot_builder()
    build = asyncio.ensure_future(builder.build_snapshot())
    for i in range(3, 12):
        await h.state_machine.apply(_entries(h, i, i + 1))
    snap = await build
    last = snap.meta.last_log_id
    if last is None or not LogId(1, 2) <= last <= LogId(1, 11):
        raise AssertionError(f"concurrent snapshot meta.last_log_id: expected 1-2..1-11, got {last!r}")
    assert h.another is not None
    async with h.another() as other:
        await _stream_install(snap, other)
        expect((await other.state_machine.applied_state())[0], last, "applied log id after installing the concurrent snapshot")
        if h.state_view is not None:  # replaying the same entries on a third store must agree
            async with h.another() as third:
                await third.state_machine.apply(_entries(h, 0, last.index + 1))
                expect(await _view(other), await _view(third), "state of the concurrent snapshot vs replay")


@check
async def snapshot_meta_is_the_current_snapshots(h: StoreHandle) -> None:
    """The optional ``get_current_snapshot_meta`` (what ``Raft.new`` reads at start in place
    of ``get_current_snapshot``) returns ``get_current_snapshot()``'s meta: ``None`` on a
    fresh state machine, then after a build, more applies, a second build, an install of
    another store's snapshot, a refused install and (with ``reopen``) a restart. Skipped for
    a state machine without it, or whose ``get_current_snapshot`` it does not describe (a
    subclass overriding ``get_current_snapshot`` alone: ``current_snapshot_meta_of``)."""
    if current_snapshot_meta_of(h.state_machine) is None:
        raise CheckSkipped("the state machine has no get_current_snapshot_meta() (optional)")

    async def agree(want: SnapshotMeta | None, what: str) -> None:
        read = current_snapshot_meta_of(h.state_machine)  # (a restart gives a new object)
        if read is None:
            raise AssertionError(f"get_current_snapshot_meta {what}: the state machine no longer has it")
        meta = await read()
        cur = await h.state_machine.get_current_snapshot()
        if cur is not None:
            cur.data.close()
        expect(meta, None if cur is None else cur.meta, f"get_current_snapshot_meta() {what}, against get_current_snapshot().meta")
        expect(meta, want, f"get_current_snapshot_meta() {what}")

    await agree(None, "of a fresh state machine")
    await h.state_machine.apply(_entries(h, 0, 4))
    first = await _build(h)
    first.data.close()
    await agree(first.meta, "after a build")
    await h.state_machine.apply(_entries(h, 4, 7))
    await agree(first.meta, "after more applies")
    second = await _build(h)
    second.data.close()
    await agree(second.meta, "after a second build")
    assert h.another is not None
    async with h.another() as other:
        await other.state_machine.apply(_entries(other, 0, 9, term=2))
        theirs = await _build(other)
        await _stream_install(theirs, h)
    await agree(theirs.meta, "after installing another store's snapshot")
    dst = await h.state_machine.begin_receiving_snapshot()
    dst.write(b"\x00not a snapshot\xff" * 3)
    try:
        await h.state_machine.install_snapshot(SnapshotMeta(LogId(3, 20), theirs.meta.last_membership, "garbage-2"), cast(BinaryIO, dst))
    except ValueError:
        pass
    finally:
        dst.close()
    await agree(theirs.meta, "after a refused install")
    if h.reopen is not None:
        await h.restart()
        await agree(theirs.meta, "after a restart (reopen)")


# -- restart --------------------------------------------------------------------------------


@check
async def reopen_keeps_applied_state(h: StoreHandle) -> None:
    """After a restart (``reopen``) the state machine reports what it applied (durable) or
    what its current snapshot covers (volatile), holds the state of what it reports
    (``state_view``), and still has that snapshot (skipped without ``reopen``)."""
    await h.state_machine.apply(_entries(h, 0, 4))
    snap = await _build(h)
    _read(snap.data)
    at_snapshot = await _view(h)
    await h.state_machine.apply(_entries(h, 4, 7))
    full = await h.state_machine.applied_state()
    at_full = await _view(h)
    await h.restart()
    got = await h.state_machine.applied_state()
    if got == full:
        expect(await _view(h), at_full, f"state after reopen (state_view), which reports applied {full[0]!r}")
    elif got == (snap.meta.last_log_id, snap.meta.last_membership):
        expect(await _view(h), at_snapshot, f"state after reopen (state_view), which reports its snapshot's {got[0]!r}")
    else:
        raise AssertionError(f"applied_state() after reopen: expected {full!r} or the snapshot's, got {got!r}")
    cur = await h.state_machine.get_current_snapshot()
    expect(None if cur is None else cur.meta, snap.meta, "current snapshot meta after reopen")
    if cur is not None:
        cur.data.close()


@check
async def reopen_after_install_keeps_the_snapshot(h: StoreHandle) -> None:
    """After installing another store's snapshot over a shorter history, then a restart
    (``reopen``), the state machine reports the snapshot's applied state, holds its state
    (``state_view``) and still has it as its current snapshot, the same bytes: the node
    purges its log up to it and sends it to the followers it can send no entries (skipped
    without ``reopen``)."""
    assert h.another is not None
    async with h.another() as other:
        await other.state_machine.apply(_entries(h, 0, 8))
        snap = await _build(other)
        cur = await other.state_machine.get_current_snapshot()
        data = b"" if cur is None else _read(cur.data)
        at_snapshot = await _view(other)
    await h.state_machine.apply(_entries(h, 0, 3))
    await _stream_install(snap, h)
    await h.restart()
    expect(
        await h.state_machine.applied_state(),
        (snap.meta.last_log_id, snap.meta.last_membership),
        "applied_state() after installing a snapshot and reopen",
    )
    expect(await _view(h), at_snapshot, "state after installing a snapshot and reopen (state_view)")
    cur = await h.state_machine.get_current_snapshot()
    expect(None if cur is None else cur.meta, snap.meta, "current snapshot meta after installing a snapshot and reopen")
    if cur is not None:
        expect(_read(cur.data), data, "current snapshot data after installing a snapshot and reopen")


class StateMachineSuite(Suite):
    """Every state-machine check."""

    name = "StateMachineSuite"
    checks: ClassVar[dict[str, CheckFn]] = dict(_reg.checks)


async def run_state_machine_suite(
    builder: Builder, *, only: Iterable[str] | None = None, raise_on_failure: bool = True, timeout: float | None = 10.0
) -> list[CheckOutcome]:
    """``StateMachineSuite.run_all(builder, ...)``: run the state-machine checks and return
    the report; raises ``SuiteFailure`` naming every failed check."""
    return await StateMachineSuite.run_all(builder, only=only, raise_on_failure=raise_on_failure, timeout=timeout)
