"""``examples/lock_service``: fencing tokens are log indexes, leases expire by the clock the
leader recorded in the log, and a paused holder's stale token is refused by the resource."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from lease_locks import Acquire, Denied, Granted, Lease, LockStateMachine, Release, Renew, encode_command
from lock_cluster import FencedResource, LockCluster, ManualClock, StaleToken

from openraft_py import Entry, LogId, Normal, RaftStateMachine
from openraft_py.storage import MemLogStore
from openraft_py.testing.suite import StateMachineSuite, StoreHandle, run_state_machine_suite

from .conftest import EXAMPLES

LOCK = "L"
TTL = 5_000


def _entry(index: int, cmd: Acquire | Renew | Release) -> Entry:
    return Entry(LogId(1, index), Normal(encode_command(cmd)))


async def test_state_machine_suite() -> None:
    """The lock table passes the state-machine conformance checks; only the two restart checks
    are skipped (the table lives in memory, so the builder gives no ``reopen``), and the
    check of the optional ``get_current_snapshot_meta``, which it does not have."""

    async def state_view(sm: RaftStateMachine) -> tuple[dict[str, Lease], float]:
        assert isinstance(sm, LockStateMachine)
        return dict(sm.locks), sm.clock_ms

    async def builder() -> StoreHandle:
        return StoreHandle(
            MemLogStore(),
            LockStateMachine(),
            normal_data=lambda i: encode_command(Acquire(f"lock{i}", f"holder{i}", TTL, float(i))),
            state_view=state_view,
        )

    report = await run_state_machine_suite(builder)
    assert [o.name for o in report] == StateMachineSuite.check_names()
    assert len(report) == 27
    assert [o.name for o in report if not o.ok] == []
    assert [o.name for o in report if o.skipped] == [
        "snapshot_meta_is_the_current_snapshots", "reopen_keeps_applied_state", "reopen_after_install_keeps_the_snapshot"
    ]


async def test_tokens_and_expiry_follow_the_log() -> None:
    """The token is the granting entry's index; expiry uses the recorded times, and a
    command stamped by a lagging clock cannot move time back to revive a lease."""
    sm = LockStateMachine()
    [a] = await sm.apply([_entry(3, Acquire(LOCK, "A", TTL, 1_000.0))])
    assert a == Granted(3, 6_000.0)
    [denied] = await sm.apply([_entry(4, Acquire(LOCK, "B", TTL, 5_999.0))])
    assert isinstance(denied, Denied) and denied.current == Lease("A", 3, 6_000.0)
    [again] = await sm.apply([_entry(5, Acquire(LOCK, "A", TTL, 2_000.0))])  # re-entrant, lagging clock
    assert again == Granted(3, 10_999.0)  # same token; time is max(5999, 2000)
    [b] = await sm.apply([_entry(6, Acquire(LOCK, "B", TTL, 11_000.0))])
    assert b == Granted(6, 16_000.0)
    [renew_a, release_a] = await sm.apply(
        [_entry(7, Renew(LOCK, "A", 3, TTL, 11_001.0)), _entry(8, Release(LOCK, "A", 3, 11_002.0))]
    )
    assert isinstance(renew_a, Denied) and release_a is False
    # A lagging leader clock (t=1) after t=11002 was recorded: B's lease is still live.
    [c] = await sm.apply([_entry(9, Acquire(LOCK, "C", TTL, 1.0))])
    assert isinstance(c, Denied) and c.current is not None and c.current.holder == "B"
    assert sm.clock_ms == 11_002.0


async def test_paused_holder_is_fenced_off() -> None:
    """A acquires (t1) and writes; B is denied while A's lease is live; A pauses past its
    lease; B acquires (t2 > t1); A's write with t1 is refused (not live), B's with t2 is
    accepted, A's next one is refused again (older than t2), A cannot renew, and a
    linearizable read names B. A leader change keeps B's lease and the token order."""
    clock = ManualClock()
    cluster = await LockCluster.start(clock)
    try:
        locks = cluster.client()
        resource = FencedResource(locks)

        a = await locks.acquire(LOCK, "A", TTL)
        assert isinstance(a, Granted)
        await resource.write(LOCK, a.token, "k", "from A")
        assert isinstance(await locks.acquire(LOCK, "B", TTL), Denied)

        clock.advance(2 * TTL)  # A is paused: no renewal
        b = await locks.acquire(LOCK, "B", TTL)
        assert isinstance(b, Granted) and b.token > a.token

        try:
            await resource.write(LOCK, a.token, "k", "stale A")
        except StaleToken as e:
            assert "not live" in str(e)
        else:
            raise AssertionError("the paused holder's stale token was accepted")
        await resource.write(LOCK, b.token, "k", "from B")
        try:
            await resource.write(LOCK, a.token, "k", "stale A again")
        except StaleToken as e:
            assert "older" in str(e)
        else:
            raise AssertionError("a token older than one already used was accepted")
        assert resource.data == {"k": "from B"}
        assert isinstance(await locks.renew(LOCK, "A", a.token, TTL), Denied)
        assert await locks.lease(LOCK) == Lease("B", b.token, clock() + TTL)

        # The leader crashes: the new leader has the same lease table; tokens keep growing.
        leader = next(n for n in cluster.nodes.values() if n.raft.is_leader())
        await cluster.stop_node(leader.raft.id)
        assert await locks.lease(LOCK) == Lease("B", b.token, clock() + TTL)
        clock.advance(2 * TTL)
        c = await locks.acquire(LOCK, "C", TTL)
        assert isinstance(c, Granted) and c.token > b.token
        try:
            await resource.write(LOCK, b.token, "k", "stale B")
        except StaleToken:
            pass
        else:
            raise AssertionError("B's expired token was accepted after C acquired")
    finally:
        await cluster.stop()


def test_main_runs() -> None:
    """``python examples/lock_service/main.py`` runs and shows A's stale writes refused."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "lock_service" / "main.py")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("REFUSED") == 2 and "B writes with token" in out.stdout, out.stdout


def test_main_takes_no_arguments() -> None:
    """``main.py --help`` describes the demo and ``main.py --dir x`` is a usage error: both
    ran the whole demo, the arguments ignored (the other examples' ``main.py`` take flags)."""
    main = str(EXAMPLES / "lock_service" / "main.py")
    helped = subprocess.run([sys.executable, main, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: main.py"), helped
    assert "fencing tokens" in helped.stdout and "REFUSED" not in helped.stdout, helped.stdout
    wrong = subprocess.run([sys.executable, main, "--dir", "x"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unrecognized arguments: --dir x" in wrong.stderr, wrong
    assert wrong.stdout == "", wrong.stdout


async def test_a_wrong_argument_is_refused_before_anything_is_written() -> None:
    """``acquire`` / ``renew`` / ``release`` with an argument of the wrong type or range raise
    ``TypeError`` / ``ValueError`` naming it and write nothing (a ``ttl_ms`` given as a string
    was committed, answered ``None`` and failed an assertion; a ``ttl_ms`` of 0 or less was
    ``Granted`` a lease that had already expired; one above 2**64 - 1, or a name holding a lone
    surrogate, raised the encoder's ``OverflowError`` / ``UnicodeEncodeError`` naming nothing)."""
    cluster = await LockCluster.start(ManualClock())
    try:
        locks = cluster.client()
        leader = next(n for n in cluster.nodes.values() if n.raft.is_leader())
        before = leader.raft.metrics.last_log_index
        calls = [
            (locks.acquire(LOCK, "A", "5000"), TypeError, "ttl_ms must be an int, got str"),  # type: ignore[arg-type]
            (locks.acquire(LOCK, "A", 1.5), TypeError, "ttl_ms must be an int, got float"),  # type: ignore[arg-type]
            (locks.acquire(LOCK, "A", True), TypeError, "ttl_ms must be an int, got bool"),
            (locks.acquire(LOCK, "A", 0), ValueError, "ttl_ms must be at least 1, got 0"),
            (locks.acquire(LOCK, "A", -5), ValueError, "ttl_ms must be at least 1, got -5"),
            (locks.acquire(7, "A", TTL), TypeError, "lock must be a str, got int"),  # type: ignore[arg-type]
            (locks.acquire(LOCK, None, TTL), TypeError, "holder must be a str, got NoneType"),  # type: ignore[arg-type]
            (locks.renew(LOCK, "A", "2", TTL), TypeError, "token must be an int, got str"),  # type: ignore[arg-type]
            (locks.release(LOCK, "A", -1), ValueError, "token must be at least 0, got -1"),
            # The encoder's own errors named no argument (OverflowError, UnicodeEncodeError).
            (
                locks.acquire(LOCK, "A", 2**64),
                ValueError,
                f"ttl_ms must be at most {2**63 - 1} (2**63 - 1), got {2**64}",
            ),
            (
                locks.renew(LOCK, "A", 2**63, TTL),
                ValueError,
                f"token must be at most {2**63 - 1} (2**63 - 1), got {2**63}",
            ),
            (
                locks.acquire("\ud800", "A", TTL),
                ValueError,
                "lock must be encodable as UTF-8 (it holds a lone surrogate): '\\ud800'",
            ),
            (
                locks.release(LOCK, "x\udfff", 1),
                ValueError,
                "holder must be encodable as UTF-8 (it holds a lone surrogate): 'x\\udfff'",
            ),
        ]
        for call, error, message in calls:
            with pytest.raises(error, match=f"^{re.escape(message)}$"):
                await call
        assert leader.raft.metrics.last_log_index == before
        granted = await locks.acquire(LOCK, "A", 1)
        assert isinstance(granted, Granted) and granted.expires_ms == cluster.clock() + 1
        longest = await locks.acquire("\u00e9t\u00e9", "", 2**63 - 1)  # unicode and empty names are names
        assert isinstance(longest, Granted) and longest.expires_ms == cluster.clock() + 2**63 - 1
    finally:
        await cluster.stop()


async def test_client_moves_on_from_a_leader_that_stopped() -> None:
    """A leader that stops on its own (its ``Raft`` shut down or failed, but still one of the
    client's nodes): the client's calls go to the new leader, and the lease held survives.
    The client kept asking the stopped node and every call raised ``Stopped``."""
    clock = ManualClock()
    cluster = await LockCluster.start(clock)
    try:
        locks = cluster.client()
        a = await locks.acquire(LOCK, "A", TTL)
        assert isinstance(a, Granted)
        leader = next(n for n in cluster.nodes.values() if n.raft.is_leader())
        await leader.raft.shutdown()  # stopped, yet still in cluster.nodes
        async with asyncio.timeout(20):
            assert await locks.lease(LOCK) == Lease("A", a.token, a.expires_ms)
            again = await locks.acquire(LOCK, "A", TTL)
            assert again == Granted(a.token, clock() + TTL)
            assert isinstance(await locks.acquire(LOCK, "B", TTL), Denied)
        assert next(n for n in cluster.nodes.values() if n.raft.is_leader()) is not leader
    finally:
        await cluster.stop()
