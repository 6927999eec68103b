"""Process-level helpers for the key-value service's tests: ``serve`` processes on loopback
ports, driven through HTTP. Each test kills every process it starts and removes its
directories, also when it fails."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp

from openraft_py.testing.proc_cluster import free_port


class ServeProc:
    """One ``python -m openraft_py.kv.server`` process."""

    def __init__(self, nid: int, root: str, cluster_name: str = "kv-proc-test") -> None:
        self.id = nid
        self.cluster_name = cluster_name
        """``--cluster-name``, read at each ``start``."""
        self.raft_addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}"
        self.data_dir = os.path.join(root, f"n{nid}")
        self.log_path = os.path.join(root, f"n{nid}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ignore_sighup: bool = False, extra_args: tuple[str, ...] = (), max_files: int | None = None) -> None:
        """Start the process; ``ignore_sighup``: with SIGHUP ignored, as ``nohup`` starts it;
        ``extra_args`` go to ``serve``; ``max_files``: its soft limit of open files."""
        args = [sys.executable, "-m", "openraft_py.kv.server", "--id", str(self.id),
                "--raft-addr", self.raft_addr, "--http-addr", self.http_addr, "--data-dir", self.data_dir,
                "--cluster-name", self.cluster_name, "--log-format", "json", *extra_args]

        def before_exec() -> None:  # in the child
            # Both ways set here: a runner started in the background (``make test &``,
            # ``nohup``) passes SIGHUP and SIGINT on ignored, which ``serve`` keeps ignoring.
            signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_sighup else signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if max_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        if self.proc is not None:
            # The last run (killed, or stopped, before this start) is reaped: dropped while
            # unreaped, its Popen was a ResourceWarning ("subprocess ... is still running").
            self.proc.wait(20)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
                                         preexec_fn=before_exec)

    def url(self, path: str) -> str:
        return f"http://{self.http_addr}{path}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        """The exit status, once the process exits (``subprocess.TimeoutExpired`` after
        ``timeout`` seconds)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def exit_note(self) -> str | None:
        """None while the process runs (or before its first start); once it has exited, its
        exit status and the end of its log (which says why, for a failure message)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        with open(self.log_path, "rb") as f:
            tail = f.read()[-1500:].decode(errors="replace")
        return f"node {self.id} exited with status {self.proc.returncode}; the end of its log:\n{tail}"

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log records; not the command line's own ``openraft-py serve: error:`` line
        (plain text, as its usage errors are) that ends a start that failed."""
        with open(self.log_path, "rb") as f:
            return [json.loads(line) for line in f if line.strip() and not line.startswith(b"openraft-py serve: ")]


async def status(s: aiohttp.ClientSession, p: ServeProc) -> dict[str, Any] | None:
    try:
        async with s.get(p.url("/cluster/status"), timeout=aiohttp.ClientTimeout(total=1)) as r:
            return await r.json() if r.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def serving(s: aiohttp.ClientSession, p: ServeProc) -> dict[str, Any] | None:
    """``p``'s status, None while it does not answer; an ``AssertionError`` naming the exit
    and the end of the log once ``p``'s process has exited (a start that failed, a port
    taken), instead of a wait for an answer that cannot come."""
    st = await status(s, p)
    if st is None and (note := p.exit_note()) is not None:
        raise AssertionError(note)
    return st


async def until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = await cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def put(s: aiohttp.ClientSession, p: ServeProc, key: str, value: str, timeout: float = 2.0) -> int | None:
    """The index of an acknowledged write through ``p`` (redirects followed), else None."""
    try:
        async with s.put(p.url(f"/kv/{key}"), data=value, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            if r.status == 200:
                return int((await r.json())["index"])
            return None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def init_cluster(s: aiohttp.ClientSession, procs: list[ServeProc], timeout: float = 30.0) -> None:
    """Wait until each of ``procs`` (started) answers its status, then initialize them as one
    cluster of voters through the first (``POST /cluster/init``), asserting the 200."""
    for p in procs:
        await until(lambda p=p: serving(s, p), timeout, f"node {p.id} serving")
    members = {str(p.id): {"raft_addr": p.raft_addr, "http_addr": p.http_addr} for p in procs}
    async with s.post(procs[0].url("/cluster/init"), json={"members": members}) as r:
        assert r.status == 200, await r.text()
