"""Shared pytest configuration.

Kernel tests take the ``impl`` fixture and so run against both implementations of
``openraft_py._core``: ``py`` (the pure twins) and ``c`` (the compiled modules, marked
``c_extension``). ``--no-c-extensions`` deselects the ``c`` cases; without it a compiled
module that fails to import FAILS the test rather than skipping it.
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
