"""Run a cluster of counter-service processes on 127.0.0.1 (for the demo and the test).

``LocalCluster.start(directory)`` picks free ports, starts one ``main.py node`` process per
node (their output goes to ``directory/node<id>.log``), and returns once every node answers
``/counter/status`` and they all name the same leader. ``stop()`` ends every process: SIGTERM
(a graceful stop: aiohttp runs the cleanup that shuts the Raft node down), then SIGKILL for
any process still running after a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp

__all__ = ["LocalCluster", "free_ports"]

MAIN = Path(__file__).resolve().parent / "main.py"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (bound together, then released:
    another program could take one before the node binds it, which ``start`` would report)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """Counter-service processes on loopback; see the module docstring."""

    def __init__(self, directory: Path, peers: dict[int, tuple[str, str]]) -> None:
        self.directory = directory
        self.peers = peers
        """``id -> (raft address, http address)``."""
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    @classmethod
    async def start(cls, directory: Path, n: int = 3, timeout: float = 20.0) -> LocalCluster:
        """Start ``n`` nodes (node 1 initializes the cluster) and wait until they agree on a
        leader. Stops whatever it started if that does not happen within ``timeout``."""
        ports = free_ports(2 * n)
        peers = {i: (f"127.0.0.1:{ports[2 * (i - 1)]}", f"127.0.0.1:{ports[2 * (i - 1) + 1]}") for i in range(1, n + 1)}
        cluster = cls(directory, peers)
        try:
            for i in peers:
                cluster._spawn(i, initialize=(i == 1))
            async with asyncio.timeout(timeout):
                await cluster.wait_for_leader()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, node_id: int, initialize: bool) -> None:
        args = [sys.executable, str(MAIN), "node", "--id", str(node_id)]
        for i, (raft, http) in self.peers.items():
            args += ["--peer", f"{i}={raft}/{http}"]
        if initialize:
            args.append("--init")
        log = open(self.directory / f"node{node_id}.log", "wb")  # closed by stop()
        self._logs.append(log)
        self.procs[node_id] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def url(self, node_id: int, path: str) -> str:
        """The URL of ``path`` on node ``node_id``'s HTTP address."""
        return f"http://{self.peers[node_id][1]}{path}"

    def logs(self) -> str:
        """Every node's output so far (for failure messages)."""
        out = []
        for i in self.peers:
            path = self.directory / f"node{i}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"--- node {i} ---\n{text}")
        return "\n".join(out)

    async def statuses(self, session: aiohttp.ClientSession) -> dict[int, dict[str, Any]]:
        """``/counter/status`` of every node that answers now."""
        out: dict[int, dict[str, Any]] = {}
        for i in self.peers:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(self.url(i, "/counter/status")) as r:
                    if r.status == 200:
                        out[i] = await r.json()
        return out

    async def wait_for_leader(self) -> int:
        """The leader's id once every node answers and names it (polls; bound it yourself).
        ``RuntimeError`` with the nodes' output if a process exits meanwhile."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                for i, p in self.procs.items():
                    if p.poll() is not None:
                        raise RuntimeError(f"node {i} exited with {p.returncode}\n{self.logs()}")
                st = await self.statuses(session)
                leaders = {s["leader"] for s in st.values()}
                if len(st) == len(self.peers) and len(leaders) == 1 and None not in leaders:
                    return int(leaders.pop())
                await asyncio.sleep(0.05)

    def stop(self, grace: float = 5.0) -> dict[int, int]:
        """End every process (SIGTERM, then SIGKILL after ``grace`` seconds); return their exit
        codes. Idempotent."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: dict[int, int] = {}
        for i, p in self.procs.items():
            try:
                codes[i] = p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[i] = p.wait()
        for log in self._logs:
            log.close()
        return codes
