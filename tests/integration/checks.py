"""Invariant checks over the nodes' ``MemDisk``s, the fast test config, a write that follows
the leader, and what the nodes log and read, shared by the integration tests (``from
integration.checks import ...``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import pytest

from openraft_py import BasicNode, ClientWriteResponse, Config, ForwardToLeader, Raft, SnapshotPolicy
from openraft_py.metrics import MetricsWatch, RaftMetrics
from openraft_py.storage.memory import MemDisk
from openraft_py.testing.cluster import Cluster
from openraft_py.testing.invariants import check_applied_agree
from openraft_py.testing.invariants import check_log_matching as _check_log_matching
from openraft_py.types import LogId, NodeId, Normal

T = TypeVar("T")


def fast_config(**kw: object) -> Config:
    """Short timeouts so elections take tens of milliseconds; snapshots off (the checks read
    whole logs)."""
    base: dict[str, object] = dict(
        election_timeout_min=50,
        election_timeout_max=100,
        heartbeat_interval=15,
        snapshot_policy=SnapshotPolicy.never(),
    )
    base.update(kw)
    return Config(**base)  # type: ignore[arg-type]


def log_of(disk: MemDisk) -> dict[int, object]:
    """``index -> entry`` of the entries held on ``disk``."""
    return {disk.offset + i: e for i, e in enumerate(disk.entries)}


def entry_at(disk: MemDisk, index: int) -> object | None:
    """The entry at ``index`` on ``disk`` or ``None`` (not held)."""
    i = index - disk.offset
    if 0 <= i < len(disk.entries):
        return disk.entries[i]
    return None


def holds(disk: MemDisk, log_id: LogId, data: bytes) -> bool:
    """Whether ``disk``'s log holds the Normal entry ``(log_id, data)``."""
    e = entry_at(disk, log_id.index)
    return e is not None and e.log_id == log_id and type(e.payload) is Normal and e.payload.data == data  # type: ignore[attr-defined]


def check_log_matching(disks: dict[int, MemDisk]) -> None:
    """Log matching over the entries each disk holds (``openraft_py.testing.invariants``): if
    two logs hold an entry with the same log id, every earlier entry both hold is identical.
    Raises ``Violation`` (an ``AssertionError``)."""
    _check_log_matching({n: (d.offset, d.entries) for n, d in disks.items()})


def check_applied_prefix(disks: dict[int, MemDisk]) -> None:
    """State machine safety: every node's ``applied_log`` is a prefix of the longest one
    (``openraft_py.testing.invariants.check_applied_agree``)."""
    check_applied_agree({n: d.applied_log for n, d in disks.items()})


async def on_leader(c: Cluster, call: Callable[[Raft], Awaitable[T]], timeout: float = 10.0,
                    among: Iterable[NodeId] | None = None) -> T:
    """``call(raft)`` on whichever node leads (agreed by ``among``, default every running
    node: ``Cluster.wait_for_leader``), retried while the node asked turns out to lead no
    more (``ForwardToLeader``: refused before anything was done). On a loaded machine the
    short election timeouts of these tests (``fast_config``) pass now and then without a
    heartbeat, and the leader changes between two calls of a test. The whole call is
    bounded by ``timeout`` seconds (``TimeoutError``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        lid = await c.wait_for_leader(timeout=max(0.1, deadline - loop.time()), among=among)
        try:
            return await asyncio.wait_for(call(c.nodes[lid]), max(0.1, deadline - loop.time()))
        except ForwardToLeader:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.01)  # its metrics may lag the step-down by a loop turn


async def write_on_leader(c: Cluster, data: bytes, timeout: float = 10.0) -> ClientWriteResponse:
    """``client_write(data)`` on whichever node leads (``on_leader``)."""
    return await on_leader(c, lambda raft: raft.client_write(data), timeout)


class MetricsReads:
    """Counts the reads of every node's metrics (``MetricsWatch.current``) inside a ``with``
    block: how often waiters woke and looked (``count``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.count = 0

    def __enter__(self) -> MetricsReads:
        real = MetricsWatch.current

        def counted(watch: MetricsWatch) -> RaftMetrics:
            self.count += 1
            return real.__get__(watch)  # type: ignore[attr-defined,no-any-return]

        self._real = real
        self._monkeypatch.setattr(MetricsWatch, "current", property(counted))
        return self

    def __exit__(self, *exc: object) -> None:
        self._monkeypatch.setattr(MetricsWatch, "current", self._real)


class LogRecords(logging.Handler):
    """Keeps the records of the logger ``name`` at ``level`` and above inside a ``with``
    block (the logger set to ``level`` meanwhile, and back after)."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger(name)
        self._saved = self._logger.level

    def __enter__(self) -> LogRecords:
        self._saved = self._logger.level
        self._logger.setLevel(self.level)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int, text: str) -> list[str]:
        """The messages logged at exactly ``level`` that contain ``text``."""
        return [r.getMessage() for r in self.records if r.levelno == level and text in r.getMessage()]


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``cond()`` holds, checking every 10 ms; fail naming ``what`` after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def leader_after_a_write(cluster: Cluster) -> tuple[Raft, int]:
    """Start ``cluster`` with the voters 1, 2 and 3, and write one entry on its leader:
    the leader's handle and the log index of that entry."""
    await cluster.start({1, 2, 3})
    leader = await cluster.wait_for_leader(timeout=5.0)
    raft = cluster.nodes[leader]
    return raft, (await raft.client_write(b"first")).log_id.index


def record_new_clients(cluster: Cluster[Any, Any], made: list[tuple[NodeId, NodeId, BasicNode]]) -> None:
    """Make ``cluster``'s nodes started from now on append ``(source, target, node)`` to
    ``made`` for every network client they ask their factory for (the router's client)."""
    inner = cluster.router.factory

    class Recording:
        def __init__(self, source: NodeId) -> None:
            self.source = source
            self.inner = inner(source)

        def new_client(self, target: NodeId, node: BasicNode) -> Any:
            made.append((self.source, target, node))
            return self.inner.new_client(target, node)

    cluster.router.factory = Recording  # type: ignore[assignment]
