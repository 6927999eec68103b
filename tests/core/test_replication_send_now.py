"""``ReplicationCore`` with a network that has ``send_append_entries`` (``RaftNetwork``'s
optional method): a request for the idle sender is handed to the network inside
``replicate`` (the core's pass), not at the sender's next step; the sender reports its
answer as usual. Requests that must wait (an earlier turn, a storage read, a batch over the
byte budget) still go through the sender. An error raised at once is reported as the
target being unreachable; a started request is dropped cleanly when the channel stops."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest

from openraft_py.engine import Matched, Unreachable
from openraft_py.errors import NetworkError
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse

from .test_replication_budget import L1, Harness, lid

pytestmark = pytest.mark.timeout(10)


class StartingNetwork:
    """``send_append_entries`` records the request at the call and returns its answer's
    future; ``append_entries`` (the sender's own path) records it in ``sent``. ``answer(i)``
    resolves the ``i``-th request handed over either way."""

    def __init__(self) -> None:
        self.started: list[AppendEntriesRequest] = []
        self.sent: list[AppendEntriesRequest] = []
        self.calls: list[tuple[AppendEntriesRequest, asyncio.Future[AppendEntriesResponse]]] = []
        self.fail_with: Exception | None = None

    def _call(self, req: AppendEntriesRequest) -> asyncio.Future[AppendEntriesResponse]:
        fut: asyncio.Future[AppendEntriesResponse] = asyncio.get_running_loop().create_future()
        self.calls.append((req, fut))
        return fut

    def send_append_entries(self, req: AppendEntriesRequest, option: Any = None) -> asyncio.Future[AppendEntriesResponse]:
        if self.fail_with is not None:
            raise self.fail_with
        self.started.append(req)
        return self._call(req)

    async def append_entries(self, req: AppendEntriesRequest, option: Any = None) -> AppendEntriesResponse:
        self.sent.append(req)
        return await self._call(req)

    def answer(self, i: int) -> None:
        req, fut = self.calls[i]
        matching = req.entries[-1].log_id if req.entries else req.prev_log_id
        fut.set_result(AppendEntriesResponse(L1, True, matching))


def harness(sizes: list[int], net: StartingNetwork, **kw: Any) -> Harness:
    h = Harness(sizes, **kw)
    h.core.client = net  # type: ignore[assignment]
    h.core._send_now = net.send_append_entries
    return h


async def idle(h: Harness) -> None:
    """Start the sender with a first request and let it become idle again."""
    net: StartingNetwork = h.core.client  # type: ignore[assignment]
    h.replicate(1, 2)
    for _ in range(5):
        await asyncio.sleep(0)
    net.answer(len(net.calls) - 1)
    await h.wait_notes(1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.core._idle


async def test_request_for_the_idle_sender_is_handed_over_in_replicate() -> None:
    net = StartingNetwork()
    h = harness([10, 10, 10], net)
    await idle(h)
    before = len(net.started)
    h.replicate(2, 4)
    assert len(net.started) == before + 1  # during replicate(), before any task ran
    assert [e.log_id.index for e in net.started[-1].entries] == [2, 3]
    net.answer(len(net.calls) - 1)
    await h.wait_notes(2)
    assert isinstance(h.notes[-1], Matched) and h.notes[-1].matching == lid(1, 3)


@pytest.mark.parametrize("case", ["uncached", "over_budget"])
async def test_requests_that_must_wait_go_through_the_sender(case: str) -> None:
    net = StartingNetwork()
    if case == "uncached":
        h = harness([10, 10, 10], net, uncached={3})
    else:
        h = harness([10, 80, 80], net)  # entries 2-3: 160 bytes, over the budget of 100
    await idle(h)
    started = len(net.started)
    h.replicate(2, 4)
    assert len(net.started) == started  # not started in replicate()
    if case == "uncached":
        h.log.storage_ready.set()
    for _ in range(20):
        await asyncio.sleep(0)
    # The sender sent it (all of it, or its first part).
    assert len(net.sent) == 2 and net.sent[1].entries[0].log_id.index == 2


async def test_error_raised_at_once_is_reported_unreachable() -> None:
    net = StartingNetwork()
    h = harness([10, 10, 10], net)
    await idle(h)
    net.fail_with = NetworkError("cannot frame it")
    h.replicate(2, 3)
    await h.wait_notes(2)
    assert isinstance(h.notes[-1], Unreachable) and h.notes[-1].start == 2


async def test_started_request_is_dropped_when_the_channel_stops() -> None:
    net = StartingNetwork()
    h = harness([10, 10, 10], net)
    await idle(h)
    h.replicate(2, 3)
    fut = net.calls[-1][1]
    h.core.stop()
    for _ in range(10):
        await asyncio.sleep(0)
    assert fut.cancelled()  # nobody awaits it: cancelled, no unretrieved error
    assert len(h.notes) == 1  # nothing reported after the stop
    await asyncio.gather(*h.tasks)


async def test_started_coroutine_is_closed_when_the_channel_stops() -> None:
    """A network may return a coroutine (e.g. one that connects first): dropped unrun, it is
    closed, so no "never awaited" warning."""
    net = StartingNetwork()
    h = harness([10, 10, 10], net)
    await idle(h)
    ran: list[int] = []

    async def connect_first() -> AppendEntriesResponse:
        ran.append(1)
        return AppendEntriesResponse(L1, True, lid(1, 2))

    made: list[Any] = []

    def start(req: AppendEntriesRequest, option: Any) -> Any:
        made.append(connect_first())
        return made[-1]

    h.core._send_now = start
    h.replicate(2, 3)
    h.core.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(10):
            await asyncio.sleep(0)
        gc.collect()
    assert len(made) == 1 and made[0].cr_frame is None and ran == []  # closed, never run
    await asyncio.gather(*h.tasks)


async def test_started_request_is_dropped_when_its_sender_is_cancelled_with_the_stop() -> None:
    """The node's teardown stops the channel and then cancels its tasks at once: the sender,
    woken for the request ``replicate`` started, is cancelled before it runs again. The
    request is dropped by ``stop()`` itself (it was left to the sender, so its future was
    never cancelled: asyncio logged "Future exception was never retrieved" once the target
    failed it, and a coroutine "was never awaited")."""
    net = StartingNetwork()
    h = harness([10, 10, 10], net)
    await idle(h)
    h.replicate(2, 3)
    fut = net.calls[-1][1]
    h.core.stop()
    for t in h.tasks:
        t.cancel()  # as TaskSet.cancel_all, in the same step
    await asyncio.gather(*h.tasks, return_exceptions=True)
    assert fut.cancelled()
    assert h.core._next is None
