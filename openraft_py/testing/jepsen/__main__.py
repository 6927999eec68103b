"""``python -m openraft_py.testing.jepsen``: one Jepsen run from the command line.

::

    python -m openraft_py.testing.jepsen --time 300 --seed N --nodes 5 [--bug NAME] [--out DIR]
        [--clients C] [--nemesis KIND,KIND] [--workload register,multi] [--raft-config JSON]

Exit status 0 when every check passed, 1 when one failed (the seed and the artifact directory
are printed) or when the ``kv`` extra, which the nodes and the clients need, is not installed
(one line says so), 2 for bad arguments, 130 when interrupted (Ctrl-C) and 143 when terminated (SIGTERM): the node
processes are then stopped and their data removed. Piped into a reader that goes away, it stops
the same way, quietly, with 141.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..._cli import kv_extra_not_installed, needs_kv_extra, run_cli
from ...engine.faults import EngineFault
from ...kv.argtypes import GivenOnce, decimal_int, positive_int_at_most
from .nemesis import KINDS

if TYPE_CHECKING:
    from .runner import RunResult

MAX_NODES = 9
"""The largest ``--nodes``: Raft clusters have 3, 5 or 7 voters (every write waits for a
majority, so more voters make each write slower and the cluster no more available in
practice), and each node here is a ``serve`` process of this one machine."""

MAX_CLIENTS = 64
"""The largest ``--clients``: each client is a connection with one operation in flight, and
the linearizability check's search grows with the operations concurrent on one key; beyond
a few dozen clients the machine, not the cluster, is what the run measures."""


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(","))
        if "" in items and text.strip():  # (dropped, it lost the kind meant there without a word)
            raise argparse.ArgumentTypeError(f"an empty item in {text!r}: choose from {', '.join(choices)}")
        items = tuple(x for x in items if x)
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items
    return parse


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run once, return the exit status."""
    missing = kv_extra_not_installed()
    if missing is not None:  # every invocation, --help included, as openraft-py does
        print(f"jepsen: error: {needs_kv_extra('the Jepsen test', missing)}", file=sys.stderr)
        return 1
    # The runner and the workload import aiohttp: imported once the extra is known to be there.
    from .runner import DEFAULT_RAFT_CONFIG, RunConfig, run
    from .workload import WorkloadConfig

    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m openraft_py.testing.jepsen",
                                description="A Jepsen-style test of real serve processes.")
    p.add_argument("--time", action=GivenOnce, type=float, default=300.0, help="seconds of clients and faults (default 300)")
    p.add_argument("--seed", action=GivenOnce, type=decimal_int, default=None, help="the seed (default: random, printed)")
    p.add_argument("--nodes", action=GivenOnce, type=positive_int_at_most(MAX_NODES), default=5,
                   help=f"cluster size, 1 to {MAX_NODES}: each node is a serve process of this machine, and Raft "
                   "clusters have 3, 5 or 7 voters (default 5)")
    p.add_argument("--clients", action=GivenOnce, type=positive_int_at_most(MAX_CLIENTS), default=6,
                   help=f"concurrent clients, 1 to {MAX_CLIENTS}: each is a connection with one operation in flight, "
                   "and the linearizability check grows with the operations concurrent on a key (default 6)")
    p.add_argument("--bug", action="append", default=[], choices=[f.value for f in EngineFault],
                   help="TEST ONLY: start the nodes with this engine bug switched on (repeatable)")
    p.add_argument("--nemesis", action=GivenOnce, type=_csv(KINDS), default=KINDS, help=f"kinds (default all: {','.join(KINDS)})")
    p.add_argument("--workload", action=GivenOnce, type=_csv(("register", "multi")), default=("register", "multi"))
    p.add_argument("--out", action=GivenOnce, type=Path, default=None, help="write the artifacts here (always on failure)")
    p.add_argument("--check-timeout", action=GivenOnce, type=float, default=300.0, help="seconds for lincheck (default 300)")
    p.add_argument("--raft-config", action=GivenOnce, metavar="JSON", default=None,
                   help="Config fields as a JSON object, over the run's timing (DEFAULT_RAFT_CONFIG), given to every "
                   "node's serve --raft-config; e.g. '{\"snapshot_policy\": {\"logs_since_last_n\": 300}, "
                   "\"max_in_snapshot_log_to_keep\": 20}' makes a node that was down catch up by a snapshot")
    a = p.parse_args(argv)
    if not (math.isfinite(a.time) and a.time > 0):
        p.error(f"--time must be a finite number of seconds > 0, not {a.time}")
    if not (math.isfinite(a.check_timeout) and a.check_timeout > 0):
        p.error(f"--check-timeout must be a finite number of seconds > 0, not {a.check_timeout}")
    if a.out is not None:  # found out now, not after the run when the artifacts are written
        try:
            a.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            p.error(f"--out {a.out}: cannot make this directory: {e.strerror or e}")
        if not os.access(a.out, os.W_OK | os.X_OK):
            p.error(f"--out {a.out}: this directory is not writable")
    raft_config = dict(DEFAULT_RAFT_CONFIG)
    if a.raft_config is not None:
        try:
            raft_config.update(raft_config_arg(a.raft_config))
        except ValueError as e:
            p.error(str(e))
    seed = a.seed if a.seed is not None else random.randrange(2**31)
    cfg = RunConfig(time=a.time, seed=seed, nodes=a.nodes, bugs=tuple(a.bug), kinds=tuple(a.nemesis), out=a.out,
                    workload=WorkloadConfig(clients=a.clients, workloads=tuple(a.workload)),
                    check_timeout=a.check_timeout, raft_config=raft_config)

    def say(line: str) -> None:
        print(line, flush=True)

    async def run_until_terminated() -> RunResult:
        # SIGTERM (``timeout``, a CI job cancelled) cancels the run like Ctrl-C does, so the
        # nodes (in sessions of their own, out of reach of the signal) are stopped too.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _cancel_current(asyncio.current_task()))
        return await run(cfg, say)

    try:
        result = asyncio.run(run_until_terminated())
    except KeyboardInterrupt:
        print(f"jepsen: interrupted (seed {seed}); every node process was stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        print(f"jepsen: terminated (seed {seed}); every node process was stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0 if result.ok else 1


def raft_config_arg(text: str) -> dict[str, object]:
    """``--raft-config``'s JSON object, checked as ``serve`` checks it over the run's timing
    (``DEFAULT_RAFT_CONFIG``): ``ValueError`` naming the flag for what every node would
    refuse at its start (invalid JSON, not an object, an unknown field, a wrong type or
    value), found before any node is started."""
    from ...kv.server import add_serve_arguments, options_from_args
    from .runner import DEFAULT_RAFT_CONFIG

    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--raft-config: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"--raft-config: a JSON object of Config fields, not {type(obj).__name__}")
    merged = {**DEFAULT_RAFT_CONFIG, **obj}
    serve = add_serve_arguments(argparse.ArgumentParser())
    args = serve.parse_args(["--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
                             "--data-dir", "jepsen-check", "--cluster-name", "jepsen",
                             "--raft-config", json.dumps(merged)])
    options_from_args(args)  # ValueError: "--raft-config: ..."
    return obj


def _cancel_current(task: asyncio.Task[RunResult] | None) -> Callable[[], None]:
    """A SIGTERM handler cancelling ``task`` (the run)."""
    def cancel() -> None:
        if task is not None:
            task.cancel()
    return cancel


if __name__ == "__main__":
    sys.exit(run_cli(main))
