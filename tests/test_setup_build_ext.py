"""``setup.py``'s ``build_ext`` on a machine without a C compiler (``pip install`` of the
sdist): the build still fails, but says that ``OPENRAFT_PY_NO_EXTENSIONS=1`` builds the
pure-Python package. It ended in setuptools' "error: command 'gcc' failed: No such file or
directory" alone.

The project's ``BuildExt`` builds one tiny C extension here (the package's own need Cython
and minutes), with ``CC`` naming a compiler that is missing or fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="no checkout"),
    pytest.mark.skipif(os.name != "posix", reason="CC selects the compiler of a Unix build"),
]

_BUILD_ONE = """
import os, runpy, sys
from setuptools import Extension, setup
build_ext = runpy.run_path("setup.py", run_name="openraft_py_setup")["BuildExt"]  # (from the checkout)
os.chdir(sys.argv[1])  # (away from the project's pyproject.toml)
setup(name="tiny", ext_modules=[Extension("tiny", ["tiny.c"])], cmdclass={"build_ext": build_ext},
      script_args=["build_ext", "--build-temp", "temp", "--build-lib", "lib", "--parallel", "2"])  # (as the real build)
"""

HINT = ("openraft-py: the compiled kernels need a C compiler and Python's C headers; "
        "OPENRAFT_PY_NO_EXTENSIONS=1 builds the pure-Python package instead (the same behaviour, slower)")


def _build(tmp_path: Path, cc: str) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "tiny.c"
    source.write_text("int tiny_answer(void) { return 42; }\n")
    env = {**os.environ, "CC": cc, "LDSHARED": f"{cc} -shared"}
    return subprocess.run([sys.executable, "-c", _BUILD_ONE, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=100)


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "/bin/false"], ids=["no compiler", "the compiler fails"])
def test_a_failed_compile_names_the_pure_python_build(tmp_path: Path, cc: str) -> None:
    r = _build(tmp_path, cc)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.rstrip("\n").splitlines()
    # setuptools' own line ("error: command 'cc' failed: No such file or directory", or
    # "error: [Errno 2] No such file or directory: 'cc'", as its version has it), then the hint.
    assert lines[-1] == HINT, r.stderr
    assert lines[-2].startswith("error: ") and cc in lines[-2], r.stderr
    assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").iterdir())


_PARALLEL = """
import runpy, sys
from setuptools import Distribution
ns = runpy.run_path("setup.py", run_name="openraft_py_setup")
cmd = ns["BuildExt"](Distribution({"name": "tiny"}))
cmd.ensure_finalized()  # (as build_ext runs it; no --parallel given, as pip install -e gives none)
print(cmd.parallel, ns["JOBS"])
"""


def test_extensions_compile_in_parallel_by_default() -> None:
    """Without ``--parallel`` (an editable install gives none, and ``setup(options=...)``
    does not reach its ``build_ext``), ``BuildExt`` compiles ``OPENRAFT_PY_BUILD_JOBS``
    extensions at a time (default one per CPU): it compiled them one at a time."""
    env = {**os.environ, "OPENRAFT_PY_BUILD_JOBS": "3"}
    r = subprocess.run([sys.executable, "-c", _PARALLEL], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=100)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "3"], r.stdout
