"""Instructions per write of the in-process cluster, counted by valgrind: a measure of CPU
work that a shared machine's noise does not move (``docs/design/performance.md``, the
nineteenth round).

The cluster of ``bench/cluster.py`` (3 nodes unless ``--nodes``, in-memory log store, no-op state machine,
router without faults) with its timers off (``enable_tick=False``; node 1 is made leader by
``trigger.elect()``), so that no heartbeat or tick runs a number of times that depends on
how slowly valgrind runs the process. ``N1`` and then ``N2`` writes run under
``valgrind --tool=cachegrind --cache-sim=no``; the difference of the two instruction counts
over ``N2 - N1`` is the cost of one write, start-up and teardown cancelled out. Every child
runs with one hash seed (``PYTHONHASHSEED``, 0 unless set), so counts of the same code
repeat to within a few instructions a write::

    python bench/instructions.py                  # 1 writer, 500 and 2,500 writes
    python bench/instructions.py --writers 256 --n1 5000 --n2 25000
    python bench/instructions.py --nodes 1        # the leader alone: no replication

``--nodes`` (1 to 3, default 3) splits a write's cost: one node counts the leader's own path
(the write, its append, commit and apply); each further node adds what one follower costs,
on the leader (its request, the answer's report and handling) and on the follower itself.

The result is instructions, not time: a change that saves instructions may still be slower
(cache misses, branch mispredictions, the interpreter's specializations), so a change is
kept on timed runs (``bench/cluster.py``, alternate pairs), with this as the steady figure.
Needs valgrind on ``PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _writes(writers: int, total: int, nodes: int = 3) -> None:
    from openraft_py import Config, SnapshotPolicy
    from openraft_py.storage.memory import NoopStateMachine
    from openraft_py.testing import Cluster

    config = Config(
        snapshot_policy=SnapshotPolicy.never(), election_timeout_min=1000, election_timeout_max=2000, enable_tick=False
    )
    async with Cluster(config, state_machine=lambda disk: NoopStateMachine(disk)) as c:
        await c.start(set(range(1, nodes + 1)))
        await c.nodes[1].trigger.elect()
        leader = c.nodes[await c.wait_for_leader(timeout=60)]
        await asyncio.gather(*(leader.client_write(b"w") for _ in range(200)))
        payload = b"x" * 16
        left = total

        async def writer() -> None:
            nonlocal left
            write = leader.client_write
            while left > 0:
                left -= 1
                await write(payload)

        await asyncio.gather(*(writer() for _ in range(writers)))


def _count(writers: int, total: int, nodes: int) -> int:
    """Instructions of a whole child process making ``total`` writes to a cluster of ``nodes``."""
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, __file__, "--child", str(writers), str(total), str(nodes),
    ]
    # One hash seed for every child (0 unless the caller set one): with a random seed per
    # process, sets and dicts of str iterate in another order in each run, and the schedule
    # of the nodes' tasks with them; two runs of the same code then differed by up to 2% a
    # write (256 writers), with a fixed seed by a few instructions.
    env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env).stderr
    m = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", type=int, default=1)
    p.add_argument("--n1", type=int, default=500, help="writes of the first run")
    p.add_argument("--n2", type=int, default=2500, help="writes of the second run (more than n1)")
    p.add_argument("--nodes", type=int, default=3, help="cluster size, 1 to 3 (1: the leader alone)")
    p.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import uvloop

        uvloop.run(_writes(*args.child))
        # Out without the interpreter's finalization: its full collection traverses every
        # entry the run left in the in-memory logs, a cost that grows with the writes made
        # (about 660 instructions a write at 256 writers, 2,000 against 22,000 writes) and
        # is not a write's.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not on PATH")
    if args.writers < 1 or args.n1 < 0 or args.n2 <= args.n1 or not 1 <= args.nodes <= 3:
        sys.exit("need --writers >= 1, 0 <= --n1 < --n2 and 1 <= --nodes <= 3")
    from openraft_py._compiled import env_flag

    build = "pure" if env_flag("OPENRAFT_PY_NO_EXTENSIONS") else "compiled"
    a = _count(args.writers, args.n1, args.nodes)
    b = _count(args.writers, args.n2, args.nodes)
    per_write = (b - a) / (args.n2 - args.n1)
    print(f"in-process ({build}), {args.nodes} node(s), {args.writers} writer(s): {per_write / 1000:.1f}k instructions "
          f"per write ({args.n1:,} and {args.n2:,} writes: {a:,} and {b:,})")


if __name__ == "__main__":
    main()
