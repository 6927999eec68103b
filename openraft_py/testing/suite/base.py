"""The machinery shared by the conformance suites: the storage ones (``log_store``,
``state_machine``), whose builder contract is below, and ``network``, which takes a builder
of its own (``Suite.validate_builder`` and ``Suite.open_handle`` are what it overrides).

The builder contract
--------------------

Both suites take a ``builder``: a zero-argument callable that makes a **fresh, empty** store
pair for one check. It returns either

- an async context manager (the recommended form: the suite enters it before the check and
  exits it afterwards, so stores holding files or threads are closed), or
- an awaitable (an ``async def`` builder): no clean-up is done,

and what it yields / returns is either a ``(log_store, state_machine)`` tuple or a
``StoreHandle``. A ``StoreHandle`` adds optional capabilities:

- ``reopen``: an async callable that closes the current store objects and returns a new
  ``(log_store, state_machine)`` pair over the *same durable data* (a process restart). The
  checks that need it are reported as skipped without it.
- ``normal_data(i)``: the data of the ``i``-th ``Normal`` entry the state-machine checks
  apply (default: ``encode_kv(KvSet(f"key{i}", f"value{i}"))``, the KV model of
  ``MemStateMachine``). Give it when your state machine only accepts its own commands.
- ``state_view(sm)``: an async callable returning a comparable image of the application
  state (for example ``sm.data``); the snapshot checks then also compare the state of the
  source and the target of a snapshot. Without it they compare applied state, meta and data.

A builder of another form (``builder()`` passed instead of ``builder``, a synchronous
context manager) or one that gives something else raises ``BuilderError`` (a ``TypeError``)
at once, before any check runs; so does a ``StoreHandle`` whose ``normal_data`` does not
give ``bytes``, or whose ``reopen`` or ``state_view`` is not an async function, at the first
check that uses it.

Every check gets its own fresh pair. A check that only concerns the log store still receives
the state machine: pair your log store with ``MemStateMachine()`` if you have no state machine
of your own (and vice versa with ``MemLogStore()``).

Reports
-------

``Suite.run_all`` returns one ``CheckOutcome(name, ok, error)`` per check run, in order.
``error`` is the exception of a failed check, ``CheckSkipped`` for a skipped one (``ok`` is
then ``True``) and ``None`` otherwise. Unless ``raise_on_failure=False``, failed checks are
raised together as one ``SuiteFailure`` listing every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Union

from ...errors import restore_error
from ...storage import IOFlushed, RaftLogStorage, RaftStateMachine
from ...storage.memory import KvSet, encode_kv
from ...types import BLANK, Entry, LogId, Membership, Normal
from ...validation import check_seconds

__all__ = [
    "Builder",
    "BuilderError",
    "CheckFn",
    "CheckOutcome",
    "CheckSkipped",
    "StoreHandle",
    "Suite",
    "SuiteFailure",
]


def _default_normal_data(i: int) -> bytes:
    return encode_kv(KvSet(f"key{i}", f"value{i}"))


@dataclass
class StoreHandle:
    """The store pair under test and its optional capabilities (see the module docstring).

    The suite replaces ``log_store`` and ``state_machine`` when it calls ``reopen``; the
    builder's clean-up should close whatever the handle holds at exit.
    """

    log_store: RaftLogStorage
    state_machine: RaftStateMachine
    reopen: Callable[[], Awaitable[tuple[RaftLogStorage, RaftStateMachine]]] | None = None
    normal_data: Callable[[int], bytes] = field(default=_default_normal_data)
    state_view: Callable[[RaftStateMachine], Awaitable[Any]] | None = None
    another: Callable[[], AbstractAsyncContextManager[StoreHandle]] | None = field(default=None, repr=False)
    """Set by the suite (not the builder): opens a second fresh pair from the same builder,
    for checks that move a snapshot from one store to another."""

    async def restart(self) -> None:
        """Reopen the stores over the same durable data; raises ``CheckSkipped`` when the
        builder gave no ``reopen``."""
        if self.reopen is None:
            raise CheckSkipped("the builder gives no reopen()")
        made = self.reopen()
        if not inspect.isawaitable(made):
            raise BuilderError(
                f"StoreHandle.reopen must be an async function (async def) giving a new (log_store, state_machine) "
                f"pair, got {self.reopen!r:.80}, which returned {type(made).__name__} {made!r:.80}"
            )
        pair = await made
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise BuilderError(f"StoreHandle.reopen() must give a new (log_store, state_machine) tuple, got {type(pair).__name__} {pair!r:.100}")
        self.log_store, self.state_machine = pair

    async def view(self) -> Any:
        """``state_view(state_machine)``, or ``None`` without a ``state_view``;
        ``BuilderError`` when ``state_view`` gives something that cannot be awaited."""
        if self.state_view is None:
            return None
        made = self.state_view(self.state_machine)
        if not inspect.isawaitable(made):
            raise BuilderError(
                f"StoreHandle.state_view must be an async function (async def) of the state machine, got "
                f"{self.state_view!r:.80}, which returned {type(made).__name__} {made!r:.80}"
            )
        return await made


_Built = Union[StoreHandle, "tuple[RaftLogStorage, RaftStateMachine]"]
Builder = Callable[[], AbstractAsyncContextManager[Any] | Awaitable[Any]]
"""A zero-argument factory of fresh store pairs (see the module docstring)."""

CheckFn = Callable[[StoreHandle], Awaitable[None]]
"""One check: an async function of a fresh ``StoreHandle``; raises on failure."""

AnyCheckFn = Callable[[Any], Awaitable[None]]
"""One check of any suite: an async function of the handle its suite opens (a
``StoreHandle``, or the network suite's ``NetworkHandle``)."""


class CheckSkipped(Exception):
    """Raised by a check that cannot run with this builder (e.g. no ``reopen``)."""


class CheckOutcome(NamedTuple):
    """The result of one check: ``ok`` is ``False`` iff ``error`` is a failure."""

    name: str
    ok: bool
    error: BaseException | None

    @property
    def skipped(self) -> bool:
        """Whether the check was skipped (``error`` is a ``CheckSkipped``)."""
        return isinstance(self.error, CheckSkipped)


class SuiteFailure(AssertionError):
    """Some checks failed. ``failed`` names them, ``report`` holds every outcome."""

    def __init__(self, suite: str, report: list[CheckOutcome]) -> None:
        self.report = report
        self.failed: list[str] = [o.name for o in report if not o.ok]
        lines = [f"{suite}: {len(self.failed)} of {len(report)} checks failed:"]
        for o in report:
            if not o.ok:
                lines.append(f"  {o.name}: {type(o.error).__name__}: {o.error}")
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as its message and fields (the report: each outcome's error must
        # pickle too), without calling __init__ again: see openraft_py.errors.RaftError.
        return (restore_error, (type(self), self.args, self.__dict__))


class BuilderError(TypeError):
    """The builder is not of a form the suites take (see the module docstring). Raised at
    once by ``Suite.run_all`` and ``Suite.run_one``: it is not a failure of a check."""


def _check_builder(builder: Any) -> None:
    """``BuilderError`` unless ``builder`` is a callable that is not itself what a builder
    gives (an async context manager, a context manager or an awaitable: ``builder()``
    passed instead of ``builder``; an ``asynccontextmanager``'s context manager is callable,
    as a decorator, and failed every check with "missing 1 required positional argument:
    'func'"). A class whose instances are async context managers is a builder."""
    made_already = not isinstance(builder, type) and (
        hasattr(builder, "__aenter__") or hasattr(builder, "__enter__") or inspect.isawaitable(builder)
    )
    if not callable(builder) or made_already:
        raise BuilderError(
            f"the builder must be a zero-argument callable that makes a fresh store pair for each check, got "
            f"{type(builder).__name__} {builder!r:.100}: pass the builder itself (builder, not builder())"
        )


def _check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is ``None`` (no bound) or a finite number of seconds above 0;
    ``TypeError`` for anything else than an ``int`` or a ``float`` (``bool`` included),
    ``ValueError`` for 0, a negative number, NaN or an infinity (``check_seconds``). Each
    check is bounded by it: ``timeout="5"`` failed every check with a ``TypeError`` from
    ``asyncio.wait_for`` (and a warning of a coroutine never awaited per check), 0 or less
    failed every check as timed out."""
    if timeout is None:
        return None
    return check_seconds(timeout, "timeout")


@contextlib.asynccontextmanager
async def _open(builder: Builder) -> AsyncIterator[StoreHandle]:
    """Enter ``builder()`` whichever form it has and normalize what it gives."""
    made = builder()
    if hasattr(made, "__aenter__"):
        async with made as built:  # type: ignore[union-attr]
            handle = _as_handle(built)
            handle.another = lambda: _open(builder)
            yield handle
    elif inspect.isawaitable(made):
        handle = _as_handle(await made)
        handle.another = lambda: _open(builder)
        yield handle
    elif hasattr(made, "__enter__"):
        raise BuilderError(
            f"builder() must return an async context manager or an awaitable, got the synchronous context manager "
            f"{made!r:.100}: make it a @contextlib.asynccontextmanager (not @contextlib.contextmanager)"
        )
    else:
        raise BuilderError(
            f"builder() must return an async context manager or an awaitable, got {type(made).__name__} {made!r:.100}: "
            f"make it an @contextlib.asynccontextmanager, or an async def"
        )


def _as_handle(built: Any) -> StoreHandle:
    if isinstance(built, StoreHandle):
        _check_handle(built)
        return built
    if isinstance(built, tuple) and len(built) == 2:
        return StoreHandle(built[0], built[1])
    raise BuilderError(
        f"the builder must give a StoreHandle or a (log_store, state_machine) tuple, got {type(built).__name__} {built!r:.100}"
    )


def _check_handle(handle: StoreHandle) -> None:
    """``BuilderError`` unless ``handle``'s capabilities have the forms the module docstring
    gives: ``normal_data`` a function of an index giving ``bytes`` (tried with 1),
    ``reopen`` and ``state_view`` ``None`` or callable. (A ``normal_data`` giving ``str``
    failed the snapshot checks with the state machine's own decoding errors, one giving
    ``None`` passed, and ``normal_data=None`` failed most checks with "'NoneType' object is
    not callable".)"""
    normal_data = handle.normal_data
    if not callable(normal_data):
        raise BuilderError(
            f"StoreHandle.normal_data must be a function of an entry's index giving its data (bytes), "
            f"got {type(normal_data).__name__} {normal_data!r:.80}"
        )
    try:
        data = normal_data(1)
    except TypeError as e:
        raise BuilderError(f"StoreHandle.normal_data(1) raised TypeError: {e} (normal_data takes an entry's index)") from e
    if not isinstance(data, bytes):
        raise BuilderError(f"StoreHandle.normal_data(1) must give bytes (a Normal entry's data), got {type(data).__name__} {data!r:.80}")
    for name in ("reopen", "state_view"):
        fn = getattr(handle, name)
        if fn is not None and not callable(fn):
            raise BuilderError(f"StoreHandle.{name} must be an async function or None, got {type(fn).__name__} {fn!r:.80}")


class Suite:
    """A named set of checks. Subclasses fill ``checks`` with the ``check`` decorator of a
    ``CheckRegistry``; ``run_all`` runs them."""

    name: ClassVar[str] = "Suite"
    checks: ClassVar[dict[str, AnyCheckFn]] = {}

    @classmethod
    def validate_builder(cls, builder: Any) -> None:
        """``BuilderError`` at once for a builder of a form this suite does not take (the
        store suites: ``_check_builder``; the network suite has its own)."""
        _check_builder(builder)

    @classmethod
    def open_handle(cls, builder: Any) -> AbstractAsyncContextManager[Any]:
        """Open what one check runs on from ``builder`` (the store suites: a fresh store pair
        as a ``StoreHandle``, ``_open``; the network suite overrides it)."""
        return _open(builder)

    @classmethod
    def check_names(cls) -> list[str]:
        """Every check's name, in run order."""
        return list(cls.checks)

    @classmethod
    async def run_all(
        cls,
        builder: Builder | Callable[..., Any],
        *,
        only: Iterable[str] | None = None,
        raise_on_failure: bool = True,
        timeout: float | None = 10.0,
    ) -> list[CheckOutcome]:
        """Run every check (or those named in ``only``), each on a fresh pair from
        ``builder`` and bounded by ``timeout`` seconds (``None``: no bound): the check
        itself, and apart from it the builder giving its stores and its clean-up. A check
        that hangs there fails saying where (a store call that ignores its cancellation is
        left running after ``CANCEL_GRACE`` more seconds), and the suite goes on.

        Returns the report. Raises ``SuiteFailure`` naming every failed check unless
        ``raise_on_failure`` is false, ``ValueError`` for an unknown name in ``only`` or an
        empty ``only`` (it ran nothing and reported success),
        ``TypeError`` for an ``only`` that is one string (a string iterates as its letters),
        ``TypeError`` or ``ValueError`` at once for a ``timeout`` that is not a number of
        seconds above 0 (``_check_timeout``), and ``BuilderError`` (a ``TypeError``) at once
        for a builder of a form the suites do not take, or that gives something else than a
        store pair.
        """
        cls.validate_builder(builder)
        _check_timeout(timeout)
        names = cls.check_names()
        if isinstance(only, str):
            raise TypeError(f"only must be a list of check names, not a str: only=[{only!r}]")
        if only is not None:
            wanted = list(only)
            if not wanted:
                # (It ran no check and reported success: an empty filter is a caller's mistake.)
                raise ValueError(f"only names no check: give None to run every check of {cls.name}")
            unknown = sorted(set(wanted) - set(names))
            if unknown:
                raise ValueError(f"{cls.name} has no check named {unknown}; checks: {names}")
            names = [n for n in names if n in set(wanted)]
        report: list[CheckOutcome] = []
        for name in names:
            report.append(await cls.run_one(builder, name, timeout=timeout))
        if raise_on_failure and any(not o.ok for o in report):
            raise SuiteFailure(cls.name, report)
        return report

    @classmethod
    async def run_one(cls, builder: Builder | Callable[..., Any], name: str, *, timeout: float | None = 10.0) -> CheckOutcome:
        """Run the check ``name`` on a fresh pair, bounded as in ``run_all``; never raises
        for a failed check (``BuilderError`` for a builder the suites do not take,
        ``TypeError`` or ``ValueError`` for a ``timeout`` that is not a number of seconds
        above 0: see ``run_all``). The check runs in a task of its own, watched by this one."""
        cls.validate_builder(builder)
        _check_timeout(timeout)
        fn = cls.checks[name]
        phase = _Phase()
        task = asyncio.ensure_future(_run_check(cls.open_handle(builder), fn, timeout, phase))
        try:
            hung = await _watch(task, phase, timeout)
        except BaseException:  # run_one itself stopped (its caller's timeout, Ctrl-C)
            await _stop(task)
            raise
        if hung:  # (only with a timeout)
            assert timeout is not None
            # Described before it is stopped: stopping it may move it on to its clean-up.
            hang = phase.describe_hang(timeout)
            await _stop(task)
            return CheckOutcome(name, False, AssertionError(f"[{name}] {hang}"))
        if task.cancelled():  # (no one cancelled it: run_one only cancels a task it reports hung)
            return CheckOutcome(name, False, AssertionError(
                f"[{name}] the store raised asyncio.CancelledError, with no one cancelling the check (a call that "
                "awaited a task or future of its own that was cancelled?)"))
        try:
            task.result()
        except BuilderError:
            raise
        except CheckSkipped as e:
            return CheckOutcome(name, True, e)
        except AssertionError as e:
            return CheckOutcome(name, False, AssertionError(f"[{name}] {e}"))
        except TimeoutError:
            return CheckOutcome(name, False, AssertionError(f"[{name}] timed out after {timeout}s"))
        except Exception as e:  # noqa: BLE001 - a store that raises fails the check, it does not stop the suite
            return CheckOutcome(name, False, e)
        return CheckOutcome(name, True, None)


CANCEL_GRACE = 1.0
"""Seconds a check that timed out is given to end once cancelled, before it is reported as
hung (a store call that catches ``asyncio.CancelledError``) and left behind."""

_ABANDONED: set[asyncio.Task[Any]] = set()
"""Checks and calls that did not end when cancelled (``abandon``), referenced until they end
(the loop keeps only weak references to its tasks)."""


def abandon(task: asyncio.Task[Any]) -> None:
    """Leave ``task`` behind: a check or a call that did not end when cancelled (a store or
    transport call that catches ``asyncio.CancelledError``). It stays referenced from
    ``_ABANDONED`` and runs on while its loop runs; its end is read when it comes (asyncio
    reports an exception never retrieved). It is taken out of the loop's register of tasks
    (``asyncio.all_tasks``): the end of ``asyncio.run`` cancels every task of its loop and
    waits for them all, and waited for good for such a task, after the suite had returned
    its report. A task still pending when its loop closes is never run again (its
    ``Task was destroyed but it is pending`` at exit is not logged: the suite reported it).

    NB: the register is asyncio's (``asyncio.tasks._unregister_task``, CPython 3.11 to
    3.13); an interpreter where that does not take a task out (``all_tasks`` still lists it)
    leaves it there, and ``asyncio.run`` waits for it as before."""
    _ABANDONED.add(task)
    task.add_done_callback(_ABANDONED.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    for name in ("_unregister_task", "_unregister_eager_task"):  # (the second: 3.12's eager tasks)
        forget = getattr(asyncio.tasks, name, None)
        if forget is not None:
            forget(task)
    with contextlib.suppress(AttributeError):  # (a task of another implementation)
        task._log_destroy_pending = False  # type: ignore[attr-defined]


class _Phase:
    """Where a check's task is, for ``run_one``'s watchdog: ``"open"`` (the builder giving
    its stores), ``"check"`` or ``"close"`` (the builder's clean-up), since when (the
    loop's clock), and how the check ended (``ended``: ``None`` while it runs or if it
    passed, else its exception)."""

    def __init__(self) -> None:
        self.name = "open"
        self.since = asyncio.get_running_loop().time()
        self.ended: BaseException | None = None

    def enter(self, name: str) -> None:
        self.name = name
        self.since = asyncio.get_running_loop().time()

    def limit(self, timeout: float) -> float:
        """When the phase counts as hung: ``timeout`` after it began, plus ``CANCEL_GRACE``
        for the check itself (its own ``asyncio.timeout`` fires first and cancels it)."""
        return self.since + timeout + (CANCEL_GRACE if self.name == "check" else 0.0)

    def describe_hang(self, timeout: float) -> str:
        """The failure of a check whose task hung in this phase."""
        if self.name == "open":
            return f"the builder did not give its stores within {timeout}s"
        if self.name == "check":
            return (f"timed out after {timeout}s and did not end when cancelled within {CANCEL_GRACE}s "
                    "(a store call that catches asyncio.CancelledError?); it was left running")
        if isinstance(self.ended, TimeoutError):
            what = f"timed out after {timeout}s"
        elif self.ended is not None:
            what = f"failed ({type(self.ended).__name__}: {str(self.ended)[:200]})"
        else:
            what = "passed"
        return f"{what}, then the builder's clean-up (its exit) did not end within {timeout}s"


async def _run_check(
    opened: AbstractAsyncContextManager[Any], fn: AnyCheckFn, timeout: float | None, phase: _Phase
) -> None:
    """Open the handle, run the check under ``timeout``, close the handle; ``phase`` says
    where it is. (The task ``run_one`` watches.) A check that ends without error after its
    timeout fired fails: a store call caught the cancellation and the check went on."""
    async with opened as handle:
        phase.enter("check")
        try:
            async with asyncio.timeout(timeout) as deadline:
                await fn(handle)
            if deadline.expired():  # (the timeout raises only when its cancellation comes back out)
                raise AssertionError(f"timed out after {timeout}s, and went on: a store call caught "
                                     "asyncio.CancelledError (a store must let its cancellation through)")
        except BaseException as e:
            phase.ended = e
            raise
        finally:
            phase.enter("close")


async def _watch(task: asyncio.Task[None], phase: _Phase, timeout: float | None) -> bool:
    """Wait for ``task``; ``True`` if it hung: a phase outlasted its limit (``_Phase.limit``).
    With no ``timeout``, wait as long as it runs."""
    if timeout is None:
        await asyncio.wait({task})
        return False
    loop = asyncio.get_running_loop()
    while True:
        limit = phase.limit(timeout)
        done, _ = await asyncio.wait({task}, timeout=max(limit - loop.time(), 0.0))
        if done:
            return False
        if phase.limit(timeout) <= loop.time():  # (not moved on to the next phase meanwhile)
            return True


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait up to ``CANCEL_GRACE`` for it; left behind (``abandon``) if
    it does not end. Its end is read either way (asyncio reports an exception never
    retrieved), as ``run_one``, stopped itself, will not."""
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not done:
        abandon(task)


class CheckRegistry:
    """An ordered ``name -> check`` dict filled by the ``check`` decorator."""

    def __init__(self) -> None:
        self.checks: dict[str, AnyCheckFn] = {}

    def check(self, fn: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """Register ``fn`` under its ``__name__`` (which must be unique)."""
        if fn.__name__ in self.checks:
            raise ValueError(f"duplicate check {fn.__name__}")
        if not fn.__doc__:
            raise ValueError(f"check {fn.__name__} needs a docstring")
        self.checks[fn.__name__] = fn
        return fn


# -- helpers for checks ---------------------------------------------------------------------


def expect(actual: Any, expected: Any, what: str) -> None:
    """Raise ``AssertionError`` naming ``what`` unless ``actual == expected``."""
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def blank(term: int, index: int) -> Entry:
    """A blank entry at ``LogId(term, index)``."""
    return Entry(LogId(term, index), BLANK)


def normal(term: int, index: int, data: bytes | None = None) -> Entry:
    """A normal entry at ``LogId(term, index)`` (data derived from the id by default)."""
    return Entry(LogId(term, index), Normal(data if data is not None else f"d{term}-{index}".encode()))


def member(term: int, index: int, *configs: set[int]) -> Entry:
    """A membership entry at ``LogId(term, index)`` with the voter sets ``configs``."""
    return Entry(LogId(term, index), Membership.new(list(configs)))


def ents(start: int, stop: int, term: int = 1) -> list[Entry]:
    """Normal entries ``[start, stop)`` of ``term``."""
    return [normal(term, i) for i in range(start, stop)]


class RecordingFlushed(IOFlushed):
    """An ``IOFlushed`` bound to the running loop that counts ``io_completed`` calls
    (including a forbidden second one) and lets a check await completion."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.calls = 0
        self.errors: list[BaseException | None] = []
        self.event = asyncio.Event()
        super().__init__(self._done_fn, loop)

    def _done_fn(self, error: BaseException | None) -> None:
        self.errors.append(error)
        self.event.set()

    def io_completed(self, error: BaseException | None = None) -> None:
        self.calls += 1
        super().io_completed(error)

    async def wait(self, timeout: float = 5.0) -> None:
        """Wait for ``io_completed``; raise ``AssertionError`` if it does not come or
        reports an error."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            raise AssertionError(f"append: IOFlushed.io_completed not called within {timeout}s") from None
        if self.errors[0] is not None:
            raise AssertionError(f"append: IOFlushed reported an error: {self.errors[0]!r}")


async def append(store: RaftLogStorage, entries: list[Entry]) -> RecordingFlushed:
    """Append ``entries`` and wait until they are durable; return the callback. The store
    gets a copy of the list: a store that keeps the list it is given (see the check
    ``append_does_not_keep_the_list``) cannot change the checks' own (``restore.LOG``)."""
    cb = RecordingFlushed()
    await store.append(list(entries), cb)
    await cb.wait()
    return cb


async def read_all(store: RaftLogStorage) -> list[Entry]:
    """Every entry the store holds (from the first non-purged index to the last)."""
    st = await store.get_log_state()
    start = 0 if st.last_purged_log_id is None else st.last_purged_log_id.index + 1
    stop = 0 if st.last_log_id is None else st.last_log_id.index + 1
    return await store.try_get_log_entries(start, stop)


def ids(entries: list[Entry]) -> list[LogId]:
    """The log ids of ``entries``."""
    return [e.log_id for e in entries]
