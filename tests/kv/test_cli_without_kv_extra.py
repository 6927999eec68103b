"""The package's command lines installed without the ``kv`` extra (``pip install
openraft-py``, the library alone). ``openraft-py`` and ``python -m
openraft_py.testing.jepsen`` (its nodes are ``serve`` processes, its clients HTTP): every
invocation, ``--version`` and ``--help`` included, says in one line that it needs the extra
and how to install it (exit 1), instead of a ``ModuleNotFoundError`` traceback. The testing
kit's ``lincheck`` and ``sim`` do not need it and work without it.

Each case runs in a fresh interpreter where importing the extra's module is refused (a
``None`` entry in ``sys.modules``, as Python does for a module that is not installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from openraft_py import _cli
from openraft_py.kv import cli

pytestmark = pytest.mark.timeout(60)


def _run_blocking(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = ("import sys\n"
            f"sys.modules[{module!r}] = None\n"
            "from openraft_py.kv.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)


@pytest.mark.parametrize("module", ["aiohttp", "prometheus_client"])
@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["serve", "--help"], ["kv", "get", "k"]],
                         ids=" ".join)
def test_the_command_line_without_the_kv_extra_says_to_install_it(module: str, argv: list[str]) -> None:
    r = _run_blocking(module, argv)
    assert r.returncode == cli.EXIT_FAILED, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == (f"openraft-py: error: the command line needs the 'kv' extra, which is not installed "
                        f"(no module named {module!r}): pip install 'openraft-py[kv]'\n")


def test_another_missing_module_is_not_taken_for_the_extra() -> None:
    assert _cli.missing_kv_extra(ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")) == "aiohttp"
    assert _cli.missing_kv_extra(ModuleNotFoundError("x", name="aiohttp.web")) == "aiohttp"
    assert _cli.missing_kv_extra(ModuleNotFoundError("x", name="yarl")) == "yarl"
    assert _cli.missing_kv_extra(ModuleNotFoundError("x", name="openraft_py.kv.nodes")) is None
    assert _cli.missing_kv_extra(ModuleNotFoundError("x", name=None)) is None


def test_the_extra_installed_is_found_installed() -> None:
    assert _cli.kv_extra_not_installed() is None


def _run_module_blocking(module: str, package: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m package argv`` in an interpreter where ``module`` is not importable."""
    code = ("import runpy, sys\n"
            f"sys.modules[{module!r}] = None\n"
            f"sys.argv[1:] = {argv!r}\n"
            f"runpy.run_module({package!r}, run_name='__main__', alter_sys=True)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)


@pytest.mark.parametrize("module", ["aiohttp", "prometheus_client", "yarl"])
@pytest.mark.parametrize("argv", [["--help"], ["--time", "1", "--nodes", "1"]], ids=" ".join)
def test_the_jepsen_test_without_the_kv_extra_says_to_install_it(module: str, argv: list[str]) -> None:
    """It printed aiohttp's ``ModuleNotFoundError`` traceback, even for ``--help`` (the
    package imported its runner); without prometheus-client it started nodes that could not
    run."""
    r = _run_module_blocking(module, "openraft_py.testing.jepsen", argv)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == (f"jepsen: error: the Jepsen test needs the 'kv' extra, which is not installed "
                        f"(no module named {module!r}): pip install 'openraft-py[kv]'\n")


@pytest.mark.parametrize("module", ["aiohttp", "prometheus_client"])
@pytest.mark.parametrize("package", ["openraft_py.testing.lincheck", "openraft_py.testing.sim"])
def test_the_command_lines_that_need_no_extra_work_without_it(module: str, package: str) -> None:
    r = _run_module_blocking(module, package, ["--help"])
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("usage: ")
    assert r.stderr == ""


@pytest.mark.parametrize("module", ["aiohttp", "prometheus_client", "yarl"])
@pytest.mark.parametrize("argv", [["--help"], ["--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr",
                                              "127.0.0.1:2", "--data-dir", "never-made"]], ids=" ".join)
def test_the_serve_module_without_the_kv_extra_says_to_install_it(module: str, argv: list[str]) -> None:
    """``python -m openraft_py.kv.server`` (the serve verb without the console script) printed
    the ``ModuleNotFoundError`` traceback of its imports; now the one line ``openraft-py``
    prints, exit 1."""
    r = _run_module_blocking(module, "openraft_py.kv.server", argv)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr == (f"openraft-py serve: error: the key-value service needs the 'kv' extra, which is not "
                        f"installed (no module named {module!r}): pip install 'openraft-py[kv]'\n")
