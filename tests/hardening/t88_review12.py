"""What the review of the last stop's merges found.

- ``check_receiving_file`` takes a duck-typed receiving file whose ``writable()`` cannot
  answer (it raises): nothing says it is unwritable. But a ``writable`` that is a property
  raising the same way raised out of the lookup (``getattr`` with a default passes only
  ``AttributeError``): the node stopped at the first chunk with "storage error while
  beginning to receive a snapshot: NotImplementedError: cannot tell", a file the contract
  takes (``write``, ``seek``, ``truncate``) refused, and left open.
"""

from __future__ import annotations

from typing import Any

import pytest

from .snapshot_only_learner import BufferReceiver, WriteOnlyFile, installs_it

pytestmark = pytest.mark.timeout(60)


class _CannotTell(WriteOnlyFile):
    """A duck-typed receiving file whose ``writable`` is a property that cannot answer."""

    @property
    def writable(self) -> Any:
        raise NotImplementedError("cannot tell")


async def test_a_receiving_file_whose_writable_property_cannot_answer_is_taken() -> None:
    await installs_it("t88", BufferReceiver(_CannotTell))
