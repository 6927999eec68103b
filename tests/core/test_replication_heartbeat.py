"""``ReplicationCore.heartbeat``: the engine's ``Heartbeat`` (a round that found the target's
window full) goes out at once, beside a request still unanswered, and its answer is an ack:
a ``Progress`` of its send time with the matching the target gave (none for a conflict), a
``Rejected`` of generation ``OUTSIDE_WINDOW`` for a greater vote; a failure reports nothing,
and nothing is reported once the channel stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.core.messages import Progress
from openraft_py.engine import OUTSIDE_WINDOW, Heartbeat, Matched, Rejected
from openraft_py.errors import Timeout
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, LeaderId, Vote

from .test_replication_budget import L1, Harness, lid

pytestmark = pytest.mark.timeout(10)


class HoldingNetwork:
    """Requests carrying entries wait for ``release``; a heartbeat gets ``heartbeat_answer``
    at once (or raises it, an exception)."""

    def __init__(self) -> None:
        self.sent: list[AppendEntriesRequest] = []
        self.release = asyncio.Event()
        self.heartbeat_answer: Any = None

    async def append_entries(self, req: AppendEntriesRequest, option: Any = None) -> AppendEntriesResponse:
        self.sent.append(req)
        if req.entries:
            await self.release.wait()
            return AppendEntriesResponse(L1, True, req.entries[-1].log_id)
        if isinstance(self.heartbeat_answer, Exception):
            raise self.heartbeat_answer
        if self.heartbeat_answer is not None:
            return self.heartbeat_answer  # type: ignore[no-any-return]
        return AppendEntriesResponse(L1, True, req.prev_log_id)


def harness(net: HoldingNetwork) -> Harness:
    h = Harness([10, 10, 10])
    h.core.client = net  # type: ignore[assignment]
    h.core._send_now = None
    h.core._submit = None
    return h


async def test_a_heartbeat_goes_out_beside_an_unanswered_request_and_its_answer_is_an_ack() -> None:
    net = HoldingNetwork()
    h = harness(net)
    h.replicate(2, 4)
    await h.settle()
    assert [len(r.entries) for r in net.sent] == [2], "held: unanswered"
    h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
    await h.wait_notes(1)
    hb = net.sent[1]
    assert (hb.entries, hb.prev_log_id, hb.leader_commit, hb.vote) == ([], lid(1, 1), lid(1, 1), L1)
    note = h.notes[0]
    assert isinstance(note, Progress) and note.has_matching and note.matching == lid(1, 1)
    assert note.session == L1 and note.target == 2 and note.sent_at > 0
    net.release.set()
    await h.wait_notes(2)
    assert isinstance(h.notes[1], Matched) and h.notes[1].matching == lid(1, 3), "the window's answer as before"


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        (AppendEntriesResponse(L1, True, None), "ack"),  # nothing durable there yet
        (AppendEntriesResponse(L1, False, conflict_hint=1), "ack"),  # it lost entries: the window finds out
        (AppendEntriesResponse(Vote(LeaderId(2, 3), True), False), "rejected"),
    ],
)
async def test_a_heartbeat_answer_without_a_matching(answer: AppendEntriesResponse, want: str) -> None:
    net = HoldingNetwork()
    net.heartbeat_answer = answer
    h = harness(net)
    h.core.heartbeat(Heartbeat(2, lid(1, 2), lid(1, 1)))
    await h.wait_notes(1)
    note = h.notes[0]
    if want == "ack":
        assert isinstance(note, Progress) and not note.has_matching and note.matching is None
    else:
        assert isinstance(note, Rejected) and note.gen == OUTSIDE_WINDOW and note.vote == answer.vote


async def test_a_failed_heartbeat_reports_nothing_nor_does_one_after_stop() -> None:
    net = HoldingNetwork()
    net.heartbeat_answer = Timeout("no answer")
    h = harness(net)
    h.core.heartbeat(Heartbeat(2, None, None))
    await asyncio.gather(*h.tasks)
    assert len(net.sent) == 1 and h.notes == []
    net.heartbeat_answer = None
    h.core.heartbeat(Heartbeat(2, None, None))
    h.core.stop()
    await asyncio.gather(*h.tasks)
    assert h.notes == []
