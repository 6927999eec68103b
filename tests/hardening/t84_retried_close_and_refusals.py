"""What the last stop found and left: a retried close of the log store's writer, the
give-up WARNING of an interrupted close, a read-only receiving file, and a write refused
with ``RuntimeError`` where ``ForwardToLeader`` was the answer.

- ``GroupWriter.close`` dropped the database with ``del self._db``: called again (the log
  store's close retries it after an interrupt, and an interrupt may come after that line),
  it raised ``AttributeError``, which the store's close reported as its ``StorageError``.
- ``StoreCalls.give_up`` logged its "still ran in worker threads" WARNING, then an
  interrupt (Ctrl-C while the record was written) made ``close_after_calls`` call it again,
  which logged the same WARNING a second time for the one close.
- ``check_receiving_file`` took a file opened read-only (``open(path, "rb")``: ``write``,
  ``seek`` and ``truncate`` are there, and fail): the node stopped at the first chunk with
  "writing snapshot ...: UnsupportedOperation: write", naming neither the method nor the
  contract, and the file stayed open.
- A write (or a membership change) made from inside a log read on the replication stream
  to a node every majority needs, while the leader hands leadership over to that node, was
  refused with the ``RuntimeError`` of a call that would wait for good; the leader refuses
  every write then with ``ForwardToLeader`` naming the target, at once, and so it does now.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from integration.checks import fast_config

from openraft_py import IOFlushed, Raft
from openraft_py.storage.rocks import db, group_writer
from openraft_py.storage.rocks.log_store import RocksLogStore
from openraft_py.testing.cluster import Cluster

from .rocks_close_helpers import BOUND, kv_entries, one_stuck_call
from .snapshot_only_learner import BufferReceiver, RecordingReceiver, WriteOnlyFile, installs_it, snapshot_only_learner
from .t64_plugin_tasks_call_node import READ_PROBE, REFUSED_ON_STREAM, Probe, ReaderStore

pytestmark = pytest.mark.timeout(60)


def _chain(e: BaseException | None) -> list[BaseException]:
    """``e`` and every exception it was raised from or during."""
    out: list[BaseException] = []
    while e is not None and len(out) < 10:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


# -- 1. GroupWriter.close, retried -------------------------------------------------------------


def test_a_writer_close_called_again_does_nothing(tmp_path: Path) -> None:
    store = RocksLogStore(tmp_path / "log")
    try:
        store._writer.close()
        store._writer.close()  # (AttributeError: _db)
    finally:
        store.close()
    RocksLogStore(tmp_path / "log").close()  # the lock was released


async def _failed_writer_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> RocksLogStore:
    """A log store whose writer failed a write (so its close clears that error's frames)."""
    store = RocksLogStore(path)
    real = group_writer.GroupWriter._write_group

    def failing(self: Any, group: Any, durable: bool) -> None:
        raise OSError("IO error: injected")

    monkeypatch.setattr(group_writer.GroupWriter, "_write_group", failing)
    monkeypatch.setattr(group_writer.GroupWriter, "write_now", lambda *a, **k: False)  # the thread's path
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[BaseException | None] = loop.create_future()
    await store.append(kv_entries(0, 3), IOFlushed(failed.set_result, loop))
    async with asyncio.timeout(BOUND):
        assert await failed is not None
    monkeypatch.setattr(group_writer.GroupWriter, "_write_group", real)
    return store


async def test_a_writer_close_interrupted_after_it_dropped_the_database_is_retried_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C arriving in the writer's close after it dropped the database (while it clears
    the failed write's frames): the store's close runs the writer's close once more, as it
    does after any interrupt there, then raises the interrupt. The retry raised
    ``AttributeError``, which the store's close reported as a failed close."""
    store = await _failed_writer_store(tmp_path / "log", monkeypatch)
    real_clear = group_writer.clear_frames
    interrupted: list[bool] = []

    def clear_once_interrupted(e: BaseException) -> None:
        real_clear(e)
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(group_writer, "clear_frames", clear_once_interrupted)
    with pytest.raises(KeyboardInterrupt) as ei:
        store.close()
    assert interrupted
    chain = _chain(ei.value)
    assert not [e for e in chain if isinstance(e, AttributeError)], chain
    assert not [e for e in chain[1:] if "closing log store" in str(e)], chain
    RocksLogStore(tmp_path / "log").close()  # the lock was released


# -- 2. StoreCalls.give_up's WARNING, once per close -------------------------------------------


class _InterruptFirstWarning(logging.Handler):
    """Raises ``KeyboardInterrupt`` as the first WARNING record is written (Ctrl-C while
    the record goes to a slow terminal); records after it pass."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def test_the_give_up_warning_is_logged_once_when_an_interrupt_follows_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", 0.2)
    calls = db.StoreCalls("a test store", "/nowhere", "the store is closed")
    caplog.set_level(logging.WARNING, logger=db.log.name)
    # After caplog's handler on the root logger: caplog sees the record, then this raises.
    interrupting = _InterruptFirstWarning()
    logging.getLogger().addHandler(interrupting)
    closed: list[list[BaseException]] = []
    try:
        with one_stuck_call(calls, "a stuck read"), pytest.raises(KeyboardInterrupt):
            db.close_after_calls(calls, closed.append)
    finally:
        logging.getLogger().removeHandler(interrupting)
    assert interrupting.fired
    warned = [r for r in caplog.records if "still ran in worker threads" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    # The close still reports the calls it gave up.
    assert len(closed) == 1 and len(closed[0]) == 1 and "a stuck read" in str(closed[0][0])


# -- 3. a read-only receiving file -------------------------------------------------------------


async def test_a_receiving_file_opened_read_only_is_refused_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "receiving"
    path.write_bytes(b"")
    receiver = RecordingReceiver(lambda: open(path, "rb"))  # (the node closes it)
    async with snapshot_only_learner("t84", receiver) as (leader, learner, _):
        m = await learner.wait(timeout=10).metrics(lambda m: not m.running, "n2 stopped")
        assert m.error == ("storage error while beginning to receive a snapshot: TypeError: "
                           "begin_receiving_snapshot returned a read-only file (BufferedReader), expected a "
                           "writable binary file object"), m.error
        await leader.client_write(b"y")  # the leader goes on
    assert receiver.given and all(f.closed for f in receiver.given), receiver.given


class _SaysWritable(WriteOnlyFile):
    """A duck-typed receiving file whose ``writable()`` cannot answer (not an ``io`` file):
    taken, since nothing says it is unwritable."""

    def writable(self) -> bool:
        raise NotImplementedError("cannot tell")


async def test_a_receiving_file_whose_writable_cannot_answer_is_taken() -> None:
    await installs_it("t84", BufferReceiver(_SaysWritable))


# -- 5. a write from a log read during a leader transfer ---------------------------------------


LEADER_ONLY = ("client_write", "client_write_many", "add_learner")
"""The calls of ``t64``'s ``REFUSED_ON_STREAM`` that a leader handing over refuses at once."""


@pytest.mark.parametrize("name", LEADER_ONLY)
async def test_a_write_from_a_log_read_during_a_leader_transfer_gets_forward_to_leader(name: str) -> None:
    """A two-voter leader hands over to n2 while its stream to n2 reads the log store, and
    a write (or a membership change) is made from inside that read. The leader takes no write while it hands over
    (``ForwardToLeader`` naming the target, what the engine answers at once): the write was
    refused with the ``RuntimeError`` of a call that would wait for good (it needs n2's
    acknowledgement of an entry that stream has not sent), though it would never wait."""
    READ_PROBE.clear()
    async with Cluster(fast_config(), log_store=lambda nid, disk: ReaderStore(disk, nid)) as c:
        await c.start({1, 2})
        leader = c.nodes[await c.wait_for_leader()]
        target = 2 if leader.id == 1 else 1
        await asyncio.wait_for(leader.client_write(b"warm-up"), BOUND)
        # No entry from the cache: every read of a stream goes to the reader.
        leader._core.log.cached = lambda start, stop: []  # type: ignore[method-assign]

        async def transfer_then_write(r: Raft) -> None:
            await r.trigger.transfer_leader(target)
            await REFUSED_ON_STREAM[name](r)

        probe = READ_PROBE[leader.id] = Probe(leader, transfer_then_write)
        write = asyncio.ensure_future(leader.client_write(b"trigger"))
        try:
            outcome = await probe.outcome_within()
            await asyncio.wait({write}, timeout=BOUND)  # it commits or is forwarded: it ends
            assert write.done()
        finally:
            write.cancel()
            READ_PROBE.clear()
        assert outcome.startswith("ForwardToLeader: not the leader; forward to node " + str(target)), outcome
        # The hand-over goes on once the read returned: the target leads.
        await leader.wait(timeout=BOUND).current_leader(target, "the target leads")
        assert leader.metrics.running
