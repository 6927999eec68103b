"""``make bench``'s rounds (``bench/run.py``): a series merged from the runs of several
rounds, and the acceptance ratios paired by round (``bench/report.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_us_per_write  # noqa: E402
from bench.report import acceptance, paired_ratio  # noqa: E402
from bench.run import Step, merge_rounds  # noqa: E402

FLOOR = Step("floor", "asyncio floor", "floor", (), 1)
CLUSTER = Step("inprocess-c", "in-process, compiled", "cluster", (), 1)
TCP = Step("tcp-fsync", "TCP + RocksDB, fsync on", "tcp", (), 1)


def _point(writers: int, wps: float, p50: float = 0.1) -> dict:
    return {"writers": writers, "writes_per_s": wps, "p50": p50, "p99": 2 * p50, "p999": 3 * p50, "runs": [wps]}


def test_merge_rounds_takes_the_median_and_keeps_each_runs_round() -> None:
    by_round = {
        2: {"points": [_point(1, 200.0, 0.2), _point(256, 2000.0)], "loop": "uvloop"},
        1: {"points": [_point(1, 100.0, 0.1), _point(256, 1000.0)], "loop": "uvloop"},
        3: {"points": [_point(1, 400.0, 0.4)], "loop": "uvloop"},  # 256 writers failed in round 3
    }
    s = merge_rounds(FLOOR, by_round)
    assert s["label"] == "asyncio floor" and s["rounds"] == [1, 2, 3]
    one, many = s["points"]
    assert one["writes_per_s"] == 200.0 and one["p50"] == pytest.approx(0.2)
    assert one["runs"] == [100.0, 200.0, 400.0] and one["rounds"] == [1, 2, 3]
    assert many["writes_per_s"] == 1500.0 and many["rounds"] == [1, 2]


def test_merge_rounds_takes_the_median_cpu_per_write_of_the_runs_that_have_it() -> None:
    by_round = {r: {"points": [{**_point(1, 100.0), "cpu_us": cpu}], "loop": "uvloop"}
                for r, cpu in ((1, 30.0), (2, 10.0), (3, 20.0))}
    assert merge_rounds(FLOOR, by_round)["points"][0]["cpu_us"] == 20.0
    by_round[3]["points"][0].pop("cpu_us")
    assert merge_rounds(FLOOR, by_round)["points"][0]["cpu_us"] == 20.0  # the median of 30 and 10
    assert "cpu_us" not in merge_rounds(FLOOR, {1: {"points": [_point(1, 1.0)], "loop": "uvloop"}})["points"][0]


def test_cpu_per_write_is_cpu_time_over_writes() -> None:
    assert cpu_us_per_write(0.5, 1000) == pytest.approx(500.0)
    assert cpu_us_per_write(0.5, 0) is None


def test_merge_rounds_of_a_cluster_step_and_of_a_tcp_step() -> None:
    c = merge_rounds(CLUSTER, {1: {"c": [{**_point(1, 10.0), "compiled": True, "loop": "uvloop"}]}})
    assert c["compiled"] is True and c["points"][0]["writes_per_s"] == 10.0
    tcp = {r: {"points": [_point(1, 50.0 * r)], "fsync_ms": f, "rtt_ms": 0.05, "fsync_ms_each": [f, f], "fsync3_ms": None}
           for r, f in ((1, 0.1), (2, 0.3), (3, 0.2))}
    t = merge_rounds(TCP, tcp)
    assert t["fsync_ms"] == pytest.approx(0.2) and t["rtt_ms"] == pytest.approx(0.05)
    assert t["fsync_ms_each"] == [0.1, 0.1, 0.3, 0.3, 0.2, 0.2] and t["fsync3_ms"] is None
    assert t["probe_ms_runs"] == [pytest.approx(0.15), pytest.approx(0.35), pytest.approx(0.25)]
    assert t["points"][0]["p50_runs"] == [0.1, 0.1, 0.1]


def test_the_latency_check_pairs_each_rounds_p50_with_its_probes() -> None:
    # Round 2's disk was slow (its p50 and its probe both grew); round 3's p50 was upset alone.
    # Per round: 0.3 / 0.2 = 1.5, 0.6 / 0.4 = 1.5, 0.5 / 0.1 = 5 -> median 1.5. The medians
    # alone would read 0.5 / (0.15 + 0.05) = 2.5.
    tcp = {r: {"points": [_point(1, 1000.0, p50)], "fsync_ms": f, "rtt_ms": 0.05, "fsync_ms_each": [f]}
           for r, p50, f in ((1, 0.3, 0.15), (2, 0.6, 0.35), (3, 0.5, 0.05))}
    series = {"tcp-fsync": merge_rounds(TCP, tcp)}
    checks = {c["name"]: c for c in acceptance({"series": series, "micro": None})}
    c = checks["TCP fsync on, 1 writer: p50 vs 2 x (fsync + loopback RTT)"]
    assert c["value"] == pytest.approx(1.5) and c["pass"] is True
    assert c["detail"].startswith("median of 3 paired rounds")
    # An older latest.json, without per-round figures: the median p50 over the medians.
    old = {"label": "t", "fsync_ms": 0.1, "rtt_ms": 0.05, "points": [{"writers": 1, "writes_per_s": 1.0, "p50": 0.45}]}
    checks = {c["name"]: c for c in acceptance({"series": {"tcp-fsync": old}, "micro": None})}
    c = checks["TCP fsync on, 1 writer: p50 vs 2 x (fsync + loopback RTT)"]
    assert c["value"] == pytest.approx(3.0) and c["pass"] is False


def test_paired_ratio_pairs_runs_of_the_same_round() -> None:
    # The machine slowed down by half in round 2: both sides moved, the ratio did not.
    ours = {"writes_per_s": 30.0, "runs": [40.0, 20.0, 30.0], "rounds": [1, 2, 3]}
    base = {"writes_per_s": 100.0, "runs": [100.0, 50.0, 120.0], "rounds": [1, 2, 3]}
    assert paired_ratio(ours, base) == (pytest.approx(0.4), 3)
    # Only the rounds both measured count.
    base2 = {"writes_per_s": 100.0, "runs": [100.0, 50.0], "rounds": [2, 3]}
    assert paired_ratio(ours, base2) == (pytest.approx((20.0 / 100.0 + 30.0 / 50.0) / 2), 2)
    # No rounds (an older latest.json): the ratio of the medians, no pairs.
    assert paired_ratio({"writes_per_s": 30.0, "runs": [30.0]}, {"writes_per_s": 60.0, "runs": [60.0]}) == (0.5, 0)


def test_acceptance_uses_the_paired_ratio() -> None:
    floor = {"label": "floor", "points": [{"writers": 256, "writes_per_s": 100.0, "runs": [100.0, 200.0, 100.0],
                                           "rounds": [1, 2, 3]}]}
    # Medians 40 / 100 = 40%; paired: 36/100, 80/200, 34/100 -> median 36%.
    ours = {"label": "c", "points": [{"writers": 256, "writes_per_s": 40.0, "runs": [36.0, 80.0, 34.0],
                                      "rounds": [1, 2, 3]}]}
    checks = {c["name"]: c for c in acceptance({"series": {"floor": floor, "inprocess-c": ours}, "micro": None})}
    c = checks["in-process (compiled) 256 writers vs the floor"]
    assert c["value"] == pytest.approx(0.36) and c["pass"] is True
    assert "median of 3 paired rounds" in c["detail"]


def test_merge_micro_takes_the_median_speedup_of_the_rounds() -> None:
    from bench.run import merge_micro

    def rnd(c: float, py: float, wire: float) -> dict:
        return {"kernels": [{"name": "k", "c_us": c, "py_us": py, "speedup": py / c}],
                "other": [{"name": "wire", "median_us": wire}]}

    # The middle round's compiled timing was upset: its speed-up is not the median.
    m = merge_micro([rnd(10.0, 100.0, 5.0), rnd(30.0, 90.0, 7.0), rnd(11.0, 99.0, 6.0)])
    (k,) = m["kernels"]
    assert k["speedup"] == pytest.approx(9.0) and k["rounds"] == 3
    assert k["c_us"] == 11.0 and k["py_us"] == 99.0
    assert m["other"] == [{"name": "wire", "median_us": 6.0}]
    checks = {c["name"]: c for c in acceptance({"series": {}, "micro": m})}
    assert checks["kernel k: compiled vs pure"]["pass"] is True
    assert "median of 3 rounds' speed-ups" in checks["kernel k: compiled vs pure"]["detail"]
