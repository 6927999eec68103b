"""Engine unit tests: per-target replication progress (``engine/progress.py``) and the
``Replicate`` / ``SendSnapshot`` commands it plans, driven by the results the runtime reports.

Leader 1 of term 1 (``L1``). ``Replicate(target, gen, prev, start, end, committed)``: one
AppendEntries of ``[start, end)`` after ``prev``; ``gen`` is the target's request generation.
"""

from __future__ import annotations

from openraft_py.config import Config, SnapshotPolicy
from openraft_py.engine import (
    OUTSIDE_WINDOW,
    AppendEntries,
    Conflict,
    EntriesPurged,
    Heartbeat,
    Matched,
    PurgeLog,
    Rejected,
    Replicate,
    SaveCommittedAndApply,
    SendSnapshot,
    SnapshotSent,
    StartReplication,
    StopReplication,
    Unreachable,
)
from openraft_py.types import BasicNode, Normal, SnapshotMeta, StoredMembership

from .helpers import ent, flush, lid, make_idle_leader, make_leader, membership, vote

L1 = vote(1, 1, True)
WINDOW = Config(max_inflight_requests=3, max_payload_entries=2)


def write(eng, n: int) -> None:
    """Append ``n`` entries on leader ``eng`` and make them durable there."""
    eng.client_write([Normal(b"x")] * n)
    flush(eng)


# -- pipelining ---------------------------------------------------------------------------------


def test_pipelining_fills_the_window_and_each_answer_frees_one_slot():
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 9)  # 1-2 .. 1-10
    cmds = eng.take_commands()
    assert cmds[0] == AppendEntries(cmds[0].entries, 4)
    assert cmds[1:] == [
        Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1)),
        Replicate(2, 1, lid(1, 3), 4, 6, lid(1, 1)),
        Replicate(2, 1, lid(1, 5), 6, 8, lid(1, 1)),
    ], "max_inflight_requests=3 requests of max_payload_entries=2 entries, then the window is full"
    eng.leader_heartbeat(1.0)
    assert eng.take_commands() == [], "a full window defers the heartbeat too"
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 3), 1.0))
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 3)),
        Replicate(2, 1, lid(1, 7), 8, 10, lid(1, 3)),
    ], "the freed slot takes the next entries (it is the deferred heartbeat too); the commit rides along"
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 5), 2.0))
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 5)),
        Replicate(2, 1, lid(1, 9), 10, 11, lid(1, 5)),
    ]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 7), 3.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 7))], "everything is in flight: nothing to send"
    eng.leader_heartbeat(4.0)
    assert eng.take_commands() == [Replicate(2, 1, lid(1, 10), 11, 11, lid(1, 7))], (
        "a heartbeat with room in the window: an empty request after the last entry"
    )


def test_writes_of_one_batch_go_out_in_one_request():
    eng = make_idle_leader(voters={1, 2})
    eng.client_write([Normal(b"a")])
    eng.client_write([Normal(b"b")])
    assert eng.take_commands() == [
        AppendEntries([ent(1, 2, b"a")], 4),
        AppendEntries([ent(1, 3, b"b")], 5),
        Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1)),
    ], "requests are planned when the commands are taken, after every event of the batch"


# -- probing, conflicts and back-off ----------------------------------------------------------


def test_a_new_leader_probes_each_target_with_one_request():
    eng = make_leader(voters={1, 2}, config=WINDOW)
    write(eng, 4)
    assert [type(c) for c in eng.take_commands()] == [AppendEntries], "the election's probe is in flight"
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 1), 1.0))
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(1, 1)),
        Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1)),
        Replicate(2, 1, lid(1, 3), 4, 6, lid(1, 1)),
    ], "the probe matched: pipelining"


def test_conflict_probes_from_the_hint_with_one_request_in_flight():
    """The follower lost 2-5 and 2-6 (say, they were not durable when it restarted): every
    pipelined request conflicts. The first conflict starts a new generation probing from its
    hint; the others, of the old generation, only free their slots."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW, log=[(0, 0), (1, 1), (1, 2), (1, 3)], vote=(1, 2))
    L2 = vote(2, 1, True)
    write(eng, 5)  # 2-5 .. 2-9 after the blank 2-4
    assert eng.take_commands()[1:] == [
        Replicate(2, 1, lid(2, 4), 5, 7, lid(2, 4)),
        Replicate(2, 1, lid(2, 6), 7, 9, lid(2, 4)),
        Replicate(2, 1, lid(2, 8), 9, 10, lid(2, 4)),
    ]
    eng.handle_replication_result(Conflict(2, L2, 1, 5, 1.0))
    assert eng.take_commands() == [], "probing allows one request in flight: two still are"
    eng.handle_replication_result(Conflict(2, L2, 1, 5, 1.0))
    assert eng.take_commands() == []
    eng.handle_replication_result(Conflict(2, L2, 1, 5, 1.0))
    assert eng.take_commands() == [Replicate(2, 2, lid(2, 4), 5, 7, lid(2, 4))], "the probe, from the hint"
    eng.handle_replication_result(Matched(2, L2, 2, lid(2, 6), 2.0))
    assert eng.take_commands() == [
        SaveCommittedAndApply(lid(2, 6)),
        Replicate(2, 2, lid(2, 6), 7, 9, lid(2, 6)),
        Replicate(2, 2, lid(2, 8), 9, 10, lid(2, 6)),
    ], "the probe matched: pipelining again"


def test_conflict_hint_moves_next_back_but_never_below_the_match():
    eng = make_idle_leader(voters={1, 2}, log=[(0, 0), (1, 1), (1, 2), (1, 3), (1, 4)], vote=(1, 2))
    L2 = vote(2, 1, True)
    # The probe matched everything up to the blank 2-5; a write goes out.
    write(eng, 1)
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(2, 5), 6, 7, lid(2, 5))]
    eng.handle_replication_result(Conflict(2, L2, 1, 2, 1.0))
    assert eng.take_commands() == [Replicate(2, 2, lid(2, 5), 6, 7, lid(2, 5))], (
        "hint 2 is below what matched (2-5): resend from 6"
    )
    eng.handle_replication_result(Conflict(2, L2, 2, 6, 2.0))
    assert eng.take_commands() == [Replicate(2, 3, lid(2, 5), 6, 7, lid(2, 5))]


def test_a_follower_that_lost_acknowledged_entries_is_replicated_to_again_from_its_hint():
    """The follower acknowledged matching up to 2-5, then lost its log (its storage wiped or
    restored from an older copy while it was down) and refuses a request whose prev_log_id
    (2-5) it had matched. Its progress starts over from its hint (its log ends at 1-1), and
    the commit stays. Resending from matched + 1 conflicted again at once, for good: the
    leader probed in a busy loop and the follower never caught up."""
    eng = make_idle_leader(voters={1, 2}, log=[(0, 0), (1, 1), (1, 2), (1, 3), (1, 4)], vote=(1, 2))
    L2 = vote(2, 1, True)
    write(eng, 1)
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(2, 5), 6, 7, lid(2, 5))]
    committed = eng.state.committed
    eng.handle_replication_result(Conflict(2, L2, 1, 2, 1.0, 6))
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 7, lid(2, 5))], "from the hint, 2"
    assert eng.leader.replication[2].matched == -1 and eng.leader.progress.as_dict()[2] == -1
    assert eng.state.committed == committed, "the commit never moves back"
    eng.handle_replication_result(Matched(2, L2, 2, lid(2, 6), 2.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(2, 6))]
    assert eng.leader.replication[2].matched == 6


def test_conflict_hint_jumps_back_over_a_whole_term():
    eng = make_leader(voters={1, 2}, log=[(0, 0), (1, 1), (1, 2), (1, 3), (1, 4)], vote=(1, 2))
    L2 = vote(2, 1, True)
    # The election's probe (blank 2-5 after 1-4) conflicts: the follower's log ends at 1-1.
    eng.handle_replication_result(Conflict(2, L2, 1, 2, 1.0))
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 6, None)]
    eng.handle_replication_result(Matched(2, L2, 2, lid(2, 5), 2.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(2, 5))]


def test_unreachable_backs_off_a_heartbeat_interval_then_probes_from_the_match():
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 4)  # 1-2 .. 1-5
    assert [c.start for c in eng.take_commands()[1:]] == [2, 4]
    eng.handle_replication_result(Unreachable(2, L1, 1, 2))
    eng.handle_replication_result(Unreachable(2, L1, 1, 4))
    eng.handle_tick(49.0)
    assert eng.take_commands() == [], "backing off: not even a heartbeat"
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 4, lid(1, 1))], (
        "after heartbeat_interval (50 ms): one probe from the first index not known to match"
    )


def test_a_triggered_heartbeat_ends_an_expired_back_off():
    eng = make_idle_leader(voters={1, 2}, config=Config(enable_tick=False))
    write(eng, 1)
    eng.take_commands()
    eng.handle_replication_result(Unreachable(2, L1, 1, 2))
    eng.leader_heartbeat(10.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], (
        "the back-off runs until 50 ms: a heartbeat (node 2 answered lately), not the probe"
    )
    eng.leader_heartbeat(50.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 3, lid(1, 1))], "ticks off: the heartbeat ends it"


def test_rejected_by_a_greater_vote_steps_down():
    eng = make_idle_leader(voters={1, 2})
    write(eng, 1)
    eng.take_commands()
    eng.handle_replication_result(Rejected(2, L1, 1, vote(2, 2, True)))
    cmds = eng.take_commands()
    assert cmds[1:] == [StopReplication()] and eng.leader is None


def test_results_of_another_leadership_are_ignored():
    eng = make_idle_leader(voters={1, 2})
    write(eng, 1)
    eng.take_commands()
    eng.handle_replication_result(Matched(2, vote(0, 1, True), 1, lid(1, 2), 1.0))
    assert eng.take_commands() == [] and eng.state.committed == lid(1, 1)


# -- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_sends_each_idle_target_an_empty_request():
    eng = make_idle_leader(voters={1, 2, 3})
    eng.handle_tick(50.0)
    assert eng.take_commands() == [
        Replicate(2, 1, lid(1, 1), 2, 2, lid(1, 1)),
        Replicate(3, 2, lid(1, 1), 2, 2, lid(1, 1)),
    ]


def test_heartbeat_ends_a_back_off_and_waits_behind_nothing_else():
    eng = make_idle_leader(voters={1, 2, 3}, config=WINDOW)
    write(eng, 1)
    assert eng.take_commands()[1:] == [
        Replicate(2, 1, lid(1, 1), 2, 3, lid(1, 1)),
        Replicate(3, 2, lid(1, 1), 2, 3, lid(1, 1)),
    ]
    eng.handle_replication_result(Unreachable(2, L1, 1, 2))
    assert eng.take_commands() == []
    eng.handle_tick(50.0)
    assert eng.take_commands() == [
        Replicate(2, 3, lid(1, 1), 2, 3, lid(1, 1)),
        Heartbeat(3, lid(1, 1), lid(1, 1)),
    ], "node 2's back-off ends: its probe carries 1-2 again; node 3, its request unanswered, gets a heartbeat beside it"


def test_a_heartbeat_round_finding_the_probe_window_full_sends_a_heartbeat_beside_it():
    """A request that timed out is probed again alone (its entries may take longer than the
    replication deadline again): the heartbeat rounds go beside the full window, after the
    target's matched entry, take no slot, and their answers keep the leadership."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 1)  # 1-2
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(1, 1), 2, 3, lid(1, 1))]
    eng.handle_replication_result(Unreachable(2, L1, 1, 2))
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 3, lid(1, 1))], "the probe, alone in the window"
    eng.handle_tick(100.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], "beside the probe: after what node 2 matched"
    p = eng.leader.replication[2]
    assert (p.inflight, p.next_index, p.gen, p.probing) == (1, 3, 2, True), "the window is as it was"
    eng.handle_tick(120.0)
    assert eng.take_commands() == [], "one heartbeat a round"
    eng.handle_replication_progress(2, L1, lid(1, 1), 100.0)
    assert eng.take_commands() == [] and eng.leader.ack_at[2] == 100.0 and p.inflight == 1
    eng.handle_tick(150.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))]
    eng.handle_replication_progress(2, L1, lid(1, 1), 150.0)
    eng.handle_tick(400.0)  # more than election_timeout_max (300 ms) after the last answer to a Replicate
    assert eng.leader is not None, "the heartbeats' answers kept the leadership"
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))]
    eng.handle_replication_result(Matched(2, L1, 2, lid(1, 2), 50.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 2))], "the probe's answer commits 1-2"
    assert (p.matched, p.inflight, p.probing) == (2, 0, False)


def test_a_heartbeat_round_during_a_back_off_heartbeats_a_target_that_answered_lately():
    """A request carrying entries times out at each resend while the target answers the
    heartbeats beside it (an entry that outlasts the replication deadline, or a replication
    connection stuck while the heartbeat connection works): the back-off after each timeout
    sends the target nothing, and the resent probe carries entries again, so the target heard
    from its leader last at the round before the timeout and next at the round after the
    probe's resend: up to three heartbeat intervals (150 ms with the defaults, as long as
    election_timeout_min), and a follower's election timer ran out under a little scheduling
    delay (it campaigned; without pre-vote it deposed the leader). A heartbeat round now
    heartbeats a target backing off that answered within election_timeout_max."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 1)  # 1-2
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(1, 1), 2, 3, lid(1, 1))]
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))]
    eng.handle_replication_progress(2, L1, lid(1, 1), 50.0)  # (the heartbeat's answer)
    eng.handle_tick(80.0)
    assert eng.take_commands() == []
    eng.handle_replication_result(Unreachable(2, L1, 1, 2))  # the request with 1-2 timed out at 80 ms
    assert eng.take_commands() == [], "backing off until 130 ms"
    eng.handle_tick(100.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], (
        "a heartbeat round while backing off: node 2 answered a request sent 50 ms ago"
    )
    p = eng.leader.replication[2]
    assert (p.inflight, p.backoff_until, p.next_index) == (0, 130.0, 2), "the back-off and the window as they were"
    eng.handle_tick(120.0)
    assert eng.take_commands() == [], "one heartbeat a round"
    eng.handle_tick(130.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 1), 2, 3, lid(1, 1))], "the back-off ends: the probe"
    eng.handle_tick(150.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], "beside the probe"


def test_a_target_silent_for_an_election_timeout_gets_nothing_while_backing_off():
    """A target that answered nothing sent in the last election_timeout_max is down or cut
    off: a heartbeat round while it backs off sends it nothing (as before)."""
    eng = make_idle_leader(voters={1, 2, 3}, config=WINDOW)  # every target answered at 0 ms
    write(eng, 1)  # 1-2
    eng.take_commands()
    eng.handle_replication_result(Matched(3, L1, 2, lid(1, 2), 0.0))
    eng.take_commands()
    for t in range(50, 401, 50):
        eng.handle_tick(t - 30.0)
        eng.take_commands()
        eng.handle_replication_result(Unreachable(2, L1, eng.leader.replication[2].gen, 2))  # back off 50 ms
        eng.handle_replication_progress(3, L1, lid(1, 2), t - 30.0)
        eng.handle_tick(float(t))  # a heartbeat round
        to_2 = [c for c in eng.take_commands() if c.target == 2]
        if t <= 300:
            assert to_2 == [Heartbeat(2, lid(1, 1), lid(1, 2))], f"at {t} ms"
        else:
            assert to_2 == [], f"at {t} ms: node 2 answered nothing sent in the last 300 ms, yet was sent {to_2}"
        eng.handle_tick(t + 20.0)
        assert [c.target for c in eng.take_commands()] == [2], "the probe after the back-off"


def test_a_target_that_never_answered_gets_nothing_while_backing_off_early_on_the_clock():
    """A target that never answered this leader answered nothing sent within
    ``election_timeout_max``, however early the clock reads (a clock that starts at 0, as
    the simulator's and a test's do). ``acked_at`` was -1 for it, and the round read that as
    a send time: in the first ``election_timeout_max`` of such a clock, a target that had
    never answered (down since before the election) was sent a heartbeat at every round of
    its back-off."""
    eng = make_leader(voters={1, 2})  # elected at 0 ms: the blank entry's probe to 2 is in flight
    eng.take_commands()
    eng.handle_replication_result(Unreachable(2, L1, 1, 1))  # at 0 ms: back off until 50 ms
    assert eng.take_commands() == []
    eng.leader_heartbeat(40.0)  # a heartbeat round while it backs off
    assert eng.take_commands() == [], "node 2 never answered: nothing while it backs off"
    eng.leader_heartbeat(50.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(0, 0), 1, 2, None)], "the back-off ends: the probe"


def test_a_new_leader_heartbeats_beside_its_first_probe_after_nothing():
    eng = make_leader(voters={1, 2})
    eng.take_commands()
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Heartbeat(2, None, None)], "nothing acknowledged yet: prev is None"


def test_a_full_window_whose_target_answers_keeps_the_heartbeat_for_a_free_slot():
    """Under load the window is often full, and the target answers: the round waits for a
    slot as before (no request beside the window), unless nothing sent within the last half
    interval was answered."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 9)  # 1-2 .. 1-10
    assert [c.start for c in eng.take_commands()[1:]] == [2, 4, 6]
    eng.handle_tick(40.0)
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 3), 40.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 3)), Replicate(2, 1, lid(1, 7), 8, 10, lid(1, 3))]
    eng.handle_tick(50.0)
    assert eng.take_commands() == [], "node 2 answered a request sent 10 ms ago: no heartbeat beside the window"
    eng.handle_tick(100.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 3), lid(1, 3))], "nothing answered for 60 ms"


def test_a_heartbeat_goes_beside_unanswered_requests_even_with_room_in_the_window():
    """The window has room, but the requests in flight go unanswered (a batch of large
    entries sent as parts, one round trip each; a transport carrying them in order on one
    connection): the round's heartbeat goes beside them, not into the window behind them,
    and new entries still fill the window. Before, the heartbeat was an empty request
    pipelined behind the slow ones (or the next batch, behind them too): under 64 concurrent
    1 MB writes the leader heard only their answers, each sent more than an election timeout
    before, and check-quorum deposed it."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 2)  # 1-2, 1-3: one request, one slot of three
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1))]
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], "beside the request, not behind it"
    p = eng.leader.replication[2]
    assert (p.inflight, p.next_index) == (1, 4), "it takes no slot"
    eng.handle_replication_progress(2, L1, lid(1, 1), 90.0)  # (a heartbeat's answer)
    write(eng, 1)  # 1-4
    eng.handle_tick(100.0)
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(1, 3), 4, 5, lid(1, 1))], (
        "node 2 answered a request sent 10 ms ago: the new entry's request is the round's heartbeat"
    )
    eng.handle_tick(150.0)
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))], "nothing answered for 100 ms: beside again"
    eng.handle_replication_progress(2, L1, lid(1, 1), 150.0)
    eng.handle_tick(440.0)  # more than election_timeout_max (300 ms) after the requests left
    assert eng.leader is not None, "the heartbeats' answers keep the leadership"
    assert eng.take_commands() == [Heartbeat(2, lid(1, 1), lid(1, 1))]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 3), 0.0))
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 4), 100.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 3)), SaveCommittedAndApply(lid(1, 4))]
    assert p.inflight == 0
    eng.handle_replication_progress(2, L1, lid(1, 1), 440.0)
    eng.handle_tick(490.0)
    assert eng.take_commands() == [Replicate(2, 1, lid(1, 4), 5, 5, lid(1, 4))], "nothing in flight: in the window"


def test_a_heartbeats_greater_vote_steps_down_and_its_result_frees_no_slot():
    eng = make_idle_leader(voters={1, 2, 3}, config=WINDOW)
    write(eng, 1)
    eng.take_commands()
    p = eng.leader.replication[2]
    eng.handle_replication_result(Matched(2, L1, OUTSIDE_WINDOW, lid(1, 2), 1.0))
    assert p.inflight == 1 and p.matched == 2, "a result outside the window only moves the match"
    eng.handle_replication_result(Rejected(2, L1, OUTSIDE_WINDOW, vote(2, 2, True)))
    assert eng.leader is None and StopReplication() in eng.take_commands()


# -- snapshots ----------------------------------------------------------------------------------


def purged_leader():
    """Idle leader of {1,2,3} whose entries up to 1-5 are committed, applied, snapshotted and
    purged; node 2 matched 1-5, node 3's request for 1-2..1-5 is in flight."""
    eng = make_idle_leader(voters={1, 2, 3}, config=Config(snapshot_policy=SnapshotPolicy.never()))
    write(eng, 4)
    assert eng.take_commands()[1:] == [
        Replicate(2, 1, lid(1, 1), 2, 6, lid(1, 1)),
        Replicate(3, 2, lid(1, 1), 2, 6, lid(1, 1)),
    ]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 5), 1.0))
    eng.handle_applied(lid(1, 5))
    sm = StoredMembership(lid(0, 0), membership({1, 2, 3}))
    eng.handle_snapshot_built(SnapshotMeta(lid(1, 5), sm, "s-5"))
    assert eng.trigger_purge_log(5) == lid(1, 5)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 5)), PurgeLog(lid(1, 5), eng.state.io.submitted)]
    return eng


def test_entries_purged_before_the_read_send_the_snapshot():
    eng = purged_leader()
    eng.handle_replication_result(EntriesPurged(3, L1, 2, 2))
    assert eng.take_commands() == [SendSnapshot(3, 4, lid(1, 5))]
    eng.leader_heartbeat(2.0)
    assert eng.take_commands() == [Replicate(2, 1, lid(1, 5), 6, 6, lid(1, 5))], (
        "the transfer holds node 3's one slot"
    )
    eng.handle_replication_result(SnapshotSent(3, L1, 4, lid(1, 5), 3.0))
    assert eng.take_commands() == [Replicate(3, 5, lid(1, 5), 6, 6, lid(1, 5))], (
        "then a probe after the snapshot's last log id"
    )
    assert eng.leader.progress.as_dict()[3] == 5


def test_conflict_into_the_purged_range_sends_the_snapshot():
    eng = purged_leader()
    eng.handle_replication_result(Conflict(3, L1, 2, 1, 1.0))
    assert eng.take_commands() == [SendSnapshot(3, 4, lid(1, 5))]


def test_no_snapshot_yet_backs_off_and_tries_again():
    eng = purged_leader()
    eng.handle_replication_result(EntriesPurged(3, L1, 2, 2))
    eng.take_commands()
    eng.handle_replication_result(SnapshotSent(3, L1, 4, None, 0.0))
    assert eng.take_commands() == []
    eng.handle_tick(50.0)
    assert eng.take_commands() == [Replicate(2, 1, lid(1, 5), 6, 6, lid(1, 5)), SendSnapshot(3, 5, lid(1, 5))]


# -- targets come and go ------------------------------------------------------------------------


def test_step_down_clears_progress():
    eng = make_idle_leader(voters={1, 2})
    write(eng, 1)
    eng.take_commands()
    eng.elect(100.0)
    assert eng.take_commands()[0] == StopReplication()
    assert eng.leader is None
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 2), 1.0))
    eng.leader_heartbeat(101.0)
    assert [c for c in eng.take_commands() if isinstance(c, Replicate)] == [], "no progress left to plan"


def test_a_re_added_target_ignores_results_of_its_previous_entry():
    eng = make_idle_leader(voters={1, 2})
    eng.add_learner(3, BasicNode(), "tx")
    cmds = eng.take_commands()
    assert cmds[1] == StartReplication(L1, {2: BasicNode(), 3: BasicNode()})
    assert cmds[-1] == Replicate(3, 2, lid(0, 0), 1, 3, lid(1, 1)), "a new target is probed from the blank entry"
    leader = eng.leader
    old = leader.replication[3]
    # As if node 3 was removed and added back: the next refresh makes it a fresh entry.
    del leader.replication[3]
    eng.replication_handler(leader).refresh()
    eng.take_commands()
    assert leader.replication[3] is not old and leader.replication[3].first_gen > old.gen
    eng.handle_replication_result(Conflict(3, L1, 2, 0, 1.0))
    assert leader.replication[3].inflight == 1 and leader.replication[3].next_index == 3, (
        "the old generation's conflict changes nothing of the new entry"
    )


def test_a_heartbeat_answer_below_the_matched_index_keeps_the_plan_and_counts_as_an_ack():
    """A follower flushing a long write answers a heartbeat with what it holds durably,
    which may be below what it acknowledged before (``FollowingHandler.durable_match``):
    nothing moves back, nothing is resent, and the answer keeps the leader's check-quorum."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    write(eng, 4)  # 1-2 .. 1-5
    assert eng.take_commands()[1:] == [Replicate(2, 1, lid(1, 1), 2, 4, lid(1, 1)), Replicate(2, 1, lid(1, 3), 4, 6, lid(1, 1))]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 3), 10.0))
    eng.take_commands()
    p = eng.leader.replication[2]
    eng.leader_heartbeat(200.0)
    assert eng.take_commands() == [Replicate(2, 1, lid(1, 5), 6, 6, lid(1, 3))]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 1), 200.0))  # 1-2 .. 1-5 not durable there yet
    assert eng.take_commands() == []
    assert (p.matched, p.next_index, p.inflight) == (3, 6, 1), "1-4 and 1-5 stay in flight, not resent"
    assert eng.state.committed == lid(1, 3), "the commit never moves back"
    assert eng.leader.ack_at[2] == 200.0
    eng.handle_tick(450.0)  # more than election_timeout_max after the last entries' answer
    assert eng.leader is not None, "the heartbeat's answer kept the leadership"
