"""The user guide's code blocks run as printed, and the site builds with ``--strict``.

Every fenced block tagged ``python``, ``sh``, ``shell``, ``bash`` or ``console`` in
``docs/**/*.md`` (the design notes in ``docs/design/`` excepted: they are developer notes whose
blocks are sketches) either runs here or carries, on the line before its fence (blank lines
allowed), a marker that says why not::

    <!-- not-run: needs three machines -->

- ``python`` blocks of one page run in order in one namespace and on one event loop, as a
  reader pasting them into one ``python -m asyncio`` session would: a later block may use an
  earlier block's imports and objects (a cluster started in one block serves the next).
  Top-level ``await`` is allowed; such a block runs to completion on the page's loop
  (``asyncio.Runner``) before the next block starts. At the end of the page the loop is
  closed, so a page must shut down what it started.
- ``console`` blocks are transcripts: each ``$ `` line is a command run by bash with this
  venv's ``bin`` first on ``PATH``, and the lines up to the next ``$ `` are its exact output.
- ``sh`` / ``shell`` / ``bash`` blocks run as one bash script (``set -euo pipefail``) and must
  exit 0.

Blocks with another tag (``text``, ``mermaid``, none) are text and are not run. Each page runs
in an empty temporary directory with ``OPENRAFT_PY_*`` switches removed from the environment.
On Linux, where all of 127.0.0.0/8 is loopback, every ``127.0.0.1`` of a page becomes one
``127.A.B.1`` address (``A.B`` random per run), so the fixed ports a page listens on do not
collide with another run of this test on the same machine.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from codeblocks import CONSOLE, PYTHON, RUNNABLE, bash, console_steps, shell_env

import openraft_py
import openraft_py.network
import openraft_py.network.tcp
import openraft_py.storage
import openraft_py.testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXCLUDED = DOCS / "design"  # developer notes: sketches, not runnable examples

_MARKER = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
_LOCALHOST = re.compile(r"\b127\.0\.0\.1\b")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")

pytestmark = pytest.mark.skipif(
    not (ROOT / "mkdocs.yml").exists(), reason="the docs are not next to the tests (installed-package run)"
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    not_run: str | None  # the not-run marker's reason, or None

    @property
    def runs(self) -> bool:
        """True when the test runs this block: a code block without a not-run marker."""
        return self.not_run is None and self.lang in RUNNABLE


def parse_page(text: str, name: str = "page") -> tuple[list[Block], list[int]]:
    """``(blocks, lines of markers that precede no block)`` of Markdown ``text``.

    A marker attaches to the next fence when only blank lines separate them. A fence may be
    indented (inside a list or an admonition): its indentation is removed from the code. An
    unclosed fence raises ``ValueError``.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    orphans: list[int] = []
    pending: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if marker:
            if pending is not None:
                orphans.append(pending[0])
            pending = (i + 1, marker.group(1).strip())
        elif fence:
            indent = len(fence.group(1))
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith("```") and len(lines[j]) - len(lines[j].lstrip()) == indent
                ),
                None,
            )
            if end is None:
                raise ValueError(f"{name}:{i + 1}: unclosed code fence")
            code = "\n".join(ln[indent:] for ln in lines[i + 1 : end]) + "\n"
            blocks.append(Block(fence.group(2).lower(), code, i + 1, pending[1] if pending else None))
            pending = None
            i = end
        elif line.strip() and pending is not None:
            orphans.append(pending[0])
            pending = None
        i += 1
    if pending is not None:
        orphans.append(pending[0])
    return blocks, orphans


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if EXCLUDED not in p.parents)


def _id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def _pages_that_run() -> list[Path]:
    """The pages with at least one block to run (an unclosed fence fails collection)."""
    return [p for p in _pages() if any(b.runs for b in parse_page(p.read_text(), _id(p))[0])]


def test_every_code_block_runs_or_says_why_not() -> None:
    pages = _pages()
    assert pages, "no pages under docs/"
    running = skipped = 0
    for page in pages:
        blocks, orphans = parse_page(page.read_text(), _id(page))
        assert not orphans, f"{_id(page)}: markers with no code block after them at lines {orphans}"
        for b in blocks:
            where = f"{_id(page)}:{b.line}"
            if b.lang not in RUNNABLE:
                assert b.not_run is None, f"{where}: a not-run marker on a text block"
            elif b.not_run is not None:
                assert b.not_run, f"{where}: a not-run marker needs a reason"
                skipped += 1
                print(f"  not run: {where} ({b.lang}): {b.not_run}")
            else:
                running += 1
    print(f"docs: {running} code blocks run, {skipped} not run")
    assert running > skipped


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page", _pages_that_run(), ids=_id)
def test_page_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = page.read_text()
    if sys.platform.startswith("linux"):
        text = _LOCALHOST.sub(f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.1", text)
    blocks = [b for b in parse_page(text, _id(page))[0] if b.runs]
    for key in [k for k in os.environ if k.startswith("OPENRAFT_PY_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs"}
    out = io.StringIO()
    with asyncio.Runner() as runner:
        for block in blocks:
            where = f"{_id(page)}:{block.line}"
            if block.lang in PYTHON:
                # Padded so that tracebacks give the line in the page.
                code = compile(
                    "\n" * block.line + block.code,
                    _id(page),
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )
                with contextlib.redirect_stdout(out):
                    result = eval(code, namespace)  # noqa: S307 - the guide's own examples
                    if code.co_flags & inspect.CO_COROUTINE:
                        runner.run(result)
            elif block.lang in CONSOLE:
                for command, expected in console_steps(block.code):
                    proc = bash(command, tmp_path)
                    assert proc.returncode == 0, (where, command, proc.stderr[-3000:])
                    got = [ln.rstrip() for ln in proc.stdout.splitlines()]
                    assert got == expected, (f"{where}: {command}", proc.stderr[-3000:])
            else:
                proc = bash("set -euo pipefail\n" + block.code, tmp_path)
                assert proc.returncode == 0, (where, proc.stdout[-3000:], proc.stderr[-3000:])
    print(out.getvalue())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module's tests with ``mkdocs build --strict``."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the `docs` extra)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (the `docs` extra)")
    site_dir = tmp_path_factory.mktemp("site")
    env = {**shell_env(), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-5000:]
    return site_dir


def _reference_anchors(site: Path) -> set[str]:
    """Every ``openraft_py...`` anchor of the API reference's pages (one per documented
    object, its path as the page documents it: ``openraft_py.types.LogId``)."""
    anchors: set[str] = set()
    for html in (site / "reference").rglob("*.html"):
        anchors |= set(re.findall(r'id="(openraft_py[\w.]*)"', html.read_text()))
    return anchors


@pytest.mark.timeout(120)
def test_site_builds_strict(site: Path) -> None:
    for page in (
        "index.html",
        "getting-started/index.html",
        "concepts/index.html",
        "reference/errors/index.html",
        "reference/api/index.html",
    ):
        assert (site / page).exists(), page
    # mkdocstrings rendered the docstrings: the Raft handle's methods are on the API page, and
    # every public name has an entry (an anchor) in the reference.
    assert "client_write_many" in (site / "reference/api/index.html").read_text()
    anchors = {a.rsplit(".", 1)[-1] for a in _reference_anchors(site)}
    for module in (openraft_py, openraft_py.storage, openraft_py.network, openraft_py.network.tcp, openraft_py.testing):
        undocumented = [n for n in module.__all__ if n not in anchors and n != "__version__"]
        assert not undocumented, f"{module.__name__}: public names missing from docs/reference: {undocumented}"


INTERNAL_PACKAGES = ("openraft_py.core", "openraft_py.engine")
"""The runtime and the engine: their modules are the library's own parts, described in the
design notes, not in the reference; each package's ``__all__`` names what the rest of the
library takes from it, and their modules need none."""

_SERVICE = ("the key-value service (the example application): its command line, HTTP API and files are its "
            "interface (DESIGN section 8, the key-value service guide); of its modules only kv.client is in the reference")
_ROCKS = "a part of RocksLogStore (docs/design/durability.md): openraft_py.storage.rocks re-exports its API"
_JEPSEN = "the Jepsen-style harness behind python -m openraft_py.testing.jepsen (its design note, the testing guide)"
_BY_PACKAGE = "a part of a testing package the reference documents, which re-exports its API"

NOT_IN_REFERENCE: dict[str, str] = {
    "openraft_py.demo": "the in-process demo's script (python -m openraft_py.demo)",
    "openraft_py.failure_log": "the node's rate-limited logging of repeated failures",
    "openraft_py.kv": _SERVICE,
    "openraft_py.kv.argtypes": _SERVICE,
    "openraft_py.kv.cli": _SERVICE,
    "openraft_py.kv.commands": _SERVICE,
    "openraft_py.kv.demo": _SERVICE,
    "openraft_py.kv.http_api": _SERVICE,
    "openraft_py.kv.identity": _SERVICE,
    "openraft_py.kv.local_cluster": _SERVICE,
    "openraft_py.kv.logs": _SERVICE,
    "openraft_py.kv.metrics": _SERVICE,
    "openraft_py.kv.node": _SERVICE,
    "openraft_py.kv.nodes": _SERVICE,
    "openraft_py.kv.recover": _SERVICE,
    "openraft_py.kv.rejoin": _SERVICE,
    "openraft_py.kv.rocks_snapshot": _SERVICE,
    "openraft_py.kv.rocks_state_machine": _SERVICE,
    "openraft_py.kv.server": _SERVICE,
    "openraft_py.kv.tls_reload": _SERVICE,
    "openraft_py.network.accept_errors": "the TCP server's accept-error logging",
    "openraft_py.network.wire": "the TCP transport's wire format (docs/design/wire.md, DESIGN §7)",
    "openraft_py.storage.rocks.ackmark": _ROCKS,
    "openraft_py.storage.rocks.aio": _ROCKS,
    "openraft_py.storage.rocks.damage": _ROCKS,
    "openraft_py.storage.rocks.db": _ROCKS,
    "openraft_py.storage.rocks.dirwatch": _ROCKS,
    "openraft_py.storage.rocks.files": _ROCKS,
    "openraft_py.storage.rocks.group_writer": _ROCKS,
    "openraft_py.storage.rocks.log_format": _ROCKS,
    "openraft_py.storage.rocks.log_store": _ROCKS,
    "openraft_py.storage.rocks.owner": _ROCKS,
    "openraft_py.storage.rocks.wal": _ROCKS,
    "openraft_py.testing.invariants": 'the safety checks the simulator and the in-process Cluster run',
    "openraft_py.testing.jepsen": _JEPSEN,
    "openraft_py.testing.jepsen.checks": _JEPSEN,
    "openraft_py.testing.jepsen.faulty_serve": _JEPSEN,
    "openraft_py.testing.jepsen.history": _JEPSEN,
    "openraft_py.testing.jepsen.kvclient": _JEPSEN,
    "openraft_py.testing.jepsen.nemesis": _JEPSEN,
    "openraft_py.testing.jepsen.procs": _JEPSEN,
    "openraft_py.testing.jepsen.proxy": _JEPSEN,
    "openraft_py.testing.jepsen.report": _JEPSEN,
    "openraft_py.testing.jepsen.runner": _JEPSEN,
    "openraft_py.testing.jepsen.workload": _JEPSEN,
    "openraft_py.testing.lincheck.cli": _BY_PACKAGE,
    "openraft_py.testing.lincheck.model": _BY_PACKAGE,
    "openraft_py.testing.lincheck.parse": _BY_PACKAGE,
    "openraft_py.testing.lincheck.search": _BY_PACKAGE,
    "openraft_py.testing.proc": 'the process cluster of the test suite and the benchmarks',
    "openraft_py.testing.proc.cluster": 'the process cluster of the test suite and the benchmarks',
    "openraft_py.testing.proc.node": 'the node process the process cluster runs',
    "openraft_py.testing.proc_cluster": 'the former name of testing.proc (kept for compatibility)',
    "openraft_py.testing.proc_node": 'the former name of testing.proc.node (kept for compatibility)',
    "openraft_py.testing.sim.checks": _BY_PACKAGE,
    "openraft_py.testing.sim.cli": _BY_PACKAGE,
    "openraft_py.testing.sim.env": _BY_PACKAGE,
    "openraft_py.testing.sim.faults": _BY_PACKAGE,
    "openraft_py.testing.sim.lease": _BY_PACKAGE,
    "openraft_py.testing.sim.simulation": _BY_PACKAGE,
    "openraft_py.testing.suite.base": _BY_PACKAGE,
    "openraft_py.testing.suite.log_store": _BY_PACKAGE,
    "openraft_py.testing.suite.restore": "the suites' registry of restore checks (their internals)",
    "openraft_py.wakeup": "the core's wake-up primitive",
}
"""Public modules the reference does not document, and why: their ``__all__`` is checked to
name what they define, not to be documented."""

UNDOCUMENTED: dict[str, set[str]] = {
    "openraft_py": {"__version__"},  # a string, described in the api page's table
    # The request checks the node runs on every API call and peer request.
    "openraft_py.validation": {"check_append_entries", "check_bool", "check_entry_sizes", "check_index",
                               "check_install_snapshot", "check_members", "check_node", "check_node_id",
                               "check_payload", "check_payloads", "check_seconds", "check_transfer_leader",
                               "check_vote", "check_voters"},
    # Documented as re-exported by openraft_py.storage; these are the in-memory stores' helpers.
    "openraft_py.storage.memory": {"KV_PREFIX", "KvMap", "MemLogReader", "apply_kv", "apply_kv_effect"},
    # The key-value example's state machine and its formats, importable from here for compatibility.
    "openraft_py.storage.rocks": {"RocksStateMachine", "SM_FORMAT", "SNAPSHOT_CHUNK_BYTES", "SNAPSHOT_MAGIC"},
    # What Adaptor returns: the two halves of a v0.8 RaftStorage.
    "openraft_py.storage.v08": {"AdaptedLogStore", "AdaptedStateMachine"},
    "openraft_py.testing.cluster": {"StateMachineFactory"},  # the type of Cluster's state_machine argument
    # The simulator's and the checker's own parts, which the reference's summaries do not list.
    "openraft_py.testing.sim": {"Checker", "ENGINE_FAULTS", "LEASE_ROUNDS", "LeaseResult", "LeaseSkewRun",
                                "MAX_LEASE_FACTOR", "MAX_NODES", "SimClock", "SimDisk", "SimLogStore", "SimStuck",
                                "SimWorld", "Violation", "VirtualTimeLoop", "WIRE_EVERY", "clock_rates",
                                "lease_skew_bound", "main", "run_lease_seed"},
    "openraft_py.testing.lincheck": {"INF", "describe_op", "main"},
}
"""Names of a documented module's ``__all__`` that the reference leaves out on purpose."""


def _public_modules() -> dict[str, ModuleType]:
    """Every module of the package whose dotted name has no part starting with ``_``."""
    names = ["openraft_py"] + [m.name for m in pkgutil.walk_packages(openraft_py.__path__, "openraft_py.")
                               if not any(part.startswith("_") for part in m.name.split(".")[1:])]
    return {name: importlib.import_module(name) for name in names}


def _is_internal(name: str) -> bool:
    return any(name.startswith(package + ".") for package in INTERNAL_PACKAGES)


@pytest.mark.timeout(120)
def test_every_public_module_s_all_is_what_the_reference_documents(site: Path) -> None:
    """``from openraft_py.errors import *`` brought the helpers errors.py imports (``Set``,
    ``Any``, ``BasicNode``...), as did ``types`` and ``metrics``: they had no ``__all__``,
    and nothing said which of a module's names are its API. Every public module has one
    now (each name of it exists, none twice; the modules of the runtime and the engine
    excepted, ``INTERNAL_PACKAGES``), and it is what the reference documents: every name of
    it has an entry there (or is listed in ``UNDOCUMENTED`` with the module, or its module in
    ``NOT_IN_REFERENCE``), and every module-level entry of the reference is a name of its
    module's ``__all__``."""
    star: dict[str, object] = {}
    exec("from openraft_py.errors import *; from openraft_py.types import *; from openraft_py.metrics import *", star)
    assert not {"Set", "Any", "msgspec", "asyncio", "check_index", "Wakeup", "IO", "enum"} & set(star)
    modules = _public_modules()
    problems: list[str] = []
    for name, module in modules.items():
        if _is_internal(name):
            continue
        names = getattr(module, "__all__", None)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            problems.append(f"{name}: no __all__ (a list of names)")
            continue
        if len(set(names)) != len(names):
            problems.append(f"{name}: __all__ names {sorted(n for n in names if names.count(n) > 1)} twice")
        problems += [f"{name}.__all__: {n!r} does not exist" for n in names if not hasattr(module, n)]

    # The reference's module-level entries: (module, name), the module the longest prefix.
    documented: set[tuple[str, str]] = set()
    anchors = _reference_anchors(site)
    for anchor in anchors:
        if anchor in modules:  # a module's own heading
            continue
        parts = anchor.split(".")
        for k in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:k]) in modules:
                if len(parts) - k == 1:
                    documented.add((".".join(parts[:k]), parts[k]))
                break
    for mod, n in sorted(documented):
        if _is_internal(mod) or mod in INTERNAL_PACKAGES or mod in NOT_IN_REFERENCE:
            problems.append(f"{mod}.{n} is in the reference, but its module is listed as not in it")
        elif n not in getattr(modules[mod], "__all__", ()):
            problems.append(f"{mod}.{n} is in the reference but not in {mod}.__all__")
    # An object documented under one path is documented for every module that exports it
    # (``openraft_py.LogId`` is ``openraft_py.types.LogId``).
    # (``openraft_py.LogId`` is ``openraft_py.types.LogId``); a constant by its name too.
    objects = [(n, getattr(modules[mod], n)) for mod, n in documented if hasattr(modules[mod], n)]

    def is_documented(mod: str, n: str) -> bool:
        obj = getattr(modules[mod], n)
        if isinstance(obj, ModuleType):  # a subpackage a package names
            return obj.__name__ in anchors
        return (mod, n) in documented or any(
            o is obj and (name == n or not isinstance(o, (bool, int, float, str, tuple, frozenset)))
            for name, o in objects)

    for name, module in modules.items():
        if (_is_internal(name) or name in INTERNAL_PACKAGES or name in NOT_IN_REFERENCE
                or not isinstance(getattr(module, "__all__", None), list)):
            continue
        allowed = UNDOCUMENTED.get(name, set())
        missing = sorted(n for n in module.__all__ if hasattr(module, n) and not is_documented(name, n)
                         and n not in allowed)
        if missing:
            problems.append(f"{name}: {missing} in __all__ but not in docs/reference")
        stale = sorted(n for n in allowed if n not in module.__all__ or is_documented(name, n))
        if stale:
            problems.append(f"{name}: UNDOCUMENTED lists {stale}, which are documented or not in __all__")
    problems += [f"NOT_IN_REFERENCE lists {name}, which is no public module" for name in NOT_IN_REFERENCE
                 if name not in modules]
    assert not problems, "\n".join(problems)


_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def split_table_rows(text: str) -> list[int]:
    """The lines of ``text`` (1-based) that start a table with no delimiter row under them:
    outside code fences, a ``|`` line after a non-table line whose next line is not
    ``|---|---|``. Markdown renders such a line as a paragraph of pipes; it is usually a row
    cut off from its table by a blank line."""
    lines = text.splitlines()
    bad: list[int] = []
    in_fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or not line.lstrip().startswith("|") or (i > 0 and lines[i - 1].lstrip().startswith("|")):
            continue
        if i + 1 >= len(lines) or not _TABLE_DELIMITER.match(lines[i + 1]):
            bad.append(i + 1)
    return bad


def test_no_table_row_is_cut_off_from_its_table() -> None:
    """Every table of the site, the README and the examples' READMEs starts with a header
    and a delimiter row (a blank line inside a table turned the rest into a paragraph of
    pipes: the error reference's EntryTooLarge row)."""
    pages = [*DOCS.rglob("*.md"), ROOT / "README.md", *(ROOT / "examples").rglob("*.md")]
    bad = {str(p.relative_to(ROOT)): rows for p in pages if (rows := split_table_rows(p.read_text()))}
    assert not bad, f"table rows cut off from their table (file: lines): {bad}"
    assert split_table_rows("| a | b |\n|:--|--:|\n| 1 | 2 |\n\n| 3 | 4 |\n") == [5]
    assert split_table_rows("```\n| not a table |\n```\n| h |\n|---|\n") == []


def test_parser_attaches_markers_and_reads_transcripts() -> None:
    text = (
        "<!-- not-run: needs three machines -->\n\n```sh\nserve\n```\n"
        "<!-- not-run: dangling -->\nprose\n"
        "```console\n$ echo a\na\n$ true\n```\n"
        "- item\n\n    ```python\n    x = 1\n    ```\n"
    )
    blocks, orphans = parse_page(text)
    assert [(b.lang, b.line, b.not_run) for b in blocks] == [
        ("sh", 3, "needs three machines"),
        ("console", 8, None),
        ("python", 15, None),
    ]
    assert orphans == [6]
    assert blocks[2].code == "x = 1\n"
    assert console_steps(blocks[1].code) == [("echo a", ["a"]), ("true", [])]
    with pytest.raises(ValueError, match="unclosed"):
        parse_page("```python\nx = 1\n")
    with pytest.raises(ValueError, match="before any command"):
        console_steps("output\n$ true\n")


def error_tree(text: str) -> list[tuple[int, str]]:
    """``(depth, class name)`` of each line of the error reference's ``text`` tree (the
    ``├──``/``└──`` drawing), in order."""
    block = re.search(r"```text\n(RaftError\n.*?)```", text, re.S)
    assert block is not None, "no RaftError tree in a text block"
    out: list[tuple[int, str]] = []
    for line in block.group(1).splitlines():
        m = re.match(r"^((?:│   |    )*)(?:[├└]── )?(\w+)", line)
        assert m is not None, line
        out.append((len(m.group(1)) // 4 + (1 if "── " in line else 0), m.group(2)))
    return out


def test_the_error_reference_draws_the_class_tree_as_it_is() -> None:
    """The tree at the top of docs/reference/errors.md is the hierarchy of
    ``openraft_py.RaftError`` (the README's summary of the errors is prose): a class added,
    moved or renamed without its line fails here, and so does every line of the README's
    "Errors" bullet that names an ``ApiError`` subclass the package does not have, and every
    public ``ApiError`` subclass the bullet leaves out."""

    def walk(cls: type, depth: int) -> list[tuple[int, str]]:
        subs = [c for c in cls.__subclasses__() if c.__module__.startswith("openraft_py")]
        ordered = sorted(subs, key=lambda c: drawn_order.get(c.__name__, len(drawn_order)))
        return [(depth, cls.__name__)] + [row for c in ordered for row in walk(c, depth + 1)]

    drawn = error_tree((DOCS / "reference" / "errors.md").read_text())
    drawn_order = {name: i for i, (_, name) in enumerate(drawn)}
    assert drawn == walk(openraft_py.RaftError, 0)
    readme = (ROOT / "README.md").read_text()
    bullet = re.search(r"^- \*\*Errors\.\*\*(.*?)(?=^\S|^- )", readme, re.S | re.M)
    assert bullet is not None, "README: no Errors bullet"
    named = set(re.findall(r"`(\w+)`", bullet.group(1)))
    api_errors = {name for _, name in walk(openraft_py.ApiError, 0)}
    assert api_errors - {"ApiError"} <= named, f"README's Errors bullet leaves out {api_errors - named}"
    unknown = {n for n in named if n[0].isupper() and not hasattr(openraft_py, n) and not hasattr(builtins, n)}
    assert not unknown, f"README's Errors bullet names classes the package does not have: {unknown}"


def _shell_commands(code: str) -> list[str]:
    """The commands of a shell block: ``\\``-continued lines joined, comments and blank
    lines dropped, runs of blanks made one."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        command = re.sub(r"\s+#.*$|^\s*#.*$", "", line)
        if command.strip():
            commands.append(" ".join(command.split()))
    return commands


def test_blocks_said_to_run_in_the_readme_test_are_there() -> None:
    """A block not run because "tests/test_readme.py runs these commands on loopback" holds
    only commands of the README's loopback blocks, which that test runs: the four-machine
    block of the key-value guide had a ``cluster transfer --to 2`` that no test ran."""
    readme = (ROOT / "README.md").read_text()
    on_loopback = {
        command
        for block in re.findall(r"^<!-- loopback:.*?-->\n```sh\n(.*?)^```", readme, re.S | re.M)
        for command in _shell_commands(block)
    }
    assert len(on_loopback) > 10, "the README's loopback blocks were not found"
    claims = 0
    for page in _pages():
        for block in parse_page(page.read_text(), _id(page))[0]:
            if block.not_run is not None and "test_readme.py" in block.not_run:
                claims += 1
                missing = [c for c in _shell_commands(block.code) if c not in on_loopback]
                assert not missing, f"{_id(page)}:{block.line}: not in the README's loopback blocks: {missing}"
    assert claims >= 3


def python_in_text_blocks(text: str, name: str = "page") -> list[int]:
    """The lines of the untagged and ``text`` blocks of ``text`` that are Python programs
    (they compile, top-level ``await`` allowed, and import or define something): tagged
    ``python`` they would run, or say why not; as text, nothing checks their imports."""
    found: list[int] = []
    for block in parse_page(text, name)[0]:
        if block.lang not in ("", "text"):
            continue
        try:
            tree = compile(block.code, name, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError:
            continue
        kinds = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if any(isinstance(node, kinds) for node in ast.walk(tree)):
            found.append(block.line)
    return found


def test_no_python_hides_in_a_text_block() -> None:
    """README.md, the guide and the examples' READMEs: a Python snippet in an untagged block
    is neither run nor marked not-run (the README's durable-storage snippet and the API
    reference's import line were)."""
    pages = [ROOT / "README.md", *_pages(), *(ROOT / "examples").rglob("*.md")]
    bad = {str(p.relative_to(ROOT)): lines for p in pages if (lines := python_in_text_blocks(p.read_text(), p.name))}
    assert not bad, f"Python in untagged or text blocks (file: lines of their fences): {bad}"
    page = "```\nfrom x import y\n```\n```text\nRaftError\n├── Fatal\n```\n```\nmake run    # build\n```\n"
    assert python_in_text_blocks(page) == [1]
