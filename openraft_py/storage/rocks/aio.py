"""``AioFsync``: fsyncs handed to the kernel with Linux native AIO (``IOCB_CMD_FSYNC``), whose
completions signal an eventfd. The log store's writer uses it to make a small append durable
from the event loop without a thread hop: ``io_submit`` of an fsync only queues it (the
kernel runs it in a kernel worker), so the loop never waits for the disk, and the completion
wakes the loop directly (see "The loop's fast path" in ``docs/design/durability.md``)."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct
import sys

__all__ = ["AioFsync"]

_SYS = {"x86_64": (206, 208, 209, 207), "aarch64": (0, 4, 2, 1)}  # io_setup, io_getevents, io_submit, io_destroy
_IOCB_CMD_FSYNC = 2
_IOCB_FLAG_RESFD = 1
# struct iocb (little-endian): aio_data, aio_key, aio_rw_flags, aio_lio_opcode, aio_reqprio,
# aio_fildes, aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags, aio_resfd.
_IOCB = struct.Struct("<QIIHhIQQqQII")
_EVENT = struct.Struct("<QQqq")  # struct io_event: data, obj, res, res2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (``dlopen(NULL)``: no library search,
    which would run ``ldconfig`` at every store open), with ``syscall`` returning a long;
    ``None`` when not on Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.syscall.restype = ctypes.c_long
    return libc


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class AioFsync:
    """A Linux AIO context for fsync requests, completions signalled on ``efd``.

    Contract: ``submit(fd, token)`` queues an fsync of ``fd`` (it covers every write to the
    file that returned before the call, as ``os.fsync(fd)`` would) and returns at once;
    ``False`` when the kernel refused it (e.g. its queue is full), then nothing was queued.
    Once ``efd`` is readable, ``reap()`` returns the completed requests as ``(token, error or
    None)``, without blocking; ``wait(n)`` blocks until ``n`` requests have completed and
    returns them. The kernel holds its own reference to the file of a queued request, so
    closing ``fd`` meanwhile is safe. Raises ``OSError`` at construction when native AIO is not
    available (not Linux, or ``io_setup`` refused: e.g. ``fs.aio-max-nr`` reached).
    ``close()`` waits for the requests still queued, then frees the context and ``efd``
    (``efd`` is ``-1`` from then on). One user at a time (the event loop); not thread-safe.

    Every completion is returned exactly once, also when a call is interrupted (Ctrl-C's
    ``KeyboardInterrupt``) after the kernel handed it over: it is kept (``_ready``) and
    returned by the next ``reap``, ``wait`` or ``close``. (An interrupted ``wait`` or
    ``close`` lost the completions it had taken: their writes were never acknowledged, and
    one taken before the count of requests in flight was lowered made a retried ``close``
    wait for good for completions the kernel had handed over already.)
    """

    __slots__ = ("efd", "_ctx", "_nr", "_inflight", "_ready", "_unread", "_iocb", "_iocbp", "_events", "_zero",
                 "_sys", "_libc")

    def __init__(self, depth: int = 64) -> None:
        calls = _SYS.get(platform.machine())
        if not sys.platform.startswith("linux") or calls is None or sys.byteorder != "little":
            raise OSError("Linux native AIO is not available here")
        libc = _libc()
        if libc is None:
            raise OSError("Linux native AIO is not available here")
        ctx = ctypes.c_ulong(0)
        if libc.syscall(calls[0], ctypes.c_uint(depth), ctypes.byref(ctx)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_setup: {os.strerror(err)}")
        self._libc = libc
        self._sys = calls
        self._ctx = ctx.value
        self._nr = depth
        # Invariant: ``_inflight`` counts the requests submitted whose completion the kernel has
        # not handed over; ``_ready`` holds the completions it handed over that no call has
        # returned yet (in the order it gave them); ``_unread`` is True from before an
        # ``io_getevents`` until the completions it wrote to ``_events`` are in ``_ready``.
        self._inflight = 0
        self._ready: list[tuple[int, OSError | None]] = []
        self._unread = False
        try:
            self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            libc.syscall(calls[3], ctypes.c_ulong(self._ctx))
            raise
        self._iocb = ctypes.create_string_buffer(_IOCB.size)  # copied by the kernel at submit
        self._iocbp = (ctypes.c_void_p * 1)(ctypes.addressof(self._iocb))
        self._events = ctypes.create_string_buffer(_EVENT.size * depth)
        self._zero = _Timespec(0, 0)

    @property
    def inflight(self) -> int:
        """Requests submitted whose completion has not been returned yet."""
        return self._inflight + len(self._ready)

    def submit(self, fd: int, token: int) -> bool:
        """Queue an fsync of ``fd``; ``token`` comes back with its completion."""
        if self._inflight >= self._nr:
            return False
        _IOCB.pack_into(self._iocb, 0, token, 0, 0, _IOCB_CMD_FSYNC, 0, fd, 0, 0, 0, 0, _IOCB_FLAG_RESFD, self.efd)
        if self._libc.syscall(self._sys[2], ctypes.c_ulong(self._ctx), ctypes.c_long(1), self._iocbp) != 1:
            return False
        self._inflight += 1
        return True

    def reap(self) -> list[tuple[int, OSError | None]]:
        """The completions available now (never blocks)."""
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        self._get(0, ctypes.byref(self._zero))
        return self._take()

    def wait(self, n: int) -> list[tuple[int, OSError | None]]:
        """Block until ``n`` requests not returned yet have completed (at most ``inflight``;
        counting those an interrupted call took and kept); return every completion not
        returned yet."""
        n = min(n, self.inflight)
        while len(self._ready) < n:
            self._get(n - len(self._ready), None)
        return self._take()

    def _take(self) -> list[tuple[int, OSError | None]]:
        """The completions not returned yet, now counted as returned."""
        out, self._ready = self._ready, []  # (no call in between: no interrupt either)
        return out

    def _get(self, min_nr: int, timeout: object) -> None:
        """Move to ``_ready`` what a call interrupted left in ``_events``, then what the kernel
        hands over now: at least ``min_nr`` completions (``timeout``: a ``timespec``, or
        ``None`` to block), fewer when interrupted by a signal (``EINTR``)."""
        self._move_unread()
        if self._inflight == 0:
            return
        ctypes.memset(self._events, 0, len(self._events))  # (read back by _move_unread: obj 0 is a free slot)
        self._unread = True
        got = self._libc.syscall(
            self._sys[1], ctypes.c_ulong(self._ctx), ctypes.c_long(min_nr), ctypes.c_long(self._nr), self._events, timeout
        )
        if got < 0:
            err = ctypes.get_errno()
            self._unread = False  # (an error: the kernel wrote nothing)
            if err == 4:  # EINTR
                return
            raise OSError(err, f"io_getevents: {os.strerror(err)}")
        self._move_unread()

    def _move_unread(self) -> None:
        """Move the completions the last ``io_getevents`` wrote to ``_events`` to ``_ready``
        and lower ``_inflight`` by their number (``_unread``: there may be some). Read from
        the buffer, not from the call's answer: an interrupt may have come as the call
        returned, its answer lost and the completions in the buffer all the same. Each
        written slot names its request (``obj``, the address of ``_iocb``: never 0); the
        kernel fills the slots from the first."""
        if not self._unread:
            return
        done: list[tuple[int, OSError | None]] = []
        for i in range(self._nr):
            token, obj, res, _ = _EVENT.unpack_from(self._events, i * _EVENT.size)
            if obj == 0:
                break
            done.append((token, None if res >= 0 else OSError(-res, os.strerror(-res))))
        k = len(done)
        # One statement and no call in it: an interrupt comes before it (the buffer is read
        # again) or after it (they are in _ready), never half way.
        self._ready, self._inflight, self._unread = self._ready + done, self._inflight - k, False

    def close(self) -> list[tuple[int, OSError | None]]:
        """Wait for the requests still queued, then free the context and ``efd`` (``_free``);
        returns every completion not returned yet. Idempotent: a close after one that freed
        them and returned their completions returns ``[]`` and does nothing. An exception
        raised in the wait (``KeyboardInterrupt``) frees nothing, and one raised while the two
        are freed does not keep the other from being freed; either way no completion is
        lost: a close called again (``GroupWriter.close``, retried by the log store's close)
        waits for the requests still queued and returns every completion not returned."""
        if self._ctx != 0 or self.efd >= 0:
            while self._inflight:
                self._get(self._inflight, None)
            self._free()
        return self._take()

    def _free(self) -> None:
        """Free the context (``io_destroy``) and close ``efd``, each at most once: both are
        marked freed before either call (no bytecode between the two swaps can raise), and the
        eventfd is closed even if the destroy raised or an interrupt arrived as it returned.
        (Freed, then marked: an interrupt there left the eventfd open, and a retry destroyed
        the context again, whose id may name another context by then.)"""
        ctx, self._ctx = self._ctx, 0
        efd, self.efd = self.efd, -1
        try:
            if ctx != 0:
                self._libc.syscall(self._sys[3], ctypes.c_ulong(ctx))
        finally:
            if efd >= 0:
                os.close(efd)
