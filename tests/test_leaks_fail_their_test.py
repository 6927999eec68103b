"""The suite's configuration (``filterwarnings`` in pyproject.toml, the garbage collections of
``tests/conftest.py``): a test that drops something unclosed fails, and it is that test that
fails, not whichever later one the garbage collector happened to run in; a module-scoped
fixture's leak fails its module's last test. Run in a child pytest on a copy of the conftest.

What is alive at the end of a module is frozen (``gc.freeze``) until the end of the next, so
the second case checks that a later module's leaks are still found: its own, by the test that
dropped them; one made by an earlier module, by its last test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

LEAKY = '''
import pytest


class Cycle:
    """Collected only by the garbage collector (a reference cycle), holding an open file."""

    def __init__(self) -> None:
        self.me = self
        self.file = open(__file__)


def test_1_drops_an_open_file_in_a_cycle() -> None:
    Cycle()


@pytest.fixture(scope="module")
def leaky_module_fixture():
    yield
    Cycle()


def test_2_clean(leaky_module_fixture) -> None:
    pass


def test_3_clean_and_last(leaky_module_fixture) -> None:
    pass
'''


@pytest.mark.timeout(120)
def test_a_leak_fails_the_test_that_dropped_it(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(TESTS.parent / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-rA", str(tmp_path / "test_leaky.py")],
        capture_output=True, text=True, timeout=100, cwd=tmp_path)
    out = p.stdout
    assert p.returncode == 1, out
    assert "ERROR test_leaky.py::test_1_drops_an_open_file_in_a_cycle" in out, out
    assert "PASSED test_leaky.py::test_2_clean" in out, out
    assert "ERROR test_leaky.py::test_2_clean" not in out, out
    assert "ERROR test_leaky.py::test_3_clean_and_last" in out, out  # the module fixture's, at its teardown
    assert "ResourceWarning: unclosed file" in out, out


KEEPS = '''
from test_leaky import Cycle

KEPT = []


def test_1_keeps_an_open_file_in_a_cycle() -> None:
    KEPT.append(Cycle())
'''

LATER = '''
from test_a_keeps import KEPT
from test_leaky import Cycle


def test_1_drops_an_open_file_in_a_cycle() -> None:
    Cycle()


def test_2_drops_what_an_earlier_module_made() -> None:
    KEPT.clear()


def test_3_clean_and_last() -> None:
    pass
'''


@pytest.mark.timeout(120)
def test_leaks_of_a_later_module_still_fail(tmp_path: Path) -> None:
    """Module ``test_a_keeps`` keeps a cycle alive past its end (frozen then); the next module
    drops one of its own and that one: both are found."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY)  # (for its Cycle: not run here)
    (tmp_path / "test_a_keeps.py").write_text(KEEPS)
    (tmp_path / "test_b_later.py").write_text(LATER)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(TESTS.parent / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-rA", str(tmp_path / "test_a_keeps.py"), str(tmp_path / "test_b_later.py")],
        capture_output=True, text=True, timeout=100, cwd=tmp_path)
    out = p.stdout
    assert p.returncode == 1, out
    assert "PASSED test_a_keeps.py::test_1_keeps_an_open_file_in_a_cycle" in out, out
    assert "ERROR test_a_keeps.py" not in out, out
    assert "ERROR test_b_later.py::test_1_drops_an_open_file_in_a_cycle" in out, out
    # The earlier module's cycle: at the end of this module (see _collect_what_the_module_dropped).
    assert "ERROR test_b_later.py::test_3_clean_and_last" in out, out
    assert out.count("ResourceWarning: unclosed file") >= 2, out
