"""What ``bench/run.py`` makes of the figures: the fractions of the floor, issue 14's
acceptance ratios, the markdown table and the plots.

``results`` is the driver's dict (``bench/results/latest.json``): ``series`` maps a series
name (``"floor"``, ``"inprocess-c"``, ``"tcp-fsync"``, ``"pysyncobj-memory-batched"``, ...)
to ``{"label", "points": [{"writers", "writes_per_s", "p50", "p99", "p999", "runs", "rounds"}]}``
(latencies in ms; ``rounds`` is the round of each of ``runs``), ``micro`` holds
``{"kernels": [{"name", "c_us", "py_us", "speedup", "rounds"}], "other": [{"name",
"median_us"}]}`` (``speedup``: the median of the rounds' speed-ups).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

PLOTS = ("throughput.png", "latency.png", "micro.png")
"""The plots ``write_plots`` makes (the last only when there are micro-benchmark figures)."""

# Acceptance targets (issue 14).
TCP_VS_PEER_FSYNC = 3.0
TCP_VS_PEER_NOSYNC = 5.0
INPROC_256_FLOOR = 0.35
INPROC_1_FLOOR = 0.06
TCP_1W_P50_BOUND = 2.0
KERNEL_SPEEDUP = 5.0


def point(results: dict[str, Any], series: str, writers: int) -> dict[str, Any] | None:
    """The point of ``series`` at ``writers`` writers, or ``None`` if it was not measured."""
    s = results["series"].get(series)
    if s is None:
        return None
    return next((p for p in s["points"] if p["writers"] == writers), None)


def add_floor_fractions(results: dict[str, Any]) -> None:
    """Give every point ``floor_fraction``: its writes/s over the floor's at the same writer
    count (``None`` where the floor was not measured at that count)."""
    for s in results["series"].values():
        for p in s["points"]:
            f = point(results, "floor", p["writers"])
            p["floor_fraction"] = p["writes_per_s"] / f["writes_per_s"] if f else None


def best_peer(results: dict[str, Any], journal: str, writers: int) -> tuple[str, dict[str, Any]] | None:
    """PySyncObj's faster tuning with ``journal`` at ``writers``: ``(series name, point)``."""
    found = [(name, p) for name in results["series"] if name.startswith(f"pysyncobj-{journal}-")
             if (p := point(results, name, writers)) is not None]
    return max(found, key=lambda x: x[1]["writes_per_s"]) if found else None


def paired_ratio(ours: dict[str, Any], base: dict[str, Any]) -> tuple[float, int]:
    """``ours`` writes/s over ``base``'s: the median of the ratios of the runs made in the same
    round (``bench/run.py`` interleaves the steps), and the number of such pairs. Points
    without rounds (a run of one step alone, or a ``latest.json`` from before the rounds) give
    the ratio of their medians, and 0 pairs."""
    ra, rb = ours.get("rounds"), base.get("rounds")
    if ra and rb:
        by_round = dict(zip(rb, base["runs"]))
        pairs = [x / by_round[r] for r, x in zip(ra, ours["runs"]) if r in by_round and by_round[r] > 0]
        if pairs:
            return statistics.median(pairs), len(pairs)
    return ours["writes_per_s"] / base["writes_per_s"], 0


def paired_latency_ratio(tcp: dict[str, Any], p: dict[str, Any]) -> tuple[float, int]:
    """The point ``p``'s p50 over the fsync + round-trip probes of the TCP series ``tcp``:
    the median of each round's p50 over that round's probes, and the number of rounds paired.
    Without per-round figures (an older ``latest.json``): the median p50 over the medians of
    the probes, and 0."""
    rounds, probes, p50s = tcp.get("rounds"), tcp.get("probe_ms_runs"), p.get("p50_runs")
    if rounds and probes and p50s and p.get("rounds"):
        by_round = dict(zip(rounds, probes))
        pairs = [x / by_round[r] for r, x in zip(p["rounds"], p50s)
                 if x is not None and r in by_round and by_round[r] > 0]
        if pairs:
            return statistics.median(pairs), len(pairs)
    return p["p50"] / (tcp["fsync_ms"] + tcp["rtt_ms"]), 0


def _paired_detail(ours: dict[str, Any], base: dict[str, Any], n: int) -> str:
    medians = f"medians {ours['writes_per_s']:,.0f} / {base['writes_per_s']:,.0f} writes/s"
    return f"median of {n} paired round{'s' if n > 1 else ''}; {medians}" if n else medians


def _check(name: str, value: float | None, target: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"name": name, "value": value, "target": target, "pass": ok, "detail": detail}


def acceptance(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's acceptance checks from this run's figures: ``[{"name", "value", "target",
    "pass": True / False / None (not measured), "detail"}]``."""
    out = []
    peer = best_peer(results, "memory", 256)
    for series, target, what in (("tcp-fsync", TCP_VS_PEER_FSYNC, "fsync on"),
                                 ("tcp-nofsync", TCP_VS_PEER_NOSYNC, "fsync off"),
                                 ("tcp-memsm-fsync", TCP_VS_PEER_FSYNC, "in-memory state machine, fsync on"),
                                 ("tcp-memsm-nofsync", TCP_VS_PEER_NOSYNC, "in-memory state machine, fsync off")):
        name = f"TCP + RocksDB ({what}) 256 writers vs PySyncObj memory journal 256 writers"
        ours = point(results, series, 256)
        if ours is None or peer is None:
            out.append(_check(name, None, f">= {target:g}x", None, "not measured"))
            continue
        ratio, n = paired_ratio(ours, peer[1])
        out.append(_check(name, ratio, f">= {target:g}x", ratio >= target,
                          f"{_paired_detail(ours, peer[1], n)} ({peer[0]})"))
    for writers, target in ((256, INPROC_256_FLOOR), (1, INPROC_1_FLOOR)):
        name = f"in-process (compiled) {writers} writer{'s' if writers > 1 else ''} vs the floor"
        p, f = point(results, "inprocess-c", writers), point(results, "floor", writers)
        if p is None or f is None:
            out.append(_check(name, None, f">= {target:.0%}", None, "not measured"))
            continue
        frac, n = paired_ratio(p, f)
        out.append(_check(name, frac, f">= {target:.0%}", frac >= target, _paired_detail(p, f, n)))
    name = "TCP fsync on, 1 writer: p50 vs 2 x (fsync + loopback RTT)"
    tcp = results["series"].get("tcp-fsync")
    p = point(results, "tcp-fsync", 1)
    if tcp is None or p is None:
        out.append(_check(name, None, f"<= {TCP_1W_P50_BOUND:g}x", None, "not measured"))
    else:
        base = tcp["fsync_ms"] + tcp["rtt_ms"]
        x, n = paired_latency_ratio(tcp, p)
        how = f"median of {n} paired round{'s' if n > 1 else ''}; " if n else ""
        out.append(_check(name, x, f"<= {TCP_1W_P50_BOUND:g}x", x <= TCP_1W_P50_BOUND,
                          f"{how}p50 {p['p50']:.3f} ms; fsync {tcp['fsync_ms']:.3f} ms + RTT {tcp['rtt_ms']:.3f} ms "
                          f"(medians; bound {TCP_1W_P50_BOUND * base:.3f} ms)"))
    micro = results.get("micro") or {"kernels": []}
    if not micro["kernels"]:
        out.append(_check("each kernel vs its pure twin", None, f">= {KERNEL_SPEEDUP:g}x", None, "not measured"))
    for k in micro["kernels"]:
        n = k.get("rounds", 1)
        how = f"; median of {n} rounds' speed-ups" if n > 1 else ""
        out.append(_check(f"kernel {k['name']}: compiled vs pure", k["speedup"], f">= {KERNEL_SPEEDUP:g}x",
                          k["speedup"] >= KERNEL_SPEEDUP, f"{k['py_us']:.1f} us / {k['c_us']:.1f} us{how}"))
    return out


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _fmt_value(c: dict[str, Any]) -> str:
    v = c["value"]
    if v is None:
        return "-"
    return f"{v:.1%}" if c["target"].endswith("%") else f"{v:.2f}x"


def _writer_counts(results: dict[str, Any]) -> list[int]:
    """Every writer count some series measured, ascending: the columns of the tables."""
    return sorted({p["writers"] for s in results["series"].values() for p in s["points"]})


def _writers_label(w: int) -> str:
    return f"{w} writer{'s' if w > 1 else ''}"


def summary_table(results: dict[str, Any]) -> list[str]:
    """One row per series: writes/s (and the fraction of the floor) at each writer count, and
    the p50 / p99 / p99.9 latency at the smallest writer count (the latency-sensitive case)."""
    counts = _writer_counts(results)
    if not counts:
        return []
    one = counts[0]
    head = "| system | " + " | ".join(_writers_label(w) for w in counts)
    head += f" | p50 / p99 / p99.9 ms at {one} writer{'s' if one > 1 else ''} |"
    out = [head, "|:--" + "|--:" * (len(counts) + 1) + "|"]
    for name, s in results["series"].items():
        cells = []
        for w in counts:
            p = point(results, name, w)
            if p is None:
                cells.append("-")
            elif name == "floor" or p.get("floor_fraction") is None:
                cells.append(f"{p['writes_per_s']:,.0f}")
            else:
                cells.append(f"{p['writes_per_s']:,.0f} ({p['floor_fraction']:.1%})")
        p1 = point(results, name, one)
        lat = "-" if p1 is None else " / ".join(_fmt_ms(p1[k]) for k in ("p50", "p99", "p999"))
        out.append(f"| {s['label']} | " + " | ".join(cells) + f" | {lat} |")
    return out


def cpu_table(results: dict[str, Any]) -> list[str]:
    """One row per series that measured it: the CPU time per write (us, every process of
    the system together) at each writer count; no rows, no table."""
    counts = _writer_counts(results)
    rows = []
    for name, s in results["series"].items():
        if not any(p.get("cpu_us") is not None for p in s["points"]):
            continue
        cells = []
        for w in counts:
            p = point(results, name, w)
            cells.append("-" if p is None or p.get("cpu_us") is None else f"{p['cpu_us']:,.1f}")
        rows.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = "| CPU us per write | " + " | ".join(_writers_label(w) for w in counts) + " |"
    return [head, "|:--" + "|--:" * len(counts) + "|", *rows]


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: the throughput and latency table, the acceptance checks, the
    micro-benchmarks."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        f"Mode `{meta['mode']}`, {meta['date']}: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"uvloop {m['uvloop']}, PySyncObj {m['pysyncobj']}. Each point: median of {meta['repeat']} run(s), one per "
        "round (each round runs every system once); latencies are the medians of the runs' percentiles; *of floor* "
        "is writes/s over the asyncio floor's round trips/s at the same writer count (medians); *CPU us/write* is "
        "the CPU time of every process of the system (all threads: the three nodes, and the writers in the "
        "leader's) during a run over the writes it made (median of the runs). The acceptance "
        "ratios are the medians of the per-round ratios (paired rounds).",
        "",
    ]
    lines += summary_table(results)
    by_cpu = cpu_table(results)
    if by_cpu:
        lines += ["", *by_cpu]
    lines += [
        "",
        "| system | writers | writes/s | of floor | p50 ms | p99 ms | p99.9 ms | CPU us/write |",
        "|:-------|--------:|---------:|---------:|-------:|-------:|---------:|-------------:|",
    ]
    for s in results["series"].values():
        for p in s["points"]:
            frac = "-" if p.get("floor_fraction") is None else f"{p['floor_fraction']:.1%}"
            cpu = "-" if p.get("cpu_us") is None else f"{p['cpu_us']:,.1f}"
            lines.append(f"| {s['label']} | {p['writers']} | {p['writes_per_s']:,.0f} | {frac} | {_fmt_ms(p['p50'])} "
                         f"| {_fmt_ms(p['p99'])} | {_fmt_ms(p['p999'])} | {cpu} |")
    tcp = results["series"].get("tcp-fsync")
    if tcp is not None:
        lines += ["", f"Measured in the TCP run: raw fsync {tcp['fsync_ms']:.3f} ms (median), loopback round trip "
                      f"{tcp['rtt_ms'] * 1000:.0f} us (median)."]
    lines += ["", "| acceptance check | measured | target | result | figures |",
              "|:-----------------|---------:|-------:|:------:|:--------|"]
    for c in results["acceptance"]:
        verdict = "n/a" if c["pass"] is None else "PASS" if c["pass"] else "FAIL"
        lines.append(f"| {c['name']} | {_fmt_value(c)} | {c['target']} | {verdict} | {c['detail']} |")
    micro = results.get("micro")
    if micro:
        lines += ["", "| micro-benchmark | compiled us | pure us | speed-up |", "|:--|--:|--:|--:|"]
        for k in micro["kernels"]:
            lines.append(f"| {k['name']} | {k['c_us']:.1f} | {k['py_us']:.1f} | {k['speedup']:.1f}x |")
        for o in micro["other"]:
            lines.append(f"| {o['name']} | {o['median_us']:.2f} | - | - |")
    if results.get("errors"):
        lines += ["", "Steps that failed: " + "; ".join(f"`{k}`: {v}" for k, v in results["errors"].items())]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], path: Path) -> str:
    """Write ``markdown(results)`` to ``path`` and return it."""
    text = markdown(results)
    path.write_text(text)
    return text


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the PNG plots (matplotlib, Agg backend) into ``out``; return their paths:
    writes/s against writers for every series (log scales), the p50/p99/p99.9 latency of every
    series at the smallest and largest writer counts, and the kernels' speed-ups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    series = results["series"]
    if series:
        fig, ax = plt.subplots(figsize=(10, 5))
        for name, s in series.items():
            pts = sorted(s["points"], key=lambda p: p["writers"])
            # The floor dashed black; openraft-py solid; the other libraries dotted.
            style = "k--" if name == "floor" else ":s" if name.startswith("pysyncobj") else "-o"
            ax.plot([p["writers"] for p in pts], [p["writes_per_s"] for p in pts], style, label=s["label"])
        counts = sorted({p["writers"] for s in series.values() for p in s["points"]})
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(w) for w in counts])
        ax.set_yscale("log")
        ax.set_xlabel("concurrent writers")
        ax.set_ylabel("writes/s (median)")
        ax.set_title("Throughput, 3-node clusters")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        written.append(out / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        picks = sorted({counts[0], counts[-1]})
        fig, axes = plt.subplots(1, len(picks), figsize=(6 * len(picks), 5), squeeze=False)
        for ax, w in zip(axes[0], picks):
            names = [n for n in series if point(results, n, w)]
            ys = range(len(names))
            for k, (q, label) in enumerate((("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"))):
                vals = [point(results, n, w)[q] or 0 for n in names]  # type: ignore[index]
                ax.barh([y + (k - 1) * 0.27 for y in ys], vals, height=0.27, label=label)
            ax.set_yticks(list(ys), [series[n]["label"] for n in names], fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel("write latency, ms (median of runs)")
            ax.set_title(f"Latency at {_writers_label(w)}")
            ax.grid(True, axis="x", which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "latency.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    micro = results.get("micro")
    if micro and micro["kernels"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        ks = micro["kernels"]
        ax.barh([k["name"] for k in ks], [k["speedup"] for k in ks])
        ax.axvline(KERNEL_SPEEDUP, color="r", linestyle="--", label=f"target {KERNEL_SPEEDUP:g}x")
        ax.set_xlabel("compiled speed-up over the pure-Python twin (median times)")
        ax.set_title("Cython kernels")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "micro.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
