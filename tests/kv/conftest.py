"""Every test of the key-value service starts with the HTTP API's bound on per-request log
lines reset (``http_api._CLIENT_MISTAKES``: kept per process, so lines an earlier test's bad
requests used up would not be logged in the next)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _client_mistake_lines_reset() -> Iterator[None]:
    try:
        from openraft_py.kv import http_api
    except ImportError:  # (the tests that run without the kv extra)
        yield
        return
    http_api._CLIENT_MISTAKES.reset()
    yield
    http_api._CLIENT_MISTAKES.reset()
