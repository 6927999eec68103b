"""A user plug-in that breaks its contract: the node that runs it reports a clear error (and
stops if its own state machine or storage failed), no other node stops, no caller waits
forever, and no acknowledged write is lost.

- A state machine whose ``apply`` returns something other than a list of one response per
  entry (``None`` from a forgotten ``return``): the node stops with ``StorageError`` saying
  what ``apply`` returned, and its waiting writers get that error (they used to wait
  forever: ``None`` was taken for "no responses").
- A snapshot builder that returns something other than a ``Snapshot``: its node stops with
  ``StorageError`` naming the method and what it returned (it was ``Panicked`` with an
  ``AttributeError`` about ``.data``); the other nodes go on.
- A ``get_current_snapshot`` whose ``data`` a leader cannot send (bytes rather than a file, a
  text-mode file, a file whose read fails): the leader stops with ``StorageError`` naming
  the problem (``Panicked`` with an ``AttributeError``, or, for a text file, every follower
  refused every resend and the learner never caught up).
- A network client whose RPC returns something other than its response type (``None``, a
  ``dict``), or whose ``install_snapshot`` raises an exception that is not an ``RPCError``:
  the call counts as failed (a warning names what came back) and is retried as a lost one
  is; the node keeps running. (A wrong vote or AppendEntries response, or an odd
  exception from ``install_snapshot``, used to stop the node with ``Panicked``.)
- A network client whose call raises ``CancelledError`` though its task is not being
  cancelled (a future the network cancelled on a lost connection): the call counts as
  failed and is retried (the request stayed in flight for good: the follower, or a learner
  being sent a snapshot, was sent nothing more).
- A log store call that raises ``CancelledError`` on its own (``append``, ``save_committed``,
  ``save_vote``): its node stops with ``StorageError`` naming the call (it stopped as if
  shut down, with no error; a vote write's left the node waiting for the vote for good).
- A network factory whose ``new_client`` raises for an address it cannot use (given to
  ``add_learner``): that target is unreachable, the leader goes on (it stopped with
  ``Panicked``, in the core's pass).
- A network client whose ``append_entries`` never returns (no timeout of its own): the
  call is given up after twice ``option.hard_ttl`` and the request resent; the follower
  catches up (it used to stay behind for good: the request stayed in flight).
- A store whose ``read_vote``, ``read_committed``, ``get_log_state`` or ``applied_state``
  returns a value of another type: ``Raft.new`` raises ``StorageError`` naming the method
  and the value (a tuple for a vote failed with a bare ``AttributeError``; an int for the
  committed id was silently dropped on an empty log).
- A network client whose ``vote`` (or ``transfer_leader``) never returns: the call is
  given up after two of the longest election timeouts (it used to stay, one task per
  election, for good).
- A state machine whose ``apply`` changes the list of entries it was given (consumes it with
  ``pop(0)``, clears or reverses it once done): the node read that list after the call, so it
  stopped with "apply returned 22 responses for 0 entries", or, for a reversed list, took the
  batch's first entry for its last and applied nothing more, every node of the cluster with
  it and no error said. ``apply`` now gets a list of its own.
- A log store whose reads return other entries than asked for (reversed, repeated, shifted
  by one, not ``Entry`` objects): the node refuses to start with a ``StorageError`` naming
  the index, and its log is untouched (a shifted read made the boot repair discard the whole
  log; a repeated one left the node stalled without an error).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from integration.checks import check_applied_prefix, check_log_matching, fast_config

from openraft_py import BasicNode, SnapshotPolicy, StorageError
from openraft_py.network.router import RouterClient, RouterFactory
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.types import AppendEntriesRequest, Entry, RPCOption, ServerState

pytestmark = pytest.mark.timeout(30)

# Generous: a call answered "promptly" returns within this many seconds.
BOUND = 2.0


class ForgetsReturn(MemStateMachine):
    """A ``MemStateMachine`` whose ``apply`` returns ``None`` once ``broken`` is set."""

    broken = False

    async def apply(self, entries: list[Entry]) -> Any:
        out = await super().apply(entries)
        return None if ForgetsReturn.broken else out


async def test_apply_returning_none_fails_the_writer_with_a_clear_error() -> None:
    ForgetsReturn.broken = False

    def sm(disk: MemDisk) -> ForgetsReturn:
        return ForgetsReturn(disk)

    # One leader throughout (``STEADY``), and ``apply`` breaks on every node (a class flag)
    # only once every node applied what came before: a follower that still had entries to
    # apply stopped on them, and once both had, before either took the next write, that
    # write never committed and its caller waited (TimeoutError, seen at load 15 on 2 cores).
    async with Cluster(fast_config(**STEADY), seed=5, state_machine=sm) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        before = await asyncio.wait_for(raft.client_write(b"before"), BOUND)
        await c.wait_applied(before.log_id.index, timeout=BOUND)
        ForgetsReturn.broken = True
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(raft.client_write(b"lost answer"), BOUND)
        assert "state machine apply returned NoneType None" in str(info.value)
        assert "expected a list of one response per entry" in str(info.value)
        assert raft.metrics.running is False
        assert "apply returned NoneType" in (raft.metrics.error or "")


class Garble:
    """What the broken clients do while ``rpc`` is set: each call of that RPC from a node of
    ``sources`` is delivered, then its response replaced by ``answer()`` (a wrong value);
    with ``raises``, not delivered and ``raises`` is raised. ``bad`` counts those calls."""

    def __init__(self) -> None:
        self.rpc: str | None = None
        self.sources: set[int] = set()
        self.answer: Callable[[], Any] = lambda: None
        self.raises: BaseException | None = None
        self.bad = 0

    def hits(self, rpc: str, source: int) -> bool:
        return self.rpc == rpc and source in self.sources

    async def wrong(self, rpc: str, source: int, call: Callable[[], Any]) -> Any:
        """``call()`` (the real RPC), garbled when it should be."""
        if not self.hits(rpc, source):
            return await call()
        self.bad += 1
        if self.raises is not None:
            raise self.raises
        await call()
        return self.answer()


class BrokenClient:
    """A ``RouterClient`` whose calls go through ``Garble``. ``path`` says how a leader hands
    over AppendEntries: ``"task"`` (``append_entries`` only), ``"send_now"`` (the optional
    ``send_append_entries``) or ``"submit"`` (the optional ``submit_append_entries``)."""

    def __init__(self, inner: RouterClient, garble: Garble, path: str) -> None:
        self.inner = inner
        self.garble = garble
        self.source = inner.source
        if path == "send_now":
            self.send_append_entries = self._send_now
        elif path == "submit":
            self.submit_append_entries = self._submit

    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption) -> Any:
        return await self.garble.wrong("append_entries", self.source, lambda: self.inner.append_entries(req, option))

    def _send_now(self, req: AppendEntriesRequest, option: RPCOption) -> Any:
        return self.append_entries(req, option)

    def _submit(self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]) -> Any:
        async def run() -> None:
            try:
                resp = await self.append_entries(req, option)
            except BaseException as e:  # noqa: BLE001 - handed to reply, as a network does
                reply(e)
                return
            reply(resp)

        return asyncio.ensure_future(run())

    async def vote(self, req: Any, option: RPCOption) -> Any:
        return await self.garble.wrong("vote", self.source, lambda: self.inner.vote(req, option))

    async def install_snapshot(self, req: Any, option: RPCOption) -> Any:
        return await self.garble.wrong("install_snapshot", self.source, lambda: self.inner.install_snapshot(req, option))

    async def transfer_leader(self, req: Any, option: RPCOption) -> Any:
        return await self.inner.transfer_leader(req, option)


def broken_network(c: Cluster, garble: Garble, path: str = "task", client: type[BrokenClient] = BrokenClient) -> None:
    """Give every node of ``c`` started from now on clients of class ``client`` that go
    through ``garble``."""
    factory = c.router.factory

    class Factory:
        def __init__(self, inner: RouterFactory) -> None:
            self.inner = inner

        def new_client(self, target: int, node: BasicNode) -> BrokenClient:
            return client(self.inner.new_client(target, node), garble, path)

    c.router.factory = lambda source: Factory(factory(source))  # type: ignore[assignment, return-value]


async def until(cond: Callable[[], bool], what: str) -> None:
    """Wait (polling) until ``cond()`` holds, at most ``BOUND`` seconds."""
    async with asyncio.timeout(BOUND):
        while not cond():
            await asyncio.sleep(0.005)
    assert cond(), what


def all_running(c: Cluster) -> None:
    for nid, raft in c.nodes.items():
        assert raft.metrics.running, f"n{nid} stopped: {raft.metrics.error}"


WRONG: dict[str, Callable[[], Any]] = {"None": lambda: None, "dict": lambda: {"success": True}}


STEADY: dict[str, Any] = dict(election_timeout_min=300, election_timeout_max=600)
"""Election timeouts for a test that needs one leader throughout (``fast_config``'s 50-100 ms
passed now and then without a heartbeat on a loaded machine, and a write or a membership
change sent to the leader failed with ``ForwardToLeader``: seen at load 13 on 2 cores). No
slower to start: the initialized node campaigns at once."""


@pytest.mark.parametrize("wrong", sorted(WRONG))
@pytest.mark.parametrize("path", ["task", "send_now", "submit"])
async def test_a_wrong_append_entries_response_does_not_stop_the_leader(path: str, wrong: str) -> None:
    garble = Garble()
    async with Cluster(fast_config(**STEADY), seed=11) as c:
        broken_network(c, garble, path)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"before"), BOUND)
        garble.rpc, garble.sources, garble.answer = "append_entries", {leader}, WRONG[wrong]
        pending = asyncio.ensure_future(raft.client_write(b"while garbled"))
        await until(lambda: garble.bad >= 6, "the leader sent AppendEntries")
        all_running(c)
        assert not pending.done()  # not acknowledged: no follower's answer was read
        garble.rpc = None
        resp = await asyncio.wait_for(pending, BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        check_log_matching(c.disks)
        check_applied_prefix(c.disks)


class FailsToOneTarget(BrokenClient):
    """Its ``append_entries`` to ``FailsToOneTarget.target`` goes through ``Garble`` (raises
    what it is given); the calls to the other targets are delivered."""

    target = 0

    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption) -> Any:
        if self.inner.target != FailsToOneTarget.target:
            return await self.inner.append_entries(req, option)
        return await super().append_entries(req, option)


@pytest.mark.parametrize("path", ["task", "send_now", "submit"])
async def test_a_network_that_keeps_raising_os_error_is_warned_of_once_per_interval(
    path: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that raises ``ConnectionRefusedError`` (an ``OSError``, not ``Unreachable``)
    for a follower that is down: each call fails and is retried after a heartbeat interval,
    the leader goes on, and the failure is logged at WARNING naming the follower once per
    ``BROKEN_NETWORK_WARN_MS``, the next line counting the calls in between.
    It logged a WARNING for every call: 20 a second with the default config."""
    from openraft_py.core import replication

    monkeypatch.setattr(replication, "BROKEN_NETWORK_WARN_MS", 300.0)
    caplog.set_level(logging.DEBUG, logger="openraft_py.replication")
    garble = Garble()
    async with Cluster(fast_config(), seed=14) as c:
        broken_network(c, garble, path, FailsToOneTarget)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"before"), BOUND)
        down = FailsToOneTarget.target = min(n for n in c.nodes if n != leader)
        garble.rpc, garble.sources = "append_entries", {leader}
        garble.raises = ConnectionRefusedError(111, "Connection refused")

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and f"replication {leader}->{down}: " in r.getMessage()]

        await until(lambda: len(warnings()) >= 2, "a second warning, once the interval passed")
        first, second = warnings()[:2]
        assert first.startswith(f"replication {leader}->{down}: the network raised ConnectionRefusedError(111, "
                                f"'Connection refused') (expected an RPCError) (1 failed call in "), first
        m = re.search(r", (\d+) since the last report\)$", second)
        assert second.startswith(f"replication {leader}->{down}: still failing: the network raised "), second
        assert m is not None, second
        assert int(m.group(1)) >= 5  # retried, every heartbeat interval (15 ms), without a warning each
        assert garble.bad >= 1 + int(m.group(1))  # every call failed: one warned of, then the count
        resp = await asyncio.wait_for(raft.client_write(b"while one is down"), BOUND)  # a quorum of two
        all_running(c)
        garble.rpc = None
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


async def test_a_network_whose_vote_keeps_raising_os_error_is_warned_of_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate whose vote calls raise ``ConnectionRefusedError`` logs it at WARNING
    naming the voter once per ``BROKEN_NETWORK_WARN_MS``, the next line counting the calls in
    between (it warned at every campaign); it elects a leader once the calls go through."""
    from openraft_py.core import replication

    monkeypatch.setattr(replication, "BROKEN_NETWORK_WARN_MS", 300.0)
    caplog.set_level(logging.DEBUG, logger="openraft_py.core")
    garble = Garble()
    garble.rpc, garble.sources = "vote", {1, 2, 3}
    garble.raises = ConnectionRefusedError(111, "Connection refused")
    async with Cluster(fast_config(), seed=16) as c:
        broken_network(c, garble)
        await c.start({1, 2, 3})

        def warned() -> dict[tuple[int, int], list[str]]:
            out: dict[tuple[int, int], list[str]] = {}
            for r in caplog.records:
                m = re.match(r"node (\d+): vote request to (\d+): (still failing: )?the network raised "
                             r"ConnectionRefusedError", r.getMessage())
                if m and r.levelno == logging.WARNING:
                    out.setdefault((int(m[1]), int(m[2])), []).append(r.getMessage())
            return out

        await until(lambda: any(len(v) >= 2 for v in warned().values()), "a second warning, once the interval passed")
        (source, target), lines = next((k, v) for k, v in warned().items() if len(v) >= 2)
        assert lines[0].startswith(f"node {source}: vote request to {target}: the network raised ConnectionRefusedError("
                                   f"111, 'Connection refused') (expected an RPCError) (1 failed call in "), lines[0]
        m = re.search(r", (\d+) since the last report\)$", lines[1])
        assert m is not None and int(m.group(1)) >= 1, lines[1]
        all_running(c)
        assert c.leader() is None
        garble.rpc = None
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"x"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


class AsyncSubmit(BrokenClient):
    """Its optional ``submit_append_entries`` is ``async def`` (the contract: a plain method
    that hands the request over and returns a handle or ``None``)."""

    def __init__(self, inner: RouterClient, garble: Garble, path: str) -> None:
        super().__init__(inner, garble, "task")

    async def submit_append_entries(self, req: AppendEntriesRequest, option: RPCOption, reply: Callable[[Any], None]) -> None:
        try:
            reply(await self.inner.append_entries(req, option))
        except Exception as e:  # noqa: BLE001 - handed to reply, as a network does
            reply(e)


async def test_an_async_submit_append_entries_is_not_used_and_the_leader_goes_on() -> None:
    """It returned an unstarted coroutine, taken for the handle: nothing was sent, and the
    leader stopped at once ("'coroutine' object has no attribute 'cancel'") when its channel
    stopped. Now it is not used: ``append_entries`` carries the requests."""
    async with Cluster(fast_config(), seed=15) as c:
        broken_network(c, Garble(), "task", AsyncSubmit)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        for i in range(5):
            resp = await asyncio.wait_for(c.nodes[leader].client_write(b"%d" % i), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        await c.nodes[leader].trigger.transfer_leader(min(n for n in c.nodes if n != leader))  # the channels stop
        new = await c.wait_for_leader(among={n for n in c.nodes if n != leader})
        resp = await asyncio.wait_for(c.nodes[new].client_write(b"after"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


@pytest.mark.parametrize("wrong", sorted(WRONG))
async def test_a_wrong_vote_response_does_not_stop_the_candidate(wrong: str) -> None:
    garble = Garble()
    garble.rpc, garble.sources, garble.answer = "vote", {1, 2, 3}, WRONG[wrong]
    async with Cluster(fast_config(), seed=12) as c:
        broken_network(c, garble)
        await c.start({1, 2, 3})
        await until(lambda: garble.bad >= 6, "the nodes campaigned")
        all_running(c)
        assert c.leader() is None  # no vote was counted
        garble.rpc = None
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"x"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


def purging_config() -> Any:
    """A snapshot every 10 entries, the log purged up to it at once: a new learner must be
    sent a snapshot. One leader throughout (``STEADY``)."""
    return fast_config(
        snapshot_policy=SnapshotPolicy.logs_since_last(10), max_in_snapshot_log_to_keep=0, purge_batch_size=1,
        **STEADY,
    )


async def started_with_purged_log(c: Cluster) -> tuple[int, Any, Any]:
    """Start nodes 1-3 of ``c`` (made with ``purging_config``), write 30 entries and wait
    until the leader purged its log past 10. Returns the leader's id, its ``Raft`` and the
    last write's response."""
    await c.start({1, 2, 3})
    leader = await c.wait_for_leader()
    raft = c.nodes[leader]
    for i in range(30):
        resp = await asyncio.wait_for(raft.client_write(b"%d" % i), BOUND)
    await raft.wait(BOUND).purged(10)
    return leader, raft, resp


@pytest.mark.parametrize("wrong", ["None", "KeyError"])
async def test_a_broken_install_snapshot_call_does_not_stop_the_leader(wrong: str) -> None:
    garble = Garble()
    config = purging_config()
    async with Cluster(config, seed=13) as c:
        broken_network(c, garble)
        leader, raft, resp = await started_with_purged_log(c)
        garble.rpc, garble.sources = "install_snapshot", {leader}
        if wrong == "KeyError":
            garble.raises = KeyError("not an RPCError")
        await c.add_node(4)
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode(""), blocking=True))
        await until(lambda: garble.bad >= 2, "the leader sent the snapshot")
        all_running(c)
        assert not adding.done()
        garble.rpc = None
        await asyncio.wait_for(adding, BOUND * 2)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        check_applied_prefix(c.disks)


class MisreadingReader:
    """A log reader whose answers are rewritten by ``MisreadingStore.how`` once it is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def read_vote(self) -> Any:
        return await self.inner.read_vote()

    async def try_get_log_entries(self, start: int, stop: int) -> list[Any]:
        out: list[Any] = await self.inner.try_get_log_entries(start, stop)
        how = MisreadingStore.how
        if how is None or not out:
            return out
        if how == "reversed":
            return out[::-1]
        if how == "repeated":
            return [out[0]] * len(out)
        if how == "shifted":  # off by one: [start - 1, stop - 1)
            return await self.inner.try_get_log_entries(start - 1, stop - 1) if start > 0 else out
        return [(e.log_id, e.payload) for e in out]  # "tuples"


class MisreadingStore(MemLogStore):
    how: str | None = None

    def get_log_reader(self) -> Any:
        return MisreadingReader(super().get_log_reader())


@pytest.mark.parametrize("how", ["reversed", "repeated", "shifted", "tuples"])
async def test_a_log_store_that_returns_other_entries_is_refused_at_start(how: str) -> None:
    MisreadingStore.how = None
    async with Cluster(fast_config(), seed=21, log_store=lambda nid, disk: MisreadingStore(disk)) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        for i in range(20):
            resp = await asyncio.wait_for(c.nodes[leader].client_write(b"%d" % i), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        follower = min(n for n in c.nodes if n != leader)
        await c.crash(follower)
        disk = c.disks[follower]
        held = (disk.offset, list(disk.entries))
        MisreadingStore.how = how
        try:
            with pytest.raises(StorageError, match=r"reading log \[\d+, \d+\): the log store returned"):
                await c.add_node(follower)
        finally:
            MisreadingStore.how = None
        assert (disk.offset, disk.entries) == held  # nothing discarded
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        await c.add_node(follower)  # a store that reads correctly again: it rejoins
        await c.wait_applied(resp.log_id.index, timeout=BOUND)


class HangsOnce(BrokenClient):
    """``append_entries`` with entries to ``target`` never returns, once, while ``armed``."""

    armed = False
    target = 0

    async def append_entries(self, req: AppendEntriesRequest, option: RPCOption) -> Any:
        if HangsOnce.armed and req.entries and self.inner.target == HangsOnce.target:
            HangsOnce.armed = False
            await asyncio.Event().wait()  # never set: no answer, and no Timeout either
        return await self.inner.append_entries(req, option)


async def test_an_append_entries_call_that_never_returns_is_given_up() -> None:
    async with Cluster(fast_config(), seed=31) as c:
        broken_network(c, Garble(), "task", HangsOnce)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await c.wait_applied(0, timeout=BOUND)
        HangsOnce.target = min(n for n in c.nodes if n != leader)
        HangsOnce.armed = True
        for i in range(10):
            resp = await asyncio.wait_for(c.nodes[leader].client_write(b"%d" % i), BOUND)
        assert not HangsOnce.armed  # one call hangs
        await c.wait_applied(resp.log_id.index, timeout=BOUND)  # and the follower caught up
        all_running(c)
        check_log_matching(c.disks)


class BadBuilder:
    def __init__(self, value: Any) -> None:
        self.value = value

    async def build_snapshot(self) -> Any:
        return self.value


class BuildsGarbage(MemStateMachine):
    garbage: Any = None

    def get_snapshot_builder(self) -> Any:
        return BadBuilder(BuildsGarbage.garbage)


@pytest.mark.parametrize("garbage", [None, b"snapshot", "meta-less"], ids=["None", "bytes", "no-meta"])
async def test_a_snapshot_builder_that_returns_no_snapshot_stops_only_its_node(garbage: Any) -> None:
    from openraft_py.types import Snapshot

    BuildsGarbage.garbage = Snapshot(None, io.BytesIO()) if garbage == "meta-less" else garbage  # type: ignore[arg-type]
    async with Cluster(fast_config(**STEADY), seed=41, state_machine=BuildsGarbage) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        follower = min(n for n in c.nodes if n != leader)
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"x"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        raft = c.nodes[follower]
        await raft.trigger.snapshot()
        with pytest.raises(StorageError) as info:
            await raft.wait(BOUND).snapshot(resp.log_id)
        assert "SnapshotBuilder.build_snapshot returned" in str(info.value)
        assert "expected a Snapshot" in str(info.value)
        c.router.unregister(follower)
        c.nodes.pop(follower)
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"y"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        await raft.shutdown()


class OddBootStore(MemLogStore):
    """Returns ``OddBootStore.odd[name]`` from the method ``name`` when it is set."""

    odd: ClassVar[dict[str, Any]] = {}

    async def read_vote(self) -> Any:
        return self.odd["read_vote"] if "read_vote" in self.odd else await super().read_vote()

    async def read_committed(self) -> Any:
        return self.odd["read_committed"] if "read_committed" in self.odd else await super().read_committed()

    async def get_log_state(self) -> Any:
        return self.odd["get_log_state"] if "get_log_state" in self.odd else await super().get_log_state()


class OddBootStateMachine(MemStateMachine):
    async def applied_state(self) -> Any:
        odd = OddBootStore.odd
        return odd["applied_state"] if "applied_state" in odd else await super().applied_state()


@pytest.mark.parametrize(
    ("method", "value", "expected"),
    [
        ("read_vote", (1, 2), "a Vote or None"),
        ("read_committed", 5, "a LogId or None"),
        ("get_log_state", (None, None), "a LogState"),
        ("applied_state", None, "a (LogId or None, StoredMembership) pair"),
        ("applied_state", ((1, 5), None), "a LogId or None"),
        ("applied_state", (None, "members"), "a StoredMembership"),
    ],
)
async def test_a_store_value_of_another_type_is_refused_at_start(method: str, value: Any, expected: str) -> None:
    from openraft_py import Config, Raft
    from openraft_py.network.router import Router

    disk = MemDisk()
    OddBootStore.odd = {method: value}
    try:
        with pytest.raises(StorageError, match=rf"{method}.* returned .*, expected {re.escape(expected)}"):
            await Raft.new(1, Config(), Router().factory(1), OddBootStore(disk), OddBootStateMachine(disk))
    finally:
        OddBootStore.odd = {}


class PicksyFactory:
    """A network factory that refuses an address with a space in it, at ``new_client``."""

    def __init__(self, inner: RouterFactory) -> None:
        self.inner = inner

    def new_client(self, target: int, node: BasicNode) -> RouterClient:
        if " " in node.addr:
            raise ValueError(f"malformed address {node.addr!r}")
        return self.inner.new_client(target, node)


async def test_a_factory_that_refuses_an_address_leaves_only_that_target_unreachable() -> None:
    async with Cluster(fast_config(), seed=51) as c:
        factory = c.router.factory
        c.router.factory = lambda source: PicksyFactory(factory(source))  # type: ignore[assignment, return-value]
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"first"), BOUND)  # the membership is committed
        resp = await asyncio.wait_for(raft.add_learner(4, BasicNode("no such host"), blocking=False), BOUND)
        assert resp.membership is not None and 4 in resp.membership.nodes
        for i in range(5):
            resp = await asyncio.wait_for(raft.client_write(b"%d" % i), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        # A new leader (whose factory refuses the same address) goes on too.
        await raft.trigger.transfer_leader(min(n for n in c.nodes if n != leader))
        new = await c.wait_for_leader(among={n for n in c.nodes if n != leader})
        resp = await asyncio.wait_for(c.nodes[new].client_write(b"after"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


class VoteHangs(BrokenClient):
    """``vote`` to ``HANG_TARGET`` never returns; ``started`` / ``cancelled`` count those calls."""

    started = 0
    cancelled = 0

    async def vote(self, req: Any, option: RPCOption) -> Any:
        if self.inner.target == HANG_TARGET:
            VoteHangs.started += 1
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                VoteHangs.cancelled += 1
                raise
        return await self.inner.vote(req, option)


HANG_TARGET = 3


async def test_a_vote_call_that_never_returns_is_given_up() -> None:
    VoteHangs.started = VoteHangs.cancelled = 0
    async with Cluster(fast_config(), seed=61) as c:
        broken_network(c, Garble(), "task", VoteHangs)
        await c.start({1, 2, 3})
        await c.wait_for_leader()
        if VoteHangs.started == 0:  # node 3 won the first election: make another campaign
            await c.nodes[1].trigger.elect()
        await until(lambda: VoteHangs.started > 0, "node 3 was asked for its vote")
        # Given up within 2 * election_timeout_max (200 ms) of being started, not when the
        # node shuts down.
        await until(lambda: VoteHangs.cancelled == VoteHangs.started, "the hung vote calls were given up")
        all_running(c)


@pytest.mark.parametrize("path", ["task", "send_now", "submit"])
async def test_a_stray_cancelled_error_from_append_entries_is_a_failed_call(path: str) -> None:
    garble = Garble()
    async with Cluster(fast_config(), seed=71) as c:
        broken_network(c, garble, path)
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        raft = c.nodes[leader]
        await asyncio.wait_for(raft.client_write(b"before"), BOUND)
        garble.rpc, garble.sources, garble.raises = "append_entries", {leader}, asyncio.CancelledError()
        pending = asyncio.ensure_future(raft.client_write(b"while cancelled"))
        await until(lambda: garble.bad >= 4, "the leader sent AppendEntries")
        garble.rpc = None
        resp = await asyncio.wait_for(pending, BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


async def test_a_stray_cancelled_error_from_install_snapshot_is_a_failed_call() -> None:
    garble = Garble()
    config = purging_config()
    async with Cluster(config, seed=72) as c:
        broken_network(c, garble)
        leader, raft, resp = await started_with_purged_log(c)
        garble.rpc, garble.sources, garble.raises = "install_snapshot", {leader}, asyncio.CancelledError()
        await c.add_node(4)
        adding = asyncio.ensure_future(raft.add_learner(4, BasicNode(""), blocking=True))
        await until(lambda: garble.bad >= 2, "the leader sent the snapshot")
        garble.rpc = None
        await asyncio.wait_for(adding, BOUND * 2)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)


async def _raise_stray_cancel() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.cancel()
    await fut  # CancelledError, though the awaiting task is not being cancelled


class CancellingStore(MemLogStore):
    """Its method named ``CancellingStore.method`` raises a stray ``CancelledError`` once, on
    the node ``CancellingStore.node``."""

    method: str | None = None
    node = 0
    hit = False

    def __init__(self, nid: int, disk: MemDisk) -> None:
        super().__init__(disk)
        self.nid = nid

    async def _maybe(self, name: str) -> None:
        cls = CancellingStore
        if cls.method == name and self.nid == cls.node and not cls.hit:
            cls.hit = True
            await _raise_stray_cancel()

    async def append(self, entries: list[Entry], callback: Any) -> None:
        await self._maybe("append")
        await super().append(entries, callback)

    async def save_committed(self, committed: Any) -> None:
        await self._maybe("save_committed")
        await super().save_committed(committed)

    async def save_vote(self, vote: Any) -> None:
        await self._maybe("save_vote")
        await super().save_vote(vote)


@pytest.mark.parametrize("method", ["append", "save_committed", "save_vote"])
async def test_a_stray_cancelled_error_from_the_log_store_stops_its_node_with_a_storage_error(method: str) -> None:
    CancellingStore.method, CancellingStore.hit = None, False
    async with Cluster(fast_config(), seed=81, log_store=CancellingStore) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        await asyncio.wait_for(c.nodes[leader].client_write(b"before"), BOUND)
        victim = min(n for n in c.nodes if n != leader)
        CancellingStore.node, CancellingStore.method = victim, method
        if method == "save_vote":
            await c.nodes[victim].trigger.elect()
        else:
            await asyncio.wait_for(c.nodes[leader].client_write(b"during"), BOUND)
        raft = c.nodes[victim]
        with pytest.raises(StorageError) as info:
            await raft.wait(BOUND).state(ServerState.LEADER)  # the node stops first
        assert f"the log store's {method} raised CancelledError (its task was not being cancelled)" in str(info.value)
        assert raft.metrics.error == str(info.value)
        c.router.unregister(victim)
        c.nodes.pop(victim)
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"after"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        all_running(c)
        await raft.shutdown()


class CancellingBuilder:
    async def build_snapshot(self) -> Any:
        await _raise_stray_cancel()


class BuildCancels(MemStateMachine):
    def get_snapshot_builder(self) -> Any:
        return CancellingBuilder()


async def test_a_snapshot_builder_that_raises_a_stray_cancelled_error_stops_its_node() -> None:
    """It ended the build unreported: the node never built another snapshot."""
    async with Cluster(fast_config(), seed=91, state_machine=BuildCancels) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        resp = await asyncio.wait_for(c.nodes[leader].client_write(b"x"), BOUND)
        await c.wait_applied(resp.log_id.index, timeout=BOUND)
        raft = c.nodes[leader]
        await raft.trigger.snapshot()
        with pytest.raises(StorageError, match="build_snapshot raised CancelledError"):
            await raft.wait(BOUND).snapshot(resp.log_id)


class FailingFile(io.BytesIO):
    def read(self, n: int | None = -1) -> bytes:
        raise OSError("disk read error")


class ShrinkingFile(io.BytesIO):
    """A snapshot file another writer cuts to half its length once the sender has read it
    the first time (after its size was taken)."""

    def read(self, n: int | None = -1) -> bytes:
        if not getattr(self, "shrunk", False):
            self.shrunk = True
            self.truncate(len(self.getvalue()) // 2)
        return super().read(n)


class OddSnapshotData(MemStateMachine):
    """Hands out its current snapshot with ``OddSnapshotData.kind`` of data."""

    kind = "bytes"

    async def get_current_snapshot(self) -> Any:
        from openraft_py.types import Snapshot

        snap = await super().get_current_snapshot()
        if snap is None:
            return None
        raw = snap.data.read()
        if OddSnapshotData.kind == "bytes":
            return Snapshot(snap.meta, raw)  # type: ignore[arg-type]
        if OddSnapshotData.kind == "text":
            return Snapshot(snap.meta, io.StringIO(raw.decode("latin-1")))
        if OddSnapshotData.kind == "shrinking":
            return Snapshot(snap.meta, ShrinkingFile(raw))
        return Snapshot(snap.meta, FailingFile(raw))


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("bytes", "get_current_snapshot returned a Snapshot whose data is bytes, expected a binary file"),
        ("text", "the snapshot file's read returned str, expected bytes"),
        ("failing", "reading snapshot .* at 0: OSError: disk read error"),
        # It sent empty chunks for good (tens of thousands a second), never done.
        ("shrinking", r"reading snapshot .* at (\d+): EOFError: the snapshot file ends at byte \1: it became shorter "
                      "while it was being sent"),
    ],
)
async def test_a_snapshot_the_leader_cannot_read_stops_it_with_a_storage_error(kind: str, error: str) -> None:
    OddSnapshotData.kind = kind
    config = purging_config()
    async with Cluster(config, seed=101, state_machine=OddSnapshotData) as c:
        leader, raft, _ = await started_with_purged_log(c)
        await c.add_node(4)
        with pytest.raises(StorageError, match=error):
            await asyncio.wait_for(raft.add_learner(4, BasicNode(""), blocking=True), BOUND)
        assert not raft.metrics.running


class ChangesItsList(MemStateMachine):
    """A ``MemStateMachine`` whose ``apply`` does to its ``entries`` list what ``how`` says:
    consumes it entry by entry (``pop(0)``), or clears or reverses it once it has applied it."""

    how = "consume"

    async def apply(self, entries: list[Entry]) -> list[Any]:
        if ChangesItsList.how == "consume":
            out: list[Any] = []
            while entries:
                out += await super().apply([entries.pop(0)])
            return out
        out = await super().apply(entries)
        if ChangesItsList.how == "clear":
            entries.clear()
        else:
            entries.reverse()
        return out


@pytest.mark.parametrize("how", ["consume", "clear", "reverse"])
async def test_apply_may_change_the_list_it_is_given(how: str) -> None:
    ChangesItsList.how = how
    async with Cluster(fast_config(), seed=9, state_machine=ChangesItsList) as c:
        await c.start({1, 2, 3})
        raft = c.nodes[await c.wait_for_leader()]
        payloads = [b"k%d" % i for i in range(20)]
        resps = await asyncio.wait_for(raft.client_write_many(payloads), BOUND)
        indexes = [r.log_id.index for r in resps]
        assert indexes == list(range(indexes[0], indexes[0] + len(payloads))), "answers out of order"
        last = await asyncio.wait_for(raft.client_write(b"last"), BOUND)
        await c.wait_applied(last.log_id.index, timeout=BOUND)
        assert all(r.metrics.running for r in c.nodes.values())
        check_applied_prefix(c.disks)
        assert [data for _, data in c.disks[raft.id].applied_log[-21:]] == [*payloads, b"last"]
