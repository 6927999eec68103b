"""The deadline of each AppendEntries (``ReplicationCore._option``): the base deadline,
``max(4 * heartbeat_interval, election_timeout_min)``, plus the time the request's payload
bytes and those of the channel's requests ahead of it (handed over, not settled) take at
``Config.replication_min_rate``. A request with no payload and nothing ahead keeps the base
deadline, so a target that went silent is found as soon as with the fixed deadline.

Checked on each way a request reaches the network (``append_entries`` from the sender,
``send_append_entries`` and ``submit_append_entries`` from the core's pass, a batch sent in
parts), by a fake network that records the ``RPCOption`` of every request and answers when
the test says so."""

from __future__ import annotations

import asyncio
import io
import math
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from openraft_py.config import Config
from openraft_py.core.clock import LoopClock
from openraft_py.core.replication import ReplicationCore, ReplicationEnv
from openraft_py.engine import Matched, Replicate, SendSnapshot, SnapshotSent
from openraft_py.errors import Timeout
from openraft_py.errors import Unreachable as UnreachableError
from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    Membership,
    RPCOption,
    Snapshot,
    SnapshotMeta,
    StoredMembership,
)

from .test_replication_budget import L1, FakeLog, describe, lid

pytestmark = pytest.mark.timeout(10)

RATE = 1000
"""``replication_min_rate`` of these tests, bytes per second: 100 bytes take 0.1 s."""
BASE = 200
"""The base deadline of the default timeouts, ms: ``max(4 * 50, 150)``."""
MODES = ["append_entries", "send_append_entries", "submit_append_entries"]


class Handle:
    def cancel(self) -> bool:
        return True


class RecordingNetwork:
    """Records ``(request, option)`` of each request handed over, through whichever of its
    three methods the channel uses; each is answered by ``answer``."""

    def __init__(self) -> None:
        self.sent: list[tuple[AppendEntriesRequest, RPCOption]] = []
        self.replies: list[Callable[[Any], None]] = []
        self.arrived = asyncio.Event()

    def _record(self, req: AppendEntriesRequest, option: RPCOption) -> asyncio.Future[Any]:
        self.sent.append((req, option))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies.append(lambda r: fut.set_exception(r) if isinstance(r, Exception) else fut.set_result(r))
        self.arrived.set()
        return fut

    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption) -> AppendEntriesResponse:
        return await self._record(req, option)  # type: ignore[no-any-return]

    def send_append_entries(self, req: AppendEntriesRequest, option: RPCOption) -> asyncio.Future[Any]:
        return self._record(req, option)

    def submit_append_entries(self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]) -> Handle:
        self.sent.append((req, option))
        self.replies.append(reply)
        self.arrived.set()
        return Handle()

    async def wait_sent(self, n: int) -> None:
        while len(self.sent) < n:
            self.arrived.clear()
            await self.arrived.wait()

    def answer(self, i: int, error: Exception | None = None) -> None:
        req = self.sent[i][0]
        matching = req.entries[-1].log_id if req.entries else req.prev_log_id
        self.replies[i](error if error is not None else AppendEntriesResponse(L1, True, matching))

    def ttls(self) -> list[float]:
        """The ``hard_ttl`` of each request, in milliseconds (rounded to 1 us)."""
        return [round(o.hard_ttl * 1000, 3) for _, o in self.sent]


class Channel:
    """A channel to node 2 over a ``RecordingNetwork`` used through ``mode``."""

    def __init__(self, sizes: list[int], mode: str, budget: int = 10_000, rate: int = RATE) -> None:
        self.net = RecordingNetwork()
        self.notes: list[Any] = []
        config = Config(replication_min_rate=rate, max_payload_bytes=budget, max_entry_bytes=budget).validate()
        self.env = ReplicationEnv(1, config, LoopClock(), FakeLog(sizes), self._no_snapshot, self._spawn, self.notes.append)
        self.core = ReplicationCore(2, L1, self.net, self.env)  # type: ignore[arg-type]
        if mode != "submit_append_entries":
            self.core._submit = None
        if mode != "send_append_entries":
            self.core._send_now = None
        self.tasks: list[asyncio.Task[None]] = []

    async def _no_snapshot(self) -> None:
        return None

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(t)
        return t

    def replicate(self, start: int, end: int) -> None:
        prev = lid(1, start - 1) if start > 1 else None
        self.core.replicate(Replicate(2, 1, prev, start, end, lid(1, 0)))

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # let ready tasks reach their next await (no time passes)

    async def close(self) -> None:
        self.core.stop()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.parametrize("mode", MODES)
async def test_the_deadline_counts_the_bytes_of_the_request_and_of_those_ahead(mode: str) -> None:
    ch = Channel([100, 300, 50, 20], mode)
    try:
        assert ch.env.option.hard_ttl * 1000 == BASE
        ch.replicate(1, 2)  # 100 bytes, nothing ahead
        ch.replicate(2, 3)  # 300 bytes behind 100
        await ch.settle()
        await ch.net.wait_sent(2)
        assert ch.net.ttls() == [BASE + 100, BASE + 400]
        ch.net.answer(0)
        await ch.settle()
        ch.replicate(3, 4)  # 50 bytes behind the 300 still in flight
        await ch.settle()
        await ch.net.wait_sent(3)
        assert ch.net.ttls()[2] == BASE + 350
        # A failed request is no longer ahead either.
        ch.net.answer(1, Timeout("no answer"))
        ch.net.answer(2)
        await ch.settle()
        assert [describe(n) for n in ch.notes] == [
            f"Matched {lid(1, 1)!r}", "Unreachable@2", f"Matched {lid(1, 3)!r}"
        ]
        assert ch.core._inflight_bytes == 0
        # Nothing ahead and no payload: the base deadline, the shared option.
        ch.replicate(4, 4)
        await ch.settle()
        await ch.net.wait_sent(4)
        assert ch.net.sent[3][1] is ch.env.option
        ch.net.answer(3)
        await ch.settle()
        ch.replicate(4, 5)  # 20 bytes: 20 ms more than the base
        await ch.settle()
        await ch.net.wait_sent(5)
        assert ch.net.ttls()[4] == BASE + 20
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_requests_whose_bytes_take_under_a_hundredth_of_the_base_share_its_option(mode: str) -> None:
    """The bytes in flight that take under 1% of the base deadline at the rate (2,097 bytes
    at the default 1 MiB/s and 200 ms) keep the base deadline, the shared option: the small
    writes of a 1-writer leader made an ``RPCOption`` per request for a deadline 0.003%
    longer. Past that the deadline counts every byte."""
    rate = 1024 * 1024
    ch = Channel([16, 16, 2065, 3000], mode, rate=rate)
    try:
        ch.replicate(1, 2)  # 16 bytes, nothing ahead
        ch.replicate(2, 3)  # 16 bytes behind 16
        await ch.settle()
        await ch.net.wait_sent(2)
        assert [o for _, o in ch.net.sent] == [ch.env.option, ch.env.option]
        assert all(o is ch.env.option for _, o in ch.net.sent)
        ch.replicate(3, 4)  # 2,065 bytes behind 32: 2,097 in all, the most that shares it
        await ch.settle()
        await ch.net.wait_sent(3)
        assert ch.net.sent[2][1] is ch.env.option
        for i in range(3):
            ch.net.answer(i)
        await ch.settle()
        ch.replicate(4, 5)  # 3,000 bytes: its own deadline
        await ch.settle()
        await ch.net.wait_sent(4)
        assert ch.net.ttls()[3] == round(BASE + 3000 / rate * 1000, 3)
        ch.net.answer(3)
        await ch.settle()
        assert ch.core._inflight_bytes == 0
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_the_parts_of_a_split_batch_count_their_own_bytes(mode: str) -> None:
    """A batch over ``max_payload_bytes`` goes in parts, one after the other: each part's
    deadline counts its own bytes and those of the requests still ahead of it (here one of
    another batch, sent before)."""
    ch = Channel([30, 80, 80], mode, budget=100)
    try:
        ch.replicate(1, 2)  # 30 bytes, left unanswered
        ch.replicate(2, 4)  # 160 bytes: two parts of 80
        await ch.settle()
        await ch.net.wait_sent(2)
        assert ch.net.ttls() == [BASE + 30, BASE + 110]
        ch.net.answer(1)  # the first part matched: the second goes
        await ch.net.wait_sent(3)
        assert ch.net.ttls()[2] == BASE + 110
        ch.net.answer(0)
        ch.net.answer(2)
        await ch.settle()
        assert ch.core._inflight_bytes == 0
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_request_the_network_refuses_at_once_is_not_counted_ahead(mode: str) -> None:
    """A network that raises at the call (``NetworkError``: cannot frame it): the request is
    not in flight, and the next one's deadline does not count it."""
    ch = Channel([100, 10], mode)
    boom = RuntimeError("refused at once")

    def refuse(*args: Any) -> Any:
        raise boom

    try:
        # First a request the network takes, so the sender is idle (``send_append_entries``
        # is used for the idle sender's requests).
        ch.replicate(1, 1)
        await ch.settle()
        await ch.net.wait_sent(1)
        ch.net.answer(0)
        await ch.settle()
        ch.notes.clear()
        if mode == "submit_append_entries":
            ch.core._submit = refuse
        elif mode == "send_append_entries":
            ch.core._send_now = refuse
        else:
            ch.core.client = type("Refusing", (), {"append_entries": staticmethod(refuse)})()  # type: ignore[assignment]
        ch.replicate(1, 2)
        await ch.settle()
        for _ in range(20):
            if ch.notes:
                break
            await asyncio.sleep(0)  # (the sender's task reports it)
        assert [describe(n) for n in ch.notes] == ["Unreachable@1"]
        assert ch.core._inflight_bytes == 0
    finally:
        await ch.close()


SEEDS = range(12)


def _unanswered_bytes(net: RecordingNetwork, answered: set[int]) -> int:
    """The payload bytes of the requests not answered, those that timed out included (their
    bytes may still be on the way: they stay counted until released)."""
    return sum(
        len(e.payload.data) for i, (req, _) in enumerate(net.sent) if i not in answered for e in req.entries
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", MODES)
async def test_the_bytes_in_flight_follow_the_requests_whatever_befalls_them(mode: str, seed: int) -> None:
    """Random batches (some over the budget: sent in parts) answered in random order, some
    with an error, while some pipelined senders are cancelled mid-call (the sender task
    the channel keeps is not: only the node's teardown cancels it, after ``stop()``). At
    each step the bytes counted in flight are never below 0 nor above those of the requests
    not answered yet or timed out (a timed-out request's bytes stay counted until a later
    request is answered; a cancelled sender's request is no longer counted); once every
    request is answered and then one more, sent after all of them, none are left: no path
    between ``_option`` and its settling leaves bytes behind to lengthen later deadlines
    for good."""
    print(f"seed {seed}")
    rng = random.Random(seed)
    n = 60
    ch = Channel([rng.choice((1, 10, 50, 200, 900)) for _ in range(n)], mode, budget=1000)
    answered: set[int] = set()
    timed_out: set[int] = set()

    def answer(i: int, error: Exception | None = None) -> None:
        answered.add(i)
        if error is not None:
            timed_out.add(i)
        try:
            ch.net.answer(i, error)
        except asyncio.InvalidStateError:  # its sender was cancelled: the future with it
            pass

    nxt = 1
    try:
        for step in range(80):
            r = rng.random()
            if r < 0.4 and nxt <= n:
                end = min(n + 1, nxt + rng.choice((0, 1, 1, 2, 5)))
                ch.replicate(nxt, end)
                nxt = end
            elif r < 0.85:
                waiting = [i for i in range(len(ch.net.sent)) if i not in answered]
                if waiting:
                    answer(rng.choice(waiting), Timeout("no answer") if rng.random() < 0.3 else None)
            else:
                senders = [t for t in ch.tasks if not t.done() and t.get_coro().__name__ != "_sender"]
                if senders:
                    rng.choice(senders).cancel()
            await ch.settle()
            held = ch.core._inflight_bytes
            bound = _unanswered_bytes(ch.net, answered - timed_out)
            assert 0 <= held <= bound, f"step {step}: {held} bytes counted in flight"
        for _ in range(100):  # answer everything, parts sent after their first ones included
            for i in range(len(ch.net.sent)):
                if i not in answered:
                    answer(i)
            await ch.settle()
        assert len(answered) == len(ch.net.sent)
        # Only the bytes of requests given up are left (a timed-out request is released by
        # the answer to a later one: here none may come, as a cancelled sender that waited
        # for its turn holds the later turns), and an answer to a request handed over after
        # all of them releases every one.
        core = ch.core
        assert core._inflight_bytes == sum(b for _, b, _ in core._given_up)
        assert {i for i in timed_out if any(e for e in ch.net.sent[i][0].entries)} or not core._given_up
        core._answer_came(0, core._handed + 1)
        assert core._inflight_bytes == 0
        assert core._given_up == []
    finally:
        await ch.close()


# -- given-up requests: their bytes stay ahead of the resend -----------------------------------


class VirtualClock:
    """A clock the link model moves (seconds); nothing in these tests sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - the channel sleeps only for snapshots
        raise AssertionError("no sleep expected")


class Link:
    """A FIFO link of ``rate`` payload bytes per second in front of a target that answers
    every request at once, modelled in the virtual time of ``clock``: a request handed over
    at ``t`` arrives once the link is free and has carried its bytes (``free_at``); its
    answer comes then, unless its ``hard_ttl`` ran out first: then the network raises
    ``Timeout`` at its deadline, as the TCP client does, and its bytes stay in the link
    (ahead of whatever is handed over later). ``stall``: seconds the link carries nothing
    at first (a transient stall of a link that carries ``rate`` otherwise).

    ``run`` plays the engine: a request that timed out is sent again (the same entries)
    ``backoff`` seconds later (``heartbeat_interval``: the engine's back-off), until one is
    answered."""

    def __init__(self, ch: Channel, clock: VirtualClock, rate: float, stall: float = 0.0, backoff: float = 0.05) -> None:
        self.ch = ch
        self.clock = clock
        self.rate = rate
        self.free_at = stall
        self.backoff = backoff
        self.seen = 0
        self.events: list[tuple[float, int, int, bool]] = []  # (time, order, request index, answered)
        self.order = 0
        self.carried = 0  # payload bytes handed to the link

    def _take_new(self) -> None:
        net = self.ch.net
        while self.seen < len(net.sent):
            req, option = net.sent[self.seen]
            nbytes = sum(len(e.payload.data) for e in req.entries)
            self.carried += nbytes
            now = self.clock.t
            arrive = math.inf if self.rate == 0 else max(self.free_at, now) + nbytes / self.rate
            self.free_at = arrive
            deadline = now + option.hard_ttl
            answered = arrive <= deadline
            self.events.append((arrive if answered else deadline, self.order, self.seen, answered))
            self.order += 1
            self.seen += 1

    async def run(self, start: int, end: int, max_sends: int) -> int:
        """Send ``[start, end)`` until it is answered, at most ``max_sends`` times: the number
        of sends it took, or ``max_sends + 1`` if it never was."""
        ch = self.ch
        sends = 0
        while sends < max_sends:
            ch.notes.clear()
            ch.replicate(start, end)
            sends += 1
            await ch.settle()
            while True:
                self._take_new()
                assert self.events, "a request handed over and never settled"
                self.events.sort()
                t, _, i, answered = self.events.pop(0)
                self.clock.t = t
                ch.net.answer(i, None if answered else Timeout("no answer within its deadline"))
                await ch.settle()
                if ch.notes:
                    break
            assert [describe(n) for n in ch.notes] in (["Unreachable@1"], [f"Matched {lid(1, end - 1)!r}"])
            if isinstance(ch.notes[0], Matched):
                return sends
            self.clock.t += self.backoff
        return sends + 1


def _link_channel(mode: str, size: int) -> tuple[Channel, VirtualClock]:
    ch = Channel([size], mode)
    clock = VirtualClock()
    ch.env.clock = clock
    ch.env._read_clock = None
    return ch, clock


@pytest.mark.parametrize("mode", MODES)
async def test_a_resend_after_a_stall_counts_the_bytes_of_the_request_given_up(mode: str) -> None:
    """A link that carries ``replication_min_rate`` stalls for a second at first: the first
    request (1,000 bytes, deadline 1.2 s) times out with its bytes still in the link. The
    resend's deadline counts those bytes as ahead of it (they are: the target reads them
    first), so it is answered: one resend. Before, the given-up bytes no longer counted,
    the resend got the deadline of a request with nothing ahead, timed out behind them, and
    so did three more, each carrying the entry again (5 sends, 5,000 bytes for 1,000)."""
    ch, clock = _link_channel(mode, 1000)
    try:
        link = Link(ch, clock, rate=RATE, stall=1.0)
        sends = await link.run(1, 2, max_sends=10)
        assert sends == 2, f"{sends} sends, {link.carried} bytes carried for 1000"
        assert ch.net.ttls() == [BASE + 1000, BASE + 2000]
        # The resend's answer shows the target read the bytes ahead of it: none are left.
        assert ch.core._inflight_bytes == 0 and ch.core._given_up == []
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_link_a_little_slower_than_the_rate_still_catches_up(mode: str) -> None:
    """A link that carries 80% of ``replication_min_rate``: a request of 1,000 bytes times
    out (1.25 s on the link, deadline 1.2 s), as the rate says it may. Its resend, behind
    what is left of it, is answered: the given-up bytes are counted ahead of it. Before,
    each resend timed out 50 ms short, forever: the target never caught up, and the link
    carried the entry again at every try."""
    ch, clock = _link_channel(mode, 1000)
    try:
        link = Link(ch, clock, rate=0.8 * RATE)
        sends = await link.run(1, 2, max_sends=20)
        assert sends == 2, f"{sends} sends, {link.carried} bytes carried for 1000"
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_target_that_reads_nothing_does_not_lengthen_the_deadlines_without_end(mode: str) -> None:
    """A target that reads nothing (frozen, or cut off without a reset): every request times
    out and none is answered. The bytes given up are counted ahead of the next request only
    for as long again as they take at the rate (``ReplicationCore._failed``): the deadlines
    settle at the base plus twice the entry's time (2.2 s), and the ledger holds one
    request, however long it goes on; the target is still found failing every few seconds."""
    ch, clock = _link_channel(mode, 1000)
    try:
        link = Link(ch, clock, rate=0)
        sends = await link.run(1, 2, max_sends=30)
        assert sends == 31
        ttls = ch.net.ttls()
        assert ttls[0] == BASE + 1000
        assert set(ttls[1:]) == {BASE + 2000}, ttls
        assert len(ch.core._given_up) <= 2
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_lost_connection_releases_the_bytes_given_up(mode: str) -> None:
    """The bytes of a request given up count ahead of the next one until the connection
    they were on is gone: a request failing with ``errors.Unreachable`` (the connection
    lost or refused) releases them, and the next request has its own bytes ahead only."""
    ch = Channel([100], mode)
    try:
        for i in range(3):
            ch.replicate(1, 2)
            await ch.settle()
            await ch.net.wait_sent(i + 1)
            ch.net.answer(i, [Timeout("no answer"), UnreachableError("connection lost"), None][i])
            await ch.settle()
        assert ch.net.ttls() == [BASE + 100, BASE + 200, BASE + 100]
        assert [describe(n) for n in ch.notes] == ["Unreachable@1", "Unreachable@1", f"Matched {lid(1, 1)!r}"]
        assert ch.core._inflight_bytes == 0
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_request_not_taken_on_a_kept_connection_keeps_the_bytes_given_up(mode: str) -> None:
    """A request the network did not take while its connection is up, still holding what
    was written before (``Unreachable`` with ``connection_kept``: the TCP client's "not
    taking", a target that has not read what was written to it): the bytes given up are
    still on that connection, ahead of the next request, and stay counted. They were
    released as for a lost connection: the next request got a deadline without them, and
    timed out behind them."""
    ch = Channel([100], mode)
    try:
        not_taken = UnreachableError("node 2: not taking what is sent to it", connection_kept=True)
        for i in range(3):
            ch.replicate(1, 2)
            await ch.settle()
            await ch.net.wait_sent(i + 1)
            ch.net.answer(i, [Timeout("no answer"), not_taken, None][i])
            await ch.settle()
        assert ch.net.ttls() == [BASE + 100, BASE + 200, BASE + 200]
        assert [describe(n) for n in ch.notes] == ["Unreachable@1", "Unreachable@1", f"Matched {lid(1, 1)!r}"]
        assert ch.core._inflight_bytes == 0
    finally:
        await ch.close()


@pytest.mark.parametrize("kept", [False, True])
def test_unreachable_says_whether_the_connection_is_kept_and_pickles_with_it(kept: bool) -> None:
    e = UnreachableError("node 2", connection_kept=True) if kept else UnreachableError("node 2")
    for copy in (e, pickle.loads(pickle.dumps(e))):
        assert copy.connection_kept is kept
        assert str(copy) == "node 2"


# -- snapshot chunks: a chunk given up stays ahead of its resend ---------------------------------


class SnapshotLink:
    """A FIFO link of ``rate`` payload bytes per second to a target that takes every
    snapshot chunk at once, in the virtual time of ``clock``: one chunk is in flight at a
    time, so ``install_snapshot`` moves the clock to its outcome (the answer once the chunk
    has crossed the link, or ``Timeout`` at its ``hard_ttl``, its bytes left in the link)."""

    def __init__(self, clock: VirtualClock, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.free_at = 0.0
        self.sends = 0
        self.offsets: list[int] = []

    async def install_snapshot(self, req: InstallSnapshotRequest, option: RPCOption) -> InstallSnapshotResponse:
        self.sends += 1
        self.offsets.append(req.offset)
        now = self.clock.t
        arrive = max(self.free_at, now) + len(req.data) / self.rate
        self.free_at = arrive
        if arrive - now > option.hard_ttl:
            self.clock.t = now + option.hard_ttl
            raise Timeout("no answer to the chunk within its deadline")
        self.clock.t = arrive
        return InstallSnapshotResponse(L1)


class PacedClock(VirtualClock):
    """A ``VirtualClock`` whose ``sleep`` moves it (the pause between chunk resends) and then
    calls ``on_sleep`` (the test stops a transfer that goes on too long there)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_sleep: Callable[[], None] = lambda: None

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.on_sleep()
        await asyncio.sleep(0)


async def test_a_snapshot_chunk_resent_counts_the_bytes_of_the_one_given_up() -> None:
    """A snapshot of three chunks of 1,000 bytes over a link at 80% of
    ``replication_min_rate``: each chunk takes 1.25 s to cross, its deadline is 1.2 s
    (``install_snapshot_timeout``, 200 ms, plus its bytes at the rate), so it times out, as
    the rate allows. Its resend counts the given-up chunk's bytes ahead of it and is
    answered: six sends in all. Before, each resend timed out 50 ms short behind the bytes
    of the one before, forever: the transfer never ended."""
    clock = PacedClock()
    link = SnapshotLink(clock, 0.8 * RATE)
    notes: list[Any] = []
    data = b"s" * 3000
    meta = SnapshotMeta(lid(1, 5), StoredMembership(None, Membership.new([{1, 2}], None)), "snap-1")
    config = Config(replication_min_rate=RATE, snapshot_max_chunk_size=1000).validate()

    async def snapshot() -> Snapshot:
        return Snapshot(meta, io.BytesIO(data))

    tasks: list[asyncio.Task[None]] = []

    def spawn(coro: Any, name: str) -> asyncio.Task[None]:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        tasks.append(t)
        return t

    env = ReplicationEnv(1, config, clock, FakeLog([]), snapshot, spawn, notes.append)
    core = ReplicationCore(2, L1, link, env)  # type: ignore[arg-type]

    def give_up_after_30() -> None:
        if link.sends >= 30:
            core.stop()

    clock.on_sleep = give_up_after_30
    try:
        core.send_snapshot(SendSnapshot(2, 1, lid(1, 5)))
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        sent = [n for n in notes if isinstance(n, SnapshotSent)]
        assert sent and sent[0].matching == lid(1, 5), f"not transferred in {link.sends} sends: {link.offsets}"
        assert link.offsets == [0, 0, 1000, 1000, 2000, 2000]
        # Each given-up copy was released by the answer to its resend.
        assert core._inflight_bytes == 0 and core._given_up == []
    finally:
        core.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_reply_the_network_calls_twice_is_taken_once(caplog: pytest.LogCaptureFixture) -> None:
    """``submit_append_entries``'s ``reply`` is called exactly once (its contract). A network
    that calls it again for the same request took that request's bytes off the count a second
    time: the count went negative and every later deadline came out too short. The second
    call is ignored now, with a warning naming the breach."""
    ch = Channel([100, 300, 50], "submit_append_entries")
    try:
        ch.replicate(1, 2)  # 100 bytes
        ch.replicate(2, 3)  # 300 bytes behind them
        await ch.settle()
        await ch.net.wait_sent(2)
        ch.net.answer(0)
        ch.net.answer(0)  # again: a breach of the contract
        await ch.settle()
        assert ch.core._inflight_bytes == 300
        assert "reply" in caplog.text and "more than once" in caplog.text, caplog.text
        ch.replicate(3, 4)  # 50 bytes behind the 300 still in flight
        await ch.settle()
        await ch.net.wait_sent(3)
        assert ch.net.ttls()[2] == BASE + 350
    finally:
        await ch.close()
