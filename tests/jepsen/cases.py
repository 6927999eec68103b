"""The Jepsen runs of ``make test`` as named cases, run in a background process.

A case is one or more ``jepsen.run`` calls (30 to 60 seconds each) that end in a JSON-able
dict, which the test then asserts on. A run keeps about two thirds of one core busy (its
``serve`` processes mostly wait on the schedule), so the test modules' ``start_early`` (see
``tests/conftest.py``) queues their selected cases right after collection: a thread of the
pytest process runs them one after another, each in a child process (this file, run as a
script), while the rest of the suite runs. A test waits for its own case's result; a case
that was not queued (its module's hook did not run) is queued when its test asks for it.

A case's process is the process group leader of its session; the runner puts every ``serve``
it starts in a session of its own and stops them in its ``finally``, so the case process is
stopped with SIGTERM (which cancels the run) before SIGKILL, never the other way round.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from openraft_py.testing.jepsen import RunConfig, RunResult, run
from openraft_py.testing.jepsen.nemesis import KINDS
from openraft_py.testing.jepsen.workload import WorkloadConfig

# -- the cases --------------------------------------------------------------------------------

SMOKE_TIME = float(os.environ.get("JEPSEN_SMOKE_TIME", "60"))
BUG_SEEDS = (1, 2, 3)
BUG_TIME = 30.0


def bug_config(seed: int, bugs: tuple[str, ...], nodes: int, out: Path | None = None) -> RunConfig:
    """The targeted schedule of the injected-bug cases: the leader isolated in a minority."""
    # Read-heavy, and a short client timeout: the clients of a stale leader must not spend
    # the window waiting on writes it cannot commit.
    wl = WorkloadConfig(clients=6, workloads=("register",), register_slots=1, timeout=0.5,
                        mix={"get-lease": 6.0, "get-linearizable": 1.0, "put": 2.0, "cas": 1.0})
    # Followers time out early (400 ms) while an isolated leader keeps leading until check
    # quorum steps it down (4 s): the window in which a stale leader can still answer.
    raft = {"heartbeat_interval": 100, "election_timeout_min": 400, "election_timeout_max": 4000}
    return RunConfig(time=BUG_TIME, seed=seed, nodes=nodes, bugs=bugs, kinds=("partition-leader",),
                     workload=wl, hold=(6.0, 10.0), check_timeout=60.0, out=out, raft_config=raft)


async def _first_failure(bug: str, nodes: int, out: Path) -> dict[str, Any]:
    """Run ``bug`` over ``BUG_SEEDS`` until a run fails; what failed, or ``seed: None``."""
    lines: list[str] = []
    for seed in BUG_SEEDS:
        result = await run(bug_config(seed, (bug,), nodes, out / f"seed{seed}"), lines.append)
        if not result.ok:
            artifacts = result.out_dir is not None and all(
                (result.out_dir / name).exists() for name in ("history.jsonl", "schedule.json"))
            return {"seed": seed, "failed": _failed(result), "artifacts": artifacts, "lines": lines}
    return {"seed": None, "failed": [], "artifacts": False, "lines": lines}


def _failed(result: RunResult) -> list[str]:
    return [v.name for v in result.verdicts if not v.ok]


async def expired_lease_read(out: Path) -> dict[str, Any]:
    """``expired_lease_read`` on 3 nodes, seeds ``BUG_SEEDS`` until caught."""
    return await _first_failure("expired_lease_read", 3, out)


async def apply_before_commit(out: Path) -> dict[str, Any]:
    """``apply_before_commit`` on 5 nodes, seeds ``BUG_SEEDS`` until caught."""
    return await _first_failure("apply_before_commit", 5, out)


async def no_bug(out: Path) -> dict[str, Any]:
    """The control: the bug cases' first schedule with no bug switched on."""
    lines: list[str] = []
    result = await run(bug_config(BUG_SEEDS[0], (), 3), lines.append)
    return {"ok": result.ok, "failed": _failed(result), "lines": lines}


async def smoke(out: Path) -> dict[str, Any]:
    """The smoke run: 3 nodes, every nemesis kind, ``SMOKE_TIME`` seconds, a printed seed
    (``JEPSEN_SMOKE_SEED`` pins it)."""
    seed = int(os.environ.get("JEPSEN_SMOKE_SEED", random.randrange(2**31)))
    cfg = RunConfig(time=SMOKE_TIME, seed=seed, nodes=3, kinds=KINDS,
                    workload=WorkloadConfig(clients=4, think=0.02), check_timeout=120.0,
                    out=out / "artifacts")
    lines: list[str] = []
    result = await run(cfg, lines.append)
    ok_ops = sum(n for row in result.summary.values() for k, n in row.items() if k.startswith("ok"))
    return {"seed": seed, "ok": result.ok, "lines": lines, "has_summary": bool(result.summary),
            "ok_ops": ok_ops, "resolved_steps": sum(1 for s in result.schedule if s.resolved),
            "verdicts": sorted(v.name for v in result.verdicts)}


MEMBERSHIP_SEED = 39
"""Its 45-second schedule: a voter kept as a learner while the leader is killed mid-change,
a transfer, a voter removed from the cluster, another removed while the leader is killed."""
MEMBERSHIP_TIME = 45.0


async def membership(out: Path) -> dict[str, Any]:
    """The ``member`` and ``transfer`` nemeses alone: 3 nodes, ``MEMBERSHIP_SEED``."""
    cfg = RunConfig(time=MEMBERSHIP_TIME, seed=MEMBERSHIP_SEED, nodes=3, kinds=("member", "transfer"),
                    workload=WorkloadConfig(clients=4, think=0.02), check_timeout=120.0,
                    out=out / "artifacts")
    lines: list[str] = []
    result = await run(cfg, lines.append)
    return {"ok": result.ok, "lines": lines, "failed": _failed(result),
            "steps": [{"kind": s.kind, **s.resolved} for s in result.schedule]}


CASES: dict[str, Callable[[Path], Awaitable[dict[str, Any]]]] = {
    "expired_lease_read": expired_lease_read,
    "apply_before_commit": apply_before_commit,
    "no_bug": no_bug,
    "smoke": smoke,
    "membership": membership,
}

# The most a case may take (its runs, the checks, the nodes' start and stop); a case still
# running then is stopped and reported as such.
BUDGET = {
    "expired_lease_read": len(BUG_SEEDS) * (BUG_TIME + 120),
    "apply_before_commit": len(BUG_SEEDS) * (BUG_TIME + 120),
    "no_bug": BUG_TIME + 120,
    "smoke": SMOKE_TIME + 240,
    "membership": MEMBERSHIP_TIME + 240,
}
TOTAL_BUDGET = sum(BUDGET.values())  # the longest a test can wait: every case ahead of it, then its own


# -- the background queue (in the pytest process) ----------------------------------------------

@dataclass
class _Pending:
    name: str
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None  # why there is no result (the case process failed or was stopped)


class _Queue:
    """Runs the queued cases one after another, each in a child process, on one thread."""

    def __init__(self, base: Path | None) -> None:
        # Under pytest's base temporary directory when there is one (kept for the last few
        # sessions, like tmp_path, for a failed run's artifacts), else a directory of our own.
        self._remove_dir = base is None
        self._dir = Path(tempfile.mkdtemp(prefix="jepsen-cases-", dir=base))
        self._pending: dict[str, _Pending] = {}
        self._todo: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, name: str) -> _Pending:
        """Queue ``name`` unless it already is; its pending result."""
        if name not in CASES:
            raise KeyError(f"unknown jepsen case {name!r}; known: {sorted(CASES)}")
        with self._lock:
            if name not in self._pending:
                self._pending[name] = _Pending(name)
                self._todo.put(self._pending[name])
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="jepsen-cases", daemon=True)
                    self._thread.start()
            return self._pending[name]

    def _work(self) -> None:
        while (p := self._todo.get()) is not None:
            try:
                if self._closed:
                    p.error = "the test session ended before the case ran"
                else:
                    self._run(p)
            except BaseException:  # noqa: BLE001 - the case fails with it; the queue goes on
                # Never leave a test waiting out the whole budget on a runner that died.
                p.result = None
                p.error = "the case runner failed:\n" + traceback.format_exc()
            finally:
                p.done.set()

    def _run(self, p: _Pending) -> None:
        out = self._dir / p.name
        out.mkdir()
        log_path = out / "case.log"
        with open(log_path, "wb") as log:
            with self._lock:
                if self._closed:
                    p.error = "the test session ended before the case ran"
                    return
                self._proc = proc = _spawn([sys.executable, __file__, p.name, str(out)], log)
            started = time.monotonic()
            try:
                proc.wait(timeout=BUDGET[p.name])
            except subprocess.TimeoutExpired:
                _stop(proc)
                p.error = f"still running after its budget of {BUDGET[p.name]:.0f} s: stopped"
            finally:
                with self._lock:
                    self._proc = None
        took = time.monotonic() - started
        result_path = out / "result.json"
        if p.error is None and proc.returncode == 0 and result_path.exists():
            p.result = json.loads(result_path.read_text())
            p.result["seconds"] = took
        elif p.error is None:
            p.error = f"the case process exited {proc.returncode} after {took:.1f} s"
        if p.error is not None:
            p.error += ":\n" + log_path.read_text(errors="replace")[-8000:]

    def close(self) -> None:
        """Stop the running case and drop the queued ones (the session is over)."""
        with self._lock:
            self._closed = True
            proc = self._proc
        if proc is not None:
            _stop(proc)
        self._todo.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._remove_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def _spawn(argv: list[str], log: IO[bytes], popen: Callable[..., Any] = subprocess.Popen) -> Any:
    """Start a case process (its own session, output to ``log``). A spawn that fails is
    tried once more, noted in ``log``: once, in a fresh-clone ``make test``, ``exec`` of the
    interpreter failed with EFAULT ("Bad address") in the child while the suite ran on; the
    case had not started."""
    try:
        return popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        log.write(f"starting the case process failed ({e!r}); trying once more\n".encode())
        log.flush()
        time.sleep(0.2)
        return popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the run stops its nodes), then SIGKILL to the group after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_queue: _Queue | None = None
_queue_lock = threading.Lock()


def start(config: Any, names: list[str]) -> None:
    """Queue ``names`` in order (from a test module's ``start_early``); the queue's cleanup
    is registered with ``config`` the first time."""
    global _queue
    with _queue_lock:
        if _queue is None:
            factory = getattr(config, "_tmp_path_factory", None)  # pytest's, as tmp_path uses
            _queue = _Queue(factory.getbasetemp() if factory is not None else None)
            config.add_cleanup(_queue.close)
        q = _queue
    for name in names:
        q.submit(name)


def result(name: str) -> dict[str, Any]:
    """Wait for case ``name`` (queued now if it was not) and return its result; raise
    ``AssertionError`` with the case's output when it has none."""
    global _queue
    with _queue_lock:
        if _queue is None:  # no start_early ran: queue here, clean up at exit
            _queue = _Queue(None)
            atexit.register(_queue.close)
        q = _queue
    p = q.submit(name)
    if not p.done.wait(timeout=TOTAL_BUDGET + 60):
        raise AssertionError(f"jepsen case {name} did not finish within {TOTAL_BUDGET + 60:.0f} s")
    if p.result is None:
        raise AssertionError(f"jepsen case {name}: {p.error}")
    return p.result


# -- the case process ---------------------------------------------------------------------------

def _main(name: str, out: Path) -> int:
    async def main() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM cancels the run, whose finally stops every serve process it started.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await CASES[name](out)

    res = asyncio.run(main())
    (out / "result.json").write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], Path(sys.argv[2])))
