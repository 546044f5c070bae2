"""Who opens which file of the mount, told by the kernel's fanotify instead of FUSE open requests.

Lineage needs the process behind every open. Through FUSE that costs an open and a release request per file,
each a round trip into the daemon's Python, even when the kernel then serves every byte from its page cache.
fanotify reports each open of a file of the mount's file system (any bind mount of it too, as a container
sees it) from the kernel's VFS, with the opener's pid, and sends the daemon no request: the mount then runs
with FUSE's no-open mode (no open or release requests at all) and a re-read from the page cache reaches no
Python. fanotify needs CAP_SYS_ADMIN (a daemon run as root); without it lineage counts FUSE opens instead.

What it tells differs from open requests in two ways, both the kernel's: it tells of an open after the fact, so
a process that has exited by the time it is identified is known only by its parent (not yet reaped) or as itself
(see jobs.identify); and it merges a process's repeated opens of one file that were not yet read from its queue
into one.

Each event carries a descriptor of the opened file, which the kernel opens for the watcher. On a no-open
FUSE mount that open sends no request, but its close may send one (the connection's first flush), and a
stat of it may too (expired attributes): so events are read, and their descriptors turned into inode
numbers and closed, on a thread of their own, never on the event loop that answers those requests.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

_FAN_CLOEXEC = 0x1
_FAN_NONBLOCK = 0x2
_FAN_CLASS_NOTIF = 0x0
_FAN_MARK_ADD = 0x1
_FAN_MARK_FILESYSTEM = 0x100
_FAN_OPEN = 0x20
_FAN_Q_OVERFLOW = 0x4000
_METADATA = struct.Struct("IBBHQii")  # struct fanotify_event_metadata: len, vers, reserved, metadata_len, mask, fd, pid
_METADATA_VERSION = 3
_AT_FDCWD = -100

BATCH = 256  # opens handed to the event loop at once, at most


class OpensUnavailable(Exception):
    """fanotify cannot watch this mount (the reason is the message)."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
    return libc


class OpenWatch:
    """A fanotify group for the opens of one mount's files. Make it before mounting (:meth:`create` tells
    whether lineage can use it, so that the mount is set up for it); :meth:`watch` once the mount is up."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.overflows = 0  # times the kernel's queue (16,384 events) was full and opens went unseen
        self.opens = 0  # opens seen
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._stopping = threading.Event()

    @classmethod
    def create(cls) -> OpenWatch:
        """A fanotify group, or OpensUnavailable (not root, no fanotify in the kernel, ...)."""
        libc = _libc()
        fd = libc.fanotify_init(_FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_CLASS_NOTIF, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            reason = "needs CAP_SYS_ADMIN, which a daemon run as root has" if code == errno.EPERM else os.strerror(code)
            raise OpensUnavailable(f"fanotify {reason}")
        return cls(fd)

    def watch(self, mountpoint: Path) -> None:
        """Report the opens of files of the file system mounted at ``mountpoint`` (in a worker thread: resolving
        the path may ask the daemon)."""
        if _libc().fanotify_mark(self._fd, _FAN_MARK_ADD | _FAN_MARK_FILESYSTEM, _FAN_OPEN, _AT_FDCWD,
                                 os.fsencode(mountpoint)) < 0:  # fmt: skip
            raise OpensUnavailable(f"fanotify cannot watch {mountpoint}: {os.strerror(ctypes.get_errno())}")

    async def run(self, send: trio.MemorySendChannel[list[tuple[int, int]]], seen: Callable[[int], None]) -> None:
        """Send (pid, inode) of every open, in batches, until cancelled; ``seen(pid)`` is called on the watcher's
        thread as soon as a process's open is read (before the process may be gone)."""
        thread = threading.Thread(target=self._read_events, args=(send, trio.lowlevel.current_trio_token(), seen),
                                  name="fanotify-opens", daemon=True)  # fmt: skip
        thread.start()
        try:
            await trio.sleep_forever()
        finally:
            self._stopping.set()
            os.write(self._stop_write, b"x")
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            send.close()

    def close(self) -> None:
        for fd in (self._fd, self._stop_read, self._stop_write):
            os.close(fd)

    # -- on the watcher's thread --------------------------------------------------------------------------
    def _read_events(self, send: trio.MemorySendChannel[list[tuple[int, int]]], token: trio.lowlevel.TrioToken,
                     seen: Callable[[int], None]) -> None:  # fmt: skip
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_read in ready:
                return
            opens = self.take_events(seen)
            for start in range(0, len(opens), BATCH):
                if not self._hand_over(opens[start : start + BATCH], send, token):
                    return

    def _hand_over(self, batch: list[tuple[int, int]], send: trio.MemorySendChannel[list[tuple[int, int]]],
                   token: trio.lowlevel.TrioToken) -> bool:  # fmt: skip
        """Queue ``batch`` for the event loop, waiting while the queue is full; False once stopping."""
        while True:
            try:
                trio.from_thread.run_sync(send.send_nowait, batch, trio_token=token)
                return True
            except trio.WouldBlock:  # never a blocking send: the loop may be waiting for this thread to end
                if self._stopping.wait(0.01):
                    return False
            except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
                return False

    def take_events(self, seen: Callable[[int], None]) -> list[tuple[int, int]]:
        """The (pid, inode) of the opens queued now (each event's descriptor is closed); ``seen(pid)`` for each
        process among them. Not on the event loop (see above)."""
        opens = self._queued_opens()
        for pid in {pid for pid, _ in opens}:
            try:
                seen(pid)
            except Exception:
                log.exception("lineage: the process %d that opened a file could not be identified", pid)
        return opens

    def _queued_opens(self) -> list[tuple[int, int]]:
        opens = []
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return opens
            except InterruptedError:
                continue
            offset = 0
            while offset + _METADATA.size <= len(data):
                length, version, _, _, mask, fd, pid = _METADATA.unpack_from(data, offset)
                if version != _METADATA_VERSION or length < _METADATA.size:
                    log.error("lineage: fanotify events of version %d are not understood; opens are not counted",
                              version)  # fmt: skip
                    return opens
                offset += length
                if mask & _FAN_Q_OVERFLOW:
                    self.overflows += 1
                    if self.overflows == 1:
                        log.warning("lineage: the kernel's queue of open events overflowed: some opens were not "
                                    "counted (the daemon could not keep up)")  # fmt: skip
                if fd < 0:
                    continue
                try:
                    opens.append((pid, os.fstat(fd).st_ino))
                    self.opens += 1
                except OSError:
                    pass  # the file went away with its mount: nothing to count
                finally:
                    os.close(fd)
