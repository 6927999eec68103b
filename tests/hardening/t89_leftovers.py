"""What the last stop found and left, fixed.

1. ``StoreCalls.give_up`` (``openraft_py/storage/rocks/db.py``) marked its "still ran in
   worker threads" WARNING as logged before logging it: an interrupt (Ctrl-C) arriving in
   between made ``close_after_calls`` call it again, which then logged nothing: the one
   WARNING of the close was lost for good.
2. ``check_receiving_file`` (``openraft_py/core/snapshot_io.py``) called a receiving file's
   ``writable`` and compared its answer with ``False``: an ``async def writable`` answered a
   coroutine, which was taken (rightly: it cannot answer) but never closed, so a
   "coroutine ... was never awaited" ``RuntimeWarning`` was left behind for every
   transfer. The coroutine is closed now, its answer unknown as a raising ``writable``'s.
4. ``AioFsync.close`` (``openraft_py/storage/rocks/aio.py``) freed the AIO context, then
   marked it freed, then closed its eventfd: an interrupt raised as ``io_destroy`` returned
   left the eventfd open (for good, unless the close was called again) and the context
   marked live, so a second close destroyed it again (its id may name a new context by
   then). Both are freed now, each once, whatever is interrupted, and a later close does
   nothing.
5. A node its peers refuse at the handshake (its certificate names another node under
   ``--tls-bind-node-ids``: an impostor started with another node's ``--id``; an id outside
   the membership; another cluster name) was told why (the refusal, ``ERR_REFUSED``, carries
   the reason: ``docs/design/wire.md``), but only raised ``Unreachable`` with it, which its
   callers log at DEBUG: the peers logged why they refused it, and it logged nothing about
   why nobody answered. The dialling side now logs the reason at WARNING, once for a streak
   of refused reconnects (``_Peer.refused``, a ``FailureLog``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import warnings
from typing import Any

import pytest
from network.tcp_cluster import TcpCluster, steady_tcp_config

from openraft_py.core import snapshot_io
from openraft_py.errors import Unreachable
from openraft_py.network.tcp import TcpNetworkFactory
from openraft_py.storage.rocks import aio, db
from openraft_py.types import BasicNode, RPCOption, Vote, VoteRequest

from .rocks_close_helpers import one_stuck_call
from .snapshot_only_learner import BufferReceiver, WriteOnlyFile, installs_it

pytestmark = pytest.mark.timeout(60)


# -- 1. StoreCalls.give_up's WARNING, not lost -------------------------------------------------


class _InterruptedBeforeFirstWarning:
    """``db.log`` with a Ctrl-C that arrives as the first WARNING is about to be logged
    (before any handler has it); every other call goes to the real logger."""

    def __init__(self, real: logging.Logger) -> None:
        self._real = real
        self.fired = False

    def warning(self, *args: Any, **kwargs: Any) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        self._real.warning(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_the_give_up_warning_is_not_lost_to_an_interrupt_before_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "CLOSE_CALLS_WAIT", 0.2)
    interrupting = _InterruptedBeforeFirstWarning(db.log)
    monkeypatch.setattr(db, "log", interrupting)
    calls = db.StoreCalls("a test store", "/nowhere", "the store is closed")
    caplog.set_level(logging.WARNING, logger=interrupting._real.name)
    closed: list[list[BaseException]] = []
    with one_stuck_call(calls, "a stuck read"), pytest.raises(KeyboardInterrupt):
        db.close_after_calls(calls, closed.append)
    assert interrupting.fired
    warned = [r for r in caplog.records if "still ran in worker threads" in r.getMessage()]
    # The retried give_up (close_after_calls') logs it: once, not never.
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "a stuck read" in warned[0].getMessage()
    assert len(closed) == 1 and len(closed[0]) == 1 and "a stuck read" in str(closed[0][0])


# -- 2. a receiving file whose writable is a coroutine function --------------------------------


class _AsyncWritable(WriteOnlyFile):
    """A duck-typed receiving file whose ``writable`` is an ``async def``: its answer, a
    coroutine, is none the node can use without awaiting it (a file's calls are synchronous)."""

    async def writable(self) -> bool:
        return False


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)]


def test_an_async_writable_is_taken_and_its_coroutine_closed() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snapshot_io.check_receiving_file(_AsyncWritable(), "begin_receiving_snapshot")  # taken: no TypeError
        gc.collect()  # (a coroutine left unclosed warns when it is collected)
    assert not _never_awaited(caught), _never_awaited(caught)


async def test_a_receiving_file_with_an_async_writable_is_installed_without_a_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await installs_it("t89", BufferReceiver(_AsyncWritable))
        gc.collect()
    assert not _never_awaited(caught), _never_awaited(caught)


# -- 4. AioFsync.close, interrupted --------------------------------------------------------------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class _InterruptedAfterDestroy:
    """The C library of an ``AioFsync``, with a Ctrl-C raised as the first ``io_destroy``
    returns (where Python raises it: once the call is back); it counts the destroys."""

    def __init__(self, real: Any, io_destroy: int) -> None:
        self._real = real
        self._io_destroy = io_destroy
        self.destroys = 0

    def syscall(self, nr: int, *args: Any) -> int:
        got: int = self._real.syscall(nr, *args)
        if nr == self._io_destroy:
            self.destroys += 1
            if self.destroys == 1:
                raise KeyboardInterrupt
        return got


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd (Linux)")
def test_an_aio_close_interrupted_frees_its_eventfd_and_a_second_close_does_nothing() -> None:
    before = _open_fds()
    try:
        fsync = aio.AioFsync()
    except OSError as e:
        pytest.skip(f"Linux native AIO is not available here: {e}")
    assert _open_fds() - before, "the eventfd"
    libc = _InterruptedAfterDestroy(fsync._libc, fsync._sys[3])
    fsync._libc = libc  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        fsync.close()
    assert _open_fds() == before, "the interrupted close left the eventfd open"
    assert fsync.close() == []
    assert libc.destroys == 1, "the second close destroyed the context again"
    assert _open_fds() == before


# -- 5. a refused handshake, logged by the refused node ---------------------------------------


async def test_a_node_refused_at_every_reconnect_logs_why_once(caplog: pytest.LogCaptureFixture) -> None:
    """Node 42 (outside the membership) dials node 1 ten times, refused at each handshake:
    it logs node 1's reason once at WARNING (under its own name, "tcp client 42 -> node 1"),
    not once per reconnect, and not never."""
    caplog.set_level(logging.INFO, logger="openraft_py.network.tcp")
    option = RPCOption(hard_ttl=3.0, soft_ttl=3.0)
    # (Steady elections, and a leader first: a node without one takes any sender.)
    async with TcpCluster(steady_tcp_config()) as c:
        await c.start([1, 2, 3])
        await c.wait_leader_ready(timeout=15)
        node = c.nodes[1]
        assert node.server is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        refused = TcpNetworkFactory(42, c.cluster_name, backoff_min=0.01, backoff_max=0.02)
        try:
            client = refused.new_client(1, BasicNode(node.addr))
            while node.server.refused < 10:  # ten reconnects, each refused
                assert loop.time() < deadline, f"only {node.server.refused} refusals"
                with pytest.raises(Unreachable, match="refused the handshake: node 42 is not in the membership"):
                    await asyncio.wait_for(client.vote(VoteRequest(Vote.new(1, 42, False), None), option), 5)
                await asyncio.sleep(0.005)  # (calls within the back-off fail without connecting)
        finally:
            await refused.close()
    told = [r for r in caplog.records if r.getMessage().startswith("tcp client 42 -> node 1:")]
    assert len(told) == 1, [r.getMessage() for r in told]
    assert told[0].levelno == logging.WARNING
    assert "refused the handshake: node 42 is not in the membership" in told[0].getMessage()
