"""The ``openraft-py`` console script installed without the ``kv`` extra (``pip install
openraft-py``, the library alone): every invocation, ``--version`` and ``--help`` included,
says in one line that the command line needs the extra and how to install it (exit 1),
instead of a ``ModuleNotFoundError`` traceback.

Each case runs in a fresh interpreter where importing the extra's module is refused (a
``None`` entry in ``sys.modules``, as Python does for a module that is not installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    assert cli._missing_kv_extra(ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")) == "aiohttp"
    assert cli._missing_kv_extra(ModuleNotFoundError("x", name="aiohttp.web")) == "aiohttp"
    assert cli._missing_kv_extra(ModuleNotFoundError("x", name="yarl")) == "yarl"
    assert cli._missing_kv_extra(ModuleNotFoundError("x", name="openraft_py.kv.nodes")) is None
    assert cli._missing_kv_extra(ModuleNotFoundError("x", name=None)) is None
