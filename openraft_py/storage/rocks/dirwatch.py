"""``DirWatch``: tells, with one non-blocking look, whether entries may have been created in a
directory since the last look (Linux ``inotify``, through ``inotify_simple``). The WAL syncer
uses it to list the WAL directory only when RocksDB may have started a new WAL (see "The
durability step" in ``docs/design/durability.md``)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["DirWatch"]

try:
    if not sys.platform.startswith("linux"):
        raise ImportError("inotify is Linux only")
    from inotify_simple import INotify, flags  # type: ignore[import-untyped]
except (ImportError, OSError):  # no inotify here: every look says "changed"
    INotify = flags = None

if flags is not None:
    _WATCH = flags.CREATE | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF
    # After any of these the watch no longer reports every new entry: it is given up.
    _LOST = flags.Q_OVERFLOW | flags.IGNORED | flags.UNMOUNT | flags.DELETE_SELF | flags.MOVE_SELF


class DirWatch:
    """An inotify watch for entries created in (or moved into) one directory.

    Contract: ``changed()`` returns ``True`` if an entry may have appeared in the directory
    since the previous call (or since the watch was made, for the first call), and ``False``
    only if none did. It never misses one: the kernel queues an inotify event inside the
    system call that creates (or renames in) the entry, before that call returns, so an entry
    created before ``changed()`` starts is either reported now or was reported by an earlier
    call. When the watch cannot guarantee that any more (its event queue overflowed, the
    directory was removed, moved or unmounted) or could not be made at all (not Linux, the
    per-user limit of inotify instances reached), ``active`` is false and ``changed()``
    returns ``True`` every time. Not thread-safe: one caller.
    """

    __slots__ = ("_ino",)

    def __init__(self, path: str) -> None:
        self._ino: Any = None  # the inotify instance; None: no watch (``changed()`` always True)
        if INotify is None:
            return
        try:
            ino = INotify(nonblocking=True)
        except OSError:
            return
        try:
            ino.add_watch(path, _WATCH)
        except OSError:
            ino.close()
            return
        self._ino = ino

    @property
    def active(self) -> bool:
        """Whether the watch still reports every new entry (else ``changed()`` is always
        ``True``)."""
        return self._ino is not None

    def changed(self) -> bool:
        """Whether an entry may have been created since the last call; drains the events."""
        ino = self._ino
        if ino is None:
            return True
        got = False
        while True:
            try:
                events = ino.read(timeout=0)
            except OSError:
                self.close()
                return True
            if not events:
                return got
            got = True
            if any(e.mask & _LOST for e in events):
                self.close()
                return True

    def close(self) -> None:
        """Stop watching (``changed()`` is then always ``True``); idempotent."""
        ino, self._ino = self._ino, None
        if ino is not None:
            ino.close()
