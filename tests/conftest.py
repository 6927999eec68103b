"""Shared pytest configuration.

Kernel tests take the ``impl`` fixture and so run against both implementations of
``openraft_py._core``: ``py`` (the pure twins) and ``c`` (the compiled modules, marked
``c_extension``). ``--no-c-extensions`` deselects the ``c`` cases; without it a compiled
module that fails to import FAILS the test rather than skipping it.

A test module may define ``start_early(config)``: called once, after collection, when at
least one of its tests was selected, to start slow setup that needs nothing from the other
tests (``test_wheel.py`` starts ``make wheel`` there, at the lowest CPU priority, so it runs
on the core the rest of the suite leaves idle).
"""

from __future__ import annotations

import importlib
import types

import pytest

KERNELS = ("quorum", "logindex", "codec", "kv")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-c-extensions",
        action="store_true",
        default=False,
        help="deselect the tests of the compiled Cython kernels (c_extension marker)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--no-c-extensions"):
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("c_extension") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    started: set[object] = set()
    for item in session.items:
        module = getattr(item, "module", None)
        start = getattr(module, "start_early", None)
        if start is not None and module not in started:
            started.add(module)
            start(session.config)


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
