"""The checks of a run, each a pure function of what the runner collected.

- ``check_linearizable``: the history of ``linearizable`` and ``lease`` reads, puts, deletes
  and cas operations (plus the final reads) through ``openraft_py.testing.lincheck``, model
  ``kv_register``, per key. ``local`` reads are *not* linearizable by contract (any node
  answers from its applied state), so they are left out of that check and held to the weaker
  ``check_local_reads`` instead.
- ``check_local_reads``: a ``local`` read returns absent or a value some put/cas on that key
  wrote, invoked before the read returned (no invented values; stale ones are allowed).
- ``check_final_state``: after healing and convergence every node holds the same value for
  every key, and no acknowledged write was lost: the value each key ends with was written by
  an operation that did not return before an acknowledged write on that key was invoked (if
  it had, that later acknowledged write would have been undone).
- liveness (in the runner): every node answers ``/cluster/status``, no process exited
  except by the nemesis, the cluster accepts a write within a bound after the final heal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..lincheck import CheckResult, check, kv_register
from .history import History, Record

__all__ = ["Verdict", "for_lincheck", "check_linearizable", "check_local_reads", "check_final_state"]


@dataclass
class Verdict:
    """One check's outcome: ``ok`` and, when not, the ``problems`` found (readable lines)."""

    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    detail: str = ""


def for_lincheck(r: Record) -> bool:
    """Whether a record belongs in the linearizability check (everything but ``local``
    reads; the runner's final reads are tagged ``final`` and included)."""
    return not (r.op == "get" and r.consistency == "local")


def check_linearizable(history: History, timeout: float | None) -> tuple[Verdict, CheckResult]:
    """Run lincheck on the records ``for_lincheck`` accepts; unknown (time budget exceeded)
    counts as a failure."""
    ops = history.operations(for_lincheck)
    res = check(ops, kv_register, timeout=timeout)
    ok = res.ok is True
    problems = [] if ok else res.explain().splitlines()
    return Verdict("linearizable", ok, problems, res.explain().splitlines()[0]), res


def _writes_by_key(history: History) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in history.records:
        if r.op in ("put", "cas", "delete"):
            out.setdefault(r.key, []).append(r)
    return out


def _writes_value(r: Record) -> str | None:
    return None if r.op == "delete" else r.value


def check_local_reads(history: History) -> Verdict:
    """Every ``ok`` local read saw absent or a value written (put/cas, not failed) on its key
    by an operation invoked before the read returned."""
    writes = _writes_by_key(history)
    problems = []
    for r in history.records:
        if r.op != "get" or r.consistency != "local" or r.outcome != "ok" or r.result is None:
            continue
        if not any(w.op != "delete" and w.value == r.result and w.call <= (r.ret or math.inf)
                   and w.outcome != "fail" for w in writes.get(r.key, [])):
            problems.append(f"local read of {r.key!r} at node {r.node} returned {r.result!r}, "
                            f"which no put/cas on that key wrote before [{r.call:.3f}, {r.ret:.3f}]")
    return Verdict("local reads", not problems, problems[:20], f"{len(problems)} invented values")


def _acknowledged(w: Record) -> bool:
    if w.outcome != "ok":
        return False
    return w.op != "cas" or bool(w.result)


def check_final_state(history: History, final: dict[int, dict[str, str | None]]) -> Verdict:
    """``final[node][key]``: each node's value for every key after convergence. Checks the
    nodes agree and that no acknowledged write was lost (see the module docstring)."""
    problems: list[str] = []
    nodes = sorted(final)
    keys = sorted(set().union(*(final[n].keys() for n in nodes))) if nodes else []
    writes = _writes_by_key(history)
    lost = 0
    for key in keys:
        values = {n: final[n].get(key) for n in nodes}
        distinct = set(values.values())
        if len(distinct) > 1:
            problems.append(f"nodes disagree on {key!r}: {values}")
            continue
        value = distinct.pop()
        ws = writes.get(key, [])
        acked = [w for w in ws if _acknowledged(w)]
        # The operations that may have produced the final value; the most lenient is the one
        # that returned last (an unknown outcome returns at +inf).
        producers = [w for w in ws if w.outcome != "fail" and _writes_value(w) == value
                     and not (w.op == "cas" and w.outcome == "ok" and not w.result)]
        if value is None:
            latest = max([(w.ret if w.outcome == "ok" and w.ret is not None else math.inf) for w in producers],
                         default=-math.inf)
        else:
            if not producers:
                problems.append(f"{key!r} ends as {value!r}, which no operation wrote")
                continue
            latest = max((w.ret if w.outcome == "ok" and w.ret is not None else math.inf) for w in producers)
        for a in acked:
            if _writes_value(a) != value and latest < a.call:
                lost += 1
                problems.append(f"acknowledged {a.op} of {key!r} (value {a.value!r}, "
                                f"[{a.call:.3f}, {a.ret:.3f}]) lost: the key ends as {value!r}, "
                                f"written by an operation that returned at {latest:.3f}")
                break
    return Verdict("final state", not problems, problems[:20],
                   f"{len(keys)} keys on {len(nodes)} nodes, {lost} keys with a lost write")


def summarize(history: History) -> dict[str, Any]:
    """Counts by operation (``get`` split by consistency) and outcome."""
    counts: dict[str, dict[str, int]] = {}
    for r in history.records:
        name = f"get-{r.consistency}" if r.op == "get" else r.op
        if r.op == "cas" and r.outcome == "ok":
            outcome = "ok-applied" if r.result else "ok-differs"
        else:
            outcome = r.outcome or "info"
        row = counts.setdefault(name, {})
        row[outcome] = row.get(outcome, 0) + 1
    return counts
