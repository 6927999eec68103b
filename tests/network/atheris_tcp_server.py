"""Coverage-guided fuzzing (atheris) of the TCP server's input path, without sockets.

Run by ``test_tcp_fuzz.py::test_atheris_server_input_path`` as a subprocess::

    python tests/network/atheris_tcp_server.py -runs=20000 -max_len=4096 <corpus dir>

Each input drives one server connection (``openraft_py.network._tcp_server._ServerConnection``) over
a fake transport: optionally a valid handshake first, then the input's bytes in up to four
chunks, then a few event-loop turns. The wire and TCP modules are instrumented, so atheris
mutates towards new branches of the framing, handshake, schema and dispatch code. A crash
is any exception escaping the protocol callbacks, or a broken invariant:

- a request delivered to the fake ``Raft`` has the real types and every term, index and
  node id within the validation limits, and names the handshake's sender as its leader;
- a connection that saw malformed input is aborted, and nothing more is delivered from it;
- the bytes the server buffers for the connection never exceed its frame limit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from openraft_py.network import _tcp_common, _tcp_server, wire  # noqa: F401 (instrumented)

from openraft_py.types import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogId,
    Membership,
    StoredMembership,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
    VoteResponse,
)
from openraft_py.validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM

SENDER = 3
MAX_FRAME = 8192
HELLO = bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "fz", SENDER)))


class _Metrics:
    id = 2
    membership_config = StoredMembership(LogId(1, 0), Membership.new([{1, 2, 3}]))


def _check_log_id(x: Any) -> None:
    if x is not None:
        assert type(x) is LogId and 0 <= x.term <= MAX_TERM and 0 <= x.index <= MAX_INDEX, x


def _check_vote(v: Any) -> None:
    assert type(v) is Vote
    assert 0 <= v.leader_id.term <= MAX_TERM and 0 <= v.leader_id.node_id <= MAX_NODE_ID, v
    assert v.leader_id.node_id == SENDER, v


class FakeRaft:
    """Checks every request it is handed; answers at once. A failed check is recorded in
    ``violations`` (the server would turn an exception into an error answer) and raised by
    ``test_one_input``."""

    metrics = _Metrics()

    def __init__(self) -> None:
        self.delivered = 0
        self.violations: list[BaseException] = []

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name in ("append_entries", "vote", "install_snapshot", "handle_transfer_leader"):
            violations = object.__getattribute__(self, "violations")

            async def checked(req: Any) -> Any:
                try:
                    return await attr(req)
                except AssertionError as e:
                    violations.append(e)
                    raise

            return checked
        return attr

    async def append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        assert type(req) is AppendEntriesRequest
        _check_vote(req.vote)
        _check_log_id(req.prev_log_id)
        _check_log_id(req.leader_commit)
        for e in req.entries:
            _check_log_id(e.log_id)
        self.delivered += 1
        return AppendEntriesResponse(req.vote, False, None, -1)

    async def vote(self, req: VoteRequest) -> VoteResponse:
        assert type(req) is VoteRequest
        _check_vote(req.vote)
        _check_log_id(req.last_log_id)
        self.delivered += 1
        return VoteResponse(req.vote, False, None)

    async def install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        assert type(req) is InstallSnapshotRequest
        _check_vote(req.vote)
        _check_log_id(req.meta.last_log_id)
        assert type(req.data) is bytes and 0 <= req.offset
        self.delivered += 1
        return InstallSnapshotResponse(req.vote)

    async def handle_transfer_leader(self, req: TransferLeaderRequest) -> None:
        assert type(req) is TransferLeaderRequest
        _check_vote(req.from_leader)
        assert 0 <= req.to <= MAX_NODE_ID
        self.delivered += 1


class FakeTransport:
    """Records what the server does to the connection."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 4242) if name == "peername" else default

    def write(self, data: bytes) -> None:
        assert not self.aborted
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return len(self.out)


raft = FakeRaft()
# Made by main(), not at import: the test imports this module (for ``seed``) in its own process.
loop: asyncio.AbstractEventLoop
server: _tcp_server.TcpServer


async def _make_server() -> _tcp_server.TcpServer:
    return _tcp_server.TcpServer._unbound(
        raft,
        "fz",
        None,
        node_id=2,
        max_frame_size=MAX_FRAME,
        max_inflight=4,
        max_connections=16,
        idle_timeout=60.0,
        handshake_timeout=60.0,
        drain_timeout=0.0,
    )



def _turns(n: int) -> None:
    for _ in range(n):
        loop.run_until_complete(asyncio.sleep(0))


def test_one_input(data: bytes) -> None:
    # Layout: byte 0 = flags (bit 0: handshake first; bits 1-2: how many cuts), then two
    # bytes (big-endian) per cut position, then the payload (see ``seed``).
    if not data:
        return
    flags = data[0]
    handshake = bool(flags & 1)
    ncuts = (flags >> 1) & 3
    head = 1 + 2 * ncuts
    cuts = sorted(int.from_bytes(data[1 + 2 * i : 3 + 2 * i], "big") for i in range(ncuts))
    payload = data[head:]
    t = FakeTransport()
    conn = _tcp_server._ServerConnection(server)
    conn.connection_made(t)  # type: ignore[arg-type]
    if handshake:
        conn.data_received(HELLO)
        assert conn.sender == SENDER and not t.aborted
    pos = 0
    for cut in [*cuts, len(payload)]:
        cut = min(max(cut, pos), len(payload))
        conn.data_received(payload[pos:cut])
        pos = cut
        limit = MAX_FRAME if conn.sender is not None else wire.MAX_HELLO_FRAME
        assert conn.reader.buffered() <= limit + 4, conn.reader.buffered()
    before, started = raft.delivered, len(conn.tasks)
    _turns(3)
    if t.aborted:
        # Malformed input: nothing waits, and only requests started before it ran.
        assert not conn.backlog and raft.delivered - before <= started
    if raft.violations:
        raise raft.violations[0]
    conn.connection_lost(None)
    _turns(2)
    assert not conn.tasks or all(task.done() for task in conn.tasks.values())


def seed(payload: bytes, *, handshake: bool, cuts: tuple[int, ...] = ()) -> bytes:
    """A corpus input in the layout ``test_one_input`` reads."""
    flags = int(handshake) | (len(cuts) << 1)
    return bytes([flags]) + b"".join(c.to_bytes(2, "big") for c in cuts) + payload


def main() -> None:
    global loop, server
    logging.getLogger("openraft_py").setLevel(logging.CRITICAL)  # one line per dropped input is noise here
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(_make_server())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
