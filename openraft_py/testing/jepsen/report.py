"""The text report of a run: ops by type and outcome, availability timeline, verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checks import Verdict
from .history import History

if TYPE_CHECKING:
    from .nemesis import Step
    from .runner import RunConfig

__all__ = ["render_report", "availability"]

_OUTCOMES = ("ok", "ok-applied", "ok-differs", "fail", "info")


def availability(history: History, bucket: float) -> list[int]:
    """Ok operations per ``bucket`` seconds, from 0 to the last completion (client ops only)."""
    rets = [r.ret for r in history.records if r.outcome == "ok" and r.ret is not None and r.client >= 0]
    if not rets:
        return []
    counts = [0] * (int(max(rets) // bucket) + 1)
    for t in rets:
        counts[int(t // bucket)] += 1
    return counts


def _bar(n: int, top: int, width: int = 40) -> str:
    return "#" * (0 if top == 0 else round(width * n / top))


def render_report(cfg: RunConfig, ok: bool, verdicts: list[Verdict], summary: dict[str, dict[str, int]],
                  history: History, schedule: list[Step], lincheck_seconds: float,
                  recovery: float | None) -> str:
    """The report printed at the end of a run."""
    lines: list[str] = []
    add = lines.append
    add("=" * 72)
    add(f"jepsen report: seed {cfg.seed}, {cfg.nodes} nodes, {cfg.time:g}s"
        + (f", bugs {list(cfg.bugs)}" if cfg.bugs else ""))
    add(f"nemesis steps: {len(schedule)} ("
        + ", ".join(f"{k} x{n}" for k, n in sorted(_count(s.kind for s in schedule).items())) + ")")
    add("")
    add(f"{'operation':<20}" + "".join(f"{o:>12}" for o in _OUTCOMES) + f"{'total':>10}")
    total: dict[str, int] = {}
    for name in sorted(summary):
        row = summary[name]
        for o, n in row.items():
            total[o] = total.get(o, 0) + n
        add(f"{name:<20}" + "".join(f"{row.get(o, 0):>12}" for o in _OUTCOMES) + f"{sum(row.values()):>10}")
    add(f"{'all':<20}" + "".join(f"{total.get(o, 0):>12}" for o in _OUTCOMES) + f"{sum(total.values()):>10}")
    add("")
    bucket = max(1.0, round(cfg.time / 60.0))
    counts = availability(history, bucket)
    add(f"availability (ok operations per {bucket:g}s; '*' marks a bucket with a fault active):")
    top = max(counts, default=0)
    for b, n in enumerate(counts):
        lo, hi = b * bucket, (b + 1) * bucket
        active = any(s.at < hi and s.at + s.duration > lo and s.resolved for s in schedule)
        add(f"  {lo:7.0f}s {'*' if active else ' '} {n:6d} {_bar(n, top)}")
    add("")
    if recovery is not None:
        add(f"first write after the final heal: {recovery:.2f}s")
    add(f"lincheck: {lincheck_seconds:.2f}s")
    for v in verdicts:
        add(f"  [{'PASS' if v.ok else 'FAIL'}] {v.name}" + (f": {v.detail}" if v.detail else ""))
        for p in v.problems[:30]:
            add(f"         {p}")
    add(f"verdict: {'PASS' if ok else 'FAIL'} (seed {cfg.seed})")
    add("=" * 72)
    return "\n".join(lines)


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out
