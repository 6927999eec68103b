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
