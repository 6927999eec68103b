"""The ``serve`` processes of a Jepsen run: spawn, SIGKILL, restart, SIGSTOP/SIGCONT, logs.

Each node ``i`` runs ``python -m openraft_py.kv.server --id i --raft-addr 127.0.0.1:R
--http-addr 127.0.0.1:H --data-dir ROOT/n<i>/data`` (the ``serve`` verb of DESIGN §8), in its
own session (a signal sent to the runner's process group does not reach it), with stderr and
stdout appended to ``ROOT/n<i>/node.log`` across restarts. With ``bugs`` the node is started
through ``openraft_py.testing.jepsen.faulty_serve`` instead, which switches the named engine
faults on (test-only; see that module).

Restarts reuse the same ports and data directory. ``killed_by_nemesis`` records which nodes
the nemesis took down on purpose, so the liveness check can tell them from crashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..proc.cluster import free_port

__all__ = ["NodeProc", "NodeSet"]


@dataclass
class NodeProc:
    """One node: its id, ports, directory and current process (``None`` while down)."""

    id: int
    raft_port: int
    http_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def http_addr(self) -> str:
        """``"127.0.0.1:H"``: the node's HTTP API."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def raft_addr(self) -> str:
        """``"127.0.0.1:R"``: the node's real raft port (peers reach it through the proxy)."""
        return f"127.0.0.1:{self.raft_port}"

    @property
    def log_path(self) -> Path:
        """The node's log file (all its runs appended)."""
        return self.dir / "node.log"

    def alive(self) -> bool:
        """Whether the process is running (a paused process counts as running)."""
        return self.proc is not None and self.proc.poll() is None


@dataclass
class NodeSet:
    """The nodes ``1..n`` of a run under ``root``; ``raft_config`` is passed as
    ``--raft-config``; ``bugs`` are engine fault names (empty: the real ``serve``)."""

    n: int
    root: Path
    raft_config: dict[str, object] = field(default_factory=dict)
    bugs: tuple[str, ...] = ()
    nodes: dict[int, NodeProc] = field(default_factory=dict)
    killed_by_nemesis: set[int] = field(default_factory=set)
    exits: list[tuple[int, int | None, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        used: set[int] = set()
        for i in range(1, self.n + 1):
            ports: list[int] = []
            while len(ports) < 2:
                p = free_port()
                if p not in used:
                    used.add(p)
                    ports.append(p)
            d = self.root / f"n{i}"
            d.mkdir(parents=True, exist_ok=True)
            self.nodes[i] = NodeProc(i, ports[0], ports[1], d)

    def new_ports(self, i: int) -> None:
        """Give node ``i`` fresh ports (only before the cluster is initialized: the HTTP
        address is part of the membership)."""
        node = self.nodes[i]
        taken = {p for n in self.nodes.values() for p in (n.raft_port, n.http_port)}
        ports: list[int] = []
        while len(ports) < 2:
            p = free_port()
            if p not in taken:
                taken.add(p)
                ports.append(p)
        node.raft_port, node.http_port = ports

    def _argv(self, node: NodeProc) -> list[str]:
        module = "openraft_py.testing.jepsen.faulty_serve" if self.bugs else "openraft_py.kv.server"
        argv = [sys.executable, "-m", module, "--id", str(node.id), "--raft-addr", node.raft_addr,
                "--http-addr", node.http_addr, "--data-dir", str(node.dir / "data"),
                "--cluster-name", "jepsen", "--log-level", "INFO"]
        if self.raft_config:
            argv += ["--raft-config", json.dumps(self.raft_config)]
        return argv

    def start(self, i: int) -> None:
        """Start node ``i`` (no-op if it runs)."""
        node = self.nodes[i]
        if node.alive():
            return
        env = dict(os.environ)
        if self.bugs:
            env["OPENRAFT_PY_TEST_FAULTS"] = ",".join(self.bugs)
        with open(node.log_path, "ab") as logf:
            logf.write(f"\n=== jepsen: start #{node.starts + 1} at {time.time():.3f} ===\n".encode())
            logf.flush()
            node.proc = subprocess.Popen(self._argv(node), stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        node.starts += 1
        node.paused = False
        self.killed_by_nemesis.discard(i)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (the nemesis); it stays down until ``start``."""
        node = self.nodes[i]
        self.killed_by_nemesis.add(i)
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)
        node.paused = False

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i``."""
        node = self.nodes[i]
        if node.proc is not None and node.alive():
            os.kill(node.proc.pid, signal.SIGSTOP)
            node.paused = True

    def resume(self, i: int) -> None:
        """SIGCONT node ``i`` (no-op unless paused)."""
        node = self.nodes[i]
        if node.proc is not None and node.alive() and node.paused:
            os.kill(node.proc.pid, signal.SIGCONT)
        node.paused = False

    def unexpected_exits(self) -> list[tuple[int, int | None]]:
        """``(id, exit code)`` of nodes that are down although the nemesis did not kill them."""
        return [(i, n.proc.returncode if n.proc else None) for i, n in self.nodes.items()
                if not n.alive() and i not in self.killed_by_nemesis]

    def stop_all(self) -> None:
        """SIGCONT, then SIGKILL every node and reap it (cleanup; idempotent)."""
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
                    os.kill(node.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(10)
