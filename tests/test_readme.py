"""The README's code blocks run as printed.

Every fenced block tagged ``python``, ``sh``, ``shell``, ``bash`` or ``console`` in README.md is
either run here or carries, on the line before its fence (blank lines allowed), a marker that
says why not::

    <!-- not-run: needs three machines -->

- ``python`` blocks run in order in one namespace, as a reader pasting them into one session
  would (a later block may use an earlier block's imports). Top-level ``await`` is allowed (the
  ``python -m asyncio`` REPL's rule) and such a block runs under ``asyncio.run``.
- ``console`` blocks are transcripts: each ``$ `` line is a command (a trailing ``\\`` continues
  it), run by bash with this venv's ``bin`` first on ``PATH``, and the lines up to the next
  ``$ `` are its exact expected output.
- ``sh`` / ``shell`` / ``bash`` blocks run as one bash script (``set -euo pipefail``) and must
  exit 0.

A block printed for several machines may instead carry ``<!-- loopback: REASON -->``: the
test then runs it on this machine (Linux, where all of 127.0.0.0/8 is loopback). Every
``10.0.0.N`` becomes ``127.A.B.N`` (``A.B`` random per run), each ``openraft-py serve`` line is
started in the background with ``/var/lib/openraft-py`` replaced by a directory of its own
(and is waited for until its HTTP address answers), and the other lines run as bash scripts
that must exit 0, in README order, with the ``export`` lines of earlier loopback blocks in
effect. ``curl`` runs with ``--fail`` and ``--retry 3`` (a ``.curlrc`` in a temporary ``HOME``),
so an HTTP error other than a passing 503 fails the test. Every node is stopped (SIGTERM, then
SIGKILL) at the end.

Blocks with another tag, or none, are text (layouts, tables) and are not run. Commands run in
an empty temporary directory with ``OPENRAFT_PY_*`` switches removed from the environment, so
the transcript means the same under ``make test`` and ``make test-pure``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from codeblocks import CONSOLE, PYTHON, SCRIPT, bash, console_steps, shell_env

README = Path(__file__).resolve().parent.parent / "README.md"

_MARKER = re.compile(r"^<!--\s*(not-run|loopback):(.*?)-->\s*$")
_FENCE = re.compile(r"^```\s*([\w+-]*)")

pytestmark = pytest.mark.skipif(
    not README.exists(), reason="README.md is not next to the tests (installed-package run)"
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    not_run: str | None  # the not-run marker's reason, or None when the block runs
    loopback: str | None = None  # the loopback marker's reason: run with 10.0.0.N on loopback

    @property
    def runs(self) -> bool:
        """True when the test runs this block: a code block without a not-run marker."""
        return self.not_run is None and self.lang in PYTHON | SCRIPT | CONSOLE


@dataclass(frozen=True)
class Parsed:
    """The README's blocks and the markers that precede no block (``(line, reason)``)."""

    blocks: list[Block]
    orphan_markers: list[tuple[int, str]]


def parse_readme(text: str) -> Parsed:
    """Split Markdown ``text`` into fenced blocks, attaching each marker to its block.

    A marker attaches to the next fence when only blank lines separate them; a marker followed
    by anything else is reported in ``orphan_markers``. An unclosed fence raises ``ValueError``.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    orphans: list[tuple[int, str]] = []
    pending: tuple[int, str, str] | None = None  # (line, kind, reason)
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if marker:
            if pending is not None:
                orphans.append((pending[0], pending[2]))
            pending = (i + 1, marker.group(1), marker.group(2).strip())
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"README.md:{i + 1}: unclosed code fence")
            kind, reason = (pending[1], pending[2]) if pending is not None else ("", None)
            blocks.append(Block(
                fence.group(1).lower(), "\n".join(lines[i + 1:end]) + "\n", i + 1,
                not_run=reason if kind == "not-run" else None,
                loopback=reason if kind == "loopback" else None,
            ))
            pending = None
            i = end
        elif line.strip() and pending is not None:
            orphans.append((pending[0], pending[2]))
            pending = None
        i += 1
    if pending is not None:
        orphans.append((pending[0], pending[2]))
    return Parsed(blocks, orphans)


@pytest.fixture(scope="module")
def parsed() -> Parsed:
    return parse_readme(README.read_text())


@dataclass
class PythonRun:
    """The README's python blocks after running: their namespace, stdout and fence lines."""

    namespace: dict[str, object]
    stdout: str
    ran: list[int]


@pytest.fixture(scope="module")
def python_run(parsed: Parsed) -> PythonRun:
    """Every runnable python block, in order, in one namespace; their stdout captured."""
    namespace: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    ran: list[int] = []
    with contextlib.redirect_stdout(out):
        for block in parsed.blocks:
            if block.lang not in PYTHON or not block.runs:
                continue
            code = compile(block.code, f"README.md:{block.line}", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            result = eval(code, namespace)  # noqa: S307 - the README's own examples
            if code.co_flags & inspect.CO_COROUTINE:
                asyncio.run(result)
            ran.append(block.line)
    return PythonRun(namespace, out.getvalue(), ran)


def test_every_code_block_runs_or_says_why_not(parsed: Parsed) -> None:
    assert not parsed.orphan_markers, f"markers with no code block after them: {parsed.orphan_markers}"
    code_blocks = [b for b in parsed.blocks if b.lang in PYTHON | SCRIPT | CONSOLE]
    for block in code_blocks:
        if block.not_run is not None:
            assert block.not_run, f"README.md:{block.line}: a not-run marker needs a reason"
        if block.loopback is not None:
            assert block.loopback, f"README.md:{block.line}: a loopback marker needs a reason"
            assert block.lang in SCRIPT, f"README.md:{block.line}: loopback blocks are sh blocks"
    for block in parsed.blocks:
        if block.lang not in PYTHON | SCRIPT | CONSOLE:
            assert block.not_run is None and block.loopback is None, (
                f"README.md:{block.line}: a marker on a text block")
    running = [b for b in code_blocks if b.runs]
    skipped = [b for b in code_blocks if not b.runs]
    on_loopback = [b for b in running if b.loopback is not None]
    print(f"README: {len(running)} code blocks run ({len(on_loopback)} on loopback), "
          f"{len(skipped)} not run:")
    for b in skipped:
        print(f"  README.md:{b.line} ({b.lang}): {b.not_run}")
    assert any(b.lang in PYTHON for b in running)
    assert any(b.lang in CONSOLE | SCRIPT for b in running)


@pytest.mark.timeout(90)
def test_python_blocks_run(parsed: Parsed, python_run: PythonRun) -> None:
    expected = [b.line for b in parsed.blocks if b.lang in PYTHON and b.runs]
    assert python_run.ran == expected
    # The API tour wrote, was told to forward, and printed the leader's metrics.
    assert "ask 1 BasicNode(addr='127.0.0.1:22001')" in python_run.stdout
    assert "state=<ServerState.LEADER" in python_run.stdout


@pytest.mark.timeout(90)
def test_conformance_example_passes_on_the_rocks_log_store(python_run: PythonRun, tmp_path: Path) -> None:
    """The storage-suite example, with ``MyLogStore`` bound to the RocksDB log store, passes."""
    from openraft_py.storage.rocks import RocksLogStore

    test_fn = python_run.namespace.get("test_my_log_store")
    if not inspect.iscoroutinefunction(test_fn):
        pytest.fail("the README's conformance example no longer defines `async def test_my_log_store`")
    python_run.namespace["MyLogStore"] = RocksLogStore
    asyncio.run(asyncio.wait_for(test_fn(tmp_path), 60))


@pytest.mark.timeout(180)
def test_shell_blocks_run(parsed: Parsed, tmp_path: Path) -> None:
    blocks = [b for b in parsed.blocks if b.lang in SCRIPT | CONSOLE and b.runs and b.loopback is None]
    for block in blocks:
        cwd = tmp_path / f"block-{block.line}"
        cwd.mkdir()
        if block.lang in CONSOLE:
            for command, expected in console_steps(block.code):
                proc = bash(command, cwd)
                assert proc.returncode == 0, (block.line, command, proc.stderr[-3000:])
                got = [line.rstrip() for line in proc.stdout.splitlines()]
                assert got == expected, (f"README.md:{block.line}: {command}", proc.stderr[-3000:])
        else:
            proc = bash("set -euo pipefail\n" + block.code, cwd)
            assert proc.returncode == 0, (block.line, proc.stdout[-3000:], proc.stderr[-3000:])


_MACHINE = re.compile(r"\b10\.0\.0\.(\d{1,3})\b")
_DATA_DIR = "/var/lib/openraft-py"
SERVE_READY_TIMEOUT = 30.0


def logical_lines(code: str) -> list[str]:
    """The lines of a shell block with ``\\``-continued lines joined (as bash reads them)."""
    out: list[str] = []
    for line in code.splitlines():
        if out and out[-1].endswith("\\"):
            out[-1] = out[-1] + "\n" + line
        else:
            out.append(line)
    return out


def _wait_http(addr: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``GET http://addr/cluster/status`` gets any HTTP answer; fail if ``proc`` exits."""
    deadline = time.monotonic() + SERVE_READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve on {addr} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{addr}/cluster/status", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"serve on {addr} did not answer within {SERVE_READY_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(300)
def test_loopback_blocks_run_on_one_machine(parsed: Parsed, tmp_path: Path) -> None:
    blocks = [b for b in parsed.blocks if b.loopback is not None and b.runs]
    if not blocks:
        pytest.skip("the README has no loopback block")
    if not sys.platform.startswith("linux"):
        pytest.skip("loopback blocks map machines to 127.0.0.0/8 addresses, all local on Linux only")
    assert (Path(sys.executable).parent / "openraft-py").exists(), "openraft-py is not installed in this venv"
    net = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}."
    home = tmp_path / "home"
    home.mkdir()
    # --fail: an HTTP error fails the block. --retry: a 503 (no leader known for a moment, and
    # nothing done) is retried as a user would; 4xx are not retried.
    (home / ".curlrc").write_text("fail\nsilent\nshow-error\nmax-time = 60\nretry = 3\nretry-delay = 1\n")
    env = {**shell_env(), "HOME": str(home)}
    exports: list[str] = []
    nodes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run_script(lines: list[str], block: Block) -> None:
        if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines):
            return
        script = "\n".join(["set -euo pipefail", *exports, *lines])
        proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, timeout=120,
                              capture_output=True, text=True)
        assert proc.returncode == 0, (f"README.md:{block.line}", "\n".join(lines),
                                      proc.stdout[-3000:], proc.stderr[-3000:])
        exports.extend(ln for ln in lines if ln.startswith("export "))

    try:
        for block in blocks:
            pending: list[str] = []
            for line in logical_lines(_MACHINE.sub(lambda m: net + m.group(1), block.code)):
                if not line.lstrip().startswith("openraft-py serve "):
                    pending.append(line)
                    continue
                run_script(pending, block)
                pending = []
                http = re.search(r"--http-addr\s+(\S+)", line)
                assert http, f"README.md:{block.line}: a serve line without --http-addr"
                data_dir = tmp_path / f"data-{http.group(1).replace(':', '-')}"
                log = tmp_path / f"serve-{http.group(1).replace(':', '-')}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(["bash", "-c", "exec " + line.replace(_DATA_DIR, str(data_dir))],
                                            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
                nodes.append((proc, log))
                _wait_http(http.group(1), proc, log)
            run_script(pending, block)
        for proc, log in nodes:
            assert proc.poll() is None, (
                f"a node stopped during the README's commands:\n{log.read_text()[-3000:]}")
    finally:
        for proc, _ in nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in nodes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_parser_attaches_markers_and_reads_transcripts() -> None:
    text = (
        "<!-- not-run: needs three machines -->\n\n```sh\nserve\n```\n"
        "<!-- not-run: dangling -->\nprose\n"
        "```console\n$ echo a \\\n  b\na b\n$ true\n```\n"
        "```\nlayout\n```\n"
    )
    p = parse_readme(text)
    assert [(b.lang, b.line, b.not_run) for b in p.blocks] == [
        ("sh", 3, "needs three machines"), ("console", 8, None), ("", 14, None)]
    assert p.orphan_markers == [(6, "dangling")]
    assert console_steps(p.blocks[1].code) == [("echo a \\\n  b", ["a b"]), ("true", [])]
    looped = parse_readme("<!-- loopback: two machines -->\n```sh\nserve a \\\n  b\nx\n```\n").blocks[0]
    assert (looped.not_run, looped.loopback, looped.runs) == (None, "two machines", True)
    assert logical_lines(looped.code) == ["serve a \\\n  b", "x"]
    with pytest.raises(ValueError, match="unclosed"):
        parse_readme("```python\nx = 1\n")
    with pytest.raises(ValueError, match="before any command"):
        console_steps("output\n$ true\n")


_SUITE_COUNTS = [
    # (file, pattern whose group is a count, the suite it counts)
    ("README.md", r"(\d+) log-store checks", "LogStoreSuite"),
    ("README.md", r"(\d+) state-machine checks", "StateMachineSuite"),
    ("README.md", r"`run_network_suite\(builder\)` checks .*? in (\d+) checks", "NetworkSuite"),
    ("docs/guides/storage.md", r"runs (\d+) checks on a log store", "LogStoreSuite"),
    ("docs/guides/storage.md", r"and (\d+) on a state\s+machine", "StateMachineSuite"),
]


@pytest.mark.parametrize(("name", "pattern", "suite"), _SUITE_COUNTS, ids=lambda x: str(x)[:30])
def test_conformance_suite_counts_are_the_suites(name: str, pattern: str, suite: str) -> None:
    """The number of checks the README and the storage guide give for each conformance suite is
    the suite's (the README said 22 network checks after ``heartbeat_if_any`` made them 23)."""
    import openraft_py.testing as testing

    text = " ".join((README.parent / name).read_text(encoding="utf-8").split())
    found = re.search(pattern.replace(r"\s+", " "), text)
    assert found is not None, f"{name} no longer says {pattern!r}: update this test with it"
    assert int(found.group(1)) == len(getattr(testing, suite).check_names()), (name, pattern)


def test_the_readme_gives_the_makefile_s_default_number_of_test_workers() -> None:
    """``make test`` runs in ``TEST_JOBS`` workers (the Makefile's default): the Quick start and
    the targets table both give that number (the Quick start said 2 workers, the table and
    the Makefile 3)."""
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    default = re.search(r"^TEST_JOBS \?= (\d+)$", makefile, re.M)
    assert default is not None, "the Makefile no longer sets TEST_JOBS ?= N: update this test"
    text = README.read_text(encoding="utf-8")
    said = re.findall(r"runs the whole test suite \(in (\d+) workers\)", text)
    said += re.findall(r"`make test TEST_JOBS=N` \| the suite in `N` pytest-xdist workers \(default (\d+);", text)
    assert len(said) == 2, said
    assert said == [default.group(1)] * 2, (said, default.group(1))
