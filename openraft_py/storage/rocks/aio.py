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
    """

    __slots__ = ("efd", "_ctx", "_nr", "_inflight", "_iocb", "_iocbp", "_events", "_zero", "_sys", "_libc")

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
        self._inflight = 0  # requests submitted and not yet returned by reap()/wait()
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
        return self._inflight

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
        return self._get(0, ctypes.byref(self._zero))

    def wait(self, n: int) -> list[tuple[int, OSError | None]]:
        """Block until ``n`` more requests have completed; return them."""
        out: list[tuple[int, OSError | None]] = []
        while len(out) < n:
            out += self._get(n - len(out), None)
        return out

    def _get(self, min_nr: int, timeout: object) -> list[tuple[int, OSError | None]]:
        if self._inflight == 0:
            return []
        got = self._libc.syscall(
            self._sys[1], ctypes.c_ulong(self._ctx), ctypes.c_long(min_nr), ctypes.c_long(self._nr), self._events, timeout
        )
        if got < 0:
            err = ctypes.get_errno()
            if err == 4:  # EINTR
                return []
            raise OSError(err, f"io_getevents: {os.strerror(err)}")
        out: list[tuple[int, OSError | None]] = []
        for i in range(got):
            token, _, res, _ = _EVENT.unpack_from(self._events, i * _EVENT.size)
            out.append((token, None if res >= 0 else OSError(-res, os.strerror(-res))))
        self._inflight -= got
        return out

    def close(self) -> list[tuple[int, OSError | None]]:
        """Wait for the requests still queued (returned), then free the context and ``efd``
        (``_free``). Idempotent: a close after one that freed them returns ``[]`` and does
        nothing. An exception raised in the wait (``KeyboardInterrupt``) frees nothing: the
        requests are still queued, and a close called again (``GroupWriter.close``, retried
        by the log store's close) waits for them and returns them. Once the wait is over, an
        exception raised while the two are freed does not keep the other from being freed."""
        if self._ctx == 0 and self.efd < 0:
            return []
        rest = self.wait(self._inflight)
        self._free()
        return rest

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
