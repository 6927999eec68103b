"""``metrics_view.Publisher``: after each core pass it tells the node's ``MetricsWatch`` about
changes. With nobody waiting it only marks the metrics for a rebuild at the next read (no key
computed); with a waiter it wakes it when, and only when, the metrics' key moved."""

from __future__ import annotations

import asyncio

from openraft_py.core.metrics_view import Publisher, build
from openraft_py.engine import Engine
from openraft_py.metrics import MetricsWatch
from openraft_py.types import AppendEntriesRequest

from .helpers import TX, ents, lid, make_engine, vote

L = vote(2, 1, True)


def follower() -> tuple[Engine, MetricsWatch, Publisher]:
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=L)
    watch = MetricsWatch(lambda: build(eng, None))
    return eng, watch, Publisher(eng, watch)


def append(eng: Engine, index: int) -> None:
    """The leader's request appends entry ``index`` (the log's last index moves)."""
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, index - 1), ents((1, index)), None), TX, now=10.0)
    eng.take_commands()


async def test_without_waiters_a_read_sees_the_state_of_now() -> None:
    eng, watch, pub = follower()
    assert watch.current.last_log_index == 1
    append(eng, 2)
    pub.publish()
    assert watch.current.last_log_index == 2


async def test_a_waiter_wakes_at_a_change_and_not_without_one() -> None:
    eng, watch, pub = follower()
    pub.publish()  # no waiter: no key computed, nothing remembered
    assert pub._key == ()
    watch.changed()
    pub.publish()  # the first pass with a waiter computes the key (and may wake it)
    assert pub._key != ()
    fut = watch.changed()
    pub.publish()  # nothing moved
    await asyncio.sleep(0)
    assert not fut.done()
    append(eng, 2)
    pub.publish()
    assert fut.done()
    assert watch.current.last_log_index == 2


async def test_a_waiter_wakes_when_the_leader_is_no_longer_named() -> None:
    # The election timer fires: a pre-vote round changes neither the state nor the vote,
    # but the metrics name no leader any more (Engine.current_leader).
    eng, watch, pub = follower()
    assert watch.current.current_leader == 1
    watch.changed()
    pub.publish()
    fut = watch.changed()
    eng.handle_tick(eng.election_deadline)
    eng.take_commands()
    pub.publish()
    assert fut.done()
    assert watch.current.current_leader is None


def test_a_bypass_of_the_read_only_replication_never_reaches_the_node() -> None:
    """``dict``'s methods called unbound on a metrics value's ``replication`` are not refused
    (no ``dict`` subclass can refuse them: ``types._ReadOnlyDict``, unsupported); what they
    change is that value alone. The leader's progress, and the metrics built at its next
    change, are the node's own: each build copies the progress (a replication holding the
    progress table's own dict would have let the bypass lower a matched index)."""
    from .helpers import make_idle_leader

    eng = make_idle_leader()
    watch = MetricsWatch(lambda: build(eng, None))
    pub = Publisher(eng, watch)
    m = watch.current
    assert m.replication is not None
    want = dict(m.replication)
    assert want == {1: 1, 2: 1, 3: 1}
    dict.__setitem__(m.replication, 2, -1)
    dict.update(m.replication, {9: 0})
    assert m.replication == {1: 1, 2: -1, 3: 1, 9: 0}, "(the bypass itself: not refused)"
    assert eng.leader is not None and eng.leader.progress.as_dict() == want
    pub.publish(force=True)
    assert watch.current is not m and watch.current.replication == want


class _CountingWatch(MetricsWatch):
    """A ``MetricsWatch`` counting the reads of its ``waiters``."""

    waiters_read = 0

    def __getattribute__(self, name: str) -> object:
        if name == "waiters":
            type(self).waiters_read += 1
        return super().__getattribute__(name)


async def test_a_pass_without_waiters_does_not_look_up_the_watchs_waiters() -> None:
    # ``publish`` runs after every pass of the core (four a write on a 3-node cluster): the
    # watch's ``waiters`` (which the watch keeps for its life) is taken once, at
    # construction, not looked up by name at every pass (a lookup of an attribute of a
    # Python object from compiled code, or of a compiled type from Python, goes through
    # the generic path: the thirty-eighth round of docs/design/performance.md).
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=L)
    watch = _CountingWatch(lambda: build(eng, None))
    pub = Publisher(eng, watch)
    pub.publish()  # the metrics marked for a rebuild at the next read: the steady state
    assert watch.dirty
    _CountingWatch.waiters_read = 0
    for i in range(2, 12):
        append(eng, i)
        pub.publish()
    assert _CountingWatch.waiters_read == 0
    # The same behaviour: a read sees the state of now, and a waiter that comes wakes at
    # the next change.
    assert watch.current.last_log_index == 11
    changed = watch.changed()
    append(eng, 12)
    pub.publish()
    await asyncio.wait_for(changed, 2)


async def test_a_pass_without_waiters_releases_an_index_waiter_added_since() -> None:
    # The steady state's test (the metrics marked, nobody waiting for a change) calls
    # ``release_index_waiters`` only while the watch's ``index_waited`` is not empty: the
    # list the publisher took at construction is the one ``at_least`` fills later.
    eng = make_engine(id=2, log=[(0, 0), (1, 1)], vote=L)
    watch = MetricsWatch(lambda: build(eng, None), log_index=eng.state.last_index)
    pub = Publisher(eng, watch)
    pub.publish()
    assert watch.dirty
    fut = watch.at_least("log", 3)
    assert watch.index_waited
    append(eng, 2)
    pub.publish()
    assert not fut.done()
    append(eng, 3)
    pub.publish()
    assert fut.done() and fut.result() is None
    assert not watch.index_waited  # (emptied in place)
