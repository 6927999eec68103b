"""``Wait`` over a ``MetricsWatch`` driven by a fake node: each condition returns the metrics
that satisfied it, wakes on ``mark_changed()``, times out with ``WaitTimeout`` naming the
condition, and fails with ``Fatal`` when the node stops first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openraft_py import Fatal, StorageError, WaitTimeout
from openraft_py.metrics import MetricsWatch, RaftMetrics, Wait
from openraft_py.types import LeaderId, LogId, Membership, ServerState, StoredMembership, Vote

pytestmark = pytest.mark.timeout(10)


class FakeNode:
    """Mutable node state that ``build()`` turns into ``RaftMetrics``; ``set(...)`` changes
    it and marks the watch changed, like RaftCore does."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = dict(
            id=1,
            state=ServerState.FOLLOWER,
            current_term=1,
            vote=Vote(LeaderId(1, 1), False),
            last_log_index=-1,
            last_applied=None,
            committed=None,
            current_leader=None,
            membership_config=StoredMembership(None, Membership.new([{1}])),
        )
        self.builds = 0
        self.watch = MetricsWatch(self.build)

    def build(self) -> RaftMetrics:
        self.builds += 1
        return RaftMetrics(**self.fields)

    def set(self, **kw: Any) -> None:
        self.fields.update(kw)
        self.watch.mark_changed()

    def wait(self, timeout: float = 2.0) -> Wait:
        return Wait(self.watch, timeout)


def later(fn: Any, *args: Any, delay: float = 0.01, **kw: Any) -> None:
    """Call ``fn`` from the loop ``delay`` seconds from now (while a waiter awaits)."""
    asyncio.get_running_loop().call_later(delay, lambda: fn(*args, **kw))


async def test_snapshot_waits_for_a_snapshot_covering_the_log_id() -> None:
    n = FakeNode()
    w = asyncio.ensure_future(n.wait().snapshot(LogId(2, 10)))
    await asyncio.sleep(0)
    n.set(snapshot=LogId(2, 9))  # too short: keeps waiting
    for _ in range(5):  # the waiter re-checks on the next loop turns; no timed sleep needed
        await asyncio.sleep(0)
    assert not w.done()
    n.set(snapshot=LogId(3, 12))  # later and longer: satisfies ">= index"
    m = await w
    assert m.snapshot == LogId(3, 12)


async def test_snapshot_accepts_an_index_and_returns_at_once_when_already_met() -> None:
    n = FakeNode()
    n.set(snapshot=LogId(1, 5))
    m = await n.wait(0.01).snapshot(5)
    assert m.snapshot == LogId(1, 5)
    m = await n.wait(0.01).snapshot(LogId(1, 0))
    assert m.snapshot == LogId(1, 5)


async def test_snapshot_times_out_naming_the_condition() -> None:
    n = FakeNode()
    with pytest.raises(WaitTimeout, match=r"snapshot index >= 3"):
        await n.wait(0.02).snapshot(3)
    n.set(snapshot=LogId(1, 2))
    with pytest.raises(WaitTimeout, match=r"n1 has its snapshot"):
        await n.wait(0.02).snapshot(LogId(1, 3), "n1 has its snapshot")


async def test_purged_waits_for_the_purge_to_reach_the_log_id() -> None:
    n = FakeNode()
    later(n.set, purged=LogId(1, 3), delay=0.005)
    later(n.set, purged=LogId(2, 8), delay=0.02)
    m = await n.wait().purged(LogId(2, 7))
    assert m.purged == LogId(2, 8)
    # An index works too, and an already met condition returns at once.
    m = await n.wait(0.01).purged(8)
    assert m.purged == LogId(2, 8)


async def test_purged_ignores_the_snapshot_and_times_out() -> None:
    n = FakeNode()
    n.set(snapshot=LogId(1, 10))  # a snapshot is not a purge
    with pytest.raises(WaitTimeout, match=r"purged index >= 0"):
        await n.wait(0.02).purged(0)


@pytest.mark.parametrize("method", ["snapshot", "purged"])
async def test_snapshot_and_purged_reject_other_types(method: str) -> None:
    n = FakeNode()
    for bad in ("3", 3.0, True, None):
        with pytest.raises(TypeError):
            await getattr(n.wait(0.01), method)(bad)


@pytest.mark.parametrize(
    "method, bad",
    [
        ("state", "LEADER"),
        ("state", "Leader"),
        ("state", 2),
        ("current_leader", "1"),
        ("current_leader", True),
        ("current_leader", -1),
        ("log_index_at_least", "5"),
        ("log_index_at_least", 5.0),
        ("log_index_at_least", None),
        ("applied_index_at_least", "5"),
        ("applied_index_at_least", True),
        ("applied_index_at_least", -1),
        ("voter_ids", 1),
        ("voter_ids", "123"),
        ("voter_ids", {"1"}),
        ("metrics", None),
        ("metrics", "m.state == 'Leader'"),
    ],
    ids=repr,
)
async def test_a_wrong_argument_fails_at_once_instead_of_waiting(method: str, bad: object) -> None:
    """Without a timeout: a wrong argument that never matches would otherwise wait forever."""
    n = FakeNode()
    with pytest.raises((TypeError, ValueError)) as ei:
        await asyncio.wait_for(getattr(n.wait(None), method)(bad), 2)
    assert type(ei.value) in (TypeError, ValueError), ei.value


async def test_msg_must_be_a_str() -> None:
    n = FakeNode()
    with pytest.raises(TypeError, match="msg must be a str"):
        await n.wait(None).state(ServerState.FOLLOWER, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["snapshot", "purged"])
async def test_a_node_stopping_fails_the_wait(method: str) -> None:
    n = FakeNode()
    later(n.set, running=False, error="disk gone")
    with pytest.raises(Fatal, match="disk gone"):
        await getattr(n.wait(), method)(1)


async def test_state_waits_for_the_role() -> None:
    n = FakeNode()
    later(n.set, state=ServerState.CANDIDATE, delay=0.005)
    later(n.set, state=ServerState.LEADER, delay=0.01)
    m = await n.wait().state(ServerState.LEADER)
    assert m.state == ServerState.LEADER
    with pytest.raises(WaitTimeout, match="state Follower"):
        await n.wait(0.02).state(ServerState.FOLLOWER)


async def test_voter_ids_waits_for_exactly_those_voters() -> None:
    n = FakeNode()
    joint = StoredMembership(LogId(1, 4), Membership.new([{1}, {1, 2, 3}]))
    later(n.set, membership_config=joint, delay=0.005)
    # The joint config's voters are {1, 2, 3} already: it satisfies the wait. (The uniform
    # config is set only after: set on a timer too, a loaded machine ran both timers before
    # the waiter, which then saw the uniform one.)
    m = await n.wait().voter_ids({1, 2, 3})
    assert m.membership_config == joint
    uniform = StoredMembership(LogId(1, 5), Membership.new([{1, 2, 3}]))
    n.set(membership_config=uniform)
    m = await n.wait(0.03).voter_ids({1, 2, 3})
    assert m.membership_config == uniform
    # A superset or subset is not "exactly".
    with pytest.raises(WaitTimeout, match=r"voters \[1, 2\]"):
        await n.wait(0.03).voter_ids({1, 2})


async def test_metrics_are_rebuilt_only_when_changed() -> None:
    n = FakeNode()
    built = n.builds
    await n.wait(0.01).metrics(lambda m: True)
    await n.wait(0.01).state(ServerState.FOLLOWER)
    assert n.builds == built, "an unchanged watch does not rebuild"
    n.set(snapshot=LogId(1, 1))
    await n.wait(0.01).snapshot(1)
    assert n.builds == built + 1



@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), -1, -0.001, 10**400])
def test_wait_refuses_a_timeout_that_is_not_finite_and_non_negative(bad: float) -> None:
    n = FakeNode()
    with pytest.raises(ValueError, match="timeout"):
        n.wait(bad)


@pytest.mark.parametrize("bad", ["1", True, b"1", [1]])
def test_wait_refuses_a_timeout_that_is_not_a_number(bad: object) -> None:
    n = FakeNode()
    with pytest.raises(TypeError, match="timeout"):
        Wait(n.watch, bad)  # type: ignore[arg-type]


async def test_wait_accepts_zero_and_none() -> None:
    n = FakeNode()
    m = await asyncio.wait_for(n.wait(0).state(ServerState.FOLLOWER), 1.0)
    assert m.state == ServerState.FOLLOWER
    with pytest.raises(WaitTimeout):
        await asyncio.wait_for(n.wait(0).state(ServerState.LEADER), 1.0)
    later(n.set, state=ServerState.LEADER)
    m = await asyncio.wait_for(Wait(n.watch, None).state(ServerState.LEADER), 1.0)
    assert m.state == ServerState.LEADER


async def test_a_stopped_node_fails_the_wait_with_its_own_error() -> None:
    """The core sets ``watch.fatal`` before its last change: waiters raise that error."""
    n = FakeNode()
    w = asyncio.ensure_future(n.wait(None).state(ServerState.LEADER))
    await asyncio.sleep(0)
    err = StorageError("appending 1-5..1-9", OSError("disk gone"))
    n.watch.fatal = err
    later(n.set, running=False, error=str(err))
    with pytest.raises(StorageError) as info:
        await asyncio.wait_for(w, 1.0)
    assert info.value is err
    with pytest.raises(StorageError):
        await asyncio.wait_for(n.wait(0).state(ServerState.LEADER), 1.0)


async def test_applied_waiters_wake_when_their_index_is_applied_or_the_node_stops() -> None:
    """``applied_at_least``: woken at the first change at which its index is applied (not
    at other changes), all of them at the change after ``fatal`` is set; one given up on
    affects no other, and those given up on do not pile up."""
    applied = [-1]
    watch = MetricsWatch(FakeNode().build, lambda: applied[0])
    futs = {i: watch.applied_at_least(i) for i in (3, 1, 2, 7)}
    watch.mark_changed()  # nothing applied
    assert not any(f.done() for f in futs.values())
    futs[2].cancel()
    applied[0] = 2
    watch.mark_changed()
    assert futs[1].done() and futs[2].cancelled() and not futs[3].done() and not futs[7].done()
    applied[0] = 5
    watch.release_index_waiters()  # as a publisher that skips mark_changed
    assert futs[3].done() and not futs[7].done()
    for _ in range(1000):  # given up on before their index: compacted away
        watch.applied_at_least(10**9).cancel()
    assert len(watch._keyed["applied"].heap) < 200
    watch.fatal = Fatal("stopped")
    watch.mark_changed()
    assert futs[7].done()
    assert not watch._keyed["applied"].heap or all(w[2].done() for w in watch._keyed["applied"].heap)


async def test_applied_waiters_without_an_applied_index_wake_at_every_change() -> None:
    watch = MetricsWatch(FakeNode().build)
    fut = watch.applied_at_least(5)
    watch.mark_changed()
    assert fut.done()


@pytest.mark.parametrize("kind,field,value", [
    ("log", "last_log_index", lambda i: i),
    ("snapshot", "snapshot", lambda i: LogId(1, i)),
    ("purged", "purged", lambda i: LogId(1, i)),
])
async def test_index_waits_sleep_until_their_index_is_reached(kind: str, field: str, value: Any) -> None:
    """``log_index_at_least``, ``snapshot`` and ``purged`` with the watch's getter of that
    index: a waiter reads the metrics at its start and once its index is reached (or the
    node stops), not at every change (each of a write's changes woke every one of them: a
    thousand pending waiters made 300 writes take 1.5-2 s instead of 30 ms)."""
    n = FakeNode()
    index = [-1]
    n.watch = MetricsWatch(n.build, **{f"{kind}_index": lambda: index[0]})
    waits = {"log": lambda w, i: w.log_index_at_least(i), "snapshot": lambda w, i: w.snapshot(i),
             "purged": lambda w, i: w.purged(i)}
    far = asyncio.ensure_future(waits[kind](n.wait(None), 10**6))
    near = asyncio.ensure_future(waits[kind](n.wait(None), 5))
    await asyncio.sleep(0)
    builds = n.builds
    for i in range(5):  # changes below either index: nobody wakes, nothing is rebuilt
        index[0] = i
        n.set(**{field: value(i)})
        await asyncio.sleep(0)
    assert n.builds == builds and not near.done()
    index[0] = 5
    n.set(**{field: value(5)})
    m = await asyncio.wait_for(near, 1)
    assert getattr(m, field) == value(5) and not far.done()
    assert n.builds == builds + 1, "only the woken waiter read the metrics"
    n.watch.fatal = Fatal("stopped")
    n.set(running=False)
    with pytest.raises(Fatal):
        await asyncio.wait_for(far, 1)
