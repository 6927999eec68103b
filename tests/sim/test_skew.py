"""Clock-rate skew in the simulator (``Simulation(skew=...)``, ``SimClock(rate=...)``) and the
lease-read scenario (``openraft_py.testing.sim.lease``): beyond the skew that
``Config.lease_drift_margin`` is documented to cover, lease reads go stale and the
linearizability checker says so with the seed; within it, and with ReadIndex at any skew,
no read is stale. ``make sim-skew`` runs the same over many more seeds."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py.testing import sim
from openraft_py.testing.sim import SimClock, Simulation, VirtualTimeLoop, run_seed
from openraft_py.testing.sim.lease import LeaseSkewRun, lease_skew_bound, run_lease_seed
from openraft_py.types import ReadPolicy


def _fail_message(r: sim.SimResult | sim.LeaseResult) -> str:
    tail = "\n".join(r.trace[-30:])
    return f"seed {r.seed}: {r.violation}\n--- last trace lines ---\n{tail}\nreplay: {r.replay_command()}"


class _World:
    """What a ``SimClock`` needs of a run: no node is paused."""

    def __init__(self) -> None:
        self.paused: dict[int, asyncio.Event] = {}

    def disk_latency(self, disk: object) -> float:
        return 0.0


def test_a_clock_runs_at_its_rate() -> None:
    """A clock at rate 0.5 shows half the real time passed, and its sleep(1) lasts 2 real
    seconds; at rate 1 it is the loop's time."""
    loop = VirtualTimeLoop()

    async def main() -> tuple[float, float, float, float]:
        slow, exact = SimClock(_World(), 1, 0.5), SimClock(_World(), 2)
        await slow.sleep(1.0)
        t1 = loop.time()
        await exact.sleep(0.25)
        return t1, slow.now(), loop.time(), exact.now()

    try:
        t1, slow_now, t2, exact_now = loop.run_until_complete(main())
    finally:
        loop.close()
    assert t1 == pytest.approx(2.0) and slow_now == pytest.approx(1.125) and exact_now == t2 == pytest.approx(2.25)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="a clock rate must be a finite number > 0"):
            SimClock(_World(), 1, bad)  # type: ignore[arg-type]


def test_skew_is_checked() -> None:
    for bad in (-0.1, 1.0, 2, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match=r"skew must be a number in \[0, 1\)"):
            Simulation(1, skew=bad)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_skew_changes_only_the_clocks_and_is_reproducible() -> None:
    """Without skew every clock is the loop's time and the trace names no rate (runs replay
    as before the option existed); with skew the rates come from an RNG of their own, so
    the seed's configuration and schedule are those it has without skew, and the same seed
    and skew give the same run byte for byte."""
    assert set(Simulation(3).rates.values()) == {1.0}
    plain = run_seed(3)
    assert plain.ok, _fail_message(plain)
    assert not any("clock rates" in line for line in plain.trace)
    skewed = run_seed(3, skew=0.3)
    assert skewed.ok, _fail_message(skewed)
    assert skewed.trace[0] == plain.trace[0]  # the same cluster, config and profile
    rates = Simulation(3, skew=0.3).rates
    assert all(0.7 <= r <= 1.3 for r in rates.values()) and len(set(rates.values())) == len(rates)
    assert any(line.split(None, 1)[1].startswith("clock rates: n1 ") for line in skewed.trace)
    assert run_seed(3, skew=0.3).digest() == skewed.digest() != plain.digest()
    assert skewed.replay_command().endswith("--seed 3 --skew 0.3 --trace")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(4))
def test_random_runs_with_skew_inside_the_bound_are_clean(seed: int) -> None:
    """The random runs' configurations cover a skew of at least 20/280 (emin 150, margin
    20): 0.07 is inside it."""
    r = run_seed(seed, skew=0.07)
    assert r.ok, _fail_message(r)


def test_the_documented_bound() -> None:
    """(1 - s) / (1 + s) >= (E - m) / E  <=>  s <= m / (2E - m); defaults: 20/280."""
    assert lease_skew_bound(150, 20) == pytest.approx(20 / 280)
    s = lease_skew_bound(100, 20)
    assert (1 - s) / (1 + s) == pytest.approx(80 / 100)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(3))
def test_lease_reads_go_stale_beyond_the_bound(seed: int) -> None:
    """The scenario can fail: with the leader's clock slow and the others fast by three
    times the documented bound, the majority elects a leader and commits a write while the
    cut-off leader still serves lease reads of the old value, and lincheck flags them. The
    failure names its seed and replays the same."""
    r = run_lease_seed(seed, factor=3.0)
    assert not r.ok and r.violation is not None and "not linearizable" in r.violation
    assert r.stats["reads_after_write"] > 0
    assert r.replay_command() == f"python -m openraft_py.testing.sim --lease 3.0 --seed {seed} --trace"
    assert run_lease_seed(seed, factor=3.0).digest() == r.digest()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(12))
def test_lease_reads_stay_linearizable_at_the_bound(seed: int) -> None:
    """At exactly the documented bound (the leader at 1 - s, the others at 1 + s) no lease
    read is stale, and the run is not vacuous: the cut-off leader served lease reads and the
    majority committed a write in every round."""
    r = run_lease_seed(seed, factor=1.0)
    assert r.ok, _fail_message(r)
    assert r.stats["reads_in_partition"] > 0 and r.stats["writes"] == sim.LEASE_ROUNDS, r.stats
    assert r.stats["reads_after_write"] == 0, r.stats


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 1])
def test_a_leader_that_hands_over_serves_no_lease_read_after_the_target_wins(seed: int) -> None:
    """Rounds in which node 1 hands leadership over (``_hand_over_then_cut``): once the
    target has the TransferLeader notice, node 1 hears nothing more, the target wins at once
    (its voters grant it whatever their stickiness) and the writer writes through it while
    node 1 still believes it leads. The history stays linearizable: node 1 refused lease
    reads from the moment it started the transfer. (With ``TransferHandler.start`` leaving
    the lease on, 23 of seeds 10000..10029 served stale reads; none did before these rounds
    existed.)"""
    r = run_lease_seed(seed, factor=1.0)
    assert r.ok, _fail_message(r)
    assert r.stats["hand_overs"] > 0, r.stats
    handed = [line.split()[-1] for line in r.trace if " hands over to n" in line]
    assert handed and all(any(f"{to} wrote" in line for line in r.trace) for to in handed), r.trace


# Seeds whose runs serve many reads (17 to 106 each): seeds 4 and 5 served 3 and 1 in a
# whole run (the reads before each cut fall in a random fraction of one heartbeat interval
# of a leader whose clock runs at 0.11), and seed 5 none once the heartbeats sent beside a
# full replication window moved its timing: too few to say the run was not vacuous.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [0, 3, 6, 8, 9, 10])
def test_read_index_reads_stay_linearizable_at_any_skew(seed: int) -> None:
    """ReadIndex assumes nothing about clocks: at eight times the bound too, the cut-off
    leader serves no read begun after the cut, and the history is linearizable."""
    r = run_lease_seed(seed, factor=sim.MAX_LEASE_FACTOR, policy=ReadPolicy.READ_INDEX)
    assert r.ok, _fail_message(r)
    assert r.stats["reads"] > 0 and r.stats["reads_in_partition"] == 0, r.stats
    assert r.replay_command().endswith(f"--lease 8.0 --read-index --seed {seed} --trace")


def test_lease_scenario_arguments_are_checked() -> None:
    for bad in (-1, 8.5, float("nan"), True):
        with pytest.raises(ValueError, match="the skew factor must be a number from 0 to 8"):
            LeaseSkewRun(1, factor=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy must be a ReadPolicy"):
        LeaseSkewRun(1, policy="lease")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        LeaseSkewRun(1, rounds=0)


@pytest.mark.timeout(60)
def test_cli_runs_the_lease_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--lease", "1", "--seed", "2"]) == 0
    assert "seed 2: ok" in capsys.readouterr().out
    assert sim.main(["--lease", "3", "--seed", "2"]) == 1
    assert "seed 2: VIOLATION: history is not linearizable (a stale read)" in capsys.readouterr().out
    assert sim.main(["--seed", "2", "--skew", "0.05", "--steps", "3"]) == 0
    assert "seed 2: ok" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "1", "--skew", "1"], "argument --skew: '1' is not a number in [0, 1)"),
    (["--seed", "1", "--skew", "-0.1"], "argument --skew: '-0.1' is not a number in [0, 1)"),
    (["--seed", "1", "--skew", "x"], "argument --skew: 'x' is not a number in [0, 1)"),
    (["--seed", "1", "--lease", "9"], "argument --lease: '9' is not a number from 0 to 8"),
    (["--seed", "1", "--lease", "nan"], "argument --lease: 'nan' is not a number from 0 to 8"),
    (["--seed", "1", "--lease", "1", "--skew", "0.1"], "--lease runs the lease-read scenario, which takes no --skew"),
    (["--seed", "1", "--lease", "1", "--fault", "expired_lease_read"], "which takes no --fault"),
    (["--seed", "1", "--read-index"], "--read-index is an option of the lease-read scenario: give --lease FACTOR"),
])
def test_cli_refuses_bad_skew_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        sim.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
