"""The node process's ``bulk`` operation (``openraft_py.testing.proc.node``), in this process
against a recording stand-in for ``Raft.client_write``: the writes it makes, and that its
writers do the same work a write as PySyncObj's driver (``bench/peers/pysyncobj_node.py``)
in ``bench/tcp.py``'s comparison: the same key and value, the value made inline."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from openraft_py.storage.memory import KvSet, decode_kv
from openraft_py.testing.proc import node as node_mod
from openraft_py.testing.proc.node import Node, NodeOptions, value_of

pytestmark = pytest.mark.timeout(30)


class _Recorder:
    """``client_write`` that records each command's data and answers at once."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def client_write(self, data: bytes) -> None:
        self.data.append(data)


async def _bulk(monkeypatch: pytest.MonkeyPatch, size: int | None) -> tuple[list[Any], int, dict[str, Any]]:
    """Run ``bulk`` (2 writers, 10 writes, ``value_size`` ``size``); the commands written, the
    number of ``value_of`` calls, the result."""
    calls = 0

    def counted(key: str, size: int = 0) -> str:
        nonlocal calls
        calls += 1
        return value_of(key, size)

    monkeypatch.setattr(node_mod, "value_of", counted)
    n = Node(NodeOptions(id=1, raft_addr="127.0.0.1:1", data_dir="unused"))
    rec = _Recorder()
    n.raft = rec  # type: ignore[assignment]
    n.log_store = SimpleNamespace(groups_written=0)  # type: ignore[assignment]
    req: dict[str, Any] = {"writers": 2, "count": 10, "prefix": "p"}
    if size is not None:
        req["value_size"] = size
    out = await n.op_bulk(req)
    return [decode_kv(d) for d in rec.data], calls, out


async def test_bulk_writes_the_key_and_value_of_pysyncobjs_driver_without_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    cmds, calls, out = await _bulk(monkeypatch, None)
    assert out["errors"] == [] and out["acked"] == [5, 5]
    keys = sorted(f"p{w}-{i}" for w in range(2) for i in range(5))
    # PySyncObj's driver writes key f"{prefix}{w}-{i}" with the value "v:" + key.
    assert sorted(cmds, key=lambda c: c.key) == [KvSet(k, "v:" + k) for k in keys]
    assert all(c.value == value_of(c.key) for c in cmds)  # the documented meaning
    assert calls == 0  # made inline, as PySyncObj's driver does


@pytest.mark.parametrize("size", [1, 5, 40])
async def test_bulk_pads_values_to_value_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    cmds, _, out = await _bulk(monkeypatch, size)
    assert out["errors"] == [] and len(cmds) == 10
    for c in cmds:
        assert c.value == value_of(c.key, size)
        assert len(c.value) == max(size, len("v:" + c.key))
