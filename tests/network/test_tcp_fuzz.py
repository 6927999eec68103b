"""Fuzzing a live node's raft port while its cluster commits.

A 3-node TCP cluster runs in a background thread (its own event loop: asyncio or uvloop)
with a writer committing all along. Hypothesis draws attacks on one node's port:

- random bytes as the first thing on a connection;
- a huge length prefix (before and after the handshake);
- a valid frame cut short (the hello, or a request after the handshake);
- valid frames with a few bytes mutated (the hello, or requests after the handshake).

For each attack the test predicts with the wire module what the server must do: close the
connection (anything malformed, oversized or out of protocol; a cut-short frame by the
handshake or idle timeout), or answer (well-formed requests: an error for one naming another
leader, the node's response otherwise). Every bad connection must be closed by the server
within a bound; afterwards the node still serves, the cluster committed during the attacks
and commits after them, the logs agree, and the memory the node holds stays bounded
(measured: the process RSS before and after, and the server's buffered bytes per
connection).
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openraft_py._core import CodecError, FrameReader
from openraft_py.network import wire
from openraft_py.types import (
    AppendEntriesRequest,
    Entry,
    InstallSnapshotRequest,
    LogId,
    Normal,
    TransferLeaderRequest,
    Vote,
    VoteRequest,
)

from .tcp_cluster import TcpCluster, steady_tcp_config, until
from .test_wire import META

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

pytestmark = pytest.mark.timeout(300)

MAX_FRAME = 256 * 1024
HANDSHAKE_TIMEOUT = 0.3
IDLE_TIMEOUT = 0.6
CLOSE_BOUND = 5.0  # seconds within which the server must close a bad connection
TARGET = 2  # the fuzzed node
SENDER = 3  # the member id the post-handshake attacks claim


def _rss() -> int:
    """The resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LiveCluster:
    """A ``TcpCluster`` running in a thread with a writer committing one write every few
    milliseconds; attacks run in its loop via ``run``."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop_factory = loop_factory
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cluster: TcpCluster | None = None
        self.stop: asyncio.Event | None = None
        self.written = 0
        self.error: BaseException | None = None
        self.term0 = 0
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def _thread(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.loop_factory) as runner:
                runner.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        kw = dict(max_frame_size=MAX_FRAME, handshake_timeout=HANDSHAKE_TIMEOUT, idle_timeout=IDLE_TIMEOUT)
        # 1-2 s election timeouts: the test checks that no fuzzed request moves the term,
        # and an election after a stall of the loaded machine's loop moved it as well.
        async with TcpCluster(steady_tcp_config(), server_kw=kw) as c:
            self.cluster = c
            await c.start([1, 2, 3])
            leader = await c.wait_for_leader(15)
            self.term0 = c.nodes[leader].raft.metrics.current_term  # type: ignore[union-attr]
            writer = asyncio.ensure_future(self._writer(c))
            self.ready.set()
            await self.stop.wait()
            await asyncio.wait_for(writer, 30)

    async def _writer(self, c: TcpCluster) -> None:
        assert self.stop is not None
        while not self.stop.is_set():
            await c.write(b"w%d" % self.written, timeout=20)
            self.written += 1
            await asyncio.sleep(0.005)  # a steady trickle: the log stays small for the RSS figure

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def shutdown(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive(), "the cluster thread did not stop"


def _loop_factories() -> list[Any]:
    out: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    if uvloop is not None:
        out.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return out


@pytest.fixture(scope="module", params=_loop_factories())
def live(request: pytest.FixtureRequest) -> Iterator[LiveCluster]:
    lc = LiveCluster(request.param)
    lc.thread.start()
    assert lc.ready.wait(60), "the cluster did not start"
    if lc.error is not None:
        raise lc.error
    yield lc
    lc.shutdown()
    if lc.error is not None:
        raise lc.error


# -- the attacks ------------------------------------------------------------------------------

VOTE = Vote.new(0, SENDER)  # term 0: stale for the live cluster, so a delivered request is refused by Raft


def _templates() -> list[bytes]:
    """Valid request frames from SENDER (stale term)."""
    reqs: list[tuple[int, Any]] = [
        (wire.KIND_VOTE, VoteRequest(VOTE, LogId(0, 3), True, None)),
        (
            wire.KIND_APPEND_ENTRIES,
            AppendEntriesRequest(VOTE, LogId(0, 1), [Entry(LogId(0, 2), Normal(b"abc" * 10))], LogId(0, 1)),
        ),
        (wire.KIND_INSTALL_SNAPSHOT, InstallSnapshotRequest(VOTE, META, 0, b"chunk" * 40, False)),
        (wire.KIND_TRANSFER_LEADER, TransferLeaderRequest(VOTE, 1, None)),
    ]
    return [bytes(wire.frame_message(k, 7 + i, r)) for i, (k, r) in enumerate(reqs)]


TEMPLATES = _templates()
HELLO_OK = bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "test-cluster", SENDER)))


class Attack:
    """What to send, whether to handshake first, and what the server must do."""

    def __init__(self, name: str, data: bytes, handshake: bool) -> None:
        self.name = name
        self.data = data
        self.handshake = handshake
        self.expect_answers, self.expect_close, self.skip = self._predict()

    def _predict(self) -> tuple[int, bool, bool]:
        """(answers before the end, whether the server closes, whether to skip: a
        well-formed request that Raft would take as real traffic)."""
        limit = MAX_FRAME if self.handshake else wire.MAX_HELLO_FRAME
        reader = FrameReader(limit)
        try:
            frames = reader.feed(self.data)
        except CodecError:
            return 0, True, False
        if not self.handshake:
            # Anything but a hello as the first frame is closed unanswered (by the handshake
            # timeout when incomplete). A hello that is refused (another version, even one
            # laid out otherwise, another cluster, an unknown node) is answered once, then
            # closed; an acceptable one would be taken: skip those (not an attack).
            if not frames:
                return 0, True, False
            try:
                kind, rid, body = wire.split_payload(frames[0])
            except wire.WireError:
                return 0, True, False
            if kind != wire.KIND_HELLO or rid != 0:
                return 0, True, False
            try:
                hello = wire.decode_body(kind, body)
            except wire.WireError:
                version = wire.hello_version(body)
                return int(version is not None and version not in wire.SUPPORTED_VERSIONS), True, False
            ok = (
                hello.version in wire.SUPPORTED_VERSIONS
                and hello.cluster_name == "test-cluster"
                and hello.node_id in (1, 2, 3)
            )
            return 1, True, ok
        answers = 0
        for payload in frames:
            try:
                kind, rid, body = wire.split_payload(payload)
                if kind not in (wire.KIND_APPEND_ENTRIES, wire.KIND_VOTE, wire.KIND_INSTALL_SNAPSHOT, wire.KIND_TRANSFER_LEADER) or rid == 0:
                    return answers, True, False
                req = wire.decode_body(kind, body)
            except wire.WireError:
                return answers, True, False
            vote = req.from_leader if kind == wire.KIND_TRANSFER_LEADER else req.vote
            if vote.leader_id.node_id == SENDER and vote.leader_id.term > 0:
                return answers, False, True  # would be real traffic from node 3: not an attack
            answers += 1
        return answers, bool(reader.buffered()), False


def _mutate(data: bytes, draw: st.DrawFn, lo: int) -> bytes:
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(lo, len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    return bytes(b)


@st.composite
def attacks(draw: st.DrawFn) -> Attack:
    which = draw(st.sampled_from(["random", "huge", "huge-after", "cut-hello", "cut-after", "mut-hello", "mut-after"]))
    if which == "random":
        return Attack(which, draw(st.binary(min_size=1, max_size=3000)), False)
    if which == "huge":
        n = draw(st.integers(wire.MAX_HELLO_FRAME + 1, 2**32 - 1))
        return Attack(which, struct.pack(">I", n) + draw(st.binary(max_size=64)), False)
    if which == "huge-after":
        n = draw(st.integers(MAX_FRAME + 1, 2**32 - 1))
        return Attack(which, struct.pack(">I", n) + draw(st.binary(max_size=64)), True)
    if which == "cut-hello":
        return Attack(which, HELLO_OK[: draw(st.integers(1, len(HELLO_OK) - 1))], False)
    if which == "cut-after":
        t = draw(st.sampled_from(TEMPLATES))
        return Attack(which, t[: draw(st.integers(1, len(t) - 1))], True)
    if which == "mut-hello":
        return Attack(which, _mutate(HELLO_OK, draw, 0), False)
    frames = draw(st.lists(st.sampled_from(TEMPLATES), min_size=1, max_size=3))
    stream = b"".join(frames)
    return Attack(which, _mutate(stream, draw, 0), True)


async def _perform(lc: LiveCluster, a: Attack) -> dict[str, Any]:
    """Run one attack on TARGET; returns what happened."""
    c = lc.cluster
    assert c is not None
    node = c.nodes[TARGET]
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"answers": 0, "closed": False}
    try:
        if a.handshake:
            writer.write(HELLO_OK)
            head = await asyncio.wait_for(reader.readexactly(4), CLOSE_BOUND)
            payload = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), CLOSE_BOUND)
            assert wire.split_payload(payload)[0] == wire.KIND_HELLO_ACK
        writer.write(a.data)
        fr = FrameReader(1 << 20)
        deadline = loop.time() + CLOSE_BOUND
        t0 = loop.time()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not a.expect_close and out["answers"] >= a.expect_answers:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except TimeoutError:
                break
            if not chunk:
                out["closed"] = True
                out["close_after"] = loop.time() - t0
                break
            out["answers"] += len(fr.feed(chunk))
        if not a.expect_close and not out["closed"]:
            # An answered, well-formed exchange: the connection is still usable.
            out["still_open"] = not reader.at_eof()
    finally:
        writer.close()
    return out


def test_fuzz_the_raft_port_while_committing(live: LiveCluster) -> None:
    """Hypothesis attacks on the live node, then: the node serves a well-behaved peer, the
    cluster committed all along and commits now, the logs agree, the term did not move."""
    seen: dict[str, int] = {}

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(a=attacks())
    def attack(a: Attack) -> None:
        if a.skip:
            return
        seen[a.name] = seen.get(a.name, 0) + 1
        res = live.run(_perform(live, a))
        if a.expect_close:
            assert res["closed"], f"{a.name}: the server kept a bad connection open: {a.data[:64]!r}"
            assert res["answers"] <= a.expect_answers
        else:
            assert res["answers"] == a.expect_answers and not res["closed"], (a.name, res)

    written0 = live.written
    rss0 = _rss()
    attack()
    rss1 = _rss()
    assert live.written > written0, "nothing committed during the attacks"

    async def check() -> dict[str, Any]:
        c = live.cluster
        assert c is not None
        node = c.nodes[TARGET]
        assert node.server is not None
        before = live.written
        await until(lambda: live.written > before, "the cluster stopped committing", 10)
        last = await c.write(b"final")
        await c.wait_applied(last.index, 15)
        logs = [n.disk.applied_log for n in c.nodes.values()]
        assert logs[0] == logs[1] == logs[2]
        # A fresh, well-behaved connection to the fuzzed node is answered.
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(HELLO_OK)
        head = await asyncio.wait_for(reader.readexactly(4), 5)
        ack = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), 5)
        writer.write(TEMPLATES[0])
        head = await asyncio.wait_for(reader.readexactly(4), 5)
        resp = await asyncio.wait_for(reader.readexactly(int.from_bytes(head, "big")), 5)
        writer.close()
        kind, rid, body = wire.split_payload(resp)
        return {
            "ack": wire.split_payload(ack)[0],
            "resp": (kind, rid, wire.decode_body(kind, body).vote_granted),
            "dropped": node.server.dropped,
            "refused": node.server.refused,
            "written": live.written,
            "term": node.raft.metrics.current_term,  # type: ignore[union-attr]
        }

    out = live.run(check())
    assert out["ack"] == wire.KIND_HELLO_ACK
    assert out["resp"] == (wire.KIND_VOTE_RESP, 7, False)  # a stale vote request, refused by Raft
    assert out["dropped"] > 0
    assert out["term"] == live.term0, "a fuzzed request disturbed the cluster's term"
    assert rss1 - rss0 < 64 * 1024 * 1024
    print(
        f"\nfuzz: attacks {dict(sorted(seen.items()))}; {out['written'] - written0} writes committed meanwhile; "
        f"{out['dropped']} connections dropped, {out['refused']} refused; "
        f"RSS {rss0 >> 20} -> {rss1 >> 20} MiB"
    )


def test_memory_per_connection_is_bounded(live: LiveCluster) -> None:
    """Many connections each holding a frame just under the limit: the node buffers at most
    about ``max_frame_size`` per handshaken connection and ``MAX_HELLO_FRAME`` per other
    one, and frees it all when they go. Reports the RSS figures."""
    n_after, n_before = 8, 32

    async def flood() -> dict[str, int]:
        c = live.cluster
        assert c is not None
        srv = c.nodes[TARGET].server
        assert srv is not None
        gc.collect()
        rss0 = _rss()
        conns = []
        for _ in range(n_after):
            r, w = await asyncio.open_connection("127.0.0.1", c.nodes[TARGET].port)
            w.write(HELLO_OK)
            head = await asyncio.wait_for(r.readexactly(4), 5)
            await asyncio.wait_for(r.readexactly(int.from_bytes(head, "big")), 5)
            # A frame of exactly MAX_FRAME bytes announced; all but one byte sent.
            w.write(struct.pack(">I", MAX_FRAME) + os.urandom(MAX_FRAME - 1))
            conns.append((r, w))
        for _ in range(n_before):
            r, w = await asyncio.open_connection("127.0.0.1", c.nodes[TARGET].port)
            w.write(struct.pack(">I", wire.MAX_HELLO_FRAME) + b"\x01" * (wire.MAX_HELLO_FRAME - 1))
            conns.append((r, w))
        await asyncio.sleep(0.15)  # let the server read what was sent (well within the timeouts)
        buffered = sum(conn.reader.buffered() for conn in srv._conns)
        per_conn = max(conn.reader.buffered() for conn in srv._conns)
        rss_peak = _rss()
        # Everything is closed by the idle / handshake timeouts.
        for r, _ in conns:
            assert await asyncio.wait_for(r.read(), CLOSE_BOUND) == b""
        for _, w in conns:
            w.close()
        gc.collect()
        await asyncio.sleep(0.1)
        return {"rss0": rss0, "rss_peak": rss_peak, "rss1": _rss(), "buffered": buffered, "per_conn": per_conn}

    out = live.run(flood(), timeout=60)
    bound = n_after * (MAX_FRAME + 4) + n_before * (wire.MAX_HELLO_FRAME + 4)
    assert out["per_conn"] <= MAX_FRAME + 4
    assert out["buffered"] <= bound
    print(
        f"\nmemory: server buffered {out['buffered']} bytes over {n_after + n_before} connections "
        f"(bound {bound}); RSS before {out['rss0'] >> 20} MiB, during {out['rss_peak'] >> 20} MiB, "
        f"after {out['rss1'] >> 20} MiB"
    )
    # The RSS after the flood is within a generous margin of before (allocator slack, the
    # cluster's own growing log).
    assert out["rss1"] - out["rss0"] < 64 * 1024 * 1024


# -- coverage-guided: atheris over the server's input path ----------------------------------------


def test_atheris_server_input_path(tmp_path: Any) -> None:
    """Runs ``atheris_tcp_server.py`` (coverage-guided, no sockets) for a bounded number of
    inputs from a corpus of valid frames; any crash or broken invariant fails the run."""
    pytest.importorskip("atheris")
    import subprocess
    import sys
    from pathlib import Path

    harness = Path(__file__).with_name("atheris_tcp_server.py")
    sys.path.insert(0, str(harness.parent))
    try:
        import atheris_tcp_server as h  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(harness.parent))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    hello = bytes(wire.frame_message(wire.KIND_HELLO, 0, wire.Hello(wire.PROTOCOL_VERSION, "fz", SENDER)))
    seeds = [h.seed(hello, handshake=False), h.seed(hello[:7], handshake=False, cuts=(3,))]
    for i, t in enumerate(TEMPLATES):
        seeds.append(h.seed(t, handshake=True))
        seeds.append(h.seed(t + TEMPLATES[(i + 1) % len(TEMPLATES)], handshake=True, cuts=(5, len(t))))
    for i, s in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(s)
    runs = 20_000
    proc = subprocess.run(
        [sys.executable, str(harness), f"-runs={runs}", "-max_len=4096", "-seed=1", str(corpus)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert f"Done {runs} runs" in tail, tail
    cov = [line for line in tail.splitlines() if "DONE" in line]
    print("\natheris:", cov[-1] if cov else tail[-300:])
