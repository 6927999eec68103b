"""``snapshot_io.close_quietly`` closes a snapshot's ``data`` that the node is done with,
and whatever that object does, nothing of it reaches the node's task: a ``data`` whose
``close`` attribute raised when looked up (a property of the user's state machine's type)
raised out of it, and out of the state machine's worker that called it."""

from __future__ import annotations

import io

from openraft_py.core import snapshot_io


class _CloseRaises:
    closed = False

    def close(self) -> None:
        self.closed = True
        raise OSError("the disk went away")


class _CloseLookupRaises:
    @property
    def close(self) -> None:
        raise RuntimeError("no close here")


def test_close_quietly_closes_a_file() -> None:
    f = io.BytesIO(b"x")
    snapshot_io.close_quietly(f)
    assert f.closed


def test_close_quietly_swallows_what_close_raises() -> None:
    f = _CloseRaises()
    snapshot_io.close_quietly(f)
    assert f.closed


def test_close_quietly_swallows_what_looking_up_close_raises() -> None:
    snapshot_io.close_quietly(_CloseLookupRaises())
    snapshot_io.close_quietly(None)  # (nothing to close)
