"""``VoteWriter``: votes queued while one is being written are written as one (the newest),
and every io number completes; a failed write reports ``Failed`` with a ``StorageError``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.core.messages import Failed, IOCompleted
from openraft_py.core.tasks import TaskSet
from openraft_py.core.vote_writer import VoteWriter
from openraft_py.errors import StorageError
from openraft_py.types import Vote

pytestmark = pytest.mark.timeout(10)


class Store:
    def __init__(self) -> None:
        self.saved: list[Vote] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def save_vote(self, vote: Vote) -> None:
        await self.gate.wait()
        if self.fail:
            raise OSError("disk full")
        self.saved.append(vote)


async def settle(notes: list[Any], n: int) -> None:
    while len(notes) < n:
        await asyncio.sleep(0)


async def test_a_run_queued_behind_a_write_is_written_once() -> None:
    store = Store()
    notes: list[Any] = []
    w = VoteWriter(store, TaskSet("t", lambda e: None), notes.append)  # type: ignore[arg-type]
    w.save(Vote.new(1, 1), 1)
    await asyncio.sleep(0)  # the first write is in flight
    w.save(Vote.new(2, 2), 2)
    w.save(Vote.new(3, 3), 3)
    store.gate.set()
    await settle(notes, 3)
    assert store.saved == [Vote.new(1, 1), Vote.new(3, 3)]
    assert [n.io for n in notes if isinstance(n, IOCompleted)] == [1, 2, 3]


async def test_a_failed_write_is_reported() -> None:
    store = Store()
    notes: list[Any] = []
    store.fail = True
    store.gate.set()
    w = VoteWriter(store, TaskSet("t", lambda e: None), notes.append)  # type: ignore[arg-type]
    w.save(Vote.new(1, 1), 1)
    await settle(notes, 1)
    assert isinstance(notes[0], Failed) and isinstance(notes[0].error, StorageError)


class EagerTasks(TaskSet):
    """Spawns as ``asyncio.eager_task_factory`` (Python 3.12+) does: the coroutine runs at
    once, inside ``spawn``, until it first suspends (here: to its end)."""

    def spawn(self, coro: Any, name: str) -> Any:
        fut = asyncio.get_running_loop().create_future()
        try:
            coro.send(None)
        except StopIteration as stop:
            fut.set_result(stop.value)
            return fut
        raise AssertionError("the coroutine suspended: this stand-in runs only ones that do not")


class InstantStore:
    """A store whose ``save_vote`` does not suspend (``MemLogStore``'s does not)."""

    def __init__(self) -> None:
        self.saved: list[Vote] = []

    async def save_vote(self, vote: Vote) -> None:
        self.saved.append(vote)


async def test_every_vote_is_written_when_the_writer_ends_inside_spawn() -> None:
    """Under an eager task factory the writer task ran to its end inside ``spawn``, and the
    finished task was then kept as the running writer: no later vote was written, and the
    node waited for good (a leader never committed, a candidate never counted its vote)."""
    store = InstantStore()
    notes: list[Any] = []
    w = VoteWriter(store, EagerTasks("t", lambda e: None), notes.append)  # type: ignore[arg-type]
    w.save(Vote.new(1, 1), 1)
    w.save(Vote.new(1, 1, True), 2)
    assert store.saved == [Vote.new(1, 1), Vote.new(1, 1, True)]
    assert [n.io for n in notes if isinstance(n, IOCompleted)] == [1, 2]
