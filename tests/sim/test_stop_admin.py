"""``FaultSchedule._stop_admin``, which cancels a run's admin calls at its end and waits for
them, cancelled itself (the watchdog cancels a stuck run before its teardown): the run ends
cancelled. It swallowed the ``CancelledError`` meant for the admin calls also when it was its
own, and the stopped run went on during the teardown. An admin call that failed still fails
the run."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from openraft_py.testing.sim.faults import FaultSchedule

pytestmark = pytest.mark.timeout(10)


def _schedule(*tasks: asyncio.Future[None]) -> SimpleNamespace:
    """What ``_stop_admin`` uses of a ``Simulation``."""
    return SimpleNamespace(admin_tasks=list(tasks))


async def test_a_cancelled_stop_admin_is_cancelled() -> None:
    gate = asyncio.Event()

    async def admin_call() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await gate.wait()  # its cleanup takes a moment
            raise

    admin = asyncio.ensure_future(admin_call())
    await asyncio.sleep(0)
    run = asyncio.ensure_future(FaultSchedule._stop_admin(_schedule(admin)))  # type: ignore[arg-type]
    try:
        for _ in range(3):  # (loop turns: the admin call is cancelled and ``run`` waits for it)
            await asyncio.sleep(0)
        assert not run.done() and not admin.done()
        run.cancel()  # the watchdog stops the run
        done, _ = await asyncio.wait({run}, timeout=1.0)
        assert run in done and run.cancelled(), "the stopped run went on"
    finally:
        gate.set()
        await asyncio.wait({admin}, timeout=1.0)
    assert admin.cancelled()


async def test_an_admin_call_that_failed_fails_the_run() -> None:
    async def fails() -> None:
        raise RuntimeError("admin call bug")

    async def hangs() -> None:
        await asyncio.sleep(60)

    failed = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    hanging = asyncio.ensure_future(hangs())
    with pytest.raises(RuntimeError, match="admin call bug"):
        await FaultSchedule._stop_admin(_schedule(failed, hanging))  # type: ignore[arg-type]
    assert hanging.cancelled()
