"""The simulator's command line, ``python -m openraft_py.testing.sim`` (``make sim SEEDS=N``):
many seeds in worker processes with a progress bar and a summary, or one seed replayed with
its trace."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import FrameType
from typing import Any, TypeVar

from ...kv.argtypes import GivenOnce, decimal_int, positive_int, positive_int_at_most
from ...types import ReadPolicy
from .lease import MAX_LEASE_FACTOR, LeaseResult, run_lease_seed
from .simulation import ENGINE_FAULTS, MAX_NODES, NODE_COUNTS, WIRE_EVERY, SimResult, check_skew, run_seed

__all__ = ["main"]

T = TypeVar("T")


def _package_doc() -> str | None:
    from .. import sim

    return sim.__doc__


MAX_JOBS = 4 * (os.cpu_count() or 1)
"""The largest ``--jobs``: four worker processes per CPU. A run is pure CPU work, so workers
beyond the CPU count only share the same CPUs (and each holds a Python interpreter's memory);
the margin lets a command line written for a bigger machine still run on this one."""


class _Terminated(BaseException):
    """SIGTERM arrived (``timeout``, a cancelled CI job): the command stops as on Ctrl-C.
    (Not an ``Exception``, which a caller's ``except Exception`` would swallow.)"""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _init_worker() -> None:
    """Worker processes leave Ctrl-C to the parent (the terminal sends SIGINT to the whole
    process group; the parent stops the workers) and die on SIGTERM. They start with both
    signals blocked (``_submit``), so one that came in between is dropped or acted on now."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    # The simulated nodes' log is not the simulator's output: they log the faults it injects
    # (a peer unreachable, elections without a leader) at WARNING, and with no handler
    # configured Python printed each one to stderr, a dozen lines a seed among the results.
    logging.getLogger("openraft_py").addHandler(logging.NullHandler())


def _submit(ex: ProcessPoolExecutor, fn: Callable[..., T], *calls: tuple[Any, ...]) -> list[Future[T]]:
    """``ex.submit(fn, *args)`` for each ``args`` of ``calls``, with SIGINT and SIGTERM held
    back meanwhile: the executor starts its worker processes here, and a worker forked
    with them unblocked would take a Ctrl-C for its own (a traceback) before
    ``_init_worker`` ran. This process gets a held signal once they are submitted."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return [ex.submit(fn, *args) for args in calls]
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _workers(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``jobs`` worker processes that run the simulations (this process only waits
    for them, so Ctrl-C never lands inside a run, where a node's task would take it for a
    failure of its own). When the block raises (Ctrl-C, SIGTERM, an error) the workers are
    killed and the work not done dropped: shutting down alone would wait for every
    submitted run, and a worker left behind by its dead parent never exits."""
    before = set(multiprocessing.active_children())
    ex = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker)
    try:
        yield ex
    except BaseException:
        started = [w for w in multiprocessing.active_children() if w not in before]
        for w in started:
            w.kill()
        for w in started:
            w.join()
        # The executor's thread finds its workers dead, fails what was pending and ends:
        # wait for it (the interpreter's exit could otherwise race it and print an error).
        ex.shutdown(cancel_futures=True)
        raise
    ex.shutdown()


def _skew_arg(text: str) -> float:
    """``--skew``: a clock-rate skew in ``[0, 1)``."""
    try:
        return check_skew(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1)") from None


def _nodes_arg(text: str) -> int:
    """``--nodes``: a cluster size of ``NODE_COUNTS`` (3 to ``MAX_NODES``)."""
    n = decimal_int(text)
    if n not in NODE_COUNTS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node count from 3 to {MAX_NODES}")
    return n


def _lease_arg(text: str) -> float:
    """``--lease``: a skew factor from 0 to ``MAX_LEASE_FACTOR``."""
    try:
        f = float(text)
    except ValueError:
        f = -1.0
    if not 0 <= f <= MAX_LEASE_FACTOR:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to {MAX_LEASE_FACTOR:g}")
    return f


def _run_one(
    seed: int, faults: tuple[str, ...], steps: int, wire: bool | None, skew: float = 0.0,
    lease: float | None = None, read_index: bool = False, nodes: int | None = None,
) -> SimResult | LeaseResult:
    """One seed: a random run (``run_seed``; ``nodes``: its cluster size, None for the
    seed's own), or the lease scenario when ``lease`` (its skew factor) is given
    (``run_lease_seed``; ``read_index``: its reads use READ_INDEX)."""
    if lease is None:
        return run_seed(seed, faults, steps, wire, skew, nodes)
    return run_lease_seed(seed, lease, ReadPolicy.READ_INDEX if read_index else ReadPolicy.LEASE_READ)


def _run_alone(
    seed: int, faults: tuple[str, ...], steps: int, wire: bool | None, skew: float = 0.0,
    lease: float | None = None, read_index: bool = False, nodes: int | None = None,
) -> SimResult | LeaseResult:
    """``_run_one`` in a fresh worker process (one that ran nothing before)."""
    with _workers(1) as ex:
        [run] = _submit(ex, _run_one, (seed, faults, steps, wire, skew, lease, read_index, nodes))
        return run.result()


_CHUNK = 10
"""Seeds per task handed to a worker."""


def _chunks(start: int, count: int) -> Iterator[list[int]]:
    """The seeds ``start .. start + count - 1`` in lists of ``_CHUNK``, made as they are taken."""
    for lo in range(start, start + count, _CHUNK):
        yield list(range(lo, min(lo + _CHUNK, start + count)))


def _run_batch(
    seeds: list[int], faults: tuple[str, ...], steps: int, wire: bool | None, skew: float = 0.0,
    lease: float | None = None, read_index: bool = False, nodes: int | None = None,
) -> list[tuple[int, bool, str | None, str]]:
    """Run ``seeds`` one after another (in a worker): ``(seed, ok, violation, replay command)``."""
    out = []
    for s in seeds:
        r = _run_one(s, faults, steps, wire, skew, lease, read_index, nodes)
        out.append((s, r.ok, r.violation, r.replay_command()))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: run many seeds with a progress bar, or replay one.

    Exit status 0 when every run is clean, 1 when one found a violation, 2 for bad
    arguments, 130 on Ctrl-C (SIGINT) and 143 on SIGTERM: the worker processes are then
    stopped, and one line says so (no traceback)."""
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m openraft_py.testing.sim", description=_package_doc(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", action=GivenOnce, type=positive_int, default=None, help="run seeds start..start+N-1 (default 100)")
    p.add_argument("--start", action=GivenOnce, type=decimal_int, default=None, help="the first seed of --seeds (default 0)")
    p.add_argument("--seed", action=GivenOnce, type=decimal_int, help="run this one seed")
    p.add_argument("--fault", action="append", default=[], choices=ENGINE_FAULTS, help="inject an engine bug")
    p.add_argument("--steps", action=GivenOnce, type=positive_int, default=30, help="admin and fault steps per run (default 30)")
    p.add_argument("--jobs", action=GivenOnce, type=positive_int_at_most(MAX_JOBS), default=os.cpu_count() or 1,
                   help=f"worker processes, 1 to {MAX_JOBS} (four per CPU: the runs are CPU-bound, more workers "
                   "than CPUs only share them) (default: the CPU count)")
    p.add_argument("--trace", action="store_true", help="print the trace of a single seed (with --seed)")
    p.add_argument("--wire", action=GivenOnce, choices=("share", "all", "none"), default="share",
                   help=f"pass messages through the TCP codec: seeds %% {WIRE_EVERY} == 0 (share), all or none")
    p.add_argument("--skew", action=GivenOnce, type=_skew_arg, default=0.0,
                   help="clock-rate skew S in [0, 1): each node's clock runs at a rate drawn from [1-S, 1+S] of "
                   "real time (default 0: no skew)")
    p.add_argument("--nodes", action=GivenOnce, type=_nodes_arg, default=None, metavar="N",
                   help=f"start every run with N voters, 3 to {MAX_NODES} (default: each seed draws 3 or 5); the "
                   "seed's other choices stay as they are")
    p.add_argument("--lease", action=GivenOnce, type=_lease_arg, default=None, metavar="FACTOR",
                   help="run the lease-read scenario instead (sim/lease.py): the leader's clock slow, the others "
                   "fast, by FACTOR times the skew lease_drift_margin is documented to cover (0 to "
                   f"{MAX_LEASE_FACTOR:g}; up to 1 must be clean)")
    p.add_argument("--read-index", action="store_true", help="with --lease: read with READ_INDEX, not LEASE_READ")
    args = p.parse_args(argv)
    if args.lease is not None:
        given = [flag for flag, on in (("--fault", args.fault), ("--skew", args.skew), ("--steps", args.steps != 30),
                                       ("--wire", args.wire != "share"), ("--nodes", args.nodes is not None))
                 if on]
        if given:
            p.error(f"--lease runs the lease-read scenario, which takes no {', '.join(given)}")
    elif args.read_index:
        p.error("--read-index is an option of the lease-read scenario: give --lease FACTOR")
    if args.seed is not None and (args.seeds is not None or args.start is not None):
        p.error("--seed runs one seed: it cannot be combined with --seeds or --start")
    if args.trace and args.seed is None:
        p.error("--trace prints one run's trace: give the seed with --seed")
    if args.seeds is None:
        args.seeds = 100
    if args.start is None:
        args.start = 0
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it takes signals
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("sim: interrupted; every worker process was stopped", file=sys.stderr)
        return 130
    except _Terminated:
        print("sim: terminated; every worker process was stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """Run what the parsed ``args`` ask for; returns the exit status."""
    faults = tuple(args.fault)
    wire = {"share": None, "all": True, "none": False}[args.wire]
    if args.seed is not None:
        r = _run_alone(args.seed, faults, args.steps, wire, args.skew, args.lease, args.read_index, args.nodes)
        if args.trace or not r.ok:
            print("\n".join(r.trace if args.trace else r.trace[-60:]))
        print(f"seed {args.seed}: {'ok' if r.ok else 'VIOLATION: ' + str(r.violation)} "
              f"({r.ops} ops, {r.virtual_seconds:.2f} virtual s, digest {r.digest()[:16]})")
        return 0 if r.ok else 1
    total = args.seeds
    chunks = _chunks(args.start, total)
    n_chunks = -(-total // _CHUNK)
    failures: list[tuple[int, str | None, str]] = []
    done = 0
    t0 = time.time()
    # No more workers than chunks: the others would only start and wait.
    jobs = min(args.jobs, n_chunks)
    with _workers(jobs) as ex:
        running: set[Future[list[tuple[int, bool, str | None, str]]]] = set()
        try:
            while True:
                # A few chunks per worker in flight, the next ones made as these finish:
                # submitting them all at once held every seed in memory before the first
                # ran (gigabytes for ten million seeds), and Ctrl-C waited for it.
                for ch in itertools.islice(chunks, 4 * jobs - len(running)):
                    running.update(_submit(ex, _run_batch, (ch, faults, args.steps, wire, args.skew, args.lease,
                                                                 args.read_index, args.nodes)))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    for s, ok, violation, cmd in fut.result():
                        done += 1
                        if not ok:
                            failures.append((s, violation, cmd))
                bar = "#" * int(30 * done / total)
                sys.stdout.write(f"\r[{bar:<30}] {done}/{total} seeds, {len(failures)} violations, "
                                 f"{time.time() - t0:.0f}s")
                sys.stdout.flush()
        finally:
            print()  # ends the progress line
    failures.sort()
    for s, violation, cmd in failures:
        first = (violation or "").splitlines()[0] if violation else ""
        # Replay it alone: a failure that does not come back depends on the runs before it
        # in its worker process, which is a simulator bug of its own.
        again = _run_alone(s, faults, args.steps, wire, args.skew, args.lease, args.read_index, args.nodes)
        note = "" if not again.ok else "\n  NOT REPRODUCED when replayed alone: the run depended on earlier runs"
        print(f"seed {s}: {first}\n  replay: {cmd}{note}")
    if args.lease is not None:
        what = f"lease scenario, skew factor {args.lease:g}{', READ_INDEX' if args.read_index else ''}"
    else:
        # Every option that makes the runs other than the defaults' is named, so that the
        # line a report quotes says which runs were clean.
        what = f"faults: {', '.join(faults) or 'none'}{f', skew {args.skew:g}' if args.skew else ''}"
        if args.wire != "share":
            what += f", wire {args.wire}"
        if args.steps != 30:
            what += f", {args.steps} steps"
        if args.nodes is not None:
            what += f", {args.nodes} nodes"
    print(f"{total} seeds, {total - len(failures)} clean, {len(failures)} with violations ({what}) "
          f"in {time.time() - t0:.0f}s")
    return 0 if not failures else 1
