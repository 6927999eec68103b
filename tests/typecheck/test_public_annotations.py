"""The public API (``openraft_py.__all__``) is annotated with real types: ``Any`` only where
the value is the application's own and opaque to the library (what a state machine's
``apply`` answers). An ``Any`` elsewhere lets a strict user's mistake through ``mypy
--strict`` unnoticed (``NotAllowed.vote.trem``, a ``reply`` callback that cannot take an
exception)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator

import openraft_py

# (public name, member, parameter or "return"): the state machine's responses, which the
# library hands back to the caller untouched (``ClientWriteResponse.data``).
OPAQUE = {
    ("ClientWriteResponse", "<fields>", "data"),
    ("RaftStateMachine", "apply", "return"),
    ("RaftStorage", "apply_to_state_machine", "return"),
}


def _annotations() -> Iterator[tuple[str, str, str, str]]:
    """``(public name, member, parameter, annotation)`` for every annotated parameter, return
    and field of the names in ``openraft_py.__all__`` (classes: their public methods,
    properties, class- and static methods, ``__init__`` and fields)."""
    for name in openraft_py.__all__:
        obj = getattr(openraft_py, name)
        members: list[tuple[str, object]] = []
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, (classmethod, staticmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                members.append((attr, value))
            members.append(("<fields>", obj))
        elif callable(obj):
            members.append((name, obj))
        for member, value in members:
            annotations = vars(value).get("__annotations__", {}) if inspect.isclass(value) else getattr(
                value, "__annotations__", {})
            for param, annotation in annotations.items():
                yield name, member, param, str(annotation)


def test_public_annotations_name_real_types_not_any() -> None:
    found = {(name, member, param): annotation for name, member, param, annotation in _annotations()
             if re.search(r"\bAny\b", annotation)}
    assert set(found) - OPAQUE == set(), {k: v for k, v in found.items() if k not in OPAQUE}
    assert OPAQUE <= set(found), "an allowed Any is gone: take it out of OPAQUE"


def test_the_scan_sees_the_public_api() -> None:
    seen = {(name, member) for name, member, _, _ in _annotations()}
    for expected in [("Raft", "client_write"), ("Raft", "new"), ("NotAllowed", "__init__"),
                     ("RaftNetworkFactory", "new_client"), ("LogId", "<fields>"), ("Config", "<fields>")]:
        assert expected in seen, expected
