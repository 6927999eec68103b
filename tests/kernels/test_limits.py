"""The kernels at the top of the accepted ranges (``MAX_TERM``, ``MAX_INDEX``, ``MAX_NODE_ID``,
see ``openraft_py.validation``): both implementations hold every value the validation layer
accepts, plus the arithmetic the node does on them (``+ 1``, ``+ count``, a batch end), and
agree on every result."""

from __future__ import annotations

import types

from openraft_py.validation import MAX_INDEX, MAX_NODE_ID, MAX_TERM

BATCH = 300  # a replication batch end past the last index (Config.max_payload_entries)


def test_limits_fit_int64_with_headroom() -> None:
    int64_max = 2**63 - 1
    # term + 1 (a campaign) and index + a batch stay below the int64 ceiling and the
    # quorum kernel's INF_INDEX sentinel.
    assert MAX_TERM + 1 < int64_max
    assert MAX_INDEX + BATCH < int64_max
    assert MAX_NODE_ID <= int64_max


def test_logindex_at_the_limits(impl: types.SimpleNamespace) -> None:
    li = impl.LogIndex((MAX_TERM - 1, MAX_INDEX - 11), [], MAX_INDEX - 11)
    li.append_term(MAX_TERM - 1, MAX_INDEX - 10, 5)
    li.append_many([(MAX_TERM, MAX_INDEX - 5 + i) for i in range(6)])
    assert li.last() == (MAX_TERM, MAX_INDEX)
    assert li.last_index() == MAX_INDEX and li.last_term() == MAX_TERM
    assert li.term_at(MAX_INDEX) == MAX_TERM
    assert li.term_at(MAX_INDEX + 1) == -1
    assert li.has_log_id(MAX_TERM, MAX_INDEX)
    assert not li.has_log_id(MAX_TERM - 1, MAX_INDEX)
    assert li.term_first_index(MAX_TERM) == MAX_INDEX - 5
    assert li.first_conflict([(MAX_TERM, MAX_INDEX), (MAX_TERM, MAX_INDEX + 1)]) == 1
    assert li.key_log_ids() == [(MAX_TERM - 1, MAX_INDEX - 10), (MAX_TERM, MAX_INDEX - 5)]
    assert len(li) == 11
    li.truncate_after(MAX_INDEX - 1)
    assert li.last() == (MAX_TERM, MAX_INDEX - 1)
    li.purge(MAX_TERM, MAX_INDEX)
    assert li.purged() == (MAX_TERM, MAX_INDEX)
    assert li.first_index() == MAX_INDEX + 1
    assert li.last() == (MAX_TERM, MAX_INDEX)


def test_entry_cache_at_the_limits(impl: types.SimpleNamespace) -> None:
    c = impl.EntryCache()
    c.append(MAX_INDEX - 1, ["a", "b"])
    assert c.last_index() == MAX_INDEX
    assert c.get(MAX_INDEX - 1, MAX_INDEX + BATCH) == ["a", "b"]
    c.truncate_after(MAX_INDEX - 1)
    assert c.get(MAX_INDEX - 1, MAX_INDEX + 1) == ["a"]
    c.evict_upto(MAX_INDEX)
    assert len(c) == 0


def test_quorum_at_the_limits(impl: types.SimpleNamespace) -> None:
    ids = [MAX_NODE_ID, MAX_NODE_ID - 1, 0]
    assert impl.majority_committed([MAX_INDEX, MAX_INDEX, 0]) == MAX_INDEX
    assert impl.joint_committed([[MAX_INDEX, MAX_INDEX - 1, 0], [MAX_INDEX]]) == MAX_INDEX - 1
    assert impl.is_quorum_granted({MAX_NODE_ID, 0}, [ids])
    pt = impl.ProgressTable([ids], [MAX_NODE_ID - 2], MAX_NODE_ID)
    assert pt.update(MAX_NODE_ID, MAX_INDEX) == -1
    assert pt.update_many([(0, MAX_INDEX), (MAX_NODE_ID - 2, MAX_INDEX)]) == MAX_INDEX
    assert pt.matched(MAX_NODE_ID) == MAX_INDEX
    assert pt.reset(0, MAX_INDEX - 1) == MAX_INDEX - 1
    assert pt.voter_ids() == sorted(ids)
    assert pt.learner_ids() == [MAX_NODE_ID - 2]
    assert pt.target_ids() == sorted([0, MAX_NODE_ID - 1, MAX_NODE_ID - 2])
    assert pt.as_dict()[MAX_NODE_ID] == MAX_INDEX


def test_codec_at_the_limits(impl: types.SimpleNamespace) -> None:
    records = [(MAX_TERM, MAX_INDEX, impl.KIND_NORMAL, b"x"), (MAX_TERM, MAX_INDEX - 1, impl.KIND_BLANK, b"")]
    assert impl.decode_entries(impl.encode_entries(records)) == records
    assert impl.decode_index_key(impl.encode_index_key(MAX_INDEX)) == MAX_INDEX
