"""The bounds of ``KvNode._check_resolve`` (the raft host names ``init`` and ``add_learner``
resolve first): what a stop in the middle of resolutions leaves behind."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from openraft_py.kv import node as node_module

from .kv_helpers import KvCluster, until_true, url

pytestmark = pytest.mark.timeout(20)


async def test_a_stop_during_resolutions_starts_no_more_and_the_request_ends_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``init`` naming more hosts than ``MAX_RESOLVING`` whose resolver hangs, and the
    node stopped meanwhile: ``stop`` cancelled the resolutions running, which freed their
    slots, and the names waiting for one were resolved then, each in a new thread, after
    the stop had begun (with a resolver that hangs, ``MAX_RESOLVING`` more threads held for
    its whole timeout), and the request waited out ``RESOLVE_TIMEOUT`` before its 503. Now
    no resolution starts once the stop began, and the request answers 503 at once."""
    started: list[str] = []

    async def hangs(host: str, port: int) -> list[tuple[int, str]]:
        started.append(host)
        await asyncio.Event().wait()  # (a resolver that never answers)
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(node_module, "resolve", hangs)
    monkeypatch.setattr(node_module, "RESOLVE_TIMEOUT", 12.0)
    c = KvCluster()
    try:
        await c.start(1, init=False)
        n1 = c.nodes[1]
        assert c.session is not None
        members = {"1": {"raft_addr": n1.opts.raft_addr, "http_addr": n1.opts.http_addr}}
        for i in range(2, 2 + 3 * node_module.MAX_RESOLVING):
            members[str(i)] = {"raft_addr": f"n{i}.example:{20000 + i}", "http_addr": f"127.0.0.1:{21000 + i}"}

        async def init() -> tuple[int, str]:
            async with c.session.post(url(n1, "/cluster/init"), json={"members": members}) as r:  # type: ignore[union-attr]
                return r.status, await r.text()

        request = asyncio.ensure_future(init())
        await until_true("the slots are taken", lambda: len(started) == node_module.MAX_RESOLVING, timeout=5)
        t0 = time.monotonic()
        await asyncio.wait_for(n1.stop(), 10)
        try:
            status, text = await asyncio.wait_for(request, 5)
        except (aiohttp.ClientError, TimeoutError) as e:
            status, text = -1, f"(no answer: {e!r})"
        took = time.monotonic() - t0
        assert len(started) == node_module.MAX_RESOLVING, f"{len(started) - node_module.MAX_RESOLVING} resolutions " \
                                                          "started after the stop began"
        assert not n1._resolving, n1._resolving
        assert took < 5, f"the stop and the request took {took:.1f}s (status {status}: {text})"
        assert status == 503 and "node 1 is stopping" in text and "nothing was done" in text, (status, text)
    finally:
        await c.close()
