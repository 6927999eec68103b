"""The in-process Router: delivery, faults, counters, hooks and wire round trips."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from openraft_py.errors import (
    InvalidRequest,
    NetworkError,
    RemoteError,
    RPCError,
    Stopped,
    Timeout,
    Unreachable,
)
from openraft_py.network import RPC_NAMES, RaftNetwork, RaftNetworkFactory, Router
from openraft_py.types import (
    BLANK,
    AppendEntriesRequest,
    AppendEntriesResponse,
    BasicNode,
    Entry,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    Normal,
    RPCOption,
    SnapshotMeta,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)

pytestmark = pytest.mark.timeout(10)

OPT = RPCOption()
V = Vote.new(1, 1)
HEARTBEAT = AppendEntriesRequest(V, None, [], None)


class FakeServer:
    """A RaftServer recording what it receives; ``fail`` makes every handler raise it."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.received: list[tuple[str, Any]] = []
        self.fail: BaseException | None = None

    def _got(self, rpc: str, req: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.received.append((rpc, req))

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        self._got("append_entries", req)
        return AppendEntriesResponse(req.vote, True, req.last_log_id())

    async def vote(self, req: VoteRequest) -> VoteResponse:
        self._got("vote", req)
        return VoteResponse(req.vote, True, LogId(1, 3))

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        self._got("install_snapshot", req)
        return InstallSnapshotResponse(req.vote)

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        self._got("transfer_leader", req)


def cluster(n: int = 3, **kw: Any) -> tuple[Router, dict[int, FakeServer]]:
    kw.setdefault("wire", False)  # these tests pin the mode (OPENRAFT_PY_ROUTER_WIRE may be set)
    router = Router(**kw)
    servers = {i: FakeServer(i) for i in range(1, n + 1)}
    for i, s in servers.items():
        router.register(i, s)
    return router, servers


def client(router: Router, source: int, target: int) -> RaftNetwork:
    return router.factory(source).new_client(target, BasicNode(f"n{target}"))


async def can_send(router: Router, source: int, target: int) -> bool:
    try:
        await client(router, source, target).append_entries(HEARTBEAT, OPT)
        return True
    except Unreachable:
        return False


async def reach_matrix(router: Router, n: int = 3) -> set[tuple[int, int]]:
    return {(a, b) for a in range(1, n + 1) for b in range(1, n + 1) if a != b and await can_send(router, a, b)}


ALL3 = {(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}


# -- delivery ----------------------------------------------------------------------------------


async def test_delivers_every_rpc() -> None:
    router, servers = cluster()
    factory: RaftNetworkFactory = router.factory(1)
    c = factory.new_client(2, BasicNode())
    entries = [Entry(LogId(1, 0), BLANK), Entry(LogId(1, 1), Normal(b"x"))]
    ae = AppendEntriesRequest(V, None, entries, None)
    assert await c.append_entries(ae, OPT) == AppendEntriesResponse(V, True, LogId(1, 1))
    vr = VoteRequest(V, LogId(1, 3))
    assert await c.vote(vr, OPT) == VoteResponse(V, True, LogId(1, 3))
    meta = SnapshotMeta(LogId(1, 1), StoredMembership(None, Membership.new([{1}])), "s1")
    isr = InstallSnapshotRequest(V, meta, 0, b"data", True)
    assert await c.install_snapshot(isr, OPT) == InstallSnapshotResponse(V)
    tl = TransferLeaderRequest(V, 2, LogId(1, 1))
    assert await c.transfer_leader(tl, OPT) is None
    hb = AppendEntriesRequest(V, LogId(1, 1), [], LogId(1, 1))
    assert await c.heartbeat(hb, OPT) == AppendEntriesResponse(V, True, LogId(1, 1))  # type: ignore[attr-defined]
    # Without serialize, the very objects are passed through; a heartbeat is handled as
    # any AppendEntries.
    got = servers[2].received
    assert [r for r, _ in got] == [*RPC_NAMES[:4], "append_entries"]
    assert got[0][1] is ae and got[1][1] is vr and got[2][1] is isr and got[3][1] is tl and got[4][1] is hb
    assert [router.rpc_count(name) for name in RPC_NAMES] == [1, 1, 1, 1, 1]
    assert servers[1].received == [] and servers[3].received == []


async def test_new_client_reuses_the_pair() -> None:
    router, _ = cluster()
    assert client(router, 1, 2) is client(router, 1, 2)
    assert client(router, 1, 2) is not client(router, 2, 1)


async def test_unregistered_is_unreachable() -> None:
    router, servers = cluster()
    c = client(router, 1, 4)
    for call in (c.append_entries(HEARTBEAT, OPT), c.vote(VoteRequest(V, None), OPT)):
        with pytest.raises(Unreachable, match="not registered"):
            await call
    router.unregister(2)
    with pytest.raises(Unreachable):
        await client(router, 1, 2).append_entries(HEARTBEAT, OPT)
    router.register(2, servers[2])  # restarted
    assert await can_send(router, 1, 2)
    router.unregister(99)  # unknown: ignored


async def test_fatal_is_unreachable_other_errors_are_remote() -> None:
    router, servers = cluster()
    servers[2].fail = Stopped()
    c = client(router, 1, 2)
    with pytest.raises(Unreachable, match="stopped"):
        await c.append_entries(HEARTBEAT, OPT)
    with pytest.raises(Unreachable):
        await c.vote(VoteRequest(V, None), OPT)
    servers[2].fail = KeyError("boom")
    with pytest.raises(RemoteError) as ei:
        await c.append_entries(HEARTBEAT, OPT)
    assert ei.value.target == 2 and isinstance(ei.value.__cause__, KeyError)
    with pytest.raises(RemoteError):
        await c.transfer_leader(TransferLeaderRequest(V, 2, None), OPT)
    # Same on the slow path.
    router.set_delay(0, 1)
    with pytest.raises(RemoteError):
        await c.append_entries(HEARTBEAT, OPT)
    servers[2].fail = Stopped()
    with pytest.raises(Unreachable):
        await c.append_entries(HEARTBEAT, OPT)


# -- faults ------------------------------------------------------------------------------------


async def test_isolate_and_heal() -> None:
    router, _ = cluster()
    router.isolate(3)
    assert await reach_matrix(router) == {(1, 2), (2, 1)}
    router.heal()
    assert await reach_matrix(router) == ALL3


async def test_partition() -> None:
    router, _ = cluster(5)
    router.partition({1, 2}, {3, 4})  # 5 is in no group: isolated
    got = await reach_matrix(router, 5)
    assert got == {(1, 2), (2, 1), (3, 4), (4, 3)}
    router.partition({1, 2, 3, 4, 5})  # replaces the previous partition
    assert len(await reach_matrix(router, 5)) == 20
    with pytest.raises(ValueError, match="more than one"):
        router.partition({1, 2}, {2, 3})
    router.heal()
    assert len(await reach_matrix(router, 5)) == 20
    router.partition()  # no group: every node is in none, so every node is isolated
    assert await reach_matrix(router, 5) == set()
    router.heal()
    assert len(await reach_matrix(router, 5)) == 20


async def test_cut_two_way_and_one_way() -> None:
    router, _ = cluster()
    router.cut(1, 2)
    assert await reach_matrix(router) == ALL3 - {(1, 2), (2, 1)}
    router.heal()
    router.cut(1, 2, one_way=True)
    assert await reach_matrix(router) == ALL3 - {(1, 2)}
    router.heal()
    assert await reach_matrix(router) == ALL3


async def test_drop_rate_is_deterministic_with_a_seed() -> None:
    async def run(seed: int) -> tuple[list[str], int]:
        router, servers = cluster(seed=seed)
        router.set_drop_rate(0.3)
        c = client(router, 1, 2)
        outcome = []
        for _ in range(200):
            try:
                await c.append_entries(HEARTBEAT, OPT)
                outcome.append("ok")
            except Unreachable:
                outcome.append("req")
            except Timeout:
                outcome.append("resp")
        return outcome, len(servers[2].received)

    a, handled_a = await run(7)
    b, handled_b = await run(7)
    c, _ = await run(8)
    assert a == b and handled_a == handled_b
    assert a != c
    assert {"ok", "req", "resp"} <= set(a)
    # A dropped request is never handled; a dropped response was.
    assert handled_a == a.count("ok") + a.count("resp")


async def test_drop_rate_validation_and_off() -> None:
    router, _ = cluster()
    with pytest.raises(ValueError):
        router.set_drop_rate(1.5)
    router.set_drop_rate(1.0)
    assert not await can_send(router, 1, 2)
    router.set_drop_rate(0)
    assert await can_send(router, 1, 2)


async def test_delay_and_reordering() -> None:
    router, servers = cluster(seed=3)
    router.set_delay(5, 30)
    c = client(router, 1, 2)
    reqs = [AppendEntriesRequest(V, LogId(1, i), [], None) for i in range(20)]
    t0 = time.monotonic()
    resps = await asyncio.wait_for(asyncio.gather(*(c.append_entries(r, OPT) for r in reqs)), 5)
    elapsed = time.monotonic() - t0
    assert [r.matching for r in resps] == [r.prev_log_id for r in reqs]  # each gets its answer
    assert elapsed >= 0.010  # request + response delay, each >= 5 ms
    arrival = [req.prev_log_id for _, req in servers[2].received]
    assert sorted(arrival) == [r.prev_log_id for r in reqs]
    assert arrival != sorted(arrival)  # delivered out of order
    with pytest.raises(ValueError):
        router.set_delay(10, 5)
    router.set_delay(0, 0)
    assert router._fast


def test_set_delay_refuses_infinite_and_nan_delays() -> None:
    # set_delay(0, inf) was accepted: every message then slept for good (a hang, not a delay).
    router, _servers = cluster()
    for lo, hi in ((0, math.inf), (math.inf, math.inf), (math.nan, 1), (0, math.nan), (-1, 1)):
        with pytest.raises(ValueError, match="need 0 <= min_ms <= max_ms, both finite"):
            router.set_delay(lo, hi)
    assert router._fast


async def test_partition_during_delay_loses_the_message() -> None:
    router, servers = cluster()
    router.set_delay(50, 50)
    task = asyncio.ensure_future(client(router, 1, 2).append_entries(HEARTBEAT, OPT))
    await asyncio.sleep(0.01)
    router.isolate(2)
    with pytest.raises(Unreachable):
        await asyncio.wait_for(task, 2)
    assert servers[2].received == []


@pytest.mark.parametrize("kind", [Unreachable, Timeout, NetworkError, RemoteError])
async def test_rpc_failure_kinds(kind: type[RPCError]) -> None:
    router, servers = cluster()
    router.set_rpc_failure(2, "in", kind)
    with pytest.raises(kind, match="injected"):
        await client(router, 1, 2).append_entries(HEARTBEAT, OPT)
    assert servers[2].received == []


async def test_rpc_failure_directions_and_rpc_filter() -> None:
    router, _ = cluster()
    router.set_rpc_failure(1, "out", Unreachable)
    assert await reach_matrix(router) == ALL3 - {(1, 2), (1, 3)}
    with pytest.raises(Unreachable):
        await client(router, 1, 2).vote(VoteRequest(V, None), OPT)
    router.set_rpc_failure(1, "out", None)
    router.set_rpc_failure(1, "both", NetworkError, rpc="vote")
    assert await reach_matrix(router) == ALL3  # append_entries unaffected
    with pytest.raises(NetworkError):
        await client(router, 2, 1).vote(VoteRequest(V, None), OPT)
    with pytest.raises(NetworkError):
        await client(router, 1, 3).vote(VoteRequest(V, None), OPT)
    await client(router, 2, 3).vote(VoteRequest(V, None), OPT)
    router.set_rpc_failure(1, "in", None, rpc="vote")  # clear one direction only
    await client(router, 2, 1).vote(VoteRequest(V, None), OPT)
    with pytest.raises(NetworkError):
        await client(router, 1, 3).vote(VoteRequest(V, None), OPT)
    router.heal()
    await client(router, 1, 3).vote(VoteRequest(V, None), OPT)
    assert router._fast
    with pytest.raises(ValueError):
        router.set_rpc_failure(1, "sideways", Timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        router.set_rpc_failure(1, "in", Timeout, rpc="nope")
    with pytest.raises(TypeError):
        router.set_rpc_failure(1, "in", KeyError)  # type: ignore[arg-type]


async def test_hooks_see_and_can_fail_rpcs() -> None:
    router, servers = cluster()
    seen: list[tuple[str, int, int, Any]] = []

    def record(rpc: str, source: int, target: int, req: Any) -> None:
        seen.append((rpc, source, target, req))

    async def block_votes(rpc: str, source: int, target: int, req: Any) -> None:
        if rpc == "vote":
            raise Unreachable("hook says no")

    router.add_hook(record)
    router.add_hook(block_votes)
    router.isolate(3)
    await client(router, 1, 2).append_entries(HEARTBEAT, OPT)
    with pytest.raises(Unreachable, match="hook says no"):
        await client(router, 1, 2).vote(VoteRequest(V, None), OPT)
    with pytest.raises(Unreachable):
        await client(router, 1, 3).append_entries(HEARTBEAT, OPT)
    # Hooks see every send, before faults apply.
    assert [(r, s, t) for r, s, t, _ in seen] == [
        ("append_entries", 1, 2),
        ("vote", 1, 2),
        ("append_entries", 1, 3),
    ]
    assert seen[0][3] is HEARTBEAT
    assert [r for r, _ in servers[2].received] == ["append_entries"]
    router.heal()  # hooks survive heal
    with pytest.raises(Unreachable):
        await client(router, 1, 2).vote(VoteRequest(V, None), OPT)
    router.clear_hooks()
    await client(router, 1, 2).vote(VoteRequest(V, None), OPT)
    assert router._fast


# -- counters ----------------------------------------------------------------------------------


async def test_counters() -> None:
    router, servers = cluster()
    for _ in range(3):
        await client(router, 1, 2).append_entries(HEARTBEAT, OPT)
    await client(router, 1, 3).append_entries(HEARTBEAT, OPT)
    await client(router, 2, 1).vote(VoteRequest(V, None), OPT)
    await client(router, 2, 3).vote(VoteRequest(V, None), OPT)
    await client(router, 1, 2).transfer_leader(TransferLeaderRequest(V, 2, None), OPT)
    # Not delivered: not counted. Delivered but failed in the handler: counted.
    router.isolate(3)
    with pytest.raises(Unreachable):
        await client(router, 1, 3).append_entries(HEARTBEAT, OPT)
    router.heal()
    servers[3].fail = KeyError("x")
    with pytest.raises(RemoteError):
        await client(router, 2, 3).install_snapshot(
            InstallSnapshotRequest(V, SnapshotMeta(None, StoredMembership(None, Membership.new([])), "s"), 0, b"", True),
            OPT,
        )

    assert router.rpc_count() == 8
    assert router.rpc_count("append_entries") == 4
    assert router.rpc_count("append_entries", source=1, target=2) == 3
    assert router.rpc_count("append_entries", target=3) == 1
    assert router.rpc_count("vote") == 2
    assert router.rpc_count("vote", source=2) == 2
    assert router.rpc_count(source=2) == 3
    assert router.rpc_count(target=3) == 3
    assert router.rpc_count("install_snapshot") == 1
    assert router.rpc_count("transfer_leader") == 1
    with pytest.raises(ValueError):
        router.rpc_count("nope")
    router.reset_counters()
    assert router.rpc_count() == 0
    await client(router, 1, 2).append_entries(HEARTBEAT, OPT)
    assert router.rpc_count("append_entries", 1, 2) == 1


# -- serialize=True ----------------------------------------------------------------------------


async def test_serialize_round_trips_every_request_and_response() -> None:
    router, servers = cluster(serialize=True)
    c = client(router, 1, 2)
    m = Membership.new([{1, 2}, {1, 2, 3}], {4: BasicNode("127.0.0.1:4")})
    entries = [
        Entry(LogId(0, 0), m),
        Entry(LogId(1, 1), BLANK),
        Entry(LogId(1, 2), Normal(b"\x00\xc1payload")),
        Entry(LogId(1, 3), Normal(b"")),
    ]
    ae = AppendEntriesRequest(Vote.new(1, 1, True), LogId(0, 0), entries, LogId(1, 1))
    meta = SnapshotMeta(LogId(1, 3), StoredMembership(LogId(0, 0), m), "snap-1")
    reqs: list[Any] = [
        ae,
        AppendEntriesRequest(V, None, [], None),
        VoteRequest(Vote.new(2, 3), LogId(1, 3), pre_vote=True),
        VoteRequest(V, None),
        InstallSnapshotRequest(V, meta, 4096, b"chunk" * 10, False),
        TransferLeaderRequest(V, 2, LogId(1, 3)),
    ]
    resps = [
        await c.append_entries(reqs[0], OPT),
        await c.append_entries(reqs[1], OPT),
        await c.vote(reqs[2], OPT),
        await c.vote(reqs[3], OPT),
        await c.install_snapshot(reqs[4], OPT),
        await c.transfer_leader(reqs[5], OPT),
    ]
    got = [req for _, req in servers[2].received]
    assert got == reqs
    assert all(g is not r for g, r in zip(got, reqs))  # copies: they went through the wire
    assert type(got[0].entries[0].payload) is Membership
    assert got[0].entries[0].payload.configs == m.configs
    assert resps == [
        AppendEntriesResponse(ae.vote, True, LogId(1, 3)),
        AppendEntriesResponse(V, True, None),
        VoteResponse(Vote.new(2, 3), True, LogId(1, 3)),
        VoteResponse(V, True, LogId(1, 3)),
        InstallSnapshotResponse(V),
        None,
    ]


# -- wire=True: the TCP codec -----------------------------------------------------------------


def _rich_messages() -> tuple[list[Any], Membership]:
    m = Membership.new([{1, 2}, {1, 2, 3}], {4: BasicNode("127.0.0.1:4")})
    entries = [
        Entry(LogId(0, 0), m),
        Entry(LogId(1, 1), BLANK),
        Entry(LogId(1, 2), Normal(b"\x00\xc1payload")),
        Entry(LogId(1, 3), Normal(b"")),
    ]
    ae = AppendEntriesRequest(Vote.new(1, 1, True), LogId(0, 0), entries, LogId(1, 1))
    meta = SnapshotMeta(LogId(1, 3), StoredMembership(LogId(0, 0), m), "snap-1")
    reqs: list[Any] = [
        ae,
        AppendEntriesRequest(V, None, [], None),
        VoteRequest(Vote.new(2, 3), LogId(1, 3), pre_vote=True),
        VoteRequest(V, None),
        InstallSnapshotRequest(V, meta, 4096, bytes(range(256)) * 40, False),
        TransferLeaderRequest(V, 2, LogId(1, 3)),
    ]
    return reqs, m


async def test_wire_passes_every_request_and_response_through_the_codec() -> None:
    router, servers = cluster(wire=True)
    assert router.wire and not router._fast
    c = client(router, 1, 2)
    reqs, m = _rich_messages()
    resps = [
        await c.append_entries(reqs[0], OPT),
        await c.append_entries(reqs[1], OPT),
        await c.vote(reqs[2], OPT),
        await c.vote(reqs[3], OPT),
        await c.install_snapshot(reqs[4], OPT),
        await c.transfer_leader(reqs[5], OPT),
    ]
    got = [req for _, req in servers[2].received]
    assert got == reqs
    assert all(g is not r for g, r in zip(got, reqs))  # decoded copies
    assert type(got[0].entries[0].payload) is Membership
    assert got[0].entries[0].payload.configs == m.configs
    assert got[4].data == reqs[4].data
    assert resps == [
        AppendEntriesResponse(reqs[0].vote, True, LogId(1, 3)),
        AppendEntriesResponse(V, True, None),
        VoteResponse(Vote.new(2, 3), True, LogId(1, 3)),
        VoteResponse(V, True, LogId(1, 3)),
        InstallSnapshotResponse(V),
        None,
    ]
    assert router.wire_messages == 12 and router.wire_errors == 0
    router.set_wire(False)
    assert not router.wire and router._fast
    await c.append_entries(reqs[1], OPT)
    assert servers[2].received[-1][1] is reqs[1]  # direct hand-over again
    assert router.wire_messages == 12


async def test_wire_refuses_an_out_of_bounds_request_before_the_target() -> None:
    router, servers = cluster(wire=True)
    c = client(router, 1, 2)
    bad = AppendEntriesRequest(V, LogId(2**63, 1), [], None)  # term beyond the wire's u63
    with pytest.raises(NetworkError, match="wire codec"):
        await c.append_entries(bad, OPT)
    assert servers[2].received == []
    assert router.wire_errors == 1
    # The link keeps working for well-formed messages.
    assert await c.append_entries(HEARTBEAT, OPT) == AppendEntriesResponse(V, True, None)
    assert router.wire_errors == 1


async def test_wire_refuses_an_out_of_bounds_response_after_the_target_handled_it() -> None:
    router, servers = cluster(wire=True)

    async def bad_vote(req: VoteRequest) -> VoteResponse:
        servers[2].received.append(("vote", req))
        return VoteResponse(req.vote, True, LogId(1, 2**64 - 1))

    servers[2].vote = bad_vote  # type: ignore[method-assign]
    with pytest.raises(NetworkError):
        await client(router, 1, 2).vote(VoteRequest(V, None), OPT)
    assert [r for r, _ in servers[2].received] == ["vote"]
    assert router.wire_errors == 1


def test_wire_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRAFT_PY_ROUTER_WIRE", "1")
    assert Router().wire and not Router(wire=False).wire
    monkeypatch.setenv("OPENRAFT_PY_ROUTER_WIRE", "0")
    assert not Router().wire and Router(wire=True).wire
    for off in ("false", "No", "off", ""):  # as every OPENRAFT_PY_* switch (_compiled.env_flag)
        monkeypatch.setenv("OPENRAFT_PY_ROUTER_WIRE", off)
        assert not Router().wire, off
    monkeypatch.setenv("OPENRAFT_PY_ROUTER_WIRE", "yes")
    assert Router().wire
    monkeypatch.delenv("OPENRAFT_PY_ROUTER_WIRE")
    assert not Router().wire and Router()._fast


async def test_cluster_commits_over_the_wire_codec() -> None:
    """An in-process cluster whose every message goes through the TCP codec elects, commits
    and replicates (the integration path the simulator's wire seeds take)."""
    from openraft_py.testing import Cluster

    async with Cluster(seed=3) as c:
        c.router.set_wire(True)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader(timeout=5.0)
        for i in range(20):
            await asyncio.wait_for(c.nodes[leader].client_write(b"w%d" % i), 5.0)
        last = c.nodes[leader].metrics.last_log_index
        for n in c.nodes.values():
            await n.wait(5.0).applied_index_at_least(last, "replicated")
        assert c.router.wire_messages > 40 and c.router.wire_errors == 0


# -- hot path ----------------------------------------------------------------------------------


async def test_fast_path_is_a_direct_await() -> None:
    """With no fault configured the router adds no task, no copy and no encoding: the server's
    handler runs inside the caller's own task and sees the caller's request object. (Its cost,
    ~0.1-0.2 us a call, is measured by the benchmarks, not asserted here.)"""
    router, servers = cluster()
    s = servers[2]
    seen: list[asyncio.Task[Any] | None] = []
    handler = s.append_entries

    async def recording(req: AppendEntriesRequest) -> AppendEntriesResponse:
        seen.append(asyncio.current_task())
        return await handler(req)

    s.append_entries = recording  # type: ignore[method-assign]
    c = client(router, 1, 2)
    assert router._fast
    req = AppendEntriesRequest(V, None, [], None)
    resp = await c.append_entries(req, OPT)
    assert seen == [asyncio.current_task()]
    assert s.received[-1][1] is req
    assert resp.success and router.wire_messages == 0


class StartingServer(FakeServer):
    """A FakeServer with ``start_append_entries`` (as ``Raft`` has): the request is taken at
    the call, the answer comes through the returned future."""

    def start_append_entries(self, req: AppendEntriesRequest) -> asyncio.Future[AppendEntriesResponse]:
        self._got("append_entries", req)
        fut: asyncio.Future[AppendEntriesResponse] = asyncio.get_running_loop().create_future()
        fut.set_result(AppendEntriesResponse(req.vote, True, req.last_log_id()))
        return fut


async def test_send_append_entries_delivers_at_the_call_in_the_fast_path() -> None:
    router = Router(wire=False)
    servers = {i: StartingServer(i) for i in (1, 2)}
    for i, s in servers.items():
        router.register(i, s)
    c = client(router, 1, 2)
    req = AppendEntriesRequest(V, None, [Entry(LogId(1, 0), BLANK)], None)
    answer = c.send_append_entries(req, OPT)  # type: ignore[attr-defined]
    assert servers[2].received == [("append_entries", req)]  # before anything is awaited
    assert await answer == AppendEntriesResponse(V, True, LogId(1, 0))
    # Errors: mapped as append_entries maps them, raised at the call.
    servers[2].fail = Stopped()
    with pytest.raises(Unreachable, match="stopped"):
        c.send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]
    servers[2].fail = KeyError("boom")
    with pytest.raises(RemoteError):
        c.send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]


class PendingServer(FakeServer):
    """``start_append_entries`` returns a future nobody answers yet (kept in ``futures``)."""

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.futures: list[asyncio.Future[AppendEntriesResponse]] = []

    def start_append_entries(self, req: AppendEntriesRequest) -> asyncio.Future[AppendEntriesResponse]:
        self._got("append_entries", req)
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]


async def test_a_dropped_fast_path_answer_leaves_no_unretrieved_error() -> None:
    """A leader that stops with a request started for its idle sender drops its answer
    unawaited (``replication._abandon``); the target then fails its future with ``Stopped``
    as it stops too. Nothing is logged: the answer was a coroutine, closed unrun, and
    asyncio logged "Future exception was never retrieved" for the target's future (an
    embedder's test run under ``-W error`` / debug mode sees that as a failure). Awaited, the
    answer still maps the target's errors as ``append_entries`` does."""
    from openraft_py.core.replication import _abandon, _Call

    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    try:
        router = Router(wire=False)
        servers = {i: PendingServer(i) for i in (1, 2)}
        for i, s in servers.items():
            router.register(i, s)
        c = client(router, 1, 2)
        answer = c.send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]
        _abandon(_Call(answer, None, 0.0, 0, 1, OPT.hard_ttl))
        servers[2].futures[0].set_exception(Stopped())
        awaited = c.send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]
        servers[2].futures[1].set_exception(Stopped())
        with pytest.raises(Unreachable, match="stopped"):
            await awaited
        await asyncio.sleep(0)  # (the dropped one's done callbacks)
        del answer, awaited
        servers[2].futures.clear()
        gc.collect()
        assert logged == []
    finally:
        loop.set_exception_handler(None)


async def test_send_append_entries_without_the_fast_path_delivers_when_awaited() -> None:
    """With a fault configured (or a server without ``start_append_entries``) the request
    takes ``append_entries``'s way, when the returned coroutine is awaited."""
    router = Router(wire=False)
    servers = {i: StartingServer(i) for i in (1, 2)}
    for i, s in servers.items():
        router.register(i, s)
    router.set_delay(0, 1)
    c = client(router, 1, 2)
    answer = c.send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]
    assert servers[2].received == []
    assert (await answer).success
    assert servers[2].received == [("append_entries", HEARTBEAT)]
    plain_router, plain = cluster()
    answer = client(plain_router, 1, 2).send_append_entries(HEARTBEAT, OPT)  # type: ignore[attr-defined]
    assert plain[2].received == []
    assert (await answer).success and plain[2].received == [("append_entries", HEARTBEAT)]


class SubmittingServer(FakeServer):
    """A FakeServer with ``submit_append_entries`` (as ``Raft`` has): the request is taken at
    the call, the answer (or the configured failure) given to ``reply`` when ``answer_all``
    runs (as a node answers from its own pass)."""

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.waiting: list[tuple[AppendEntriesRequest, Callable[[Any], None]]] = []

    def submit_append_entries(self, req: AppendEntriesRequest, reply: Callable[[Any], None]) -> object:
        self.received.append(("append_entries", req))  # (``fail`` is the reply's, below)
        self.waiting.append((req, reply))
        return object()

    def answer_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for req, reply in waiting:
            reply(self.fail if self.fail is not None else AppendEntriesResponse(req.vote, True, req.last_log_id()))


async def test_submit_append_entries_without_the_codec_hands_over_directly_and_maps_errors() -> None:
    """With the codec off, ``submit_append_entries`` is the fast mode's: the request reaches
    the server's ``submit_append_entries`` at the call (no task, no future), its reply is
    the caller's, with the server's errors mapped as ``append_entries`` maps them; with a
    fault configured, or a server without the method, it takes nothing (``None``: the
    channel uses the other methods, which apply every fault). With the codec on, it is the
    router's task-based one (below)."""
    router = Router(wire=False)
    servers = {i: SubmittingServer(i) for i in (1, 2)}
    for i, s in servers.items():
        router.register(i, s)
    c = client(router, 1, 2)
    got: list[Any] = []
    req = AppendEntriesRequest(V, None, [Entry(LogId(1, 0), BLANK)], None)
    assert c.submit_append_entries(req, OPT, got.append) is not None  # type: ignore[attr-defined]
    assert servers[2].received == [("append_entries", req)]  # before anything is awaited
    servers[2].answer_all()
    assert got == [AppendEntriesResponse(V, True, LogId(1, 0))]
    assert c.counts[0] == 1  # type: ignore[attr-defined]
    for fail, mapped in ((Stopped(), Unreachable), (KeyError("boom"), RemoteError)):
        servers[2].fail = fail
        c.submit_append_entries(HEARTBEAT, OPT, got.append)  # type: ignore[attr-defined]
        servers[2].answer_all()
        assert isinstance(got[-1], mapped)
    assert len(got) == 3
    # Not taken while a fault is configured, nor by a server without the method.
    servers[2].fail = None
    router.set_delay(0, 1)
    assert c.submit_append_entries(HEARTBEAT, OPT, got.append) is None  # type: ignore[attr-defined]
    router.heal()
    plain_router, plain = cluster()
    assert client(plain_router, 1, 2).submit_append_entries(HEARTBEAT, OPT, got.append) is None  # type: ignore[attr-defined]
    assert servers[2].received[-1:] == [("append_entries", HEARTBEAT)] and len(servers[2].received) == 3
    assert plain[2].received == [] and len(got) == 3
    router.set_wire(True)
    assert c.submit_append_entries == c._submit_append_entries  # type: ignore[attr-defined]


async def test_submit_append_entries_with_the_wire_codec_applies_faults_and_replies_once() -> None:
    router, servers = cluster(wire=True)
    c = client(router, 1, 2)
    got: list[Any] = []
    req = AppendEntriesRequest(V, None, [Entry(LogId(1, 0), BLANK)], None)
    handles = [c.submit_append_entries(r, OPT, got.append) for r in (req, HEARTBEAT)]  # type: ignore[attr-defined]
    assert all(h is not None for h in handles)
    await asyncio.gather(*handles)
    # Delivered in call order, through the codec; each reply once, with the response.
    assert [r for _, r in servers[2].received] == [req, HEARTBEAT]
    assert got == [AppendEntriesResponse(V, True, LogId(1, 0)), AppendEntriesResponse(V, True, None)]
    assert router.wire_messages == 4
    # Faults apply: a cut path is Unreachable, a stopped target too, a failing one RemoteError.
    router.cut(1, 2)
    await c.submit_append_entries(HEARTBEAT, OPT, got.append)  # type: ignore[attr-defined]
    assert isinstance(got[-1], Unreachable)
    router.heal()  # (the codec stays on)
    servers[2].fail = Stopped()
    await c.submit_append_entries(HEARTBEAT, OPT, got.append)  # type: ignore[attr-defined]
    assert isinstance(got[-1], Unreachable)
    servers[2].fail = KeyError("boom")
    await c.submit_append_entries(HEARTBEAT, OPT, got.append)  # type: ignore[attr-defined]
    assert isinstance(got[-1], RemoteError)
    assert len(got) == 5
    # A withdrawn request is never answered.
    servers[2].fail = None
    router.set_delay(0.01, 0.02)
    handle = c.submit_append_entries(HEARTBEAT, OPT, got.append)  # type: ignore[attr-defined]
    handle.cancel()
    await asyncio.sleep(0.05)
    assert len(got) == 5


def test_hooks_must_be_callable() -> None:
    # add_hook(None) was accepted: every RPC then failed with "'NoneType' object is not
    # callable" and no node could elect, far from the mistake.
    router, _servers = cluster()
    for bad in (None, 42, "hook"):
        with pytest.raises(TypeError, match="hook must be callable"):
            router.add_hook(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="response hook must be callable"):
            router.add_response_hook(bad)  # type: ignore[arg-type]
    assert router._fast


ROUTER_BAD: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    # set_drop_rate("0.5") raised "'<=' not supported between instances of 'float' and 'str'".
    ("set_drop_rate", ("0.5",), {}, TypeError, "drop rate p must be a number in [0, 1], got str '0.5'"),
    ("set_drop_rate", (None,), {}, TypeError, "drop rate p must be a number in [0, 1], got NoneType None"),
    ("set_drop_rate", (True,), {}, TypeError, "drop rate p must be a number in [0, 1], got bool True"),
    ("set_drop_rate", (math.nan,), {}, ValueError, "drop rate p must be within [0, 1], got nan"),
    ("set_drop_rate", (-0.1,), {}, ValueError, "drop rate p must be within [0, 1], got -0.1"),
    ("set_duplicate_rate", ("0.5",), {}, TypeError, "duplicate rate p must be a number in [0, 1], got str '0.5'"),
    ("set_duplicate_rate", (2,), {}, ValueError, "duplicate rate p must be within [0, 1], got 2"),
    ("set_delay", ("1", 5), {}, TypeError, "min_ms must be a number of milliseconds, got str '1'"),
    ("set_delay", (1, "5"), {}, TypeError, "max_ms must be a number of milliseconds, got str '5'"),
    ("set_delay", (False, 5), {}, TypeError, "min_ms must be a number of milliseconds, got bool False"),
    # Each of these was taken and then matched no node: a fault that did nothing.
    ("isolate", ("1",), {}, TypeError, "node_id must be an int, got str '1'"),
    ("cut", (1, "2"), {}, TypeError, "b must be an int, got str '2'"),
    ("cut", (1.0, 2), {}, TypeError, "a must be an int, got float 1.0"),
    ("cut", (1, 2), {"one_way": "yes"}, TypeError, "one_way must be a bool, got str 'yes'"),
    ("partition", ({1, "2"},), {}, TypeError, "groups[0] member must be an int, got str '2'"),
    ("partition", ("12",), {}, TypeError, "each group must be a set of node ids, got str '12'"),
    ("partition", ({1}, 2), {}, TypeError, "each group must be a set of node ids, got int 2"),
    ("set_rpc_failure", ("1", "in", Unreachable), {}, TypeError, "node_id must be an int, got str '1'"),
    ("set_wire", ("no",), {}, TypeError, "enabled must be a bool, got str 'no'"),
]


def _case_id(method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> str:
    """A case's test id, the same in every process: a set's members sorted by their repr
    (a set of a str and an int iterates in an order that changes with the str hash's seed,
    and pytest-xdist refuses workers that collected different ids)."""
    def shown(a: Any) -> str:
        return "{" + ", ".join(sorted(map(repr, a))) + "}" if isinstance(a, (set, frozenset)) else repr(a)

    return f"{method}({', '.join(map(shown, args))}){kw or ''}"[:50]


@pytest.mark.parametrize(("method", "args", "kw", "error", "message"), ROUTER_BAD,
                         ids=[_case_id(*b[:3]) for b in ROUTER_BAD])
def test_fault_switches_refuse_a_wrong_argument_naming_it(
        method: str, args: tuple[Any, ...], kw: dict[str, Any], error: type[Exception], message: str) -> None:
    router, _servers = cluster()
    with pytest.raises(error) as info:
        getattr(router, method)(*args, **kw)
    assert str(info.value) == message
    assert router._fast and not router._isolated and not router._cuts and router._group_of is None
    assert router._drop_rate == 0.0 and router._dup_rate == 0.0 and router._delay is None and not router.wire


def test_fault_switches_take_ints_and_floats() -> None:
    router, _servers = cluster()
    router.set_drop_rate(1)
    router.set_duplicate_rate(0.25)
    router.set_delay(1, 2.5)
    router.partition([1, 2], (3,))
    assert (router._drop_rate, router._dup_rate, router._delay) == (1.0, 0.25, (0.001, 0.0025))
    assert type(router._drop_rate) is float and router._group_of == {1: 0, 2: 0, 3: 1}


async def test_requests_refused_as_invalid_are_noted_duplicates_included() -> None:
    """A server's ``InvalidRequest`` is the caller's ``RemoteError`` and is noted in
    ``invalid_requests`` (the simulator fails a run with any), also for a duplicate, whose
    outcome reaches no caller: a refused duplicate went unseen."""
    router, servers = cluster(2)
    c = client(router, 1, 2)
    router.add_hook(lambda *a: None)  # the delivery that applies faults (the simulator's)
    servers[2].fail = InvalidRequest("append_entries", "entry 2-3 contradicts committed entry 1-3")
    with pytest.raises(RemoteError):
        await c.append_entries(HEARTBEAT, OPT)
    assert router.invalid_request_count == 1
    assert router.invalid_requests == ["append_entries 1 -> 2: invalid append_entries request: entry 2-3 contradicts committed entry 1-3"]
    router.set_duplicate_rate(1.0)
    with pytest.raises(RemoteError):
        await c.append_entries(HEARTBEAT, OPT)
    await asyncio.wait_for(asyncio.gather(*router._dup_tasks), 5)
    assert router.invalid_request_count == 3, router.invalid_requests
    servers[2].fail = RuntimeError("a bug over there")  # not a refusal: not noted
    with pytest.raises(RemoteError):
        await c.append_entries(HEARTBEAT, OPT)
    await asyncio.wait_for(asyncio.gather(*router._dup_tasks), 5)
    assert router.invalid_request_count == 3
