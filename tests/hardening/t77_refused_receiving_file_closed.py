"""A receiving file the node refuses (``check_receiving_file``: a text file, an object missing
``truncate``) and that is still open is closed by the node, and a ``close()`` that
fails does not hide the refusal.

``t76_receiving_file`` checks the refusal itself. The refused file was left open: a state
machine that handed out a real text-mode temporary file kept its descriptor (and, for a
``NamedTemporaryFile``, the file on disk) until the garbage collector found it, and the node
gave no other chance to close it (it stopped on the refusal).
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from .snapshot_only_learner import RecordingReceiver, snapshot_only_learner

pytestmark = pytest.mark.timeout(60)


class NoTruncate:
    """A binary file object but for its missing ``truncate``; records its ``close``."""

    def __init__(self, fail_close: bool = False) -> None:
        self.closed = False
        self.fail_close = fail_close

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return offset

    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        if self.fail_close:
            raise OSError("the plug-in's close failed")
        self.closed = True


async def _learner_stops(receiver: RecordingReceiver) -> str:
    """Run a leader whose log only a snapshot can bring to a learner using ``receiver``; the
    learner's stop error."""
    async with snapshot_only_learner("t77", receiver) as (leader, learner, _):
        m = await learner.wait(timeout=10).metrics(lambda m: not m.running, "n2 stopped")
        assert m.error is not None
        return str(m.error)


@pytest.mark.parametrize(("make", "got"), [
    (io.StringIO, "a text file (StringIO)"),
    (NoTruncate, "NoTruncate"),
], ids=["text-file", "no-truncate"])
async def test_a_refused_open_receiving_file_is_closed(make: Any, got: str) -> None:
    receiver = RecordingReceiver(make)
    error = await _learner_stops(receiver)
    assert "begin_receiving_snapshot returned " + got in error, error
    assert receiver.given, "begin_receiving_snapshot was not called"
    open_files = [f for f in receiver.given if not f.closed]
    assert not open_files, f"refused files left open: {open_files}"


async def test_a_failing_close_of_a_refused_file_does_not_hide_the_refusal() -> None:
    receiver = RecordingReceiver(lambda: NoTruncate(fail_close=True))
    error = await _learner_stops(receiver)
    assert error.startswith("storage error while beginning to receive a snapshot: TypeError: "
                            "begin_receiving_snapshot returned NoTruncate"), error
    assert "close failed" not in error, error
