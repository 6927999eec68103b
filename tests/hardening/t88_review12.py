"""What the review of the last stop's merges found.

- ``check_receiving_file`` takes a duck-typed receiving file whose ``writable()`` cannot
  answer (it raises): nothing says it is unwritable. But a ``writable`` that is a property
  raising the same way raised out of the lookup (``getattr`` with a default passes only
  ``AttributeError``): the node stopped at the first chunk with "storage error while
  beginning to receive a snapshot: NotImplementedError: cannot tell", a file the contract
  takes (``write``, ``seek``, ``truncate``) refused, and left open.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from openraft_py.storage import MemStateMachine

from .snapshot_only_learner import snapshot_only_learner

pytestmark = pytest.mark.timeout(60)


class _CannotTell:
    """A duck-typed receiving file whose ``writable`` is a property that cannot answer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()

    @property
    def writable(self) -> Any:
        raise NotImplementedError("cannot tell")

    def write(self, b: bytes) -> int:
        return self.buf.write(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buf.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self.buf.truncate(size)

    def close(self) -> None:
        pass


class _CannotTellReceiver(MemStateMachine):
    async def begin_receiving_snapshot(self) -> Any:
        return _CannotTell()

    async def install_snapshot(self, meta: Any, data: Any) -> None:
        data.buf.seek(0)
        await super().install_snapshot(meta, data.buf)


async def test_a_receiving_file_whose_writable_property_cannot_answer_is_taken() -> None:
    async with snapshot_only_learner("t88", _CannotTellReceiver()) as (_, learner, index):
        m = await learner.wait(timeout=10).metrics(
            lambda m: not m.running or (m.snapshot is not None and m.snapshot.index >= index), "n2 installed it")
        assert m.running, m.error
