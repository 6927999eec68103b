"""The hot-path kernels, compiled when possible (installed as ``openraft_py._core``).

Each kernel comes in three files: ``_<name>_py.py`` is the readable, annotated reference;
``_<name>_c.pyx`` + ``.pxd`` is the Cython accelerator with the same behaviour (results
and exception types). This module picks one set:

- the pure twins when ``OPENRAFT_PY_NO_EXTENSIONS`` is on (``openraft_py._compiled.env_flag``), on
  non-CPython interpreters, or when a compiled module fails to import (with a
  ``RuntimeWarning``, unless none was built);
- the compiled modules otherwise.

``USING_EXTENSIONS`` says which. Type checkers always read the pure twins. Public
modules import kernels only from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "USING_EXTENSIONS",
    # quorum
    "INF_INDEX",
    "majority_committed",
    "joint_committed",
    "is_quorum_granted",
    "ProgressTable",
    # logindex
    "LogIndex",
    "EntryCache",
    # codec
    "CodecError",
    "FrameTooLarge",
    "KIND_BLANK",
    "KIND_NORMAL",
    "KIND_MEMBERSHIP",
    "encode_entries",
    "encode_entry_batch",
    "decode_entries",
    "plain_entries_prefix",
    "find_payload",
    "normal_data_bytes",
    "encode_index_key",
    "decode_index_key",
    "encode_frame",
    "encode_frames",
    "FrameReader",
    # kv
    "KV_SET_HEADER",
    "apply_kv_sets",
]

# The one switch for every extension of the package (``openraft_py/_compiled.py``).
from .._compiled import NO_EXTENSIONS

# Shared by both implementations.
from ._codec_py import (
    KIND_BLANK,
    KIND_MEMBERSHIP,
    KIND_NORMAL,
    CodecError,
    FrameTooLarge,
)
from ._kv_py import KV_SET_HEADER

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._codec_py import (
        FrameReader,
        decode_entries,
        decode_index_key,
        encode_entries,
        encode_entry_batch,
        encode_frame,
        encode_frames,
        encode_index_key,
        find_payload,
        normal_data_bytes,
        plain_entries_prefix,
    )
    from ._kv_py import apply_kv_sets
    from ._logindex_py import EntryCache, LogIndex
    from ._quorum_py import (
        INF_INDEX,
        ProgressTable,
        is_quorum_granted,
        joint_committed,
        majority_committed,
    )

    USING_EXTENSIONS = False
else:
    try:
        from ._codec_c import (
            FrameReader,
            decode_entries,
            decode_index_key,
            encode_entries,
            encode_entry_batch,
            encode_frame,
            encode_frames,
            encode_index_key,
            find_payload,
            normal_data_bytes,
            plain_entries_prefix,
        )
        from ._kv_c import apply_kv_sets
        from ._logindex_c import EntryCache, LogIndex
        from ._quorum_c import (
            INF_INDEX,
            ProgressTable,
            is_quorum_granted,
            joint_committed,
            majority_committed,
        )

        USING_EXTENSIONS = True
    except (ImportError, ValueError) as e:
        # No compiled kernels at all (a pure-Python build: ModuleNotFoundError, and no
        # kernel's extension file here): the twins, quietly. Compiled kernels that do not
        # load: the twins, with a warning. That is a broken or mixed build, e.g. a ``_kv_c``
        # built against another layout of a type that ``_codec_c`` declares (Cython's import
        # check: ``ValueError: ... size changed``), or an incomplete install (one kernel's
        # file missing beside the others); ``make build`` rebuilds them together.
        import importlib.machinery
        import os

        _here = os.path.dirname(os.path.abspath(__file__))
        _some_built = any(
            os.path.exists(os.path.join(_here, name + suffix))
            for name in ("_quorum_c", "_logindex_c", "_codec_c", "_kv_c")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
        )
        if not isinstance(e, ModuleNotFoundError) or _some_built:
            import warnings

            warnings.warn(
                f"the compiled kernels did not load ({type(e).__name__}: {e}); using the pure-Python twins",
                RuntimeWarning,
                stacklevel=2,
            )
        from ._codec_py import (
            FrameReader,
            decode_entries,
            decode_index_key,
            encode_entries,
            encode_entry_batch,
            encode_frame,
            encode_frames,
            encode_index_key,
            find_payload,
            normal_data_bytes,
            plain_entries_prefix,
        )
        from ._kv_py import apply_kv_sets
        from ._logindex_py import EntryCache, LogIndex
        from ._quorum_py import (
            INF_INDEX,
            ProgressTable,
            is_quorum_granted,
            joint_committed,
            majority_committed,
        )

        USING_EXTENSIONS = False
