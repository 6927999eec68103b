"""``ReplicationCore`` with a network that has ``submit_append_entries`` (``RaftNetwork``'s
optional callback method): a request in turn, cached and within the byte budget is handed
over inside ``replicate`` with a callback, and its answer is reported from that callback:
no task is started or woken for it, pipelined requests included. A network that cannot take
it now (``None``) and requests that must wait go the other ways; an error raised at the call
or given to the callback is ``Unreachable``; a refusal is a ``Conflict`` or a ``Rejected``;
nothing is reported once the channel stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from openraft_py.engine import Conflict, Matched, Rejected
from openraft_py.errors import NetworkError, Timeout
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, Vote

from .test_replication_budget import L1, Harness, describe, lid

pytestmark = pytest.mark.timeout(10)


class Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class SubmittingNetwork:
    """``submit_append_entries`` records each request with its callback (``take=False``:
    returns ``None``, as a client that is not connected); ``append_entries`` (the sender's
    path) records into ``sent``."""

    def __init__(self) -> None:
        self.submitted: list[tuple[AppendEntriesRequest, Callable[[Any], None]]] = []
        self.handles: list[Handle] = []
        self.sent: list[AppendEntriesRequest] = []
        self.take = True
        self.raise_at_call: Exception | None = None

    def submit_append_entries(self, req: AppendEntriesRequest, option: Any, reply: Callable[[Any], None]) -> Handle | None:
        if self.raise_at_call is not None:
            raise self.raise_at_call
        if not self.take:
            return None
        self.submitted.append((req, reply))
        self.handles.append(Handle())
        return self.handles[-1]

    async def append_entries(self, req: AppendEntriesRequest, option: Any = None) -> AppendEntriesResponse:
        self.sent.append(req)
        return AppendEntriesResponse(L1, True, req.entries[-1].log_id if req.entries else req.prev_log_id)

    def answer(self, i: int, result: Any = None) -> None:
        req, reply = self.submitted[i]
        if result is None:
            result = AppendEntriesResponse(L1, True, req.entries[-1].log_id if req.entries else req.prev_log_id)
        reply(result)


def harness(sizes: list[int], net: SubmittingNetwork, **kw: Any) -> Harness:
    h = Harness(sizes, **kw)
    h.core.client = net  # type: ignore[assignment]
    h.core._submit = net.submit_append_entries
    h.core._send_now = None
    return h


async def test_requests_are_handed_over_in_replicate_and_answered_without_a_task() -> None:
    net = SubmittingNetwork()
    h = harness([10, 10, 10, 10], net)
    h.replicate(1, 2)
    h.replicate(2, 4)  # pipelined behind the first: handed over at once too
    assert [[e.log_id.index for e in r.entries] for r, _ in net.submitted] == [[1], [2, 3]]
    assert h.tasks == []  # no sender task, no task per request
    net.answer(1)
    net.answer(0)  # answers in any order, each reported from its callback
    assert [describe(n) for n in h.notes] == [f"Matched {lid(1, 3)!r}", f"Matched {lid(1, 1)!r}"]
    assert h.tasks == []


async def test_a_network_that_cannot_take_it_now_falls_back_to_the_sender() -> None:
    net = SubmittingNetwork()
    net.take = False
    h = harness([10, 10, 10], net)
    h.replicate(1, 3)
    assert net.submitted == []
    await h.wait_notes(1)
    assert [len(r.entries) for r in net.sent] == [2]
    assert isinstance(h.notes[0], Matched) and h.notes[0].matching == lid(1, 2)
    # Taken again once the network can: the next request goes through the callback.
    net.take = True
    await h.settle()
    h.replicate(3, 4)
    assert [r.entries[0].log_id.index for r, _ in net.submitted] == [3]


async def test_a_request_behind_one_that_reads_storage_waits_for_its_turn() -> None:
    net = SubmittingNetwork()
    h = harness([10, 10, 10, 10], net, uncached={2})
    h.replicate(1, 3)  # entry 2 is not cached: the sender reads it from storage
    h.replicate(3, 4)  # in turn only once the first handed its request over
    assert net.submitted == []
    h.log.storage_ready.set()
    await h.wait_notes(2)
    assert [r.entries[0].log_id.index for r in net.sent] == [1, 3]  # in plan order


@pytest.mark.parametrize("where", ["at the call", "in the callback"])
async def test_an_error_is_reported_unreachable(where: str) -> None:
    net = SubmittingNetwork()
    h = harness([10, 10, 10], net)
    if where == "at the call":
        net.raise_at_call = NetworkError("cannot frame it")
        h.replicate(1, 2)
    else:
        h.replicate(1, 2)
        net.answer(0, Timeout("no answer within 1s"))
    assert [describe(n) for n in h.notes] == ["Unreachable@1"]
    # The turn was passed either way: the next request is handed over.
    net.raise_at_call = None
    h.replicate(2, 3)
    assert net.submitted[-1][0].entries[0].log_id.index == 2


async def test_refusals_are_a_conflict_or_rejected() -> None:
    net = SubmittingNetwork()
    h = harness([10, 10, 10], net)
    h.replicate(1, 2)
    h.replicate(2, 3)
    net.answer(0, AppendEntriesResponse(L1, False, None, lid(1, 0)))
    newer = Vote.new(L1.term + 1, 3, True)
    net.answer(1, AppendEntriesResponse(newer, False, None))
    assert isinstance(h.notes[0], Conflict)
    assert isinstance(h.notes[1], Rejected) and h.notes[1].vote == newer


async def test_stop_withdraws_what_is_in_flight_and_nothing_is_reported_after_it() -> None:
    net = SubmittingNetwork()
    h = harness([10, 10, 10, 10], net)
    h.replicate(1, 2)
    h.replicate(2, 3)
    net.answer(1)  # answered: its handle is forgotten, not cancelled
    h.core.stop()
    assert [x.cancelled for x in net.handles] == [True, False]
    assert len(h.notes) == 1
    net.answer(0)  # a network that answers anyway: nothing is reported
    h.replicate(3, 4)  # a stopped channel hands nothing over
    assert len(h.notes) == 1 and len(net.submitted) == 2
    await asyncio.gather(*h.tasks)


class NoCancel:
    """A handle without the ``cancel()`` the contract asks for."""


async def test_a_handle_whose_cancel_fails_is_logged_and_the_stop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """A network's handle without ``cancel()`` (or whose ``cancel()`` raises): ``stop()``
    logs it naming the target and withdraws the rest; it raised out of the raft core's pass
    and stopped the node."""
    net = SubmittingNetwork()
    h = harness([10, 10, 10, 10], net)
    h.replicate(1, 2)
    h.replicate(2, 3)
    net.handles[0] = h.core._submitted[0] = NoCancel()  # type: ignore[assignment]
    h.core.stop()
    assert [x.cancelled for x in net.handles[1:]] == [True]
    assert "replication 1->2: cancel() of a handle submit_append_entries returned (NoCancel) raised AttributeError" in caplog.text
    await asyncio.gather(*h.tasks)


class AsyncSubmitNetwork(SubmittingNetwork):
    async def submit_append_entries(  # type: ignore[override]
        self, req: AppendEntriesRequest, option: Any, reply: Callable[[Any], None]
    ) -> None:
        raise AssertionError("never called: it cannot hand a request over before it returns")


async def test_an_async_submit_append_entries_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    """``async def submit_append_entries`` returns an unstarted coroutine, not a handle: the
    request was never sent, and the channel's ``stop()`` stopped the node on its missing
    ``cancel()``. It is not used (a warning names the target); ``append_entries`` is."""
    from openraft_py.core.replication import ReplicationCore

    net = AsyncSubmitNetwork()
    h = Harness([10, 10, 10, 10])
    h.core = ReplicationCore(2, h.core.vote, net, h.core.env)  # type: ignore[arg-type]
    assert "replication 1->2: the network client's submit_append_entries is a coroutine function (async def)" in caplog.text
    h.replicate(1, 2)
    await h.wait_notes(1)
    assert isinstance(h.notes[0], Matched)
    assert [[e.log_id.index for e in r.entries] for r in net.sent] == [[1]]
    h.core.set_client(SubmittingNetwork())  # type: ignore[arg-type]
    assert h.core._submit is not None  # a plain one is used
    h.core.set_client(net)  # type: ignore[arg-type]
    assert h.core._submit is None
    h.core.stop()
    await asyncio.gather(*h.tasks)
