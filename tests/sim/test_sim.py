"""The deterministic simulator: a smoke set of seeds, reproducibility, and proof that it
catches real bugs (engine fault switches that each break one Raft rule).

The smoke seeds and the injected-bug scans run in worker processes (one per CPU, at most
four): every run is deterministic and independent of the process it runs in (the CLI checks
that a failure replays alone), so this only spreads the same runs over the machine's cores.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pytest

from openraft_py.testing import lincheck, sim
from openraft_py.testing.sim import ENGINE_FAULTS, Simulation, run_seed
from openraft_py.testing.sim.cli import MAX_JOBS
from tests.process.children import alive, children

SMOKE_SEEDS = 100
WORKERS = max(1, min(4, os.cpu_count() or 1))


def _fail_message(r: dict[str, Any]) -> str:
    """``r``: a ``_summary``."""
    tail = "\n".join(r["trace_tail"])
    return f"seed {r['seed']}: {r['violation']}\n--- last trace lines ---\n{tail}\nreplay: {r['replay']}"


def _summary(r: sim.SimResult, lost_entries: list[str] | None = None) -> dict[str, Any]:
    """What the tests need of a run, small enough to send back from a worker process;
    ``lost_entries``: the run's log messages saying a follower lost entries it acknowledged."""
    return {"seed": r.seed, "ok": r.ok, "violation": r.violation, "ops": r.ops, "stats": dict(r.stats),
            "trace_tail": r.trace[-40:], "replay": r.replay_command(), "lost_entries": lost_entries or []}


LOST_ENTRIES = "no longer holds entry"  # core/replication.py's WARNING: a follower lost acknowledged entries


class _LostEntriesLog(logging.Handler):
    """Keeps the messages of the package's log records that say a follower lost entries."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if LOST_ENTRIES in message:
            self.messages.append(message)


def _run_summary(seed: int, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """``run_seed(seed, faults)``'s summary, with the lost-entries messages it logged (run in
    a worker process: the handler sees that process's records only)."""
    handler = _LostEntriesLog()
    logger = logging.getLogger("openraft_py")
    logger.addHandler(handler)
    try:
        return _summary(run_seed(seed, faults), handler.messages)
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    # spawn: the pytest process may hold threads (executors, RocksDB), which fork would copy
    # in whatever state they were in.
    ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # runs nobody awaited (a -k selection)


@pytest.fixture(scope="module")
def smoke_runs(pool: ProcessPoolExecutor) -> dict[int, Future[dict[str, Any]]]:
    """Seeds 0..SMOKE_SEEDS-1 without faults, submitted at once; each test awaits its own."""
    return {seed: pool.submit(_run_summary, seed) for seed in range(SMOKE_SEEDS)}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", range(SMOKE_SEEDS), ids=lambda s: f"seed{s}")
def test_sim_seed_is_clean(seed: int, smoke_runs: dict[int, Future[dict[str, Any]]]) -> None:
    r = smoke_runs[seed].result()
    assert r["ok"], _fail_message(r)
    assert r["ops"] > 0, f"seed {seed}: the workload completed no operation"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1951, 2597], ids=lambda s: f"seed{s}")
def test_regression_seed_armed_fault_after_final_heal(seed: int) -> None:
    """Found by the 10,000-seed run: a crash-restart armed before the final heal fired after
    it and left a node isolated, so liveness was judged on an unhealed cluster (a simulator
    bug, not a Raft one). Faults armed earlier must not fire once the run heals."""
    r = run_seed(seed)
    assert r.ok, _fail_message(_summary(r))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [56, 305])
def test_regression_seed_membership_and_transfer(seed: int) -> None:
    """Found by the first runs with admin operations (simulator bugs, not Raft ones).
    Seed 56: a write answered ``ForwardToLeader`` by a leader that removed itself had been
    appended and committed; the history took it for a refusal (now: outcome unknown unless
    the engine refused it before appending). Seed 305: the final liveness loop retried a
    write refused by a leader handing over without letting virtual time pass (livelock)."""
    r = run_seed(seed)
    assert r.ok, _fail_message(_summary(r))


@pytest.mark.timeout(60)
def test_regression_seed_committed_change_given_up_then_shut_down() -> None:
    """Found by a 300-seed run of 5-node clusters: a membership change whose caller timed
    out, then whose node was decommissioned (shut down), left the stand-in future of
    ``ForwardToLeader.committed_log_id`` with an error nobody read, which the loop reported
    as never retrieved (a Raft-side bug: ``raft_core._change_committed``)."""
    r = run_seed(70234, nodes=5)
    assert r.ok, _fail_message(_summary(r))


@pytest.mark.timeout(180)
def test_admin_operations_are_exercised(smoke_runs: dict[int, Future[dict[str, Any]]]) -> None:
    """The smoke seeds do change memberships, build, purge and install snapshots (chunked
    too), and complete admin calls: the checks above are not vacuous for them."""
    total: dict[str, int] = {}
    for seed in range(20):
        r = smoke_runs[seed].result()
        assert r["ok"], _fail_message(r)
        for k, v in r["stats"].items():
            total[k] = total.get(k, 0) + v
    for what in ("admin_ok", "membership_change", "purge", "snapshot_installed", "snapshot_chunk_sent_later"):
        assert total.get(what, 0) > 0, f"no {what} in seeds 0..19: {total}"


@pytest.mark.timeout(180)
def test_the_heartbeat_lane_is_exercised(smoke_runs: dict[int, Future[dict[str, Any]]]) -> None:
    """The smoke seeds send heartbeats beside the window on the router's heartbeat lane, and
    some reach their target before requests of the window sent earlier (its ``lanes`` fault
    and the delays reorder the lanes): the engine's heartbeat logic runs under reordering,
    losses and delays, not only on an orderly network."""
    total: dict[str, int] = {}
    for seed in range(20):
        r = smoke_runs[seed].result()
        assert r["ok"], _fail_message(r)
        for k, v in r["stats"].items():
            total[k] = total.get(k, 0) + v
    for what in ("heartbeat_sent", "heartbeat_handled", "heartbeat_overtook"):
        assert total.get(what, 0) > 0, f"no {what} in seeds 0..19: {total}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [3, 17])
def test_same_seed_same_run_byte_for_byte(seed: int) -> None:
    a = run_seed(seed)
    b = run_seed(seed)
    assert a.trace == b.trace
    assert [lincheck.describe_op(o) for o in a.history] == [lincheck.describe_op(o) for o in b.history]
    assert a.digest() == b.digest()
    assert run_seed(seed + 1).digest() != a.digest(), "different seeds should make different runs"


# The number of seeds each injected bug must be found within (seeds 0, 1, ..., bound - 1).
FAULT_BOUNDS = {
    "grant_without_log_check": 30,
    "commit_previous_term": 200,
    "reply_before_vote_persisted": 150,
    "apply_before_commit": 60,
    "expired_lease_read": 200,
}

# Seeds below each bound that caught the bug when last measured (2026-12-05: the first three
# in order; checked again 2026-12-07, and those that no longer catch it dropped:
# expired_lease_read's three are that day's first three, none of the older ones caught it).
# They are run first, then the others in order: the verdict is the same (some seed below the
# bound catches it), but found in a second or two instead of up to 25 s of runs
# (commit_previous_term is first caught at seed 57; with none of its seeds catching it,
# expired_lease_read's test ran 86 s of its 170 on a loaded machine). When the simulator
# changes so that these no longer catch it, the test still searches every seed below the
# bound, only slower. grant_without_log_check's 5 comes before its 2: seed 2 catches it only
# through the loop's livelock watchdog (200k spins: 4 s of CPU, 0.8 s for seed 5), and the CLI
# test that runs it first went past its 60 s on a loaded machine (load 13 on 2 cores).
CAUGHT_BY = {
    "grant_without_log_check": (5, 2),
    "commit_previous_term": (57, 132),
    "reply_before_vote_persisted": (33,),
    "apply_before_commit": (10,),
    "expired_lease_read": (35, 106, 120),
}


def _seed_order(fault: str) -> list[int]:
    """Seeds ``0 .. FAULT_BOUNDS[fault] - 1``, those of ``CAUGHT_BY[fault]`` first."""
    bound = FAULT_BOUNDS[fault]
    first = [s for s in CAUGHT_BY.get(fault, ()) if s < bound]
    return first + [s for s in range(bound) if s not in first]


@pytest.mark.timeout(170)
@pytest.mark.parametrize("fault", ENGINE_FAULTS)
def test_simulator_catches_injected_bug(fault: str, pool: ProcessPoolExecutor) -> None:
    bound = FAULT_BOUNDS[fault]
    runs = [pool.submit(_run_summary, seed, (fault,)) for seed in _seed_order(fault)]
    try:
        for done in as_completed(runs):
            r = done.result()
            if not r["ok"]:
                assert r["violation"]
                assert f"--fault {fault}" in r["replay"]
                return
    finally:
        for f in runs:
            f.cancel()  # the seeds not started yet
    pytest.fail(f"the simulator found no violation with {fault!r} injected in seeds 0..{bound - 1}")


def test_seed_order_runs_every_seed_below_the_bound_once() -> None:
    for fault, bound in FAULT_BOUNDS.items():
        order = _seed_order(fault)
        assert sorted(order) == list(range(bound)), fault
        assert order[: len(CAUGHT_BY[fault])] == list(CAUGHT_BY[fault]), fault


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown engine fault"):
        Simulation(0, faults=("no_such_bug",))


def test_cli_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "seed 5: ok" in out and "digest" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0"], "argument --seeds: '0' must be at least 1"),
    (["--seeds", "-5"], "argument --seeds: '-5' must be at least 1"),
    (["--seed", "1", "--steps", "0"], "argument --steps: '0' must be at least 1"),
    (["--seeds", "2", "--jobs", "0"], "argument --jobs: '0' must be at least 1"),
    (["--seeds", "ten"], "argument --seeds: 'ten' is not an integer"),
    # A few zeros too many started that many worker processes.
    (["--seeds", "2", "--jobs", "100000"], f"argument --jobs: '100000' must be at most {MAX_JOBS}"),
    (["--seeds", "2", "--jobs", str(MAX_JOBS + 1)], f"must be at most {MAX_JOBS}\n"),
])
def test_cli_refuses_a_run_that_checks_nothing(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No seeds or no steps is a usage error (exit 2), not "0 seeds, 0 clean" with exit 0
    (``make sim SEEDS=0`` passed having run nothing)."""
    with pytest.raises(SystemExit) as e:
        sim.main(args)
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


@pytest.mark.timeout(60)
def test_python_m_runs_the_package() -> None:
    """``python -m openraft_py.testing.sim`` (what ``make sim`` and the docs call) runs a seed
    and prints the same digest as ``run_seed``, and nothing on stderr: the nodes' own log
    lines (seed 5's nodes log elections without a leader and unreachable peers at WARNING)
    were printed there by Python's last-resort handler."""
    p = subprocess.run([sys.executable, "-m", "openraft_py.testing.sim", "--seed", "5"],
                       capture_output=True, text=True, timeout=50)
    assert p.returncode == 0, p.stderr
    assert f"digest {run_seed(5).digest()[:16]}" in p.stdout
    assert p.stderr == ""


@pytest.mark.timeout(60)
def test_cli_reports_a_violation(capsys: pytest.CaptureFixture[str]) -> None:
    fault = "grant_without_log_check"
    # The seeds known to catch it first, then every seed below its bound, each run once,
    # through the command line itself (a violating run takes 3-20 s, the more the busier the
    # machine: found with ``run_seed`` and then run again, it took 60 s once under load).
    for seed in _seed_order(fault):
        code = sim.main(["--seed", str(seed), "--fault", fault])
        out = capsys.readouterr().out
        if code != 0:
            break
        assert f"seed {seed}: ok" in out
    assert code == 1
    assert f"seed {seed}: VIOLATION" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--trace", "--seeds", "3"], "--trace prints one run's trace: give the seed with --seed"),
    (["--seed", "1", "--seeds", "5"], "--seed runs one seed: it cannot be combined with --seeds or --start"),
    (["--seed", "1", "--start", "3"], "--seed runs one seed"),
])
def test_cli_refuses_odd_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Arguments that were silently ignored (--trace without --seed, --seeds or --start with
    --seed) are usage errors."""
    with pytest.raises(SystemExit) as e:
        sim.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("seed", "faults", "message"), [
    ("1", (), r"^seed must be an integer \(its replay command is --seed SEED\), not str '1'$"),
    (1.5, (), r"^seed must be an integer .*not float 1\.5$"),
    (True, (), r"^seed must be an integer .*not bool True$"),
    (1, "commit_previous_term", r"^faults must be a tuple of engine fault names, not the str 'commit_previous_term'"),
])
def test_a_seed_or_faults_of_the_wrong_type_are_refused(seed: Any, faults: Any, message: str) -> None:
    """``run_seed("1")`` failed with "not all arguments converted during string formatting";
    a float or bool seed ran, with a replay command (``--seed 1.5``) the command line refuses;
    ``faults="commit_previous_term"`` was refused as the fault 'c' (its first letter)."""
    with pytest.raises(TypeError, match=message):
        run_seed(seed, faults)
    with pytest.raises(TypeError, match=message):
        Simulation(seed, faults=faults)


def test_steps_are_checked_and_kept_in_the_replay_command() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            Simulation(1, steps=bad)  # type: ignore[arg-type]
    # A run with other steps replays only with those steps: the command says so.
    r = run_seed(1, steps=2)
    assert r.replay_command().endswith("--seed 1 --steps 2 --trace")
    assert run_seed(1).replay_command().endswith("--seed 1 --trace")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "named"), [
    (["--wire", "all", "--steps", "2"], "(faults: none, wire all, 2 steps)"),
    (["--wire", "none", "--nodes", "4"], "(faults: none, wire none, 4 nodes)"),
    ([], "(faults: none)"),
])
def test_the_batch_summary_names_every_option_that_changes_the_runs(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of a batch is what a run report quotes: it names each option that makes
    the seeds' runs other than the defaults' (``--wire all`` runs every message through the
    codec, ``--steps`` changes the schedule), so "N seeds clean" says which runs were clean.
    (It named ``--fault``, ``--skew`` and ``--nodes`` only.)"""
    assert sim.main(["--seeds", "1", "--start", "1", "--jobs", "1", *argv]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("1 seeds, 1 clean, 0 with violations " + named + " in "), last


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("target", "runs"), [("sim", 1), ("sim-skew", 3)])
def test_the_make_targets_take_the_first_seed(target: str, runs: int) -> None:
    """``make sim`` and ``make sim-skew`` pass ``START`` on as ``--start`` (default 0): a long
    hunt runs seed ranges not run before without writing the command lines out by hand."""
    root = Path(__file__).resolve().parents[2]

    def sim_lines(*var: str) -> list[str]:
        out = subprocess.run(["make", "-n", "-C", str(root), target, "SEEDS=7", "JOBS=1", *var],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return [line for line in out.splitlines() if "-m openraft_py.testing.sim " in line]

    given = sim_lines("START=50000")
    assert len(given) == runs and all("--start 50000 --seeds 7 " in line for line in given), given
    assert all("--start 0 --seeds 7 " in line for line in sim_lines()), sim_lines()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("signum", "group", "status", "word"), [
    (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C: the terminal signals the whole group
    (signal.SIGINT, False, 130, "interrupted"),  # kill -INT, timeout -s INT: the parent alone
    (signal.SIGTERM, False, 143, "terminated"),  # timeout, a cancelled CI job
], ids=["ctrl-c", "sigint", "sigterm"])
@pytest.mark.parametrize("argv", [["--seeds", "2000", "--jobs", "2"], ["--seed", "3", "--steps", "100000"]],
                         ids=["seeds", "one-seed"])
def test_a_signal_stops_the_workers_with_one_line(
    argv: list[str], signum: signal.Signals, group: bool, status: int, word: str
) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback, then ran every chunk already submitted
    (the whole run) before exiting; SIGTERM killed the parent alone and left its workers
    waiting for work for good. Now: the workers are killed, one line, 130 or 143. A single
    seed (run in a worker too) was reported as a VIOLATION when Ctrl-C landed in a node's
    task."""
    # Python ignores SIGINT in a child started with it ignored (a background job): restore it.
    code = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-m', 'openraft_py.testing.sim'] + sys.argv[1:])")
    p = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    workers: set[int] = set()
    try:
        want = 2 if "--jobs" in argv else 1
        deadline = time.monotonic() + 30
        while len(workers) < want and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
            workers = children(p.pid)
        assert len(workers) == want, (workers, p.poll())
        if group:
            os.killpg(p.pid, signum)
        else:
            p.send_signal(signum)
        out, err = p.communicate(timeout=20)  # the whole run would take many minutes
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for w in workers:  # whatever the outcome, leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
    assert p.returncode == status, err
    assert err.strip().splitlines()[-1] == f"sim: {word}; every worker process was stopped", err
    assert "Traceback" not in err and "VIOLATION" not in out, (out, err)
    assert not alive(workers)


def _rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` in MB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to watch the process")
@pytest.mark.timeout(90)
def test_many_seeds_start_at_once_in_little_memory() -> None:
    """``--seeds 10000000`` made every seed and submitted every chunk before the first ran:
    2.7 GB before starting, and Ctrl-C waited 40 s for the submitting to end. The chunks are
    now made as the workers take them."""
    code = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable, '-m', 'openraft_py.testing.sim'] + sys.argv[1:])")
    p = subprocess.Popen([sys.executable, "-c", code, "--seeds", "10000000", "--jobs", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: set[int] = set()
    try:
        peak = 0.0
        deadline = time.monotonic() + 30
        while not workers and time.monotonic() < deadline and p.poll() is None and peak < 400:
            time.sleep(0.05)
            peak = max(peak, _rss_mb(p.pid))
            workers = children(p.pid)
        assert workers and peak < 400, (workers, peak)  # a run holds ~40 MB
        time.sleep(1)  # let it hand out a few chunks
        assert _rss_mb(p.pid) < 400
        started = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert time.monotonic() - started < 10
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
    assert p.returncode == 130, err
    assert not alive(workers)


@pytest.mark.timeout(180)
def test_a_refusal_older_than_the_acknowledgement_is_not_taken_for_lost_entries(
        smoke_runs: dict[int, Future[dict[str, Any]]]) -> None:
    """The simulator reorders requests and answers (delays, duplicates, drops): a follower
    refuses a request that overtook the one carrying its ``prev_log_id``, and the refusal
    reaches the leader after the acknowledgement of those entries. That refusal says nothing
    of a loss: no node's log loses entries it acknowledged in these runs (no disk loses what
    it flushed). Taken for one, it logged "no longer holds entry N, which it had acknowledged"
    at WARNING (224 times in 200 seeds) and started the follower's progress over. Checked on
    the smoke seeds' runs (each run's messages are gathered in its worker process)."""
    lost = {seed: r["lost_entries"] for seed, f in smoke_runs.items() if (r := f.result())["lost_entries"]}
    assert not lost, f"{len(lost)} of {len(smoke_runs)} seeds logged lost entries: " + "; ".join(
        f"seed {seed}: {messages[0]}" for seed, messages in list(lost.items())[:3])
