"""Engine unit tests: the test-only bug switches (``openraft_py.engine.faults``).

Each switch changes exactly the commands of the rule it breaks; with none on the engine
follows the rule. The simulator tests (tests/sim) prove the checks catch each one.
"""

from __future__ import annotations

import pytest

from openraft_py.engine import Respond, SaveCommittedAndApply
from openraft_py.engine.faults import NO_FAULTS, EngineFault, inject, parse_faults
from openraft_py.errors import QuorumNotEnough
from openraft_py.types import AppendEntriesRequest, AppendEntriesResponse, ReadPolicy, VoteRequest, VoteResponse

from .helpers import TX, lid, make_engine, make_leader, vote


def test_production_engine_has_no_fault_on() -> None:
    eng = make_engine()
    assert eng.injected_faults == NO_FAULTS and eng.faults == frozenset()


def test_inject_takes_members_or_names_and_replaces() -> None:
    eng = make_engine()
    inject(eng, {EngineFault.APPLY_BEFORE_COMMIT, "expired_lease_read"})
    assert eng.injected_faults == {EngineFault.APPLY_BEFORE_COMMIT, EngineFault.EXPIRED_LEASE_READ}
    inject(eng, ["commit_previous_term"])
    assert eng.injected_faults == {EngineFault.COMMIT_PREVIOUS_TERM}
    inject(eng, ())
    assert eng.injected_faults == NO_FAULTS


def test_unknown_name_is_refused_and_changes_nothing() -> None:
    eng = make_engine()
    inject(eng, {EngineFault.APPLY_BEFORE_COMMIT})
    with pytest.raises(ValueError, match="unknown engine fault 'no_such_bug'; known: grant_without_log_check"):
        inject(eng, {"apply_before_commit", "no_such_bug"})
    assert eng.injected_faults == {EngineFault.APPLY_BEFORE_COMMIT}


def test_assigning_names_to_faults_is_inject() -> None:
    """Older callers assign a set of names to ``engine.faults``; it still switches them on."""
    eng = make_engine()
    eng.faults = {"grant_without_log_check"}  # type: ignore[assignment]
    assert eng.injected_faults == {EngineFault.GRANT_WITHOUT_LOG_CHECK}
    with pytest.raises(ValueError):
        eng.faults = {"nope"}  # type: ignore[assignment]


def test_every_switch_has_a_distinct_stable_name() -> None:
    names = [f.value for f in EngineFault]
    assert len(set(names)) == len(names) == 5
    assert parse_faults(names) == frozenset(EngineFault)


LOG3 = [(0, 0), (1, 1), (1, 2), (1, 3)]


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_apply_before_commit(on: bool) -> None:
    eng = make_engine(id=2, log=LOG3, vote=(2, 1, True))
    if on:
        inject(eng, {EngineFault.APPLY_BEFORE_COMMIT})
    L = vote(2, 1, True)
    eng.handle_append_entries(AppendEntriesRequest(L, lid(1, 3), [], lid(1, 1)), TX, now=0.0)
    ok = Respond(TX, AppendEntriesResponse(L, True, matching=lid(1, 3)), when=0)
    committed = lid(1, 3) if on else lid(1, 1)
    assert eng.take_commands() == [ok, SaveCommittedAndApply(committed, when=0)]


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_grant_without_log_check(on: bool) -> None:
    eng = make_engine(id=2, log=LOG3, vote=(1, 1))
    if on:
        inject(eng, {"grant_without_log_check"})
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 1)), TX, now=0.0)
    resp = eng.take_commands()[-1]
    assert isinstance(resp, Respond) and isinstance(resp.value, VoteResponse)
    assert resp.value.vote_granted is on, "a candidate missing entries is granted only with the bug on"


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_reply_before_vote_persisted(on: bool) -> None:
    eng = make_engine(id=2, log=LOG3, vote=(1, 1))
    if on:
        inject(eng, {EngineFault.REPLY_BEFORE_VOTE_PERSISTED})
    eng.handle_vote_req(VoteRequest(vote(2, 3), lid(1, 3)), TX, now=0.0)
    resp = eng.take_commands()[-1]
    assert isinstance(resp, Respond) and resp.value.vote_granted
    assert resp.when == (None if on else 1), "the grant waits for the vote write (io 1) unless the bug is on"


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_expired_lease_read(on: bool) -> None:
    eng = make_leader(now=0.0)
    if on:
        inject(eng, {EngineFault.EXPIRED_LEASE_READ})
    eng.handle_read(TX, ReadPolicy.LEASE_READ, now=10_000.0)  # no follower ever acked
    (resp,) = eng.take_commands()
    assert isinstance(resp, Respond)
    if on:
        assert resp.value == lid(1, 1)
    else:
        assert isinstance(resp.value, QuorumNotEnough)


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_commit_previous_term(on: bool) -> None:
    # Leader of term 3 with entries of term 1 not yet committed; its blank entry is (3, 4).
    eng = make_leader(log=[(0, 0), (1, 1), (1, 2), (1, 3)], vote=(2, 1, True))
    if on:
        inject(eng, {EngineFault.COMMIT_PREVIOUS_TERM})
    eng.handle_replication_progress(2, eng.leader.vote, lid(1, 3), sent_at=0.0)  # type: ignore[union-attr]
    cmds = eng.take_commands()
    applied = [c for c in cmds if isinstance(c, SaveCommittedAndApply)]
    if on:
        assert [c.committed for c in applied] == [lid(1, 3)]
    else:
        assert applied == [], "an entry of a previous term is not committed by counting replicas"



def test_the_simulator_offers_exactly_these_switches() -> None:
    """The simulator's ``--fault`` choices (and the Jepsen runner's env check) are names of
    ``EngineFault``: a switch added here without the simulator, or the other way, fails."""
    from openraft_py.testing.sim import ENGINE_FAULTS

    assert sorted(ENGINE_FAULTS) == sorted(f.value for f in EngineFault)
