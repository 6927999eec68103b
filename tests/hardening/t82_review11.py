"""Review of the day's merges (review 11): what the fixes merged in the last hour let
through.

A payload of a subclass of ``bytes`` or ``bytearray`` (taken since t10's ``numpy.bytes_``
fix) was copied with ``bytes(data)``, which calls the subclass's ``__bytes__``: that may
return an object of another ``bytes`` subclass, which ``bytes()`` hands back as it is. Its
``__len__`` is what ``client_write`` measured against ``Config.max_entry_bytes``: a payload
of any size passed as one of 0 bytes, and an object that is not ``bytes`` reached the log
(its own ``__eq__``, ``__hash__`` and pickling with it)."""

from __future__ import annotations

import asyncio

import pytest

from openraft_py import Normal
from openraft_py.errors import EntryTooLarge
from openraft_py.testing.cluster import Cluster
from openraft_py.validation import check_entry_sizes, check_payload, check_payloads

from .bad_input_helpers import assert_healthy, leader_and_follower, three

__all__ = ["three"]

pytestmark = pytest.mark.timeout(30)


class _ShortLiar(bytes):
    """A ``bytes`` subclass that says it is empty, whatever it holds."""

    def __len__(self) -> int:
        return 0


def _liar_of(size: int, base: type) -> object:
    """A ``base`` (``bytes`` or ``bytearray``) subclass of one byte whose ``__bytes__``
    answers ``size`` bytes that say they are none."""

    class Smuggler(base):  # type: ignore[misc, valid-type]
        def __bytes__(self) -> bytes:
            return _ShortLiar(b"x" * size)

    return Smuggler(b"a")


@pytest.mark.parametrize("base", [bytes, bytearray], ids=["bytes", "bytearray"])
@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
async def test_a_subclass_payload_is_logged_as_its_own_bytes(three: Cluster, base: type, many: bool) -> None:
    """What is logged is exactly ``bytes``, the payload's own contents (its buffer, one
    byte here), measured as such: not what its ``__bytes__`` says (``max_entry_bytes`` + 1
    bytes claiming to be none, which were logged)."""
    leader, _ = leader_and_follower(three)
    limit = leader.config.max_entry_bytes
    data = _liar_of(limit + 1, base)
    call = leader.client_write_many([data]) if many else leader.client_write(data)  # type: ignore[arg-type, list-item]
    resp = await asyncio.wait_for(call, 10.0)
    index = (resp[0] if many else resp).log_id.index  # type: ignore[index, union-attr]
    await three.wait_applied(index, timeout=5.0)
    for disk in three.disks.values():
        e = disk.entries[index - disk.offset]
        assert type(e.payload) is Normal
        assert type(e.payload.data) is bytes, f"logged a {type(e.payload.data).__name__}"
        assert bytes.__len__(e.payload.data) <= limit, f"logged {bytes.__len__(e.payload.data)} bytes, limit {limit}"
        assert e.payload.data == b"a"
    await assert_healthy(three)


def test_check_payload_copies_a_subclass_to_exact_bytes() -> None:
    """``check_payload`` (the compiled module) itself: its answer is ``bytes``, never a
    subclass, for a subclass of ``bytes`` or ``bytearray`` with or without ``__bytes__``."""
    for data in (_ShortLiar(b"xyz"), _liar_of(7, bytes), _liar_of(7, bytearray)):
        out = check_payload(data)
        assert type(out) is bytes, f"{type(data).__name__} gave a {type(out).__name__}"
        assert out == memoryview(data).tobytes()  # type: ignore[arg-type]
    with pytest.raises(EntryTooLarge):
        check_entry_sizes(check_payloads([_ShortLiar(b"xyz")]), 2)


def test_the_kv_service_adds_no_class_to_the_library_error_tree() -> None:
    """``RaftError``'s subclasses are the library's errors, drawn in
    docs/reference/errors.md (``tests/test_docs.py`` compares the two): the key-value
    service's ``LearnerInForward`` was a ``ForwardToLeader`` subclass, so the drawing was
    wrong once ``openraft_py.kv`` was imported, and the docs test failed in any run that
    imported it first (it passed alone)."""
    import openraft_py
    import openraft_py.kv.http_api  # (every class of the service's answers)
    import openraft_py.kv.node

    def walk(cls: type) -> list[type]:
        return [cls] + [c for sub in cls.__subclasses__() for c in walk(sub)]

    kv = [f"{c.__module__}.{c.__qualname__}" for c in walk(openraft_py.RaftError)
          if c.__module__.startswith("openraft_py.kv")]
    assert not kv, f"the key-value service subclasses the library's errors: {kv}"
