"""``Handler`` and ``LeadingHandler``: the references every engine handler holds (the map of
the handlers is in ``handler/__init__.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..command import Command
    from ..engine import Engine
    from ..leader import Leader
    from ..state import RaftState


class Handler:
    """The references every handler holds: the engine (for its role fields, ``config`` and
    the other handlers), its ``state`` and its ``output`` list, both the same object for the
    engine's lifetime. Role fields (``eng.leader``, ``eng.candidate``) and ``eng.config`` are
    read through ``eng`` at each use, never kept."""

    __slots__ = ("eng", "state", "output")

    def __init__(self, eng: Engine) -> None:
        self.eng: Engine = eng
        self.state: RaftState = eng.state
        self.output: list[Command] = eng.output


class LeadingHandler(Handler):
    """A handler of the leader role: it also holds the ``Leader`` it acts for.

    Invariant: ``leader is eng.leader`` whenever the engine hands the handler out (it makes a
    new one for a new ``Leader``); after a call that may step down
    (``VoteHandler.become_following``) a method checks ``eng.leader is leader`` before acting
    for it again.
    """

    __slots__ = ("leader",)

    def __init__(self, eng: Engine, leader: Leader) -> None:
        self.eng = eng
        self.state = eng.state
        self.output = eng.output
        self.leader: Leader = leader
