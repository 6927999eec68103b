"""A key-value node whose disk fills up under it: it stops, saying why once.

The full disk is injected (no mount): the log store's append fails as RocksDB's does on a
full disk, and closing either store fails afterwards as it does there (its flush refused).
What an operator reads: ONE ERROR naming the file and "No space left on device" (the
core's "node 1 stopped: ..."); each HTTP request answered meanwhile, and each store that
could not close, was another ERROR repeating or following from it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from openraft_py.errors import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage.rocks import RocksLogStore

from .kv_helpers import KvCluster, url

pytestmark = pytest.mark.timeout(60)

FULL = "IO error: No space left on device: While appending to file: {path}/000008.log: No space left on device"


async def test_a_leader_whose_disk_fills_stops_with_one_error(caplog: pytest.LogCaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="openraft_py")
    c = KvCluster()
    try:
        await c.start(1)
        node = await c.wait_leader()
        assert node.log_store is not None and node.sm is not None and c.session is not None
        log_path = str(node.log_store.path)

        async def append(self: RocksLogStore, entries: Any, callback: Any) -> None:
            raise Exception(FULL.format(path=log_path))  # as rocksdict raises it

        def close_fails(real: Any) -> Any:
            async def aclose(self: Any) -> None:
                await real(self)  # closed all the same (as the stores do when their flush fails)
                raise StorageError(f"closing {type(self).__name__}", Exception("IO error: Writer has previous error."))

            return aclose

        monkeypatch.setattr(RocksLogStore, "append", append)
        monkeypatch.setattr(RocksLogStore, "aclose", close_fails(RocksLogStore.aclose))
        monkeypatch.setattr(RocksStateMachine, "aclose", close_fails(RocksStateMachine.aclose))

        async def put(i: int) -> tuple[int, dict[str, Any]]:
            assert c.session is not None
            async with c.session.put(url(node, f"/kv/k{i}"), data=b"v") as r:
                return r.status, await r.json()

        answers = await asyncio.wait_for(asyncio.gather(*(put(i) for i in range(8))), 20)
        for status, body in answers:
            assert status == 503 and body["error"].startswith("the node has stopped: StorageError"), (status, body)
            # The write may have been appended, and committed by the others: not "nothing was done".
            assert body.get("outcome_unknown") is True, body
        assert node.raft is not None and not node.raft.metrics.running
        async with c.session.get(url(node, "/kv/k0")) as r:  # a read: nothing to be unknown
            body = await r.json()
            assert r.status == 503 and body["error"].startswith("the node has stopped") and "outcome_unknown" not in body
        await node.stop()
    finally:
        await c.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "node 1 stopped" in errors[0] and "No space left on device" in errors[0] and log_path in errors[0], errors
    closes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "failed too" in r.getMessage()]
    assert len(closes) == 2, closes  # the log store's and the state machine's, at WARNING
    answered = [r for r in caplog.records if r.name == "openraft_py.kv.http_api" and "answered 503" in r.getMessage()]
    assert answered and all(r.levelno == logging.INFO for r in answered)
