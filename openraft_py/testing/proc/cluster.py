"""A cluster of node processes on loopback: the process-level test and benchmark harness.

Each node is ``python -m openraft_py.testing.proc.node`` (RocksDB stores, TCP transport)
driven over its stdin/stdout control channel (see that module for the operations)::

    async with ProcCluster(3) as c:               # ports and a temp dir picked, nothing started
        leader = await c.start()                  # start 1..3, initialize, wait for a leader
        r = await c.call(leader, "bulk", writers=8, count=1000)
        t_kill = c.kill(leader)                   # SIGKILL (pause/resume: SIGSTOP/SIGCONT)
        new, term = await c.wait_for_leader(min_term=c.term + 1, timeout=5)
        await c.restart(leader)                   # same port, same data dir
    # every process is killed and the temp dir removed here, even after a failure

Every wait is bounded (``timeout`` arguments; a node call defaults to 30 s). A node's stderr
goes to ``<root>/n<id>/node.log`` (appended across restarts), quoted in ``NodeExited``.
This is a harness for tests, ``bench/tcp.py`` and fault runners, not a deployment tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from ...errors import restore_error

__all__ = ["NodeCallError", "NodeExited", "NodeProcess", "ProcCluster", "free_port"]


class NodeCallError(Exception):
    """A node answered a control request with an error: ``error`` is the exception's class
    name on the node (``"ForwardToLeader"``, ``"WaitTimeout"`` ...), ``leader`` the leader it
    named for ``ForwardToLeader``."""

    def __init__(self, node_id: int, op: str, error: str, message: str, leader: int | None) -> None:
        super().__init__(f"n{node_id} {op}: {error}: {message}")
        self.node_id = node_id
        self.op = op
        self.error = error
        self.message = message
        self.leader = leader

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as its message and fields, without calling __init__ again (it
        # takes the fields, not the message): see openraft_py.errors.RaftError.
        return (restore_error, (type(self), self.args, self.__dict__))


class NodeExited(Exception):
    """The node process is gone (killed, crashed or never started); the message quotes the
    end of its log."""


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()
"""Every port ``free_port`` returned in this process."""

_PORTS_LOW = 20000
"""The lowest port ``free_port`` picks at random (the range ends below the ephemeral range)."""


def _worker_slice(low: int, high: int) -> tuple[int, int]:
    """The part of ports ``[low, high)`` this process picks from: under pytest-xdist
    (``PYTEST_XDIST_WORKER`` ``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``) worker N's own N-th
    slice, so that two workers never hand out the same port. ``_HANDED_OUT`` keeps one
    process from reusing a port, not another: a worker's node stopped and restarted on its
    port found it taken by a node the other worker had just been given it for ("Address
    already in use"). The whole range elsewhere, or when a slice would be under 500 ports."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        n = int(worker[2:]) if worker.startswith("gw") else -1
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    except ValueError:
        return low, high
    if not 0 <= n < count or (high - low) // count < 500:
        return low, high
    width = (high - low) // count
    return low + n * width, low + (n + 1) * width


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing is bound to right now, and that no earlier call in
    this process returned.

    Callers take several ports before binding any (a node's Raft and HTTP ports, a cluster's
    nodes'): two calls returned the same port now and then (one in about 12,000 pairs), and
    a node given it for both its ports refused to start ("the same port"), or two nodes
    raced for one. Picked at random below the kernel's ephemeral range (where outgoing
    connections take their local ports), so a node restarted on the same port does not find
    it taken by some connection's source port, and under pytest-xdist from this worker's own
    slice of it (``_worker_slice``); falls back to a port the OS picks."""
    import random

    low, high = _worker_slice(_PORTS_LOW, _ephemeral_low())
    for _ in range(50):
        port = random.randrange(low, high) if high > low + 1 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            got = int(s.getsockname()[1])
        if got not in _HANDED_OUT:
            _HANDED_OUT.add(got)
            return got
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            got = int(s.getsockname()[1])
        if got not in _HANDED_OUT:
            _HANDED_OUT.add(got)
            return got
    raise OSError(f"no free TCP port on {host} that this process was not given before")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class NodeProcess:
    """One running node process and its control channel."""

    def __init__(self, node_id: int, addr: str, data_dir: Path, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.node_id = node_id
        self.addr = addr
        self.data_dir = data_dir
        self.proc = proc
        self.log = log
        self.events: list[dict[str, Any]] = []
        """Every event line the node printed (``ready``, ``leader``), in order."""
        self._event_seen = asyncio.Event()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self._reader = asyncio.ensure_future(self._read())
        self.exited = False

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.proc.pid)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # a stray print; the protocol lines are JSON
                rid = msg.get("id")
                if "event" in msg:
                    self.events.append(msg)
                    self._event_seen.set()
                elif rid in self._pending:
                    fut = self._pending.pop(rid)
                    if not fut.done():
                        fut.set_result(msg)
        finally:
            self.exited = True
            self._event_seen.set()
            err = NodeExited(f"n{self.node_id} (pid {self.proc.pid}) exited; log tail:\n{_tail(self.log)}")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)
            self._pending.clear()

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Send ``op`` with ``args`` and return its ``result``. Raises ``NodeCallError`` for an
        error answer, ``NodeExited`` if the process is gone and ``TimeoutError`` after
        ``timeout`` seconds."""
        if self.exited:
            raise NodeExited(f"n{self.node_id} has exited; log tail:\n{_tail(self.log)}")
        self._next += 1
        rid = self._next
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
            await self.proc.stdin.drain()
            async with asyncio.timeout(timeout):
                msg = await fut
        except (BrokenPipeError, ConnectionResetError) as e:
            raise NodeExited(f"n{self.node_id}: control pipe closed ({e}); log tail:\n{_tail(self.log)}") from e
        finally:
            self._pending.pop(rid, None)
        if not msg.get("ok"):
            raise NodeCallError(self.node_id, op, msg.get("error", "?"), msg.get("message", ""), msg.get("leader"))
        return msg.get("result")

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event (past or future) satisfying ``pred``; ``TimeoutError`` after
        ``timeout`` seconds, ``NodeExited`` if the process ends first."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            if self.exited:
                raise NodeExited(f"n{self.node_id} exited while waiting for an event; log tail:\n{_tail(self.log)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"n{self.node_id}: no matching event within {timeout}s")
            self._event_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._event_seen.wait()

    def kill(self) -> None:
        """SIGKILL the process (no-op if it already exited)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end; its return code or ``None``.
        Then up to 2 s for the output reader to take the last lines (what it raised is
        raised). A caller cancelled meanwhile raises its ``CancelledError``, and the reader
        goes on."""
        try:
            async with asyncio.timeout(timeout):
                rc = await self.proc.wait()
        except TimeoutError:
            return None
        reader = self._reader
        # ``asyncio.wait``, not ``await reader`` under ``suppress(CancelledError)``: a reader
        # cancelled by ``_close_pipes`` raises nothing here, and a cancellation of the caller
        # is not taken for one (it was dropped: the caller went on as if not cancelled).
        await asyncio.wait({reader}, timeout=2.0)
        if reader.done() and not reader.cancelled():
            reader.result()
        return rc

    async def stop(self, timeout: float = 10.0) -> int | None:
        """Ask for a graceful shutdown; SIGKILL if it has not exited within ``timeout``."""
        if self.proc.returncode is None and not self.exited:
            with contextlib.suppress(Exception):
                await self.call("shutdown", timeout=timeout)
        rc = await self.wait_exit(timeout)
        if rc is None:
            self.kill()
            rc = await self.wait_exit(5.0)
        self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        if not self._reader.done():
            self._reader.cancel()


class ProcCluster:
    """``n`` node processes (ids ``1..n``) on loopback ports, in ``root`` (default: a new temp
    dir, removed by ``close()`` unless ``keep=True``).

    ``raft_config``: ``Config`` fields for every node; ``sync=False`` opens the log stores
    without fsync; ``state_machine="memory"`` runs each node on a ``MemStateMachine`` (no
    disk; see ``openraft_py.testing.proc.node``) instead of a ``RocksStateMachine``;
    ``events=False`` turns leadership events off (the benchmark);
    ``cluster_name`` is the TCP handshake's cluster name. Node ids above ``n`` can be
    started later (``start_node``) and added as learners. ``close()`` (or leaving ``async
    with``) stops every process (graceful, then SIGKILL) and removes the directory.
    """

    def __init__(
        self,
        n: int = 3,
        *,
        root: str | os.PathLike[str] | None = None,
        raft_config: dict[str, Any] | None = None,
        sync: bool = True,
        events: bool = True,
        cluster_name: str = "proc-cluster",
        state_machine: Literal["rocks", "memory"] = "rocks",
        keep: bool = False,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        if state_machine not in ("rocks", "memory"):
            raise ValueError(f"state_machine must be 'rocks' or 'memory', not {state_machine!r}")
        self.n = n
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="openraft-proc-")) if root is None else Path(root)
        self.raft_config = dict(raft_config or {})
        self.sync = sync
        self.events = events
        self.state_machine = state_machine
        self.cluster_name = cluster_name
        self.keep = keep
        self.env = {**os.environ, **(env or {})}
        self.python = python
        self.addrs: dict[int, str] = {}
        """Every node id's ``host:port`` (fixed for the cluster's life, kept across restarts)."""
        self.nodes: dict[int, NodeProcess] = {}
        """The node processes started last for each id (a killed one stays until restart)."""
        self.term = 0
        """The term of the last leader ``wait_for_leader`` found."""
        self.paused: set[int] = set()
        """Nodes stopped with ``pause`` (SIGSTOP) and not resumed yet."""
        for nid in range(1, n + 1):
            self.addr(nid)

    async def __aenter__(self) -> ProcCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def addr(self, node_id: int) -> str:
        """The address of ``node_id`` (a free loopback port is picked the first time)."""
        a = self.addrs.get(node_id)
        if a is None:
            used = {int(x.rsplit(":", 1)[1]) for x in self.addrs.values()}
            port = free_port()
            while port in used:
                port = free_port()
            a = self.addrs[node_id] = f"127.0.0.1:{port}"
        return a

    def data_dir(self, node_id: int) -> Path:
        """Where ``node_id`` keeps its stores and its log."""
        return self.root / f"n{node_id}"

    def node(self, node_id: int) -> NodeProcess:
        """The process of ``node_id`` (``KeyError`` if it was never started)."""
        return self.nodes[node_id]

    async def start_node(self, node_id: int, *, timeout: float = 30.0) -> NodeProcess:
        """Start ``node_id`` (again, from its data dir if it ran before) and wait until its
        TCP server listens. A previous process of that id must have exited (``kill``)."""
        old = self.nodes.get(node_id)
        if old is not None and old.proc.returncode is None:
            raise RuntimeError(f"n{node_id} is still running (pid {old.pid})")
        d = self.data_dir(node_id)
        d.mkdir(parents=True, exist_ok=True)
        peers = ",".join(f"{i}={self.addr(i)}" for i in range(1, self.n + 1))
        args = [
            self.python, "-m", "openraft_py.testing.proc.node",
            "--id", str(node_id), "--raft-addr", self.addr(node_id), "--data-dir", str(d),
            "--peers", peers, "--cluster-name", self.cluster_name,
            "--raft-config", json.dumps(self.raft_config),
        ]
        if not self.sync:
            args.append("--no-sync")
        if not self.events:
            args.append("--no-events")
        if self.state_machine != "rocks":
            args += ["--state-machine", self.state_machine]
        log = d / "node.log"
        with open(log, "ab") as err:
            err.write(f"--- start n{node_id} at {time.strftime('%H:%M:%S')} ---\n".encode())
            err.flush()
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                env=self.env, limit=64 * 1024 * 1024,
            )
        node = NodeProcess(node_id, self.addr(node_id), d, proc, log)
        self.nodes[node_id] = node
        try:
            await node.wait_event(lambda e: e.get("event") == "ready", timeout)
        except BaseException:
            node.kill()
            await node.wait_exit(5.0)
            raise
        return node

    async def start(self, *, initialize: bool = True, timeout: float = 30.0) -> int:
        """Start nodes ``1..n`` in parallel; with ``initialize``, initialize the cluster on
        node 1 with all of them as voters and return the elected leader's id (else 0)."""
        await asyncio.gather(*(self.start_node(i, timeout=timeout) for i in range(1, self.n + 1)))
        if not initialize:
            return 0
        await self.call(1, "initialize", timeout=timeout)
        leader, _ = await self.wait_for_leader(timeout=timeout)
        return leader

    async def call(self, node_id: int, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """``self.node(node_id).call(op, timeout, **args)``."""
        return await self.nodes[node_id].call(op, timeout=timeout, **args)

    def running(self) -> list[int]:
        """Ids of the nodes whose process is alive, ascending."""
        return sorted(i for i, p in self.nodes.items() if p.proc.returncode is None and not p.exited)

    async def metrics(self, ids: Iterable[int] | None = None, timeout: float = 10.0) -> dict[int, dict[str, Any]]:
        """The metrics of the running nodes (or of ``ids``); nodes that fail to answer are
        left out."""
        ids = list(ids) if ids is not None else self.running()
        got = await asyncio.gather(*(self.call(i, "metrics", timeout=timeout) for i in ids), return_exceptions=True)
        return {i: m for i, m in zip(ids, got) if isinstance(m, dict)}

    async def wait_for_leader(
        self, *, timeout: float = 10.0, min_term: int = 0, among: Iterable[int] | None = None
    ) -> tuple[int, int]:
        """Poll the running nodes (every 20 ms, for at most ``timeout`` s) until one reports
        itself leader of a term ``>= min_term`` and the others it reaches agree; returns
        ``(leader id, term)`` and records the term in ``self.term``. ``TimeoutError`` with
        the last metrics seen otherwise. ``among`` (default: the running nodes) is read once,
        when the wait starts (a generator too)."""
        wanted = None if among is None else list(among)
        deadline = time.monotonic() + timeout
        last: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            ids = list(wanted) if wanted is not None else self.running()
            last = await self.metrics(ids, timeout=max(0.5, deadline - time.monotonic()))
            leaders = [(m["term"], i) for i, m in last.items() if m["state"] == "Leader" and m["term"] >= min_term]
            if leaders:
                term, lid = max(leaders)
                if all(m["term"] < term or m["leader"] in (lid, None) for m in last.values()):
                    self.term = term
                    return lid, term
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no leader with term >= {min_term} within {timeout}s; last metrics: {last}")

    async def call_leader(self, op: str, timeout: float = 30.0, retries: int = 20, **args: Any) -> tuple[int, Any]:
        """Send ``op`` to the current leader, following ``ForwardToLeader`` (at most
        ``retries`` times, 50 ms apart when no leader is known). Returns ``(leader, result)``."""
        lid, _ = await self.wait_for_leader(timeout=timeout)
        for _ in range(retries):
            try:
                return lid, await self.call(lid, op, timeout=timeout, **args)
            except NodeCallError as e:
                if e.error != "ForwardToLeader":
                    raise
                if e.leader is not None and e.leader in self.running():
                    lid = e.leader
                else:
                    await asyncio.sleep(0.05)
                    lid, _ = await self.wait_for_leader(timeout=timeout)
        raise TimeoutError(f"{op}: no stable leader after {retries} redirects")

    def kill(self, node_id: int) -> float:
        """SIGKILL ``node_id``; returns ``time.monotonic()`` taken just before the signal (the
        nodes' ``leader`` events use the same clock)."""
        node = self.nodes[node_id]
        t = time.monotonic()
        os.kill(node.pid, signal.SIGKILL)
        return t

    def pause(self, node_id: int) -> None:
        """Freeze ``node_id`` with SIGSTOP (its sockets stay open, it answers nothing) until
        ``resume``; ``close()`` resumes it before stopping it."""
        os.kill(self.nodes[node_id].pid, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        """Let a paused node run again (SIGCONT)."""
        self.paused.discard(node_id)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.nodes[node_id].pid, signal.SIGCONT)

    async def wait_dead(self, node_id: int, timeout: float = 10.0) -> None:
        """Wait until ``node_id``'s process is reaped (after ``kill``)."""
        node = self.nodes[node_id]
        if await node.wait_exit(timeout) is None:
            raise TimeoutError(f"n{node_id} (pid {node.pid}) still alive after {timeout}s")
        node._close_pipes()

    async def restart(self, node_id: int, *, timeout: float = 30.0) -> NodeProcess:
        """Start ``node_id`` again on its data dir and address (killing it first if alive)."""
        node = self.nodes.get(node_id)
        if node is not None and node.proc.returncode is None:
            node.kill()
        self.paused.discard(node_id)
        if node is not None:
            await self.wait_dead(node_id)
        return await self.start_node(node_id, timeout=timeout)

    async def close(self) -> None:
        """Stop every node (graceful, bounded, then SIGKILL) and remove the temp dir, in a
        worker thread: the nodes' RocksDB files took the loop 0.15 s and more to remove
        (reported as a slow callback under asyncio's debug mode)."""
        for nid in list(self.paused):
            self.resume(nid)
        try:
            await asyncio.gather(*(p.stop(timeout=10.0) for p in self.nodes.values()), return_exceptions=True)
        finally:
            for p in self.nodes.values():
                p.kill()
                p._close_pipes()
            if self._own_root and not self.keep:
                await asyncio.to_thread(shutil.rmtree, self.root, ignore_errors=True)
