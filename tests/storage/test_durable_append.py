"""``RaftLogStorage``'s optional ``append_durable`` (``storage.durable_append_of``): offered by
``MemLogStore``, withheld from a subclass that overrides ``append`` alone, and what a node
appends through when it is offered."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from integration.checks import write_on_leader

from openraft_py import Config
from openraft_py.storage import IOFlushed, MemDisk, MemLogStore, durable_append_of
from openraft_py.testing import Cluster
from openraft_py.types import Blank, Entry, LogId

pytestmark = pytest.mark.timeout(30)


def _entries(first: int, n: int) -> list[Entry]:
    return [Entry(LogId(1, i), Blank()) for i in range(first, first + n)]


def test_mem_log_store_offers_its_append_durable() -> None:
    store = MemLogStore()
    fn = durable_append_of(store)
    assert fn is not None
    fn(_entries(0, 3))
    assert [e.log_id.index for e in store.disk.entries] == [0, 1, 2]


def test_append_durable_refuses_a_hole_and_leaves_the_log_unchanged() -> None:
    store = MemLogStore()
    store.append_durable(_entries(0, 2))
    with pytest.raises(ValueError, match="without a hole"):
        store.append_durable(_entries(5, 1))
    with pytest.raises(ValueError, match="consecutive"):
        store.append_durable([Entry(LogId(1, 2), Blank()), Entry(LogId(1, 4), Blank())])
    assert [e.log_id.index for e in store.disk.entries] == [0, 1]


class _DelayedAppend(MemLogStore):
    """Overrides ``append`` alone (as a store that delays or fails its appends does)."""

    __slots__ = ()
    calls: ClassVar[int] = 0

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        _DelayedAppend.calls += 1
        await asyncio.sleep(0)
        await super().append(entries, callback)


class _NoOffer:
    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        callback.io_completed(None)


def test_no_offer_when_append_is_overridden_alone_or_absent() -> None:
    assert durable_append_of(_DelayedAppend()) is None
    assert durable_append_of(_NoOffer()) is None


class _UserStore:
    """A user's store offering both, with an instance ``__dict__`` (``MemLogStore`` has none)."""

    def __init__(self) -> None:
        self.inner = MemLogStore()

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        await self.inner.append(entries, callback)

    def append_durable(self, entries: list[Entry]) -> None:
        self.inner.append_durable(entries)


def test_no_offer_when_append_is_replaced_on_the_instance() -> None:
    """An ``append`` set on the instance (one that delays or fails its appends, as a test
    injects) is the one in use: the class's ``append_durable`` would bypass it (it was
    offered)."""
    store = _UserStore()
    assert durable_append_of(store) is not None

    async def failing(entries: list[Entry], callback: IOFlushed) -> None:
        raise OSError("disk full")

    store.append = failing  # type: ignore[method-assign]
    assert durable_append_of(store) is None
    store.append_durable = store.inner.append_durable  # type: ignore[method-assign]
    assert durable_append_of(store) is not None, "both set on the instance: offered"


class _Counting(MemLogStore):
    """Offers both, counting which one the node calls (shared across the cluster's nodes)."""

    __slots__ = ()
    calls: ClassVar[dict[str, int]] = {"append": 0, "append_durable": 0}

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        _Counting.calls["append"] += 1
        await super().append(entries, callback)

    def append_durable(self, entries: list[Entry]) -> None:
        _Counting.calls["append_durable"] += 1
        super().append_durable(entries)


@pytest.mark.parametrize("store", [_Counting, _DelayedAppend])
async def test_a_cluster_appends_through_the_offer_or_else_append(store: type[MemLogStore]) -> None:
    _Counting.calls.update(append=0, append_durable=0)
    _DelayedAppend.calls = 0
    async with Cluster(Config(election_timeout_min=150, election_timeout_max=300),
                       log_store=lambda _id, disk: store(disk)) as c:
        await c.start({1, 2, 3})
        last = None
        for i in range(20):
            # Follow the leader: on a loaded machine an election may move it mid-test.
            last = (await write_on_leader(c, b"w%d" % i)).log_id
        assert last is not None
        await c.wait_applied(last.index, timeout=10)
    if store is _Counting:
        assert _Counting.calls["append_durable"] >= 20 and _Counting.calls["append"] == 0
    else:  # the override is what the node appends through
        assert _DelayedAppend.calls >= 20
    for d in c.disks.values():
        assert isinstance(d, MemDisk) and len(d.entries) >= 21
