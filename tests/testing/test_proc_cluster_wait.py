"""``ProcCluster.wait_for_leader``'s polling, without processes: the metrics calls are
replaced by a script of answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openraft_py.testing.proc.cluster import ProcCluster

pytestmark = pytest.mark.timeout(30)


async def test_wait_for_leader_reads_a_generator_of_ids_once(tmp_path: Path) -> None:
    """``among`` given as a generator (``n for n in c.running() if n != killed``) was read
    again at every poll: empty from the second on, so a wait whose first poll found no
    leader asked no node after it and timed out with "last metrics: {}" while the nodes had
    elected one."""
    c = ProcCluster(3, root=tmp_path)
    polls: list[list[int]] = []

    async def metrics(ids: Any = None, timeout: float = 10.0) -> dict[int, dict[str, Any]]:
        ids = list(ids)
        polls.append(ids)
        if len(polls) == 1:  # the first poll: an election is still going on
            return {i: {"state": "Candidate", "term": 2, "leader": None} for i in ids}
        return {i: {"state": "Leader" if i == 2 else "Follower", "term": 2, "leader": 2} for i in ids}

    c.metrics = metrics  # type: ignore[method-assign]
    assert await c.wait_for_leader(timeout=5.0, among=(n for n in (2, 3))) == (2, 2)
    assert polls == [[2, 3], [2, 3]]


async def test_close_removes_its_directory_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``close()`` removes the cluster's own directory in a worker thread: removing the nodes'
    RocksDB files on the loop held it 0.15 s and more after a run (asyncio's debug mode
    reports it as a slow callback). Nothing is started here: the directory is all there is."""
    import shutil
    import threading

    from openraft_py.testing.proc import cluster as proc_cluster

    removed_in: list[int] = []
    real_rmtree = shutil.rmtree

    def rmtree(path: Any, ignore_errors: bool = False) -> None:
        removed_in.append(threading.get_ident())
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(proc_cluster.shutil, "rmtree", rmtree)
    c = ProcCluster(3)
    assert c.root.is_dir()
    await c.close()
    assert not c.root.exists()
    assert len(removed_in) == 1 and removed_in[0] != threading.get_ident()
