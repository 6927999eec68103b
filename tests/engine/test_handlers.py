"""Engine unit tests: how the handlers are handed out (``engine/handler/__init__.py``).

A leader's handler acts for the ``Leader`` it was made for; after a step-down and a new
election the engine hands out a handler for the new ``Leader``, never the old one.
"""

from __future__ import annotations

import pytest

from openraft_py.engine import Replicate
from openraft_py.errors import ForwardToLeader
from openraft_py.types import VoteResponse

from .helpers import flush, make_idle_leader, make_leader, vote


def test_a_new_leadership_gets_new_leader_handlers() -> None:
    eng = make_leader(now=0.0)
    first = eng.leader
    assert first is not None
    lh, rh, mh = eng.leader_handler(first), eng.replication_handler(first), eng.membership_handler(first)
    assert eng.leader_handler(first) is lh, "reused while the same Leader leads"
    # A voter's greater committed vote deposes this leader; then it wins term 4 itself.
    eng.handle_higher_vote(2, first.vote, vote(3, 2, True))
    assert eng.leader is None
    eng.elect(100.0)
    flush(eng)
    eng.handle_vote_resp(2, VoteResponse(eng.state.vote, True, None), 100.0)
    second = eng.leader
    assert second is not None and second is not first
    for make, old in ((eng.leader_handler, lh), (eng.replication_handler, rh), (eng.membership_handler, mh)):
        h = make(second)
        assert h is not old and h.leader is second


def test_the_role_free_handlers_live_as_long_as_the_engine() -> None:
    eng = make_idle_leader(now=0.0)
    assert eng.vote_handler() is eng.vote_handler() and eng.log_handler() is eng.log_handler()
    out = eng.output
    eng.leader_heartbeat(10.0)
    assert [type(c) for c in eng.take_commands()] == [Replicate, Replicate]
    assert eng.output is out and out == [], "take_commands keeps the one output list the handlers hold"


def test_leader_only_requests_on_a_follower_forward() -> None:
    eng = make_leader(now=0.0)
    eng.handle_higher_vote(2, eng.leader.vote, vote(3, 2, True))  # type: ignore[union-attr]
    with pytest.raises(ForwardToLeader) as exc:
        eng.writable_leader()
    assert exc.value.leader_id == 2
