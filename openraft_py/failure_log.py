"""``FailureLog``: the one way the node logs a failure that repeats (a peer that is down, a
peer that reconnects with a wrong cluster name at every back-off), so that a fault lasting
an hour is a few lines in the log, not one per retry.

A ``FailureLog`` follows one thing that can fail (a replication channel to one peer, the
connections from one host). ``failed(now, kind, detail)`` is called at every failure and
``cleared(now)`` at every success; what is logged:

- WARNING at the first failure that comes ``after`` seconds or more after the first of
  the streak (``after=0``: the first failure itself), naming the failure and when it will
  be said again;
- WARNING again at a failure of another ``kind`` than the one logged last (the fault
  changed: a refused connection became a refused certificate), and at most once per
  ``every`` seconds (``REPEAT_EVERY``) while the same one goes on, with how many failures
  there were and for how long;
- INFO once, at the first success after a WARNING ("recovered after ..."). A streak that
  ended before its WARNING (a single lost request) logs nothing. A failure more than
  ``every`` seconds after the last one starts a streak of its own (nothing may succeed to
  end one: a peer host refused once, then again days later).
- A thing that flaps (a peer in a crash loop: down, up a few seconds, down again): a streak
  that starts less than ``every`` seconds after the last INFO "recovered" is a relapse, and
  its WARNING waits until it has gone on for ``FLAP_HOLD`` seconds (at most ``every``, at
  least ``after``); one that ends sooner logs nothing but is counted, and the next WARNING
  says how many there were. So a peer restarting every 2 seconds is two lines per ``every``
  seconds, not two per restart (it was 60 a minute), and one that then stays down is said
  within ``FLAP_HOLD`` seconds.

``now`` is the caller's clock in seconds (the node's ``Clock``, so the simulator's virtual
time works too). Nothing here reads a clock or allocates on ``cleared`` while nothing
fails: the caller tests ``failing`` first on its success path.
"""

from __future__ import annotations

import logging

__all__ = ["FailureLog", "REPEAT_EVERY", "FLAP_HOLD"]

REPEAT_EVERY = 300.0
"""Seconds between two WARNINGs of one failure that goes on unchanged."""

FLAP_HOLD = 30.0
"""Seconds a relapse (a streak starting less than ``every`` seconds after the last
recovery logged) goes on before its WARNING."""


class FailureLog:
    """Log one thing's repeating failure (see the module docstring). ``subject`` starts
    every line (who fails: ``"node 1: replication to node 3"``)."""

    __slots__ = ("log", "subject", "after", "every", "unit", "failing", "since", "last", "count", "warned_at",
                 "warned_kind", "warned_count", "recovered_at", "relapse", "unlogged")

    def __init__(self, logger: logging.Logger, subject: str, *, after: float = 0.0, every: float = REPEAT_EVERY,
                 unit: str = "failure") -> None:
        self.log = logger
        self.subject = subject
        self.after = after
        self.every = every
        self.unit = unit
        """What one failure is called in the counts (``"3 failures in 1.0s"``)."""
        self.failing = False
        """Whether the last call was a failure (a streak is under way)."""
        self.since = 0.0  # the streak's first failure
        self.last = 0.0  # its last one
        self.count = 0  # failures in the streak
        self.warned_at: float | None = None  # the streak's last WARNING, if any
        self.warned_kind = ""
        self.warned_count = 0  # ``count`` at that WARNING
        self.recovered_at: float | None = None  # the last INFO "recovered", if any
        self.relapse = False  # whether this streak started within ``every`` of that INFO
        self.unlogged = 0  # relapses ended unlogged since the last WARNING

    def failed(self, now: float, kind: str, detail: str) -> None:
        """One failure at ``now``: ``kind`` names what failed (compared with the one logged
        last: a new kind is logged at once), ``detail`` says it in full."""
        if not self.failing or now - self.last > self.every:
            # (A failure a period after the last one starts a streak of its own: the fault
            # went away meanwhile, unseen when nothing succeeds to say so, such as a peer
            # host refused once, then days later.)
            self.failing = True
            self.since = now
            self.count = 0
            self.warned_at = None
            self.relapse = self.recovered_at is not None and now - self.recovered_at < self.every
        self.last = now
        self.count += 1
        warned = self.warned_at
        if warned is None:
            hold = max(self.after, min(FLAP_HOLD, self.every)) if self.relapse else self.after
            if now - self.since < hold:
                return
            flaps = ""
            if self.unlogged:
                n = self.unlogged
                flaps = f"; it recovered and failed again {n} more time{'s' if n != 1 else ''} since the last report"
            self.unlogged = 0
            self.log.warning("%s: %s (%s%s; logged again every %gs while it goes on, and once it recovers)",
                             self.subject, detail, self._streak(now), flaps, self.every)
        elif kind != self.warned_kind:
            self.log.warning("%s: now %s (%s)", self.subject, detail, self._streak(now))
        elif now - warned >= self.every:
            self.log.warning("%s: still failing: %s (%s, %d since the last report)",
                             self.subject, detail, self._streak(now), self.count - self.warned_count)
        else:
            return
        self.warned_at = now
        self.warned_kind = kind
        self.warned_count = self.count

    def cleared(self, now: float, what: str = "recovered") -> bool:
        """A success at ``now``: ends the streak; logged at INFO (saying ``what``) if it
        was at WARNING. Returns whether it logged."""
        if not self.failing:
            return False
        self.failing = False
        if self.warned_at is None:
            if self.relapse:
                self.unlogged += 1
            return False
        self.log.info("%s: %s (%s)", self.subject, what, self._streak(now))
        self.warned_at = None
        self.recovered_at = now
        return True

    def _streak(self, now: float) -> str:
        n = self.count
        return f"{n} {self.unit}{'s' if n != 1 else ''} in {max(now - self.since, 0.0):.1f}s"
