"""The public API (``openraft_py.__all__``, and ``openraft_py.network.tcp``'s, the transport
users deploy) is annotated with real types: ``Any`` only where the value is the
application's own and opaque to the library (what a state machine's ``apply`` answers). An
``Any`` elsewhere lets a strict user's mistake through ``mypy --strict`` unnoticed
(``NotAllowed.vote.trem``, a ``reply`` callback that cannot take an exception,
``TcpServer.start(Raft.new(...), ...)`` without the ``await``)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from types import ModuleType

import openraft_py
import openraft_py.network.tcp

MODULES = (openraft_py, openraft_py.network.tcp)

# (public name, member, parameter or "return"): the state machine's responses, which the
# library hands back to the caller untouched (``ClientWriteResponse.data``).
OPAQUE = {
    ("ClientWriteResponse", "<fields>", "data"),
    ("RaftStateMachine", "apply", "return"),
    ("RaftStorage", "apply_to_state_machine", "return"),
}


def _annotations(modules: tuple[ModuleType, ...] = MODULES) -> Iterator[tuple[str, str, str, str]]:
    """``(public name, member, parameter, annotation)`` for every annotated parameter, return
    and public field of the names in each module's ``__all__`` (classes: their public
    methods, properties, class- and static methods, ``__init__`` and fields)."""
    for name, obj in ((name, getattr(module, name)) for module in modules for name in module.__all__):
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
                if member != "<fields>" or not param.startswith("_"):
                    yield name, member, param, str(annotation)


def test_public_annotations_name_real_types_not_any() -> None:
    found = {(name, member, param): annotation for name, member, param, annotation in _annotations()
             if re.search(r"\bAny\b", annotation)}
    assert set(found) - OPAQUE == set(), {k: v for k, v in found.items() if k not in OPAQUE}
    assert OPAQUE <= set(found), "an allowed Any is gone: take it out of OPAQUE"


def test_the_scan_sees_the_public_api() -> None:
    seen = {(name, member) for name, member, _, _ in _annotations()}
    for expected in [("Raft", "client_write"), ("Raft", "new"), ("NotAllowed", "__init__"),
                     ("RaftNetworkFactory", "new_client"), ("LogId", "<fields>"), ("Config", "<fields>"),
                     ("TcpServer", "start"), ("TcpClient", "submit_append_entries")]:
        assert expected in seen, expected
