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

from openraft_py.config import Config
from openraft_py.errors import StorageError
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.network.router import Router
from openraft_py.raft import Raft
from openraft_py.storage.memory import MemLogStore, MemStateMachine
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
            # In flight when the node stopped, the write may have been appended, and committed
            # by the others: not "nothing was done". One that came once the node had stopped
            # appended nothing, and says so ("stopping": true: another node may take it).
            assert body.get("outcome_unknown") is True or (
                body.get("outcome_unknown") is False and body.get("stopping") is True), body
        assert any(body.get("outcome_unknown") is True for _, body in answers), answers  # (the first, at least)
        assert node.raft is not None and not node.raft.metrics.running
        async with c.session.get(url(node, "/kv/k0")) as r:  # a read: nothing to be unknown
            body = await r.json()
            assert r.status == 503 and body["error"].startswith("the node has stopped") and "outcome_unknown" not in body
            assert body.get("stopping") is True, body
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


class _FailingWrites:
    """A state machine's database whose writes fail once ``full`` is set, as RocksDB's do on
    a full disk; everything else goes to the real one."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.full = False

    def write(self, *args: Any) -> None:
        if self.full:
            raise Exception("IO error: No space left on device: While appending to file: sm/000009.log")
        self.db.write(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_deferred_state_machine_write_that_fails_stops_the_node_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A leader's large apply batch is written after the writes it answered
    (``WRITE_AFTER_PASSES``); that write fails (a full disk) and no write follows: the node
    stops at once with the error, logged once (``RaftStateMachine.set_fatal_handler``). It
    kept leading with the error logged, every read of the state answered 503 "the node has
    stopped" meanwhile, until the next write stopped it."""
    caplog.set_level(logging.INFO, logger="openraft_py")
    c = KvCluster()
    try:
        await c.start(1)
        node = await c.wait_leader()
        assert node.raft is not None and node.sm is not None
        # The leader's first entries (the membership, its blank) applied before the disk
        # fills: a leader is one before it commits them, and on a loaded machine their apply
        # came after (their fsync late), a small batch written at once, so its write failed
        # in ``apply`` and the node stopped before the batch below was answered.
        last = node.raft.metrics.last_log_index
        await node.raft.wait(5).applied_index_at_least(last, "the leader applied its first entries")
        db = node.sm._db = _FailingWrites(node.sm._db)  # type: ignore[assignment]
        db.full = True
        answers = await node.raft.client_write_many([b"\x00"] * 200)  # answered before its write (deferred)
        assert [a.log_id.index for a in answers] == list(range(last + 1, last + 201))
        stopped = await node.raft.wait(10).metrics(lambda m: not m.running, "the node stopped")
        assert stopped.error is not None and stopped.error.startswith("storage error while using state machine")
        assert "No space left on device" in stopped.error
        db.full = False
        await node.stop()
    finally:
        await c.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "node 1 stopped" in errors[0], errors


async def test_a_fatal_handler_that_is_a_coroutine_is_refused_before_anything_is_read() -> None:
    """``set_fatal_handler`` is a plain method: ``Raft.new`` calls it and does not await it."""

    class AsyncHandler(MemStateMachine):
        async def set_fatal_handler(self, handler: Any) -> None:
            pass

    log = MemLogStore()
    with pytest.raises(TypeError, match="set_fatal_handler must be a plain method"):
        await Raft.new(1, Config(), Router(seed=1).factory(1), log, AsyncHandler())
    assert await log.read_vote() is None
