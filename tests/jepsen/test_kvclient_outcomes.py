"""How the Jepsen-style tester's one-call client (``testing/jepsen/kvclient.KvHttp``) classes a
write's 503: ``fail`` when the body says nothing was done (the redirect rule's ``leader_id``,
``"outcome_unknown": false``, a stopping node's ``"stopping": true``), ``info`` otherwise.
Before, only the redirect rule's body was a ``fail``: a 503 saying ``"outcome_unknown":
false`` (with ``"stopping": true`` or not) was recorded ``info``, which forks the client's
process in the history and leaves the checker an operation that may land at any time."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from openraft_py.testing.jepsen.kvclient import KvHttp

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("body", "kind"), [
    ({"error": "ServiceUnavailable: node 1 is stopping: ...; nothing was done", "outcome_unknown": False,
      "stopping": True}, "fail"),
    ({"error": "ServiceUnavailable: resolving 'x.example' took more than 5.0s: nothing was done",
      "outcome_unknown": False}, "fail"),
    ({"error": "the node is stopping", "stopping": True}, "fail"),
    ({"error": "the node is stopping", "leader_id": 2, "stopping": True}, "fail"),
    ({"error": "no leader is known; retry later", "leader_id": None}, "fail"),
    ({"error": "the node has stopped: Stopped", "outcome_unknown": True}, "info"),
    ({"error": "x", "outcome_unknown": True, "stopping": True}, "info"),
    ({"error": "x", "outcome_unknown": 1, "leader_id": 2}, "info"),
    ({"error": "x", "stopping": "yes"}, "info"),
    ({"error": "QuorumNotEnough: ..."}, "info"),
], ids=["stopping_nothing_done", "nothing_done", "stopping", "stopping_with_leader", "no_leader",
        "stopped_unknown", "unknown_and_stopping", "unknown_not_a_bool", "stopping_not_a_bool", "plain"])
async def test_a_write_s_503_is_fail_only_when_it_says_nothing_was_done(body: dict[str, Any], kind: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(body, status=503)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        addr = f"127.0.0.1:{runner.addresses[0][1]}"
        async with KvHttp(timeout=5.0) as http:
            for out in (await http.put(addr, "k", "v"), await http.delete(addr, "k"),
                        await http.cas(addr, "k", None, "v")):
                assert out.kind == kind and out.error.startswith("503 "), (out, body)
    finally:
        await runner.cleanup()
