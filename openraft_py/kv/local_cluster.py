"""A local cluster of ``openraft-py serve`` processes on loopback: ``cluster up`` and ``demo``.

::

    cluster = LocalCluster(3)                  # ports picked, a temporary root; nothing runs yet
    try:
        await cluster.start()                  # spawn n1..n3, wait for their HTTP APIs
        await cluster.init()                   # POST /cluster/init to n1 with every node
        leader = await cluster.wait_leader()   # every running node agrees on a leader
        cluster.kill(leader)                   # SIGKILL
        await cluster.start_node(leader)       # the same arguments: back from its data dir
        cluster.add_node()                     # one more (not started), e.g. a learner to be
    finally:
        cluster.close()                        # SIGTERM (then SIGKILL) all, remove the temp root

Each node is ``python -m openraft_py.kv serve --id I --raft-addr 127.0.0.1:P --http-addr
127.0.0.1:Q --data-dir ROOT/nI`` with its stderr appended to ``ROOT/nI.log`` (quoted when a
node fails to start). ``ROOT/cluster.json`` records every node's addresses, so a cluster
started again on the same root (``cluster up --data-dir``) comes back on the same ports. Processes run in their own session (a Ctrl-C on the terminal reaches
only the parent, which stops them in order) and, on Linux, get SIGTERM if the parent dies.
Every wait is bounded. This is a development tool: one machine, loopback, no TLS.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cli import one_line
from ..storage.rocks.files import read_regular_file
from ..testing.proc_cluster import free_port
from .client import ClientError, KvClient
from .nodes import check_member_addr

__all__ = [
    "LocalNode", "LocalCluster", "ClusterError", "check_host", "check_root", "check_settings", "recorded_nodes",
    "LOCK_FILE",
]

LOCK_FILE = "cluster.lock"
"""The file in a local cluster's root that one ``LocalCluster`` at a time holds locked."""


def check_host(host: str) -> str:
    """``host`` as it goes into a node's ``"host:port"`` address (an IPv6 address in
    brackets); ``ClusterError`` unless other nodes and clients can connect to it (the
    addresses go into the membership: a wildcard such as ``0.0.0.0`` cannot be used)."""
    addr_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    try:
        check_member_addr(f"{addr_host}:1", "host")
    except ValueError:
        raise ClusterError(f"--host {host!r} is not an address the nodes and clients can connect to "
                           "(a host name or an IP address, not a wildcard such as 0.0.0.0)") from None
    return addr_host


def check_settings(cluster_name: str, raft_config: dict[str, Any], max_body: int | None, log_level: str) -> None:
    """``ValueError`` naming the ``serve`` flag unless every node can run with these settings
    (``TypeError`` for a wrong type): ``cluster_name`` as ``argtypes.check_cluster_name``,
    ``raft_config`` and ``max_body`` (``None``: serve's default) as
    ``server.check_raft_flags``, ``log_level`` one of ``server.LOG_LEVELS`` in any case (as
    ``serve --log-level`` takes it: "debug" was refused here, and ran before)."""
    from .argtypes import check_cluster_name
    from .node import DEFAULT_MAX_BODY
    from .server import LOG_LEVELS, check_raft_flags

    if not isinstance(cluster_name, str):
        raise TypeError(f"--cluster-name is a str, got {type(cluster_name).__name__}")
    try:
        check_cluster_name(cluster_name)
    except ValueError as e:
        raise ValueError(f"--cluster-name: {e}") from None
    check_raft_flags(raft_config, cluster_name, DEFAULT_MAX_BODY if max_body is None else max_body)
    if not isinstance(log_level, str):
        raise TypeError(f"--log-level is a str, got {type(log_level).__name__}")
    if log_level.upper() not in LOG_LEVELS:  # in any case, as serve's flag takes it
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")


class ClusterError(Exception):
    """The local cluster could not do what was asked (a node did not start, no leader was
    elected in time ...); the message says which node and quotes its log."""


def check_root(root: Path) -> None:
    """``ClusterError`` unless ``root`` can hold a local cluster: a new or empty directory,
    or one a local cluster used before. Refused, before anything is made: a ``serve`` node's
    own data directory (it holds ``node.json`` or a store: the cluster's ``cluster.json``,
    ``cluster.lock``, ``nI/`` and ``nI.log`` went into it, and stayed), and a directory whose
    ``nI`` hold nodes' data that no ``cluster.json`` there records (``serve`` nodes of a
    cluster of their own, or a record removed: new ports were picked and recorded for them,
    other than those their membership names, and their start appended to ``nI.log``)."""
    from .identity import IDENTITY_FILE, LOG_DIR, SM_DIR

    if not root.is_dir():
        return  # new (made later), or a file: the mkdir says so
    # (``lexists``: a record that is a link to nothing is a record all the same, as ``serve``
    # and ``force-recover`` take it.)
    held = [name for name in (IDENTITY_FILE, LOG_DIR, SM_DIR, "CURRENT") if os.path.lexists(root / name)]
    if held:
        raise ClusterError(
            f"--data-dir {root} is a node's data directory (it holds {', '.join(held)}): a local cluster keeps "
            "each of its nodes in a directory of its own under it (DIR/n1, DIR/n2, ...): give it a directory of "
            "its own")
    if (root / "cluster.json").exists():
        return
    nodes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[:1] == "n" and p.name[1:].isdigit()
                   and os.path.lexists(p / IDENTITY_FILE))
    if nodes:
        raise ClusterError(
            f"--data-dir {root}: {', '.join(nodes)} hold nodes' data, but {root} has no cluster.json recording "
            "their addresses (no local cluster made it, or its record was removed): started on new ports, the "
            "nodes would not be where their membership says; give the local cluster a directory of its own")


def recorded_nodes(root: Path) -> dict[str, dict[str, str]]:
    """The nodes ``root/cluster.json`` records: ``{"2": {"raft_addr": ..., "http_addr": ...}}``
    (empty when there is no such file). ``ClusterError`` naming the file when it is there but
    is no readable record (it is written without an fsync: a power loss may leave it empty or
    cut short): it was taken for no record, new ports were picked and written over it (the
    addresses the nodes' membership names were lost), and the start failed later, blaming
    "a node added elsewhere"."""
    path = root / "cluster.json"
    try:
        doc = json.loads(read_regular_file(path))  # (a named pipe there is refused, never waited on)
        nodes = doc["nodes"]
        out = {}
        for k, v in nodes.items():
            if not (isinstance(k, str) and k.isdigit() and k.isascii()):
                raise ValueError(f"{k!r} is not a node id")
            out[k] = {f: check_member_addr(v[f], f"node {k}'s {f}") for f in ("raft_addr", "http_addr")}
        return out
    except FileNotFoundError:
        return {}
    except OSError as e:
        why = e.strerror or str(e)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        why = f"{type(e).__name__}: {e}" if isinstance(e, KeyError) else str(e)
    raise ClusterError(
        f"{path} is not a readable record of the local cluster's nodes ({one_line(why)}): it records each node's "
        "addresses, which their membership names; restore it, or write it again: {\"nodes\": {\"1\": {\"raft_addr\": "
        "\"H:P\", \"http_addr\": \"H:P\"}, ...}} (each node's log, nI.log, says where it served: \"serving: raft H:P, "
        "http H:P\")")


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines)


def _prctl() -> Any:
    """libc's ``prctl``, looked up in the parent (a forked child must not call dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _parent_death_sigterm() -> None:  # pragma: no cover - runs in the child before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` (a graceful stop), then SIGCONT it. A node stopped with SIGSTOP (``kill
    -STOP`` to try a pause, a debugger) acts on no signal but SIGKILL until it runs again: it
    sat out the whole grace of ``stop`` or ``close`` (10 s) and was then SIGKILLed. Continued
    with the SIGTERM pending, it stops gracefully at once. A running node ignores the SIGCONT;
    one that has exited meanwhile is not signalled (``Popen.send_signal``)."""
    try:
        proc.terminate()
        proc.send_signal(signal.SIGCONT)
    except OSError:
        pass


@dataclass
class LocalNode:
    """One node of a ``LocalCluster``: its id, addresses, data directory, log file and, while
    started, its process. Invariant: the ports stay the same across restarts."""

    id: int
    raft_addr: str
    http_addr: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_args: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def args(self, python: str) -> list[str]:
        """The command line that runs this node."""
        return [python, "-m", "openraft_py.kv", "serve", "--id", str(self.id), "--raft-addr", self.raft_addr,
                "--http-addr", self.http_addr, "--data-dir", str(self.data_dir), *self.extra_args]


class LocalCluster:
    """``n`` service nodes (ids ``1..n``) on loopback ports, their data under ``root`` (a new
    temporary directory, removed by ``close()``, when ``root`` is ``None``; a given root is
    kept). The nodes listen on ``host``: ``None`` is 127.0.0.1, or for a root used before the
    host its ``cluster.json`` recorded (its nodes come back at their recorded addresses, which
    the membership names); another host than the recorded one is refused (``ClusterError``),
    as it cannot move them. ``cluster_name``, ``raft_config`` (``Config`` fields),
    ``log_level`` and ``max_body`` (``None``: serve's default) are passed to every ``serve``;
    ``python`` is the interpreter that runs them.

    The arguments are checked as ``serve`` and ``cluster up`` check them before anything is
    made (``check_settings``): ``ValueError`` (``TypeError`` for a wrong type) with the same
    message, where a bad ``raft_config`` or ``max_body`` surfaced later, as a node that did
    not start, quoting its log."""

    def __init__(
        self,
        n: int,
        *,
        root: str | os.PathLike[str] | None = None,
        host: str | None = None,
        cluster_name: str = "openraft-py",
        raft_config: dict[str, Any] | None = None,
        log_level: str = "INFO",
        python: str = sys.executable,
        max_body: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster has at least one node")
        check_settings(cluster_name, raft_config or {}, max_body, log_level)
        if host is not None:
            check_host(host)
        self._own_root = root is None
        if root is not None:
            check_root(Path(root))
        self.root = Path(tempfile.mkdtemp(prefix="openraft-py-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._lock_root()
        try:
            host = self._host_for(host)
        except ClusterError:
            os.close(self._lock)
            raise
        self._addr_host = check_host(host)
        self.host = host
        self.cluster_name = cluster_name
        self.raft_config = dict(raft_config or {})
        self.log_level = log_level
        self.max_body = max_body
        self.python = python
        self.nodes: dict[int, LocalNode] = {}
        # Invariant: the nodes ``add_node`` gave fresh ports (``cluster.json`` recorded none
        # for them), each with what of it (its data directory, its log) was not there
        # then: what ``forget_new`` removes.
        self._new: dict[int, list[Path]] = {}
        self._client: KvClient | None = None
        # Clients replaced while other coroutines may still be using them (``start_node``'s
        # retry on new ports): closed by ``aclose``, never while a start is under way.
        self._retired: list[KvClient] = []
        self._closed = False
        try:
            for _ in range(n):
                self.add_node()
        except ClusterError:  # (the record could not be written: ``_record`` names it)
            self.close()
            raise
        except OSError as e:
            self.close()
            raise ClusterError(f"cannot listen on {host}: {e.strerror or e}") from None

    def _lock_root(self) -> int:
        """Hold ``root/cluster.lock`` (``flock``, released when the process ends, however it
        ends): ``ClusterError`` while another local cluster holds it. Its nodes would
        otherwise start on the recorded ports, where that cluster's nodes answer: this one
        took them for its own and reported itself ready while its own nodes exited."""
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClusterError(f"{self.root} is in use by another local cluster ({path} is locked): stop "
                               "it first, or use another data directory") from None
        return fd

    def _host_for(self, host: str | None) -> str:
        """The host the nodes listen on: ``host``, or 127.0.0.1 when it is ``None``; for a root
        whose ``cluster.json`` recorded its nodes' addresses, their host (``host`` given and
        another one: ``ClusterError``: the nodes come back at their recorded addresses, which
        the membership names, so a ``--host`` given there went unheeded, the nodes listening
        where they did before)."""
        recorded = {addr.rsplit(":", 1)[0] for node in self._recorded().values() for addr in node.values()}
        if not recorded:
            return "127.0.0.1" if host is None else host
        if len(recorded) == 1:
            (at,) = recorded
            if host is None or check_host(host) == at:
                return at[1:-1] if at.startswith("[") else at
        elif host is None:
            return "127.0.0.1"
        raise ClusterError(
            f"--host {host}: {self.root} holds a cluster whose nodes were recorded at {', '.join(sorted(recorded))} "
            f"({self.root / 'cluster.json'}); they come back at those addresses, which their membership names, "
            "so another host cannot be given to them: leave --host out, or use another --data-dir")

    # -- nodes -------------------------------------------------------------------------------------

    def add_node(self, node_id: int | None = None) -> LocalNode:
        """Register one more node (default id: the largest + 1); not started. Its ports are
        the ones ``root/cluster.json`` recorded for it (a root used before: the membership
        names those addresses; also when the node's directory is gone: it comes back empty
        and catches up before it votes, ``kv/rejoin.py``), else fresh ones, then recorded there."""
        nid = node_id if node_id is not None else max(self.nodes, default=0) + 1
        if nid in self.nodes:
            raise ValueError(f"node {nid} exists already")
        extra = ["--cluster-name", self.cluster_name, "--log-level", self.log_level]
        if self.raft_config:
            extra += ["--raft-config", json.dumps(self.raft_config)]
        if self.max_body is not None:
            extra += ["--max-body", str(self.max_body)]
        known = self._recorded().get(str(nid))
        if known is not None:
            raft, http = known["raft_addr"], known["http_addr"]
        else:
            raft, http = f"{self._addr_host}:{free_port(self.host)}", f"{self._addr_host}:{free_port(self.host)}"
        node = LocalNode(nid, raft, http, self.root / f"n{nid}", self.root / f"n{nid}.log", extra_args=extra)
        self.nodes[nid] = node
        if known is None:
            self._new[nid] = [p for p in (node.data_dir, node.log) if not os.path.lexists(p)]
        self._record()
        return node

    def forget_new(self, ids: Sequence[int], timeout: float = 10.0) -> list[int]:
        """Undo what this cluster made for those of ``ids`` it gave fresh ports (``add_node``:
        ``cluster.json`` recorded none for them): stop each (``stop``), take it out of
        ``nodes`` and of ``cluster.json``, and remove its data directory and its log if this
        cluster made them. The others of ``ids`` (nodes of a root used before) are left as
        they are. Returns the ids forgotten. (``cluster up -n 5`` over a root of three nodes
        is refused, and left n4 and n5, their ports, directories and logs, recorded as nodes
        of the root: a later ``cluster up`` started them on those ports, other than those a
        ``cluster add-learner`` had given them.) Blocking."""
        gone = [i for i in ids if i in self._new and i in self.nodes]
        for nid in gone:
            self.stop(nid, timeout)
        recorded = self._recorded()
        for nid in gone:
            del self.nodes[nid]
            recorded.pop(str(nid), None)
        if gone:
            self._write_record(recorded)
        for nid in gone:
            for path in self._new.pop(nid):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    path.unlink(missing_ok=True)
        return gone

    def _recorded(self) -> dict[str, dict[str, str]]:
        return recorded_nodes(self.root)

    def _record(self) -> None:
        self._write_record({**self._recorded(), **{str(n.id): {"raft_addr": n.raft_addr, "http_addr": n.http_addr}
                                                    for n in self.nodes.values()}})

    def _write_record(self, nodes: dict[str, dict[str, str]]) -> None:
        """Replace ``cluster.json`` with the record of ``nodes`` (written aside, then renamed)."""
        tmp = self.root / "cluster.json.tmp"
        try:
            tmp.write_text(json.dumps({"nodes": nodes}, indent=1, sort_keys=True))
            tmp.replace(self.root / "cluster.json")
        except OSError as e:  # (it was "cannot listen on 127.0.0.1: ...", naming no file)
            at = f" ({e.filename})" if e.filename and os.fspath(e.filename) != str(self.root / "cluster.json") else ""
            raise ClusterError(f"cannot write {self.root / 'cluster.json'}{at}: {e.strerror or e}") from None

    @property
    def client(self) -> KvClient:
        """A ``KvClient`` of every node's HTTP address (opened on first use)."""
        if self._client is None:
            self._client = KvClient([n.http_addr for n in self.nodes.values()])
        return self._client

    def endpoints(self, ids: Sequence[int] | None = None) -> list[str]:
        """The HTTP addresses of ``ids`` (default: every node)."""
        return [self.nodes[i].http_addr for i in (ids if ids is not None else sorted(self.nodes))]

    def members(self, ids: Sequence[int] | None = None) -> dict[int, tuple[str, str]]:
        """``{id: (raft_addr, http_addr)}`` of ``ids`` (default: every node)."""
        return {i: (self.nodes[i].raft_addr, self.nodes[i].http_addr)
                for i in (ids if ids is not None else sorted(self.nodes))}

    def spawn(self, node_id: int) -> LocalNode:
        """Start ``node_id``'s process (again, with the same arguments, after it exited);
        does not wait for it to serve."""
        node = self.nodes[node_id]
        if node.proc is not None and node.running:
            raise ClusterError(f"n{node_id} is running already (pid {node.proc.pid})")
        node.data_dir.mkdir(parents=True, exist_ok=True)
        with open(node.log, "ab") as err:
            err.write(f"--- start n{node_id} at {time.strftime('%H:%M:%S')} ---\n".encode())
            err.flush()
            node.proc = subprocess.Popen(
                node.args(self.python), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,
                preexec_fn=_parent_death_sigterm if _PRCTL is not None else None,
            )
        node.starts += 1
        return node

    async def wait_serving(self, node_id: int, timeout: float = 30.0) -> None:
        """Until ``node_id`` answers ``GET /cluster/status``; ``ClusterError`` (quoting its
        log) if its process exits or ``timeout`` passes first."""
        node = self.nodes[node_id]
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if node.proc is None or node.proc.poll() is not None:
                code = None if node.proc is None else node.proc.returncode
                raise ClusterError(f"n{node_id} exited with code {code} while starting; "
                                   f"the end of {node.log}:\n{_tail(node.log)}")
            try:
                await self.client.status(node.http_addr, timeout=1.0)
                return
            except ClientError:
                pass
            if loop.time() >= end:
                raise ClusterError(f"n{node_id} did not serve HTTP at {node.http_addr} within {timeout:g}s; "
                                   f"the end of {node.log}:\n{_tail(node.log)}")
            await asyncio.sleep(0.05)

    async def start_node(self, node_id: int, timeout: float = 30.0) -> LocalNode:
        """``spawn`` then ``wait_serving``. A first start whose ports were taken meanwhile is
        retried on new ports."""
        node = self.nodes[node_id]
        first = node.starts == 0
        for attempt in range(3):
            self.spawn(node_id)
            try:
                await self.wait_serving(node_id, timeout)
                return node
            except ClusterError:
                # The server logs the OSError of its bind: "[Errno 98] ... address already in
                # use" (asyncio lower-cases the strerror), "Address already in use" elsewhere.
                port_taken = "address already in use" in _tail(node.log, 40).lower()
                if not (first and port_taken and attempt < 2 and not node.running):
                    raise
            node.raft_addr = f"{self._addr_host}:{free_port(self.host)}"
            node.http_addr = f"{self._addr_host}:{free_port(self.host)}"
            self._record()
            # A new client for the new addresses; the old one is only retired: the other
            # nodes' ``wait_serving`` (``start`` runs them at once) may be inside a call on it,
            # and closing it here failed them with "the KvClient is closed" (``make run``
            # stopped at its start when one port was taken).
            if self._client is not None:
                self._retired.append(self._client)
                self._client = None
        raise AssertionError("unreachable")

    async def start(self, ids: Sequence[int] | None = None, timeout: float = 30.0) -> None:
        """Start ``ids`` (default: every node) in parallel and wait until each serves."""
        await asyncio.gather(*(self.start_node(i, timeout) for i in (ids if ids is not None else sorted(self.nodes))))

    async def init(self, ids: Sequence[int] | None = None, timeout: float = 10.0) -> None:
        """Initialize the cluster with ``ids`` (default: every node) as voters, through the
        first one's ``POST /cluster/init``, and on through the next one of ``ids`` in turn
        when one refused having done nothing (stopped or stopping: ``KvClient.init``'s
        ``next_endpoints``, as ``openraft-py cluster init`` does); ``ClusterError`` naming
        every refusal when none took it. (It went to the first only: a first node stopped
        failed the init the others could take.)"""
        ids = list(ids if ids is not None else sorted(self.nodes))
        addrs = [self.nodes[i].http_addr for i in ids]
        r = await self.client.init(self.members(ids), endpoint=addrs[0], next_endpoints=addrs[1:], deadline=timeout,
                                   attempt_timeout=timeout)
        if not r.ok or r.status != 200:
            raise ClusterError(f"init through {', '.join(f'n{i}' for i in ids)} failed: {r.error}")

    async def statuses(self, ids: Sequence[int] | None = None, timeout: float = 2.0) -> dict[int, dict[str, Any]]:
        """``GET /cluster/status`` of each running node of ``ids`` that answers."""
        ids = [i for i in (ids if ids is not None else sorted(self.nodes)) if self.nodes[i].running]

        async def one(i: int) -> tuple[int, dict[str, Any] | None]:
            try:
                return i, await self.client.status(self.nodes[i].http_addr, timeout=timeout)
            except ClientError:
                return i, None

        return {i: st for i, st in await asyncio.gather(*(one(i) for i in ids)) if st is not None}

    async def wait_leader(self, ids: Sequence[int] | None = None, *, min_term: int = 0, timeout: float = 10.0,
                          poll: float = 0.02) -> tuple[int, int]:
        """``(leader_id, term)`` once every running node of ``ids`` (default: all) answers,
        names the same leader in a term ``>= min_term``, and that leader says it leads."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        seen: dict[int, dict[str, Any]] = {}
        while True:
            want = [i for i in (ids if ids is not None else sorted(self.nodes)) if self.nodes[i].running]
            seen = await self.statuses(want, timeout=1.0)
            leaders = {st.get("leader_id") for st in seen.values()}
            if len(seen) == len(want) and len(leaders) == 1:
                lid = leaders.pop()
                st = seen.get(lid) if isinstance(lid, int) else None
                if (isinstance(lid, int) and st is not None and st.get("state") == "Leader"
                        and st.get("term", -1) >= min_term):
                    return lid, int(st["term"])
            if loop.time() >= end:
                view = ", ".join(f"n{i}: {st.get('state')} leader={st.get('leader_id')} term={st.get('term')}"
                                 for i, st in sorted(seen.items()))
                raise ClusterError(f"no agreed leader within {timeout:g}s ({view or 'no node answered'})")
            await asyncio.sleep(poll)

    # -- faults and shutdown -----------------------------------------------------------------------

    def kill(self, node_id: int) -> float:
        """SIGKILL ``node_id`` and reap it; returns the ``time.monotonic()`` of the kill."""
        node = self.nodes[node_id]
        if node.proc is None or node.proc.poll() is not None:
            raise ClusterError(f"n{node_id} is not running")
        t = time.monotonic()
        node.proc.kill()
        node.proc.wait(10)
        return t

    def stop(self, node_id: int, timeout: float = 10.0) -> int | None:
        """SIGTERM ``node_id`` (a graceful stop; a node paused with SIGSTOP is continued to
        take it), SIGKILL after ``timeout``; its exit code."""
        node = self.nodes[node_id]
        proc = node.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                _terminate(proc)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def close(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM to all, and SIGCONT to continue a paused one; SIGKILL to
        those still running after ``timeout``) and remove the root if this cluster created it. Idempotent; safe in a
        ``finally`` and from a signal handler's aftermath."""
        if self._closed:
            return
        self._closed = True
        procs = [n.proc for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        for p in procs:
            _terminate(p)
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        os.close(self._lock)  # releases the root

    async def aclose(self, timeout: float = 10.0) -> None:
        """``close()`` from a coroutine (the waiting runs in a thread), and the clients: the
        nodes are stopped even if closing a client raises (``KvClient.close`` from another
        loop than the one that used it), which is raised after."""
        clients, self._retired = [*self._retired, *([self._client] if self._client is not None else [])], []
        self._client = None
        try:
            for client in clients:
                await client.close()
        finally:
            await asyncio.to_thread(self.close, timeout)
