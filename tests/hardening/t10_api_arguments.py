"""The API boundary (``Raft`` methods): a caller's mistake raises ``TypeError`` /
``ValueError`` at once, before anything is logged, and the node keeps running
(``docs/design/bad-input.md``, "API arguments")."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from integration.checks import fast_config

from openraft_py import MAX_INDEX, MAX_NODE_ID, BasicNode, Normal, Raft, ReadPolicy, ServerState
from openraft_py.config import Config, RunningConfig
from openraft_py.network.router import Router
from openraft_py.storage.memory import MemDisk, MemLogStore, MemStateMachine
from openraft_py.testing.cluster import Cluster
from openraft_py.validation import MAX_MEMBERS, MAX_WRITE_MANY

from .bad_input_helpers import assert_healthy, leader_and_follower, logged_writes, refused, three

__all__ = ["three"]

pytestmark = pytest.mark.timeout(30)


def _stable_id(v: object) -> str:
    """A test id that is the same in every run (no set order, no object address)."""
    if isinstance(v, (set, frozenset)):
        return "{" + ", ".join(sorted(map(repr, v))) + "}"
    if type(v) is object:
        return "object()"
    return repr(v)


class SubNode(BasicNode, frozen=True):
    """A ``BasicNode`` subclass: refused (a peer would refuse a membership holding it)."""


@pytest.mark.parametrize("data", [None, 7, "text", 1.5, [b"a"], object()], ids=_stable_id)
async def test_client_write_refuses_a_payload_that_is_not_bytes(three: Cluster, data: object) -> None:
    """Issue 9: ``client_write(None)`` was committed and killed every node on apply."""
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    err = await refused(leader.client_write(data), TypeError)  # type: ignore[arg-type]
    assert "bytes" in str(err)
    assert logged_writes(three) == before, "a refused write was logged"
    await assert_healthy(three)


class _BytesSubclass(bytes):
    """A ``bytes`` subclass (``numpy.bytes_`` is one): ``bytes`` to a type checker, so
    ``client_write`` must take it (it was refused with ``TypeError``: "got _BytesSubclass")."""


@pytest.mark.parametrize(
    "data",
    [bytearray(b"ba"), memoryview(b"mv"), memoryview(b"xmvx")[1:3], _BytesSubclass(b"sub")],
    ids=["bytearray", "memoryview", "slice", "bytes-subclass"],
)
@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
async def test_client_write_stores_bytes_like_payloads_as_bytes(three: Cluster, data: bytes, many: bool) -> None:
    leader, _ = leader_and_follower(three)
    resp = (await leader.client_write_many([data]))[0] if many else await leader.client_write(data)
    await three.wait_applied(resp.log_id.index)
    for disk in three.disks.values():
        e = disk.entries[resp.log_id.index - disk.offset]
        assert type(e.payload) is Normal and type(e.payload.data) is bytes
        assert e.payload.data == bytes(data)
    await assert_healthy(three)


@pytest.mark.parametrize("datas", [[b"a", None], [b"a", "b"], b"abc", "abc", 5, None], ids=repr)
async def test_client_write_many_refuses_bad_payloads_all_or_nothing(three: Cluster, datas: object) -> None:
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    await refused(leader.client_write_many(datas), TypeError)  # type: ignore[arg-type]
    assert logged_writes(three) == before, "part of a refused batch was logged"
    await assert_healthy(three)


def endless_payloads() -> Iterator[bytes]:
    """``b"x"`` for ever (``iter(lambda: b"x", None)``), except that reading more than
    ``MAX_WRITE_MANY + 1`` of them fails the test: a check that does not stop would hang
    it, and fill memory."""
    for i in itertools.count():
        if i > MAX_WRITE_MANY:
            raise AssertionError(f"read {i + 1} payloads: the check does not stop at MAX_WRITE_MANY")
        yield b"x"


async def test_client_write_many_refuses_an_endless_iterable_at_max_write_many(three: Cluster) -> None:
    """``client_write_many(iter(lambda: b"x", None))`` hung the caller's event loop, and
    every node on it, while the check read the payloads into a list for ever."""
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    err = await refused(leader.client_write_many(endless_payloads()), ValueError)
    assert str(err) == f"client_write_many takes at most {MAX_WRITE_MANY} payloads (MAX_WRITE_MANY): its iterable yields more"
    err = await refused(leader.client_write_many([b"x"] * (MAX_WRITE_MANY + 1)), ValueError)
    assert str(err).endswith(f"got {MAX_WRITE_MANY + 1}")
    assert logged_writes(three) == before, "part of a refused batch was logged"
    await assert_healthy(three)


@pytest.mark.parametrize(
    "node_id, node, blocking, error",
    [
        ("abc", BasicNode(), True, TypeError),  # issue 9: this hung the caller
        (True, BasicNode(), True, TypeError),
        (4.0, BasicNode(), True, TypeError),
        (-1, BasicNode(), True, ValueError),
        (MAX_NODE_ID + 1, BasicNode(), True, ValueError),
        (4, "127.0.0.1:1", True, TypeError),
        (4, None, True, TypeError),
        (4, BasicNode(5), True, TypeError),  # type: ignore[arg-type]
        (4, SubNode("h:1"), True, TypeError),
        (4, BasicNode(), "yes", TypeError),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_add_learner_refuses_bad_arguments(
    three: Cluster, node_id: object, node: object, blocking: object, error: type[Exception]
) -> None:
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    await refused(leader.add_learner(node_id, node, blocking), error)  # type: ignore[arg-type]
    assert logged_writes(three) == before
    await assert_healthy(three)


@pytest.mark.parametrize(
    "members, retain, error",
    [
        ({"a", "b"}, False, TypeError),
        ([1, 2, True], False, TypeError),
        ([1, 2, -3], False, ValueError),
        ([1, 2, MAX_NODE_ID + 1], False, ValueError),
        ([1, 2, 2], False, ValueError),
        (5, False, TypeError),
        ("123", False, TypeError),
        ({1: BasicNode()}, False, TypeError),
        ({1, 2, 3}, None, TypeError),
    ],
    ids=lambda v: _stable_id(v)[:24],
)
async def test_change_membership_refuses_bad_voters(
    three: Cluster, members: object, retain: object, error: type[Exception]
) -> None:
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    await refused(leader.change_membership(members, retain), error)  # type: ignore[arg-type]
    assert logged_writes(three) == before
    await assert_healthy(three)


async def test_change_membership_refuses_a_voter_given_twice_naming_it(three: Cluster) -> None:
    """``change_membership([1, 2, 2])`` made the voters ``{1, 2}`` without a word (node 3
    left), where the repeated id was likely a typo for 3; ``remove_learners`` and
    ``initialize`` refused a repeated id already, and the key-value service refuses it."""
    leader, _ = leader_and_follower(three)
    voters = leader.metrics.membership_config.membership.voter_ids()
    before = logged_writes(three)
    err = await refused(leader.change_membership([1, 2, 2]), ValueError)
    assert str(err) == "voter id 2 is given twice"
    assert logged_writes(three) == before, "a refused change was logged"
    assert leader.metrics.membership_config.membership.voter_ids() == voters
    await assert_healthy(three)


def endless(start: int = 1) -> Iterator[int]:
    """Node ids from ``start`` on, for ever (``itertools.count(start)``), except that reading
    more than ``MAX_MEMBERS + 1`` of them fails the test: a check that does not stop would
    hang it, and fill memory."""
    for i in itertools.count(start):
        if i - start > MAX_MEMBERS:
            raise AssertionError(f"read {i - start + 1} ids: the check does not stop at MAX_MEMBERS")
        yield i


@pytest.mark.parametrize("call", ["change_membership", "remove_learners"])
async def test_an_endless_iterable_of_ids_is_refused_at_max_members(three: Cluster, call: str) -> None:
    """``change_membership(itertools.count())`` (or ``remove_learners``) hung the caller's
    event loop, and every node on it, in the check, which read the ids into a set for ever."""
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    err = await refused(getattr(leader, call)(endless()), ValueError)
    what = "voters" if call == "change_membership" else "ids"
    assert str(err) == f"{what} names more than {MAX_MEMBERS} nodes (MAX_MEMBERS)"
    assert logged_writes(three) == before
    await assert_healthy(three)


async def test_initialize_refuses_an_endless_iterable_of_ids_and_can_still_initialize() -> None:
    async with Cluster(fast_config(), seed=3) as c:
        await c.start({1, 2, 3}, initialize=False)
        err = await refused(c.nodes[1].initialize(endless()), ValueError)
        assert str(err) == f"members names more than {MAX_MEMBERS} nodes (MAX_MEMBERS)"
        assert c.nodes[1].metrics.last_log_index == -1, "a refused initialize logged something"
        await c.nodes[1].initialize([1, 2, 3])
        await assert_healthy(c)


@pytest.mark.parametrize("allow_lagging", [None, 1, "yes"], ids=repr)
async def test_change_membership_refuses_a_non_bool_allow_lagging(three: Cluster, allow_lagging: object) -> None:
    leader, _ = leader_and_follower(three)
    before = logged_writes(three)
    await refused(leader.change_membership({1, 2}, False, allow_lagging), TypeError)  # type: ignore[arg-type]
    assert logged_writes(three) == before
    await assert_healthy(three)


@pytest.mark.parametrize(
    "upto, error", [(-1, ValueError), (MAX_INDEX + 1, ValueError), ("3", TypeError), (None, TypeError), (True, TypeError)]
)
async def test_trigger_purge_log_checks_upto(three: Cluster, upto: object, error: type[Exception]) -> None:
    leader, _ = leader_and_follower(three)
    await refused(leader.trigger.purge_log(upto), error)  # type: ignore[arg-type]
    await assert_healthy(three)


@pytest.mark.parametrize("to, error", [("2", TypeError), (-1, ValueError), (None, TypeError), (False, TypeError)])
async def test_trigger_transfer_leader_checks_the_target(three: Cluster, to: object, error: type[Exception]) -> None:
    leader, _ = leader_and_follower(three)
    await refused(leader.trigger.transfer_leader(to), error)  # type: ignore[arg-type]
    await assert_healthy(three)


@pytest.mark.parametrize("policy", ["ReadIndex", None, 0], ids=repr)
async def test_ensure_linearizable_takes_a_read_policy(three: Cluster, policy: object) -> None:
    leader, _ = leader_and_follower(three)
    await refused(leader.ensure_linearizable(policy), TypeError)  # type: ignore[arg-type]
    assert await leader.ensure_linearizable(ReadPolicy.READ_INDEX) is not None
    await assert_healthy(three)


async def test_a_huge_wrong_argument_is_shown_short(three: Cluster) -> None:
    """A 16 MiB value given as a read policy, a wait's timeout, state or msg: the message
    shows its start and its length (it held the whole string, a 16 MiB message)."""
    leader, _ = leader_and_follower(three)
    big = "x" * (16 << 20)
    for call in (lambda: leader.ensure_linearizable(big), lambda: leader.wait(1).state(big),
                 lambda: leader.wait(1).state(ServerState.LEADER, big.encode()), lambda: leader.wait(1).metrics(big),
                 lambda: leader.wait(1).snapshot(big)):
        e = await refused(call(), TypeError)  # type: ignore[arg-type]
        assert str(e).endswith(f" ({len(big) + 2} characters)") or str(e).endswith(f" ({len(big) + 3} characters)"), (
            str(e)[:300])
        assert len(str(e)) < 200, str(e)[:300]
    with pytest.raises(TypeError) as ei:
        leader.wait(big)  # type: ignore[arg-type]
    assert str(ei.value).startswith("timeout must be a number of seconds or None, got str 'xxx") and len(str(ei.value)) < 200
    await assert_healthy(three)


@pytest.mark.parametrize(
    "members, error",
    [
        ({1: "127.0.0.1:1", 2: BasicNode()}, TypeError),
        ({"1": BasicNode()}, TypeError),
        ({-1: BasicNode(), 1: BasicNode()}, ValueError),
        (["a"], TypeError),
        ([1, 2, 2], ValueError),
        ([], ValueError),
        ({}, ValueError),
        ("123", TypeError),
        (None, TypeError),
    ],
    ids=lambda v: repr(v)[:24],
)
async def test_initialize_refuses_malformed_members_and_can_still_initialize(
    members: object, error: type[Exception]
) -> None:
    async with Cluster(fast_config(), seed=3) as c:
        await c.start({1, 2, 3}, initialize=False)
        await refused(c.nodes[1].initialize(members), error)  # type: ignore[arg-type]
        assert c.nodes[1].metrics.last_log_index == -1, "a refused initialize logged something"
        await c.nodes[1].initialize({1: BasicNode("a"), 2: BasicNode("b"), 3: BasicNode("c")})
        await assert_healthy(c)


@pytest.mark.parametrize("node_id, error", [("1", TypeError), (-1, ValueError), (True, TypeError)])
async def test_raft_new_checks_the_node_id(node_id: object, error: type[Exception]) -> None:
    disk = MemDisk()
    with pytest.raises(error):
        await Raft.new(node_id, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk))  # type: ignore[arg-type]
    assert disk.vote is None and not disk.entries


class _NoPurge(MemLogStore):
    purge = None  # type: ignore[assignment]  # a store missing one method of the protocol


@pytest.mark.parametrize(
    "which, bad, needle",
    [
        ("network_factory", None, "network_factory must implement RaftNetworkFactory: NoneType has no method new_client"),
        ("network_factory", Router, "got the class Router itself (pass Router(...))"),
        ("log_store", MemLogStore, "got the class MemLogStore itself (pass MemLogStore(...))"),
        ("log_store", _NoPurge(), "log_store must implement RaftLogStorage: _NoPurge has no method purge"),
        ("log_store", MemStateMachine(), "has no method append, get_log_reader"),
        ("state_machine", None, "state_machine must implement RaftStateMachine: NoneType has no method applied_state"),
        ("state_machine", MemLogStore(), "MemLogStore has no method applied_state, apply, begin_receiving_snapshot"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
async def test_raft_new_refuses_what_is_not_its_storage_or_network(which: str, bad: object, needle: str) -> None:
    """A class passed for an instance, ``None`` or a wrong object: ``TypeError`` naming what is
    missing, before storage is read (it used to surface as a ``StorageError`` while restoring,
    or, for the network, as errors logged at every election)."""
    disk = MemDisk()
    args: dict[str, object] = dict(
        network_factory=Router().factory(1), log_store=MemLogStore(disk), state_machine=MemStateMachine(disk)
    )
    args[which] = bad
    with pytest.raises(TypeError) as ei:
        await Raft.new(1, fast_config(), **args)  # type: ignore[arg-type]
    assert needle in str(ei.value), ei.value
    assert disk.vote is None and not disk.entries


class _NoSleepClock:
    def now(self) -> float:
        return time.monotonic()


class _BlockingSleepClock(_NoSleepClock):
    def sleep(self, seconds: float) -> None:  # time.sleep: nothing to await
        time.sleep(seconds)


class _NowClock:
    """A clock whose ``now()`` returns ``value``."""

    def __init__(self, value: object) -> None:
        self.value = value

    def now(self) -> object:
        return self.value

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _BootClock(_NowClock):
    """A clock that counts suspended time (``docs/guides/reads.md``)."""

    def __init__(self) -> None:
        super().__init__(None)

    def now(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)


@pytest.mark.parametrize(
    "clock, needle",
    [
        (time.monotonic, "clock must implement Clock: builtin_function_or_method has no method now, sleep"),
        (_NowClock, "clock must be a Clock instance, got the class _NowClock itself"),
        (_NoSleepClock(), "clock must implement Clock: _NoSleepClock has no method sleep"),
        (_BlockingSleepClock(), "clock.sleep(seconds) must return an awaitable (an async def sleep), got NoneType"),
        (_NowClock(None), "clock.now() must return the time in seconds as a finite int or float"),
        (_NowClock("12.5"), "got str '12.5'"),
        (_NowClock(True), "got bool True"),
        (_NowClock(float("nan")), "got float nan"),
    ],
    ids=["time.monotonic", "class", "no sleep", "blocking sleep", "now None", "now str", "now bool", "now nan"],
)
async def test_raft_new_refuses_what_is_not_a_clock(clock: object, needle: str) -> None:
    """``clock=time.monotonic`` failed with a bare ``AttributeError`` after storage was read;
    a clock without ``sleep`` (or with a blocking one) gave a node that stopped at its first
    tick ("a task failed"). Now ``TypeError`` naming what is wrong, before anything is read."""
    disk = MemDisk()
    with pytest.raises(TypeError) as ei:
        await Raft.new(1, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk),
                       clock=clock)  # type: ignore[arg-type]
    assert needle in str(ei.value), ei.value
    assert disk.vote is None and not disk.entries


async def test_raft_new_runs_on_a_clock_of_its_own() -> None:
    """A clock that is one (here: one that counts suspended time) is taken, and the node runs
    on it: elected, it takes writes."""
    disk = MemDisk()
    raft = await Raft.new(1, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk),
                          clock=_BootClock())
    try:
        await raft.initialize({1: BasicNode()})
        await raft.wait(5.0).metrics(lambda m: m.current_leader == 1, "node 1 leads")
        resp = await raft.client_write(b"x")
        assert resp.log_id.index >= 1
    finally:
        await raft.shutdown()


def test_the_checked_clock_methods_are_the_clock_protocols() -> None:
    from openraft_py.core.clock import CLOCK_METHODS, Clock

    declared = {name for name, value in vars(Clock).items() if callable(value) and not name.startswith("_")}
    assert set(CLOCK_METHODS) == declared


class _SyncSaveVote(MemLogStore):
    def save_vote(self, vote: Any) -> None:  # type: ignore[override]  # the protocol's is async
        self.disk.vote = vote


class _AsyncAppendDurable(MemLogStore):
    """Both appends ``async def``: the node took the optional ``append_durable`` and called it
    without awaiting, so no entry was ever stored (writes acknowledged, applied, then lost)."""

    async def append(self, entries: list[Any], callback: Any) -> None:
        MemLogStore.append_durable(self, entries)
        callback.io_completed(None)

    async def append_durable(self, entries: list[Any]) -> None:  # type: ignore[override]
        MemLogStore.append_durable(self, entries)


class _AsyncLogReader(MemLogStore):
    async def get_log_reader(self) -> Any:  # type: ignore[override]
        return MemLogStore.get_log_reader(self)


class _SyncApply(MemStateMachine):
    def apply(self, entries: list[Any]) -> Any:  # type: ignore[override]
        return [None] * len(entries)


class _AsyncSnapshotBuilder(MemStateMachine):
    async def get_snapshot_builder(self) -> Any:  # type: ignore[override]
        return MemStateMachine.get_snapshot_builder(self)


class _AsyncNewClient:
    def __init__(self) -> None:
        self.inner = Router().factory(1)

    async def new_client(self, target: int, node: BasicNode) -> Any:
        return self.inner.new_client(target, node)


@pytest.mark.parametrize(
    "which, bad, needle",
    [
        ("log_store", _SyncSaveVote, "log_store.save_vote must be a coroutine function (async def): _SyncSaveVote.save_vote "
                                     "is a plain def, and the node awaits what it returns"),
        ("log_store", _AsyncAppendDurable, "log_store.append_durable must be a plain method (def), not async def: the node "
                                           "calls _AsyncAppendDurable.append_durable() and uses what it returns without "
                                           "awaiting it"),
        ("log_store", _AsyncLogReader, "log_store.get_log_reader must be a plain method (def), not async def"),
        ("state_machine", _SyncApply, "state_machine.apply must be a coroutine function (async def)"),
        ("state_machine", _AsyncSnapshotBuilder, "state_machine.get_snapshot_builder must be a plain method (def)"),
        ("network_factory", _AsyncNewClient, "network_factory.new_client must be a plain method (def), not async def"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v if isinstance(v, str) and len(v) < 20 else "",
)
async def test_raft_new_refuses_a_method_of_the_wrong_kind(which: str, bad: type, needle: str) -> None:
    """A ``def`` where the protocol has ``async def``, or the reverse: ``TypeError`` naming the
    method, before storage is read. The node used to start and then stop at the first call
    ("object NoneType can't be used in 'await' expression", naming no method), or, for an
    ``async def append_durable``, run on with every append dropped unrun."""
    disk = MemDisk()
    args: dict[str, object] = dict(
        network_factory=Router().factory(1), log_store=MemLogStore(disk), state_machine=MemStateMachine(disk)
    )
    args[which] = bad() if which == "network_factory" else bad(disk)
    with pytest.raises(TypeError) as ei:
        await Raft.new(1, fast_config(), **args)  # type: ignore[arg-type]
    assert needle in str(ei.value), ei.value
    assert disk.vote is None and not disk.entries


def _logged(fn: Any) -> Any:
    """A decorator whose plain wrapper returns what the coroutine function ``fn`` returns."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class _DecoratedStore(MemLogStore):
    save_vote = _logged(MemLogStore.save_vote)  # a plain def returning a coroutine: cannot be told, accepted


async def test_raft_new_accepts_a_method_whose_kind_it_cannot_tell() -> None:
    """A decorated coroutine method (a plain wrapper) passes: it may well return a coroutine."""
    router = Router()
    disk = MemDisk()
    raft = await Raft.new(1, fast_config(), router.factory(1), _DecoratedStore(disk), MemStateMachine(disk))
    try:
        router.register(1, raft)
        await raft.initialize({1})
        await raft.wait(5.0).current_leader(1)
        assert disk.vote is not None
    finally:
        await raft.shutdown()


@pytest.mark.parametrize("protocol", ["network.RaftNetworkFactory", "storage.RaftLogStorage", "storage.RaftStateMachine"])
def test_the_plain_methods_are_the_protocols_plain_methods(protocol: str) -> None:
    import importlib

    from openraft_py import validation

    module, _, cls = protocol.partition(".")
    proto = getattr(importlib.import_module(f"openraft_py.{module}"), cls)
    declared = {
        name: value
        for klass in proto.__mro__
        if klass.__module__.startswith("openraft_py")
        for name, value in vars(klass).items()
        if callable(value) and not name.startswith("_")
    }
    plain = {name for name, value in declared.items() if not inspect.iscoroutinefunction(value)}
    assert plain == set(declared) & validation.PLAIN_METHODS


@pytest.mark.parametrize(
    "protocol, names",
    [
        ("network.RaftNetworkFactory", "NETWORK_FACTORY_METHODS"),
        ("storage.RaftLogStorage", "LOG_STORAGE_METHODS"),
        ("storage.RaftStateMachine", "STATE_MACHINE_METHODS"),
    ],
)
def test_the_checked_methods_are_the_protocols_methods(protocol: str, names: str) -> None:
    import importlib

    from openraft_py import validation

    module, _, cls = protocol.partition(".")
    proto = getattr(importlib.import_module(f"openraft_py.{module}"), cls)
    declared = {
        name
        for klass in proto.__mro__
        if klass.__module__.startswith("openraft_py")
        for name, value in vars(klass).items()
        if callable(value) and not name.startswith("_")
    }
    assert set(getattr(validation, names)) == declared


async def test_a_running_node_keeps_the_config_it_was_started_with() -> None:
    """``Raft.new`` runs the node on a checked copy of ``config``: a change to the caller's
    object afterwards (set after the start, or made for another node sharing it) reached the
    running node unchecked. A ``heartbeat_interval`` above the election timeout, which
    ``validate()`` refuses, had the followers of a healthy leader start an election every few
    hundred ms (term 1 to 15 in 3 s)."""
    cfg = fast_config()
    async with Cluster(cfg, seed=3) as c:
        await c.start({1, 2, 3})
        leader = await c.wait_for_leader()
        cfg.heartbeat_interval = 10 * cfg.election_timeout_max  # refused by validate()
        cfg.max_entry_bytes = 2**40
        for raft in c.nodes.values():
            assert raft.config is not cfg
            assert (raft.config.heartbeat_interval, raft.config.max_entry_bytes) == (15, 4 * 1024 * 1024)
            assert raft._core.engine.config.heartbeat_interval == 15
        with pytest.raises(ValueError, match=r"exceeds Config\.max_entry_bytes"):
            await c.nodes[leader].client_write(b"x" * (4 * 1024 * 1024 + 1))
        await assert_healthy(c)


async def test_a_running_nodes_config_is_read_only() -> None:
    """``raft.config`` is the node's own settings, read as it runs: assigning a field of it
    changed the running node at once, unchecked (``max_entry_bytes = 1`` refused every write
    of two bytes, ``election_timeout_min`` above the maximum passed). It raises now, and the
    node keeps its settings; a changed copy starts a node."""
    async with Cluster(fast_config(), seed=4) as c:
        await c.start({1, 2, 3})
        leader = c.nodes[await c.wait_for_leader()]
        assert isinstance(leader.config, RunningConfig) and isinstance(leader.config, Config)
        with pytest.raises(AttributeError, match="immutable"):
            leader.config.max_entry_bytes = 1  # type: ignore[misc]  # (a mypy error: the point)
        with pytest.raises(AttributeError, match="immutable"):
            leader.config.election_timeout_min = 10**9  # type: ignore[misc]
        assert leader.config.max_entry_bytes == 4 * 1024 * 1024
        await leader.client_write(b"xy")
        changed = msgspec.structs.replace(leader.config, heartbeat_interval=20)
        assert type(changed) is RunningConfig and changed.heartbeat_interval == 20
        mutable = Config(**msgspec.structs.asdict(leader.config))
        assert leader.config == mutable and mutable == leader.config and not leader.config != mutable
        mutable.heartbeat_interval = 20
        assert mutable == changed and changed == mutable and leader.config != mutable
        with pytest.raises(TypeError, match="unhashable"):
            hash(leader.config)
        await assert_healthy(c)


async def test_raft_new_refuses_a_clock_that_reads_below_zero() -> None:
    """A clock reading below 0 (``time.monotonic() - 1e7``) was taken, and the node's marks
    for a time that never came (-1 ms: no answer yet) were later than every real answer:
    none counted, so a leader never stepped down by check-quorum, and it confirmed
    ``READ_INDEX`` reads with no quorum asked (a leader cut off from both followers answered
    one at 1-2 while the new leader had committed up to 2-4). ``ValueError`` saying so,
    before anything is read; a clock reading 0 at the start is taken."""
    disk = MemDisk()
    with pytest.raises(ValueError, match=r"clock\.now\(\) read -[0-9.e+]+, below 0: a Clock must read 0 or more"):
        await Raft.new(1, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk),
                       clock=_NowClock(time.monotonic() - 1e7))  # type: ignore[arg-type]
    assert disk.vote is None and not disk.entries
    raft = await Raft.new(1, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk),
                          clock=_NowClock(0.0))  # type: ignore[arg-type]
    await raft.shutdown()


async def test_raft_new_refuses_a_clock_in_nanoseconds() -> None:
    """A clock whose ``now()`` is ``time.monotonic_ns`` was taken: every interval of the node,
    measured on it in seconds, was a billion times too long, so the node never started an
    election and said nothing. ``ValueError`` naming the likely mistake, before anything is
    read."""
    disk = MemDisk()
    with pytest.raises(ValueError, match=r"clock\.now\(\) read \d+, more than 1e\+10 seconds: a clock in nanoseconds"):
        await Raft.new(1, fast_config(), Router().factory(1), MemLogStore(disk), MemStateMachine(disk),
                       clock=_NowClock(time.monotonic_ns() + 10**10))  # type: ignore[arg-type]
    assert disk.vote is None and not disk.entries
