"""The Router's heartbeat lane (``RouterClient.heartbeat``, the RPC ``"heartbeat"``): handled by
the target as any AppendEntries; cut by isolations, partitions and cuts as every RPC; failed
and delayed apart from the window (``set_rpc_failure`` / ``set_delay`` with ``rpc=``), so
that a heartbeat overtakes AppendEntries in flight and its answer comes back first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py.errors import RemoteError, Timeout, Unreachable
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, BasicNode, Entry, LogId, Normal

from .test_router import HEARTBEAT, OPT, FakeServer, V, cluster

pytestmark = pytest.mark.timeout(10)


def lane(router: Any, source: int, target: int) -> Any:
    """The client ``source -> target`` (it has both lanes)."""
    return router.factory(source).new_client(target, BasicNode())


WINDOW = AppendEntriesRequest(V, None, [Entry(LogId(1, 1), Normal(b"x"))], None)


async def test_a_heartbeat_is_an_append_entries_to_the_target_counted_and_hooked_apart() -> None:
    router, servers = cluster()
    seen: list[tuple[str, int, int]] = []
    answered: list[tuple[str, Any]] = []
    router.add_hook(lambda rpc, s, t, req: seen.append((rpc, s, t)))
    router.add_response_hook(lambda rpc, s, t, req, resp: answered.append((rpc, resp)))
    resp = await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
    assert resp == AppendEntriesResponse(V, True, None)
    assert servers[2].received == [("append_entries", HEARTBEAT)]
    assert seen == [("heartbeat", 1, 2)] and answered == [("heartbeat", resp)]
    assert router.rpc_count("heartbeat") == 1 and router.rpc_count("append_entries") == 0
    router.reset_counters()
    assert router.rpc_count("heartbeat") == 0


async def test_the_fast_path_delivers_a_heartbeat_directly_and_maps_errors() -> None:
    router, servers = cluster()
    assert router._fast
    c = lane(router, 1, 2)
    assert await c.heartbeat(HEARTBEAT, OPT) == AppendEntriesResponse(V, True, None)
    assert router.rpc_count("heartbeat", 1, 2) == 1
    servers[2].fail = KeyError("boom")
    with pytest.raises(RemoteError):
        await c.heartbeat(HEARTBEAT, OPT)
    with pytest.raises(Unreachable, match="not registered"):
        await lane(router, 1, 4).heartbeat(HEARTBEAT, OPT)


@pytest.mark.parametrize("fault", ["isolate", "partition", "cut", "one_way"])
async def test_isolations_partitions_and_cuts_cut_the_heartbeat_lane_too(fault: str) -> None:
    router, servers = cluster()
    if fault == "isolate":
        router.isolate(2)
    elif fault == "partition":
        router.partition({1}, {2, 3})
    elif fault == "cut":
        router.cut(2, 1)
    else:
        router.cut(1, 2, one_way=True)
    with pytest.raises(Unreachable):
        await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
    with pytest.raises(Unreachable):
        await lane(router, 1, 2).append_entries(HEARTBEAT, OPT)
    assert servers[2].received == []
    router.heal()
    await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
    assert router._fast


async def test_an_injected_failure_fails_one_lane_alone() -> None:
    router, servers = cluster()
    router.set_rpc_failure(2, "in", Timeout, rpc="append_entries")
    with pytest.raises(Timeout, match="injected"):
        await lane(router, 1, 2).append_entries(WINDOW, OPT)
    assert await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT) == AppendEntriesResponse(V, True, None)
    router.set_rpc_failure(2, "in", None, rpc="append_entries")
    router.set_rpc_failure(1, "out", Unreachable, rpc="heartbeat")
    with pytest.raises(Unreachable, match="heartbeat 1 -> 2: injected"):
        await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
    await lane(router, 1, 2).append_entries(WINDOW, OPT)
    assert [req for _, req in servers[2].received] == [HEARTBEAT, WINDOW]


async def test_a_heartbeat_overtakes_the_window_and_its_answer_comes_back_first() -> None:
    """The window delayed on its own (a stream behind megabytes of entries): a heartbeat sent
    after an AppendEntries reaches the target first, and its answer the sender first."""
    router, servers = cluster(seed=1)
    router.set_delay(40, 40, rpc="append_entries")
    c = lane(router, 1, 2)
    done: list[str] = []

    async def call(what: str, coro: Any) -> None:
        await coro
        done.append(what)

    window = asyncio.ensure_future(call("window", c.append_entries(WINDOW, OPT)))
    await asyncio.sleep(0)
    beat = asyncio.ensure_future(call("heartbeat", c.heartbeat(HEARTBEAT, OPT)))
    await asyncio.wait_for(asyncio.gather(window, beat), 5)
    assert [req for _, req in servers[2].received] == [HEARTBEAT, WINDOW]
    assert done == ["heartbeat", "window"]


async def test_a_lane_delay_applies_to_its_rpc_alone_until_heal() -> None:
    router, servers = cluster(seed=2)
    router.set_delay(30, 30)
    router.set_delay(0, 0, rpc="heartbeat")  # heartbeats not delayed, everything else is
    assert router._delay_of("heartbeat") is None and router._delay_of("vote") == (0.03, 0.03)
    c = lane(router, 1, 2)
    order: list[str] = []

    async def call(what: str, coro: Any) -> None:
        await coro
        order.append(what)

    await asyncio.wait_for(asyncio.gather(
        call("window", c.append_entries(WINDOW, OPT)), call("heartbeat", c.heartbeat(HEARTBEAT, OPT))), 5)
    assert order == ["heartbeat", "window"]
    router.set_delay(0, 0)  # the general delay off: the heartbeat lane keeps its own setting
    assert not router._fast and router._delay_of("append_entries") is None
    router.heal()
    assert router._fast and router._delay_of("heartbeat") is None
    with pytest.raises(ValueError, match="unknown rpc"):
        router.set_delay(1, 2, rpc="gossip")
    with pytest.raises(ValueError, match="need 0 <= min_ms <= max_ms"):
        router.set_delay(3, 2, rpc="heartbeat")
    assert router._fast


async def test_heartbeat_drops_are_drawn_per_message_and_repeat_with_the_seed() -> None:
    async def outcomes(seed: int) -> list[str]:
        router, _ = cluster(seed=seed)
        router.set_drop_rate(0.4)
        got = []
        for _ in range(40):
            try:
                await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
                got.append("ok")
            except Unreachable:
                got.append("request dropped")
            except Timeout:
                got.append("response dropped")
        return got

    a = await outcomes(5)
    assert a == await outcomes(5)
    assert {"ok", "request dropped", "response dropped"} <= set(a)


async def test_a_duplicated_heartbeat_reaches_the_target_twice() -> None:
    router, servers = cluster(seed=3)
    router.set_duplicate_rate(1.0)
    await lane(router, 1, 2).heartbeat(HEARTBEAT, OPT)
    await asyncio.wait_for(asyncio.gather(*router._dup_tasks), 5)
    assert [rpc for rpc, _ in servers[2].received] == ["append_entries", "append_entries"]


async def test_a_heartbeat_passes_through_the_wire_codec_as_an_append_entries() -> None:
    router, servers = cluster(wire=True)
    req = AppendEntriesRequest(V, LogId(1, 4), [], LogId(1, 3))
    resp = await lane(router, 1, 2).heartbeat(req, OPT)
    got = servers[2].received[0][1]
    assert got == req and got is not req  # a decoded copy
    assert resp == AppendEntriesResponse(V, True, LogId(1, 4))
    assert router.wire_messages == 2 and router.wire_errors == 0


def test_fake_server_has_no_lane_of_its_own() -> None:
    # The target side has none: a heartbeat is handled by ``append_entries``.
    assert not hasattr(FakeServer(1), "heartbeat")
