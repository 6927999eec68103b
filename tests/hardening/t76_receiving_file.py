"""A state machine whose ``begin_receiving_snapshot`` returns something the node cannot write
a snapshot into: its node stops with ``StorageError`` naming the method and what it returned,
and the leader goes on.

The contract (``RaftStateMachine.begin_receiving_snapshot``) is a writable binary file object.
``None`` (a forgotten ``return``), a text file or a closed file stopped the node at the first
chunk with what the write hit ("AttributeError: 'NoneType' object has no attribute 'seek'",
"TypeError: string argument expected, got 'bytes'", "ValueError: I/O operation on closed
file."), naming neither the method nor the contract; a plug-in's other wrong answers
(``apply``, ``build_snapshot``, ``get_current_snapshot``) already said both (``t50_plugins``).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from openraft_py.storage import MemStateMachine

from .snapshot_only_learner import BufferReceiver, WriteOnlyFile, installs_it, snapshot_only_learner

pytestmark = pytest.mark.timeout(60)


def _closed() -> io.BytesIO:
    f = io.BytesIO()
    f.close()
    return f


class OddReceiver(MemStateMachine):
    """A state machine whose ``begin_receiving_snapshot`` returns ``self.odd()``."""

    def __init__(self, odd: Any) -> None:
        super().__init__()
        self.odd = odd

    async def begin_receiving_snapshot(self) -> Any:
        return self.odd()


@pytest.mark.parametrize(("odd", "got"), [
    (lambda: None, "NoneType None"),
    (io.StringIO, "a text file (StringIO)"),
    (_closed, "a closed file (BytesIO)"),
    (lambda: b"", "bytes b''"),
], ids=["none", "text-file", "closed-file", "bytes"])
async def test_a_receiving_file_the_node_cannot_write_stops_its_node_naming_it(odd: Any, got: str) -> None:
    async with snapshot_only_learner("t76", OddReceiver(odd)) as (leader, learner, _):
        m = await learner.wait(timeout=10).metrics(lambda m: not m.running, "n2 stopped")
        assert m.error is not None
        assert m.error == ("storage error while beginning to receive a snapshot: TypeError: "
                           f"begin_receiving_snapshot returned {got}, expected a writable binary file object"), m.error
        # The leader goes on: it commits alone.
        await leader.client_write(b"y")
        assert leader.metrics.running and leader.is_leader()


async def test_a_receiving_file_with_the_methods_the_contract_names_is_taken() -> None:
    """The contract names ``write``, ``seek``, ``truncate`` and ``close``: a file object with
    those and no ``read`` is written into and installed (the check refused it for ``read``,
    which the node never calls on it, stopping the node)."""
    await installs_it("t76", BufferReceiver(WriteOnlyFile))
