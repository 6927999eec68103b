"""Engine unit tests: a ``Replicate`` the runtime sends in parts (``Config.max_payload_bytes``,
``core/replication.py``). Each part but the last is reported with
``handle_replication_progress`` and its matching; the last with the usual result. The
engine's plan does not change: a part's match moves the target's matched index and the
commit but frees no slot and plans nothing, and a part that fails restarts the target right
after what was really matched.

Leader 1 of term 1, target 2; ``Replicate(target, gen, prev, start, end, committed)``.
"""

from __future__ import annotations

from openraft_py.config import Config
from openraft_py.engine import Matched, Replicate, SaveCommittedAndApply, Unreachable
from openraft_py.types import Normal

from .helpers import flush, lid, make_idle_leader, vote

L1 = vote(1, 1, True)
WINDOW = Config(max_inflight_requests=2, max_payload_entries=4, heartbeat_interval=50)


def leader_with_window_full():
    """Leader 1 with entries 1-2..1-9 and both slots to node 2 in flight: [2, 6) and [6, 10)."""
    eng = make_idle_leader(voters={1, 2}, config=WINDOW)
    eng.client_write([Normal(b"x")] * 8)
    flush(eng)
    assert eng.take_commands()[1:] == [
        Replicate(2, 1, lid(1, 1), 2, 6, lid(1, 1)),
        Replicate(2, 1, lid(1, 5), 6, 10, lid(1, 1)),
    ]
    return eng


def test_a_part_matched_commits_but_frees_no_slot_and_plans_nothing():
    eng = leader_with_window_full()
    eng.handle_replication_progress(2, L1, lid(1, 3), 1.0)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 3))], (
        "the part's match commits (a quorum of {1, 2} holds 1-3); the window stays full: no Replicate"
    )
    p = eng.leader.replication[2]
    assert (p.matched, p.next_index, p.inflight, p.probing) == (3, 10, 2, False)
    eng.handle_replication_progress(2, L1, lid(1, 4), 1.5)
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 4))]
    eng.handle_replication_result(Matched(2, L1, 1, lid(1, 5), 2.0))
    assert eng.take_commands() == [SaveCommittedAndApply(lid(1, 5))], (
        "the last part answers the Replicate: a slot is free, but [6, 10) is in flight and nothing is left"
    )
    p = eng.leader.replication[2]
    assert (p.matched, p.next_index, p.inflight) == (5, 10, 1)


def test_a_failed_part_restarts_the_target_right_after_what_matched():
    eng = leader_with_window_full()
    eng.handle_replication_progress(2, L1, lid(1, 3), 1.0)
    eng.take_commands()
    eng.handle_replication_result(Unreachable(2, L1, 1, 4))  # the part [4, 6) got no answer
    assert eng.take_commands() == [], "backing off"
    eng.handle_replication_result(Unreachable(2, L1, 1, 6))  # the pipelined [6, 10), an old generation now
    assert eng.take_commands() == []
    p = eng.leader.replication[2]
    assert (p.matched, p.next_index, p.inflight, p.probing) == (3, 4, 0, True)
    eng.leader_heartbeat(60.0)
    assert eng.take_commands() == [Replicate(2, 2, lid(1, 3), 4, 8, lid(1, 3))], (
        "after the back-off the probe starts right after the matched part, not at the planned start 2"
    )


def test_a_part_of_another_leadership_is_ignored():
    eng = leader_with_window_full()
    eng.handle_replication_progress(2, vote(0, 1, True), lid(1, 5), 1.0)
    assert eng.take_commands() == []
    assert eng.leader.replication[2].matched == 1
