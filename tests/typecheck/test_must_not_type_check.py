"""Mistakes a user's program makes with the public API that ``mypy --strict`` must refuse:
each fails when run, so a program that type-checks must not contain it. Each case is a
small program and the errors mypy must report for it (the correct uses are in
``public_api_user.py``, which ``make lint`` checks).

Needs mypy (the ``lint`` extra, as ``make lint``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.timeout(300)


def mypy_strict_errors(program: str, tmp_path: Path, cache: Path) -> list[str]:
    """The error messages of ``mypy --strict`` on ``program`` (from the checkout, with its
    configuration; the package followed silently, as mypy treats an installed one), with the
    mypy cache ``cache`` (the ``mypy_cache`` fixture)."""
    pytest.importorskip("mypy", reason="mypy is not installed (the lint extra: pip install -e '.[lint]')")
    path = tmp_path / "user_mistakes.py"
    path.write_text(program)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-warn-unused-configs",
         "--no-error-summary", "--hide-error-context", "--cache-dir", str(cache), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert "error: " in r.stdout or r.returncode == 0, r.stdout + r.stderr
    return [line.split(": error: ", 1)[1] for line in r.stdout.splitlines() if ": error: " in line]


MISSPELT_LAZY_NAMES = '''
import openraft_py.testing
from openraft_py.storage.rocks import RocksLogStor
from openraft_py.testing import Clustr
from openraft_py.testing.jepsen import RunConfg

simulation = openraft_py.testing.simulation
'''


def test_a_misspelt_name_of_a_lazily_loading_package_is_an_error(tmp_path: Path, mypy_cache: Path) -> None:
    """``openraft_py.testing``, ``openraft_py.testing.jepsen`` and ``openraft_py.storage.rocks``
    load some names on first use (a module ``__getattr__``): mypy took that function as
    declaring every name, ``Any``, so a misspelt import type-checked and raised
    ``ImportError`` only when run."""
    errors = mypy_strict_errors(MISSPELT_LAZY_NAMES, tmp_path, mypy_cache)
    assert len(errors) == 4, errors
    assert '"openraft_py.storage.rocks" has no attribute "RocksLogStor"' in errors[0], errors
    assert '"openraft_py.testing" has no attribute "Clustr"' in errors[1], errors
    assert '"openraft_py.testing.jepsen" has no attribute "RunConfg"' in errors[2], errors
    assert 'has no attribute "simulation"' in errors[3], errors


def test_the_lazy_names_still_load_when_run() -> None:
    import openraft_py.storage.rocks as rocks
    import openraft_py.testing as testing

    assert testing.Simulation.__name__ == "Simulation" and testing.check.__name__ == "check"
    assert rocks.SM_FORMAT
    with pytest.raises(AttributeError, match="Clustr"):
        testing.Clustr  # noqa: B018 - the attribute access is the check


CHANGED_MEMBERSHIP_NODES = '''
from openraft_py import BasicNode, Membership, Raft


def grow(raft: Raft, m: Membership) -> None:
    nodes = raft.metrics.membership_config.membership.nodes
    nodes[4] = BasicNode("10.0.0.4:5000")
    m.nodes.clear()
    del m.nodes[1]
    m.nodes.update({5: BasicNode("10.0.0.5:5000")})
    mine = dict(m.nodes) | {4: BasicNode("10.0.0.4:5000")}
    mine[6] = BasicNode("10.0.0.6:5000")
    again = Membership.new([{1, 4}], mine)
    assert again.nodes == Membership.new(list(m.configs), m.nodes).nodes
'''


def test_changing_a_memberships_nodes_is_an_error(tmp_path: Path, mypy_cache: Path) -> None:
    """``Membership.nodes`` refuses changes when run (``TypeError``: the membership a
    program reads is the node's own); typed ``dict``, mypy accepted every change. It is a
    read-only ``Mapping`` to type checkers now; a ``dict`` of one's own still type-checks."""
    errors = mypy_strict_errors(CHANGED_MEMBERSHIP_NODES, tmp_path, mypy_cache)
    assert len(errors) == 4, errors
    assert 'Unsupported target for indexed assignment ("Mapping[int, BasicNode]")' in errors[0], errors
    assert '"Mapping[int, BasicNode]" has no attribute "clear"' in errors[1], errors
    assert '"Mapping[int, BasicNode]" has no attribute "__delitem__"' in errors[2], errors
    assert '"Mapping[int, BasicNode]" has no attribute "update"' in errors[3], errors


def test_the_same_changes_raise_when_run() -> None:
    from openraft_py import BasicNode, Membership

    m = Membership.new([{1, 2}], {1: BasicNode("a:1"), 2: BasicNode("b:2")})
    with pytest.raises(TypeError, match=r"read-only .* dict\(m.nodes\) \| \{node_id"):
        m.nodes[4] = BasicNode("c:4")  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        m.nodes.clear()  # type: ignore[attr-defined]
    mine = dict(m.nodes) | {4: BasicNode("c:4")}
    assert Membership.new([{1, 4}], mine).learner_ids() == {2}


CHANGED_METRICS_REPLICATION = '''
from openraft_py import NodeId, Raft


def followers(raft: Raft) -> dict[NodeId, int]:
    m = raft.metrics
    if m.replication is None:
        return {}
    m.replication.pop(m.id)
    m.replication[m.id] = -1
    mine = dict(m.replication)
    mine.pop(m.id)
    return mine
'''


def test_changing_the_metrics_replication_is_an_error(tmp_path: Path, mypy_cache: Path) -> None:
    """``RaftMetrics.replication`` was typed ``dict``: a program that changed it (to keep the
    followers only) type-checked, and changed the node's current metrics, which every reader
    shares, until the next change. It is a read-only ``Mapping`` to type checkers now."""
    errors = mypy_strict_errors(CHANGED_METRICS_REPLICATION, tmp_path, mypy_cache)
    assert len(errors) == 2, errors
    assert '"Mapping[int, int]" has no attribute "pop"' in errors[0], errors
    assert 'Unsupported target for indexed assignment ("Mapping[int, int]")' in errors[1], errors


CLUSTER_PARTS = '''
from openraft_py import Config
from openraft_py.storage import MemDisk, MemLogStore, MemStateMachine, NoopStateMachine
from openraft_py.testing import Cluster


class NotAStateMachine:
    def __init__(self, disk: MemDisk) -> None:
        self.disk = disk


async def parts() -> dict[str, str]:
    async with Cluster(Config(), seed=1) as c:
        await c.start({1, 2, 3})
        c.state_machines[1].dta
        c.log_stores[1].purge_log
        noop: Cluster[NoopStateMachine, MemLogStore] = Cluster(state_machine=NoopStateMachine)
        await noop.shutdown()
        Cluster(state_machine=NotAStateMachine)
        return c.state_machines[1].data
'''


def test_a_clusters_state_machines_and_log_stores_are_typed(tmp_path: Path, mypy_cache: Path) -> None:
    """``Cluster.state_machines`` and ``log_stores`` were ``dict[NodeId, Any]``: a misspelt
    attribute of a node's state machine (``c.state_machines[1].dta``) passed ``mypy
    --strict`` and raised ``AttributeError`` when run. ``Cluster`` is generic in the types
    its factories return now, and refuses a factory of something that is not a state
    machine."""
    errors = mypy_strict_errors(CLUSTER_PARTS, tmp_path, mypy_cache)
    assert len(errors) == 3, errors
    assert '"MemStateMachine" has no attribute "dta"' in errors[0], errors
    assert '"MemLogStore" has no attribute "purge_log"' in errors[1], errors
    assert 'Value of type variable "SM" of "Cluster" cannot be "NotAStateMachine"' in errors[2], errors


CHANGED_RUNNING_CONFIG = '''
import msgspec

from openraft_py import Config, Raft


def smaller_writes(raft: Raft) -> Config:
    raft.config.max_entry_bytes = 1024
    mine = Config(**msgspec.structs.asdict(raft.config))
    mine.max_entry_bytes = 1024
    return msgspec.structs.replace(raft.config, max_entry_bytes=1024)
'''


def test_changing_a_running_nodes_config_is_an_error(tmp_path: Path, mypy_cache: Path) -> None:
    """``raft.config`` is the node's own settings, read-only when run (``RunningConfig``,
    ``AttributeError``): mypy refuses the change too; a ``Config`` of one's own made from
    it, or a changed copy, type-checks."""
    errors = mypy_strict_errors(CHANGED_RUNNING_CONFIG, tmp_path, mypy_cache)
    assert len(errors) == 1, errors
    assert 'Property "max_entry_bytes" defined in "RunningConfig" is read-only' in errors[0], errors
