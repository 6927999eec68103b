"""Resource growth over many in-process lifecycles of the key-value service's node (a test
suite, or a program embedding ``KvNode``, that starts and stops thousands of them): a stopped
node must not stay reachable from anything module-level.

aiohttp's ``_cached_build_middleware`` (an ``lru_cache`` of 1024 entries in
``aiohttp.web_app``) keeps every application that served a request, one entry per route
used. The application referred to its ``KvNode`` (``app[NODE_KEY]``) strongly, so every
stopped node that had served a request stayed in memory with its Raft core, its metrics
registry and its server objects, until 1024 entries were reached (some 440 Python objects
and 0.4 MiB per node that served four routes, so a test suite held up to about 100 MiB of
stopped nodes)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from openraft_py.kv import node as kv_node
from openraft_py.kv.http_api import NODE_KEY

from .kv_helpers import KvCluster, url

pytestmark = pytest.mark.timeout(60)

CYCLES = 3


async def still_reachable(refs: list[weakref.ref[object]], within: float = 5.0) -> list[object]:
    """The objects of ``refs`` still alive after collections over up to ``within`` seconds
    (at once when none is): a stop's last job in a thread (a store's close) has resolved the
    stop's future a moment before its executor thread drops the job, whose arguments lead to
    the node, so a collection right after ``stop()`` returned could find it (a loaded machine,
    about 1 run in 6)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        gc.collect()
        alive = [o for o in (r() for r in refs) if o is not None]
        if not alive or loop.time() > deadline:
            return alive
        del alive
        await asyncio.sleep(0.01)


async def test_stopped_nodes_that_served_requests_are_freed() -> None:
    gone: list[weakref.ref[object]] = []
    for _ in range(CYCLES):
        c = KvCluster()
        try:
            node = await c.start_node(1)
            await c.start(0, init=False)  # (the session only)
            assert c.session is not None
            for path in ("/cluster/status", "/metrics", "/kv/k?consistency=local"):
                async with c.session.get(url(node, path)) as r:
                    await r.read()
                    assert r.status in (200, 404, 503), (path, r.status)
            gone.append(weakref.ref(node))
        finally:
            await c.close()
        del node, c
    alive = await still_reachable(gone)
    assert not alive, f"{len(alive)} of {CYCLES} stopped nodes are still reachable: {gc.get_referrers(alive[0])!r:.300}"


async def test_the_application_serves_its_node_while_it_runs() -> None:
    # The application's NODE_KEY refers to the node weakly: a running node is kept alive by
    # its own tasks, and NODE_KEY still gives its attributes.
    c = KvCluster()
    try:
        node = await c.start_node(1)
        http = node._http
        assert http is not None
        served = http.app[NODE_KEY]
        assert served.id == node.id and served.opts is node.opts
    finally:
        await c.close()


async def test_a_running_node_its_caller_dropped_still_serves_then_is_freed_by_its_stop() -> None:
    # The application holds its node weakly, so what keeps a running node must not be its
    # caller: the node module holds it from start() until stop() ends.
    c = KvCluster()
    try:
        node = await c.start_node(1)
        await c.start(0, init=False)  # (the session only)
        assert c.session is not None
        ref = weakref.ref(node)
        status_url = url(node, "/cluster/status")
        c.nodes.clear()
        del node
        gc.collect()
        running = ref()
        assert running is not None, "a running node was freed when its caller dropped it"
        assert running in kv_node._RUNNING
        del running
        async with c.session.get(status_url) as r:
            assert r.status == 200, await r.text()
        running = ref()
        assert running is not None
        await running.stop()
        assert running not in kv_node._RUNNING
        del running
        assert not await still_reachable([ref]), "a stopped node is still reachable"
    finally:
        await c.close()
