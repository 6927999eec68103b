"""Release packaging: ``make wheel`` output, installed into a fresh venv outside the checkout.

One build runs ``make wheel`` into a temporary directory (the sdist; a wheel built from it,
repaired to a manylinux tag and stripped by auditwheel; the pure-Python ``py3-none-any`` wheel).
It starts right after collection, in the background at the lowest CPU priority
(``start_early``), and the first test waits for it. The tests then check what the archives
carry, install the manylinux wheel with the ``kv`` extra into a new venv whose working
directory is outside the checkout, and check that the installed package (not the source tree)
loads its compiled kernels and that its ``openraft-py`` console script runs the demo.

Needs a source checkout (Makefile, pyproject.toml), ``make``, a C compiler, Linux (auditwheel)
and PyPI or a local pip cache for the build requirements and the dependencies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from elf import runtime_search_paths, section_names

from openraft_py._compiled import COMPILED_MODULES

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ("_quorum_c", "_logindex_c", "_codec_c", "_kv_c")
SHARED_PXDS = ("_int64",)
PYTHONS = ("3.11", "3.12", "3.13")
LICENCES = ("LICENSE-MIT", "LICENSE-APACHE")


def _skip_reason() -> str | None:
    """Why this module cannot run here, or None."""
    if not (ROOT / "Makefile").exists() or not (ROOT / "pyproject.toml").exists():
        return "not a source checkout (installed-package run)"
    if not sys.platform.startswith("linux"):
        return "auditwheel repairs Linux wheels only"
    if shutil.which("make") is None:
        return "make is not installed"
    if sys.prefix == sys.base_prefix:
        return "make wheel needs the project venv (run from .venv)"
    return None


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")

BUILD_TIMEOUT = 540.0  # seconds for `make wheel` once the tests wait for it


def _clean_env() -> dict[str, str]:
    """The environment for child processes: no build/kernel switches, no PYTHONPATH into the
    checkout, no flags of an outer ``make`` (``make test`` runs this file)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENRAFT_PY_", "PYTHON")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; return its combined output, or fail the test with it (and the time taken)."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env if env is not None else _clean_env(), timeout=timeout,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{cmd} did not finish within {timeout:.0f} s:\n{exc.output or ''}"[-6000:])
    took = time.monotonic() - start
    if proc.returncode != 0:
        pytest.fail(f"{cmd} exited {proc.returncode} after {took:.1f} s:\n{proc.stdout[-6000:]}")
    return proc.stdout


@dataclass(frozen=True)
class Dist:
    """What ``make wheel`` left in its output directory."""

    wheel: Path  # the manylinux wheel, with the compiled kernels
    pure_wheel: Path  # py3-none-any, the pure-Python twins only
    sdist: Path
    build_seconds: float


@dataclass(frozen=True)
class Installed:
    """A fresh venv, outside the checkout, with the wheel and its ``kv`` extra installed."""

    python: Path
    bin: Path
    workdir: Path
    install_seconds: float


def _make_wheel(out: Path) -> list[str]:
    venv = Path(sys.prefix)
    # -o: never reinstall the venv from inside a test run (the install stamp is taken as is).
    return ["make", "-s", "-o", str(venv / ".stamp-install"), "wheel",
            f"VENV={venv}", f"DIST={out / 'dist'}", f"WHEELHOUSE={out / 'wheelhouse'}"]


@dataclass
class _Background:
    proc: subprocess.Popen[bytes]
    out: Path
    started: float


_background: list[_Background] = []


def start_early(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Called after collection (``tests/conftest.py``): start ``make wheel`` now, in the
    background at the lowest CPU priority, so it compiles on the core the other tests leave
    idle; the ``dist`` fixture waits for it. The build reads only the checkout."""
    if SKIP_REASON is not None or shutil.which("nice") is None:
        return
    out = Path(tempfile.mkdtemp(prefix="openraft-py-make-wheel-"))
    with open(out / "make.log", "wb") as log:  # a file: nothing reads a pipe meanwhile
        proc = subprocess.Popen(["nice", "-n", "19", *_make_wheel(out)], cwd=ROOT, env=_clean_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _background.append(_Background(proc, out, time.monotonic()))

    def stop() -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(out, ignore_errors=True)

    config.add_cleanup(stop)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dist]:
    """``make wheel`` into a temporary directory (not the checkout's dist/): the one
    ``start_early`` started, or one run now."""
    if _background:
        bg = _background[0]
        out = bg.out
        try:
            bg.proc.wait(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - bg.started
        log = (out / "make.log").read_text(errors="replace")[-6000:]
        if bg.proc.returncode is None:
            pytest.fail(f"make wheel (started {took:.0f} s ago) did not finish within {BUILD_TIMEOUT:.0f} s "
                        f"of waiting:\n{log}")
        if bg.proc.returncode != 0:
            pytest.fail(f"make wheel exited {bg.proc.returncode} after {took:.1f} s:\n{log}")
    else:
        out = tmp_path_factory.mktemp("make-wheel")
        start = time.monotonic()
        _run(_make_wheel(out), cwd=ROOT, timeout=BUILD_TIMEOUT)
        took = time.monotonic() - start
    files = sorted(p.name for p in (out / "dist").iterdir())
    wheels = sorted((out / "dist").glob("*.whl"))
    pure = [w for w in wheels if w.name.endswith("-py3-none-any.whl")]
    platform = [w for w in wheels if w not in pure]
    sdists = sorted((out / "dist").glob("*.tar.gz"))
    assert len(platform) == 1 and len(pure) == 1 and len(sdists) == 1 and len(files) == 3, files
    yield Dist(platform[0], pure[0], sdists[0], took)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A new venv (no pip of its own: this venv's pip installs into it) holding ``wheel[kv]``."""
    root = tmp_path_factory.mktemp("fresh-venv")
    assert ROOT not in root.parents, "the venv must be outside the checkout"
    venv = root / "venv"
    workdir = root / "work"
    workdir.mkdir()
    start = time.monotonic()
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=workdir, timeout=120)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
         f"openraft-py[kv] @ {dist.wheel.as_uri()}"],
        cwd=workdir, timeout=420,
    )
    return Installed(python, venv / "bin", workdir, time.monotonic() - start)


@pytest.mark.timeout(600)
def test_wheel_is_manylinux_stripped_and_carries_no_sources(dist: Dist) -> None:
    name = dist.wheel.name
    assert "manylinux" in name and "-linux_" not in name, name
    assert f"-cp{sys.version_info.major}{sys.version_info.minor}-" in name, name
    with zipfile.ZipFile(dist.wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(info).decode()
        for lic in LICENCES:
            assert any(n.endswith(f".dist-info/licenses/{lic}") for n in names), lic
        assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".html"))]
        assert "openraft_py/py.typed" in names
        sos = [n for n in names if n.startswith("openraft_py/_core/") and n.endswith(".so")]
        assert sorted(Path(n).name.split(".")[0] for n in sos) == sorted(KERNELS), sos
        # Each compiled package module: its extension beside its source (which the
        # pure fallback, tracebacks and type checkers read).
        modules = [n for n in names if n.endswith(".so") and not n.startswith("openraft_py/_core/")]
        assert sorted(n.split(".")[0].replace("/", ".") for n in modules) == sorted(COMPILED_MODULES), modules
        for m in COMPILED_MODULES:
            assert m.replace(".", "/") + ".py" in names, m
        assert "openraft_py/_compiled_sources.py" in names
        sos += modules
        so_bytes = {n: zf.read(n) for n in sos}
    assert "License-Expression: MIT OR Apache-2.0" in metadata
    for py in PYTHONS:
        assert f"Classifier: Programming Language :: Python :: {py}" in metadata
    for label in ("Homepage", "Documentation", "Repository", "Changelog", "Issues"):
        assert f"Project-URL: {label}, https://" in metadata, label
    assert 'Provides-Extra: kv' in metadata
    # Stripped: no symbol table and no DWARF sections left in the kernels; and no directory
    # of the build machine to search for libraries (a pyenv interpreter's rpath).
    for n, data in so_bytes.items():
        sections = section_names(data)
        assert ".text" in sections, (n, sections)
        assert not [s for s in sections if s == ".symtab" or s.startswith(".debug")], (n, sections)
        assert runtime_search_paths(data) == [], n


@pytest.mark.timeout(600)
def test_pure_wheel_carries_the_twins_and_no_compiled_code(dist: Dist) -> None:
    with zipfile.ZipFile(dist.pure_wheel) as zf:
        names = zf.namelist()
        wheel_info = zf.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Root-Is-Purelib: true" in wheel_info and "Tag: py3-none-any" in wheel_info, wheel_info
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyx", ".pxd", ".c"))]
    for kernel in KERNELS:
        assert f"openraft_py/_core/_{kernel.split('_')[1]}_py.py" in names, kernel
    for m in COMPILED_MODULES:
        assert m.replace(".", "/") + ".py" in names, m
    for lic in LICENCES:
        assert any(n.endswith(f".dist-info/licenses/{lic}") for n in names), lic


@pytest.mark.timeout(600)
def test_sdist_carries_docs_bench_changelog_licences_and_kernel_sources(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        names = {n.removeprefix(f"{top}/") for n in tf.getnames()}
    for must in ("CHANGELOG.md", "README.md", *LICENCES, "pyproject.toml", "setup.py", "MANIFEST.in",
                 "docs/design/README.md", "bench/cluster.py"):
        assert must in names, must
    for kernel in KERNELS:
        assert f"_core/{kernel}.pyx" in names and f"_core/{kernel}.pxd" in names, kernel
        assert f"_core/_{kernel.split('_')[1]}_py.py" in names, kernel
    for pxd in SHARED_PXDS:  # the declarations the kernels cimport, without which they do not build
        assert f"_core/{pxd}.pxd" in names, pxd
    assert len([n for n in names if n.startswith("docs/") and n.endswith(".md")]) == len(
        list((ROOT / "docs").rglob("*.md"))
    )
    assert not [n for n in names if n.endswith((".so", ".c", ".pyc"))]


@pytest.mark.timeout(900)
def test_installed_wheel_loads_compiled_kernels_outside_the_checkout(installed: Installed) -> None:
    out = _run(
        [str(installed.python), "-c",
         "import openraft_py, openraft_py._core as c, openraft_py._core._quorum_c as q\n"
         "from openraft_py._compiled import loaded_compiled\n"
         "print(c.USING_EXTENSIONS)\nprint(openraft_py.__file__)\nprint(q.__file__)\n"
         "print(c.majority_committed([5, 3, 9]))\n"
         "print(all(loaded_compiled().values()))"],
        cwd=installed.workdir, timeout=60, env={**_clean_env(), "PYTHONWARNINGS": "error::RuntimeWarning"},
    )
    using, pkg_file, so_file, committed, modules_compiled = out.split()
    assert using == "True", out
    assert modules_compiled == "True", out
    site = installed.python.parent.parent
    assert Path(pkg_file).is_relative_to(site) and Path(so_file).is_relative_to(site), out
    assert so_file.endswith(".so")
    assert committed == "5", out


@pytest.mark.timeout(900)
def test_installed_console_script_runs_the_quick_demo(installed: Installed) -> None:
    script = installed.bin / "openraft-py"
    assert script.exists(), "the wheel installs no openraft-py console script"
    version = _run([str(installed.python), "-c",
                    "import importlib.metadata as m; print(m.version('openraft-py'))"],
                   cwd=installed.workdir, timeout=60).strip()
    reported = _run([str(script), "--version"], cwd=installed.workdir, timeout=60).split()
    assert reported == ["openraft-py", version]
    out = _run([str(script), "demo", "--quick"], cwd=installed.workdir, timeout=600)
    assert out.strip(), "demo --quick printed nothing"
    # The demo cleans up after itself: it left nothing in the working directory.
    assert list(installed.workdir.iterdir()) == []



TYPED_USER_PROGRAM = '''
from openraft_py import Config, LogId, RaftMetrics
from openraft_py._core import majority_committed


def next_index(lid: LogId) -> int:
    return lid.index + 1


def followers(m: RaftMetrics) -> dict[int, int]:
    return {k: v for k, v in (m.replication or {}).items() if k != m.id}


config: Config = Config(cluster_name="typed")
committed: int = majority_committed([1, 2, 3])
wrong: str = next_index(LogId(1, 2))
'''


@pytest.mark.timeout(900)
def test_installed_wheel_is_found_by_mypy_through_its_py_typed(installed: Installed, tmp_path: Path) -> None:
    """mypy, run on a program outside the checkout with the fresh venv's interpreter, finds
    the installed package and reads its annotations (``py.typed``): it reports the program's
    one type error, not a missing module (which leaves every name of it ``Any``)."""
    pytest.importorskip("mypy")
    program = tmp_path / "prog.py"
    program.write_text(TYPED_USER_PROGRAM)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
         "--python-executable", str(installed.python), str(program)],
        cwd=tmp_path, env=_clean_env(), timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and proc.returncode == 1, proc.stdout
    line = TYPED_USER_PROGRAM.splitlines().index("wrong: str = next_index(LogId(1, 2))") + 1
    assert f"{program.name}:{line}: error: Incompatible types in assignment" in errors[0], proc.stdout
