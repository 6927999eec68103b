"""Three ``serve`` processes, node 3's data directory on a real file system that fills up
(a 4 MiB tmpfs: needs root, skipped otherwise): node 3 stops at the first write its disk
refuses, exit code 1, saying why at ERROR once (the core's line, repeated by ``serve``),
naming its data directory and "No space left on device"; nodes 1 and 2 keep committing; a
start before space is freed exits 1 again; once the file system is larger, node 3 starts
again from its directory and holds every acknowledged write. Every process is killed, the
file system unmounted and every directory removed, also when the test fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile

import aiohttp
import pytest

from .serve_procs import ServeProc, init_cluster, put, status, until

pytestmark = pytest.mark.timeout(180)

VALUE = "x" * 20_000
"""Each write's value: 4 MiB hold about 100 of them (in the log and in the state machine)."""


def _mount_tmpfs(path: str, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``path``; ``None``, or why it could not."""
    if os.geteuid() != 0:
        return "mounting a small file system needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    return None if r.returncode == 0 else f"mount -t tmpfs was refused: {r.stderr.strip()}"


def _stopped(p: ServeProc) -> bool:
    """Whether ``p``'s node logged that it stopped on its own."""
    return any(x["level"] == "ERROR" and "stopped on its own" in x["msg"] for x in p.logs())


async def test_a_follower_whose_disk_fills_stops_once_and_comes_back_with_every_write() -> None:
    root = tempfile.mkdtemp(prefix="kv-full-")
    procs = {i: ServeProc(i, root) for i in (1, 2, 3)}
    full = procs[3].data_dir
    os.makedirs(full)
    why = _mount_tmpfs(full, "4m")
    if why is not None:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(why)
    acked: list[str] = []
    try:
        for p in procs.values():
            p.start()
        async with aiohttp.ClientSession() as s:
            await init_cluster(s, list(procs.values()), 20)
            p3 = procs[3].proc
            assert p3 is not None
            i = 0
            # Node 1 leads (init); node 3's disk fills. Until node 3 says it stopped: its
            # process then closes its stores, which RocksDB takes a second or two for on a
            # full disk, while a write here takes a few milliseconds.
            while p3.poll() is None and not (i % 10 == 0 and _stopped(procs[3])):
                assert i < 2000, "node 3 never stopped"
                if await put(s, procs[1], f"k{i}", VALUE, timeout=5) is not None:
                    acked.append(f"k{i}")
                i += 1
            assert await asyncio.to_thread(p3.wait, 30) == 1
            for j in range(5):  # nodes 1 and 2 go on
                assert await put(s, procs[1], f"after{j}", VALUE, timeout=5) is not None
                acked.append(f"after{j}")

            errors = [x["msg"] for x in procs[3].logs() if x["level"] == "ERROR"]
            assert len(errors) == 2, errors  # "node 3 stopped: ...", and serve's "the node stopped on its own: ..."
            assert all("No space left on device" in e and full in e for e in errors), errors

            # Started again on the full disk: exit 1, nothing changed.
            procs[3].start()
            assert procs[3].proc is not None
            assert await asyncio.to_thread(procs[3].proc.wait, 30) == 1
            assert "No space left on device" in procs[3].logs()[-1]["msg"]

            # Space freed: it catches up and holds every acknowledged write.
            subprocess.run(["mount", "-o", "remount,size=64m", full], check=True)
            procs[3].start()
            lead = await status(s, procs[1])
            assert lead is not None
            target = lead["committed_index"]

            async def caught_up() -> bool:
                st = await status(s, procs[3])
                return bool(st and st["applied_index"] is not None and st["applied_index"] >= target)

            await until(caught_up, 30, "node 3 catching up")
            for key in acked:
                async with s.get(procs[3].url(f"/kv/{key}?consistency=local")) as r:
                    assert r.status == 200 and await r.text() == VALUE, (key, r.status)
    finally:
        for p in procs.values():
            p.kill()
            if p.proc is not None:
                try:
                    p.proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
                    pass
        subprocess.run(["umount", full], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(root)
