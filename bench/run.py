"""``make bench``: every benchmark in one go, then the table, the plots and the acceptance
ratios of issue 14.

The steps, each a subprocess whose progress lines are passed through:

- ``floor``: the asyncio floor (``bench/floor.py``);
- ``inprocess-c`` / ``inprocess-py``: the in-process cluster, compiled and pure builds
  (``bench/cluster.py``; the pure one under ``OPENRAFT_PY_NO_EXTENSIONS=1``);
- ``tcp-fsync`` / ``tcp-nofsync``: 3 processes on loopback, RocksDB, fsync on and off
  (``bench/tcp.py``, which also measures the raw fsync latency and the loopback round trip);
- ``tcp-memsm-fsync`` / ``tcp-memsm-nofsync``: the same at the largest writer count only, each
  node's state machine in memory (``--state-machine memory``: the dict PySyncObj keeps), the
  log on RocksDB as before: the comparison with PySyncObj doing the same work on both sides;
- ``pysyncobj-{memory,file}-{unbatched,batched}``: PySyncObj, 3 processes on loopback, its
  memory and file journals, each in its two tunings (``bench/peers/pysyncobj_bench.py``);
- ``micro``: the pytest-benchmark micro-benchmarks (``bench/micro``).

The steps run in ``repeat`` rounds (3; 2 with ``--quick``, 1 with ``--smoke``): each round runs every one of
them once (one run per writer count; the micro-benchmarks once each), in the order above. A
point is the median of its ``repeat`` runs, with the medians of the
runs' p50/p99/p99.9 latencies, and is also given as a fraction of the floor at the same writer
count. Interleaving pairs the runs: a ratio the acceptance checks compute (ours against the
floor, ours against PySyncObj, a kernel against its pure twin) is the median of the per-round
ratios (the 1-writer TCP latency check: of each round's p50 over that round's fsync and
round-trip probes), each of two runs made minutes apart at most (a kernel's two timings:
seconds), so a machine that slows down or speeds up during the benchmark moves both sides of
each ratio (shared machines do, by a third within minutes). Writes ``latest.json``,
``latest.md`` and ``throughput.png``, ``latency.png``, ``micro.png`` into ``--out`` (default
``bench/results``). A step that fails
is run once more; if it fails again it is reported, the others still run and the exit status
is 1. The acceptance ratios are
printed as PASS / FAIL but never change the exit status.

    python bench/run.py            # the full run (about 6 minutes on 2 cores)
    python bench/run.py --quick    # all points, shorter runs, 2 rounds (under 2 minutes)
    python bench/run.py --smoke --out /tmp/b   # a few points, 1 short run each (the test suite's)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PERCENTILES, summarize  # noqa: E402
from bench.report import acceptance, add_floor_fractions, write_markdown, write_plots  # noqa: E402


@dataclass(frozen=True)
class Mode:
    """How long and how often each step measures, and which steps run."""

    name: str
    writers: tuple[int, ...]
    repeat: int
    floor_s: float
    cluster_s: float
    tcp_s: float
    peer_s: float
    micro_max_time: float
    """pytest-benchmark's ``--benchmark-max-time`` per micro-benchmark (seconds)."""
    steps: frozenset[str] | None = None
    """The steps to run (``None``: all)."""
    micro_filter: str | None = None
    """A pytest ``-k`` expression selecting the micro-benchmarks (``None``: all)."""


MODES: dict[str, Mode] = {
    "full": Mode("full", (1, 64, 256), 3, floor_s=2.0, cluster_s=2.0, tcp_s=3.0, peer_s=3.0, micro_max_time=0.5),
    # Two rounds: three took 117 s of the 2 minutes on the Intel machine (75 s on the AMD one),
    # most of it the 36 steps' process and cluster starts.
    "quick": Mode("quick", (1, 64, 256), 2, floor_s=0.3, cluster_s=0.4, tcp_s=0.5, peer_s=0.4, micro_max_time=0.02),
    "smoke": Mode("smoke", (1, 64), 1, floor_s=0.2, cluster_s=0.2, tcp_s=0.2, peer_s=0.2, micro_max_time=0.005,
                  steps=frozenset({"floor", "inprocess-c", "pysyncobj-memory-unbatched", "micro"}),
                  micro_filter="majority_committed or append_entries"),
}

PY = sys.executable

ELECTION = {"election_timeout_min": 1000, "election_timeout_max": 2000}
"""The TCP clusters' election timeouts (ms; heartbeats stay at 50 ms), as in
``bench/cluster.py``: a stall of a busy machine must not start an election mid-run."""


@dataclass(frozen=True)
class Step:
    """One benchmark subprocess: ``cmd`` writes its figures as JSON to the file that
    ``{json}`` in ``cmd`` is replaced with; ``kind`` says how to read them."""

    name: str
    label: str
    kind: str
    cmd: tuple[str, ...]
    budget_s: float
    """Generous wall-clock bound: the step is killed (its whole process group) past it."""


def plan(mode: Mode) -> list[Step]:
    """The steps of ``mode``, in running order."""
    w = ",".join(map(str, mode.writers))
    r = "1"  # one run per writer count: the rounds repeat the step (see the module docstring)
    n_points = len(mode.writers)
    steps = [
        Step("floor", "asyncio floor", "floor",
             (PY, "bench/floor.py", "--writers", w, "--seconds", str(mode.floor_s), "--repeat", r, "--json", "{json}"),
             60 + 3 * n_points * mode.floor_s),
    ]
    for build, label in (("c", "in-process, compiled"), ("py", "in-process, pure Python")):
        steps.append(Step(f"inprocess-{build}", label, "cluster",
                          (PY, "bench/cluster.py", "--build", build, "--writers", *map(str, mode.writers),
                           "--seconds", str(mode.cluster_s), "--repeat", r, "--json", "{json}"),
                          120 + 3 * n_points * (mode.cluster_s + 1)))
    quick = ("--quick",) if mode.name != "full" else ()
    for sync in (True, False):
        steps.append(Step("tcp-fsync" if sync else "tcp-nofsync",
                          "TCP + RocksDB, fsync on" if sync else "TCP + RocksDB, fsync off", "tcp",
                          (PY, "bench/tcp.py", "--writers", w, "--seconds", str(mode.tcp_s), "--repeat", r, *quick,
                           "--raft-config", json.dumps(ELECTION),
                           *(() if sync else ("--no-fsync",)), "--json", "{json}"),
                          180 + 3 * n_points * mode.tcp_s))
    top = str(max(mode.writers))
    for sync in (True, False):
        what = "fsync on" if sync else "fsync off"
        steps.append(Step("tcp-memsm-fsync" if sync else "tcp-memsm-nofsync",
                          f"TCP + RocksDB log, in-memory state machine, {what}", "tcp",
                          (PY, "bench/tcp.py", "--writers", top, "--seconds", str(mode.tcp_s), "--repeat", r, *quick,
                           "--state-machine", "memory", "--raft-config", json.dumps(ELECTION),
                           *(() if sync else ("--no-fsync",)), "--json", "{json}"),
                          180 + 3 * mode.tcp_s))
    for journal in ("memory", "file"):
        for tuning in ("unbatched", "batched"):
            steps.append(Step(f"pysyncobj-{journal}-{tuning}", f"PySyncObj, {journal} journal, {tuning}", "peer",
                              (PY, "bench/peers/pysyncobj_bench.py", "--journal", journal, "--tuning", tuning,
                               "--writers", w, "--seconds", str(mode.peer_s), "--repeat", r, "--json", "{json}"),
                              120 + 3 * n_points * (mode.peer_s + 0.5)))
    micro = [PY, "-m", "pytest", "bench/micro", "-q", "-p", "no:cacheprovider", "--benchmark-json={json}",
             f"--benchmark-max-time={mode.micro_max_time}", "--benchmark-min-rounds=5",
             "--benchmark-columns=median,ops", "--benchmark-sort=name"]
    if mode.micro_filter:
        micro += ["-k", mode.micro_filter]
    steps.append(Step("micro", "micro-benchmarks", "micro", tuple(micro), 600))
    return [s for s in steps if mode.steps is None or s.name in mode.steps]


def run_step(step: Step, json_path: Path, index: int, total: int, t0: float, label: str | None = None) -> dict[str, Any]:
    """Run ``step`` (its output passed through, indented, after a progress line naming
    ``label``, default the step's) and return its JSON figures.

    ``RuntimeError`` if it exits non-zero, runs past its budget (its process group is then
    killed) or writes no JSON."""
    cmd = [a.replace("{json}", str(json_path)) for a in step.cmd]
    env = dict(os.environ)
    env.pop("OPENRAFT_PY_NO_EXTENSIONS", None)  # bench/cluster.py --build py sets it for its child
    print(f"[{index}/{total} {time.monotonic() - t0:6.1f} s] {label or step.label}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + step.budget_s
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{step.name}: still running after {step.budget_s:.0f} s")
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                break
            print(f"    {line.rstrip()}", flush=True)
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    except BaseException:
        _kill_group(proc)
        raise
    if code != 0:
        raise RuntimeError(f"{step.name}: exited with {code}")
    if not json_path.exists():
        raise RuntimeError(f"{step.name}: wrote no figures")
    figures: dict[str, Any] = json.loads(json_path.read_text())
    return figures


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc``'s whole process group (the step and everything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def to_series(step: Step, raw: dict[str, Any]) -> dict[str, Any]:
    """A step's JSON as a series ``{"label", "points": [point], ...}`` (extra fields kept:
    the TCP steps' ``fsync_ms``, ``rtt_ms`` and the fsync medians before / between / after
    their runs ``fsync_ms_each``, PySyncObj's ``conf``)."""
    if step.kind == "floor":
        return {"label": step.label, "points": raw["points"], "loop": raw["loop"]}
    if step.kind == "cluster":
        (points,) = raw.values()
        return {"label": step.label, "points": [{k: v for k, v in p.items() if k not in ("compiled", "loop")}
                                                for p in points],
                "compiled": points[0]["compiled"]}
    if step.kind == "tcp":
        return {"label": step.label, "points": raw["points"], "fsync_ms": raw["fsync_ms"], "rtt_ms": raw["rtt_ms"],
                "fsync_ms_each": raw.get("fsync_ms_each"), "fsync3_ms": raw.get("fsync3_ms")}
    if step.kind == "peer":
        return {"label": step.label, "points": raw["points"], "conf": raw["conf"]}
    raise ValueError(step.kind)


def merge_rounds(step: Step, by_round: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The series of ``step`` from its figures of each round (``{round: JSON}``, one run per
    writer count each): every point the median of its runs (``bench.common.summarize``),
    with ``rounds``, the round of each of its ``runs``, and ``p50_runs``, each run's p50, for
    the paired ratios of ``bench.report``. The TCP steps' fsync and round-trip figures are
    the medians of the rounds' (``fsync_ms_each``: every round's medians, in order;
    ``probe_ms_runs``: each round's fsync + round trip, in the order of the series'
    ``rounds``)."""
    series = {r: to_series(step, raw) for r, raw in sorted(by_round.items())}
    first = next(iter(series.values()))
    out: dict[str, Any] = {k: v for k, v in first.items() if k != "points"}
    out["rounds"] = sorted(series)
    points = []
    for w in sorted({p["writers"] for s in series.values() for p in s["points"]}):
        runs, which = [], []
        for r, s in series.items():
            for p in s["points"]:
                if p["writers"] == w:
                    runs.append({k: p[k] for k in ("writes_per_s", *PERCENTILES, "cpu_us") if k in p})
                    which.append(r)
        points.append({**summarize(w, runs), "rounds": which, "p50_runs": [r.get("p50") for r in runs]})
    out["points"] = points
    if step.kind == "tcp":
        for k in ("fsync_ms", "rtt_ms", "fsync3_ms"):
            vals = [s[k] for s in series.values() if s.get(k) is not None]
            out[k] = statistics.median(vals) if vals else None
        out["fsync_ms_each"] = [x for s in series.values() for x in (s.get("fsync_ms_each") or [])]
        # Each round's fsync + round trip, in the order of ``rounds``: the 1-writer latency
        # check divides each round's p50 by its own round's probes.
        out["probe_ms_runs"] = [s["fsync_ms"] + s["rtt_ms"] for s in series.values()]
    return out


def micro_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's JSON as ``{"kernels": [{"name", "c_us", "py_us", "speedup"}],
    "other": [{"name", "median_us"}]}`` (medians; ``[c]``/``[py]`` tests paired by name)."""
    twins: dict[str, dict[str, float]] = {}
    other = []
    for b in raw["benchmarks"]:
        us = b["stats"]["median"] * 1e6
        name = b["name"].removeprefix("test_")
        base, sep, param = name.partition("[")
        if sep and param.rstrip("]") in ("c", "py"):
            twins.setdefault(base, {})[param.rstrip("]")] = us
        else:
            other.append({"name": name, "median_us": us})
    kernels = [{"name": k, "c_us": v["c"], "py_us": v["py"], "speedup": v["py"] / v["c"]}
               for k, v in sorted(twins.items()) if "c" in v and "py" in v]
    return {"kernels": kernels, "other": other}


def merge_micro(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The micro-benchmark figures of several rounds (each ``micro_figures``) as one: per
    kernel the medians of its compiled and pure times and the median of its per-round
    speed-ups (each of two timings made seconds apart), ``rounds`` of them; per other
    benchmark the median of its medians."""
    kernels: dict[str, list[dict[str, float]]] = {}
    other: dict[str, list[float]] = {}
    for r in rounds:
        for k in r["kernels"]:
            kernels.setdefault(k["name"], []).append(k)
        for o in r["other"]:
            other.setdefault(o["name"], []).append(o["median_us"])
    med = statistics.median
    return {
        "kernels": [{"name": name, "c_us": med(k["c_us"] for k in ks), "py_us": med(k["py_us"] for k in ks),
                     "speedup": med(k["speedup"] for k in ks), "rounds": len(ks)}
                    for name, ks in sorted(kernels.items())],
        "other": [{"name": name, "median_us": med(v)} for name, v in sorted(other.items())],
    }


def machine() -> dict[str, Any]:
    """The machine the figures come from: CPUs, CPU model, Python, uvloop, PySyncObj."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - both are installed
            return None

    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "uvloop": version("uvloop"), "pysyncobj": version("pysyncobj"), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="all points, shorter runs (under 2 minutes)")
    g.add_argument("--smoke", action="store_true", help="a few points, one short run each (seconds)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the results go")
    p.add_argument("--only", help="comma-separated step names to run (default: all of the mode's)")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: rewrite the table, the acceptance checks and the plots from a latest.json")
    args = p.parse_args(argv)
    if args.from_json:
        return rewrite(Path(args.from_json), Path(args.out))
    mode = MODES["quick" if args.quick else "smoke" if args.smoke else "full"]
    steps = plan(mode)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in steps}
        if unknown:
            p.error(f"no step {', '.join(sorted(unknown))} in mode {mode.name}: {', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "meta": {"mode": mode.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                 "repeat": mode.repeat, "writers": list(mode.writers),
                 "seconds": {"floor": mode.floor_s, "cluster": mode.cluster_s, "tcp": mode.tcp_s,
                             "pysyncobj": mode.peer_s}},
        "series": {}, "micro": None, "errors": {},
    }
    print(f"make bench ({mode.name}): {len(steps)} steps, {mode.repeat} run(s) per point, writers "
          f"{', '.join(map(str, mode.writers))}; results in {out}", flush=True)
    schedule = [(r, s) for r in range(1, mode.repeat + 1) for s in steps]
    # Each step's figures, by round.
    rounds: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in steps}
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        for i, (rnd, step) in enumerate(schedule, 1):
            label = f"round {rnd}/{mode.repeat}: {step.label}"
            for attempt in (1, 2):  # one retry: on a shared machine a run can be upset (an election)
                try:
                    raw = run_step(step, Path(tmp) / f"{step.name}-{rnd}.json", i, len(schedule), t0, label)
                    rounds[step.name][rnd] = micro_figures(raw) if step.kind == "micro" else raw
                    break
                except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                    print(f"    FAILED ({'retrying' if attempt == 1 else 'giving up'}): {e}", flush=True)
                    if attempt == 2:
                        results["errors"][f"{step.name} (round {rnd})"] = str(e)
    for step in steps:
        if not rounds[step.name]:
            continue
        if step.kind == "micro":
            results["micro"] = merge_micro(list(rounds[step.name].values()))
        else:
            results["series"][step.name] = merge_rounds(step, rounds[step.name])
    results["meta"]["elapsed_s"] = time.monotonic() - t0
    finish(results, out)
    print(f"finished in {results['meta']['elapsed_s']:.0f} s; wrote {out}/latest.json, latest.md and the plots")
    return 1 if results["errors"] else 0


def finish(results: dict[str, Any], out: Path) -> None:
    """Add the fractions of the floor and the acceptance checks to ``results``, write
    ``latest.json``, ``latest.md`` and the plots into ``out``, print the markdown."""
    add_floor_fractions(results)
    results["acceptance"] = acceptance(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    md = write_markdown(results, out / "latest.md")
    write_plots(results, out)
    print()
    print(md)


def rewrite(src: Path, out: Path) -> int:
    """``--from-json``: redo the derived figures, the table and the plots of a saved run."""
    finish(json.loads(src.read_text()), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
