"""The steady state of a 1-writer write in a 3-node in-process cluster (router fast mode,
in-memory log store) calls none of the core's small helpers whose work its hot callers do
inline (docs/design/performance.md, the forty-fifth round): each was a Python frame per
write, or per node and write, for a few operations. A change that routes the hot path
through one of them again shows here; the helpers themselves still serve the other paths."""

from __future__ import annotations

import sys
from collections import Counter
from inspect import CO_COROUTINE
from types import FrameType
from typing import Any

import pytest

from openraft_py import Config, SnapshotPolicy
from openraft_py.storage.memory import NoopStateMachine
from openraft_py.testing.cluster import Cluster

pytestmark = pytest.mark.timeout(30)

WRITES = 40

# (qualified name: what does its work inline now)
INLINED = {
    "RaftCore._advance_io": "RaftCore._append_entries, when every earlier write is durable",
    "RaftCore._track": "RaftCore.send_msg, until the callers' set is compacted",
    "RaftCore._handle_note": "RaftCore._pass, for a Matched answer",
    "RaftCore._forget_clients_of_left_nodes": "RaftCore._commands_now, while no membership changed",
    "ReplicationCore._option": "ReplicationCore._submit_now, for the shared option",
    "ReplicationCore._pass_turn": "ReplicationCore._submit_now",
    "ReplicationCore._settled": "ReplicationCore._answered",
    "ReplicationEnv.batch_bytes": "ReplicationCore._request_now, for one entry",
    "StateMachineWorker._apply": "StateMachineWorker._apply_inline",
    "Raft._check_loop": "Raft._submit_append_entries_mapped, on the node's loop",
    "RaftCore._take_calls": "RaftCore._pass, unless the pass resubmits (the forty-eighth round)",
    "ApplyFeed._hand_over": "ApplyFeed.submit_now, the entries cached (the forty-eighth round)",
    # The fifty-second round:
    "RaftCore._handle_msgs": "RaftCore._pass, for a queue of one AppendEntriesCall (a follower's every request)",
    "RaftCore._handle_call": "RaftCore._pass, for a queue of one AppendEntriesCall",
    "RaftCore.send_msg": "Raft._submit_append_entries_mapped, while the node runs (as client_write)",
    "ReplicationCore._report": "ReplicationCore._answered, for a Matched answer while nothing is failing",
    "ReplicationEnv.now_ms": "ReplicationCore._submit_now and _answered, once the clock reader is made",
    "StateMachineWorker.submit": "ApplyFeed.submit_now, the worker idle and applying inline",
    "StateMachineWorker._finish": "StateMachineWorker._apply_inline, for a list of one result per entry",
    "RaftCore._respond": "RaftCore._commands_now",
    "RaftCore._replicate": "RaftCore._commands_now",
    "_entry_bytes": "ReplicationCore._request_now, for one Normal entry",
}


async def _steady_writes(calls: Counter[str], coroutines: Counter[str]) -> None:
    """``WRITES`` 1-writer writes in a 3-node cluster after a warm-up, each Python function
    call (and coroutine resumption) counted in ``calls`` by its qualified name, and those of
    coroutines in ``coroutines`` too."""
    config = Config(
        snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
    )

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            calls[code.co_qualname] += 1
            if code.co_flags & CO_COROUTINE:
                coroutines[code.co_qualname] += 1

    async with Cluster(config, state_machine=lambda disk: NoopStateMachine(disk)) as c:
        await c.start({1, 2, 3})
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=10)]
        for _ in range(20):
            await leader.client_write(b"warm")
        write = leader.client_write
        sys.setprofile(profile)
        try:
            for _ in range(WRITES):
                await write(b"w")
        finally:
            sys.setprofile(None)


async def test_a_steady_write_calls_none_of_the_inlined_helpers() -> None:
    calls: Counter[str] = Counter()
    await _steady_writes(calls, Counter())
    assert calls["RaftCore._pass"] >= 2 * WRITES, calls  # (the profile saw the passes)
    made = {name: calls[name] for name in INLINED if calls[name]}
    assert not made, f"calls in {WRITES} writes of helpers done inline on this path: {made}"


async def test_a_steady_pass_runs_no_coroutine_of_the_core() -> None:
    """Every pass of the steady state (the leader's two, each follower's one) completes
    without suspending, so it runs as plain calls: the pass itself (``RaftCore._pass``), its
    commands (``_commands_now``), the commit's ``save_committed`` (``send_none``, in
    ``_save_committed_and_apply``) and the entries' hand-over (``ApplyFeed.submit_now``).
    The only coroutine of the core resumed is its task's own (``RaftCore._run``), once a
    pass (docs/design/performance.md, the forty-eighth round). Before, each pass made and
    awaited two to five coroutines."""
    calls: Counter[str] = Counter()
    coroutines: Counter[str] = Counter()
    await _steady_writes(calls, coroutines)
    assert calls["RaftCore._pass"] >= 2 * WRITES, calls
    core = {
        name: n
        for name, n in coroutines.items()
        if name.split(".")[0] in ("RaftCore", "ApplyFeed", "StateMachineWorker") and name != "RaftCore._run"
    }
    assert not core, f"coroutines of the core made or resumed in {WRITES} writes: {core}"


async def test_a_steady_write_resumes_one_core_task() -> None:
    """A steady 1-writer write resumes the leader's core task once: each follower's pass runs
    as a guest on the leader's task (``openraft_py.core.guest``), which then finds both
    answers queued and runs its second pass in the same step. Before, each write woke four
    core tasks (the leader for the write, each follower for its request, the leader for
    the answers): 160 resumptions in 40 writes, each a future, a loop callback and a task
    step."""
    calls: Counter[str] = Counter()
    coroutines: Counter[str] = Counter()
    await _steady_writes(calls, coroutines)
    assert calls["RaftCore._pass"] == 4 * WRITES, calls["RaftCore._pass"]
    assert coroutines["RaftCore._run"] == WRITES, f"core tasks resumed {coroutines['RaftCore._run']} times in {WRITES} writes"
    assert calls["RaftCore.pass_as_guest"] == 2 * WRITES, calls["RaftCore.pass_as_guest"]
