"""The TCP server on a loop with an eager task factory (Python 3.12+,
``loop.set_task_factory(asyncio.eager_task_factory)``): a request task runs inside
``create_task`` until it first suspends, and one whose handler answers at once (a stopped
node refusing every request, or any ``RaftServer`` that does not suspend) ends there. The
server then recorded that finished task as a request in flight, for good: after
``max_inflight`` of them the connection stopped reading (every later request timed out),
and ``close()`` waited ``drain_timeout`` for requests that had been answered long before."""

from __future__ import annotations

import asyncio
import sys

import pytest

from openraft_py.types import VoteRequest

from .test_tcp import OPT, V1, _pair

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"),
]


async def test_requests_answered_at_once_do_not_stay_in_flight() -> None:
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop"):
        pytest.skip("uvloop's create_task passes asyncio.eager_task_factory an argument it does not take")
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    try:
        _, server, factory, client = await _pair(max_inflight=4, drain_timeout=5.0)
        try:
            for _ in range(10):  # more than max_inflight, one after the other
                assert (await asyncio.wait_for(client.vote(VoteRequest(V1, None), OPT), 5)).vote_granted
            assert all(not c.tasks for c in server._conns)
        finally:
            started = loop.time()
            await server.close()
            assert loop.time() - started < 2.0, "close() waited for requests already answered"
            await factory.close()
    finally:
        loop.set_task_factory(None)
