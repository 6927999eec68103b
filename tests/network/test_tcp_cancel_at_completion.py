"""A caller cancelled in the loop turn that its connect or name resolution completes is
cancelled. Python 3.11's ``asyncio.wait_for`` returned the completed result instead and
dropped the cancellation: a replication task stopped at a leader's step-down, or a call
given up by its caller, went on with the new connection.

Every async test runs on asyncio and on uvloop (tests/network/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.types import BasicNode

pytestmark = pytest.mark.timeout(30)


async def _cancelled_as_it_completes(fut: asyncio.Future[Any], call: Any, result: Any) -> None:
    """Run ``call`` until it waits on ``fut``; then complete ``fut`` and cancel the caller
    in the same loop turn: the caller must end cancelled."""
    task = asyncio.ensure_future(call)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(result)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)  # (the test's own bound; the task is not cancelled by it)


@contextlib.asynccontextmanager
async def _peer(addr: str) -> AsyncIterator[Any]:
    """The TCP client's peer state for node 2 at ``addr`` (nothing connected); the factory
    is closed on the way out."""
    factory = TcpNetworkFactory(1, "c")
    factory.new_client(2, BasicNode(addr))
    try:
        yield factory._peers[2]
    finally:
        await factory.close()


async def test_a_connect_completing_as_its_caller_is_cancelled() -> None:
    loop = asyncio.get_running_loop()
    async with _peer("127.0.0.1:1") as peer:
        peer.connecting = loop.create_future()  # a connect in progress, as _start_connect makes
        try:
            await _cancelled_as_it_completes(peer.connecting, peer._connect(loop.time() + 10), object())
        finally:
            peer.connecting = None


async def test_a_name_resolving_as_its_caller_is_cancelled() -> None:
    loop = asyncio.get_running_loop()
    async with _peer("node-2.invalid:1") as peer:
        fut: asyncio.Future[list[tuple[int, str]]] = loop.create_future()
        peer.resolving = fut  # a resolution in progress
        try:
            call = peer._addresses("node-2.invalid", 1, loop.time() + 10)
            await _cancelled_as_it_completes(fut, call, [(socket.AF_INET, "127.0.0.1")])
        finally:
            peer.resolving = None
