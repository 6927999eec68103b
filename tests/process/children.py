"""The child processes of a process under test, from ``/proc`` (Linux): what a signal test
checks is left running, and kills whatever is, whatever the outcome."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> set[int]:
    """The direct children of ``pid``."""
    kids: set[int] = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(d.name))
    return kids


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (neither gone nor a zombie)."""
    out: set[int] = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out
