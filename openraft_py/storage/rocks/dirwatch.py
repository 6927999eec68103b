"""``DirWatch``: tells, with one non-blocking ``read``, whether entries may have been created in
a directory since the last look (Linux ``inotify``). The WAL syncer uses it to list the WAL
directory only when RocksDB may have started a new WAL (see "The durability step" in
``docs/design/durability.md``)."""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys

__all__ = ["DirWatch", "loaded_libc"]

# <sys/inotify.h>
_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_UNMOUNT = 0x00002000
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_WATCH = _IN_CREATE | _IN_MOVED_TO | _IN_DELETE_SELF | _IN_MOVE_SELF
# After any of these the watch no longer reports every new entry: it is given up.
_LOST = _IN_Q_OVERFLOW | _IN_IGNORED | _IN_UNMOUNT | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


@functools.cache
def loaded_libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (``dlopen(NULL)``; no library search, which
    would run ``ldconfig``), or ``None`` when not on Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class DirWatch:
    """An inotify watch for entries created in (or moved into) one directory.

    Contract: ``changed()`` returns ``True`` if an entry may have appeared in the directory
    since the previous call (or since the watch was made, for the first call), and ``False``
    only if none did. It never misses one: the kernel queues an inotify event inside the
    system call that creates (or renames in) the entry, before that call returns, so an entry
    created before ``changed()`` starts is either reported now or was reported by an earlier
    call. When the watch cannot guarantee that any more (its event queue overflowed, the
    directory was removed, moved or unmounted) or could not be made at all, ``active`` is
    false and ``changed()`` returns ``True`` every time. Not thread-safe: one caller.
    """

    __slots__ = ("_fd",)

    def __init__(self, path: str) -> None:
        self._fd = -1  # the inotify instance; -1: no watch (``changed()`` always True)
        libc = loaded_libc()
        if libc is None:
            return
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:  # e.g. the per-user limit of inotify instances is reached
            return
        if libc.inotify_add_watch(fd, os.fsencode(path), _WATCH) < 0:
            os.close(fd)
            return
        self._fd = fd

    @property
    def active(self) -> bool:
        """Whether the watch still reports every new entry (else ``changed()`` is always
        ``True``)."""
        return self._fd >= 0

    def changed(self) -> bool:
        """Whether an entry may have been created since the last call; drains the events."""
        fd = self._fd
        if fd < 0:
            return True
        got = False
        while True:
            try:
                buf = os.read(fd, 65536)
            except BlockingIOError:
                return got
            except OSError:
                self.close()
                return True
            got = True
            pos = 0
            while pos + _EVENT.size <= len(buf):
                _, mask, _, n = _EVENT.unpack_from(buf, pos)
                if mask & _LOST:
                    self.close()
                    return True
                pos += _EVENT.size + n

    def close(self) -> None:
        """Stop watching (``changed()`` is then always ``True``); idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
