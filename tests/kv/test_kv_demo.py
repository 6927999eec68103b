"""``openraft-py demo`` (what ``make run`` runs): ``--quick`` passes end to end across real
processes and leaves nothing behind; Ctrl-C mid-run stops every process and removes the data;
the summary fails the run on a lost write or a history that is not linearizable."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from openraft_py.kv.demo import Demo, DemoConfig
from openraft_py.testing import lincheck

pytestmark = pytest.mark.timeout(120)

ROOT = re.compile(r"RocksDB under (\S+)\)")


def _processes_under(root: str) -> list[int]:
    """Pids of processes whose command line mentions ``root``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in cmd:
            pids.append(int(d.name))
    return pids


def test_demo_quick_passes_and_cleans_up(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    r = subprocess.run([sys.executable, "-m", "openraft_py.kv", "demo", "--quick", "--seed", "7",
                        "--history", str(history), "--no-progress"],
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in ("writes ", "write latency    p50", "failover         SIGKILL n", "new leader n",
                 "restart ", "membership       n4 added as a learner", "entries per node n1:",
                 "durability       OK", "linearizability  linearizable:", "result           PASS"):
        assert line in out, out
    assert re.search(r"writes\s+(\d+) acknowledged \((\d+)/s\)", out)
    m = ROOT.search(r.stderr)
    assert m, r.stderr
    root = m[1]
    assert not Path(root).exists()
    assert _processes_under(root) == []
    # The recorded history is the one checked: it reads back and is linearizable.
    ops = lincheck.parse_jsonl(history)
    assert len(ops) > 100
    assert {op.op for op in ops} >= {"put", "get", "cas"}
    assert lincheck.check(ops, lincheck.kv_register, timeout=60).ok is True


def test_ctrl_c_mid_run_stops_everything_and_removes_the_data() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "openraft_py.kv", "demo", "--duration", "30", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        root = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "the demo exited before the load started"
            m = ROOT.search(line)
            if m:
                root = m[1]
            if "load:" in line:
                break
        assert root is not None and Path(root).exists()
        assert len(_processes_under(root)) == 3
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        # communicate() drains both pipes: a demo blocked writing to a full pipe nobody reads
        # would otherwise never exit.
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert not Path(root).exists()
        assert _processes_under(root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _summary(history: list[lincheck.Operation], unique: dict[str, str],
             values: dict[int, dict[str, str | None]]) -> tuple[int, str]:
    demo = Demo(DemoConfig(duration=1.0, clients=1, keys=1), out=io.StringIO(), err=io.StringIO())
    demo.history = history
    demo.unique_acked = unique
    demo.stats.ok_writes = sum(1 for op in history if op.ok and op.op != "get")
    verdict = lincheck.check(history, lincheck.kv_register, timeout=10)
    sts = {i: {"last_log_index": 3, "applied_index": 3} for i in values}
    code = demo._summary(SimpleNamespace(nodes=dict.fromkeys(values)), 1.0, sts, {"k0": "b"}, values,  # type: ignore[arg-type]
                         verdict)
    assert isinstance(demo.out, io.StringIO)
    return code, demo.out.getvalue()


def test_the_summary_fails_the_run_on_a_lost_write_or_a_violation() -> None:
    Op = lincheck.Operation
    good = [Op(0, "put", "k0", "a", None, 0.0, 1.0), Op(1, "put", "k0", "b", None, 2.0, 3.0),
            Op(0, "get", "k0", None, "b", 4.0, 5.0), Op(0, "put", "u/0/1", "x", None, 6.0, 7.0)]
    everywhere = {i: {"k0": "b", "u/0/1": "x"} for i in (1, 2, 3)}
    code, out = _summary(good, {"u/0/1": "x"}, everywhere)
    assert code == 0 and "result           PASS" in out and "durability       OK" in out

    lost = {**everywhere, 2: {"k0": "b"}}  # n2 lacks an acknowledged write
    code, out = _summary(good, {"u/0/1": "x"}, lost)
    assert code == 1 and "PROBLEM: 1 acknowledged writes missing, e.g. 'u/0/1' on n2" in out
    assert "result           FAIL" in out

    stale = good[:3] + [Op(2, "get", "k0", None, "a", 6.0, 6.5)]  # reads an overwritten value
    code, out = _summary(stale, {}, {i: {"k0": "b"} for i in (1, 2, 3)})
    assert code == 1 and "NOT linearizable" in out and "PROBLEM: the history is NOT linearizable" in out


class _GrowingCluster:
    """What ``Demo._grow`` uses of a ``LocalCluster``: three nodes and a fourth to add, a
    client whose ``change_members`` answers ``answers`` in turn."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        from openraft_py.kv.client import Outcome, Response

        self.nodes = {1: None, 2: None, 3: None}
        self.asked: list[list[int]] = []
        answers_left = list(answers)
        cluster = self

        class Client:
            async def add_learner(self, *args: object, **kw: object) -> Response:
                return Response(Outcome.OK, 200, b"{}")

            async def change_members(self, voters: list[int], **kw: object) -> Response:
                cluster.asked.append(voters)
                status, body = answers_left.pop(0)
                if status == 200:
                    return Response(Outcome.OK, 200, body)
                outcome = Outcome.INFO if status == 503 else Outcome.FAIL
                return Response(outcome, status, body, error=f"HTTP {status}: {body.decode()}")

        self.client = Client()

    def add_node(self) -> SimpleNamespace:
        self.nodes[4] = None
        return SimpleNamespace(id=4, raft_addr="127.0.0.1:1", http_addr="127.0.0.1:2")

    async def start_node(self, node_id: int, timeout: float) -> None:
        pass


IN_PROGRESS = (409, b'{"error": "InProgress: another membership change (log index 1200, term 3) has not committed yet: nothing was done; retry once it has (the request that made it is answered then; a change the leader was elected with commits with its first writes)"}')


async def test_growing_asks_again_while_the_previous_change_is_not_committed() -> None:
    # A leader elected after the learner's entry commits it with its own first entry; until
    # then it refuses the change with InProgress, which is worth asking again.
    cluster = _GrowingCluster([IN_PROGRESS, IN_PROGRESS, (200, b'{"voters": [1, 2, 3, 4]}')])
    demo = Demo(DemoConfig(progress=False), err=io.StringIO())
    await demo._grow(cluster)  # type: ignore[arg-type]
    assert cluster.asked == [[1, 2, 3, 4]] * 3
    assert "voters are now [1, 2, 3, 4]" in demo.events[-1]


async def test_growing_asks_again_after_an_unknown_outcome() -> None:
    # The leader stepped down during the change (503, outcome unknown: under load, seen once
    # in a make test run). The same voters asked of the next leader are answered at once if
    # the change took effect, else made: worth asking again, not a failed demo.
    unknown = (503, b'{"error": "ForwardToLeader: the outcome is unknown"}')
    cluster = _GrowingCluster([unknown, IN_PROGRESS, (200, b'{"voters": [1, 2, 3, 4]}')])
    demo = Demo(DemoConfig(progress=False), err=io.StringIO())
    await demo._grow(cluster)  # type: ignore[arg-type]
    assert cluster.asked == [[1, 2, 3, 4]] * 3
    assert "voters are now [1, 2, 3, 4]" in demo.events[-1]


@pytest.mark.parametrize(
    "refusal", [(409, b'{"error": "NotAllowed: initialized already"}'), (400, b'{"error": "LearnerNotFound: 4"}')]
)
async def test_growing_fails_at_once_on_any_other_refusal(refusal: tuple[int, bytes]) -> None:
    from openraft_py.kv.demo import DemoFailed

    cluster = _GrowingCluster([refusal, (200, b"{}")])
    demo = Demo(DemoConfig(progress=False), err=io.StringIO())
    with pytest.raises(DemoFailed, match="changing the voters"):
        await demo._grow(cluster)  # type: ignore[arg-type]
    assert len(cluster.asked) == 1


async def test_a_history_file_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path) -> None:
    """``--history`` in a directory that does not exist, or naming a directory, is a usage
    error (exit 2) before any node starts (the run went to the end and failed writing it:
    the summary and the verdict were lost)."""
    for path in (tmp_path / "missing" / "h.jsonl", tmp_path):
        err = io.StringIO()
        started = time.monotonic()
        code = await Demo(DemoConfig(duration=1.0, clients=1, history=str(path), progress=False),
                          out=io.StringIO(), err=err).run()
        assert code == 2 and time.monotonic() - started < 5, err.getvalue()
        assert err.getvalue().startswith(f"openraft-py demo: error: cannot write --history {path}: "), err.getvalue()
    assert list(tmp_path.iterdir()) == []


async def test_a_data_dir_that_cannot_be_one_is_refused_naming_the_flag(tmp_path: Path) -> None:
    """``demo --data-dir F`` where ``F`` is a file, lies under one, or is a symbolic link
    that leads nowhere: a usage error (exit 2) naming the flag, before any node starts, as
    ``cluster up`` and ``serve`` say it. A file was "FileExistsError: [Errno 17] File exists:
    'F'" (mkdir's words for it), naming no flag, with exit 1."""
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    link = tmp_path / "a-link"  # to a disk not mounted
    link.symlink_to(tmp_path / "not-mounted" / "openraft")
    for given, why in ((file, "it is a file, not a directory"),
                       (file / "sub", f"{str(file)!r} is a file, not a directory"),
                       (link, f"a symbolic link to {str(tmp_path / 'not-mounted' / 'openraft')!r}, which leads to "
                              "no directory (is its disk mounted?): create the directory it names, or give another "
                              "--data-dir")):
        err = io.StringIO()
        started = time.monotonic()
        code = await Demo(DemoConfig(duration=1.0, clients=1, data_dir=str(given), progress=False),
                          out=io.StringIO(), err=err).run()
        assert code == 2 and time.monotonic() - started < 5, err.getvalue()
        assert err.getvalue().splitlines() == [f"openraft-py demo: error: --data-dir {str(given)!r}: {why}"]
    assert file.read_text() == "not a directory"
    assert not (tmp_path / "not-mounted").exists()
