"""A replicated lock service with fencing tokens: what happens to a holder that pauses.

Run it (from the repository root)::

    python examples/lock_service/main.py

Three nodes in one process. Holder A takes the lock and writes to a fenced resource, then
"pauses" (a GC pause, a stopped VM: it stops renewing) while time passes beyond its lease.
B takes the lock with a larger token. A wakes up and writes with its old token: the resource
refuses it. B's writes go through. The clock is a manual one so the pause takes no real time.
"""

from __future__ import annotations

import argparse
import asyncio

from lease_locks import Denied, Granted
from lock_cluster import FencedResource, LockCluster, ManualClock, StaleToken

LOCK = "orders-db"
TTL_MS = 5_000


async def try_write(resource: FencedResource, who: str, token: int, value: str) -> bool:
    """Write ``value`` as ``who`` with ``token``; print and return whether it was accepted."""
    try:
        await resource.write(LOCK, token, "owner-note", value)
    except StaleToken as e:
        print(f"  {who} writes with token {token}: REFUSED ({e})")
        return False
    print(f"  {who} writes with token {token}: accepted")
    return True


def granted(answer: Granted | Denied, who: str) -> Granted:
    """``answer`` if it is a grant; else print why and stop the demo."""
    if isinstance(answer, Denied):
        raise SystemExit(f"{who} was denied: {answer.reason}")
    return answer


async def run() -> list[tuple[str, int, bool]]:
    """The scenario; returns ``(who, token, accepted)`` for each write to the resource."""
    clock = ManualClock()
    cluster = await LockCluster.start(clock)
    try:
        locks = cluster.client()
        resource = FencedResource(locks)
        writes: list[tuple[str, int, bool]] = []

        a = granted(await locks.acquire(LOCK, "A", TTL_MS), "A")
        print(f"A acquires {LOCK!r}: token {a.token}, lease until t={a.expires_ms:.0f}")
        writes.append(("A", a.token, await try_write(resource, "A", a.token, "A was here")))

        b_try = await locks.acquire(LOCK, "B", TTL_MS)
        print(f"B tries to acquire while A's lease is live: {b_try}")

        clock.advance(TTL_MS * 2)
        print(f"A pauses; {TTL_MS * 2} ms pass without a renewal (now t={clock():.0f})")

        b = granted(await locks.acquire(LOCK, "B", TTL_MS), "B")
        print(f"B acquires {LOCK!r}: token {b.token} (> {a.token})")

        print("A resumes, unaware, and writes with its old token:")
        writes.append(("A", a.token, await try_write(resource, "A", a.token, "A again")))
        writes.append(("B", b.token, await try_write(resource, "B", b.token, "B was here")))
        writes.append(("A", a.token, await try_write(resource, "A", a.token, "A once more")))

        renew = await locks.renew(LOCK, "A", a.token, TTL_MS)
        print(f"A tries to renew: {renew}")
        lease = await locks.lease(LOCK)
        print(f"linearizable read of {LOCK!r}: {lease}")
        print(f"the resource holds: {resource.data}")
        return writes
    finally:
        await cluster.stop()


def main() -> None:
    """Run the demo. It takes no arguments: ``--help`` shows what it does, and any other
    argument is a usage error (exit 2) rather than ignored."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    asyncio.run(run())


if __name__ == "__main__":
    main()
