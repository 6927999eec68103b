"""The simulator's command line, ``python -m openraft_py.testing.sim`` (``make sim SEEDS=N``):
many seeds in worker processes with a progress bar and a summary, or one seed replayed with
its trace."""

from __future__ import annotations

import argparse
import os
import sys

from ...kv.argtypes import positive_int, positive_int_at_most
from .simulation import ENGINE_FAULTS, WIRE_EVERY, run_seed

__all__ = ["main"]


def _package_doc() -> str | None:
    from .. import sim

    return sim.__doc__


MAX_JOBS = 4 * (os.cpu_count() or 1)
"""The largest ``--jobs``: four worker processes per CPU. A run is pure CPU work, so workers
beyond the CPU count only share the same CPUs (and each holds a Python interpreter's memory);
the margin lets a command line written for a bigger machine still run on this one."""


def _run_batch(
    args: tuple[list[int], tuple[str, ...], int, bool | None],
) -> list[tuple[int, bool, str | None, str]]:
    seeds, faults, steps, wire = args
    out = []
    for s in seeds:
        r = run_seed(s, faults, steps, wire)
        out.append((s, r.ok, r.violation, r.replay_command()))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run many seeds with a progress bar, or replay one."""
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed

    p = argparse.ArgumentParser(prog="python -m openraft_py.testing.sim", description=_package_doc(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=positive_int, default=None, help="run seeds start..start+N-1 (default 100)")
    p.add_argument("--start", type=int, default=None, help="the first seed of --seeds (default 0)")
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--fault", action="append", default=[], choices=ENGINE_FAULTS, help="inject an engine bug")
    p.add_argument("--steps", type=positive_int, default=30, help="admin and fault steps per run (default 30)")
    p.add_argument("--jobs", type=positive_int_at_most(MAX_JOBS), default=os.cpu_count() or 1,
                   help=f"worker processes, 1 to {MAX_JOBS} (four per CPU: the runs are CPU-bound, more workers "
                   "than CPUs only share them) (default: the CPU count)")
    p.add_argument("--trace", action="store_true", help="print the trace of a single seed (with --seed)")
    p.add_argument("--wire", choices=("share", "all", "none"), default="share",
                   help=f"pass messages through the TCP codec: seeds %% {WIRE_EVERY} == 0 (share), all or none")
    args = p.parse_args(argv)
    if args.seed is not None and (args.seeds is not None or args.start is not None):
        p.error("--seed runs one seed: it cannot be combined with --seeds or --start")
    if args.trace and args.seed is None:
        p.error("--trace prints one run's trace: give the seed with --seed")
    if args.seeds is None:
        args.seeds = 100
    if args.start is None:
        args.start = 0
    faults = tuple(args.fault)
    wire = {"share": None, "all": True, "none": False}[args.wire]
    if args.seed is not None:
        r = run_seed(args.seed, faults, args.steps, wire)
        if args.trace or not r.ok:
            print("\n".join(r.trace if args.trace else r.trace[-60:]))
        print(f"seed {args.seed}: {'ok' if r.ok else 'VIOLATION: ' + str(r.violation)} "
              f"({r.ops} ops, {r.virtual_seconds:.2f} virtual s, digest {r.digest()[:16]})")
        return 0 if r.ok else 1
    seeds = list(range(args.start, args.start + args.seeds))
    chunks = [seeds[i : i + 10] for i in range(0, len(seeds), 10)]
    failures: list[tuple[int, str | None, str]] = []
    done = 0
    t0 = time.time()
    # No more workers than chunks: the others would only start and wait.
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(chunks))) as ex:
        pending = [ex.submit(_run_batch, (ch, faults, args.steps, wire)) for ch in chunks]
        for fut in as_completed(pending):
            for s, ok, violation, cmd in fut.result():
                done += 1
                if not ok:
                    failures.append((s, violation, cmd))
            bar = "#" * int(30 * done / len(seeds))
            sys.stdout.write(f"\r[{bar:<30}] {done}/{len(seeds)} seeds, {len(failures)} violations, {time.time() - t0:.0f}s")
            sys.stdout.flush()
    print()
    failures.sort()
    for s, violation, cmd in failures:
        first = (violation or "").splitlines()[0] if violation else ""
        # Replay it alone: a failure that does not come back depends on the runs before it
        # in its worker process, which is a simulator bug of its own.
        again = run_seed(s, faults, args.steps, wire)
        note = "" if not again.ok else "\n  NOT REPRODUCED when replayed alone: the run depended on earlier runs"
        print(f"seed {s}: {first}\n  replay: {cmd}{note}")
    print(f"{len(seeds)} seeds, {len(seeds) - len(failures)} clean, {len(failures)} with violations "
          f"(faults: {', '.join(faults) or 'none'}) in {time.time() - t0:.0f}s")
    return 0 if not failures else 1
