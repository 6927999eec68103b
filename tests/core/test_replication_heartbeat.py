"""``ReplicationCore.heartbeat``: the engine's ``Heartbeat`` (a round that found the target's
window full) goes out at once, beside a request still unanswered (through the network's
``submit_append_entries`` when it can take it now, else in a task), and its answer is an ack:
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

from .test_replication_budget import L1, Harness, describe, lid
from .test_replication_submit import SubmittingNetwork
from .test_replication_submit import harness as submit_harness

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


async def test_a_heartbeat_is_handed_to_submit_append_entries_and_answered_from_its_callback() -> None:
    """Over TCP the answer is reported from the connection's read callback, as the window's
    are: queued for the core before a tick of the same loop pass is handled. (Awaited in a
    task, it was reported one loop step later: after a stall of the leader's loop the tick
    found no recent acknowledgement and the leader stepped down, the answers queued behind
    it.)"""
    net = SubmittingNetwork()
    h = submit_harness([10, 10, 10], net)
    h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
    assert h.tasks == [] and len(net.submitted) == 1
    req, reply = net.submitted[0]
    assert (req.entries, req.prev_log_id, req.leader_commit) == ([], lid(1, 1), lid(1, 1))
    reply(AppendEntriesResponse(L1, True, lid(1, 1)))
    assert len(h.notes) == 1 and isinstance(h.notes[0], Progress) and h.notes[0].matching == lid(1, 1)
    assert h.core._submitted == {}
    h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
    h.core.stop()
    assert net.handles[1].cancelled, "stop() withdraws a heartbeat in flight"
    net.submitted[1][1](AppendEntriesResponse(L1, True, lid(1, 1)))
    assert len(h.notes) == 1, "nothing reported once stopped"


async def test_a_heartbeat_the_network_cannot_take_now_goes_in_a_task() -> None:
    net = SubmittingNetwork()
    net.take = False  # not connected: the task's append_entries connects first
    h = submit_harness([10, 10, 10], net)
    h.core.heartbeat(Heartbeat(2, None, None))
    await h.wait_notes(1)
    assert len(net.sent) == 1 and len(h.tasks) == 1
    assert isinstance(h.notes[0], Progress) and h.notes[0].matching is None


class ManualClock:
    """A clock the test moves (``t``, seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class WindowTimesOutNetwork(HoldingNetwork):
    """Every request carrying entries times out; heartbeats are answered (the heartbeat lane
    works, the window does not: a multi-megabyte entry that outlasts the replication deadline
    at each resend)."""

    async def append_entries(self, req: AppendEntriesRequest, option: Any = None) -> AppendEntriesResponse:
        if req.entries:
            self.sent.append(req)
            raise Timeout("no answer within the deadline")
        return await super().append_entries(req, option)


async def test_heartbeat_answers_do_not_hide_a_window_that_keeps_failing(caplog: pytest.LogCaptureFixture) -> None:
    """A target that answers every heartbeat while every request carrying entries fails is
    said at WARNING once that has gone on for ``election_timeout_max``, as a target that is
    down: its entries never reach it, and the writes that need it wait. Each heartbeat's
    answer ended the window's failure streak unlogged (a heartbeat round is several times
    shorter than an election timeout), so the leader's log said nothing at all while the
    follower never got its entries (and, with a quorum of them, writes hung)."""
    net = WindowTimesOutNetwork()
    h = harness(net)
    clock = ManualClock()
    h.core.env.clock = clock  # type: ignore[assignment]
    emax = h.core.env.config.election_timeout_max / 1000.0
    hb = h.core.env.config.heartbeat_interval / 1000.0
    rounds = int(2 * emax / hb) + 1
    with caplog.at_level("DEBUG", logger="openraft_py.replication"):
        for i in range(rounds):
            h.replicate(2, 4, gen=i + 1)
            await h.wait_notes(2 * i + 1)
            clock.t += hb / 2
            h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
            await h.wait_notes(2 * i + 2)
            clock.t += hb / 2
        assert [describe(n) for n in h.notes[:2]] == ["Unreachable@2", "Progress 1-1"]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "replication to node 2: Timeout" in warnings[0], (
            f"the window failed for {rounds * hb:.2f}s while heartbeats were answered: {warnings}"
        )
        # A request carrying entries answered again: that is the recovery.
        net.append_entries = HoldingNetwork.append_entries.__get__(net)  # type: ignore[method-assign]
        net.release.set()
        h.replicate(2, 4, gen=rounds + 1)
        await h.wait_notes(2 * rounds + 1)
        infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
        assert any("replication to node 2: recovered" in m for m in infos), infos


class BrokenHeartbeatNetwork(HoldingNetwork):
    """A network whose optional ``heartbeat`` breaks the contract: it returns ``answer`` (not
    a response) or raises it (not an ``RPCError``), while ``append_entries`` works."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    async def heartbeat(self, req: AppendEntriesRequest, option: Any = None) -> Any:
        self.sent.append(req)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "said"),
    [({"success": True}, "returned dict {'success': True} instead of AppendEntriesResponse"),
     (ConnectionResetError("peer reset"), "raised ConnectionResetError('peer reset') (expected an RPCError)")],
    ids=["not-a-response", "not-an-rpc-error"],
)
async def test_a_heartbeat_method_that_breaks_the_contract_is_said_at_warning(
    answer: Any, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The network's ``heartbeat`` returning something else than an AppendEntriesResponse, or
    raising something else than an ``RPCError``, is a bug of the network, said at WARNING
    as the window's are (``BROKEN_NETWORK_WARN_MS``), and at INFO once a heartbeat is
    answered again. It was logged at DEBUG only: every heartbeat beside the window failed
    and nothing said so, and under large writes its leader lost its leadership to
    check-quorum with no clue why."""
    net = BrokenHeartbeatNetwork(answer)
    h = harness(net)
    h.core.set_client(net)  # type: ignore[arg-type]
    h.core._send_now = None
    h.core._submit = None
    with caplog.at_level("DEBUG", logger="openraft_py.replication"):
        for _ in range(3):
            h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
            await asyncio.gather(*h.tasks)
        assert len(net.sent) == 3 and h.notes == [], "a failed heartbeat reports nothing"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "replication 1->2, heartbeats: " in warnings[0] and said in warnings[0], warnings
        net.answer = AppendEntriesResponse(L1, True, lid(1, 1))
        h.core.heartbeat(Heartbeat(2, lid(1, 1), lid(1, 1)))
        await h.wait_notes(1)
        infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
        assert any("replication 1->2, heartbeats: " in m and "answers heartbeats again" in m for m in infos), infos
