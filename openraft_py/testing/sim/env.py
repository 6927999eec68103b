"""The simulator's world: an event loop with virtual time, disks that lose what they had not
flushed, and node clocks that can pause. See ``docs/design/simulation.md``."""

from __future__ import annotations

import asyncio
import gc
import selectors
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ...storage import IOFlushed
from ...storage.memory import MemDisk, MemLogStore
from ...types import Entry, LogId, NodeId, Vote

__all__ = ["SimClock", "SimDisk", "SimLogStore", "SimStuck", "SimWorld", "VirtualTimeLoop", "run_in_virtual_time"]


class SimStuck(RuntimeError):
    """Nothing can run and no timer is set: the simulated program is deadlocked."""


# -- virtual time -----------------------------------------------------------------------------


class _InstantSelector(selectors.BaseSelector):
    """A selector that never waits: a wait of ``t`` seconds advances the virtual clock by
    ``t`` and reports no IO."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._map: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined]
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(selectors._fileobj_to_fd(fileobj))  # type: ignore[attr-defined]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimStuck("no runnable callback and no timer: the simulation is deadlocked")
        if timeout > 0:
            self._loop._now += timeout
        return []

    def get_map(self) -> dict[int, selectors.SelectorKey]:  # type: ignore[override]
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose ``time()`` is virtual: it starts at 0 and jumps to the
    next timer whenever nothing is ready. Single-threaded and deterministic."""

    # A run that spins without letting virtual time pass, or runs past this much virtual
    # time, is reported as stuck instead of hanging the test run.
    MAX_ITERATIONS_WITHOUT_TIME = 200_000
    MAX_VIRTUAL_SECONDS = 600.0

    def __init__(self) -> None:
        self._now = 0.0
        self._spins = 0
        self._spin_at = 0.0
        super().__init__(selector=_InstantSelector(self))

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        if self._now != self._spin_at:
            self._spin_at = self._now
            self._spins = 0
        self._spins += 1
        if self._spins > self.MAX_ITERATIONS_WITHOUT_TIME:
            raise SimStuck(f"livelock: {self._spins} loop iterations at virtual time {self._now:.6f}s")
        if self._now > self.MAX_VIRTUAL_SECONDS:
            raise SimStuck(f"ran past {self.MAX_VIRTUAL_SECONDS} virtual seconds")
        super()._run_once()  # type: ignore[misc]



def run_in_virtual_time(
    main: Callable[[], Coroutine[Any, Any, None]],
    teardown: Callable[[], Coroutine[Any, Any, None]],
    on_loop_error: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None],
    what: str,
    *,
    verdicts: tuple[type[Exception], ...] = (),
    finished: Callable[[], str | None] = lambda: None,
) -> tuple[str | None, float]:
    """Run ``main()`` to its end in a fresh ``VirtualTimeLoop``, then ``teardown()``, and
    close the loop: one seeded run of the simulator or of one of its scenarios. Returns the
    run's violation (``None``: none) and the virtual seconds it took.

    The violation is the message of an exception of ``verdicts`` that ``main`` raised, a
    ``SimStuck`` ("stuck: ..."), any other exception ("the WHAT raised ...", with its
    traceback: a crash of the run itself is reported with its seed), or else what
    ``finished()`` says, called as soon as ``main`` is over (before the teardown).
    ``on_loop_error`` is the loop's exception handler. Garbage that earlier runs in the
    process left is collected first, not during this run (a finalizer running mid-run would
    make the run depend on the runs before it)."""
    gc.collect()
    loop = VirtualTimeLoop()
    loop.set_exception_handler(on_loop_error)
    violation: str | None = None
    task = loop.create_task(main())
    try:
        loop.run_until_complete(task)
    except verdicts as e:
        violation = str(e)
    except SimStuck as e:
        violation = f"stuck: {e}"
    except Exception as e:  # noqa: BLE001 - a crash of the run itself is reported with its seed
        violation = f"the {what} raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        result = finished()
        if violation is None:
            violation = result
        # A stuck run tripped the watchdog: give the teardown a fresh budget.
        loop._spins = 0
        loop.MAX_VIRTUAL_SECONDS = loop._now + 60.0
        task.cancel()  # a run stopped by the watchdog must not go on during teardown
        try:
            loop.run_until_complete(teardown())
        except Exception:  # noqa: BLE001 - the run already failed or finished
            pass
        loop.close()
    return violation, loop._now

class SimWorld(Protocol):
    """What the simulated disks and clocks need of a run (``Simulation``, ``LeaseSkewRun``)."""

    paused: dict[NodeId, asyncio.Event]
    """The paused nodes: a node's clock sleeps until its event is set."""

    def disk_latency(self, disk: SimDisk) -> float:
        """The latency of one write to ``disk``, in seconds."""
        ...


# -- simulated disk ---------------------------------------------------------------------------


class SimDisk(MemDisk):
    """A ``MemDisk`` that knows what is flushed. Invariant: ``entries[: durable_end - offset]``
    are durable; entries after that are lost by ``crash()``."""

    def __init__(self) -> None:
        super().__init__()
        self.durable_end = 0
        self.gen = 0  # bumped by every truncation: older pending flushes no longer apply
        self.slow = False


class SimLogStore(MemLogStore):
    """A ``MemLogStore`` whose appends become durable after a random virtual delay, in
    order; votes are written after a delay too. Truncate and purge are durable on return
    (they also make everything before them durable, as a write-ahead log would)."""

    def __init__(self, disk: SimDisk, sim: SimWorld) -> None:
        super().__init__(disk)
        self._sim = sim
        self._handles: list[asyncio.TimerHandle] = []
        self._last_flush_at = 0.0

    @property
    def sdisk(self) -> SimDisk:
        return self._disk  # type: ignore[return-value]

    async def append(self, entries: list[Entry], callback: IOFlushed) -> None:
        # The memory store's own callback is ignored: durability is this store's simulated flush.
        await super().append(entries, IOFlushed(_ignore_io_result))
        disk = self.sdisk
        end = disk.offset + len(disk.entries)
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self._sim.disk_latency(disk), self._last_flush_at)
        self._last_flush_at = at
        self._handles.append(loop.call_at(at, self._flushed, end, disk.gen, callback))

    def _flushed(self, end: int, gen: int, callback: IOFlushed) -> None:
        disk = self.sdisk
        if gen == disk.gen and end > disk.durable_end:
            disk.durable_end = end
        callback.io_completed(None)

    async def save_vote(self, vote: Vote) -> None:
        await asyncio.sleep(self._sim.disk_latency(self.sdisk))
        await super().save_vote(vote)

    async def truncate_after(self, log_id: LogId | None) -> None:
        await super().truncate_after(log_id)
        disk = self.sdisk
        disk.gen += 1
        disk.durable_end = disk.offset + len(disk.entries)

    async def purge(self, log_id: LogId) -> None:
        await super().purge(log_id)
        disk = self.sdisk
        disk.durable_end = max(disk.durable_end, disk.offset)

    def crash(self) -> None:
        """The process died: pending flushes never happen, unflushed entries are gone."""
        for h in self._handles:
            h.cancel()
        self._handles.clear()
        disk = self.sdisk
        keep = max(0, disk.durable_end - disk.offset)
        del disk.entries[keep:]
        disk.durable_end = disk.offset + len(disk.entries)


def _ignore_io_result(error: BaseException | None) -> None:
    pass


class SimClock:
    """A node's clock: the loop's virtual time, times ``rate``; ``sleep`` also waits while the
    node is paused (its timers freeze, as in a long GC pause or SIGSTOP).

    ``rate`` is how fast this node's clock runs against simulated real time (the loop's
    time): at 0.9 its ``now()`` advances 0.9 s per real second and a ``sleep(s)`` lasts
    ``s / 0.9`` real seconds (clock-rate skew, ``Simulation(skew=...)``). The default 1.0
    is the loop's time itself, computed exactly as without a rate, so runs without skew are
    unchanged. ``ValueError`` unless ``rate`` is a finite number > 0."""

    def __init__(self, sim: SimWorld, node_id: NodeId, rate: float = 1.0) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 < rate < float("inf")):
            raise ValueError(f"a clock rate must be a finite number > 0, not {rate!r}")
        self._sim = sim
        self._id = node_id
        self.rate = float(rate)

    def now(self) -> float:
        t = asyncio.get_running_loop().time()
        return t if self.rate == 1.0 else t * self.rate

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if self.rate == 1.0 else seconds / self.rate)
        while True:
            ev = self._sim.paused.get(self._id)
            if ev is None or ev.is_set():
                return
            await ev.wait()
