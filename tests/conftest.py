"""Shared pytest configuration.

Kernel tests take the ``impl`` fixture and so run against both implementations of
``openraft_py._core``: ``py`` (the pure twins) and ``c`` (the compiled modules, marked
``c_extension``). ``--no-c-extensions`` deselects the ``c`` cases; without it a compiled
module that fails to import FAILS the test rather than skipping it.

A test module may define ``start_early(config, items)``: called once, after collection, with
the module's selected tests when there is at least one, to start slow work that needs nothing
from the other tests, so that it runs on the core the rest of the suite leaves idle:
``test_wheel.py`` starts ``make wheel`` there at the lowest CPU priority, and the Jepsen tests
queue their runs of real processes (``tests/jepsen/cases.py``). Such modules' tests run after
all the others.

``make test`` runs the suite in pytest-xdist workers (``-n 3 --dist loadfile``: each test
module runs whole in one worker). There the modules that start early are one unit of work
(``EarlyTogether``, the scheduler below; also with ``--dist load``, what ``-n N`` alone
means, and ``loadscope``), run first by one worker, which calls their
``start_early`` hooks when it reaches the first of their tests: the wheel build and the
Jepsen cases then run beside that worker's waits, and the other workers run the rest. Two
workers each starting them would build the wheel twice at once in one checkout (the sdist's
staging directory is shared) and run the Jepsen cases twice.

Once collected, the modules and test items every test shares are moved out of the garbage
collector's view (``gc.freeze``): a full collection otherwise traverses them all, and on a
slow machine that stalled the event loop of an in-process cluster by up to half a second,
long enough for a follower to time out in a test that assumes a steady leader. With them
frozen, the longest full collection measured in a whole run fell from 557 to 162 ms.

The same is done at the end of each test module (``_collect_what_the_module_dropped``): what
the worker keeps across modules (every test's report, caches filled on first use, modules
imported by a test) would otherwise grow through the run, and the full collection at the end
of each test traversed all of it again: in a worker's run of 2,400 engine, kernel and core
tests, those collections took 39 s of 139. With it, a test's collection traverses only what
was made since its module began.
"""

from __future__ import annotations

import functools
import gc
import importlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

KERNELS = ("quorum", "logindex", "codec", "kv")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="deselect the tests of the compiled Cython kernels (c_extension marker)",
    )


def _starts_early(item: pytest.Item) -> bool:
    """Whether ``item``'s module has a ``start_early`` hook (see the module docstring)."""
    return hasattr(getattr(item, "module", None), "start_early")


def _xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (not the controller, not a plain run)."""
    return hasattr(config, "workerinput")


_EARLY_SCOPE = "(the modules that start early)"


@functools.cache
def _file_starts_early(path: str) -> bool:
    """Whether the test module at ``path`` defines ``start_early``: the xdist controller
    schedules by node id and imports no test module, so it reads the source."""
    try:
        return "\ndef start_early(" in Path(path).read_text(encoding="utf-8")
    except OSError:
        return False


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``EarlyTogether``, which keeps the modules that start early in one unit of work (see
    the module docstring), for ``--dist loadfile`` (each other module a unit, as xdist's
    own), ``loadscope`` (each other module or class) and ``load``, what ``-n N`` alone
    means (each other test a unit): with xdist's own ``load``, every worker that was handed
    a test of those modules started all their work, so ``pytest -n 2 tests/`` built the
    wheel twice at once in one checkout and ran every Jepsen case twice. Other modes
    (``worksteal``, ``loadgroup``, ``each``): xdist's own, which may do the same."""
    dist = config.getoption("dist", "no")
    if dist not in ("loadfile", "loadscope", "load"):
        return None
    from xdist.scheduler import LoadFileScheduling, LoadScopeScheduling

    base = LoadFileScheduling if dist == "loadfile" else LoadScopeScheduling

    class EarlyTogether(base):  # type: ignore[misc,valid-type]
        def _split_scope(self, nodeid: str) -> str:
            if _file_starts_early(str(config.rootpath / nodeid.split("::", 1)[0])):
                return _EARLY_SCOPE
            if dist == "load":
                return nodeid
            scope: str = super()._split_scope(nodeid)
            return scope

    return EarlyTogether(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--no-c-extensions"):
        kept, deselected = [], []
        for item in items:
            (deselected if item.get_closest_marker("c_extension") else kept).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
    # The tests whose work starts early run last (each group in its order), so that their
    # background work has had the rest of the suite's time to finish. In an xdist worker they
    # run first: the worker that gets them starts their work when it reaches them, and the
    # controller hands units of work out in collection order (``--no-loadscope-reorder``).
    early = [item for item in items if _starts_early(item)]
    if early:
        first = set(early)
        rest = [item for item in items if item not in first]
        items[:] = early + rest if _xdist_worker(config) else rest + early


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    # What is alive now lives for the whole session: keep it out of every later collection.
    gc.collect()
    gc.freeze()
    if not _xdist_worker(session.config):
        _start_early_work(session)


_early_work_started = False


def _start_early_work(session: pytest.Session) -> None:
    """Call each selected module's ``start_early`` with its selected tests (once)."""
    global _early_work_started
    if _early_work_started:
        return
    _early_work_started = True
    selected: dict[types.ModuleType, list[pytest.Item]] = {}
    for item in session.items:
        if _starts_early(item):
            selected.setdefault(item.module, []).append(item)  # type: ignore[attr-defined]
    for module, items in selected.items():  # in collection order
        module.start_early(session.config, items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """In an xdist worker: start the early work when this worker reaches the first test of
    a module that starts early (all of them are one unit of work, ``EarlyTogether``), before
    that test's fixtures, which wait for it."""
    if _xdist_worker(item.config) and _starts_early(item):
        _start_early_work(item.session)


@pytest.fixture(autouse=True)
def _collect_what_the_test_dropped() -> Iterator[None]:
    """A full garbage collection at the end of each test, once its other fixtures are torn
    down (an autouse fixture is set up first, so torn down last): what the test dropped
    unclosed (a socket, a pipe, a store, a transport) is finalized now, and its
    ``ResourceWarning`` (an error, see ``filterwarnings`` in pyproject.toml) fails this test
    rather than whichever later test the collector happened to run in."""
    yield
    gc.collect()


@pytest.fixture(scope="module", autouse=True)
def _collect_what_the_module_dropped() -> Iterator[None]:
    """The same at the end of each module, for what its module-scoped fixtures dropped, and
    for what was made before the module and dropped during it: a frozen object is never
    collected, so everything is put back in the collector's view (``gc.unfreeze``) for this
    one full collection, then what is still alive is frozen again, the next module's tests'
    collections then traversing only what they made (see the module docstring).

    NB: a test that drops an object made before its module began (by an earlier module, a
    session-scoped fixture) fails its module's last test, as a module-scoped fixture's leak
    does, not itself: at the test's end that object is frozen. What the test or its module
    made, as every leak the suite has caught, still fails the test that dropped it."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _load_impl(suffix: str) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(name=suffix)
    for kernel in KERNELS:
        mod = importlib.import_module(f"openraft_py._core._{kernel}_{suffix}")
        for attr in dir(mod):
            if not attr.startswith("_"):
                setattr(ns, attr, getattr(mod, attr))
    return ns


@pytest.fixture(scope="session", params=["py", pytest.param("c", marks=pytest.mark.c_extension)])
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """The kernel names (``majority_committed``, ``LogIndex``, ...) of one implementation."""
    try:
        return _load_impl(request.param)
    except ImportError as exc:
        pytest.fail(f"compiled kernels failed to import (run `make build`): {exc!r}")


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache directory for every type check this process runs (each pytest-xdist
    worker has its own, so no two mypy runs write it at once): the package's and the standard
    library's types are checked once per worker, not once per test (each cold run took 5-25 s).
    A checked program is always checked again (its source is new), so its errors are
    reported as without a cache."""
    return tmp_path_factory.mktemp("mypy-cache")
