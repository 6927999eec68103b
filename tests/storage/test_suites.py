"""The storage conformance suites: they pass on every shipped store pair and name the checks
a deliberately broken store fails."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import openraft_py
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import Adaptor, MemDisk, MemLogStore, MemRaftStorage, MemStateMachine, RaftStorage, decode_kv
from openraft_py.storage.memory import KvDelete, MemLogReader
from openraft_py.storage.rocks import RocksLogStore  # rocksdict is a required dependency
from openraft_py.testing import (
    LogStoreSuite,
    StateMachineSuite,
    StoreHandle,
    SuiteFailure,
    run_log_storage_suite,
    run_state_machine_suite,
)
from openraft_py.types import BLANK, Entry, LogId, Membership, Normal, Snapshot, Vote

pytestmark = pytest.mark.timeout(120)


async def _view(sm: Any) -> dict[str, str]:
    return dict(sm.data)


def mem_builder(log_cls: type[MemLogStore] = MemLogStore, *, volatile: bool = False) -> Any:
    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[StoreHandle]:
        disk = MemDisk()

        async def reopen() -> tuple[Any, Any]:
            return log_cls(disk), MemStateMachine(disk, volatile=volatile)

        yield StoreHandle(log_cls(disk), MemStateMachine(disk, volatile=volatile), reopen=reopen, state_view=_view)

    return builder


@contextlib.asynccontextmanager
async def adaptor_builder() -> AsyncIterator[StoreHandle]:
    disk = MemDisk()

    async def reopen() -> tuple[Any, Any]:
        return Adaptor(MemRaftStorage(disk))

    log, sm = Adaptor(MemRaftStorage(disk))
    yield StoreHandle(log, sm, reopen=reopen, state_view=lambda sm: _view(sm.storage))


def rocks_builder(root: Path, *, sync: bool = True) -> Any:
    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[StoreHandle]:
        base = root / uuid.uuid4().hex
        handle = StoreHandle(RocksLogStore(base / "log", sync=sync), RocksStateMachine(base / "sm"), state_view=_view)

        async def reopen() -> tuple[Any, Any]:
            handle.log_store.close()  # type: ignore[attr-defined]
            handle.state_machine.close()  # type: ignore[attr-defined]
            return RocksLogStore(base / "log", sync=sync), RocksStateMachine(base / "sm")

        handle.reopen = reopen
        try:
            yield handle
        finally:
            handle.log_store.close()  # type: ignore[attr-defined]
            handle.state_machine.close()  # type: ignore[attr-defined]

    return builder


def _assert_all_ran(report: list[Any], suite: type[Any], skipped: tuple[str, ...] = ()) -> None:
    assert [o.name for o in report] == suite.check_names()
    assert all(o.ok for o in report), [o for o in report if not o.ok]
    assert [o.name for o in report if o.skipped] == list(skipped)


OWNER_CHECKS = ("owner_recorded_then_checked", "owner_adopted_by_the_first_check")
"""The checks of the optional ``check_owner``: skipped for a store without it (``Adaptor``)."""


SNAPSHOT_META_CHECKS = ("snapshot_meta_is_the_current_snapshots",)
"""The check of the optional ``get_current_snapshot_meta``: skipped for a state machine
without it (``Adaptor``)."""


# -- the suites pass on the shipped stores ----------------------------------------------------


def test_suites_are_big_enough() -> None:
    names = LogStoreSuite.check_names() + StateMachineSuite.check_names()
    assert len(names) >= 40 and len(set(names)) == len(names)
    for n in ("purge_upto_0", "purge_upto_5", "purge_upto_20", "truncate_after_0", "truncate_after_5", "truncate_after_11", "truncate_after_none"):
        assert n in names


async def test_mem_log_suite() -> None:
    _assert_all_ran(await run_log_storage_suite(mem_builder()), LogStoreSuite)


async def test_mem_state_machine_suite() -> None:
    _assert_all_ran(await run_state_machine_suite(mem_builder()), StateMachineSuite)


async def test_mem_volatile_state_machine_suite() -> None:
    _assert_all_ran(await run_state_machine_suite(mem_builder(volatile=True)), StateMachineSuite)


async def test_adaptor_log_suite() -> None:
    _assert_all_ran(await run_log_storage_suite(adaptor_builder), LogStoreSuite, skipped=OWNER_CHECKS)


async def test_adaptor_state_machine_suite() -> None:
    _assert_all_ran(await run_state_machine_suite(adaptor_builder), StateMachineSuite, skipped=SNAPSHOT_META_CHECKS)


async def test_rocks_log_suite(tmp_path: Path) -> None:
    _assert_all_ran(await run_log_storage_suite(rocks_builder(tmp_path)), LogStoreSuite)


async def test_rocks_log_suite_without_fsync(tmp_path: Path) -> None:
    """``sync=False``: most appends are written on the loop (the writer's fast path without a
    durability step); the log's contract is the same."""
    _assert_all_ran(await run_log_storage_suite(rocks_builder(tmp_path, sync=False)), LogStoreSuite)


async def test_rocks_state_machine_suite(tmp_path: Path) -> None:
    _assert_all_ran(await run_state_machine_suite(rocks_builder(tmp_path)), StateMachineSuite)


# -- builder forms and options -----------------------------------------------------------------


async def test_awaitable_builder_returning_a_tuple_skips_reopen() -> None:
    async def builder() -> tuple[Any, Any]:
        return MemLogStore(), MemStateMachine()

    report = await run_log_storage_suite(builder, only=["purge_upto_5", "reopen_keeps_log"])
    assert [(o.name, o.ok, o.skipped) for o in report] == [("purge_upto_5", True, False), ("reopen_keeps_log", True, True)]


async def test_only_rejects_a_single_string() -> None:
    """``only="purge_upto_5"`` is a TypeError saying to pass a list (it iterated the string
    and reported 'no check named' its letters)."""
    with pytest.raises(TypeError, match=r"^only must be a list of check names, not a str: only=\['purge_upto_5'\]$"):
        await run_log_storage_suite(mem_builder(), only="purge_upto_5")
    with pytest.raises(TypeError, match="not a str"):
        await run_state_machine_suite(mem_builder(), only="apply_multiple")


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        ("5", TypeError, r"^timeout must be a number, got str '5'$"),
        (True, TypeError, r"^timeout must be a number, got bool True$"),
        (0, ValueError, r"^timeout must be above 0, got 0$"),
        (-1.0, ValueError, r"^timeout must be above 0, got -1\.0$"),
        (float("nan"), ValueError, r"^timeout must be finite, got nan$"),
    ],
)
async def test_a_timeout_that_is_not_seconds_is_refused_at_once(timeout: Any, error: type[Exception], message: str) -> None:
    """A ``timeout`` that bounds no check is refused before any check runs: ``"5"`` failed
    every check with "'<=' not supported between instances of 'str' and 'int'" (and warned
    of a coroutine never awaited for each), 0 or less failed every check as timed out."""
    with pytest.raises(error, match=message):
        await run_log_storage_suite(mem_builder(), timeout=timeout)
    with pytest.raises(error, match=message):
        await run_state_machine_suite(mem_builder(), timeout=timeout)
    with pytest.raises(error, match=message):
        await LogStoreSuite.run_one(mem_builder(), "purge_upto_5", timeout=timeout)


async def test_no_timeout_is_no_bound() -> None:
    report = await run_log_storage_suite(mem_builder(), only=["purge_upto_5"], timeout=None)
    assert [(o.name, o.ok) for o in report] == [("purge_upto_5", True)]


async def test_only_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="no_such_check"):
        await run_log_storage_suite(mem_builder(), only=["no_such_check"])


@pytest.mark.parametrize("only", [[], (), set()], ids=["list", "tuple", "set"])
async def test_an_empty_only_is_refused_not_a_success_with_no_check(only: Any) -> None:
    """An empty filter (a list built from a condition that matched nothing) ran no check and
    returned an empty report: a suite that cannot fail."""
    with pytest.raises(ValueError, match="only names no check: give None to run every check of LogStoreSuite"):
        await run_log_storage_suite(mem_builder(), only=only)
    with pytest.raises(ValueError, match="only names no check"):
        await run_state_machine_suite(mem_builder(), only=only)


async def test_adaptor_refuses_what_is_not_a_raft_storage() -> None:
    """``Adaptor`` of an object that is not a ``RaftStorage`` (a split log store, ``None``,
    the class itself) is a ``TypeError`` naming what is missing; it used to pass ``Raft.new``'s
    check (the adapters have every method) and stop the node with a ``StorageError``."""
    with pytest.raises(TypeError, match=r"^Adaptor's storage must implement RaftStorage: MemLogStore has no method "
                                        r"append_to_log, delete_conflict_logs_since, purge_logs_upto, last_applied_state"):
        Adaptor(MemLogStore())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="NoneType has no method get_log_state, save_vote"):
        Adaptor(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got the class MemRaftStorage itself \(pass MemRaftStorage\(\.\.\.\)\)"):
        Adaptor(MemRaftStorage)  # type: ignore[arg-type]
    log_store, state_machine = Adaptor(MemRaftStorage())
    assert log_store is not None and state_machine is not None


class _SyncAppendToLog(MemRaftStorage):
    def append_to_log(self, entries: list[Any]) -> None:  # type: ignore[override]  # the protocol's is async
        self.disk.entries.extend(entries)


async def test_adaptor_refuses_a_plain_def_method() -> None:
    """Every ``RaftStorage`` method is ``async def``: a plain one is a ``TypeError`` naming it
    (it passed, and the node stopped at its first append: "object NoneType can't be used in
    'await' expression")."""
    with pytest.raises(TypeError, match=r"^Adaptor's storage\.append_to_log must be a coroutine function \(async def\): "
                                        r"_SyncAppendToLog\.append_to_log is a plain def, and the node awaits what it returns$"):
        Adaptor(_SyncAppendToLog())


def test_exports() -> None:
    assert openraft_py.Adaptor is Adaptor and openraft_py.RaftStorage is RaftStorage
    assert "Adaptor" in openraft_py.__all__ and "RaftStorage" in openraft_py.__all__


# -- broken stores fail the named checks ---------------------------------------------------------


class ForgetsPurged(MemLogStore):
    """Purges entries but does not remember the last purged id: reads below the purge
    return nothing instead of raising, and the log state forgets the purge."""

    async def purge(self, log_id: LogId) -> None:
        await super().purge(log_id)
        self.disk.last_purged = None


class PurgeLeavesHole(MemLogStore):
    """Purge also drops the entry right after ``log_id``: a hole between the last purged
    index and the first entry held."""

    async def purge(self, log_id: LogId) -> None:
        await super().purge(log_id)
        if self.disk.entries:
            del self.disk.entries[0]
            self.disk.offset += 1


class NoopVote(MemLogStore):
    """``save_vote`` does nothing."""

    async def save_vote(self, vote: Vote) -> None:
        return None


class DataAsText(MemLogStore):
    """Keeps entry data as text (decoded as UTF-8, undecodable bytes replaced), as a store
    with a text column would: binary data comes back changed."""

    def append_durable(self, entries: list[Any]) -> None:
        super().append_durable([
            Entry(e.log_id, Normal(e.payload.data.decode("utf-8", "replace").encode())) if type(e.payload) is Normal else e
            for e in entries
        ])


class DropsLearners(MemLogStore):
    """Keeps a membership entry's voters only, as a store that encodes ``configs`` and
    rebuilds ``nodes`` from them would: the learners are lost."""

    def append_durable(self, entries: list[Any]) -> None:
        super().append_durable([
            Entry(e.log_id, Membership.new(list(e.payload.configs), {n: e.payload.nodes[n] for n in e.payload.voter_ids()}))
            if type(e.payload) is Membership else e
            for e in entries
        ])


class EmptyDataIsBlank(MemLogStore):
    """Stores an entry with empty data as a blank one (it tells them apart by the data's
    length)."""

    def append_durable(self, entries: list[Any]) -> None:
        super().append_durable([Entry(e.log_id, BLANK) if e.payload == Normal(b"") else e for e in entries])


class KeepsTheList(MemLogStore):
    """Keeps the list it is given as its log when its log is empty (saving a copy): the
    caller's later changes to the list are the store's."""

    def append_durable(self, entries: list[Any]) -> None:
        disk = self.disk
        if not disk.entries and entries and entries[0].log_id.index == disk.offset:
            disk.entries = entries
        else:
            super().append_durable(entries)


class ReplacesOnOverlap(MemLogStore):
    """An append at an index it holds writes over the entries it holds from there and keeps
    the later ones (an ``INSERT OR REPLACE`` keyed by index), instead of raising."""

    def append_durable(self, entries: list[Any]) -> None:
        disk = self.disk
        first = entries[0].log_id.index - disk.offset if entries else -1
        if 0 <= first < len(disk.entries):
            for k, e in enumerate(entries, first):
                if k < len(disk.entries):
                    disk.entries[k] = e
                else:
                    disk.entries.append(e)
        else:
            super().append_durable(entries)


class VoteCommittedByTheNextWrite(MemLogStore):
    """``save_vote`` leaves the vote in a pending write that the next append, truncate,
    purge or ``save_committed`` makes durable (a transaction left open): a restart right
    after a vote loses it."""

    pending: Vote | None = None

    async def read_vote(self) -> Vote | None:
        return self.pending if self.pending is not None else self.disk.vote

    def get_log_reader(self) -> Any:
        store = self

        class _Reader(MemLogReader):
            async def read_vote(self) -> Vote | None:
                return await store.read_vote()

        return _Reader(self.disk)

    async def save_vote(self, vote: Vote) -> None:
        self.pending = vote

    def _commit(self) -> None:
        if self.pending is not None:
            self.disk.vote, self.pending = self.pending, None

    def append_durable(self, entries: list[Any]) -> None:
        self._commit()
        super().append_durable(entries)

    async def truncate_after(self, log_id: LogId | None) -> None:
        self._commit()
        await super().truncate_after(log_id)

    async def purge(self, log_id: LogId) -> None:
        self._commit()
        await super().purge(log_id)

    async def save_committed(self, committed: LogId | None) -> None:
        self._commit()
        await super().save_committed(committed)


class _Reopened(MemLogStore):
    """A store that changes what it finds at a restart (``reopened``): the first object
    over a disk marks it, later ones are restarts."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        if getattr(disk, "opened", False):
            self.reopened(disk)
        disk.opened = True  # type: ignore[attr-defined]

    def reopened(self, disk: MemDisk) -> None:
        """What a restart finds."""


class AppendCommittedByTheNextWrite(_Reopened):
    """Reports an append durable at once but makes it durable with its next truncate,
    purge, vote or ``save_committed`` (a transaction left open): a restart right after an
    append loses it."""

    def reopened(self, disk: MemDisk) -> None:
        unsynced: int | None = getattr(disk, "unsynced", None)
        if unsynced is not None:
            del disk.entries[unsynced - disk.offset :]
            disk.unsynced = None  # type: ignore[attr-defined]

    def append_durable(self, entries: list[Any]) -> None:
        if entries and getattr(self.disk, "unsynced", None) is None:
            self.disk.unsynced = entries[0].log_id.index  # type: ignore[attr-defined]
        super().append_durable(entries)

    def _commit(self) -> None:
        self.disk.unsynced = None  # type: ignore[attr-defined]

    async def truncate_after(self, log_id: LogId | None) -> None:
        self._commit()
        await super().truncate_after(log_id)

    async def purge(self, log_id: LogId) -> None:
        self._commit()
        await super().purge(log_id)

    async def save_vote(self, vote: Vote) -> None:
        self._commit()
        await super().save_vote(vote)

    async def save_committed(self, committed: LogId | None) -> None:
        self._commit()
        await super().save_committed(committed)


class PurgedTermFromFirstEntry(_Reopened):
    """Saves the last purged index only: at a restart it takes its term from the first
    entry it holds (the next term's, when the purge ended a term)."""

    def reopened(self, disk: MemDisk) -> None:
        if disk.last_purged is not None and disk.entries:
            disk.last_purged = LogId(disk.entries[0].log_id.term, disk.last_purged.index)


class PurgedFromFirstEntry(_Reopened):
    """Saves no last purged log id: at a restart it takes the one before its first entry,
    and none when it holds no entry (the log of a node that installed a snapshot restarts
    empty, at index 0)."""

    def reopened(self, disk: MemDisk) -> None:
        if not disk.entries:
            disk.last_purged, disk.offset = None, 0


class OwnerNeverRefused(MemLogStore):
    """Its ``check_owner`` takes every node: a node started on another node's store ran with
    that node's vote and log."""

    async def check_owner(self, node_id: int, cluster_name: str) -> None:
        return None


class OwnerReplacedByTheNext(MemLogStore):
    """Its ``check_owner`` records each caller as the owner (the last node started on the
    store takes it over)."""

    async def check_owner(self, node_id: int, cluster_name: str) -> None:
        self.disk.owner = (node_id, cluster_name)


class OwnerForgottenAtRestart(_Reopened):
    """Keeps its owner in memory only: after a restart the store is adopted again by any
    node."""

    def reopened(self, disk: MemDisk) -> None:
        disk.owner = None


@pytest.mark.parametrize(
    ("log_cls", "check", "message"),
    [
        (OwnerNeverRefused, ("owner_recorded_then_checked", "owner_adopted_by_the_first_check"),
         r"check_owner\(2, 'c'\) of a store recorded for node 1 of 'c': returned, expected StoreOwnerMismatch$"),
        (OwnerReplacedByTheNext, ("owner_recorded_then_checked", "owner_adopted_by_the_first_check"),
         r"check_owner\(2, 'c'\) of a store recorded for node 1 of 'c': returned, expected StoreOwnerMismatch$"),
        (OwnerForgottenAtRestart, "owner_recorded_then_checked",
         r"check_owner\(2, 'c'\) after a restart of a store recorded for node 1 of 'c': returned, expected "
         r"StoreOwnerMismatch$"),
        (DataAsText, "append_every_payload_kind",
         r"entry 1-3 read back: the data differs from byte 128 on: expected 256 bytes, b'\\x80\\x81.*'\.\.\. there, "
         r"got 512 bytes, b'\\xef\\xbf\\xbd"),
        (DropsLearners, "append_every_payload_kind",
         r"entry 1-0 read back: the membership's voter sets and nodes: expected .*9: BasicNode\(addr='nœud-9:5009'\)\}\), got "),
        (EmptyDataIsBlank, "append_every_payload_kind", r"entry 1-2 read back: expected 1-2 Normal b'', got 1-2 Blank$"),
        (KeepsTheList, "append_does_not_keep_the_list",
         r"entries after appending 0\.\.=4 and refilling the list: expected \[1-0, 1-1, 1-2, 1-3, 1-4\], got \[9-0\]$"),
        (ReplacesOnOverlap, "append_overlap_refused", r"^\[append_overlap_refused\] append of 2-3 to the log 1-0\.\.=1-4: expected ValueError$"),
        (AppendCommittedByTheNextWrite, ("reopen_right_after_each_write", "append_every_payload_kind"),
         r"entries after appending 0\.\.=5 and reopen: expected \[1-0, 1-1, 1-2, 1-3, 1-4, 1-5\], got \[\]$"),
        (VoteCommittedByTheNextWrite, "reopen_right_after_each_write",
         r"read_vote\(\) after save_vote and reopen: expected <T4-N2:Q>, got None$"),
        (PurgedTermFromFirstEntry, "reopen_keeps_the_purged_log_id",
         r"get_log_state\(\) after purge\(1-4\) and reopen: expected LogState\(last_purged_log_id=1-4, last_log_id=3-10\), "
         r"got LogState\(last_purged_log_id=3-4, "),
        (PurgedFromFirstEntry, "reopen_keeps_the_purged_log_id",
         r"get_log_state\(\) after purge\(1-4\), truncate_after\(None\) and reopen: expected LogState\(last_purged_log_id=1-4, "
         r"last_log_id=1-4\), got LogState\(last_purged_log_id=None, last_log_id=None\)"),
    ],
)
async def test_a_log_store_bug_the_earlier_checks_missed_fails_one_named_check(
    log_cls: type[MemLogStore], check: str | tuple[str, ...], message: str
) -> None:
    """Each of these log stores passed the whole suite before the checks it fails now (see
    their docstrings); ``message`` is the first named check's."""
    names = [check] if isinstance(check, str) else list(check)
    report = await run_log_storage_suite(mem_builder(log_cls), raise_on_failure=False)
    failed = {o.name: o.error for o in report if not o.ok}
    assert sorted(failed) == sorted(names)
    assert re.search(message, str(failed[names[0]])), failed[names[0]]


async def test_a_store_keeping_the_list_does_not_spoil_the_suite() -> None:
    """The suite hands a store copies of its entry lists: a store that kept the list of the
    restore checks' entries (``restore.LOG``) and then truncated and purged it changed that
    list, and every later run in the process failed those checks, on any store, with
    "restored committed membership" and "the state machine has applied nothing but the log
    is purged"."""
    await run_log_storage_suite(mem_builder(KeepsTheList), raise_on_failure=False)
    _assert_all_ran(await run_log_storage_suite(mem_builder()), LogStoreSuite)


async def _failed(builder: Any, **kw: Any) -> set[str]:
    with pytest.raises(SuiteFailure) as info:
        await run_log_storage_suite(builder, **kw)
    failure = info.value
    for name in failure.failed:
        assert name in str(failure)
    return set(failure.failed)


async def test_forgetting_purged_fails_purge_checks() -> None:
    failed = await _failed(mem_builder(ForgetsPurged))
    assert {"purge_upto_0", "purge_upto_5", "purge_upto_20", "log_state_after_purge", "get_log_entries_after_purge_raises_log_compacted"} <= failed
    assert "append_single" not in failed and "truncate_after_5" not in failed


async def test_hole_after_purge_fails_purge_checks() -> None:
    failed = await _failed(mem_builder(PurgeLeavesHole))
    assert {"purge_upto_0", "purge_upto_5", "purge_twice_and_not_backwards", "restore_log_ids_and_vote"} <= failed
    assert "save_vote_then_read" not in failed


async def test_noop_vote_fails_vote_checks() -> None:
    failed = await _failed(mem_builder(NoopVote))
    assert {"save_vote_then_read", "save_vote_overwrite", "save_vote_reader_sees_it", "restore_log_ids_and_vote", "reopen_keeps_log"} <= failed
    assert "purge_upto_5" not in failed and "initial_vote_none" not in failed


async def test_failure_message_says_what_differed() -> None:
    report = await run_log_storage_suite(mem_builder(NoopVote), only=["save_vote_then_read"], raise_on_failure=False)
    (outcome,) = report
    assert not outcome.ok
    assert "[save_vote_then_read] read_vote() after save_vote: expected" in str(outcome.error)


async def test_broken_state_machine_fails_named_checks() -> None:
    class NoMembership(MemStateMachine):
        async def apply(self, entries: list[Any]) -> list[Any]:
            saved = self.disk.membership
            out = await super().apply(entries)
            self.disk.membership = saved
            return out

    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[StoreHandle]:
        disk = MemDisk()
        yield StoreHandle(MemLogStore(disk), NoMembership(disk))

    with pytest.raises(SuiteFailure) as info:
        await run_state_machine_suite(builder)
    assert {"apply_membership_updates_stored_membership", "apply_later_membership_replaces", "snapshot_build_meta"} <= set(info.value.failed)
    assert "apply_empty_list" not in info.value.failed


async def test_adaptor_runs_a_cluster() -> None:
    from openraft_py import Config
    from openraft_py.testing import Cluster

    async with Cluster(
        Config(),
        seed=3,
        log_store=lambda nid, disk: Adaptor(MemRaftStorage(disk))[0],
        state_machine=lambda disk: Adaptor(MemRaftStorage(disk))[1],
    ) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        resp = await c.nodes[leader].client_write(b"opaque")
        await c.wait_applied(resp.log_id.index)
        await c.restart(leader)
        await c.wait_for_leader()
        await c.wait_applied(resp.log_id.index)


# -- state machines the earlier checks passed -----------------------------------------------------


class QuietForgetsMembership(MemStateMachine):
    """``apply_without_responses`` (a follower's every batch) does not record memberships."""

    async def apply_without_responses(self, entries: list[Any]) -> None:
        saved = self.disk.membership
        await super().apply_without_responses(entries)
        self.disk.membership = saved


class QuietSkipsDeletes(MemStateMachine):
    """``apply_without_responses`` (a follower's every batch) leaves out deletes, taking them
    for work that only the responses need: a key deleted on the leader stays on the
    followers."""

    async def apply_without_responses(self, entries: list[Any]) -> None:
        def is_delete(e: Any) -> bool:
            return type(e.payload) is Normal and type(decode_kv(e.payload.data)) is KvDelete

        await super().apply_without_responses([e for e in entries if not is_delete(e)])
        if entries:
            self.disk.last_applied = entries[-1].log_id


class SecondBuildRepeatsFirst(MemStateMachine):
    """Every build after the first hands out the first build's data under its own meta (a
    snapshot file written once and never replaced)."""

    async def _build(self) -> Any:
        snap = await super()._build()
        first: bytes | None = getattr(self.disk, "first_build", None)
        if first is None:
            self.disk.first_build = snap.data.getvalue()  # type: ignore[attr-defined]
            return snap
        self.disk.snapshot = (snap.meta, first)
        return Snapshot(snap.meta, io.BytesIO(first))


class RebuildsOnlyAfterApply(MemStateMachine):
    """Builds a snapshot only when it applied entries since its last build, and hands out
    that build otherwise (making it current again); an install does not count as a change."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.last_build: tuple[Any, bytes] | None = None

    async def apply(self, entries: list[Any]) -> list[Any]:
        self.last_build = None
        return await super().apply(entries)

    async def _build(self) -> Any:
        if self.last_build is None:
            snap = await super()._build()
            self.last_build = (snap.meta, snap.data.getvalue())
        self.disk.snapshot = self.last_build
        return Snapshot(self.last_build[0], io.BytesIO(self.last_build[1]))


class ReadsTheSnapshotOnce(MemStateMachine):
    """``get_current_snapshot`` gives the first 64 KiB of its snapshot (one fixed-size read
    of the snapshot file)."""

    async def get_current_snapshot(self) -> Any:
        cur = await super().get_current_snapshot()
        return None if cur is None else Snapshot(cur.meta, io.BytesIO(cur.data.read(65536)))


class KeepsARefusedSnapshot(MemStateMachine):
    """Saves the received snapshot as its current one before loading it, and keeps it when
    loading fails: a refused install leaves the garbage as the snapshot the node sends."""

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        data.seek(0)
        received = data.read()
        try:
            await super().install_snapshot(meta, data)
        finally:
            self.disk.snapshot = (meta, received)


class _KeptOpen(io.BytesIO):
    def close(self) -> None:
        """Stays open: the same file is handed out again."""


class ReceivesIntoOneFile(MemStateMachine):
    """``begin_receiving_snapshot`` hands out the same file every time (a file opened for
    appending), so a second snapshot lands after the first one's bytes."""

    async def begin_receiving_snapshot(self) -> Any:
        kept: _KeptOpen | None = getattr(self.disk, "receiving", None)
        if kept is None:
            kept = self.disk.receiving = _KeptOpen()  # type: ignore[attr-defined]
        return kept


class DataNotDurable(MemStateMachine):
    """Keeps its last applied id across a restart but not its data (the data's writes were
    never committed): it reports entries applied whose effect it lost."""

    def __init__(self, disk: MemDisk) -> None:
        if getattr(disk, "opened", False):
            disk.kv = {}
        disk.opened = True  # type: ignore[attr-defined]
        super().__init__(disk)


class ReversedResponses(MemStateMachine):
    """``apply`` returns its responses in reverse order (each batch's)."""

    async def apply(self, entries: list[Any]) -> list[Any]:
        return list(reversed(await super().apply(entries)))


class ResponsesByKey(MemStateMachine):
    """``apply`` returns the responses of a batch's KV commands grouped by their key (as a
    state machine that applies a batch key by key would), the others where they were."""

    async def apply(self, entries: list[Any]) -> list[Any]:
        responses = await super().apply(entries)
        keyed = [i for i, e in enumerate(entries) if type(e.payload) is Normal and decode_kv(e.payload.data) is not None]
        by_key = sorted(keyed, key=lambda i: decode_kv(entries[i].payload.data).key)  # type: ignore[union-attr]
        out = list(responses)
        for slot, i in zip(keyed, by_key):
            out[slot] = responses[i]
        return out


class InstalledSnapshotNotKept(MemStateMachine):
    """``install_snapshot`` installs the data but keeps the snapshot itself in the object
    (the disk keeps the one before): after a restart, the current snapshot is the older one
    (or none) while the data is the installed one's."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.installed: Any = None

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        kept = self.disk.snapshot
        await super().install_snapshot(meta, data)
        self.installed, self.disk.snapshot = self.disk.snapshot, kept

    async def get_current_snapshot(self) -> Any:
        if self.installed is not None:
            return Snapshot(self.installed[0], io.BytesIO(self.installed[1]))
        return await super().get_current_snapshot()


class InstalledAppliedNotDurable(MemStateMachine):
    """``install_snapshot`` saves the data and the snapshot but keeps the applied log id and
    membership in the object: after a restart it reports the applied state it had before
    the install, with the snapshot's data."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.installed: Any = None

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        before = self.disk.last_applied, self.disk.membership
        await super().install_snapshot(meta, data)
        self.installed = (meta.last_log_id, meta.last_membership)
        self.disk.last_applied, self.disk.membership = before

    async def applied_state(self) -> Any:
        return self.installed if self.installed is not None else await super().applied_state()

    async def apply(self, entries: list[Any]) -> list[Any]:
        if self.installed is not None:
            self.disk.last_applied, self.disk.membership = self.installed
            self.installed = None
        return await super().apply(entries)


class SnapshotMetaCachedOnce(MemStateMachine):
    """``get_current_snapshot_meta`` answers what it found at its first call ever (a cache
    of the meta that no build or install refreshes)."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.cached: Any = ()

    async def get_current_snapshot_meta(self) -> Any:
        if self.cached == ():
            self.cached = await super().get_current_snapshot_meta()
        return self.cached


def sm_builder(sm_cls: type[MemStateMachine]) -> Any:
    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[StoreHandle]:
        disk = MemDisk()

        async def reopen() -> tuple[Any, Any]:
            return MemLogStore(disk), sm_cls(disk)

        yield StoreHandle(MemLogStore(disk), sm_cls(disk), reopen=reopen, state_view=_view)

    return builder


@pytest.mark.parametrize(
    ("sm_cls", "check", "message"),
    [
        (QuietForgetsMembership, "apply_without_responses_same_state",
         r"applied_state\(\) after apply_without_responses\(0\.\.=18\), against apply's: expected \(1-18, "
         r"StoredMembership\(log_id=1-5, .*got \(1-18, StoredMembership\(log_id=None"),
        (QuietSkipsDeletes, "apply_without_responses_same_state",
         r"state after apply_without_responses\(0\.\.=18\), against apply's \(state_view\): expected \{[^}]*'key8': 'value8', "
         r"'a': '6'\}, got \{[^}]*'key8': 'value8', 'b': '4', 'a': '6'\}"),
        (SecondBuildRepeatsFirst, ("snapshot_install_a_later_snapshot", "snapshot_build_after_install"),
         r"state after installing the second snapshot \(state_view\): a snapshot's data must be the state at its "
         r"meta's last_log_id"),
        (ReceivesIntoOneFile, "snapshot_install_a_later_snapshot",
         r"install_snapshot of a second snapshot \(1-8-\d+\) after a first one: ValueError: .*bytes after the end of "
         r"its data.* \(does begin_receiving_snapshot return a new, empty file each time\?\)"),
        (DataNotDurable, ("reopen_keeps_applied_state", "reopen_after_install_keeps_the_snapshot"),
         r"state after reopen \(state_view\), which reports applied 1-6: expected \{'key1': 'value1'.*got \{\}"),
        (InstalledSnapshotNotKept, "reopen_after_install_keeps_the_snapshot",
         r"current snapshot meta after installing a snapshot and reopen: expected SnapshotMeta\(last_log_id=1-7, .*got None"),
        (InstalledAppliedNotDurable, ("reopen_after_install_keeps_the_snapshot", "snapshot_build_after_install"),
         r"applied_state\(\) after installing a snapshot and reopen: expected \(1-7, .*got \(1-2, "),
        (RebuildsOnlyAfterApply, "snapshot_build_after_install",
         r"meta of a snapshot built right after an install: expected \(1-7, .*got \(1-2, "),
        (ReadsTheSnapshotOnce, "snapshot_of_a_larger_state",
         r"length of the current snapshot's data, against the built one's: expected \d+, got 65536$"),
        (KeepsARefusedSnapshot, ("snapshot_install_bad_data_raises_value_error", "snapshot_meta_is_the_current_snapshots"),
         r"current snapshot meta after a refused install: expected SnapshotMeta\(last_log_id=1-2, .*got SnapshotMeta\(last_log_id=1-9, "),
        (SnapshotMetaCachedOnce, "snapshot_meta_is_the_current_snapshots",
         r"get_current_snapshot_meta\(\) after a build, against get_current_snapshot\(\)\.meta: expected "
         r"SnapshotMeta\(last_log_id=1-3, .*got None"),
        (ReversedResponses, "apply_responses_in_order",
         r"responses of one apply\(\) of 13 entries, against applying them one at a time \(apply must answer each "
         r"entry, in the entries' order\): expected \[None, None, None, None, None, '1', '2', \(True, '4'\), '4', .*got \['4', "),
        (ResponsesByKey, "apply_responses_in_order",
         r"responses of one apply\(\) of 13 entries, .*got \[None, None, '2', None, None, None, '1', \(True, '4'\), '4', \(False"),
    ],
)
async def test_a_state_machine_bug_the_earlier_checks_missed_fails_one_named_check(
    sm_cls: type[MemStateMachine], check: str | tuple[str, ...], message: str
) -> None:
    """Each of these state machines passed the whole suite before the check it fails now
    (see their docstrings); ``message`` is that check's. (A check added later may fail it
    too: ``check`` then names both, that one first.)"""
    names = [check] if isinstance(check, str) else list(check)
    report = await run_state_machine_suite(sm_builder(sm_cls), raise_on_failure=False)
    failed = {o.name: o.error for o in report if not o.ok}
    assert sorted(failed) == sorted(names)
    assert re.search(message, str(failed[names[0]])), failed[names[0]]


# -- builders of the wrong form -------------------------------------------------------------------


@contextlib.contextmanager
def _sync_builder() -> Any:
    yield MemLogStore(), MemStateMachine()


class _PairContext:
    """A class whose instances are async context managers giving a pair: a builder."""

    async def __aenter__(self) -> tuple[Any, Any]:
        return MemLogStore(), MemStateMachine()

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (lambda: mem_builder()(), r"^the builder must be a zero-argument callable that makes a fresh store pair for each "
                                  r"check, got _AsyncGeneratorContextManager .*: pass the builder itself \(builder, not builder\(\)\)$"),
        (lambda: _sync_builder, r"^builder\(\) must return an async context manager or an awaitable, got the synchronous "
                                r"context manager .*: make it a @contextlib.asynccontextmanager \(not @contextlib.contextmanager\)$"),
        (lambda: lambda: (MemLogStore(), MemStateMachine()),
         r"^builder\(\) must return an async context manager or an awaitable, got tuple \(MemLogStore\(.*: make it an "
         r"@contextlib.asynccontextmanager, or an async def$"),
        (lambda: contextlib.asynccontextmanager(_yields_one_store),
         r"^the builder must give a StoreHandle or a \(log_store, state_machine\) tuple, got MemLogStore MemLogStore\("),
    ],
    ids=["builder()", "contextmanager", "sync function", "one store"],
)
async def test_a_builder_of_the_wrong_form_is_refused_at_once(builder: Any, message: str) -> None:
    """A ``TypeError`` (``BuilderError``) saying what to change, raised before any check:
    each of these failed all 53 checks with the same error, and for ``builder()`` passed
    instead of ``builder`` that error was "AsyncContextDecorator.__call__() missing 1
    required positional argument: 'func'"."""
    with pytest.raises(TypeError, match=message):
        await run_log_storage_suite(builder())
    with pytest.raises(TypeError, match=message):
        await LogStoreSuite.run_one(builder(), "purge_upto_5")


async def _yields_one_store() -> AsyncIterator[Any]:
    yield MemLogStore()


def _handle_builder(**kw: Any) -> Any:
    """A builder of ``StoreHandle(MemLogStore(disk), MemStateMachine(disk), **kw)``."""

    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[StoreHandle]:
        disk = MemDisk()
        yield StoreHandle(MemLogStore(disk), MemStateMachine(disk), **kw)

    return builder


def _sync_view(sm: Any) -> dict[str, str]:
    return dict(sm.data)


def _sync_reopen() -> tuple[Any, Any]:
    return MemLogStore(), MemStateMachine()


async def _reopen_to_a_handle() -> Any:
    return StoreHandle(MemLogStore(), MemStateMachine())


@pytest.mark.parametrize(
    ("handle", "message"),
    [
        ({"normal_data": lambda i: f"key{i}"}, r"^StoreHandle\.normal_data\(1\) must give bytes \(a Normal entry's data\), got str 'key1'$"),
        ({"normal_data": lambda i: None}, r"^StoreHandle\.normal_data\(1\) must give bytes .*got NoneType None$"),
        ({"normal_data": None}, r"^StoreHandle\.normal_data must be a function of an entry's index giving its data \(bytes\), got NoneType None$"),
        ({"normal_data": lambda: b"x"}, r"^StoreHandle\.normal_data\(1\) raised TypeError: .*takes 0 positional arguments but 1 was given "
                                        r"\(normal_data takes an entry's index\)$"),
        ({"state_view": {}}, r"^StoreHandle\.state_view must be an async function or None, got dict \{\}$"),
        ({"state_view": _sync_view}, r"^StoreHandle\.state_view must be an async function \(async def\) of the state machine, got "
                                     r"<function _sync_view .*, which returned dict \{'key1': 'value1', "),
        ({"reopen": _sync_reopen}, r"^StoreHandle\.reopen must be an async function \(async def\) giving a new \(log_store, "
                                   r"state_machine\) pair, got <function _sync_reopen .*, which returned tuple \(MemLogStore"),
        ({"reopen": _reopen_to_a_handle}, r"^StoreHandle\.reopen\(\) must give a new \(log_store, state_machine\) tuple, got StoreHandle "),
    ],
    ids=["data str", "data None", "no normal_data", "normal_data()", "view not callable", "sync view", "sync reopen", "reopen handle"],
)
async def test_a_store_handle_of_the_wrong_form_is_refused_at_once(handle: dict[str, Any], message: str) -> None:
    """A ``TypeError`` (``BuilderError``) saying what to change, raised by the first check
    that meets it, instead of failing most checks with errors of their own: a
    ``normal_data`` giving ``str`` failed the snapshot checks with the state machine's
    decoding errors, one giving ``None`` passed, a ``state_view`` that is a plain function
    failed eleven checks with "object dict can't be used in 'await' expression"."""
    with pytest.raises(TypeError, match=message):
        await run_state_machine_suite(_handle_builder(**handle))
    if "reopen" in handle:
        with pytest.raises(TypeError, match=message):
            await run_log_storage_suite(_handle_builder(**handle))


async def test_a_class_of_async_context_managers_is_a_builder() -> None:
    report = await run_log_storage_suite(_PairContext, only=["purge_upto_5"])
    assert [(o.name, o.ok) for o in report] == [("purge_upto_5", True)]


class _WedgedLogStore(MemLogStore):
    """A store whose ``append`` never returns until ``release`` is set: ``swallow`` makes it
    ignore cancellation meanwhile; its ``close`` waits for its lock, which an ``append``
    cancelled leaves held (a wedged store) until ``release`` is set."""

    def __init__(self, release: Any, *, swallow: bool) -> None:
        super().__init__()
        self.release = release
        self.swallow = swallow
        self.lock = asyncio.Lock()

    async def append(self, entries: Any, callback: Any) -> None:
        await self.lock.acquire()
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                if not self.swallow:
                    raise  # (the lock stays held)
        self.lock.release()
        await super().append(entries, callback)

    async def close(self) -> None:
        if self.lock.locked():
            await self.release.wait()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("close", r"^\[log_state_after_append\] timed out after 0\.5s, then the builder's clean-up \(its exit\) "
                  r"did not end within 0\.5s"),
        ("swallow", r"^\[log_state_after_append\] timed out after 0\.5s and did not end when cancelled"),
        ("open", r"^\[log_state_after_append\] the builder did not give its stores within 0\.5s"),
    ],
)
async def test_a_wedged_store_or_builder_fails_its_check_in_bounded_time(where: str, message: str) -> None:
    """``timeout`` bounds each check whatever the store does: a store whose calls never
    return and whose clean-up waits for them (a lock), one that ignores the cancellation,
    a builder that never gives its stores. Each hung the suite for ever (only the check's
    own body was bounded); each now fails its check, saying where it hung."""
    release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[tuple[Any, Any]]:
        if where == "open":
            await release.wait()
        store = _WedgedLogStore(release, swallow=where == "swallow")
        try:
            yield store, MemStateMachine()
        finally:
            await store.close()

    try:
        async with asyncio.timeout(15):
            report = await run_log_storage_suite(builder, only=["log_state_after_append"], timeout=0.5,
                                                 raise_on_failure=False)
    finally:
        release.set()  # the abandoned task, if any, ends
    [outcome] = report
    assert not outcome.ok
    assert isinstance(outcome.error, AssertionError)
    assert re.search(message, str(outcome.error)), str(outcome.error)


class _RaisesCancelled(MemLogStore):
    """A store whose ``get_log_state`` raises ``CancelledError`` of its own (it awaited a
    task of its own that was cancelled), with no one cancelling the check."""

    async def get_log_state(self) -> Any:
        raise asyncio.CancelledError


async def test_a_store_raising_cancelled_error_fails_its_check_not_the_suite() -> None:
    """The ``CancelledError`` went through the suite as if the caller had been cancelled: no
    report, no check named, the other checks not run."""

    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[tuple[Any, Any]]:
        yield _RaisesCancelled(), MemStateMachine()

    async with asyncio.timeout(15):
        report = await run_log_storage_suite(builder, only=["initial_log_state_empty", "initial_vote_none"],
                                             raise_on_failure=False)
    assert [(o.name, o.ok) for o in report] == [("initial_log_state_empty", False), ("initial_vote_none", True)]
    assert re.fullmatch(r"\[initial_log_state_empty\] the store raised asyncio\.CancelledError, with no one "
                        r"cancelling the check.*", str(report[0].error)), report[0].error


class _SwallowsOneCancel(MemLogStore):
    """A store whose first ``append`` waits for ``release`` and catches the first
    cancellation it gets; ``then`` says what it does next: ``"return"`` (it appends, late),
    ``"wait"`` (it waits again, and lets the next cancellation through)."""

    def __init__(self, release: asyncio.Event, then: str) -> None:
        super().__init__()
        self.release = release
        self.then = then
        self.appends = 0

    async def append(self, entries: Any, callback: Any) -> None:
        self.appends += 1
        if self.appends == 1:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                if self.then == "wait":
                    await self.release.wait()
        await super().append(entries, callback)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("then", "message"),
    [
        ("return", r"^\[log_state_after_append\] timed out after 0\.5s, and went on: a store call caught "
                   r"asyncio\.CancelledError"),
        ("wait", r"^\[log_state_after_append\] timed out after 0\.5s and did not end when cancelled within 1\.0s"),
    ],
)
async def test_a_store_catching_the_cancellation_of_a_timed_out_check_fails_it(then: str, message: str) -> None:
    """A store call that caught the cancellation of the check's timeout and returned made
    the check go on past its timeout and pass; one that caught it and went on waiting was
    reported as ``passed, then the builder's clean-up ... did not end`` (the failure was
    described after the check was stopped, when it had left its phase)."""
    release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def builder() -> AsyncIterator[tuple[Any, Any]]:
        yield _SwallowsOneCancel(release, then), MemStateMachine()

    try:
        async with asyncio.timeout(15):
            report = await run_log_storage_suite(builder, only=["log_state_after_append"], timeout=0.5,
                                                 raise_on_failure=False)
    finally:
        release.set()
    [outcome] = report
    assert not outcome.ok
    assert re.search(message, str(outcome.error)), str(outcome.error)


async def test_stopping_a_check_that_already_failed_retrieves_its_error() -> None:
    """``run_one`` stops its check's task when it is stopped itself (its caller's timeout,
    Ctrl-C). A task that had just ended with an error was left with it unread: asyncio then
    reported "Task exception was never retrieved" for a failure nobody could see."""
    import gc

    from openraft_py.testing.suite import base

    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async def fails() -> None:
            raise AssertionError("the check failed")

        task = asyncio.ensure_future(fails())
        await asyncio.wait({task})
        await base._stop(task)
        del task
        gc.collect()
        await asyncio.sleep(0)  # (one loop turn: the done callbacks _stop added run in it)
    finally:
        loop.set_exception_handler(None)
    assert [c.get("message") for c in reported] == []
