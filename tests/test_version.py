"""The package version has one source: ``openraft_py.__version__``. The distribution's
metadata (pyproject.toml), ``openraft-py --version`` and the ``openraft_build_info`` metric
(``tests/kv/test_metrics.py``) take it from there; pyproject.toml held a copy of its own, so a
release that bumped one and not the other shipped a wheel whose command line named another
version than pip did."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import openraft_py

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


@pytest.mark.skipif(not PYPROJECT.exists(), reason="not a source checkout (installed-package run)")
def test_pyproject_takes_the_version_from_the_package() -> None:
    conf = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in conf["project"], "a second copy of the version: take it from openraft_py.__version__"
    assert "version" in conf["project"]["dynamic"]
    assert conf["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "openraft_py.__version__"}


def test_the_command_line_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "openraft_py", "--version"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == f"openraft-py {openraft_py.__version__}"
