"""SIGTERM of the leader's ``serve`` process while clients write (three processes on
loopback): the stop is graceful for the clients too. Every write gets an answer (OK, or a
refusal the client retries elsewhere), none ends with an unknown outcome, every
acknowledged write is on the survivors and none the client was told failed, and the stop
takes a bounded time.

Before, the HTTP server closed its connections right after Raft stopped. Requests that had
reached the leader but were not read yet (its loop was busy) were dropped, and so was the
next request a client sent on its kept-alive connection: about one write per client ended
``info`` (the client cannot tell whether it was applied)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from openraft_py.kv.client import KvClient, Outcome
from openraft_py.kv.local_cluster import LocalCluster
from openraft_py.kv.node import SHUTDOWN_GRACE

pytestmark = pytest.mark.timeout(120)

WRITERS = 8

STOP_WITHIN = 3 * SHUTDOWN_GRACE
"""Seconds from the SIGTERM to the process's exit, at most: the drain's grace, Raft's
shutdown, the process's own exit (its clients are quick: about one grace in all)."""


async def until(cond: object, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_sigterm_of_the_leader_under_load_leaves_no_write_unknown() -> None:
    cluster = LocalCluster(3)
    outcomes: Counter[str] = Counter()
    unknown: list[str] = []
    acked: dict[str, str] = {}
    failed: list[str] = []  # writes the client was told were not done (``fail``)
    stopping = asyncio.Event()
    try:
        await cluster.start()
        await cluster.init()
        lid, _ = await cluster.wait_leader()

        async def writer(w: int) -> None:
            async with KvClient(cluster.endpoints(), deadline=10.0) as c:
                i = 0
                while not stopping.is_set():
                    key = f"w{w}-{i}"
                    i += 1
                    r = await c.put(key, key)
                    outcomes[r.outcome.value] += 1
                    if r.outcome is Outcome.OK:
                        acked[key] = key
                    elif r.outcome is Outcome.INFO:
                        unknown.append(f"{key}: {r.error}")
                    else:
                        failed.append(key)

        tasks = [asyncio.ensure_future(writer(w)) for w in range(WRITERS)]
        try:
            await until(lambda: len(acked) >= 300, 30, "writes before the stop")
            node = cluster.nodes[lid]
            assert node.proc is not None
            t0 = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(node.proc.wait, 20) == 0
            stop_took = time.monotonic() - t0
            before = len(acked)
            await until(lambda: len(acked) >= before + 300, 30, "writes through the new leader")
        finally:
            stopping.set()
            await asyncio.gather(*tasks)
        assert unknown == [], (outcomes, unknown)
        assert stop_took < STOP_WITHIN, stop_took
        # every acknowledged write is on both survivors
        survivors = [i for i in cluster.nodes if i != lid]
        new_lid, _ = await cluster.wait_leader(survivors)
        target = (await cluster.statuses([new_lid]))[new_lid]["committed_index"]

        async def applied() -> bool:
            sts = await cluster.statuses(survivors)
            return len(sts) == 2 and all(st["applied_index"] >= target for st in sts.values())

        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while not await applied():
            assert loop.time() < end, "the survivors did not apply the leader's commit index"
            await asyncio.sleep(0.05)
        async with KvClient(cluster.endpoints(survivors), deadline=10.0) as c:
            for nid in survivors:
                ep = cluster.nodes[nid].http_addr
                for key, value in acked.items():
                    r = await c.request("GET", f"/kv/{key}?consistency=local", endpoint=ep, follow=False)
                    assert r.status == 200 and r.body.decode() == value, (nid, key, r.status)
                for key in failed:  # and no write the client was told failed
                    r = await c.request("GET", f"/kv/{key}?consistency=local", endpoint=ep, follow=False)
                    assert r.status == 404, (nid, key, r.status)
    finally:
        await cluster.aclose()
