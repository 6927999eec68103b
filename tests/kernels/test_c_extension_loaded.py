"""Fails when the compiled kernels should have been picked and were not (STYLE 18)."""

import os
import types

import pytest

import openraft_py._core as core

NO_EXTENSIONS = os.environ.get("OPENRAFT_PY_NO_EXTENSIONS", "") not in ("", "0")

NAMES = {
    "quorum": ["majority_committed", "joint_committed", "is_quorum_granted", "ProgressTable"],
    "logindex": ["LogIndex", "EntryCache"],
    "codec": ["encode_entries", "decode_entries", "encode_entry_batch", "encode_index_key", "decode_index_key",
              "encode_frame", "encode_frames", "FrameReader", "plain_entries_prefix", "find_payload"],
    "kv": ["apply_kv_sets"],
}


def test_dispatcher_picked_the_expected_implementation() -> None:
    suffix = "py" if NO_EXTENSIONS else "c"
    assert core.USING_EXTENSIONS is (not NO_EXTENSIONS)
    for kernel, names in NAMES.items():
        for name in names:
            obj = getattr(core, name)
            assert obj.__module__ == f"openraft_py._core._{kernel}_{suffix}", (name, obj)


def test_compiled_objects_are_compiled() -> None:
    if NO_EXTENSIONS:
        pytest.skip("OPENRAFT_PY_NO_EXTENSIONS is set: the pure-Python build has no compiled objects")
    # Not a skip from here on: without the variable the compiled modules must have loaded.
    assert core.USING_EXTENSIONS, "the compiled kernels did not load (build them: make build)"
    import openraft_py._core._quorum_c as quorum_c

    assert quorum_c.__file__.endswith((".so", ".pyd"))
    # Compiled functions, where the twins' are Python functions: builtins (a release build
    # turns Cython's ``binding`` off for the call's speed) or, in a debug build with line
    # tracing, Cython's own function type.
    for fn in (core.encode_entries, core.majority_committed, core.apply_kv_sets, core.LogIndex.term_at):
        assert not isinstance(fn, types.FunctionType), fn
        assert type(fn).__name__ in ("builtin_function_or_method", "method_descriptor",
                                     "cython_function_or_method"), fn
    # cdef classes are static extension types, not Python classes with __slots__.
    assert "__slots__" not in vars(core.LogIndex)


def test_shared_exception_types() -> None:
    from openraft_py._core import _codec_py

    assert core.CodecError is _codec_py.CodecError
    assert issubclass(core.FrameTooLarge, core.CodecError)
    assert issubclass(core.CodecError, ValueError)
