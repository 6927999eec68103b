"""The shipped key-value state machines (``MemStateMachine``, ``RocksStateMachine`` and the
service's ``KvStateMachine``) against a model, over random sequences of what a node does to
its state machine:

- apply batches of commands (sets, deletes, compare-and-sets, the service's conditional
  deletes, gets, opaque data, undecodable commands, blanks and memberships; keys short and
  long, ASCII and not, so the kernel's run of sets and the one-command path both run, and
  mix), with or without responses;
- snapshot builds (up to two at once) that run while later batches apply;
- installs of a newer snapshot from another node, often while a build runs and after
  changes that build does not hold;
- restarts.

A random number of loop passes separates the calls. Checked: every response; the data and
the applied state after about half the calls, at random (a read writes a batch that
``RocksStateMachine.apply`` deferred, so the other half lets the next call meet one: the
RocksDB kinds defer batches of 4 entries or more here). Checked for every build: its snapshot holds exactly the state
after the entry its meta names (installed into a fresh state machine of the same kind). And
the current snapshot is the newest one built or installed, never an older build that finished
after an install. A failure names its seed, which reproduces it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from openraft_py.kv import rocks_state_machine
from openraft_py.kv.commands import KvCasDelete, KvStateMachine, encode_cas
from openraft_py.kv.rocks_state_machine import RocksStateMachine
from openraft_py.storage import MemStateMachine, memory
from openraft_py.storage.memory import KV_PREFIX, KvCas, KvDelete, KvGet, KvSet, encode_kv
from openraft_py.types import (
    BLANK,
    EMPTY_STORED_MEMBERSHIP,
    Entry,
    LogId,
    Membership,
    Normal,
    Snapshot,
    StoredMembership,
)

pytestmark = [pytest.mark.timeout(180)]

KEYS = [f"k{i}" for i in range(12)] + ["é-clé", "x" * 40, "y" * 300]
"""A small pool, so that commands meet keys set, deleted and set again within a batch and
across batches; the last three take the kernel's non-ASCII, str8 and str16 paths."""
BAD_UTF8_SET = KV_PREFIX + b"\x93\xa3set\xa2\xff\xfe\xa1v"
"""A set whose key is not UTF-8: not a command (opaque), whichever path reads it."""


class Model:
    """The key-value data, the applied log id and membership that the calls so far leave, and
    the state after every entry applied (by log id): what a snapshot at that id holds."""

    def __init__(self, casdel: bool) -> None:
        self.casdel = casdel  # whether ``KvCasDelete`` is a command (the service's state machine) or opaque
        self.kv: dict[str, str] = {}
        self.applied: LogId | None = None
        self.membership: StoredMembership = EMPTY_STORED_MEMBERSHIP
        self.at: dict[LogId, tuple[dict[str, str], StoredMembership]] = {}

    def next_index(self) -> int:
        return 0 if self.applied is None else self.applied.index + 1

    def apply(self, entry: Entry, cmd: Any) -> Any:
        """The response the state machine owes for ``entry`` (``cmd``: its command, or
        ``None``), and its change. Written out from the commands' docstrings rather than
        calling ``apply_kv``: the state machines run ``apply_kv`` on some paths, and a model
        sharing it would share its mistakes."""
        if type(entry.payload) is Membership:
            self.membership = StoredMembership(entry.log_id, entry.payload)
            return None
        kv = self.kv
        if type(cmd) is KvSet:
            prev = kv.get(cmd.key)
            kv[cmd.key] = cmd.value
            return prev
        if type(cmd) is KvDelete:
            return kv.pop(cmd.key, None)
        if type(cmd) is KvCas:
            cur = kv.get(cmd.key)
            if cur == cmd.expected:
                kv[cmd.key] = cmd.value
                return (True, cmd.value)
            return (False, cur)
        if type(cmd) is KvGet:
            return kv.get(cmd.key)
        if type(cmd) is KvCasDelete and self.casdel:
            cur = kv.get(cmd.key)
            if cur == cmd.expected:
                kv.pop(cmd.key, None)
                return (True, None)
            return (False, cur)
        return None

    def boundary(self) -> None:
        """An entry (or an install) was applied: the state now is one a snapshot may capture."""
        assert self.applied is not None
        self.at[self.applied] = (dict(self.kv), self.membership)


def newer(newest: LogId | None, snap: Snapshot) -> LogId:
    """The newer of ``newest`` and the id of the snapshot ``snap``."""
    last = snap.meta.last_log_id
    assert last is not None  # (every snapshot here covers some entry)
    return last if newest is None or last > newest else newest


def start_build(sm: Any, builds: list[tuple[asyncio.Task[Snapshot], int]], step: int) -> None:
    """Start a snapshot build of ``sm`` as a task (it runs while the sequence goes on)."""
    builds.append((asyncio.ensure_future(sm.get_snapshot_builder().build_snapshot()), step))


def random_value(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.1:
        return ""
    if r < 0.2:
        return "ü" * rng.randint(1, 40)
    if r < 0.3:
        return "v" * rng.randint(32, 300)
    return f"v{rng.randrange(10**6)}"


def random_batch(rng: random.Random, model: Model, first: int, term: int) -> tuple[list[Entry], list[Any]]:
    """A batch from index ``first``: its entries and, per entry, its command or ``None``.
    Often a run of sets (a key-value workload's batch), sometimes anything."""
    n = rng.randint(1, 40)
    sets_only = rng.random() < 0.4
    entries: list[Entry] = []
    cmds: list[Any] = []
    for i in range(first, first + n):
        log_id = LogId(term, i)
        r = 0.0 if sets_only else rng.random()
        key = rng.choice(KEYS)
        cmd: Any = None
        if r < 0.45:
            cmd = KvSet(key, random_value(rng))
        elif r < 0.55:
            cmd = KvDelete(key)
        elif r < 0.68:
            # Expected: the current value (before this batch) about half the time.
            expected = model.kv.get(key) if rng.random() < 0.5 else rng.choice([None, "v1", ""])
            cmd = KvCas(key, expected, random_value(rng))
        elif r < 0.72:
            cmd = KvGet(key)
        elif r < 0.76:
            expected = model.kv.get(key) if rng.random() < 0.5 else rng.choice([None, "v1"])
            cmd = KvCasDelete(key, expected)
        if type(cmd) is KvCasDelete:
            entries.append(Entry(log_id, Normal(encode_cas(cmd.key, cmd.expected, None))))
        elif cmd is not None:
            entries.append(Entry(log_id, Normal(encode_kv(cmd))))
        elif r < 0.82:
            entries.append(Entry(log_id, Normal(b"opaque")))
        elif r < 0.87:
            entries.append(Entry(log_id, Normal(BAD_UTF8_SET)))
        elif r < 0.93:
            entries.append(Entry(log_id, BLANK))
        else:
            entries.append(Entry(log_id, Membership.new([{1, 2, 3}] if rng.random() < 0.5 else [{1, 2}])))
        cmds.append(cmd)
    return entries, cmds


class Kind:
    """How to make, reopen and close one kind of state machine."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.made = 0

    def new(self) -> tuple[Any, Any]:
        """A fresh state machine and what reopens it (its disk or path)."""
        self.made += 1
        if self.name == "memory":
            sm = MemStateMachine()
            return sm, sm.disk
        path = self.root / f"sm{self.made}"
        return self.rocks_class()(path), path

    def rocks_class(self) -> type[RocksStateMachine]:
        return KvStateMachine if self.name == "service" else RocksStateMachine

    def model(self) -> Model:
        return Model(casdel=self.name == "service")

    def reopen(self, sm: Any, where: Any) -> Any:
        if self.name == "memory":
            return MemStateMachine(where)
        sm.close()
        return self.rocks_class()(where)

    def close(self, sm: Any) -> None:
        if self.name != "memory":
            sm.close()


async def check_state(sm: Any, model: Model, where: str) -> None:
    assert sm.data == model.kv, f"{where}: data"
    assert await sm.applied_state() == (model.applied, model.membership), f"{where}: applied state"


async def check_snapshot(kind: Kind, snap: Snapshot, model: Model, where: str) -> None:
    """``snap`` holds exactly the state after the entry its meta names."""
    last = snap.meta.last_log_id
    assert last is not None and last in model.at, f"{where}: a snapshot at {last!r}, never applied"
    kv, membership = model.at[last]
    assert snap.meta.last_membership == membership, f"{where}: the snapshot's membership"
    fresh, _ = kind.new()
    try:
        f = await fresh.begin_receiving_snapshot()
        f.write(snap.data.read())
        await fresh.install_snapshot(snap.meta, f)
        assert fresh.data == kv, f"{where}: the data of the snapshot at {last!r}"
        assert await fresh.applied_state() == (last, membership), f"{where}: the snapshot's applied state"
    finally:
        snap.data.close()
        kind.close(fresh)


async def donor_snapshot(kind: Kind, rng: random.Random, upto: int, term: int) -> tuple[Snapshot, Model]:
    """A snapshot of another node's state machine that applied random batches up to index
    ``upto`` (from scratch), with its model."""
    donor, _ = kind.new()
    model = kind.model()
    try:
        while model.next_index() <= upto:
            first = model.next_index()
            entries, cmds = random_batch(rng, model, first, term)
            entries, cmds = entries[: upto + 1 - first], cmds[: upto + 1 - first]
            await donor.apply_without_responses(entries)
            for e, c in zip(entries, cmds):
                model.apply(e, c)
                model.applied = e.log_id
        snap = await donor.get_snapshot_builder().build_snapshot()
    finally:
        kind.close(donor)
    return snap, model


async def check_current(sm: Any, newest: LogId | None, where: str, running: bool = False) -> None:
    """The current snapshot is the newest one built or installed so far; with builds still
    ``running`` (one may have finished in its thread and become current), not older than it."""
    cur = await sm.get_current_snapshot()
    if newest is None:
        assert cur is None or running, f"{where}: a current snapshot before any was made"
        if cur is not None:
            cur.data.close()
        return
    assert cur is not None, f"{where}: no current snapshot"
    cur.data.close()
    got = cur.meta.last_log_id
    if running:
        assert got is not None and got >= newest, f"{where}: the current snapshot is at {got!r}, older than {newest!r}"
    else:
        assert got == newest, f"{where}: the current snapshot is at {got!r}, not {newest!r}"


async def apply_batch(sm: Any, model: Model, rng: random.Random, term: int, where: str) -> None:
    """Apply a random batch, with or without responses; check the responses."""
    entries, cmds = random_batch(rng, model, model.next_index(), term)
    with_responses = rng.random() < 0.6
    if with_responses:
        got = await sm.apply(entries)
    else:
        await sm.apply_without_responses(entries)
    want = []
    for e, c in zip(entries, cmds):
        want.append(model.apply(e, c))
        model.applied = e.log_id
        model.boundary()
    if with_responses:
        assert got == want, f"{where}: responses"


async def run_sequence(kind: Kind, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    model = kind.model()
    term = 1
    sm, where_sm = kind.new()
    builds: list[tuple[asyncio.Task[Snapshot], int]] = []  # in flight: (task, the step it began at)
    newest: LogId | None = None  # the newest snapshot built or installed so far
    donor: tuple[Snapshot, Model] | None = None  # made, not installed yet
    try:
        for step in range(steps):
            where = f"{kind.name}, seed {seed}, step {step}"
            op = rng.choices(["apply", "build", "finish", "donor", "install", "restart"], weights=[70, 8, 8, 3, 6, 3])[0]
            if op == "apply":
                await apply_batch(sm, model, rng, term, where)
            elif op == "build" and len(builds) < 2 and model.applied is not None:
                start_build(sm, builds, step)
            elif op == "finish" and builds:
                task, began = builds.pop(rng.randrange(len(builds)))
                snap = await task
                await check_snapshot(kind, snap, model, f"{where} (the build of step {began})")
                newest = newer(newest, snap)
                await check_current(sm, newest, where, running=bool(builds))
            elif op == "donor" and donor is None:
                # Another node's newer snapshot, made ahead of its install so that the
                # install can land while a build runs here.
                term += 1
                donor = await donor_snapshot(kind, rng, model.next_index() + rng.randint(20, 60), term)
            elif op == "install" and donor is not None:
                snap, state = donor
                donor = None
                assert snap.meta.last_log_id is not None
                if model.applied is None or snap.meta.last_log_id.index > model.applied.index:
                    # A follower far behind gets it: the state is replaced whole. Often while
                    # a build of this state machine's own runs.
                    if model.applied is not None and len(builds) < 2 and rng.random() < 0.7:
                        start_build(sm, builds, step)
                        for _ in range(rng.randint(1, 3)):
                            await asyncio.sleep(0)
                        if rng.random() < 0.5:  # changes the build does not hold
                            await apply_batch(sm, model, rng, term, where)
                    f = await sm.begin_receiving_snapshot()
                    f.write(snap.data.read())
                    await sm.install_snapshot(snap.meta, f)
                    model.kv = state.kv
                    model.applied = state.applied
                    model.membership = state.membership
                    model.boundary()
                    newest = model.applied
                    await check_current(sm, newest, where, running=bool(builds))
                snap.data.close()
            elif op == "restart" and not builds:
                sm = kind.reopen(sm, where_sm)
                await check_current(sm, newest, where)
            if op == "restart" or rng.random() < 0.5:
                await check_state(sm, model, where)
            for _ in range(rng.choice([0, 0, 1, 2, 5, 8])):
                await asyncio.sleep(0)
        for task, began in builds:
            snap = await task
            await check_snapshot(kind, snap, model, f"{kind.name}, seed {seed}, the build of step {began}")
            newest = newer(newest, snap)
        builds = []
        sm = kind.reopen(sm, where_sm)
        where = f"{kind.name}, seed {seed}, reopened at the end"
        await check_state(sm, model, where)
        await check_current(sm, newest, where)
    finally:
        if builds:
            await asyncio.wait([task for task, _ in builds])
        if donor is not None:
            donor[0].data.close()
        kind.close(sm)


@pytest.mark.parametrize("kind", ["memory", "rocks", "service"])
@pytest.mark.parametrize("seed", [1, 2, 3, None], ids=["1", "2", "3", "random"])
async def test_state_machine_matches_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, seed: int | None
) -> None:
    # A memory build serializes its frozen data in pieces, letting the loop run between
    # them: pieces of 3 items make a build of this test's small state span several applies.
    monkeypatch.setattr(memory, "_ENCODE_CHUNK", 3)
    # Batches here have 1-40 entries: let the RocksDB kinds defer the write of most of them.
    monkeypatch.setattr(rocks_state_machine, "DEFER_WRITE_MIN_ENTRIES", 4)
    if seed is None:
        seed = random.randrange(2**32)  # a new one each run; a failure names it
    print(f"seed={seed}, {kind}")
    await run_sequence(Kind(kind, tmp_path), seed, 300)
