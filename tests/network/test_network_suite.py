"""The network conformance suite (openraft_py.testing.suite.network): it passes on the
in-process Router (with and without its wire codec; TCP: test_tcp_conformance.py), and
deliberately broken networks each fail it, the failed check naming what the network did."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from openraft_py.errors import RPCError, Unreachable
from openraft_py.network import Router
from openraft_py.testing import NetworkHandle, NetworkSuite, SuiteFailure, SuiteServer, run_network_suite
from openraft_py.testing.suite.base import BuilderError
from openraft_py.testing.suite.network import SOURCE, TARGET
from openraft_py.types import BasicNode, VoteResponse

pytestmark = pytest.mark.timeout(180)

ROUTER_CHECKS = [n for n in NetworkSuite.check_names() if n not in NetworkSuite.TIMEOUT_CHECKS]
"""The Router leaves its callers to bound their calls (documented): not its timeout checks."""


def router_builder(*, wire: bool = False) -> Any:
    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        router = Router(seed=1, wire=wire)
        router.register(TARGET, server)

        async def stop() -> None:
            router.unregister(TARGET)

        async def start() -> None:
            router.register(TARGET, server)

        yield NetworkHandle(router.factory(SOURCE), BasicNode("in-process"), stop_target=stop, start_target=start)

    return builder


def assert_passed(report: list[Any], skipped: set[str]) -> None:
    """Every check of ``report`` passed, those of ``skipped`` skipped."""
    assert [o.name for o in report if o.skipped] == sorted(skipped, key=[o.name for o in report].index)
    assert all(o.ok for o in report)


@pytest.mark.parametrize("wire", [False, True], ids=["direct", "wire"])
async def test_the_router_passes(wire: bool) -> None:
    report = await run_network_suite(router_builder(wire=wire), only=ROUTER_CHECKS)
    # No close on a Router factory. submit_append_entries is offered in both modes (without
    # the codec, the fast mode's direct hand-over to a server that has the method).
    skipped = {"close_ends_calls", "forget_then_new_client"}
    assert_passed(report, skipped)


async def test_an_empty_only_is_refused() -> None:
    """``only=[]`` ran no check and reported success."""
    with pytest.raises(ValueError, match="only names no check: give None to run every check of NetworkSuite"):
        await run_network_suite(router_builder(), only=[])


async def test_the_router_fails_the_timeout_check() -> None:
    # Documented: the Router does not keep to hard_ttl (its callers bound their calls).
    report = await run_network_suite(router_builder(), only=NetworkSuite.TIMEOUT_CHECKS, raise_on_failure=False)
    assert not report[0].ok
    assert "append_entries unanswered with hard_ttl=0.3: expected Timeout within 2.6s; the call did not return" in str(report[0].error)


async def test_a_builder_of_another_form_is_refused() -> None:
    with pytest.raises(BuilderError, match="pass the builder itself"):
        await run_network_suite(router_builder()(SuiteServer()))

    async def gives_a_tuple(server: SuiteServer) -> Any:
        return Router().factory(1), BasicNode("x")

    with pytest.raises(BuilderError, match="must give a NetworkHandle"):
        await run_network_suite(gives_a_tuple)

    # A storage suite's builder, of no argument: refused before any check runs.
    @contextlib.asynccontextmanager
    async def no_argument() -> AsyncIterator[NetworkHandle]:
        yield NetworkHandle(Router().factory(1), BasicNode("x"))

    with pytest.raises(BuilderError, match=r"must take one argument, the suite's server"):
        await run_network_suite(no_argument)  # type: ignore[arg-type]

    async def address_as_str(server: SuiteServer) -> Any:
        return NetworkHandle(Router().factory(1), "127.0.0.1:1")  # type: ignore[arg-type]

    with pytest.raises(BuilderError, match=r"NetworkHandle\.node must be the BasicNode"):
        await run_network_suite(address_as_str)

    async def config_as_dict(server: SuiteServer) -> Any:
        return NetworkHandle(Router().factory(1), BasicNode("x"), config={"max_payload_bytes": 1})  # type: ignore[arg-type]

    with pytest.raises(BuilderError, match=r"NetworkHandle\.config must be a Config"):
        await run_network_suite(config_as_dict)


async def test_a_capability_that_is_not_async_is_refused() -> None:
    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        router = Router()
        router.register(TARGET, server)
        yield NetworkHandle(router.factory(SOURCE), BasicNode("x"), stop_target=lambda: router.unregister(TARGET))  # type: ignore[arg-type, return-value]

    with pytest.raises(BuilderError, match=r"NetworkHandle\.stop_target must be an async function \(async def\)"):
        await run_network_suite(builder, only=["target_down_is_unreachable"])


# -- broken networks: each fails the suite, the check naming what it did -------------------------


class _Wrapping:
    """A ``RaftNetwork`` passing every call to ``inner`` (a working client)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def append_entries(self, req: Any, option: Any) -> Any:
        return await self.inner.append_entries(req, option)

    async def vote(self, req: Any, option: Any) -> Any:
        return await self.inner.vote(req, option)

    async def install_snapshot(self, req: Any, option: Any) -> Any:
        return await self.inner.install_snapshot(req, option)

    async def transfer_leader(self, req: Any, option: Any) -> Any:
        return await self.inner.transfer_leader(req, option)


class _SwallowsErrors(_Wrapping):
    """Answers a refused vote instead of raising the target's error."""

    async def vote(self, req: Any, option: Any) -> Any:
        try:
            return await self.inner.vote(req, option)
        except RPCError:
            return VoteResponse(req.vote, False, None)


class _ReordersFields(_Wrapping):
    """Decodes a vote answer's ``vote_granted`` and ``pre_vote`` the wrong way round."""

    async def vote(self, req: Any, option: Any) -> Any:
        r = await self.inner.vote(req, option)
        return VoteResponse(r.vote, r.pre_vote, r.last_log_id, r.vote_granted)


class _DropsDone(_Wrapping):
    """Loses a snapshot chunk's ``done`` flag."""

    async def install_snapshot(self, req: Any, option: Any) -> Any:
        return await self.inner.install_snapshot(msgspec.structs.replace(req, done=False), option)


class _WrongErrorType(_Wrapping):
    """Raises ``ConnectionRefusedError`` (an ``OSError``) for a target it cannot reach."""

    async def vote(self, req: Any, option: Any) -> Any:
        try:
            return await self.inner.vote(req, option)
        except Unreachable as e:
            raise ConnectionRefusedError(str(e)) from e


class _HangsOnCancel(_Wrapping):
    """Waits for the answer even when its caller cancels it."""

    async def vote(self, req: Any, option: Any) -> Any:
        task = asyncio.ensure_future(self.inner.vote(req, option))
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                continue


class _AnswersInCallOrder(_Wrapping):
    """Gives each answer to the oldest call waiting (no request ids: as if answers came
    back in the order the requests went out)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.waiting: deque[asyncio.Future[Any]] = deque()

    async def vote(self, req: Any, option: Any) -> Any:
        mine = asyncio.get_running_loop().create_future()
        self.waiting.append(mine)
        resp = await self.inner.vote(req, option)
        self.waiting.popleft().set_result(resp)
        return await mine


class _HeartbeatBehindTheWindow(_Wrapping):
    """Has ``heartbeat``, but carries every AppendEntries one at a time (one stream, no
    request ids): a heartbeat waits for the answers of those handed over before it."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.stream = asyncio.Lock()

    async def append_entries(self, req: Any, option: Any) -> Any:
        async with self.stream:
            return await self.inner.append_entries(req, option)

    async def heartbeat(self, req: Any, option: Any) -> Any:
        return await self.append_entries(req, option)


class _BrokenFactory:
    def __init__(self, inner: Any, client_cls: type[_Wrapping], by_address: dict[str, int] | None = None) -> None:
        self.inner = inner
        self.client_cls = client_cls
        self.by_address = by_address

    def new_client(self, target: int, node: BasicNode) -> Any:
        if self.by_address is not None:  # finds the node by its address alone
            target = self.by_address.get(node.addr, target)
        return self.client_cls(self.inner.new_client(target, node))


def broken_builder(client_cls: type[_Wrapping], *, by_address: bool = False) -> Any:
    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        async with router_builder()(server) as handle:
            handle.factory = _BrokenFactory(handle.factory, client_cls, {handle.node.addr: TARGET} if by_address else None)
            yield handle

    return builder


@pytest.mark.parametrize(
    "client_cls,by_address,check,message",
    [
        (_SwallowsErrors, False, "server_error_is_remote_error",
         "vote, the server's handler raising RuntimeError: expected RemoteError within 8s; the call returned VoteResponse"),
        (_ReordersFields, False, "vote_round_trip",
         "the vote response the call returned: expected VoteResponse(vote=<T5-N1:Q>, vote_granted=False, "
         "last_log_id=5-12, pre_vote=True), got VoteResponse(vote=<T5-N1:Q>, vote_granted=True, last_log_id=5-12, "
         "pre_vote=False)"),
        (_DropsDone, False, "install_snapshot_chunks_in_order",
         "the install_snapshot request the server was handed"),
        (_WrongErrorType, False, "target_down_is_unreachable",
         "vote to a target that is down: expected Unreachable within 2s; the call raised ConnectionRefusedError"),
        (_HangsOnCancel, False, "cancelled_call_does_not_poison_the_next",
         "vote cancelled while in flight did not end within 2.0s of the cancel"),
        (_AnswersInCallOrder, False, "concurrent_calls_get_their_own_answers",
         "the answer of call 1 of 48 in flight at once (vote)"),
        (_Wrapping, True, "another_node_at_the_address_is_unreachable",
         "append_entries to node 3 at node 2's address: expected Unreachable within 8s; the call returned AppendEntriesResponse"),
        (_HeartbeatBehindTheWindow, False, "heartbeat_if_any",
         "a heartbeat while an AppendEntries waits for its answer"),
    ],
    ids=["swallows-an-error", "reorders-fields", "drops-done", "wrong-exception-type", "hangs-on-cancel",
         "answers-mixed-up", "not-the-addressed-node", "heartbeat-behind-the-window"],
)
async def test_a_broken_network_fails_the_suite(client_cls: type[_Wrapping], by_address: bool, check: str, message: str) -> None:
    builder = broken_builder(client_cls, by_address=by_address)
    with pytest.raises(SuiteFailure) as info:
        await run_network_suite(builder, only=[check, "append_entries_heartbeat"])
    assert info.value.failed == [check]
    failure = info.value.report[-1] if info.value.report[-1].name == check else info.value.report[0]
    assert message in str(failure.error), str(failure.error)
    assert str(failure.error).startswith(f"[{check}] ")
    assert re.search(rf"^  {check}: AssertionError: \[{check}\] ", str(info.value), re.M)


class _NotAClientFactory:
    """``new_client`` returns ``made`` (not a network client) instead of a client."""

    def __init__(self, made: Any) -> None:
        self.made = made

    def new_client(self, target: int, node: BasicNode) -> Any:
        return self.made


class _NoVote:
    """Has every RPC method but ``vote``."""

    async def append_entries(self, req: Any, option: Any) -> Any:
        raise AssertionError("not called")

    async def install_snapshot(self, req: Any, option: Any) -> Any:
        raise AssertionError("not called")

    async def transfer_leader(self, req: Any, option: Any) -> Any:
        raise AssertionError("not called")


class _TaskFactory:
    """``new_client`` returns a task still running (``asyncio.ensure_future`` of an ``async``
    helper) instead of a client; every one kept in ``made``."""

    def __init__(self) -> None:
        self.made: list[asyncio.Task[None]] = []

    def new_client(self, target: int, node: BasicNode) -> Any:
        task = asyncio.ensure_future(asyncio.sleep(3600))
        self.made.append(task)
        return task


async def test_a_new_client_that_returns_a_task_fails_the_suite_and_the_task_is_cancelled() -> None:
    """The suite refused the task as an awaitable and left it running."""
    factory = _TaskFactory()

    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        async with router_builder()(server) as handle:
            handle.factory = factory
            yield handle

    with pytest.raises(SuiteFailure) as info:
        await run_network_suite(builder, only=["vote_round_trip"])
    assert "new_client returned an awaitable" in str(info.value.report[0].error)
    assert factory.made
    await asyncio.sleep(0)  # (a cancelled task ends at its next step)
    assert all(t.done() for t in factory.made), "a task new_client returned was left running"


@pytest.mark.parametrize(
    "made,lacks",
    [(None, "append_entries"), (_NoVote(), "vote")],
    ids=["none", "no-vote"],
)
async def test_a_new_client_that_is_not_a_client_fails_the_suite(made: Any, lacks: str) -> None:
    @contextlib.asynccontextmanager
    async def builder(server: SuiteServer) -> AsyncIterator[NetworkHandle]:
        async with router_builder()(server) as handle:
            handle.factory = _NotAClientFactory(made)
            yield handle

    with pytest.raises(SuiteFailure) as info:
        await run_network_suite(builder, only=["vote_round_trip"])
    assert info.value.failed == ["vote_round_trip"]
    error = str(info.value.report[0].error)
    assert "_NotAClientFactory.new_client(2, " in error, error
    assert f"which is not a network client (RaftNetwork): it has no method {lacks}" in error, error
