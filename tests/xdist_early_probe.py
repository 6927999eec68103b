"""A pytest plugin for ``test_xdist_early.py``: each test module's ``start_early`` is replaced
by a note of who called it (the xdist worker, the module, how many of its tests) appended to
the file ``$EARLY_PROBE_OUT``, and every test is skipped before its fixtures run, so that a
run shows where the suite's early work would start without doing any of it."""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    out = os.environ["EARLY_PROBE_OUT"]
    for item in session.items:
        module: Any = getattr(item, "module", None)
        if module is None or not hasattr(module, "start_early") or getattr(module, "_probed", False):
            continue
        module._probed = True

        def noted(config: pytest.Config, items: list[pytest.Item], name: str = module.__name__) -> None:
            with open(out, "a", encoding="utf-8") as f:
                f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'controller')} {name} {len(items)}\n")

        module.start_early = noted


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # (After the suite's own tryfirst hook, registered later, which starts the early work.)
    pytest.skip("probe: nothing runs")
