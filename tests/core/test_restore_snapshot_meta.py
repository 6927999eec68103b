"""``core.restore.restore_state`` learns the current snapshot's id from the state machine's
optional ``get_current_snapshot_meta`` (no snapshot data read at start), falls back to
``get_current_snapshot`` without it, and refuses what either returns outside its contract."""

from __future__ import annotations

import io
from typing import Any

import pytest

from openraft_py.core.restore import restore_state
from openraft_py.errors import StorageError
from openraft_py.storage import MemDisk, MemLogStore, MemStateMachine, NoopStateMachine, current_snapshot_meta_of
from openraft_py.types import Entry, LogId, Membership, Normal, Snapshot, SnapshotMeta

pytestmark = pytest.mark.timeout(10)


async def _pair(sm_cls: type[MemStateMachine] = MemStateMachine) -> tuple[MemLogStore, MemStateMachine, SnapshotMeta]:
    """A log of entries 0..=5, all applied, a snapshot built at 1-3, the log purged up to it."""
    disk = MemDisk()
    log_store = MemLogStore(disk)
    es = [Entry(LogId(1, 0), Membership.new([{1}]))] + [Entry(LogId(1, i), Normal(b"x%d" % i)) for i in range(1, 6)]
    log_store.append_durable(es)
    sm = sm_cls(disk)
    await sm.apply(es[:4])
    snap = await sm.get_snapshot_builder().build_snapshot()
    snap.data.close()
    await sm.apply(es[4:])
    await log_store.purge(LogId(1, 3))
    return MemLogStore(disk), sm_cls(disk), snap.meta


class CountsSnapshotReads(MemStateMachine):
    """Counts ``get_current_snapshot`` calls (the meta method is inherited from the class
    that defines ``get_current_snapshot``)."""

    reads = 0

    async def get_current_snapshot(self) -> Snapshot | None:
        type(self).reads += 1
        return await MemStateMachine.get_current_snapshot(self)

    get_current_snapshot_meta = MemStateMachine.get_current_snapshot_meta  # (defined here: used)


class OverridesTheSnapshot(MemStateMachine):
    """Overrides ``get_current_snapshot`` alone (hands out its own snapshot, whose file it
    keeps to see it closed): the inherited ``get_current_snapshot_meta`` does not describe it."""

    def __init__(self, disk: MemDisk) -> None:
        super().__init__(disk)
        self.handed_out: list[io.BytesIO] = []

    async def get_current_snapshot(self) -> Snapshot | None:
        cur = await super().get_current_snapshot()
        if cur is None:
            return None
        f = io.BytesIO(cur.data.read())
        self.handed_out.append(f)
        return Snapshot(SnapshotMeta(LogId(1, 4), cur.meta.last_membership, "its-own"), f)


async def test_a_start_reads_the_snapshot_meta_and_no_snapshot() -> None:
    """With ``get_current_snapshot_meta``, the start never asks for the snapshot itself
    (whose file a state machine may check whole: ``RocksStateMachine`` read all of it at
    every start)."""
    log_store, sm, meta = await _pair(CountsSnapshotReads)
    CountsSnapshotReads.reads = 0
    state, _ = await restore_state(1, log_store, sm)
    assert (state.snapshot, state.applied) == (meta.last_log_id, LogId(1, 5))
    assert CountsSnapshotReads.reads == 0, "restore_state read the snapshot, not its meta"


async def test_without_the_method_the_start_asks_for_the_snapshot_and_closes_its_file() -> None:
    """A subclass overriding ``get_current_snapshot`` alone is asked ``get_current_snapshot``
    (the meta it inherits would describe its parent's snapshot), and the file it handed out
    is closed."""
    log_store, sm, _ = await _pair(OverridesTheSnapshot)
    assert isinstance(sm, OverridesTheSnapshot)
    assert current_snapshot_meta_of(sm) is None
    state, _ = await restore_state(1, log_store, sm)
    assert state.snapshot == LogId(1, 4)
    assert len(sm.handed_out) == 1 and sm.handed_out[0].closed


def test_the_shipped_memory_state_machines_offer_the_meta() -> None:
    """``MemStateMachine`` and ``NoopStateMachine`` have it; a method set on an instance is
    that instance's."""
    assert current_snapshot_meta_of(MemStateMachine()) is not None
    assert current_snapshot_meta_of(NoopStateMachine()) is not None
    sm = OverridesTheSnapshot(MemDisk())

    async def meta() -> SnapshotMeta | None:
        return None

    sm.get_current_snapshot_meta = meta  # type: ignore[method-assign]
    assert current_snapshot_meta_of(sm) is meta


class HandsOutItsOwnSnapshot:
    """A wrapper state machine: its class defines ``get_current_snapshot`` (a snapshot of its
    own, at 1-4) and forwards every other attribute to the inner state machine through
    ``__getattr__``, ``get_current_snapshot_meta`` included, which describes the inner's
    snapshot (at 1-3), not this one."""

    def __init__(self, inner: MemStateMachine) -> None:
        self._inner = inner
        self.handed_out: list[io.BytesIO] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_current_snapshot(self) -> Snapshot | None:
        cur = await self._inner.get_current_snapshot()
        if cur is None:
            return None
        f = io.BytesIO(cur.data.read())
        self.handed_out.append(f)
        return Snapshot(SnapshotMeta(LogId(1, 4), cur.meta.last_membership, "the-wrapper's"), f)


class Forwards:
    """A wrapper that defines neither method: both come from the inner state machine, which
    answers them consistently."""

    def __init__(self, inner: MemStateMachine) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_wrapper_forwarding_the_meta_but_not_the_snapshot_is_asked_for_the_snapshot() -> None:
    """The meta a wrapper's ``__getattr__`` forwards from its inner state machine describes
    the inner's snapshot; the wrapper's own ``get_current_snapshot`` hands out another one.
    The start asks the wrapper for its snapshot (it took the inner's 1-3 for the snapshot's
    last log id, while the wrapper hands out 1-4)."""
    log_store, inner, meta = await _pair()
    assert meta.last_log_id == LogId(1, 3)
    sm = HandsOutItsOwnSnapshot(inner)
    state, _ = await restore_state(1, log_store, sm)  # type: ignore[arg-type]
    assert state.snapshot == LogId(1, 4)
    assert current_snapshot_meta_of(sm) is None
    assert len(sm.handed_out) == 1 and sm.handed_out[0].closed


async def test_a_wrapper_forwarding_both_methods_reads_the_meta() -> None:
    """Both methods forwarded by the same ``__getattr__`` describe the same snapshot: the
    start reads the meta, and no snapshot."""
    log_store, inner, meta = await _pair(CountsSnapshotReads)
    sm = Forwards(inner)
    assert current_snapshot_meta_of(sm) is not None
    CountsSnapshotReads.reads = 0
    state, _ = await restore_state(1, log_store, sm)  # type: ignore[arg-type]
    assert state.snapshot == meta.last_log_id
    assert CountsSnapshotReads.reads == 0, "restore_state read the snapshot, not its meta"


class ForwardsTo:
    """A wrapper whose ``__getattr__`` forwards ``get_current_snapshot`` to one object and
    everything else (``get_current_snapshot_meta`` included) to another."""

    def __init__(self, snapshots: Any, rest: Any) -> None:
        self._snapshots = snapshots
        self._rest = rest

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshots if name == "get_current_snapshot" else self._rest, name)


async def test_a_wrapper_forwarding_both_methods_is_judged_as_the_state_machine_it_forwards_to() -> None:
    """Both methods forwarded by a wrapper's ``__getattr__`` are used as the inner state
    machine's own would be: not when the inner's meta is not offered (a subclass overriding
    ``get_current_snapshot`` alone, an instance whose ``get_current_snapshot`` was
    replaced), nor when they are forwarded to two objects. The start took the inner's
    inherited meta, 1-3, while the snapshot handed out is at 1-4."""
    log_store, inner, _ = await _pair(OverridesTheSnapshot)
    assert current_snapshot_meta_of(inner) is None
    sm = Forwards(inner)
    assert current_snapshot_meta_of(sm) is None
    state, _ = await restore_state(1, log_store, sm)  # type: ignore[arg-type]
    assert state.snapshot == LogId(1, 4)
    assert isinstance(inner, OverridesTheSnapshot) and len(inner.handed_out) == 1 and inner.handed_out[0].closed

    log_store, plain, _ = await _pair()
    real = plain.get_current_snapshot

    async def its_own() -> Snapshot | None:
        cur = await real()
        assert cur is not None
        return Snapshot(SnapshotMeta(LogId(1, 4), cur.meta.last_membership, "the-instance's"), cur.data)

    plain.get_current_snapshot = its_own  # type: ignore[method-assign]
    assert current_snapshot_meta_of(Forwards(plain)) is None
    state, _ = await restore_state(1, log_store, Forwards(plain))  # type: ignore[arg-type]
    assert state.snapshot == LogId(1, 4)

    # Forwarded to two objects: the meta describes the other one's snapshot.
    log_store, other, _ = await _pair()
    split = ForwardsTo(HandsOutItsOwnSnapshot(MemStateMachine(MemDisk())), other)
    assert current_snapshot_meta_of(split) is None
    # A wrapper of a wrapper forwarding both to a state machine that offers it: used.
    _, offers, _ = await _pair()
    assert current_snapshot_meta_of(Forwards(Forwards(offers))) == offers.get_current_snapshot_meta


async def test_a_snapshot_method_set_on_the_instance_is_not_described_by_the_class_meta() -> None:
    """``get_current_snapshot`` set on the instance replaces the class's, whose meta then
    describes another snapshot: the start asks the instance's method (it read the class's
    meta, 1-3)."""
    log_store, sm, _ = await _pair()
    handed_out: list[io.BytesIO] = []
    real = sm.get_current_snapshot

    async def its_own() -> Snapshot | None:
        cur = await real()
        assert cur is not None
        f = io.BytesIO(cur.data.read())
        handed_out.append(f)
        return Snapshot(SnapshotMeta(LogId(1, 4), cur.meta.last_membership, "the-instance's"), f)

    sm.get_current_snapshot = its_own  # type: ignore[method-assign]
    state, _ = await restore_state(1, log_store, sm)
    assert state.snapshot == LogId(1, 4)
    assert current_snapshot_meta_of(sm) is None
    assert len(handed_out) == 1 and handed_out[0].closed


async def test_noop_state_machine_meta_is_its_current_snapshots() -> None:
    sm = NoopStateMachine()
    assert await sm.get_current_snapshot_meta() is None
    await sm.apply([Entry(LogId(1, 0), Membership.new([{1}]))])
    built = await sm.get_snapshot_builder().build_snapshot()
    cur = await sm.get_current_snapshot()
    assert cur is not None
    assert await sm.get_current_snapshot_meta() == cur.meta == built.meta


async def _plain_meta(self: Any) -> Any:
    return None


def _sm_with(name: str, fn: Any) -> MemStateMachine:
    """A ``MemStateMachine`` whose class defines ``name`` as ``fn`` (with
    ``get_current_snapshot`` beside it, so a ``get_current_snapshot_meta`` is used)."""
    body = {name: fn}
    if name == "get_current_snapshot_meta":
        body["get_current_snapshot"] = MemStateMachine.get_current_snapshot
    else:
        body["get_current_snapshot_meta"] = None  # none: the start asks get_current_snapshot
    return type("UserStateMachine", (MemStateMachine,), body)()  # type: ignore[no-any-return]


async def _returns(value: Any) -> Any:
    return value


@pytest.mark.parametrize(
    ("name", "fn", "message"),
    [
        ("get_current_snapshot_meta", lambda self: _returns(("1-3", "s")),
         r"the state machine's get_current_snapshot_meta returned tuple \('1-3', 's'\), expected a SnapshotMeta or None"),
        ("get_current_snapshot_meta", lambda self: None,
         r"the state machine's get_current_snapshot_meta returned NoneType None, expected an awaitable \(declare it async def\)"),
        ("get_current_snapshot_meta", lambda self: _returns(SnapshotMeta((1, 3), None, "s")),  # type: ignore[arg-type]
         r"the state machine's get_current_snapshot_meta \(its meta's last_log_id\) returned tuple \(1, 3\), expected a LogId or None"),
        ("get_current_snapshot", lambda self: _returns(("meta", b"data")),
         r"the state machine's get_current_snapshot returned tuple \('meta', b'data'\), expected a Snapshot or None"),
        ("get_current_snapshot", lambda self: _returns(Snapshot({"last_log_id": 3}, io.BytesIO())),  # type: ignore[arg-type]
         r"the state machine's get_current_snapshot \(its meta\) returned dict \{'last_log_id': 3\}, expected a SnapshotMeta"),
    ],
    ids=["meta-tuple", "meta-not-async", "meta-last-log-id-tuple", "snapshot-tuple", "snapshot-meta-dict"],
)
async def test_a_snapshot_or_meta_of_another_type_is_refused_naming_the_method(name: str, fn: Any, message: str) -> None:
    """What the state machine returns is checked at start, as the other store results are:
    a value of another type stopped ``Raft.new`` with an ``AttributeError`` about ``meta``
    that named no store."""
    sm = _sm_with(name, fn)
    with pytest.raises(StorageError, match=message):
        await restore_state(1, MemLogStore(), sm)
