"""One HTTP call to the key-value service, classified as Jepsen does: ``ok``, ``fail`` or ``info``.

``Outcome.kind`` is:

- ``"ok"``: the operation completed; ``value`` is what it returned (a read's value or
  ``None`` when absent, a cas's ``(applied, current)``, a write's log index);
- ``"fail"``: it certainly did not take effect: the connection was refused before the request
  was sent, a 4xx, a 503 from the redirect rule (no leader known: nothing was appended) or
  one that says nothing was done (``"outcome_unknown": false``, or ``"stopping": true``: a
  node whose stop began), a read that did not succeed (a read changes nothing, so it never
  needs ``info``);
- ``"info"``: unknown: a write that timed out, lost its connection after being sent, or was
  answered 503 for any other reason (``outcome_unknown``, quorum lost, the node stopped ...).

``307`` redirects (DESIGN §8) are followed, up to ``MAX_REDIRECTS``; the whole call, redirects
included, is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["Outcome", "KvHttp", "MAX_REDIRECTS"]

MAX_REDIRECTS = 4


@dataclass(frozen=True)
class Outcome:
    """How one call ended (see the module docstring); ``error`` says why it was not ok and
    ``node`` is the HTTP address that answered last."""

    kind: str
    value: Any = None
    error: str = ""
    node: str = ""


def _nothing_done_503(info: dict[str, Any]) -> bool:
    """Whether a write's 503 body says nothing was done (the service's contract, as
    ``kv.client`` reads it): never with an ``outcome_unknown`` other than ``false``; else
    the redirect rule's "no leader known" (a ``leader_id`` field), ``"outcome_unknown":
    false``, or a stopping node's ``"stopping": true``. A 503 with none of them (quorum
    lost, a timeout) is an unknown outcome."""
    unknown = info.get("outcome_unknown", None)
    if unknown is not None and unknown is not False:
        return False
    return "leader_id" in info or unknown is False or info.get("stopping") is True


def _quote(key: str) -> str:
    return urllib.parse.quote(key, safe="")


class KvHttp:
    """Calls on one aiohttp session (``async with KvHttp(timeout) as c``)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._connect_fail_is_safe = False

    async def __aenter__(self) -> KvHttp:
        conn = aiohttp.TCPConnector(limit=0, force_close=False)
        self._session = aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None))
        # aiohttp silently resends an idempotent request (PUT, DELETE, GET) once when the
        # connection breaks; a resent write that then meets a refused connection would look
        # like "fail" although the first attempt may have been applied. Turn that off; on an
        # aiohttp without the switch, a refused connection after a write counts as unknown.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
            self._connect_fail_is_safe = True
        else:
            self._connect_fail_is_safe = False
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, addr: str, path: str, *, data: bytes | None = None,
                    write: bool, parse: Callable[[int, bytes, str], Outcome]) -> Outcome:
        assert self._session is not None
        sent = False
        node = addr
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    url = f"http://{node}{path}"
                    sent = True  # from here on the request may have reached the server
                    try:
                        resp_cm = self._session.request(method, url, data=data, allow_redirects=False)
                        resp = await resp_cm.__aenter__()
                    except aiohttp.ClientConnectorError as e:  # never reached the server
                        kind = "fail" if self._connect_fail_is_safe or not write else "info"
                        return Outcome(kind, error=f"connect: {e.os_error}", node=node)
                    try:
                        body = await resp.read()
                    finally:
                        await resp_cm.__aexit__(None, None, None)
                    if resp.status == 307:
                        loc = resp.headers.get("Location", "")
                        parsed = urllib.parse.urlsplit(loc)
                        if not parsed.netloc:
                            return Outcome("fail", error="307 without Location", node=node)
                        node = parsed.netloc  # the 307 took no effect: ask the leader
                        continue
                    return parse(resp.status, body, node)
                return Outcome("fail", error="too many redirects", node=node)
        except TimeoutError:
            return Outcome("info" if write and sent else "fail", error="timeout", node=node)
        except (aiohttp.ClientError, OSError) as e:
            return Outcome("info" if write and sent else "fail", error=f"{type(e).__name__}: {e}", node=node)

    @staticmethod
    def _write_error(status: int, body: bytes, node: str) -> Outcome:
        try:
            info = json.loads(body)
        except ValueError:
            info = {}
        msg = f"{status} {info.get('error', '')}"
        if 400 <= status < 500:
            return Outcome("fail", error=msg, node=node)
        if status == 503 and isinstance(info, dict) and _nothing_done_503(info):
            return Outcome("fail", error=msg, node=node)
        return Outcome("info", error=msg, node=node)

    async def put(self, addr: str, key: str, value: str) -> Outcome:
        """``PUT /kv/{key}``."""
        def parse(status: int, body: bytes, node: str) -> Outcome:
            if status == 200:
                return Outcome("ok", json.loads(body)["index"], node=node)
            return self._write_error(status, body, node)
        return await self._call("PUT", addr, f"/kv/{_quote(key)}", data=value.encode(), write=True, parse=parse)

    async def delete(self, addr: str, key: str) -> Outcome:
        """``DELETE /kv/{key}``."""
        def parse(status: int, body: bytes, node: str) -> Outcome:
            if status == 200:
                return Outcome("ok", json.loads(body)["index"], node=node)
            return self._write_error(status, body, node)
        return await self._call("DELETE", addr, f"/kv/{_quote(key)}", write=True, parse=parse)

    async def cas(self, addr: str, key: str, expected: str | None, value: str | None) -> Outcome:
        """``POST /kv/{key}/cas``; ok value ``(applied, current)``."""
        def parse(status: int, body: bytes, node: str) -> Outcome:
            if status == 200:
                d = json.loads(body)
                return Outcome("ok", (bool(d["ok"]), d["current"]), node=node)
            return self._write_error(status, body, node)
        data = json.dumps({"expected": expected, "value": value}).encode()
        return await self._call("POST", addr, f"/kv/{_quote(key)}/cas", data=data, write=True, parse=parse)

    async def get(self, addr: str, key: str, consistency: str) -> Outcome:
        """``GET /kv/{key}?consistency=...``; ok value the string or ``None`` (404)."""
        def parse(status: int, body: bytes, node: str) -> Outcome:
            if status == 200:
                return Outcome("ok", body.decode(), node=node)
            if status == 404:
                try:
                    is_absent = json.loads(body).get("error") == "key not found"
                except (ValueError, AttributeError):
                    is_absent = False
                if is_absent:
                    return Outcome("ok", None, node=node)
            return Outcome("fail", error=f"{status} {body[:200]!r}", node=node)
        return await self._call("GET", addr, f"/kv/{_quote(key)}?consistency={consistency}", write=False,
                                parse=parse)

    async def status(self, addr: str) -> dict[str, Any] | None:
        """``GET /cluster/status`` of ``addr`` itself (no redirect), or ``None``."""
        assert self._session is not None
        try:
            async with asyncio.timeout(min(self.timeout, 2.0)):
                async with self._session.get(f"http://{addr}/cluster/status") as resp:
                    if resp.status != 200:
                        return None
                    return dict(await resp.json())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return None

    async def post_json(self, addr: str, path: str, obj: Any) -> tuple[int, Any]:
        """POST ``obj`` as JSON to ``addr`` (no redirect); ``(status, decoded body)``,
        ``(0, error)`` when the call failed."""
        assert self._session is not None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session.post(f"http://{addr}{path}", json=obj, allow_redirects=False) as resp:
                    raw = await resp.read()
                    try:
                        return resp.status, json.loads(raw)
                    except ValueError:
                        return resp.status, raw.decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return 0, repr(e)
