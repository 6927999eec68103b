"""A Jepsen-style test of real ``serve`` processes (see docs/design/jepsen.md).

Modules, one job each:

- ``procs``: spawn, SIGKILL, restart, SIGSTOP/SIGCONT the ``serve`` processes;
- ``proxy``: the fault-injecting TCP proxy every raft connection goes through;
- ``kvclient``: one HTTP call, following redirects, classified ``ok`` / ``fail`` / ``info``;
- ``workload``: the concurrent clients (register and multi-key workloads);
- ``history``: the recorded operations, in lincheck's JSON-lines format;
- ``nemesis``: the seeded fault schedule and the task applying and healing it;
- ``checks``: linearizability (lincheck), local reads, final state;
- ``report``: the text report; ``runner``: one run end to end;
- ``faulty_serve``: TEST ONLY, ``serve`` with engine bug switches on;
- ``__main__``: ``python -m openraft_py.testing.jepsen --time 300 --seed N --nodes 5``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import RunConfig, RunResult, run

__all__ = ["RunConfig", "RunResult", "run"]


if not TYPE_CHECKING:
    # Hidden from type checkers (they see the names imported above): with a visible module
    # ``__getattr__``, a misspelt name was ``Any`` to ``mypy --strict``.

    def __getattr__(name: str) -> Any:
        """``RunConfig``, ``RunResult`` and ``run`` from ``runner``, imported on first use: the
        runner's HTTP client needs the ``kv`` extra (aiohttp), and ``python -m
        openraft_py.testing.jepsen`` imports this package before its ``__main__`` can say, in one
        line, that the extra is not installed."""
        if name in __all__:
            from . import runner
            return getattr(runner, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
