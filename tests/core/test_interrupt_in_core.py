"""A ``KeyboardInterrupt`` or ``SystemExit`` raised inside the raft core's task (Ctrl-C
landing there: Python's default SIGINT handler, or asyncio.run's at a second Ctrl-C, raises
it wherever the loop's thread is; or a plug-in calling ``sys.exit()``) stops the node and
goes on out of the event loop, as asyncio lets it out of any other task. The core took it
for a failure of its own: the node stopped with ``Panicked`` ("raft core failed ... this is
a bug"), the exception went no further and the program went on running (1 of 16 real
SIGINTs to an embedding program writing in a loop landed there)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from integration.checks import fast_config

from openraft_py import BasicNode, Raft
from openraft_py.errors import Stopped
from openraft_py.network.router import Router
from openraft_py.storage import KvSet, encode_kv
from openraft_py.storage.memory import MemLogStore, MemStateMachine
from openraft_py.types import Entry

pytestmark = pytest.mark.timeout(60)


class _RaisingLog(MemLogStore):
    """Raises ``exc`` once from ``append_durable`` (called in the core's task) when armed."""

    exc: BaseException | None = None

    def append_durable(self, entries: list[Entry]) -> None:
        exc, self.exc = self.exc, None
        if exc is not None:
            raise exc
        super().append_durable(entries)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__)
def test_an_interrupt_in_the_core_task_stops_the_node_and_leaves_the_event_loop(
        exc: type[BaseException], caplog: pytest.LogCaptureFixture) -> None:
    store = _RaisingLog()
    loop = asyncio.new_event_loop()

    async def start() -> Raft:
        router = Router()
        raft = await Raft.new(1, fast_config(), router.factory(1), store, MemStateMachine())
        router.register(1, raft)
        await raft.initialize({1: BasicNode("")})
        await raft.wait(10).current_leader(1, "elected")
        return raft

    raft = loop.run_until_complete(start())
    try:
        store.exc = exc()
        write = loop.create_task(raft.client_write(encode_kv(KvSet("k", "v"))))
        caplog.set_level(logging.WARNING)
        with pytest.raises(exc):
            loop.run_until_complete(write)  # (without the fix: Panicked from the write)
        # The node stopped, as shut down: its callers get Stopped, nothing says "panicked".
        with pytest.raises(Stopped, match=f"node 1 stopped: {exc.__name__} raised in the raft core task"):
            loop.run_until_complete(asyncio.wait_for(write, 10))
        assert not raft.metrics.running
        assert not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text
    finally:
        loop.run_until_complete(raft.shutdown())
        loop.close()
